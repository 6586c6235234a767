//! Token buckets that keep one device from taking everyone's share.
//!
//! - UDP: one bucket per source address in a bounded table ([`SourceLimiter`]); a datagram that
//!   finds its bucket empty is dropped before it is decoded. When the table is full, buckets idle
//!   long enough to be full again are pruned; if it is still full, new sources are dropped, so known
//!   devices are never pushed out by a spray of spoofed addresses.
//! - TCP: one [`Bucket`] per connection; an empty bucket makes the connection task wait before it
//!   reads on, which slows that device down (TCP flow control) without losing its frames.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

/// One token bucket: `burst` tokens, refilled at `per_sec`.
#[derive(Debug, Clone)]
pub(crate) struct Bucket {
    tokens: f64,
    last: Instant,
    per_sec: f64,
    burst: f64,
}

impl Bucket {
    pub(crate) fn new(per_sec: f64, burst: u32, now: Instant) -> Self {
        let burst = f64::from(burst.max(1));
        Self {
            tokens: burst,
            last: now,
            per_sec: per_sec.max(f64::MIN_POSITIVE),
            burst,
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.per_sec).min(self.burst);
        self.last = now;
    }

    /// Takes a token, or says how long until one is there.
    pub(crate) fn take(&mut self, now: Instant) -> Result<(), Duration> {
        self.refill(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            let wait = (1.0 - self.tokens) / self.per_sec;
            Err(Duration::from_secs_f64(wait.min(3600.0)))
        }
    }

    /// Whether the bucket would be full by `now` (its owner has been quiet).
    fn is_full_at(&self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens + elapsed * self.per_sec >= self.burst
    }
}

/// Per-source buckets for a UDP listener; see the module docs.
#[derive(Debug)]
pub(crate) struct SourceLimiter<K> {
    buckets: HashMap<K, Bucket>,
    per_sec: f64,
    burst: u32,
    max_sources: usize,
    last_prune: Option<Instant>,
}

impl<K: Eq + Hash> SourceLimiter<K> {
    pub(crate) fn new(per_sec: f64, burst: u32, max_sources: usize) -> Self {
        Self {
            buckets: HashMap::new(),
            per_sec,
            burst,
            max_sources: max_sources.max(1),
            last_prune: None,
        }
    }

    /// Whether a datagram from `source` may be processed now.
    pub(crate) fn admit(&mut self, source: K, now: Instant) -> bool {
        if !self.buckets.contains_key(&source) && self.buckets.len() >= self.max_sources {
            self.prune(now);
            if self.buckets.len() >= self.max_sources {
                return false;
            }
        }
        self.buckets
            .entry(source)
            .or_insert_with(|| Bucket::new(self.per_sec, self.burst, now))
            .take(now)
            .is_ok()
    }

    fn prune(&mut self, now: Instant) {
        if self
            .last_prune
            .is_some_and(|t| now.saturating_duration_since(t) < Duration::from_secs(1))
        {
            return;
        }
        self.last_prune = Some(now);
        self.buckets.retain(|_, b| !b.is_full_at(now));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_allows_its_burst_then_its_rate() {
        let t0 = Instant::now();
        let mut bucket = Bucket::new(10.0, 3, t0);
        assert!((0..3).all(|_| bucket.take(t0).is_ok()));
        let wait = bucket.take(t0).unwrap_err();
        assert!(wait <= Duration::from_millis(100) && wait > Duration::ZERO);
        assert!(bucket.take(t0 + Duration::from_millis(100)).is_ok());
    }

    #[test]
    fn one_flooding_source_does_not_use_up_another_ones_budget() {
        let t0 = Instant::now();
        let mut limiter = SourceLimiter::new(1.0, 5, 100);
        let flood = (0..1000).filter(|_| limiter.admit("flooder", t0)).count();
        assert_eq!(flood, 5);
        assert!(limiter.admit("quiet", t0));
    }

    #[test]
    fn a_full_table_keeps_known_sources_and_prunes_idle_ones() {
        let t0 = Instant::now();
        let mut limiter = SourceLimiter::new(1.0, 2, 2);
        assert!(limiter.admit(1, t0));
        assert!(limiter.admit(2, t0));
        assert!(!limiter.admit(3, t0), "table full of active sources");
        assert!(limiter.admit(1, t0), "known sources are still served");
        assert!(limiter.admit(3, t0 + Duration::from_secs(10)));
    }
}
