//! Configuration of raw listeners, meant to be embedded in the hub's config as a `[raw]` section:
//!
//! ```toml
//! [[raw.udp]]
//! name = "beacons"                  # gateway name in logs; default "udp:<address>"
//! address = "0.0.0.0:47808"
//! thing_type = "udp_beacon"         # a type with [bindings.frame]
//! allow_remote = true               # required for a non-loopback address (devices cannot log in)
//! peers = { "192.0.2.10" = "beacon-10", "192.0.2.11:5000" = "beacon-11" }
//! only_listed_peers = false
//! offline_after_secs = 300          # silence before a thing goes offline; 0: never
//! rate_per_sec = 50.0               # frames per second per source address...
//! burst = 100                       # ...and how many at once
//!
//! [[raw.tcp]]
//! address = "127.0.0.1:7001"
//! thing_type = "tcp_thermostat"
//! max_connections = 1024
//! idle_timeout_secs = 300
//! max_bad_frames = 8                # consecutive bad frames before a peer is disconnected
//!
//! [[raw.serial]]
//! path = "/dev/ttyUSB0"
//! thing_type = "serial_meter"
//! baud_rate = 9600
//! data_bits = 8                     # 5..=8
//! parity = "none"                   # "none" | "odd" | "even"
//! stop_bits = 1                     # 1 | 2
//! half_duplex = true                # one request on the bus at a time
//! reopen_min_ms = 100               # back-off between reopen attempts, doubling...
//! reopen_max_ms = 30000             # ...up to this
//! ```
//!
//! Every table denies unknown keys; [`RawConfig::prepare`] checks everything against the thing
//! types before any port opens.

use std::collections::{BTreeMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use device_models::frames::CorrelateBy;
use device_models::{ThingId, TypeCatalog};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::engine::EngineSettings;
use super::model::{DeviceModel, FRAME_BINDING, ModelError};

/// A raw listener configuration that cannot be used.
#[derive(Debug, Error)]
pub enum RawConfigError {
    /// A listener names a thing type the catalog does not have.
    #[error("{key}: no thing type `{type_id}`")]
    UnknownType {
        /// Key path of the listener (`raw.udp[0].thing_type`).
        key: String,
        /// The type asked for.
        type_id: String,
    },
    /// The thing type has no usable `[bindings.frame]`.
    #[error("{key}: {source}")]
    Model {
        /// Key path of the listener's `thing_type`.
        key: String,
        /// What is wrong with the binding.
        #[source]
        source: ModelError,
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

fn invalid(key: impl Into<String>, reason: impl Into<String>) -> RawConfigError {
    RawConfigError::Invalid {
        key: key.into(),
        reason: reason.into(),
    }
}

/// The `[raw]` section: listeners for UDP, TCP and serial devices.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawConfig {
    /// `[[raw.udp]]`
    pub udp: Vec<UdpConfig>,
    /// `[[raw.tcp]]`
    pub tcp: Vec<TcpConfig>,
    /// `[[raw.serial]]`
    pub serial: Vec<SerialConfig>,
}

/// `[[raw.udp]]`: a UDP port; one datagram is one frame (or holds whole frames of the binding's
/// framing).
///
/// Fairness: every source address has its own token bucket (`rate_per_sec`, `burst`); datagrams
/// over it are dropped before decoding, so a flooding source costs a `recv` per datagram and cannot
/// take the event budget of others.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct UdpConfig {
    /// Gateway name in logs; default `udp:<address>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Address to bind, `ip:port`.
    pub address: String,
    /// The thing type whose `[bindings.frame]` reads the frames.
    pub thing_type: String,
    /// Needed to bind a non-loopback address: raw devices cannot authenticate.
    #[serde(default)]
    pub allow_remote: bool,
    /// Source `ip` or `ip:port` → thing id, for frames that carry no id.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub peers: BTreeMap<String, String>,
    /// Drop datagrams from sources not in `peers`.
    #[serde(default)]
    pub only_listed_peers: bool,
    /// Seconds of silence after which a thing goes offline; 0: never.
    #[serde(default = "defaults::offline_after_secs")]
    pub offline_after_secs: u64,
    /// Milliseconds a desired-state change may wait for its turn and its reply.
    #[serde(default = "defaults::set_timeout_ms")]
    pub set_timeout_ms: u64,
    /// Frames per second admitted per source address.
    #[serde(default = "defaults::rate_per_sec")]
    pub rate_per_sec: f64,
    /// Frames a quiet source may send at once.
    #[serde(default = "defaults::burst")]
    pub burst: u32,
    /// Things tracked at once; frames of further things are dropped.
    #[serde(default = "defaults::max_devices")]
    pub max_devices: usize,
    /// Command frames waiting per device address.
    #[serde(default = "defaults::max_queued")]
    pub max_queued: usize,
}

/// `[[raw.tcp]]`: a TCP port devices connect to; a task per connection.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TcpConfig {
    /// Gateway name in logs; default `tcp:<address>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Address to listen on, `ip:port`.
    pub address: String,
    /// The thing type whose `[bindings.frame]` reads the frames.
    pub thing_type: String,
    /// Needed to listen on a non-loopback address: raw devices cannot authenticate.
    #[serde(default)]
    pub allow_remote: bool,
    /// Peer `ip` or `ip:port` → thing id, for frames that carry no id.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub peers: BTreeMap<String, String>,
    /// Refuse connections from peers not in `peers`.
    #[serde(default)]
    pub only_listed_peers: bool,
    /// Seconds of silence after which a thing goes offline; 0: only when its connection closes.
    #[serde(default = "defaults::offline_after_secs")]
    pub offline_after_secs: u64,
    /// Milliseconds a desired-state change may wait for its turn and its reply.
    #[serde(default = "defaults::set_timeout_ms")]
    pub set_timeout_ms: u64,
    /// Connections open at once; more are accepted and closed at once.
    #[serde(default = "defaults::max_connections")]
    pub max_connections: usize,
    /// Seconds without a byte from the device before its connection is closed; 0: never.
    #[serde(default = "defaults::idle_timeout_secs")]
    pub idle_timeout_secs: u64,
    /// Bad frames in a row (with no good frame between) after which a connection is closed.
    #[serde(default = "defaults::max_bad_frames")]
    pub max_bad_frames: u32,
    /// Frames per second read per connection; a faster device is read more slowly.
    #[serde(default = "defaults::rate_per_sec")]
    pub rate_per_sec: f64,
    /// Frames a quiet connection may send at once.
    #[serde(default = "defaults::burst")]
    pub burst: u32,
    /// Command frames waiting per connection; a device that does not read them is disconnected.
    #[serde(default = "defaults::max_queued")]
    pub max_queued: usize,
    /// Commands in flight per connection (1 with `next_frame` correlation).
    #[serde(default = "defaults::max_in_flight")]
    pub max_in_flight: usize,
    /// Milliseconds one write to a device may take before the connection is dropped.
    #[serde(default = "defaults::write_timeout_ms")]
    pub write_timeout_ms: u64,
    /// Things tracked at once.
    #[serde(default = "defaults::max_devices")]
    pub max_devices: usize,
}

/// Serial parity.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Parity {
    /// No parity bit.
    #[default]
    None,
    /// Odd parity.
    Odd,
    /// Even parity.
    Even,
}

/// Serial flow control.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FlowControl {
    /// None.
    #[default]
    None,
    /// XON/XOFF.
    Software,
    /// RTS/CTS.
    Hardware,
}

/// `[[raw.serial]]`: a serial port (RS-232, RS-485 adapter, USB CDC), reopened with back-off when
/// the device disappears.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SerialConfig {
    /// Gateway name in logs; default `serial:<path>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Device path (`/dev/ttyUSB0`, or a stable `/dev/serial/by-id/...` link).
    pub path: String,
    /// The thing type whose `[bindings.frame]` reads the frames.
    pub thing_type: String,
    /// The thing on this port, for frames that carry no id (a point-to-point line).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thing: Option<String>,
    /// Bits per second.
    #[serde(default = "defaults::baud_rate")]
    pub baud_rate: u32,
    /// Data bits, 5 to 8.
    #[serde(default = "defaults::data_bits")]
    pub data_bits: u8,
    /// Parity.
    #[serde(default)]
    pub parity: Parity,
    /// Stop bits, 1 or 2.
    #[serde(default = "defaults::stop_bits")]
    pub stop_bits: u8,
    /// Flow control.
    #[serde(default)]
    pub flow_control: FlowControl,
    /// One request on the bus at a time: the next command is written after the reply to the
    /// previous one, or its timeout.
    #[serde(default = "defaults::yes")]
    pub half_duplex: bool,
    /// Seconds of silence after which a thing goes offline; 0: only when the port is lost.
    #[serde(default = "defaults::offline_after_secs")]
    pub offline_after_secs: u64,
    /// Milliseconds a desired-state change may wait for its turn and its reply.
    #[serde(default = "defaults::set_timeout_ms")]
    pub set_timeout_ms: u64,
    /// First delay before reopening a lost port, in milliseconds; it doubles on each failure.
    #[serde(default = "defaults::reopen_min_ms")]
    pub reopen_min_ms: u64,
    /// Longest delay between reopen attempts, in milliseconds.
    #[serde(default = "defaults::reopen_max_ms")]
    pub reopen_max_ms: u64,
    /// Milliseconds one write may take before the port is considered lost.
    #[serde(default = "defaults::write_timeout_ms")]
    pub write_timeout_ms: u64,
    /// Command frames waiting for the bus.
    #[serde(default = "defaults::max_queued")]
    pub max_queued: usize,
    /// Things tracked at once.
    #[serde(default = "defaults::max_devices")]
    pub max_devices: usize,
}

/// Defaults of omitted keys.
mod defaults {
    pub fn offline_after_secs() -> u64 {
        300
    }
    pub fn set_timeout_ms() -> u64 {
        10_000
    }
    pub fn rate_per_sec() -> f64 {
        50.0
    }
    pub fn burst() -> u32 {
        100
    }
    pub fn max_devices() -> usize {
        10_000
    }
    pub fn max_queued() -> usize {
        32
    }
    pub fn max_in_flight() -> usize {
        8
    }
    pub fn max_connections() -> usize {
        1024
    }
    pub fn idle_timeout_secs() -> u64 {
        300
    }
    pub fn max_bad_frames() -> u32 {
        8
    }
    pub fn write_timeout_ms() -> u64 {
        5_000
    }
    pub fn baud_rate() -> u32 {
        9600
    }
    pub fn data_bits() -> u8 {
        8
    }
    pub fn stop_bits() -> u8 {
        1
    }
    pub fn yes() -> bool {
        true
    }
    pub fn reopen_min_ms() -> u64 {
        100
    }
    pub fn reopen_max_ms() -> u64 {
        30_000
    }
}

impl UdpConfig {
    /// A listener on `address` for `thing_type`, every other key at its default.
    pub fn new(address: impl Into<String>, thing_type: impl Into<String>) -> Self {
        Self {
            name: None,
            address: address.into(),
            thing_type: thing_type.into(),
            allow_remote: false,
            peers: BTreeMap::new(),
            only_listed_peers: false,
            offline_after_secs: defaults::offline_after_secs(),
            set_timeout_ms: defaults::set_timeout_ms(),
            rate_per_sec: defaults::rate_per_sec(),
            burst: defaults::burst(),
            max_devices: defaults::max_devices(),
            max_queued: defaults::max_queued(),
        }
    }

    /// The gateway name.
    pub fn name(&self) -> String {
        self.name
            .clone()
            .unwrap_or_else(|| format!("udp:{}", self.address))
    }
}

impl TcpConfig {
    /// A listener on `address` for `thing_type`, every other key at its default.
    pub fn new(address: impl Into<String>, thing_type: impl Into<String>) -> Self {
        Self {
            name: None,
            address: address.into(),
            thing_type: thing_type.into(),
            allow_remote: false,
            peers: BTreeMap::new(),
            only_listed_peers: false,
            offline_after_secs: defaults::offline_after_secs(),
            set_timeout_ms: defaults::set_timeout_ms(),
            max_connections: defaults::max_connections(),
            idle_timeout_secs: defaults::idle_timeout_secs(),
            max_bad_frames: defaults::max_bad_frames(),
            rate_per_sec: defaults::rate_per_sec(),
            burst: defaults::burst(),
            max_queued: defaults::max_queued(),
            max_in_flight: defaults::max_in_flight(),
            write_timeout_ms: defaults::write_timeout_ms(),
            max_devices: defaults::max_devices(),
        }
    }

    /// The gateway name.
    pub fn name(&self) -> String {
        self.name
            .clone()
            .unwrap_or_else(|| format!("tcp:{}", self.address))
    }
}

impl SerialConfig {
    /// A port at `path` for `thing_type`, every other key at its default.
    pub fn new(path: impl Into<String>, thing_type: impl Into<String>) -> Self {
        Self {
            name: None,
            path: path.into(),
            thing_type: thing_type.into(),
            thing: None,
            baud_rate: defaults::baud_rate(),
            data_bits: defaults::data_bits(),
            parity: Parity::None,
            stop_bits: defaults::stop_bits(),
            flow_control: FlowControl::None,
            half_duplex: true,
            offline_after_secs: defaults::offline_after_secs(),
            set_timeout_ms: defaults::set_timeout_ms(),
            reopen_min_ms: defaults::reopen_min_ms(),
            reopen_max_ms: defaults::reopen_max_ms(),
            write_timeout_ms: defaults::write_timeout_ms(),
            max_queued: defaults::max_queued(),
            max_devices: defaults::max_devices(),
        }
    }

    /// The gateway name.
    pub fn name(&self) -> String {
        self.name
            .clone()
            .unwrap_or_else(|| format!("serial:{}", self.path))
    }
}

/// Peer address → thing, from a listener's `peers` table: `ip:port` entries first, then `ip`.
#[derive(Debug, Clone, Default)]
pub(crate) struct PeerMap {
    by_addr: BTreeMap<SocketAddr, ThingId>,
    by_ip: BTreeMap<IpAddr, ThingId>,
    /// Only peers in the map are served.
    pub only_listed: bool,
}

impl PeerMap {
    fn parse(
        key: &str,
        peers: &BTreeMap<String, String>,
        only_listed: bool,
    ) -> Result<Self, RawConfigError> {
        let mut map = Self {
            only_listed,
            ..Self::default()
        };
        for (peer, thing) in peers {
            let thing_key = format!("{key}.peers.\"{peer}\"");
            let thing = ThingId::new(thing.clone())
                .map_err(|e| invalid(&thing_key, format!("`{thing}` is not a thing id: {e}")))?;
            if let Ok(addr) = peer.parse::<SocketAddr>() {
                map.by_addr.insert(addr, thing);
            } else if let Ok(ip) = peer.parse::<IpAddr>() {
                map.by_ip.insert(ip, thing);
            } else {
                return Err(invalid(thing_key, "not an `ip` or `ip:port`"));
            }
        }
        Ok(map)
    }

    /// The thing `peer` is mapped to.
    pub fn lookup(&self, peer: SocketAddr) -> Option<&ThingId> {
        self.by_addr
            .get(&peer)
            .or_else(|| self.by_ip.get(&peer.ip()))
    }

    /// Whether frames from `peer` are served at all.
    pub fn admits(&self, peer: SocketAddr) -> bool {
        !self.only_listed || self.lookup(peer).is_some()
    }

    /// The `ip:port` entries: things reachable before they are heard.
    pub fn addresses(&self) -> impl Iterator<Item = (&SocketAddr, &ThingId)> {
        self.by_addr.iter()
    }
}

/// What every validated listener has.
#[derive(Debug, Clone)]
pub(crate) struct Common {
    pub name: String,
    pub model: Arc<DeviceModel>,
    pub engine: EngineSettings,
}

/// A validated `[[raw.udp]]`.
#[derive(Debug, Clone)]
pub struct PreparedUdp {
    pub(crate) common: Common,
    pub(crate) address: SocketAddr,
    pub(crate) peers: PeerMap,
    pub(crate) rate_per_sec: f64,
    pub(crate) burst: u32,
}

/// A validated `[[raw.tcp]]`.
#[derive(Debug, Clone)]
pub struct PreparedTcp {
    pub(crate) common: Common,
    pub(crate) address: SocketAddr,
    pub(crate) peers: PeerMap,
    pub(crate) max_connections: usize,
    pub(crate) idle_timeout: Option<Duration>,
    pub(crate) max_bad_frames: u32,
    pub(crate) rate_per_sec: f64,
    pub(crate) burst: u32,
    pub(crate) write_timeout: Duration,
}

/// A validated `[[raw.serial]]`.
#[derive(Debug, Clone)]
pub struct PreparedSerial {
    pub(crate) common: Common,
    pub(crate) config: SerialConfig,
    pub(crate) thing: Option<ThingId>,
}

/// A validated listener of any kind, ready to start.
#[derive(Debug, Clone)]
pub enum PreparedListener {
    /// A UDP port.
    Udp(PreparedUdp),
    /// A TCP port.
    Tcp(PreparedTcp),
    /// A serial port.
    Serial(PreparedSerial),
}

impl PreparedListener {
    /// The gateway name (for logs, and the hub's attachment).
    pub fn name(&self) -> &str {
        &self.common().name
    }

    /// The thing type the listener serves.
    pub fn model(&self) -> &Arc<DeviceModel> {
        &self.common().model
    }

    pub(crate) fn common(&self) -> &Common {
        match self {
            Self::Udp(p) => &p.common,
            Self::Tcp(p) => &p.common,
            Self::Serial(p) => &p.common,
        }
    }
}

fn secs(n: u64) -> Option<Duration> {
    (n > 0).then(|| Duration::from_secs(n))
}

fn positive(key: &str, value: u64) -> Result<(), RawConfigError> {
    if value == 0 {
        return Err(invalid(key, "must be at least 1"));
    }
    Ok(())
}

fn address(key: &str, text: &str, allow_remote: bool) -> Result<SocketAddr, RawConfigError> {
    let addr: SocketAddr = text
        .parse()
        .map_err(|_| invalid(key, format!("`{text}` is not an `ip:port` address")))?;
    if !addr.ip().is_loopback() && !allow_remote {
        return Err(invalid(
            key,
            "raw devices cannot authenticate: a non-loopback address needs `allow_remote = true`",
        ));
    }
    Ok(addr)
}

fn rate(key: &str, rate_per_sec: f64, burst: u32) -> Result<(), RawConfigError> {
    if !(rate_per_sec.is_finite() && rate_per_sec > 0.0) {
        return Err(invalid(
            format!("{key}.rate_per_sec"),
            "must be a positive number",
        ));
    }
    positive(&format!("{key}.burst"), u64::from(burst))
}

/// Loads the model of `type_id`, checking that its framing suits the transport.
fn model(
    key: &str,
    catalog: &TypeCatalog,
    type_id: &str,
    stream: bool,
) -> Result<Arc<DeviceModel>, RawConfigError> {
    let key = format!("{key}.thing_type");
    let ty = catalog
        .get(type_id)
        .ok_or_else(|| RawConfigError::UnknownType {
            key: key.clone(),
            type_id: type_id.to_owned(),
        })?;
    let model = DeviceModel::new(Arc::clone(ty)).map_err(|source| RawConfigError::Model {
        key: key.clone(),
        source,
    })?;
    if stream && model.codec().framer().needs_datagrams() {
        return Err(invalid(
            key,
            format!(
                "type `{type_id}` uses the datagram framing (bindings.{FRAME_BINDING}.framing), which a byte stream cannot carry"
            ),
        ));
    }
    Ok(Arc::new(model))
}

/// Whether the binding correlates replies by the next frame (one request at a time).
fn next_frame_replies(model: &DeviceModel) -> bool {
    model
        .binding()
        .reply
        .as_ref()
        .is_some_and(|r| r.correlate == CorrelateBy::NextFrame)
}

impl RawConfig {
    /// Whether no listener is configured.
    pub fn is_empty(&self) -> bool {
        self.udp.is_empty() && self.tcp.is_empty() && self.serial.is_empty()
    }

    /// Checks every listener against the thing types and compiles their codecs, before any port
    /// opens. Errors name the key (`raw.tcp[1].address`) and the reason.
    pub fn prepare(&self, catalog: &TypeCatalog) -> Result<Vec<PreparedListener>, RawConfigError> {
        let mut out = Vec::new();
        for (i, c) in self.udp.iter().enumerate() {
            let key = format!("raw.udp[{i}]");
            let model = model(&key, catalog, &c.thing_type, false)?;
            rate(&key, c.rate_per_sec, c.burst)?;
            positive(&format!("{key}.max_devices"), c.max_devices as u64)?;
            positive(&format!("{key}.max_queued"), c.max_queued as u64)?;
            let max_in_flight = if next_frame_replies(&model) { 1 } else { 8 };
            out.push(PreparedListener::Udp(PreparedUdp {
                address: address(&format!("{key}.address"), &c.address, c.allow_remote)?,
                peers: PeerMap::parse(&key, &c.peers, c.only_listed_peers)?,
                rate_per_sec: c.rate_per_sec,
                burst: c.burst,
                common: Common {
                    name: c.name(),
                    engine: EngineSettings {
                        offline_after: secs(c.offline_after_secs),
                        set_timeout: Duration::from_millis(c.set_timeout_ms),
                        max_in_flight,
                        max_queued: c.max_queued,
                        max_devices: c.max_devices,
                        implicit_links: true,
                    },
                    model,
                },
            }));
        }
        for (i, c) in self.tcp.iter().enumerate() {
            let key = format!("raw.tcp[{i}]");
            let model = model(&key, catalog, &c.thing_type, true)?;
            rate(&key, c.rate_per_sec, c.burst)?;
            for (name, value) in [
                ("max_connections", c.max_connections as u64),
                ("max_bad_frames", u64::from(c.max_bad_frames)),
                ("max_queued", c.max_queued as u64),
                ("max_in_flight", c.max_in_flight as u64),
                ("max_devices", c.max_devices as u64),
                ("write_timeout_ms", c.write_timeout_ms),
            ] {
                positive(&format!("{key}.{name}"), value)?;
            }
            let max_in_flight = if next_frame_replies(&model) {
                1
            } else {
                c.max_in_flight
            };
            out.push(PreparedListener::Tcp(PreparedTcp {
                address: address(&format!("{key}.address"), &c.address, c.allow_remote)?,
                peers: PeerMap::parse(&key, &c.peers, c.only_listed_peers)?,
                max_connections: c.max_connections,
                idle_timeout: secs(c.idle_timeout_secs),
                max_bad_frames: c.max_bad_frames,
                rate_per_sec: c.rate_per_sec,
                burst: c.burst,
                write_timeout: Duration::from_millis(c.write_timeout_ms),
                common: Common {
                    name: c.name(),
                    engine: EngineSettings {
                        offline_after: secs(c.offline_after_secs),
                        set_timeout: Duration::from_millis(c.set_timeout_ms),
                        max_in_flight,
                        max_queued: c.max_queued,
                        max_devices: c.max_devices,
                        implicit_links: false,
                    },
                    model,
                },
            }));
        }
        for (i, c) in self.serial.iter().enumerate() {
            let key = format!("raw.serial[{i}]");
            let model = model(&key, catalog, &c.thing_type, true)?;
            if c.path.is_empty() {
                return Err(invalid(format!("{key}.path"), "must not be empty"));
            }
            if !(5..=8).contains(&c.data_bits) {
                return Err(invalid(format!("{key}.data_bits"), "must be 5, 6, 7 or 8"));
            }
            if !(1..=2).contains(&c.stop_bits) {
                return Err(invalid(format!("{key}.stop_bits"), "must be 1 or 2"));
            }
            for (name, value) in [
                ("baud_rate", u64::from(c.baud_rate)),
                ("reopen_min_ms", c.reopen_min_ms),
                ("write_timeout_ms", c.write_timeout_ms),
                ("max_queued", c.max_queued as u64),
                ("max_devices", c.max_devices as u64),
            ] {
                positive(&format!("{key}.{name}"), value)?;
            }
            if c.reopen_max_ms < c.reopen_min_ms {
                return Err(invalid(
                    format!("{key}.reopen_max_ms"),
                    "must be at least reopen_min_ms",
                ));
            }
            let thing = c
                .thing
                .as_ref()
                .map(|t| {
                    ThingId::new(t.clone()).map_err(|e| {
                        invalid(
                            format!("{key}.thing"),
                            format!("`{t}` is not a thing id: {e}"),
                        )
                    })
                })
                .transpose()?;
            let max_in_flight = if c.half_duplex || next_frame_replies(&model) {
                1
            } else {
                defaults::max_in_flight()
            };
            out.push(PreparedListener::Serial(PreparedSerial {
                thing,
                config: c.clone(),
                common: Common {
                    name: c.name(),
                    engine: EngineSettings {
                        offline_after: secs(c.offline_after_secs),
                        set_timeout: Duration::from_millis(c.set_timeout_ms),
                        max_in_flight,
                        max_queued: c.max_queued,
                        max_devices: c.max_devices,
                        implicit_links: false,
                    },
                    model,
                },
            }));
        }
        let mut names = HashSet::new();
        for listener in &out {
            if !names.insert(listener.name().to_owned()) {
                return Err(invalid(
                    "raw",
                    format!("two listeners are named `{}`", listener.name()),
                ));
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests;
