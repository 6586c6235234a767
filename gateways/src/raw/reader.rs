//! Bytes → frames → decoded frames, with every failure classified, counted and (rate-limited)
//! logged with its peer. Shared by the UDP, TCP and serial tasks so that bad input is treated the
//! same everywhere.

use std::fmt::Display;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Instant;

use device_models::frames::{
    DecodeError, DecodedFrame, FrameDecoder, FrameError, FramingConfig, LayoutError,
};
use tracing::warn;

use super::model::DeviceModel;
use super::stats::ListenerStats;
use device_models::{LogLimiter, LogPermit};

/// A frame that was dropped, and why.
#[derive(Debug)]
pub(crate) enum BadFrame {
    /// The framing or checksum refused it.
    Framing(FrameError),
    /// The layout could not read it, or its id names no valid thing.
    Decode(DecodeError),
    /// A datagram ended inside a frame.
    Partial(usize),
}

impl BadFrame {
    /// The counter this failure adds to.
    pub(crate) fn counter<'a>(&self, stats: &'a ListenerStats) -> &'a AtomicU64 {
        match self {
            Self::Framing(
                FrameError::ChecksumMismatch { .. }
                | FrameError::BadChecksumText
                | FrameError::TooShortForChecksum { .. },
            ) => &stats.bad_checksum,
            Self::Framing(FrameError::Oversize { .. })
            | Self::Decode(DecodeError::Oversize { .. }) => &stats.oversize,
            Self::Decode(DecodeError::Layout(
                LayoutError::Truncated { .. } | LayoutError::WrongLength { .. },
            ))
            | Self::Partial(_) => &stats.truncated,
            Self::Decode(DecodeError::BadId { .. }) => &stats.bad_id,
            Self::Decode(_) => &stats.undecodable,
            Self::Framing(_) => &stats.bad_framing,
        }
    }

    /// Whether the stream position is lost (a length prefix that is too small, or too large for
    /// the cap): on TCP the connection is closed at once.
    pub(crate) fn loses_sync(&self, framing: &FramingConfig) -> bool {
        match self {
            Self::Framing(FrameError::BadLength { .. }) => true,
            Self::Framing(FrameError::Oversize { .. }) => {
                matches!(framing, FramingConfig::LengthPrefixed { .. })
            }
            _ => false,
        }
    }
}

impl Display for BadFrame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Framing(e) => e.fmt(f),
            Self::Decode(e) => e.fmt(f),
            Self::Partial(n) => write!(f, "datagram ends inside a frame ({n} bytes left over)"),
        }
    }
}

/// Counts a bad frame and logs it with its peer, within the listener's log budget.
pub(crate) fn report_bad_frame(
    bad: &BadFrame,
    peer: &dyn Display,
    stats: &ListenerStats,
    log: &LogLimiter,
) {
    ListenerStats::bump(bad.counter(stats));
    if let LogPermit::Log { suppressed } = log.permit(Instant::now()) {
        warn!(%peer, error = %bad, suppressed, "bad frame dropped");
    }
}

/// A stream decoder plus the codec: push bytes, take decoded frames or classified failures.
#[derive(Debug)]
pub(crate) struct FrameReader {
    decoder: FrameDecoder,
    model: Arc<DeviceModel>,
}

impl FrameReader {
    /// A reader for one connection, port or datagram at a time.
    pub(crate) fn new(model: Arc<DeviceModel>) -> Self {
        Self {
            decoder: model.codec().decoder(),
            model,
        }
    }

    /// Adds bytes read (or one datagram).
    pub(crate) fn push(&mut self, bytes: &[u8]) {
        self.decoder.push(bytes);
    }

    /// The next decoded frame, a failure about one frame, or `None` when more bytes are needed.
    /// Every failure consumes input, so a loop until `None` ends.
    pub(crate) fn next(&mut self) -> Option<Result<DecodedFrame, BadFrame>> {
        match self.decoder.next_frame() {
            Ok(None) => None,
            Ok(Some(frame)) => Some(
                self.model
                    .codec()
                    .decode(&frame.payload)
                    .map_err(BadFrame::Decode),
            ),
            Err(e) => Some(Err(BadFrame::Framing(e))),
        }
    }

    /// Ends a datagram: a partial frame left over is dropped and reported.
    pub(crate) fn end_datagram(&mut self) -> Option<BadFrame> {
        let left = self.decoder.buffered();
        self.decoder.reset();
        (left > 0).then_some(BadFrame::Partial(left))
    }

    /// Drops what is buffered (after a reconnect).
    pub(crate) fn reset(&mut self) {
        self.decoder.reset();
    }
}
