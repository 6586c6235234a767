//! Starting and stopping the hub: bind every listener (failing before any serves if one cannot
//! bind), serve, and on shutdown give every session GOODBYE and every task a grace period.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{Config, ListenerKind};
use crate::router::Router;
use crate::supervisor::Supervisor;
use crate::transport::listener;

/// Why the hub could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// A part of the hub failed while it started (the process exits with
    /// [`crate::supervisor::EXIT_FAILED`], as when a part fails later).
    #[error("a part of the hub failed while it started: {0}")]
    PartFailed(String),
    #[error("cannot create data directory {path}: {source}")]
    DataDir {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Things(#[from] crate::things::ThingsError),
    #[error(transparent)]
    Gateway(#[from] crate::device_gateways::GatewayStartError),
    #[error("the hub's own session: {0}")]
    Local(#[source] crate::client::ClientError),
    #[error("uplink: {0}")]
    Uplink(#[from] crate::uplink::UplinkError),
    #[error("listener {name}: cannot bind {address}: {source}")]
    Bind {
        name: String,
        address: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// A running hub.
#[derive(Debug)]
pub struct Hub {
    router: Arc<Router>,
    addrs: Vec<(String, SocketAddr)>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
    supervisor: Supervisor,
    grace: Duration,
    things: crate::things::Things,
    gateways: crate::device_gateways::Gateways,
}

impl Hub {
    /// Validates the config, binds every listener, and starts serving.
    pub async fn start(config: Config) -> Result<Hub, ServerError> {
        config.validate()?;
        let plans = config.listener_plans()?;
        let catalog = crate::things::load_catalog(&config)?;
        let prepared = crate::device_gateways::prepare(&config, &catalog)?;
        std::fs::create_dir_all(&config.hub.data_dir).map_err(|source| ServerError::DataDir {
            path: config.hub.data_dir.display().to_string(),
            source,
        })?;
        let mut bound = Vec::new();
        for plan in plans {
            let l = TcpListener::bind(plan.address)
                .await
                .map_err(|source| ServerError::Bind {
                    name: plan.spec.name.clone(),
                    address: plan.address,
                    source,
                })?;
            let addr = l.local_addr().unwrap_or(plan.address);
            bound.push((l, addr, plan));
        }
        let memory = device_models::MemoryPressure::new();
        let mut router_config = config.router_config()?;
        router_config.memory = memory.clone();
        let http = match config.http_plan()? {
            Some(plan) => {
                let l =
                    crate::http::bind(plan.address)
                        .await
                        .map_err(|source| ServerError::Bind {
                            name: "http".into(),
                            address: plan.address,
                            source,
                        })?;
                Some((l, plan))
            }
            None => None,
        };
        let router = Router::new(router_config);
        let shutdown = CancellationToken::new();
        let tracker = TaskTracker::new();
        let supervisor = Supervisor::new(shutdown.clone(), tracker.clone());
        let disk_budget = config.hub.disk_budget();
        // Room kept for the things database when the disk fills up (see crate::disk).
        let reserve_bytes = crate::disk::MAX_RESERVE_BYTES.min(disk_budget / 16);
        let reserve = Arc::new(crate::disk::DiskReserve::existing(
            &config.hub.data_dir,
            reserve_bytes,
        ));
        // Written off the start path: a few MiB and an fsync would delay listening.
        let writing = reserve.clone();
        tokio::task::spawn_blocking(move || writing.restore_if_room());
        let memory_watch =
            start_memory_watch(&config, &router, memory, disk_budget, &supervisor).await?;
        let http_base = http.as_ref().map(|(l, plan)| {
            let scheme = if plan.tls.is_some() { "https" } else { "http" };
            (scheme, l.local_addr().unwrap_or(plan.address))
        });
        let td = td_context(&config, &bound, http_base);
        // The things service hands its events to the uplink directly (see uplink::tap).
        let (tap, tapped) = if config.uplink.enabled {
            let (tap, rx) = crate::uplink::tap(&config.uplink)?;
            (Some(tap), Some(rx))
        } else {
            (None, None)
        };
        let things = crate::things::start(
            &config,
            td,
            &router,
            shutdown.clone(),
            catalog.clone(),
            tap,
            Some(reserve.clone()),
            &supervisor,
        )
        .await?;
        // Gateways attach before any WAMP listener accepts, so the first client finds devices.
        let realm = config.things.realm_name(&config.realms).to_owned();
        let started =
            crate::device_gateways::start(prepared, &things.link, &router, &realm, &supervisor)
                .await;
        let gateways = match started {
            Ok(g) => g,
            // A gateway that finds the things service gone reports a failure, not its cause:
            // the service's own failure, which the supervisor records as it catches it.
            Err(e @ crate::device_gateways::GatewayStartError::Attach { .. }) => {
                let _ = tokio::time::timeout(Duration::from_secs(1), supervisor.failed()).await;
                return Err(match supervisor.failure() {
                    Some(failure) => ServerError::PartFailed(failure),
                    None => e.into(),
                });
            }
            Err(e) => return Err(e.into()),
        };
        let permits = Arc::new(Semaphore::new(config.router.max_connections));
        // Internal services attach before any listener accepts, so the first client finds them.
        let mut uplink = None;
        if config.uplink.enabled {
            let realm = config.realms[0].name.clone();
            // The uplink queue gets the disk budget less what the things database holds now,
            // with room left for that to grow (it is never shed).
            let budget = disk_budget;
            let things_db = std::fs::metadata(&things.database).map_or(0, |m| m.len());
            let queue_file = budget
                .saturating_sub(things_db.saturating_mul(2))
                .saturating_sub(reserve_bytes)
                .max(crate::config::hub::MIN_DISK_BYTES / 2);
            let handle = crate::uplink::start(
                &router,
                &realm,
                &config.hub.id,
                &config.hub.data_dir,
                config.uplink.clone(),
                tapped,
                things.link.clone(),
                queue_file,
                Some(reserve.clone()),
                &supervisor,
            )
            .await?;
            uplink = Some(handle);
        }
        let mut addrs = Vec::new();
        for (l, addr, plan) in bound {
            // RawSocket has no standard URL scheme; TLS ones are shown as rss://.
            let (ws, rs) = if plan.spec.tls.is_some() {
                ("wss", format!("rss://{addr}"))
            } else {
                ("ws", addr.to_string())
            };
            match plan.kind {
                ListenerKind::Websocket => tracing::info!(
                    listener = %plan.spec.name,
                    "WAMP over WebSocket at {ws}://{addr}{}",
                    plan.spec.path
                ),
                ListenerKind::Rawsocket => {
                    tracing::info!(listener = %plan.spec.name, "WAMP over RawSocket at {rs}")
                }
                ListenerKind::Both => tracing::info!(
                    listener = %plan.spec.name,
                    "WAMP over RawSocket at {rs} and WebSocket at {ws}://{addr}{}",
                    plan.spec.path
                ),
            }
            addrs.push((plan.spec.name.clone(), addr));
            supervisor.critical(
                "wamp_listener",
                listener::serve(
                    l,
                    Arc::new(plan.spec),
                    router.clone(),
                    permits.clone(),
                    shutdown.clone(),
                    tracker.clone(),
                ),
            );
        }
        if let Some((l, plan)) = http {
            let addr = l.local_addr().unwrap_or(plan.address);
            let scheme = if plan.tls.is_some() { "https" } else { "http" };
            tracing::info!("HTTP (console, REST API, health, metrics) at {scheme}://{addr}/");
            let mut listeners = addrs.clone();
            if let Some(a) = gateways.addrs.mqtt {
                listeners.push(("mqtt".into(), a));
            }
            if let Some(a) = gateways.addrs.coap {
                listeners.push(("coap".into(), a));
            }
            for (name, a) in &gateways.addrs.raw {
                if let Some(a) = a {
                    listeners.push((name.clone(), *a));
                }
            }
            let view = crate::http::HubView {
                id: config.hub.id.clone(),
                started: std::time::Instant::now(),
                supervisor: supervisor.clone(),
                router: router.clone(),
                things: things.link.clone(),
                store: things.store_stats.clone(),
                mqtt: gateways.mqtt.clone(),
                coap: gateways.coap.clone(),
                raw: gateways.raw_stats.clone(),
                modbus: gateways.modbus_stats.clone(),
                uplink,
                memory: memory_watch,
                listeners,
                realm: realm.clone(),
            };
            addrs.push(("http".into(), addr));
            supervisor.critical(
                "http_listener",
                crate::http::serve(l, plan.tls, view, shutdown.clone()),
            );
        }
        Ok(Hub {
            router,
            addrs,
            shutdown,
            tracker,
            supervisor,
            grace: Duration::from_secs(config.hub.shutdown_grace_secs),
            things,
            gateways,
        })
    }

    /// Where the device gateways listen (MQTT, CoAP, raw listeners).
    pub fn gateway_addrs(&self) -> &crate::device_gateways::GatewayAddrs {
        &self.gateways.addrs
    }

    /// The running device gateways (MQTT handle, raw listener statistics, bridge counters).
    pub fn gateways(&self) -> &crate::device_gateways::Gateways {
        &self.gateways
    }

    /// The handle gateways (and simulated devices) attach to the things service with.
    pub fn things(&self) -> &crate::things::GatewayLink {
        &self.things.link
    }

    /// The things database writer's counters.
    pub fn things_store_stats(&self) -> &std::sync::Arc<crate::things::store::StoreStats> {
        &self.things.store_stats
    }

    /// The things database file.
    pub fn things_database(&self) -> &std::path::Path {
        &self.things.database
    }

    /// The router, for in-process sessions.
    pub fn router(&self) -> &Arc<Router> {
        &self.router
    }

    /// The bound address of a listener by name (useful when the config asked for port 0).
    pub fn local_addr(&self, listener: &str) -> Option<SocketAddr> {
        self.addrs
            .iter()
            .find(|(n, _)| n == listener)
            .map(|(_, a)| *a)
    }

    /// Resolves once a part of the hub failed (see [`Supervisor`]); the hub is then stopping.
    pub async fn failed(&self) {
        self.supervisor.failed().await;
    }

    /// Which part failed and how, if one did.
    pub fn failure(&self) -> Option<String> {
        self.supervisor.failure()
    }

    /// A token that, once cancelled, starts the shutdown of every task of this hub.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Shuts down: listeners stop, sessions get GOODBYE `wamp.close.system_shutdown`, and tasks
    /// get the grace period to finish. Returns whether everything finished in time.
    pub async fn shutdown(self) -> bool {
        self.shutdown.cancel();
        self.tracker.close();
        let done = tokio::time::timeout(self.grace, self.tracker.wait())
            .await
            .is_ok();
        if done {
            tracing::info!("shutdown complete");
        } else {
            tracing::warn!(grace = ?self.grace, "tasks still running after the grace period; exiting anyway");
        }
        done
    }
}

/// Starts the memory watch and `brume.hub.status` on a local session of the things realm.
async fn start_memory_watch(
    config: &Config,
    router: &Arc<Router>,
    memory: device_models::MemoryPressure,
    disk_budget: u64,
    supervisor: &Supervisor,
) -> Result<Arc<crate::memory::MemoryWatch>, ServerError> {
    let budget = config.hub.memory_budget();
    tracing::info!(budget, "memory budget");
    let watch = crate::memory::MemoryWatch::new(budget, memory);
    let realm = config.things.realm_name(&config.realms);
    let local = crate::client::Client::local(
        router,
        realm,
        crate::router::AuthInfo {
            authid: "brume-hub".into(),
            authrole: "trusted".into(),
            authmethod: "trusted".into(),
            authprovider: "static".into(),
        },
    )
    .map_err(ServerError::Local)?;
    let reg = local
        .register(crate::wamp::uris::hub::STATUS, crate::wamp::Dict::new())
        .await
        .map_err(ServerError::Local)?;
    let shutdown = supervisor.shutdown().clone();
    supervisor.critical(
        "hub_status",
        crate::memory::serve_status(
            config.hub.id.clone(),
            disk_budget,
            watch.clone(),
            reg,
            shutdown.clone(),
        ),
    );
    supervisor.critical(
        "memory_watch",
        crate::memory::watch(watch.clone(), local, shutdown),
    );
    Ok(watch)
}

/// How Thing Descriptions name this hub: its id, the first WebSocket listener's URL (`wss://` when
/// it has TLS), and whether the things realm admits anonymous sessions (`nosec`) or wants WAMP
/// authentication (the TD 1.1 `auto` scheme: the consumer negotiates it in HELLO).
fn td_context(
    config: &Config,
    bound: &[(TcpListener, SocketAddr, crate::config::ListenerPlan)],
    http: Option<(&str, SocketAddr)>,
) -> device_models::TdContext {
    let ws_url = bound
        .iter()
        .find(|(_, _, p)| p.kind != ListenerKind::Rawsocket)
        .map(|(_, addr, p)| {
            let scheme = if p.spec.tls.is_some() { "wss" } else { "ws" };
            format!("{scheme}://{addr}{}", p.spec.path)
        })
        .unwrap_or_default();
    let mut td = device_models::TdContext::new(config.hub.id.clone(), ws_url);
    let realm = config.things.realm_name(&config.realms);
    td.realm = realm.to_owned();
    let anonymous = config.realms.iter().any(|r| r.name == realm && r.anonymous);
    if !anonymous {
        let mut definitions = serde_json::Map::new();
        definitions.insert(
            "wamp_auth".into(),
            serde_json::json!({ "scheme": "auto", "description": "WAMP authentication (ticket, WAMP-CRA, cryptosign) negotiated in HELLO" }),
        );
        definitions.insert(
            "http_ticket".into(),
            serde_json::json!({ "scheme": "bearer", "in": "header", "name": "Authorization", "description": "A WAMP ticket as a bearer token, on the HTTP forms" }),
        );
        td.security = device_models::TdSecurity::Custom {
            definitions,
            security: vec!["wamp_auth".into()],
        };
    }
    if let Some((scheme, addr)) = http {
        td.extra_forms = http_forms(&format!("{scheme}://{addr}"), !anonymous);
    }
    td
}

/// The HTTP forms of the REST API beside the WAMP ones (`htv:methodName` from the HTTP
/// vocabulary of TD 1.1; observation over Server-Sent Events). With `bearer`, each names the
/// `http_ticket` security scheme.
fn http_forms(base: &str, bearer: bool) -> Vec<device_models::td::ExtraForm> {
    use device_models::PropertyKind::{Info, State};
    use device_models::td::{AffordanceSelector as On, ExtraForm};
    let form = |selector: On, op: serde_json::Value, method: &str, path: &str| {
        let mut f = serde_json::Map::new();
        f.insert("href".into(), format!("{base}{path}").into());
        f.insert("op".into(), op);
        f.insert("htv:methodName".into(), method.into());
        f.insert("contentType".into(), "application/json".into());
        if bearer {
            f.insert("security".into(), serde_json::json!(["http_ticket"]));
        }
        ExtraForm { selector, form: f }
    };
    let sse = |selector: On, op: serde_json::Value| {
        let mut f = form(selector, op, "GET", "/api/events?thing={thing}");
        f.form.insert("subprotocol".into(), "sse".into());
        f.form
            .insert("contentType".into(), "text/event-stream".into());
        f
    };
    let property = "/api/things/{thing}/properties/{name}";
    vec![
        form(
            On::Thing,
            "readallproperties".into(),
            "GET",
            "/api/things/{thing}",
        ),
        form(
            On::Thing,
            "writemultipleproperties".into(),
            "PUT",
            "/api/things/{thing}/desired",
        ),
        form(
            On::PropertiesOfKind(State),
            "readproperty".into(),
            "GET",
            property,
        ),
        form(
            On::PropertiesOfKind(Info),
            "readproperty".into(),
            "GET",
            property,
        ),
        form(
            On::WritablePropertiesOfKind(State),
            "writeproperty".into(),
            "PUT",
            property,
        ),
        form(
            On::WritablePropertiesOfKind(Info),
            "writeproperty".into(),
            "PUT",
            property,
        ),
        sse(
            On::PropertiesOfKind(State),
            serde_json::json!(["observeproperty", "unobserveproperty"]),
        ),
        form(
            On::AllActions,
            "invokeaction".into(),
            "POST",
            "/api/things/{thing}/actions/{name}",
        ),
        sse(
            On::AllEvents,
            serde_json::json!(["subscribeevent", "unsubscribeevent"]),
        ),
    ]
}

/// Runs the hub until `stop` is cancelled, then shuts it down.
pub async fn run(config: Config, stop: CancellationToken) -> Result<(), ServerError> {
    let hub = Hub::start(config).await?;
    stop.cancelled().await;
    hub.shutdown().await;
    Ok(())
}
