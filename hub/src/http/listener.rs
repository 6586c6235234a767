//! The HTTP listener's sockets: plain TCP or TLS, at most [`MAX_CONNECTIONS`] at once.
//!
//! TLS handshakes run in tasks of their own with a deadline, so a client that connects and says
//! nothing never holds up the next one; past the connection limit, new connections wait in the
//! kernel's backlog until one closes.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};

use crate::transport::tls::TlsAcceptor;

/// Connections served at once.
pub const MAX_CONNECTIONS: usize = 256;
/// How long a TLS client has to finish its handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// One accepted connection, holding its place under the limit.
pub struct Conn {
    io: Io,
    _permit: OwnedSemaphorePermit,
}

enum Io {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

/// The listener axum serves from.
pub struct HttpListener {
    local: SocketAddr,
    accepted: mpsc::Receiver<(Conn, SocketAddr)>,
}

impl HttpListener {
    /// Accepts on `tcp`, with TLS when `tls` is given. The accepting task ends when the
    /// listener is dropped.
    pub fn new(tcp: TcpListener, tls: Option<TlsAcceptor>) -> io::Result<HttpListener> {
        let local = tcp.local_addr()?;
        let (tx, accepted) = mpsc::channel(16);
        tokio::spawn(accept_loop(tcp, tls.map(Arc::new), tx));
        Ok(HttpListener { local, accepted })
    }
}

async fn accept_loop(
    tcp: TcpListener,
    tls: Option<Arc<TlsAcceptor>>,
    tx: mpsc::Sender<(Conn, SocketAddr)>,
) {
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let permit = tokio::select! {
            _ = tx.closed() => return,
            p = permits.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => return,
            },
        };
        let (stream, peer) = tokio::select! {
            _ = tx.closed() => return,
            r = tcp.accept() => match r {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: wait rather than spin.
                    tracing::warn!(error = %e, "HTTP accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        match &tls {
            None => {
                let conn = Conn {
                    io: Io::Plain(stream),
                    _permit: permit,
                };
                if tx.send((conn, peer)).await.is_err() {
                    return;
                }
            }
            Some(tls) => {
                let (tls, tx) = (tls.clone(), tx.clone());
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.accept(stream)).await {
                        Ok(Ok(s)) => {
                            let conn = Conn {
                                io: Io::Tls(Box::new(s)),
                                _permit: permit,
                            };
                            let _ = tx.send((conn, peer)).await;
                        }
                        Ok(Err(e)) => {
                            tracing::debug!(%peer, error = %e, "HTTPS handshake failed")
                        }
                        Err(_) => tracing::debug!(%peer, "HTTPS handshake timed out"),
                    }
                });
            }
        }
    }
}

impl axum::serve::Listener for HttpListener {
    type Io = Conn;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Conn, SocketAddr) {
        match self.accepted.recv().await {
            Some(c) => c,
            // The accepting task is gone (it only ends once this listener is dropped).
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.local)
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match &mut self.io {
            Io::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match &mut self.io {
            Io::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.io {
            Io::Plain(s) => Pin::new(s).poll_flush(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.io {
            Io::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}
