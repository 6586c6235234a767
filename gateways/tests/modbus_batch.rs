//! A Modbus TCP bus polling firmware-sim's simulated meters on a real socket: the events of one
//! turn of the bus (a poll, the loss of the line) reach the hub in one batch.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use device_models::{DeviceEvent, ThingType, TypeCatalog, TypeOrigin};
use firmware_sim::modbus::{DeviceKind, SimBus};
use gateways::modbus::{self, DeviceConfig, ModbusConfig, TcpBusConfig};
use gateways::{GatewayIo, StaticCredentials};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

const PATIENCE: Duration = Duration::from_secs(20);

/// A meter whose values come in one read: a poll that answers completes its group.
const METER_PROBE: &str = r#"
id = "meter_probe"
title = "Meter read in one request"
version = "1"
[properties.voltage]
type = "number"
[properties.current]
type = "number"
[bindings.modbus]
poll_ms = 100
[bindings.modbus.properties]
voltage = { table = "input", address = 0, type = "f32" }
current = { table = "input", address = 2, type = "f32" }
"#;

async fn next(events: &mut mpsc::Receiver<DeviceEvent>) -> DeviceEvent {
    tokio::time::timeout(PATIENCE, events.recv())
        .await
        .expect("an event in time")
        .expect("the bus is running")
}

/// The things of `events` with what happened to them, e.g. `("meter-1", "online")`.
fn summary(events: &[DeviceEvent]) -> Vec<(String, &'static str)> {
    events
        .iter()
        .map(|e| {
            let what = match e {
                DeviceEvent::Online { .. } => "online",
                DeviceEvent::Offline { .. } => "offline",
                DeviceEvent::Reported { .. } => "reported",
                _ => "other",
            };
            let thing = e.thing().map(|t| t.as_str().to_owned()).unwrap_or_default();
            (thing, what)
        })
        .collect()
}

fn pairs(expected: &[(&str, &'static str)]) -> Vec<(String, &'static str)> {
    expected
        .iter()
        .map(|(t, w)| ((*t).to_owned(), *w))
        .collect()
}

#[tokio::test]
async fn a_polls_events_and_a_lost_lines_offlines_reach_the_hub_as_one_batch_each() {
    let shutdown = CancellationToken::new();
    let _stop = shutdown.clone().drop_guard();
    let sim = SimBus::new();
    sim.add(1, DeviceKind::Meter).unwrap();
    sim.add(2, DeviceKind::Meter).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = sim.serve_tcp(listener, shutdown.clone()).unwrap();
    let mut catalog = TypeCatalog::builtin().unwrap();
    let probe = ThingType::from_toml(METER_PROBE, "test type").unwrap();
    catalog.insert(probe, TypeOrigin::Builtin).unwrap();
    let mut bus: TcpBusConfig = toml::from_str(&format!(
        "address = '{}'\ntimeout_ms = 300\nbackoff_min_ms = 100\nbackoff_max_ms = 400\n",
        server.local_addr()
    ))
    .unwrap();
    bus.devices = (1..=2)
        .map(|unit| DeviceConfig {
            unit,
            thing: format!("meter-{unit}"),
            thing_type: "meter_probe".into(),
        })
        .collect();
    let config = ModbusConfig {
        tcp: vec![bus],
        ..ModbusConfig::default()
    };
    let mut prepared = config.prepare(&catalog).unwrap();
    let (io, hub) = GatewayIo::pair("modbus", 16, Arc::new(StaticCredentials::default()));
    let _bus = modbus::start(prepared.remove(0), io, shutdown.clone());
    let mut events = hub.events.into_inner();

    // A device's first answer: it comes online and reports, in one send.
    let mut greeted = Vec::new();
    while greeted.len() < 2 {
        match next(&mut events).await {
            DeviceEvent::Batch(batch) => {
                assert_eq!(batch.covered, None, "nothing to acknowledge");
                let thing = batch.events[0].thing().unwrap().as_str().to_owned();
                assert_eq!(
                    summary(&batch.events),
                    pairs(&[(&thing, "online"), (&thing, "reported")])
                );
                greeted.push(thing);
            }
            DeviceEvent::Reported { .. } => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    greeted.sort();
    assert_eq!(greeted, ["meter-1", "meter-2"]);

    // The line is lost: both devices go offline, in one send.
    server.unplug().await;
    let lost = loop {
        match next(&mut events).await {
            DeviceEvent::Reported { .. } => {}
            DeviceEvent::Batch(batch) => break batch,
            other => panic!("unexpected {other:?}"),
        }
    };
    assert_eq!(
        summary(&lost.events),
        pairs(&[("meter-1", "offline"), ("meter-2", "offline")])
    );
}
