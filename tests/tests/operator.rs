//! What an operator sees from outside, over the hub's HTTP listener: `/healthz`, `/readyz`
//! (end to end: the uplink counts as ready only after a round trip through Crossbar.io, and a
//! half-open link that still looks connected is caught), `/metrics` in Prometheus text format
//! moving with a real MQTT device and a simulated CoAP device (router traffic, things calls by
//! outcome, the CoAP gateway's counters), and `brume status`.

// Test helpers fail the test by panicking.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use firmware_sim::coap::{PushActivity, PushDevice, PushDeviceConfig};
use hub::http::client::{get, get_json};
use hub::uplink::UplinkConfig;
use hub::wamp::{Dict, Serializer, Value, dict};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde_json::Value as Json;
use tests::cloud::{Crossbar, Proxy, ProxyMode};
use tests::hub::TestHub;
use tokio_util::sync::CancellationToken;

fn base(hub: &TestHub) -> String {
    format!(
        "http://{}",
        hub.hub.local_addr("http").expect("HTTP listener")
    )
}

async fn metrics(hub: &TestHub) -> String {
    let (status, body) = get(&base(hub), "/metrics").await.unwrap();
    assert_eq!(status, 200);
    String::from_utf8(body.to_vec()).unwrap()
}

/// The value of the sample `series` (name and labels, exactly as exposed) in a scrape.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// Polls `/readyz` until `want` (ready or not) or panics after `within`, returning the body.
async fn readyz_until(hub: &TestHub, want: bool, within: Duration) -> Json {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let (status, body) = get(&base(hub), "/readyz").await.unwrap();
        let json: Json = serde_json::from_slice(&body).unwrap();
        assert_eq!(status == 200, json["ready"] == true, "{status} {json}");
        if json["ready"] == want {
            return json;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "readiness never became {want}: {json}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_readiness_and_metrics_follow_a_real_device() {
    let hub = TestHub::start().await;
    let (status, body) = get(&base(&hub), "/healthz").await.unwrap();
    assert_eq!((status, &body[..]), (200, &b"ok\n"[..]));
    let ready = readyz_until(&hub, true, Duration::from_secs(10)).await;
    for check in ["things_service", "store", "parts", "memory", "mqtt"] {
        assert_eq!(ready["checks"][check]["ok"], true, "{check}: {ready}");
    }

    // A device over MQTT: provisioned over WAMP, reporting with QoS 1.
    let app = hub.client("websocket", Serializer::Json).await;
    let r = app
        .call(
            "brume.things.provision",
            vec![],
            dict([
                ("thing", Value::from("th1")),
                ("type", Value::from("thermostat")),
            ]),
        )
        .await
        .unwrap();
    let secret = r
        .payload
        .arg(0)
        .and_then(Value::as_dict)
        .and_then(|d| d.get("secret"))
        .and_then(Value::as_str)
        .unwrap()
        .to_owned();
    let mut states = app
        .subscribe("brume.thing.th1.state", Dict::new())
        .await
        .unwrap();
    let mqtt = hub.hub.gateway_addrs().mqtt.unwrap();
    let mut o = MqttOptions::new("th1-fw", "127.0.0.1", mqtt.port());
    o.set_credentials("th1", secret);
    let (client, mut events) = AsyncClient::new(o, 16);
    for t in [21.5, 22.0, 22.5] {
        client
            .publish(
                "things/th1/state",
                QoS::AtLeastOnce,
                false,
                format!(r#"{{"temperature": {t}}}"#),
            )
            .await
            .unwrap();
    }
    let mut acked = 0;
    tokio::time::timeout(Duration::from_secs(20), async {
        while acked < 3 {
            if let Event::Incoming(Packet::PubAck(_)) = events.poll().await.unwrap() {
                acked += 1;
            }
        }
    })
    .await
    .expect("three PUBACKs");
    tokio::time::timeout(Duration::from_secs(20), states.next())
        .await
        .expect("a state event")
        .expect("subscribed");
    let text = metrics(&hub).await;
    assert_eq!(sample(&text, "brume_mqtt_connections"), Some(1.0), "{text}");
    assert!(
        sample(&text, "brume_mqtt_messages_in_total").unwrap() >= 3.0,
        "{text}"
    );
    assert!(
        sample(&text, "brume_things_events_in_total").unwrap() >= 3.0,
        "{text}"
    );
    assert!(
        sample(&text, "brume_things_acknowledged_after_commit_total").unwrap() >= 1.0,
        "{text}"
    );
    assert!(
        sample(
            &text,
            "brume_router_sessions{transport=\"websocket\",serializer=\"json\"}"
        )
        .unwrap()
            >= 1.0,
        "{text}"
    );
    assert!(
        sample(&text, "brume_things_store_commit_seconds_count").unwrap() >= 1.0,
        "{text}"
    );
    assert_eq!(
        sample(&text, "brume_things_dropped_total{cause=\"write_failed\"}"),
        Some(0.0),
        "{text}"
    );
    assert!(sample(&text, "brume_process_resident_memory_bytes").unwrap() > 0.0);
    assert!(
        text.ends_with("# EOF\n"),
        "OpenMetrics text ends with # EOF"
    );
    // The router's traffic: the state events published and delivered to the app, the calls.
    let at_least = |text: &str, series: &str, min: f64| {
        let v = sample(text, series).unwrap_or_else(|| panic!("no {series} in {text}"));
        assert!(v >= min, "{series} = {v}, expected at least {min}\n{text}");
    };
    at_least(
        &text,
        "brume_router_publications_total{realm=\"brume\"}",
        1.0,
    );
    at_least(
        &text,
        "brume_router_events_sent_total{realm=\"brume\"}",
        1.0,
    );
    at_least(&text, "brume_router_calls_total{realm=\"brume\"}", 1.0);
    at_least(
        &text,
        "brume_router_call_outcomes_total{realm=\"brume\",outcome=\"result\"}",
        1.0,
    );

    // A CoAP device: provisioned, its commands observed, then a set it applies.
    let r = app
        .call(
            "brume.things.provision",
            vec![],
            dict([
                ("thing", Value::from("co1")),
                ("type", Value::from("thermostat")),
            ]),
        )
        .await
        .unwrap();
    let co_secret = r
        .payload
        .arg(0)
        .and_then(Value::as_dict)
        .and_then(|d| d.get("secret"))
        .and_then(Value::as_str)
        .unwrap()
        .to_owned();
    let devices = CancellationToken::new();
    let coap = hub.hub.gateway_addrs().coap.expect("the CoAP gateway runs");
    let mut device = PushDevice::start(
        PushDeviceConfig {
            secret: Some(co_secret),
            ..PushDeviceConfig::new(coap, "co1")
        },
        devices.clone(),
    )
    .await
    .unwrap();
    let first = tokio::time::timeout(Duration::from_secs(20), device.activity.recv())
        .await
        .expect("the device observes its commands");
    assert_eq!(first, Some(PushActivity::Commands(0)));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let t = app
            .call(
                "brume.things.get",
                vec![],
                dict([("thing", Value::from("co1"))]),
            )
            .await
            .unwrap();
        let online = t
            .payload
            .arg(0)
            .and_then(Value::as_dict)
            .and_then(|d| d.get("online"))
            .and_then(Value::as_bool);
        if online == Some(true) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "co1 never online");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let set = |thing: &str, setpoint: f64| {
        dict([
            ("thing", Value::from(thing)),
            (
                "values",
                Value::Dict(dict([("setpoint", Value::from(setpoint))])),
            ),
        ])
    };
    app.call("brume.things.set", vec![], set("co1", 23.0))
        .await
        .expect("the device applies the set");
    // Refused at once: out of range, and an action the type does not have.
    app.call("brume.things.set", vec![], set("th1", 99.0))
        .await
        .expect_err("out of range");
    app.call("brume.thing.co1.action.boost", vec![], Dict::new())
        .await
        .expect_err("no such action");
    let text = metrics(&hub).await;
    at_least(&text, "brume_things_set_calls_total", 2.0);
    at_least(
        &text,
        "brume_things_set_outcomes_total{outcome=\"succeeded\"}",
        1.0,
    );
    at_least(
        &text,
        "brume_things_set_outcomes_total{outcome=\"refused\"}",
        1.0,
    );
    at_least(&text, "brume_things_action_calls_total", 1.0);
    at_least(
        &text,
        "brume_things_action_outcomes_total{outcome=\"refused\"}",
        1.0,
    );
    at_least(
        &text,
        "brume_router_call_outcomes_total{realm=\"brume\",outcome=\"error\"}",
        2.0,
    );
    at_least(&text, "brume_coap_requests_total", 2.0);
    at_least(&text, "brume_coap_events_out_total", 2.0);
    at_least(&text, "brume_coap_commands_total", 1.0);
    assert_eq!(sample(&text, "brume_coap_observers"), Some(1.0), "{text}");
    // Exported even with no observed device and nothing dropped: a drop is always something a
    // reader can see.
    for series in [
        "brume_coap_observed_notifications_dropped_total",
        "brume_coap_observed_datagrams_malformed_total",
        "brume_router_messages_dropped_total{cause=\"unencodable\"}",
        "brume_coap_observer_events_dropped_total",
        "brume_coap_rejected_total{cause=\"auth\"}",
    ] {
        assert_eq!(sample(&text, series), Some(0.0), "{series}: {text}");
    }
    devices.cancel();

    // `/status` shows the same picture, and `brume status` prints it.
    let status = get_json(&base(&hub), "/status").await.unwrap();
    assert_eq!(status["readiness"]["ready"], true, "{status}");
    assert!(
        status["things"]["events_in"].as_u64().unwrap() >= 3,
        "{status}"
    );
    assert_eq!(status["gateways"]["mqtt"]["connections"], 1, "{status}");
    assert!(
        status["gateways"]["coap"]["requests"].as_u64().unwrap() >= 2,
        "{status}"
    );
    assert_eq!(status["gateways"]["coap"]["dropped"], 0, "{status}");
    assert_eq!(
        status["wamp_dropped_by_cause"],
        serde_json::json!({"too_large": 0, "unencodable": 0}),
        "{status}"
    );
    let out = tokio::process::Command::new(tests::hub::brume_binary())
        .args(["status", "--url", &base(&hub)])
        .output()
        .await
        .unwrap();
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{printed}");
    assert!(printed.starts_with("hub brume (brume "), "{printed}");
    assert!(printed.contains(", READY\n"), "{printed}");
    assert!(printed.contains("gateway mqtt: "), "{printed}");
    assert!(printed.contains("gateway coap: "), "{printed}");
    drop(client);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_uplink_is_ready_only_after_a_round_trip_through_the_cloud() {
    let cb = Crossbar::start(&["edge-a"]).await;
    let proxy = Proxy::start(cb.hub_addr()).await;
    proxy.set(ProxyMode::Closed);
    let mut up = UplinkConfig {
        enabled: true,
        url: format!("ws://{}/ws", proxy.addr),
        realm: "cloud".into(),
        reconnect_initial_ms: 100,
        reconnect_max_ms: 400,
        // Slow keepalives, so that only the round-trip probe can notice a half-open link.
        keepalive_secs: 120,
        ..UplinkConfig::default()
    };
    up.auth.method = "ticket".into();
    up.auth.authid = "edge-a".into();
    up.auth.secret = Some("secret-edge-a".into());
    let hub = TestHub::start_with(move |c| {
        c.hub.id = "edge-a".into();
        c.uplink = up;
    })
    .await;

    // The cloud is unreachable: not ready, and the reason is named.
    let down = readyz_until(&hub, false, Duration::from_secs(10)).await;
    assert_eq!(down["checks"]["uplink"]["ok"], false, "{down}");
    assert!(
        down["not_ready"][0]
            .as_str()
            .unwrap()
            .starts_with("uplink: "),
        "{down}"
    );
    // The cloud comes back: ready once a call went through it and back.
    proxy.set(ProxyMode::Open);
    readyz_until(&hub, true, Duration::from_secs(20)).await;
    let local = hub.local_client("ops");
    let s = local
        .call("brume.uplink.status", vec![], Dict::new())
        .await
        .unwrap();
    let s = s.payload.kwarg_dict().cloned().unwrap();
    assert!(s["round_trip_ms"].as_u64().is_some(), "{s:?}");
    let text = metrics(&hub).await;
    assert_eq!(sample(&text, "brume_uplink_connected"), Some(1.0), "{text}");

    // A half-open link: the socket stays up, nothing goes through. Still "connected", but
    // no longer ready.
    proxy.set(ProxyMode::Frozen);
    let stuck = readyz_until(&hub, false, Duration::from_secs(30)).await;
    assert_eq!(stuck["checks"]["uplink"]["ok"], false, "{stuck}");
    let s = local
        .call("brume.uplink.status", vec![], Dict::new())
        .await
        .unwrap();
    let s = s.payload.kwarg_dict().cloned().unwrap();
    assert_eq!(
        s.get("connected").and_then(Value::as_bool),
        Some(true),
        "the socket state alone would say all is well: {s:?}"
    );
    proxy.set(ProxyMode::Open);
}
