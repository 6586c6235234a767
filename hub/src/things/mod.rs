//! The things service: Brume's registry of devices ("things"), their reported and desired state,
//! their actions and events, served over WAMP and fed by gateways.
//!
//! Module map:
//! - [`link`]: the gateway attachment API ([`GatewayLink`], handing out the shared
//!   [`gateways::GatewayIo`]) and its back-pressure rules, plus the service's counters
//!   ([`ThingsStats`]).
//! - [`credentials`]: the device credential check gateways get, answered from the registry.
//! - [`core`]: [`Core`](core::Core), the service's logic without I/O: the in-memory registry,
//!   device event handling, API requests, pending `set` and action calls with their deadlines.
//! - [`service`]: [`ThingsService`](service::ThingsService), the one task that owns the core and
//!   connects it to gateways, the API, the router's broker and the database writer.
//! - [`api`]: the WAMP procedures (argument parsing, registration, answering).
//! - [`session`]: the service's in-process WAMP session: join, register, publish, and join again
//!   if the session is ended while the hub runs.
//! - [`request`]: [`Request`](request::Request) and [`ApiError`](request::ApiError), with the
//!   `brume.error.*` URIs.
//! - [`store`]: SQLite persistence: schema, load at start, the batching writer thread.
//! - [`secret`]: device secrets, stored as salted hashes.
//!
//! WAMP surface (DESIGN.md §2), in realm `things.realm` (default: the first realm). Procedures take
//! kwargs, or the same arguments positionally in the order of the table (thing first; `set` and
//! `update_info` take `property, value` or one dict of values), and return one positional value.
//! A CALL's `timeout` bounds how long a `set` or an action waits for the device (it becomes the
//! action's `deadline_ms`); a CANCEL ends the wait, and a canceled action is logged as
//! `canceled`:
//!
//! | procedure | kwargs | result |
//! | --- | --- | --- |
//! | `brume.things.list` | `type?`, `online?` | `[{thing, type, online, info, created}]`, by id |
//! | `brume.things.get` | `thing`, `property?` | `{thing, type, online, info, created, reported: {p: {value, at}}, desired: {p: {value, at}}}`; with `property`: `{thing, property, kind, value, at?, desired?: {value, at}}` |
//! | `brume.things.provision` | `thing`, `type`, `info?` | `{thing: {…summary}, secret}` (the secret is shown this once) |
//! | `brume.things.delete` | `thing` | `{thing, deleted: true}` |
//! | `brume.things.update_info` | `thing` + `property`, `value` or `values: {p: v}` | `{thing, info}` |
//! | `brume.things.set` | `thing` + `property`, `value` or `values: {p: v}` | `{thing, settled: {p: {value, at}}}` once the device reports them |
//! | `brume.things.describe` | `thing` | the W3C WoT Thing Description |
//! | `brume.things.stats` | | `{events_in, state_events, auto_provisioned, raw_messages, dropped, dropped_by_cause: {rejected_by_type, unknown_device, command_queue, write_failed}, store: {batches, writes, retries, failed_writes, acknowledged_after_commit, pruned_actions, pending_writes}}` |
//! | `brume.types.list` | | `[{id, title, description, version, origin}]` |
//! | `brume.types.get` | `type` | the thing type |
//! | `brume.thing.<id>.action.<name>` | the input: kwargs, or one positional argument | the device's output |
//!
//! Errors: `brume.error.no_such_thing`, `no_such_action`, `no_such_type`, `thing_offline`,
//! `action_failed` (the device said no, or its reply broke the schema), `write_failed` (the
//! database refused the write even after retries: nothing was changed), and
//! `wamp.error.invalid_argument` (message naming thing, property and rule; kwargs `thing`,
//! `property` or `action`, `rule`), `wamp.error.timeout`, `wamp.error.canceled` (the caller canceled,
//! or a later `set` of the same property superseded the call), `wamp.error.unavailable` (the gateway's command queue
//! is full).
//!
//! Topics (kwargs only):
//! - `brume.thing.<id>.state`: `{thing, values: {p: v}, at: {p: ms}}`, only what changed;
//! - `brume.thing.<id>.event.<name>`: `{thing, event, payload, at}`;
//! - `brume.things.on_online`: `{thing, type, gateway}`; `on_offline`: `{thing}`;
//!   `on_provision`: `{thing, type, info, created, auto}`; `on_delete`: `{thing}`.

pub mod api;
pub mod core;
pub mod credentials;
pub mod link;
pub mod request;
pub mod secret;
pub mod service;
pub mod session;
pub mod store;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use device_models::{LoadError, TdContext, TypeCatalog};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

pub use credentials::RegistryCredentials;
pub use link::{GatewayId, GatewayLink, LinkError, ThingsStats};
pub use request::errors;

use crate::client::ClientError;
use crate::config::Config;
use crate::router::Router;

/// Why the things service could not start.
#[derive(Debug, thiserror::Error)]
pub enum ThingsError {
    #[error("thing types: {0}")]
    Types(#[from] LoadError),
    #[error(transparent)]
    Store(#[from] store::StoreError),
    #[error(transparent)]
    Registry(#[from] core::CoreError),
    #[error("the things service cannot join realm {realm:?} and register its procedures: {source}")]
    Join {
        realm: String,
        #[source]
        source: ClientError,
    },
    #[error("no realm {0:?} on this router")]
    NoRealm(String),
    #[error("the database could not be opened: {0}")]
    Blocking(#[source] tokio::task::JoinError),
}

/// Milliseconds since the Unix epoch; the one clock, from `device-models`.
pub use device_models::now_ms;

/// Publications an in-process watcher may fall behind by before it misses some.
const WATCH_CAPACITY: usize = 1024;

/// What a running things service gives the hub.
#[derive(Debug)]
pub struct Things {
    /// The handle gateways attach with.
    pub link: GatewayLink,
    /// The database file.
    pub database: PathBuf,
    /// The writer thread's counters.
    pub store_stats: Arc<store::StoreStats>,
}

/// The built-in thing types plus the user's type directory (`[things] types_dir`).
pub fn load_catalog(config: &Config) -> Result<TypeCatalog, ThingsError> {
    let mut catalog = TypeCatalog::builtin()?;
    if let Some(dir) = &config.things.types_dir {
        let loaded = catalog.load_dir(dir)?;
        tracing::info!(dir = %dir.display(), types = ?loaded, "user thing types loaded");
    }
    Ok(catalog)
}

/// Loads the database, joins the realm, registers the procedures and spawns the
/// service's tasks under `supervisor`; they stop when `shutdown` is cancelled, after the database
/// writer has committed everything.
#[allow(clippy::too_many_arguments)]
pub async fn start(
    config: &Config,
    td: TdContext,
    router: &Arc<Router>,
    shutdown: CancellationToken,
    catalog: TypeCatalog,
    tap: Option<crate::uplink::tap::UplinkTap>,
    reserve: Option<Arc<crate::disk::DiskReserve>>,
    supervisor: &crate::supervisor::Supervisor,
) -> Result<Things, ThingsError> {
    let tracker = supervisor.tracker();
    let t = &config.things;
    let database = t.database_path(&config.hub.data_dir);
    let (queue, log_max, path) = (t.store_queue, t.action_log_max, database.clone());
    let (store, loaded) = tokio::task::spawn_blocking(move || {
        store::Store::open_with_reserve(&path, queue, log_max, reserve)
    })
    .await
    .map_err(ThingsError::Blocking)??;
    if loaded.expired_at_start > 0 {
        tracing::info!(
            actions = loaded.expired_at_start,
            "actions left unanswered by the last run marked expired"
        );
    }
    let stats = Arc::new(ThingsStats::default());
    let settings = core::CoreSettings {
        provisioning: t.provisioning,
        auto_type: t.auto_type.clone(),
        set_timeout: Duration::from_millis(t.set_timeout_ms),
        td,
    };
    let credentials = Arc::new(RegistryCredentials::new(
        t.provisioning == crate::config::Provisioning::Auto,
    ));
    let core = core::Core::new(
        settings,
        catalog,
        loaded,
        stats.clone(),
        credentials.clone(),
    )?;
    tracing::info!(things = core.len(), database = %database.display(), "things registry loaded");

    let realm = t.realm_name(&config.realms).to_owned();
    let first = session::join(router, &realm)
        .await
        .map_err(|source| ThingsError::Join {
            realm: realm.clone(),
            source,
        })?;

    let (attach_tx, attach_rx) = mpsc::channel(16);
    let (requests_tx, requests_rx) = mpsc::channel(1024);
    let (watch, _) = tokio::sync::broadcast::channel(WATCH_CAPACITY);
    let link = GatewayLink::new(
        attach_tx,
        t.event_queue,
        t.command_queue,
        stats.clone(),
        credentials,
        requests_tx.clone(),
    )
    .with_watch(watch.clone());
    let store_stats = store.stats().clone();
    let mut audience = crate::router::broker::Audience::default();
    if let Some(tap) = &tap {
        audience.exclude_authid = vec![tap.authid().to_owned()];
    }
    let publish = service::Publish {
        realm: router
            .realm(&realm)
            .cloned()
            .ok_or_else(|| ThingsError::NoRealm(realm.clone()))?,
        publisher: crate::router::broker::Publisher {
            session: first.0.session_id(),
            authid: crate::wamp::uris::things::SERVICE_AUTHID.into(),
            authrole: "trusted".into(),
        },
        audience,
    };
    let service = service::ThingsService {
        core,
        attach: attach_rx,
        requests: requests_rx,
        publish,
        store: store.sender(),
        store_room: store.room(),
        store_waker: store.waker(),
        stats,
        store_backlog_max: t.store_queue,
        store_stats: store_stats.clone(),
        tap,
        watch,
    };
    let (stop, sup) = (shutdown.clone(), supervisor.clone());
    supervisor.critical("things_service", async move {
        if service.run(stop).await == service::Ended::WriterGone {
            sup.fail(
                "things_store",
                "stopped: the database writer thread is gone",
            );
        }
        // The service dropped its sender: the writer commits what is left and stops.
        match tokio::task::spawn_blocking(move || store.close()).await {
            Ok(()) => tracing::debug!("things database closed"),
            Err(e) => tracing::error!(error = %e, "closing the things database failed"),
        }
    });
    let wamp = session::SessionTask {
        router: router.clone(),
        realm,
        requests: requests_tx,
        tracker: tracker.clone(),
        shutdown: shutdown.clone(),
    };
    supervisor.critical("things_session", wamp.run(first));
    Ok(Things {
        link,
        database,
        store_stats,
    })
}
