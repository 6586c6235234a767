//! A TCP thermostat (type `tcp_thermostat`): connects to the hub, sends a report at once and every
//! `interval`, and answers `set` and `calibrate` commands with `{"re": seq, "ok": true}` (or an
//! `error`), followed by a fresh report when its state changed.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use device_models::frames::FrameCodec;
use serde_json::{Map, Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::task::JoinHandle;
use tracing::{debug, info};

use super::types;

/// The thermostat's state.
#[derive(Debug, Clone, PartialEq)]
pub struct State {
    /// Measured, °C (plus the calibration offset).
    pub temperature: f64,
    /// Target, °C.
    pub setpoint: f64,
    /// `off`, `eco` or `comfort`.
    pub mode: String,
}

impl Default for State {
    fn default() -> Self {
        Self {
            temperature: 20.5,
            setpoint: 21.0,
            mode: "eco".to_owned(),
        }
    }
}

/// How to run a thermostat.
#[derive(Debug, Clone)]
pub struct ThermostatConfig {
    /// Its thing id, sent in every report.
    pub id: String,
    /// Where the hub's TCP listener is.
    pub hub: SocketAddr,
    /// Between reports.
    pub interval: Duration,
    /// The initial state.
    pub state: State,
}

/// Counters of a running thermostat.
#[derive(Debug, Default)]
pub struct ThermostatStats {
    /// Commands answered.
    pub commands: AtomicU32,
}

/// A running thermostat; its task (and connection) ends when this is dropped.
#[derive(Debug)]
pub struct Thermostat {
    state: Arc<Mutex<State>>,
    stats: Arc<ThermostatStats>,
    local_addr: SocketAddr,
    task: JoinHandle<anyhow::Result<()>>,
}

impl Drop for Thermostat {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Thermostat {
    /// Connects to the hub and starts reporting.
    pub async fn connect(config: ThermostatConfig) -> anyhow::Result<Thermostat> {
        let stream = TcpStream::connect(config.hub)
            .await
            .with_context(|| format!("connect to {}", config.hub))?;
        let local_addr = stream.local_addr()?;
        let state = Arc::new(Mutex::new(config.state.clone()));
        let stats = Arc::new(ThermostatStats::default());
        let device = Device {
            id: config.id,
            codec: types::codec(types::TCP_THERMOSTAT)?,
            state: Arc::clone(&state),
            stats: Arc::clone(&stats),
        };
        let task = tokio::spawn(device.run(stream, config.interval));
        Ok(Thermostat {
            state,
            stats,
            local_addr,
            task,
        })
    }

    /// The current state.
    pub fn state(&self) -> State {
        self.state.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// The device's end of the connection.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The thermostat's counters.
    pub fn stats(&self) -> &Arc<ThermostatStats> {
        &self.stats
    }

    /// Waits until the connection ends (the hub closed it), with the reason.
    pub async fn finished(&mut self) -> anyhow::Result<()> {
        (&mut self.task).await?
    }
}

struct Device {
    id: String,
    codec: Arc<FrameCodec>,
    state: Arc<Mutex<State>>,
    stats: Arc<ThermostatStats>,
}

fn object(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

impl Device {
    async fn run(self, stream: TcpStream, interval: Duration) -> anyhow::Result<()> {
        info!(id = %self.id, "thermostat connected");
        let (mut read, mut write) = stream.into_split();
        let mut decoder = self.codec.decoder();
        let mut tick = tokio::time::interval(interval);
        let mut buf = [0u8; 1024];
        loop {
            tokio::select! {
                _ = tick.tick() => self.report(&mut write).await?,
                n = read.read(&mut buf) => {
                    let n = n.context("read")?;
                    if n == 0 {
                        info!(id = %self.id, "hub closed the connection");
                        return Ok(());
                    }
                    decoder.push(buf.get(..n).unwrap_or_default());
                    while let Some(frame) = decoder.next_frame()? {
                        let command: Value = match serde_json::from_slice(&frame.payload) {
                            Ok(command) => command,
                            Err(e) => {
                                debug!(error = %e, "command that is not JSON ignored");
                                continue;
                            }
                        };
                        self.command(&command, &mut write).await?;
                    }
                }
            }
        }
    }

    async fn send(
        &self,
        write: &mut OwnedWriteHalf,
        thing: Option<&str>,
        values: Value,
    ) -> anyhow::Result<()> {
        let bytes = self.codec.encode_report(thing, &object(values))?;
        write.write_all(&bytes).await.context("write")?;
        Ok(())
    }

    async fn report(&self, write: &mut OwnedWriteHalf) -> anyhow::Result<()> {
        let state = self.state.lock().map(|s| s.clone()).unwrap_or_default();
        let values = json!({
            "temperature": state.temperature,
            "setpoint": state.setpoint,
            "mode": state.mode,
        });
        self.send(write, Some(&self.id), values).await
    }

    /// Applies one command and answers it.
    async fn command(&self, command: &Value, write: &mut OwnedWriteHalf) -> anyhow::Result<()> {
        let seq = command.get("seq").cloned().unwrap_or(Value::Null);
        let outcome = self.apply(command);
        info!(id = %self.id, %command, ?outcome, "command");
        self.stats.commands.fetch_add(1, Ordering::Relaxed);
        let answer = match &outcome {
            Ok(_) => json!({"re": seq, "ok": true}),
            Err(e) => json!({"re": seq, "error": e}),
        };
        self.send(write, None, answer).await?;
        if outcome == Ok(true) {
            self.report(write).await?;
        }
        Ok(())
    }

    /// Whether the state changed, or why the command is refused.
    fn apply(&self, command: &Value) -> Result<bool, String> {
        let mut state = self.state.lock().map_err(|_| "state poisoned".to_owned())?;
        match command.get("op").and_then(Value::as_str) {
            Some("set") => {
                if let Some(setpoint) = command.get("setpoint") {
                    let setpoint = setpoint
                        .as_f64()
                        .filter(|s| (5.0..=35.0).contains(s))
                        .ok_or_else(|| format!("setpoint {setpoint} out of range"))?;
                    state.setpoint = setpoint;
                }
                if let Some(mode) = command.get("mode") {
                    let mode = mode
                        .as_str()
                        .filter(|m| ["off", "eco", "comfort"].contains(m))
                        .ok_or_else(|| format!("unknown mode {mode}"))?;
                    state.mode = mode.to_owned();
                }
                Ok(true)
            }
            Some("calibrate") => {
                let offset = command
                    .get("offset")
                    .and_then(Value::as_f64)
                    .ok_or("calibrate needs a numeric offset")?;
                state.temperature = ((state.temperature + offset) * 100.0).round() / 100.0;
                Ok(true)
            }
            other => Err(format!("unknown op {other:?}")),
        }
    }
}
