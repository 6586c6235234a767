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

/// Outgoing messages that connections dropped at the socket, router-wide (a message may be
/// refused before its session has a realm), by cause; read by the metrics and `/status`. Each
/// drop is logged, at most ten warnings per ten seconds; what replaces the message so that no
/// peer waits for it is the connection's business (`transport::connection`).
#[derive(Debug, Default)]
pub struct WriteDrops {
    /// Over the maximum message size the peer announced.
    pub too_large: AtomicU64,
    /// Not encodable in the session's serializer.
    pub unencodable: AtomicU64,
    log: device_models::LogLimiter,
}

impl WriteDrops {
    /// Counts one drop in `counter` and whether a warning about it may be logged now.
    pub(crate) fn count(&self, counter: &AtomicU64) -> device_models::LogPermit {
        counter.fetch_add(1, Ordering::Relaxed);
        self.log.permit(std::time::Instant::now())
    }
}

/// How many messages a session may have queued while the hub is over its memory budget: past
/// this its events are shed (see [`SessionHandle::send_event`]).
pub const PRESSURE_BACKLOG: usize = 256;

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
    memory: device_models::MemoryPressure,
    dropped_events: AtomicU64,
    shed_for_memory: AtomicU64,
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
        memory: device_models::MemoryPressure,
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
            memory,
            dropped_events: AtomicU64::new(0),
            shed_for_memory: AtomicU64::new(0),
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

    /// Messages queued for this session and not yet taken by its writer.
    pub fn backlog(&self) -> usize {
        self.tx.max_capacity() - self.tx.capacity()
    }

    /// Queues an EVENT under the slow-consumer policy. While the hub is over its memory budget,
    /// a session [`PRESSURE_BACKLOG`] messages behind is treated as full: its queue is what the
    /// budget sheds first.
    pub fn send_event(&self, msg: Outgoing) -> bool {
        if self.memory.over() && self.backlog() >= PRESSURE_BACKLOG {
            self.shed_for_memory.fetch_add(1, Ordering::Relaxed);
            self.memory.count_shed_events(1);
            return self.on_full(true);
        }
        match self.tx.try_send(msg) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => self.on_full(false),
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }

    /// Whether the writer should discard `out` instead of sending it: an EVENT taken while the
    /// hub is over its memory budget and `backlog` more messages wait behind it. The writer
    /// then sheds the oldest events first, down to [`PRESSURE_BACKLOG`]. Counted.
    pub fn shed_on_write(&self, out: &Outgoing, backlog: usize) -> bool {
        if backlog < PRESSURE_BACKLOG
            || !self.memory.over()
            || !matches!(out.message(), Message::Event { .. })
        {
            return false;
        }
        self.dropped_events.fetch_add(1, Ordering::Relaxed);
        self.shed_for_memory.fetch_add(1, Ordering::Relaxed);
        self.memory.count_shed_events(1);
        true
    }

    /// An event did not fit (`memory`: because the hub is over its memory budget): apply the
    /// slow-consumer policy.
    fn on_full(&self, memory: bool) -> bool {
        let dropped = self.dropped_events.fetch_add(1, Ordering::Relaxed) + 1;
        // The memory budget never closes an in-process session (a part of the hub): it loses
        // the event instead, counted.
        let policy = if memory && self.transport.kind == "local" {
            SlowConsumerPolicy::DropEvents
        } else {
            self.policy
        };
        match policy {
            SlowConsumerPolicy::Disconnect if memory => {
                tracing::warn!(
                    session = self.id,
                    dropped,
                    backlog = self.backlog(),
                    "the hub is over its memory budget; closing a subscriber that is behind (slow_consumer = disconnect)"
                );
                self.close_with(CloseRequest {
                    abort: true,
                    reason: crate::wamp::uris::CLOSE_SLOW_CONSUMER.into(),
                    message: Some("the router is over its memory budget".into()),
                });
            }
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
                        memory,
                        "subscriber cannot keep up; dropping its events (slow_consumer = drop_events)"
                    );
                }
            }
        }
        false
    }

    /// Events dropped for this session because its queue was full or the hub was over its
    /// memory budget (the latter also in [`Self::shed_for_memory`]).
    pub fn dropped_events(&self) -> u64 {
        self.dropped_events.load(Ordering::Relaxed)
    }

    /// Events dropped for this session because the hub was over its memory budget.
    pub fn shed_for_memory(&self) -> u64 {
        self.shed_for_memory.load(Ordering::Relaxed)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wamp::Payload;

    fn handle(
        kind: &'static str,
        policy: SlowConsumerPolicy,
        memory: &device_models::MemoryPressure,
    ) -> (SessionHandle, mpsc::Receiver<Outgoing>) {
        let (tx, rx) = mpsc::channel(4 * PRESSURE_BACKLOG);
        let auth = AuthInfo {
            authid: "a".into(),
            authrole: "r".into(),
            authmethod: "anonymous".into(),
            authprovider: "static".into(),
        };
        let transport = TransportInfo {
            kind,
            ..TransportInfo::local()
        };
        let h = SessionHandle::new(
            1,
            "brume".into(),
            auth,
            transport,
            PeerFeatures::default(),
            tx,
            CancellationToken::new(),
            policy,
            memory.clone(),
        );
        (h, rx)
    }

    fn event(n: u64) -> Outgoing {
        Outgoing::new(Message::Event {
            subscription: 1,
            publication: n,
            details: Default::default(),
            payload: Payload::empty(),
        })
    }

    #[test]
    fn over_the_memory_budget_a_session_behind_sheds_its_events() {
        let memory = device_models::MemoryPressure::new();
        let (h, mut rx) = handle("rawsocket", SlowConsumerPolicy::DropEvents, &memory);
        for n in 0..PRESSURE_BACKLOG as u64 + 10 {
            assert!(h.send_event(event(n)), "under budget every event fits");
        }
        memory.set_over(true);
        assert!(!h.send_event(event(999)), "behind, over budget: shed");
        assert_eq!(h.shed_for_memory(), 1);
        assert_eq!(h.dropped_events(), 1);
        // The writer sheds from the front (the oldest) down to the backlog allowed.
        let mut written = Vec::new();
        while let Ok(out) = rx.try_recv() {
            if !h.shed_on_write(&out, rx.len()) {
                written.push(out);
            }
        }
        assert_eq!(written.len(), PRESSURE_BACKLOG);
        assert_eq!(h.shed_for_memory(), 11);
        assert_eq!(memory.shed_events(), 11);
        assert!(h.close_request().is_none(), "drop_events keeps the session");
    }

    #[test]
    fn over_the_memory_budget_a_disconnect_session_behind_is_closed_but_never_a_local_one() {
        let memory = device_models::MemoryPressure::new();
        memory.set_over(true);
        let (remote, _rx1) = handle("websocket", SlowConsumerPolicy::Disconnect, &memory);
        let (local, _rx2) = handle("local", SlowConsumerPolicy::Disconnect, &memory);
        for n in 0..PRESSURE_BACKLOG as u64 {
            assert!(remote.send_event(event(n)));
            assert!(local.send_event(event(n)));
        }
        assert!(!remote.send_event(event(1000)));
        assert!(
            remote.close_request().is_some(),
            "closed, freeing its backlog"
        );
        assert!(!local.send_event(event(1000)));
        assert!(
            local.close_request().is_none(),
            "a part of the hub is never closed"
        );
        assert_eq!(local.shed_for_memory(), 1);
        // What goes through `send` (results, invocations, errors) is never shed.
        assert!(
            local.send(event(1002)),
            "a reply is queued whatever the budget"
        );
        assert_eq!(local.backlog(), PRESSURE_BACKLOG + 1);
    }
}
