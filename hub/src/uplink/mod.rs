//! The uplink: the hub as an ordinary WAMP client of a cloud router, losing nothing across
//! outages.
//!
//! - [`crate::config::uplink`]: `[uplink]` (cloud URL, realm, credentials, forwarding rules, bounds).
//! - [`queue`]: the durable, bounded store-and-forward queue (SQLite).
//! - [`ingest`]: a local session subscribed to the forwarding rules, and the things service's
//!   [`tap`], writing every event into the queue.
//! - [`tap`]: the things service's events and device barriers, straight into the queue, so a
//!   device is acknowledged only once the uplink holds what it said.
//! - [`link`]: the cloud session: connect with jittered back-off, register the hub's procedures,
//!   report drops, replay the queue in order with acknowledged publishes.
//! - [`status`]: `brume.uplink.status` and the `brume.uplink.on_status` topic.
//!
//! Every event goes through the queue, connected or not, so order is one thing to get right and
//! an outage changes nothing but delay. Each event goes up as
//! `<prefix>.<hub id>.<topic without "brume.">` with its payload and a `_brume` keyword argument
//! `{hub, seq, at}`; `(hub, seq)` lets consumers drop the duplicates a reconnect can cause.

mod ingest;
mod link;
pub mod queue;
mod status;
pub mod tap;

use std::path::Path;
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

pub use crate::config::uplink::UplinkConfig;
use queue::UplinkQueue;
pub use status::UplinkStatus;

use crate::client::{Client, ClientError};
use crate::router::{AuthInfo, Router};
use crate::supervisor::Supervisor;

/// The authid of the uplink's local session.
pub const AUTHID: &str = "brume-uplink";

/// Why the uplink could not start.
#[derive(Debug, thiserror::Error)]
pub enum UplinkError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    Queue(#[from] queue::QueueError),
    #[error("uplink local session: {0}")]
    Local(#[from] ClientError),
}

/// State shared by the uplink's tasks.
pub(crate) struct Shared {
    pub config: UplinkConfig,
    pub hub_id: String,
    pub queue: Mutex<UplinkQueue>,
    /// Signalled when events were queued.
    pub queued: Notify,
    pub status: status::StatusCell,
    pub local: Client,
    /// The things service, which serves the cloud's calls in process.
    pub things: crate::things::GatewayLink,
}

impl Shared {
    /// Runs `f` on the queue on a blocking thread (SQLite calls block).
    pub async fn with_queue<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&mut UplinkQueue) -> Result<T, queue::QueueError> + Send + 'static,
    ) -> Result<T, queue::QueueError> {
        let me = self.clone();
        let result = tokio::task::spawn_blocking(move || {
            let mut q = me.queue.lock().unwrap_or_else(|e| e.into_inner());
            let r = f(&mut q);
            me.status
                .set_queue(q.len(), q.bytes(), q.drops(), q.oldest_at_ms());
            r
        })
        .await;
        match result {
            Ok(r) => r,
            Err(e) => Err(queue::QueueError::Corrupt {
                seq: 0,
                reason: format!("queue task failed: {e}"),
            }),
        }
    }
}

/// Maps a local topic to its cloud topic: `brume.thing.t1.state` → `<prefix>.<hub>.thing.t1.state`.
pub fn cloud_topic(prefix: &str, hub: &str, local: &str) -> String {
    let rest = local.strip_prefix("brume.").unwrap_or(local);
    format!("{prefix}.{hub}.{rest}")
}

/// The things service's tap for `config`'s forwarding rules (see [`tap`]), made before the
/// things service starts; its receiving end goes to [`start`].
pub fn tap(config: &UplinkConfig) -> Result<(tap::UplinkTap, tap::TapReceiver), UplinkError> {
    config.validate()?;
    Ok(tap::tap(config.rules()?))
}

/// Starts the uplink's tasks (ingest, link, status) under `supervisor`, stopping with the hub.
/// The queue's file may grow to `max_file_bytes` (its share of the hub's disk budget); past it
/// the oldest telemetry is shed, as it is when the disk itself fills up (then the queue releases
/// the hub's disk `reserve` and stops growing, see [`crate::disk`]).
/// `tap` carries the things service's events (see [`tap`]).
#[allow(clippy::too_many_arguments)]
pub async fn start(
    router: &Arc<Router>,
    realm: &str,
    hub_id: &str,
    data_dir: &Path,
    config: UplinkConfig,
    tap: Option<tap::TapReceiver>,
    things: crate::things::GatewayLink,
    max_file_bytes: u64,
    reserve: Option<Arc<crate::disk::DiskReserve>>,
    supervisor: &Supervisor,
) -> Result<UplinkHandle, UplinkError> {
    let shutdown = supervisor.shutdown().clone();
    config.validate()?;
    let rules = config.rules()?;
    let mut limits = queue::QueueLimits::of(&config);
    limits.max_file_bytes = Some(max_file_bytes);
    tracing::info!(
        max_file_bytes,
        max_bytes = limits.max_bytes,
        "uplink queue bounds"
    );
    let path = data_dir.join("uplink.db");
    let dir = data_dir.to_owned();
    let queue = tokio::task::spawn_blocking(move || {
        UplinkQueue::open(&path, limits).map(|q| match reserve {
            Some(r) => q.with_reserve(r, &dir),
            None => q,
        })
    })
    .await
    .map_err(|e| queue::QueueError::Corrupt {
        seq: 0,
        reason: e.to_string(),
    })??;
    let auth = AuthInfo {
        authid: AUTHID.into(),
        authrole: "trusted".into(),
        authmethod: "trusted".into(),
        authprovider: "static".into(),
    };
    // Two local sessions: one for the status procedure and announcements, and one that
    // only receives the forwarded events. That one is never closed for slowness: what its queue
    // cannot take is dropped and counted as `slow_consumer` (the things service's events
    // bypass it, see `tap`), and a burst cannot crowd out a call's answer.
    let local = Client::local(router, realm, auth.clone())?;
    let feed = Client::local_dropping_events(router, realm, auth, config.session_queue)?;
    let status = status::StatusCell::new(&config.url, queue.len(), queue.bytes());
    status.watch_session(
        router
            .realm(realm)
            .and_then(|r| r.session(feed.session_id())),
    );
    let shared = Arc::new(Shared {
        config,
        hub_id: hub_id.to_owned(),
        queue: Mutex::new(queue),
        queued: Notify::new(),
        status,
        local,
        things,
    });
    let subscriptions = ingest::subscribe(&feed, &rules).await?;
    let status_reg = shared
        .local
        .register(crate::wamp::uris::uplink::STATUS, crate::wamp::Dict::new())
        .await?;
    // The ingest holds the subscriptions and the tap, and the status its registration: they
    // live as long as the hub. The age bound and the cloud link hold nothing that a fresh
    // start cannot rebuild from the queue.
    supervisor.critical(
        "uplink_ingest",
        ingest::run(shared.clone(), feed, subscriptions, tap, shutdown.clone()),
    );
    supervisor.critical(
        "uplink_status",
        status::serve(shared.clone(), status_reg, shutdown.clone()),
    );
    let (me, stop) = (shared.clone(), shutdown.clone());
    supervisor.restartable("uplink_expiry", move || {
        ingest::expire(me.clone(), stop.clone())
    });
    let handle = UplinkHandle(shared.clone());
    supervisor.restartable("uplink_link", move || {
        link::run(shared.clone(), shutdown.clone())
    });
    Ok(handle)
}

/// What the rest of the hub (health, metrics) reads of a running uplink.
#[derive(Clone)]
pub struct UplinkHandle(Arc<Shared>);

impl UplinkHandle {
    /// The uplink's state now (what `brume.uplink.status` answers).
    pub fn status(&self) -> status::UplinkStatus {
        self.0.status.get()
    }
}

impl std::fmt::Debug for UplinkHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UplinkHandle").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn cloud_topics() {
        assert_eq!(
            super::cloud_topic("brume.hub", "edge-1", "brume.thing.t1.state"),
            "brume.hub.edge-1.thing.t1.state"
        );
        assert_eq!(super::cloud_topic("p", "h", "com.app.x"), "p.h.com.app.x");
    }
}
