//! [`MqttGateway`]: the broker plus the gateway logic that sits in it ([`Core`], the broker's
//! hooks), the command loop that turns [`DeviceCommand`]s into MQTT messages, and
//! [`MqttHandle`], what the hub holds.
//!
//! Shared state and its rule: [`Core`] is shared by every connection task and the command loop.
//! Its [`Directory`] is behind an `RwLock` and its [`PendingActions`] behind a `Mutex`; both are
//! locked briefly and never across an `.await`. The directory follows the hub's registry in
//! process ([`crate::link::ThingDirectory`]): the hub's things service writes it at provisioning
//! and deletion. Events go to the hub through the bounded `GatewayIo::events` channel; a
//! connection task waits for room there, which slows that device's reads (its TCP window fills),
//! never another device's. Raw (unmodelled) messages go straight from the connection task to the
//! raw bridge's own bounded queue ([`MqttHandle::take_raw_messages`]), dropped and counted when
//! it is full, so the bridge never holds a device back.
//!
//! Retained desired state: `things/<id>/desired` holds what the last `SetDesired` asked for, and
//! the gateway remembers it (`Core::retained_desired`). When the device reports values equal to
//! it, those are dropped from the retained message (republished with what is left, or cleared
//! with an empty retained message once nothing is), so a device that restarts later is not handed
//! a setting it already applied, which would undo any change made since.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock, RwLock};

use bytes::Bytes;
use device_models::value::values_equal;
use device_models::{DeviceCommand, DeviceEvent, EventBatch, ThingId, ThingType};
use serde_json::{Map, Value, json};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use super::acl;
use super::binding::MqttBinding;
use super::broker::{
    Accepted, Broker, ConnectRequest, Hooks, Outbound, Published, Refusal, Rejected, SessionEnd,
};
use super::config::MqttConfig;
use super::device::{DeviceSession, Translator};
use super::directory::{Directory, Registered};
use super::error::{MqttError, PublishError, RegisterError, Rejection};
use super::log_limit::LogLimit;
use super::pending::{Pending, PendingActions};
use super::stats::{MqttStats, Stats, bump};
use super::topics::{ThingTopic, is_topic_name, parse_thing_topic, thing_topic};
use crate::link::{CredentialCheck, DeviceCredentials, GatewayIo, ObserverCheck, ObserverLogins};

/// At most one WARN line per cause of rejection this often; the count is exact in the stats.
const REJECTION_LOG_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

/// The gateway logic the broker calls into.
pub struct Core {
    name: String,
    auth_required: bool,
    max_message_bytes: usize,
    raw_bridge: bool,
    credentials: Arc<dyn DeviceCredentials>,
    /// Who may log in to watch every device topic (see [`ObserverLogins`]).
    observers: Option<Arc<dyn ObserverLogins>>,
    events: mpsc::Sender<DeviceEvent>,
    /// Raw messages for the bridge (`source`, payload); `None` without the raw bridge.
    raw: Option<mpsc::Sender<(String, Bytes)>>,
    directory: RwLock<Directory>,
    pending: Mutex<PendingActions>,
    /// Per thing, the values of its retained `things/<id>/desired` that the device has not yet
    /// reported back. Locked briefly, never across an `.await`.
    retained_desired: Mutex<HashMap<ThingId, Map<String, Value>>>,
    stats: Arc<Stats>,
    /// Set once the broker runs; used to publish a vanished device's `offline` status.
    publisher: OnceLock<mpsc::Sender<Outbound>>,
    /// Forgotten things whose retained desired state the command loop is to clear, and its
    /// wake-up. Locked briefly, never across an `.await`.
    clears: Mutex<Vec<ThingId>>,
    clear_ready: tokio::sync::Notify,
    /// The hub's memory budget: no new connection while over it.
    memory: device_models::MemoryPressure,
    /// Rejected device messages get one WARN line per cause and interval.
    rejections: LogLimit,
}

impl Core {
    fn directory(&self) -> std::sync::RwLockReadGuard<'_, Directory> {
        // Every write leaves the directory consistent, so a poisoned lock is still usable.
        self.directory.read().unwrap_or_else(|p| p.into_inner())
    }

    fn directory_mut(&self) -> std::sync::RwLockWriteGuard<'_, Directory> {
        self.directory.write().unwrap_or_else(|p| p.into_inner())
    }

    fn retained_desired(&self) -> std::sync::MutexGuard<'_, HashMap<ThingId, Map<String, Value>>> {
        // Every update leaves the map consistent, so a poisoned lock is still usable.
        self.retained_desired
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// What `things/<id>/desired` must become after the device reported `values`: the retained
    /// desired values they match are settled, and the message is republished with the rest, or
    /// cleared (an empty retained message) when none is left. `None` when nothing settled.
    fn settle_retained(&self, thing: &ThingId, values: &Map<String, Value>) -> Option<Outbound> {
        let mut retained = self.retained_desired();
        let pending = retained.get_mut(thing)?;
        let before = pending.len();
        pending.retain(|name, want| !values.get(name).is_some_and(|got| values_equal(want, got)));
        if pending.len() == before {
            return None;
        }
        let payload = if pending.is_empty() {
            retained.remove(thing);
            Bytes::new()
        } else {
            Bytes::from(Value::Object(pending.clone()).to_string())
        };
        debug!(%thing, cleared = payload.is_empty(), "retained desired state settled");
        Some(Outbound {
            topic: thing_topic(thing.as_str(), "desired"),
            payload,
            retain: true,
            at_least_once: true,
        })
    }

    /// Registers a thing (see [`MqttHandle::register`]).
    fn register(
        &self,
        thing: ThingId,
        ty: Arc<ThingType>,
        name: Option<String>,
    ) -> Result<(), RegisterError> {
        let binding = MqttBinding::from_type(&ty)?.map(Arc::new);
        let name = name.unwrap_or_else(|| thing.as_str().to_owned());
        if name.is_empty() || name.starts_with('$') || name.contains(['/', '+', '#', '\0']) {
            return Err(RegisterError::InvalidName(name));
        }
        let entry = Registered { ty, binding, name };
        self.directory_mut()
            .insert(thing, entry)
            .map_err(|taken| RegisterError::NameTaken {
                name: taken.name,
                owner: taken.owner,
            })
    }

    /// Forgets a thing (see [`MqttHandle::unregister`]).
    fn unregister(&self, thing: &ThingId) {
        self.directory_mut().remove(thing);
        self.retained_desired().remove(thing);
        // Its retained desired state in the broker must be cleared, so that a new thing of the
        // same id is not handed the old one's settings. Called from the registry's task, which
        // must not wait on the broker: the command loop sends the clear, before any command
        // that comes after it.
        self.clears
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(thing.clone());
        self.clear_ready.notify_one();
    }

    /// The retained desired state of every thing forgotten since the last call, to clear.
    fn take_clears(&self) -> Vec<Outbound> {
        std::mem::take(&mut *self.clears.lock().unwrap_or_else(|p| p.into_inner()))
            .into_iter()
            .map(|thing| Outbound {
                topic: thing_topic(thing.as_str(), "desired"),
                payload: Bytes::new(),
                retain: true,
                at_least_once: true,
            })
            .collect()
    }

    async fn emit(&self, events: Vec<DeviceEvent>) {
        for event in events {
            let Some(event) = self.divert_raw(event) else {
                continue;
            };
            if self.events.send(event).await.is_ok() {
                bump(&self.stats.events_out);
            } else {
                bump(&self.stats.events_dropped);
            }
        }
    }

    /// Hands a raw message to the raw bridge (or counts it dropped); gives back any other event.
    fn divert_raw(&self, event: DeviceEvent) -> Option<DeviceEvent> {
        let DeviceEvent::Raw { source, payload } = event else {
            return Some(event);
        };
        let queued = self
            .raw
            .as_ref()
            .is_some_and(|raw| raw.try_send((source, payload)).is_ok());
        if !queued {
            bump(&self.stats.raw_dropped);
        }
        None
    }

    /// Adds a message's events to the connection's batch; for a message acknowledged once
    /// durable (`durable`: QoS 1 or 2), the wait its acknowledgement is held behind, if it
    /// gave the hub anything to write.
    fn gather(
        &self,
        session: &mut DeviceSession,
        events: impl IntoIterator<Item = DeviceEvent>,
        durable: bool,
    ) -> Option<device_models::CommitWait> {
        let outgoing = session.outgoing.get_or_insert_with(Box::default);
        let batch = &mut outgoing.batch;
        let start = batch.events.len();
        for event in events {
            if let Some(event) = self.divert_raw(event) {
                batch.events.push(event);
            }
        }
        if !durable {
            return None;
        }
        batch.cover(&mut outgoing.group, start)
    }

    /// Sends the connection's batch to the hub, waiting for room in the channel.
    async fn send_batch(&self, session: &mut DeviceSession) {
        let Some(outgoing) = session.outgoing.take() else {
            return;
        };
        let batch = outgoing.batch;
        if batch.is_empty() {
            return;
        }
        let events = batch.events.len() as u64;
        let sent = self
            .events
            .send(DeviceEvent::Batch(Box::new(batch)))
            .await
            .is_ok();
        let counter = if sent {
            &self.stats.events_out
        } else {
            // The barrier inside went with it: its waits say the hub stopped.
            debug!("the hub stopped; the batch's messages are not acknowledged");
            &self.stats.events_dropped
        };
        counter.fetch_add(events, std::sync::atomic::Ordering::Relaxed);
    }

    /// The MQTT messages for one command.
    fn encode(&self, command: DeviceCommand, now: u64) -> Vec<Outbound> {
        let directory = self.directory();
        match command {
            DeviceCommand::SetDesired { thing, values } => {
                let mut out = Vec::new();
                let mut rest = values;
                if let Some(entry) = directory.get(&thing)
                    && let Some(binding) = &entry.binding
                {
                    let (bound, left) = binding.encode_desired(thing.as_str(), &entry.name, &rest);
                    out.extend(bound.into_iter().map(|m| Outbound {
                        topic: m.topic,
                        payload: m.payload,
                        retain: m.retain,
                        at_least_once: true,
                    }));
                    rest = left;
                }
                if !rest.is_empty() {
                    // The retained message is replaced whole, and so is what is remembered of it.
                    self.retained_desired().insert(thing.clone(), rest.clone());
                    out.push(Outbound {
                        topic: thing_topic(thing.as_str(), "desired"),
                        payload: Bytes::from(Value::Object(rest).to_string()),
                        retain: true,
                        at_least_once: true,
                    });
                }
                out
            }
            DeviceCommand::InvokeAction {
                thing,
                action,
                input,
                correlation,
                deadline_ms,
            } => {
                if deadline_ms < now {
                    debug!(%thing, %action, "action past its deadline; dropped");
                    bump(&self.stats.commands_dropped);
                    return Vec::new();
                }
                let bound = directory.get(&thing).and_then(|entry| {
                    entry.binding.as_ref().and_then(|b| {
                        b.encode_action(thing.as_str(), &entry.name, &action, &input, &correlation)
                    })
                });
                let message = match bound {
                    Some(m) => Outbound {
                        topic: m.topic,
                        payload: m.payload,
                        retain: false,
                        at_least_once: true,
                    },
                    None => Outbound {
                        topic: thing_topic(thing.as_str(), &format!("actions/{action}")),
                        payload: Bytes::from(
                            json!({
                                "correlation": correlation,
                                "input": input,
                                "deadline_ms": deadline_ms,
                            })
                            .to_string(),
                        ),
                        retain: false,
                        at_least_once: true,
                    },
                };
                drop(directory);
                self.pending
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(
                        correlation,
                        Pending {
                            thing,
                            action,
                            deadline_ms,
                        },
                        now,
                    );
                vec![message]
            }
        }
    }
}

impl Hooks for Core {
    type Session = DeviceSession;

    fn admits_connection(&self) -> bool {
        self.memory.admit_connection()
    }

    fn connect(&self, request: &ConnectRequest<'_>) -> Result<Accepted<DeviceSession>, Refusal> {
        let thing = match request.username {
            Some(user) => {
                let secret = request.password.unwrap_or("");
                // An observer's login first: under automatic provisioning any unknown name
                // would otherwise become a thing.
                let observer = self.observers.as_ref().map(|o| o.check(user, secret));
                match observer {
                    Some(ObserverCheck::Observer) => {
                        debug!(peer = %request.peer, user, "MQTT observer logged in");
                        let mut session = DeviceSession::new(None);
                        session.observer = true;
                        return Ok(Accepted { key: None, session });
                    }
                    Some(ObserverCheck::Refused) => {
                        debug!(peer = %request.peer, user, "MQTT observer login refused");
                        return Err(Refusal::BadCredentials);
                    }
                    Some(ObserverCheck::NotObserver) | None => {}
                }
                let Ok(thing) = ThingId::new(user) else {
                    return Err(Refusal::BadCredentials);
                };
                match self.credentials.check(&thing, secret) {
                    CredentialCheck::Valid => Some(thing),
                    verdict @ (CredentialCheck::Invalid | CredentialCheck::UnknownThing) => {
                        debug!(peer = %request.peer, %thing, ?verdict, "MQTT login refused");
                        return Err(Refusal::BadCredentials);
                    }
                }
            }
            None if self.auth_required => return Err(Refusal::NotAuthorized),
            // Anonymous: the client id names the thing, unless that thing holds a secret.
            None => ThingId::new(request.client_id)
                .ok()
                .filter(|id| self.credentials.check(id, "") != CredentialCheck::Invalid),
        };
        let key = thing.as_ref().map(|t| t.as_str().to_owned());
        let mut session = DeviceSession::new(thing);
        // Without a login on an open listener anyone may read everything anyway.
        session.observer = !self.auth_required && request.username.is_none();
        Ok(Accepted { key, session })
    }

    fn may_publish(&self, session: &DeviceSession, topic: &str) -> bool {
        match acl::may_publish(&self.directory(), session.thing.as_ref(), topic) {
            Ok(()) => true,
            Err(denial) => {
                debug!(?denial, %topic, thing = ?session.thing, "publish denied");
                false
            }
        }
    }

    fn may_subscribe(&self, session: &DeviceSession, filter: &str) -> bool {
        let verdict = if session.observer {
            acl::may_observe(filter)
        } else {
            acl::may_subscribe(&self.directory(), session.thing.as_ref(), filter)
        };
        match verdict {
            Ok(()) => true,
            Err(denial) => {
                debug!(?denial, %filter, thing = ?session.thing, "subscribe denied");
                false
            }
        }
    }

    async fn published(
        &self,
        session: &mut DeviceSession,
        topic: &str,
        payload: &Bytes,
        retain: bool,
        qos: u8,
    ) -> Published {
        bump(&self.stats.messages_in);
        if retain
            && let Some(thing) = &session.thing
            && let Some((id, ThingTopic::Desired)) = parse_thing_topic(topic)
            && id == thing.as_str()
        {
            // The device replaced (or cleared) its retained desired state itself.
            self.retained_desired().remove(thing);
        }
        let outcome = {
            let directory = self.directory();
            Translator {
                directory: &directory,
                pending: &self.pending,
                max_message_bytes: self.max_message_bytes,
                raw_bridge: self.raw_bridge,
            }
            .handle(session, topic, payload, device_models::now_ms())
        };
        let rejected = outcome.rejected.as_ref().map(|rejection| {
            bump(&self.stats.rejected_payloads);
            let (cause, rejected) = match rejection {
                Rejection::TooLarge { .. } => ("too_large", Rejected::TooLarge),
                Rejection::Malformed(_) => ("malformed", Rejected::Invalid),
                Rejection::UnknownTopic(_) => ("unknown_topic", Rejected::Invalid),
            };
            if let Some(held_back) = self.rejections.admit(cause, std::time::Instant::now()) {
                warn!(
                    gateway = %self.name,
                    thing = ?session.thing,
                    %topic,
                    %rejection,
                    cause,
                    held_back,
                    "device message rejected (held_back: rejections of this cause not logged \
                     since the last line)"
                );
            }
            rejected
        });
        if outcome.raw {
            bump(&self.stats.raw_in);
        }
        if outcome.unmatched_reply {
            bump(&self.stats.replies_unmatched);
        }
        // Settle the retained desired state before the hub hears of the report (and resolves
        // the `set` waiting on it), so nobody sees the call done with the old value retained.
        let settled: Vec<Outbound> = outcome
            .events
            .iter()
            .filter_map(|event| match event {
                DeviceEvent::Reported { thing, values, .. } => self.settle_retained(thing, values),
                _ => None,
            })
            .collect();
        if let Some(publisher) = self.publisher.get() {
            for message in settled {
                if publisher.send(message).await.is_err() {
                    debug!("broker stopped; retained desired state left as it was");
                }
            }
        }
        // Acknowledged only once what it said is durable: the batch's barrier follows its
        // events, and the hub marks this message refused if its type check refused what the
        // message said (the hub checks; the gateway does not check twice). Nothing to make
        // durable (QoS 0, or a message that gave the hub no event): acknowledged at once.
        let commit = self.gather(session, outcome.events, qos > 0);
        if session
            .outgoing
            .as_ref()
            .is_some_and(|o| o.batch.events.len() >= EventBatch::MAX_EVENTS)
        {
            self.send_batch(session).await;
        }
        Published { commit, rejected }
    }

    async fn read_done(&self, session: &mut DeviceSession) {
        self.send_batch(session).await;
    }

    async fn closed(&self, mut session: DeviceSession, end: SessionEnd) {
        self.send_batch(&mut session).await;
        if end == SessionEnd::TakenOver {
            return;
        }
        let Some(thing) = session.thing.take() else {
            return;
        };
        if session.announced
            && let Some(publisher) = self.publisher.get()
        {
            let message = Outbound {
                topic: thing_topic(thing.as_str(), "status"),
                payload: Bytes::from_static(b"offline"),
                retain: true,
                at_least_once: true,
            };
            let _ = publisher.send(message).await;
        }
        if session.online {
            self.emit(vec![DeviceEvent::Offline { thing }]).await;
        }
    }
}

/// The hub's registry, followed into the gateway's [`Directory`]: a thing's MQTT device name is
/// its id.
struct FollowRegistry(Arc<Core>);

impl crate::link::DirectoryListener for FollowRegistry {
    fn added(&self, thing: &ThingId, ty: &Arc<ThingType>) {
        if let Err(e) = self.0.register(thing.clone(), ty.clone(), None) {
            warn!(%thing, error = %e, "thing not registered with the MQTT gateway");
        }
    }

    fn removed(&self, thing: &ThingId) {
        self.0.unregister(thing);
    }
}

/// Room in the raw bridge's queue: beyond it raw messages are dropped and counted.
const RAW_QUEUE: usize = 1024;

/// The MQTT gateway: an embedded broker whose devices become things.
#[derive(Debug)]
pub struct MqttGateway;

impl MqttGateway {
    /// Validates the config, opens the listener and starts serving devices and commands. Must be
    /// called inside a tokio runtime.
    pub async fn start(config: MqttConfig, io: GatewayIo) -> Result<MqttHandle, MqttError> {
        Self::start_with_observers(config, io, None).await
    }

    /// [`MqttGateway::start`], with the logins that may watch every device topic even where
    /// devices must log in.
    pub async fn start_with_observers(
        config: MqttConfig,
        io: GatewayIo,
        observers: Option<Arc<dyn ObserverLogins>>,
    ) -> Result<MqttHandle, MqttError> {
        config.validate()?;
        let auth_required = config.auth_required();
        if !auth_required && !config.listen.ip().is_loopback() {
            warn!(listen = %config.listen, "MQTT devices may connect without authentication on a non-loopback address (require_auth = false)");
        }
        let stats = Arc::new(Stats::default());
        let GatewayIo {
            name,
            events,
            commands,
            credentials,
            things: _,
            directory,
            memory,
        } = io;
        let (raw, raw_messages) = if config.raw_bridge {
            let (tx, rx) = mpsc::channel(RAW_QUEUE);
            (Some(tx), Some(rx))
        } else {
            (None, None)
        };
        let core = Arc::new(Core {
            name,
            auth_required,
            max_message_bytes: config.max_message_bytes,
            raw_bridge: config.raw_bridge,
            credentials,
            observers,
            events,
            raw,
            directory: RwLock::new(Directory::default()),
            pending: Mutex::new(PendingActions::new(config.max_pending_actions)),
            retained_desired: Mutex::new(HashMap::new()),
            stats: stats.clone(),
            publisher: OnceLock::new(),
            clears: Mutex::new(Vec::new()),
            clear_ready: tokio::sync::Notify::new(),
            memory,
            rejections: LogLimit::new(REJECTION_LOG_EVERY),
        });
        // Every thing the registry holds is known before the first device connects.
        directory
            .follow(Arc::new(FollowRegistry(core.clone())))
            .await;
        let broker = Broker::start(&config, core.clone(), stats.clone()).await?;
        let publisher = broker.publisher();
        let _ = core.publisher.set(publisher.clone());
        let stop = CancellationToken::new();
        let tasks = TaskTracker::new();
        tasks.spawn(command_loop(
            core.clone(),
            commands,
            publisher.clone(),
            stop.clone(),
        ));
        info!(addr = %broker.local_addr(), auth_required, "MQTT gateway started");
        Ok(MqttHandle {
            core,
            local_addr: broker.local_addr(),
            publisher,
            broker,
            stop,
            tasks,
            max_message_bytes: config.max_message_bytes,
            raw_bridge: config.raw_bridge,
            raw_messages: Mutex::new(raw_messages),
        })
    }
}

async fn command_loop(
    core: Arc<Core>,
    mut commands: mpsc::Receiver<DeviceCommand>,
    publisher: mpsc::Sender<Outbound>,
    stop: CancellationToken,
) {
    loop {
        let command = tokio::select! {
            () = stop.cancelled() => return,
            () = core.clear_ready.notified() => None,
            c = commands.recv() => match c {
                Some(c) => Some(c),
                None => return,
            },
        };
        // Clears of forgotten things go first: a command taken after a thing was forgotten
        // (a new thing of the same id) must not be undone by the old one's clear.
        for clear in core.take_clears() {
            if publisher.send(clear).await.is_err() {
                return;
            }
        }
        let Some(command) = command else { continue };
        for message in core.encode(command, device_models::now_ms()) {
            bump(&core.stats.commands);
            if publisher.send(message).await.is_err() {
                return;
            }
        }
    }
}

/// What the hub holds of a running MQTT gateway.
#[derive(Debug)]
pub struct MqttHandle {
    core: Arc<Core>,
    local_addr: SocketAddr,
    publisher: mpsc::Sender<Outbound>,
    broker: Broker,
    stop: CancellationToken,
    tasks: TaskTracker,
    max_message_bytes: usize,
    raw_bridge: bool,
    /// The raw bridge's end of the raw message queue, until it takes it.
    raw_messages: Mutex<Option<mpsc::Receiver<(String, Bytes)>>>,
}

impl std::fmt::Debug for Core {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Core")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl MqttHandle {
    /// Resolves if the broker failed (rumqttd's router thread or the gateway's link into it is
    /// gone): MQTT routing has stopped and the hub must not go on as if it had not.
    pub async fn failed(&self) {
        self.broker.failed().await;
    }

    /// Whether the broker has failed, without waiting.
    pub fn has_failed(&self) -> bool {
        self.broker.has_failed()
    }

    /// The address devices connect to (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Tells the gateway a thing's type (to apply the type's
    /// `[bindings.mqtt]`) and, for bound firmware, its device name (`{name}` in the binding's
    /// topics; the thing id when `None`). Replaces an earlier registration of the same thing.
    pub fn register(
        &self,
        thing: ThingId,
        ty: Arc<ThingType>,
        name: Option<String>,
    ) -> Result<(), RegisterError> {
        self.core.register(thing, ty, name)
    }

    /// Whether the thing's type is registered, so that its reports are checked here and its
    /// binding topics are in force (the hub registers things as they are provisioned).
    pub fn is_registered(&self, thing: &ThingId) -> bool {
        self.core.directory().get(thing).is_some()
    }

    /// Forgets a thing's registration (its topics become the conventions' only).
    pub fn unregister(&self, thing: &ThingId) {
        self.core.unregister(thing);
    }

    /// The raw messages devices publish on topics no thing owns (`mqtt:<topic>`, payload), for
    /// the raw bridge; `Some` once, and only with `raw_bridge` on.
    pub fn take_raw_messages(&self) -> Option<mpsc::Receiver<(String, Bytes)>> {
        self.raw_messages
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
    }

    /// Publishes a message from the WAMP side of the raw bridge (`mqtt.a.b.c` → `a/b/c`). It
    /// is not reported back as a raw event. Thing topics and `$` topics are refused.
    pub async fn publish_raw(
        &self,
        topic: &str,
        payload: Bytes,
        retain: bool,
    ) -> Result<(), PublishError> {
        if !self.raw_bridge {
            return Err(PublishError::Disabled);
        }
        if !is_topic_name(topic) || topic.starts_with('$') {
            return Err(PublishError::InvalidTopic(topic.to_owned()));
        }
        if acl::may_publish(&self.core.directory(), None, topic).is_err() {
            return Err(PublishError::ThingTopic(topic.to_owned()));
        }
        if payload.len() > self.max_message_bytes {
            return Err(PublishError::TooLarge {
                size: payload.len(),
                max: self.max_message_bytes,
            });
        }
        let message = Outbound {
            topic: topic.to_owned(),
            payload,
            retain,
            at_least_once: true,
        };
        self.publisher
            .send(message)
            .await
            .map_err(|_| PublishError::Stopped)?;
        bump(&self.core.stats.raw_out);
        Ok(())
    }

    /// The gateway's counters.
    pub fn stats(&self) -> MqttStats {
        self.core.stats.snapshot()
    }

    /// Stops the command loop, closes every connection (up to the grace period) and the
    /// listener.
    pub async fn shutdown(&self) {
        self.stop.cancel();
        self.tasks.close();
        self.tasks.wait().await;
        self.broker.shutdown().await;
    }
}
