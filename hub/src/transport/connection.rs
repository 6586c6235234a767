//! The task that serves one WAMP connection: it reads messages into the session state machine and
//! writes the session's outbound queue to the peer, in one `select!` loop.
//!
//! Writes are batched: after one queued message, everything else already queued (up to a bound)
//! goes out in the same flush. A write that cannot complete within the write timeout (the peer
//! stopped reading) ends the connection, so one stuck peer costs only its own task.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::{Instant, sleep_until};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, Span, field};

use super::{TransportError, WampTransport};
use crate::router::{Flow, Outgoing, Router, RouterSession, SessionHandle, TransportInfo};
use crate::wamp::{Message, Serializer, uris};

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
    let mut session = RouterSession::new(router, info, tx, kill.clone());
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
                    r = write_batch(&mut t, ser, out, &mut rx, limits.write_timeout, handle.as_deref()) => {
                        if let Err(e) = r {
                            tracing::info!(error = %e, "write failed; closing");
                            return;
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
            write_batch(&mut t, ser, out, &mut rx, limits.write_timeout, None).await?;
        }
        Ok::<(), TransportError>(())
    };
    let _ = tokio::time::timeout(limits.goodbye_timeout, drain).await;
    let _ = tokio::time::timeout(limits.goodbye_timeout, t.close()).await;
}

/// Writes `first` and whatever else is already queued, then flushes once. Events the session
/// sheds for the hub's memory budget (oldest first, see [`SessionHandle::shed_on_write`]) are
/// skipped.
async fn write_batch<T: WampTransport>(
    t: &mut T,
    ser: Serializer,
    first: Outgoing,
    rx: &mut mpsc::Receiver<Outgoing>,
    write_timeout: Duration,
    session: Option<&SessionHandle>,
) -> Result<(), TransportError> {
    let sheds = |out: &Outgoing, rx: &mpsc::Receiver<Outgoing>| {
        session.is_some_and(|h| h.shed_on_write(out, rx.len()))
    };
    let mut queued = false;
    if !sheds(&first, rx) {
        queue_one(t, ser, &first)?;
        queued = true;
    }
    for _ in 1..MAX_BATCH {
        match rx.try_recv() {
            Ok(out) if sheds(&out, rx) => {}
            Ok(out) => {
                queue_one(t, ser, &out)?;
                queued = true;
            }
            Err(_) => break,
        }
    }
    if !queued {
        return Ok(());
    }
    tokio::time::timeout(write_timeout, t.flush())
        .await
        .map_err(|_| TransportError::Timeout)?
}

fn queue_one<T: WampTransport>(
    t: &mut T,
    ser: Serializer,
    out: &Outgoing,
) -> Result<(), TransportError> {
    let bytes = match out.encoded(ser) {
        Ok(b) => b,
        Err(e) => {
            tracing::warn!(error = %e, message = out.message().name(), "could not encode; dropped");
            return Ok(());
        }
    };
    match t.queue(&bytes) {
        Err(TransportError::TooLarge { len, limit }) => {
            // The router's choice for an oversize outgoing message: drop it and say so. A RESULT
            // becomes an error for its call, so the caller is not left waiting.
            tracing::warn!(
                len,
                limit,
                message = out.message().name(),
                "message over the peer's limit; dropped"
            );
            if let Message::Result { request, .. } = out.message() {
                let err = Message::error(
                    crate::wamp::message::code::CALL,
                    *request,
                    uris::PAYLOAD_SIZE_EXCEEDED,
                    Some(format!(
                        "result of {len} bytes is over the transport limit of {limit}"
                    )),
                );
                if let Ok(b) = ser.encode(&err) {
                    t.queue(&b)?;
                }
            }
            Ok(())
        }
        other => other,
    }
}
