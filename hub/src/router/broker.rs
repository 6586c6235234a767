//! The broker: subscriptions and publication.
//!
//! One subscription per (topic pattern, match policy), shared by all its subscribers, so a
//! publication builds one EVENT per matching subscription and every subscriber of that
//! subscription gets the same [`Outgoing`] (encoded once per serializer).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::SystemTime;

use super::outbound::{Outgoing, SessionHandle};
use super::patterns::PatternIndex;
use crate::wamp::message::opt_bool;
use crate::wamp::{Dict, Id, MatchPolicy, Message, Payload, Value, ids};

/// A subscription and who is subscribed.
#[derive(Debug)]
pub struct Subscription {
    pub id: Id,
    pub uri: String,
    pub policy: MatchPolicy,
    pub created: SystemTime,
    pub subscribers: Vec<Arc<SessionHandle>>,
}

/// All subscriptions of one realm.
#[derive(Debug, Default)]
pub struct Broker {
    index: PatternIndex<Subscription>,
    by_id: HashMap<Id, (String, MatchPolicy)>,
}

/// What [`Broker::subscribe`] did.
#[derive(Debug, PartialEq, Eq)]
pub struct Subscribed {
    pub id: Id,
    /// A new subscription was created (rather than joined).
    pub created: bool,
}

/// Filters from PUBLISH options that decide which subscribers receive an event.
#[derive(Debug, Default)]
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
    /// many sessions it was queued to.
    pub fn publish(
        &self,
        publisher: &SessionHandle,
        topic: &str,
        audience: &Audience,
        disclose: bool,
        payload: &Payload,
    ) -> (Id, usize) {
        let publication = ids::random_id();
        let mut delivered = 0;
        self.index.for_each_match(topic, |sub| {
            let mut event: Option<Outgoing> = None;
            for s in &sub.subscribers {
                if !audience.admits(publisher.id, s) {
                    continue;
                }
                let ev = event.get_or_insert_with(|| {
                    Outgoing::new(Message::Event {
                        subscription: sub.id,
                        publication,
                        details: event_details(sub, topic, publisher, disclose),
                        payload: payload.clone(),
                    })
                });
                if s.send_event(ev.clone()) {
                    delivered += 1;
                }
            }
        });
        (publication, delivered)
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

fn event_details(
    sub: &Subscription,
    topic: &str,
    publisher: &SessionHandle,
    disclose: bool,
) -> Dict {
    let mut d = Dict::new();
    if sub.policy != MatchPolicy::Exact {
        d.insert("topic".into(), Value::from(topic));
    }
    if disclose {
        d.insert("publisher".into(), Value::from(publisher.id));
        d.insert(
            "publisher_authid".into(),
            Value::from(publisher.auth.authid.as_str()),
        );
        d.insert(
            "publisher_authrole".into(),
            Value::from(publisher.auth.authrole.as_str()),
        );
    }
    d
}
