//! Simulated Modbus devices, for tests and demos of the hub's Modbus gateway: energy meters and
//! motor drives with realistic register maps, on one bus served over Modbus TCP and Modbus RTU
//! (on a pseudo-terminal) at once.
//!
//! | module | holds |
//! | --- | --- |
//! | [`bank`] | [`RegisterBank`]: coils, discrete inputs, input and holding registers of one device, mapped addresses only |
//! | [`device`] | [`ModbusDevice`]: the [`meter`](device::meter) and [`drive`](device::drive) maps, their values over time, request handling |
//! | [`pdu`] | request and response PDUs |
//! | [`tcp`] | [`SimBus::serve_tcp`] and the [`TcpServer`] handle (unplug, plug) |
//! | [`rtu`] | [`SimBus::serve_rtu_pty`]: RTU framing on a pty, line timing |
//! | [`cli`] | `brume-sim modbus ...` |
//!
//! Data is big-endian within a register and in big word order (most significant register first)
//! for 32-bit values, the Modbus default. Devices support function codes 1, 2, 3, 4, 5, 6, 15, 16
//! and 22 (mask write register) and answer other functions with illegal function (0x01), bad
//! quantities and values with illegal data value (0x03), and unmapped addresses, reads or writes
//! running past the end of a map and writes to read-only registers with illegal data address
//! (0x02).
//!
//! Values move with time: with [`SimBus::new`] as the wall clock goes (devices are brought up to
//! date whenever they are accessed), with [`SimBus::manual_clock`] only when the test calls
//! [`SimBus::advance`]. The thing types `modbus_meter` and `modbus_drive` (device-models' bundled
//! types) describe these maps in their `[bindings.modbus]` tables.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use firmware_sim::modbus::{DeviceKind, RtuOptions, SimBus, Table};
//! use tokio_util::sync::CancellationToken;
//!
//! let bus = SimBus::new();
//! bus.add(1, DeviceKind::Meter)?;
//! bus.add(2, DeviceKind::Drive)?;
//! let shutdown = CancellationToken::new();
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let tcp = bus.serve_tcp(listener, shutdown.clone())?;
//! let tty = bus.serve_rtu_pty(RtuOptions::default(), shutdown.clone())?;
//! // ... point a client at tcp.local_addr() or tty, then check what it wrote:
//! assert_eq!(bus.register(2, Table::Holding, 10), Some(1500));
//! tcp.unplug().await; // the device drops off the network
//! tcp.plug().await?; // and comes back on the same port
//! # Ok(()) }
//! ```

pub mod bank;
mod bus;
pub mod cli;
pub mod device;
pub mod pdu;
pub mod rtu;
pub mod tcp;

pub use bank::{Access, RegisterBank, Table};
pub use bus::{
    BusError, LineStats, Outcome, REQUEST_LOG, RequestRecord, SimBus, Transport, UnitStats,
};
pub use device::{DeviceKind, DriveMode, ModbusDevice};
pub use rtu::RtuOptions;
pub use tcp::TcpServer;

#[cfg(test)]
mod tests;
