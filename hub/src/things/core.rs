//! [`Core`]: the things service's logic without I/O.
//!
//! It is fed device events, API requests and the current time, and it leaves what must happen in
//! its [`Outbox`] (publications and database writes) for the async shell in `service.rs` to carry
//! out. Commands to gateways are the exception: they go out at once with a non-blocking
//! `try_send`, since whether one fits decides the call's answer.
//!
//! Pending `set` and action calls keep their reply channel here, with a deadline; the shell calls
//! [`Core::expire`] when the earliest deadline ([`Core::next_deadline`]) passes.
//!
//! - this file: the registry's types, gateways, deadlines and the helpers both halves share;
//! - `events`: what devices say (provisioning policy, online/offline, reports, replies);
//! - `requests`: what the API asks (reads, lifecycle, `set` and actions).

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use device_models::{
    DeviceCommand, Stamped, TdContext, Thing, ThingId, ThingState, ThingType, TypeCatalog,
    TypeOrigin,
};
use serde_json::{Map, Value as Json, json};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::credentials::RegistryCredentials;
use super::link::{CallStats, GatewayId, ThingsStats};
use super::request::{ApiError, Reply, Request, errors};
use super::secret::{self, SecretHash};
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

/// Listeners following the registry (see [`Core::follow`]).
#[derive(Default)]
struct Followers(Vec<Arc<dyn gateways::DirectoryListener>>);

impl std::fmt::Debug for Followers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} followers", self.0.len())
    }
}

impl Followers {
    fn added(&self, thing: &ThingId, ty: &Arc<ThingType>) {
        for l in &self.0 {
            l.added(thing, ty);
        }
    }

    fn removed(&self, thing: &ThingId) {
        for l in &self.0 {
            l.removed(thing);
        }
    }
}

/// One publication for the router's broker.
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

/// Things by id: looked up several times for every device report, so hashed with aHash (still
/// randomly keyed: ids come from devices under automatic provisioning).
type ThingMap<V> = HashMap<ThingId, V, ahash::RandomState>;

/// One thing in memory.
#[derive(Debug)]
struct Entry {
    thing: Thing,
    ty: Arc<ThingType>,
    state: ThingState,
    online: bool,
    /// The gateway the thing was last heard on, where its commands go.
    gateway: Option<GatewayId>,
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

/// How a `set` or an action ended, for its [`CallStats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Succeeded,
    Refused,
    Failed,
    TimedOut,
    Canceled,
}

impl Outcome {
    /// The outcome of a call that waited on its device and ended with `err`.
    fn of_error(err: &ApiError) -> Outcome {
        match err.uri {
            uris::TIMEOUT => Outcome::TimedOut,
            uris::CANCELED => Outcome::Canceled,
            _ => Outcome::Failed,
        }
    }

    /// Counts it.
    fn count(self, stats: &CallStats) {
        let counter = match self {
            Outcome::Succeeded => &stats.succeeded,
            Outcome::Refused => &stats.refused,
            Outcome::Failed => &stats.failed,
            Outcome::TimedOut => &stats.timed_out,
            Outcome::Canceled => &stats.canceled,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Deadline {
    Set(u64),
    Action(String),
}

/// Rate-limits log lines about a thing (an unknown device, a rejected report): at most one a
/// minute per thing, remembering at most 1024 things, each line saying how many went unlogged
/// since the last. The counters stay exact; only the lines are limited, so a device sending 300
/// bad reports costs one line, not 300.
#[derive(Debug, Default)]
struct ThingLog {
    last: HashMap<ThingId, (Instant, u64)>,
}

impl ThingLog {
    const EVERY: Duration = Duration::from_secs(60);
    const REMEMBER: usize = 1024;

    /// `Some(unlogged since the last line)` when a line is due now, else `None` (and counted).
    fn should_log(&mut self, thing: &ThingId, now: Instant) -> Option<u64> {
        if let Some((at, unlogged)) = self.last.get_mut(thing) {
            if now.duration_since(*at) < Self::EVERY {
                *unlogged += 1;
                return None;
            }
            let n = *unlogged;
            *at = now;
            *unlogged = 0;
            return Some(n);
        }
        if self.last.len() >= Self::REMEMBER {
            self.last.clear();
        }
        self.last.insert(thing.clone(), (now, 0));
        Some(0)
    }
}

/// Devices that gateways report present but that are not provisioned (their traffic is dropped),
/// with the gateway they are on and the info they announced, so that provisioning one while it is
/// connected brings it online at once. Otherwise it would stay offline, its commands refused,
/// until it spoke again: a device that reports only on change, or only when polled (many raw TCP
/// and serial devices), might never. An entry goes when its gateway says the device is offline or
/// detaches. Bounded: past [`Unprovisioned::MAX`] devices, further ones are not remembered, and
/// past [`Unprovisioned::MAX_INFO`] info keys a device's further keys are not (the info is checked
/// against the thing type only once it is provisioned).
#[derive(Debug, Default)]
struct Unprovisioned {
    devices: HashMap<ThingId, Present>,
}

#[derive(Debug)]
struct Present {
    gateway: GatewayId,
    info: Map<String, Json>,
}

impl Unprovisioned {
    const MAX: usize = 4096;
    const MAX_INFO: usize = 64;

    /// `thing` was heard on `gw`, announcing `info`.
    fn heard(&mut self, thing: &ThingId, gw: GatewayId, info: &Map<String, Json>) {
        if self.devices.len() >= Self::MAX && !self.devices.contains_key(thing) {
            return;
        }
        let p = self
            .devices
            .entry(thing.clone())
            .or_insert_with(|| Present {
                gateway: gw,
                info: Map::new(),
            });
        p.gateway = gw;
        for (k, v) in info {
            if p.info.len() < Self::MAX_INFO || p.info.contains_key(k) {
                p.info.insert(k.clone(), v.clone());
            }
        }
    }

    /// `gw` says `thing` is gone.
    fn gone(&mut self, thing: &ThingId, gw: GatewayId) {
        if self.devices.get(thing).is_some_and(|p| p.gateway == gw) {
            self.devices.remove(thing);
        }
    }

    fn detached(&mut self, gw: GatewayId) {
        self.devices.retain(|_, p| p.gateway != gw);
    }

    fn take(&mut self, thing: &ThingId) -> Option<Present> {
        self.devices.remove(thing)
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
    things: ThingMap<Entry>,
    gateways: HashMap<GatewayId, Gateway>,
    sets: HashMap<u64, SetWaiter>,
    set_by_property: HashMap<(ThingId, String), u64>,
    next_set: u64,
    actions: HashMap<String, ActionWaiter>,
    next_action: u64,
    deadlines: BinaryHeap<Reverse<(Instant, Deadline)>>,
    unknown: ThingLog,
    /// Reports, info and events that broke their thing's type.
    rejected: ThingLog,
    /// Set when the type check refuses a report, info, event or action reply: a batch of
    /// events learns from it which of its covered messages to mark refused.
    refusal: bool,
    unprovisioned: Unprovisioned,
    stats: Arc<ThingsStats>,
    /// The secrets gateways check devices against, kept in step with `things`.
    credentials: Arc<RegistryCredentials>,
    /// Gateways following the registry's things and types, told of every change in order.
    followers: Followers,
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
        credentials: Arc<RegistryCredentials>,
    ) -> Result<Core, CoreError> {
        if let Some(t) = &settings.auto_type
            && catalog.get(t).is_none()
        {
            return Err(CoreError::UnknownAutoType(t.clone()));
        }
        let mut things =
            ThingMap::with_capacity_and_hasher(loaded.things.len(), Default::default());
        for t in loaded.things {
            let Some(ty) = catalog.get(&t.type_id).cloned() else {
                return Err(CoreError::UnknownType {
                    thing: t.id.into_string(),
                    type_id: t.type_id,
                });
            };
            credentials.insert(t.id.clone(), t.secret);
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
            unknown: ThingLog::default(),
            rejected: ThingLog::default(),
            refusal: false,
            unprovisioned: Unprovisioned::default(),
            stats,
            credentials,
            followers: Followers::default(),
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

    // ----- gateways -----

    /// `listener` follows the registry from now on: told every thing now, then each
    /// provisioning and deletion (see [`gateways::ThingDirectory`]).
    pub fn follow(&mut self, listener: Arc<dyn gateways::DirectoryListener>) {
        for (id, e) in &self.things {
            listener.added(id, &e.ty);
        }
        self.followers.0.push(listener);
    }

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
        self.unprovisioned.detached(id);
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
                Outcome::of_error(&e).count(&self.stats.actions);
                self.out.store.push(StoreOp::UpdateAction {
                    id: w.id,
                    status: ActionStatus::Failed,
                    result: Some(Json::String(e.message.clone())),
                    at_ms: device_models::now_ms(),
                });
                let _ = w.reply.send(Err(e));
            }
        }
    }

    /// Forgets the waiting calls whose caller has gone (the API dropped their reply after an
    /// INTERRUPT): an action is logged as canceled, a set stops waiting (its desired values stay
    /// pending and still reach the device).
    fn forget_canceled(&mut self, now_ms: u64) {
        let calls: Vec<String> = self
            .actions
            .iter()
            .filter(|(_, w)| w.reply.is_closed())
            .map(|(c, _)| c.clone())
            .collect();
        for c in calls {
            if let Some(w) = self.actions.remove(&c) {
                tracing::debug!(thing = %w.thing, action = %w.action, "action canceled by its caller");
                Outcome::Canceled.count(&self.stats.actions);
                self.out.store.push(StoreOp::UpdateAction {
                    id: w.id,
                    status: ActionStatus::Canceled,
                    result: None,
                    at_ms: now_ms,
                });
            }
        }
        let sets: Vec<u64> = self
            .sets
            .iter()
            .filter(|(_, w)| w.reply.is_closed())
            .map(|(id, _)| *id)
            .collect();
        for id in sets {
            self.fail_set(id, ApiError::new(uris::CANCELED, "canceled by the caller"));
        }
    }

    fn fail_set(&mut self, id: u64, err: ApiError) {
        if let Some(w) = self.sets.remove(&id) {
            Outcome::of_error(&err).count(&self.stats.sets);
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
                    Outcome::TimedOut.count(&self.stats.actions);
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
            Outcome::Canceled.count(&self.stats.actions);
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

mod events;
mod requests;

#[cfg(test)]
mod tests;
