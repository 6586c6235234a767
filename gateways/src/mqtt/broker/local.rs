//! Thing devices served without a router link.
//!
//! A link into rumqttd's router costs about 30 KiB per connection (rumqttd preallocates a
//! 200-notification buffer, an incoming buffer of the same size and a 100-entry in-flight table
//! for every link; its constants cannot be configured). A thing device does not need one for
//! what it mostly does: it publishes its own telemetry (handed to the hooks, and to the router
//! only when some client subscribed to it) and subscribes to its own `things/<id>/...` topics,
//! where nobody but the gateway publishes (the ACL keeps every other client out). So a keyed
//! connection starts without a link, and:
//! - its filters inside `things/<key>/` are kept here ([`Local`]); what the gateway publishes to
//!   that thing ([`Outbound::to`](super::Outbound::to)) is delivered straight to the
//!   connection's bounded queue, and the retained messages of the thing's topics are kept here
//!   for a later SUBSCRIBE;
//! - a filter anywhere else (the open namespace, a binding's topics, a shared subscription) makes
//!   the connection take a link, and that SUBSCRIBE goes to the router as before;
//! - a persistent session (clean session off) keeps its local filters, and up to
//!   [`OFFLINE_QUEUE`] QoS 1 messages sent while it was away, until it comes back.
//!
//! Shared state: one short `Mutex` over the registry, never held across an `.await`; the
//! delivery itself goes into the device's bounded [`Mailbox`] without waiting (a device that does
//! not read its queue loses messages, and they are counted, rather than slowing the gateway).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::mqtt::stats::Stats;
use crate::mqtt::topics::{THINGS, filters_overlap, is_filter, parse_thing_topic};

/// Messages waiting in a connected device's queue; beyond it, new ones are dropped and counted.
pub(super) const QUEUE: usize = 64;

/// QoS 1 messages kept for a persistent session while its device is away; the oldest go first.
pub(super) const OFFLINE_QUEUE: usize = 100;

/// Retained topics kept per thing (its `desired`, `status`...); beyond it, new topics are not
/// kept (updates of kept ones are).
const RETAINED_PER_THING: usize = 32;

/// One message for a device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Delivery {
    pub topic: String,
    pub payload: Bytes,
    /// QoS 1 (true) or 0, already the lower of the message's and the subscription's.
    pub at_least_once: bool,
    /// Sent as a retained message (on SUBSCRIBE, from the retained store).
    pub retain: bool,
}

/// Whether `filter` names only topics of thing `key` (`things/<key>/...`).
pub(super) fn is_local_filter(key: &str, filter: &str) -> bool {
    if !is_filter(filter) {
        return false;
    }
    let mut levels = filter.split('/');
    levels.next() == Some(THINGS) && levels.next() == Some(key)
}

/// The thing whose namespace `topic` is in, if any.
pub(super) fn thing_key(topic: &str) -> Option<&str> {
    parse_thing_topic(topic).map(|(id, _)| id)
}

/// Whether `topic` is one of thing `key`'s own topics.
fn is_local_topic(key: &str, topic: &str) -> bool {
    is_local_filter(key, topic) && !topic.contains(['+', '#'])
}

/// The lower QoS of a message and a subscription, as "at least once".
fn granted(at_least_once: bool, filter_qos: u8) -> bool {
    at_least_once && filter_qos > 0
}

/// A connected device's queue of deliveries: bounded by [`QUEUE`], and holding an allocation
/// only while messages wait in it (a tokio channel would allocate its first block of slots for
/// every device at once, most of which never get a message).
#[derive(Debug, Default)]
pub(super) struct Mailbox {
    queue: Mutex<VecDeque<Delivery>>,
    ready: Notify,
}

impl Mailbox {
    fn queue(&self) -> std::sync::MutexGuard<'_, VecDeque<Delivery>> {
        // A push or a pop leaves the queue consistent, so a poisoned lock is still usable.
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds `delivery` and wakes the connection; `false` (and nothing added) when the queue is
    /// full.
    pub fn offer(&self, delivery: Delivery) -> bool {
        {
            let mut queue = self.queue();
            if queue.len() >= QUEUE {
                return false;
            }
            queue.push_back(delivery);
        }
        self.ready.notify_one();
        true
    }

    /// The oldest delivery, if one waits.
    pub fn take(&self) -> Option<Delivery> {
        let mut queue = self.queue();
        let delivery = queue.pop_front();
        if queue.is_empty() && queue.capacity() > 0 {
            *queue = VecDeque::new();
        }
        delivery
    }

    /// The oldest delivery, once there is one.
    pub async fn next(&self) -> Delivery {
        loop {
            if let Some(delivery) = self.take() {
                return delivery;
            }
            // A delivery offered since `take` left a permit, so this returns at once.
            self.ready.notified().await;
        }
    }
}

/// One thing's local session.
#[derive(Debug, Default)]
struct Session {
    /// Filters inside the thing's namespace, with their granted QoS (0 or 1).
    filters: Vec<(String, u8)>,
    /// The connected device's queue, the token that ends its connection (a newer one takes
    /// over) and the connection's number; `None` while a persistent session's device is away.
    live: Option<(Arc<Mailbox>, CancellationToken, u64)>,
    /// Whether the session outlives its connection.
    persistent: bool,
    /// Whether a connection of this session took a router link (the router then holds a
    /// persistent session of its own, which the next connection must take up).
    linked: bool,
    /// QoS 1 messages for a persistent session whose device is away.
    offline: VecDeque<Delivery>,
}

/// What a connection gets when it registers.
#[derive(Debug)]
pub(super) struct Attached {
    /// Its queue.
    pub mailbox: Arc<Mailbox>,
    /// Cancelled when a newer connection of the same thing takes over.
    pub taken_over: CancellationToken,
    /// This connection's number, for [`Local::detach`].
    pub generation: u64,
    /// Whether a stored session was found (CONNACK's session present).
    pub session_present: bool,
    /// Messages kept while it was away, to send first.
    pub backlog: Vec<Delivery>,
    /// Whether an earlier persistent session of this thing took a router link: the connection
    /// takes one at once, so the router's session is resumed (or cleared).
    pub was_linked: bool,
}

/// The local sessions and the retained messages of thing topics.
#[derive(Debug, Default)]
pub(super) struct Local {
    inner: Mutex<Inner>,
    next_generation: AtomicU64,
    /// Counts messages not delivered (`deliveries_dropped`): the device's queue was full, or a
    /// persistent session's offline queue overflowed.
    stats: Arc<Stats>,
}

#[derive(Debug, Default)]
struct Inner {
    sessions: HashMap<String, Session>,
    /// Retained messages by thing key, then topic.
    retained: HashMap<String, HashMap<String, (Bytes, bool)>>,
}

impl Local {
    /// An empty registry counting into `stats`.
    pub fn new(stats: Arc<Stats>) -> Local {
        Local {
            stats,
            ..Local::default()
        }
    }

    fn dropped(&self) {
        self.stats
            .deliveries_dropped
            .fetch_add(1, Ordering::Relaxed);
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        // Every update leaves the maps consistent, so a poisoned lock is still usable.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers the connection of thing `key`, ending an older one of the same thing. A clean
    /// session starts empty; a persistent one takes what its predecessor left.
    pub fn attach(&self, key: &str, clean: bool) -> Attached {
        let mailbox = Arc::new(Mailbox::default());
        let token = CancellationToken::new();
        let generation = self.next_generation.fetch_add(1, Ordering::Relaxed);
        let mut inner = self.inner();
        let stored = inner.sessions.remove(key);
        if let Some(old) = &stored
            && let Some((_, old_token, _)) = &old.live
        {
            old_token.cancel();
        }
        let was_linked = stored.as_ref().is_some_and(|s| s.persistent && s.linked);
        let (session_present, mut session) = match stored {
            Some(s) if !clean && s.persistent => (true, s),
            _ => (false, Session::default()),
        };
        session.persistent = !clean;
        session.live = Some((mailbox.clone(), token.clone(), generation));
        let backlog = session.offline.drain(..).collect();
        inner.sessions.insert(key.to_owned(), session);
        Attached {
            mailbox,
            taken_over: token,
            generation,
            session_present,
            backlog,
            was_linked,
        }
    }

    /// Connection `generation` of `key` took a router link.
    pub fn set_linked(&self, key: &str, generation: u64) {
        let mut inner = self.inner();
        if let Some(session) = inner.sessions.get_mut(key)
            && session
                .live
                .as_ref()
                .is_some_and(|(_, _, g)| *g == generation)
        {
            session.linked = true;
        }
    }

    /// Connection `generation` of `key` ended: a clean session is forgotten, a persistent one
    /// waits for its device with `unacked` (its QoS 1 messages never acknowledged) first in
    /// line. A connection already taken over changes nothing.
    pub fn detach(&self, key: &str, generation: u64, unacked: Vec<Delivery>) {
        let mut inner = self.inner();
        let Some(session) = inner.sessions.get_mut(key) else {
            return;
        };
        let current = session
            .live
            .as_ref()
            .is_some_and(|(_, _, g)| *g == generation);
        if !current {
            return;
        }
        if session.persistent {
            session.live = None;
            for d in unacked.into_iter().rev() {
                session.offline.push_front(d);
            }
            while session.offline.len() > OFFLINE_QUEUE {
                session.offline.pop_back();
                self.dropped();
            }
        } else {
            inner.sessions.remove(key);
        }
    }

    /// Adds filters (each inside the thing's namespace, with its QoS) to `key`'s session and
    /// returns the retained messages they match, to send now.
    pub fn subscribe(&self, key: &str, filters: &[(String, u8)]) -> Vec<Delivery> {
        let mut inner = self.inner();
        let Some(session) = inner.sessions.get_mut(key) else {
            return Vec::new();
        };
        for (filter, qos) in filters {
            match session.filters.iter_mut().find(|(f, _)| f == filter) {
                Some(entry) => entry.1 = *qos,
                None => session.filters.push((filter.clone(), *qos)),
            }
        }
        let Some(retained) = inner.retained.get(key) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for (topic, (payload, at_least_once)) in retained {
            if let Some((_, qos)) = filters.iter().find(|(f, _)| filters_overlap(f, topic)) {
                out.push(Delivery {
                    topic: topic.clone(),
                    payload: payload.clone(),
                    at_least_once: granted(*at_least_once, *qos),
                    retain: true,
                });
            }
        }
        out
    }

    /// Removes filters from `key`'s session; returns which of them it had.
    pub fn unsubscribe(&self, key: &str, filters: &[String]) -> Vec<bool> {
        let mut inner = self.inner();
        let Some(session) = inner.sessions.get_mut(key) else {
            return vec![false; filters.len()];
        };
        filters
            .iter()
            .map(|filter| {
                let before = session.filters.len();
                session.filters.retain(|(f, _)| f != filter);
                session.filters.len() != before
            })
            .collect()
    }

    /// The highest QoS of `key`'s filters matching `topic`, if any.
    #[cfg(test)]
    pub fn matches(&self, key: &str, topic: &str) -> Option<u8> {
        let inner = self.inner();
        let session = inner.sessions.get(key)?;
        session
            .filters
            .iter()
            .filter(|(f, _)| filters_overlap(f, topic))
            .map(|(_, q)| *q)
            .max()
    }

    /// A message published to thing `key`'s topic `topic`: kept if retained (an empty payload
    /// clears it), and delivered to the thing's session if one of its filters matches.
    pub fn publish(
        &self,
        key: &str,
        topic: &str,
        payload: &Bytes,
        retain: bool,
        at_least_once: bool,
    ) {
        if !is_local_topic(key, topic) {
            return;
        }
        let mut inner = self.inner();
        if retain {
            let kept = inner.retained.entry(key.to_owned()).or_default();
            if payload.is_empty() {
                kept.remove(topic);
            } else if kept.len() < RETAINED_PER_THING || kept.contains_key(topic) {
                kept.insert(topic.to_owned(), (payload.clone(), at_least_once));
            }
            if kept.is_empty() {
                inner.retained.remove(key);
            }
        }
        let Some(session) = inner.sessions.get_mut(key) else {
            return;
        };
        let Some(qos) = session
            .filters
            .iter()
            .filter(|(f, _)| filters_overlap(f, topic))
            .map(|(_, q)| *q)
            .max()
        else {
            return;
        };
        let delivery = Delivery {
            topic: topic.to_owned(),
            payload: payload.clone(),
            at_least_once: granted(at_least_once, qos),
            retain: false,
        };
        if let Some((mailbox, _, _)) = &session.live {
            if !mailbox.offer(delivery) {
                self.dropped();
            }
        } else if delivery.at_least_once {
            if session.offline.len() >= OFFLINE_QUEUE {
                session.offline.pop_front();
                self.dropped();
            }
            session.offline.push_back(delivery);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    #[tokio::test]
    async fn mailbox_is_bounded_keeps_order_and_wakes_its_reader() {
        let mailbox = Arc::new(Mailbox::default());
        let delivery = |p: &str| Delivery {
            topic: "things/t1/desired".into(),
            payload: b(p),
            at_least_once: false,
            retain: false,
        };
        let reader = {
            let mailbox = mailbox.clone();
            tokio::spawn(async move { mailbox.next().await })
        };
        tokio::task::yield_now().await;
        assert!(mailbox.offer(delivery("first")));
        let got = tokio::time::timeout(std::time::Duration::from_secs(5), reader)
            .await
            .expect("the waiting reader is woken")
            .unwrap();
        assert_eq!(got.payload, b("first"));

        for i in 0..QUEUE {
            assert!(mailbox.offer(delivery(&i.to_string())), "{i}");
        }
        assert!(!mailbox.offer(delivery("over")), "full at QUEUE");
        for i in 0..QUEUE {
            assert_eq!(mailbox.take().unwrap().payload, b(&i.to_string()));
        }
        assert!(mailbox.take().is_none());
        assert_eq!(
            mailbox.queue().capacity(),
            0,
            "an empty mailbox holds no allocation"
        );
    }

    #[test]
    fn only_a_things_own_filters_are_local() {
        assert!(is_local_filter("t1", "things/t1/desired"));
        assert!(is_local_filter("t1", "things/t1/#"));
        assert!(is_local_filter("t1", "things/t1/actions/+"));
        assert!(!is_local_filter("t1", "things/t2/desired"));
        assert!(!is_local_filter("t1", "things/+/desired"));
        assert!(!is_local_filter("t1", "things/#"));
        assert!(!is_local_filter("t1", "cmnd/t1/POWER"));
        assert!(!is_local_filter("t1", "$share/g/things/t1/desired"));
        assert!(!is_local_filter("t1", "things/t1/#/x"));
    }

    #[test]
    fn a_things_messages_reach_its_filters_and_retained_ones_wait_for_a_subscribe() {
        let local = Local::default();
        let a = local.attach("t1", true);
        assert!(!a.session_present);
        local.publish("t1", "things/t1/desired", &b("{\"on\":true}"), true, true);
        assert!(a.mailbox.take().is_none(), "no filter yet");
        let retained = local.subscribe("t1", &[("things/t1/desired".into(), 1)]);
        assert_eq!(
            retained,
            [Delivery {
                topic: "things/t1/desired".into(),
                payload: b("{\"on\":true}"),
                at_least_once: true,
                retain: true,
            }]
        );
        local.subscribe("t1", &[("things/t1/actions/+".into(), 0)]);
        local.publish("t1", "things/t1/actions/toggle", &b("{}"), false, true);
        let got = a.mailbox.take().unwrap();
        assert_eq!(got.topic, "things/t1/actions/toggle");
        assert!(!got.at_least_once, "the subscription's QoS 0 wins");
        local.publish("t1", "things/t1/other", &b("x"), false, true);
        local.publish("t2", "things/t2/desired", &b("x"), false, true);
        local.publish("t1", "things/t2/desired", &b("x"), false, true);
        assert!(a.mailbox.take().is_none());
        // An empty retained message clears the stored one.
        local.publish("t1", "things/t1/desired", &Bytes::new(), true, true);
        assert_eq!(a.mailbox.take().unwrap().payload, Bytes::new());
        assert!(
            local
                .subscribe("t1", &[("things/t1/#".into(), 1)])
                .is_empty()
        );
        assert_eq!(
            local.unsubscribe("t1", &["things/t1/#".into(), "x".into()]),
            [true, false]
        );
    }

    #[test]
    fn a_newer_connection_takes_over_and_the_older_ones_end_changes_nothing() {
        let local = Local::default();
        let old = local.attach("t1", true);
        local.subscribe("t1", &[("things/t1/desired".into(), 1)]);
        let new = local.attach("t1", true);
        assert!(old.taken_over.is_cancelled());
        assert!(!new.taken_over.is_cancelled());
        local.detach("t1", old.generation, Vec::new());
        local.subscribe("t1", &[("things/t1/desired".into(), 1)]);
        local.publish("t1", "things/t1/desired", &b("1"), false, true);
        assert_eq!(new.mailbox.take().unwrap().payload, b("1"));
        local.detach("t1", new.generation, Vec::new());
        assert_eq!(
            local.matches("t1", "things/t1/desired"),
            None,
            "clean: forgotten"
        );
    }

    #[test]
    fn a_persistent_session_keeps_its_filters_and_what_came_while_away() {
        let local = Local::default();
        let first = local.attach("t1", false);
        local.subscribe("t1", &[("things/t1/actions/+".into(), 1)]);
        let unacked = Delivery {
            topic: "things/t1/actions/a".into(),
            payload: b("0"),
            at_least_once: true,
            retain: false,
        };
        local.detach("t1", first.generation, vec![unacked.clone()]);
        local.publish("t1", "things/t1/actions/b", &b("1"), false, true);
        local.publish("t1", "things/t1/actions/c", &b("2"), false, false);
        for i in 0..OFFLINE_QUEUE - 2 {
            local.publish("t1", "things/t1/actions/d", &b(&i.to_string()), false, true);
        }
        assert_eq!(
            local.stats.deliveries_dropped.load(Ordering::Relaxed),
            0,
            "QoS 0 is not kept"
        );
        local.publish("t1", "things/t1/actions/e", &b("e"), false, true);
        assert_eq!(
            local.stats.deliveries_dropped.load(Ordering::Relaxed),
            1,
            "the oldest goes"
        );
        let back = local.attach("t1", false);
        assert!(back.session_present);
        assert_eq!(back.backlog.len(), OFFLINE_QUEUE);
        assert_eq!(back.backlog[0].payload, b("1"));
        assert_eq!(back.backlog[OFFLINE_QUEUE - 1].payload, b("e"));
        assert_eq!(local.matches("t1", "things/t1/actions/x"), Some(1));
        let clean = local.attach("t1", true);
        assert!(!clean.session_present);
        assert_eq!(local.matches("t1", "things/t1/actions/x"), None);
    }
}
