//! Energy meters on a serial bus (type `serial_meter`): CRC-checked `key=value` lines. Each meter
//! (a node number on the bus) reports every `interval` if one is set, answers `poll` with a fresh
//! reading and `set=relay` by switching its relay; answers carry `ack=1` and follow the command at
//! once, as a half-duplex bus requires. Lines for other nodes are ignored.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use device_models::frames::FrameCodec;
use serde_json::{Map, Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::task::JoinHandle;
use tokio_serial::SerialStream;
use tracing::{debug, info};

use super::types;

/// One meter on the bus.
#[derive(Debug, Clone, PartialEq)]
pub struct MeterNode {
    /// Its bus address; the thing id is `meter-<node>`.
    pub node: u32,
    /// V.
    pub voltage: f64,
    /// A.
    pub current: f64,
    /// Whether the relay is closed.
    pub relay: bool,
}

impl MeterNode {
    /// A meter at `node` with plausible readings.
    pub fn new(node: u32) -> Self {
        Self {
            node,
            voltage: 230.1,
            current: 1.25,
            relay: true,
        }
    }

    /// The thing id (`meter-<node>`).
    pub fn thing_id(&self) -> String {
        format!("meter-{}", self.node)
    }
}

/// Counters of a running bus.
#[derive(Debug, Default)]
pub struct MeterStats {
    /// Commands answered.
    pub commands: AtomicU32,
    /// Lines with a bad CRC or that did not parse.
    pub bad_lines: AtomicU32,
}

/// Meters sharing one serial line; the task stops when this is dropped (which closes the port).
#[derive(Debug)]
pub struct MeterBus {
    nodes: Arc<Mutex<Vec<MeterNode>>>,
    stats: Arc<MeterStats>,
    task: JoinHandle<()>,
}

impl Drop for MeterBus {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl MeterBus {
    /// Runs `nodes` on `port` (the device end of a serial line). With an `interval`, every meter
    /// reports on its own at that pace; without, meters speak only when asked.
    pub fn spawn(
        port: SerialStream,
        nodes: Vec<MeterNode>,
        interval: Option<Duration>,
    ) -> anyhow::Result<MeterBus> {
        let nodes = Arc::new(Mutex::new(nodes));
        let stats = Arc::new(MeterStats::default());
        let bus = Bus {
            codec: types::codec(types::SERIAL_METER)?,
            nodes: Arc::clone(&nodes),
            stats: Arc::clone(&stats),
        };
        let task = tokio::spawn(bus.run(port, interval));
        Ok(MeterBus { nodes, stats, task })
    }

    /// The meters' current state.
    pub fn nodes(&self) -> Vec<MeterNode> {
        self.nodes.lock().map(|n| n.clone()).unwrap_or_default()
    }

    /// The bus's counters.
    pub fn stats(&self) -> &Arc<MeterStats> {
        &self.stats
    }
}

struct Bus {
    codec: Arc<FrameCodec>,
    nodes: Arc<Mutex<Vec<MeterNode>>>,
    stats: Arc<MeterStats>,
}

fn reading(node: &MeterNode, ack: bool) -> Map<String, Value> {
    let mut values = json!({
        "voltage": node.voltage,
        "current": node.current,
        "relay": node.relay,
    });
    if ack && let Value::Object(map) = &mut values {
        map.insert("ack".into(), json!(1));
    }
    match values {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

impl Bus {
    async fn run(self, mut port: SerialStream, interval: Option<Duration>) {
        info!("meter bus started");
        let mut decoder = self.codec.decoder();
        let mut tick = tokio::time::interval(interval.unwrap_or(Duration::from_secs(3600)));
        let mut buf = [0u8; 512];
        loop {
            let mut out = Vec::new();
            tokio::select! {
                _ = tick.tick(), if interval.is_some() => {
                    for node in self.nodes.lock().map(|n| n.clone()).unwrap_or_default() {
                        out.push((node.thing_id(), reading(&node, false)));
                    }
                }
                n = port.read(&mut buf) => match n {
                    Ok(n) if n > 0 => {
                        decoder.push(buf.get(..n).unwrap_or_default());
                        loop {
                            match decoder.next_frame() {
                                Ok(None) => break,
                                Ok(Some(frame)) => out.extend(self.command(&frame.payload)),
                                Err(e) => {
                                    debug!(error = %e, "bad line ignored");
                                    self.stats.bad_lines.fetch_add(1, Ordering::Relaxed);
                                }
                            }
                        }
                    }
                    // No host has the port open (EIO on a pty), or end of file: wait for one.
                    _ => tokio::time::sleep(Duration::from_millis(20)).await,
                },
            }
            for (thing, values) in out {
                match self.codec.encode_report(Some(&thing), &values) {
                    Ok(bytes) => {
                        if let Err(e) = port.write_all(&bytes).await {
                            debug!(error = %e, "write failed");
                        }
                    }
                    Err(e) => debug!(error = %e, "cannot encode a line"),
                }
            }
        }
    }

    /// Parses one command line; returns the answer, if it is for one of these meters.
    fn command(&self, payload: &[u8]) -> Option<(String, Map<String, Value>)> {
        let Ok(text) = std::str::from_utf8(payload) else {
            self.stats.bad_lines.fetch_add(1, Ordering::Relaxed);
            return None;
        };
        let pairs: Vec<(&str, &str)> = text.split(';').filter_map(|p| p.split_once('=')).collect();
        let get = |key: &str| pairs.iter().find(|(k, _)| *k == key).map(|(_, v)| *v);
        let node: u32 = get("node")?.parse().ok()?;
        let mut nodes = self.nodes.lock().ok()?;
        let meter = nodes.iter_mut().find(|m| m.node == node)?;
        if get("poll") == Some("1") {
            info!(node, "poll");
        } else if get("set") == Some("relay") {
            meter.relay = matches!(get("value"), Some("1" | "true" | "on"));
            info!(node, relay = meter.relay, "relay switched");
        } else {
            debug!(node, %text, "unknown command ignored");
            return None;
        }
        self.stats.commands.fetch_add(1, Ordering::Relaxed);
        Some((meter.thing_id(), reading(meter, true)))
    }
}
