//! [`LogLimit`]: at most one log line per cause per interval for events that can repeat at
//! message rate (a device sending 300 bad reports must not write 300 WARN lines).
//!
//! The first occurrence of a cause is logged in full; later ones within the interval are only
//! counted, and the next occurrence after the interval is logged with the number held back
//! since the last line. Counters elsewhere (the gateway's stats) stay exact: this only decides
//! which occurrences get a line.
//!
//! Shared state: one short `Mutex` around a small map, never held across an `.await`.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Rate limits log lines per cause.
#[derive(Debug)]
pub struct LogLimit {
    every: Duration,
    causes: Mutex<HashMap<&'static str, Window>>,
}

#[derive(Debug, Clone, Copy)]
struct Window {
    /// When the last line for this cause was written.
    logged_at: Instant,
    /// Occurrences held back since then.
    held: u64,
}

impl LogLimit {
    /// A limiter writing at most one line per cause every `every`.
    pub fn new(every: Duration) -> LogLimit {
        LogLimit {
            every,
            causes: Mutex::new(HashMap::new()),
        }
    }

    /// Records one occurrence of `cause` at `now`. `Some(held)` means: write a line now, adding
    /// that `held` earlier occurrences were not logged; `None` means: stay quiet.
    pub fn admit(&self, cause: &'static str, now: Instant) -> Option<u64> {
        // Every update leaves the map consistent, so a poisoned lock is still usable.
        let mut causes = self.causes.lock().unwrap_or_else(|p| p.into_inner());
        match causes.get_mut(cause) {
            None => {
                causes.insert(
                    cause,
                    Window {
                        logged_at: now,
                        held: 0,
                    },
                );
                Some(0)
            }
            Some(w) if now.saturating_duration_since(w.logged_at) >= self.every => {
                let held = w.held;
                *w = Window {
                    logged_at: now,
                    held: 0,
                };
                Some(held)
            }
            Some(w) => {
                w.held += 1;
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_cause_and_interval_with_the_count_held_back() {
        let limit = LogLimit::new(Duration::from_secs(10));
        let t0 = Instant::now();
        assert_eq!(limit.admit("too_large", t0), Some(0));
        let quiet = (1..300)
            .map(|i| limit.admit("too_large", t0 + Duration::from_millis(i)))
            .filter(Option::is_some)
            .count();
        assert_eq!(quiet, 0, "the 299 that follow at once are held back");
        // Another cause has its own window.
        assert_eq!(limit.admit("invalid", t0), Some(0));
        // After the interval, one line says how many were held back.
        assert_eq!(
            limit.admit("too_large", t0 + Duration::from_secs(10)),
            Some(299)
        );
        assert_eq!(limit.admit("too_large", t0 + Duration::from_secs(11)), None);
        assert_eq!(
            limit.admit("too_large", t0 + Duration::from_secs(25)),
            Some(1)
        );
    }
}
