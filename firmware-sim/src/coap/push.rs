//! [`PushDevice`]: a simulated thermostat that pushes to the hub's CoAP gateway.
//!
//! On start it sends its info (`PUT /things/<id>/info`), observes `/things/<id>/commands`, and
//! then reports its state (`POST /things/<id>/state`, Confirmable) every `report_every`. Its
//! temperature drifts towards the setpoint. For each command it has not seen before (by id):
//! desired values are applied, reported at once and acknowledged with a reply; an action is run
//! and answered with a reply (`boost` → `true`, `fail` → an error, anything else → "unknown
//! action").
//!
//! One task owns the device and a client engine driver; the test or CLI watches what it does
//! through a bounded [`PushActivity`] channel, dropped when nobody reads it.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use gateways::coap::Method;
use gateways::coap::client::{ClientEvent, ObservationId};
use gateways::coap::driver::{ClientDriverConfig, ClientHandle, spawn_client};
use gateways::coap::gateway::PayloadFormat;
use gateways::coap::gateway::payload;
use serde_json::{Map, Value, json};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info, info_span, warn};

use super::{local_bind_for, secret_query};

/// Command ids remembered to skip repeats.
const SEEN_IDS: usize = 256;

/// Settings of a [`PushDevice`].
#[derive(Clone, Debug)]
pub struct PushDeviceConfig {
    /// The gateway's address.
    pub gateway: SocketAddr,
    /// The thing id.
    pub thing: String,
    /// The secret issued at provisioning; `None` sends none (loopback hubs admit known things).
    pub secret: Option<String>,
    /// Thing type announced on first contact (`t=` query parameter).
    pub type_hint: Option<String>,
    /// Encoding of what the device sends: JSON or CBOR.
    pub format: PayloadFormat,
    /// How often state is reported.
    pub report_every: Duration,
    /// Whether to observe the commands resource.
    pub observe_commands: bool,
    /// Firmware version announced in the info.
    pub firmware: String,
}

impl PushDeviceConfig {
    /// A thermostat reporting every 5 s in JSON and observing its commands.
    pub fn new(gateway: SocketAddr, thing: impl Into<String>) -> Self {
        Self {
            gateway,
            thing: thing.into(),
            secret: None,
            type_hint: Some("thermostat".into()),
            format: PayloadFormat::Json,
            report_every: Duration::from_secs(5),
            observe_commands: true,
            firmware: "sim-1.0".into(),
        }
    }
}

/// What the device did, for tests and logs.
#[derive(Clone, Debug, PartialEq)]
pub enum PushActivity {
    /// Its commands observation delivered a representation (the first one, or a change).
    Commands(usize),
    /// It applied desired values.
    Applied(Map<String, Value>),
    /// It ran an action.
    Ran {
        /// The command id (the hub's correlation).
        id: String,
        /// The action's name.
        action: String,
    },
}

/// A running simulated push device.
#[derive(Debug)]
pub struct PushDevice {
    /// What the device does, as it does it.
    pub activity: mpsc::Receiver<PushActivity>,
    local_addr: SocketAddr,
    task: JoinHandle<anyhow::Result<()>>,
}

impl PushDevice {
    /// Starts the device; it runs until `shutdown` is cancelled.
    pub async fn start(
        config: PushDeviceConfig,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Self> {
        let socket = UdpSocket::bind(local_bind_for(config.gateway))
            .await
            .context("binding the device socket")?;
        let parts = spawn_client(
            socket,
            ClientDriverConfig::default(),
            shutdown.child_token(),
        )
        .context("starting the CoAP client")?;
        let (activity_tx, activity) = mpsc::channel(64);
        let span = info_span!("coap_push_device", thing = %config.thing, local = %parts.local_addr);
        let local_addr = parts.local_addr;
        let device = Device {
            thermostat: Thermostat::default(),
            seen: VecDeque::new(),
            client: parts.handle,
            activity: activity_tx,
            query: secret_query(config.secret.as_deref()),
            config,
        };
        let task = tokio::spawn(device.run(parts.events, shutdown).instrument(span));
        Ok(Self {
            activity,
            local_addr,
            task,
        })
    }

    /// The device's own address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Waits for the device to stop.
    pub async fn join(self) -> anyhow::Result<()> {
        self.task.await.context("device task")?
    }
}

/// The simulated appliance: a map of state values, a few of which it understands.
#[derive(Debug)]
struct Thermostat {
    state: Map<String, Value>,
}

impl Default for Thermostat {
    fn default() -> Self {
        let state = json!({"temperature": 19.0, "setpoint": 21.0, "mode": "heat"});
        Self {
            state: state.as_object().cloned().unwrap_or_default(),
        }
    }
}

impl Thermostat {
    /// Moves the temperature a tenth of the way to the setpoint when heating or cooling.
    fn step(&mut self) {
        let number = |v: Option<&Value>| v.and_then(Value::as_f64);
        let (Some(t), Some(sp)) = (
            number(self.state.get("temperature")),
            number(self.state.get("setpoint")),
        ) else {
            return;
        };
        if self.state.get("mode").and_then(Value::as_str) != Some("off") {
            let next = ((t + (sp - t) / 10.0) * 100.0).round() / 100.0;
            self.state.insert("temperature".into(), json!(next));
        }
    }

    fn apply(&mut self, values: &Map<String, Value>) {
        self.state
            .extend(values.iter().map(|(k, v)| (k.clone(), v.clone())));
    }

    fn run(&mut self, action: &str, _input: &Value) -> Result<Value, String> {
        match action {
            "boost" => Ok(Value::Bool(true)),
            "fail" => Err("simulated failure".into()),
            other => Err(format!("unknown action {other}")),
        }
    }
}

struct Device {
    config: PushDeviceConfig,
    thermostat: Thermostat,
    seen: VecDeque<String>,
    client: ClientHandle,
    activity: mpsc::Sender<PushActivity>,
    query: String,
}

impl Device {
    fn uri(&self, resource: &str) -> String {
        format!("/things/{}/{resource}{}", self.config.thing, self.query)
    }

    async fn send(&self, method: Method, resource: &str, body: &Value) -> anyhow::Result<()> {
        let format = self.config.format;
        self.client
            .request(
                self.config.gateway,
                method,
                &self.uri(resource),
                Some(format.content_format()),
                payload::encode(format, body),
            )
            .await
            .with_context(|| format!("sending {resource}"))?;
        Ok(())
    }

    async fn run(
        mut self,
        mut events: mpsc::Receiver<ClientEvent>,
        shutdown: CancellationToken,
    ) -> anyhow::Result<()> {
        let mut first_uri = self.uri("info");
        if let Some(t) = &self.config.type_hint {
            first_uri.push_str(if self.query.is_empty() { "?" } else { "&" });
            first_uri.push_str(&format!("t={t}"));
        }
        let info = json!({"firmware": self.config.firmware});
        self.client
            .request(
                self.config.gateway,
                Method::Put,
                &first_uri,
                Some(self.config.format.content_format()),
                payload::encode(self.config.format, &info),
            )
            .await
            .context("sending info")?;
        let observation = if self.config.observe_commands {
            Some(
                self.client
                    .observe(self.config.gateway, &self.uri("commands"))
                    .await
                    .context("observing commands")?,
            )
        } else {
            None
        };
        info!(gateway = %self.config.gateway, "device started");
        let mut ticker = tokio::time::interval(self.config.report_every);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return Ok(()),
                _ = ticker.tick() => {
                    self.thermostat.step();
                    let state = Value::Object(self.thermostat.state.clone());
                    self.send(Method::Post, "state", &state).await?;
                }
                event = events.recv() => match event {
                    Some(event) => self.on_event(event, observation).await?,
                    None => anyhow::bail!("CoAP client stopped"),
                },
            }
        }
    }

    async fn on_event(
        &mut self,
        event: ClientEvent,
        observation: Option<ObservationId>,
    ) -> anyhow::Result<()> {
        match event {
            ClientEvent::Notification {
                id,
                content_format,
                payload: body,
            } if Some(id) == observation => {
                self.on_commands(content_format, &body).await?;
            }
            ClientEvent::Response { code, .. } if code.is_error() => {
                warn!(?code, "gateway refused a request");
            }
            ClientEvent::Failed { op, error } => warn!(?op, %error, "request failed"),
            _ => {}
        }
        Ok(())
    }

    async fn on_commands(
        &mut self,
        content_format: Option<u16>,
        body: &Bytes,
    ) -> anyhow::Result<()> {
        let format = content_format
            .and_then(PayloadFormat::from_content_format)
            .unwrap_or(PayloadFormat::Json);
        let list = match payload::decode(format, body) {
            Ok(v) => v.get("commands").and_then(Value::as_array).cloned(),
            Err(e) => {
                warn!(error = %e, "unreadable commands representation");
                return Ok(());
            }
        };
        let list = list.unwrap_or_default();
        let _ = self.activity.try_send(PushActivity::Commands(list.len()));
        for command in list {
            let Some(id) = command.get("id").and_then(Value::as_str) else {
                continue;
            };
            if self.seen.iter().any(|s| s == id) {
                continue;
            }
            if self.seen.len() >= SEEN_IDS {
                self.seen.pop_front();
            }
            self.seen.push_back(id.to_owned());
            self.on_command(id, &command).await?;
        }
        Ok(())
    }

    async fn on_command(&mut self, id: &str, command: &Value) -> anyhow::Result<()> {
        match command.get("kind").and_then(Value::as_str) {
            Some("desired") => {
                let values = command
                    .get("values")
                    .and_then(Value::as_object)
                    .cloned()
                    .unwrap_or_default();
                debug!(%id, ?values, "applying desired values");
                self.thermostat.apply(&values);
                let state = Value::Object(self.thermostat.state.clone());
                self.send(Method::Post, "state", &state).await?;
                self.send(Method::Post, "replies", &json!({"id": id}))
                    .await?;
                let _ = self.activity.try_send(PushActivity::Applied(values));
            }
            Some("action") => {
                let action = command.get("action").and_then(Value::as_str).unwrap_or("");
                let input = command.get("input").cloned().unwrap_or(Value::Null);
                let reply = match self.thermostat.run(action, &input) {
                    Ok(output) => json!({"id": id, "output": output}),
                    Err(error) => json!({"id": id, "error": error}),
                };
                debug!(%id, action, "ran action");
                self.send(Method::Post, "replies", &reply).await?;
                let _ = self.activity.try_send(PushActivity::Ran {
                    id: id.to_owned(),
                    action: action.to_owned(),
                });
            }
            other => warn!(%id, kind = ?other, "unknown command kind ignored"),
        }
        Ok(())
    }
}
