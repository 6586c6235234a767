//! [`SimGateway`]: simulated devices attached to a hub's things service in-process, through the
//! same [`GatewayLink`] a real gateway uses, with no protocol in between.
//!
//! One task owns the devices. It answers the hub's commands as the devices would and takes
//! orders from a [`SimHandle`]: report now, change a device's mode, fire an event, or send any
//! raw [`DeviceEvent`] (to feed the hub bad data). Every order is acknowledged once its events
//! are in the hub's queue, so tests can drive the devices step by step.

use std::collections::HashMap;
use std::time::Duration;

use device_models::{DeviceEvent, ThingId};
use hub::things::{GatewayLink, LinkError};
use tokio::sync::{mpsc, oneshot};

use crate::device::{Mode, SimDevice};

/// An order for the gateway task.
#[derive(Debug)]
enum Order {
    /// Every device (or one) reports all its values now.
    Report(Option<ThingId>),
    /// Every device advances its simulation one step and reports.
    Tick,
    SetMode(ThingId, Mode),
    Trigger(ThingId, String),
    /// Sends this event as is.
    Send(DeviceEvent),
    /// Sends `Hello` for every device again.
    Hello,
}

/// Why an order failed.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("the simulated gateway has stopped")]
    Stopped,
    #[error("no simulated device {0}")]
    NoDevice(ThingId),
    #[error(transparent)]
    Link(#[from] LinkError),
}

/// Drives a running [`SimGateway`]. Dropping every handle stops it (its devices go offline).
#[derive(Clone, Debug)]
pub struct SimHandle {
    orders: mpsc::Sender<(Order, oneshot::Sender<Result<(), SimError>>)>,
}

/// Options of a simulated gateway.
#[derive(Debug, Clone)]
pub struct SimOptions {
    /// Name of the gateway, in the hub's logs.
    pub name: String,
    /// Every device ticks (and reports) this often; `None`: only when told.
    pub tick: Option<Duration>,
}

impl Default for SimOptions {
    fn default() -> Self {
        SimOptions {
            name: "firmware-sim".into(),
            tick: None,
        }
    }
}

/// The gateway task's state.
pub struct SimGateway {
    devices: HashMap<ThingId, SimDevice>,
    events: mpsc::Sender<DeviceEvent>,
}

impl SimGateway {
    /// Attaches to the hub, says `Hello` for every device, and runs until every handle is gone.
    pub async fn start(
        link: &GatewayLink,
        devices: Vec<SimDevice>,
        options: SimOptions,
    ) -> Result<SimHandle, SimError> {
        let io = link.attach(&options.name).await?;
        let mut gw = SimGateway {
            devices: devices.into_iter().map(|d| (d.id().clone(), d)).collect(),
            events: io.events,
        };
        gw.hello().await?;
        let (orders_tx, orders) = mpsc::channel(64);
        tokio::spawn(gw.run(io.commands, orders, options.tick));
        Ok(SimHandle { orders: orders_tx })
    }

    async fn send(&self, e: DeviceEvent) -> Result<(), SimError> {
        self.events.send(e).await.map_err(|_| SimError::Stopped)
    }

    async fn hello(&mut self) -> Result<(), SimError> {
        let hellos: Vec<DeviceEvent> = self
            .devices
            .values()
            .filter(|d| d.mode() != Mode::Offline)
            .flat_map(|d| [d.hello(), d.report_all(device_models::now_ms())])
            .collect();
        for e in hellos {
            self.send(e).await?;
        }
        Ok(())
    }

    async fn run(
        mut self,
        mut commands: mpsc::Receiver<device_models::DeviceCommand>,
        mut orders: mpsc::Receiver<(Order, oneshot::Sender<Result<(), SimError>>)>,
        tick: Option<Duration>,
    ) {
        let mut ticker = tokio::time::interval(tick.unwrap_or(Duration::from_secs(86_400)));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tokio::select! {
                cmd = commands.recv() => {
                    let Some(cmd) = cmd else { break };
                    let out = match self.devices.get_mut(cmd.thing()) {
                        Some(d) => d.handle(cmd, device_models::now_ms()),
                        None => Vec::new(),
                    };
                    for e in out {
                        if self.send(e).await.is_err() {
                            return;
                        }
                    }
                }
                order = orders.recv() => {
                    let Some((order, ack)) = order else { break };
                    let r = self.order(order).await;
                    let _ = ack.send(r);
                }
                _ = ticker.tick(), if tick.is_some() => {
                    if self.order(Order::Tick).await.is_err() {
                        return;
                    }
                }
            }
        }
    }

    async fn order(&mut self, order: Order) -> Result<(), SimError> {
        let now = device_models::now_ms();
        let out: Vec<DeviceEvent> = match order {
            Order::Report(None) => self
                .devices
                .values()
                .filter(|d| d.mode() != Mode::Offline)
                .map(|d| d.report_all(now))
                .collect(),
            Order::Report(Some(id)) => {
                let d = self.devices.get(&id).ok_or(SimError::NoDevice(id))?;
                if d.mode() == Mode::Offline {
                    Vec::new()
                } else {
                    vec![d.report_all(now)]
                }
            }
            Order::Tick => self
                .devices
                .values_mut()
                .filter_map(|d| d.tick(now))
                .collect(),
            Order::SetMode(id, mode) => {
                let d = self.devices.get_mut(&id).ok_or(SimError::NoDevice(id))?;
                d.set_mode(mode).into_iter().collect()
            }
            Order::Trigger(id, zone) => {
                let d = self.devices.get(&id).ok_or(SimError::NoDevice(id))?;
                d.trigger(&zone, now).into_iter().collect()
            }
            Order::Send(e) => vec![e],
            Order::Hello => return self.hello().await,
        };
        for e in out {
            self.send(e).await?;
        }
        Ok(())
    }
}

impl SimHandle {
    async fn order(&self, order: Order) -> Result<(), SimError> {
        let (tx, rx) = oneshot::channel();
        self.orders
            .send((order, tx))
            .await
            .map_err(|_| SimError::Stopped)?;
        rx.await.map_err(|_| SimError::Stopped)?
    }

    /// Every online device reports all its values now.
    pub async fn report_all(&self) -> Result<(), SimError> {
        self.order(Order::Report(None)).await
    }

    /// One device reports all its values now.
    pub async fn report(&self, thing: &ThingId) -> Result<(), SimError> {
        self.order(Order::Report(Some(thing.clone()))).await
    }

    /// Every device advances one simulation step and reports.
    pub async fn tick(&self) -> Result<(), SimError> {
        self.order(Order::Tick).await
    }

    /// Changes a device's mode (silent devices ignore commands; offline ones say nothing).
    pub async fn set_mode(&self, thing: &ThingId, mode: Mode) -> Result<(), SimError> {
        self.order(Order::SetMode(thing.clone(), mode)).await
    }

    /// An alarm device raises its `triggered` event for `zone`.
    pub async fn trigger(&self, thing: &ThingId, zone: &str) -> Result<(), SimError> {
        self.order(Order::Trigger(thing.clone(), zone.to_owned()))
            .await
    }

    /// Sends any event as if a device said it (for feeding the hub bad data).
    pub async fn send(&self, event: DeviceEvent) -> Result<(), SimError> {
        self.order(Order::Send(event)).await
    }

    /// Every online device says `Hello` (and reports) again.
    pub async fn hello(&self) -> Result<(), SimError> {
        self.order(Order::Hello).await
    }
}
