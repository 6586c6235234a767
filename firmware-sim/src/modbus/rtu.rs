//! Modbus RTU for a [`SimBus`] on a pseudo-terminal: the bus is the device side of a serial line,
//! and a client (the hub, pymodbus) opens the pty's other side as its serial port.
//!
//! Frames are delimited by their length, known from the function code (a pty carries no timing,
//! so the 3.5-character silence of a real line cannot be measured reliably); a frame whose length
//! the function does not tell, or bytes that do not form a frame with a good CRC, are delimited by
//! a short silence instead, then answered (unknown function, good CRC) or discarded. Frames for
//! units not on the bus, and for dead units, get no answer at all, as on an RS-485 line. Answers
//! go out after the line's turnaround time, plus their transmission time at `baud` if one is set.
//!
//! The line's timing ([`LineStats`]: requests in flight at once, gaps between requests) is kept
//! on the bus, for tests of a master's scheduling.

use std::collections::VecDeque;
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;
use tokio_serial::{SerialPort, SerialStream};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use super::bus::{LineStats, SimBus, Transport};

/// How an RTU line behaves.
#[derive(Debug, Clone)]
pub struct RtuOptions {
    /// Also make the port reachable at this path (a symlink to the pty, removed at shutdown), as
    /// udev's `/dev/serial/by-id/...` links are.
    pub link: Option<PathBuf>,
    /// Time between the end of a request and the start of its answer.
    pub turnaround: Duration,
    /// With a baud rate, answers also take their transmission time (11 bits per byte, as RTU's
    /// 8 data bits with parity or two stop bits).
    pub baud: Option<u32>,
}

impl Default for RtuOptions {
    fn default() -> Self {
        Self {
            link: None,
            turnaround: Duration::from_millis(2),
            baud: None,
        }
    }
}

/// Silence that ends a frame whose length is not known from its function code.
const SILENCE: Duration = Duration::from_millis(15);

/// The Modbus RTU CRC of `bytes` (CRC-16, polynomial 0xA001 reflected, initial 0xFFFF; sent low
/// byte first).
pub fn crc16(bytes: &[u8]) -> u16 {
    let mut crc = 0xFFFFu16;
    for byte in bytes {
        crc ^= u16::from(*byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xA001
            } else {
                crc >> 1
            };
        }
    }
    crc
}

/// `unit`, `pdu` and the CRC: one RTU frame.
pub fn frame(unit: u8, pdu: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(pdu.len() + 3);
    out.push(unit);
    out.extend_from_slice(pdu);
    let crc = crc16(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// What the start of `buf` holds.
#[derive(Debug, PartialEq, Eq)]
enum Parse {
    /// A whole frame of this many bytes with a good CRC.
    Frame(usize),
    /// Not enough bytes yet.
    More,
    /// A length the function code does not tell: wait for silence.
    Unknown,
    /// Bytes that are not a frame (bad CRC): discard them at the next silence.
    Garbage,
}

fn parse(buf: &[u8]) -> Parse {
    let Some(&function) = buf.get(1) else {
        return Parse::More;
    };
    let len = match function {
        0x01..=0x06 => 8,
        0x0F | 0x10 => match buf.get(6) {
            Some(&count) => 9 + usize::from(count),
            None => return Parse::More,
        },
        0x16 => 10,
        _ => return Parse::Unknown,
    };
    let Some(frame) = buf.get(..len) else {
        return Parse::More;
    };
    if crc_ok(frame) {
        Parse::Frame(len)
    } else {
        Parse::Garbage
    }
}

fn crc_ok(frame: &[u8]) -> bool {
    match frame.len().checked_sub(2) {
        Some(body) if body >= 2 => {
            let (data, crc) = frame.split_at(body);
            crc16(data).to_le_bytes() == crc
        }
        _ => false,
    }
}

impl SimBus {
    /// Serves the bus over Modbus RTU on a new pseudo-terminal until `shutdown` is cancelled, and
    /// returns the path a serial client opens (the link if one is asked for, else `/dev/pts/N`).
    /// Any baud rate and framing the client sets is accepted.
    pub fn serve_rtu_pty(
        &self,
        options: RtuOptions,
        shutdown: CancellationToken,
    ) -> io::Result<PathBuf> {
        let (device, host) = SerialStream::pair().map_err(io::Error::other)?;
        // Processes spawned later (a Python client, a hub binary) must not inherit the pty.
        close_on_exec(&device)?;
        close_on_exec(&host)?;
        let pts = host
            .name()
            .map(PathBuf::from)
            .ok_or_else(|| io::Error::other("the pty has no name"))?;
        let path = match &options.link {
            Some(link) => {
                point_link(link, &pts)?;
                link.clone()
            }
            None => pts.clone(),
        };
        info!(path = %path.display(), pts = %pts.display(), "modbus rtu line ready");
        let line = Line {
            bus: self.clone(),
            options,
            buf: Vec::new(),
            last_byte: Instant::now(),
            garbage: false,
            pending: VecDeque::new(),
            last_end: None,
        };
        // The task keeps the host side open too, so that reads on the device side wait for a
        // client instead of failing while none has the port open.
        tokio::spawn(line.run(device, host, shutdown));
        Ok(path)
    }
}

/// Points `link` at `target`, replacing what was there.
fn point_link(link: &Path, target: &Path) -> io::Result<()> {
    let name = link
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| io::Error::other("the link path has no file name"))?;
    let staging = link.with_file_name(format!(".{name}.{}", std::process::id()));
    let _ = std::fs::remove_file(&staging);
    std::os::unix::fs::symlink(target, &staging)?;
    std::fs::rename(&staging, link)
}

fn close_on_exec(fd: &impl AsRawFd) -> io::Result<()> {
    use nix::fcntl::{FcntlArg, FdFlag, fcntl};
    fcntl(fd.as_raw_fd(), FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC))
        .map(|_| ())
        .map_err(io::Error::from)
}

/// An answer waiting for its time on the line.
struct Pending {
    due: Instant,
    frame: Vec<u8>,
}

struct Line {
    bus: SimBus,
    options: RtuOptions,
    /// Bytes of the frame being received.
    buf: Vec<u8>,
    last_byte: Instant,
    /// The buffer holds bytes that cannot be a frame; discard at the next silence.
    garbage: bool,
    /// Answers not yet sent, each one request in flight.
    pending: VecDeque<Pending>,
    /// When the latest request ended (its answer sent, or its frame done if unanswered), if no
    /// request has started since.
    last_end: Option<Instant>,
}

impl Line {
    async fn run(
        mut self,
        mut port: SerialStream,
        host: SerialStream,
        shutdown: CancellationToken,
    ) {
        let mut chunk = [0u8; 512];
        loop {
            let due = self.pending.front().map(|p| p.due);
            let silence = (!self.buf.is_empty()).then(|| self.last_byte + SILENCE);
            tokio::select! {
                () = shutdown.cancelled() => break,
                read = port.read(&mut chunk) => match read {
                    Ok(n) if n > 0 => self.received(chunk.get(..n).unwrap_or_default()),
                    // No client has the port open (EIO on a pty), or end of file: wait for one.
                    _ => tokio::time::sleep(Duration::from_millis(20)).await,
                },
                () = sleep_until(due) => {
                    if let Some(p) = self.pending.pop_front() {
                        if let Err(e) = port.write_all(&p.frame).await {
                            debug!(error = %e, "rtu answer not written");
                        }
                        let _ = port.flush().await;
                        if self.pending.is_empty() && self.buf.is_empty() {
                            self.last_end = Some(Instant::now());
                        }
                    }
                }
                () = sleep_until(silence) => self.silence(),
            }
        }
        drop(host);
        if let Some(link) = &self.options.link {
            let _ = std::fs::remove_file(link);
        }
        info!("modbus rtu line closed");
    }

    /// Bytes from the master.
    fn received(&mut self, bytes: &[u8]) {
        let now = Instant::now();
        if self.buf.is_empty() {
            self.frame_started(now);
        }
        self.buf.extend_from_slice(bytes);
        self.last_byte = now;
        while !self.garbage {
            match parse(&self.buf) {
                Parse::Frame(len) => {
                    let frame: Vec<u8> = self.buf.drain(..len).collect();
                    self.handle(&frame, now);
                    if !self.buf.is_empty() {
                        // Another frame right behind this one, without waiting for its answer.
                        self.frame_started(now);
                    }
                }
                Parse::Garbage => self.garbage = true,
                Parse::More | Parse::Unknown => break,
            }
        }
    }

    /// The first byte of a request arrived.
    fn frame_started(&mut self, now: Instant) {
        let in_flight = u32::try_from(self.pending.len() + 1).unwrap_or(u32::MAX);
        let gap = self
            .last_end
            .take()
            .map(|end| now.saturating_duration_since(end));
        self.bus.line(|s: &mut LineStats| {
            s.max_in_flight = s.max_in_flight.max(in_flight);
            if in_flight > 1 {
                s.overlaps += 1;
            }
            if let Some(gap) = gap {
                s.min_gap = Some(s.min_gap.map_or(gap, |g| g.min(gap)));
                s.last_gap = Some(gap);
            }
        });
    }

    /// The line went quiet with bytes in the buffer.
    fn silence(&mut self) {
        let bytes = std::mem::take(&mut self.buf);
        let garbage = std::mem::replace(&mut self.garbage, false);
        if !garbage && crc_ok(&bytes) {
            self.handle(&bytes, self.last_byte);
        } else {
            debug!(len = bytes.len(), "rtu bytes discarded");
            self.bus.line(|s| s.bad_frames += 1);
            if self.pending.is_empty() {
                self.last_end = Some(self.last_byte);
            }
        }
    }

    /// A whole frame with a good CRC.
    fn handle(&mut self, bytes: &[u8], now: Instant) {
        self.bus.line(|s| s.frames += 1);
        let (Some(&unit), Some(pdu)) = (bytes.first(), bytes.get(1..bytes.len().saturating_sub(2)))
        else {
            return;
        };
        let answer = self.bus.answer(unit, Transport::Rtu, pdu);
        match answer.pdu {
            Some(reply) => {
                let frame = frame(unit, &reply);
                let on_wire = self
                    .options
                    .baud
                    .filter(|b| *b > 0)
                    .map_or(Duration::ZERO, |baud| {
                        Duration::from_secs_f64(frame.len() as f64 * 11.0 / f64::from(baud))
                    });
                let due = now + self.options.turnaround + answer.delay + on_wire;
                self.pending.push_back(Pending { due, frame });
            }
            None if self.pending.is_empty() => self.last_end = Some(now),
            None => {}
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc_matches_the_specification_example() {
        // Read holding registers 0x006B x3 from unit 0x11: CRC 0x8776, sent 0x76 0x87.
        let f = frame(0x11, &[0x03, 0x00, 0x6B, 0x00, 0x03]);
        assert_eq!(f, [0x11, 0x03, 0x00, 0x6B, 0x00, 0x03, 0x76, 0x87]);
        assert_eq!(parse(&f), Parse::Frame(8));
    }

    #[test]
    fn frames_are_delimited_by_function() {
        let f = frame(1, &[0x10, 0x00, 0x0A, 0x00, 0x02, 0x04, 0, 1, 0, 2]);
        assert_eq!(parse(&f[..6]), Parse::More);
        assert_eq!(parse(&f), Parse::Frame(13));
        let mut two = f.clone();
        two.extend_from_slice(&frame(2, &[0x01, 0, 0, 0, 1]));
        assert_eq!(parse(&two), Parse::Frame(13));
        let mut bad = f;
        bad[3] ^= 0xFF;
        assert_eq!(parse(&bad), Parse::Garbage);
        assert_eq!(parse(&frame(1, &[0x2B, 0x0E, 1, 0])), Parse::Unknown);
        assert!(crc_ok(&frame(1, &[0x2B, 0x0E, 1, 0])));
    }
}
