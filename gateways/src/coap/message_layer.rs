//! The message layer both CoAP engines (client and server) are built on (RFC 7252 §4): message
//! IDs, decoding datagrams (a malformed Confirmable gets a Reset), duplicate detection, the timer
//! queue with its housekeeping sweep, retransmission of Confirmable messages, and the queues of
//! datagrams to send and events for the application. The engines add the request/response
//! layer on top.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use coap_lite::Packet;
use rand::rngs::StdRng;
use tracing::{debug, trace};

use super::dedup::{DedupCache, DedupLimits, Seen};
use super::error::DecodeError;
use super::message;
use super::transmission::{
    MessageIds, Retransmit, TimerQueue, TransmissionParams, Transmit, make_rng,
};

/// What the duplicate cache knew of a received message (RFC 7252 §4.5).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Duplicate {
    /// Not seen before: process it.
    New,
    /// Seen and answered: the cached reply was sent again.
    Replayed,
    /// Seen, and its answer is still being decided.
    Pending,
    /// Seen and deliberately not answered.
    Dropped,
}

/// The message layer of one endpoint; `T` is the engine's timer key, `E` its event type.
pub(crate) struct MessageLayer<T: Ord, E> {
    /// The endpoint's randomness (message IDs, tokens, retransmission jitter).
    pub rng: StdRng,
    mids: MessageIds,
    /// Recently seen (peer, message ID) pairs and the replies sent to them.
    pub dedup: DedupCache,
    /// The engine's timers.
    pub timers: TimerQueue<T>,
    /// The timer key of the housekeeping sweep, and how often it runs.
    housekeeping: (T, Duration),
    housekeeping_at: Option<Instant>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<E>,
}

impl<T: Ord + Copy, E> MessageLayer<T, E> {
    /// A layer seeded from `rng_seed` (random when `None`); `housekeeping` is the engine's timer
    /// key for the periodic sweep of expired entries, and its interval.
    pub fn new(rng_seed: Option<u64>, dedup: DedupLimits, housekeeping: (T, Duration)) -> Self {
        let mut rng = make_rng(rng_seed);
        let mids = MessageIds::new(&mut rng);
        Self {
            rng,
            mids,
            dedup: DedupCache::new(dedup),
            timers: TimerQueue::default(),
            housekeeping,
            housekeeping_at: None,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
        }
    }

    /// Next datagram to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// Next event for the application.
    pub fn poll_event(&mut self) -> Option<E> {
        self.events.pop_front()
    }

    /// When the engine's `handle_timeout` should be called next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.next_deadline()
    }

    /// Queues a datagram for `peer`.
    pub fn send(&mut self, peer: SocketAddr, bytes: Bytes) {
        self.transmits.push_back(Transmit { peer, bytes });
    }

    /// Queues an event for the application.
    pub fn emit(&mut self, event: E) {
        self.events.push_back(event);
    }

    /// Decodes a received datagram. A malformed one is logged and dropped (`None`), and answered
    /// with a Reset when its header says Confirmable.
    pub fn decode(&mut self, peer: SocketAddr, bytes: &[u8]) -> Option<Packet> {
        match message::decode(bytes) {
            Ok(p) => Some(p),
            Err(DecodeError::Malformed { header, reason }) => {
                debug!(%peer, reason, "malformed CoAP message");
                if header.confirmable {
                    self.send(peer, message::reset(header.message_id));
                }
                None
            }
            Err(e) => {
                debug!(%peer, error = %e, "undecodable datagram dropped");
                None
            }
        }
    }

    /// Checks (`peer`, `mid`) against the duplicate cache; a duplicate whose reply is cached gets
    /// that reply again.
    pub fn check_duplicate(&mut self, now: Instant, peer: SocketAddr, mid: u16) -> Duplicate {
        let reply = match self.dedup.get(now, peer, mid) {
            None => return Duplicate::New,
            Some(Seen::Pending) => return Duplicate::Pending,
            Some(Seen::Dropped) => return Duplicate::Dropped,
            Some(Seen::Reply(bytes)) => bytes.clone(),
        };
        self.send(peer, reply);
        Duplicate::Replayed
    }

    /// A fresh message ID for `peer`, skipping (a few times) IDs for which `in_use` holds.
    pub fn alloc_mid(
        &mut self,
        peer: SocketAddr,
        in_use: impl Fn(&(SocketAddr, u16)) -> bool,
    ) -> u16 {
        let mut mid = self.mids.next();
        for _ in 0..16 {
            if !in_use(&(peer, mid)) {
                break;
            }
            mid = self.mids.next();
        }
        mid
    }

    /// Arms the housekeeping timer unless it is armed.
    pub fn ensure_housekeeping(&mut self, now: Instant) {
        if self.housekeeping_at.is_none() {
            let (timer, interval) = self.housekeeping;
            let at = now + interval;
            self.housekeeping_at = Some(at);
            self.timers.schedule(at, timer);
        }
    }

    /// The housekeeping timer fired: expires the duplicate cache and re-arms the timer while it,
    /// or something of the engine's (`engine_has_more`), still holds entries.
    pub fn on_housekeeping(&mut self, now: Instant, engine_has_more: bool) {
        self.housekeeping_at = None;
        self.dedup.expire(now);
        if self.dedup.len() > 0 || engine_has_more {
            self.ensure_housekeeping(now);
        }
    }

    /// Starts the retransmission state of a Confirmable message sent at `now`.
    pub fn start_retransmit(&mut self, now: Instant, params: &TransmissionParams) -> Retransmit {
        Retransmit::start(now, params, &mut self.rng)
    }

    /// The retransmission timer `timer` of the Confirmable `bytes` to `peer` expired: sends it
    /// again and re-arms the timer, or returns false when the retransmissions are spent.
    pub fn retransmit(
        &mut self,
        now: Instant,
        peer: SocketAddr,
        rt: &mut Retransmit,
        bytes: &Bytes,
        params: &TransmissionParams,
        timer: T,
    ) -> bool {
        if !rt.on_expiry(now, params) {
            return false;
        }
        self.timers.schedule(rt.deadline, timer);
        trace!(%peer, retransmissions = rt.retransmissions, "retransmitting CON");
        self.send(peer, bytes.clone());
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer() -> MessageLayer<u8, ()> {
        MessageLayer::new(Some(7), DedupLimits::default(), (0, Duration::from_secs(1)))
    }

    fn peer() -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 5683))
    }

    #[test]
    fn a_malformed_con_gets_a_reset_and_anything_else_nothing() {
        let mut l = layer();
        // CON (type 0), token length 9 (invalid), message ID 0x0102.
        assert!(l.decode(peer(), &[0x49, 0x01, 0x01, 0x02]).is_none());
        let reset = l.poll_transmit().expect("a Reset");
        assert_eq!(reset.bytes, message::reset(0x0102));
        // Too short to have a header: dropped silently.
        assert!(l.decode(peer(), &[0x40]).is_none());
        assert!(l.poll_transmit().is_none());
    }

    #[test]
    fn duplicates_replay_the_cached_reply() {
        let mut l = layer();
        let now = Instant::now();
        assert_eq!(l.check_duplicate(now, peer(), 9), Duplicate::New);
        let ack = message::empty_ack(9);
        l.dedup.insert(
            now,
            peer(),
            9,
            Seen::Reply(ack.clone()),
            Duration::from_secs(60),
        );
        assert_eq!(l.check_duplicate(now, peer(), 9), Duplicate::Replayed);
        assert_eq!(l.poll_transmit().map(|t| t.bytes), Some(ack));
        l.dedup
            .insert(now, peer(), 10, Seen::Pending, Duration::from_secs(60));
        assert_eq!(l.check_duplicate(now, peer(), 10), Duplicate::Pending);
        assert!(l.poll_transmit().is_none());
    }

    #[test]
    fn message_ids_skip_those_in_use() {
        let mut l = layer();
        let first = l.alloc_mid(peer(), |_| false);
        let mut probe = layer();
        let same = probe.alloc_mid(peer(), |_| false);
        assert_eq!(first, same, "seeded layers agree");
        let skipped = layer().alloc_mid(peer(), |&(_, mid)| mid == first);
        assert_ne!(skipped, first);
    }

    #[test]
    fn housekeeping_is_armed_once_and_rearmed_while_needed() {
        let mut l = layer();
        let now = Instant::now();
        l.ensure_housekeeping(now);
        l.ensure_housekeeping(now);
        assert_eq!(l.timers.len(), 1);
        let (_, t) = l.timers.pop_due(now + Duration::from_secs(1)).expect("due");
        assert_eq!(t, 0);
        l.on_housekeeping(now + Duration::from_secs(1), false);
        assert_eq!(l.poll_timeout(), None, "nothing left to sweep");
        l.on_housekeeping(now, true);
        assert!(l.poll_timeout().is_some());
    }
}
