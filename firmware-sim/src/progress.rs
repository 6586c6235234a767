//! Progress lines for the long-running commands of `brume-sim`: about once a second, on stderr,
//! the time since the command started, what the current phase counted so far and its rate.
//!
//! A generator names its phase and what it counts with [`track`]: a closure that reads counters
//! it keeps anyway, called by the ticker thread once a second, so nothing is added to the
//! measured paths. Nothing is printed unless [`start`] was called (`brume-sim` does when stderr
//! is a terminal, or with `--progress`); results stay on stdout.

use std::io::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Reads the phase's count.
type Count = Box<dyn Fn() -> u64 + Send>;

/// What is being counted now.
struct Phase {
    id: u64,
    label: String,
    unit: &'static str,
    count: Count,
    since: Instant,
}

static CURRENT: Mutex<Option<Phase>> = Mutex::new(None);
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// The phase registered by [`track`]; it ends when this is dropped.
#[must_use = "the phase ends when this is dropped"]
#[derive(Debug)]
pub struct Tracking(u64);

impl Drop for Tracking {
    fn drop(&mut self) {
        let mut current = CURRENT.lock().unwrap_or_else(|e| e.into_inner());
        if current.as_ref().is_some_and(|p| p.id == self.0) {
            *current = None;
        }
    }
}

/// Makes `label` the current phase, counting `unit` with `count` (a running total from 0) until
/// the returned guard is dropped. A later phase replaces it.
pub fn track(
    label: impl Into<String>,
    unit: &'static str,
    count: impl Fn() -> u64 + Send + 'static,
) -> Tracking {
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    *CURRENT.lock().unwrap_or_else(|e| e.into_inner()) = Some(Phase {
        id,
        label: label.into(),
        unit,
        count: Box::new(count),
        since: Instant::now(),
    });
    Tracking(id)
}

/// Starts printing progress lines to stderr once a second, for the life of the process.
pub fn start() {
    let started = Instant::now();
    let ticker = std::thread::Builder::new()
        .name("progress".into())
        .spawn(move || {
            // The count and time of the previous line, per phase, for the rate.
            let mut last: Option<(u64, u64, Instant)> = None;
            loop {
                std::thread::sleep(Duration::from_secs(1));
                let now = Instant::now();
                let line = {
                    let current = CURRENT.lock().unwrap_or_else(|e| e.into_inner());
                    let Some(p) = current.as_ref() else {
                        last = None;
                        continue;
                    };
                    let n = (p.count)();
                    let (before, at) = match last {
                        Some((id, before, at)) if id == p.id => (before, at),
                        _ => (0, p.since),
                    };
                    let rate = n.saturating_sub(before) as f64
                        / now.duration_since(at).as_secs_f64().max(1e-3);
                    last = Some((p.id, n, now));
                    format_line(now.duration_since(started), &p.label, n, p.unit, rate)
                };
                let _ = writeln!(std::io::stderr(), "{line}");
            }
        });
    if let Err(e) = ticker {
        tracing::warn!(error = %e, "no progress lines: cannot start their thread");
    }
}

fn format_line(elapsed: Duration, label: &str, n: u64, unit: &str, rate: f64) -> String {
    format!(
        "[{:>6.1} s] {label}: {n} {unit}, {rate:.0}/s",
        elapsed.as_secs_f64()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_names_the_phase_its_count_and_rate() {
        assert_eq!(
            format_line(
                Duration::from_millis(12_340),
                "pub/sub 1 → 10",
                5000,
                "events delivered",
                1234.4
            ),
            "[  12.3 s] pub/sub 1 → 10: 5000 events delivered, 1234/s"
        );
    }

    #[test]
    fn a_phase_ends_with_its_guard_unless_replaced() {
        let first = track("first", "things", || 1);
        let second = track("second", "things", || 2);
        drop(first);
        let current = || {
            CURRENT
                .lock()
                .unwrap()
                .as_ref()
                .map(|p| (p.label.clone(), (p.count)()))
        };
        assert_eq!(current(), Some(("second".to_owned(), 2)));
        drop(second);
        assert_eq!(current(), None);
    }
}
