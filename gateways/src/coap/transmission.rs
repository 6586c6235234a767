//! Message-layer reliability shared by server and client (RFC 7252 §4):
//! transmission parameters, the randomized exponential back-off of
//! Confirmable messages, message-ID allocation, and the timer queue the
//! engines use to answer `poll_timeout`.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// A datagram the engine wants sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transmit {
    /// Destination address.
    pub peer: SocketAddr,
    /// The encoded CoAP message.
    pub bytes: Bytes,
}

/// Transmission parameters of RFC 7252 §4.8, with the derived times of
/// §4.8.2. The defaults are the RFC's.
#[derive(Clone, Debug, PartialEq)]
pub struct TransmissionParams {
    /// Initial retransmission timeout before randomization (2 s).
    pub ack_timeout: Duration,
    /// The initial timeout is drawn from
    /// `[ack_timeout, ack_timeout * ack_random_factor]` (1.5).
    pub ack_random_factor: f64,
    /// Retransmissions after the first send before giving up (4).
    pub max_retransmit: u8,
    /// Longest time a datagram is assumed to take in the network (100 s).
    pub max_latency: Duration,
    /// Time a node takes to turn a CON into an ACK (2 s).
    pub processing_delay: Duration,
}

impl Default for TransmissionParams {
    fn default() -> Self {
        Self {
            ack_timeout: Duration::from_secs(2),
            ack_random_factor: 1.5,
            max_retransmit: 4,
            max_latency: Duration::from_secs(100),
            processing_delay: Duration::from_secs(2),
        }
    }
}

impl TransmissionParams {
    /// MAX_TRANSMIT_SPAN: from the first send of a CON to its last
    /// retransmission (45 s with the defaults).
    pub fn max_transmit_span(&self) -> Duration {
        let factor = (1u32 << self.max_retransmit.min(16)) - 1;
        self.ack_timeout.mul_f64(self.ack_random_factor.max(1.0)) * factor
    }

    /// EXCHANGE_LIFETIME: how long a message ID of a CON stays in use and how
    /// long duplicates are detected (247 s with the defaults).
    pub fn exchange_lifetime(&self) -> Duration {
        self.max_transmit_span() + self.max_latency * 2 + self.processing_delay
    }

    /// NON_LIFETIME: the same for NON messages (145 s with the defaults).
    pub fn non_lifetime(&self) -> Duration {
        self.max_transmit_span() + self.max_latency
    }

    /// A randomized initial timeout for a new CON.
    pub(crate) fn initial_timeout(&self, rng: &mut StdRng) -> Duration {
        let spread = (self.ack_random_factor - 1.0).max(0.0);
        let r: f64 = rng.random();
        self.ack_timeout.mul_f64(1.0 + spread * r)
    }
}

/// Cap on one retransmission timeout, so that odd configurations (a huge
/// `max_retransmit`) cannot overflow time arithmetic.
const MAX_TIMEOUT: Duration = Duration::from_secs(24 * 3600);

/// Retransmission state of one outstanding Confirmable message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Retransmit {
    /// Retransmissions done so far (not counting the first send).
    pub retransmissions: u8,
    /// Current timeout; doubles after each retransmission.
    pub timeout: Duration,
    /// When the current timeout expires.
    pub deadline: Instant,
}

impl Retransmit {
    /// State after the first send at `now`.
    pub fn start(now: Instant, params: &TransmissionParams, rng: &mut StdRng) -> Self {
        let timeout = params.initial_timeout(rng);
        Self {
            retransmissions: 0,
            timeout,
            deadline: now + timeout,
        }
    }

    /// Called when `deadline` has passed: `true` means send again (the state
    /// has advanced), `false` means give up because the timeout after the
    /// last retransmission expired.
    pub fn on_expiry(&mut self, now: Instant, params: &TransmissionParams) -> bool {
        if self.retransmissions >= params.max_retransmit {
            return false;
        }
        self.retransmissions += 1;
        self.timeout = self.timeout.saturating_mul(2).min(MAX_TIMEOUT);
        self.deadline = now + self.timeout;
        true
    }
}

/// A random number generator for back-off jitter, message IDs and tokens;
/// seeded for reproducible tests, from the OS otherwise.
pub(crate) fn make_rng(seed: Option<u64>) -> StdRng {
    match seed {
        Some(s) => StdRng::seed_from_u64(s),
        None => StdRng::from_rng(&mut rand::rng()),
    }
}

/// Allocates message IDs: a counter starting at a random value (RFC 7252
/// §4.4), so IDs are only reused after 65 536 messages. The engines also
/// skip IDs that still belong to an outstanding CON to the same peer.
#[derive(Debug)]
pub(crate) struct MessageIds {
    next: u16,
}

impl MessageIds {
    pub fn new(rng: &mut StdRng) -> Self {
        Self { next: rng.random() }
    }

    pub fn next(&mut self) -> u16 {
        let id = self.next;
        self.next = self.next.wrapping_add(1);
        id
    }
}

/// Deadlines keyed by `K`, earliest first (ties in scheduling order).
///
/// Entries are never removed early: the owner keeps the real deadline in its
/// own state and ignores a popped key whose deadline moved or whose state is
/// gone (lazy deletion), so there is no index.
///
/// Most deadlines come in order: a fixed delay after now, such as every
/// request's ACK delay. A deadline not earlier than the last one of a lane
/// joins that lane, a FIFO, O(1) both ways; only the others (randomised
/// retransmission back-offs scheduled behind a later deadline) go to a heap,
/// O(log n). There are a few lanes because an engine runs a few fixed delays
/// at once: with one, a single long timer (the housekeeping sweep, seconds
/// ahead) would send every shorter deadline queued behind it to the heap.
#[derive(Debug)]
pub(crate) struct TimerQueue<K: Ord> {
    heap: BinaryHeap<Reverse<(Instant, u64, K)>>,
    lanes: [VecDeque<(Instant, u64, K)>; LANES],
    seq: u64,
}

/// In-order lanes of a [`TimerQueue`].
const LANES: usize = 4;

/// Where the earliest entry of a [`TimerQueue`] waits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Source {
    Lane(usize),
    Heap,
}

impl<K: Ord> Default for TimerQueue<K> {
    fn default() -> Self {
        Self {
            heap: BinaryHeap::new(),
            lanes: std::array::from_fn(|_| VecDeque::new()),
            seq: 0,
        }
    }
}

impl<K: Ord> TimerQueue<K> {
    /// Schedules `key` at `at`: in the lane whose last deadline is the latest one not after
    /// `at`, else in an empty lane, else in the heap.
    pub fn schedule(&mut self, at: Instant, key: K) {
        self.seq = self.seq.wrapping_add(1);
        let mut fit: Option<(usize, Instant)> = None;
        let mut empty = None;
        for (i, lane) in self.lanes.iter().enumerate() {
            match lane.back() {
                Some(&(last, _, _)) if last <= at => {
                    if fit.is_none_or(|(_, best)| last > best) {
                        fit = Some((i, last));
                    }
                }
                Some(_) => {}
                None => {
                    empty.get_or_insert(i);
                }
            }
        }
        match fit.map(|(i, _)| i).or(empty) {
            Some(i) => self.lanes[i].push_back((at, self.seq, key)),
            None => self.heap.push(Reverse((at, self.seq, key))),
        }
    }

    /// (deadline, where) of the earliest entry: by deadline, then scheduling order.
    fn first(&self) -> Option<(Instant, Source)> {
        let mut first: Option<((Instant, u64), Source)> = self
            .heap
            .peek()
            .map(|Reverse((at, seq, _))| ((*at, *seq), Source::Heap));
        for (i, lane) in self.lanes.iter().enumerate() {
            if let Some(&(at, seq, _)) = lane.front()
                && first.is_none_or(|(best, _)| (at, seq) < best)
            {
                first = Some(((at, seq), Source::Lane(i)));
            }
        }
        first.map(|((at, _), source)| (at, source))
    }

    /// Earliest deadline (maybe of a stale entry, which only costs a wakeup).
    pub fn next_deadline(&self) -> Option<Instant> {
        self.first().map(|(at, _)| at)
    }

    /// Pops one key whose deadline is at or before `now`.
    pub fn pop_due(&mut self, now: Instant) -> Option<(Instant, K)> {
        let (at, source) = self.first()?;
        if at > now {
            return None;
        }
        match source {
            Source::Lane(i) => self.lanes[i].pop_front().map(|(at, _, k)| (at, k)),
            Source::Heap => self.heap.pop().map(|Reverse((at, _, k))| (at, k)),
        }
    }

    /// Number of queued entries, stale ones included.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.heap.len() + self.lanes.iter().map(VecDeque::len).sum::<usize>()
    }

    /// Entries waiting in the heap (not in a lane).
    #[cfg(test)]
    pub fn in_heap(&self) -> usize {
        self.heap.len()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "test code")]
mod tests {
    use super::*;

    #[test]
    fn derived_times_match_rfc_7252() {
        let p = TransmissionParams::default();
        assert_eq!(p.max_transmit_span(), Duration::from_secs(45));
        assert_eq!(p.exchange_lifetime(), Duration::from_secs(247));
        assert_eq!(p.non_lifetime(), Duration::from_secs(145));
    }

    #[test]
    fn backoff_doubles_and_gives_up_after_max_retransmit() {
        let p = TransmissionParams::default();
        let mut rng = make_rng(Some(7));
        let t0 = Instant::now();
        for _ in 0..50 {
            let r = Retransmit::start(t0, &p, &mut rng);
            assert!(r.timeout >= Duration::from_secs(2) && r.timeout <= Duration::from_secs(3));
        }
        let mut r = Retransmit::start(t0, &p, &mut rng);
        let first = r.timeout;
        for i in 1..=4u32 {
            let now = r.deadline;
            assert!(r.on_expiry(now, &p));
            assert_eq!(r.timeout, first * 2u32.pow(i));
        }
        let now = r.deadline;
        assert!(
            !r.on_expiry(now, &p),
            "gives up after the 4th retransmission times out"
        );
        assert_eq!(now - t0, first * 31);
    }

    #[test]
    fn timer_queue_pops_in_order() {
        let t0 = Instant::now();
        let mut q = TimerQueue::default();
        q.schedule(t0 + Duration::from_secs(3), 3);
        q.schedule(t0 + Duration::from_secs(1), 1);
        q.schedule(t0 + Duration::from_secs(2), 2);
        assert_eq!(q.next_deadline(), Some(t0 + Duration::from_secs(1)));
        assert_eq!(q.pop_due(t0), None);
        assert_eq!(q.pop_due(t0 + Duration::from_secs(2)).map(|x| x.1), Some(1));
        assert_eq!(q.pop_due(t0 + Duration::from_secs(2)).map(|x| x.1), Some(2));
        assert_eq!(q.pop_due(t0 + Duration::from_secs(2)), None);
        assert_eq!(q.len(), 1);
    }

    /// A long timer (the housekeeping sweep, seconds ahead) queued before a stream of shorter
    /// fixed delays (every request's ACK delay) leaves them in a lane of their own: none goes to
    /// the heap, and they all pop before it, in order.
    #[test]
    fn a_long_timer_does_not_send_shorter_ones_to_the_heap() {
        let t0 = Instant::now();
        let mut q = TimerQueue::default();
        q.schedule(t0 + Duration::from_secs(5), u32::MAX);
        for i in 0..10_000u32 {
            q.schedule(
                t0 + Duration::from_micros(u64::from(i) * 100) + Duration::from_secs(1),
                i,
            );
        }
        assert_eq!(q.in_heap(), 0, "shorter in-order deadlines kept in a lane");
        let mut popped = Vec::new();
        while let Some((_, k)) = q.pop_due(t0 + Duration::from_secs(10)) {
            popped.push(k);
        }
        let mut expected: Vec<u32> = (0..10_000).collect();
        expected.push(u32::MAX);
        assert_eq!(popped, expected);
    }

    /// Deadlines in order and out of order, with ties, pop as one sorted list would: at each
    /// look, everything due and nothing else, by deadline, then in scheduling order.
    #[test]
    fn timer_queue_matches_a_sorted_list() {
        let t0 = Instant::now();
        let mut rng = make_rng(Some(11));
        let mut q = TimerQueue::default();
        let mut expected = Vec::new();
        let mut popped = Vec::new();
        let mut now = t0;
        let drain = |q: &mut TimerQueue<u32>, now: Instant, popped: &mut Vec<_>| {
            let mut this = Vec::new();
            while let Some((at, i)) = q.pop_due(now) {
                assert!(at <= now);
                this.push((at, i));
            }
            assert!(this.windows(2).all(|w| w[0] <= w[1]), "popped out of order");
            assert!(
                q.next_deadline().is_none_or(|d| d > now),
                "something due was left"
            );
            popped.extend(this);
        };
        for i in 0..5_000u32 {
            // Mostly a fixed delay after a clock that moves on, sometimes a random one.
            let at = if rng.random_bool(0.7) {
                now + Duration::from_millis(100)
            } else {
                now + Duration::from_millis(rng.random_range(0..300))
            };
            q.schedule(at, i);
            expected.push((at, i));
            now += Duration::from_millis(rng.random_range(0..3));
            if i % 7 == 0 {
                drain(&mut q, now, &mut popped);
            }
        }
        drain(&mut q, now + Duration::from_secs(1), &mut popped);
        assert_eq!(q.len(), 0);
        popped.sort();
        expected.sort();
        assert_eq!(popped, expected, "every entry popped once");
    }
}
