//! Rate-limited warnings: a burst per window let through, the rest counted and reported with the
//! next warning that is logged, so that a peer spraying bad input costs a few log lines per
//! window, not one per message. Shared by the gateways and the hub.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Lets through at most `burst` warnings per `window` and counts the rest, so that logging bad
/// input from a hostile peer stays cheap. One limiter may be shared by several tasks: its state
/// sits behind a short mutex that is never held across an `.await`.
#[derive(Debug)]
pub struct LogLimiter {
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
pub enum LogPermit {
    /// Log this warning; `suppressed` warnings were dropped since the last one let through.
    Log { suppressed: u64 },
    /// Stay quiet.
    Quiet,
}

impl LogLimiter {
    /// At most `burst` warnings per `window`.
    pub fn new(window: Duration, burst: u32) -> Self {
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
    pub fn permit(&self, now: Instant) -> LogPermit {
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
}
