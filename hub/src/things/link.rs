//! The gateway attachment API: how a gateway plugs into the things service.
//!
//! A gateway gets a [`GatewayLink`] (cloneable, from `Hub::things()`) at start and calls
//! [`GatewayLink::attach`] once, which gives it the shared gateway interface,
//! [`gateways::GatewayIo`]: a bounded `Sender<DeviceEvent>` for what its devices say, a bounded
//! `Receiver<DeviceCommand>` of what the hub asks of them, and the device credential check
//! answered from the registry ([`RegistryCredentials`]). The service remembers which gateway each
//! thing was last heard on and routes that thing's commands there.
//!
//! Back-pressure and drop policy:
//! - **Events (gateway → hub)**: the channel holds `things.event_queue` events, or batches of
//!   about 32 events (the MQTT gateway sends what one read of a connection brought as
//!   [`DeviceEvent::Batch`]es, each closed once it holds 32 events or more: a message's events
//!   are never split; the raw and Modbus gateways send what one turn of their loop brought in
//!   batches of at most 32, with no barrier). The service drains
//!   every gateway fairly and never drops an event it accepted. When the database writer is far
//!   behind, the service stops reading events for a while, so the channels fill: a gateway then
//!   either waits in `send().await` (pushing back on its devices, e.g. by not reading its socket)
//!   or uses `try_send` and drops by its own policy. Either way nothing else in the hub stalls.
//! - **Commands (hub → gateway)**: the channel holds `things.command_queue` commands. The service
//!   never waits on it: a command that does not fit fails its call at once with
//!   `wamp.error.unavailable` (a desired value stays pending and is sent again when the thing
//!   comes back online).
//! - **Detaching**: dropping every event sender ends the attachment; the things last seen on that
//!   gateway go offline. Dropping the command receiver does the same at the next command.
//! - **Reads** (a device reading its own state or info back, [`gateways::ThingReader`]): a
//!   request on the service's API queue, answered in turn like a `brume.things.get`.
//! - **Directory** ([`gateways::ThingDirectory`]): a gateway that checks or translates by type
//!   follows the registry in process. The service tells its listener every thing it holds, then
//!   each provisioning and deletion, synchronously from its own task, so the gateway's view is
//!   never behind the registry and no channel can overflow or reorder it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use device_models::{DeviceCommand, DeviceEvent, ThingId};
use gateways::{
    DirectoryListener, Following, GatewayIo, ThingDirectory, ThingRead, ThingReader, ThingView,
};
use serde_json::Value as Json;
use tokio::sync::{broadcast, mpsc};

use super::core::Publication;
use super::credentials::RegistryCredentials;
use super::request::{ApiError, Reply, Request};

/// Identifies one attached gateway for the life of the hub.
pub type GatewayId = u64;

/// Why a gateway could not attach.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("the things service is not running")]
    Closed,
}

/// A request from a link handle to the service.
pub(crate) enum Attach {
    /// A gateway's channels.
    Gateway {
        id: GatewayId,
        name: String,
        events: mpsc::Receiver<DeviceEvent>,
        commands: mpsc::Sender<DeviceCommand>,
    },
    /// A listener to follow the registry; `done` is answered once it holds every thing.
    Follow {
        listener: Arc<dyn DirectoryListener>,
        done: tokio::sync::oneshot::Sender<()>,
    },
}

/// Counters of the things service, readable from any link handle.
#[derive(Debug, Default)]
pub struct ThingsStats {
    /// Device events taken from gateways.
    pub events_in: AtomicU64,
    /// Reports rejected because a value broke the thing's type (each logged).
    pub invalid_reports: AtomicU64,
    /// Other device messages rejected (bad events, info, replies to unknown calls).
    pub invalid_messages: AtomicU64,
    /// Events from devices the hub does not know and did not provision.
    pub unknown_devices: AtomicU64,
    /// Things provisioned automatically.
    pub auto_provisioned: AtomicU64,
    /// State change events published.
    pub state_events: AtomicU64,
    /// Commands that did not fit a gateway's command queue.
    pub dropped_commands: AtomicU64,
    /// Raw (unmodelled) device messages, not handled by the things service.
    pub raw_messages: AtomicU64,
    /// `set` calls and how they ended.
    pub sets: CallStats,
    /// Action calls and how they ended.
    pub actions: CallStats,
}

/// Calls that wait on a device (`set`, actions), and how each ended: once answered, a call is in
/// exactly one outcome, so `called` less their sum is the calls waiting now.
#[derive(Debug, Default)]
pub struct CallStats {
    /// Calls taken.
    pub called: AtomicU64,
    /// Settled as asked: the device reported the values, or answered the action.
    pub succeeded: AtomicU64,
    /// Refused at once, nothing sent to the device: no such thing or action, invalid values or
    /// input, the thing offline, its gateway not taking commands.
    pub refused: AtomicU64,
    /// The device answered the action with an error (or an invalid output), or the thing was
    /// deleted or went offline while the call waited.
    pub failed: AtomicU64,
    /// No answer within the call's timeout.
    pub timed_out: AtomicU64,
    /// The caller went away, a later `set` superseded it, or the hub shut down.
    pub canceled: AtomicU64,
}

impl ThingsStats {
    /// A snapshot value of one counter.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    /// What `brume.things.stats` answers: the counters, the database writer's, and one ledger
    /// of everything not kept, by cause (`dropped` is its sum). `pending_writes` are writes
    /// handed over but not yet committed.
    pub fn to_json(&self, store: &super::store::StoreStats, pending_writes: usize) -> Json {
        let g = Self::get;
        let by_cause = serde_json::json!({
            "rejected_by_type": g(&self.invalid_reports) + g(&self.invalid_messages),
            "unknown_device": g(&self.unknown_devices),
            "command_queue": g(&self.dropped_commands),
            "write_failed": g(&store.failed_ops),
        });
        let dropped: u64 = by_cause
            .as_object()
            .map(|m| m.values().filter_map(Json::as_u64).sum())
            .unwrap_or(0);
        serde_json::json!({
            "events_in": g(&self.events_in),
            "state_events": g(&self.state_events),
            "auto_provisioned": g(&self.auto_provisioned),
            "raw_messages": g(&self.raw_messages),
            "dropped": dropped,
            "dropped_by_cause": by_cause,
            "store": {
                "batches": g(&store.batches),
                "writes": g(&store.ops),
                "retries": g(&store.retries),
                "failed_writes": g(&store.failed_ops),
                "acknowledged_after_commit": g(&store.barriers),
                "pruned_actions": g(&store.pruned_actions),
                "pending_writes": pending_writes,
            },
        })
    }
}

/// One publication of the things service as every in-process watcher receives it: a single
/// copy behind the broadcast's `Arc`, with a slot for its JSON text that the first watcher to
/// need it fills and the others read, so N watchers forwarding it (the HTTP event streams)
/// encode it once rather than N times. Watchers that filter it out never pay for the encoding.
#[derive(Debug)]
pub struct Watched {
    pub publication: Publication,
    /// `{"topic", "kwargs"}`, made on first use.
    json: OnceLock<String>,
}

impl Watched {
    /// Wraps a publication; nothing is encoded yet.
    pub fn new(publication: Publication) -> Watched {
        Watched {
            publication,
            json: OnceLock::new(),
        }
    }

    /// The publication as the JSON text `{"topic": <uri>, "kwargs": {...}}` (WAMP bytes as
    /// `"\0" + base64` strings), encoded by the first caller and shared with every later one.
    pub fn json(&self) -> &str {
        self.json.get_or_init(|| {
            let p = &self.publication;
            let kwargs: serde_json::Map<String, Json> = p
                .payload
                .kwarg_dict()
                .map(|d| d.iter().map(|(k, v)| (k.clone(), Json::from(v))).collect())
                .unwrap_or_default();
            serde_json::json!({ "topic": p.topic, "kwargs": kwargs }).to_string()
        })
    }

    /// Whether some watcher encoded this publication already.
    pub fn is_encoded(&self) -> bool {
        self.json.get().is_some()
    }
}

/// The handle gateways use to attach to the things service. Cheap to clone.
#[derive(Clone, Debug)]
pub struct GatewayLink {
    attach: mpsc::Sender<Attach>,
    next_id: Arc<AtomicU64>,
    event_queue: usize,
    command_queue: usize,
    stats: Arc<ThingsStats>,
    credentials: Arc<RegistryCredentials>,
    reader: Arc<RegistryReader>,
    directory: Arc<RegistryDirectory>,
    watch: Option<broadcast::Sender<Arc<Watched>>>,
}

impl GatewayLink {
    pub(crate) fn new(
        attach: mpsc::Sender<Attach>,
        event_queue: usize,
        command_queue: usize,
        stats: Arc<ThingsStats>,
        credentials: Arc<RegistryCredentials>,
        requests: mpsc::Sender<(Request, Reply)>,
    ) -> GatewayLink {
        GatewayLink {
            directory: Arc::new(RegistryDirectory {
                attach: attach.clone(),
            }),
            attach,
            next_id: Arc::new(AtomicU64::new(1)),
            event_queue,
            command_queue,
            stats,
            credentials,
            reader: Arc::new(RegistryReader { requests }),
            watch: None,
        }
    }

    /// Lets [`GatewayLink::watch`] follow the service's publications.
    pub(crate) fn with_watch(mut self, watch: broadcast::Sender<Arc<Watched>>) -> Self {
        self.watch = Some(watch);
        self
    }

    /// Asks the things service, in its turn, exactly what the WAMP procedure of the same name
    /// asks (the REST API answers with this: one core, two surfaces). A `set` or an action that
    /// waits on a device is forgotten by the service if this future is dropped before the
    /// answer (the caller went away), as a WAMP call canceled by its caller is.
    pub async fn call(&self, request: Request) -> Result<Json, ApiError> {
        let stopped = || {
            ApiError::new(
                crate::wamp::uris::CANCELED,
                "the things service has stopped",
            )
        };
        let waits_on_device = matches!(request, Request::Set { .. } | Request::Action { .. });
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.reader
            .requests
            .send((request, tx))
            .await
            .map_err(|_| stopped())?;
        let mut guard = CancelOnDrop {
            requests: waits_on_device.then(|| self.reader.requests.clone()),
        };
        let answer = rx.await.unwrap_or_else(|_| Err(stopped()));
        guard.requests = None;
        answer
    }

    /// Follows every publication of the things service (state, events, lifecycle) as it is
    /// handed to the router; `None` when the service was started without a watch. A receiver
    /// that falls more than the channel's capacity behind gets `Lagged` and misses the oldest.
    pub fn watch(&self) -> Option<broadcast::Receiver<Arc<Watched>>> {
        self.watch.as_ref().map(broadcast::Sender::subscribe)
    }

    /// Attaches a gateway named `name` (for logs), returning its end of the link. Clone its
    /// `events` sender freely: the attachment ends when every clone is dropped.
    pub async fn attach(&self, name: &str) -> Result<GatewayIo, LinkError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (events_tx, events_rx) = mpsc::channel(self.event_queue);
        let (commands_tx, commands_rx) = mpsc::channel(self.command_queue);
        self.attach
            .send(Attach::Gateway {
                id,
                name: name.to_owned(),
                events: events_rx,
                commands: commands_tx,
            })
            .await
            .map_err(|_| LinkError::Closed)?;
        Ok(GatewayIo {
            name: name.to_owned(),
            events: events_tx,
            commands: commands_rx,
            credentials: self.credentials.clone(),
            things: self.reader.clone(),
            directory: self.directory.clone(),
            memory: device_models::MemoryPressure::default(),
        })
    }

    /// The service's counters.
    pub fn stats(&self) -> &Arc<ThingsStats> {
        &self.stats
    }

    /// What `brume.things.stats` answers, asked of the service in its turn (not over WAMP);
    /// `None` if the service does not answer: it is gone or stuck.
    pub async fn service_stats(&self) -> Option<Json> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.reader.requests.send((Request::Stats, tx)).await.ok()?;
        rx.await.ok()?.ok()
    }

    /// The device credential check every attached gateway gets.
    pub fn credentials(&self) -> &Arc<RegistryCredentials> {
        &self.credentials
    }
}

/// Tells the service that the caller of a `set` or an action went away (see
/// [`GatewayLink::call`]).
struct CancelOnDrop {
    requests: Option<mpsc::Sender<(Request, Reply)>>,
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if let Some(requests) = self.requests.take() {
            let (tx, _) = tokio::sync::oneshot::channel();
            // Best effort: with the queue full, the call still expires at its deadline.
            let _ = requests.try_send((Request::Canceled, tx));
        }
    }
}

/// The gateways' [`ThingDirectory`]: the service takes the listener in its turn (see the
/// module's rules). If the service is gone, following ends at once with nothing known: the hub
/// is stopping anyway.
#[derive(Debug)]
struct RegistryDirectory {
    attach: mpsc::Sender<Attach>,
}

impl ThingDirectory for RegistryDirectory {
    fn follow(&self, listener: Arc<dyn DirectoryListener>) -> Following {
        let attach = self.attach.clone();
        Box::pin(async move {
            let (done, followed) = tokio::sync::oneshot::channel();
            if attach.send(Attach::Follow { listener, done }).await.is_ok() {
                let _ = followed.await;
            }
        })
    }
}

/// The gateways' [`ThingReader`]: asks the things service, in its turn, as the API's `get` does.
#[derive(Debug)]
struct RegistryReader {
    requests: mpsc::Sender<(Request, Reply)>,
}

impl ThingReader for RegistryReader {
    fn read(&self, thing: &ThingId) -> ThingRead {
        let requests = self.requests.clone();
        let thing = thing.clone();
        Box::pin(async move {
            let (tx, rx) = tokio::sync::oneshot::channel();
            let request = Request::Get {
                thing,
                property: None,
            };
            requests.send((request, tx)).await.ok()?;
            let got = rx.await.ok()?.ok()?;
            let reported = got.get("reported").and_then(Json::as_object);
            let state = reported
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| (k.clone(), v.get("value").cloned().unwrap_or(Json::Null)))
                        .collect()
                })
                .unwrap_or_default();
            let info = got
                .get("info")
                .and_then(Json::as_object)
                .cloned()
                .unwrap_or_default();
            Some(ThingView { state, info })
        })
    }
}
