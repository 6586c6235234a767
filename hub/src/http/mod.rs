//! The operator's HTTP listener (`[http]`, plain or TLS):
//! - `/healthz` (the process answers) and `/readyz` (every part runs, the store commits, the
//!   things service answers, the uplink proved itself through the cloud router; 503 naming what
//!   is not ready), open to anyone who reaches the port, for probes;
//! - `/metrics` (Prometheus text format, see [`metrics`]) and `/status` (the JSON `brume status`
//!   prints), for principals whose role may call `brume.hub.status`;
//! - the REST API under `/api` ([`api`], documented at `/api/openapi.json`);
//! - the web console at `/console/`, from assets built into the binary (no inline script or
//!   style, so that it runs under the strict [`CONTENT_SECURITY_POLICY`] every answer carries,
//!   with `X-Content-Type-Options: nosniff` and `Referrer-Policy: no-referrer`).
//!
//! Every answer is computed from the same live state the WAMP API reads (the supervisor, the
//! things service, the uplink's status, the gateways' counters): nothing here keeps a copy.
//! Who may do what is the things realm's principals and roles ([`auth`]).

pub mod api;
pub mod auth;
pub mod client;
pub mod error;
pub mod listener;
pub mod metrics;
pub mod openapi;

/// The web console's assets, built into the binary: no files to install, no build step.
mod console {
    use axum::Router as Routes;
    use axum::http::header;
    use axum::response::{IntoResponse, Redirect};
    use axum::routing::get;

    const INDEX: &str = include_str!("console/index.html");
    const SCRIPT: &str = include_str!("console/app.js");
    const STYLE: &str = include_str!("console/app.css");

    fn asset(kind: &'static str, body: &'static str) -> impl IntoResponse {
        (
            [
                (header::CONTENT_TYPE, kind),
                (header::CACHE_CONTROL, "no-cache"),
            ],
            body,
        )
    }

    pub fn routes() -> Routes {
        Routes::new()
            .route("/", get(|| async { Redirect::to("/console/") }))
            .route("/console", get(|| async { Redirect::to("/console/") }))
            .route(
                "/console/",
                get(|| async { asset("text/html; charset=utf-8", INDEX) }),
            )
            .route(
                "/console/app.js",
                get(|| async { asset("text/javascript; charset=utf-8", SCRIPT) }),
            )
            .route(
                "/console/app.css",
                get(|| async { asset("text/css; charset=utf-8", STYLE) }),
            )
    }
}

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use axum::Router as Routes;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value as Json, json};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::memory::MemoryWatch;
use crate::router::Router;
use crate::supervisor::Supervisor;
use crate::things::GatewayLink;
use crate::things::store::StoreStats;
use crate::uplink::UplinkHandle;

/// How long readiness waits for the things service to answer.
const SERVICE_TIMEOUT: Duration = Duration::from_secs(2);

/// How recent the uplink's last end-to-end round trip must be for it to count as ready: three
/// probe periods.
const UPLINK_FRESH: Duration = Duration::from_secs(15);

/// The live parts of a running hub that the HTTP answers read.
#[derive(Clone, Debug)]
pub struct HubView {
    pub id: String,
    pub started: Instant,
    pub supervisor: Supervisor,
    pub router: Arc<Router>,
    pub things: GatewayLink,
    pub store: Arc<StoreStats>,
    pub mqtt: Option<Arc<gateways::mqtt::MqttHandle>>,
    pub coap: Option<Arc<gateways::coap::gateway::CoapStats>>,
    pub raw: Vec<(String, Arc<gateways::raw::ListenerStats>)>,
    /// Modbus bus statistics by name.
    pub modbus: Vec<(String, Arc<gateways::modbus::BusStats>)>,
    pub uplink: Option<UplinkHandle>,
    pub memory: Arc<MemoryWatch>,
    /// The WAMP listeners and the device gateways' addresses, by name.
    pub listeners: Vec<(String, SocketAddr)>,
    /// The realm of the things API, whose principals and roles the API and console use.
    pub realm: String,
}

/// Serves the routes on `listener` (with TLS when `tls` is given) until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    tls: Option<crate::transport::tls::TlsAcceptor>,
    view: HubView,
    shutdown: CancellationToken,
) {
    device_models::fault::inject("http_listener");
    let Some(realm) = view.router.realm(&view.realm).cloned() else {
        tracing::error!(realm = %view.realm, "the HTTP listener's realm does not exist");
        return;
    };
    let listener = match listener::HttpListener::new(listener, tls) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %e, "the HTTP listener failed");
            return;
        }
    };
    let registry = Arc::new(metrics::registry(&view));
    let view = Arc::new(view);
    let api = Arc::new(api::Api {
        view: view.clone(),
        auth: auth::HttpAuth::new(realm),
        streams: Arc::new(tokio::sync::Semaphore::new(api::MAX_STREAMS)),
        shutdown: shutdown.clone(),
    });
    let operator = Routes::new()
        .route("/status", get(status))
        .route(
            "/metrics",
            get(move |State(_): State<Arc<api::Api>>| {
                let registry = registry.clone();
                async move { metrics::render(&registry) }
            }),
        )
        .route_layer(axum::middleware::from_fn_with_state(
            api.clone(),
            operator_only,
        ))
        .with_state(api.clone());
    let routes = Routes::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(view)
        .merge(operator)
        .merge(api::routes(api))
        .merge(console::routes())
        .fallback(|| async {
            error::HttpError::new(error::NOT_FOUND, "no such resource (see /api/openapi.json)")
        })
        .layer(axum::extract::DefaultBodyLimit::max(api::MAX_BODY))
        .layer(axum::middleware::map_response(security_headers));
    let served = axum::serve(listener, routes)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await;
    if let Err(e) = served {
        tracing::error!(error = %e, "the HTTP listener failed");
    }
}

/// The `Content-Security-Policy` of every answer: the console loads its script, style and data
/// from the hub only, and no other site may frame it, rebase its links or receive its forms.
pub const CONTENT_SECURITY_POLICY: &str =
    "default-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

/// Adds the security headers to every answer (the console's pages and assets, the API, errors):
/// the [`CONTENT_SECURITY_POLICY`], no MIME sniffing, and no `Referer` sent from the console.
/// A handler that set one of them itself keeps its value.
async fn security_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    for (name, value) in [
        (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
    ] {
        headers
            .entry(name)
            .or_insert(header::HeaderValue::from_static(value));
    }
    response
}

/// Lets through principals whose role may call `brume.hub.status` (what `/status` and
/// `/metrics` show).
async fn operator_only(
    State(api): State<Arc<api::Api>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let allowed = match api.auth.authenticate(request.headers()).await {
        Ok(caller) => api.auth.authorize(
            &caller,
            crate::router::authz::Action::Call,
            crate::wamp::uris::hub::STATUS,
        ),
        Err(e) => Err(e),
    };
    match allowed {
        Ok(()) => next.run(request).await,
        Err(e) => e.into_response(),
    }
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(view): State<Arc<HubView>>) -> Response {
    let r = readiness(&view).await;
    let code = if r.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, axum::Json(r.to_json())).into_response()
}

async fn status(State(api): State<Arc<api::Api>>) -> Response {
    let view = &api.view;
    let r = readiness(view).await;
    let body = status_json(view, &r);
    ([(header::CACHE_CONTROL, "no-store")], axum::Json(body)).into_response()
}

/// One check of readiness: what it looked at, and why it failed if it did.
#[derive(Debug)]
pub struct Check {
    pub name: String,
    pub problem: Option<String>,
}

/// The verdict of `/readyz`.
#[derive(Debug)]
pub struct Readiness {
    pub ready: bool,
    pub checks: Vec<Check>,
    /// What the things service answered (its `brume.things.stats`), if it did.
    pub things: Option<Json>,
}

impl Readiness {
    pub fn to_json(&self) -> Json {
        let checks: serde_json::Map<String, Json> = self
            .checks
            .iter()
            .map(|c| {
                let v = match &c.problem {
                    None => json!({"ok": true}),
                    Some(p) => json!({"ok": false, "problem": p}),
                };
                (c.name.clone(), v)
            })
            .collect();
        let not_ready: Vec<String> = self
            .checks
            .iter()
            .filter_map(|c| c.problem.as_ref().map(|p| format!("{}: {p}", c.name)))
            .collect();
        json!({"ready": self.ready, "checks": checks, "not_ready": not_ready})
    }
}

/// Checks every part of the hub, end to end where it can.
pub async fn readiness(view: &HubView) -> Readiness {
    let mut checks = Vec::new();
    let mut check = |name: &str, problem: Option<String>| {
        checks.push(Check {
            name: name.to_owned(),
            problem,
        })
    };
    check(
        "supervisor",
        view.supervisor
            .failure()
            .map(|f| format!("the hub is stopping: {f}")),
    );
    let stopped: Vec<&str> = view
        .supervisor
        .parts()
        .into_iter()
        .filter(|(_, p)| p.started > 0 && p.running == 0)
        .map(|(name, _)| name)
        .collect();
    check(
        "parts",
        (!stopped.is_empty()).then(|| format!("not running: {}", stopped.join(", "))),
    );
    let things = tokio::time::timeout(SERVICE_TIMEOUT, view.things.service_stats())
        .await
        .ok()
        .flatten();
    check(
        "things_service",
        things
            .is_none()
            .then(|| format!("did not answer within {SERVICE_TIMEOUT:?}")),
    );
    check(
        "store",
        view.store
            .failing
            .load(std::sync::atomic::Ordering::Relaxed)
            .then(|| "the last commit of the things database failed".to_owned()),
    );
    check(
        "memory",
        view.memory.shedding().then(|| {
            format!(
                "over the memory budget ({} of {} bytes): shedding and refusing new connections",
                view.memory.rss(),
                view.memory.budget()
            )
        }),
    );
    if let Some(mqtt) = &view.mqtt {
        check(
            "mqtt",
            mqtt.has_failed()
                .then(|| "the MQTT broker stopped routing".to_owned()),
        );
    }
    if let Some(uplink) = &view.uplink {
        let s = uplink.status();
        let problem = if s.proven_within(UPLINK_FRESH) {
            None
        } else if !s.connected {
            Some(format!(
                "not connected to {}{}",
                s.url,
                s.last_error
                    .as_deref()
                    .map(|e| format!(" ({e})"))
                    .unwrap_or_default()
            ))
        } else if let Some(e) = &s.probe_error {
            Some(format!(
                "connected, but a call through the cloud router failed: {e}"
            ))
        } else {
            Some("connected, no round trip through the cloud router yet".to_owned())
        };
        check("uplink", problem);
    }
    let ready = checks.iter().all(|c| c.problem.is_none());
    Readiness {
        ready,
        checks,
        things,
    }
}

/// What `/status` answers: the readiness verdict and the figures an operator looks at first.
fn status_json(view: &HubView, r: &Readiness) -> Json {
    let parts: serde_json::Map<String, Json> = view
        .supervisor
        .parts()
        .into_iter()
        .map(|(name, p)| {
            (
                name.to_owned(),
                json!({"running": p.running, "restarts": p.restarts}),
            )
        })
        .collect();
    let mut gateways = serde_json::Map::new();
    if let Some(mqtt) = &view.mqtt {
        let s = mqtt.stats();
        gateways.insert(
            "mqtt".into(),
            json!({
                "address": mqtt.local_addr().to_string(),
                "connections": s.connections_open,
                "messages_in": s.messages_in,
                "events_out": s.events_out,
                "rejected": s.rejected_payloads,
                "refused": s.connections_refused_auth + s.connections_refused_full + s.connections_refused_memory,
            }),
        );
    }
    if let Some(coap) = &view.coap {
        let s = coap.snapshot();
        gateways.insert(
            "coap".into(),
            json!({
                "requests": s.engine.requests,
                "events_out": s.events_out,
                "observers": s.observers,
                "rejected": s.rejected_auth + s.rejected_not_found + s.rejected_method
                    + s.rejected_bad_request + s.rejected_other + s.engine.refused,
                "busy": s.busy + s.engine.busy,
                "dropped": s.events_dropped + s.notifications_dropped + s.observer_events_dropped
                    + s.observed_malformed + s.engine.malformed + s.engine.rate_limited,
            }),
        );
    }
    for (name, stats) in &view.raw {
        let s = stats.snapshot();
        gateways.insert(
            name.clone(),
            json!({"connections": s.connections, "frames": s.frames}),
        );
    }
    for (name, stats) in &view.modbus {
        let s = stats.snapshot();
        gateways.insert(
            name.clone(),
            json!({
                "devices_online": s.devices_online,
                "requests": s.requests,
                "timeouts": s.timeouts,
                "exceptions": s.exceptions.iter().map(|(_, n)| n).sum::<u64>(),
                "commands_refused": s.commands_refused,
                "faults": s.faults,
            }),
        );
    }
    let memory = Json::from(&crate::wamp::Value::Dict(view.memory.to_dict()));
    json!({
        "id": view.id,
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_secs": view.started.elapsed().as_secs(),
        "readiness": r.to_json(),
        "listeners": view.listeners.iter().map(|(n, a)| (n.clone(), Json::from(a.to_string()))).collect::<serde_json::Map<_, _>>(),
        "sessions": view.router.realms().map(|r| r.sessions().len()).sum::<usize>(),
        "wamp_dropped_by_cause": {
            "too_large": view.router.write_drops().too_large.load(Ordering::Relaxed),
            "unencodable": view.router.write_drops().unencodable.load(Ordering::Relaxed),
        },
        "things": r.things.clone().unwrap_or(Json::Null),
        "gateways": gateways,
        "uplink": view.uplink.as_ref().map_or(Json::Null, |u| Json::from(&crate::wamp::Value::Dict(u.status().to_dict()))),
        "memory": memory,
        "parts": parts,
    })
}

/// Binds the HTTP listener.
pub async fn bind(address: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(address).await
}
