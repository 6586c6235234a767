//! Id generation for the three scopes of the spec.
//!
//! Global ids (sessions, publications) are drawn uniformly from [1, 2^53] so they are not guessable.
//! Router ids (subscriptions, registrations) come from a counter. Session-scope request ids count up
//! from 1 and wrap to 1 after 2^53.

use std::sync::atomic::{AtomicU64, Ordering};

use super::message::{Id, MAX_ID};

/// A uniformly random id in [1, 2^53].
pub fn random_id() -> Id {
    rand::random_range(1..=MAX_ID)
}

/// A thread-safe sequence for router-scope ids.
#[derive(Debug)]
pub struct IdSequence(AtomicU64);

impl Default for IdSequence {
    fn default() -> Self {
        IdSequence(AtomicU64::new(1))
    }
}

impl IdSequence {
    pub fn next(&self) -> Id {
        loop {
            let id = self.0.fetch_add(1, Ordering::Relaxed);
            if (1..=MAX_ID).contains(&id) {
                return id;
            }
            // Wrapped past 2^53: restart at 1. Racing threads may both reset; both then retry.
            let _ = self
                .0
                .compare_exchange(id + 1, 1, Ordering::Relaxed, Ordering::Relaxed);
        }
    }
}

/// A single-owner counter for session-scope request ids.
#[derive(Debug, Default, Clone)]
pub struct RequestIds(u64);

impl RequestIds {
    /// The next request id.
    pub fn next_id(&mut self) -> Id {
        self.0 = if self.0 >= MAX_ID { 1 } else { self.0 + 1 };
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_start_at_one_and_wrap() {
        let mut r = RequestIds::default();
        assert_eq!(r.next_id(), 1);
        assert_eq!(r.next_id(), 2);
        let mut r = RequestIds(MAX_ID - 1);
        assert_eq!(r.next_id(), MAX_ID);
        assert_eq!(r.next_id(), 1);
    }

    #[test]
    fn random_ids_are_in_range() {
        for _ in 0..1000 {
            let id = random_id();
            assert!((1..=MAX_ID).contains(&id));
        }
    }

    #[test]
    fn sequence_counts_up() {
        let s = IdSequence::default();
        assert_eq!(s.next(), 1);
        assert_eq!(s.next(), 2);
    }
}
