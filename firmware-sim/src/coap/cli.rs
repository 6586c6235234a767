//! The `brume-sim coap ...` and `brume-sim coap-load` subcommands: argument types and the code
//! that runs them. Printing is left to the binary.

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Args, Subcommand};
use gateways::coap::gateway::PayloadFormat;
use tokio_util::sync::CancellationToken;
use tracing::info;

use super::load::{LOAD_SECRET, LoadConfig, LoadReport, coap_load};
use super::push::{PushActivity, PushDevice, PushDeviceConfig};
use super::server::{ServerDevice, ServerDeviceConfig};

/// `brume-sim coap`: simulated CoAP devices.
#[derive(Args, Debug)]
pub struct CoapArgs {
    #[command(subcommand)]
    pub command: CoapCommand,
}

/// Which kind of device.
#[derive(Subcommand, Debug)]
pub enum CoapCommand {
    /// Thermostats that push state to the hub and observe their commands (work behind NAT).
    Push(PushArgs),
    /// A thermostat that is a CoAP server with observable resources, for the hub to observe.
    Server(ServerArgs),
}

/// `brume-sim coap push`.
#[derive(Args, Debug)]
pub struct PushArgs {
    /// The hub's CoAP gateway.
    #[arg(long, default_value = "127.0.0.1:5683")]
    pub gateway: SocketAddr,
    /// Thing id; with --count N, devices are <thing>-0 .. <thing>-(N-1).
    #[arg(long, default_value = "coap-thermo")]
    pub thing: String,
    /// How many devices.
    #[arg(long, default_value_t = 1)]
    pub count: usize,
    /// The device secret issued at provisioning (sent as `?s=`).
    #[arg(long)]
    pub secret: Option<String>,
    /// Thing type announced on first contact.
    #[arg(long = "type", default_value = "thermostat")]
    pub type_hint: String,
    /// Send CBOR instead of JSON.
    #[arg(long)]
    pub cbor: bool,
    /// Seconds between state reports.
    #[arg(long, default_value_t = 5.0)]
    pub every: f64,
}

/// `brume-sim coap server`.
#[derive(Args, Debug)]
pub struct ServerArgs {
    /// Where the device listens.
    #[arg(long, default_value = "127.0.0.1:5690")]
    pub bind: SocketAddr,
    /// Seconds between temperature changes (0: never).
    #[arg(long, default_value_t = 5.0)]
    pub drift: f64,
}

/// `brume-sim coap-load`.
#[derive(Args, Debug)]
pub struct LoadArgs {
    /// The gateway to load; without it, one is started in-process.
    #[arg(long)]
    pub target: Option<SocketAddr>,
    /// Simulated devices, each with its own socket (load-0 .. load-(N-1)).
    #[arg(long, default_value_t = 32)]
    pub devices: usize,
    /// Requests in flight per device.
    #[arg(long, default_value_t = 4)]
    pub window: usize,
    /// Seconds to send.
    #[arg(long, default_value_t = 5.0)]
    pub seconds: f64,
    /// The secret every device sends (the in-process gateway expects the default).
    #[arg(long, default_value = LOAD_SECRET)]
    pub secret: String,
}

fn seconds(s: f64) -> anyhow::Result<Duration> {
    Duration::try_from_secs_f64(s).map_err(|_| anyhow::anyhow!("{s} is not a duration in seconds"))
}

/// Runs `brume-sim coap ...` until `shutdown` is cancelled.
pub async fn run(args: CoapArgs, shutdown: CancellationToken) -> anyhow::Result<()> {
    match args.command {
        CoapCommand::Push(a) => run_push(a, shutdown).await,
        CoapCommand::Server(a) => {
            let config = ServerDeviceConfig {
                bind: a.bind,
                change_every: (a.drift > 0.0).then(|| seconds(a.drift)).transpose()?,
                ..ServerDeviceConfig::default()
            };
            let device = ServerDevice::start(config, shutdown).await?;
            info!(addr = %device.local_addr(), "CoAP server device listening");
            device.join().await
        }
    }
}

async fn run_push(a: PushArgs, shutdown: CancellationToken) -> anyhow::Result<()> {
    let every = seconds(a.every)?;
    let mut devices = Vec::with_capacity(a.count);
    for n in 0..a.count.max(1) {
        let thing = if a.count > 1 {
            format!("{}-{n}", a.thing)
        } else {
            a.thing.clone()
        };
        let config = PushDeviceConfig {
            secret: a.secret.clone(),
            type_hint: Some(a.type_hint.clone()),
            format: if a.cbor {
                PayloadFormat::Cbor
            } else {
                PayloadFormat::Json
            },
            report_every: every,
            ..PushDeviceConfig::new(a.gateway, thing)
        };
        devices.push(PushDevice::start(config, shutdown.clone()).await?);
    }
    let mut watchers = Vec::with_capacity(devices.len());
    for mut device in devices {
        watchers.push(tokio::spawn(async move {
            while let Some(activity) = device.activity.recv().await {
                match activity {
                    PushActivity::Applied(values) => info!(?values, "applied desired values"),
                    PushActivity::Ran { id, action } => info!(%id, %action, "ran action"),
                    PushActivity::Commands(_) => {}
                }
            }
            device.join().await
        }));
    }
    for w in watchers {
        w.await??;
    }
    Ok(())
}

/// Runs `brume-sim coap-load`.
pub async fn load(a: LoadArgs) -> anyhow::Result<LoadReport> {
    coap_load(LoadConfig {
        target: a.target,
        devices: a.devices,
        window: a.window,
        duration: seconds(a.seconds)?,
        secret: Some(a.secret),
        ..LoadConfig::default()
    })
    .await
}
