//! The MQTT gateway over real sockets: rumqttc clients against the embedded broker, with
//! `GatewayIo::pair` standing in for the hub.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "mqtt/harness.rs"]
mod harness;

use std::time::Duration;

use bytes::Bytes;
use device_models::{DeviceCommand, DeviceEvent};
use gateways::mqtt::PublishError;
use harness::{Client, Hub, id, start, start_with, will};
use rumqttc::{Packet, QoS, SubscribeReasonCode};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn far_deadline() -> u64 {
    u64::MAX / 2
}

/// Waits until `cond` holds on the gateway's counters.
async fn until_stats(hub: &Hub, cond: impl Fn(&gateways::mqtt::MqttStats) -> bool) {
    let deadline = tokio::time::Instant::now() + harness::WAIT;
    while !cond(&hub.gateway.stats()) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "stats never matched: {:?}",
            hub.gateway.stats()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn state_becomes_reported_after_hello() {
    let mut hub = start().await;
    hub.register("dev-1", "boiler", None);
    let dev = Client::connect(hub.device_options("dev-1")).await.unwrap();
    dev.publish(
        "things/dev-1/status",
        r#"{"status":"online","type":"boiler","info":{"firmware":"1.2"}}"#,
        true,
    )
    .await;
    let (hint, info) = hub
        .expect(|e| match e {
            DeviceEvent::Hello {
                thing,
                type_hint,
                info,
            } if thing.as_str() == "dev-1" => Some((type_hint.clone(), info.clone())),
            _ => None,
        })
        .await;
    assert_eq!(hint.as_deref(), Some("boiler"));
    assert_eq!(info["firmware"], "1.2");

    dev.publish(
        "things/dev-1/state",
        r#"{"temperature": 21.5, "mode": "heat"}"#,
        false,
    )
    .await;
    let values = hub
        .expect(|e| match e {
            DeviceEvent::Reported { values, .. } => Some(values.clone()),
            _ => None,
        })
        .await;
    assert_eq!(
        Value::Object(values),
        json!({"temperature": 21.5, "mode": "heat"})
    );

    dev.publish("things/dev-1/events/fault", r#"{"code": 3}"#, false)
        .await;
    let (name, payload) = hub
        .expect(|e| match e {
            DeviceEvent::Event { name, payload, .. } => Some((name.clone(), payload.clone())),
            _ => None,
        })
        .await;
    assert_eq!((name.as_str(), payload), ("fault", json!({"code": 3})));

    dev.publish("things/dev-1/info", r#"{"location": "hall"}"#, false)
        .await;
    hub.expect(|e| {
        matches!(e, DeviceEvent::Info { info, .. } if info["location"] == "hall").then_some(())
    })
    .await;
    dev.disconnect().await;
    // A clean disconnect without a will still ends the thing's presence.
    hub.expect(|e| matches!(e, DeviceEvent::Offline { .. }).then_some(()))
        .await;
}

#[tokio::test]
async fn action_goes_out_and_the_reply_comes_back() {
    let mut hub = start().await;
    hub.register("dev-1", "boiler", None);
    let mut dev = Client::connect(hub.device_options("dev-1")).await.unwrap();
    assert_eq!(
        dev.subscribe("things/dev-1/actions/+").await,
        [SubscribeReasonCode::Success(QoS::AtLeastOnce)]
    );
    hub.command(DeviceCommand::InvokeAction {
        thing: id("dev-1"),
        action: "boost".into(),
        input: json!({"minutes": 10}),
        correlation: "c-42".into(),
        deadline_ms: far_deadline(),
    })
    .await;
    let (topic, payload, _) = dev.next_publish().await;
    assert_eq!(topic, "things/dev-1/actions/boost");
    let call: Value = serde_json::from_slice(&payload).unwrap();
    assert_eq!(call["correlation"], "c-42");
    assert_eq!(call["input"], json!({"minutes": 10}));
    assert_eq!(call["deadline_ms"], far_deadline());

    dev.publish(
        "things/dev-1/replies",
        r#"{"correlation": "c-42", "result": true}"#,
        false,
    )
    .await;
    let (correlation, outcome) = hub
        .expect(|e| match e {
            DeviceEvent::ActionReply {
                correlation,
                outcome,
                ..
            } => Some((correlation.clone(), outcome.clone())),
            _ => None,
        })
        .await;
    assert_eq!((correlation.as_str(), outcome), ("c-42", Ok(json!(true))));

    // A reply that breaks the action's output schema passes through: the hub checks it (and
    // resolves the call with an error); an error reply passes through too.
    hub.command(DeviceCommand::InvokeAction {
        thing: id("dev-1"),
        action: "boost".into(),
        input: json!({"minutes": 1}),
        correlation: "c-43".into(),
        deadline_ms: far_deadline(),
    })
    .await;
    dev.next_publish().await;
    dev.publish(
        "things/dev-1/replies",
        r#"{"correlation": "c-43", "result": "yes"}"#,
        false,
    )
    .await;
    let outcome = hub
        .expect(|e| match e {
            DeviceEvent::ActionReply { outcome, .. } => Some(outcome.clone()),
            _ => None,
        })
        .await;
    assert_eq!(outcome, Ok(json!("yes")));
    dev.publish(
        "things/dev-1/replies",
        r#"{"correlation": "c-44", "error": "busy"}"#,
        false,
    )
    .await;
    let outcome = hub
        .expect(|e| match e {
            DeviceEvent::ActionReply { outcome, .. } => Some(outcome.clone()),
            _ => None,
        })
        .await;
    assert_eq!(outcome, Err("busy".into()));
    let stats = hub.gateway.stats();
    assert_eq!(stats.rejected_payloads, 0);
    assert_eq!(stats.replies_unmatched, 1);
}

#[tokio::test]
async fn desired_state_is_retained_for_a_device_that_connects_later() {
    let mut hub = start().await;
    hub.register("dev-1", "boiler", None);
    hub.command(DeviceCommand::SetDesired {
        thing: id("dev-1"),
        values: json!({"setpoint": 22.5}).as_object().unwrap().clone(),
    })
    .await;
    until_stats(&hub, |s| s.commands == 1).await;

    let mut dev = Client::connect(hub.device_options("dev-1")).await.unwrap();
    dev.subscribe("things/dev-1/desired").await;
    let (topic, payload, retain) = dev.next_publish().await;
    assert_eq!(topic, "things/dev-1/desired");
    assert!(retain, "desired state is retained");
    assert_eq!(
        serde_json::from_slice::<Value>(&payload).unwrap(),
        json!({"setpoint": 22.5})
    );
    // The device confirms by reporting the value.
    dev.publish("things/dev-1/state", r#"{"setpoint": 22.5}"#, false)
        .await;
    let values = hub
        .expect(|e| match e {
            DeviceEvent::Reported { values, .. } => Some(values.clone()),
            _ => None,
        })
        .await;
    assert_eq!(values["setpoint"], 22.5);
}

#[tokio::test]
async fn last_will_marks_the_device_offline() {
    let mut hub = start().await;
    let mut options = hub.device_options("dev-1");
    options.set_last_will(will("things/dev-1/status", "offline"));
    let dev = Client::connect(options).await.unwrap();
    dev.publish("things/dev-1/status", "online", true).await;
    hub.expect(|e| matches!(e, DeviceEvent::Hello { .. }).then_some(()))
        .await;
    dev.kill().await;
    hub.expect(|e| {
        matches!(e, DeviceEvent::Offline { thing } if thing.as_str() == "dev-1").then_some(())
    })
    .await;
    hub.expect_quiet(200).await;
    assert_eq!(hub.gateway.stats().wills_published, 1);

    // The retained status now says offline.
    let mut again = Client::connect(hub.device_options("dev-1")).await.unwrap();
    again.subscribe("things/dev-1/status").await;
    let (_, payload, retain) = again.next_publish().await;
    assert_eq!((payload.as_slice(), retain), (&b"offline"[..], true));
}

#[tokio::test]
async fn a_device_that_vanishes_without_a_will_still_goes_offline() {
    let mut hub = start().await;
    let dev = Client::connect(hub.device_options("dev-2")).await.unwrap();
    dev.publish("things/dev-2/status", "online", true).await;
    hub.expect(|e| matches!(e, DeviceEvent::Hello { .. }).then_some(()))
        .await;
    dev.kill().await;
    hub.expect(|e| matches!(e, DeviceEvent::Offline { .. }).then_some(()))
        .await;
    let mut again = Client::connect(hub.device_options("dev-2")).await.unwrap();
    again.subscribe("things/dev-2/status").await;
    let (_, payload, _) = again.next_publish().await;
    assert_eq!(
        payload, b"offline",
        "the gateway said it in the device's place"
    );
}

#[tokio::test]
async fn logins_are_checked_and_refusals_get_a_connack() {
    let hub = start_with(|c| c.require_auth = Some(true)).await;
    let mut wrong = hub.options("x");
    wrong.set_credentials("dev-1", "nope");
    let err = Client::connect(wrong).await.err().unwrap();
    assert!(err.contains("BadUserNamePassword"), "{err}");
    let mut unknown = hub.options("x");
    unknown.set_credentials("ghost", "whatever");
    assert!(Client::connect(unknown).await.is_err());
    let err = Client::connect(hub.options("anon")).await.err().unwrap();
    assert!(err.contains("NotAuthorized"), "{err}");
    Client::connect(hub.device_options("dev-1")).await.unwrap();
    assert_eq!(hub.gateway.stats().connections_refused_auth, 3);
}

#[tokio::test]
async fn acl_refuses_foreign_topics_and_keeps_the_device_connected() {
    let mut hub = start().await;
    hub.register("plug-1", "tasmota_plug", Some("kitchen"));
    let mut dev = Client::connect(hub.device_options("dev-1")).await.unwrap();

    // Publishing as another thing: acknowledged, dropped, counted.
    dev.publish_acked("things/dev-2/state", r#"{"on": true}"#)
        .await;
    dev.publish_acked("cmnd/kitchen/POWER", "ON").await;
    dev.publish_acked("$SYS/x", "1").await;
    // Subscribing over other things: refused whole.
    for filter in [
        "things/#",
        "things/+/state",
        "things/dev-2/desired",
        "#",
        "cmnd/+/POWER",
    ] {
        assert_eq!(
            dev.subscribe(filter).await,
            [SubscribeReasonCode::Failure],
            "{filter}"
        );
    }
    let stats = hub.gateway.stats();
    assert_eq!(
        (stats.acl_denied_publish, stats.acl_denied_subscribe),
        (3, 5)
    );

    // A watcher on another thing's topics sees nothing of the refused publish.
    let mut victim = Client::connect(hub.device_options("dev-2")).await.unwrap();
    victim.subscribe("things/dev-2/#").await;
    dev.publish_acked("things/dev-2/desired", r#"{"on": true}"#)
        .await;

    // The device is still connected and its own topics work.
    dev.publish("things/dev-1/state", r#"{"x": 1}"#, false)
        .await;
    let thing = hub
        .expect(|e| match e {
            DeviceEvent::Reported { thing, .. } => Some(thing.clone()),
            _ => None,
        })
        .await;
    assert_eq!(thing.as_str(), "dev-1");
    assert!(
        tokio::time::timeout(Duration::from_millis(200), victim.next_publish())
            .await
            .is_err()
    );

    // An anonymous client may not take a thing's identity that holds a secret.
    let mut anon = Client::connect(hub.options("dev-1")).await.unwrap();
    anon.publish_acked("things/dev-1/state", r#"{"x": 2}"#)
        .await;
    assert_eq!(hub.gateway.stats().acl_denied_publish, 5);

    // A will on a foreign topic refuses the connection.
    let mut options = hub.device_options("dev-1");
    options.set_last_will(will("things/dev-2/status", "offline"));
    let err = Client::connect(options).await.err().unwrap();
    assert!(err.contains("NotAuthorized"), "{err}");
}

#[tokio::test]
async fn tasmota_binding_maps_firmware_topics() {
    let mut hub = start().await;
    hub.register("plug-1", "tasmota_plug", Some("kitchen"));
    let mut options = hub.device_options("plug-1");
    options.set_last_will(will("tele/kitchen/LWT", "Offline"));
    let mut plug = Client::connect(options).await.unwrap();
    plug.subscribe("cmnd/kitchen/#").await;
    plug.publish("tele/kitchen/LWT", "Online", true).await;
    let hint = hub
        .expect(|e| match e {
            DeviceEvent::Hello { type_hint, .. } => Some(type_hint.clone()),
            _ => None,
        })
        .await;
    assert_eq!(hint.as_deref(), Some("tasmota_plug"));

    plug.publish(
        "tele/kitchen/SENSOR",
        r#"{"Time":"2026-01-01T00:00:00","AM2301":{"Temperature":21.5,"Humidity":40.2},"TempUnit":"C"}"#,
        false,
    )
    .await;
    let values = hub
        .expect(|e| match e {
            DeviceEvent::Reported { values, .. } => Some(values.clone()),
            _ => None,
        })
        .await;
    assert_eq!(
        Value::Object(values),
        json!({"temperature": 21.5, "humidity": 40.2})
    );

    // An action goes out on cmnd/, the answer on stat/ resolves it and reports the state.
    hub.command(DeviceCommand::InvokeAction {
        thing: id("plug-1"),
        action: "toggle".into(),
        input: Value::Null,
        correlation: "t-1".into(),
        deadline_ms: far_deadline(),
    })
    .await;
    let (topic, payload, _) = plug.next_publish().await;
    assert_eq!(
        (topic.as_str(), payload.as_slice()),
        ("cmnd/kitchen/POWER", &b"TOGGLE"[..])
    );
    plug.publish("stat/kitchen/POWER", "ON", false).await;
    let values = hub
        .expect(|e| match e {
            DeviceEvent::Reported { values, .. } => Some(values.clone()),
            _ => None,
        })
        .await;
    assert_eq!(values["on"], true);
    let (correlation, outcome) = hub
        .expect(|e| match e {
            DeviceEvent::ActionReply {
                correlation,
                outcome,
                ..
            } => Some((correlation.clone(), outcome.clone())),
            _ => None,
        })
        .await;
    assert_eq!((correlation.as_str(), outcome), ("t-1", Ok(json!(true))));

    // Desired state goes out as the firmware's own command.
    hub.command(DeviceCommand::SetDesired {
        thing: id("plug-1"),
        values: json!({"on": false}).as_object().unwrap().clone(),
    })
    .await;
    let (topic, payload, _) = plug.next_publish().await;
    assert_eq!(
        (topic.as_str(), payload.as_slice()),
        ("cmnd/kitchen/POWER", &b"OFF"[..])
    );

    // A value outside the binding's map is rejected; the LWT will says offline.
    plug.publish("stat/kitchen/POWER", "MAYBE", false).await;
    until_stats(&hub, |s| s.rejected_payloads == 1).await;
    plug.kill().await;
    hub.expect(|e| matches!(e, DeviceEvent::Offline { .. }).then_some(()))
        .await;
}

#[tokio::test]
async fn raw_bridge_both_ways_without_loops() {
    let mut hub = start().await;
    // Raw messages go to the bridge's own queue, not to the things service.
    let mut raw = hub
        .gateway
        .take_raw_messages()
        .expect("the raw bridge is on");
    assert!(hub.gateway.take_raw_messages().is_none(), "taken once");
    let mut watcher = Client::connect(hub.options("watcher")).await.unwrap();
    watcher.subscribe("sensors/#").await;
    let sensor = Client::connect(hub.options("sensor")).await.unwrap();
    sensor.publish("sensors/room/t", "21.5", false).await;
    let (source, payload) = tokio::time::timeout(harness::WAIT, raw.recv())
        .await
        .expect("a raw message")
        .expect("the raw queue is open");
    assert_eq!(
        (source.as_str(), &payload[..]),
        ("mqtt:sensors/room/t", &b"21.5"[..])
    );
    assert_eq!(watcher.next_publish().await.0, "sensors/room/t");

    // WAMP → MQTT: delivered to subscribers, never bridged back.
    hub.gateway
        .publish_raw("sensors/out", Bytes::from_static(b"from-wamp"), false)
        .await
        .unwrap();
    let (topic, payload, _) = watcher.next_publish().await;
    assert_eq!(
        (topic.as_str(), payload.as_slice()),
        ("sensors/out", &b"from-wamp"[..])
    );
    hub.expect_quiet(300).await;
    let stats = hub.gateway.stats();
    assert_eq!((stats.raw_in, stats.raw_out), (1, 1));

    // Retained raw messages reach late subscribers.
    hub.gateway
        .publish_raw("sensors/config", Bytes::from_static(b"v1"), true)
        .await
        .unwrap();
    let mut late = Client::connect(hub.options("late")).await.unwrap();
    late.subscribe("sensors/config").await;
    let (_, payload, retain) = late.next_publish().await;
    assert_eq!((payload.as_slice(), retain), (&b"v1"[..], true));

    // The bridge refuses thing topics and wildcards.
    assert_eq!(
        hub.gateway
            .publish_raw("things/dev-1/desired", Bytes::new(), false)
            .await,
        Err(PublishError::ThingTopic("things/dev-1/desired".into()))
    );
    assert!(matches!(
        hub.gateway.publish_raw("a/+", Bytes::new(), false).await,
        Err(PublishError::InvalidTopic(_))
    ));
}

#[tokio::test]
async fn qos1_commands_reach_an_offline_persistent_session_on_reconnect() {
    let hub = start().await;
    let mut options = hub.device_options("dev-p");
    options.set_clean_session(false);
    let mut dev = Client::connect(options.clone()).await.unwrap();
    dev.subscribe("things/dev-p/actions/+").await;
    dev.disconnect().await;
    until_stats(&hub, |s| s.connections_open == 0).await;

    hub.command(DeviceCommand::InvokeAction {
        thing: id("dev-p"),
        action: "reboot".into(),
        input: Value::Null,
        correlation: "p-1".into(),
        deadline_ms: far_deadline(),
    })
    .await;
    until_stats(&hub, |s| s.commands == 1).await;

    // A different client id: the session belongs to the thing, not to the client id.
    options.set_client_id("another-client-id".into());
    let (client, mut eventloop) = rumqttc::AsyncClient::new(options, 16);
    let mut present = None;
    let mut got = None;
    let _ = tokio::time::timeout(harness::WAIT, async {
        loop {
            match eventloop.poll().await {
                Ok(rumqttc::Event::Incoming(Packet::ConnAck(ack))) => {
                    present = Some(ack.session_present)
                }
                Ok(rumqttc::Event::Incoming(Packet::Publish(p))) => {
                    got = Some((p.topic.clone(), p.qos));
                    break;
                }
                Ok(_) => {}
                Err(e) => panic!("{e}"),
            }
        }
    })
    .await;
    drop(client);
    assert_eq!(present, Some(true));
    assert_eq!(
        got,
        Some(("things/dev-p/actions/reboot".to_owned(), QoS::AtLeastOnce))
    );
}

#[tokio::test]
async fn bad_payloads_are_counted_not_fatal() {
    let mut hub = start_with(|c| c.max_message_bytes = 1024).await;
    hub.register("dev-1", "boiler", None);
    let dev = Client::connect(hub.device_options("dev-1")).await.unwrap();
    let bad: [&[u8]; 6] = [
        b"not json",
        br#"[1, 2]"#,
        br#"{"temperature": "warm"}"#,
        br#"{"temperature": 200}"#,
        br#"{"no_such_property": 1}"#,
        &[b' '; 2000],
    ];
    for payload in bad {
        dev.publish("things/dev-1/state", payload, false).await;
    }
    dev.publish("things/dev-1/events/nope", "{}", false).await;
    dev.publish("things/dev-1/status", "sleepy", false).await;
    dev.publish("things/dev-1/whatever", "{}", false).await;
    // Not JSON, not an object, too large, a bad status, an unknown topic: refused here. Values
    // that break the type (and the undefined event) are the hub's to refuse: passed on.
    until_stats(&hub, |s| s.rejected_payloads == 5).await;
    // Still connected, still heard.
    dev.publish("things/dev-1/state", r#"{"temperature": 20}"#, false)
        .await;
    let values = hub
        .expect(|e| match e {
            DeviceEvent::Reported { values, .. }
                if values.get("temperature") == Some(&json!(20)) =>
            {
                Some(values.clone())
            }
            _ => None,
        })
        .await;
    assert_eq!(values["temperature"], 20);
    assert_eq!(hub.gateway.stats().connections_open, 1);
}

#[tokio::test]
async fn flapping_and_broken_clients_leak_nothing() {
    let hub = start().await;
    for i in 0..40 {
        let c = Client::connect(hub.options(&format!("flap-{i}")))
            .await
            .unwrap();
        if i % 2 == 0 {
            c.disconnect().await;
        } else {
            c.kill().await;
        }
    }
    // Garbage, a CONNACK from a client, an MQTT 3.1 CONNECT, and silence.
    let addr = hub.gateway.local_addr();
    for bytes in [
        &b"GET / HTTP/1.1\r\n\r\n"[..],
        &[0x20, 2, 0, 0][..],
        &[
            0x10, 0x0c, 0, 6, b'M', b'Q', b'I', b's', b'd', b'p', 3, 2, 0, 60,
        ][..],
    ] {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(bytes).await.unwrap();
        let mut buf = [0u8; 8];
        let n = tokio::time::timeout(harness::WAIT, s.read(&mut buf))
            .await
            .unwrap()
            .unwrap_or(0);
        if bytes[0] == 0x10 {
            assert_eq!(
                &buf[..n],
                &[0x20, 2, 0, 1],
                "3.1.1 CONNACK: unacceptable version"
            );
        } else {
            assert_eq!(n, 0, "closed");
        }
    }
    // A v5 client that sends a packet type only servers send is closed, not panicking anything.
    let mut v5 = tokio::net::TcpStream::connect(addr).await.unwrap();
    v5.write_all(&[
        0x10, 14, 0, 4, b'M', b'Q', b'T', b'T', 5, 2, 0, 60, 0, 0, 1, b'z',
    ])
    .await
    .unwrap();
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(harness::WAIT, v5.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(buf[0], 0x20, "CONNACK first");
    assert!(n >= 4);
    v5.write_all(&[0xb0, 2, 0, 1]).await.unwrap(); // UNSUBACK
    let rest = tokio::time::timeout(harness::WAIT, v5.read(&mut buf)).await;
    assert!(matches!(rest, Ok(Ok(_))), "closed or answered, not hung");

    until_stats(&hub, |s| s.connections_open == 0).await;
    // Still serving.
    Client::connect(hub.options("after")).await.unwrap();
}

#[tokio::test]
async fn shutdown_closes_connections() {
    let hub = start().await;
    let mut dev = Client::connect(hub.device_options("dev-1")).await.unwrap();
    let addr = hub.gateway.local_addr();
    hub.gateway.shutdown().await;
    let ended = tokio::time::timeout(harness::WAIT, async {
        loop {
            match dev.incoming.recv().await {
                Some(Err(_)) | None => return,
                Some(Ok(_)) => {}
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "client saw the connection end");
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

#[tokio::test]
async fn mqtt5_clients_get_reason_codes_and_limits() {
    use rumqttc::v5::mqttbytes::QoS as Qos5;
    use rumqttc::v5::mqttbytes::v5::{Packet as P5, PubAckReason, SubscribeReasonCode as Sub5};
    use rumqttc::v5::{AsyncClient, Event, MqttOptions};

    let mut hub = start().await;
    let mut options = MqttOptions::new("c5", "127.0.0.1", hub.port());
    options.set_credentials("dev-1", "secret-dev-1");
    options.set_keep_alive(Duration::from_secs(5));
    let (client, mut eventloop) = AsyncClient::new(options, 16);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        while let Ok(event) = eventloop.poll().await {
            if let Event::Incoming(p) = event
                && tx.send(p).is_err()
            {
                return;
            }
        }
    });
    let mut next = async || {
        tokio::time::timeout(harness::WAIT, rx.recv())
            .await
            .unwrap()
            .unwrap()
    };
    let P5::ConnAck(ack) = next().await else {
        panic!("no CONNACK")
    };
    let props = ack.properties.unwrap();
    assert_eq!(props.max_packet_size, Some(256 * 1024));
    assert_eq!(props.topic_alias_max, Some(0));

    client
        .subscribe("things/#", Qos5::AtLeastOnce)
        .await
        .unwrap();
    let P5::SubAck(sub) = next().await else {
        panic!("no SUBACK")
    };
    assert_eq!(sub.return_codes, [Sub5::NotAuthorized]);

    client
        .publish("things/dev-2/state", Qos5::AtLeastOnce, false, "{}")
        .await
        .unwrap();
    let P5::PubAck(refused) = next().await else {
        panic!("no PUBACK")
    };
    assert_eq!(refused.reason, PubAckReason::NotAuthorized);

    client
        .publish(
            "things/dev-1/state",
            Qos5::ExactlyOnce,
            false,
            r#"{"t": 1}"#,
        )
        .await
        .unwrap();
    hub.expect(|e| matches!(e, DeviceEvent::Reported { .. }).then_some(()))
        .await;
    task.abort();
}

#[tokio::test]
async fn publishes_nobody_subscribed_to_skip_the_router_and_are_still_acked() {
    let mut hub = start().await;
    hub.register("dev-1", "boiler", None);
    let mut dev = Client::connect(hub.device_options("dev-1")).await.unwrap();

    // No MQTT subscriber: the hub still gets the state, the QoS 1 PUBACK comes from the
    // connection task, and the router never sees the message.
    dev.publish_acked("things/dev-1/state", r#"{"temperature": 20}"#)
        .await;
    hub.expect(|e| matches!(e, DeviceEvent::Reported { .. }).then_some(()))
        .await;
    assert_eq!(hub.gateway.stats().unrouted, 1);

    // Once a client subscribes (here through a wildcard), messages go through the router again
    // and reach it.
    let mut sensor = Client::connect(hub.options("sensor")).await.unwrap();
    sensor.publish_acked("sensors/room/t", "20.5").await;
    until_stats(&hub, |s| s.unrouted == 2).await;
    let mut watcher = Client::connect(hub.options("watcher")).await.unwrap();
    assert_eq!(
        watcher.subscribe("sensors/+/t").await,
        [SubscribeReasonCode::Success(QoS::AtLeastOnce)]
    );
    sensor.publish_acked("sensors/room/t", "21.5").await;
    let (topic, payload, _) = watcher.next_publish().await;
    assert_eq!(
        (topic.as_str(), payload.as_slice()),
        ("sensors/room/t", &b"21.5"[..])
    );
    assert_eq!(hub.gateway.stats().unrouted, 2);

    // Retained messages always reach the router, which keeps them for later subscribers.
    sensor.publish("sensors/config", "v1", true).await;
    let mut late = Client::connect(hub.options("late")).await.unwrap();
    late.subscribe("sensors/config").await;
    let (_, payload, retain) = late.next_publish().await;
    assert_eq!((payload.as_slice(), retain), (&b"v1"[..], true));

    // After an unsubscribe, and once a clean session is gone, its filters no longer count.
    watcher.client.unsubscribe("sensors/+/t").await.unwrap();
    watcher
        .expect(|p| matches!(p, Packet::UnsubAck(_)).then_some(()))
        .await;
    sensor.publish_acked("sensors/room/t", "22.5").await;
    until_stats(&hub, |s| s.unrouted == 3).await;
    late.disconnect().await;
    sensor.publish_acked("sensors/config", "v2").await;
    until_stats(&hub, |s| s.unrouted == 4).await;
    // The raw bridge got every one of them.
    assert_eq!(hub.gateway.stats().raw_in, 5);
}

/// A QoS 1 PUBACK goes out only once the hub has committed what the PUBLISH said; when the hub
/// cannot write it, an MQTT 3.1.1 client (which has no negative ack) is disconnected unacked,
/// so it sends the message again.
#[tokio::test]
async fn a_puback_waits_for_the_commit_and_a_failed_write_is_not_acked() {
    let mut hub = harness::start_paused(|_| {}).await;
    hub.register("dev-1", "temperature_sensor", None);
    let mut raw = std::mem::replace(
        &mut hub.ends.events,
        gateways::link::StandInEvents::new(tokio::sync::mpsc::channel(1).1),
    )
    .into_inner();
    let mut dev = Client::connect(hub.device_options("dev-1")).await.unwrap();
    dev.publish("things/dev-1/state", r#"{"temperature": 20.5}"#, false)
        .await;
    let barrier = next_barrier(&mut raw).await;
    let early = tokio::time::timeout(Duration::from_millis(300), dev.incoming.recv()).await;
    assert!(early.is_err(), "acknowledged before the commit: {early:?}");
    barrier.answer(Ok(()));
    dev.expect(|p| matches!(p, rumqttc::Packet::PubAck(_)).then_some(()))
        .await;

    dev.publish("things/dev-1/state", r#"{"temperature": 21.5}"#, false)
        .await;
    let barrier = next_barrier(&mut raw).await;
    barrier.answer(Err(device_models::CommitError::WriteFailed));
    let end = tokio::time::timeout(harness::WAIT, async {
        loop {
            match dev.incoming.recv().await {
                Some(Ok(rumqttc::Packet::PubAck(_))) => return "acked",
                Some(Ok(_)) => {}
                Some(Err(_)) | None => return "disconnected",
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(end, "disconnected");
}

/// The next barrier the gateway sends, skipping the events before it.
async fn next_barrier(raw: &mut tokio::sync::mpsc::Receiver<DeviceEvent>) -> device_models::Commit {
    loop {
        let event = tokio::time::timeout(harness::WAIT, raw.recv()).await;
        match event.unwrap().unwrap() {
            DeviceEvent::Barrier(c) => return c,
            DeviceEvent::Batch(batch) => {
                if let Some((c, _)) = batch.covered {
                    return c;
                }
            }
            _ => {}
        }
    }
}

#[tokio::test]
async fn no_new_connection_while_the_hub_is_over_its_memory_budget() {
    let memory = device_models::MemoryPressure::new();
    let mut hub = harness::start_under(memory.clone(), |_| {}).await;
    hub.register("dev-1", "boiler", None);
    let kept = Client::connect(hub.device_options("dev-1")).await.unwrap();
    memory.set_over(true);
    let refused = Client::connect(hub.device_options("dev-2")).await;
    assert!(refused.is_err(), "refused while over the budget");
    until_stats(&hub, |s| s.connections_refused_memory == 1).await;
    assert_eq!(memory.refused_connections(), 1);
    // The device already connected is still served.
    kept.publish("things/dev-1/state", r#"{"temperature": 21.5}"#, false)
        .await;
    hub.expect(|e| matches!(e, DeviceEvent::Reported { .. }).then_some(()))
        .await;
    memory.set_over(false);
    Client::connect(hub.device_options("dev-2")).await.unwrap();
}

/// A thing device that keeps to its own topics costs no link into the MQTT router (about
/// 30 KiB each); it takes one at its first filter outside them, and everything keeps working.
#[tokio::test]
async fn a_thing_device_on_its_own_topics_holds_no_router_link() {
    let mut hub = start().await;
    hub.register("dev-1", "boiler", None);
    let mut dev = Client::connect(hub.device_options("dev-1")).await.unwrap();
    dev.subscribe("things/dev-1/desired").await;
    dev.subscribe("things/dev-1/actions/+").await;
    dev.publish("things/dev-1/state", r#"{"temperature": 20.5}"#, false)
        .await;
    hub.expect(|e| matches!(e, DeviceEvent::Reported { .. }).then_some(()))
        .await;
    assert_eq!(hub.gateway.stats().linked, 0);

    // What the hub sends the thing reaches it without the router.
    hub.command(DeviceCommand::SetDesired {
        thing: id("dev-1"),
        values: json!({"setpoint": 21.0}).as_object().unwrap().clone(),
    })
    .await;
    let (topic, payload, _) = dev.next_publish().await;
    assert_eq!(topic, "things/dev-1/desired");
    assert_eq!(
        serde_json::from_slice::<Value>(&payload).unwrap(),
        json!({"setpoint": 21.0})
    );
    // A second connection of the same thing takes over and gets the retained value.
    let mut again = Client::connect(hub.device_options("dev-1")).await.unwrap();
    again.subscribe("things/dev-1/desired").await;
    let (_, payload, retain) = again.next_publish().await;
    assert!(retain);
    assert_eq!(
        serde_json::from_slice::<Value>(&payload).unwrap(),
        json!({"setpoint": 21.0})
    );
    assert_eq!(hub.gateway.stats().linked, 0);

    // A filter in the open namespace needs the router: the connection takes a link.
    again.subscribe("sensors/#").await;
    assert_eq!(hub.gateway.stats().linked, 1);
    let sensor = Client::connect(hub.options("sensor")).await.unwrap();
    sensor.publish("sensors/a", "1", false).await;
    assert_eq!(again.next_publish().await.0, "sensors/a");
}

/// A deleted thing's retained desired state goes with it: a new thing of the same id is not
/// handed the old one's settings.
#[tokio::test]
async fn a_deleted_things_retained_desired_state_is_cleared() {
    let hub = start().await;
    hub.register("dev-1", "boiler", None);
    hub.command(DeviceCommand::SetDesired {
        thing: id("dev-1"),
        values: json!({"setpoint": 30.0}).as_object().unwrap().clone(),
    })
    .await;
    until_stats(&hub, |s| s.commands == 1).await;
    hub.gateway.unregister(&id("dev-1"));
    hub.register("dev-1", "boiler", None);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut dev = Client::connect(hub.device_options("dev-1")).await.unwrap();
    dev.subscribe("things/dev-1/#").await;
    // Anything retained would come right after the SUBACK, before this.
    hub.command(DeviceCommand::InvokeAction {
        thing: id("dev-1"),
        action: "boost".into(),
        input: Value::Null,
        correlation: "c-1".into(),
        deadline_ms: device_models::now_ms() + 10_000,
    })
    .await;
    let (topic, _, _) = dev.next_publish().await;
    assert_eq!(
        topic, "things/dev-1/actions/boost",
        "no retained desired state left"
    );
}
