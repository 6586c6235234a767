//! A simulated MQTT device against the real MQTT gateway: it announces itself, reports state,
//! applies desired values, answers actions, and its shutdown marks it offline.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use device_models::{DeviceCommand, DeviceEvent, ThingId, TypeCatalog};
use firmware_sim::mqtt::{DeviceConfig, FleetConfig, SimStats, run_device, run_fleet};
use gateways::mqtt::{MqttConfig, MqttGateway};
use gateways::{GatewayIo, StaticCredentials};
use serde_json::json;
use tokio_util::sync::CancellationToken;

async fn expect<T>(
    events: &mut gateways::link::StandInEvents,
    mut pick: impl FnMut(&DeviceEvent) -> Option<T>,
) -> T {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let e = tokio::time::timeout_at(deadline, events.recv())
            .await
            .expect("timed out")
            .expect("closed");
        if let Some(t) = pick(&e) {
            return t;
        }
    }
}

#[tokio::test]
async fn a_simulated_relay_follows_the_conventions() {
    let mut secrets = HashMap::new();
    secrets.insert("relay-1".to_owned(), "pw".to_owned());
    let (io, mut hub) = GatewayIo::pair("mqtt", 64, Arc::new(StaticCredentials(secrets)));
    let config = MqttConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        require_auth: Some(true),
        ..MqttConfig::default()
    };
    let gateway = MqttGateway::start(config, io).await.unwrap();
    let ty = TypeCatalog::builtin()
        .unwrap()
        .get("relay")
        .unwrap()
        .clone();
    let thing = ThingId::new("relay-1").unwrap();
    gateway.register(thing.clone(), ty.clone(), None).unwrap();

    let stop = CancellationToken::new();
    let stats = Arc::new(SimStats::default());
    let device = tokio::spawn(run_device(
        DeviceConfig {
            host: "127.0.0.1".into(),
            port: gateway.local_addr().port(),
            thing: thing.clone(),
            secret: Some("pw".into()),
            ty,
            report_every: Duration::from_millis(50),
            keep_alive: Duration::from_secs(5),
            clean_session: true,
            seed: 3,
        },
        stop.clone(),
        stats.clone(),
    ));

    let hint = expect(&mut hub.events, |e| match e {
        DeviceEvent::Hello { type_hint, .. } => Some(type_hint.clone()),
        _ => None,
    })
    .await;
    assert_eq!(hint.as_deref(), Some("relay"));
    expect(&mut hub.events, |e| {
        matches!(e, DeviceEvent::Reported { .. }).then_some(())
    })
    .await;

    hub.commands
        .send(DeviceCommand::InvokeAction {
            thing: thing.clone(),
            action: "on".into(),
            input: serde_json::Value::Null,
            correlation: "k1".into(),
            deadline_ms: u64::MAX / 2,
        })
        .await
        .unwrap();
    let outcome = expect(&mut hub.events, |e| match e {
        DeviceEvent::ActionReply { outcome, .. } => Some(outcome.clone()),
        _ => None,
    })
    .await;
    assert_eq!(outcome, Ok(json!(true)));

    hub.commands
        .send(DeviceCommand::SetDesired {
            thing: thing.clone(),
            values: json!({"on": false}).as_object().unwrap().clone(),
        })
        .await
        .unwrap();
    expect(&mut hub.events, |e| match e {
        DeviceEvent::Reported { values, .. } if values.get("on") == Some(&json!(false)) => Some(()),
        _ => None,
    })
    .await;

    stop.cancel();
    device.await.unwrap().unwrap();
    expect(&mut hub.events, |e| {
        matches!(e, DeviceEvent::Offline { .. }).then_some(())
    })
    .await;
    assert_eq!(gateway.stats().rejected_payloads, 0);
    assert!(stats.summary().contains("actions=1"));
    gateway.shutdown().await;
}

#[tokio::test]
async fn a_small_fleet_connects_anonymously_on_loopback() {
    let (io, mut hub) = GatewayIo::pair("mqtt", 256, Arc::new(StaticCredentials::default()));
    let config = MqttConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        ..MqttConfig::default()
    };
    let gateway = MqttGateway::start(config, io).await.unwrap();
    let ty = TypeCatalog::builtin()
        .unwrap()
        .get("temperature_sensor")
        .unwrap()
        .clone();
    let stop = CancellationToken::new();
    let fleet = tokio::spawn(run_fleet(
        FleetConfig {
            device: DeviceConfig {
                host: "127.0.0.1".into(),
                port: gateway.local_addr().port(),
                thing: ThingId::new("unused").unwrap(),
                secret: None,
                ty,
                report_every: Duration::from_millis(100),
                keep_alive: Duration::from_secs(5),
                clean_session: true,
                seed: 1,
            },
            count: 10,
            prefix: "ts".into(),
            ramp: Duration::ZERO,
        },
        stop.clone(),
    ));
    let mut seen = std::collections::HashSet::new();
    while seen.len() < 10 {
        let thing = expect(&mut hub.events, |e| match e {
            DeviceEvent::Reported { thing, .. } => Some(thing.clone()),
            _ => None,
        })
        .await;
        seen.insert(thing);
    }
    stop.cancel();
    let stats = fleet.await.unwrap().unwrap();
    assert!(
        stats.summary().contains("connects=10"),
        "{}",
        stats.summary()
    );
    gateway.shutdown().await;
}
