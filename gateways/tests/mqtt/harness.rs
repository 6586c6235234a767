//! A gateway on port 0 with `GatewayIo::pair` standing in for the hub, and rumqttc clients.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use device_models::{DeviceCommand, DeviceEvent, ThingId, ThingType, TypeCatalog, TypeOrigin};
use gateways::link::HubEnds;
use gateways::mqtt::{MqttConfig, MqttGateway, MqttHandle};
use gateways::{GatewayIo, StaticCredentials};
use rumqttc::{AsyncClient, Event, LastWill, MqttOptions, Packet, QoS};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

pub const WAIT: Duration = Duration::from_secs(20);

pub struct Hub {
    pub gateway: MqttHandle,
    pub ends: HubEnds,
    pub catalog: TypeCatalog,
}

/// Secrets for `dev-1`, `dev-2`, `plug-1` and `dev-p`.
pub fn credentials() -> StaticCredentials {
    let mut m = HashMap::new();
    for id in ["dev-1", "dev-2", "plug-1", "dev-p"] {
        m.insert(id.to_owned(), format!("secret-{id}"));
    }
    StaticCredentials(m)
}

pub async fn start() -> Hub {
    start_with(|_| {}).await
}

/// A gateway whose stand-in hub takes every event and commits at once.
pub async fn start_with(edit: impl FnOnce(&mut MqttConfig)) -> Hub {
    let mut hub = start_paused(edit).await;
    let HubEnds { events, commands } = hub.ends;
    hub.ends = HubEnds {
        events: events.relay(256),
        commands,
    };
    hub
}

/// A gateway whose stand-in hub reads (and commits) only when the test reads an event.
pub async fn start_paused(edit: impl FnOnce(&mut MqttConfig)) -> Hub {
    start_under(device_models::MemoryPressure::default(), edit).await
}

/// Like [`start_paused`], under the memory budget flag `memory`.
pub async fn start_under(
    memory: device_models::MemoryPressure,
    edit: impl FnOnce(&mut MqttConfig),
) -> Hub {
    let mut config = MqttConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        ..MqttConfig::default()
    };
    edit(&mut config);
    let (io, ends) = GatewayIo::pair("mqtt", 256, Arc::new(credentials()));
    let io = io.with_memory(memory);
    let gateway = MqttGateway::start(config, io).await.unwrap();
    let mut catalog = TypeCatalog::builtin().unwrap();
    let boiler = ThingType::from_toml(BOILER, "boiler.toml").unwrap();
    catalog.insert(boiler, TypeOrigin::Builtin).unwrap();
    Hub {
        gateway,
        ends,
        catalog,
    }
}

/// A type with state, an action with input and output, and an event.
const BOILER: &str = r#"
id = "boiler"
title = "Boiler"
version = "1"

[properties.temperature]
type = "number"
minimum = -40
maximum = 85

[properties.setpoint]
type = "number"
minimum = 5
maximum = 35
writable = true

[properties.mode]
type = "string"
enum = ["off", "heat", "cool", "auto"]
writable = true

[properties.location]
type = "string"
kind = "info"
writable = true

[properties.firmware]
type = "string"
kind = "info"

[actions.boost]
input = { type = "object", properties = { minutes = { type = "integer", minimum = 1 } }, required = ["minutes"] }
output = { type = "boolean" }

[events.fault]
payload = { type = "object", properties = { code = { type = "integer" } } }
"#;

pub fn id(s: &str) -> ThingId {
    ThingId::new(s).unwrap()
}

impl Hub {
    pub fn port(&self) -> u16 {
        self.gateway.local_addr().port()
    }

    pub fn register(&self, thing: &str, type_id: &str, name: Option<&str>) {
        let ty = self.catalog.get(type_id).unwrap().clone();
        self.gateway
            .register(id(thing), ty, name.map(str::to_owned))
            .unwrap();
    }

    /// The next event that `pick` accepts, skipping others; panics after [`WAIT`].
    pub async fn expect<T>(&mut self, mut pick: impl FnMut(&DeviceEvent) -> Option<T>) -> T {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let event = tokio::time::timeout_at(deadline, self.ends.events.recv())
                .await
                .expect("timed out waiting for an event")
                .expect("events channel closed");
            if let Some(t) = pick(&event) {
                return t;
            }
        }
    }

    /// Asserts no event arrives for a short while (after everything before it was seen).
    pub async fn expect_quiet(&mut self, for_ms: u64) {
        if let Ok(Some(event)) =
            tokio::time::timeout(Duration::from_millis(for_ms), self.ends.events.recv()).await
        {
            panic!("unexpected event {event:?}");
        }
    }

    pub async fn command(&self, command: DeviceCommand) {
        self.ends.commands.send(command).await.unwrap();
    }

    pub fn options(&self, client_id: &str) -> MqttOptions {
        let mut o = MqttOptions::new(client_id, "127.0.0.1", self.port());
        o.set_keep_alive(Duration::from_secs(5));
        o
    }

    /// Options logged in as a thing with its secret.
    pub fn device_options(&self, thing: &str) -> MqttOptions {
        let mut o = self.options(&format!("client-{thing}"));
        o.set_credentials(thing, format!("secret-{thing}"));
        o
    }
}

/// A connected rumqttc client and what its event loop receives.
pub struct Client {
    pub client: AsyncClient,
    pub incoming: mpsc::UnboundedReceiver<Result<Packet, String>>,
    task: JoinHandle<()>,
}

impl Client {
    /// Connects and waits for the CONNACK; `Err` carries the event loop's error text.
    pub async fn connect(options: MqttOptions) -> Result<Client, String> {
        let (client, mut eventloop) = AsyncClient::new(options, 64);
        let (tx, mut incoming) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(p)) => {
                        if tx.send(Ok(p)).is_err() {
                            return;
                        }
                    }
                    Ok(Event::Outgoing(_)) => {}
                    Err(e) => {
                        let _ = tx.send(Err(e.to_string()));
                        return;
                    }
                }
            }
        });
        let first = tokio::time::timeout(WAIT, incoming.recv())
            .await
            .map_err(|_| "no CONNACK".to_owned())?
            .ok_or("event loop ended")?;
        match first {
            Ok(Packet::ConnAck(_)) => Ok(Client {
                client,
                incoming,
                task,
            }),
            Ok(other) => Err(format!("expected CONNACK, got {other:?}")),
            Err(e) => Err(e),
        }
    }

    /// The next packet `pick` accepts, skipping others.
    pub async fn expect<T>(&mut self, mut pick: impl FnMut(&Packet) -> Option<T>) -> T {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let p = tokio::time::timeout_at(deadline, self.incoming.recv())
                .await
                .expect("timed out waiting for a packet")
                .expect("event loop ended")
                .expect("connection failed");
            if let Some(t) = pick(&p) {
                return t;
            }
        }
    }

    /// The next PUBLISH: (topic, payload, retain).
    pub async fn next_publish(&mut self) -> (String, Vec<u8>, bool) {
        self.expect(|p| match p {
            Packet::Publish(p) => Some((p.topic.clone(), p.payload.to_vec(), p.retain)),
            _ => None,
        })
        .await
    }

    pub async fn subscribe(&mut self, filter: &str) -> Vec<rumqttc::SubscribeReasonCode> {
        self.client
            .subscribe(filter, QoS::AtLeastOnce)
            .await
            .unwrap();
        self.expect(|p| match p {
            Packet::SubAck(ack) => Some(ack.return_codes.clone()),
            _ => None,
        })
        .await
    }

    pub async fn publish(&self, topic: &str, payload: impl Into<Vec<u8>>, retain: bool) {
        self.client
            .publish(topic, QoS::AtLeastOnce, retain, payload.into())
            .await
            .unwrap();
    }

    /// Publishes at QoS 1 and waits for the PUBACK.
    pub async fn publish_acked(&mut self, topic: &str, payload: impl Into<Vec<u8>>) {
        self.publish(topic, payload, false).await;
        self.expect(|p| matches!(p, Packet::PubAck(_)).then_some(()))
            .await;
    }

    /// Sends DISCONNECT and waits for the event loop to finish.
    pub async fn disconnect(mut self) {
        let _ = self.client.disconnect().await;
        let _ = tokio::time::timeout(WAIT, &mut self.task).await;
    }

    /// Drops the TCP connection without DISCONNECT, as a crashed device would.
    pub async fn kill(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}

pub fn will(topic: &str, payload: &str) -> LastWill {
    LastWill::new(topic, payload.as_bytes().to_vec(), QoS::AtLeastOnce, true)
}
