//! What the router sends to a session: messages whose encodings are computed once per serializer
//! and shared, and the handle through which other sessions queue them.
//!
//! Shared state rule: a [`SessionHandle`] is shared (`Arc`) by the broker, the dealer and the
//! session's own task. Its queue is a bounded tokio channel used only with `try_send`, so no caller
//! ever waits on a slow peer; what happens when the queue is full is the [`SlowConsumerPolicy`].

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::wamp::{CodecError, Id, Message, Serializer};

/// A message on its way to one or more sessions. Cloning is cheap; the first session that needs
/// the message in a serializer encodes it, every other session reuses those bytes.
#[derive(Clone, Debug)]
pub struct Outgoing(Arc<OutInner>);

#[derive(Debug)]
struct OutInner {
    msg: Message,
    encoded: [OnceLock<Bytes>; 2],
}

impl Outgoing {
    pub fn new(msg: Message) -> Self {
        Outgoing(Arc::new(OutInner {
            msg,
            encoded: [OnceLock::new(), OnceLock::new()],
        }))
    }

    pub fn message(&self) -> &Message {
        &self.0.msg
    }

    /// The message's bytes in `ser`, encoded at most once per serializer (two racing encoders may
    /// both encode; one result wins and both are identical).
    pub fn encoded(&self, ser: Serializer) -> Result<Bytes, CodecError> {
        let cell = &self.0.encoded[ser.index()];
        if let Some(b) = cell.get() {
            return Ok(b.clone());
        }
        let bytes = ser.encode(&self.0.msg)?;
        Ok(cell.get_or_init(|| bytes).clone())
    }
}

/// What the router does when a session's outbound queue is full.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SlowConsumerPolicy {
    /// Close the session (the default). Nothing is lost silently: the peer sees its session end,
    /// and the event that did not fit is counted in the close log line.
    Disconnect,
    /// Drop the EVENT for this subscriber and count it; the session stays. Replies to calls and
    /// invocations are never dropped: a full queue for those always disconnects.
    DropEvents,
}

/// Who a session is, as established by authentication.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthInfo {
    pub authid: String,
    pub authrole: String,
    pub authmethod: String,
    pub authprovider: String,
}

/// How a session is connected.
#[derive(Clone, Debug)]
pub struct TransportInfo {
    /// `websocket`, `rawsocket` or `local`.
    pub kind: &'static str,
    pub peer: Option<std::net::SocketAddr>,
    /// `None` for in-process sessions, which receive messages unserialized.
    pub serializer: Option<Serializer>,
    pub tls: bool,
    /// The TLS 1.3 `tls-exporter` value, for WAMP-cryptosign channel binding.
    pub channel_binding: Option<super::auth::cryptosign::ChannelBinding>,
}

impl TransportInfo {
    /// Transport info for an in-process session.
    pub fn local() -> Self {
        TransportInfo {
            kind: "local",
            peer: None,
            serializer: None,
            tls: false,
            channel_binding: None,
        }
    }
}

/// Features a client announced in HELLO that change what the router sends it.
#[derive(Clone, Copy, Debug, Default)]
pub struct PeerFeatures {
    /// Callee: accepts UNREGISTERED with request 0 when the router revokes a registration.
    pub registration_revocation: bool,
    /// Subscriber: accepts UNSUBSCRIBED with request 0 when the router revokes a subscription.
    pub subscription_revocation: bool,
    pub progressive_call_results: bool,
    pub call_canceling: bool,
    pub call_timeout: bool,
}

/// Why the router is ending a session.
#[derive(Clone, Debug)]
pub struct CloseRequest {
    /// ABORT (true) or GOODBYE (false).
    pub abort: bool,
    pub reason: String,
    pub message: Option<String>,
}

/// The router's handle on one established session.
#[derive(Debug)]
pub struct SessionHandle {
    pub id: Id,
    pub realm: String,
    pub auth: AuthInfo,
    pub transport: TransportInfo,
    pub features: PeerFeatures,
    tx: mpsc::Sender<Outgoing>,
    kill: CancellationToken,
    close: Mutex<Option<CloseRequest>>,
    policy: SlowConsumerPolicy,
    dropped_events: AtomicU64,
    warned_drop: AtomicBool,
    next_invocation: AtomicU64,
    testaments: Mutex<Vec<Testament>>,
}

/// When a testament is published.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TestamentScope {
    /// When the session's transport goes away (published first).
    Detached,
    /// When the session ends.
    Destroyed,
}

/// An event the router publishes on a session's behalf when the session ends (a last will).
#[derive(Clone, Debug)]
pub struct Testament {
    pub topic: String,
    pub payload: crate::wamp::Payload,
    pub options: crate::wamp::Dict,
    pub scope: TestamentScope,
}

impl SessionHandle {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        id: Id,
        realm: String,
        auth: AuthInfo,
        transport: TransportInfo,
        features: PeerFeatures,
        tx: mpsc::Sender<Outgoing>,
        kill: CancellationToken,
        policy: SlowConsumerPolicy,
    ) -> Self {
        SessionHandle {
            id,
            realm,
            auth,
            transport,
            features,
            tx,
            kill,
            close: Mutex::new(None),
            policy,
            dropped_events: AtomicU64::new(0),
            warned_drop: AtomicBool::new(false),
            next_invocation: AtomicU64::new(1),
            testaments: Mutex::new(Vec::new()),
        }
    }

    /// Most testaments one session may hold.
    pub const MAX_TESTAMENTS: usize = 64;

    /// Adds a testament; false if the session already holds [`Self::MAX_TESTAMENTS`].
    pub fn add_testament(&self, t: Testament) -> bool {
        let mut list = self.testaments.lock().unwrap_or_else(|e| e.into_inner());
        if list.len() >= Self::MAX_TESTAMENTS {
            return false;
        }
        list.push(t);
        true
    }

    /// Removes the testaments of a scope, returning how many there were.
    pub fn flush_testaments(&self, scope: TestamentScope) -> usize {
        let mut list = self.testaments.lock().unwrap_or_else(|e| e.into_inner());
        let before = list.len();
        list.retain(|t| t.scope != scope);
        before - list.len()
    }

    /// Takes every testament, `detached` ones first, each scope in the order added.
    pub(crate) fn take_testaments(&self) -> Vec<Testament> {
        let mut list =
            std::mem::take(&mut *self.testaments.lock().unwrap_or_else(|e| e.into_inner()));
        list.sort_by_key(|t| t.scope != TestamentScope::Detached);
        list
    }

    /// Queues a reply, result, invocation or error. If the queue is full the session is closed:
    /// these messages must not be lost silently.
    pub fn send(&self, msg: Outgoing) -> bool {
        match self.tx.try_send(msg) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(m)) => {
                tracing::warn!(
                    session = self.id,
                    message = m.message().name(),
                    "outbound queue full; closing slow session"
                );
                self.close_with(CloseRequest {
                    abort: true,
                    reason: crate::wamp::uris::CLOSE_SLOW_CONSUMER.into(),
                    message: Some("outbound queue full".into()),
                });
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }

    /// Queues an EVENT under the slow-consumer policy.
    pub fn send_event(&self, msg: Outgoing) -> bool {
        match self.tx.try_send(msg) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                let dropped = self.dropped_events.fetch_add(1, Ordering::Relaxed) + 1;
                match self.policy {
                    SlowConsumerPolicy::Disconnect => {
                        tracing::warn!(
                            session = self.id,
                            dropped,
                            "subscriber cannot keep up; closing it (slow_consumer = disconnect)"
                        );
                        self.close_with(CloseRequest {
                            abort: true,
                            reason: crate::wamp::uris::CLOSE_SLOW_CONSUMER.into(),
                            message: Some("outbound queue full".into()),
                        });
                    }
                    SlowConsumerPolicy::DropEvents => {
                        if !self.warned_drop.swap(true, Ordering::Relaxed) {
                            tracing::warn!(
                                session = self.id,
                                "subscriber cannot keep up; dropping its events (slow_consumer = drop_events)"
                            );
                        }
                    }
                }
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }

    /// Events dropped for this session because its queue was full.
    pub fn dropped_events(&self) -> u64 {
        self.dropped_events.load(Ordering::Relaxed)
    }

    /// Asks the session's task to end the session with this close; the first request wins.
    pub fn close_with(&self, req: CloseRequest) {
        {
            let mut slot = self.close.lock().unwrap_or_else(|e| e.into_inner());
            if slot.is_none() {
                *slot = Some(req);
            }
        }
        self.kill.cancel();
    }

    /// The close requested for this session, if any.
    pub fn close_request(&self) -> Option<CloseRequest> {
        self.close.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The next router-to-callee request id for INVOCATION (session scope).
    pub(crate) fn next_invocation_id(&self) -> Id {
        let id = self.next_invocation.fetch_add(1, Ordering::Relaxed);
        if id > crate::wamp::message::MAX_ID {
            self.next_invocation.store(2, Ordering::Relaxed);
            return 1;
        }
        id
    }
}
