//! [`Core`]: the things service's logic without I/O.
//!
//! It is fed device events, API requests and the current time, and it leaves what must happen in
//! its [`Outbox`] (publications and database writes) for the async shell in `service.rs` to carry
//! out. Commands to gateways are the exception: they go out at once with a non-blocking
//! `try_send`, since whether one fits decides the call's answer.
//!
//! Pending `set` and action calls keep their reply channel here, with a deadline; the shell calls
//! [`Core::expire`] when the earliest deadline ([`Core::next_deadline`]) passes.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use device_models::{
    DeviceCommand, DeviceEvent, Stamped, TdContext, Thing, ThingId, ThingState, ThingType,
    TypeCatalog, TypeOrigin,
};
use serde_json::{Map, Value as Json, json};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::link::{GatewayId, ThingsStats};
use super::request::{ApiError, Reply, Request, errors};
use super::secret::{Secret, SecretHash};
use super::store::{ActionStatus, Loaded, StoreOp};
use crate::config::Provisioning;
use crate::wamp::{Dict, Payload, Value, uris};

/// Settings the core needs from `[things]`.
#[derive(Debug, Clone)]
pub struct CoreSettings {
    pub provisioning: Provisioning,
    pub auto_type: Option<String>,
    pub set_timeout: Duration,
    /// How Thing Descriptions name this hub and its WAMP endpoint.
    pub td: TdContext,
}

/// Why the service could not start from what the database holds.
#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    #[error(
        "thing {thing:?} in the database has type {type_id:?}, which is neither built in nor in things.types_dir"
    )]
    UnknownType { thing: String, type_id: String },
    #[error("things.auto_type: no thing type {0:?} (built-in or in things.types_dir)")]
    UnknownAutoType(String),
}

/// One publication for the WAMP publisher.
#[derive(Debug, Clone)]
pub struct Publication {
    pub topic: String,
    pub payload: Payload,
}

/// What the core asks the shell to do.
#[derive(Debug, Default)]
pub struct Outbox {
    pub publications: Vec<Publication>,
    pub store: Vec<StoreOp>,
}

/// One thing in memory.
#[derive(Debug)]
struct Entry {
    thing: Thing,
    ty: Arc<ThingType>,
    state: ThingState,
    online: bool,
    /// The gateway the thing was last heard on, where its commands go.
    gateway: Option<GatewayId>,
    secret: Option<SecretHash>,
}

#[derive(Debug)]
struct Gateway {
    name: String,
    commands: mpsc::Sender<DeviceCommand>,
}

#[derive(Debug)]
struct SetWaiter {
    thing: ThingId,
    waiting: BTreeSet<String>,
    settled: BTreeMap<String, Stamped>,
    timeout_ms: u64,
    reply: Reply,
}

#[derive(Debug)]
struct ActionWaiter {
    id: u64,
    thing: ThingId,
    action: String,
    timeout_ms: u64,
    reply: Reply,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Deadline {
    Set(u64),
    Action(String),
}

/// Logs each unknown device at most once a minute, remembering at most 1024 of them.
#[derive(Debug, Default)]
struct UnknownLog {
    last: HashMap<ThingId, Instant>,
}

impl UnknownLog {
    const EVERY: Duration = Duration::from_secs(60);
    const REMEMBER: usize = 1024;

    fn should_log(&mut self, thing: &ThingId, now: Instant) -> bool {
        if let Some(at) = self.last.get(thing)
            && now.duration_since(*at) < Self::EVERY
        {
            return false;
        }
        if self.last.len() >= Self::REMEMBER {
            self.last.clear();
        }
        self.last.insert(thing.clone(), now);
        true
    }
}

/// Why a command did not reach a gateway.
enum SendFailure {
    /// The gateway's command queue is full.
    Full,
    /// No gateway, or it has gone.
    Gone,
}

/// The things registry and the calls waiting on devices. Owned by the service task alone (see
/// [`ThingsService`](super::service::ThingsService)), so it needs no lock.
#[derive(Debug)]
pub struct Core {
    settings: CoreSettings,
    catalog: TypeCatalog,
    things: HashMap<ThingId, Entry>,
    gateways: HashMap<GatewayId, Gateway>,
    sets: HashMap<u64, SetWaiter>,
    set_by_property: HashMap<(ThingId, String), u64>,
    next_set: u64,
    actions: HashMap<String, ActionWaiter>,
    next_action: u64,
    deadlines: BinaryHeap<Reverse<(Instant, Deadline)>>,
    unknown: UnknownLog,
    stats: Arc<ThingsStats>,
    /// What the shell must carry out; drained with [`Core::take_outbox`].
    pub out: Outbox,
}

fn stamped_json(s: &Stamped) -> Json {
    json!({ "value": s.value, "at": s.at_ms })
}

fn stamped_map(m: &BTreeMap<String, Stamped>) -> Json {
    Json::Object(
        m.iter()
            .map(|(k, s)| (k.clone(), stamped_json(s)))
            .collect(),
    )
}

impl Core {
    /// Builds the registry from what the database held.
    pub fn new(
        settings: CoreSettings,
        catalog: TypeCatalog,
        loaded: Loaded,
        stats: Arc<ThingsStats>,
    ) -> Result<Core, CoreError> {
        if let Some(t) = &settings.auto_type
            && catalog.get(t).is_none()
        {
            return Err(CoreError::UnknownAutoType(t.clone()));
        }
        let mut things = HashMap::with_capacity(loaded.things.len());
        for t in loaded.things {
            let Some(ty) = catalog.get(&t.type_id).cloned() else {
                return Err(CoreError::UnknownType {
                    thing: t.id.into_string(),
                    type_id: t.type_id,
                });
            };
            let mut thing = Thing::new(t.id.clone(), t.type_id, t.created_ms);
            thing.info = t.info;
            things.insert(
                t.id,
                Entry {
                    thing,
                    ty,
                    state: ThingState {
                        reported: t.reported,
                        desired: t.desired,
                    },
                    online: false,
                    gateway: None,
                    secret: t.secret,
                },
            );
        }
        Ok(Core {
            settings,
            catalog,
            things,
            gateways: HashMap::new(),
            sets: HashMap::new(),
            set_by_property: HashMap::new(),
            next_set: 1,
            actions: HashMap::new(),
            next_action: loaded.last_action_id + 1,
            deadlines: BinaryHeap::new(),
            unknown: UnknownLog::default(),
            stats,
            out: Outbox::default(),
        })
    }

    /// Number of things.
    pub fn len(&self) -> usize {
        self.things.len()
    }

    /// True when no thing is provisioned.
    pub fn is_empty(&self) -> bool {
        self.things.is_empty()
    }

    /// Takes what the shell must do.
    pub fn take_outbox(&mut self) -> Outbox {
        std::mem::take(&mut self.out)
    }

    /// Checks a device secret (for gateways that authenticate devices).
    pub fn verify_secret(&self, thing: &ThingId, presented: &str) -> bool {
        self.things
            .get(thing)
            .and_then(|e| e.secret.as_ref())
            .is_some_and(|s| s.verify(presented))
    }

    // ----- gateways -----

    /// A gateway attached.
    pub fn attach(&mut self, id: GatewayId, name: String, commands: mpsc::Sender<DeviceCommand>) {
        tracing::info!(gateway = id, name = %name, "gateway attached");
        self.gateways.insert(id, Gateway { name, commands });
    }

    /// A gateway detached: every thing last seen on it goes offline.
    pub fn detach(&mut self, id: GatewayId) {
        let Some(gw) = self.gateways.remove(&id) else {
            return;
        };
        tracing::info!(gateway = id, name = %gw.name, "gateway detached");
        let gone: Vec<ThingId> = self
            .things
            .iter()
            .filter(|(_, e)| e.gateway == Some(id))
            .map(|(t, _)| t.clone())
            .collect();
        for t in gone {
            if let Some(e) = self.things.get_mut(&t) {
                e.gateway = None;
            }
            self.go_offline(&t, "its gateway detached");
        }
    }

    fn send_command(
        &mut self,
        gw: Option<GatewayId>,
        cmd: DeviceCommand,
    ) -> Result<(), SendFailure> {
        let Some(gw) = gw else {
            return Err(SendFailure::Gone);
        };
        let Some(g) = self.gateways.get(&gw) else {
            return Err(SendFailure::Gone);
        };
        match g.commands.try_send(cmd) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Full(cmd)) => {
                self.stats.dropped_commands.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(gateway = gw, thing = %cmd.thing(), "gateway command queue full; command not sent");
                Err(SendFailure::Full)
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                self.detach(gw);
                Err(SendFailure::Gone)
            }
        }
    }

    // ----- device events -----

    /// Handles one event from gateway `gw`.
    pub fn handle_event(&mut self, gw: GatewayId, event: DeviceEvent, now: Instant, now_ms: u64) {
        self.stats.events_in.fetch_add(1, Ordering::Relaxed);
        match event {
            DeviceEvent::Hello {
                thing,
                type_hint,
                info,
            } => {
                if self.things.contains_key(&thing) {
                    if !info.is_empty() {
                        self.device_info(&thing, &info);
                    }
                } else if !self.auto_provision(&thing, type_hint.as_deref(), &info, now, now_ms) {
                    return;
                }
                self.heard_from(&thing, gw);
            }
            DeviceEvent::Online { thing } => {
                if self.known(&thing, now, "online") {
                    self.heard_from(&thing, gw);
                }
            }
            DeviceEvent::Offline { thing } => {
                let from_its_gateway = self
                    .things
                    .get(&thing)
                    .is_some_and(|e| e.gateway == Some(gw));
                if from_its_gateway {
                    self.go_offline(&thing, "its gateway says so");
                }
            }
            DeviceEvent::Reported {
                thing,
                values,
                at_ms,
            } => {
                if !self.things.contains_key(&thing)
                    && !self.auto_provision(&thing, None, &Map::new(), now, now_ms)
                {
                    return;
                }
                self.heard_from(&thing, gw);
                self.report(&thing, &values, at_ms);
            }
            DeviceEvent::Info { thing, info } => {
                if self.known(&thing, now, "info") {
                    self.heard_from(&thing, gw);
                    self.device_info(&thing, &info);
                }
            }
            DeviceEvent::Event {
                thing,
                name,
                payload,
                at_ms,
            } => {
                if self.known(&thing, now, "event") {
                    self.heard_from(&thing, gw);
                    self.device_event(&thing, name, payload, at_ms);
                }
            }
            DeviceEvent::ActionReply {
                thing,
                correlation,
                outcome,
            } => self.action_reply(&thing, &correlation, outcome, now_ms),
            DeviceEvent::Raw { source, .. } => {
                self.stats.raw_messages.fetch_add(1, Ordering::Relaxed);
                tracing::trace!(%source, "raw device message ignored by the things service");
            }
        }
    }

    /// True if the thing is provisioned; otherwise counts and (rate-limited) logs it.
    fn known(&mut self, thing: &ThingId, now: Instant, what: &str) -> bool {
        if self.things.contains_key(thing) {
            return true;
        }
        self.unknown_device(thing, now, what);
        false
    }

    fn unknown_device(&mut self, thing: &ThingId, now: Instant, why: &str) {
        self.stats.unknown_devices.fetch_add(1, Ordering::Relaxed);
        if self.unknown.should_log(thing, now) {
            tracing::warn!(thing = %thing, reason = why, "message from an unknown device dropped (provision it with brume.things.provision)");
        }
    }

    fn auto_provision(
        &mut self,
        thing: &ThingId,
        hint: Option<&str>,
        info: &Map<String, Json>,
        now: Instant,
        now_ms: u64,
    ) -> bool {
        if self.settings.provisioning == Provisioning::Explicit {
            self.unknown_device(thing, now, "provisioning is explicit");
            return false;
        }
        let ty = hint
            .and_then(|h| self.catalog.get(h))
            .or_else(|| {
                self.settings
                    .auto_type
                    .as_deref()
                    .and_then(|t| self.catalog.get(t))
            })
            .cloned();
        let Some(ty) = ty else {
            self.unknown_device(thing, now, "no known type hint and no things.auto_type");
            return false;
        };
        let mut t = Thing::new(thing.clone(), ty.id.clone(), now_ms);
        match ty.check_info_reported(thing, info) {
            Ok(()) => {
                t.apply_info(info);
            }
            Err(e) => {
                self.stats.invalid_messages.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(thing = %thing, error = %e, "info of an auto-provisioned device ignored");
            }
        }
        tracing::info!(thing = %thing, r#type = %ty.id, "thing auto-provisioned");
        self.stats.auto_provisioned.fetch_add(1, Ordering::Relaxed);
        self.insert_thing(t, ty, None, true);
        true
    }

    fn insert_thing(
        &mut self,
        thing: Thing,
        ty: Arc<ThingType>,
        secret: Option<SecretHash>,
        auto: bool,
    ) {
        let id = thing.id.clone();
        self.out.store.push(StoreOp::PutThing {
            id: id.clone(),
            type_id: thing.type_id.clone(),
            info: thing.info.clone(),
            created_ms: thing.created_ms,
            secret: secret.clone(),
        });
        let mut kwargs = Dict::new();
        kwargs.insert("thing".into(), Value::from(id.as_str()));
        kwargs.insert("type".into(), Value::from(thing.type_id.as_str()));
        kwargs.insert("info".into(), Value::from(Json::Object(thing.info.clone())));
        kwargs.insert("created".into(), Value::from(thing.created_ms));
        kwargs.insert("auto".into(), Value::Bool(auto));
        self.publish("brume.things.on_provision".into(), kwargs);
        self.things.insert(
            id,
            Entry {
                thing,
                ty,
                state: ThingState::default(),
                online: false,
                gateway: None,
                secret,
            },
        );
    }

    /// Marks a thing as reachable through `gw`; on the offline → online edge, publishes
    /// `on_online` and sends its pending desired values again.
    fn heard_from(&mut self, thing: &ThingId, gw: GatewayId) {
        let Some(e) = self.things.get_mut(thing) else {
            return;
        };
        e.gateway = Some(gw);
        if e.online {
            return;
        }
        e.online = true;
        let pending = e.state.pending_desired();
        let type_id = e.thing.type_id.clone();
        tracing::debug!(thing = %thing, gateway = gw, "thing online");
        let mut kwargs = Dict::new();
        kwargs.insert("thing".into(), Value::from(thing.as_str()));
        kwargs.insert("type".into(), Value::from(type_id));
        kwargs.insert("gateway".into(), Value::from(gw));
        self.publish("brume.things.on_online".into(), kwargs);
        if !pending.is_empty() {
            let cmd = DeviceCommand::SetDesired {
                thing: thing.clone(),
                values: pending,
            };
            // Best effort: what does not fit is sent again at the next online edge.
            let _ = self.send_command(Some(gw), cmd);
        }
    }

    fn go_offline(&mut self, thing: &ThingId, why: &str) {
        let Some(e) = self.things.get_mut(thing) else {
            return;
        };
        if !e.online {
            return;
        }
        e.online = false;
        tracing::debug!(thing = %thing, reason = why, "thing offline");
        let mut kwargs = Dict::new();
        kwargs.insert("thing".into(), Value::from(thing.as_str()));
        self.publish("brume.things.on_offline".into(), kwargs);
        let message = format!("thing {thing:?} went offline ({why})");
        self.fail_pending_of(thing, || {
            ApiError::new(errors::THING_OFFLINE, message.clone()).with("thing", thing.as_str())
        });
    }

    fn report(&mut self, thing: &ThingId, values: &Map<String, Json>, at_ms: u64) {
        let Some(e) = self.things.get_mut(thing) else {
            return;
        };
        if let Err(err) = e.ty.check_reported(thing, values) {
            self.stats.invalid_reports.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(thing = %thing, error = %err, "report rejected");
            return;
        }
        let outcome = e.state.apply_report(values, at_ms);
        let rows: Vec<(String, Stamped)> = values
            .keys()
            .filter_map(|k| e.state.reported.get(k).map(|s| (k.clone(), s.clone())))
            .collect();
        if !rows.is_empty() {
            self.out.store.push(StoreOp::PutReported {
                thing: thing.clone(),
                values: rows,
            });
        }
        if !outcome.changed.is_empty() {
            let mut vals = Dict::new();
            let mut at = Dict::new();
            for (name, s) in &outcome.changed {
                vals.insert(name.clone(), Value::from(s.value.clone()));
                at.insert(name.clone(), Value::from(s.at_ms));
            }
            let mut kwargs = Dict::new();
            kwargs.insert("thing".into(), Value::from(thing.as_str()));
            kwargs.insert("values".into(), Value::Dict(vals));
            kwargs.insert("at".into(), Value::Dict(at));
            self.stats.state_events.fetch_add(1, Ordering::Relaxed);
            self.publish(format!("brume.thing.{thing}.state"), kwargs);
        }
        if !outcome.settled.is_empty() {
            self.out.store.push(StoreOp::ClearDesired {
                thing: thing.clone(),
                names: outcome.settled.clone(),
            });
            for name in outcome.settled {
                let stamped = outcome
                    .changed
                    .get(&name)
                    .cloned()
                    .or_else(|| {
                        self.things
                            .get(thing)
                            .and_then(|e| e.state.reported.get(&name).cloned())
                    })
                    .unwrap_or(Stamped {
                        value: Json::Null,
                        at_ms,
                    });
                self.settle(thing, name, stamped);
            }
        }
    }

    fn settle(&mut self, thing: &ThingId, name: String, stamped: Stamped) {
        let Some(id) = self.set_by_property.remove(&(thing.clone(), name.clone())) else {
            return;
        };
        let Some(w) = self.sets.get_mut(&id) else {
            return;
        };
        w.waiting.remove(&name);
        w.settled.insert(name, stamped);
        if w.waiting.is_empty()
            && let Some(w) = self.sets.remove(&id)
        {
            let result = json!({ "thing": w.thing.as_str(), "settled": stamped_map(&w.settled) });
            let _ = w.reply.send(Ok(result));
        }
    }

    fn device_info(&mut self, thing: &ThingId, info: &Map<String, Json>) {
        let Some(e) = self.things.get_mut(thing) else {
            return;
        };
        if let Err(err) = e.ty.check_info_reported(thing, info) {
            self.stats.invalid_messages.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(thing = %thing, error = %err, "device info rejected");
            return;
        }
        if !e.thing.apply_info(info).is_empty() {
            self.out.store.push(StoreOp::SetInfo {
                id: thing.clone(),
                info: e.thing.info.clone(),
            });
        }
    }

    fn device_event(&mut self, thing: &ThingId, name: String, payload: Json, at_ms: u64) {
        let Some(e) = self.things.get(thing) else {
            return;
        };
        if let Err(err) = e.ty.check_event_payload(thing, &name, &payload) {
            self.stats.invalid_messages.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(thing = %thing, error = %err, "device event rejected");
            return;
        }
        let mut kwargs = Dict::new();
        kwargs.insert("thing".into(), Value::from(thing.as_str()));
        kwargs.insert("event".into(), Value::from(name.as_str()));
        kwargs.insert("payload".into(), Value::from(payload));
        kwargs.insert("at".into(), Value::from(at_ms));
        self.publish(format!("brume.thing.{thing}.event.{name}"), kwargs);
    }

    fn action_reply(
        &mut self,
        thing: &ThingId,
        correlation: &str,
        outcome: Result<Json, String>,
        now_ms: u64,
    ) {
        let matches = self.actions.get(correlation).map(|w| &w.thing == thing);
        match matches {
            None => {
                self.stats.invalid_messages.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(thing = %thing, correlation, "reply to an unknown or expired action call ignored");
                return;
            }
            Some(false) => {
                self.stats.invalid_messages.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(thing = %thing, correlation, "action reply from a different thing ignored");
                return;
            }
            Some(true) => {}
        }
        let Some(w) = self.actions.remove(correlation) else {
            return;
        };
        let checked = match (&outcome, self.things.get(thing)) {
            (Ok(output), Some(e)) => {
                e.ty.check_action_output(thing, &w.action, output)
                    .map_err(|err| format!("the device's reply was rejected: {err}"))
            }
            (Ok(_), None) => Err("the thing was deleted".to_owned()),
            (Err(message), _) => Err(format!("the device answered with an error: {message}")),
        };
        match (checked, outcome) {
            (Ok(()), Ok(output)) => {
                self.out.store.push(StoreOp::UpdateAction {
                    id: w.id,
                    status: ActionStatus::Done,
                    result: Some(output.clone()),
                    at_ms: now_ms,
                });
                let _ = w.reply.send(Ok(output));
            }
            (Err(message), _) | (Ok(()), Err(message)) => {
                tracing::info!(thing = %thing, action = %w.action, %message, "action failed");
                self.out.store.push(StoreOp::UpdateAction {
                    id: w.id,
                    status: ActionStatus::Failed,
                    result: Some(Json::String(message.clone())),
                    at_ms: now_ms,
                });
                let err = ApiError::new(errors::ACTION_FAILED, message)
                    .with("thing", thing.as_str())
                    .with("action", w.action.as_str());
                let _ = w.reply.send(Err(err));
            }
        }
    }

    fn publish(&mut self, topic: String, kwargs: Dict) {
        self.out.publications.push(Publication {
            topic,
            payload: Payload::kwargs(kwargs),
        });
    }

    /// Fails every pending set and action of `thing`.
    fn fail_pending_of(&mut self, thing: &ThingId, err: impl Fn() -> ApiError) {
        let set_ids: Vec<u64> = self
            .sets
            .iter()
            .filter(|(_, w)| &w.thing == thing)
            .map(|(id, _)| *id)
            .collect();
        for id in set_ids {
            self.fail_set(id, err());
        }
        let calls: Vec<String> = self
            .actions
            .iter()
            .filter(|(_, w)| &w.thing == thing)
            .map(|(c, _)| c.clone())
            .collect();
        for c in calls {
            if let Some(w) = self.actions.remove(&c) {
                let e = err();
                self.out.store.push(StoreOp::UpdateAction {
                    id: w.id,
                    status: ActionStatus::Failed,
                    result: Some(Json::String(e.message.clone())),
                    at_ms: crate::things::now_ms(),
                });
                let _ = w.reply.send(Err(e));
            }
        }
    }

    fn fail_set(&mut self, id: u64, err: ApiError) {
        if let Some(w) = self.sets.remove(&id) {
            for name in &w.waiting {
                let key = (w.thing.clone(), name.clone());
                if self.set_by_property.get(&key) == Some(&id) {
                    self.set_by_property.remove(&key);
                }
            }
            let _ = w.reply.send(Err(err));
        }
    }

    // ----- deadlines -----

    /// The earliest deadline of a pending call, if any.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.deadlines.peek().map(|Reverse((at, _))| *at)
    }

    /// Fails the calls whose deadline has passed with `wamp.error.timeout`.
    pub fn expire(&mut self, now: Instant, now_ms: u64) {
        while let Some(Reverse((at, _))) = self.deadlines.peek() {
            if *at > now {
                break;
            }
            let Some(Reverse((_, key))) = self.deadlines.pop() else {
                break;
            };
            match key {
                Deadline::Set(id) => {
                    let Some(w) = self.sets.get(&id) else {
                        continue;
                    };
                    let names: Vec<Value> =
                        w.waiting.iter().map(|n| Value::from(n.as_str())).collect();
                    let err = ApiError::new(
                        uris::TIMEOUT,
                        format!(
                            "thing {:?} did not report {} within {} ms; the desired values stay pending",
                            w.thing.as_str(),
                            w.waiting.iter().cloned().collect::<Vec<_>>().join(", "),
                            w.timeout_ms
                        ),
                    )
                    .with("thing", w.thing.as_str())
                    .with("pending", Value::List(names));
                    self.fail_set(id, err);
                }
                Deadline::Action(c) => {
                    let Some(w) = self.actions.remove(&c) else {
                        continue;
                    };
                    let message = format!(
                        "thing {:?} did not answer action {:?} within {} ms",
                        w.thing.as_str(),
                        w.action,
                        w.timeout_ms
                    );
                    tracing::info!(thing = %w.thing, action = %w.action, "action expired");
                    self.out.store.push(StoreOp::UpdateAction {
                        id: w.id,
                        status: ActionStatus::Expired,
                        result: Some(Json::String(message.clone())),
                        at_ms: now_ms,
                    });
                    let err = ApiError::new(uris::TIMEOUT, message)
                        .with("thing", w.thing.as_str())
                        .with("action", w.action.as_str());
                    let _ = w.reply.send(Err(err));
                }
            }
        }
    }

    /// Fails every pending call (at shutdown).
    pub fn cancel_all(&mut self, now_ms: u64) {
        let ids: Vec<u64> = self.sets.keys().copied().collect();
        for id in ids {
            self.fail_set(
                id,
                ApiError::new(uris::CANCELED, "the hub is shutting down"),
            );
        }
        for (_, w) in self.actions.drain() {
            self.out.store.push(StoreOp::UpdateAction {
                id: w.id,
                status: ActionStatus::Expired,
                result: Some(Json::String("the hub shut down before the reply".into())),
                at_ms: now_ms,
            });
            let _ = w.reply.send(Err(ApiError::new(
                uris::CANCELED,
                "the hub is shutting down",
            )));
        }
        self.deadlines.clear();
    }

    // ----- API requests -----

    /// Handles one API request; the reply is sent now or, for `set` and actions, when the device
    /// answers or the deadline passes.
    pub fn handle_request(&mut self, req: Request, reply: Reply, now: Instant, now_ms: u64) {
        let answer = match req {
            Request::List { type_id, online } => Ok(self.list(type_id.as_deref(), online)),
            Request::Get { thing, property } => self.get(&thing, property.as_deref()),
            Request::Provision {
                thing,
                type_id,
                info,
            } => self.provision(thing, &type_id, info, now_ms),
            Request::Delete { thing } => self.delete(&thing),
            Request::UpdateInfo { thing, values } => self.update_info(&thing, &values),
            Request::TypesList => Ok(self.types_list()),
            Request::TypesGet { type_id } => self.types_get(&type_id),
            Request::Describe { thing } => self.describe(&thing),
            Request::Set {
                thing,
                values,
                timeout,
            } => {
                return self.set(thing, values, timeout, reply, now, now_ms);
            }
            Request::Action {
                thing,
                action,
                input,
                timeout,
            } => {
                return self.invoke(thing, action, input, timeout, reply, now, now_ms);
            }
        };
        let _ = reply.send(answer);
    }

    fn entry(&self, thing: &ThingId) -> Result<&Entry, ApiError> {
        self.things
            .get(thing)
            .ok_or_else(|| ApiError::no_such_thing(thing))
    }

    fn summary(e: &Entry) -> Map<String, Json> {
        let mut m = Map::new();
        m.insert("thing".into(), Json::from(e.thing.id.as_str()));
        m.insert("type".into(), Json::from(e.thing.type_id.as_str()));
        m.insert("online".into(), Json::Bool(e.online));
        m.insert("info".into(), Json::Object(e.thing.info.clone()));
        m.insert("created".into(), Json::from(e.thing.created_ms));
        m
    }

    fn list(&self, type_id: Option<&str>, online: Option<bool>) -> Json {
        let mut found: Vec<&Entry> = self
            .things
            .values()
            .filter(|e| type_id.is_none_or(|t| e.thing.type_id == t))
            .filter(|e| online.is_none_or(|o| e.online == o))
            .collect();
        found.sort_by(|a, b| a.thing.id.cmp(&b.thing.id));
        Json::Array(
            found
                .into_iter()
                .map(|e| Json::Object(Self::summary(e)))
                .collect(),
        )
    }

    fn get(&self, thing: &ThingId, property: Option<&str>) -> Result<Json, ApiError> {
        let e = self.entry(thing)?;
        let Some(name) = property else {
            let mut m = Self::summary(e);
            m.insert("reported".into(), stamped_map(&e.state.reported));
            m.insert("desired".into(), stamped_map(&e.state.desired));
            return Ok(Json::Object(m));
        };
        let Some(p) = e.ty.property(name) else {
            return Err(ApiError::check(&device_models::CheckError {
                thing: thing.clone(),
                target: device_models::Target::Property(name.to_owned()),
                rule: device_models::CheckRule::Undefined {
                    type_id: e.ty.id.clone(),
                },
            }));
        };
        let mut m = Map::new();
        m.insert("thing".into(), Json::from(thing.as_str()));
        m.insert("property".into(), Json::from(name));
        match p.kind {
            device_models::PropertyKind::Info => {
                m.insert("kind".into(), Json::from("info"));
                m.insert(
                    "value".into(),
                    e.thing.info.get(name).cloned().unwrap_or(Json::Null),
                );
            }
            device_models::PropertyKind::State => {
                m.insert("kind".into(), Json::from("state"));
                match e.state.reported.get(name) {
                    Some(s) => {
                        m.insert("value".into(), s.value.clone());
                        m.insert("at".into(), Json::from(s.at_ms));
                    }
                    None => {
                        m.insert("value".into(), Json::Null);
                    }
                }
                if let Some(d) = e.state.desired.get(name) {
                    m.insert("desired".into(), stamped_json(d));
                }
            }
        }
        Ok(Json::Object(m))
    }

    fn provision(
        &mut self,
        thing: ThingId,
        type_id: &str,
        info: Map<String, Json>,
        now_ms: u64,
    ) -> Result<Json, ApiError> {
        if let Some(e) = self.things.get(&thing) {
            return Err(ApiError::invalid(format!(
                "thing {:?} already exists (type {:?})",
                thing.as_str(),
                e.thing.type_id
            ))
            .with("thing", thing.as_str()));
        }
        let Some(ty) = self.catalog.get(type_id).cloned() else {
            return Err(
                ApiError::new(errors::NO_SUCH_TYPE, format!("no thing type {type_id:?}"))
                    .with("type", type_id),
            );
        };
        ty.check_info_reported(&thing, &info)
            .map_err(|e| ApiError::check(&e))?;
        let secret = Secret::generate();
        let hash = SecretHash::new(&secret);
        let mut t = Thing::new(thing.clone(), ty.id.clone(), now_ms);
        t.apply_info(&info);
        tracing::info!(thing = %thing, r#type = %ty.id, "thing provisioned");
        self.insert_thing(t, ty, Some(hash), false);
        let summary = self
            .things
            .get(&thing)
            .map(Self::summary)
            .unwrap_or_default();
        Ok(json!({ "thing": summary, "secret": secret.expose() }))
    }

    fn delete(&mut self, thing: &ThingId) -> Result<Json, ApiError> {
        if !self.things.contains_key(thing) {
            return Err(ApiError::no_such_thing(thing));
        }
        let message = format!("thing {thing:?} was deleted");
        self.fail_pending_of(thing, || {
            ApiError::no_such_thing(thing).with("reason", message.as_str())
        });
        self.things.remove(thing);
        tracing::info!(thing = %thing, "thing deleted");
        self.out
            .store
            .push(StoreOp::DeleteThing { id: thing.clone() });
        let mut kwargs = Dict::new();
        kwargs.insert("thing".into(), Value::from(thing.as_str()));
        self.publish("brume.things.on_delete".into(), kwargs);
        Ok(json!({ "thing": thing.as_str(), "deleted": true }))
    }

    fn update_info(
        &mut self,
        thing: &ThingId,
        values: &Map<String, Json>,
    ) -> Result<Json, ApiError> {
        let e = self
            .things
            .get_mut(thing)
            .ok_or_else(|| ApiError::no_such_thing(thing))?;
        if values.is_empty() {
            return Err(ApiError::invalid("no info values given").with("thing", thing.as_str()));
        }
        e.ty.check_info_update(thing, values)
            .map_err(|err| ApiError::check(&err))?;
        if !e.thing.apply_info(values).is_empty() {
            self.out.store.push(StoreOp::SetInfo {
                id: thing.clone(),
                info: e.thing.info.clone(),
            });
        }
        Ok(json!({ "thing": thing.as_str(), "info": e.thing.info }))
    }

    fn types_list(&self) -> Json {
        Json::Array(
            self.catalog
                .list()
                .map(|t| {
                    let origin = match self.catalog.origin(&t.id) {
                        Some(TypeOrigin::File(_)) => "file",
                        _ => "builtin",
                    };
                    json!({
                        "id": t.id,
                        "title": t.title,
                        "description": t.description,
                        "version": t.version,
                        "origin": origin,
                    })
                })
                .collect(),
        )
    }

    fn types_get(&self, type_id: &str) -> Result<Json, ApiError> {
        let ty = self.catalog.get(type_id).ok_or_else(|| {
            ApiError::new(errors::NO_SUCH_TYPE, format!("no thing type {type_id:?}"))
                .with("type", type_id)
        })?;
        serde_json::to_value(&**ty)
            .map_err(|e| ApiError::new(uris::INVALID_ARGUMENT, format!("type {type_id:?}: {e}")))
    }

    fn describe(&self, thing: &ThingId) -> Result<Json, ApiError> {
        let e = self.entry(thing)?;
        Ok(device_models::thing_description(
            &e.thing,
            &e.ty,
            &self.settings.td,
        ))
    }

    fn offline_error(thing: &ThingId) -> ApiError {
        ApiError::new(
            errors::THING_OFFLINE,
            format!("thing {:?} is offline", thing.as_str()),
        )
        .with("thing", thing.as_str())
    }

    fn push_deadline(&mut self, now: Instant, timeout_ms: u64, key: Deadline) {
        self.deadlines
            .push(Reverse((now + Duration::from_millis(timeout_ms), key)));
    }

    fn set(
        &mut self,
        thing: ThingId,
        values: Map<String, Json>,
        call_timeout: Option<Duration>,
        reply: Reply,
        now: Instant,
        now_ms: u64,
    ) {
        let Some(e) = self.things.get_mut(&thing) else {
            let _ = reply.send(Err(ApiError::no_such_thing(&thing)));
            return;
        };
        if values.is_empty() {
            let _ = reply.send(Err(
                ApiError::invalid("no values to set").with("thing", thing.as_str())
            ));
            return;
        }
        if let Err(err) = e.ty.check_desired(&thing, &values) {
            let _ = reply.send(Err(ApiError::check(&err)));
            return;
        }
        let pending = e.state.set_desired(&values, now_ms);
        let put: Vec<(String, Stamped)> = pending
            .iter()
            .filter_map(|n| e.state.desired.get(n).map(|s| (n.clone(), s.clone())))
            .collect();
        let cleared: Vec<String> = values
            .keys()
            .filter(|k| !pending.contains(k))
            .cloned()
            .collect();
        let already: BTreeMap<String, Stamped> = cleared
            .iter()
            .filter_map(|n| e.state.reported.get(n).map(|s| (n.clone(), s.clone())))
            .collect();
        let online = e.online;
        let gateway = e.gateway;
        let desired_values: Map<String, Json> = put
            .iter()
            .map(|(n, s)| (n.clone(), s.value.clone()))
            .collect();
        if !put.is_empty() {
            self.out.store.push(StoreOp::PutDesired {
                thing: thing.clone(),
                values: put,
            });
        }
        if !cleared.is_empty() {
            self.out.store.push(StoreOp::ClearDesired {
                thing: thing.clone(),
                names: cleared,
            });
        }
        // A later set of a property supersedes the calls still waiting on it.
        for name in values.keys() {
            if let Some(id) = self
                .set_by_property
                .get(&(thing.clone(), name.clone()))
                .copied()
            {
                self.fail_set(
                    id,
                    ApiError::new(
                        uris::CANCELED,
                        format!(
                            "superseded by a later set of {name:?} on thing {:?}",
                            thing.as_str()
                        ),
                    )
                    .with("thing", thing.as_str())
                    .with("property", name.as_str()),
                );
            }
        }
        if pending.is_empty() {
            let result = json!({ "thing": thing.as_str(), "settled": stamped_map(&already) });
            let _ = reply.send(Ok(result));
            return;
        }
        if !online || gateway.is_none() {
            let names: Vec<Value> = pending.iter().map(|n| Value::from(n.as_str())).collect();
            let err = ApiError::new(
                errors::THING_OFFLINE,
                format!(
                    "thing {:?} is offline; the desired values stay pending and are sent when it comes back",
                    thing.as_str()
                ),
            )
            .with("thing", thing.as_str())
            .with("pending", Value::List(names));
            let _ = reply.send(Err(err));
            return;
        }
        let cmd = DeviceCommand::SetDesired {
            thing: thing.clone(),
            values: desired_values,
        };
        match self.send_command(gateway, cmd) {
            Ok(()) => {}
            Err(SendFailure::Full) => {
                let _ = reply.send(Err(ApiError::new(
                    uris::UNAVAILABLE,
                    format!(
                        "the gateway of thing {:?} is not taking commands; the desired values stay pending",
                        thing.as_str()
                    ),
                )
                .with("thing", thing.as_str())));
                return;
            }
            Err(SendFailure::Gone) => {
                let _ = reply.send(Err(Self::offline_error(&thing)));
                return;
            }
        }
        let timeout_ms = effective_timeout(self.settings.set_timeout, call_timeout);
        let id = self.next_set;
        self.next_set += 1;
        for name in &pending {
            self.set_by_property
                .insert((thing.clone(), name.clone()), id);
        }
        self.sets.insert(
            id,
            SetWaiter {
                thing,
                waiting: pending.into_iter().collect(),
                settled: already,
                timeout_ms,
                reply,
            },
        );
        self.push_deadline(now, timeout_ms, Deadline::Set(id));
    }

    #[allow(clippy::too_many_arguments)]
    fn invoke(
        &mut self,
        thing: ThingId,
        action: String,
        input: Json,
        call_timeout: Option<Duration>,
        reply: Reply,
        now: Instant,
        now_ms: u64,
    ) {
        let Some(e) = self.things.get(&thing) else {
            let _ = reply.send(Err(ApiError::no_such_thing(&thing)));
            return;
        };
        let Some(def) = e.ty.action(&action) else {
            let _ = reply.send(Err(ApiError::new(
                errors::NO_SUCH_ACTION,
                format!(
                    "thing {:?} (type {:?}) has no action {action:?}",
                    thing.as_str(),
                    e.ty.id
                ),
            )
            .with("thing", thing.as_str())
            .with("action", action.as_str())));
            return;
        };
        if let Err(err) = e.ty.check_action_input(&thing, &action, &input) {
            let _ = reply.send(Err(ApiError::check(&err)));
            return;
        }
        if !e.online || e.gateway.is_none() {
            let _ = reply.send(Err(Self::offline_error(&thing)));
            return;
        }
        let gateway = e.gateway;
        let timeout_ms = effective_timeout(Duration::from_millis(def.timeout_ms), call_timeout);
        let id = self.next_action;
        self.next_action += 1;
        let correlation = id.to_string();
        let span = tracing::debug_span!("action", thing = %thing, action = %action, id);
        let _guard = span.enter();
        self.out.store.push(StoreOp::InsertAction {
            id,
            thing: thing.clone(),
            action: action.clone(),
            input: input.clone(),
            status: ActionStatus::Queued,
            at_ms: now_ms,
        });
        let cmd = DeviceCommand::InvokeAction {
            thing: thing.clone(),
            action: action.clone(),
            input,
            correlation: correlation.clone(),
            deadline_ms: now_ms + timeout_ms,
        };
        let failure = match self.send_command(gateway, cmd) {
            Ok(()) => None,
            Err(SendFailure::Full) => Some(
                ApiError::new(
                    uris::UNAVAILABLE,
                    format!(
                        "the gateway of thing {:?} is not taking commands",
                        thing.as_str()
                    ),
                )
                .with("thing", thing.as_str()),
            ),
            Err(SendFailure::Gone) => Some(Self::offline_error(&thing)),
        };
        if let Some(err) = failure {
            self.out.store.push(StoreOp::UpdateAction {
                id,
                status: ActionStatus::Failed,
                result: Some(Json::String(err.message.clone())),
                at_ms: now_ms,
            });
            let _ = reply.send(Err(err));
            return;
        }
        tracing::debug!("action sent");
        self.out.store.push(StoreOp::UpdateAction {
            id,
            status: ActionStatus::Sent,
            result: None,
            at_ms: now_ms,
        });
        self.actions.insert(
            correlation.clone(),
            ActionWaiter {
                id,
                thing,
                action,
                timeout_ms,
                reply,
            },
        );
        self.push_deadline(now, timeout_ms, Deadline::Action(correlation));
    }
}

/// The timeout of a call: the service's, shortened by the CALL's `timeout` option when that is
/// smaller (and not zero, which WAMP uses for "no timeout").
pub fn effective_timeout(own: Duration, call: Option<Duration>) -> u64 {
    let own = u64::try_from(own.as_millis()).unwrap_or(u64::MAX);
    match call.map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)) {
        Some(c) if c > 0 => own.min(c),
        _ => own,
    }
}

#[cfg(test)]
mod tests;
