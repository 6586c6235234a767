//! The task that serves one WAMP connection: it reads messages into the session state machine and
//! writes the session's outbound queue to the peer, in one `select!` loop.
//!
//! Writes are batched: after one queued message, everything else already queued (up to a bound)
//! goes out in the same flush. A write that cannot complete within the write timeout (the peer
//! stopped reading) ends the connection, so one stuck peer costs only its own task.

use std::sync::Arc;
use std::time::Duration;

use device_models::LogPermit;
use tokio::sync::mpsc;
use tokio::time::{Instant, sleep_until};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, Span, field};

use super::{TransportError, WampTransport};
use crate::router::{
    Flow, Outgoing, Router, RouterSession, SessionHandle, TransportInfo, WriteDrops,
};
use crate::wamp::message::code;
use crate::wamp::{Dict, Message, Serializer, Value, uris};

/// Time limits for a WAMP connection.
#[derive(Clone, Debug)]
pub struct SessionLimits {
    /// How long a new connection may take to send HELLO (and finish authentication).
    pub hello_timeout: Duration,
    /// How long one flush may block before the peer is considered stuck.
    pub write_timeout: Duration,
    /// How long to wait for the peer's GOODBYE after the router sent one.
    pub goodbye_timeout: Duration,
}

impl Default for SessionLimits {
    fn default() -> Self {
        SessionLimits {
            hello_timeout: Duration::from_secs(10),
            write_timeout: Duration::from_secs(10),
            goodbye_timeout: Duration::from_secs(2),
        }
    }
}

/// Messages written per flush at most, so reading is not starved by a busy queue.
const MAX_BATCH: usize = 256;

/// Serves one connection until it closes, the router closes the session, or `shutdown` fires (then
/// the session gets GOODBYE `wamp.close.system_shutdown`).
pub async fn serve<T: WampTransport>(
    transport: T,
    serializer: Serializer,
    router: Arc<Router>,
    info: TransportInfo,
    shutdown: CancellationToken,
    limits: SessionLimits,
) {
    let span = tracing::info_span!(
        "session",
        peer = ?info.peer,
        transport = info.kind,
        serializer = ?serializer,
        session = field::Empty,
        realm = field::Empty,
    );
    serve_inner(transport, serializer, router, info, shutdown, limits)
        .instrument(span)
        .await;
}

async fn serve_inner<T: WampTransport>(
    mut t: T,
    ser: Serializer,
    router: Arc<Router>,
    info: TransportInfo,
    shutdown: CancellationToken,
    limits: SessionLimits,
) {
    let (tx, mut rx) = mpsc::channel::<Outgoing>(router.outbound_queue());
    let kill = CancellationToken::new();
    let mut session = RouterSession::new(router.clone(), info, tx, kill.clone());
    let drops = router.write_drops();
    let mut deadline = Some(Instant::now() + limits.hello_timeout);
    let mut shutting_down = false;
    let mut recorded = false;

    loop {
        tokio::select! {
            biased;
            () = kill.cancelled() => {
                let close = session.handle_ref().and_then(|h| h.close_request());
                // Whatever is still queued is abandoned: the peer is being closed for a reason.
                drop(rx);
                if let Some(req) = close {
                    let msg = if req.abort {
                        Message::abort(&req.reason, req.message.as_deref())
                    } else {
                        Message::Goodbye { details: Default::default(), reason: req.reason.clone() }
                    };
                    tracing::info!(reason = %req.reason, "router closed the session");
                    drop(session);
                    if let Ok(b) = ser.encode(&msg) {
                        let _ = t.queue(&b);
                        let _ = tokio::time::timeout(limits.goodbye_timeout, t.flush()).await;
                    }
                }
                let _ = tokio::time::timeout(limits.goodbye_timeout, t.close()).await;
                return;
            }
            () = shutdown.cancelled(), if !shutting_down => {
                shutting_down = true;
                match session.begin_close(uris::CLOSE_SYSTEM_SHUTDOWN, None) {
                    Flow::Close => break,
                    Flow::Continue => deadline = Some(Instant::now() + limits.goodbye_timeout),
                }
            }
            () = sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => {
                tracing::debug!("connection timed out waiting for the peer");
                break;
            }
            out = rx.recv() => {
                let Some(out) = out else { break };
                let handle = session.handle_ref().cloned();
                tokio::select! {
                    r = write_batch(&mut t, ser, out, &mut rx, limits.write_timeout, handle.as_deref(), drops) => {
                        match r {
                            Ok(owed) => {
                                if owed.into_iter().any(|o| o.settle(&mut session) == Flow::Close) {
                                    break;
                                }
                            }
                            Err(e) => {
                                tracing::info!(error = %e, "write failed; closing");
                                return;
                            }
                        }
                    }
                    // Closed by the router while a write to this (probably stuck) peer was
                    // blocked: a frame may be half written, so close without another word.
                    () = kill.cancelled() => {
                        if let Some(req) = session.handle_ref().and_then(|h| h.close_request()) {
                            tracing::info!(reason = %req.reason, "router closed the session during a blocked write");
                        }
                        return;
                    }
                }
            }
            inbound = t.recv() => {
                let flow = match inbound {
                    Ok(Some(bytes)) => match ser.decode(&bytes) {
                        Ok(msg) => session.handle(msg),
                        Err(e) => session.protocol_violation(&e.to_string()),
                    },
                    Ok(None) => break,
                    Err(TransportError::Frame(e)) => session.protocol_violation(&e.to_string()),
                    Err(e) => {
                        tracing::debug!(error = %e, "transport closed");
                        break;
                    }
                };
                if !recorded && let Some(h) = session.handle_ref() {
                    recorded = true;
                    Span::current().record("session", h.id).record("realm", h.realm.as_str());
                    if !shutting_down {
                        deadline = None;
                    }
                }
                if flow == Flow::Close {
                    break;
                }
            }
        }
    }
    // Leave the realm first, then flush what is queued (an ABORT, a GOODBYE reply) and close.
    drop(session);
    rx.close();
    let drain = async {
        while let Some(out) = rx.recv().await {
            // The session is gone: nothing is owed for what cannot be sent now.
            write_batch(&mut t, ser, out, &mut rx, limits.write_timeout, None, drops).await?;
        }
        Ok::<(), TransportError>(())
    };
    let _ = tokio::time::timeout(limits.goodbye_timeout, drain).await;
    let _ = tokio::time::timeout(limits.goodbye_timeout, t.close()).await;
}

/// Writes `first` and whatever else is already queued, then flushes once. Events the session
/// sheds for the hub's memory budget (oldest first, see [`SessionHandle::shed_on_write`]) are
/// skipped; messages that cannot be sent are dropped and counted in `drops` (see [`queue_one`]),
/// and what the session owes the router for them is returned.
async fn write_batch<T: WampTransport>(
    t: &mut T,
    ser: Serializer,
    first: Outgoing,
    rx: &mut mpsc::Receiver<Outgoing>,
    write_timeout: Duration,
    session: Option<&SessionHandle>,
    drops: &WriteDrops,
) -> Result<Vec<Owed>, TransportError> {
    let sheds = |out: &Outgoing, rx: &mpsc::Receiver<Outgoing>| {
        session.is_some_and(|h| h.shed_on_write(out, rx.len()))
    };
    let mut queued = false;
    let mut owed = Vec::new();
    if !sheds(&first, rx) {
        queued |= queue_one(t, ser, &first, drops, &mut owed)?;
    }
    for _ in 1..MAX_BATCH {
        match rx.try_recv() {
            Ok(out) if sheds(&out, rx) => {}
            Ok(out) => queued |= queue_one(t, ser, &out, drops, &mut owed)?,
            Err(_) => break,
        }
    }
    if queued {
        tokio::time::timeout(write_timeout, t.flush())
            .await
            .map_err(|_| TransportError::Timeout)??;
    }
    Ok(owed)
}

/// What a session owes the router for a message its peer could not be sent.
#[derive(Debug)]
enum Owed {
    /// The callee's answer to an INVOCATION it never got, routed to the caller.
    CalleeError(Message),
    /// A call whose progressive result the caller could not be sent: it ends with an error,
    /// as later results could not follow a gap.
    AbandonCall {
        request: crate::wamp::Id,
        message: String,
    },
}

impl Owed {
    fn settle(self, session: &mut RouterSession) -> Flow {
        match self {
            Owed::CalleeError(error) => session.handle(error),
            Owed::AbandonCall { request, message } => {
                session.abandon_call(request, uris::PAYLOAD_SIZE_EXCEEDED, message);
                Flow::Continue
            }
        }
    }
}

/// Queues one message and says whether anything was queued. A message that cannot be encoded or
/// is over the peer's limit is dropped and counted in `drops` (logged, rate-limited), and the
/// session goes on; no peer is left waiting for it:
/// - a WELCOME goes without the roles' feature lists (optional, and a peer that small cannot use
///   them);
/// - a RESULT becomes a `wamp.error.payload_size_exceeded` ERROR for its call; a progressive
///   one ends its call with that error (through the dealer, which interrupts the callee), since
///   later results cannot follow a gap;
/// - an ERROR goes with its URI and without its payload;
/// - an INVOCATION is answered for the callee with a `wamp.error.payload_size_exceeded` ERROR,
///   which the session routes to the caller;
/// - anything else (an EVENT) is only dropped.
fn queue_one<T: WampTransport>(
    t: &mut T,
    ser: Serializer,
    out: &Outgoing,
    drops: &WriteDrops,
    owed: &mut Vec<Owed>,
) -> Result<bool, TransportError> {
    let bytes = match out.encoded(ser) {
        Ok(b) => b,
        Err(e) => {
            if let LogPermit::Log { suppressed } = drops.count(&drops.unencodable) {
                tracing::warn!(error = %e, message = out.message().name(), suppressed, "could not encode; dropped");
            }
            return Ok(false);
        }
    };
    let (len, limit) = match t.queue(&bytes) {
        Err(TransportError::TooLarge { len, limit }) => (len, limit),
        other => return other.map(|()| true),
    };
    let too_large =
        |what: &str| format!("{what} of {len} bytes is over the peer's limit of {limit}");
    let instead = match out.message() {
        Message::Welcome { session, details } => {
            tracing::debug!(
                len,
                limit,
                "WELCOME over the peer's limit; sent without feature lists"
            );
            let slim = Message::Welcome {
                session: *session,
                details: without_features(details),
            };
            // Still too large (or, impossibly, unencodable): the error closes the connection, so
            // the peer sees it closed rather than waiting.
            let bytes = ser
                .encode(&slim)
                .map_err(|_| TransportError::TooLarge { len, limit })?;
            return t.queue(&bytes).map(|()| true);
        }
        Message::Result {
            request, details, ..
        } if details.get("progress").and_then(Value::as_bool) == Some(true) => {
            owed.push(Owed::AbandonCall {
                request: *request,
                message: too_large("progressive result"),
            });
            None
        }
        Message::Result { request, .. } => Some(Message::error(
            code::CALL,
            *request,
            uris::PAYLOAD_SIZE_EXCEEDED,
            Some(too_large("result")),
        )),
        Message::Error {
            request_type,
            request,
            error,
            ..
        } => Some(Message::error(*request_type, *request, error, None)),
        Message::Invocation { request, .. } => {
            owed.push(Owed::CalleeError(Message::error(
                code::INVOCATION,
                *request,
                uris::PAYLOAD_SIZE_EXCEEDED,
                Some(too_large("invocation")),
            )));
            None
        }
        _ => None,
    };
    if let LogPermit::Log { suppressed } = drops.count(&drops.too_large) {
        tracing::warn!(
            len,
            limit,
            message = out.message().name(),
            suppressed,
            "message over the peer's limit; dropped"
        );
    }
    match instead {
        Some(msg) => match ser.encode(&msg) {
            Ok(b) => t.queue(&b).map(|()| true),
            Err(_) => Ok(false),
        },
        None => Ok(false),
    }
}

/// WELCOME details with every role's feature list left out (the roles themselves stay).
fn without_features(details: &Dict) -> Dict {
    let mut slim = details.clone();
    if let Some(Value::Dict(roles)) = slim.get_mut("roles") {
        for role in roles.values_mut() {
            *role = Value::Dict(Dict::new());
        }
    }
    slim
}
