//! The cloud session: connect, register, report drops, replay the queue; on any failure, back off
//! with jitter and do it all again.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use super::{Shared, cloud_topic, status};
use crate::client::{Client, ClientAuth, ClientError, ConnectOptions, Invocation, WampError};
use crate::things::api::{self, Procedure};
use crate::wamp::{Dict, Payload, Value, dict, uris};

/// Cloud calls served at once; more wait.
const CONCURRENT_CALLS: usize = 64;

/// Runs the link until shutdown. Started again by the supervisor if it fails, so it starts
/// from "not connected" whatever an earlier run left.
pub(super) async fn run(shared: Arc<Shared>, shutdown: CancellationToken) {
    if let Some(s) = shared.status.set_connected(false, None) {
        status::announce(&shared, s).await;
    }
    device_models::fault::inject("uplink_link");
    let initial = Duration::from_millis(shared.config.reconnect_initial_ms);
    let cap = Duration::from_millis(shared.config.reconnect_max_ms);
    let mut backoff = initial;
    loop {
        if shutdown.is_cancelled() {
            return;
        }
        match connect(&shared).await {
            Ok(cloud) => {
                backoff = initial;
                tracing::info!(url = %shared.config.url, session = cloud.session_id(), "uplink connected");
                if let Some(s) = shared.status.set_connected(true, None) {
                    status::announce(&shared, s).await;
                }
                let reason = serve(&shared, &cloud, &shutdown).await;
                if shutdown.is_cancelled() {
                    let _ = tokio::time::timeout(Duration::from_secs(2), cloud.leave()).await;
                    return;
                }
                tracing::warn!(%reason, "uplink lost; events are kept in the queue");
                if let Some(s) = shared.status.set_connected(false, Some(reason)) {
                    status::announce(&shared, s).await;
                }
            }
            Err(e) => {
                tracing::info!(url = %shared.config.url, error = %e, retry_in = ?backoff, "uplink cannot connect");
                shared.status.set_connected(false, Some(e.to_string()));
            }
        }
        // Full jitter between half the back-off and all of it, so hubs do not reconnect in step.
        let delay = backoff.mul_f64(0.5 + rand::random::<f64>() * 0.5);
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(delay) => {}
        }
        backoff = (backoff * 2).min(cap);
    }
}

/// Why the uplink could not open a cloud session.
#[derive(Debug, thiserror::Error)]
enum ConnectError {
    #[error("uplink configuration: {0}")]
    Config(#[from] crate::config::ConfigError),
    #[error("the cryptosign secret is not a 64-hex-digit Ed25519 seed")]
    BadSeed,
    #[error("uplink CA file: {0}")]
    Tls(#[from] crate::transport::tls::TlsError),
    #[error(transparent)]
    Client(#[from] ClientError),
}

async fn connect(shared: &Shared) -> Result<Client, ConnectError> {
    let c = &shared.config;
    let auth = match c.auth.method.as_str() {
        "ticket" => ClientAuth::Ticket {
            authid: c.auth.authid.clone(),
            ticket: c.secret()?,
        },
        "wampcra" => ClientAuth::WampCra {
            authid: c.auth.authid.clone(),
            secret: c.secret()?,
        },
        "cryptosign" => ClientAuth::Cryptosign {
            authid: (!c.auth.authid.is_empty()).then(|| c.auth.authid.clone()),
            key: crate::router::auth::cryptosign::PrivateKey::from_hex(&c.secret()?)
                .ok_or(ConnectError::BadSeed)?,
            channel_binding: c.auth.channel_binding,
        },
        _ => ClientAuth::Anonymous,
    };
    let mut opts = ConnectOptions::new(&c.url, &c.realm)
        .serializer(c.serializer()?)
        .auth(auth);
    opts.keepalive = Some(Duration::from_secs(c.keepalive_secs.max(1)));
    if let Some(ca) = &c.auth.ca_file {
        let tls =
            crate::transport::tls::TlsClientConfig::with_root_pem_file(std::path::Path::new(ca))?;
        opts = opts.tls(tls);
    }
    Ok(Client::connect(&opts).await?)
}

/// Serves one cloud session until it ends; returns why.
async fn serve(shared: &Arc<Shared>, cloud: &Client, shutdown: &CancellationToken) -> String {
    if let Err(e) = register_procedures(shared, cloud).await {
        return format!("cannot register the hub's procedures: {e}");
    }
    let _probe = tokio_util::task::AbortOnDropHandle::new(tokio::spawn(probe(
        shared.clone(),
        cloud.clone(),
    )));
    loop {
        if let Err(e) = report_drops(shared, cloud).await {
            return e;
        }
        let window = shared.config.window;
        let batch = match shared.with_queue(move |q| q.peek(0, window)).await {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(error = %e, "cannot read the uplink queue");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        if batch.is_empty() {
            tokio::select! {
                () = shutdown.cancelled() => return "shutdown".into(),
                reason = cloud.closed() => return reason.unwrap_or_else(|| "closed".into()),
                () = shared.queued.notified() => {}
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
            continue;
        }
        let items: Vec<(String, Payload)> = batch
            .iter()
            .map(|e| {
                let (args, mut kwargs) = e.payload.clone().into_parts();
                kwargs.insert(
                    "_brume".into(),
                    Value::Dict(dict([
                        ("hub", Value::from(shared.hub_id.as_str())),
                        ("seq", Value::from(e.seq)),
                        ("at", Value::from(e.at_ms)),
                    ])),
                );
                (
                    cloud_topic(&shared.config.prefix, &shared.hub_id, &e.topic),
                    Payload::new(args, kwargs),
                )
            })
            .collect();
        let results = tokio::select! {
            () = shutdown.cancelled() => return "shutdown".into(),
            r = cloud.publish_batch_acked(items) => r,
        };
        let mut acked = Vec::new();
        let mut rejected = Vec::new();
        let mut lost = None;
        for (e, r) in batch.iter().zip(results) {
            match r {
                Ok(_) => acked.push(e.seq),
                // The cloud router refused this one (not authorized, invalid URI): it will never
                // go up, so it is dropped and counted rather than wedging the queue.
                Err(ClientError::Wamp(w)) => {
                    tracing::warn!(topic = %e.topic, error = %w, "cloud router refused an event; dropped");
                    rejected.push(e.seq);
                }
                Err(other) => {
                    lost.get_or_insert_with(|| other.to_string());
                }
            }
        }
        shared.status.add_forwarded(acked.len() as u64);
        let _ = shared
            .with_queue(move |q| {
                q.ack(&acked)?;
                q.reject(&rejected)
            })
            .await;
        if let Some(reason) = lost {
            return reason;
        }
    }
}

/// How often the link proves itself end to end.
const PROBE_EVERY: Duration = Duration::from_secs(5);

/// Proves the link end to end every [`PROBE_EVERY`] for as long as the session lasts: calls
/// the hub's own `uplink.status` through the cloud router, which routes it back to this hub,
/// and records the round trip (or its failure) in the status that readiness reads.
async fn probe(shared: Arc<Shared>, cloud: Client) {
    let procedure = format!("{}.{}.uplink.status", shared.config.prefix, shared.hub_id);
    loop {
        let started = std::time::Instant::now();
        let call = cloud.call(&procedure, Vec::new(), Dict::new());
        match tokio::time::timeout(PROBE_EVERY, call).await {
            Ok(Ok(_)) => shared.status.set_round_trip(Ok(started.elapsed())),
            Ok(Err(e)) => shared.status.set_round_trip(Err(e.to_string())),
            Err(_) => shared
                .status
                .set_round_trip(Err(format!("no answer within {PROBE_EVERY:?}"))),
        }
        tokio::select! {
            _ = cloud.closed() => return,
            () = tokio::time::sleep(PROBE_EVERY) => {}
        }
    }
}

/// Publishes unreported drop counts on `<prefix>.<hub>.uplink.dropped` and forgets them once the
/// cloud acknowledged.
async fn report_drops(shared: &Arc<Shared>, cloud: &Client) -> Result<(), String> {
    let dropped = match shared.with_queue(|q| q.dropped()).await {
        Ok(d) if !d.is_empty() => d,
        _ => return Ok(()),
    };
    let counts: Dict = dropped
        .iter()
        .map(|(t, n)| (t.clone(), Value::from(*n)))
        .collect();
    let total: u64 = dropped.iter().map(|(_, n)| n).sum();
    let topic = format!("{}.{}.uplink.dropped", shared.config.prefix, shared.hub_id);
    let payload = Payload::kwargs(dict([
        ("hub", Value::from(shared.hub_id.as_str())),
        ("total", Value::from(total)),
        ("counts", Value::Dict(counts)),
    ]));
    match cloud.publish_acked(&topic, payload, Dict::new()).await {
        Ok(_) => {
            tracing::warn!(total, "reported dropped uplink events to the cloud");
            let _ = shared.with_queue(move |q| q.clear_dropped(&dropped)).await;
            Ok(())
        }
        Err(e) => Err(format!("cannot report drops: {e}")),
    }
}

/// What a cloud call is served by.
#[derive(Clone, Debug)]
enum Target {
    /// The things service, asked in process exactly as its WAMP procedure would ask it; an
    /// action carries its local URI (`brume.thing.<id>.action.<name>`).
    Things(Procedure, Option<String>),
    /// The uplink's own status.
    Status,
}

/// Registers the hub's procedures on the cloud router (taking over stale registrations of an
/// earlier session of this hub) and serves them from the things service and the uplink's
/// status, in process (never through the hub's own WAMP procedures).
async fn register_procedures(shared: &Arc<Shared>, cloud: &Client) -> Result<(), ClientError> {
    let base = format!("{}.{}", shared.config.prefix, shared.hub_id);
    let calls = Arc::new(Semaphore::new(CONCURRENT_CALLS));
    let exact = [
        ("things.list", Target::Things(Procedure::List, None)),
        ("things.get", Target::Things(Procedure::Get, None)),
        ("things.set", Target::Things(Procedure::Set, None)),
        ("things.describe", Target::Things(Procedure::Describe, None)),
        ("uplink.status", Target::Status),
    ];
    for (cloud_name, target) in exact {
        let reg = cloud
            .register(
                &format!("{base}.{cloud_name}"),
                dict([("force_reregister", Value::Bool(true))]),
            )
            .await?;
        spawn_forwarder(shared.clone(), reg, calls.clone(), move |_| {
            Some(target.clone())
        });
    }
    let prefix = format!("{base}.thing.");
    let reg = cloud
        .register(
            &prefix,
            dict([
                ("match", Value::from("prefix")),
                ("force_reregister", Value::Bool(true)),
            ]),
        )
        .await?;
    spawn_forwarder(shared.clone(), reg, calls, move |inv| {
        let rest = inv.procedure.as_deref()?.strip_prefix(&prefix)?;
        // Only actions: <thing id>.action.<name>.
        let parts: Vec<&str> = rest.split('.').collect();
        (parts.len() == 3 && parts[1] == "action").then(|| {
            let local = format!("{}{rest}", uris::things::THING_PREFIX);
            Target::Things(Procedure::Action, Some(local))
        })
    });
    Ok(())
}

fn spawn_forwarder(
    shared: Arc<Shared>,
    mut reg: crate::client::Registration,
    calls: Arc<Semaphore>,
    map: impl Fn(&Invocation) -> Option<Target> + Send + 'static,
) {
    tokio::spawn(async move {
        while let Some(inv) = reg.next().await {
            let Some(target) = map(&inv) else {
                let _ = inv
                    .fail(WampError::new(
                        uris::NO_SUCH_PROCEDURE,
                        "no such procedure on this hub",
                    ))
                    .await;
                continue;
            };
            let Ok(permit) = calls.clone().acquire_owned().await else {
                return;
            };
            let shared = shared.clone();
            tokio::spawn(async move {
                serve_call(&shared, target, inv).await;
                drop(permit);
            });
        }
    });
}

/// Answers one cloud call. A cloud caller's cancel (or the cloud router's timeout) drops the
/// things service's request, which forgets a `set` or an action waiting on its device.
async fn serve_call(shared: &Shared, target: Target, mut inv: Invocation) {
    let (proc, local_uri) = match target {
        Target::Status => {
            let status = shared.status.get();
            let _ = inv.reply(Payload::kwargs(status.to_dict())).await;
            return;
        }
        Target::Things(proc, uri) => (proc, uri),
    };
    let result = match api::parse(proc, local_uri.as_deref(), &inv.payload, &inv.details) {
        Err(e) => Err(e),
        Ok(request) => {
            tokio::select! {
                r = shared.things.call(request) => r,
                Some(interrupt) = inv.interrupted() => Err(api::interrupted(&interrupt.reason)),
            }
        }
    };
    api::reply(inv, result, "a cloud call").await;
}
