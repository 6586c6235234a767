//! The CoAP gateway against third-party CoAP stacks, at gateway level (a `GatewayIo` pair stands in
//! for the hub): aiocoap (Python, its library through `tests/peers/coap_peer.py`) and libcoap's
//! `coap-client-notls`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use device_models::{DeviceCommand, DeviceEvent, ThingId, TypeCatalog};
use gateways::coap::gateway::{CoapBinding, CoapConfig, CoapGateway, DeviceConfig};
use gateways::link::HubEnds;
use gateways::{GatewayIo, StaticCredentials};
use serde_json::{Map, Value, json};
use tests::peers::{LinePeer, apt, run_script_json};
use tokio::process::Command;
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;

const SECRET: &str = "peer-secret";
const WAIT: Duration = Duration::from_secs(20);
const SCRIPT: &str = "coap_peer.py";

fn id(s: &str) -> ThingId {
    ThingId::new(s).unwrap()
}

fn obj(v: Value) -> Map<String, Value> {
    v.as_object().cloned().unwrap()
}

struct Gw {
    addr: SocketAddr,
    hub: HubEnds,
    shutdown: CancellationToken,
}

impl Gw {
    async fn start(devices: Vec<DeviceConfig>) -> Self {
        Self::start_with(CoapConfig {
            devices,
            ..CoapConfig::default()
        })
        .await
    }

    async fn start_with(config: CoapConfig) -> Self {
        tests::init_logging();
        let secrets: HashMap<String, String> = [
            "aio", "aio-cbor", "aio-dup", "aio-dev", "lib", "lib-info", "server",
        ]
        .iter()
        .map(|t| ((*t).to_owned(), SECRET.to_owned()))
        .collect();
        let (io, mut hub) = GatewayIo::pair("coap", 256, Arc::new(StaticCredentials(secrets)));
        // Barriers answered as they come, as a hub would, even while the test is not reading.
        hub.events = hub.events.relay(256);
        let config = CoapConfig {
            bind: "127.0.0.1:0".parse().unwrap(),
            ..config
        };
        let shutdown = CancellationToken::new();
        let gw = CoapGateway::start(
            &config,
            &TypeCatalog::builtin().unwrap(),
            io,
            shutdown.clone(),
        )
        .await
        .unwrap();
        Self {
            addr: gw.local_addr(),
            hub,
            shutdown,
        }
    }

    fn uri(&self, thing: &str, resource: &str) -> String {
        format!("coap://{}/things/{thing}/{resource}?s={SECRET}", self.addr)
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

    async fn quiet(&mut self, within: Duration) {
        if let Ok(Some(e)) = timeout(within, self.hub.events.recv()).await {
            panic!("unexpected event {e:?}");
        }
    }
}

impl Drop for Gw {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Runs `coap_peer.py` to completion and returns its JSON lines.
async fn peer(args: &[String]) -> Vec<Value> {
    run_script_json(SCRIPT, args, WAIT).await
}

/// Runs `coap-client-notls` and returns (stdout, stderr); it reports error codes on stderr.
async fn coap_client(args: &[&str]) -> (String, String) {
    let bin = tokio::task::spawn_blocking(|| apt("coap-client-notls", "libcoap3-bin"))
        .await
        .unwrap();
    let out = timeout(
        WAIT,
        Command::new(bin)
            .args(args)
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("coap-client finished in time")
    .unwrap();
    assert!(out.status.success(), "coap-client-notls failed: {out:?}");
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn reported(e: &DeviceEvent, thing: &str, key: &str, value: &Value) -> bool {
    matches!(e, DeviceEvent::Reported { thing: t, values, .. } if t.as_str() == thing && values.get(key) == Some(value))
}

#[tokio::test]
async fn aiocoap_pushes_state_in_json_and_cbor() {
    let mut gw = Gw::start(Vec::new()).await;
    let lines = peer(&[
        "post".into(),
        gw.uri("aio", "state"),
        "json".into(),
        r#"{"temperature": 21.5}"#.into(),
    ])
    .await;
    assert_eq!(lines[0]["code"], "2.04 Changed");
    assert!(matches!(gw.event().await, DeviceEvent::Hello { thing, .. } if thing == id("aio")));
    let e = gw.event().await;
    assert!(reported(&e, "aio", "temperature", &json!(21.5)), "{e:?}");

    let lines = peer(&[
        "post".into(),
        gw.uri("aio-cbor", "state"),
        "cbor".into(),
        r#"{"temperature": 19, "on": true}"#.into(),
    ])
    .await;
    assert_eq!(lines[0]["code"], "2.04 Changed");
    let e = gw
        .until("the CBOR report", |e| {
            matches!(e, DeviceEvent::Reported { .. })
        })
        .await;
    match e {
        DeviceEvent::Reported { thing, values, .. } => {
            assert_eq!(thing, id("aio-cbor"));
            assert_eq!(
                Value::Object(values),
                json!({"temperature": 19, "on": true})
            );
        }
        other => panic!("{other:?}"),
    }

    // A wrong secret: 4.01, and no event.
    let bad = format!("coap://{}/things/aio/state?s=wrong", gw.addr);
    let lines = peer(&["post".into(), bad, "json".into(), "{}".into()]).await;
    assert_eq!(lines[0]["code"], "4.01 Unauthorized");
    gw.quiet(Duration::from_millis(300)).await;
}

#[tokio::test]
async fn a_duplicate_con_from_aiocoap_is_answered_once() {
    let mut gw = Gw::start(Vec::new()).await;
    let lines = peer(&[
        "duplicate".into(),
        gw.addr.ip().to_string(),
        gw.addr.port().to_string(),
        "/things/aio-dup/state".into(),
        format!("s={SECRET}"),
        r#"{"n": 1}"#.into(),
    ])
    .await;
    let answers = lines[0]["answers"].as_array().unwrap();
    assert_eq!(answers.len(), 2);
    assert_eq!(
        answers[0], answers[1],
        "the retransmission gets the cached answer"
    );
    assert!(matches!(gw.event().await, DeviceEvent::Hello { .. }));
    assert!(matches!(gw.event().await, DeviceEvent::Reported { .. }));
    gw.quiet(Duration::from_millis(500)).await;
}

#[tokio::test]
async fn coap_client_pushes_state() {
    let mut gw = Gw::start(Vec::new()).await;
    let uri = gw.uri("lib", "state");
    let (_, err) = coap_client(&[
        "-m",
        "post",
        "-t",
        "json",
        "-e",
        r#"{"humidity": 40}"#,
        &uri,
    ])
    .await;
    assert!(!err.contains("4.") && !err.contains("5."), "{err}");
    assert!(matches!(gw.event().await, DeviceEvent::Hello { thing, .. } if thing == id("lib")));
    let e = gw.event().await;
    assert!(reported(&e, "lib", "humidity", &json!(40)), "{e:?}");

    let unknown = format!("coap://{}/things/nobody/state?s={SECRET}", gw.addr);
    let (_, err) = coap_client(&["-m", "post", "-t", "json", "-e", "{}", &unknown]).await;
    assert!(err.contains("4.04"), "{err}");
    let (_, err) = coap_client(&["-m", "post", "-t", "text/plain", "-e", "21", &uri]).await;
    assert!(err.contains("4.15"), "{err}");
    let (_, err) = coap_client(&["-m", "post", "-t", "json", "-e", "{oops", &uri]).await;
    assert!(err.contains("4.00"), "{err}");
    gw.quiet(Duration::from_millis(300)).await;
}

#[tokio::test]
async fn coap_client_puts_4_kib_of_info_block_wise() {
    let mut gw = Gw::start(Vec::new()).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("info.json");
    let notes = "n".repeat(4096);
    let body = json!({"firmware": "4.3.1", "notes": notes}).to_string();
    std::fs::write(&file, &body).unwrap();
    let uri = gw.uri("lib-info", "info");
    let path = file.to_string_lossy().into_owned();
    let (_, err) = coap_client(&["-m", "put", "-t", "json", "-b", "1024", "-f", &path, &uri]).await;
    assert!(!err.contains("4.") && !err.contains("5."), "{err}");
    match gw.event().await {
        DeviceEvent::Hello { thing, info, .. } => {
            assert_eq!(thing, id("lib-info"));
            assert_eq!(info["firmware"], json!("4.3.1"));
            assert_eq!(info["notes"].as_str().map(str::len), Some(4096));
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn an_aiocoap_device_observes_its_commands_and_answers() {
    let mut gw = Gw::start(Vec::new()).await;
    let base = format!("coap://{}/things/aio-dev?s={SECRET}", gw.addr);
    let mut device = LinePeer::spawn(SCRIPT, &["device".into(), base, "2".into()], WAIT).await;
    assert_eq!(device.line().await, json!({"commands": []}));
    assert!(matches!(gw.event().await, DeviceEvent::Hello { thing, .. } if thing == id("aio-dev")));

    gw.hub
        .commands
        .send(DeviceCommand::SetDesired {
            thing: id("aio-dev"),
            values: obj(json!({"setpoint": 22})),
        })
        .await
        .unwrap();
    let seen = device.line().await;
    assert_eq!(seen["commands"][0]["kind"], "desired");
    let e = gw
        .until("the desired value reported", |e| {
            matches!(e, DeviceEvent::Reported { .. })
        })
        .await;
    assert!(reported(&e, "aio-dev", "setpoint", &json!(22)), "{e:?}");

    gw.hub
        .commands
        .send(DeviceCommand::InvokeAction {
            thing: id("aio-dev"),
            action: "boost".into(),
            input: json!({"minutes": 5}),
            correlation: "41".into(),
            deadline_ms: u64::MAX,
        })
        .await
        .unwrap();
    match gw
        .until("the action reply", |e| {
            matches!(e, DeviceEvent::ActionReply { .. })
        })
        .await
    {
        DeviceEvent::ActionReply {
            correlation,
            outcome,
            ..
        } => {
            assert_eq!(correlation, "41");
            assert_eq!(outcome, Ok(json!({"echo": {"minutes": 5}})));
        }
        other => panic!("{other:?}"),
    }
    // The notification it acted on listed the action (the settled desired entry may be gone).
    loop {
        let line = device.line().await;
        if line.get("done").is_some() {
            assert_eq!(line["done"], 2);
            break;
        }
        let commands = line["commands"].as_array().unwrap();
        assert!(
            commands
                .iter()
                .any(|c| c["id"] == "41" || c["kind"] == "desired")
        );
    }
    device.finish().await;
}

#[tokio::test]
async fn the_gateway_observes_and_polls_an_aiocoap_server() {
    // The server binds a port the system picks and says which.
    let mut server = LinePeer::spawn(SCRIPT, &["server".into()], WAIT).await;
    let ready = server.line().await;
    assert_eq!(ready["ready"], true, "{ready}");
    let port = ready["port"].as_u64().expect("the server's port");
    let binding: CoapBinding = toml::from_str(
        r#"
        properties.temperature.path = "/sensors/temperature"
        properties.setpoint.path = "/config/setpoint"
        properties.humidity.path = "/sensors/humidity"
        "#,
    )
    .unwrap();
    let mut gw = Gw::start_with(CoapConfig {
        devices: vec![DeviceConfig {
            thing: id("server"),
            type_id: Some("thermostat".into()),
            uri: format!("coap://127.0.0.1:{port}"),
            binding: Some(binding),
        }],
        poll_interval_secs: 1,
        ..CoapConfig::default()
    })
    .await;
    assert!(matches!(gw.event().await, DeviceEvent::Hello { thing, .. } if thing == id("server")));
    gw.until("the first temperature", |e| {
        reported(e, "server", "temperature", &json!(20.0))
    })
    .await;
    gw.until("the polled humidity", |e| {
        reported(e, "server", "humidity", &json!(40))
    })
    .await;
    server.send(r#"{"temperature": 23.5}"#).await;
    gw.until("the notified temperature", |e| {
        reported(e, "server", "temperature", &json!(23.5))
    })
    .await;
    gw.hub
        .commands
        .send(DeviceCommand::SetDesired {
            thing: id("server"),
            values: obj(json!({"setpoint": 22})),
        })
        .await
        .unwrap();
    assert_eq!(server.line().await, json!({"put": 22}));
    gw.until("the notified setpoint", |e| {
        reported(e, "server", "setpoint", &json!(22))
    })
    .await;
}
