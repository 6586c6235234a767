//! Accept loops for WAMP listeners.
//!
//! Every listener accepts both RawSocket and WebSocket: the first byte tells them apart (a
//! RawSocket handshake starts with 0x7F, which no HTTP request does). Admission control caps open
//! connections with semaphore permits; an accept error backs off instead of ending the loop.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::connection::{self, SessionLimits};
use super::rawsocket::{self, RawSocket};
use super::websocket::WebSocket;
use crate::router::{Router, TransportInfo};
use crate::wamp::Serializer;

/// What a WAMP listener accepts.
#[derive(Clone, Debug)]
pub struct WampListener {
    /// Name for logs (`websocket`, `rawsocket`, or the config's name).
    pub name: String,
    pub accept_websocket: bool,
    pub accept_rawsocket: bool,
    /// The WebSocket endpoint path, e.g. `/ws`.
    pub path: String,
    pub serializers: Vec<Serializer>,
    /// Largest incoming message, in bytes.
    pub max_message: usize,
    pub limits: SessionLimits,
}

/// Accepts connections until `shutdown` fires, spawning one tracked task per connection.
pub async fn serve(
    listener: TcpListener,
    spec: Arc<WampListener>,
    router: Arc<Router>,
    permits: Arc<Semaphore>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
) {
    let mut backoff = Duration::from_millis(5);
    loop {
        let accepted = tokio::select! {
            () = shutdown.cancelled() => return,
            r = listener.accept() => r,
        };
        let (stream, peer) = match accepted {
            Ok(x) => {
                backoff = Duration::from_millis(5);
                x
            }
            Err(e) => {
                // Usually EMFILE or a reset before accept: wait and keep serving.
                tracing::warn!(listener = %spec.name, error = %e, "accept failed; backing off");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            tracing::warn!(listener = %spec.name, %peer, "connection limit reached; refusing");
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let (spec, router, shutdown) = (spec.clone(), router.clone(), shutdown.clone());
        tracker.spawn(async move {
            handle_connection(stream, peer, &spec, router, shutdown).await;
            drop(permit);
        });
    }
}

async fn handle_connection(
    mut stream: TcpStream,
    peer: SocketAddr,
    spec: &WampListener,
    router: Arc<Router>,
    shutdown: CancellationToken,
) {
    let deadline = spec.limits.hello_timeout;
    let mut first = [0u8; 1];
    match tokio::time::timeout(deadline, stream.peek(&mut first)).await {
        Ok(Ok(1)) => {}
        _ => return,
    }
    let is_rawsocket = first[0] == rawsocket::MAGIC;
    if (is_rawsocket && !spec.accept_rawsocket) || (!is_rawsocket && !spec.accept_websocket) {
        tracing::info!(%peer, listener = %spec.name, rawsocket = is_rawsocket, "protocol not served on this listener");
        return;
    }
    if is_rawsocket {
        let mut hello = [0u8; 4];
        if !matches!(
            tokio::time::timeout(deadline, stream.read_exact(&mut hello)).await,
            Ok(Ok(_))
        ) {
            return;
        }
        match RawSocket::accept(stream, hello, spec.max_message, &spec.serializers).await {
            Ok((t, ser)) => {
                let info = TransportInfo {
                    kind: "rawsocket",
                    peer: Some(peer),
                    serializer: Some(ser),
                    tls: false,
                };
                connection::serve(t, ser, router, info, shutdown, spec.limits.clone()).await;
            }
            Err(e) => tracing::info!(%peer, error = %e, "RawSocket handshake failed"),
        }
    } else {
        let accepted = tokio::time::timeout(
            deadline,
            WebSocket::accept(stream, &spec.path, &spec.serializers, spec.max_message),
        )
        .await;
        match accepted {
            Ok(Ok((t, ser))) => {
                let info = TransportInfo {
                    kind: "websocket",
                    peer: Some(peer),
                    serializer: Some(ser),
                    tls: false,
                };
                connection::serve(t, ser, router, info, shutdown, spec.limits.clone()).await;
            }
            Ok(Err(e)) => tracing::info!(%peer, error = %e, "WebSocket handshake failed"),
            Err(_) => tracing::info!(%peer, "WebSocket handshake timed out"),
        }
    }
}
