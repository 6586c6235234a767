//! The UDP listener: one task owns the socket and the engine.
//!
//! A turn of its loop takes a datagram, then those already waiting in the socket (up to
//! `MAX_INPUTS_PER_TURN` in all, without waiting), and only then sends commands and hands the
//! events to the hub, so a burst from many devices reaches the hub in a batch or two rather than
//! one send per event.
//!
//! A datagram goes through the source's token bucket (over the rate: dropped before decoding),
//! then the frame reader (one datagram is one frame with the `datagram` framing, or holds whole
//! frames of another framing; a partial frame at its end is dropped), then the engine. Commands are
//! sent to the address the thing was last heard from, or to its `ip:port` mapping before that.

use std::io;
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
use super::stats::ListenerStats;
use super::{MAX_INPUTS_PER_TURN, RawError, deliver, sleep_until};
use crate::link::GatewayIo;
use crate::outbox::{Outbox, Stopped};
use device_models::LogLimiter;

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
    let mut intake = Intake {
        reader: FrameReader::new(model),
        limiter: SourceLimiter::new(p.rate_per_sec, p.burst, p.common.engine.max_devices),
        log: LogLimiter::default(),
        engine,
        stats,
        p,
    };
    let mut outbox = Outbox::default();
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let mut commands_open = true;
    debug!("listening");
    loop {
        let timeout = intake.engine.poll_timeout();
        tokio::select! {
            () = shutdown.cancelled() => break,
            received = socket.recv_from(&mut buf) => match received {
                Ok((n, peer)) => {
                    intake.datagram(buf.get(..n).unwrap_or_default(), peer);
                    intake.take_waiting(&socket, &mut buf);
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
                Some(command) => intake.engine.handle_command(command, Clock::now()),
                None => commands_open = false,
            },
            () = sleep_until(timeout) => intake.engine.handle_timeout(Clock::now().mono),
        }
        while let Some(t) = intake.engine.poll_transmit() {
            if let Err(e) = socket.send_to(&t.bytes, t.peer).await {
                debug!(peer = %t.peer, error = %e, "send failed");
            }
        }
        if let Err(Stopped) = deliver(&mut intake.engine, &mut outbox, &events, &shutdown).await {
            break;
        }
    }
    debug!("stopped");
}

/// What a received datagram goes through, owned by the listener's task.
struct Intake {
    p: PreparedUdp,
    limiter: SourceLimiter<SocketAddr>,
    reader: FrameReader,
    engine: Engine<SocketAddr>,
    stats: Arc<ListenerStats>,
    log: LogLimiter,
}

impl Intake {
    /// One datagram from `peer`: dropped and counted when the peer is not listed or over its
    /// rate; otherwise its frames go to the engine and bad ones are reported.
    fn datagram(&mut self, datagram: &[u8], peer: SocketAddr) {
        let now = Clock::now();
        if !self.p.peers.admits(peer) {
            ListenerStats::bump(&self.stats.unlisted_peer);
            return;
        }
        if !self.limiter.admit(peer, now.mono) {
            ListenerStats::bump(&self.stats.rate_limited);
            return;
        }
        self.reader.push(datagram);
        while let Some(frame) = self.reader.next() {
            match frame {
                Ok(frame) => {
                    let mapped = self.p.peers.lookup(peer);
                    self.engine.handle_frame(&peer, mapped, frame, now);
                }
                Err(bad) => report_bad_frame(&bad, &peer, &self.stats, &self.log),
            }
        }
        if let Some(bad) = self.reader.end_datagram() {
            report_bad_frame(&bad, &peer, &self.stats, &self.log);
        }
    }

    /// Takes the datagrams already waiting in the socket, without waiting, so that the turn
    /// holds up to `MAX_INPUTS_PER_TURN` datagrams (the one received included) and their
    /// events go to the hub together.
    fn take_waiting(&mut self, socket: &UdpSocket, buf: &mut [u8]) {
        for _ in 1..MAX_INPUTS_PER_TURN {
            match socket.try_recv_from(buf) {
                Ok((n, peer)) => self.datagram(buf.get(..n).unwrap_or_default(), peer),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if crate::udp::is_transient(&e) => {
                    debug!(error = %e, "receive error ignored");
                }
                Err(e) => {
                    // If it lasts, the next awaited receive meets it again and backs off.
                    debug!(error = %e, "receive failed");
                    return;
                }
            }
        }
    }
}
