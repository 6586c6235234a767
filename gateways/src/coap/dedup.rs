//! Duplicate detection of received CON and NON messages (RFC 7252 §4.5).
//!
//! Keyed by (peer, message ID). A CON entry lives EXCHANGE_LIFETIME and holds
//! the reply we sent (piggy-backed response or empty ACK), so a duplicate
//! gets the same bytes again; a NON entry lives NON_LIFETIME and only marks
//! the ID as seen.
//!
//! **Bounds and eviction.** The cache holds at most `max_entries` entries,
//! `max_bytes` of cached replies (plus a fixed per-entry overhead) and
//! `max_per_peer` entries for one peer. Entries leave in insertion order when
//! they expire; when a bound is hit the oldest entry goes first — the oldest
//! of the same peer for the per-peer bound, so a chatty peer only pushes out
//! its own history. An evicted exchange loses duplicate detection: a late
//! duplicate is processed as a new request. That is the accepted cost of a
//! bounded cache; duplicates normally arrive within MAX_TRANSMIT_SPAN.

use std::collections::VecDeque;
use std::collections::hash_map::Entry as HashEntry;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::PeerMap;

/// Bookkeeping bytes charged per entry on top of the cached reply.
const ENTRY_OVERHEAD: usize = 96;

/// Bounds of a [`DedupCache`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DedupLimits {
    /// Most entries in total (default 65 536).
    pub max_entries: usize,
    /// Most bytes of cached replies plus overhead (default 16 MiB).
    pub max_bytes: usize,
    /// Most entries per peer address (default 4 096).
    pub max_per_peer: usize,
}

impl Default for DedupLimits {
    fn default() -> Self {
        Self {
            max_entries: 65_536,
            max_bytes: 16 << 20,
            max_per_peer: 4_096,
        }
    }
}

/// What we know about a received message ID.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Seen {
    /// A CON whose answer is not decided yet (the application is working).
    Pending,
    /// The reply sent for a CON: the piggy-backed response or the empty ACK.
    Reply(Bytes),
    /// A NON (or a CON we chose not to answer): duplicates are dropped.
    Dropped,
}

#[derive(Debug)]
struct Entry {
    seen: Seen,
    expires: Instant,
    seq: u64,
}

/// The duplicate-detection cache; see the module docs for its bounds.
#[derive(Debug)]
pub(crate) struct DedupCache {
    limits: DedupLimits,
    map: PeerMap<(SocketAddr, u16), Entry>,
    /// Insertion order, each item with its entry's expiry (so expiring needs no lookup while
    /// the oldest entry lives); items whose `seq` no longer matches the map are stale.
    order: VecDeque<(u64, Instant, SocketAddr, u16)>,
    per_peer: PeerMap<SocketAddr, VecDeque<(u64, u16)>>,
    bytes: usize,
    seq: u64,
}

impl DedupCache {
    pub fn new(limits: DedupLimits) -> Self {
        Self {
            limits,
            map: PeerMap::default(),
            order: VecDeque::new(),
            per_peer: PeerMap::default(),
            bytes: 0,
            seq: 0,
        }
    }

    /// What was recorded for (peer, mid), if it has not expired.
    pub fn get(&self, now: Instant, peer: SocketAddr, mid: u16) -> Option<&Seen> {
        self.map
            .get(&(peer, mid))
            .filter(|e| e.expires > now)
            .map(|e| &e.seen)
    }

    /// Records a new message ID, evicting as the bounds require.
    pub fn insert(
        &mut self,
        now: Instant,
        peer: SocketAddr,
        mid: u16,
        seen: Seen,
        lifetime: Duration,
    ) {
        self.expire(now);
        let added = cost(&seen);
        self.seq += 1;
        let seq = self.seq;
        let expires = now + lifetime;
        // One lookup: an entry still held for this ID (expired, not swept yet) is replaced.
        if let Some(old) = self.map.insert((peer, mid), Entry { seen, expires, seq }) {
            self.bytes = self.bytes.saturating_sub(cost(&old.seen));
            self.unlist(peer, old.seq);
        }
        self.bytes += added;
        let list = self.per_peer.entry(peer).or_default();
        list.push_back((seq, mid));
        if list.len() > self.limits.max_per_peer
            && let Some(&(_, oldest)) = list.front()
        {
            self.remove(peer, oldest);
        }
        // The new entry's place in the order is taken after evicting, so it is never evicted
        // itself.
        while self.map.len() > self.limits.max_entries.max(1) || self.bytes > self.limits.max_bytes
        {
            if !self.evict_oldest() {
                break;
            }
        }
        self.order.push_back((seq, expires, peer, mid));
    }

    /// Replaces what is recorded for (peer, mid), keeping its expiry. Does
    /// nothing if the entry was evicted meanwhile.
    pub fn update(&mut self, peer: SocketAddr, mid: u16, seen: Seen) {
        let Some(entry) = self.map.get_mut(&(peer, mid)) else {
            return;
        };
        let new_cost = cost(&seen);
        self.bytes = self.bytes.saturating_sub(cost(&entry.seen)) + new_cost;
        entry.seen = seen;
        while self.bytes > self.limits.max_bytes && self.map.len() > 1 {
            if !self.evict_oldest() {
                break;
            }
        }
    }

    /// Drops expired entries from the front of the insertion order. Called on every insert:
    /// while the oldest item has not expired, that is one comparison, not a lookup. A stale
    /// item waits at the front until its time too, or until an eviction or a compaction (see
    /// `remove`) takes it.
    pub fn expire(&mut self, now: Instant) {
        while let Some(&(seq, expires, peer, mid)) = self.order.front() {
            if expires > now {
                break;
            }
            self.order.pop_front();
            self.remove_if(peer, mid, seq);
        }
    }

    /// Number of live entries.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Evicts the oldest live entry; false if there is none left in the order.
    fn evict_oldest(&mut self) -> bool {
        while let Some((seq, _, peer, mid)) = self.order.pop_front() {
            if self.remove_if(peer, mid, seq) {
                return true;
            }
        }
        false
    }

    /// Removes (peer, mid) if its entry is the one numbered `seq` (an order item may be stale);
    /// one lookup. True if it was.
    fn remove_if(&mut self, peer: SocketAddr, mid: u16, seq: u64) -> bool {
        let HashEntry::Occupied(entry) = self.map.entry((peer, mid)) else {
            return false;
        };
        if entry.get().seq != seq {
            return false;
        }
        let e = entry.remove();
        self.bytes = self.bytes.saturating_sub(cost(&e.seen));
        self.unlist(peer, e.seq);
        true
    }

    fn remove(&mut self, peer: SocketAddr, mid: u16) {
        if let Some(e) = self.map.remove(&(peer, mid)) {
            self.bytes = self.bytes.saturating_sub(cost(&e.seen));
            self.unlist(peer, e.seq);
        }
        // The global order keeps a stale item; it is skipped when reached.
        if self.order.len() > 2 * self.map.len() + 64 {
            let map = &self.map;
            self.order
                .retain(|(s, _, p, m)| map.get(&(*p, *m)).is_some_and(|e| e.seq == *s));
        }
    }

    /// Takes entry `seq` off `peer`'s list (usually its oldest, at the front).
    fn unlist(&mut self, peer: SocketAddr, seq: u64) {
        if let Some(list) = self.per_peer.get_mut(&peer) {
            if let Some(pos) = list.iter().position(|(s, _)| *s == seq) {
                list.remove(pos);
            }
            if list.is_empty() {
                self.per_peer.remove(&peer);
            }
        }
    }
}

fn cost(seen: &Seen) -> usize {
    ENTRY_OVERHEAD
        + if let Seen::Reply(b) = seen {
            b.len()
        } else {
            0
        }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "test code")]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn entries_expire_after_their_lifetime() {
        let t0 = Instant::now();
        let mut c = DedupCache::new(DedupLimits::default());
        c.insert(
            t0,
            addr(1),
            7,
            Seen::Reply(Bytes::from_static(b"x")),
            Duration::from_secs(247),
        );
        assert_eq!(
            c.get(t0 + Duration::from_secs(246), addr(1), 7),
            Some(&Seen::Reply(Bytes::from_static(b"x")))
        );
        assert_eq!(c.get(t0 + Duration::from_secs(247), addr(1), 7), None);
        c.expire(t0 + Duration::from_secs(300));
        assert_eq!(c.len(), 0);
    }

    #[test]
    fn per_peer_bound_evicts_only_that_peers_oldest() {
        let t0 = Instant::now();
        let limits = DedupLimits {
            max_entries: 100,
            max_bytes: 1 << 20,
            max_per_peer: 3,
        };
        let mut c = DedupCache::new(limits);
        let life = Duration::from_secs(10);
        c.insert(t0, addr(2), 1, Seen::Dropped, life);
        for mid in 0..10 {
            c.insert(t0, addr(1), mid, Seen::Dropped, life);
        }
        assert!(
            c.get(t0, addr(2), 1).is_some(),
            "other peers keep their entries"
        );
        assert!(c.get(t0, addr(1), 6).is_none());
        assert!(c.get(t0, addr(1), 7).is_some());
        assert_eq!(c.len(), 4);
    }

    #[test]
    fn global_bounds_evict_oldest_first() {
        let t0 = Instant::now();
        let limits = DedupLimits {
            max_entries: 3,
            max_bytes: 1 << 20,
            max_per_peer: 100,
        };
        let mut c = DedupCache::new(limits);
        for port in 1..=5 {
            c.insert(t0, addr(port), 0, Seen::Dropped, Duration::from_secs(10));
        }
        assert_eq!(c.len(), 3);
        assert!(c.get(t0, addr(2), 0).is_none());
        assert!(c.get(t0, addr(3), 0).is_some());

        let limits = DedupLimits {
            max_entries: 100,
            max_bytes: 3 * (ENTRY_OVERHEAD + 100),
            max_per_peer: 100,
        };
        let mut c = DedupCache::new(limits);
        for port in 1..=5 {
            c.insert(t0, addr(port), 0, Seen::Pending, Duration::from_secs(10));
            c.update(addr(port), 0, Seen::Reply(Bytes::from(vec![0u8; 100])));
        }
        assert_eq!(c.len(), 3);
        assert!(c.get(t0, addr(5), 0).is_some());
    }

    impl DedupCache {
        /// The cache's books agree: every entry is on its peer's list once (oldest first) and
        /// has one live item in the order, the bytes are the entries' costs, the bounds hold.
        fn check(&self) {
            assert!(self.map.len() <= self.limits.max_entries.max(1));
            let bytes: usize = self.map.values().map(|e| cost(&e.seen)).sum();
            assert_eq!(self.bytes, bytes);
            let listed: usize = self.per_peer.values().map(VecDeque::len).sum();
            assert_eq!(listed, self.map.len());
            for (peer, list) in &self.per_peer {
                assert!(!list.is_empty() && list.len() <= self.limits.max_per_peer);
                assert!(list.iter().zip(list.iter().skip(1)).all(|(a, b)| a.0 < b.0));
                for (seq, mid) in list {
                    assert_eq!(self.map.get(&(*peer, *mid)).map(|e| e.seq), Some(*seq));
                }
            }
            let live = self
                .order
                .iter()
                .filter(|(s, _, p, m)| self.map.get(&(*p, *m)).is_some_and(|e| e.seq == *s))
                .count();
            assert_eq!(live, self.map.len());
        }
    }

    /// Random inserts (new IDs, repeated IDs, expired ones still held), replies, expiries and
    /// evictions under every bound keep the books straight, and an ID just recorded is found.
    #[test]
    fn random_traffic_keeps_the_books() {
        use rand::{Rng as _, SeedableRng as _};
        let mut rng = rand::rngs::StdRng::seed_from_u64(5);
        let limits = DedupLimits {
            max_entries: 64,
            max_bytes: 40 * (ENTRY_OVERHEAD + 20),
            max_per_peer: 16,
        };
        let mut c = DedupCache::new(limits);
        let t0 = Instant::now();
        let mut now = t0;
        for _ in 0..20_000 {
            let peer = addr(rng.random_range(1..8));
            let mid = rng.random_range(0..40);
            let life = Duration::from_millis(rng.random_range(1..200));
            match rng.random_range(0..4) {
                0 => c.update(
                    peer,
                    mid,
                    Seen::Reply(Bytes::from(vec![0u8; rng.random_range(0..60)])),
                ),
                1 => c.insert(now, peer, mid, Seen::Dropped, life),
                _ => {
                    c.insert(now, peer, mid, Seen::Pending, life);
                    assert_eq!(c.get(now, peer, mid), Some(&Seen::Pending));
                }
            }
            c.check();
            now += Duration::from_millis(rng.random_range(0..3));
        }
        c.expire(now + Duration::from_secs(1));
        c.check();
        assert_eq!(c.len(), 0);
    }
}
