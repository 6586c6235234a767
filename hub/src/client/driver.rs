//! The task behind a [`Client`]: owns the connection and every table of pending requests.
//!
//! Delivery rule: events and invocations are handed to the application with `try_send`, so a
//! handler that is itself waiting on this client (a call made while handling an event) can never
//! deadlock the driver. An event that does not fit is dropped and counted, unless the
//! subscription is lossless, in which case the driver waits (use that only for consumers that
//! never call back into the same client). An invocation that does not fit is answered with
//! `wamp.error.unavailable`.

use std::collections::HashMap;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};

use super::conn::ClientConn;
use super::{CallResult, Client, ClientError, Event, Interrupt, Invocation, WampError};
use crate::wamp::ids::RequestIds;
use crate::wamp::message::{code, opt_str};
use crate::wamp::{Dict, Id, Message, Payload, uris};

type Reply<T> = oneshot::Sender<Result<T, ClientError>>;

/// Requests from [`Client`] handles to the driver.
#[derive(Debug)]
pub(crate) enum Command {
    Call {
        procedure: String,
        options: Dict,
        payload: Payload,
        progress: Option<mpsc::Sender<CallResult>>,
        reply: Reply<CallResult>,
    },
    Publish {
        topic: String,
        options: Dict,
        payload: Payload,
        ack: Option<Reply<Id>>,
    },
    /// Acknowledged publishes sent in order in one go; each result arrives on its own reply.
    PublishBatch {
        items: Vec<(String, Payload)>,
        replies: Vec<Reply<Id>>,
    },
    Subscribe {
        topic: String,
        options: Dict,
        events: mpsc::Sender<Event>,
        lossless: bool,
        reply: Reply<(Id, u64)>,
    },
    Unsubscribe {
        id: Id,
        handler: u64,
        reply: Reply<()>,
    },
    Register {
        procedure: String,
        options: Dict,
        invocations: mpsc::Sender<Invocation>,
        reply: Reply<Id>,
    },
    Unregister {
        id: Id,
        reply: Reply<()>,
    },
    Yield {
        request: Id,
        progress: bool,
        payload: Payload,
    },
    InvocationError {
        request: Id,
        error: WampError,
    },
    Leave {
        reply: oneshot::Sender<()>,
    },
}

struct PendingCall {
    progress: Option<mpsc::Sender<CallResult>>,
    reply: Reply<CallResult>,
}

struct Handler {
    id: u64,
    tx: mpsc::Sender<Event>,
    lossless: bool,
    dropped: u64,
}

pub(crate) struct Driver<C> {
    conn: C,
    cmds: mpsc::Receiver<Command>,
    responder: mpsc::WeakSender<Command>,
    ids: RequestIds,
    calls: HashMap<Id, PendingCall>,
    publishes: HashMap<Id, Reply<Id>>,
    subscribes: HashMap<Id, (Handler, Reply<(Id, u64)>)>,
    unsubscribes: HashMap<Id, Option<Reply<()>>>,
    registers: HashMap<Id, (mpsc::Sender<Invocation>, Reply<Id>)>,
    unregisters: HashMap<Id, (Id, Reply<()>)>,
    subscriptions: HashMap<Id, Vec<Handler>>,
    registrations: HashMap<Id, mpsc::Sender<Invocation>>,
    /// Invocations handed to the application and not answered yet, to tell of an INTERRUPT.
    interrupts: HashMap<Id, oneshot::Sender<Interrupt>>,
    next_handler: u64,
    closed: watch::Sender<Option<String>>,
    keepalive: Option<Duration>,
}

/// Why the driver loop ended.
enum End {
    Reason(String),
    Leave(oneshot::Sender<()>),
}

impl<C: ClientConn> Driver<C> {
    /// Starts the driver for an established session and returns its handle.
    pub(crate) fn spawn(
        conn: C,
        session: Id,
        details: Dict,
        keepalive: Option<Duration>,
    ) -> Client {
        let (tx, cmds) = mpsc::channel(256);
        let (closed, closed_rx) = watch::channel(None);
        let driver = Driver {
            conn,
            cmds,
            responder: tx.downgrade(),
            ids: RequestIds::default(),
            calls: HashMap::new(),
            publishes: HashMap::new(),
            subscribes: HashMap::new(),
            unsubscribes: HashMap::new(),
            registers: HashMap::new(),
            unregisters: HashMap::new(),
            subscriptions: HashMap::new(),
            registrations: HashMap::new(),
            interrupts: HashMap::new(),
            next_handler: 1,
            closed,
            keepalive,
        };
        tokio::spawn(driver.run());
        Client::from_parts(tx, session, details, closed_rx)
    }

    async fn run(mut self) {
        let tick = self.keepalive.unwrap_or(Duration::from_secs(3600));
        let mut keepalive = tokio::time::interval(tick);
        keepalive.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let end = loop {
            tokio::select! {
                _ = keepalive.tick(), if self.keepalive.is_some() => {
                    // Ping when idle; give up when nothing came back for two intervals (a
                    // half-open link swallows writes without an error).
                    if let Some(last) = self.conn.last_activity() {
                        let idle = last.elapsed();
                        if idle > tick * 2 {
                            break End::Reason(format!("keepalive: nothing heard for {idle:?}"));
                        }
                        if idle >= tick && self.conn.ping().await.is_err() {
                            break End::Reason("keepalive ping failed".into());
                        }
                    }
                }
                cmd = self.cmds.recv() => match cmd {
                    // Every handle is gone: leave politely.
                    None => break End::Reason(self.goodbye().await),
                    Some(Command::Leave { reply }) => break End::Leave(reply),
                    Some(cmd) => if let Err(e) = self.command(cmd).await {
                        break End::Reason(e.to_string());
                    },
                },
                msg = self.conn.recv() => match msg {
                    Ok(Some(m)) => if let Some(end) = self.incoming(m).await {
                        break end;
                    },
                    Ok(None) => break End::Reason("connection closed".into()),
                    Err(e) => break End::Reason(e.to_string()),
                },
            }
        };
        let reason = match end {
            End::Reason(r) => r,
            End::Leave(reply) => {
                let r = self.goodbye().await;
                let _ = reply.send(());
                r
            }
        };
        self.conn.close().await;
        self.fail_all();
        tracing::debug!(%reason, "client session ended");
        let _ = self.closed.send(Some(reason));
    }

    /// Sends GOODBYE and waits briefly for the router's reply. EVENTs the router queued before
    /// that reply are still delivered to their subscriptions (a subscriber that leaves, like the
    /// uplink's feed at shutdown, gets everything published to it before it left); anything
    /// else that arrives meanwhile is dropped.
    async fn goodbye(&mut self) -> String {
        let bye = Message::Goodbye {
            details: Dict::new(),
            reason: uris::CLOSE_NORMAL.into(),
        };
        if self.conn.send(bye).await.is_err() {
            return "left".into();
        }
        let wait = async {
            loop {
                match self.conn.recv().await {
                    Ok(Some(Message::Goodbye { .. })) | Ok(None) | Err(_) => return,
                    Ok(Some(event @ Message::Event { .. })) => {
                        if self.incoming(event).await.is_some() {
                            return;
                        }
                    }
                    Ok(Some(_)) => {}
                }
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(2), wait).await;
        "left".into()
    }

    fn fail_all(&mut self) {
        for (_, c) in self.calls.drain() {
            let _ = c.reply.send(Err(ClientError::Closed));
        }
        for (_, r) in self.publishes.drain() {
            let _ = r.send(Err(ClientError::Closed));
        }
        for (_, (_, r)) in self.subscribes.drain() {
            let _ = r.send(Err(ClientError::Closed));
        }
        for (_, r) in self.unsubscribes.drain() {
            if let Some(r) = r {
                let _ = r.send(Err(ClientError::Closed));
            }
        }
        for (_, (_, r)) in self.registers.drain() {
            let _ = r.send(Err(ClientError::Closed));
        }
        for (_, (_, r)) in self.unregisters.drain() {
            let _ = r.send(Err(ClientError::Closed));
        }
        self.subscriptions.clear();
        self.registrations.clear();
    }

    async fn command(&mut self, cmd: Command) -> Result<(), ClientError> {
        match cmd {
            Command::Call {
                procedure,
                options,
                payload,
                progress,
                reply,
            } => {
                let request = self.ids.next_id();
                self.calls.insert(request, PendingCall { progress, reply });
                self.conn
                    .send(Message::Call {
                        request,
                        options,
                        procedure,
                        payload,
                    })
                    .await
            }
            Command::Publish {
                topic,
                options,
                payload,
                ack,
            } => {
                let request = self.ids.next_id();
                if let Some(ack) = ack {
                    self.publishes.insert(request, ack);
                }
                self.conn
                    .send(Message::Publish {
                        request,
                        options,
                        topic,
                        payload,
                    })
                    .await
            }
            Command::PublishBatch { items, replies } => {
                for ((topic, payload), reply) in items.into_iter().zip(replies) {
                    let request = self.ids.next_id();
                    self.publishes.insert(request, reply);
                    self.conn
                        .send(Message::Publish {
                            request,
                            options: crate::wamp::dict([("acknowledge", true.into())]),
                            topic,
                            payload,
                        })
                        .await?;
                }
                Ok(())
            }
            Command::Subscribe {
                topic,
                options,
                events,
                lossless,
                reply,
            } => {
                let request = self.ids.next_id();
                let handler = Handler {
                    id: self.next_handler,
                    tx: events,
                    lossless,
                    dropped: 0,
                };
                self.next_handler += 1;
                self.subscribes.insert(request, (handler, reply));
                self.conn
                    .send(Message::Subscribe {
                        request,
                        options,
                        topic,
                    })
                    .await
            }
            Command::Unsubscribe { id, handler, reply } => {
                let Some(handlers) = self.subscriptions.get_mut(&id) else {
                    let _ = reply.send(Err(WampError::new(
                        uris::NO_SUCH_SUBSCRIPTION,
                        "not subscribed",
                    )
                    .into()));
                    return Ok(());
                };
                handlers.retain(|h| h.id != handler);
                if !handlers.is_empty() {
                    let _ = reply.send(Ok(()));
                    return Ok(());
                }
                self.subscriptions.remove(&id);
                self.send_unsubscribe(id, Some(reply)).await
            }
            Command::Register {
                procedure,
                options,
                invocations,
                reply,
            } => {
                let request = self.ids.next_id();
                self.registers.insert(request, (invocations, reply));
                self.conn
                    .send(Message::Register {
                        request,
                        options,
                        procedure,
                    })
                    .await
            }
            Command::Unregister { id, reply } => {
                let request = self.ids.next_id();
                self.unregisters.insert(request, (id, reply));
                self.conn
                    .send(Message::Unregister {
                        request,
                        registration: id,
                    })
                    .await
            }
            Command::Yield {
                request,
                progress,
                payload,
            } => {
                let mut options = Dict::new();
                if progress {
                    options.insert("progress".into(), true.into());
                } else {
                    self.interrupts.remove(&request);
                }
                self.conn
                    .send(Message::Yield {
                        request,
                        options,
                        payload,
                    })
                    .await
            }
            Command::InvocationError { request, error } => {
                self.interrupts.remove(&request);
                self.conn
                    .send(Message::Error {
                        request_type: code::INVOCATION,
                        request,
                        details: error.details,
                        error: error.uri,
                        payload: error.payload,
                    })
                    .await
            }
            Command::Leave { .. } => Ok(()),
        }
    }

    async fn send_unsubscribe(
        &mut self,
        id: Id,
        reply: Option<Reply<()>>,
    ) -> Result<(), ClientError> {
        let request = self.ids.next_id();
        self.unsubscribes.insert(request, reply);
        self.conn
            .send(Message::Unsubscribe {
                request,
                subscription: id,
            })
            .await
    }

    /// Handles one message from the router; `Some` ends the session.
    async fn incoming(&mut self, msg: Message) -> Option<End> {
        match msg {
            Message::Event {
                subscription,
                publication,
                details,
                payload,
            } => {
                self.deliver_event(subscription, publication, details, payload)
                    .await
            }
            Message::Result {
                request,
                details,
                payload,
            } => {
                let progress = crate::wamp::message::opt_bool(&details, "progress", false);
                if progress {
                    if let Some(tx) = self.calls.get(&request).and_then(|c| c.progress.clone()) {
                        let _ = tx.send(CallResult { details, payload }).await;
                    }
                } else if let Some(c) = self.calls.remove(&request) {
                    let _ = c.reply.send(Ok(CallResult { details, payload }));
                }
            }
            Message::Invocation {
                request,
                registration,
                details,
                payload,
            } => {
                self.deliver_invocation(request, registration, details, payload)
                    .await
            }
            Message::Interrupt { request, options } => {
                let interrupt = Interrupt {
                    mode: opt_str(&options, "mode").unwrap_or("kill").to_owned(),
                    reason: opt_str(&options, "reason")
                        .unwrap_or(uris::CANCELED)
                        .to_owned(),
                };
                match self.interrupts.remove(&request) {
                    Some(tx) => {
                        let _ = tx.send(interrupt);
                    }
                    None => tracing::debug!(request, "INTERRUPT for no invocation in progress"),
                }
            }
            Message::Published {
                request,
                publication,
            } => {
                if let Some(r) = self.publishes.remove(&request) {
                    let _ = r.send(Ok(publication));
                }
            }
            Message::Subscribed {
                request,
                subscription,
            } => {
                if let Some((handler, reply)) = self.subscribes.remove(&request) {
                    let hid = handler.id;
                    self.subscriptions
                        .entry(subscription)
                        .or_default()
                        .push(handler);
                    let _ = reply.send(Ok((subscription, hid)));
                }
            }
            Message::Unsubscribed { request, details } => {
                if request == 0 {
                    // Revoked by the router.
                    if let Some(id) = details
                        .as_ref()
                        .and_then(|d| d.get("subscription"))
                        .and_then(crate::wamp::Value::as_u64)
                    {
                        self.subscriptions.remove(&id);
                    }
                } else if let Some(Some(r)) = self.unsubscribes.remove(&request) {
                    let _ = r.send(Ok(()));
                }
            }
            Message::Registered {
                request,
                registration,
            } => {
                if let Some((tx, reply)) = self.registers.remove(&request) {
                    self.registrations.insert(registration, tx);
                    let _ = reply.send(Ok(registration));
                }
            }
            Message::Unregistered { request, details } => {
                if request == 0 {
                    if let Some(id) = details
                        .as_ref()
                        .and_then(|d| d.get("registration"))
                        .and_then(crate::wamp::Value::as_u64)
                    {
                        self.registrations.remove(&id);
                    }
                } else if let Some((id, r)) = self.unregisters.remove(&request) {
                    self.registrations.remove(&id);
                    let _ = r.send(Ok(()));
                }
            }
            Message::Error {
                request_type,
                request,
                details,
                error,
                payload,
            } => {
                let err = WampError {
                    uri: error,
                    details,
                    payload,
                };
                self.route_error(request_type, request, err);
            }
            Message::Goodbye { reason, .. } => {
                let _ = self
                    .conn
                    .send(Message::Goodbye {
                        details: Dict::new(),
                        reason: uris::CLOSE_GOODBYE_AND_OUT.into(),
                    })
                    .await;
                return Some(End::Reason(reason));
            }
            Message::Abort { reason, details } => {
                let message = opt_str(&details, "message").map(str::to_owned);
                return Some(End::Reason(match message {
                    Some(m) => format!("{reason}: {m}"),
                    None => reason,
                }));
            }
            other => {
                return Some(End::Reason(format!(
                    "protocol violation: unexpected {} from the router",
                    other.name()
                )));
            }
        }
        None
    }

    fn route_error(&mut self, request_type: u64, request: Id, err: WampError) {
        let err = ClientError::Wamp(err);
        match request_type {
            code::CALL => {
                if let Some(c) = self.calls.remove(&request) {
                    let _ = c.reply.send(Err(err));
                }
            }
            code::PUBLISH => {
                if let Some(r) = self.publishes.remove(&request) {
                    let _ = r.send(Err(err));
                }
            }
            code::SUBSCRIBE => {
                if let Some((_, r)) = self.subscribes.remove(&request) {
                    let _ = r.send(Err(err));
                }
            }
            code::UNSUBSCRIBE => {
                if let Some(Some(r)) = self.unsubscribes.remove(&request) {
                    let _ = r.send(Err(err));
                }
            }
            code::REGISTER => {
                if let Some((_, r)) = self.registers.remove(&request) {
                    let _ = r.send(Err(err));
                }
            }
            code::UNREGISTER => {
                if let Some((_, r)) = self.unregisters.remove(&request) {
                    let _ = r.send(Err(err));
                }
            }
            _ => tracing::debug!(request_type, request, "ERROR for an unknown request type"),
        }
    }

    async fn deliver_event(
        &mut self,
        subscription: Id,
        publication: Id,
        details: Dict,
        payload: Payload,
    ) {
        let Some(handlers) = self.subscriptions.get_mut(&subscription) else {
            return;
        };
        let event = Event {
            subscription,
            publication,
            topic: opt_str(&details, "topic").map(str::to_owned),
            details,
            payload,
        };
        let mut gone = false;
        for h in handlers.iter_mut() {
            let sent = if h.lossless {
                h.tx.send(event.clone()).await.is_ok()
            } else {
                match h.tx.try_send(event.clone()) {
                    Ok(()) => true,
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        h.dropped += 1;
                        if h.dropped.is_power_of_two() {
                            tracing::warn!(
                                subscription,
                                dropped = h.dropped,
                                "event consumer is behind; events dropped"
                            );
                        }
                        true
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => false,
                }
            };
            if !sent {
                h.id = 0;
                gone = true;
            }
        }
        if gone {
            handlers.retain(|h| h.id != 0);
            if handlers.is_empty() {
                self.subscriptions.remove(&subscription);
                let _ = self.send_unsubscribe(subscription, None).await;
            }
        }
    }

    async fn deliver_invocation(
        &mut self,
        request: Id,
        registration: Id,
        details: Dict,
        payload: Payload,
    ) {
        let refuse = |uri: &str, m: &str| Command::InvocationError {
            request,
            error: WampError::new(uri, m),
        };
        let Some(tx) = self.registrations.get(&registration) else {
            let _ = self
                .command(refuse(uris::NO_SUCH_REGISTRATION, "not registered"))
                .await;
            return;
        };
        let (interrupt_tx, interrupt) = oneshot::channel();
        let inv = Invocation {
            request,
            registration,
            procedure: opt_str(&details, "procedure").map(str::to_owned),
            details,
            payload,
            responder: self.responder.upgrade(),
            interrupt,
        };
        match tx.try_send(inv) {
            Ok(()) => {
                self.interrupts.insert(request, interrupt_tx);
            }
            Err(mpsc::error::TrySendError::Full(mut inv)) => {
                inv.responder = None;
                let _ = self
                    .command(refuse(uris::UNAVAILABLE, "the callee is busy"))
                    .await;
            }
            Err(mpsc::error::TrySendError::Closed(mut inv)) => {
                inv.responder = None;
                self.registrations.remove(&registration);
                let _ = self
                    .command(refuse(
                        uris::NO_SUCH_REGISTRATION,
                        "the callee stopped serving",
                    ))
                    .await;
            }
        }
    }
}
