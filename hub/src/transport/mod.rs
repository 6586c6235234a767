//! Transports: how WAMP messages travel over bytes.
//!
//! - [`rawsocket`]: the RawSocket handshake and framing.
//! - [`websocket`]: WebSocket with WAMP subprotocols.
//! - [`tls`]: TLS for listeners and clients, and the `tls-exporter` channel binding.
//! - [`connection`]: the one task per connection that drives a [`crate::router::RouterSession`].
//! - [`listener`]: accept loops with admission control, sniffing RawSocket vs HTTP on one port.

pub mod connection;
pub mod listener;
pub mod rawsocket;
pub mod tls;
pub mod websocket;

use std::future::Future;

use bytes::Bytes;

/// A message-oriented WAMP transport: whole messages in, whole messages out.
pub trait WampTransport: Send {
    /// The next message, `Ok(None)` when the peer closed cleanly. Cancel-safe.
    fn recv(&mut self) -> impl Future<Output = Result<Option<Bytes>, TransportError>> + Send;
    /// Buffers a message for the next [`WampTransport::flush`].
    fn queue(&mut self, msg: &Bytes) -> Result<(), TransportError>;
    /// Writes everything buffered.
    fn flush(&mut self) -> impl Future<Output = Result<(), TransportError>> + Send;
    /// Flushes and closes, ignoring errors.
    fn close(&mut self) -> impl Future<Output = ()> + Send;
    /// The largest message the peer accepts.
    fn max_outgoing(&self) -> usize;
    /// Sends a transport-level ping (RawSocket PING, WebSocket ping), for keepalive.
    fn ping(&mut self) -> impl Future<Output = Result<(), TransportError>> + Send;
    /// When anything (a message, a pong) last arrived from the peer.
    fn last_activity(&self) -> std::time::Instant;
}

/// Why a transport failed.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error("handshake failed: {0}")]
    Handshake(String),
    #[error("RawSocket framing: {0}")]
    Frame(#[from] rawsocket::FrameError),
    /// The WebSocket opening handshake failed.
    #[error("handshake failed: {0}")]
    WebSocketHandshake(#[source] Box<tokio_tungstenite::tungstenite::Error>),
    #[error("WebSocket: {0}")]
    WebSocket(#[source] Box<tokio_tungstenite::tungstenite::Error>),
    #[error("WebSocket: JSON encoder produced invalid UTF-8")]
    NotUtf8,
    #[error("message of {len} bytes is over the peer's limit of {limit}")]
    TooLarge { len: usize, limit: usize },
    #[error("connection closed in the middle of a frame")]
    Truncated,
    #[error("timed out")]
    Timeout,
}
