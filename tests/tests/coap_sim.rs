//! The CoAP gateway with firmware-sim's CoAP devices, at gateway level (a `GatewayIo` pair stands
//! in for the hub): a push thermostat that observes its commands, a thermostat that is a CoAP
//! server, and a short load run.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use device_models::{DeviceCommand, DeviceEvent, ThingId, TypeCatalog};
use firmware_sim::coap::{
    LoadConfig, PushActivity, PushDevice, PushDeviceConfig, SERVER_DEVICE_BINDING, ServerDevice,
    ServerDeviceConfig, coap_load,
};
use gateways::coap::gateway::{CoapConfig, CoapGateway, DeviceConfig, PayloadFormat};
use gateways::link::HubEnds;
use gateways::{GatewayIo, StaticCredentials};
use serde_json::{Map, Value, json};
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;

const SECRET: &str = "sim-secret";
const WAIT: Duration = Duration::from_secs(20);

fn id(s: &str) -> ThingId {
    ThingId::new(s).unwrap()
}

fn obj(v: Value) -> Map<String, Value> {
    v.as_object().cloned().unwrap()
}

/// The built-in types, with the server device's CoAP binding added to `thermostat`.
fn catalog() -> TypeCatalog {
    let mut catalog = TypeCatalog::builtin().unwrap();
    let mut thermostat = (**catalog.get("thermostat").unwrap()).clone();
    let doc: toml::Table = toml::from_str(SERVER_DEVICE_BINDING).unwrap();
    let binding = doc["bindings"]["coap"].as_table().unwrap().clone();
    thermostat.bindings.insert("coap".into(), binding);
    catalog
        .insert(thermostat, device_models::TypeOrigin::Builtin)
        .unwrap();
    catalog
}

struct Gw {
    addr: SocketAddr,
    hub: HubEnds,
    shutdown: CancellationToken,
}

impl Gw {
    async fn start(devices: Vec<DeviceConfig>) -> Self {
        tests::init_logging();
        let secrets: HashMap<String, String> = ["push-1", "push-2", "boiler"]
            .iter()
            .map(|t| ((*t).to_owned(), SECRET.to_owned()))
            .collect();
        let (io, mut hub) = GatewayIo::pair("coap", 256, Arc::new(StaticCredentials(secrets)));
        // Barriers answered as they come, as a hub would, even while the test is not reading.
        hub.events = hub.events.relay(256);
        let config = CoapConfig {
            bind: "127.0.0.1:0".parse().unwrap(),
            devices,
            ..CoapConfig::default()
        };
        let shutdown = CancellationToken::new();
        let gw = CoapGateway::start(&config, &catalog(), io, shutdown.clone())
            .await
            .unwrap();
        Self {
            addr: gw.local_addr(),
            hub,
            shutdown,
        }
    }

    async fn event(&mut self) -> DeviceEvent {
        timeout(WAIT, self.hub.events.recv())
            .await
            .expect("an event in time")
            .expect("gateway alive")
    }

    /// Waits for the first event matching `want`, skipping others.
    async fn until(&mut self, what: &str, want: impl Fn(&DeviceEvent) -> bool) -> DeviceEvent {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let e = timeout(
                deadline - tokio::time::Instant::now(),
                self.hub.events.recv(),
            )
            .await
            .unwrap_or_else(|_| panic!("no {what} in time"))
            .expect("gateway alive");
            if want(&e) {
                return e;
            }
        }
    }
}

impl Drop for Gw {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

#[tokio::test]
async fn a_push_device_reports_and_answers_commands() {
    for format in [PayloadFormat::Json, PayloadFormat::Cbor] {
        let mut gw = Gw::start(Vec::new()).await;
        let thing = if format == PayloadFormat::Json {
            "push-1"
        } else {
            "push-2"
        };
        let mut device = PushDevice::start(
            PushDeviceConfig {
                secret: Some(SECRET.into()),
                format,
                report_every: Duration::from_millis(200),
                ..PushDeviceConfig::new(gw.addr, thing)
            },
            gw.shutdown.clone(),
        )
        .await
        .unwrap();
        match gw.event().await {
            DeviceEvent::Hello {
                thing: t,
                type_hint,
                info,
            } => {
                assert_eq!(t, id(thing));
                assert_eq!(type_hint.as_deref(), Some("thermostat"));
                assert_eq!(info["firmware"], json!("sim-1.0"));
            }
            other => panic!("{other:?}"),
        }
        gw.until("a report", |e| matches!(e, DeviceEvent::Reported { values, .. } if values.contains_key("temperature")))
            .await;
        // Its commands observation is up once it has seen the (empty) list.
        let first = timeout(WAIT, device.activity.recv()).await.unwrap();
        assert_eq!(first, Some(PushActivity::Commands(0)));

        gw.hub
            .commands
            .send(DeviceCommand::SetDesired {
                thing: id(thing),
                values: obj(json!({"setpoint": 24.5})),
            })
            .await
            .unwrap();
        gw.until("the desired value reported", |e| {
            matches!(e, DeviceEvent::Reported { values, .. } if values.get("setpoint") == Some(&json!(24.5)))
        })
        .await;
        for (action, correlation, want) in [
            ("boost", "c-1", Ok(json!(true))),
            ("fail", "c-2", Err("simulated failure".to_owned())),
        ] {
            gw.hub
                .commands
                .send(DeviceCommand::InvokeAction {
                    thing: id(thing),
                    action: action.into(),
                    input: json!({"minutes": 5}),
                    correlation: correlation.into(),
                    deadline_ms: u64::MAX,
                })
                .await
                .unwrap();
            match gw
                .until("an action reply", |e| {
                    matches!(e, DeviceEvent::ActionReply { .. })
                })
                .await
            {
                DeviceEvent::ActionReply {
                    correlation: c,
                    outcome,
                    ..
                } => {
                    assert_eq!(c, correlation);
                    assert_eq!(outcome, want);
                }
                other => panic!("{other:?}"),
            }
        }
    }
}

#[tokio::test]
async fn the_gateway_observes_a_server_device_through_its_type_binding() {
    let shutdown = CancellationToken::new();
    let _stop = shutdown.clone().drop_guard();
    let mut device = ServerDevice::start(
        ServerDeviceConfig {
            bind: "127.0.0.1:0".parse().unwrap(),
            change_every: None,
            temperature: 19.5,
        },
        shutdown.clone(),
    )
    .await
    .unwrap();
    let mut gw = Gw::start(vec![DeviceConfig {
        thing: id("boiler"),
        type_id: Some("thermostat".into()),
        uri: format!("coap://{}", device.local_addr()),
        binding: None,
    }])
    .await;
    match gw.event().await {
        DeviceEvent::Hello {
            thing, type_hint, ..
        } => {
            assert_eq!(thing, id("boiler"));
            assert_eq!(type_hint.as_deref(), Some("thermostat"));
        }
        other => panic!("{other:?}"),
    }
    gw.until("the temperature", |e| {
        matches!(e, DeviceEvent::Reported { values, .. } if values.get("temperature") == Some(&json!(19.5)))
    })
    .await;
    device.set_temperature(22.25).await.unwrap();
    gw.until("the new temperature", |e| {
        matches!(e, DeviceEvent::Reported { values, .. } if values.get("temperature") == Some(&json!(22.25)))
    })
    .await;
    gw.hub
        .commands
        .send(DeviceCommand::SetDesired {
            thing: id("boiler"),
            values: obj(json!({"setpoint": 23})),
        })
        .await
        .unwrap();
    gw.until("the setpoint written and notified", |e| {
        matches!(e, DeviceEvent::Reported { values, .. } if values.get("setpoint") == Some(&json!(23.0)))
    })
    .await;
    gw.hub
        .commands
        .send(DeviceCommand::InvokeAction {
            thing: id("boiler"),
            action: "boost".into(),
            input: json!({"minutes": 10}),
            correlation: "b-1".into(),
            deadline_ms: u64::MAX,
        })
        .await
        .unwrap();
    match gw
        .until("the boost reply", |e| {
            matches!(e, DeviceEvent::ActionReply { .. })
        })
        .await
    {
        DeviceEvent::ActionReply {
            correlation,
            outcome,
            ..
        } => {
            assert_eq!(correlation, "b-1");
            assert_eq!(outcome, Ok(json!(true)));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(device.next_boost().await, Some(json!({"minutes": 10})));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_load_run_is_lossless() {
    tests::init_logging();
    let report = coap_load(LoadConfig {
        devices: 8,
        window: 2,
        duration: Duration::from_millis(700),
        ..LoadConfig::default()
    })
    .await
    .unwrap();
    assert!(report.ok > 100, "{report}");
    assert_eq!(report.refused + report.timeouts, 0, "{report}");
    assert_eq!(report.events, report.ok, "{report}");
    assert!(report.p50 <= report.p99 && report.p99 <= report.max);
}
