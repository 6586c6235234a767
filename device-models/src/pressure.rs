//! Memory pressure: whether the hub is over its memory budget (`hub.max_memory_bytes`), shared
//! by every part that can shed work or refuse more of it, with what each has shed.
//!
//! The hub samples its resident memory and sets the flag; the router and the gateways read it on
//! their hot paths (one relaxed atomic load) and count what they shed here, so one place answers
//! "what did the memory budget cost" (`brume.hub.status`).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// The shared flag and its counters. Cloning shares them; [`Default`] is never over budget.
#[derive(Clone, Debug, Default)]
pub struct MemoryPressure(Arc<Inner>);

#[derive(Debug, Default)]
struct Inner {
    over: AtomicBool,
    shed_events: AtomicU64,
    refused_connections: AtomicU64,
}

impl MemoryPressure {
    /// A flag that starts under budget.
    pub fn new() -> MemoryPressure {
        MemoryPressure::default()
    }

    /// Whether the hub is over its memory budget now.
    pub fn over(&self) -> bool {
        self.0.over.load(Ordering::Relaxed)
    }

    /// Sets the flag (the hub's memory watch does this).
    pub fn set_over(&self, over: bool) {
        self.0.over.store(over, Ordering::Relaxed);
    }

    /// Asks whether a new connection may be admitted: while over budget it may not, and the
    /// refusal is counted.
    pub fn admit_connection(&self) -> bool {
        if self.over() {
            self.0.refused_connections.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        true
    }

    /// Counts `n` events shed to stay within the budget.
    pub fn count_shed_events(&self, n: u64) {
        self.0.shed_events.fetch_add(n, Ordering::Relaxed);
    }

    /// Events shed for memory since start.
    pub fn shed_events(&self) -> u64 {
        self.0.shed_events.load(Ordering::Relaxed)
    }

    /// Connections refused for memory since start.
    pub fn refused_connections(&self) -> u64 {
        self.0.refused_connections.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_are_refused_and_counted_only_while_over() {
        let p = MemoryPressure::new();
        let seen = p.clone();
        assert!(p.admit_connection());
        p.set_over(true);
        assert!(!seen.admit_connection());
        assert!(!seen.admit_connection());
        p.set_over(false);
        assert!(seen.admit_connection());
        assert_eq!(p.refused_connections(), 2);
        p.count_shed_events(3);
        assert_eq!(seen.shed_events(), 3);
    }
}
