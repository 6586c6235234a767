//! [`ServerDevice`]: a simulated thermostat that is a CoAP server, for the hub to observe.
//!
//! | resource | methods | representation |
//! | --- | --- | --- |
//! | `/sensors/temperature` | GET, Observe | JSON number; changes every `change_every`, or on [`ServerDevice::set_temperature`] |
//! | `/config/setpoint` | GET, Observe, PUT | JSON number from 5 to 35 (JSON or CBOR on PUT) |
//! | `/actions/boost` | POST | input `{"minutes": n}`; answers `true` |
//! | `/.well-known/core` | GET | CoRE link format listing the above |
//!
//! [`SERVER_DEVICE_BINDING`] is the `[bindings.coap]` table that maps these resources onto the
//! built-in `thermostat` type's `temperature` and `setpoint` properties and a `boost` action.
//!
//! One task owns the state and the engine's server driver; controls arrive through a bounded
//! channel.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use gateways::coap::driver::{ServerDriverConfig, ServerHandle, spawn_server};
use gateways::coap::gateway::PayloadFormat;
use gateways::coap::gateway::payload;
use gateways::coap::server::{Request, Response, ServerEvent};
use gateways::coap::{CONTENT_FORMAT_JSON, Method, ResponseType};
use rand::Rng;
use serde_json::{Value, json};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info, info_span};

/// The `[bindings.coap]` table mapping a [`ServerDevice`] onto the `thermostat` type.
pub const SERVER_DEVICE_BINDING: &str = r#"[bindings.coap]
format = "json"

[bindings.coap.properties.temperature]
path = "/sensors/temperature"

[bindings.coap.properties.setpoint]
path = "/config/setpoint"

[bindings.coap.actions.boost]
path = "/actions/boost"
"#;

const TEMPERATURE: &str = "sensors/temperature";
const SETPOINT: &str = "config/setpoint";
const BOOST: &str = "actions/boost";
const LINK_FORMAT: u16 = 40;

/// Settings of a [`ServerDevice`].
#[derive(Clone, Debug)]
pub struct ServerDeviceConfig {
    /// Where it listens (`127.0.0.1:0` picks a port).
    pub bind: SocketAddr,
    /// How often the temperature drifts by itself; `None` only changes it on request.
    pub change_every: Option<Duration>,
    /// The temperature it starts at.
    pub temperature: f64,
}

impl Default for ServerDeviceConfig {
    fn default() -> Self {
        Self {
            bind: SocketAddr::from(([127, 0, 0, 1], 5690)),
            change_every: Some(Duration::from_secs(5)),
            temperature: 20.0,
        }
    }
}

enum Control {
    SetTemperature(f64),
}

/// A running simulated CoAP-server device.
#[derive(Debug)]
pub struct ServerDevice {
    local_addr: SocketAddr,
    control: mpsc::Sender<Control>,
    boosts: mpsc::Receiver<Value>,
    task: JoinHandle<anyhow::Result<()>>,
}

impl ServerDevice {
    /// Binds and starts the device; it runs until `shutdown` is cancelled.
    pub async fn start(
        config: ServerDeviceConfig,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Self> {
        let socket = UdpSocket::bind(config.bind)
            .await
            .with_context(|| format!("binding {}", config.bind))?;
        let parts = spawn_server(
            socket,
            ServerDriverConfig::default(),
            shutdown.child_token(),
        )
        .context("starting the CoAP server")?;
        let (control, control_rx) = mpsc::channel(16);
        let (boost_tx, boosts) = mpsc::channel(16);
        let state = State {
            temperature: config.temperature,
            setpoint: 21.0,
            server: parts.handle,
            boosts: boost_tx,
        };
        let span = info_span!("coap_server_device", local = %parts.local_addr);
        let task = tokio::spawn(
            state
                .run(parts.events, control_rx, config.change_every, shutdown)
                .instrument(span),
        );
        Ok(Self {
            local_addr: parts.local_addr,
            control,
            boosts,
            task,
        })
    }

    /// Where the device listens.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Changes the temperature, notifying its observers.
    pub async fn set_temperature(&self, value: f64) -> anyhow::Result<()> {
        self.control
            .send(Control::SetTemperature(value))
            .await
            .map_err(|_| anyhow::anyhow!("device stopped"))
    }

    /// The next `boost` input the device received.
    pub async fn next_boost(&mut self) -> Option<Value> {
        self.boosts.recv().await
    }

    /// Waits for the device to stop.
    pub async fn join(self) -> anyhow::Result<()> {
        self.task.await.context("device task")?
    }
}

struct State {
    temperature: f64,
    setpoint: f64,
    server: ServerHandle,
    boosts: mpsc::Sender<Value>,
}

impl State {
    async fn run(
        mut self,
        mut events: mpsc::Receiver<ServerEvent>,
        mut control: mpsc::Receiver<Control>,
        change_every: Option<Duration>,
        shutdown: CancellationToken,
    ) -> anyhow::Result<()> {
        let mut drift = change_every.map(|every| {
            let mut i = tokio::time::interval(every);
            i.reset();
            i
        });
        info!("CoAP server device ready");
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return Ok(()),
                event = events.recv() => match event {
                    Some(ServerEvent::Request(req)) => {
                        let response = self.answer(&req).await?;
                        self.server.respond(req.id, response).await?;
                    }
                    Some(other) => debug!(event = ?other, "observer change"),
                    None => anyhow::bail!("CoAP server stopped"),
                },
                Some(Control::SetTemperature(t)) = control.recv() => self.set_temperature(t).await?,
                _ = tick(&mut drift) => {
                    let step = rand::rng().random_range(-0.2..=0.2);
                    let t = ((self.temperature + step) * 100.0).round() / 100.0;
                    self.set_temperature(t).await?;
                }
            }
        }
    }

    async fn set_temperature(&mut self, t: f64) -> anyhow::Result<()> {
        self.temperature = t;
        let n = self
            .server
            .notify_content(TEMPERATURE, CONTENT_FORMAT_JSON, json_bytes(&json!(t)))
            .await?;
        debug!(temperature = t, observers = n, "temperature changed");
        Ok(())
    }

    async fn answer(&mut self, req: &Request) -> anyhow::Result<Response> {
        let path = req.path.join("/");
        Ok(match (req.method, path.as_str()) {
            (Method::Get, TEMPERATURE) => content(&json!(self.temperature)),
            (Method::Get, SETPOINT) => content(&json!(self.setpoint)),
            (Method::Put, SETPOINT) => match read_number(req) {
                Some(v) if (5.0..=35.0).contains(&v) => {
                    self.setpoint = v;
                    info!(setpoint = v, "setpoint written");
                    self.server
                        .notify_content(SETPOINT, CONTENT_FORMAT_JSON, json_bytes(&json!(v)))
                        .await?;
                    Response::new(ResponseType::Changed)
                }
                _ => diagnostic(
                    ResponseType::BadRequest,
                    "setpoint must be a number from 5 to 35",
                ),
            },
            (Method::Post, BOOST) => {
                let input = read_value(req).unwrap_or(Value::Null);
                info!(input = %input, "boost");
                let _ = self.boosts.try_send(input);
                Response {
                    content_format: Some(CONTENT_FORMAT_JSON),
                    payload: json_bytes(&Value::Bool(true)),
                    ..Response::new(ResponseType::Changed)
                }
            }
            (Method::Get, ".well-known/core") => Response::content(
                LINK_FORMAT,
                format!("</{TEMPERATURE}>;obs;rt=\"temperature\",</{SETPOINT}>;obs,</{BOOST}>"),
            ),
            (_, TEMPERATURE | SETPOINT | BOOST | ".well-known/core") => {
                Response::new(ResponseType::MethodNotAllowed)
            }
            _ => Response::new(ResponseType::NotFound),
        })
    }
}

async fn tick(interval: &mut Option<tokio::time::Interval>) {
    match interval {
        Some(i) => {
            i.tick().await;
        }
        None => std::future::pending().await,
    }
}

fn json_bytes(v: &Value) -> Bytes {
    payload::encode(PayloadFormat::Json, v)
}

fn content(v: &Value) -> Response {
    Response::content(CONTENT_FORMAT_JSON, json_bytes(v))
}

fn diagnostic(code: ResponseType, text: &'static str) -> Response {
    Response {
        payload: Bytes::from_static(text.as_bytes()),
        ..Response::new(code)
    }
}

fn read_value(req: &Request) -> Option<Value> {
    let format = match req.content_format {
        None => PayloadFormat::Json,
        Some(cf) => PayloadFormat::from_content_format(cf)?,
    };
    payload::decode(format, &req.payload).ok()
}

fn read_number(req: &Request) -> Option<f64> {
    read_value(req)?.as_f64()
}
