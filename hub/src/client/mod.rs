//! A WAMP client: call, publish, subscribe and register, over an in-process connection or a
//! network transport.
//!
//! A [`Client`] is a cheap handle to one driver task that owns the connection and the tables of
//! pending requests (an actor behind a bounded channel). Events and invocations arrive on bounded
//! per-subscription and per-registration channels; the driver waits when one is full, which in
//! turn lets the router's slow-consumer policy apply to this session rather than growing memory.
//!
//! - [`conn`]: in-process and transport connections.
//! - [`driver`]: the task that runs the session.
//! - [`connect`]: joining a realm over the network, including authentication.

pub mod conn;
pub mod connect;
mod driver;

use std::fmt;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot, watch};

pub use connect::{ClientAuth, ConnectOptions};

use crate::router::outbound::PeerFeatures;
use crate::router::{AuthInfo, Router, RouterSession, TransportInfo};
use crate::transport::TransportError;
use crate::wamp::{CodecError, Dict, Id, List, Payload, Value};
use conn::LocalConn;
use driver::{Command, Driver};

/// Capacity of each event and invocation channel handed to the application.
pub const DELIVERY_QUEUE: usize = 1024;

/// An error answer from the router or a callee.
#[derive(Clone, Debug, PartialEq)]
pub struct WampError {
    pub uri: String,
    pub details: Dict,
    pub payload: Payload,
}

impl WampError {
    pub fn new(uri: &str, message: impl Into<String>) -> Self {
        WampError {
            uri: uri.to_owned(),
            details: Dict::new(),
            payload: Payload::args(vec![Value::Str(message.into())]),
        }
    }

    /// The first positional argument if it is a string (the usual human-readable message).
    pub fn message(&self) -> Option<&str> {
        self.payload.arg(0).and_then(Value::as_str)
    }
}

impl fmt::Display for WampError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.message() {
            Some(m) => write!(f, "{}: {m}", self.uri),
            None => f.write_str(&self.uri),
        }
    }
}

impl std::error::Error for WampError {}

/// Why a client operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("{0}")]
    Wamp(#[from] WampError),
    #[error("session closed")]
    Closed,
    #[error("router aborted: {reason}{}", message.as_deref().map(|m| format!(" ({m})")).unwrap_or_default())]
    Aborted {
        reason: String,
        message: Option<String>,
    },
    #[error("transport: {0}")]
    Transport(#[from] TransportError),
    #[error("codec: {0}")]
    Codec(#[from] CodecError),
    #[error("protocol: {0}")]
    Protocol(String),
    #[error("invalid address: {0}")]
    Address(String),
    #[error("authentication: {0}")]
    Auth(String),
    #[error("TLS: {0}")]
    Tls(#[from] crate::transport::tls::TlsError),
    #[error("timed out")]
    Timeout,
}

/// A received event.
#[derive(Clone, Debug)]
pub struct Event {
    pub subscription: Id,
    pub publication: Id,
    /// The concrete topic (pattern subscriptions only).
    pub topic: Option<String>,
    pub details: Dict,
    pub payload: Payload,
}

/// The result of a call (or one progressive part of it).
#[derive(Clone, Debug)]
pub struct CallResult {
    pub details: Dict,
    pub payload: Payload,
}

/// A subscription: the events of one subscribe call.
#[derive(Debug)]
pub struct Subscription {
    pub id: Id,
    handler: u64,
    events: mpsc::Receiver<Event>,
}

impl Subscription {
    /// The next event; `None` once unsubscribed or the session ended.
    pub async fn next(&mut self) -> Option<Event> {
        self.events.recv().await
    }
}

/// A registration: the invocations of one register call.
#[derive(Debug)]
pub struct Registration {
    pub id: Id,
    invocations: mpsc::Receiver<Invocation>,
}

impl Registration {
    /// The next invocation; `None` once unregistered or the session ended.
    pub async fn next(&mut self) -> Option<Invocation> {
        self.invocations.recv().await
    }
}

/// A call to one of this client's procedures. Answer it with [`Invocation::reply`] or
/// [`Invocation::fail`]; dropping it unanswered answers `wamp.error.runtime_error` so the caller
/// is never left waiting.
#[derive(Debug)]
pub struct Invocation {
    pub request: Id,
    pub registration: Id,
    /// The concrete procedure (pattern registrations only).
    pub procedure: Option<String>,
    pub details: Dict,
    pub payload: Payload,
    responder: Option<mpsc::Sender<Command>>,
    interrupt: oneshot::Receiver<Interrupt>,
}

/// An INTERRUPT of an invocation in progress: the caller canceled the call, or it timed out.
/// The answer still goes out (an error, usually `wamp.error.canceled`); under mode `killnowait`
/// the router no longer waits for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Interrupt {
    /// `kill` or `killnowait`.
    pub mode: String,
    /// `wamp.error.canceled` or `wamp.error.timeout`.
    pub reason: String,
}

impl Invocation {
    /// The call's timeout, when the caller gave one and the router passed it on (this client
    /// announces `call_timeout` for in-process sessions). The router enforces it too; a callee
    /// uses it to bound its own work.
    pub fn timeout(&self) -> Option<std::time::Duration> {
        self.details
            .get("timeout")
            .and_then(Value::as_u64)
            .filter(|ms| *ms > 0)
            .map(std::time::Duration::from_millis)
    }

    /// Resolves when the router interrupts this invocation; `None` once it never can (the
    /// session ended, or the invocation was answered). Cancel-safe: wait on it in a `select!`
    /// beside the work.
    pub async fn interrupted(&mut self) -> Option<Interrupt> {
        (&mut self.interrupt).await.ok()
    }

    /// Whether the caller accepts progressive results.
    pub fn receive_progress(&self) -> bool {
        crate::wamp::message::opt_bool(&self.details, "receive_progress", false)
    }

    /// Sends a progressive result (only if the caller asked for them).
    pub async fn progress(&self, payload: Payload) -> Result<(), ClientError> {
        let tx = self.responder.as_ref().ok_or(ClientError::Closed)?;
        tx.send(Command::Yield {
            request: self.request,
            progress: true,
            payload,
        })
        .await
        .map_err(|_| ClientError::Closed)
    }

    /// Sends the final result.
    pub async fn reply(mut self, payload: Payload) -> Result<(), ClientError> {
        let tx = self.responder.take().ok_or(ClientError::Closed)?;
        tx.send(Command::Yield {
            request: self.request,
            progress: false,
            payload,
        })
        .await
        .map_err(|_| ClientError::Closed)
    }

    /// Answers with an error.
    pub async fn fail(mut self, error: WampError) -> Result<(), ClientError> {
        let tx = self.responder.take().ok_or(ClientError::Closed)?;
        tx.send(Command::InvocationError {
            request: self.request,
            error,
        })
        .await
        .map_err(|_| ClientError::Closed)
    }
}

impl Drop for Invocation {
    /// An invocation dropped unanswered is answered with an error, so its caller is not left
    /// waiting: at once if the session's command queue has room, else by a task that waits for
    /// room (a drop cannot wait).
    fn drop(&mut self) {
        if let Some(tx) = self.responder.take() {
            let error = Command::InvocationError {
                request: self.request,
                error: WampError::new(
                    crate::wamp::uris::RUNTIME_ERROR,
                    "the callee dropped the invocation",
                ),
            };
            if let Err(mpsc::error::TrySendError::Full(error)) = tx.try_send(error)
                && let Ok(runtime) = tokio::runtime::Handle::try_current()
            {
                runtime.spawn(async move {
                    let _ = tx.send(error).await;
                });
            }
        }
    }
}

/// A WAMP client session. Cloning gives another handle to the same session.
#[derive(Clone, Debug)]
pub struct Client {
    tx: mpsc::Sender<Command>,
    session: Id,
    details: Arc<Dict>,
    closed: watch::Receiver<Option<String>>,
}

impl Client {
    /// Joins `realm` of an in-process router as a trusted session (no HELLO, no serialization).
    pub fn local(router: &Arc<Router>, realm: &str, auth: AuthInfo) -> Result<Client, ClientError> {
        Client::local_with_queue(
            router,
            realm,
            auth,
            router.outbound_queue().max(DELIVERY_QUEUE),
        )
    }

    /// Like [`Client::local`] with an outbound queue of `queue` messages, for internal services
    /// that must absorb bursts (the slow-consumer policy applies beyond it).
    pub fn local_with_queue(
        router: &Arc<Router>,
        realm: &str,
        auth: AuthInfo,
        queue: usize,
    ) -> Result<Client, ClientError> {
        Self::local_with_policy(router, realm, auth, queue, None)
    }

    /// Like [`Client::local_with_queue`], but a full queue drops this session's events (counted
    /// in its [`SessionHandle::dropped_events`](crate::router::SessionHandle::dropped_events))
    /// instead of closing it, whatever the router's policy: for internal sessions that must
    /// keep running and account for what they missed.
    pub fn local_dropping_events(
        router: &Arc<Router>,
        realm: &str,
        auth: AuthInfo,
        queue: usize,
    ) -> Result<Client, ClientError> {
        Self::local_with_policy(
            router,
            realm,
            auth,
            queue,
            Some(crate::router::SlowConsumerPolicy::DropEvents),
        )
    }

    fn local_with_policy(
        router: &Arc<Router>,
        realm: &str,
        auth: AuthInfo,
        queue: usize,
        policy: Option<crate::router::SlowConsumerPolicy>,
    ) -> Result<Client, ClientError> {
        let (tx, rx) = mpsc::channel(queue.max(1));
        let kill = tokio_util::sync::CancellationToken::new();
        let mut session =
            RouterSession::new(router.clone(), TransportInfo::local(), tx, kill.clone());
        if let Some(policy) = policy {
            session.set_slow_consumer(policy);
        }
        // In-process callees (the things API) honour INTERRUPT and bound their work by the
        // call's timeout: see [`Invocation::interrupted`] and [`Invocation::timeout`].
        let features = PeerFeatures {
            registration_revocation: true,
            subscription_revocation: true,
            progressive_call_results: true,
            call_canceling: true,
            call_timeout: true,
        };
        let id = session
            .join_trusted(realm, auth.clone(), features)
            .map_err(|reason| ClientError::Aborted {
                reason: reason.to_owned(),
                message: None,
            })?;
        let mut details = Dict::new();
        details.insert("authid".into(), Value::from(auth.authid.as_str()));
        details.insert("authrole".into(), Value::from(auth.authrole.as_str()));
        let conn = LocalConn {
            session: Some(session),
            rx,
            kill,
        };
        Ok(Driver::spawn(conn, id, details, None))
    }

    pub(crate) fn from_parts(
        tx: mpsc::Sender<Command>,
        session: Id,
        details: Dict,
        closed: watch::Receiver<Option<String>>,
    ) -> Client {
        Client {
            tx,
            session,
            details: Arc::new(details),
            closed,
        }
    }

    /// The session id the router assigned.
    pub fn session_id(&self) -> Id {
        self.session
    }

    /// WELCOME.Details (authid, authrole, roles...).
    pub fn welcome_details(&self) -> &Dict {
        &self.details
    }

    /// Resolves when the session has ended, with the reason if the router gave one.
    pub async fn closed(&self) -> Option<String> {
        let mut rx = self.closed.clone();
        loop {
            if let Some(reason) = rx.borrow().clone() {
                return Some(reason);
            }
            if rx.changed().await.is_err() {
                return rx.borrow().clone();
            }
        }
    }

    /// Whether the session has ended.
    pub fn is_closed(&self) -> bool {
        self.closed.borrow().is_some() || self.tx.is_closed()
    }

    async fn request<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, ClientError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(make(reply))
            .await
            .map_err(|_| ClientError::Closed)?;
        rx.await.map_err(|_| ClientError::Closed)
    }

    /// Calls a procedure with options (e.g. `timeout`, `disclose_me`).
    pub async fn call_with(
        &self,
        procedure: &str,
        payload: Payload,
        options: Dict,
    ) -> Result<CallResult, ClientError> {
        self.request(|reply| Command::Call {
            procedure: procedure.to_owned(),
            options,
            payload,
            progress: None,
            reply,
        })
        .await?
    }

    /// Calls a procedure.
    pub async fn call(
        &self,
        procedure: &str,
        args: List,
        kwargs: Dict,
    ) -> Result<CallResult, ClientError> {
        self.call_with(procedure, Payload::new(args, kwargs), Dict::new())
            .await
    }

    /// Calls a procedure asking for progressive results, which arrive on `progress`.
    pub async fn call_progressive(
        &self,
        procedure: &str,
        payload: Payload,
        mut options: Dict,
        progress: mpsc::Sender<CallResult>,
    ) -> Result<CallResult, ClientError> {
        options.insert("receive_progress".into(), Value::Bool(true));
        self.request(|reply| Command::Call {
            procedure: procedure.to_owned(),
            options,
            payload,
            progress: Some(progress),
            reply,
        })
        .await?
    }

    /// Publishes without acknowledgement.
    pub async fn publish(
        &self,
        topic: &str,
        payload: Payload,
        options: Dict,
    ) -> Result<(), ClientError> {
        self.tx
            .send(Command::Publish {
                topic: topic.to_owned(),
                options,
                payload,
                ack: None,
            })
            .await
            .map_err(|_| ClientError::Closed)
    }

    /// Publishes with `acknowledge: true` and waits for the publication id.
    pub async fn publish_acked(
        &self,
        topic: &str,
        payload: Payload,
        mut options: Dict,
    ) -> Result<Id, ClientError> {
        options.insert("acknowledge".into(), Value::Bool(true));
        self.request(|reply| Command::Publish {
            topic: topic.to_owned(),
            options,
            payload,
            ack: Some(reply),
        })
        .await?
    }

    /// Publishes many events with acknowledgement, sent in order; returns each one's outcome in
    /// the same order. The uplink uses it to keep a window of publications in flight.
    pub async fn publish_batch_acked(
        &self,
        items: Vec<(String, Payload)>,
    ) -> Vec<Result<Id, ClientError>> {
        let mut replies = Vec::with_capacity(items.len());
        let mut waits = Vec::with_capacity(items.len());
        for _ in 0..items.len() {
            let (tx, rx) = oneshot::channel();
            replies.push(tx);
            waits.push(rx);
        }
        if self
            .tx
            .send(Command::PublishBatch { items, replies })
            .await
            .is_err()
        {
            return waits.iter().map(|_| Err(ClientError::Closed)).collect();
        }
        let mut out = Vec::with_capacity(waits.len());
        for w in waits {
            out.push(w.await.unwrap_or(Err(ClientError::Closed)));
        }
        out
    }

    /// Subscribes to a topic (options: `match`, ...). If the consumer falls more than
    /// [`DELIVERY_QUEUE`] events behind, further events are dropped and counted in the log.
    pub async fn subscribe(&self, topic: &str, options: Dict) -> Result<Subscription, ClientError> {
        self.subscribe_mode(topic, options, false).await
    }

    /// Subscribes so that no event is dropped: when the consumer is behind, the client stops
    /// reading from the router (whose slow-consumer policy then applies). The consumer must not
    /// wait on this same client while handling an event, or it would wait on itself.
    pub async fn subscribe_lossless(
        &self,
        topic: &str,
        options: Dict,
    ) -> Result<Subscription, ClientError> {
        self.subscribe_mode(topic, options, true).await
    }

    async fn subscribe_mode(
        &self,
        topic: &str,
        options: Dict,
        lossless: bool,
    ) -> Result<Subscription, ClientError> {
        let (events_tx, events) = mpsc::channel(DELIVERY_QUEUE);
        let (id, handler) = self
            .request(|reply| Command::Subscribe {
                topic: topic.to_owned(),
                options,
                events: events_tx,
                lossless,
                reply,
            })
            .await??;
        Ok(Subscription {
            id,
            handler,
            events,
        })
    }

    /// Ends a subscription.
    pub async fn unsubscribe(&self, sub: Subscription) -> Result<(), ClientError> {
        self.request(|reply| Command::Unsubscribe {
            id: sub.id,
            handler: sub.handler,
            reply,
        })
        .await?
    }

    /// Registers a procedure (options: `match`, `invoke`, ...).
    pub async fn register(
        &self,
        procedure: &str,
        options: Dict,
    ) -> Result<Registration, ClientError> {
        let (inv_tx, invocations) = mpsc::channel(DELIVERY_QUEUE);
        let id = self
            .request(|reply| Command::Register {
                procedure: procedure.to_owned(),
                options,
                invocations: inv_tx,
                reply,
            })
            .await??;
        Ok(Registration { id, invocations })
    }

    /// Ends a registration.
    pub async fn unregister(&self, reg: Registration) -> Result<(), ClientError> {
        self.request(|reply| Command::Unregister { id: reg.id, reply })
            .await?
    }

    /// Leaves the realm with GOODBYE and closes the connection.
    pub async fn leave(&self) -> Result<(), ClientError> {
        self.request(|reply| Command::Leave { reply }).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn invocation(request: Id, responder: mpsc::Sender<Command>) -> Invocation {
        Invocation {
            request,
            registration: 1,
            procedure: None,
            details: Dict::new(),
            payload: Payload::empty(),
            responder: Some(responder),
            interrupt: oneshot::channel().1,
        }
    }

    fn answered(cmd: Option<Command>) -> Id {
        match cmd {
            Some(Command::InvocationError { request, error }) => {
                assert_eq!(error.uri, crate::wamp::uris::RUNTIME_ERROR);
                request
            }
            _ => panic!("an invocation error"),
        }
    }

    /// A dropped invocation is answered even when the session's command queue is full: the
    /// answer waits for room instead of being lost (its caller would wait forever).
    #[tokio::test]
    async fn a_dropped_invocation_is_answered_even_with_the_queue_full() {
        let (tx, mut rx) = mpsc::channel(1);
        drop(invocation(1, tx.clone()));
        drop(invocation(2, tx));
        assert_eq!(answered(rx.recv().await), 1);
        let second = tokio::time::timeout(std::time::Duration::from_secs(5), rx.recv())
            .await
            .expect("the second answer arrives once there is room");
        assert_eq!(answered(second), 2);
    }
}
