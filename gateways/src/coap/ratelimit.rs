//! Per-peer token-bucket admission of incoming datagrams.
//!
//! **Policy.** Every datagram from a peer (requests, ACKs, RSTs alike) takes
//! one token from that peer's bucket; a bucket holds at most `burst` tokens
//! and refills at `per_second`. A datagram that finds the bucket empty is
//! dropped before it is parsed, with no answer (answering a flood would
//! amplify it); a CON sender retransmits later, when tokens are back. So one
//! address can use at most its own rate of the engine's work, and others are
//! served alongside it.
//!
//! Peers are keyed by socket address by default, or by IP address so a host
//! cannot dodge the limit by changing ports (but then every device behind one
//! NAT address shares a bucket). At most `max_tracked_peers` buckets are
//! kept. When the table is full, buckets that have been idle long enough to
//! refill completely are pruned (at most once per second); if it is still
//! full, datagrams from untracked peers are dropped, so already known peers
//! are never pushed out by a spray of new source addresses.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

/// What identifies a peer for rate limiting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RateLimitKey {
    /// IP address and port (default).
    SocketAddr,
    /// IP address only.
    Ip,
}

/// Settings of the per-peer rate limit.
#[derive(Clone, Debug, PartialEq)]
pub struct RateLimitConfig {
    /// Sustained datagrams per second per peer (default 500).
    pub per_second: f64,
    /// Bucket size: datagrams a quiet peer may send at once (default 1 000).
    pub burst: u32,
    /// How peers are told apart (default socket address).
    pub key: RateLimitKey,
    /// Most peers tracked at once (default 10 000).
    pub max_tracked_peers: usize,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        Self {
            per_second: 500.0,
            burst: 1_000,
            key: RateLimitKey::SocketAddr,
            max_tracked_peers: 10_000,
        }
    }
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

/// The token buckets; see the module docs for the policy.
#[derive(Debug)]
pub(crate) struct RateLimiter {
    config: RateLimitConfig,
    buckets: HashMap<IpOrAddr, Bucket>,
    last_prune: Option<Instant>,
    /// Datagrams dropped so far.
    pub dropped: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum IpOrAddr {
    Ip(IpAddr),
    Addr(SocketAddr),
}

impl RateLimiter {
    pub fn new(config: RateLimitConfig) -> Self {
        Self {
            config,
            buckets: HashMap::new(),
            last_prune: None,
            dropped: 0,
        }
    }

    /// Takes a token for one datagram from `peer`; `false` means drop it.
    pub fn admit(&mut self, now: Instant, peer: SocketAddr) -> bool {
        let key = match self.config.key {
            RateLimitKey::SocketAddr => IpOrAddr::Addr(peer),
            RateLimitKey::Ip => IpOrAddr::Ip(peer.ip()),
        };
        let burst = f64::from(self.config.burst.max(1));
        let rate = self.config.per_second.max(0.0);
        if !self.buckets.contains_key(&key) && self.buckets.len() >= self.config.max_tracked_peers {
            self.prune(now, burst, rate);
            if self.buckets.len() >= self.config.max_tracked_peers {
                self.dropped += 1;
                return false;
            }
        }
        let bucket = self.buckets.entry(key).or_insert(Bucket {
            tokens: burst,
            last: now,
        });
        let elapsed = now.saturating_duration_since(bucket.last).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * rate).min(burst);
        bucket.last = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            true
        } else {
            self.dropped += 1;
            false
        }
    }

    fn prune(&mut self, now: Instant, burst: f64, rate: f64) {
        if self
            .last_prune
            .is_some_and(|t| now.saturating_duration_since(t) < Duration::from_secs(1))
        {
            return;
        }
        self.last_prune = Some(now);
        self.buckets.retain(|_, b| {
            b.tokens + now.saturating_duration_since(b.last).as_secs_f64() * rate < burst
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, 1], port))
    }

    #[test]
    fn bucket_allows_burst_then_rate() {
        let t0 = Instant::now();
        let mut rl = RateLimiter::new(RateLimitConfig {
            per_second: 10.0,
            burst: 5,
            ..Default::default()
        });
        let admitted = (0..20).filter(|_| rl.admit(t0, addr(1))).count();
        assert_eq!(admitted, 5);
        assert!(rl.admit(t0, addr(2)), "another peer has its own bucket");
        let t1 = t0 + Duration::from_millis(500);
        let admitted = (0..20).filter(|_| rl.admit(t1, addr(1))).count();
        assert_eq!(admitted, 5, "refilled at 10/s for 0.5 s");
    }

    #[test]
    fn ip_key_groups_ports() {
        let t0 = Instant::now();
        let mut rl = RateLimiter::new(RateLimitConfig {
            per_second: 1.0,
            burst: 2,
            key: RateLimitKey::Ip,
            ..Default::default()
        });
        assert!(rl.admit(t0, addr(1)));
        assert!(rl.admit(t0, addr(2)));
        assert!(!rl.admit(t0, addr(3)));
    }

    #[test]
    fn full_table_prunes_idle_and_keeps_known_peers() {
        let t0 = Instant::now();
        let mut rl = RateLimiter::new(RateLimitConfig {
            per_second: 1.0,
            burst: 2,
            max_tracked_peers: 2,
            ..Default::default()
        });
        assert!(rl.admit(t0, addr(1)));
        assert!(rl.admit(t0, addr(2)));
        assert!(!rl.admit(t0, addr(3)), "table full of active peers");
        assert!(rl.admit(t0, addr(1)), "known peers still served");
        let later = t0 + Duration::from_secs(10);
        assert!(rl.admit(later, addr(3)), "idle buckets were pruned");
    }
}
