//! Observe (RFC 7641) state: the server's bounded registry of observers with
//! their sequence numbers and CON/NON policy, and the client's freshness rule.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::message::{OBSERVE_MAX, Token};

/// Limits and the reliability policy of server-side observations.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObserveConfig {
    /// Most observers in total (default 4 096). Past a limit a registration
    /// is answered as a plain GET, without the Observe option, which RFC 7641
    /// §4.1 allows.
    pub max_observers: usize,
    /// Most observers of one path (default 256).
    pub max_per_path: usize,
    /// Most observations held by one peer (default 32).
    pub max_per_peer: usize,
    /// Notifications are NON, except every `con_every`-th one to each
    /// observer, which is CON so that a vanished observer is noticed
    /// (default 10; 1 makes all of them CON).
    pub con_every: u32,
}

impl Default for ObserveConfig {
    fn default() -> Self {
        Self {
            max_observers: 4_096,
            max_per_path: 256,
            max_per_peer: 32,
            con_every: 10,
        }
    }
}

/// Identifies one observation on the server: the client endpoint and the
/// token of its registration (RFC 7641 §4.1).
pub(crate) type ObserverKey = (SocketAddr, Token);

/// One registered observer.
#[derive(Debug)]
pub(crate) struct Observer {
    pub path: String,
    /// Observe value of the last message sent to this observer.
    pub seq: u32,
    /// NON notifications sent since the last CON.
    pub since_con: u32,
    /// Message ID of the CON notification in flight, if any.
    pub inflight: Option<u16>,
    /// Message ID of the last NON notification, to match a Reset.
    pub last_non: Option<u16>,
}

/// Why an observer was dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ObserverRemoved {
    /// The client sent GET with Observe=1.
    Deregistered,
    /// The client answered a notification with a Reset.
    Reset,
    /// A CON notification was never acknowledged.
    Timeout,
    /// An error response was notified, which ends the observation.
    ErrorNotified,
}

/// Observers by (peer, token), with an index by path and per-peer counts.
#[derive(Debug, Default)]
pub(crate) struct ObserverRegistry {
    observers: HashMap<ObserverKey, Observer>,
    by_path: HashMap<String, Vec<ObserverKey>>,
    per_peer: HashMap<SocketAddr, usize>,
    next_seq: u32,
}

impl ObserverRegistry {
    /// Adds or replaces the observer for `key`. Returns the Observe value for
    /// the registration response, or `None` when a limit refuses it.
    pub fn register(
        &mut self,
        config: &ObserveConfig,
        key: ObserverKey,
        path: &str,
    ) -> Option<u32> {
        let replacing = self.observers.get(&key).map(|o| o.path == path);
        match replacing {
            Some(true) => {}
            Some(false) => {
                self.remove(key);
                self.check_room(config, key.0, path)?;
            }
            None => self.check_room(config, key.0, path)?,
        }
        // A re-registration continues the observation's sequence, so its
        // answer is fresher than every notification before it.
        if let Some(o) = self.observers.get_mut(&key) {
            o.seq = next_seq(o.seq);
            return Some(o.seq);
        }
        // A starting value per new observation; later values increase from it.
        self.next_seq = next_seq(self.next_seq);
        let seq = self.next_seq;
        self.observers.insert(
            key,
            Observer {
                path: path.to_owned(),
                seq,
                since_con: 0,
                inflight: None,
                last_non: None,
            },
        );
        self.by_path.entry(path.to_owned()).or_default().push(key);
        *self.per_peer.entry(key.0).or_default() += 1;
        Some(seq)
    }

    fn check_room(&self, config: &ObserveConfig, peer: SocketAddr, path: &str) -> Option<()> {
        let on_path = self.by_path.get(path).map_or(0, Vec::len);
        let of_peer = self.per_peer.get(&peer).copied().unwrap_or(0);
        (self.observers.len() < config.max_observers
            && on_path < config.max_per_path
            && of_peer < config.max_per_peer)
            .then_some(())
    }

    /// Removes an observer; returns it if it existed.
    pub fn remove(&mut self, key: ObserverKey) -> Option<Observer> {
        let o = self.observers.remove(&key)?;
        if let Some(list) = self.by_path.get_mut(&o.path) {
            list.retain(|k| *k != key);
            if list.is_empty() {
                self.by_path.remove(&o.path);
            }
        }
        if let Some(n) = self.per_peer.get_mut(&key.0) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.per_peer.remove(&key.0);
            }
        }
        Some(o)
    }

    pub fn get_mut(&mut self, key: &ObserverKey) -> Option<&mut Observer> {
        self.observers.get_mut(key)
    }

    /// Observers of a path.
    pub fn of_path(&self, path: &str) -> Vec<ObserverKey> {
        self.by_path.get(path).cloned().unwrap_or_default()
    }

    /// The observer whose last NON notification to `peer` had `mid`.
    pub fn by_non_mid(&self, peer: SocketAddr, mid: u16) -> Option<ObserverKey> {
        // Only this peer's observers are candidates; there are at most
        // `max_per_peer` of them.
        self.observers
            .iter()
            .find(|((p, _), o)| *p == peer && o.last_non == Some(mid))
            .map(|(k, _)| *k)
    }

    pub fn len(&self) -> usize {
        self.observers.len()
    }
}

/// Advances a 24-bit Observe sequence number.
pub(crate) fn next_seq(seq: u32) -> u32 {
    (seq + 1) & OBSERVE_MAX
}

/// RFC 7641 §3.4: is a notification with value `v2` received at `t2` newer
/// than the one with `v1` received at `t1`? Handles 24-bit wrap-around, and
/// after 128 s any value counts as newer.
pub(crate) fn is_fresher(v1: u32, t1: Instant, v2: u32, t2: Instant) -> bool {
    const HALF: u32 = 1 << 23;
    (v1 < v2 && v2 - v1 < HALF)
        || (v1 > v2 && v1 - v2 > HALF)
        || t1
            .checked_add(Duration::from_secs(128))
            .is_some_and(|limit| t2 > limit)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "test code")]
mod tests {
    use super::*;

    #[test]
    fn freshness_rule_handles_wrap_and_time() {
        let t = Instant::now();
        assert!(is_fresher(5, t, 6, t));
        assert!(!is_fresher(6, t, 5, t));
        assert!(!is_fresher(6, t, 6, t));
        assert!(is_fresher(OBSERVE_MAX, t, 2, t), "wrapped past 2^24");
        assert!(!is_fresher(2, t, OBSERVE_MAX, t));
        assert!(is_fresher(6, t, 5, t + Duration::from_secs(129)));
        assert_eq!(next_seq(OBSERVE_MAX), 0);
    }

    #[test]
    fn registry_limits_and_replacement() {
        let cfg = ObserveConfig {
            max_observers: 3,
            max_per_path: 2,
            max_per_peer: 2,
            con_every: 10,
        };
        let mut r = ObserverRegistry::default();
        let p1 = SocketAddr::from(([127, 0, 0, 1], 1));
        let p2 = SocketAddr::from(([127, 0, 0, 1], 2));
        let t = |b: u8| Token::new(&[b]).unwrap();
        assert!(r.register(&cfg, (p1, t(1)), "a").is_some());
        assert!(
            r.register(&cfg, (p1, t(1)), "a").is_some(),
            "same key replaces"
        );
        assert_eq!(r.len(), 1);
        assert!(r.register(&cfg, (p2, t(1)), "a").is_some());
        assert!(r.register(&cfg, (p2, t(2)), "a").is_none(), "path full");
        assert!(r.register(&cfg, (p1, t(2)), "b").is_some());
        assert!(
            r.register(&cfg, (p1, t(3)), "c").is_none(),
            "peer or total full"
        );
        assert!(
            r.register(&cfg, (p1, t(1)), "c").is_some(),
            "same token moves to another path"
        );
        assert_eq!(r.of_path("a"), vec![(p2, t(1))]);
        assert!(r.remove((p2, t(1))).is_some());
        assert!(r.of_path("a").is_empty());
    }
}
