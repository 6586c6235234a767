//! Accept loops for WAMP listeners.
//!
//! Every listener accepts both RawSocket and WebSocket: the first byte tells them apart (a
//! RawSocket handshake starts with 0x7F, which no HTTP request does). On a TLS listener the TLS
//! handshake comes first and the sniffing looks at the first decrypted byte. Admission control caps open
//! connections with semaphore permits; an accept error backs off instead of ending the loop.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::connection::{self, SessionLimits};
use super::rawsocket::{self, RawSocket};
use super::tls::{self, ChannelBinding, TlsAcceptor};
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
    /// TLS for every connection (`wss://`, `rss://`), if configured.
    pub tls: Option<TlsAcceptor>,
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
    device_models::fault::inject("wamp_listener");
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
        if !router.memory().admit_connection() {
            tracing::debug!(listener = %spec.name, %peer, "over the memory budget; refusing a connection");
            drop(stream);
            continue;
        }
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
    stream: TcpStream,
    peer: SocketAddr,
    spec: &WampListener,
    router: Arc<Router>,
    shutdown: CancellationToken,
) {
    let deadline = tokio::time::Instant::now() + spec.limits.hello_timeout;
    let Some(tls) = &spec.tls else {
        let mut first = [0u8; 1];
        match tokio::time::timeout_at(deadline, stream.peek(&mut first)).await {
            Ok(Ok(1)) => {}
            _ => return,
        }
        let conn = Accepted {
            peer,
            first: first[0],
            tls: false,
            channel_binding: None,
        };
        return serve_stream(stream, conn, deadline, spec, router, shutdown).await;
    };
    let stream = match tokio::time::timeout_at(deadline, tls.accept(stream)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::info!(%peer, listener = %spec.name, error = %e, "TLS handshake failed");
            return;
        }
        Err(_) => {
            tracing::info!(%peer, listener = %spec.name, "TLS handshake timed out");
            return;
        }
    };
    let channel_binding = tls::server_channel_binding(&stream);
    // Peek at the first decrypted byte through a buffer, which then replays it.
    let mut stream = BufReader::new(stream);
    let first = match tokio::time::timeout_at(deadline, stream.fill_buf()).await {
        Ok(Ok([b, ..])) => *b,
        _ => return,
    };
    let conn = Accepted {
        peer,
        first,
        tls: true,
        channel_binding,
    };
    serve_stream(stream, conn, deadline, spec, router, shutdown).await;
}

/// What is known of a connection before its WAMP transport handshake.
struct Accepted {
    peer: SocketAddr,
    /// The first byte the client sent (not consumed): 0x7F for RawSocket.
    first: u8,
    tls: bool,
    channel_binding: Option<ChannelBinding>,
}

/// Runs the RawSocket or WebSocket handshake on a stream whose first byte is known, then serves
/// the session.
async fn serve_stream<S: AsyncRead + AsyncWrite + Unpin + Send>(
    mut stream: S,
    conn: Accepted,
    deadline: tokio::time::Instant,
    spec: &WampListener,
    router: Arc<Router>,
    shutdown: CancellationToken,
) {
    let peer = conn.peer;
    let is_rawsocket = conn.first == rawsocket::MAGIC;
    if (is_rawsocket && !spec.accept_rawsocket) || (!is_rawsocket && !spec.accept_websocket) {
        tracing::info!(%peer, listener = %spec.name, rawsocket = is_rawsocket, "protocol not served on this listener");
        return;
    }
    let info = |kind, ser| TransportInfo {
        kind,
        peer: Some(peer),
        serializer: Some(ser),
        tls: conn.tls,
        channel_binding: conn.channel_binding,
    };
    if is_rawsocket {
        let mut hello = [0u8; 4];
        if !matches!(
            tokio::time::timeout_at(deadline, stream.read_exact(&mut hello)).await,
            Ok(Ok(_))
        ) {
            return;
        }
        match RawSocket::accept(stream, hello, spec.max_message, &spec.serializers).await {
            Ok((t, ser)) => {
                let info = info("rawsocket", ser);
                connection::serve(t, ser, router, info, shutdown, spec.limits.clone()).await;
            }
            Err(e) => tracing::info!(%peer, error = %e, "RawSocket handshake failed"),
        }
    } else {
        let accepted = tokio::time::timeout_at(
            deadline,
            WebSocket::accept(stream, &spec.path, &spec.serializers, spec.max_message),
        )
        .await;
        match accepted {
            Ok(Ok((t, ser))) => {
                let info = info("websocket", ser);
                connection::serve(t, ser, router, info, shutdown, spec.limits.clone()).await;
            }
            Ok(Err(e)) => tracing::info!(%peer, error = %e, "WebSocket handshake failed"),
            Err(_) => tracing::info!(%peer, "WebSocket handshake timed out"),
        }
    }
}
