//! Simulated UDP, TCP and serial devices (firmware-sim) against raw listeners on real sockets and
//! pseudo-terminals: reports arrive as scaled values, commands reach the device and its answers
//! come back as action replies, presence follows the device, and a serial device that is unplugged
//! and plugged back is picked up again. What a listener takes in one turn (datagrams, or frames
//! from several connections) reaches the hub as one batch.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::io::Write as _;
use std::sync::Arc;
use std::time::Duration;

use device_models::{DeviceEvent, TypeCatalog};
use firmware_sim::raw::beacon::{Beacon, BeaconConfig, Reading};
use firmware_sim::raw::meter::{MeterBus, MeterNode};
use firmware_sim::raw::pty::PtyPort;
use firmware_sim::raw::thermostat::{State, Thermostat, ThermostatConfig};
use gateways::raw::{self, RawConfig, RawListener, SerialConfig, TcpConfig, UdpConfig};
use gateways::{GatewayIo, StaticCredentials};
use serde_json::{Value, json};
use support::{Gateway, PATIENCE, catalog, catalog_with, init_logging};
use tokio::sync::mpsc;
use tokio_util::sync::{CancellationToken, DropGuard};

fn is_hello(event: &DeviceEvent, thing: &str, type_id: &str) -> bool {
    matches!(event, DeviceEvent::Hello { thing: t, type_hint: Some(h), .. } if t.as_str() == thing && h == type_id)
}

#[tokio::test]
async fn raw_udp_beacon_reports_scaled_values_answers_identify_and_goes_offline() {
    let mut config = UdpConfig::new("127.0.0.1:0", "udp_beacon");
    config.offline_after_secs = 1;
    let mut gw = Gateway::start(
        RawConfig {
            udp: vec![config],
            ..RawConfig::default()
        },
        &catalog(),
    )
    .await;
    let beacon = Beacon::spawn(BeaconConfig {
        id: 258,
        hub: gw.addr(),
        interval: Duration::from_millis(100),
        reading: Reading {
            temperature: 23.45,
            humidity: 61,
            battery: 87,
            charging: true,
        },
    })
    .await
    .unwrap();
    let hello = gw.next().await;
    assert!(is_hello(&hello, "beacon-258", "udp_beacon"), "{hello:?}");
    let values = gw.reported("beacon-258", |_| true).await;
    assert_eq!(
        Value::Object(values),
        json!({"temperature": 23.45, "humidity": 61, "battery": 87, "charging": 1})
    );

    gw.invoke("beacon-258", "identify", json!({"seconds": 3}), "c1", 5_000)
        .await;
    assert_eq!(gw.action_reply("c1").await, Ok(Value::Null));
    assert_eq!(
        beacon
            .stats()
            .identified
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    assert_eq!(
        beacon
            .stats()
            .last_identify_seconds
            .load(std::sync::atomic::Ordering::Relaxed),
        3
    );

    // A changed reading arrives as such.
    beacon.set_reading(Reading {
        temperature: -5.5,
        humidity: 30,
        battery: 12,
        charging: false,
    });
    gw.reported("beacon-258", |v| {
        v["temperature"] == -5.5 && v["charging"] == 0
    })
    .await;

    drop(beacon);
    gw.wait_for(
        "offline",
        |e| matches!(e, DeviceEvent::Offline { thing } if thing.as_str() == "beacon-258"),
    )
    .await;
    let stats = gw.stats();
    assert_eq!((stats.replies, stats.commands_sent), (1, 1));
}

/// device-models' example beacon binding, as it is: reports only, no sequence byte.
fn example_beacon_type() -> String {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../device-models/tests/data/frames/udp_beacon.toml"
    );
    let binding = std::fs::read_to_string(path).unwrap();
    format!(
        r#"
id = "example_beacon"
title = "Example beacon"
version = "1"
[properties.temperature]
type = "number"
[properties.humidity]
type = "integer"
[properties.battery]
type = "integer"
[properties.charging]
type = "integer"
{binding}"#
    )
}

#[tokio::test]
async fn raw_udp_example_binding_decodes_the_documented_datagram() {
    let catalog = catalog_with(&example_beacon_type());
    let mut gw = Gateway::start(
        RawConfig {
            udp: vec![UdpConfig::new("127.0.0.1:0", "example_beacon")],
            ..RawConfig::default()
        },
        &catalog,
    )
    .await;
    let device = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let payload = [0x01, 0x02, 0x09, 0x29, 61, 0x80 | 87];
    let mut datagram = payload.to_vec();
    datagram.push(device_models::frames::xor8(&payload));
    device.send_to(&datagram, gw.addr()).await.unwrap();
    let values = gw.reported("beacon-258", |_| true).await;
    assert_eq!(
        Value::Object(values),
        json!({"temperature": 23.45, "humidity": 61, "battery": 87, "charging": 1})
    );
    // It takes no commands: the action is refused at once.
    gw.invoke("beacon-258", "identify", Value::Null, "x", 5_000)
        .await;
    let refused = gw.action_reply("x").await.unwrap_err();
    assert!(refused.contains("cannot encode"), "{refused}");
}

const PROBE: &str = r#"
id = "probe"
title = "Probe without id"
version = "1"
[properties.t]
type = "number"
[bindings.frame]
framing = { kind = "lines" }
layout = { kind = "key_value" }
"#;

#[tokio::test]
async fn raw_udp_peer_mapping_names_things_whose_frames_carry_no_id() {
    let device = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let stranger = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut config = UdpConfig::new("127.0.0.1:0", "probe");
    config.peers.insert(
        device.local_addr().unwrap().to_string(),
        "probe-7".to_owned(),
    );
    let mut gw = Gateway::start(
        RawConfig {
            udp: vec![config],
            ..RawConfig::default()
        },
        &catalog_with(PROBE),
    )
    .await;
    stranger.send_to(b"t=1\n", gw.addr()).await.unwrap();
    // Two lines in one datagram are two frames.
    device.send_to(b"t=21.5\nt=22\n", gw.addr()).await.unwrap();
    assert!(is_hello(&gw.next().await, "probe-7", "probe"));
    assert_eq!(gw.reported("probe-7", |_| true).await["t"], 21.5);
    assert_eq!(gw.reported("probe-7", |_| true).await["t"], 22);
    let stats = gw
        .stats_until("the stranger", |s| s.unidentified == 1)
        .await;
    assert_eq!(stats.frames, 2);
}

/// A listener whose events the test reads as sent, batches whole (the stand-in hub of
/// [`Gateway`] takes batches apart); it stops when the guard is dropped.
async fn start_batched(
    config: RawConfig,
    catalog: &TypeCatalog,
) -> (RawListener, mpsc::Receiver<DeviceEvent>, DropGuard) {
    init_logging();
    let mut prepared = config.prepare(catalog).unwrap();
    let listener = prepared.remove(0);
    let (io, hub) = GatewayIo::pair(listener.name(), 16, Arc::new(StaticCredentials::default()));
    let shutdown = CancellationToken::new();
    let listener = raw::start(listener, io, shutdown.clone()).await.unwrap();
    (listener, hub.events.into_inner(), shutdown.drop_guard())
}

/// The next event sent, which must be a batch with no barrier; its events.
async fn next_batch(events: &mut mpsc::Receiver<DeviceEvent>) -> Vec<DeviceEvent> {
    let event = tokio::time::timeout(PATIENCE, events.recv())
        .await
        .expect("an event in time")
        .expect("the listener is running");
    match event {
        DeviceEvent::Batch(batch) => {
            assert_eq!(batch.covered, None, "nothing to acknowledge");
            batch.events
        }
        other => panic!("not a batch: {other:?}"),
    }
}

/// The reports among `events`: thing and the value of `property`, in order.
fn reports(events: &[DeviceEvent], property: &str) -> Vec<(String, Value)> {
    events
        .iter()
        .filter_map(|e| match e {
            DeviceEvent::Reported { thing, values, .. } => {
                Some((thing.as_str().to_owned(), values[property].clone()))
            }
            _ => None,
        })
        .collect()
}

/// Datagrams already waiting when the listener's task first runs are all taken in its first
/// turn: the hub gets their events in one batch, in the order they were sent.
#[tokio::test]
async fn raw_udp_datagrams_waiting_together_reach_the_hub_as_one_batch() {
    let config = RawConfig {
        udp: vec![UdpConfig::new("127.0.0.1:0", "example_beacon")],
        ..RawConfig::default()
    };
    let (listener, mut events, _stop) =
        start_batched(config, &catalog_with(&example_beacon_type())).await;
    let hub = listener.local_addr().unwrap();
    // Blocking sends: this test does not yield before they are all in the listener's socket, so
    // its task has not read any of them yet.
    let devices: Vec<_> = (0..3)
        .map(|_| std::net::UdpSocket::bind("127.0.0.1:0").unwrap())
        .collect();
    let mut expected = Vec::new();
    for round in 0..2u8 {
        for (n, device) in (0u8..).zip(&devices) {
            let humidity = 10 * round + n;
            let payload = [0x01, n, 0x09, 0x29, humidity, 87];
            let mut datagram = payload.to_vec();
            datagram.push(device_models::frames::xor8(&payload));
            device.send_to(&datagram, hub).unwrap();
            expected.push((format!("beacon-{}", 256 + u16::from(n)), json!(humidity)));
        }
    }
    let batch = next_batch(&mut events).await;
    assert_eq!(reports(&batch, "humidity"), expected);
    for (thing, _) in &expected[..3] {
        assert!(
            batch.iter().any(|e| is_hello(e, thing, "example_beacon")),
            "{thing} greeted: {batch:?}"
        );
    }
    assert_eq!(batch.len(), 9, "three hellos and six reports: {batch:?}");
    assert_eq!(listener.stats().snapshot().frames, 6);
}

const LINE_PROBE: &str = r#"
id = "line_probe"
title = "Probe naming itself in each line"
version = "1"
[properties.t]
type = "integer"
[bindings.frame]
id_field = "id"
id_template = "probe-{}"
framing = { kind = "lines" }
layout = { kind = "key_value" }
"#;

/// Frames that two connections read at once are queued for the engine task together; it takes
/// them in one turn, and the hub gets their events in one batch.
#[tokio::test]
async fn raw_tcp_frames_from_two_connections_reach_the_hub_as_one_batch() {
    let config = RawConfig {
        tcp: vec![TcpConfig::new("127.0.0.1:0", "line_probe")],
        ..RawConfig::default()
    };
    let (listener, mut events, _stop) = start_batched(config, &catalog_with(LINE_PROBE)).await;
    let hub = listener.local_addr().unwrap();
    // Blocking: both connections are established (in the listen backlog) and their bytes sent
    // before the listener's tasks run.
    let mut first = std::net::TcpStream::connect(hub).unwrap();
    let mut second = std::net::TcpStream::connect(hub).unwrap();
    first.write_all(b"id=1;t=10\nid=1;t=11\n").unwrap();
    second.write_all(b"id=2;t=20\nid=2;t=21\n").unwrap();
    let batch = next_batch(&mut events).await;
    let mut reported = reports(&batch, "t");
    // Each connection's frames in order; the connections' tasks may run in either order.
    reported.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        reported,
        [
            ("probe-1".to_owned(), json!(10)),
            ("probe-1".to_owned(), json!(11)),
            ("probe-2".to_owned(), json!(20)),
            ("probe-2".to_owned(), json!(21)),
        ]
    );
    for thing in ["probe-1", "probe-2"] {
        assert!(
            batch.iter().any(|e| is_hello(e, thing, "line_probe")),
            "{thing} greeted: {batch:?}"
        );
    }
}

#[tokio::test]
async fn raw_tcp_thermostat_reports_answers_calibrate_and_confirms_set() {
    let mut gw = Gateway::start(
        RawConfig {
            tcp: vec![TcpConfig::new("127.0.0.1:0", "tcp_thermostat")],
            ..RawConfig::default()
        },
        &catalog(),
    )
    .await;
    let thermostat = Thermostat::connect(ThermostatConfig {
        id: "th-12".into(),
        hub: gw.addr(),
        interval: Duration::from_secs(60),
        state: State {
            temperature: 20.5,
            setpoint: 21.0,
            mode: "eco".into(),
        },
    })
    .await
    .unwrap();
    assert!(is_hello(&gw.next().await, "th-12", "tcp_thermostat"));
    let values = gw.reported("th-12", |_| true).await;
    assert_eq!(
        Value::Object(values),
        json!({"temperature": 20.5, "setpoint": 21.0, "mode": "eco"})
    );

    gw.invoke("th-12", "calibrate", json!({"offset": -0.5}), "cal", 5_000)
        .await;
    assert_eq!(gw.action_reply("cal").await, Ok(json!(true)));
    gw.reported("th-12", |v| v["temperature"] == 20.0).await;

    gw.set("th-12", json!({"setpoint": 22.5, "mode": "comfort"}))
        .await;
    gw.reported("th-12", |v| v["setpoint"] == 22.5 && v["mode"] == "comfort")
        .await;
    assert_eq!(thermostat.state().setpoint, 22.5);

    // The device refuses: its error comes back as the outcome.
    gw.invoke(
        "th-12",
        "calibrate",
        json!({"offset": "much"}),
        "bad",
        5_000,
    )
    .await;
    let refused = gw.action_reply("bad").await.unwrap_err();
    assert!(refused.contains("numeric offset"), "{refused}");

    drop(thermostat);
    gw.wait_for(
        "offline",
        |e| matches!(e, DeviceEvent::Offline { thing } if thing.as_str() == "th-12"),
    )
    .await;
    gw.invoke("th-12", "calibrate", json!({"offset": 1}), "gone", 5_000)
        .await;
    assert_eq!(
        gw.action_reply("gone").await,
        Err("the device is not connected".into())
    );

    // Shutdown ends the accept loop, the engine task and open connections.
    let _other = Thermostat::connect(ThermostatConfig {
        id: "th-13".into(),
        hub: gw.addr(),
        interval: Duration::from_secs(60),
        state: State::default(),
    })
    .await
    .unwrap();
    gw.reported("th-13", |_| true).await;
    gw.shut_down().await;
}

#[tokio::test]
async fn raw_serial_meter_reports_answers_and_is_picked_up_again_after_a_replug() {
    let dir = tempfile::tempdir().unwrap();
    let port = PtyPort::new(dir.path().join("ttyMETER"));
    let bus = MeterBus::spawn(
        port.plug().unwrap(),
        vec![MeterNode::new(3)],
        Some(Duration::from_millis(200)),
    )
    .unwrap();
    let mut config = SerialConfig::new(port.path().to_string_lossy(), "serial_meter");
    config.reopen_min_ms = 20;
    config.reopen_max_ms = 200;
    config.baud_rate = 115_200;
    let mut gw = Gateway::start(
        RawConfig {
            serial: vec![config],
            ..RawConfig::default()
        },
        &catalog(),
    )
    .await;
    assert!(is_hello(&gw.next().await, "meter-3", "serial_meter"));
    let values = gw.reported("meter-3", |_| true).await;
    assert_eq!(
        Value::Object(values),
        json!({"voltage": 230.1, "current": 1.25, "relay": true})
    );

    // Half duplex: the second poll and the set wait for the first answer; all are answered.
    gw.invoke("meter-3", "poll", Value::Null, "p1", 5_000).await;
    gw.invoke("meter-3", "poll", Value::Null, "p2", 5_000).await;
    gw.set("meter-3", json!({"relay": false})).await;
    let expected = json!({"voltage": 230.1, "current": 1.25, "relay": true});
    assert_eq!(gw.action_reply("p1").await, Ok(expected.clone()));
    assert_eq!(gw.action_reply("p2").await, Ok(expected));
    gw.reported("meter-3", |v| v["relay"] == false).await;
    assert!(!bus.nodes()[0].relay);

    // Unplugged: the port is lost, the meter goes offline, reopening fails for a while.
    drop(bus);
    port.unplug();
    gw.wait_for(
        "offline",
        |e| matches!(e, DeviceEvent::Offline { thing } if thing.as_str() == "meter-3"),
    )
    .await;
    gw.stats_until("failed reopens", |s| s.port_failures >= 3)
        .await;

    // Plugged back (a new pty behind the same path): picked up again.
    let bus = MeterBus::spawn(
        port.plug().unwrap(),
        vec![MeterNode::new(3)],
        Some(Duration::from_millis(200)),
    )
    .unwrap();
    gw.wait_for(
        "online again",
        |e| matches!(e, DeviceEvent::Online { thing } if thing.as_str() == "meter-3"),
    )
    .await;
    gw.invoke("meter-3", "poll", Value::Null, "p3", 5_000).await;
    assert!(gw.action_reply("p3").await.is_ok());
    assert_eq!(gw.stats().port_opens, 2);
    drop(bus);
    port.unplug();
}
