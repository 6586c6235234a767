//! The serial port task: one task owns the port and the engine (span `raw.serial` with the path).
//!
//! - **Open and reopen**: the port is opened at start; when opening fails, or the port is lost (a
//!   read or write error, end of file: the USB adapter was unplugged, the pty closed), things on it
//!   go offline and the task tries again after a delay that starts at `reopen_min_ms` and doubles
//!   on each failure up to `reopen_max_ms`. The delay starts over once the reopened port delivers
//!   bytes. Meanwhile the task keeps taking commands and running timers.
//! - **One request at a time** (`half_duplex`, or `next_frame` correlation): the engine writes a
//!   command only when the previous one has its reply or has timed out; commands that arrive in the
//!   meantime wait in order. While the port is closed they wait too, until their deadline.
//! - **Writes** must finish within `write_timeout_ms`, or the port counts as lost.

use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_serial::{DataBits, SerialPortBuilderExt, SerialStream, StopBits};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, debug, info, info_span, warn};

use super::config::{FlowControl, Parity, PreparedSerial, SerialConfig};
use super::engine::{Clock, Engine};
use super::reader::{FrameReader, report_bad_frame};
use super::stats::ListenerStats;
use super::{deliver, sleep_until};
use crate::link::GatewayIo;
use crate::outbox::{Outbox, Stopped};
use device_models::LogLimiter;

/// Read buffer.
const READ_CHUNK: usize = 1024;

/// Spawns the port task.
pub(super) fn start(
    p: PreparedSerial,
    io: GatewayIo,
    stats: Arc<ListenerStats>,
    tasks: &TaskTracker,
    shutdown: CancellationToken,
) {
    let span = info_span!("raw.serial", listener = %p.common.name, path = %p.config.path);
    tasks.spawn(run(p, io, stats, shutdown).instrument(span));
}

/// Opens the port with the configured line settings.
fn open(config: &SerialConfig) -> tokio_serial::Result<SerialStream> {
    let data_bits = match config.data_bits {
        5 => DataBits::Five,
        6 => DataBits::Six,
        7 => DataBits::Seven,
        _ => DataBits::Eight,
    };
    let stop_bits = if config.stop_bits == 2 {
        StopBits::Two
    } else {
        StopBits::One
    };
    let parity = match config.parity {
        Parity::None => tokio_serial::Parity::None,
        Parity::Odd => tokio_serial::Parity::Odd,
        Parity::Even => tokio_serial::Parity::Even,
    };
    let flow_control = match config.flow_control {
        FlowControl::None => tokio_serial::FlowControl::None,
        FlowControl::Software => tokio_serial::FlowControl::Software,
        FlowControl::Hardware => tokio_serial::FlowControl::Hardware,
    };
    tokio_serial::new(&config.path, config.baud_rate)
        .data_bits(data_bits)
        .stop_bits(stop_bits)
        .parity(parity)
        .flow_control(flow_control)
        .open_native_async()
}

/// Capped exponential back-off between reopen attempts.
#[derive(Debug)]
struct Backoff {
    min: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    fn new(min: Duration, max: Duration) -> Self {
        Self {
            min,
            max,
            next: min,
        }
    }

    /// The delay before the next attempt; the one after is twice as long, up to the cap.
    fn delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = (self.next * 2).min(self.max);
        delay
    }

    fn reset(&mut self) {
        self.next = self.min;
    }
}

/// Reads from the port, or waits forever while it is closed.
async fn read(port: &mut Option<SerialStream>, buf: &mut [u8]) -> io::Result<usize> {
    match port {
        Some(port) => port.read(buf).await,
        None => std::future::pending().await,
    }
}

async fn run(
    p: PreparedSerial,
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
    let mut engine: Engine<String> = Engine::new(
        Arc::clone(&model),
        p.common.engine.clone(),
        Arc::clone(&stats),
    );
    let here = p.config.path.clone();
    engine.handle_link_down(&here, false);
    if let Some(thing) = &p.thing {
        engine.add_known(thing.clone(), here.clone(), Clock::now().mono);
    }
    let mut reader = FrameReader::new(model);
    let log = LogLimiter::default();
    let write_timeout = Duration::from_millis(p.config.write_timeout_ms);
    let mut backoff = Backoff::new(
        Duration::from_millis(p.config.reopen_min_ms),
        Duration::from_millis(p.config.reopen_max_ms),
    );
    let mut port: Option<SerialStream> = None;
    let mut reopen_at: Option<Instant> = Some(Clock::now().mono);
    let mut failures: u64 = 0;
    let mut buf = vec![0u8; READ_CHUNK];
    let mut outbox = Outbox::default();
    let mut commands_open = true;
    loop {
        if port.is_none() && reopen_at.is_some_and(|t| t <= Clock::now().mono) {
            match open(&p.config) {
                Ok(opened) => {
                    info!(after_failures = failures, "port open");
                    failures = 0;
                    ListenerStats::bump(&stats.port_opens);
                    port = Some(opened);
                    reopen_at = None;
                    reader.reset();
                    engine.handle_link_up(&here, Clock::now().mono);
                }
                Err(e) => {
                    ListenerStats::bump(&stats.port_failures);
                    let delay = backoff.delay();
                    if failures == 0 {
                        warn!(error = %e, ?delay, "cannot open port; retrying");
                    } else {
                        debug!(error = %e, ?delay, failures, "cannot open port; retrying");
                    }
                    failures += 1;
                    reopen_at = Some(Clock::now().mono + delay);
                }
            }
        }
        let timeout = [engine.poll_timeout(), reopen_at]
            .into_iter()
            .flatten()
            .min();
        let mut lost: Option<io::Error> = None;
        tokio::select! {
            () = shutdown.cancelled() => break,
            received = read(&mut port, &mut buf) => match received {
                Ok(0) => lost = Some(io::ErrorKind::UnexpectedEof.into()),
                Ok(n) => {
                    backoff.reset();
                    reader.push(buf.get(..n).unwrap_or_default());
                    let now = Clock::now();
                    while let Some(frame) = reader.next() {
                        match frame {
                            Ok(frame) => engine.handle_frame(&here, p.thing.as_ref(), frame, now),
                            Err(bad) => report_bad_frame(&bad, &here, &stats, &log),
                        }
                    }
                }
                Err(e) => lost = Some(e),
            },
            command = commands.recv(), if commands_open => match command {
                Some(command) => engine.handle_command(command, Clock::now()),
                None => commands_open = false,
            },
            () = sleep_until(timeout) => engine.handle_timeout(Clock::now().mono),
        }
        while lost.is_none()
            && let Some(t) = engine.poll_transmit()
        {
            let Some(open_port) = port.as_mut() else {
                break;
            };
            match tokio::time::timeout(write_timeout, open_port.write_all(&t.bytes)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => lost = Some(e),
                Err(_) => lost = Some(io::ErrorKind::TimedOut.into()),
            }
        }
        if let Some(e) = lost {
            ListenerStats::bump(&stats.port_failures);
            let delay = backoff.delay();
            warn!(error = %e, ?delay, "port lost; reopening");
            port = None;
            failures = 1;
            reopen_at = Some(Clock::now().mono + delay);
            engine.handle_link_down(&here, false);
        }
        if let Err(Stopped) = deliver(&mut engine, &mut outbox, &events, &shutdown).await {
            break;
        }
    }
    debug!("stopped");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap_and_starts_over() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(350));
        let delays: Vec<_> = (0..4).map(|_| b.delay().as_millis()).collect();
        assert_eq!(delays, [100, 200, 350, 350]);
        b.reset();
        assert_eq!(b.delay(), Duration::from_millis(100));
    }
}
