//! The memory budget (`hub.max_memory_bytes`): a watch samples the hub's resident memory, raises
//! the shared [`MemoryPressure`] flag once it passes the budget and lowers it once it is back
//! under 90 % of it, says so on `brume.hub.on_memory`, and answers `brume.hub.status`.
//!
//! What the flag makes the hub shed, in order (each counted): events queued for WAMP subscribers
//! that are more than [`PRESSURE_BACKLOG`](crate::router::outbound::PRESSURE_BACKLOG) messages
//! behind, oldest first (a `disconnect` subscriber is closed, freeing its whole backlog); then new
//! connections on every WAMP listener and on the MQTT and raw TCP gateways. Never shed: writes to
//! the things database (provisioning, desired state, reports), the uplink queue (on disk, bound
//! by the disk budget) and replies to calls.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use device_models::MemoryPressure;
use tokio_util::sync::CancellationToken;

use crate::client::{Client, Registration};
use crate::wamp::{Dict, Payload, Value, dict, uris};

/// How often the resident memory is sampled: often enough that a flood cannot add much between
/// two samples, cheap enough (one read of `/proc/self/status`) not to matter.
const SAMPLE_EVERY: Duration = Duration::from_millis(50);

/// While over budget, how often the shedding is announced again.
const ANNOUNCE_EVERY: Duration = Duration::from_secs(10);

/// The budget, the shared flag, and what the watch has seen.
#[derive(Debug)]
pub struct MemoryWatch {
    budget: u64,
    pressure: MemoryPressure,
    rss: AtomicU64,
    peak: AtomicU64,
    /// Times the hub went over its budget.
    episodes: AtomicU64,
}

impl MemoryWatch {
    /// A watch of `budget` bytes raising `pressure`.
    pub fn new(budget: u64, pressure: MemoryPressure) -> Arc<MemoryWatch> {
        Arc::new(MemoryWatch {
            budget,
            pressure,
            rss: AtomicU64::new(0),
            peak: AtomicU64::new(0),
            episodes: AtomicU64::new(0),
        })
    }

    /// The budget in bytes.
    pub fn budget(&self) -> u64 {
        self.budget
    }

    /// The last resident memory sampled, in bytes.
    pub fn rss(&self) -> u64 {
        self.rss.load(Ordering::Relaxed)
    }

    /// Whether the hub is over its budget now (shedding).
    pub fn shedding(&self) -> bool {
        self.pressure.over()
    }

    /// The shared flag and its counters.
    pub fn pressure(&self) -> &MemoryPressure {
        &self.pressure
    }

    /// Records one sample of the resident memory; returns the flag's new value if it changed.
    pub fn observe(&self, rss: u64) -> Option<bool> {
        self.rss.store(rss, Ordering::Relaxed);
        self.peak.fetch_max(rss, Ordering::Relaxed);
        let over = self.pressure.over();
        if !over && rss > self.budget {
            self.pressure.set_over(true);
            self.episodes.fetch_add(1, Ordering::Relaxed);
            return Some(true);
        }
        if over && rss <= self.budget / 10 * 9 {
            self.pressure.set_over(false);
            return Some(false);
        }
        None
    }

    /// What `brume.hub.status` shows under `memory` and `brume.hub.on_memory` carries.
    pub fn to_dict(&self) -> Dict {
        dict([
            ("budget_bytes", Value::from(self.budget)),
            ("rss_bytes", Value::from(self.rss.load(Ordering::Relaxed))),
            (
                "peak_rss_bytes",
                Value::from(self.peak.load(Ordering::Relaxed)),
            ),
            ("shedding", Value::Bool(self.pressure.over())),
            (
                "episodes",
                Value::from(self.episodes.load(Ordering::Relaxed)),
            ),
            ("shed_events", Value::from(self.pressure.shed_events())),
            (
                "refused_connections",
                Value::from(self.pressure.refused_connections()),
            ),
        ])
    }
}

/// The process's resident memory in bytes (`VmRSS`), if the system tells it.
pub fn rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    kib_field(&status, "VmRSS:")
}

/// The memory this process may use: the machine's (`MemTotal`), or its cgroup's limit when that
/// is lower.
pub fn available_memory() -> Option<u64> {
    let total = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| kib_field(&m, "MemTotal:"));
    let cgroup = std::fs::read_to_string("/sys/fs/cgroup/memory.max")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok());
    match (total, cgroup) {
        (Some(t), Some(c)) => Some(t.min(c)),
        (t, c) => t.or(c),
    }
}

/// A `Name:   1234 kB` line of a `/proc` file, in bytes.
fn kib_field(text: &str, name: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with(name))?;
    let kib: u64 = line[name.len()..].split_whitespace().next()?.parse().ok()?;
    Some(kib.saturating_mul(1024))
}

/// Samples the resident memory until shutdown, announcing on `brume.hub.on_memory` when the hub
/// goes over its budget, every [`ANNOUNCE_EVERY`] while it stays over, and when it is back.
pub async fn watch(watch: Arc<MemoryWatch>, local: Client, shutdown: CancellationToken) {
    device_models::fault::inject("memory_watch");
    let mut tick = tokio::time::interval(SAMPLE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut announced: Option<tokio::time::Instant> = None;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let Some(rss) = rss_bytes() else {
            continue;
        };
        let changed = watch.observe(rss);
        let again =
            watch.pressure.over() && announced.is_some_and(|a| a.elapsed() >= ANNOUNCE_EVERY);
        match changed {
            Some(true) => tracing::warn!(
                rss,
                budget = watch.budget,
                "over the memory budget: shedding the backlogs of slow subscribers and refusing new connections"
            ),
            Some(false) => tracing::info!(
                rss,
                budget = watch.budget,
                shed_events = watch.pressure.shed_events(),
                refused_connections = watch.pressure.refused_connections(),
                "back under the memory budget"
            ),
            None if again => tracing::warn!(
                rss,
                budget = watch.budget,
                shed_events = watch.pressure.shed_events(),
                refused_connections = watch.pressure.refused_connections(),
                "still over the memory budget"
            ),
            None => continue,
        }
        announced = Some(tokio::time::Instant::now());
        let _ = local
            .publish(
                uris::hub::ON_MEMORY,
                Payload::kwargs(watch.to_dict()),
                Dict::new(),
            )
            .await;
    }
}

/// Serves `brume.hub.status` (registered by the caller) until shutdown.
pub async fn serve_status(
    hub_id: String,
    disk_budget: u64,
    watch: Arc<MemoryWatch>,
    mut reg: Registration,
    shutdown: CancellationToken,
) {
    let started = std::time::Instant::now();
    loop {
        let inv = tokio::select! {
            () = shutdown.cancelled() => return,
            inv = reg.next() => match inv { Some(i) => i, None => return },
        };
        let status = dict([
            ("id", Value::from(hub_id.as_str())),
            ("uptime_secs", Value::from(started.elapsed().as_secs())),
            ("memory", Value::Dict(watch.to_dict())),
            (
                "disk",
                Value::Dict(dict([("budget_bytes", Value::from(disk_budget))])),
            ),
        ]);
        let _ = inv.reply(Payload::kwargs(status)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn over_past_the_budget_and_back_under_ninety_percent() {
        let pressure = MemoryPressure::new();
        let w = MemoryWatch::new(1000, pressure.clone());
        assert_eq!(w.observe(900), None);
        assert_eq!(w.observe(1001), Some(true));
        assert!(pressure.over());
        assert_eq!(w.observe(950), None, "still within the hysteresis");
        assert!(pressure.over());
        assert_eq!(w.observe(900), Some(false));
        assert!(!pressure.over());
        let d = w.to_dict();
        assert_eq!(d.get("peak_rss_bytes"), Some(&Value::from(1001u64)));
        assert_eq!(d.get("episodes"), Some(&Value::from(1u64)));
    }

    #[test]
    fn proc_fields() {
        let text = "Name:\tbrume\nVmRSS:\t   2048 kB\n";
        assert_eq!(kib_field(text, "VmRSS:"), Some(2048 * 1024));
        assert_eq!(kib_field(text, "VmHWM:"), None);
        assert!(rss_bytes().is_some_and(|r| r > 0));
        assert!(available_memory().is_some_and(|m| m > 0));
    }
}
