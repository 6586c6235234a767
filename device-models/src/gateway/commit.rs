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
//! A gateway that sends several messages' events in one [`EventBatch`](super::EventBatch) (the
//! MQTT gateway: what one read of a connection brought) covers them with one barrier made by
//! [`group`], and waits for each message apart ([`CommitGroup::member`]). The hub checks every
//! report against its thing type (one place for every gateway) and marks a covered message
//! whose report, info, event or action reply it refused ([`Commit::refuse`]): that message's
//! wait says [`CommitError::Rejected`], so its device hears of the refusal in its
//! acknowledgement (MQTT 5: PUBACK 0x99), while the others of the batch are acknowledged.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

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
    /// was written. Only a member of a [`group`] whose message the hub refused gets this.
    #[error("the hub refused the message: it does not fit the thing's type")]
    Rejected,
}

/// The hub's end of a barrier. Every part (the first, and each [`Commit::part`]) answers once;
/// the first answer of a part counts. A part dropped unanswered answers
/// [`CommitError::Stopped`]. Clones are the same part.
#[derive(Debug, Clone)]
pub struct Commit(Arc<Part>);

/// One part of a barrier: answers once, or says [`CommitError::Stopped`] when dropped without.
#[derive(Debug)]
struct Part {
    shared: Arc<Shared>,
    answered: AtomicBool,
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    /// Parts that have not answered success yet.
    pending: AtomicUsize,
}

#[derive(Debug, Default)]
struct State {
    /// The barrier's answer, once every part succeeded or one failed.
    outcome: Option<Result<(), CommitError>>,
    /// Members of a group whose message the hub refused, by ordinal.
    refused: Vec<u32>,
    /// The task waiting for the answer (the waits of one barrier are awaited by one task).
    waker: Option<Waker>,
}

impl Shared {
    fn new() -> Arc<Shared> {
        Arc::new(Shared {
            state: Mutex::new(State::default()),
            pending: AtomicUsize::new(1),
        })
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sets the outcome unless one is set, and wakes the waiter.
    fn settle(&self, outcome: Result<(), CommitError>) {
        let waker = {
            let mut state = self.state();
            if state.outcome.is_some() {
                return;
            }
            state.outcome = Some(outcome);
            state.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

impl Drop for Part {
    fn drop(&mut self) {
        if !self.answered.load(Ordering::Acquire) {
            self.shared.settle(Err(CommitError::Stopped));
        }
    }
}

/// The gateway's end of a barrier: the whole barrier's answer, or one member's of a group.
#[derive(Debug)]
pub struct CommitWait {
    shared: Arc<Shared>,
    /// The member's ordinal, for a wait made by [`CommitGroup::member`].
    member: Option<u32>,
}

/// A new barrier: the hub answers the [`Commit`], the gateway awaits the [`CommitWait`].
pub fn commit() -> (Commit, CommitWait) {
    let shared = Shared::new();
    let wait = CommitWait {
        shared: shared.clone(),
        member: None,
    };
    (Commit::first(shared), wait)
}

/// A new barrier covering several messages, each awaited apart: the gateway takes a
/// [`CommitGroup::member`] per message it covers, in order, and sends the [`Commit`] after all
/// their events.
pub fn group() -> (Commit, CommitGroup) {
    let shared = Shared::new();
    let group = CommitGroup {
        shared: shared.clone(),
        members: 0,
    };
    (Commit::first(shared), group)
}

/// The gateway's end of a barrier made by [`group`], handing out one wait per covered message.
#[derive(Debug)]
pub struct CommitGroup {
    shared: Arc<Shared>,
    members: u32,
}

impl CommitGroup {
    /// The wait of the next covered message; its ordinal is the number of members before it.
    pub fn member(&mut self) -> CommitWait {
        let member = self.members;
        self.members = self.members.saturating_add(1);
        CommitWait {
            shared: self.shared.clone(),
            member: Some(member),
        }
    }
}

impl Commit {
    fn first(shared: Arc<Shared>) -> Commit {
        Commit(Arc::new(Part {
            shared,
            answered: AtomicBool::new(false),
        }))
    }

    /// Answers this part of the barrier: a failure answers the gateway at once, success once
    /// every part has succeeded.
    pub fn answer(&self, outcome: Result<(), CommitError>) {
        if self.0.answered.swap(true, Ordering::AcqRel) {
            return;
        }
        let shared = &self.0.shared;
        if outcome.is_ok() {
            let before = shared
                .pending
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
            if before != Ok(1) {
                return;
            }
        }
        shared.settle(outcome);
    }

    /// Marks member `ordinal` of a group as refused by the hub: its wait says
    /// [`CommitError::Rejected`] whatever the barrier's answer. Done before the answer.
    pub fn refuse(&self, ordinal: u32) {
        self.0.shared.state().refused.push(ordinal);
    }

    /// A further part of this barrier, for another store that must also hold the events
    /// before the gateway acknowledges them.
    pub fn part(&self) -> Commit {
        self.0.shared.pending.fetch_add(1, Ordering::AcqRel);
        Commit::first(self.0.shared.clone())
    }
}

impl PartialEq for Commit {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl CommitWait {
    /// A wait already answered `outcome`: for an acknowledgement with no commit of its own that
    /// must still go out behind others waiting for theirs.
    pub fn ready(outcome: Result<(), CommitError>) -> CommitWait {
        let shared = Shared::new();
        shared.state().outcome = Some(outcome);
        CommitWait {
            shared,
            member: None,
        }
    }

    /// The answer if it has come, without waiting: `None` while the write is pending.
    pub fn try_answer(&mut self) -> Option<Result<(), CommitError>> {
        let state = self.shared.state();
        let outcome = state.outcome?;
        Some(self.verdict(&state, outcome))
    }

    /// This wait's answer from the barrier's: a refused member is rejected, unless the write
    /// failed (then the device is to send it again).
    fn verdict(&self, state: &State, outcome: Result<(), CommitError>) -> Result<(), CommitError> {
        match (outcome, self.member) {
            (Ok(()), Some(m)) if state.refused.contains(&m) => Err(CommitError::Rejected),
            (outcome, _) => outcome,
        }
    }
}

impl std::future::Future for CommitWait {
    type Output = Result<(), CommitError>;

    fn poll(self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut state = self.shared.state();
        match state.outcome {
            Some(outcome) => Poll::Ready(self.verdict(&state, outcome)),
            None => {
                match &mut state.waker {
                    Some(w) if w.will_wake(cx.waker()) => {}
                    slot => *slot = Some(cx.waker().clone()),
                }
                Poll::Pending
            }
        }
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

        let (c, mut w) = commit();
        let uplink = c.part();
        c.answer(Ok(()));
        c.answer(Ok(()));
        assert_eq!(
            w.try_answer(),
            None,
            "a part's second answer does not stand in for another part's"
        );
        uplink.answer(Ok(()));
        assert_eq!(w.try_answer(), Some(Ok(())));
    }

    #[test]
    fn a_group_member_hears_its_own_refusal_and_the_barrier_s_failure() {
        let (c, mut g) = group();
        let mut waits: Vec<CommitWait> = (0..4).map(|_| g.member()).collect();
        c.refuse(1);
        c.refuse(3);
        assert!(waits.iter_mut().all(|w| w.try_answer().is_none()));
        c.answer(Ok(()));
        let answers: Vec<_> = waits.iter_mut().map(|w| w.try_answer()).collect();
        assert_eq!(
            answers,
            [
                Some(Ok(())),
                Some(Err(CommitError::Rejected)),
                Some(Ok(())),
                Some(Err(CommitError::Rejected)),
            ]
        );

        // A failed write fails every member, the refused too: nothing of the batch is kept,
        // and a device that sends again is checked again.
        let (c, mut g) = group();
        let (mut a, mut b) = (g.member(), g.member());
        c.refuse(0);
        c.answer(Err(CommitError::WriteFailed));
        assert_eq!(a.try_answer(), Some(Err(CommitError::WriteFailed)));
        assert_eq!(b.try_answer(), Some(Err(CommitError::WriteFailed)));
    }

    #[tokio::test]
    async fn a_waiting_task_is_woken_by_the_answer() {
        let (c, mut g) = group();
        let (first, second) = (g.member(), g.member());
        let waiter = tokio::spawn(async move { (first.await, second.await) });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished(), "waiting before the answer");
        c.refuse(1);
        c.answer(Ok(()));
        let answers = tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
            .await
            .expect("woken by the answer")
            .unwrap();
        assert_eq!(answers, (Ok(()), Err(CommitError::Rejected)));
    }
}
