//! What every gateway gets from the hub, and nothing more: where to send [`DeviceEvent`]s, where
//! [`DeviceCommand`]s for its devices arrive, how to check a device's credentials, and the
//! registry's directory of things and their types, followed in process.
//!
//! Gateways depend on this and on `device-models`, never on the hub, so each can be run and tested
//! with plain channels.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use device_models::{DeviceCommand, DeviceEvent, MemoryPressure, ThingId, ThingType};
use serde_json::{Map, Value};
use subtle::ConstantTimeEq as _;
use tokio::sync::mpsc;

/// The verdict on a device's credentials.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CredentialCheck {
    /// The secret is the one issued to this thing (or the hub's policy admits it).
    Valid,
    /// The thing is known and the secret is wrong.
    Invalid,
    /// No such thing, and the hub's policy does not admit unknown devices.
    UnknownThing,
}

/// Checks a device's secret. Implemented by the hub over its registry (salted hashes); the call is
/// synchronous and cheap, so a gateway may call it on its accept path.
pub trait DeviceCredentials: Send + Sync + 'static {
    fn check(&self, thing: &ThingId, secret: &str) -> CredentialCheck;
}

/// Logins of people and tools (not things) who may watch every device topic over MQTT, as an
/// anonymous client may where no login is required: an operator's `mosquitto_sub -t '#'` on a
/// hub that requires authentication. The hub answers it from its realm's principals.
pub trait ObserverLogins: Send + Sync + 'static {
    /// Whether `user` with `password` logs in as an observer.
    fn check(&self, user: &str, password: &str) -> ObserverCheck;
}

/// What [`ObserverLogins::check`] says of a login.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ObserverCheck {
    /// An observer, logged in.
    Observer,
    /// The name is an observer's and the password is wrong: refused, never tried as a thing's
    /// login (under automatic provisioning, an unknown name would become a thing).
    Refused,
    /// Not an observer's name: if anything, the login is a thing's.
    NotObserver,
}

/// A thing as the hub's registry holds it, for a device that reads its own back (CoAP `GET
/// /things/<id>/state` or `info`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ThingView {
    /// Reported values by property.
    pub state: Map<String, Value>,
    /// Info values by property.
    pub info: Map<String, Value>,
}

/// The answer of a [`ThingReader`]: `None` for a thing the registry does not hold.
pub type ThingRead = Pin<Box<dyn Future<Output = Option<ThingView>> + Send>>;

/// Reads a thing back from the hub's registry. Implemented by the hub over the things service,
/// which answers in its turn, so the call is asynchronous: a gateway awaits it off its own loop.
pub trait ThingReader: Send + Sync + 'static {
    fn read(&self, thing: &ThingId) -> ThingRead;
}

/// Follows the hub's registry: which things exist and of which type, so that a gateway can
/// check and translate their messages without asking anyone. The hub calls it from the task
/// that owns the registry, in order: once per thing registered when the follower starts, then at
/// each provisioning and deletion. A call must be quick and never wait (a short lock at most),
/// since the registry waits for it.
pub trait DirectoryListener: Send + Sync + 'static {
    /// `thing` is registered, with type `ty` (also when it was already known: the type wins).
    fn added(&self, thing: &ThingId, ty: &Arc<ThingType>);
    /// `thing` was deleted.
    fn removed(&self, thing: &ThingId);
}

/// Resolves once a new follower holds every thing registered when it started following.
pub type Following = Pin<Box<dyn Future<Output = ()> + Send>>;

/// The hub's registry as a gateway follows it: a snapshot, then every change, in process.
pub trait ThingDirectory: Send + Sync + 'static {
    /// Starts `listener` following the registry (see [`DirectoryListener`]).
    fn follow(&self, listener: Arc<dyn DirectoryListener>) -> Following;
}

/// A fixed directory, for simulations and tests (empty by default): a follower is told each of
/// its things once, and nothing changes afterwards.
#[derive(Debug, Default, Clone)]
pub struct StaticDirectory(pub Vec<(ThingId, Arc<ThingType>)>);

impl ThingDirectory for StaticDirectory {
    fn follow(&self, listener: Arc<dyn DirectoryListener>) -> Following {
        for (thing, ty) in &self.0 {
            listener.added(thing, ty);
        }
        Box::pin(std::future::ready(()))
    }
}

/// Things from a fixed map, for simulations and tests (empty: every read finds nothing).
#[derive(Debug, Default, Clone)]
pub struct StaticThings(pub HashMap<ThingId, ThingView>);

impl ThingReader for StaticThings {
    fn read(&self, thing: &ThingId) -> ThingRead {
        let view = self.0.get(thing).cloned();
        Box::pin(async move { view })
    }
}

/// Credentials from a fixed map, for simulations and tests.
#[derive(Debug, Default, Clone)]
pub struct StaticCredentials(pub HashMap<String, String>);

impl DeviceCredentials for StaticCredentials {
    fn check(&self, thing: &ThingId, secret: &str) -> CredentialCheck {
        match self.0.get(thing.as_str()) {
            None => CredentialCheck::UnknownThing,
            Some(s) if bool::from(s.as_bytes().ct_eq(secret.as_bytes())) => CredentialCheck::Valid,
            Some(_) => CredentialCheck::Invalid,
        }
    }
}

/// A gateway's connection to the hub.
///
/// `events` is bounded: a gateway that cannot queue an event (the hub is overloaded) drops it and
/// counts it, or waits, as its own doc says; it must never block one device's task on another's.
/// `commands` carries commands for things last seen on this gateway.
pub struct GatewayIo {
    /// A name for logs (`mqtt`, `coap`, `udp:beacons`...).
    pub name: String,
    pub events: mpsc::Sender<DeviceEvent>,
    pub commands: mpsc::Receiver<DeviceCommand>,
    pub credentials: Arc<dyn DeviceCredentials>,
    /// Reads things back from the registry, for devices that ask.
    pub things: Arc<dyn ThingReader>,
    /// The registry's things and their types, for gateways that check or translate by type.
    pub directory: Arc<dyn ThingDirectory>,
    /// Whether the hub is over its memory budget: a gateway accepts no new device connection
    /// while it is (see [`MemoryPressure::admit_connection`]).
    pub memory: MemoryPressure,
}

impl std::fmt::Debug for GatewayIo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GatewayIo")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// The hub's ends of a [`GatewayIo`] made by [`GatewayIo::pair`], for tests and simulations.
#[derive(Debug)]
pub struct HubEnds {
    pub events: StandInEvents,
    pub commands: mpsc::Sender<DeviceCommand>,
}

/// A stand-in hub's event receiver: it answers every [`DeviceEvent::Barrier`] at once, as a
/// hub whose writes commit instantly would, takes the events of a [`DeviceEvent::Batch`] one
/// by one (answering its barrier), and yields the other events.
#[derive(Debug)]
pub struct StandInEvents {
    rx: mpsc::Receiver<DeviceEvent>,
    /// Events of a batch not yielded yet.
    batched: std::collections::VecDeque<DeviceEvent>,
}

impl StandInEvents {
    /// Wraps a receiver of gateway events.
    pub fn new(rx: mpsc::Receiver<DeviceEvent>) -> StandInEvents {
        StandInEvents {
            rx,
            batched: std::collections::VecDeque::new(),
        }
    }

    /// Answers barriers and forwards everything else into a new receiver of the same capacity
    /// from a task of its own, so that a gateway waiting for a commit is answered even while
    /// nobody reads the events (tests where a device waits for its ack before the test reads).
    pub fn relay(mut self, capacity: usize) -> StandInEvents {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        tokio::spawn(async move {
            while let Some(e) = self.recv().await {
                if tx.send(e).await.is_err() {
                    return;
                }
            }
        });
        StandInEvents::new(rx)
    }

    /// The next event that is not a barrier; `None` once the gateway dropped its sender.
    pub async fn recv(&mut self) -> Option<DeviceEvent> {
        loop {
            if let Some(event) = self.batched.pop_front() {
                return Some(event);
            }
            let event = self.rx.recv().await?;
            if let Some(event) = self.take(event) {
                return Some(event);
            }
        }
    }

    /// Like [`Self::recv`], without waiting.
    pub fn try_recv(&mut self) -> Result<DeviceEvent, mpsc::error::TryRecvError> {
        loop {
            if let Some(event) = self.batched.pop_front() {
                return Ok(event);
            }
            let event = self.rx.try_recv()?;
            if let Some(event) = self.take(event) {
                return Ok(event);
            }
        }
    }

    /// Answers a barrier (also a batch's, once its events are queued here); gives back any
    /// other event.
    fn take(&mut self, event: DeviceEvent) -> Option<DeviceEvent> {
        match event {
            DeviceEvent::Barrier(commit) => commit.answer(Ok(())),
            DeviceEvent::Batch(batch) => {
                let device_models::EventBatch { events, covered } = *batch;
                self.batched.extend(events);
                if let Some((commit, _)) = covered {
                    commit.answer(Ok(()));
                }
            }
            other => return Some(other),
        }
        None
    }

    /// The raw receiver, barriers and batches included, for tests of the barriers themselves.
    pub fn into_inner(self) -> mpsc::Receiver<DeviceEvent> {
        self.rx
    }
}

impl GatewayIo {
    /// A gateway link backed by fresh channels, with the hub's ends returned alongside. Its
    /// [`ThingReader`] knows no thing; see [`GatewayIo::with_things`].
    pub fn pair(
        name: &str,
        capacity: usize,
        credentials: Arc<dyn DeviceCredentials>,
    ) -> (GatewayIo, HubEnds) {
        let (etx, erx) = mpsc::channel(capacity);
        let (ctx, crx) = mpsc::channel(capacity);
        (
            GatewayIo {
                name: name.to_owned(),
                events: etx,
                commands: crx,
                credentials,
                things: Arc::new(StaticThings::default()),
                directory: Arc::new(StaticDirectory::default()),
                memory: MemoryPressure::default(),
            },
            HubEnds {
                events: StandInEvents::new(erx),
                commands: ctx,
            },
        )
    }

    /// The same link, under the hub's memory budget `memory`.
    pub fn with_memory(mut self, memory: MemoryPressure) -> GatewayIo {
        self.memory = memory;
        self
    }

    /// The same link, following `directory`.
    pub fn with_directory(mut self, directory: Arc<dyn ThingDirectory>) -> GatewayIo {
        self.directory = directory;
        self
    }

    /// The same link, reading things from `things`.
    pub fn with_things(mut self, things: Arc<dyn ThingReader>) -> GatewayIo {
        self.things = things;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn static_credentials() {
        let mut m = HashMap::new();
        m.insert("dev-1".to_owned(), "s3cret".to_owned());
        let c = StaticCredentials(m);
        let id = |s: &str| ThingId::new(s).unwrap();
        assert_eq!(c.check(&id("dev-1"), "s3cret"), CredentialCheck::Valid);
        assert_eq!(c.check(&id("dev-1"), "s3cre"), CredentialCheck::Invalid);
        assert_eq!(c.check(&id("dev-2"), "x"), CredentialCheck::UnknownThing);
    }
}
