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
use super::outbound::{CloseRequest, Outgoing, SessionHandle, Testament, TestamentScope};
use super::realm::Realm;
use crate::wamp::{Dict, Id, List, MatchPolicy, Message, Payload, Value, dict, uris};

/// Whether a procedure is one the router answers itself.
pub fn is_meta(procedure: &str) -> bool {
    procedure.starts_with(uris::meta::SESSION_PREFIX)
        || procedure.starts_with(uris::meta::REGISTRATION_PREFIX)
        || procedure.starts_with(uris::meta::SUBSCRIPTION_PREFIX)
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
        MetaEvent::new(uris::meta::ON_JOIN, vec![Value::Dict(session_details(h))])
    }

    pub fn on_leave(h: &SessionHandle) -> Self {
        MetaEvent::new(
            uris::meta::ON_LEAVE,
            vec![
                Value::from(h.id),
                Value::from(h.auth.authid.as_str()),
                Value::from(h.auth.authrole.as_str()),
            ],
        )
    }

    fn subscription_created(session: Id, s: &Subscription) -> Self {
        MetaEvent::new(
            uris::meta::SUBSCRIPTION_ON_CREATE,
            vec![Value::from(session), Value::Dict(subscription_details(s))],
        )
    }

    fn registration_created(session: Id, r: &Registration) -> Self {
        MetaEvent::new(
            uris::meta::REGISTRATION_ON_CREATE,
            vec![Value::from(session), Value::Dict(registration_details(r))],
        )
    }

    /// `wamp.subscription.on_subscribe`, `on_unsubscribe`, `on_delete` and their registration
    /// twins: all carry (session, id).
    fn pair(topic: &'static str, session: Id, id: Id) -> Self {
        MetaEvent::new(topic, vec![Value::from(session), Value::from(id)])
    }

    /// `wamp.subscription.on_create` (when `created` holds the new subscription), then
    /// `on_subscribe`.
    pub fn subscribed(session: Id, id: Id, created: Option<&Subscription>) -> Vec<Self> {
        let mut events: Vec<Self> = created
            .map(|s| Self::subscription_created(session, s))
            .into_iter()
            .collect();
        events.push(Self::pair(
            uris::meta::SUBSCRIPTION_ON_SUBSCRIBE,
            session,
            id,
        ));
        events
    }

    /// `wamp.registration.on_create` (when `created` holds the new registration), then
    /// `on_register`.
    pub fn registered(session: Id, id: Id, created: Option<&Registration>) -> Vec<Self> {
        let mut events: Vec<Self> = created
            .map(|r| Self::registration_created(session, r))
            .into_iter()
            .collect();
        events.push(Self::pair(
            uris::meta::REGISTRATION_ON_REGISTER,
            session,
            id,
        ));
        events
    }

    /// `wamp.subscription.on_unsubscribe`, then `on_delete` when `deleted` (the session was the
    /// subscription's last subscriber).
    pub fn unsubscribed(
        session: Id,
        subscription: Id,
        deleted: bool,
    ) -> impl Iterator<Item = Self> {
        Self::left(
            uris::meta::SUBSCRIPTION_ON_UNSUBSCRIBE,
            uris::meta::SUBSCRIPTION_ON_DELETE,
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
            uris::meta::REGISTRATION_ON_UNREGISTER,
            uris::meta::REGISTRATION_ON_DELETE,
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
            &Audience::default(),
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
        broker.publish(
            &publisher, &t.topic, &audience, disclose, retain, &t.payload,
        );
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

/// One meta procedure call: the realm it is made in, the calling session and its arguments.
struct MetaCall<'a> {
    realm: &'a Arc<Realm>,
    me: &'a Arc<SessionHandle>,
    p: &'a Payload,
}

/// A meta procedure's implementation.
type Procedure = fn(&MetaCall<'_>) -> Result<Payload, Refusal>;

/// The implementation of a meta procedure, by URI.
fn procedure(uri: &str) -> Option<Procedure> {
    use uris::meta as m;
    let f: Procedure = match uri {
        m::SESSION_COUNT => session_count,
        m::SESSION_LIST => session_list,
        m::SESSION_GET => session_get,
        m::SESSION_KILL => session_kill,
        m::SESSION_KILL_BY_AUTHID => session_kill_by_authid,
        m::SESSION_KILL_BY_AUTHROLE => session_kill_by_authrole,
        m::SESSION_KILL_ALL => session_kill_all,
        m::SESSION_ADD_TESTAMENT => session_add_testament,
        m::SESSION_FLUSH_TESTAMENTS => session_flush_testaments,
        m::REGISTRATION_LIST => registration_list,
        m::REGISTRATION_LOOKUP => registration_lookup,
        m::REGISTRATION_MATCH => registration_match,
        m::REGISTRATION_GET => registration_get,
        m::REGISTRATION_LIST_CALLEES => registration_list_callees,
        m::REGISTRATION_COUNT_CALLEES => registration_count_callees,
        m::REGISTRATION_REMOVE => registration_remove,
        m::SUBSCRIPTION_LIST => subscription_list,
        m::SUBSCRIPTION_LOOKUP => subscription_lookup,
        m::SUBSCRIPTION_MATCH => subscription_match,
        m::SUBSCRIPTION_GET => subscription_get,
        m::SUBSCRIPTION_LIST_SUBSCRIBERS => subscription_list_subscribers,
        m::SUBSCRIPTION_COUNT_SUBSCRIBERS => subscription_count_subscribers,
        m::SUBSCRIPTION_GET_EVENTS => subscription_get_events,
        m::SUBSCRIPTION_REMOVE => subscription_remove,
        _ => return None,
    };
    Some(f)
}

/// Answers a meta procedure call made by `me`.
pub fn call(
    realm: &Arc<Realm>,
    me: &Arc<SessionHandle>,
    procedure_uri: &str,
    p: &Payload,
) -> Result<Payload, Refusal> {
    let f = procedure(procedure_uri).ok_or_else(|| Refusal {
        error: uris::NO_SUCH_PROCEDURE,
        message: format!("no meta procedure {procedure_uri}"),
    })?;
    f(&MetaCall { realm, me, p })
}

/// The sessions whose authrole is in the optional `filter_authroles` list.
fn filtered_sessions(c: &MetaCall<'_>) -> Vec<Id> {
    let roles: Option<Vec<&str>> = arg(c.p, 0, "filter_authroles")
        .and_then(Value::as_list)
        .map(|l| l.iter().filter_map(Value::as_str).collect());
    c.realm
        .sessions()
        .iter()
        .filter(|s| {
            roles
                .as_ref()
                .is_none_or(|r| r.contains(&s.auth.authrole.as_str()))
        })
        .map(|s| s.id)
        .collect()
}

/// `wamp.session.count([filter_authroles])` → count.
fn session_count(c: &MetaCall<'_>) -> Result<Payload, Refusal> {
    ok(Value::from(filtered_sessions(c).len() as u64))
}

/// `wamp.session.list([filter_authroles])` → session ids.
fn session_list(c: &MetaCall<'_>) -> Result<Payload, Refusal> {
    ok(ids(filtered_sessions(c)))
}

/// `wamp.session.get(session)` → session details.
fn session_get(c: &MetaCall<'_>) -> Result<Payload, Refusal> {
    let id = id_arg(c.p, 0, "session")?;
    let s = c.realm.session(id).ok_or_else(no_session)?;
    ok(Value::Dict(session_details(&s)))
}

/// `wamp.session.kill(session, reason=, message=)`: never oneself nor the hub's own services.
fn session_kill(c: &MetaCall<'_>) -> Result<Payload, Refusal> {
    let id = id_arg(c.p, 0, "session")?;
    if id == c.me.id {
        return Err(invalid("a session cannot kill itself".into()));
    }
    let s = c.realm.session(id).ok_or_else(no_session)?;
    if is_internal(&s) {
        return Err(refuse(
            uris::NOT_AUTHORIZED,
            "the hub's own services cannot be killed",
        ));
    }
    kill(&s, c.p);
    Ok(Payload::empty())
}

/// `wamp.session.kill_by_authid(authid, reason=, message=)` → killed session ids.
fn session_kill_by_authid(c: &MetaCall<'_>) -> Result<Payload, Refusal> {
    let who = str_arg(c.p, 0, "authid")?;
    ok(ids(kill_where(c, |s| s.auth.authid == who)))
}

/// `wamp.session.kill_by_authrole(authrole, reason=, message=)` → killed session ids.
fn session_kill_by_authrole(c: &MetaCall<'_>) -> Result<Payload, Refusal> {
    let who = str_arg(c.p, 0, "authrole")?;
    ok(ids(kill_where(c, |s| s.auth.authrole == who)))
}

/// `wamp.session.kill_all(reason=, message=)` → how many sessions were killed.
fn session_kill_all(c: &MetaCall<'_>) -> Result<Payload, Refusal> {
    ok(Value::from(kill_where(c, |_| true).len() as u64))
}

/// Kills every session but the caller and the hub's own services that `pick` selects.
fn kill_where(c: &MetaCall<'_>, pick: impl Fn(&SessionHandle) -> bool) -> Vec<Id> {
    let mut killed = Vec::new();
    for s in c.realm.sessions() {
        if s.id != c.me.id && !is_internal(&s) && pick(&s) {
            kill(&s, c.p);
            killed.push(s.id);
        }
    }
    killed
}

/// `wamp.session.add_testament(topic, args, kwargs, publish_options=, scope=)`.
fn session_add_testament(c: &MetaCall<'_>) -> Result<Payload, Refusal> {
    let p = c.p;
    let topic = str_arg(p, 0, "topic")?;
    if !crate::wamp::uri::is_valid(topic, MatchPolicy::Exact, c.realm.config.strict_uris) {
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
    let added = c.me.add_testament(Testament {
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

/// `wamp.session.flush_testaments(scope=)` → how many were removed.
fn session_flush_testaments(c: &MetaCall<'_>) -> Result<Payload, Refusal> {
    let scope = scope_arg(c.p)?;
    ok(Value::from(c.me.flush_testaments(scope) as u64))
}

/// `{exact, prefix, wildcard}` lists of ids.
fn by_policy(items: impl Iterator<Item = (MatchPolicy, Id)>) -> Value {
    let mut exact = Vec::new();
    let mut prefix = Vec::new();
    let mut wildcard = Vec::new();
    for (policy, id) in items {
        match policy {
            MatchPolicy::Exact => exact.push(id),
            MatchPolicy::Prefix => prefix.push(id),
            MatchPolicy::Wildcard => wildcard.push(id),
        }
    }
    Value::Dict(dict([
        ("exact", ids(exact)),
        ("prefix", ids(prefix)),
        ("wildcard", ids(wildcard)),
    ]))
}

/// The (uri, match policy) arguments of the `lookup` procedures.
fn lookup_args<'a>(p: &'a Payload, uri_key: &str) -> Result<(&'a str, MatchPolicy), Refusal> {
    let uri = str_arg(p, 0, uri_key)?;
    let policy = match arg(p, 1, "options").and_then(Value::as_dict) {
        Some(o) => MatchPolicy::from_options(o).map_err(invalid)?,
        None => MatchPolicy::Exact,
    };
    Ok((uri, policy))
}

/// `wamp.registration.list()` → `{exact, prefix, wildcard}`.
fn registration_list(c: &MetaCall<'_>) -> Result<Payload, Refusal> {
    ok(by_policy(c.realm.dealer().iter().map(|r| (r.policy, r.id))))
}

/// `wamp.registration.lookup(procedure, options?)` → registration id or null.
fn registration_lookup(c: &MetaCall<'_>) -> Result<Payload, Refusal> {
    let (uri, policy) = lookup_args(c.p, "procedure")?;
    let id = c.realm.dealer().lookup(uri, policy).map(|r| r.id);
    ok(id.map_or(Value::Null, Value::from))
}

/// `wamp.registration.match(procedure)` → the id of the registration a call would use, or null.
fn registration_match(c: &MetaCall<'_>) -> Result<Payload, Refusal> {
    let uri = str_arg(c.p, 0, "procedure")?;
    let id = c.realm.dealer().matching(uri).map(|r| r.id);
    ok(id.map_or(Value::Null, Value::from))
}

/// `wamp.registration.get(registration)` → registration details.
fn registration_get(c: &MetaCall<'_>) -> Result<Payload, Refusal> {
    let id = id_arg(c.p, 0, "registration")?;
    let dealer = c.realm.dealer();
    let r = dealer.get(id).ok_or_else(no_registration)?;
    ok(Value::Dict(registration_details(r)))
}

/// `wamp.registration.list_callees(registration)` → session ids.
fn registration_list_callees(c: &MetaCall<'_>) -> Result<Payload, Refusal> {
    let id = id_arg(c.p, 0, "registration")?;
    let dealer = c.realm.dealer();
    let r = dealer.get(id).ok_or_else(no_registration)?;
    ok(ids(r.callees.iter().map(|c| c.session.id)))
}

/// `wamp.registration.count_callees(registration)` → count.
fn registration_count_callees(c: &MetaCall<'_>) -> Result<Payload, Refusal> {
    let id = id_arg(c.p, 0, "registration")?;
    let dealer = c.realm.dealer();
    let r = dealer.get(id).ok_or_else(no_registration)?;
    ok(Value::from(r.callees.len() as u64))
}

/// `wamp.registration.remove(registration, session, reason=)`: removes a callee from a
/// registration. The callee gets UNREGISTERED `[0, {registration, reason}]` if it announced
/// `registration_revocation`; `on_unregister` (and `on_delete` if it was the last callee) follow.
fn registration_remove(c: &MetaCall<'_>) -> Result<Payload, Refusal> {
    let id = id_arg(c.p, 0, "registration")?;
    let (target, reason) = removal_args(c)?;
    let deleted = {
        let mut dealer = c.realm.dealer();
        if dealer.get(id).is_none() {
            return Err(no_registration());
        }
        let deleted = dealer.unregister(id, target.id).ok_or_else(|| {
            refuse(
                uris::NO_SUCH_SESSION,
                "the session is not a callee of the registration",
            )
        })?;
        // Queued under the dealer lock, so no INVOCATION for the registration can follow it.
        if target.features.registration_revocation {
            target.send(Outgoing::new(Message::Unregistered {
                request: 0,
                details: Some(revocation("registration", id, &reason)),
            }));
        }
        deleted
    };
    tracing::info!(session = target.id, registration = id, %reason, "callee removed through the meta API");
    publish(
        c.realm,
        MetaEvent::unregistered(target.id, id, deleted).collect(),
    );
    Ok(Payload::empty())
}

/// `wamp.subscription.list()` → `{exact, prefix, wildcard}`.
fn subscription_list(c: &MetaCall<'_>) -> Result<Payload, Refusal> {
    ok(by_policy(c.realm.broker().iter().map(|s| (s.policy, s.id))))
}

/// `wamp.subscription.lookup(topic, options?)` → subscription id or null.
fn subscription_lookup(c: &MetaCall<'_>) -> Result<Payload, Refusal> {
    let (uri, policy) = lookup_args(c.p, "topic")?;
    let id = c.realm.broker().lookup(uri, policy).map(|s| s.id);
    ok(id.map_or(Value::Null, Value::from))
}

/// `wamp.subscription.match(topic)` → the ids of every matching subscription, or null.
fn subscription_match(c: &MetaCall<'_>) -> Result<Payload, Refusal> {
    let uri = str_arg(c.p, 0, "topic")?;
    let found: Vec<Id> = c
        .realm
        .broker()
        .matching(uri)
        .iter()
        .map(|s| s.id)
        .collect();
    ok(if found.is_empty() {
        Value::Null
    } else {
        ids(found)
    })
}

/// `wamp.subscription.get(subscription)` → subscription details.
fn subscription_get(c: &MetaCall<'_>) -> Result<Payload, Refusal> {
    let id = id_arg(c.p, 0, "subscription")?;
    let broker = c.realm.broker();
    let s = broker.get(id).ok_or_else(no_subscription)?;
    ok(Value::Dict(subscription_details(s)))
}

/// `wamp.subscription.list_subscribers(subscription)` → session ids.
fn subscription_list_subscribers(c: &MetaCall<'_>) -> Result<Payload, Refusal> {
    let id = id_arg(c.p, 0, "subscription")?;
    let broker = c.realm.broker();
    let s = broker.get(id).ok_or_else(no_subscription)?;
    ok(ids(s.subscribers.iter().map(|h| h.id)))
}

/// `wamp.subscription.count_subscribers(subscription)` → count.
fn subscription_count_subscribers(c: &MetaCall<'_>) -> Result<Payload, Refusal> {
    let id = id_arg(c.p, 0, "subscription")?;
    let broker = c.realm.broker();
    let s = broker.get(id).ok_or_else(no_subscription)?;
    ok(Value::from(s.subscribers.len() as u64))
}

/// `wamp.subscription.get_events(subscription, limit=10)` → the newest stored events.
fn subscription_get_events(c: &MetaCall<'_>) -> Result<Payload, Refusal> {
    let id = id_arg(c.p, 0, "subscription")?;
    let limit = match arg(c.p, 1, "limit") {
        None => 10,
        Some(v) => v
            .as_u64()
            .ok_or_else(|| invalid("limit must be an integer".into()))? as usize,
    };
    let events = c
        .realm
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

/// `wamp.subscription.remove(subscription, session, reason=)`: removes a subscriber from a
/// subscription. The subscriber gets UNSUBSCRIBED `[0, {subscription, reason}]` if it announced
/// `subscription_revocation`; `on_unsubscribe` (and `on_delete` if it was the last subscriber)
/// follow.
fn subscription_remove(c: &MetaCall<'_>) -> Result<Payload, Refusal> {
    let id = id_arg(c.p, 0, "subscription")?;
    let (target, reason) = removal_args(c)?;
    let deleted = {
        let mut broker = c.realm.broker_mut();
        if broker.get(id).is_none() {
            return Err(no_subscription());
        }
        let deleted = broker.unsubscribe(id, target.id).ok_or_else(|| {
            refuse(
                uris::NO_SUCH_SESSION,
                "the session is not a subscriber of the subscription",
            )
        })?;
        // Queued under the broker lock, so no EVENT for the subscription can follow it.
        if target.features.subscription_revocation {
            target.send(Outgoing::new(Message::Unsubscribed {
                request: 0,
                details: Some(revocation("subscription", id, &reason)),
            }));
        }
        deleted
    };
    tracing::info!(session = target.id, subscription = id, %reason, "subscriber removed through the meta API");
    publish(
        c.realm,
        MetaEvent::unsubscribed(target.id, id, deleted).collect(),
    );
    Ok(Payload::empty())
}

/// The session (argument 1) and reason (keyword `reason`, default
/// [`uris::REVOKED_REMOVED`]) of a `remove` procedure. The hub's own services cannot be removed.
fn removal_args(c: &MetaCall<'_>) -> Result<(Arc<SessionHandle>, String), Refusal> {
    let session = id_arg(c.p, 1, "session")?;
    let target = c.realm.session(session).ok_or_else(no_session)?;
    if is_internal(&target) {
        return Err(refuse(
            uris::NOT_AUTHORIZED,
            "the hub's own services cannot be removed",
        ));
    }
    let reason = match c.p.kwarg("reason") {
        None | Some(Value::Null) => uris::REVOKED_REMOVED,
        Some(v) => v
            .as_str()
            .filter(|r| crate::wamp::uri::is_valid(r, MatchPolicy::Exact, false))
            .ok_or_else(|| invalid("reason must be a URI".into()))?,
    };
    Ok((target, reason.to_owned()))
}

/// The details of a revocation: `{registration|subscription: id, reason}`.
fn revocation(key: &str, id: Id, reason: &str) -> Dict {
    dict([(key, Value::from(id)), ("reason", Value::from(reason))])
}

fn no_session() -> Refusal {
    refuse(uris::NO_SUCH_SESSION, "no such session")
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
