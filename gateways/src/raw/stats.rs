//! Per-listener counters and rate-limited warnings.
//!
//! Counters are atomics in one [`ListenerStats`] shared (`Arc`) by a listener's tasks: incremented
//! with relaxed ordering on the hot path, read as a [`StatsSnapshot`] by tests and metrics.
//! Warnings about bad input go through a log limiter so that a device spraying garbage costs a
//! few log lines per window, not one per frame.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

macro_rules! counters {
    ($( $(#[$doc:meta])* $name:ident ),* $(,)?) => {
        /// A listener's counters, shared by its tasks. Read them with [`ListenerStats::snapshot`].
        #[derive(Debug, Default)]
        pub struct ListenerStats {
            $( $(#[$doc])* pub $name: AtomicU64, )*
        }

        /// The value of every counter of a [`ListenerStats`] at one moment.
        #[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
        pub struct StatsSnapshot {
            $( $(#[$doc])* pub $name: u64, )*
        }

        impl ListenerStats {
            /// Reads every counter.
            pub fn snapshot(&self) -> StatsSnapshot {
                StatsSnapshot {
                    $( $name: self.$name.load(Ordering::Relaxed), )*
                }
            }
        }
    };
}

counters! {
    /// Frames decoded and accepted.
    frames,
    /// Frames whose checksum did not match, or too short to hold one.
    bad_checksum,
    /// Frames (or datagrams) larger than the binding's `max_frame`.
    oversize,
    /// Frames shorter than the layout needs, and partial frames left at the end of a datagram.
    truncated,
    /// Frames that do not fit the layout (not JSON, bad pairs, wrong CSV count, bad text).
    undecodable,
    /// Frames whose id field holds no valid thing id.
    bad_id,
    /// Length prefixes that lost the stream position, and invalid escapes.
    bad_framing,
    /// Frames that name no thing while their peer is not mapped to one.
    unidentified,
    /// Frames naming a thing other than the one their peer is mapped to.
    id_mismatch,
    /// Datagrams or connections from peers missing from `peers` with `only_listed_peers`.
    unlisted_peer,
    /// Datagrams dropped by the per-source rate limit.
    rate_limited,
    /// Frames from new things dropped because the listener tracks `max_devices` already.
    too_many_devices,
    /// Reported values dropped because the thing type has no such property.
    unknown_properties,
    /// Command frames written to devices.
    commands_sent,
    /// Commands refused: unknown or disconnected thing, full queue, encoding failure.
    commands_rejected,
    /// Replies matched to a pending request.
    replies,
    /// Reply frames that matched no pending request.
    unmatched_replies,
    /// Requests that got no reply (or were not sent) before their deadline.
    timeouts,
    /// Device events handed to the hub.
    events,
    /// TCP connections accepted.
    connections,
    /// TCP connections refused because `max_connections` were open.
    connections_refused,
    /// TCP connections refused because the hub was over its memory budget.
    connections_refused_memory,
    /// TCP connections closed for sending only bad frames.
    garbage_disconnects,
    /// TCP connections closed after `idle_timeout_secs` without a byte.
    idle_disconnects,
    /// TCP connections closed because the device did not read its commands.
    slow_disconnects,
    /// Serial ports opened (the first open and every reopen).
    port_opens,
    /// Failed serial opens and lost ports.
    port_failures,
}

impl ListenerStats {
    /// Adds one to `counter`.
    pub(crate) fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// Lets through at most `burst` warnings per `window` and counts the rest, so that logging bad
/// input from a hostile peer stays cheap. Shared by a listener's tasks behind a short mutex that is
/// never held across an `.await`.
#[derive(Debug)]
pub(crate) struct LogLimiter {
    window: Duration,
    burst: u32,
    state: Mutex<LogWindow>,
}

#[derive(Debug)]
struct LogWindow {
    start: Option<Instant>,
    logged: u32,
    suppressed: u64,
}

/// What the caller may log.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum LogPermit {
    /// Log this warning; `suppressed` warnings were dropped since the last one let through.
    Log { suppressed: u64 },
    /// Stay quiet.
    Quiet,
}

impl LogLimiter {
    /// At most `burst` warnings per `window`.
    pub(crate) fn new(window: Duration, burst: u32) -> Self {
        Self {
            window,
            burst,
            state: Mutex::new(LogWindow {
                start: None,
                logged: 0,
                suppressed: 0,
            }),
        }
    }

    /// Whether a warning may be logged now.
    pub(crate) fn permit(&self, now: Instant) -> LogPermit {
        let Ok(mut state) = self.state.lock() else {
            return LogPermit::Quiet;
        };
        let expired = state
            .start
            .is_none_or(|start| now.saturating_duration_since(start) >= self.window);
        if expired {
            state.start = Some(now);
            state.logged = 0;
        }
        if state.logged < self.burst {
            state.logged += 1;
            let suppressed = std::mem::take(&mut state.suppressed);
            LogPermit::Log { suppressed }
        } else {
            state.suppressed += 1;
            LogPermit::Quiet
        }
    }
}

impl Default for LogLimiter {
    /// Ten warnings per ten seconds.
    fn default() -> Self {
        Self::new(Duration::from_secs(10), 10)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limiter_lets_a_burst_through_then_counts() {
        let limiter = LogLimiter::new(Duration::from_secs(1), 2);
        let t0 = Instant::now();
        assert_eq!(limiter.permit(t0), LogPermit::Log { suppressed: 0 });
        assert_eq!(limiter.permit(t0), LogPermit::Log { suppressed: 0 });
        assert_eq!(limiter.permit(t0), LogPermit::Quiet);
        assert_eq!(limiter.permit(t0), LogPermit::Quiet);
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!(limiter.permit(t1), LogPermit::Log { suppressed: 2 });
    }

    #[test]
    fn snapshot_reads_counters() {
        let stats = ListenerStats::default();
        ListenerStats::bump(&stats.frames);
        ListenerStats::bump(&stats.frames);
        ListenerStats::bump(&stats.oversize);
        let snap = stats.snapshot();
        assert_eq!((snap.frames, snap.oversize, snap.bad_checksum), (2, 1, 0));
    }
}
