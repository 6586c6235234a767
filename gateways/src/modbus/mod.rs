//! Modbus TCP and RTU devices as things. Brume is the Modbus client (master): it polls each
//! device's registers as its thing type's `[bindings.modbus]` maps them (see
//! [`device_models::modbus`]), reports the values as thing state, and turns desired values and
//! actions into register writes.
//!
//! | module | holds |
//! | --- | --- |
//! | [`config`] | `[[modbus.tcp]]` and `[[modbus.rtu]]` as serde types, checked into [`PreparedBus`]es before any connection opens |
//! | `schedule` | which request goes next, without I/O: poll groups, due times, device health and back-off |
//! | `bus` | the task that owns a bus: one request on the line at a time, writes before polls |
//! | `transport` | opening a TCP connection or a serial port for tokio-modbus's client |
//! | [`stats`] | per-bus counters ([`BusStats`]) |
//!
//! Use: [`ModbusConfig::prepare`] against the [`TypeCatalog`](device_models::TypeCatalog), then for
//! each [`PreparedBus`] attach a gateway to the hub (one [`GatewayIo`] per bus, named by
//! [`PreparedBus::name`]; its devices' things must be provisioned) and [`start`] it.
//!
//! One task per bus owns the connection, the schedule and the write queue (actor style), so the
//! line never carries two requests at once, whatever the number of devices: an RS-485 line
//! cannot, and many TCP-to-RTU gateways answer only one at a time too. Buses are independent: a
//! dead line never slows another.
//!
//! Towards the hub: the events of one turn (a poll, a command, a lost line) go together before the
//! next turn, several as one [`DeviceEvent::Batch`](device_models::DeviceEvent::Batch) (with no
//! barrier) per 32. Back-pressure: they are sent with `send().await`; when the hub's queue is full,
//! polling waits. Commands: writes and actions wait in a bounded queue (`max_queued`) and
//! go before polls; a command that cannot be served (queue full, device offline, line closed) is
//! refused at once, counted, and an action is answered with the reason.

mod bus;
pub mod config;
mod schedule;
pub mod stats;
mod transport;

use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

pub use config::{
    DeviceConfig, Endpoint, ModbusConfig, ModbusSetupError, PreparedBus, PreparedDevice,
    RtuBusConfig, TcpBusConfig,
};
pub use stats::{BusSnapshot, BusStats, PropertyFault};

use crate::link::GatewayIo;

/// A running bus: its name, counters and task.
#[derive(Debug)]
pub struct ModbusBus {
    name: String,
    stats: Arc<BusStats>,
    tasks: TaskTracker,
}

impl ModbusBus {
    /// The gateway name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The bus's counters.
    pub fn stats(&self) -> &Arc<BusStats> {
        &self.stats
    }

    /// Waits until the bus task has ended (after the shutdown token fired, or the hub dropped
    /// the gateway's channels).
    pub async fn join(self) {
        self.tasks.close();
        self.tasks.wait().await;
    }
}

/// Starts a bus's task. Opening the connection or port happens in the task and is retried with
/// back-off, so a device that is off when the hub starts is not an error.
pub fn start(bus: PreparedBus, io: GatewayIo, shutdown: CancellationToken) -> ModbusBus {
    let stats = Arc::new(BusStats::default());
    let tasks = TaskTracker::new();
    let name = bus.name.clone();
    let span = tracing::info_span!("modbus", bus = %name);
    let task = bus::Bus::new(bus, Arc::clone(&stats));
    tasks.spawn(task.run(io, shutdown).instrument(span));
    ModbusBus { name, stats, tasks }
}
