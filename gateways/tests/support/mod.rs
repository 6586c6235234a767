//! A raw listener started on real sockets with its hub ends, for driving simulated devices
//! against it and watching the events it produces.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use device_models::{DeviceCommand, DeviceEvent, ThingId, ThingType, TypeCatalog, TypeOrigin};
use gateways::link::HubEnds;
use gateways::raw::{self, PreparedListener, RawConfig, RawListener, StatsSnapshot};
use gateways::{GatewayIo, StaticCredentials};
use serde_json::{Map, Value};
use tokio_util::sync::{CancellationToken, DropGuard};

/// How long a test waits for one expected event.
pub const PATIENCE: Duration = Duration::from_secs(20);

/// Test logs (`RUST_LOG=gateways=debug` to see them).
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init();
}

/// The built-in types plus the simulated raw devices' types.
pub fn catalog() -> TypeCatalog {
    firmware_sim::raw::types::catalog().unwrap()
}

/// A catalog with one more type, from TOML.
pub fn catalog_with(type_toml: &str) -> TypeCatalog {
    let mut catalog = catalog();
    let ty = ThingType::from_toml(type_toml, "test type").unwrap();
    catalog.insert(ty, TypeOrigin::Builtin).unwrap();
    catalog
}

/// A running listener and the hub's ends of its link.
pub struct Gateway {
    pub listener: RawListener,
    pub hub: HubEnds,
    shutdown: CancellationToken,
    /// Cancels `shutdown` when the gateway is dropped.
    _stop_on_drop: DropGuard,
}

impl Gateway {
    /// Prepares `config` (which must hold one listener) against `catalog` and starts it.
    pub async fn start(config: RawConfig, catalog: &TypeCatalog) -> Gateway {
        init_logging();
        let mut prepared = config.prepare(catalog).unwrap();
        assert_eq!(prepared.len(), 1);
        Self::start_prepared(prepared.remove(0)).await
    }

    pub async fn start_prepared(listener: PreparedListener) -> Gateway {
        Self::start_under(listener, device_models::MemoryPressure::default()).await
    }

    /// Starts `listener` under the memory budget flag `memory`.
    pub async fn start_under(
        listener: PreparedListener,
        memory: device_models::MemoryPressure,
    ) -> Gateway {
        let (io, hub) =
            GatewayIo::pair(listener.name(), 256, Arc::new(StaticCredentials::default()));
        let io = io.with_memory(memory);
        let shutdown = CancellationToken::new();
        let listener = raw::start(listener, io, shutdown.clone()).await.unwrap();
        Gateway {
            listener,
            hub,
            _stop_on_drop: shutdown.clone().drop_guard(),
            shutdown,
        }
    }

    /// Cancels the listener and waits for all of its tasks (connections included) to end.
    pub async fn shut_down(self) {
        self.shutdown.cancel();
        let Gateway { listener, .. } = self;
        tokio::time::timeout(PATIENCE, listener.join())
            .await
            .expect("the listener's tasks end after shutdown");
    }

    pub fn addr(&self) -> std::net::SocketAddr {
        self.listener.local_addr().unwrap()
    }

    pub fn stats(&self) -> StatsSnapshot {
        self.listener.stats().snapshot()
    }

    /// The next event, whatever it is.
    pub async fn next(&mut self) -> DeviceEvent {
        tokio::time::timeout(PATIENCE, self.hub.events.recv())
            .await
            .expect("an event in time")
            .expect("the listener is running")
    }

    /// The first event matching `pred`, skipping others.
    pub async fn wait_for(
        &mut self,
        what: &str,
        pred: impl Fn(&DeviceEvent) -> bool,
    ) -> DeviceEvent {
        let wait = async {
            loop {
                let event = self
                    .hub
                    .events
                    .recv()
                    .await
                    .expect("the listener is running");
                if pred(&event) {
                    return event;
                }
            }
        };
        match tokio::time::timeout(PATIENCE, wait).await {
            Ok(event) => event,
            Err(_) => panic!("no event {what} within {PATIENCE:?}"),
        }
    }

    /// The first report from `thing` for which `pred` holds on its values.
    pub async fn reported(
        &mut self,
        thing: &str,
        pred: impl Fn(&Map<String, Value>) -> bool,
    ) -> Map<String, Value> {
        let event = self
            .wait_for(&format!("reported by {thing}"), |e| {
                matches!(e, DeviceEvent::Reported { thing: t, values, .. } if t.as_str() == thing && pred(values))
            })
            .await;
        match event {
            DeviceEvent::Reported { values, .. } => values,
            _ => unreachable!(),
        }
    }

    /// Waits for the action reply with `correlation`.
    pub async fn action_reply(&mut self, correlation: &str) -> Result<Value, String> {
        let event = self
            .wait_for(&format!("ActionReply {correlation}"), |e| {
                matches!(e, DeviceEvent::ActionReply { correlation: c, .. } if c == correlation)
            })
            .await;
        match event {
            DeviceEvent::ActionReply { outcome, .. } => outcome,
            _ => unreachable!(),
        }
    }

    pub async fn command(&self, command: DeviceCommand) {
        self.hub.commands.send(command).await.unwrap();
    }

    /// Invokes `action` on `thing` with a deadline `ms` from now.
    pub async fn invoke(
        &self,
        thing: &str,
        action: &str,
        input: Value,
        correlation: &str,
        ms: u64,
    ) {
        self.command(DeviceCommand::InvokeAction {
            thing: id(thing),
            action: action.into(),
            input,
            correlation: correlation.into(),
            deadline_ms: now_ms() + ms,
        })
        .await;
    }

    pub async fn set(&self, thing: &str, values: Value) {
        self.command(DeviceCommand::SetDesired {
            thing: id(thing),
            values: object(values),
        })
        .await;
    }

    /// Waits until the counters satisfy `pred`.
    pub async fn stats_until(
        &self,
        what: &str,
        pred: impl Fn(&StatsSnapshot) -> bool,
    ) -> StatsSnapshot {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let stats = self.stats();
            if pred(&stats) {
                return stats;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "counters never showed {what}: {stats:?}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

pub fn id(text: &str) -> ThingId {
    ThingId::new(text).unwrap()
}

pub fn object(value: Value) -> Map<String, Value> {
    value.as_object().cloned().unwrap()
}

pub fn now_ms() -> u64 {
    u64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap()
}
