//! The router side of one WAMP session, as a state machine without I/O.
//!
//! A transport task (or an in-process client) feeds it one decoded message at a time with
//! [`RouterSession::handle`]; everything it sends, to this peer or to others, goes through bounded
//! session queues. It answers [`Flow::Close`] when the transport should be closed once the queue is
//! flushed. Dropping it removes the session from its realm, so no exit path leaks a registration.

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::Router;
use super::auth::handshake::{self, Channel, HelloAuth, RealmAuth, Step};
use super::authz::{self, Action};
use super::broker::{Audience, Publisher};
use super::dealer::{CallTimer, CancelMode, TimeoutCheck};
use super::meta::{self, MetaEvent};
use super::outbound::{AuthInfo, Outgoing, PeerFeatures, SessionHandle, TransportInfo};
use super::realm::Realm;
use crate::wamp::message::{code, opt_bool};
use crate::wamp::{Dict, Id, MatchPolicy, Message, Value, dict, ids, uri, uris};

/// What the transport should do after a message was handled.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub enum Flow {
    Continue,
    /// Flush what is queued, then close the transport.
    Close,
}

#[derive(Debug)]
enum State {
    /// No session: waiting for HELLO (initially, or after a GOODBYE exchange).
    Idle,
    /// CHALLENGE sent; waiting for AUTHENTICATE (the HELLO deadline still runs).
    Challenging {
        realm: Arc<Realm>,
        features: PeerFeatures,
        session: Id,
        pending: Box<handshake::Pending>,
    },
    Established {
        realm: Arc<Realm>,
        handle: Arc<SessionHandle>,
    },
    /// The router sent GOODBYE and waits for the peer's reply.
    Closing,
}

/// The router side of a session.
#[derive(Debug)]
pub struct RouterSession {
    router: Arc<Router>,
    transport: TransportInfo,
    tx: mpsc::Sender<Outgoing>,
    kill: CancellationToken,
    state: State,
    /// This session's slow-consumer policy when not the router's.
    slow_consumer: Option<super::SlowConsumerPolicy>,
}

/// The agent string sent in WELCOME.
pub const AGENT: &str = concat!("brume/", env!("CARGO_PKG_VERSION"));

impl RouterSession {
    /// A session that will be established by HELLO. `tx` is the session's outbound queue and
    /// `kill` is cancelled when the router wants the session closed.
    pub fn new(
        router: Arc<Router>,
        transport: TransportInfo,
        tx: mpsc::Sender<Outgoing>,
        kill: CancellationToken,
    ) -> Self {
        RouterSession {
            router,
            transport,
            tx,
            kill,
            state: State::Idle,
            slow_consumer: None,
        }
    }

    /// Applies `policy` to this session instead of the router's (set before it joins): an
    /// internal session that must never be closed for slowness drops and counts instead.
    pub fn set_slow_consumer(&mut self, policy: super::SlowConsumerPolicy) {
        self.slow_consumer = Some(policy);
    }

    /// The established session's handle.
    pub fn handle_ref(&self) -> Option<&Arc<SessionHandle>> {
        match &self.state {
            State::Established { handle, .. } => Some(handle),
            _ => None,
        }
    }

    /// Ends a call this session made that the router cannot complete (a progressive result
    /// too large for the peer): the caller gets `error` with `message` instead of the rest,
    /// and the callee is interrupted if it supports canceling. Nothing if the call is over.
    pub fn abandon_call(&mut self, request: Id, error: &str, message: String) {
        if let State::Established { realm, handle } = &self.state {
            realm.dealer().cancel_because(
                handle.id,
                request,
                CancelMode::KillNoWait,
                error,
                message,
            );
        }
    }

    /// The established session's id.
    pub fn session_id(&self) -> Option<Id> {
        self.handle_ref().map(|h| h.id)
    }

    /// Establishes the session without a HELLO, for trusted in-process sessions.
    pub fn join_trusted(
        &mut self,
        realm: &str,
        auth: AuthInfo,
        features: PeerFeatures,
    ) -> Result<Id, &'static str> {
        if !matches!(self.state, State::Idle) {
            return Err(uris::PROTOCOL_VIOLATION);
        }
        let realm = self
            .router
            .realm(realm)
            .cloned()
            .ok_or(uris::NO_SUCH_REALM)?;
        let handle = self.establish(&realm, auth, features, None);
        Ok(handle.id)
    }

    /// Joins `realm`, as session `preferred` if that id is still free (the id a WAMP-CRA
    /// challenge announced), else under a fresh random id.
    fn establish(
        &mut self,
        realm: &Arc<Realm>,
        auth: AuthInfo,
        features: PeerFeatures,
        mut preferred: Option<Id>,
    ) -> Arc<SessionHandle> {
        let handle = loop {
            let h = Arc::new(SessionHandle::new(
                preferred.take().unwrap_or_else(ids::random_id),
                realm.name().to_owned(),
                auth.clone(),
                self.transport.clone(),
                features,
                self.tx.clone(),
                self.kill.clone(),
                self.slow_consumer
                    .unwrap_or(self.router.config.slow_consumer),
                self.router.config.memory.clone(),
            ));
            if realm.insert_session(h.clone()) {
                break h;
            }
        };
        tracing::debug!(
            session = handle.id,
            realm = realm.name(),
            authid = %handle.auth.authid,
            authrole = %handle.auth.authrole,
            "session joined"
        );
        self.state = State::Established {
            realm: realm.clone(),
            handle: handle.clone(),
        };
        meta::publish(realm, vec![MetaEvent::on_join(&handle)]);
        handle
    }

    /// Queues a message to this session's own peer.
    fn reply(&self, msg: Message) {
        match &self.state {
            State::Established { handle, .. } => {
                handle.send(Outgoing::new(msg));
            }
            _ => {
                if self.tx.try_send(Outgoing::new(msg)).is_err() {
                    self.kill.cancel();
                }
            }
        }
    }

    /// Answers bytes that could not be decoded: ABORT with a protocol violation, then close.
    pub fn protocol_violation(&mut self, why: &str) -> Flow {
        tracing::info!(session = ?self.session_id(), peer = ?self.transport.peer, %why, "protocol violation");
        self.leave();
        self.reply(Message::abort(uris::PROTOCOL_VIOLATION, Some(why)));
        Flow::Close
    }

    /// Starts a router-initiated close: GOODBYE with `reason` if a session is open (the peer is
    /// expected to answer GOODBYE), else close at once.
    pub fn begin_close(&mut self, reason: &str, message: Option<&str>) -> Flow {
        if matches!(self.state, State::Established { .. }) {
            let mut details = Dict::new();
            if let Some(m) = message {
                details.insert("message".into(), Value::from(m));
            }
            self.reply(Message::Goodbye {
                details,
                reason: reason.to_owned(),
            });
            self.leave();
            self.state = State::Closing;
            Flow::Continue
        } else {
            Flow::Close
        }
    }

    /// Handles one message from the peer.
    pub fn handle(&mut self, msg: Message) -> Flow {
        let established = match &self.state {
            State::Idle => return self.handle_idle(msg),
            State::Challenging { .. } => return self.handle_challenging(msg),
            State::Closing => {
                return match msg {
                    Message::Goodbye { .. } | Message::Abort { .. } => Flow::Close,
                    _ => Flow::Continue,
                };
            }
            State::Established { realm, handle } => (realm.clone(), handle.clone()),
        };
        let (realm, me) = established;
        match msg {
            Message::Publish {
                request,
                options,
                topic,
                payload,
            } => self.publish(&realm, &me, request, &options, &topic, &payload),
            Message::Subscribe {
                request,
                options,
                topic,
            } => self.subscribe(&realm, &me, request, &options, &topic),
            Message::Unsubscribe {
                request,
                subscription,
            } => {
                let removed = realm.broker_mut().unsubscribe(subscription, me.id);
                match removed {
                    Some(deleted) => {
                        self.reply(Message::Unsubscribed {
                            request,
                            details: None,
                        });
                        let events = MetaEvent::unsubscribed(me.id, subscription, deleted);
                        meta::publish(&realm, events.collect());
                    }
                    None => self.reply(Message::error(
                        code::UNSUBSCRIBE,
                        request,
                        uris::NO_SUCH_SUBSCRIPTION,
                        None,
                    )),
                }
            }
            Message::Register {
                request,
                options,
                procedure,
            } => self.register(&realm, &me, request, &options, &procedure),
            Message::Unregister {
                request,
                registration,
            } => {
                let removed = realm.dealer().unregister(registration, me.id);
                match removed {
                    Some(deleted) => {
                        self.reply(Message::Unregistered {
                            request,
                            details: None,
                        });
                        let events = MetaEvent::unregistered(me.id, registration, deleted);
                        meta::publish(&realm, events.collect());
                    }
                    None => self.reply(Message::error(
                        code::UNREGISTER,
                        request,
                        uris::NO_SUCH_REGISTRATION,
                        None,
                    )),
                }
            }
            Message::Call {
                request,
                options,
                procedure,
                payload,
            } => {
                if let Err(m) = authz::check(
                    &realm.config.authorizer,
                    &me,
                    Action::Call,
                    &procedure,
                    &options,
                ) {
                    self.reply(Message::error(
                        code::CALL,
                        request,
                        uris::NOT_AUTHORIZED,
                        Some(m),
                    ));
                    return Flow::Continue;
                }
                if !uri::is_valid(&procedure, MatchPolicy::Exact, realm.config.strict_uris) {
                    self.reply(Message::error(
                        code::CALL,
                        request,
                        uris::INVALID_URI,
                        Some(format!("invalid procedure URI {procedure:?}")),
                    ));
                    return Flow::Continue;
                }
                if meta::is_meta(&procedure) {
                    match meta::call(&realm, &me, &procedure, &payload) {
                        Ok(payload) => self.reply(Message::Result {
                            request,
                            details: Dict::new(),
                            payload,
                        }),
                        Err(r) => self.reply(Message::error(
                            code::CALL,
                            request,
                            r.error,
                            Some(r.message),
                        )),
                    }
                    return Flow::Continue;
                }
                let routed = realm
                    .dealer()
                    .call(&me, request, &procedure, &options, payload);
                match routed {
                    Ok(Some(timer)) => spawn_call_timer(&realm, timer),
                    Ok(None) => {}
                    Err(r) => self.reply(Message::error(
                        code::CALL,
                        request,
                        r.error,
                        Some(r.message),
                    )),
                }
            }
            Message::Yield {
                request,
                options,
                payload,
            } => realm
                .dealer()
                .yield_result(me.id, request, &options, payload),
            Message::Error {
                request_type,
                request,
                details,
                error,
                payload,
            } => {
                if request_type != code::INVOCATION {
                    return self.protocol_violation("ERROR may only answer an INVOCATION");
                }
                realm
                    .dealer()
                    .invocation_error(me.id, request, details, error, payload);
            }
            Message::Cancel { request, options } => match CancelMode::from_options(&options) {
                Ok(mode) => realm.dealer().cancel(me.id, request, mode),
                Err(m) => return self.protocol_violation(&m),
            },
            Message::Goodbye { .. } => {
                self.leave();
                self.state = State::Idle;
                self.reply(Message::Goodbye {
                    details: Dict::new(),
                    reason: uris::CLOSE_GOODBYE_AND_OUT.into(),
                });
            }
            Message::Abort { reason, .. } => {
                tracing::debug!(session = me.id, %reason, "peer aborted");
                self.leave();
                return Flow::Close;
            }
            other => {
                return self.protocol_violation(&format!(
                    "{} is not valid from a client in an open session",
                    other.name()
                ));
            }
        }
        Flow::Continue
    }

    fn handle_idle(&mut self, msg: Message) -> Flow {
        let Message::Hello { realm, details } = msg else {
            return self.protocol_violation(&format!("expected HELLO, got {}", msg.name()));
        };
        let Some(roles) = details.get("roles").and_then(Value::as_dict) else {
            return self.protocol_violation("HELLO.Details.roles is missing");
        };
        let features = client_features(roles);
        let Some(realm) = self.router.realm(&realm).cloned() else {
            tracing::info!(peer = ?self.transport.peer, realm, "HELLO for an unknown realm");
            self.reply(Message::abort(
                uris::NO_SUCH_REALM,
                Some(&format!("no realm named {realm:?}")),
            ));
            return Flow::Close;
        };
        let methods: Vec<&str> = match details.get("authmethods") {
            None => vec!["anonymous"],
            Some(Value::List(l)) => l.iter().filter_map(Value::as_str).collect(),
            Some(_) => return self.protocol_violation("HELLO.Details.authmethods must be a list"),
        };
        let session = ids::random_id();
        let step = handshake::start(
            RealmAuth {
                anonymous: realm.config.anonymous,
                principals: &realm.config.principals,
            },
            &HelloAuth::new(&methods, &details),
            Channel {
                tls_exporter: self
                    .transport
                    .channel_binding
                    .as_ref()
                    .map(|c| c.as_bytes()),
                session,
                now: std::time::SystemTime::now(),
            },
        );
        match step {
            Ok(Step::Welcome(auth)) => self.welcome(&realm, auth, features, session),
            Ok(Step::Challenge {
                method,
                extra,
                pending,
            }) => {
                self.reply(Message::Challenge {
                    method: method.as_str().to_owned(),
                    extra,
                });
                self.state = State::Challenging {
                    realm,
                    features,
                    session,
                    pending,
                };
                Flow::Continue
            }
            Err(refusal) => {
                tracing::info!(
                    peer = ?self.transport.peer,
                    realm = realm.name(),
                    ?methods,
                    authid = ?details.get("authid").and_then(|v| v.as_str()),
                    reason = refusal.reason,
                    message = %refusal.message,
                    "HELLO refused"
                );
                self.reply(Message::abort(refusal.reason, Some(&refusal.message)));
                Flow::Close
            }
        }
    }

    /// AUTHENTICATE (or anything else) while a CHALLENGE is outstanding.
    fn handle_challenging(&mut self, msg: Message) -> Flow {
        let State::Challenging {
            realm,
            features,
            session,
            pending,
        } = std::mem::replace(&mut self.state, State::Idle)
        else {
            return Flow::Close;
        };
        let signature = match msg {
            Message::Authenticate { signature, .. } => signature,
            Message::Abort { .. } | Message::Goodbye { .. } => return Flow::Close,
            other => {
                return self
                    .protocol_violation(&format!("expected AUTHENTICATE, got {}", other.name()));
            }
        };
        match pending.finish(&signature) {
            Ok(auth) => self.welcome(&realm, auth, features, session),
            Err(failure) => {
                tracing::warn!(
                    peer = ?self.transport.peer,
                    realm = realm.name(),
                    authid = %failure.authid,
                    authmethod = failure.method.as_str(),
                    cause = failure.cause,
                    "authentication failed"
                );
                self.reply(Message::abort(
                    uris::AUTHENTICATION_FAILED,
                    Some("authentication failed"),
                ));
                Flow::Close
            }
        }
    }

    /// Establishes the session and sends WELCOME.
    fn welcome(
        &mut self,
        realm: &Arc<Realm>,
        auth: AuthInfo,
        features: PeerFeatures,
        session: Id,
    ) -> Flow {
        let handle = self.establish(realm, auth, features, Some(session));
        self.reply(Message::Welcome {
            session: handle.id,
            details: welcome_details(realm, &handle),
        });
        Flow::Continue
    }

    fn publish(
        &self,
        realm: &Realm,
        me: &Arc<SessionHandle>,
        request: Id,
        options: &Dict,
        topic: &str,
        payload: &crate::wamp::Payload,
    ) {
        let ack = opt_bool(options, "acknowledge", false);
        let fail = |error: &str, message: String| {
            if ack {
                self.reply(Message::error(code::PUBLISH, request, error, Some(message)));
            }
        };
        if let Err(m) = authz::check(
            &realm.config.authorizer,
            me,
            Action::Publish,
            topic,
            options,
        ) {
            return fail(uris::NOT_AUTHORIZED, m);
        }
        if !uri::is_valid(topic, MatchPolicy::Exact, realm.config.strict_uris) {
            return fail(uris::INVALID_URI, format!("invalid topic URI {topic:?}"));
        }
        let audience = match Audience::from_options(options) {
            Ok(a) => a,
            Err(m) => return fail(uris::INVALID_ARGUMENT, m),
        };
        let disclose = opt_bool(options, "disclose_me", false);
        let retain = opt_bool(options, "retain", false);
        let (publication, _) = realm.broker().publish(
            &Publisher::of(me),
            topic,
            &audience,
            disclose,
            retain,
            payload,
        );
        if ack {
            self.reply(Message::Published {
                request,
                publication,
            });
        }
    }

    fn subscribe(
        &self,
        realm: &Realm,
        me: &Arc<SessionHandle>,
        request: Id,
        options: &Dict,
        topic: &str,
    ) {
        if let Err(m) = authz::check(
            &realm.config.authorizer,
            me,
            Action::Subscribe,
            topic,
            options,
        ) {
            return self.reply(Message::error(
                code::SUBSCRIBE,
                request,
                uris::NOT_AUTHORIZED,
                Some(m),
            ));
        }
        let policy = match MatchPolicy::from_options(options) {
            Ok(p) => p,
            Err(m) => {
                return self.reply(Message::error(
                    code::SUBSCRIBE,
                    request,
                    uris::INVALID_ARGUMENT,
                    Some(m),
                ));
            }
        };
        if !uri::is_valid(topic, policy, realm.config.strict_uris) {
            return self.reply(Message::error(
                code::SUBSCRIBE,
                request,
                uris::INVALID_URI,
                Some(format!("invalid {} topic URI {topic:?}", policy.as_str())),
            ));
        }
        // SUBSCRIBED (and retained events) are queued under the broker lock so no EVENT for the
        // subscription can overtake them.
        let events;
        {
            let mut broker = realm.broker_mut();
            let sub = broker.subscribe(topic, policy, me, || self.router.ids.next());
            self.reply(Message::Subscribed {
                request,
                subscription: sub.id,
            });
            if opt_bool(options, "get_retained", false) {
                broker.send_retained(sub.id, me);
            }
            let created = broker.get(sub.id).filter(|_| sub.created);
            events = MetaEvent::subscribed(me.id, sub.id, created);
        }
        meta::publish(realm, events);
    }

    fn register(
        &self,
        realm: &Realm,
        me: &Arc<SessionHandle>,
        request: Id,
        options: &Dict,
        procedure: &str,
    ) {
        if let Err(m) = authz::check(
            &realm.config.authorizer,
            me,
            Action::Register,
            procedure,
            options,
        ) {
            return self.reply(Message::error(
                code::REGISTER,
                request,
                uris::NOT_AUTHORIZED,
                Some(m),
            ));
        }
        let policy = match MatchPolicy::from_options(options) {
            Ok(p) => p,
            Err(m) => {
                return self.reply(Message::error(
                    code::REGISTER,
                    request,
                    uris::INVALID_ARGUMENT,
                    Some(m),
                ));
            }
        };
        if !uri::is_valid(procedure, policy, realm.config.strict_uris) {
            return self.reply(Message::error(
                code::REGISTER,
                request,
                uris::INVALID_URI,
                Some(format!(
                    "invalid {} procedure URI {procedure:?}",
                    policy.as_str()
                )),
            ));
        }
        // REGISTERED is queued under the dealer lock so no INVOCATION for it can overtake it.
        let events = {
            let mut dealer = realm.dealer();
            match dealer.register(procedure, policy, options, me, || self.router.ids.next()) {
                Ok(reg) => {
                    self.reply(Message::Registered {
                        request,
                        registration: reg.id,
                    });
                    // Callees displaced by force_reregister leave first, then `me` joins.
                    let mut events: Vec<MetaEvent> = reg
                        .revoked
                        .iter()
                        .flat_map(|&s| MetaEvent::unregistered(s, reg.id, false))
                        .collect();
                    let created = dealer.get(reg.id).filter(|_| reg.created);
                    events.extend(MetaEvent::registered(me.id, reg.id, created));
                    events
                }
                Err(r) => {
                    self.reply(Message::error(
                        code::REGISTER,
                        request,
                        r.error,
                        Some(r.message),
                    ));
                    return;
                }
            }
        };
        meta::publish(realm, events);
    }

    /// Removes the session from its realm, broker and dealer. Idempotent.
    fn leave(&mut self) {
        let state = std::mem::replace(&mut self.state, State::Idle);
        if let State::Established { realm, handle } = state {
            let subs = realm.broker_mut().remove_session(handle.id);
            let regs = realm.dealer().remove_session(handle.id).registrations;
            realm.remove_session(handle.id);
            meta::publish_testaments(&realm, &handle);
            let session = handle.id;
            let mut events: Vec<MetaEvent> = subs
                .into_iter()
                .flat_map(|(id, deleted)| MetaEvent::unsubscribed(session, id, deleted))
                .chain(
                    regs.into_iter()
                        .flat_map(|(id, deleted)| MetaEvent::unregistered(session, id, deleted)),
                )
                .collect();
            events.push(MetaEvent::on_leave(&handle));
            meta::publish(&realm, events);
            tracing::debug!(session = handle.id, realm = realm.name(), "session left");
        }
    }
}

impl Drop for RouterSession {
    fn drop(&mut self) {
        self.leave();
    }
}

/// Arms the timer of a call with a timeout: when it fires the dealer expires the call unless it
/// finished or a progressive result pushed the deadline back. Holds the realm weakly.
fn spawn_call_timer(realm: &Arc<Realm>, timer: CallTimer) {
    let Ok(rt) = tokio::runtime::Handle::try_current() else {
        return;
    };
    let weak = Arc::downgrade(realm);
    rt.spawn(async move {
        let mut deadline = timer.deadline;
        loop {
            tokio::time::sleep_until(deadline.into()).await;
            let Some(realm) = weak.upgrade() else { return };
            let check = realm.dealer().check_timeout(timer.key, Instant::now());
            match check {
                TimeoutCheck::Extended(d) => deadline = d,
                TimeoutCheck::Gone | TimeoutCheck::Expired => return,
            }
        }
    });
}

/// Reads the client features that change what the router sends.
fn client_features(roles: &Dict) -> PeerFeatures {
    let has = |role: &str, feature: &str| {
        roles
            .get(role)
            .and_then(Value::as_dict)
            .and_then(|r| r.get("features"))
            .and_then(Value::as_dict)
            .and_then(|f| f.get(feature))
            .and_then(Value::as_bool)
            .unwrap_or(false)
    };
    PeerFeatures {
        registration_revocation: has("callee", "registration_revocation"),
        subscription_revocation: has("subscriber", "subscription_revocation"),
        progressive_call_results: has("callee", "progressive_call_results"),
        call_canceling: has("callee", "call_canceling") || has("callee", "call_cancelling"),
        call_timeout: has("callee", "call_timeout"),
    }
}

/// WELCOME.Details: who the session is and exactly the features the router implements.
fn welcome_details(realm: &Realm, h: &SessionHandle) -> Dict {
    let features = |names: &[&str]| {
        Value::Dict(dict([(
            "features",
            Value::Dict(
                names
                    .iter()
                    .map(|n| ((*n).to_owned(), Value::Bool(true)))
                    .collect(),
            ),
        )]))
    };
    let roles = dict([
        (
            "broker",
            features(&[
                "pattern_based_subscription",
                "publisher_exclusion",
                "publisher_identification",
                "subscriber_blackwhite_listing",
                "event_retention",
                "event_history",
                "subscription_revocation",
                "session_meta_api",
                "subscription_meta_api",
            ]),
        ),
        (
            "dealer",
            features(&[
                "pattern_based_registration",
                "shared_registration",
                "caller_identification",
                "progressive_call_results",
                "call_timeout",
                "call_canceling",
                "registration_revocation",
                "session_meta_api",
                "registration_meta_api",
                "testament_meta_api",
            ]),
        ),
    ]);
    dict([
        ("realm", Value::from(realm.name())),
        ("authid", Value::from(h.auth.authid.as_str())),
        ("authrole", Value::from(h.auth.authrole.as_str())),
        ("authmethod", Value::from(h.auth.authmethod.as_str())),
        ("authprovider", Value::from(h.auth.authprovider.as_str())),
        ("roles", Value::Dict(roles)),
        ("agent", Value::from(AGENT)),
    ])
}
