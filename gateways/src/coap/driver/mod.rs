//! Thin tokio drivers around the engines: one task owns a `UdpSocket` and
//! an engine, and talks to the application through bounded channels.
//!
//! **Shared state rule.** The engine is owned by its task alone (actor
//! style); the application reaches it only through a bounded command channel
//! via a cloneable handle. The task never waits on the application: events
//! go out with `try_send` or through a bounded backlog (see each driver for
//! its overflow policy), so a slow consumer cannot stall the socket, the
//! timers or other peers.
//!
//! **Datagrams** are read into a buffer one byte larger than
//! `max_datagram`; a datagram that fills it was truncated by the kernel and
//! is dropped as malformed instead of being parsed with a cut-off payload.
//!
//! **Shutdown** is a `CancellationToken`: the task returns `Ok(())` when it
//! is cancelled, dropping the socket and all exchange state.

mod batch_io;
mod client;
mod server;
#[cfg(test)]
mod tests;

use std::net::SocketAddr;

use tokio::net::UdpSocket;
use tracing::debug;

pub use client::{ClientCounters, ClientDriverConfig, ClientHandle, ClientParts, spawn_client};
pub use server::{ServerCounters, ServerDriverConfig, ServerHandle, ServerParts, spawn_server};

use super::error::DriverError;
use super::transmission::Transmit;

/// Default largest datagram accepted (an Ethernet MTU).
pub const DEFAULT_MAX_DATAGRAM: usize = 1500;

/// What one `recv_from` produced.
enum Received {
    Datagram(usize, SocketAddr),
    /// Larger than the cap: dropped, for the caller to count.
    Oversized,
    /// A per-datagram error: nothing to feed.
    Skip,
}

/// Reads one datagram into `buf` (of `max_datagram + 1` bytes).
async fn receive(socket: &UdpSocket, buf: &mut [u8]) -> Result<Received, DriverError> {
    match socket.recv_from(buf).await {
        Ok((n, peer)) if n >= buf.len() => {
            debug!(%peer, "oversized datagram dropped");
            Ok(Received::Oversized)
        }
        Ok((n, peer)) => Ok(Received::Datagram(n, peer)),
        Err(e) if crate::udp::is_transient(&e) => {
            debug!(error = %e, "per-datagram receive error ignored");
            Ok(Received::Skip)
        }
        Err(e) => Err(DriverError::Socket(e)),
    }
}

/// Sends one datagram; failures are per datagram (unreachable peer, full
/// buffer) and are logged, never fatal: CoAP's own retransmission recovers.
async fn transmit(socket: &UdpSocket, t: Transmit) {
    if let Err(e) = socket.send_to(&t.bytes, t.peer).await {
        debug!(peer = %t.peer, error = %e, "send failed");
    }
}

/// The engine's clock: tokio's, so paused-time tests work.
fn now() -> std::time::Instant {
    tokio::time::Instant::now().into_std()
}

/// Sleeps until `deadline`, or forever when there is none.
async fn sleep_until(deadline: Option<std::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(tokio::time::Instant::from_std(d)).await,
        None => std::future::pending().await,
    }
}
