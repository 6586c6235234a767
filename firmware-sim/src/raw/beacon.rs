//! A UDP sensor beacon (type `udp_beacon`): sends a reading datagram at start and every
//! `interval`, and answers an `identify` command with an ack datagram that echoes its sequence
//! number and carries a fresh reading.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use device_models::frames::{FrameCodec, xor8};
use serde_json::{Map, Value, json};
use tokio::net::UdpSocket;
use tokio::task::JoinHandle;
use tracing::{debug, info};

use super::types;

/// The `identify` command's first byte.
const IDENTIFY: u8 = 0x10;
/// Message kinds of the beacon's datagrams.
const KIND_REPORT: u8 = 1;
const KIND_ACK: u8 = 2;

/// What the beacon measures.
#[derive(Debug, Clone, PartialEq)]
pub struct Reading {
    /// °C, two decimals on the wire.
    pub temperature: f64,
    /// %.
    pub humidity: u8,
    /// %, at most 127 (seven bits).
    pub battery: u8,
    /// Whether it is on its charger.
    pub charging: bool,
}

impl Default for Reading {
    fn default() -> Self {
        Self {
            temperature: 21.5,
            humidity: 40,
            battery: 90,
            charging: false,
        }
    }
}

/// How to run a beacon.
#[derive(Debug, Clone)]
pub struct BeaconConfig {
    /// The 16-bit id; the thing id is `beacon-<id>`.
    pub id: u16,
    /// Where the hub's UDP listener is.
    pub hub: SocketAddr,
    /// Between readings.
    pub interval: Duration,
    /// The first reading.
    pub reading: Reading,
}

/// Counters of a running beacon.
#[derive(Debug, Default)]
pub struct BeaconStats {
    /// Reading datagrams sent.
    pub reports: AtomicU64,
    /// `identify` commands received for this beacon.
    pub identified: AtomicU32,
    /// Seconds asked by the last `identify`.
    pub last_identify_seconds: AtomicU32,
}

/// A running beacon; its task stops when this is dropped.
#[derive(Debug)]
pub struct Beacon {
    id: u16,
    local_addr: SocketAddr,
    reading: Arc<Mutex<Reading>>,
    stats: Arc<BeaconStats>,
    task: JoinHandle<()>,
}

impl Drop for Beacon {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The thing id of beacon `id`.
pub fn thing_id(id: u16) -> String {
    format!("beacon-{id}")
}

impl Beacon {
    /// Binds a socket on the hub's side of the network (loopback for a loopback hub) and starts
    /// sending.
    pub async fn spawn(config: BeaconConfig) -> anyhow::Result<Beacon> {
        let ip: IpAddr = match (config.hub.ip().is_loopback(), config.hub.is_ipv4()) {
            (true, true) => Ipv4Addr::LOCALHOST.into(),
            (true, false) => Ipv6Addr::LOCALHOST.into(),
            (false, true) => Ipv4Addr::UNSPECIFIED.into(),
            (false, false) => Ipv6Addr::UNSPECIFIED.into(),
        };
        let bind = SocketAddr::new(ip, 0);
        let socket = UdpSocket::bind(bind).await.context("bind the beacon")?;
        socket
            .connect(config.hub)
            .await
            .context("connect the beacon")?;
        let local_addr = socket.local_addr()?;
        let codec = types::codec(types::UDP_BEACON)?;
        let reading = Arc::new(Mutex::new(config.reading.clone()));
        let stats = Arc::new(BeaconStats::default());
        let device = Device {
            id: config.id,
            codec,
            reading: Arc::clone(&reading),
            stats: Arc::clone(&stats),
        };
        let task = tokio::spawn(device.run(socket, config.interval));
        Ok(Beacon {
            id: config.id,
            local_addr,
            reading,
            stats,
            task,
        })
    }

    /// The thing id (`beacon-<id>`).
    pub fn thing_id(&self) -> String {
        thing_id(self.id)
    }

    /// The beacon's source address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Changes what the next datagrams say.
    pub fn set_reading(&self, reading: Reading) {
        if let Ok(mut r) = self.reading.lock() {
            *r = reading;
        }
    }

    /// The beacon's counters.
    pub fn stats(&self) -> &Arc<BeaconStats> {
        &self.stats
    }
}

struct Device {
    id: u16,
    codec: Arc<FrameCodec>,
    reading: Arc<Mutex<Reading>>,
    stats: Arc<BeaconStats>,
}

impl Device {
    async fn run(self, socket: UdpSocket, interval: Duration) {
        info!(id = self.id, hub = ?socket.peer_addr().ok(), "beacon started");
        let mut tick = tokio::time::interval(interval);
        let mut buf = [0u8; 64];
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    self.send(&socket, KIND_REPORT, 0).await;
                    self.stats.reports.fetch_add(1, Ordering::Relaxed);
                }
                received = socket.recv(&mut buf) => match received {
                    Ok(n) => {
                        if let Some(seq) = self.identify(buf.get(..n).unwrap_or_default()) {
                            self.send(&socket, KIND_ACK, seq).await;
                        }
                    }
                    // ICMP port unreachable while the hub is not listening: keep going.
                    Err(e) => debug!(error = %e, "receive failed"),
                },
            }
        }
    }

    /// Reads an `identify` command for this beacon; returns its sequence number.
    fn identify(&self, datagram: &[u8]) -> Option<u8> {
        let (&check, body) = datagram.split_last()?;
        if xor8(body) != check {
            debug!("command with a bad checksum ignored");
            return None;
        }
        let [IDENTIFY, seq, id_hi, id_lo, seconds] = *body else {
            debug!(len = body.len(), "unknown command ignored");
            return None;
        };
        if u16::from_be_bytes([id_hi, id_lo]) != self.id {
            return None;
        }
        info!(id = self.id, seconds, "identify: blinking");
        self.stats.identified.fetch_add(1, Ordering::Relaxed);
        self.stats
            .last_identify_seconds
            .store(u32::from(seconds), Ordering::Relaxed);
        Some(seq)
    }

    async fn send(&self, socket: &UdpSocket, kind: u8, seq: u8) {
        let reading = self.reading.lock().map(|r| r.clone()).unwrap_or_default();
        let values: Map<String, Value> = match json!({
            "_kind": kind,
            "seq": seq,
            "temperature": reading.temperature,
            "humidity": reading.humidity,
            "battery": reading.battery.min(127),
            "charging": u8::from(reading.charging),
        }) {
            Value::Object(map) => map,
            _ => Map::new(),
        };
        match self.codec.encode_report(Some(&thing_id(self.id)), &values) {
            Ok(bytes) => {
                if let Err(e) = socket.send(&bytes).await {
                    debug!(error = %e, "send failed");
                }
            }
            Err(e) => debug!(error = %e, "cannot encode a reading"),
        }
    }
}
