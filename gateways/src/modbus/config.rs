//! Configuration of Modbus buses, embedded in the hub's config as a `[modbus]` section:
//!
//! ```toml
//! [[modbus.tcp]]
//! name = "switchboard"              # gateway name in logs and metrics; default "modbus:<address>"
//! address = "192.0.2.20:502"        # a Modbus TCP server, or a TCP-to-RTU gateway (host:port;
//!                                   # a name is resolved at each connection attempt)
//! timeout_ms = 1000                 # one request's answer
//! connect_timeout_ms = 3000
//! devices = [
//!   { unit = 1, thing = "meter-1", thing_type = "modbus_meter" },
//!   { unit = 2, thing = "drive-1", thing_type = "modbus_drive" },
//! ]
//!
//! [[modbus.rtu]]
//! name = "rs485-a"                  # default "modbus:<path>"
//! path = "/dev/ttyUSB0"
//! baud_rate = 9600
//! data_bits = 8                     # 7 or 8
//! parity = "even"                   # "none" | "odd" | "even"
//! stop_bits = 1                     # 1 | 2
//! timeout_ms = 500
//! frame_gap_ms = 0                  # silence between two frames; 0: 3.5 characters (1.75 ms above 19200 baud)
//! devices = [ { unit = 7, thing = "meter-7", thing_type = "modbus_meter" } ]
//! ```
//!
//! Keys shared by both kinds: `offline_after_failures` (consecutive unanswered requests before a
//! device goes offline, default 3), `backoff_min_ms` / `backoff_max_ms` (how often an offline
//! device is tried again: the delay doubles from the first to the second, defaults 1 s and 60 s),
//! `max_queued` (writes and actions waiting per bus, default 64).
//!
//! Every table denies unknown keys; [`ModbusConfig::prepare`] checks everything against the thing
//! types (each must have a usable `[bindings.modbus]`) before any connection opens.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use device_models::modbus::{ModbusConfigError, ModbusModel};
use device_models::{ThingId, TypeCatalog};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::raw::Parity;

/// A `[modbus]` section that cannot be used.
#[derive(Debug, Error)]
pub enum ModbusSetupError {
    /// A device names a thing type the catalog does not have.
    #[error("{key}: no thing type `{type_id}`")]
    UnknownType {
        /// Key path (`modbus.tcp[0].devices[1].thing_type`).
        key: String,
        /// The type asked for.
        type_id: String,
    },
    /// The thing type's `[bindings.modbus]` is missing or wrong.
    #[error("{key}: {source}")]
    Binding {
        /// Key path of the device's `thing_type`.
        key: String,
        /// What is wrong with the binding.
        #[source]
        source: Box<ModbusConfigError>,
    },
    /// A value that does not fit.
    #[error("{key}: {reason}")]
    Invalid {
        /// Key path of the value.
        key: String,
        /// Why.
        reason: String,
    },
}

fn invalid(key: impl Into<String>, reason: impl Into<String>) -> ModbusSetupError {
    ModbusSetupError::Invalid {
        key: key.into(),
        reason: reason.into(),
    }
}

/// The `[modbus]` section: Modbus TCP servers and RTU lines the hub polls.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModbusConfig {
    /// `[[modbus.tcp]]`
    pub tcp: Vec<TcpBusConfig>,
    /// `[[modbus.rtu]]`
    pub rtu: Vec<RtuBusConfig>,
}

/// One Modbus device on a bus: its unit id and the thing it is.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceConfig {
    /// Unit (slave) id: 1 to 247 on an RTU line; 0 to 255 over TCP.
    pub unit: u8,
    /// The thing id the device reports as.
    pub thing: String,
    /// Its thing type, which must have a `[bindings.modbus]`.
    pub thing_type: String,
}

/// Keys every bus has, read from either kind (serde cannot deny unknown keys through a
/// flattened table, so each kind declares them itself).
struct BusCommon<'a> {
    devices: &'a [DeviceConfig],
    timeout_ms: u64,
    offline_after_failures: u32,
    backoff_min_ms: u64,
    backoff_max_ms: u64,
    max_queued: usize,
}

macro_rules! bus_common {
    ($bus:expr) => {
        BusCommon {
            devices: &$bus.devices,
            timeout_ms: $bus.timeout_ms,
            offline_after_failures: $bus.offline_after_failures,
            backoff_min_ms: $bus.backoff_min_ms,
            backoff_max_ms: $bus.backoff_max_ms,
            max_queued: $bus.max_queued,
        }
    };
}

/// `[[modbus.tcp]]`: a Modbus TCP server (a device, or a TCP-to-RTU gateway with several units
/// behind it), one connection, one request at a time.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TcpBusConfig {
    /// Gateway name in logs and metrics; default `modbus:<address>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The server's `host:port` (an IP address or a name, resolved at each connection attempt,
    /// so a device that changes address is found again).
    pub address: String,
    /// Milliseconds a connection attempt may take.
    #[serde(default = "defaults::connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// The devices on the bus.
    #[serde(default)]
    pub devices: Vec<DeviceConfig>,
    /// Milliseconds one request may wait for its answer.
    #[serde(default = "defaults::timeout_ms")]
    pub timeout_ms: u64,
    /// Consecutive unanswered requests after which a device goes offline.
    #[serde(default = "defaults::offline_after_failures")]
    pub offline_after_failures: u32,
    /// First delay before an offline device is tried again, in milliseconds.
    #[serde(default = "defaults::backoff_min_ms")]
    pub backoff_min_ms: u64,
    /// Longest delay between tries of an offline device, in milliseconds.
    #[serde(default = "defaults::backoff_max_ms")]
    pub backoff_max_ms: u64,
    /// Writes and actions waiting for the bus; more are refused.
    #[serde(default = "defaults::max_queued")]
    pub max_queued: usize,
}

/// `[[modbus.rtu]]`: a serial line (RS-485) with Modbus RTU devices on it.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RtuBusConfig {
    /// Gateway name in logs and metrics; default `modbus:<path>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Device path (`/dev/ttyUSB0`, or a stable `/dev/serial/by-id/...` link).
    pub path: String,
    /// Bits per second.
    #[serde(default = "defaults::baud_rate")]
    pub baud_rate: u32,
    /// Data bits, 7 or 8.
    #[serde(default = "defaults::data_bits")]
    pub data_bits: u8,
    /// Parity (Modbus RTU's default is even).
    #[serde(default = "defaults::parity")]
    pub parity: Parity,
    /// Stop bits, 1 or 2.
    #[serde(default = "defaults::stop_bits")]
    pub stop_bits: u8,
    /// Milliseconds of silence between two frames on the line; 0: the protocol's 3.5 character
    /// times (1.75 ms above 19200 baud).
    #[serde(default)]
    pub frame_gap_ms: u64,
    /// The devices on the bus.
    #[serde(default)]
    pub devices: Vec<DeviceConfig>,
    /// Milliseconds one request may wait for its answer.
    #[serde(default = "defaults::timeout_ms")]
    pub timeout_ms: u64,
    /// Consecutive unanswered requests after which a device goes offline.
    #[serde(default = "defaults::offline_after_failures")]
    pub offline_after_failures: u32,
    /// First delay before an offline device is tried again, in milliseconds.
    #[serde(default = "defaults::backoff_min_ms")]
    pub backoff_min_ms: u64,
    /// Longest delay between tries of an offline device, in milliseconds.
    #[serde(default = "defaults::backoff_max_ms")]
    pub backoff_max_ms: u64,
    /// Writes and actions waiting for the bus; more are refused.
    #[serde(default = "defaults::max_queued")]
    pub max_queued: usize,
}

mod defaults {
    use crate::raw::Parity;

    pub fn timeout_ms() -> u64 {
        1000
    }
    pub fn connect_timeout_ms() -> u64 {
        3000
    }
    pub fn offline_after_failures() -> u32 {
        3
    }
    pub fn backoff_min_ms() -> u64 {
        1000
    }
    pub fn backoff_max_ms() -> u64 {
        60_000
    }
    pub fn max_queued() -> usize {
        64
    }
    pub fn baud_rate() -> u32 {
        9600
    }
    pub fn data_bits() -> u8 {
        8
    }
    pub fn parity() -> Parity {
        Parity::Even
    }
    pub fn stop_bits() -> u8 {
        1
    }
}

/// A device ready to poll: its unit, thing and compiled binding.
#[derive(Clone, Debug)]
pub struct PreparedDevice {
    /// Unit id.
    pub unit: u8,
    /// The thing.
    pub thing: ThingId,
    /// The thing type's id.
    pub type_id: String,
    /// The compiled `[bindings.modbus]`, shared by devices of the same type.
    pub model: Arc<ModbusModel>,
}

/// Where a bus is reached.
#[derive(Clone, Debug, PartialEq)]
pub enum Endpoint {
    /// A Modbus TCP server.
    Tcp {
        /// Its `host:port`.
        address: String,
        /// Connection attempt limit.
        connect_timeout: Duration,
    },
    /// A serial line.
    Rtu(RtuLine),
}

/// A serial line's settings.
#[derive(Clone, Debug, PartialEq)]
pub struct RtuLine {
    /// Device path.
    pub path: String,
    /// Bits per second.
    pub baud_rate: u32,
    /// Data bits, 7 or 8.
    pub data_bits: u8,
    /// Parity.
    pub parity: Parity,
    /// Stop bits, 1 or 2.
    pub stop_bits: u8,
    /// Silence kept between two frames.
    pub frame_gap: Duration,
}

/// Timing and limits of a bus.
#[derive(Clone, Debug, PartialEq)]
pub struct BusSettings {
    /// One request's answer.
    pub timeout: Duration,
    /// Consecutive failures before offline.
    pub offline_after_failures: u32,
    /// First retry delay of an offline device.
    pub backoff_min: Duration,
    /// Longest retry delay.
    pub backoff_max: Duration,
    /// Writes and actions waiting.
    pub max_queued: usize,
}

/// A bus checked against the catalog: ready to start.
#[derive(Clone, Debug)]
pub struct PreparedBus {
    /// Gateway name.
    pub name: String,
    /// Where it is reached.
    pub endpoint: Endpoint,
    /// Its devices, in config order.
    pub devices: Vec<PreparedDevice>,
    /// Timing and limits.
    pub settings: BusSettings,
}

impl PreparedBus {
    /// The gateway name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// The protocol's inter-frame silence: 3.5 character times of 11 bits, or 1.75 ms above 19200
/// baud (Modbus over serial line, 2.5.1.1).
pub fn default_frame_gap(baud_rate: u32) -> Duration {
    if baud_rate > 19_200 {
        Duration::from_micros(1750)
    } else {
        // 3.5 chars * 11 bits = 38.5 bits.
        Duration::from_micros(38_500_000 / u64::from(baud_rate.max(1)))
    }
}

impl ModbusConfig {
    /// Whether any bus is configured.
    pub fn is_empty(&self) -> bool {
        self.tcp.is_empty() && self.rtu.is_empty()
    }

    /// Checks every bus and device against `catalog`, naming the key at fault (relative to the
    /// section: `tcp[0].devices[1].unit`), and compiles each type's binding once.
    pub fn prepare(&self, catalog: &TypeCatalog) -> Result<Vec<PreparedBus>, ModbusSetupError> {
        let mut names = HashSet::new();
        let mut things = HashSet::new();
        let mut models: Vec<(String, Arc<ModbusModel>)> = Vec::new();
        let mut out = Vec::new();
        for (i, bus) in self.tcp.iter().enumerate() {
            let key = format!("tcp[{i}]");
            let address = check_host_port(&format!("{key}.address"), &bus.address)?;
            check_timeout(&format!("{key}.connect_timeout_ms"), bus.connect_timeout_ms)?;
            let name = bus
                .name
                .clone()
                .unwrap_or_else(|| format!("modbus:{}", bus.address));
            let endpoint = Endpoint::Tcp {
                address,
                connect_timeout: Duration::from_millis(bus.connect_timeout_ms),
            };
            out.push(prepare_bus(
                &key,
                name,
                endpoint,
                &bus_common!(bus),
                0..=255,
                catalog,
                &mut names,
                &mut things,
                &mut models,
            )?);
        }
        for (i, bus) in self.rtu.iter().enumerate() {
            let key = format!("rtu[{i}]");
            if bus.path.is_empty() {
                return Err(invalid(format!("{key}.path"), "empty path"));
            }
            if bus.baud_rate == 0 || bus.baud_rate > 4_000_000 {
                return Err(invalid(
                    format!("{key}.baud_rate"),
                    "use 1 to 4000000 bits per second",
                ));
            }
            if !matches!(bus.data_bits, 7 | 8) {
                return Err(invalid(format!("{key}.data_bits"), "use 7 or 8"));
            }
            if !matches!(bus.stop_bits, 1 | 2) {
                return Err(invalid(format!("{key}.stop_bits"), "use 1 or 2"));
            }
            if bus.frame_gap_ms > 1000 {
                return Err(invalid(format!("{key}.frame_gap_ms"), "use 0 to 1000"));
            }
            let frame_gap = if bus.frame_gap_ms == 0 {
                default_frame_gap(bus.baud_rate)
            } else {
                Duration::from_millis(bus.frame_gap_ms)
            };
            let name = bus
                .name
                .clone()
                .unwrap_or_else(|| format!("modbus:{}", bus.path));
            let endpoint = Endpoint::Rtu(RtuLine {
                path: bus.path.clone(),
                baud_rate: bus.baud_rate,
                data_bits: bus.data_bits,
                parity: bus.parity,
                stop_bits: bus.stop_bits,
                frame_gap,
            });
            out.push(prepare_bus(
                &key,
                name,
                endpoint,
                &bus_common!(bus),
                1..=247,
                catalog,
                &mut names,
                &mut things,
                &mut models,
            )?);
        }
        Ok(out)
    }
}

/// A `host:port` (`192.0.2.1:502`, `[2001:db8::1]:502`, `meter-7.local:502`), returned as given.
fn check_host_port(key: &str, address: &str) -> Result<String, ModbusSetupError> {
    if address.parse::<SocketAddr>().is_ok() {
        return Ok(address.to_owned());
    }
    let bad = || invalid(key, format!("`{address}` is not a host:port"));
    let (host, port) = address.rsplit_once(':').ok_or_else(bad)?;
    let host_ok = !host.is_empty()
        && host.len() <= 253
        && host
            .split('.')
            .all(|l| !l.is_empty() && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'));
    match port.parse::<u16>() {
        Ok(p) if p > 0 && host_ok => Ok(address.to_owned()),
        _ => Err(bad()),
    }
}

fn check_timeout(key: &str, ms: u64) -> Result<(), ModbusSetupError> {
    if ms == 0 || ms > 60_000 {
        return Err(invalid(key, "use 1 to 60000 milliseconds"));
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn prepare_bus(
    key: &str,
    name: String,
    endpoint: Endpoint,
    common: &BusCommon<'_>,
    units: std::ops::RangeInclusive<u8>,
    catalog: &TypeCatalog,
    names: &mut HashSet<String>,
    things: &mut HashSet<String>,
    models: &mut Vec<(String, Arc<ModbusModel>)>,
) -> Result<PreparedBus, ModbusSetupError> {
    if name.is_empty() || name.len() > 128 {
        return Err(invalid(format!("{key}.name"), "use 1 to 128 characters"));
    }
    if !names.insert(name.clone()) {
        return Err(invalid(
            format!("{key}.name"),
            format!("another bus is named `{name}`"),
        ));
    }
    check_timeout(&format!("{key}.timeout_ms"), common.timeout_ms)?;
    if common.offline_after_failures == 0 || common.offline_after_failures > 100 {
        return Err(invalid(
            format!("{key}.offline_after_failures"),
            "use 1 to 100",
        ));
    }
    if common.backoff_min_ms == 0 || common.backoff_min_ms > common.backoff_max_ms {
        return Err(invalid(
            format!("{key}.backoff_min_ms"),
            "use at least 1 and at most backoff_max_ms",
        ));
    }
    if common.backoff_max_ms > 3_600_000 {
        return Err(invalid(
            format!("{key}.backoff_max_ms"),
            "use at most 3600000 (an hour)",
        ));
    }
    if common.max_queued == 0 || common.max_queued > 65_536 {
        return Err(invalid(format!("{key}.max_queued"), "use 1 to 65536"));
    }
    if common.devices.is_empty() {
        return Err(invalid(
            format!("{key}.devices"),
            "a bus needs at least one device",
        ));
    }
    let mut units_seen = HashSet::new();
    let mut devices = Vec::with_capacity(common.devices.len());
    for (j, d) in common.devices.iter().enumerate() {
        let dkey = format!("{key}.devices[{j}]");
        if !units.contains(&d.unit) {
            return Err(invalid(
                format!("{dkey}.unit"),
                format!("use {} to {}", units.start(), units.end()),
            ));
        }
        if !units_seen.insert(d.unit) {
            return Err(invalid(
                format!("{dkey}.unit"),
                format!("unit {} is already on this bus", d.unit),
            ));
        }
        let thing = ThingId::new(d.thing.as_str())
            .map_err(|e| invalid(format!("{dkey}.thing"), e.to_string()))?;
        if !things.insert(d.thing.clone()) {
            return Err(invalid(
                format!("{dkey}.thing"),
                format!("thing `{}` is already on a Modbus bus", d.thing),
            ));
        }
        let model =
            match models.iter().find(|(id, _)| *id == d.thing_type) {
                Some((_, m)) => Arc::clone(m),
                None => {
                    let ty = catalog.get(&d.thing_type).ok_or_else(|| {
                        ModbusSetupError::UnknownType {
                            key: format!("{dkey}.thing_type"),
                            type_id: d.thing_type.clone(),
                        }
                    })?;
                    let m = Arc::new(ModbusModel::new(ty).map_err(|source| {
                        ModbusSetupError::Binding {
                            key: format!("{dkey}.thing_type"),
                            source: Box::new(source),
                        }
                    })?);
                    models.push((d.thing_type.clone(), Arc::clone(&m)));
                    m
                }
            };
        devices.push(PreparedDevice {
            unit: d.unit,
            thing,
            type_id: d.thing_type.clone(),
            model,
        });
    }
    Ok(PreparedBus {
        name,
        endpoint,
        devices,
        settings: BusSettings {
            timeout: Duration::from_millis(common.timeout_ms),
            offline_after_failures: common.offline_after_failures,
            backoff_min: Duration::from_millis(common.backoff_min_ms),
            backoff_max: Duration::from_millis(common.backoff_max_ms),
            max_queued: common.max_queued,
        },
    })
}
