//! The WAMP meta API: router-implemented procedures about sessions, registrations and
//! subscriptions (`wamp.session.*`, `wamp.registration.*`, `wamp.subscription.*`), testaments,
//! and the meta events the router publishes when they change.
//!
//! Meta procedures are answered inside the router (no callee session). Meta events are published
//! by the router (publisher id 0) after the routing step that caused them has released its locks.

use std::sync::Arc;
use std::time::SystemTime;

use super::broker::{Audience, Publisher, Subscription};
use super::dealer::{Refusal, Registration};
use super::outbound::{CloseRequest, SessionHandle, Testament, TestamentScope};
use super::realm::Realm;
use crate::wamp::{Dict, Id, List, MatchPolicy, Payload, Value, dict, uris};

/// Whether a procedure is one the router answers itself.
pub fn is_meta(procedure: &str) -> bool {
    procedure.starts_with("wamp.session.")
        || procedure.starts_with("wamp.registration.")
        || procedure.starts_with("wamp.subscription.")
}

/// A meta event to publish once the current routing step has released its locks.
#[derive(Debug)]
pub struct MetaEvent {
    pub topic: &'static str,
    pub args: List,
}

impl MetaEvent {
    fn new(topic: &'static str, args: List) -> Self {
        MetaEvent { topic, args }
    }

    pub fn on_join(h: &SessionHandle) -> Self {
        MetaEvent::new(
            "wamp.session.on_join",
            vec![Value::Dict(session_details(h))],
        )
    }

    pub fn on_leave(h: &SessionHandle) -> Self {
        MetaEvent::new(
            "wamp.session.on_leave",
            vec![
                Value::from(h.id),
                Value::from(h.auth.authid.as_str()),
                Value::from(h.auth.authrole.as_str()),
            ],
        )
    }

    pub fn subscription_created(session: Id, s: &Subscription) -> Self {
        MetaEvent::new(
            "wamp.subscription.on_create",
            vec![Value::from(session), Value::Dict(subscription_details(s))],
        )
    }

    pub fn registration_created(session: Id, r: &Registration) -> Self {
        MetaEvent::new(
            "wamp.registration.on_create",
            vec![Value::from(session), Value::Dict(registration_details(r))],
        )
    }

    /// `wamp.subscription.on_subscribe`, `on_unsubscribe`, `on_delete` and their registration
    /// twins: all carry (session, id).
    pub fn pair(topic: &'static str, session: Id, id: Id) -> Self {
        MetaEvent::new(topic, vec![Value::from(session), Value::from(id)])
    }

    /// `wamp.subscription.on_unsubscribe`, then `on_delete` when `deleted` (the session was the
    /// subscription's last subscriber).
    pub fn unsubscribed(
        session: Id,
        subscription: Id,
        deleted: bool,
    ) -> impl Iterator<Item = Self> {
        Self::left(
            "wamp.subscription.on_unsubscribe",
            "wamp.subscription.on_delete",
            session,
            subscription,
            deleted,
        )
    }

    /// `wamp.registration.on_unregister`, then `on_delete` when `deleted` (the session was the
    /// registration's last callee).
    pub fn unregistered(
        session: Id,
        registration: Id,
        deleted: bool,
    ) -> impl Iterator<Item = Self> {
        Self::left(
            "wamp.registration.on_unregister",
            "wamp.registration.on_delete",
            session,
            registration,
            deleted,
        )
    }

    fn left(
        leave: &'static str,
        delete: &'static str,
        session: Id,
        id: Id,
        deleted: bool,
    ) -> impl Iterator<Item = Self> {
        std::iter::once(Self::pair(leave, session, id))
            .chain(deleted.then(|| Self::pair(delete, session, id)))
    }
}

/// Publishes meta events into the realm.
pub fn publish(realm: &Realm, events: Vec<MetaEvent>) {
    if events.is_empty() {
        return;
    }
    let broker = realm.broker();
    let router = Publisher::router();
    for e in events {
        broker.publish(
            &router,
            e.topic,
            Audience::default(),
            false,
            false,
            &Payload::args(e.args),
        );
    }
}

/// Publishes a dying session's testaments, detached ones first.
pub fn publish_testaments(realm: &Realm, h: &SessionHandle) {
    let testaments = h.take_testaments();
    if testaments.is_empty() {
        return;
    }
    let broker = realm.broker();
    let publisher = Publisher::of(h);
    for t in testaments {
        let audience = Audience::from_options(&t.options).unwrap_or_default();
        let disclose = crate::wamp::message::opt_bool(&t.options, "disclose_me", false);
        let retain = crate::wamp::message::opt_bool(&t.options, "retain", false);
        broker.publish(&publisher, &t.topic, audience, disclose, retain, &t.payload);
    }
}

/// ISO 8601 UTC with milliseconds, as WAMP meta data uses for `created`.
pub fn iso8601(t: SystemTime) -> String {
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    device_models::rfc3339_from_ms(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn session_details(h: &SessionHandle) -> Dict {
    let mut transport = dict([("type", Value::from(h.transport.kind))]);
    if let Some(peer) = h.transport.peer {
        transport.insert("peer".into(), Value::from(format!("tcp4:{peer}")));
    }
    if let Some(ser) = h.transport.serializer {
        transport.insert("serializer".into(), Value::from(ser.subprotocol()));
    }
    dict([
        ("session", Value::from(h.id)),
        ("authid", Value::from(h.auth.authid.as_str())),
        ("authrole", Value::from(h.auth.authrole.as_str())),
        ("authmethod", Value::from(h.auth.authmethod.as_str())),
        ("authprovider", Value::from(h.auth.authprovider.as_str())),
        ("transport", Value::Dict(transport)),
    ])
}

fn subscription_details(s: &Subscription) -> Dict {
    dict([
        ("id", Value::from(s.id)),
        ("created", Value::from(iso8601(s.created))),
        ("uri", Value::from(s.uri.as_str())),
        ("match", Value::from(s.policy.as_str())),
    ])
}

fn registration_details(r: &Registration) -> Dict {
    dict([
        ("id", Value::from(r.id)),
        ("created", Value::from(iso8601(r.created))),
        ("uri", Value::from(r.uri.as_str())),
        ("match", Value::from(r.policy.as_str())),
        ("invoke", Value::from(r.invoke.as_str())),
    ])
}

/// Positional or keyword argument `i`/`key`.
fn arg<'a>(p: &'a Payload, i: usize, key: &str) -> Option<&'a Value> {
    p.arg(i).or_else(|| p.kwarg(key))
}

fn id_arg(p: &Payload, i: usize, key: &str) -> Result<Id, Refusal> {
    arg(p, i, key)
        .and_then(Value::as_u64)
        .ok_or_else(|| invalid(format!("argument {key} must be an id")))
}

fn str_arg<'a>(p: &'a Payload, i: usize, key: &str) -> Result<&'a str, Refusal> {
    arg(p, i, key)
        .and_then(Value::as_str)
        .ok_or_else(|| invalid(format!("argument {key} must be a string")))
}

fn invalid(message: String) -> Refusal {
    Refusal {
        error: uris::INVALID_ARGUMENT,
        message,
    }
}

fn refuse(error: &'static str, message: &str) -> Refusal {
    Refusal {
        error,
        message: message.to_owned(),
    }
}

fn ok(v: Value) -> Result<Payload, Refusal> {
    Ok(Payload::args(vec![v]))
}

fn ids(list: impl IntoIterator<Item = Id>) -> Value {
    Value::List(list.into_iter().map(Value::from).collect())
}

/// Answers a meta procedure call made by `me`.
pub fn call(
    realm: &Arc<Realm>,
    me: &Arc<SessionHandle>,
    procedure: &str,
    p: &Payload,
) -> Result<Payload, Refusal> {
    match procedure {
        "wamp.session.count" | "wamp.session.list" => {
            let roles: Option<Vec<&str>> = arg(p, 0, "filter_authroles")
                .and_then(Value::as_list)
                .map(|l| l.iter().filter_map(Value::as_str).collect());
            let sessions: Vec<Id> = realm
                .sessions()
                .iter()
                .filter(|s| {
                    roles
                        .as_ref()
                        .is_none_or(|r| r.contains(&s.auth.authrole.as_str()))
                })
                .map(|s| s.id)
                .collect();
            if procedure.ends_with("count") {
                ok(Value::from(sessions.len() as u64))
            } else {
                ok(ids(sessions))
            }
        }
        "wamp.session.get" => {
            let id = id_arg(p, 0, "session")?;
            let s = realm
                .session(id)
                .ok_or_else(|| refuse(uris::NO_SUCH_SESSION, "no such session"))?;
            ok(Value::Dict(session_details(&s)))
        }
        "wamp.session.kill" => {
            let id = id_arg(p, 0, "session")?;
            if id == me.id {
                return Err(invalid("a session cannot kill itself".into()));
            }
            let s = realm
                .session(id)
                .ok_or_else(|| refuse(uris::NO_SUCH_SESSION, "no such session"))?;
            if is_internal(&s) {
                return Err(refuse(
                    uris::NOT_AUTHORIZED,
                    "the hub's own services cannot be killed",
                ));
            }
            kill(&s, p);
            Ok(Payload::empty())
        }
        "wamp.session.kill_by_authid" | "wamp.session.kill_by_authrole" => {
            let by_id = procedure.ends_with("authid");
            let who = str_arg(p, 0, if by_id { "authid" } else { "authrole" })?;
            let mut killed = Vec::new();
            for s in realm.sessions() {
                let field = if by_id {
                    &s.auth.authid
                } else {
                    &s.auth.authrole
                };
                if s.id != me.id && !is_internal(&s) && field == who {
                    kill(&s, p);
                    killed.push(s.id);
                }
            }
            ok(ids(killed))
        }
        "wamp.session.kill_all" => {
            let mut n = 0u64;
            for s in realm.sessions() {
                if s.id != me.id && !is_internal(&s) {
                    kill(&s, p);
                    n += 1;
                }
            }
            ok(Value::from(n))
        }
        "wamp.session.add_testament" => {
            let topic = str_arg(p, 0, "topic")?;
            if !crate::wamp::uri::is_valid(topic, MatchPolicy::Exact, realm.config.strict_uris) {
                return Err(refuse(uris::INVALID_URI, "invalid testament topic"));
            }
            let args = match arg(p, 1, "args") {
                None | Some(Value::Null) => List::new(),
                Some(Value::List(l)) => l.clone(),
                Some(_) => return Err(invalid("args must be a list".into())),
            };
            let kwargs = match arg(p, 2, "kwargs") {
                None | Some(Value::Null) => Dict::new(),
                Some(Value::Dict(d)) => d.clone(),
                Some(_) => return Err(invalid("kwargs must be a dict".into())),
            };
            let options = match p.kwarg("publish_options") {
                None | Some(Value::Null) => Dict::new(),
                Some(Value::Dict(d)) => d.clone(),
                Some(_) => return Err(invalid("publish_options must be a dict".into())),
            };
            let scope = scope_arg(p)?;
            let added = me.add_testament(Testament {
                topic: topic.to_owned(),
                payload: Payload::new(args, kwargs),
                options,
                scope,
            });
            if !added {
                return Err(invalid(format!(
                    "at most {} testaments per session",
                    SessionHandle::MAX_TESTAMENTS
                )));
            }
            Ok(Payload::empty())
        }
        "wamp.session.flush_testaments" => {
            let scope = scope_arg(p)?;
            ok(Value::from(me.flush_testaments(scope) as u64))
        }
        "wamp.registration.list" | "wamp.subscription.list" => {
            let mut exact = Vec::new();
            let mut prefix = Vec::new();
            let mut wildcard = Vec::new();
            let mut put = |policy: MatchPolicy, id: Id| match policy {
                MatchPolicy::Exact => exact.push(id),
                MatchPolicy::Prefix => prefix.push(id),
                MatchPolicy::Wildcard => wildcard.push(id),
            };
            if procedure.starts_with("wamp.registration") {
                realm.dealer().iter().for_each(|r| put(r.policy, r.id));
            } else {
                realm.broker().iter().for_each(|s| put(s.policy, s.id));
            }
            ok(Value::Dict(dict([
                ("exact", ids(exact)),
                ("prefix", ids(prefix)),
                ("wildcard", ids(wildcard)),
            ])))
        }
        "wamp.registration.lookup" | "wamp.subscription.lookup" => {
            let uri = str_arg(p, 0, "uri")?;
            let policy = match arg(p, 1, "options").and_then(Value::as_dict) {
                Some(o) => MatchPolicy::from_options(o).map_err(invalid)?,
                None => MatchPolicy::Exact,
            };
            let id = if procedure.starts_with("wamp.registration") {
                realm.dealer().lookup(uri, policy).map(|r| r.id)
            } else {
                realm.broker().lookup(uri, policy).map(|s| s.id)
            };
            ok(id.map_or(Value::Null, Value::from))
        }
        "wamp.registration.match" => {
            let uri = str_arg(p, 0, "procedure")?;
            ok(realm
                .dealer()
                .matching(uri)
                .map_or(Value::Null, |r| Value::from(r.id)))
        }
        "wamp.subscription.match" => {
            let uri = str_arg(p, 0, "topic")?;
            let found: Vec<Id> = realm.broker().matching(uri).iter().map(|s| s.id).collect();
            ok(if found.is_empty() {
                Value::Null
            } else {
                ids(found)
            })
        }
        "wamp.registration.get" => {
            let id = id_arg(p, 0, "registration")?;
            let dealer = realm.dealer();
            let r = dealer.get(id).ok_or_else(no_registration)?;
            ok(Value::Dict(registration_details(r)))
        }
        "wamp.subscription.get" => {
            let id = id_arg(p, 0, "subscription")?;
            let broker = realm.broker();
            let s = broker.get(id).ok_or_else(no_subscription)?;
            ok(Value::Dict(subscription_details(s)))
        }
        "wamp.registration.list_callees" | "wamp.registration.count_callees" => {
            let id = id_arg(p, 0, "registration")?;
            let dealer = realm.dealer();
            let r = dealer.get(id).ok_or_else(no_registration)?;
            if procedure.ends_with("count_callees") {
                ok(Value::from(r.callees.len() as u64))
            } else {
                ok(ids(r.callees.iter().map(|c| c.session.id)))
            }
        }
        "wamp.subscription.list_subscribers" | "wamp.subscription.count_subscribers" => {
            let id = id_arg(p, 0, "subscription")?;
            let broker = realm.broker();
            let s = broker.get(id).ok_or_else(no_subscription)?;
            if procedure.ends_with("count_subscribers") {
                ok(Value::from(s.subscribers.len() as u64))
            } else {
                ok(ids(s.subscribers.iter().map(|h| h.id)))
            }
        }
        "wamp.subscription.get_events" => {
            let id = id_arg(p, 0, "subscription")?;
            let limit = match arg(p, 1, "limit") {
                None => 10,
                Some(v) => v
                    .as_u64()
                    .ok_or_else(|| invalid("limit must be an integer".into()))?
                    as usize,
            };
            let events = realm
                .broker()
                .events(id, limit)
                .ok_or_else(no_subscription)?;
            let list = events
                .into_iter()
                .map(|e| {
                    let mut d = dict([
                        ("timestamp", Value::from(iso8601(e.timestamp))),
                        ("subscription", Value::from(id)),
                        ("publication", Value::from(e.publication)),
                        ("topic", Value::from(e.topic)),
                    ]);
                    let (args, kwargs) = e.payload.into_parts();
                    d.insert("args".into(), Value::List(args));
                    d.insert("kwargs".into(), Value::Dict(kwargs));
                    Value::Dict(d)
                })
                .collect();
            ok(Value::List(list))
        }
        _ => Err(Refusal {
            error: uris::NO_SUCH_PROCEDURE,
            message: format!("no meta procedure {procedure}"),
        }),
    }
}

fn no_registration() -> Refusal {
    refuse(uris::NO_SUCH_REGISTRATION, "no such registration")
}

fn no_subscription() -> Refusal {
    refuse(uris::NO_SUCH_SUBSCRIPTION, "no such subscription")
}

fn scope_arg(p: &Payload) -> Result<TestamentScope, Refusal> {
    match p.kwarg("scope").and_then(Value::as_str) {
        None | Some("destroyed") => Ok(TestamentScope::Destroyed),
        Some("detached") => Ok(TestamentScope::Detached),
        Some(other) => Err(invalid(format!("unknown testament scope {other:?}"))),
    }
}

/// Whether a session is one of the hub's own in-process services (the things service, the
/// uplink, gateways), which the kill procedures spare: killing them would break the hub, not end
/// a client.
fn is_internal(s: &SessionHandle) -> bool {
    s.transport.kind == "local"
}

/// Ends a session with GOODBYE (`reason` default `wamp.close.killed`, optional `message`).
fn kill(s: &SessionHandle, p: &Payload) {
    let reason = p
        .kwarg("reason")
        .and_then(Value::as_str)
        .filter(|r| crate::wamp::uri::is_valid(r, MatchPolicy::Exact, false))
        .unwrap_or(uris::CLOSE_KILLED);
    let message = p
        .kwarg("message")
        .and_then(Value::as_str)
        .map(str::to_owned);
    tracing::info!(session = s.id, %reason, "session killed through the meta API");
    s.close_with(CloseRequest {
        abort: false,
        reason: reason.to_owned(),
        message,
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn iso8601_dates() {
        assert_eq!(iso8601(SystemTime::UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let t = SystemTime::UNIX_EPOCH + Duration::from_millis(1_795_000_000_123);
        assert_eq!(iso8601(t), "2026-11-18T11:06:40.123Z");
        let leap = SystemTime::UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(iso8601(leap), "2000-02-29T00:00:00.000Z");
    }
}
