//! The broker: subscriptions and publication.
//!
//! One subscription per (topic pattern, match policy), shared by all its subscribers, so a
//! publication builds one EVENT per matching subscription and every subscriber of that
//! subscription gets the same [`Outgoing`] (encoded once per serializer).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use super::outbound::{Outgoing, SessionHandle};
use super::patterns::PatternIndex;
use super::realm::Traffic;
use crate::wamp::message::opt_bool;
use crate::wamp::{Dict, Id, MatchPolicy, Message, Payload, Value, ids};

/// Who published: a session, or the router itself (meta events, id 0).
#[derive(Clone, Debug)]
pub struct Publisher {
    pub session: Id,
    pub authid: String,
    pub authrole: String,
}

impl Publisher {
    pub fn of(h: &SessionHandle) -> Publisher {
        Publisher {
            session: h.id,
            authid: h.auth.authid.clone(),
            authrole: h.auth.authrole.clone(),
        }
    }

    /// The router, publishing meta events.
    pub fn router() -> Publisher {
        Publisher {
            session: 0,
            authid: "brume".into(),
            authrole: "router".into(),
        }
    }
}

/// A subscription and who is subscribed.
#[derive(Debug)]
pub struct Subscription {
    pub id: Id,
    pub uri: String,
    pub policy: MatchPolicy,
    pub created: SystemTime,
    pub subscribers: Vec<Arc<SessionHandle>>,
}

/// All subscriptions of one realm, the retained event of each topic, and the event history kept
/// for configured topic patterns.
#[derive(Debug, Default)]
pub struct Broker {
    index: PatternIndex<Subscription>,
    by_id: HashMap<Id, (String, MatchPolicy)>,
    /// Behind their own locks so publishing needs only the broker's read lock.
    retained: Mutex<HashMap<String, Retained>>,
    history: Vec<Mutex<History>>,
    traffic: Arc<Traffic>,
}

/// The last event published with `retain: true` on a topic, replayed to new subscribers that ask.
#[derive(Debug)]
pub struct Retained {
    pub publication: Id,
    pub publisher: Publisher,
    pub disclose: bool,
    pub audience: Audience,
    pub payload: Payload,
}

/// Which topics keep a history, and how many events each pattern keeps.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HistorySpec {
    pub uri: String,
    pub policy: MatchPolicy,
    pub limit: usize,
}

/// One stored event of a history.
#[derive(Clone, Debug)]
pub struct StoredEvent {
    pub timestamp: SystemTime,
    pub publication: Id,
    pub topic: String,
    pub payload: Payload,
}

/// A bounded history for one configured pattern.
#[derive(Debug)]
struct History {
    spec: HistorySpec,
    events: std::collections::VecDeque<StoredEvent>,
}

impl History {
    fn matches(&self, topic: &str) -> bool {
        pattern_matches(&self.spec.uri, self.spec.policy, topic)
    }
}

/// Whether a pattern with a policy matches a concrete URI.
pub fn pattern_matches(uri: &str, policy: MatchPolicy, topic: &str) -> bool {
    match policy {
        MatchPolicy::Exact => uri == topic,
        MatchPolicy::Prefix => topic.starts_with(uri),
        MatchPolicy::Wildcard => crate::wamp::uri::wildcard_matches(uri, topic),
    }
}

/// What [`Broker::subscribe`] did.
#[derive(Debug, PartialEq, Eq)]
pub struct Subscribed {
    pub id: Id,
    /// A new subscription was created (rather than joined).
    pub created: bool,
}

/// Filters from PUBLISH options that decide which subscribers receive an event.
#[derive(Debug, Default, Clone)]
pub struct Audience {
    pub exclude_me: bool,
    pub exclude: Vec<u64>,
    pub eligible: Option<Vec<u64>>,
    pub exclude_authid: Vec<String>,
    pub eligible_authid: Option<Vec<String>>,
    pub exclude_authrole: Vec<String>,
    pub eligible_authrole: Option<Vec<String>>,
}

impl Audience {
    /// Reads the filters from PUBLISH options; a malformed list is an error message.
    pub fn from_options(options: &Dict) -> Result<Audience, String> {
        fn ids(options: &Dict, key: &str) -> Result<Option<Vec<u64>>, String> {
            match options.get(key) {
                None => Ok(None),
                Some(Value::List(l)) => l
                    .iter()
                    .map(|v| {
                        v.as_u64()
                            .ok_or_else(|| format!("{key} must be a list of ids"))
                    })
                    .collect::<Result<Vec<_>, _>>()
                    .map(Some),
                Some(_) => Err(format!("{key} must be a list of ids")),
            }
        }
        fn strs(options: &Dict, key: &str) -> Result<Option<Vec<String>>, String> {
            match options.get(key) {
                None => Ok(None),
                Some(Value::List(l)) => l
                    .iter()
                    .map(|v| {
                        v.as_str()
                            .map(str::to_owned)
                            .ok_or_else(|| format!("{key} must be a list of strings"))
                    })
                    .collect::<Result<Vec<_>, _>>()
                    .map(Some),
                Some(_) => Err(format!("{key} must be a list of strings")),
            }
        }
        Ok(Audience {
            exclude_me: opt_bool(options, "exclude_me", true),
            exclude: ids(options, "exclude")?.unwrap_or_default(),
            eligible: ids(options, "eligible")?,
            exclude_authid: strs(options, "exclude_authid")?.unwrap_or_default(),
            eligible_authid: strs(options, "eligible_authid")?,
            exclude_authrole: strs(options, "exclude_authrole")?.unwrap_or_default(),
            eligible_authrole: strs(options, "eligible_authrole")?,
        })
    }

    /// Whether the filters name sessions by id (such events are not kept in a history, since the
    /// ids mean nothing to a later reader).
    pub fn names_sessions(&self) -> bool {
        !self.exclude.is_empty() || self.eligible.is_some()
    }

    /// Whether `s` should receive an event published by `publisher`. All filters must pass.
    pub fn admits(&self, publisher: Id, s: &SessionHandle) -> bool {
        if self.exclude_me && s.id == publisher {
            return false;
        }
        if self.exclude.contains(&s.id)
            || self.exclude_authid.contains(&s.auth.authid)
            || self.exclude_authrole.contains(&s.auth.authrole)
        {
            return false;
        }
        self.eligible.as_ref().is_none_or(|e| e.contains(&s.id))
            && self
                .eligible_authid
                .as_ref()
                .is_none_or(|e| e.contains(&s.auth.authid))
            && self
                .eligible_authrole
                .as_ref()
                .is_none_or(|e| e.contains(&s.auth.authrole))
    }
}

impl Broker {
    /// A broker keeping history for the given patterns.
    pub fn with_history(specs: &[HistorySpec]) -> Broker {
        Broker {
            history: specs
                .iter()
                .map(|spec| {
                    Mutex::new(History {
                        spec: spec.clone(),
                        events: Default::default(),
                    })
                })
                .collect(),
            ..Broker::default()
        }
    }

    /// The same broker, counting what it routes in `traffic`.
    pub(crate) fn with_traffic(mut self, traffic: Arc<Traffic>) -> Broker {
        self.traffic = traffic;
        self
    }

    /// Adds `session` to the subscription for (uri, policy), creating it if needed. Subscribing
    /// twice returns the same subscription.
    pub fn subscribe(
        &mut self,
        uri: &str,
        policy: MatchPolicy,
        session: &Arc<SessionHandle>,
        new_id: impl FnOnce() -> Id,
    ) -> Subscribed {
        if let Some(sub) = self.index.get_mut(uri, policy) {
            if !sub.subscribers.iter().any(|s| s.id == session.id) {
                sub.subscribers.push(session.clone());
            }
            return Subscribed {
                id: sub.id,
                created: false,
            };
        }
        let id = new_id();
        self.index.insert(
            uri,
            policy,
            Subscription {
                id,
                uri: uri.to_owned(),
                policy,
                created: SystemTime::now(),
                subscribers: vec![session.clone()],
            },
        );
        self.by_id.insert(id, (uri.to_owned(), policy));
        Subscribed { id, created: true }
    }

    /// Removes `session` from subscription `id`. Returns `None` if it was not subscribed, else
    /// whether the subscription was deleted because it became empty.
    pub fn unsubscribe(&mut self, id: Id, session: Id) -> Option<bool> {
        let (uri, policy) = self.by_id.get(&id)?.clone();
        let sub = self.index.get_mut(&uri, policy)?;
        let pos = sub.subscribers.iter().position(|s| s.id == session)?;
        sub.subscribers.swap_remove(pos);
        if sub.subscribers.is_empty() {
            self.index.remove(&uri, policy);
            self.by_id.remove(&id);
            return Some(true);
        }
        Some(false)
    }

    /// Removes a leaving session from every subscription; returns the ids of subscriptions it
    /// left and whether each was deleted.
    pub fn remove_session(&mut self, session: Id) -> Vec<(Id, bool)> {
        let ids: Vec<Id> = self
            .index
            .iter()
            .filter(|(_, _, s)| s.subscribers.iter().any(|h| h.id == session))
            .map(|(_, _, s)| s.id)
            .collect();
        ids.into_iter()
            .filter_map(|id| self.unsubscribe(id, session).map(|deleted| (id, deleted)))
            .collect()
    }

    /// Delivers a publication to every matching subscription; returns the publication id and how
    /// many sessions it was queued to. Retains and records it if asked and configured.
    pub fn publish(
        &self,
        publisher: &Publisher,
        topic: &str,
        audience: &Audience,
        disclose: bool,
        retain: bool,
        payload: &Payload,
    ) -> (Id, usize) {
        let publication = ids::random_id();
        let delivered = self.deliver(publisher, topic, audience, disclose, payload, publication);
        Traffic::add(&self.traffic.publications, 1);
        Traffic::add(&self.traffic.events, delivered as u64);
        if !audience.names_sessions() && !self.history.is_empty() {
            let now = SystemTime::now();
            for h in &self.history {
                let mut h = lock(h);
                if !h.matches(topic) {
                    continue;
                }
                if h.events.len() >= h.spec.limit {
                    h.events.pop_front();
                }
                h.events.push_back(StoredEvent {
                    timestamp: now,
                    publication,
                    topic: topic.to_owned(),
                    payload: payload.clone(),
                });
            }
        }
        if retain {
            lock(&self.retained).insert(
                topic.to_owned(),
                Retained {
                    publication,
                    publisher: publisher.clone(),
                    disclose,
                    audience: audience.clone(),
                    payload: payload.clone(),
                },
            );
        }
        (publication, delivered)
    }

    fn deliver(
        &self,
        publisher: &Publisher,
        topic: &str,
        audience: &Audience,
        disclose: bool,
        payload: &Payload,
        publication: Id,
    ) -> usize {
        let mut delivered = 0;
        self.index.for_each_match(topic, |sub| {
            let mut event: Option<Outgoing> = None;
            for s in &sub.subscribers {
                if !audience.admits(publisher.session, s) {
                    continue;
                }
                let ev = event.get_or_insert_with(|| {
                    Outgoing::new(Message::Event {
                        subscription: sub.id,
                        publication,
                        details: event_details(sub, topic, publisher, disclose, false),
                        payload: payload.clone(),
                    })
                });
                if s.send_event(ev.clone()) {
                    delivered += 1;
                }
            }
        });
        delivered
    }

    /// Sends `session` the retained events matching subscription `id` (for `get_retained`), marked
    /// `retained: true`, honouring each event's original audience.
    pub fn send_retained(&self, id: Id, session: &SessionHandle) {
        let Some(sub) = self.get(id) else { return };
        let retained = lock(&self.retained);
        let send = |topic: &str, r: &Retained| {
            if r.audience.admits(r.publisher.session, session) {
                session.send_event(Outgoing::new(Message::Event {
                    subscription: sub.id,
                    publication: r.publication,
                    details: event_details(sub, topic, &r.publisher, r.disclose, true),
                    payload: r.payload.clone(),
                }));
            }
        };
        match sub.policy {
            MatchPolicy::Exact => {
                if let Some(r) = retained.get(&sub.uri) {
                    send(&sub.uri, r);
                }
            }
            policy => {
                for (topic, r) in retained.iter() {
                    if pattern_matches(&sub.uri, policy, topic) {
                        send(topic, r);
                    }
                }
            }
        }
    }

    /// Stored events for subscription `id`, newest first, at most `limit`; `None` for an unknown
    /// subscription.
    pub fn events(&self, id: Id, limit: usize) -> Option<Vec<StoredEvent>> {
        let sub = self.get(id)?;
        let mut out: Vec<StoredEvent> = Vec::new();
        for h in &self.history {
            let h = lock(h);
            out.extend(
                h.events
                    .iter()
                    .filter(|e| pattern_matches(&sub.uri, sub.policy, &e.topic))
                    .cloned(),
            );
        }
        out.sort_by_key(|e| std::cmp::Reverse(e.timestamp));
        out.dedup_by_key(|e| e.publication);
        out.truncate(limit);
        Some(out)
    }

    /// Looks up a subscription by id.
    pub fn get(&self, id: Id) -> Option<&Subscription> {
        let (uri, policy) = self.by_id.get(&id)?;
        self.index.get(uri, *policy)
    }

    /// Every subscription.
    pub fn iter(&self) -> impl Iterator<Item = &Subscription> {
        self.index.iter().map(|(_, _, s)| s)
    }

    /// The subscription for exactly (uri, policy).
    pub fn lookup(&self, uri: &str, policy: MatchPolicy) -> Option<&Subscription> {
        self.index.get(uri, policy)
    }

    /// Every subscription matching a topic.
    pub fn matching(&self, topic: &str) -> Vec<&Subscription> {
        let mut out = Vec::new();
        self.index.for_each_match(topic, |s| out.push(s));
        out
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn event_details(
    sub: &Subscription,
    topic: &str,
    publisher: &Publisher,
    disclose: bool,
    retained: bool,
) -> Dict {
    let mut d = Dict::new();
    if sub.policy != MatchPolicy::Exact {
        d.insert("topic".into(), Value::from(topic));
    }
    if disclose {
        d.insert("publisher".into(), Value::from(publisher.session));
        d.insert(
            "publisher_authid".into(),
            Value::from(publisher.authid.as_str()),
        );
        d.insert(
            "publisher_authrole".into(),
            Value::from(publisher.authrole.as_str()),
        );
    }
    if retained {
        d.insert("retained".into(), Value::Bool(true));
    }
    d
}
