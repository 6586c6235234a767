//! Numbers pass unchanged: a value whose shortest form has 17 significant digits, reported by an
//! MQTT device (JSON) and a CoAP device (JSON and CBOR, through aiocoap), arrives bit for bit in
//! the WAMP events of JSON and MessagePack subscribers, in the registry, and in the cloud through
//! the uplink (Crossbar.io).

// Test helpers fail the test by panicking.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use hub::client::{Client, ConnectOptions, Subscription};
use hub::uplink::UplinkConfig;
use hub::wamp::{Dict, Serializer, Value, dict};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tests::cloud::Crossbar;
use tests::hub::TestHub;
use tests::peers::run_script_json;

const WAIT: Duration = Duration::from_secs(30);

/// Doubles whose shortest round-trip form has 17 significant digits, as a device writes them.
const VALUES: [(&str, &str); 3] = [
    ("a", "30.009999999999998"),
    ("b", "0.30000000000000004"),
    ("c", "-1.2345678901234567e-300"),
];

const TYPE: &str = r#"
id = "precise_meter"
title = "A meter of exact numbers"
version = "1"

[properties.a]
type = "number"

[properties.b]
type = "number"

[properties.c]
type = "number"
"#;

/// The report as a device writes it, with every value in its shortest form.
fn report_json() -> String {
    let fields: Vec<String> = VALUES
        .iter()
        .map(|(k, v)| format!("\"{k}\": {v}"))
        .collect();
    format!("{{{}}}", fields.join(", "))
}

/// Asserts that `values` holds every value of [`VALUES`] bit for bit.
fn assert_exact(values: &Dict, what: &str) {
    for (key, text) in VALUES {
        let want: f64 = text.parse().unwrap();
        let got = values
            .get(key)
            .and_then(Value::as_f64)
            .unwrap_or_else(|| panic!("{what}: no number {key} in {values:?}"));
        assert_eq!(
            got.to_bits(),
            want.to_bits(),
            "{what}: {key} arrived as {got:?}, sent as {text}"
        );
    }
}

async fn hub_with(edit: impl FnOnce(&mut hub::config::Config)) -> TestHub {
    TestHub::start_with(|c| {
        let types = c.hub.data_dir.join("types");
        std::fs::create_dir_all(&types).unwrap();
        std::fs::write(types.join("precise_meter.toml"), TYPE).unwrap();
        c.things.types_dir = Some(types);
        edit(c);
    })
    .await
}

/// Provisions `thing` and returns its secret.
async fn provision(hub: &TestHub, thing: &str) -> String {
    let r = hub
        .local_client("admin")
        .call(
            "brume.things.provision",
            vec![],
            dict([
                ("thing", Value::from(thing)),
                ("type", Value::from("precise_meter")),
            ]),
        )
        .await
        .unwrap();
    let out = r.payload.arg(0).and_then(Value::as_dict).unwrap().clone();
    out["secret"].as_str().unwrap().to_owned()
}

/// The `values` of the next state event of `sub`.
async fn next_values(sub: &mut Subscription, what: &str) -> Dict {
    let ev = tokio::time::timeout(WAIT, sub.next())
        .await
        .unwrap_or_else(|_| panic!("{what}: no state event"))
        .expect("subscribed");
    let kw = ev.payload.kwarg_dict().cloned().unwrap_or_default();
    kw.get("values")
        .and_then(Value::as_dict)
        .cloned()
        .unwrap_or_else(|| panic!("{what}: no values in {kw:?}"))
}

/// An MQTT client logged in as device `thing` (not yet connected: its event loop connects).
fn mqtt_device(hub: &TestHub, thing: &str, secret: String) -> (AsyncClient, rumqttc::EventLoop) {
    let addr = hub.hub.gateway_addrs().mqtt.expect("MQTT gateway");
    let mut options = MqttOptions::new(thing, addr.ip().to_string(), addr.port());
    options.set_credentials(thing, secret);
    AsyncClient::new(options, 10)
}

/// A JSON and a MessagePack subscriber to `topic`.
async fn subscribers(hub: &TestHub, topic: &str) -> Vec<(&'static str, Client, Subscription)> {
    let mut out = Vec::new();
    for (name, transport, ser) in [
        ("JSON subscriber", "websocket", Serializer::Json),
        ("MessagePack subscriber", "rawsocket", Serializer::MsgPack),
    ] {
        let c = hub.client(transport, ser).await;
        let sub = c.subscribe(topic, Dict::new()).await.unwrap();
        out.push((name, c, sub));
    }
    out
}

/// The registry's reported values of `thing`, read over JSON and over MessagePack.
async fn assert_registry_exact(hub: &TestHub, thing: &str) {
    for (transport, ser) in [
        ("websocket", Serializer::Json),
        ("rawsocket", Serializer::MsgPack),
    ] {
        let c = hub.client(transport, ser).await;
        let r = c
            .call(
                "brume.things.get",
                vec![],
                dict([("thing", Value::from(thing))]),
            )
            .await
            .unwrap();
        let t = r.payload.arg(0).and_then(Value::as_dict).unwrap().clone();
        let reported = t["reported"].as_dict().unwrap();
        let values: Dict = reported
            .iter()
            .map(|(k, v)| (k.clone(), v.as_dict().unwrap()["value"].clone()))
            .collect();
        assert_exact(&values, &format!("the registry over {transport}"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_mqtt_report_arrives_bit_for_bit() {
    let hub = hub_with(|_| {}).await;
    let secret = provision(&hub, "m1").await;
    let mut subs = subscribers(&hub, "brume.thing.m1.state").await;

    let (client, mut eventloop) = mqtt_device(&hub, "m1", secret);
    client
        .publish("things/m1/state", QoS::AtLeastOnce, false, report_json())
        .await
        .unwrap();
    let acked = tokio::time::timeout(WAIT, async {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::PubAck(_))) => return,
                Ok(_) => {}
                Err(e) => panic!("MQTT: {e}"),
            }
        }
    })
    .await;
    assert!(acked.is_ok(), "the report was acknowledged");

    for (name, _, sub) in &mut subs {
        let values = next_values(sub, name).await;
        assert_exact(&values, name);
    }
    assert_registry_exact(&hub, "m1").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coap_reports_in_json_and_cbor_arrive_bit_for_bit() {
    let hub = hub_with(|_| {}).await;
    let secret = provision(&hub, "c1").await;
    let mut subs = subscribers(&hub, "brume.thing.c1.state").await;
    let addr = hub.hub.gateway_addrs().coap.expect("CoAP gateway");
    let uri = format!("coap://{addr}/things/c1/state?s={secret}");
    for format in ["json", "cbor"] {
        let out = run_script_json(
            "coap_peer.py",
            &["post".into(), uri.clone(), format.into(), report_json()],
            WAIT,
        )
        .await;
        assert_eq!(out[0]["code"], "2.04 Changed", "{out:?}");
        for (name, _, sub) in &mut subs {
            // The second report repeats the first: no state change, no event.
            if format == "json" {
                let values = next_values(sub, name).await;
                assert_exact(&values, &format!("{name}, CoAP {format}"));
            }
        }
        assert_registry_exact(&hub, "c1").await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_uplink_forwards_numbers_bit_for_bit() {
    let cb = Crossbar::start(&["edge-n"]).await;
    let mut up = UplinkConfig {
        enabled: true,
        url: format!("ws://{}/ws", cb.hub_addr()),
        realm: "cloud".into(),
        reconnect_initial_ms: 100,
        reconnect_max_ms: 400,
        ..UplinkConfig::default()
    };
    up.auth.method = "ticket".into();
    up.auth.authid = "edge-n".into();
    up.auth.secret = Some("secret-edge-n".into());
    let hub = hub_with(|c| {
        c.hub.id = "edge-n".into();
        c.uplink = up;
    })
    .await;
    let local = hub.local_client("watcher");
    let connected = tokio::time::timeout(WAIT, async {
        loop {
            let s = local
                .call("brume.uplink.status", vec![], Dict::new())
                .await
                .unwrap();
            if s.payload.kwarg("connected") == Some(&Value::Bool(true)) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(connected.is_ok(), "the uplink connected");
    let mut cloud = Vec::new();
    for (name, ser) in [
        ("cloud JSON subscriber", Serializer::Json),
        ("cloud MessagePack subscriber", Serializer::MsgPack),
    ] {
        let c = Client::connect(&ConnectOptions::new(&cb.app_url(), "cloud").serializer(ser))
            .await
            .unwrap();
        let sub = c
            .subscribe("brume.hub.edge-n.thing.m1.state", Dict::new())
            .await
            .unwrap();
        cloud.push((name, c, sub));
    }
    let secret = provision(&hub, "m1").await;
    let (client, mut eventloop) = mqtt_device(&hub, "m1", secret);
    tokio::spawn(async move { while eventloop.poll().await.is_ok() {} });
    client
        .publish("things/m1/state", QoS::AtLeastOnce, false, report_json())
        .await
        .unwrap();
    for (name, _, sub) in &mut cloud {
        let values = next_values(sub, name).await;
        assert_exact(&values, name);
    }
}
