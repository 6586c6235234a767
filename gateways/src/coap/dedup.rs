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

/// Bounds of the CoAP server's duplicate cache (the replies it keeps to answer a retransmitted
/// request again without handling it twice).
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

/// A recorded message ID. A free slot has `seq` 0.
#[derive(Debug)]
struct Slot {
    peer: SocketAddr,
    mid: u16,
    /// The keyed hash of (peer, mid), the slot's key in the index.
    hash: u64,
    seq: u64,
    expires: Instant,
    seen: Seen,
}

/// The index's hasher: its keys are already keyed hashes, taken as they are.
#[derive(Debug, Default)]
struct Prehashed(u64);

impl std::hash::Hasher for Prehashed {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// The duplicate-detection cache; see the module docs for its bounds.
///
/// Entries live in a slab; the hash index maps the keyed hash of (peer, mid) to a slot, so its
/// buckets are 16 bytes and the table stays small enough for the processor's caches at 65,536
/// entries (keyed by the address itself, with the entry inline, buckets were 104 bytes and
/// every lookup a cache miss). The slot holds the full key: a hash collision is found out and
/// costs the older entry its duplicate detection, like an eviction.
#[derive(Debug)]
pub(crate) struct DedupCache {
    limits: DedupLimits,
    index: std::collections::HashMap<u64, u32, std::hash::BuildHasherDefault<Prehashed>>,
    hasher: ahash::RandomState,
    slots: Vec<Slot>,
    free: Vec<u32>,
    live: usize,
    /// Insertion order, each item with its entry's expiry (so expiring needs no lookup while
    /// the oldest entry lives) and slot; items whose `seq` no longer matches the slot's are
    /// stale.
    order: VecDeque<(u64, Instant, u32)>,
    per_peer: PeerMap<SocketAddr, VecDeque<(u64, u16)>>,
    bytes: usize,
    seq: u64,
}

impl DedupCache {
    pub fn new(limits: DedupLimits) -> Self {
        Self {
            limits,
            index: Default::default(),
            hasher: ahash::RandomState::new(),
            slots: Vec::new(),
            free: Vec::new(),
            live: 0,
            order: VecDeque::new(),
            per_peer: PeerMap::default(),
            bytes: 0,
            seq: 0,
        }
    }

    fn hash(&self, peer: SocketAddr, mid: u16) -> u64 {
        self.hasher.hash_one((peer, mid))
    }

    /// The slot recorded for (peer, mid).
    fn find(&self, peer: SocketAddr, mid: u16) -> Option<usize> {
        let i = *self.index.get(&self.hash(peer, mid))? as usize;
        let slot = self.slots.get(i)?;
        (slot.seq != 0 && slot.peer == peer && slot.mid == mid).then_some(i)
    }

    /// What was recorded for (peer, mid), if it has not expired.
    pub fn get(&self, now: Instant, peer: SocketAddr, mid: u16) -> Option<&Seen> {
        let slot = &self.slots[self.find(peer, mid)?];
        (slot.expires > now).then_some(&slot.seen)
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
        let hash = self.hash(peer, mid);
        // What the index holds under this hash (this ID, not swept yet, or a collision) gives
        // way to the new entry.
        if let Some(&old) = self.index.get(&hash) {
            self.free_slot(old as usize);
        }
        self.seq += 1;
        let seq = self.seq;
        let expires = now + lifetime;
        self.bytes += cost(&seen);
        let slot = Slot {
            peer,
            mid,
            hash,
            seq,
            expires,
            seen,
        };
        let i = match self.free.pop() {
            Some(i) => {
                self.slots[i as usize] = slot;
                i
            }
            None => {
                self.slots.push(slot);
                u32::try_from(self.slots.len() - 1).unwrap_or(u32::MAX)
            }
        };
        self.index.insert(hash, i);
        self.live += 1;
        let list = self.per_peer.entry(peer).or_default();
        list.push_back((seq, mid));
        if list.len() > self.limits.max_per_peer.max(1)
            && let Some(&(_, oldest)) = list.front()
            && let Some(j) = self.find(peer, oldest)
        {
            self.free_slot(j);
        }
        // The new entry's place in the order is taken after evicting, so it is never evicted
        // itself.
        while self.live > self.limits.max_entries.max(1) || self.bytes > self.limits.max_bytes {
            if !self.evict_oldest() {
                break;
            }
        }
        self.order.push_back((seq, expires, i));
        self.compact();
    }

    /// Replaces what is recorded for (peer, mid), keeping its expiry. Does
    /// nothing if the entry was evicted meanwhile.
    pub fn update(&mut self, peer: SocketAddr, mid: u16, seen: Seen) {
        let Some(i) = self.find(peer, mid) else {
            return;
        };
        let slot = &mut self.slots[i];
        self.bytes = self.bytes.saturating_sub(cost(&slot.seen)) + cost(&seen);
        slot.seen = seen;
        while self.bytes > self.limits.max_bytes && self.live > 1 {
            if !self.evict_oldest() {
                break;
            }
        }
    }

    /// Drops expired entries from the front of the insertion order. Called on every insert:
    /// while the oldest item has not expired, that is one comparison, not a lookup. A stale
    /// item waits at the front until its time too, or until an eviction or a compaction takes
    /// it.
    pub fn expire(&mut self, now: Instant) {
        while let Some(&(seq, expires, i)) = self.order.front() {
            if expires > now {
                break;
            }
            self.order.pop_front();
            self.free_if(i, seq);
        }
    }

    /// Number of live entries.
    pub fn len(&self) -> usize {
        self.live
    }

    /// Evicts the oldest live entry; false if there is none left in the order.
    fn evict_oldest(&mut self) -> bool {
        while let Some((seq, _, i)) = self.order.pop_front() {
            if self.free_if(i, seq) {
                return true;
            }
        }
        false
    }

    /// Frees slot `i` if it still holds entry `seq` (an order item may be stale).
    fn free_if(&mut self, i: u32, seq: u64) -> bool {
        let i = i as usize;
        if self.slots.get(i).is_some_and(|s| s.seq == seq) {
            self.free_slot(i);
            true
        } else {
            false
        }
    }

    /// Forgets the live entry in slot `i`: index, bytes, its peer's list.
    fn free_slot(&mut self, i: usize) {
        let Some(slot) = self.slots.get_mut(i) else {
            return;
        };
        if slot.seq == 0 {
            return;
        }
        let (peer, hash, seq) = (slot.peer, slot.hash, slot.seq);
        let seen = std::mem::replace(&mut slot.seen, Seen::Dropped);
        slot.seq = 0;
        self.bytes = self.bytes.saturating_sub(cost(&seen));
        self.live -= 1;
        if let HashEntry::Occupied(e) = self.index.entry(hash)
            && *e.get() as usize == i
        {
            e.remove();
        }
        self.free.push(u32::try_from(i).unwrap_or(u32::MAX));
        if let Some(list) = self.per_peer.get_mut(&peer) {
            if let Some(pos) = list.iter().position(|(s, _)| *s == seq) {
                list.remove(pos);
            }
            if list.is_empty() {
                self.per_peer.remove(&peer);
            }
        }
    }

    /// The global order keeps stale items; once they outnumber the live ones, they go.
    fn compact(&mut self) {
        if self.order.len() > 2 * self.live + 64 {
            let slots = &self.slots;
            self.order
                .retain(|(s, _, i)| slots.get(*i as usize).is_some_and(|slot| slot.seq == *s));
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
            assert!(self.live <= self.limits.max_entries.max(1));
            let live: Vec<&Slot> = self.slots.iter().filter(|s| s.seq != 0).collect();
            assert_eq!(live.len(), self.live);
            assert_eq!(self.index.len(), self.live);
            assert_eq!(self.slots.len(), self.live + self.free.len());
            let bytes: usize = live.iter().map(|s| cost(&s.seen)).sum();
            assert_eq!(self.bytes, bytes);
            for (i, s) in self.slots.iter().enumerate() {
                if s.seq != 0 {
                    assert_eq!(self.index.get(&s.hash).map(|j| *j as usize), Some(i));
                    assert_eq!(self.find(s.peer, s.mid), Some(i));
                }
            }
            let listed: usize = self.per_peer.values().map(VecDeque::len).sum();
            assert_eq!(listed, self.live);
            for (peer, list) in &self.per_peer {
                assert!(!list.is_empty() && list.len() <= self.limits.max_per_peer);
                assert!(list.iter().zip(list.iter().skip(1)).all(|(a, b)| a.0 < b.0));
                for (seq, mid) in list {
                    let i = self.find(*peer, *mid).unwrap();
                    assert_eq!(self.slots[i].seq, *seq);
                }
            }
            let in_order = self
                .order
                .iter()
                .filter(|(s, _, i)| self.slots[*i as usize].seq == *s)
                .count();
            assert_eq!(in_order, self.live);
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
