//! The UDP listener: one task owns the socket and the engine.
//!
//! A datagram goes through the source's token bucket (over the rate: dropped before decoding),
//! then the frame reader (one datagram is one frame with the `datagram` framing, or holds whole
//! frames of another framing; a partial frame at its end is dropped), then the engine. Commands are
//! sent to the address the thing was last heard from, or to its `ip:port` mapping before that.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, debug, info_span, warn};

use super::config::PreparedUdp;
use super::engine::{Clock, Engine};
use super::ratelimit::SourceLimiter;
use super::reader::{FrameReader, report_bad_frame};
use super::stats::{ListenerStats, LogLimiter};
use super::{RawError, Stopped, deliver, sleep_until};
use crate::link::GatewayIo;

/// Largest UDP payload; the buffer holds any datagram whole.
const MAX_DATAGRAM: usize = 65_536;

/// Binds the socket and spawns the listener task; returns the bound address.
pub(super) async fn start(
    p: PreparedUdp,
    io: GatewayIo,
    stats: Arc<ListenerStats>,
    tasks: &TaskTracker,
    shutdown: CancellationToken,
) -> Result<SocketAddr, RawError> {
    let bind = |source| RawError::Bind {
        address: p.address,
        source,
    };
    let socket = UdpSocket::bind(p.address).await.map_err(bind)?;
    let local = socket.local_addr().map_err(bind)?;
    let span = info_span!("raw.udp", listener = %p.common.name, address = %local);
    tasks.spawn(run(socket, p, io, stats, shutdown).instrument(span));
    Ok(local)
}

async fn run(
    socket: UdpSocket,
    p: PreparedUdp,
    io: GatewayIo,
    stats: Arc<ListenerStats>,
    shutdown: CancellationToken,
) {
    let GatewayIo {
        events,
        mut commands,
        ..
    } = io;
    let model = Arc::clone(&p.common.model);
    let mut engine = Engine::new(
        Arc::clone(&model),
        p.common.engine.clone(),
        Arc::clone(&stats),
    );
    let start = Clock::now();
    for (addr, thing) in p.peers.addresses() {
        engine.add_known(thing.clone(), *addr, start.mono);
    }
    let mut reader = FrameReader::new(model);
    let mut limiter = SourceLimiter::new(p.rate_per_sec, p.burst, p.common.engine.max_devices);
    let log = LogLimiter::default();
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let mut commands_open = true;
    debug!("listening");
    loop {
        let timeout = engine.poll_timeout();
        tokio::select! {
            () = shutdown.cancelled() => break,
            received = socket.recv_from(&mut buf) => match received {
                Ok((n, peer)) => {
                    let now = Clock::now();
                    if !p.peers.admits(peer) {
                        ListenerStats::bump(&stats.unlisted_peer);
                    } else if !limiter.admit(peer, now.mono) {
                        ListenerStats::bump(&stats.rate_limited);
                    } else {
                        reader.push(buf.get(..n).unwrap_or_default());
                        while let Some(frame) = reader.next() {
                            match frame {
                                Ok(frame) => {
                                    engine.handle_frame(&peer, p.peers.lookup(peer), frame, now);
                                }
                                Err(bad) => report_bad_frame(&bad, &peer, &stats, &log),
                            }
                        }
                        if let Some(bad) = reader.end_datagram() {
                            report_bad_frame(&bad, &peer, &stats, &log);
                        }
                    }
                }
                Err(e) if crate::udp::is_transient(&e) => debug!(error = %e, "receive error ignored"),
                Err(e) => {
                    warn!(error = %e, "receive failed; retrying");
                    tokio::select! {
                        () = shutdown.cancelled() => break,
                        () = tokio::time::sleep(Duration::from_millis(100)) => {}
                    }
                }
            },
            command = commands.recv(), if commands_open => match command {
                Some(command) => engine.handle_command(command, Clock::now()),
                None => commands_open = false,
            },
            () = sleep_until(timeout) => engine.handle_timeout(Clock::now().mono),
        }
        while let Some(t) = engine.poll_transmit() {
            if let Err(e) = socket.send_to(&t.bytes, t.peer).await {
                debug!(peer = %t.peer, error = %e, "send failed");
            }
        }
        if let Err(Stopped) = deliver(&mut engine, &events, &shutdown).await {
            break;
        }
    }
    debug!("stopped");
}
