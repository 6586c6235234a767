//! [`Commit`]: how a gateway learns that what its devices said is durable, so that it
//! acknowledges a device (an MQTT PUBACK, a CoAP ACK, a framed ack) only after the hub's
//! database holds the message.
//!
//! A gateway sends [`DeviceEvent::Barrier`](super::DeviceEvent::Barrier) after the events it
//! wants acknowledged, on the same channel, and awaits the [`CommitWait`]. Events are handled
//! and written in the order they were sent, so the answer covers every event sent before the
//! barrier. One database commit answers every barrier queued behind it (group commit).
//!
//! Where more than one store must hold the events (the things database and the uplink's queue),
//! the barrier is split with [`Commit::part`]: the gateway hears success once every part has
//! answered success, and the first failure at once.
//!
//! A barrier made by [`commit_for`] names the thing whose message it covers. The hub checks
//! every report against its thing type (one place for every gateway) and answers such a barrier
//! [`CommitError::Rejected`] when it refused a report, info or event of that thing since that
//! thing's previous barrier from the same gateway, so a device hears of the refusal in its
//! acknowledgement (MQTT 5: PUBACK 0x99).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

use crate::ThingId;

/// Why a barrier was not answered with success.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CommitError {
    /// The database refused the write (disk full, I/O error) even after retries.
    #[error("the hub could not write the message to its database")]
    WriteFailed,
    /// The hub dropped the barrier without answering (it is stopping).
    #[error("the hub stopped before the message was written")]
    Stopped,
    /// The hub refused what the device said (it does not fit the thing's type); nothing of it
    /// was written. Only a barrier that names its thing ([`commit_for`]) gets this.
    #[error("the hub refused the message: it does not fit the thing's type")]
    Rejected,
}

/// The hub's end of a barrier. Every part (the first, and each [`Commit::part`]) answers once;
/// the first answer of a part counts. Dropping every part unanswered answers
/// [`CommitError::Stopped`].
#[derive(Debug, Clone)]
pub struct Commit(Arc<Shared>);

#[derive(Debug)]
struct Shared {
    answer: Mutex<Option<Answer>>,
    /// Parts that have not answered success yet.
    pending: AtomicUsize,
    /// The thing whose message the barrier covers, if one.
    thing: Option<ThingId>,
}

/// Where a barrier's outcome goes.
type Answer = oneshot::Sender<Result<(), CommitError>>;

/// The gateway's end of a barrier.
#[derive(Debug)]
pub struct CommitWait(oneshot::Receiver<Result<(), CommitError>>);

/// A new barrier: the hub answers the [`Commit`], the gateway awaits the [`CommitWait`].
pub fn commit() -> (Commit, CommitWait) {
    commit_for(None)
}

/// A new barrier covering a message of `thing`: besides its durability, the answer says whether
/// the hub refused something `thing` said since its previous barrier ([`CommitError::Rejected`]).
pub fn commit_for(thing: Option<ThingId>) -> (Commit, CommitWait) {
    let (tx, rx) = oneshot::channel();
    let shared = Shared {
        answer: Mutex::new(Some(tx)),
        pending: AtomicUsize::new(1),
        thing,
    };
    (Commit(Arc::new(shared)), CommitWait(rx))
}

impl Commit {
    /// Answers this part of the barrier: a failure answers the gateway at once, success once
    /// every part has succeeded.
    pub fn answer(&self, outcome: Result<(), CommitError>) {
        if outcome.is_ok() {
            let before = self
                .0
                .pending
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
            if before != Ok(1) {
                return;
            }
        }
        let sender = self
            .0
            .answer
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(tx) = sender {
            let _ = tx.send(outcome);
        }
    }

    /// The thing whose message the barrier covers, if it names one.
    pub fn thing(&self) -> Option<&ThingId> {
        self.0.thing.as_ref()
    }

    /// A further part of this barrier, for another store that must also hold the events
    /// before the gateway acknowledges them.
    pub fn part(&self) -> Commit {
        self.0.pending.fetch_add(1, Ordering::AcqRel);
        Commit(self.0.clone())
    }
}

impl PartialEq for Commit {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl CommitWait {
    /// The answer if it has come, without waiting: `None` while the write is pending.
    pub fn try_answer(&mut self) -> Option<Result<(), CommitError>> {
        match self.0.try_recv() {
            Ok(outcome) => Some(outcome),
            Err(oneshot::error::TryRecvError::Empty) => None,
            Err(oneshot::error::TryRecvError::Closed) => Some(Err(CommitError::Stopped)),
        }
    }
}

impl std::future::Future for CommitWait {
    type Output = Result<(), CommitError>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        std::pin::Pin::new(&mut self.0)
            .poll(cx)
            .map(|r| r.unwrap_or(Err(CommitError::Stopped)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_reaches_the_waiter_and_a_dropped_barrier_says_stopped() {
        let (c, mut w) = commit();
        assert_eq!(w.try_answer(), None);
        let c2 = c.clone();
        drop(c);
        assert_eq!(w.try_answer(), None, "a clone still holds it");
        c2.answer(Ok(()));
        c2.answer(Err(CommitError::WriteFailed));
        assert_eq!(w.try_answer(), Some(Ok(())));

        let (c, mut w) = commit();
        drop(c);
        assert_eq!(w.try_answer(), Some(Err(CommitError::Stopped)));
    }

    #[test]
    fn a_split_barrier_succeeds_when_every_part_has_and_fails_at_the_first_failure() {
        let (c, mut w) = commit();
        let uplink = c.part();
        c.answer(Ok(()));
        assert_eq!(w.try_answer(), None, "the uplink's part is pending");
        uplink.answer(Ok(()));
        assert_eq!(w.try_answer(), Some(Ok(())));

        let (c, mut w) = commit();
        let uplink = c.part();
        uplink.answer(Err(CommitError::WriteFailed));
        assert_eq!(w.try_answer(), Some(Err(CommitError::WriteFailed)));
        c.answer(Ok(()));

        let (c, mut w) = commit();
        let uplink = c.part();
        c.answer(Ok(()));
        drop((c, uplink));
        assert_eq!(
            w.try_answer(),
            Some(Err(CommitError::Stopped)),
            "a part never answered"
        );
    }
}
