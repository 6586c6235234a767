//! The device gateways as the hub runs them: their config sections (`[mqtt]`, `[coap]`,
//! `[raw]`, `[modbus]`) checked once, before any port opens, each attached to the things service's gateway link
//! (events, commands, credentials and the registry's directory, all in process), and the plain
//! MQTT ↔ WAMP bridge (`a/b/c` ↔ `mqtt.a.b.c`).
//!
//! Bridge rules: an MQTT message on a topic no thing owns is published on WAMP as
//! `mqtt.<levels joined by dots>` with one positional argument, the payload decoded as JSON when
//! it is JSON and as bytes otherwise; topics whose levels are not valid URI components (empty, or
//! holding `.`, `#` or whitespace) are not bridged, and counted. An event published on WAMP to
//! `mqtt.a.b.c` goes to MQTT `a/b/c` with its first argument as the payload: bytes as they are, a
//! string as UTF-8, anything else as JSON. Loops cannot form: the bridge is one WAMP session
//! (publisher exclusion keeps its own publications from it) and the MQTT gateway never reports
//! what the bridge injected.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::supervisor::Supervisor;
use bytes::Bytes;
use device_models::{ThingId, TypeCatalog};
use gateways::GatewayIo;
use gateways::coap::gateway::{CoapConfig, CoapGateway, ServerDevice};
use gateways::modbus;
use gateways::mqtt::{MqttConfig, MqttGateway, MqttHandle};
use gateways::raw;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::client::Client;
use crate::config::{Config, ConfigError, section_error};
use crate::router::{AuthInfo, Router};
use crate::things::GatewayLink;
use crate::things::request::{ApiError, Request};
use crate::wamp::{Dict, Payload, Value, dict};

/// Why a gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum GatewayStartError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("{gateway}: cannot attach to the things service: {reason}")]
    Attach { gateway: String, reason: String },
    #[error("mqtt: {0}")]
    Mqtt(#[from] gateways::mqtt::MqttError),
    #[error("coap: {0}")]
    Coap(#[from] gateways::coap::gateway::GatewayError),
    #[error("raw: {0}")]
    Raw(#[from] gateways::raw::RawError),
    #[error("mqtt bridge session: {0}")]
    Bridge(#[from] crate::client::ClientError),
    #[error("cannot provision the configured devices")]
    Provision(#[source] ApiError),
}

/// The gateway sections checked against the thing types, once, before anything opens: what
/// [`start`] starts. Each gateway has the same shape: its validated config in, a running
/// gateway with a handle out.
#[derive(Debug, Default)]
pub struct PreparedGateways {
    mqtt: Option<MqttConfig>,
    coap: Option<(CoapConfig, Vec<ServerDevice>)>,
    raw: Vec<raw::PreparedListener>,
    modbus: Vec<modbus::PreparedBus>,
}

/// Checks the gateway sections of `config`, naming the key at fault.
pub fn prepare(config: &Config, catalog: &TypeCatalog) -> Result<PreparedGateways, ConfigError> {
    let mut out = PreparedGateways::default();
    if config.mqtt.enabled {
        config
            .mqtt
            .validate()
            .map_err(|e| section_error("mqtt", e))?;
        out.mqtt = Some(config.mqtt.clone());
    }
    if config.coap.enabled {
        let devices = config
            .coap
            .resolve_devices(catalog)
            .map_err(|e| section_error("coap", e))?;
        out.coap = Some((config.coap.clone(), devices));
    }
    out.raw = config
        .raw
        .prepare(catalog)
        .map_err(|e| section_error("raw", e))?;
    out.modbus = config
        .modbus
        .prepare(catalog)
        .map_err(|e| section_error("modbus", e))?;
    let mut things = std::collections::HashSet::new();
    let coap_things = out
        .coap
        .iter()
        .flat_map(|(_, d)| d.iter().map(|d| &d.thing));
    let modbus_things = out
        .modbus
        .iter()
        .flat_map(|b| b.devices.iter().map(|d| &d.thing));
    for thing in coap_things.chain(modbus_things) {
        if !things.insert(thing.clone()) {
            return Err(section_error(
                "modbus",
                DuplicateThing(thing.as_str().to_owned()),
            ));
        }
    }
    Ok(out)
}

/// A thing configured on two device gateways.
#[derive(Debug, thiserror::Error)]
#[error("thing `{0}` is configured on two device gateways")]
struct DuplicateThing(String);

/// Where the running gateways listen.
#[derive(Debug, Default, Clone)]
pub struct GatewayAddrs {
    pub mqtt: Option<SocketAddr>,
    pub coap: Option<SocketAddr>,
    /// Raw listeners by name (serial ports have no address).
    pub raw: Vec<(String, Option<SocketAddr>)>,
}

/// What the hub keeps of the running gateways.
#[derive(Debug, Default)]
pub struct Gateways {
    pub addrs: GatewayAddrs,
    pub mqtt: Option<Arc<MqttHandle>>,
    /// The CoAP gateway's counters.
    pub coap: Option<Arc<gateways::coap::gateway::CoapStats>>,
    /// Raw listener statistics by name.
    pub raw_stats: Vec<(String, Arc<raw::ListenerStats>)>,
    /// Modbus bus statistics by name.
    pub modbus_stats: Vec<(String, Arc<modbus::BusStats>)>,
    /// MQTT messages the bridge could not carry (topics that are not valid URIs, or refused).
    pub bridge_skipped: Arc<AtomicU64>,
}

/// MQTT observer logins: the principals of `realm` whose role is one of `roles`, by their
/// ticket. `None` when no role is named (or the realm is unknown).
fn observer_logins(
    router: &Router,
    realm: &str,
    roles: &[String],
) -> Option<Arc<dyn gateways::ObserverLogins>> {
    if roles.is_empty() {
        return None;
    }
    let principals = router.realm(realm)?.config.principals.clone();
    Some(Arc::new(RealmObservers {
        principals,
        roles: roles.to_vec(),
    }))
}

/// [`gateways::ObserverLogins`] over a realm's principals.
struct RealmObservers {
    principals: Arc<crate::router::auth::PrincipalStore>,
    roles: Vec<String>,
}

impl gateways::ObserverLogins for RealmObservers {
    /// The hash is only computed for a principal that may observe: any other name costs a
    /// lookup and is left to the thing logins.
    fn check(&self, user: &str, password: &str) -> gateways::ObserverCheck {
        match self.principals.get(user) {
            Some(p) if self.roles.contains(&p.role) => {
                let verified = p
                    .ticket
                    .as_ref()
                    .is_some_and(|t| crate::router::auth::off_the_runtime(|| t.verify(password)));
                if verified {
                    gateways::ObserverCheck::Observer
                } else {
                    gateways::ObserverCheck::Refused
                }
            }
            _ => gateways::ObserverCheck::NotObserver,
        }
    }
}

/// Attaches a gateway to the things service, under the hub's memory budget.
async fn attach(
    link: &GatewayLink,
    router: &Router,
    name: &str,
) -> Result<GatewayIo, GatewayStartError> {
    let io = link
        .attach(name)
        .await
        .map_err(|e| GatewayStartError::Attach {
            gateway: name.to_owned(),
            reason: e.to_string(),
        })?;
    Ok(io.with_memory(router.memory().clone()))
}

/// Starts every enabled gateway under `supervisor`: each is critical (see
/// [`crate::supervisor`]).
#[allow(clippy::too_many_arguments)]
pub async fn start(
    prepared: PreparedGateways,
    link: &GatewayLink,
    router: &Arc<Router>,
    realm: &str,
    supervisor: &Supervisor,
) -> Result<Gateways, GatewayStartError> {
    let shutdown = supervisor.shutdown().clone();
    let tracker = supervisor.tracker();
    let mut out = Gateways::default();
    if let Some(mqtt) = prepared.mqtt {
        let io = attach(link, router, "mqtt").await?;
        let observers = observer_logins(router, realm, &mqtt.observer_roles);
        let handle = Arc::new(MqttGateway::start_with_observers(mqtt, io, observers).await?);
        tracing::info!("MQTT broker at mqtt://{}", handle.local_addr());
        out.addrs.mqtt = Some(handle.local_addr());
        let (watched, stopping) = (handle.clone(), shutdown.clone());
        supervisor.critical("mqtt_router_link", async move {
            tokio::select! {
                () = watched.failed() => {}
                () = stopping.cancelled() => {}
            }
        });
        if let Some(raw_messages) = handle.take_raw_messages() {
            let local = internal_client(router, realm, "brume-mqtt")?;
            let bridge = bridge_to_wamp(
                local.clone(),
                raw_messages,
                out.bridge_skipped.clone(),
                shutdown.clone(),
            );
            supervisor.critical("mqtt_bridge", bridge);
            let sub = local
                .subscribe("mqtt.", dict([("match", Value::from("prefix"))]))
                .await?;
            supervisor.critical(
                "mqtt_bridge",
                bridge_to_mqtt(
                    local,
                    sub,
                    handle.clone(),
                    out.bridge_skipped.clone(),
                    shutdown.clone(),
                ),
            );
        }
        let stop = handle.clone();
        let token = shutdown.clone();
        tracker.spawn(async move {
            token.cancelled().await;
            stop.shutdown().await;
        });
        out.mqtt = Some(handle);
    }
    if let Some((coap, devices)) = prepared.coap {
        let typed = devices
            .iter()
            .filter_map(|d| Some((d.thing.clone(), d.type_id.clone()?)));
        provision(link, "CoAP", typed)
            .await
            .map_err(GatewayStartError::Provision)?;
        let io = attach(link, router, "coap").await?;
        let gw = CoapGateway::start_resolved(&coap, devices, io, shutdown.clone()).await?;
        tracing::info!("CoAP gateway at coap://{}", gw.local_addr());
        out.addrs.coap = Some(gw.local_addr());
        out.coap = Some(gw.stats().clone());
        supervisor.critical("coap_gateway", async move {
            if let Err(e) = gw.join().await {
                tracing::error!(error = %e, "CoAP gateway stopped");
            }
        });
    }
    for listener in prepared.raw {
        let name = listener.name().to_owned();
        let io = attach(link, router, &name).await?;
        let l = raw::start(listener, io, shutdown.clone()).await?;
        match l.local_addr() {
            Some(a) => tracing::info!(listener = %name, "raw device listener at {a}"),
            None => tracing::info!(listener = %name, "raw serial device port"),
        }
        out.addrs.raw.push((name.clone(), l.local_addr()));
        out.raw_stats.push((name, l.stats().clone()));
        supervisor.critical("raw_listener", l.join());
    }
    // Every bus's devices before any bus polls: a bus already busy must not slow the start of
    // the next.
    let typed = prepared
        .modbus
        .iter()
        .flat_map(|bus| bus.devices.iter())
        .map(|d| (d.thing.clone(), d.type_id.clone()));
    provision(link, "Modbus", typed)
        .await
        .map_err(GatewayStartError::Provision)?;
    for bus in prepared.modbus {
        let name = bus.name().to_owned();
        let io = attach(link, router, &name).await?;
        let b = modbus::start(bus, io, shutdown.clone());
        tracing::info!(bus = %name, "Modbus bus polled");
        out.modbus_stats.push((name, b.stats().clone()));
        supervisor.critical("modbus_bus", b.join());
    }
    Ok(out)
}

/// Makes every configured device (a `[[coap.devices]]` entry that names its type, a Modbus
/// device) a thing of its type, before its gateway starts. Listing a device in the config is the
/// operator's explicit word, and the hub must know the thing before the first report: under
/// explicit provisioning an unknown thing's reports are dropped, and values that rarely change
/// (a setpoint) would then stay unknown, the thing offline, until they changed.
async fn provision(
    link: &GatewayLink,
    gateway: &str,
    devices: impl Iterator<Item = (ThingId, String)>,
) -> Result<(), ApiError> {
    for (thing, ty) in devices {
        let get = Request::Get {
            thing: thing.clone(),
            property: None,
        };
        match link.call(get).await {
            Ok(known) => {
                let known = known.get("type").and_then(serde_json::Value::as_str);
                if known != Some(ty.as_str()) {
                    tracing::warn!(%thing, configured = %ty, registered = ?known,
                        "{gateway} device's configured type differs from its registered type");
                }
            }
            Err(e) if e.uri == crate::things::errors::NO_SUCH_THING => {
                let provision = Request::Provision {
                    thing: thing.clone(),
                    type_id: ty.clone(),
                    info: serde_json::Map::new(),
                };
                link.call(provision).await?;
                tracing::info!(%thing, r#type = %ty, "{gateway} device provisioned from the config");
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn internal_client(
    router: &Arc<Router>,
    realm: &str,
    name: &str,
) -> Result<Client, crate::client::ClientError> {
    Client::local_with_queue(
        router,
        realm,
        AuthInfo {
            authid: name.into(),
            authrole: "trusted".into(),
            authmethod: "trusted".into(),
            authprovider: "static".into(),
        },
        16_384,
    )
}

/// `a/b/c` → `mqtt.a.b.c`, if every level is a valid URI component.
pub fn mqtt_to_wamp(topic: &str) -> Option<String> {
    let ok = topic
        .split('/')
        .all(|l| !l.is_empty() && !l.contains(['.', '#']) && !l.chars().any(char::is_whitespace));
    ok.then(|| format!("mqtt.{}", topic.replace('/', ".")))
}

/// `mqtt.a.b.c` → `a/b/c`.
pub fn wamp_to_mqtt(topic: &str) -> Option<String> {
    let rest = topic.strip_prefix("mqtt.")?;
    (!rest.is_empty()).then(|| rest.replace('.', "/"))
}

/// An MQTT payload as a WAMP argument: JSON when it parses, bytes otherwise.
pub fn payload_to_wamp(payload: &Bytes) -> Value {
    match serde_json::from_slice::<serde_json::Value>(payload) {
        Ok(v) => Value::from(v),
        Err(_) => Value::Bytes(payload.clone()),
    }
}

/// A WAMP payload as MQTT bytes: the first argument (bytes as they are, a string as UTF-8,
/// anything else as JSON), or the keyword arguments as a JSON object, or nothing.
pub fn payload_to_mqtt(p: &Payload) -> Bytes {
    match p.arg(0) {
        Some(Value::Bytes(b)) => b.clone(),
        Some(Value::Str(s)) => Bytes::from(s.clone()),
        Some(v) => Bytes::from(serde_json::Value::from(v).to_string()),
        None => match p.kwarg_dict() {
            Some(d) => Bytes::from(serde_json::Value::from(&Value::Dict(d.clone())).to_string()),
            None => Bytes::new(),
        },
    }
}

async fn bridge_to_wamp(
    local: Client,
    mut raw: mpsc::Receiver<(String, Bytes)>,
    skipped: Arc<AtomicU64>,
    shutdown: CancellationToken,
) {
    loop {
        let (source, payload) = tokio::select! {
            () = shutdown.cancelled() => return,
            m = raw.recv() => match m { Some(m) => m, None => return },
        };
        let topic = source.strip_prefix("mqtt:").unwrap_or(&source);
        let Some(uri) = mqtt_to_wamp(topic) else {
            if (skipped.fetch_add(1, Ordering::Relaxed) + 1).is_power_of_two() {
                tracing::info!(%topic, "MQTT topic is not a valid WAMP URI; not bridged");
            }
            continue;
        };
        let args = vec![payload_to_wamp(&payload)];
        if local
            .publish(&uri, Payload::args(args), Dict::new())
            .await
            .is_err()
        {
            return;
        }
    }
}

async fn bridge_to_mqtt(
    _local: Client,
    mut sub: crate::client::Subscription,
    handle: Arc<MqttHandle>,
    skipped: Arc<AtomicU64>,
    shutdown: CancellationToken,
) {
    loop {
        let ev = tokio::select! {
            () = shutdown.cancelled() => return,
            ev = sub.next() => match ev { Some(ev) => ev, None => return },
        };
        let Some(topic) = ev.topic.as_deref().and_then(wamp_to_mqtt) else {
            continue;
        };
        let sent = handle
            .publish_raw(&topic, payload_to_mqtt(&ev.payload), false)
            .await;
        if let Err(e) = sent
            && (skipped.fetch_add(1, Ordering::Relaxed) + 1).is_power_of_two()
        {
            tracing::info!(%topic, error = %e, "WAMP event not bridged to MQTT");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prepared(toml: &str) -> Result<PreparedGateways, String> {
        let config = Config::from_toml(toml, "test.toml").map_err(|e| e.to_string())?;
        let catalog = TypeCatalog::builtin().map_err(|e| e.to_string())?;
        prepare(&config, &catalog).map_err(|e| {
            let mut text = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                text.push_str(": ");
                text.push_str(&s.to_string());
                source = s.source();
            }
            text
        })
    }

    #[test]
    fn modbus_buses_are_checked_once_against_the_types() {
        let ok = prepared(
            "[[modbus.tcp]]\naddress = '127.0.0.1:5020'\n\
             devices = [{ unit = 1, thing = 'm-1', thing_type = 'modbus_meter' },\
                        { unit = 2, thing = 'd-1', thing_type = 'modbus_drive' }]\n\
             [[modbus.tcp]]\naddress = 'meter-7.local:502'\n\
             devices = [{ unit = 1, thing = 'm-2', thing_type = 'modbus_meter' }]\n\
             [[modbus.rtu]]\npath = '/dev/ttyUSB0'\n\
             devices = [{ unit = 7, thing = 'm-7', thing_type = 'modbus_meter' }]\n",
        )
        .expect("a valid section");
        assert_eq!(ok.modbus.len(), 3);
        assert_eq!(ok.modbus[0].name(), "modbus:127.0.0.1:5020");
        assert_eq!(ok.modbus[1].name(), "modbus:meter-7.local:502");
        assert_eq!(ok.modbus[2].name(), "modbus:/dev/ttyUSB0");
        // Devices of one type share its compiled binding.
        assert!(Arc::ptr_eq(
            &ok.modbus[0].devices[0].model,
            &ok.modbus[2].devices[0].model
        ));

        for (toml, key) in [
            (
                "[[modbus.tcp]]\naddress = 'x'\ndevices = []\n",
                "tcp[0].address",
            ),
            (
                "[[modbus.tcp]]\naddress = 'meter 7:502'\n\
                 devices = [{ unit = 1, thing = 'a', thing_type = 'modbus_meter' }]\n",
                "tcp[0].address",
            ),
            (
                "[[modbus.tcp]]\naddress = 'meter-7.local'\n\
                 devices = [{ unit = 1, thing = 'a', thing_type = 'modbus_meter' }]\n",
                "tcp[0].address",
            ),
            (
                "[[modbus.tcp]]\naddress = '127.0.0.1:502'\n\
                 devices = [{ unit = 1, thing = 'a', thing_type = 'nope' }]\n",
                "tcp[0].devices[0].thing_type: no thing type `nope`",
            ),
            (
                "[[modbus.tcp]]\naddress = '127.0.0.1:502'\n\
                 devices = [{ unit = 1, thing = 'a', thing_type = 'thermostat' }]\n",
                "tcp[0].devices[0].thing_type",
            ),
            (
                "[[modbus.rtu]]\npath = '/dev/ttyS0'\n\
                 devices = [{ unit = 0, thing = 'a', thing_type = 'modbus_meter' }]\n",
                "rtu[0].devices[0].unit: use 1 to 247",
            ),
            (
                "[[modbus.rtu]]\npath = '/dev/ttyS0'\n\
                 devices = [{ unit = 1, thing = 'a', thing_type = 'modbus_meter' },\
                            { unit = 1, thing = 'b', thing_type = 'modbus_meter' }]\n",
                "rtu[0].devices[1].unit",
            ),
            (
                "[[modbus.tcp]]\naddress = '127.0.0.1:502'\n\
                 devices = [{ unit = 1, thing = 'a', thing_type = 'modbus_meter' }]\n\
                 [[modbus.rtu]]\npath = '/dev/ttyS0'\n\
                 devices = [{ unit = 1, thing = 'a', thing_type = 'modbus_meter' }]\n",
                "rtu[0].devices[0].thing: thing `a` is already on a Modbus bus",
            ),
            (
                "[[modbus.rtu]]\npath = '/dev/ttyS0'\nparity = 'mark'\n",
                "parity",
            ),
            (
                "[[modbus.rtu]]\npath = '/dev/ttyS0'\nbaud = 9600\n",
                "unknown field `baud`",
            ),
        ] {
            let e = match prepared(toml) {
                Ok(_) => panic!("accepted: {toml}"),
                Err(e) => e,
            };
            assert!(e.contains(key), "{toml}\n=> {e}\n(expected {key})");
        }
    }

    #[test]
    fn topic_mapping() {
        assert_eq!(mqtt_to_wamp("a/b/c").as_deref(), Some("mqtt.a.b.c"));
        assert_eq!(mqtt_to_wamp("a//c"), None);
        assert_eq!(mqtt_to_wamp("a/b.c"), None);
        assert_eq!(mqtt_to_wamp("sensors/kitchen temp"), None);
        assert_eq!(wamp_to_mqtt("mqtt.a.b.c").as_deref(), Some("a/b/c"));
        assert_eq!(wamp_to_mqtt("other.a"), None);
    }

    #[test]
    fn payload_mapping() {
        assert_eq!(
            payload_to_wamp(&Bytes::from_static(br#"{"t": 1}"#)),
            Value::Dict(dict([("t", Value::Int(1))]))
        );
        assert_eq!(
            payload_to_wamp(&Bytes::from_static(b"\xff\x00")),
            Value::Bytes(Bytes::from_static(b"\xff\x00"))
        );
        assert_eq!(
            payload_to_mqtt(&Payload::args(vec![Value::from("on")])),
            Bytes::from_static(b"on")
        );
        assert_eq!(
            payload_to_mqtt(&Payload::args(vec![Value::Int(5)])),
            Bytes::from_static(b"5")
        );
        assert_eq!(payload_to_mqtt(&Payload::empty()), Bytes::new());
    }
}
