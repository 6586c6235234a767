//! The MQTT side of Brume end to end, through the whole hub: real MQTT clients (rumqttc,
//! Debian's mosquitto_pub and mosquitto_sub, a paho-mqtt Tasmota plug) talk to the hub's
//! embedded broker, and Autobahn-Python is the WAMP application, over WebSocket and RawSocket.
//! Each test starts its own hub on port 0.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "mqtt_e2e/harness.rs"]
mod harness;

use device_models::ThingId;
use harness::{
    App, Device, MosquittoSub, Tasmota, anonymous_options, device_options, mosquitto_pub,
    offline_will, start_hub, until,
};
use hub::wamp::Dict;
use rumqttc::{QoS, SubscribeReasonCode};
use serde_json::{Value as Json, json};
use tests::hub::TestHub;

fn id(s: &str) -> ThingId {
    ThingId::new(s).unwrap()
}

fn mqtt_stats(hub: &TestHub) -> gateways::mqtt::MqttStats {
    hub.hub
        .gateways()
        .mqtt
        .as_ref()
        .expect("MQTT gateway")
        .stats()
}

/// Waits until the hub's directory sync has told the MQTT gateway about `thing`.
async fn registered(hub: &TestHub, thing: &str) {
    let mqtt = hub.hub.gateways().mqtt.as_ref().expect("MQTT gateway");
    until(&format!("{thing} registered with the MQTT gateway"), || {
        mqtt.is_registered(&id(thing))
    })
    .await;
}

fn json_of(payload: &[u8]) -> Json {
    serde_json::from_slice(payload)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(payload)))
}

/// The form the WAMP app writes bytes in.
fn bytes_arg(b: &[u8]) -> Json {
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    json!({ "$bytes": hex })
}

/// 1. A provisioned device's state report becomes a WAMP event on `brume.thing.<id>.state`,
/// seen through the wildcard `brume.thing..state`, holding only the properties that changed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_state_reaches_a_wildcard_subscriber_with_only_the_changes() {
    let hub = start_hub().await;
    let app = App::start(&hub, "websocket", "json").await;
    let secret = app.provision("th1", "thermostat").await;
    let mut states = app.subscribe("brume.thing..state", "wildcard").await;
    let mut onlines = app.subscribe("brume.things.on_online", "exact").await;

    // mosquitto_pub logs in as the thing (username = id, password = secret).
    let login = ["-i", "th1-pub", "-u", "th1", "-P", secret.as_str()];
    let report = |payload: &'static str| {
        let mut args = login.to_vec();
        args.extend(["-t", "things/th1/state", "-m", payload]);
        args
    };
    mosquitto_pub(&hub, &report(r#"{"temperature": 21.5, "mode": "heat"}"#)).await;
    let ev = states.next().await;
    assert_eq!(ev["topic"], "brume.thing.th1.state");
    assert_eq!(ev["kwargs"]["thing"], "th1");
    assert_eq!(
        ev["kwargs"]["values"],
        json!({"temperature": 21.5, "mode": "heat"})
    );
    assert!(ev["kwargs"]["at"]["temperature"].as_u64().unwrap() > 0);
    let online = onlines.next().await;
    assert_eq!(online["kwargs"]["thing"], "th1");
    assert_eq!(online["kwargs"]["type"], "thermostat");

    // Same temperature, new mode: the event carries the mode only.
    mosquitto_pub(&hub, &report(r#"{"temperature": 21.5, "mode": "cool"}"#)).await;
    let ev = states.next().await;
    assert_eq!(ev["kwargs"]["values"], json!({"mode": "cool"}));
    assert_eq!(
        ev["kwargs"]["at"]
            .as_object()
            .unwrap()
            .keys()
            .collect::<Vec<_>>(),
        ["mode"]
    );

    // A rumqttc device on a session of its own.
    let mut dev = Device::connect(device_options(&hub, "th1-fw", "th1", &secret))
        .await
        .unwrap();
    dev.publish("things/th1/state", r#"{"temperature": 22.25}"#, false)
        .await;
    let ev = states.next().await;
    assert_eq!(ev["kwargs"]["values"], json!({"temperature": 22.25}));
    // Reporting unchanged values publishes nothing.
    dev.publish(
        "things/th1/state",
        r#"{"temperature": 22.25, "mode": "cool"}"#,
        false,
    )
    .await;
    states.nothing().await;

    let th1 = app.ok("brume.things.get", json!({"thing": "th1"})).await;
    assert_eq!(th1["online"], true);
    assert_eq!(th1["reported"]["temperature"]["value"], 22.25);
    assert_eq!(th1["reported"]["mode"]["value"], "cool");
    dev.disconnect().await;
    app.quit().await;
}

/// 2. A WAMP call of `brume.thing.<id>.action.<name>` becomes MQTT `things/<id>/actions/<name>`
/// with a correlation id; the device's answer on `things/<id>/replies` is the call's result,
/// and its errors and schema-breaking replies fail the call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn action_call_reaches_the_device_and_its_reply_the_caller() {
    let hub = start_hub().await;
    let app = App::start(&hub, "rawsocket", "json").await;
    let secret = app.provision("a1", "alarm").await;
    let mut options = device_options(&hub, "a1-fw", "a1", &secret);
    options.set_last_will(offline_will("a1"));
    let mut dev = Device::connect(options).await.unwrap();
    assert_eq!(
        dev.subscribe("things/a1/actions/+").await,
        [SubscribeReasonCode::Success(QoS::AtLeastOnce)]
    );
    dev.publish("things/a1/status", "online", true).await;
    app.wait_thing("a1", |t| t["online"] == true).await;

    // The call waits while the device gets the action and answers it.
    let call = app.call("brume.thing.a1.action.arm", json!({"code": "1234"}));
    let device = async {
        let (topic, payload, _) = dev.next_publish().await;
        assert_eq!(topic, "things/a1/actions/arm");
        let invocation = json_of(&payload);
        assert_eq!(invocation["input"], json!({"code": "1234"}));
        assert!(invocation["deadline_ms"].as_u64().unwrap() > 0);
        let correlation = invocation["correlation"].as_str().unwrap().to_owned();
        dev.publish(
            "things/a1/replies",
            json!({"correlation": correlation, "result": true}).to_string(),
            false,
        )
        .await;
        correlation
    };
    let (result, first) = tokio::join!(call, device);
    assert_eq!(result.unwrap(), json!(true));

    // The device says no: the caller gets brume.error.action_failed with its words.
    let call = app.call("brume.thing.a1.action.disarm", json!({}));
    let device = async {
        let (topic, payload, _) = dev.next_publish().await;
        assert_eq!(topic, "things/a1/actions/disarm");
        let invocation = json_of(&payload);
        assert_ne!(invocation["correlation"].as_str().unwrap(), first);
        dev.publish(
            "things/a1/replies",
            json!({"correlation": invocation["correlation"], "error": "wrong code"}).to_string(),
            false,
        )
        .await;
    };
    let (result, ()) = tokio::join!(call, device);
    let e = result.unwrap_err();
    assert_eq!(e.uri, "brume.error.action_failed");
    assert!(e.args[0].as_str().unwrap().contains("wrong code"), "{e:?}");

    // A reply that breaks the action's output schema fails the call too.
    let call = app.call("brume.thing.a1.action.arm", json!({}));
    let device = async {
        let (_, payload, _) = dev.next_publish().await;
        let invocation = json_of(&payload);
        dev.publish(
            "things/a1/replies",
            json!({"correlation": invocation["correlation"], "result": "armed"}).to_string(),
            false,
        )
        .await;
    };
    let (result, ()) = tokio::join!(call, device);
    assert_eq!(result.unwrap_err().uri, "brume.error.action_failed");

    // Device events go the same way up.
    let mut triggered = app
        .subscribe("brume.thing.a1.event.triggered", "exact")
        .await;
    dev.publish("things/a1/events/triggered", r#"{"zone": "hall"}"#, false)
        .await;
    let ev = triggered.next().await;
    assert_eq!(ev["kwargs"]["payload"], json!({"zone": "hall"}));
    dev.disconnect().await;
    app.quit().await;
}

/// 3. `brume.things.set` publishes the desired value, retained, on `things/<id>/desired`; the
/// call resolves when the device reports it, after which nothing is pending, neither in
/// `brume.things.get` nor in what the broker hands a device that subscribes again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_is_retained_desired_and_resolves_when_the_device_reports() {
    let hub = start_hub().await;
    let app = App::start(&hub, "websocket", "msgpack").await;
    let secret = app.provision("th1", "thermostat").await;
    registered(&hub, "th1").await;
    let mut dev = Device::connect(device_options(&hub, "th1-fw", "th1", &secret))
        .await
        .unwrap();
    dev.publish(
        "things/th1/state",
        r#"{"temperature": 20.5, "setpoint": 20, "mode": "off"}"#,
        false,
    )
    .await;
    app.wait_thing("th1", |t| t["online"] == true).await;

    // The device subscribes only once the set is under way: what it gets is the retained copy.
    let set = app.call(
        "brume.things.set",
        json!({"thing": "th1", "property": "setpoint", "value": 24.5}),
    );
    let device = async {
        let pending = app
            .wait_thing("th1", |t| t["desired"]["setpoint"]["value"] == 24.5)
            .await;
        assert!(pending["desired"]["setpoint"]["at"].as_u64().unwrap() > 0);
        assert_eq!(
            dev.subscribe("things/th1/desired").await,
            [SubscribeReasonCode::Success(QoS::AtLeastOnce)]
        );
        let (topic, payload, retain) = dev.next_publish().await;
        assert_eq!(topic, "things/th1/desired");
        assert!(retain, "desired state is a retained message");
        assert_eq!(json_of(&payload), json!({"setpoint": 24.5}));
        dev.publish("things/th1/state", r#"{"setpoint": 24.5}"#, false)
            .await;
    };
    let (result, ()) = tokio::join!(set, device);
    let result = result.unwrap();
    assert_eq!(result["thing"], "th1");
    assert_eq!(result["settled"]["setpoint"]["value"], 24.5);
    // Once reported, the hub clears the retained message: subscribers see it emptied.
    let (topic, payload, _) = dev.next_publish().await;
    assert_eq!(
        (topic.as_str(), payload.as_slice()),
        ("things/th1/desired", &b""[..])
    );

    let th1 = app.ok("brume.things.get", json!({"thing": "th1"})).await;
    assert_eq!(th1["desired"], json!({}), "nothing pending: {th1}");
    assert_eq!(th1["reported"]["setpoint"]["value"], 24.5);
    let one = app
        .ok(
            "brume.things.get",
            json!({"thing": "th1", "property": "setpoint"}),
        )
        .await;
    assert!(one.get("desired").is_none(), "{one}");

    // The device is later turned down by hand and restarts: the broker must not hand it the
    // settled desired value again, or it would undo the change the hub has recorded.
    dev.publish("things/th1/state", r#"{"setpoint": 18}"#, false)
        .await;
    app.wait_thing("th1", |t| t["reported"]["setpoint"]["value"] == 18)
        .await;
    dev.disconnect().await;
    let mut dev = Device::connect(device_options(&hub, "th1-fw", "th1", &secret))
        .await
        .unwrap();
    dev.subscribe("things/th1/desired").await;
    dev.no_publish().await;

    // Two values at once, applied one at a time: what is retained shrinks to what is left.
    dev.publish("things/th1/status", "online", false).await;
    app.wait_thing("th1", |t| t["online"] == true).await;
    let set = app.call(
        "brume.things.set",
        json!({"thing": "th1", "values": {"setpoint": 19, "mode": "heat"}}),
    );
    let device = async {
        let (_, payload, _) = dev.next_publish().await;
        assert_eq!(json_of(&payload), json!({"setpoint": 19, "mode": "heat"}));
        dev.publish("things/th1/state", r#"{"setpoint": 19.0}"#, false)
            .await;
        let (topic, payload, _) = dev.next_publish().await;
        assert_eq!(topic, "things/th1/desired");
        assert_eq!(json_of(&payload), json!({"mode": "heat"}));
        // The device restarts now (its new connection takes over the old one): the retained
        // message hands it only the mode.
        let mut again = Device::connect(device_options(&hub, "th1-fw2", "th1", &secret))
            .await
            .unwrap();
        again.subscribe("things/th1/desired").await;
        let (_, payload, retain) = again.next_publish().await;
        assert!(retain);
        assert_eq!(json_of(&payload), json!({"mode": "heat"}));
        again
            .publish("things/th1/state", r#"{"mode": "heat"}"#, false)
            .await;
        let (_, payload, _) = again.next_publish().await;
        assert!(payload.is_empty(), "cleared once all is reported");
        again.disconnect().await;
    };
    let (result, ()) = tokio::join!(set, device);
    let settled = &result.unwrap()["settled"];
    assert_eq!(settled["setpoint"]["value"], 19.0);
    assert_eq!(settled["mode"]["value"], "heat");
    app.quit().await;
}

/// 4. A device's last will on `things/<id>/status` (it vanishes without DISCONNECT) marks the
/// thing offline: `brume.things.on_offline`; a clean DISCONNECT does too, without a will.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn last_will_marks_the_thing_offline() {
    let hub = start_hub().await;
    let app = App::start(&hub, "websocket", "json").await;
    let secret = app.provision("r1", "relay").await;
    let mut onlines = app.subscribe("brume.things.on_online", "exact").await;
    let mut offlines = app.subscribe("brume.things.on_offline", "exact").await;

    let mut options = device_options(&hub, "r1-fw", "r1", &secret);
    options.set_last_will(offline_will("r1"));
    let mut dev = Device::connect(options.clone()).await.unwrap();
    dev.publish("things/r1/status", "online", true).await;
    let ev = onlines.next().await;
    assert_eq!(ev["kwargs"]["thing"], "r1");
    assert_eq!(
        app.ok("brume.things.get", json!({"thing": "r1"})).await["online"],
        true
    );

    dev.kill().await;
    let ev = offlines.next().await;
    assert_eq!(ev["kwargs"], json!({"thing": "r1"}));
    offlines.nothing().await;
    assert_eq!(
        app.ok("brume.things.get", json!({"thing": "r1"})).await["online"],
        false
    );
    assert_eq!(mqtt_stats(&hub).wills_published, 1);
    let listed = app.ok("brume.things.list", json!({"online": false})).await;
    assert_eq!(listed[0]["thing"], "r1");

    // The will stays as the retained status the device finds when it comes back.
    let mut dev = Device::connect(options).await.unwrap();
    dev.subscribe("things/r1/status").await;
    let (_, payload, retain) = dev.next_publish().await;
    assert_eq!((payload.as_slice(), retain), (&b"offline"[..], true));
    dev.publish("things/r1/status", "online", true).await;
    assert_eq!(onlines.next().await["kwargs"]["thing"], "r1");
    // A clean DISCONNECT publishes no will, and the thing still ends offline.
    dev.disconnect().await;
    assert_eq!(offlines.next().await["kwargs"]["thing"], "r1");
    assert_eq!(mqtt_stats(&hub).wills_published, 1);
    app.quit().await;
}

/// 5. The ACL end to end: a device publishing another thing's state, or an anonymous client
/// doing so, changes nothing on WAMP, and the device stays connected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_things_topics_are_refused_and_nothing_reaches_wamp() {
    let hub = start_hub().await;
    let app = App::start(&hub, "websocket", "json").await;
    let s1 = app.provision("th1", "thermostat").await;
    let s2 = app.provision("th2", "thermostat").await;
    let mut states = app.subscribe("brume.thing..state", "wildcard").await;
    let mut onlines = app.subscribe("brume.things.on_online", "exact").await;

    let mut dev = Device::connect(device_options(&hub, "th1-fw", "th1", &s1))
        .await
        .unwrap();
    // 3.1.1 has no negative PUBACK: the publish is acknowledged and dropped.
    dev.publish("things/th2/state", r#"{"mode": "heat"}"#, false)
        .await;
    dev.publish("things/th2/status", "online", true).await;
    // An anonymous client, and one logged in with th1's secret under th2's name.
    mosquitto_pub(
        &hub,
        &["-t", "things/th2/state", "-m", r#"{"mode": "cool"}"#],
    )
    .await;
    let refused = harness::mosquitto_pub_status(
        &hub,
        &["-u", "th2", "-P", &s1, "-t", "things/th2/state", "-m", "{}"],
    )
    .await;
    assert!(!refused.status.success(), "a wrong password is refused");
    states.nothing().await;
    onlines.nothing().await;
    let th2 = app.ok("brume.things.get", json!({"thing": "th2"})).await;
    assert_eq!(th2["online"], false);
    assert_eq!(th2["reported"], json!({}));
    let stats = mqtt_stats(&hub);
    assert_eq!(stats.acl_denied_publish, 3, "{stats:?}");
    assert_eq!(stats.connections_refused_auth, 1, "{stats:?}");

    // Subscribing to th2's topics, or to every thing's, is refused as well.
    for filter in ["things/th2/desired", "things/+/state"] {
        assert_eq!(
            dev.subscribe(filter).await,
            [SubscribeReasonCode::Failure],
            "{filter}"
        );
    }
    // th1 is still connected and speaks for itself.
    assert!(dev.is_connected());
    dev.publish("things/th1/state", r#"{"mode": "auto"}"#, false)
        .await;
    let ev = states.next().await;
    assert_eq!(ev["topic"], "brume.thing.th1.state");
    assert_eq!(ev["kwargs"]["values"], json!({"mode": "auto"}));
    states.nothing().await;

    // The real th2 is unaffected.
    let mut th2 = Device::connect(device_options(&hub, "th2-fw", "th2", &s2))
        .await
        .unwrap();
    th2.publish("things/th2/state", r#"{"mode": "heat"}"#, false)
        .await;
    let ev = states.next().await;
    assert_eq!(ev["topic"], "brume.thing.th2.state");
    dev.disconnect().await;
    th2.disconnect().await;
    app.quit().await;
}

/// 6. A Tasmota plug modelled by `tasmota_plug.toml`, with its Tasmota topic being its thing id:
/// `tele/<id>/SENSOR` becomes WAMP state, a WAMP `toggle` goes out as `cmnd/<id>/POWER` and the
/// plug's `stat/<id>/POWER` is the result; desired `on` goes the same way; its LWT is presence.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasmota_plug_through_its_own_topics() {
    let hub = start_hub().await;
    let app = App::start(&hub, "websocket", "json").await;
    let secret = app.provision("plug1", "tasmota_plug").await;
    registered(&hub, "plug1").await;
    let mut states = app.subscribe("brume.thing.plug1.state", "exact").await;
    let mut offlines = app.subscribe("brume.things.on_offline", "exact").await;

    let mut plug = Tasmota::start(&hub, "plug1", "plug1", &secret).await;
    app.wait_thing("plug1", |t| t["online"] == true).await;

    plug.send("sensor 21.5 40").await;
    let ev = states.next().await;
    assert_eq!(
        ev["kwargs"]["values"],
        json!({"temperature": 21.5, "humidity": 40.0})
    );

    let on = app.ok("brume.thing.plug1.action.toggle", json!({})).await;
    assert_eq!(on, json!(true));
    plug.expect_line("cmnd POWER TOGGLE").await;
    assert_eq!(states.next().await["kwargs"]["values"], json!({"on": true}));
    let off = app.ok("brume.thing.plug1.action.toggle", json!({})).await;
    assert_eq!(off, json!(false));
    assert_eq!(
        states.next().await["kwargs"]["values"],
        json!({"on": false})
    );

    // Desired state through the binding: cmnd/plug1/POWER ON, confirmed by stat/plug1/POWER.
    let set = app
        .ok(
            "brume.things.set",
            json!({"thing": "plug1", "property": "on", "value": true}),
        )
        .await;
    assert_eq!(set["settled"]["on"]["value"], true);
    plug.expect_line("cmnd POWER ON").await;
    assert_eq!(states.next().await["kwargs"]["values"], json!({"on": true}));
    let plug1 = app.ok("brume.things.get", json!({"thing": "plug1"})).await;
    assert_eq!(plug1["desired"], json!({}));
    assert_eq!(plug1["reported"]["on"]["value"], true);

    // A reading outside the type's limits is refused by the things service (the one place
    // that checks values against the type) and counted.
    let invalid = || hub::things::ThingsStats::get(&hub.hub.things().stats().invalid_reports);
    let rejected = invalid();
    plug.send("sensor 150 40").await;
    plug.expect_line("sent sensor").await;
    until("the bad reading counted", || invalid() == rejected + 1).await;

    // Another device may not speak on the plug's topics.
    let s2 = app.provision("th2", "thermostat").await;
    let mut other = Device::connect(device_options(&hub, "th2-fw", "th2", &s2))
        .await
        .unwrap();
    let denied = mqtt_stats(&hub).acl_denied_publish;
    other
        .publish(
            "tele/plug1/SENSOR",
            r#"{"AM2301": {"Temperature": 30, "Humidity": 50}}"#,
            false,
        )
        .await;
    assert_eq!(mqtt_stats(&hub).acl_denied_publish, denied + 1);
    assert_eq!(
        other.subscribe("cmnd/plug1/POWER").await,
        [SubscribeReasonCode::Failure]
    );
    states.nothing().await;

    // Its last will ("Offline" on tele/plug1/LWT) is its presence.
    plug.kill().await;
    assert_eq!(offlines.next().await["kwargs"]["thing"], "plug1");
    other.disconnect().await;
    app.quit().await;
}

/// 7. The plain bridge, both ways and without loops: `plant/line1/temp` ↔
/// `mqtt.plant.line1.temp`, `mqtt.plant.cmd` → `plant/cmd`; each message is seen once on each
/// side.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_bridge_both_ways_without_loops() {
    let hub = start_hub().await;
    let app = App::start(&hub, "rawsocket", "msgpack").await;
    let mut temps = app.subscribe("mqtt.plant.line1.temp", "exact").await;
    let mut everything = app.subscribe("mqtt.", "prefix").await;
    let mut mqtt_temps = MosquittoSub::start(&hub, "plant/line1/temp").await;

    // MQTT → WAMP, a JSON payload decoded.
    mosquitto_pub(
        &hub,
        &[
            "-t",
            "plant/line1/temp",
            "-m",
            r#"{"t": 21.5, "unit": "C"}"#,
        ],
    )
    .await;
    let ev = temps.next().await;
    assert_eq!(ev["topic"], "mqtt.plant.line1.temp");
    assert_eq!(ev["args"], json!([{"t": 21.5, "unit": "C"}]));
    assert_eq!(everything.next().await["topic"], "mqtt.plant.line1.temp");
    assert_eq!(
        mqtt_temps.next().await,
        (
            "plant/line1/temp".to_owned(),
            r#"{"t": 21.5, "unit": "C"}"#.to_owned()
        )
    );
    // A payload that is not JSON arrives as bytes.
    mosquitto_pub(&hub, &["-t", "plant/line1/temp", "-m", "21.5 C"]).await;
    assert_eq!(temps.next().await["args"], json!([bytes_arg(b"21.5 C")]));
    assert_eq!(mqtt_temps.next().await.1, "21.5 C");
    // Once each: nothing echoes back into MQTT or again onto WAMP.
    temps.nothing().await;
    mqtt_temps.nothing().await;
    assert_eq!(everything.next().await["topic"], "mqtt.plant.line1.temp");
    everything.nothing().await;

    // WAMP → MQTT: a string as it is, anything else as JSON.
    let mut cmds = MosquittoSub::start(&hub, "plant/cmd").await;
    let observer = hub.local_client("observer");
    let mut wamp_cmds = observer
        .subscribe("mqtt.plant.cmd", Dict::new())
        .await
        .unwrap();
    app.publish("mqtt.plant.cmd", json!(["start line 1"])).await;
    assert_eq!(
        cmds.next().await,
        ("plant/cmd".to_owned(), "start line 1".to_owned())
    );
    app.publish("mqtt.plant.cmd", json!([{"speed": 3}])).await;
    assert_eq!(cmds.next().await.1, r#"{"speed":3}"#);
    cmds.nothing().await;
    let mut seen = Vec::new();
    for _ in 0..2 {
        let ev = tokio::time::timeout(harness::WAIT, wamp_cmds.next())
            .await
            .expect("the observer got the publication")
            .unwrap();
        seen.push(ev.payload.arg(0).map(Json::from));
    }
    assert_eq!(
        seen,
        [Some(json!("start line 1")), Some(json!({"speed": 3}))]
    );
    if let Ok(Some(ev)) = tokio::time::timeout(harness::QUIET, wamp_cmds.next()).await {
        panic!("the WAMP publication came back: {:?}", ev.payload);
    }
    // The publishing session's own subscription saw nothing (publisher exclusion), and no MQTT
    // copy of it came back either.
    everything.nothing().await;

    // What cannot cross: an MQTT topic that is no URI, and a WAMP topic naming a thing's topic.
    let skipped = hub
        .hub
        .gateways()
        .bridge_skipped
        .load(std::sync::atomic::Ordering::Relaxed);
    mosquitto_pub(&hub, &["-t", "plant/line 1/temp", "-m", "1"]).await;
    app.publish("mqtt.things.th1.desired", json!([{"on": true}]))
        .await;
    until("two messages not bridged", || {
        hub.hub
            .gateways()
            .bridge_skipped
            .load(std::sync::atomic::Ordering::Relaxed)
            == skipped + 2
    })
    .await;
    everything.nothing().await;
    let stats = mqtt_stats(&hub);
    assert_eq!((stats.raw_in, stats.raw_out), (3, 2), "{stats:?}");
    app.quit().await;
}

/// 8. Persistent sessions: QoS 1 messages for a device that is away (clean session off) wait
/// for it. Actions to an offline thing are refused; a `set` stays pending and reaches the
/// device through its stored subscription when it is back, without subscribing again. The raw
/// bridge's QoS 1 messages queue the same way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persistent_sessions_get_what_was_sent_while_away() {
    let hub = start_hub().await;
    let app = App::start(&hub, "websocket", "json").await;
    let secret = app.provision("r1", "relay").await;
    let mut offlines = app.subscribe("brume.things.on_offline", "exact").await;

    let mut options = device_options(&hub, "r1-fw", "r1", &secret);
    options.set_clean_session(false);
    options.set_last_will(offline_will("r1"));
    let mut dev = Device::connect(options.clone()).await.unwrap();
    assert!(!dev.session_present);
    dev.subscribe("things/r1/desired").await;
    dev.subscribe("things/r1/actions/+").await;
    dev.publish("things/r1/state", r#"{"on": false}"#, false)
        .await;
    app.wait_thing("r1", |t| t["online"] == true).await;
    dev.kill().await;
    offlines.next().await;

    let e = app
        .err(
            "brume.thing.r1.action.toggle",
            json!({}),
            "brume.error.thing_offline",
        )
        .await;
    assert_eq!(e.kwargs["thing"], "r1");
    let e = app
        .err(
            "brume.things.set",
            json!({"thing": "r1", "property": "on", "value": true}),
            "brume.error.thing_offline",
        )
        .await;
    assert_eq!(e.kwargs["pending"], json!(["on"]));
    let r1 = app.ok("brume.things.get", json!({"thing": "r1"})).await;
    assert_eq!(r1["desired"]["on"]["value"], true);

    // Back, with its stored session and no new SUBSCRIBE: saying it is online brings the
    // desired value down its old subscription.
    let mut dev = Device::connect(options).await.unwrap();
    assert!(dev.session_present, "the broker kept the session");
    dev.publish("things/r1/status", "online", true).await;
    let (topic, payload, _) = dev.next_publish().await;
    assert_eq!(topic, "things/r1/desired");
    assert_eq!(json_of(&payload), json!({"on": true}));
    dev.publish("things/r1/state", r#"{"on": true}"#, false)
        .await;
    let r1 = app
        .wait_thing("r1", |t| t["reported"]["on"]["value"] == true)
        .await;
    assert_eq!(r1["desired"], json!({}));
    // Settled: the hub clears the retained desired state (an empty message).
    let (topic, payload, _) = dev.next_publish().await;
    assert_eq!(
        (topic.as_str(), payload.as_slice()),
        ("things/r1/desired", &b""[..])
    );
    // And its actions work again over the same stored subscription.
    let call = app.call("brume.thing.r1.action.toggle", json!({}));
    let device = async {
        let (topic, payload, _) = dev.next_publish().await;
        assert_eq!(topic, "things/r1/actions/toggle");
        let c = json_of(&payload)["correlation"].clone();
        dev.publish(
            "things/r1/replies",
            json!({"correlation": c, "result": false}).to_string(),
            false,
        )
        .await;
    };
    let (result, ()) = tokio::join!(call, device);
    assert_eq!(result.unwrap(), json!(false));
    dev.disconnect().await;

    // A panel away from the plant gets the bridge's QoS 1 alerts, in order, when it is back.
    let mut panel_options = anonymous_options(&hub, "panel-7");
    panel_options.set_clean_session(false);
    let mut panel = Device::connect(panel_options.clone()).await.unwrap();
    panel.subscribe("plant/alerts").await;
    panel.disconnect().await;
    for n in 1..=3 {
        app.publish("mqtt.plant.alerts", json!([format!("alert {n}")]))
            .await;
    }
    until("the alerts bridged", || mqtt_stats(&hub).raw_out == 3).await;
    let mut panel = Device::connect(panel_options).await.unwrap();
    assert!(panel.session_present);
    for n in 1..=3 {
        let (topic, payload, _) = panel.next_publish().await;
        assert_eq!(
            (topic.as_str(), payload),
            ("plant/alerts", format!("alert {n}").into_bytes())
        );
    }
    panel.no_publish().await;
    panel.disconnect().await;
    app.quit().await;
}

/// 9. Bad payloads on a thing topic (not JSON, not an object, out of range, not in the enum)
/// are rejected and counted; the device stays connected and its next good report goes through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_payloads_are_rejected_and_counted_and_the_device_stays() {
    let hub = start_hub().await;
    let app = App::start(&hub, "websocket", "json").await;
    let secret = app.provision("th1", "thermostat").await;
    registered(&hub, "th1").await;
    let mut states = app.subscribe("brume.thing..state", "wildcard").await;
    let mut dev = Device::connect(device_options(&hub, "th1-fw", "th1", &secret))
        .await
        .unwrap();
    dev.publish("things/th1/state", r#"{"temperature": 20}"#, false)
        .await;
    assert_eq!(
        states.next().await["kwargs"]["values"],
        json!({"temperature": 20})
    );
    let before = mqtt_stats(&hub);
    let invalid = || hub::things::ThingsStats::get(&hub.hub.things().stats().invalid_reports);
    let invalid_before = invalid();

    let bad: [&[u8]; 5] = [
        b"warm",
        br#"[21, "heat"]"#,
        br#"{"temperature": 500}"#,
        br#"{"mode": "party"}"#,
        br#"{"temperature": 21, "setpoint": "high"}"#,
    ];
    for payload in bad {
        dev.publish("things/th1/state", payload, false).await;
    }
    // Not JSON and not an object: refused by the gateway. Values that break the type: refused
    // by the things service, the one place that checks them.
    until("every bad payload counted", || {
        mqtt_stats(&hub).rejected_payloads == before.rejected_payloads + 2
            && invalid() == invalid_before + 3
    })
    .await;
    states.nothing().await;
    assert!(dev.is_connected());

    dev.publish(
        "things/th1/state",
        r#"{"temperature": 21, "mode": "heat"}"#,
        false,
    )
    .await;
    let ev = states.next().await;
    assert_eq!(
        ev["kwargs"]["values"],
        json!({"temperature": 21, "mode": "heat"})
    );
    let th1 = app.ok("brume.things.get", json!({"thing": "th1"})).await;
    assert_eq!(th1["online"], true);
    assert_eq!(th1["reported"]["temperature"]["value"], 21);
    assert!(th1["reported"].get("setpoint").is_none(), "{th1}");
    dev.disconnect().await;
    app.quit().await;
}
