//! The things service end to end: a hub with simulated devices from firmware-sim, driven by an
//! in-process client and by remote clients over WebSocket and RawSocket.

// Test helpers fail the test by panicking, so unwrap and expect are their error reporting.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use device_models::{DeviceEvent, ThingId};
use firmware_sim::{Kind, Mode, SimDevice, SimGateway, SimHandle, SimOptions};
use gateways::{CredentialCheck, DeviceCredentials as _};
use hub::client::{Client, ClientError, Subscription, WampError};
use hub::config::{Config, Provisioning};
use hub::things::ThingsStats;
use hub::wamp::{Dict, Serializer, Value, dict};
use serde_json::{Value as Json, json};
use tests::hub::TestHub;

const WAIT: Duration = Duration::from_secs(20);

fn id(s: &str) -> ThingId {
    ThingId::new(s).unwrap()
}

fn kwargs(v: Json) -> Dict {
    match Value::from(v) {
        Value::Dict(d) => d,
        other => panic!("not a dict: {other:?}"),
    }
}

/// Calls a procedure with kwargs; returns the single result value as JSON.
async fn call(c: &Client, procedure: &str, kw: Json) -> Result<Json, WampError> {
    match c.call(procedure, vec![], kwargs(kw)).await {
        Ok(r) => Ok(r.payload.arg(0).map(Json::from).unwrap_or(Json::Null)),
        Err(ClientError::Wamp(e)) => Err(e),
        Err(other) => panic!("{procedure}: {other}"),
    }
}

async fn ok(c: &Client, procedure: &str, kw: Json) -> Json {
    call(c, procedure, kw)
        .await
        .unwrap_or_else(|e| panic!("{procedure}: {e}"))
}

async fn err(c: &Client, procedure: &str, kw: Json) -> WampError {
    match call(c, procedure, kw).await {
        Ok(v) => panic!("{procedure} succeeded with {v}"),
        Err(e) => e,
    }
}

async fn next(sub: &mut Subscription) -> (Option<String>, Json) {
    let ev = tokio::time::timeout(WAIT, sub.next())
        .await
        .expect("event in time")
        .expect("subscription open");
    let kw = ev
        .payload
        .kwarg_dict()
        .map(|d| Json::from(&Value::Dict(d.clone())))
        .unwrap_or(Json::Null);
    (ev.topic, kw)
}

async fn nothing(sub: &mut Subscription) {
    if let Ok(Some(ev)) = tokio::time::timeout(Duration::from_millis(200), sub.next()).await {
        panic!("unexpected event {:?} {:?}", ev.topic, ev.payload);
    }
}

async fn subscribe(c: &Client, topic: &str) -> Subscription {
    let options = if topic.contains("..") {
        dict([("match", Value::from("wildcard"))])
    } else {
        Dict::new()
    };
    c.subscribe(topic, options).await.unwrap()
}

/// Polls until `cond` holds for the thing's `get` result.
async fn wait_thing(c: &Client, thing: &str, cond: impl Fn(&Json) -> bool) -> Json {
    let start = std::time::Instant::now();
    loop {
        if let Ok(t) = call(c, "brume.things.get", json!({ "thing": thing })).await
            && cond(&t)
        {
            return t;
        }
        assert!(
            start.elapsed() < WAIT,
            "thing {thing} never reached the state wanted"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn wait_online(c: &Client, thing: &str) -> Json {
    wait_thing(c, thing, |t| t["online"] == json!(true)).await
}

/// A user type: a relay whose actions time out after 300 ms.
const QUICK_RELAY: &str = r#"
id = "quick_relay"
title = "Relay with short action timeouts"
version = "1"

[properties.on]
type = "boolean"
writable = true

[actions.toggle]
timeout_ms = 300
output = { type = "boolean" }
"#;

/// A hub with short timeouts and a user types directory holding `quick_relay`.
/// The types directory lives in the data directory, so it goes away with the test.
async fn hub_with(edit: impl FnOnce(&mut Config)) -> TestHub {
    TestHub::start_with(|c| {
        c.things.set_timeout_ms = 400;
        edit(c);
        let types = c.hub.data_dir.join("types");
        std::fs::create_dir_all(&types).unwrap();
        std::fs::write(types.join("quick_relay.toml"), QUICK_RELAY).unwrap();
        c.things.types_dir = Some(types);
    })
    .await
}

async fn provision(c: &Client, thing: &str, ty: &str) -> Json {
    ok(
        c,
        "brume.things.provision",
        json!({ "thing": thing, "type": ty }),
    )
    .await
}

async fn sim(hub: &TestHub, devices: Vec<SimDevice>) -> SimHandle {
    SimGateway::start(hub.hub.things(), devices, SimOptions::default())
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provision_report_read_back_and_state_events_carry_only_changes() {
    let hub = hub_with(|_| {}).await;
    let local = hub.local_client("app");
    let remote = hub.client("websocket", Serializer::Json).await;
    let mut states = subscribe(&remote, "brume.thing..state").await;
    let mut provisions = subscribe(&remote, "brume.things.on_provision").await;
    let mut onlines = subscribe(&remote, "brume.things.on_online").await;

    let p = ok(
        &local,
        "brume.things.provision",
        json!({ "thing": "th1", "type": "thermostat", "info": { "location": "hall" } }),
    )
    .await;
    let secret = p["secret"].as_str().unwrap();
    assert_eq!(secret.len(), 48);
    assert!(secret.bytes().all(|b| b.is_ascii_hexdigit()));
    assert_eq!(p["thing"]["type"], json!("thermostat"));
    assert_eq!(p["thing"]["online"], json!(false));
    let (_, ev) = next(&mut provisions).await;
    assert_eq!(ev["thing"], json!("th1"));
    assert_eq!(ev["auto"], json!(false));
    provision(&local, "s1", "temperature_sensor").await;

    let device = SimDevice::new(id("th1"), Kind::Thermostat, 7);
    let sensor = SimDevice::new(id("s1"), Kind::TemperatureSensor, 8);
    let temperature = device.state()["temperature"].clone();
    let gw = sim(&hub, vec![device, sensor]).await;
    let mut seen_online = Vec::new();
    for _ in 0..2 {
        let (_, ev) = next(&mut onlines).await;
        seen_online.push(ev["thing"].as_str().unwrap().to_owned());
    }
    seen_online.sort();
    assert_eq!(seen_online, ["s1", "th1"]);

    // The first report carries every value.
    let mut first = Vec::new();
    for _ in 0..2 {
        first.push(next(&mut states).await);
    }
    let (topic, ev) = first
        .iter()
        .find(|(t, _)| t.as_deref() == Some("brume.thing.th1.state"))
        .expect("state event of th1");
    assert_eq!(topic.as_deref(), Some("brume.thing.th1.state"));
    assert_eq!(ev["thing"], json!("th1"));
    assert_eq!(ev["values"]["temperature"], temperature);
    assert_eq!(ev["values"]["mode"], json!("off"));
    let at = ev["at"]["temperature"].as_u64().unwrap();
    assert!(at > 0);

    // Read back, whole and one property, from both clients.
    let t = wait_online(&remote, "th1").await;
    assert_eq!(t["type"], json!("thermostat"));
    assert_eq!(t["info"]["location"], json!("hall"));
    assert_eq!(
        t["info"]["firmware"],
        json!("sim-1.0"),
        "info from the device's Hello"
    );
    assert_eq!(t["reported"]["temperature"]["value"], temperature);
    assert_eq!(t["reported"]["temperature"]["at"], json!(at));
    assert_eq!(t["desired"], json!({}));
    let one = ok(
        &local,
        "brume.things.get",
        json!({ "thing": "th1", "property": "mode" }),
    )
    .await;
    assert_eq!(one["value"], json!("off"));

    // Only what changed is published.
    gw.send(DeviceEvent::Reported {
        thing: id("th1"),
        values: kwargs_obj(json!({ "temperature": 30.25, "mode": "off", "setpoint": 20 })),
        at_ms: hub::things::now_ms(),
    })
    .await
    .unwrap();
    let (_, ev) = next(&mut states).await;
    assert_eq!(ev["values"], json!({ "temperature": 30.25 }));
    assert_eq!(ev["at"].as_object().unwrap().len(), 1);
    // The same values again change nothing.
    gw.send(DeviceEvent::Reported {
        thing: id("th1"),
        values: kwargs_obj(json!({ "temperature": 30.25 })),
        at_ms: hub::things::now_ms(),
    })
    .await
    .unwrap();
    nothing(&mut states).await;

    let all = ok(&remote, "brume.things.list", json!({})).await;
    assert_eq!(all.as_array().unwrap().len(), 2);
    let sensors = ok(
        &remote,
        "brume.things.list",
        json!({ "type": "temperature_sensor" }),
    )
    .await;
    assert_eq!(sensors.as_array().unwrap().len(), 1);
    assert_eq!(sensors[0]["thing"], json!("s1"));
    let offline = ok(&remote, "brume.things.list", json!({ "online": false })).await;
    assert_eq!(offline, json!([]));
}

fn kwargs_obj(v: Json) -> serde_json::Map<String, Json> {
    v.as_object().cloned().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_resolves_when_the_device_confirms_and_concurrent_sets_work() {
    let hub = hub_with(|c| c.things.set_timeout_ms = 3000).await;
    let local = hub.local_client("app");
    let remote = hub.client("rawsocket", Serializer::MsgPack).await;
    provision(&local, "th1", "thermostat").await;
    provision(&local, "r1", "relay").await;
    let _gw = sim(
        &hub,
        vec![
            SimDevice::new(id("th1"), Kind::Thermostat, 1),
            SimDevice::new(id("r1"), Kind::Relay, 2),
        ],
    )
    .await;
    wait_online(&local, "th1").await;
    wait_online(&local, "r1").await;

    let r = ok(
        &remote,
        "brume.things.set",
        json!({ "thing": "th1", "property": "setpoint", "value": 23.5 }),
    )
    .await;
    assert_eq!(r["settled"]["setpoint"]["value"], json!(23.5));
    let t = ok(&local, "brume.things.get", json!({ "thing": "th1" })).await;
    assert_eq!(t["reported"]["setpoint"]["value"], json!(23.5));
    assert_eq!(t["desired"], json!({}));

    // Concurrent sets, on two things and on two properties of one thing.
    let (a, b, c) = tokio::join!(
        call(
            &remote,
            "brume.things.set",
            json!({ "thing": "th1", "values": { "mode": "heat" } })
        ),
        call(
            &local,
            "brume.things.set",
            json!({ "thing": "r1", "property": "on", "value": true })
        ),
        call(
            &remote,
            "brume.things.set",
            json!({ "thing": "th1", "values": { "setpoint": 18 } })
        ),
    );
    assert_eq!(a.unwrap()["settled"]["mode"]["value"], json!("heat"));
    assert_eq!(b.unwrap()["settled"]["on"]["value"], json!(true));
    assert_eq!(c.unwrap()["settled"]["setpoint"]["value"], json!(18));

    // A value the device already has settles at once.
    let r = ok(
        &remote,
        "brume.things.set",
        json!({ "thing": "r1", "property": "on", "value": true }),
    )
    .await;
    assert_eq!(r["settled"]["on"]["value"], json!(true));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_times_out_and_the_desired_value_stays_pending() {
    let hub = hub_with(|_| {}).await;
    let c = hub.local_client("app");
    provision(&c, "th1", "thermostat").await;
    let gw = sim(&hub, vec![SimDevice::new(id("th1"), Kind::Thermostat, 1)]).await;
    wait_online(&c, "th1").await;
    gw.set_mode(&id("th1"), Mode::Silent).await.unwrap();
    let e = err(
        &c,
        "brume.things.set",
        json!({ "thing": "th1", "property": "setpoint", "value": 25 }),
    )
    .await;
    assert_eq!(e.uri, "wamp.error.timeout");
    assert!(e.message().unwrap().contains("setpoint"), "{e}");
    let one = ok(
        &c,
        "brume.things.get",
        json!({ "thing": "th1", "property": "setpoint" }),
    )
    .await;
    assert_eq!(one["value"], json!(20));
    assert_eq!(one["desired"]["value"], json!(25));
    assert!(one["desired"]["at"].as_u64().unwrap() > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn actions_return_the_device_reply_fail_or_time_out_and_are_logged() {
    let hub = hub_with(|_| {}).await;
    let c = hub.local_client("app");
    let remote = hub.client("websocket", Serializer::MsgPack).await;
    provision(&c, "r1", "relay").await;
    provision(&c, "a1", "alarm").await;
    provision(&c, "q1", "quick_relay").await;
    let gw = sim(
        &hub,
        vec![
            SimDevice::new(id("r1"), Kind::Relay, 1),
            SimDevice::new(id("a1"), Kind::Alarm, 2).with_code("1234"),
            SimDevice::new(id("q1"), Kind::Relay, 3),
        ],
    )
    .await;
    for t in ["r1", "a1", "q1"] {
        wait_online(&c, t).await;
    }
    let mut states = subscribe(&remote, "brume.thing.r1.state").await;

    let r = remote
        .call("brume.thing.r1.action.toggle", vec![], Dict::new())
        .await
        .unwrap();
    assert_eq!(r.payload.arg(0), Some(&Value::Bool(true)));
    let (_, ev) = next(&mut states).await;
    assert_eq!(ev["values"]["on"], json!(true));

    let r = remote
        .call(
            "brume.thing.a1.action.arm",
            vec![],
            dict([("code", Value::from("1234"))]),
        )
        .await
        .unwrap();
    assert_eq!(r.payload.arg(0), Some(&Value::Bool(true)));
    let e = err(
        &remote,
        "brume.thing.a1.action.disarm",
        json!({ "code": "0000" }),
    )
    .await;
    assert_eq!(e.uri, "brume.error.action_failed");
    assert!(e.message().unwrap().contains("wrong code"), "{e}");
    let e = err(&remote, "brume.thing.a1.action.arm", json!({ "code": "" })).await;
    assert_eq!(e.uri, "wamp.error.invalid_argument");
    assert!(e.message().unwrap().contains("min"), "{e}");
    let e = err(&remote, "brume.thing.r1.action.explode", json!({})).await;
    assert_eq!(e.uri, "brume.error.no_such_action");
    let e = err(&remote, "brume.thing.nobody.action.toggle", json!({})).await;
    assert_eq!(e.uri, "brume.error.no_such_thing");

    // The type's 300 ms timeout applies when the device stays silent.
    gw.set_mode(&id("q1"), Mode::Silent).await.unwrap();
    let started = std::time::Instant::now();
    let e = err(&remote, "brume.thing.q1.action.toggle", json!({})).await;
    assert_eq!(e.uri, "wamp.error.timeout");
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert!(started.elapsed() < Duration::from_secs(3));

    let db = hub.hub.things_database().to_owned();
    hub.hub.shutdown().await;
    let log = hub::things::store::read_action_log(&db).unwrap();
    let statuses: Vec<(&str, &str)> = log
        .iter()
        .map(|r| (r.action.as_str(), r.status.as_str()))
        .collect();
    assert_eq!(
        statuses,
        [
            ("toggle", "done"),
            ("arm", "done"),
            ("disarm", "failed"),
            ("toggle", "expired")
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offline_thing_is_refused_with_thing_offline() {
    let hub = hub_with(|_| {}).await;
    let c = hub.local_client("app");
    let remote = hub.client("rawsocket", Serializer::Json).await;
    let mut offline = subscribe(&remote, "brume.things.on_offline").await;
    provision(&c, "r1", "relay").await;
    // Never seen: offline.
    let e = err(&remote, "brume.thing.r1.action.toggle", json!({})).await;
    assert_eq!(e.uri, "brume.error.thing_offline");

    let gw = sim(&hub, vec![SimDevice::new(id("r1"), Kind::Relay, 1)]).await;
    wait_online(&c, "r1").await;
    gw.set_mode(&id("r1"), Mode::Offline).await.unwrap();
    let (_, ev) = next(&mut offline).await;
    assert_eq!(ev["thing"], json!("r1"));
    let e = err(&remote, "brume.thing.r1.action.on", json!({})).await;
    assert_eq!(e.uri, "brume.error.thing_offline");
    let e = err(
        &remote,
        "brume.things.set",
        json!({ "thing": "r1", "property": "on", "value": true }),
    )
    .await;
    assert_eq!(e.uri, "brume.error.thing_offline");
    assert!(e.message().unwrap().contains("pending"), "{e}");

    // Back online, the pending desired value is delivered and confirmed.
    gw.set_mode(&id("r1"), Mode::Normal).await.unwrap();
    let t = wait_thing(&c, "r1", |t| {
        t["online"] == json!(true) && t["desired"] == json!({})
    })
    .await;
    assert_eq!(t["reported"]["on"]["value"], json!(true));

    // A gateway that goes away takes its things offline.
    drop(gw);
    let (_, ev) = next(&mut offline).await;
    assert_eq!(ev["thing"], json!("r1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_values_are_rejected_with_a_message_naming_the_rule() {
    let hub = hub_with(|_| {}).await;
    let c = hub.local_client("app");
    let remote = hub.client("websocket", Serializer::Json).await;
    provision(&c, "th1", "thermostat").await;
    provision(&c, "s1", "temperature_sensor").await;
    let gw = sim(
        &hub,
        vec![
            SimDevice::new(id("th1"), Kind::Thermostat, 1),
            SimDevice::new(id("s1"), Kind::TemperatureSensor, 2),
        ],
    )
    .await;
    wait_online(&c, "th1").await;
    wait_online(&c, "s1").await;

    let e = err(
        &remote,
        "brume.things.set",
        json!({ "thing": "th1", "property": "setpoint", "value": 40 }),
    )
    .await;
    assert_eq!(e.uri, "wamp.error.invalid_argument");
    let m = e.message().unwrap();
    assert!(
        m.contains("th1") && m.contains("setpoint") && m.contains("maximum 35"),
        "{m}"
    );
    assert_eq!(
        e.payload.kwarg("property"),
        Some(&Value::from("setpoint")),
        "{e:?}"
    );
    let e = err(
        &remote,
        "brume.things.set",
        json!({ "thing": "th1", "property": "temperature", "value": 20 }),
    )
    .await;
    assert!(e.message().unwrap().contains("read-only"), "{e}");
    let e = err(
        &remote,
        "brume.things.set",
        json!({ "thing": "th1", "property": "mode", "value": "turbo" }),
    )
    .await;
    assert!(e.message().unwrap().contains("mode"), "{e}");
    let e = err(
        &remote,
        "brume.things.update_info",
        json!({ "thing": "th1", "property": "firmware", "value": "9" }),
    )
    .await;
    assert!(e.message().unwrap().contains("read-only"), "{e}");
    let info = ok(
        &remote,
        "brume.things.update_info",
        json!({ "thing": "th1", "values": { "location": "attic" } }),
    )
    .await;
    assert_eq!(info["info"]["location"], json!("attic"));
    let e = err(&remote, "brume.things.get", json!({ "thing": "no/such" })).await;
    assert_eq!(e.uri, "wamp.error.invalid_argument");

    // A device sending a bad value: rejected and counted, nothing else affected.
    let stats = hub.hub.things().stats().clone();
    let before = ThingsStats::get(&stats.invalid_reports);
    let mut states = subscribe(&remote, "brume.thing..state").await;
    gw.send(DeviceEvent::Reported {
        thing: id("s1"),
        values: kwargs_obj(json!({ "temperature": 500, "humidity": 50 })),
        at_ms: hub::things::now_ms(),
    })
    .await
    .unwrap();
    gw.send(DeviceEvent::Reported {
        thing: id("th1"),
        values: kwargs_obj(json!({ "temperature": 19.5 })),
        at_ms: hub::things::now_ms(),
    })
    .await
    .unwrap();
    let (topic, ev) = next(&mut states).await;
    assert_eq!(topic.as_deref(), Some("brume.thing.th1.state"));
    assert_eq!(ev["values"]["temperature"], json!(19.5));
    assert_eq!(ThingsStats::get(&stats.invalid_reports), before + 1);
    let s1 = ok(&c, "brume.things.get", json!({ "thing": "s1" })).await;
    assert_ne!(s1["reported"]["temperature"]["value"], json!(500));
    assert_ne!(s1["reported"]["humidity"]["value"], json!(50));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_hub_finds_things_state_and_pending_desired_values() {
    let first = hub_with(|_| {}).await;
    let data_dir = first.data.path().to_owned();
    let c = first.local_client("app");
    let secret = provision(&c, "th1", "thermostat").await["secret"]
        .as_str()
        .unwrap()
        .to_owned();
    ok(
        &c,
        "brume.things.update_info",
        json!({ "thing": "th1", "property": "location", "value": "cellar" }),
    )
    .await;
    let gw = sim(&first, vec![SimDevice::new(id("th1"), Kind::Thermostat, 5)]).await;
    let before = wait_thing(&c, "th1", |t| {
        t["online"] == json!(true) && t["reported"].as_object().is_some_and(|r| r.len() == 3)
    })
    .await;
    gw.set_mode(&id("th1"), Mode::Silent).await.unwrap();
    let e = err(
        &c,
        "brume.things.set",
        json!({ "thing": "th1", "values": { "setpoint": 26, "mode": "heat" } }),
    )
    .await;
    assert_eq!(e.uri, "wamp.error.timeout");
    drop(gw);
    drop(c);
    let TestHub {
        hub: first_hub,
        data: _first_data,
        ..
    } = first;
    assert!(
        first_hub.shutdown().await,
        "shutdown within the grace period"
    );

    let second = hub_with(|cfg| cfg.hub.data_dir = data_dir.clone()).await;
    let c = second.local_client("app");
    let t = ok(&c, "brume.things.get", json!({ "thing": "th1" })).await;
    assert_eq!(t["type"], json!("thermostat"));
    assert_eq!(t["online"], json!(false));
    assert_eq!(t["info"]["location"], json!("cellar"));
    assert_eq!(t["created"], before["created"]);
    assert_eq!(t["reported"], before["reported"]);
    assert_eq!(t["desired"]["setpoint"]["value"], json!(26));
    assert_eq!(t["desired"]["mode"]["value"], json!("heat"));
    // Gateways can still check the device's secret: only its salted hash was stored.
    let credentials = second.hub.things().credentials();
    assert_eq!(
        credentials.check(&id("th1"), &secret),
        CredentialCheck::Valid
    );
    assert_eq!(
        credentials.check(&id("th1"), "not-it"),
        CredentialCheck::Invalid
    );
    assert_eq!(
        credentials.check(&id("stranger"), "x"),
        CredentialCheck::UnknownThing
    );
    let stored = std::fs::read(second.hub.things_database()).unwrap();
    assert!(
        !stored.windows(secret.len()).any(|w| w == secret.as_bytes()),
        "the clear secret is not in the database"
    );

    // The device comes back to the new hub: the pending values are sent and confirmed.
    let _gw = sim(
        &second,
        vec![SimDevice::new(id("th1"), Kind::Thermostat, 5)],
    )
    .await;
    let t = wait_thing(&c, "th1", |t| t["desired"] == json!({})).await;
    assert_eq!(t["reported"]["setpoint"]["value"], json!(26));
    assert_eq!(t["reported"]["mode"]["value"], json!("heat"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explicit_provisioning_refuses_unknown_devices() {
    let hub = hub_with(|c| c.things.provisioning = Provisioning::Explicit).await;
    let c = hub.local_client("app");
    let _gw = sim(&hub, vec![SimDevice::new(id("stranger"), Kind::Relay, 1)]).await;
    let stats = hub.hub.things().stats().clone();
    let start = std::time::Instant::now();
    while ThingsStats::get(&stats.unknown_devices) < 2 {
        assert!(start.elapsed() < WAIT);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(ok(&c, "brume.things.list", json!({})).await, json!([]));
    let e = err(&c, "brume.things.get", json!({ "thing": "stranger" })).await;
    assert_eq!(e.uri, "brume.error.no_such_thing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_provisioning_takes_the_announced_or_default_type() {
    let hub = hub_with(|c| {
        c.things.provisioning = Provisioning::Auto;
        c.things.auto_type = Some("temperature_sensor".into());
    })
    .await;
    let c = hub.local_client("app");
    let mut provisions = subscribe(&c, "brume.things.on_provision").await;
    let gw = sim(
        &hub,
        vec![
            SimDevice::new(id("r7"), Kind::Relay, 1),
            SimDevice::new(id("a7"), Kind::Alarm, 2),
        ],
    )
    .await;
    // A device that only reports, with no Hello: the default type.
    gw.send(DeviceEvent::Reported {
        thing: id("plain"),
        values: kwargs_obj(json!({ "temperature": 3.5 })),
        at_ms: hub::things::now_ms(),
    })
    .await
    .unwrap();
    let mut got = Vec::new();
    for _ in 0..3 {
        let (_, ev) = next(&mut provisions).await;
        assert_eq!(ev["auto"], json!(true));
        got.push((
            ev["thing"].as_str().unwrap().to_owned(),
            ev["type"].as_str().unwrap().to_owned(),
        ));
    }
    got.sort();
    assert_eq!(
        got,
        [
            ("a7".to_owned(), "alarm".to_owned()),
            ("plain".to_owned(), "temperature_sensor".to_owned()),
            ("r7".to_owned(), "relay".to_owned()),
        ]
    );
    let plain = wait_thing(&c, "plain", |t| {
        !t["reported"].as_object().unwrap().is_empty()
    })
    .await;
    assert_eq!(plain["reported"]["temperature"]["value"], json!(3.5));
    wait_online(&c, "r7").await;
    let r = c
        .call("brume.thing.r7.action.on", vec![], Dict::new())
        .await
        .unwrap();
    assert_eq!(r.payload.arg(0), Some(&Value::Bool(true)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn describe_types_events_and_delete() {
    let hub = hub_with(|c| c.hub.id = "edge-1".into()).await;
    let c = hub.local_client("app");
    let remote = hub.client("websocket", Serializer::Json).await;
    provision(&c, "a1", "alarm").await;

    let td = ok(&remote, "brume.things.describe", json!({ "thing": "a1" })).await;
    assert_eq!(td["id"], json!("urn:brume:edge-1:a1"));
    assert_eq!(
        td["@context"][0],
        json!("https://www.w3.org/2022/wot/td/v1.1")
    );
    let form = &td["actions"]["arm"]["forms"][0];
    assert_eq!(form["wamp:procedure"], json!("brume.thing.a1.action.arm"));
    assert_eq!(form["href"], json!(hub.ws_url()));
    assert!(td["events"]["triggered"].is_object());

    let types = ok(&remote, "brume.types.list", json!({})).await;
    let ids: Vec<&str> = types
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        [
            "alarm",
            "modbus_drive",
            "modbus_meter",
            "quick_relay",
            "relay",
            "tasmota_plug",
            "temperature_sensor",
            "thermostat"
        ]
    );
    let quick = types
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == json!("quick_relay"));
    assert_eq!(quick.unwrap()["origin"], json!("file"));
    let relay = ok(&remote, "brume.types.get", json!({ "type": "relay" })).await;
    assert_eq!(relay["actions"]["toggle"]["timeout_ms"], json!(5000));
    let e = err(&remote, "brume.types.get", json!({ "type": "toaster" })).await;
    assert_eq!(e.uri, "brume.error.no_such_type");
    let e = err(
        &remote,
        "brume.things.provision",
        json!({ "thing": "t2", "type": "toaster" }),
    )
    .await;
    assert_eq!(e.uri, "brume.error.no_such_type");

    // Device events reach subscribers of brume.thing.<id>.event.<name>.
    let mut events = subscribe(&remote, "brume.thing.a1.event.triggered").await;
    let gw = sim(&hub, vec![SimDevice::new(id("a1"), Kind::Alarm, 1)]).await;
    gw.trigger(&id("a1"), "hall").await.unwrap();
    let (_, ev) = next(&mut events).await;
    assert_eq!(ev["thing"], json!("a1"));
    assert_eq!(ev["payload"]["zone"], json!("hall"));

    let mut deletes = subscribe(&remote, "brume.things.on_delete").await;
    ok(&remote, "brume.things.delete", json!({ "thing": "a1" })).await;
    let (_, ev) = next(&mut deletes).await;
    assert_eq!(ev["thing"], json!("a1"));
    let e = err(&remote, "brume.things.describe", json!({ "thing": "a1" })).await;
    assert_eq!(e.uri, "brume.error.no_such_thing");
    let e = err(&remote, "brume.things.delete", json!({ "thing": "a1" })).await;
    assert_eq!(e.uri, "brume.error.no_such_thing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_database_is_a_clear_startup_error() {
    let data = tempfile::tempdir().unwrap();
    std::fs::write(data.path().join("things.db"), vec![0x42u8; 8192]).unwrap();
    let mut config = Config::default();
    config.hub.data_dir = data.path().to_owned();
    config.listeners.clear();
    let e = hub::server::Hub::start(config)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("things.db") && e.contains("not a Brume database"),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_joins_again_after_its_session_is_killed() {
    let hub = hub_with(|_| {}).await;
    let admin = hub.local_client("admin");
    provision(&admin, "r1", "relay").await;
    let mut joins = subscribe(&admin, "wamp.session.on_join").await;
    // The meta API spares the hub's own services, so end the service's session the way the
    // router itself would (as it does to a slow consumer).
    let realm = hub.hub.router().realm("brume").unwrap().clone();
    let service = realm
        .sessions()
        .into_iter()
        .find(|s| s.auth.authid == "brume.things")
        .expect("the things service's session");
    service.close_with(hub::router::outbound::CloseRequest {
        abort: true,
        reason: "brume.close.slow_consumer".into(),
        message: None,
    });
    // The only session joining now is the service's new one.
    tokio::time::timeout(WAIT, joins.next())
        .await
        .expect("the service joins again")
        .expect("subscription open");
    let start = std::time::Instant::now();
    let list = loop {
        match call(&admin, "brume.things.list", json!({})).await {
            Ok(list) => break list,
            Err(e) => {
                // While the old session goes and the new one registers.
                assert!(
                    e.uri == "wamp.error.no_such_procedure" || e.uri == "wamp.error.canceled",
                    "{e}"
                );
                assert!(start.elapsed() < WAIT, "the service never came back");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    };
    assert_eq!(list[0]["thing"], json!("r1"));
    // Publishing works on the new session too.
    let mut provisions = subscribe(&admin, "brume.things.on_provision").await;
    provision(&admin, "r2", "relay").await;
    let (_, ev) = next(&mut provisions).await;
    assert_eq!(ev["thing"], json!("r2"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_thing_description_declares_authentication_when_the_realm_needs_it() {
    let hub = hub_with(|c| c.realms[0].anonymous = false).await;
    let c = hub.local_client("app");
    provision(&c, "r1", "relay").await;
    let td = ok(&c, "brume.things.describe", json!({ "thing": "r1" })).await;
    assert_eq!(td["security"], json!(["wamp_auth"]));
    assert_eq!(
        td["securityDefinitions"]["wamp_auth"]["scheme"],
        json!("auto")
    );
}

/// The next command the gateway under test receives.
async fn next_command(io: &mut gateways::GatewayIo) -> device_models::DeviceCommand {
    tokio::time::timeout(WAIT, io.commands.recv())
        .await
        .expect("a command in time")
        .expect("attached")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_timeout_and_a_cancel_reach_the_device_action() {
    let hub = hub_with(|_| {}).await;
    let c = hub.local_client("app");
    provision(&c, "r1", "relay").await;
    // A gateway the test plays by hand: the device is online and never answers by itself.
    let mut io = hub.hub.things().attach("by-hand").await.unwrap();
    io.events
        .send(DeviceEvent::Hello {
            thing: id("r1"),
            type_hint: Some("relay".into()),
            info: Default::default(),
        })
        .await
        .unwrap();
    wait_online(&c, "r1").await;

    // The CALL's timeout (400 ms, under the type's 5 s) is the deadline the device is given.
    let caller = hub.client("rawsocket", Serializer::MsgPack).await;
    let before = hub::things::now_ms();
    let call = tokio::spawn({
        let caller = caller.clone();
        async move {
            caller
                .call_with(
                    "brume.thing.r1.action.toggle",
                    hub::wamp::Payload::empty(),
                    dict([("timeout", Value::Int(400))]),
                )
                .await
        }
    });
    let device_models::DeviceCommand::InvokeAction { deadline_ms, .. } =
        next_command(&mut io).await
    else {
        panic!("an action command");
    };
    let after = hub::things::now_ms();
    assert!(
        (before + 400..=after + 400).contains(&deadline_ms),
        "the device's deadline {deadline_ms} is the call's, not the type's (sent between {before} and {after})"
    );
    match call.await.unwrap() {
        Err(ClientError::Wamp(e)) => assert_eq!(e.uri, "wamp.error.timeout"),
        other => panic!("expected wamp.error.timeout, got {other:?}"),
    }

    // A CANCEL (mode kill) reaches the waiting action: the caller gets wamp.error.canceled and
    // the action is logged as canceled, not left to expire.
    let (mut raw, _) = tests::raw::RawConn::handshake(hub.addr, 1).await;
    raw.send(br#"[1, "brume", {"roles": {"caller": {"features": {"call_canceling": true}}}}]"#)
        .await;
    assert_eq!(raw.recv_json().await[0], 2, "WELCOME");
    raw.send(br#"[48, 7, {}, "brume.thing.r1.action.toggle", [], {}]"#)
        .await;
    let device_models::DeviceCommand::InvokeAction { correlation, .. } =
        next_command(&mut io).await
    else {
        panic!("an action command");
    };
    raw.send(br#"[49, 7, {"mode": "kill"}]"#).await;
    let answer = raw.recv_json().await;
    assert_eq!(answer[0], 8, "ERROR: {answer}");
    assert_eq!(answer[2], 7, "{answer}");
    assert_eq!(answer[4], "wamp.error.canceled", "{answer}");
    // The device answers late: the reply belongs to no call any more.
    let invalid = ThingsStats::get(&hub.hub.things().stats().invalid_messages);
    io.events
        .send(DeviceEvent::ActionReply {
            thing: id("r1"),
            correlation,
            outcome: Ok(json!(true)),
        })
        .await
        .unwrap();
    let start = std::time::Instant::now();
    while ThingsStats::get(&hub.hub.things().stats().invalid_messages) == invalid {
        assert!(start.elapsed() < WAIT, "the late reply was not refused");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let db = hub.hub.things_database().to_owned();
    hub.hub.shutdown().await;
    let log = hub::things::store::read_action_log(&db).unwrap();
    let statuses: Vec<&str> = log.iter().map(|r| r.status.as_str()).collect();
    assert_eq!(statuses[1], "canceled", "{statuses:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_count_every_drop_by_cause_and_the_acknowledged_writes() {
    let hub = hub_with(|c| c.things.provisioning = Provisioning::Explicit).await;
    let local = hub.local_client("app");
    let remote = hub.client("websocket", Serializer::Json).await;
    provision(&local, "s1", "temperature_sensor").await;
    let gw = sim(&hub, vec![]).await;
    let report = |thing: &str, values: Json| DeviceEvent::Reported {
        thing: id(thing),
        values: kwargs_obj(values),
        at_ms: hub::things::now_ms(),
    };
    gw.send(report("s1", json!({ "temperature": 21.5 })))
        .await
        .unwrap();
    gw.send(report("s1", json!({ "temperature": "hot" })))
        .await
        .unwrap();
    gw.send(report("stranger", json!({ "temperature": 1.0 })))
        .await
        .unwrap();
    // A gateway's barrier: answered once everything before it is committed.
    let (commit, wait) = device_models::gateway::commit();
    gw.send(DeviceEvent::Barrier(commit)).await.unwrap();
    tokio::time::timeout(WAIT, wait)
        .await
        .expect("the barrier is answered")
        .expect("after a successful commit");

    let s = ok(&remote, "brume.things.stats", json!({})).await;
    let by_cause = &s["dropped_by_cause"];
    assert_eq!(by_cause["rejected_by_type"], json!(1), "{s}");
    assert_eq!(by_cause["unknown_device"], json!(1), "{s}");
    assert_eq!(by_cause["write_failed"], json!(0), "{s}");
    let total: u64 = by_cause
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!(s["dropped"], json!(total), "{s}");
    assert!(s["events_in"].as_u64().unwrap() >= 3, "{s}");
    assert_eq!(s["store"]["acknowledged_after_commit"], json!(1), "{s}");
    assert!(s["store"]["writes"].as_u64().unwrap() >= 2, "{s}");
    assert_eq!(s["store"]["failed_writes"], json!(0), "{s}");
    let got = ok(&remote, "brume.things.get", json!({ "thing": "s1" })).await;
    assert_eq!(got["reported"]["temperature"]["value"], json!(21.5));
}
