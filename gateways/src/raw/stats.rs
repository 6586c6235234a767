//! Per-listener counters.
//!
//! Counters are atomics in one [`ListenerStats`] shared (`Arc`) by a listener's tasks: incremented
//! with relaxed ordering on the hot path, read as a [`StatsSnapshot`] by tests and metrics.

use std::sync::atomic::{AtomicU64, Ordering};

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

#[cfg(test)]
mod tests {
    use super::*;

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
