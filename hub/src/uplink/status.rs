//! The uplink's visible state: `brume.uplink.status` (a procedure) and `brume.uplink.on_status`
//! (a topic published on every change of connection state).

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio_util::sync::CancellationToken;

use super::Shared;
use super::queue::Drops;
use crate::router::SessionHandle;
use crate::router::meta::iso8601;
use crate::wamp::{Dict, Payload, Value, dict};

/// A snapshot of the uplink's state.
#[derive(Clone, Debug, PartialEq)]
pub struct UplinkStatus {
    pub url: String,
    pub connected: bool,
    pub since: SystemTime,
    pub queued: u64,
    pub queued_bytes: u64,
    /// When the event at the head of the queue was taken in (ms since the Unix epoch); `None`
    /// while the queue is empty.
    pub oldest_at_ms: Option<u64>,
    /// Events the cloud router acknowledged since start: what went up from the queue.
    pub forwarded: u64,
    /// Events written to the queue since start (before any bound dropped some of them): what a
    /// local app published and the uplink took in.
    pub accepted: u64,
    /// Events dropped since start, reported to the cloud or not, by cause (`dropped` in the
    /// dict is their sum).
    pub drops: DropLedger,
    pub last_error: Option<String>,
    /// The last end-to-end probe (a call through the cloud router back to this hub) that
    /// succeeded: when, and how long the round trip took. Cleared when the link goes down.
    pub round_trip: Option<(SystemTime, Duration)>,
    /// Why the last probe failed, if it did.
    pub probe_error: Option<String>,
}

impl UplinkStatus {
    /// Whether the link is up and proved itself end to end within `fresh`.
    pub fn proven_within(&self, fresh: Duration) -> bool {
        self.connected
            && self.probe_error.is_none()
            && self
                .round_trip
                .is_some_and(|(at, _)| at.elapsed().is_ok_and(|age| age <= fresh))
    }
}

/// Every event the uplink lost since start, by cause.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DropLedger {
    /// Dropped by the queue: bounds, age, oversize, refused by the cloud, unreadable.
    pub queue: Drops,
    /// Could not be written to the queue (the database failed, e.g. a full disk).
    pub disk_error: u64,
    /// Still in memory when the hub stopped and could not be written.
    pub shutdown: u64,
    /// Published while the uplink's local session's queue was full (a burst faster than the
    /// queue's disk): the router dropped them for that session.
    pub slow_consumer: u64,
    /// Published while the hub was over its memory budget and that session's queue was behind
    /// (see `hub.max_memory_bytes`): shed before they reached the queue.
    pub memory: u64,
}

impl DropLedger {
    pub fn total(&self) -> u64 {
        self.queue.total() + self.disk_error + self.shutdown + self.slow_consumer + self.memory
    }

    pub fn to_dict(self) -> Dict {
        let q = &self.queue;
        dict([
            ("queue_bound", Value::from(q.bound)),
            ("age", Value::from(q.age)),
            ("oversize", Value::from(q.oversize)),
            ("rejected", Value::from(q.rejected)),
            ("unreadable", Value::from(q.unreadable)),
            ("disk_full", Value::from(q.disk_full)),
            ("disk_error", Value::from(self.disk_error)),
            ("shutdown", Value::from(self.shutdown)),
            ("slow_consumer", Value::from(self.slow_consumer)),
            ("memory", Value::from(self.memory)),
        ])
    }
}

impl UplinkStatus {
    pub fn to_dict(&self) -> Dict {
        dict([
            ("url", Value::from(self.url.as_str())),
            ("connected", Value::Bool(self.connected)),
            ("since", Value::from(iso8601(self.since))),
            ("queued", Value::from(self.queued)),
            ("queued_bytes", Value::from(self.queued_bytes)),
            (
                "oldest_queued",
                self.oldest_at_ms.map_or(Value::Null, |ms| {
                    Value::from(iso8601(SystemTime::UNIX_EPOCH + Duration::from_millis(ms)))
                }),
            ),
            ("accepted", Value::from(self.accepted)),
            ("forwarded", Value::from(self.forwarded)),
            ("dropped", Value::from(self.drops.total())),
            ("dropped_by_cause", Value::Dict(self.drops.to_dict())),
            (
                "last_error",
                self.last_error.clone().map_or(Value::Null, Value::from),
            ),
            (
                "round_trip_ms",
                self.round_trip
                    .map_or(Value::Null, |(_, rtt)| Value::from(rtt.as_millis() as u64)),
            ),
            (
                "last_round_trip",
                self.round_trip
                    .map_or(Value::Null, |(at, _)| Value::from(iso8601(at))),
            ),
        ])
    }
}

/// The shared, lock-protected status (short locks only).
pub(crate) struct StatusCell(Mutex<UplinkStatus>, Mutex<Option<Arc<SessionHandle>>>);

impl StatusCell {
    pub fn new(url: &str, queued: u64, queued_bytes: u64) -> Self {
        StatusCell(
            Mutex::new(UplinkStatus {
                url: url.to_owned(),
                connected: false,
                since: SystemTime::now(),
                queued,
                queued_bytes,
                oldest_at_ms: None,
                forwarded: 0,
                accepted: 0,
                drops: DropLedger::default(),
                last_error: None,
                round_trip: None,
                probe_error: None,
            }),
            Mutex::new(None),
        )
    }

    /// The local session whose dropped events count as `slow_consumer` (or `memory`).
    pub fn watch_session(&self, session: Option<Arc<SessionHandle>>) {
        *self.1.lock().unwrap_or_else(|e| e.into_inner()) = session;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, UplinkStatus> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn get(&self) -> UplinkStatus {
        let (dropped, memory) = self
            .1
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map_or((0, 0), |h| (h.dropped_events(), h.shed_for_memory()));
        let mut s = self.lock().clone();
        s.drops.slow_consumer = dropped.saturating_sub(memory);
        s.drops.memory = memory;
        s
    }

    /// The queue's size, head and drop counts, after every operation on it.
    pub fn set_queue(&self, queued: u64, bytes: u64, drops: Drops, oldest_at_ms: Option<u64>) {
        let mut s = self.lock();
        s.queued = queued;
        s.queued_bytes = bytes;
        s.drops.queue = drops;
        s.oldest_at_ms = oldest_at_ms;
    }

    pub fn add_accepted(&self, n: u64) {
        self.lock().accepted += n;
    }

    /// Events the cloud router acknowledged.
    pub fn add_forwarded(&self, n: u64) {
        self.lock().forwarded += n;
    }

    /// Records the outcome of an end-to-end probe of the link.
    pub fn set_round_trip(&self, outcome: Result<Duration, String>) {
        let mut s = self.lock();
        match outcome {
            Ok(rtt) => {
                s.round_trip = Some((SystemTime::now(), rtt));
                s.probe_error = None;
            }
            Err(e) => s.probe_error = Some(e),
        }
    }

    /// Events that could not be written to the queue.
    pub fn add_disk_error(&self, n: u64) {
        let mut s = self.lock();
        s.drops.disk_error += n;
    }

    /// Events still in memory at shutdown that could not be written.
    pub fn add_shutdown(&self, n: u64) {
        let mut s = self.lock();
        s.drops.shutdown += n;
    }

    /// Records a connection state change; returns the new snapshot if it changed.
    pub fn set_connected(&self, connected: bool, error: Option<String>) -> Option<UplinkStatus> {
        let mut s = self.lock();
        if error.is_some() {
            s.last_error = error;
        }
        if s.connected == connected {
            return None;
        }
        s.connected = connected;
        if !connected {
            s.round_trip = None;
        }
        s.since = SystemTime::now();
        Some(s.clone())
    }
}

/// Publishes a status change on `brume.uplink.on_status`.
pub(crate) async fn announce(shared: &Shared, status: UplinkStatus) {
    let _ = shared
        .local
        .publish(
            crate::wamp::uris::uplink::ON_STATUS,
            Payload::kwargs(status.to_dict()),
            Dict::new(),
        )
        .await;
}

/// Serves `brume.uplink.status` (registered by the caller) until shutdown.
pub(crate) async fn serve(
    shared: Arc<Shared>,
    mut reg: crate::client::Registration,
    shutdown: CancellationToken,
) {
    loop {
        let inv = tokio::select! {
            () = shutdown.cancelled() => return,
            inv = reg.next() => match inv { Some(i) => i, None => return },
        };
        let status = shared.status.get();
        let _ = inv.reply(Payload::kwargs(status.to_dict())).await;
    }
}
