//! `brume-sim raw ...`: run simulated raw devices against a hub until Ctrl-C.
//!
//! ```text
//! brume-sim raw udp --hub 127.0.0.1:47808 --id 258 --count 10
//! brume-sim raw tcp --hub 127.0.0.1:7001 --id th-12
//! brume-sim raw serial --link /tmp/ttyMETERS --nodes 3,4
//! brume-sim raw types --out ./types      # the thing types, for the hub's type directory
//! ```

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};
use tracing::{info, warn};

use super::beacon::{Beacon, BeaconConfig, Reading};
use super::meter::{MeterBus, MeterNode};
use super::pty::PtyPort;
use super::thermostat::{State, Thermostat, ThermostatConfig};
use super::types;

/// `brume-sim raw`
#[derive(Debug, Args)]
pub struct RawArgs {
    #[command(subcommand)]
    pub device: RawDevice,
}

/// The raw devices.
#[derive(Debug, Subcommand)]
pub enum RawDevice {
    /// UDP sensor beacons (type `udp_beacon`) sending to the hub.
    Udp {
        /// The hub's UDP listener.
        #[arg(long)]
        hub: SocketAddr,
        /// The first beacon's id (thing `beacon-<id>`).
        #[arg(long, default_value_t = 1)]
        id: u16,
        /// How many beacons, with consecutive ids.
        #[arg(long, default_value_t = 1)]
        count: u16,
        /// Milliseconds between readings.
        #[arg(long, default_value_t = 1000)]
        interval_ms: u64,
        /// The temperature reported, °C.
        #[arg(long, default_value_t = 21.5)]
        temperature: f64,
    },
    /// A TCP thermostat (type `tcp_thermostat`) connecting to the hub; reconnects every second
    /// while the hub is away.
    Tcp {
        /// The hub's TCP listener.
        #[arg(long)]
        hub: SocketAddr,
        /// The thing id.
        #[arg(long, default_value = "th-1")]
        id: String,
        /// Milliseconds between reports.
        #[arg(long, default_value_t = 5000)]
        interval_ms: u64,
    },
    /// Energy meters (type `serial_meter`) on a pseudo-terminal reached at `--link`; point the
    /// hub's `[[raw.serial]]` `path` there.
    Serial {
        /// Where the port appears (a symlink to the pty).
        #[arg(long)]
        link: PathBuf,
        /// Node numbers of the meters on the bus (things `meter-<node>`).
        #[arg(long, value_delimiter = ',', default_value = "3")]
        nodes: Vec<u32>,
        /// Milliseconds between unsolicited reports; 0: speak only when polled.
        #[arg(long, default_value_t = 5000)]
        interval_ms: u64,
    },
    /// Writes the thing types of these devices into a directory (the hub's type directory).
    Types {
        /// The directory.
        #[arg(long)]
        out: PathBuf,
    },
}

/// Runs the chosen devices until Ctrl-C.
pub async fn run(args: RawArgs) -> anyhow::Result<()> {
    match args.device {
        RawDevice::Udp {
            hub,
            id,
            count,
            interval_ms,
            temperature,
        } => {
            let mut beacons = Vec::new();
            for offset in 0..count {
                let config = BeaconConfig {
                    id: id.wrapping_add(offset),
                    hub,
                    interval: Duration::from_millis(interval_ms.max(1)),
                    reading: Reading {
                        temperature,
                        ..Reading::default()
                    },
                };
                beacons.push(Beacon::spawn(config).await?);
            }
            info!(count, %hub, "beacons running");
            tokio::signal::ctrl_c().await?;
            drop(beacons);
        }
        RawDevice::Tcp {
            hub,
            id,
            interval_ms,
        } => {
            let config = ThermostatConfig {
                id,
                hub,
                interval: Duration::from_millis(interval_ms.max(1)),
                state: State::default(),
            };
            tokio::select! {
                r = tokio::signal::ctrl_c() => r?,
                () = keep_connected(config) => {}
            }
        }
        RawDevice::Serial {
            link,
            nodes,
            interval_ms,
        } => {
            let port = PtyPort::new(&link);
            let device_end = port.plug()?;
            let interval = (interval_ms > 0).then(|| Duration::from_millis(interval_ms));
            let bus = MeterBus::spawn(
                device_end,
                nodes.into_iter().map(MeterNode::new).collect(),
                interval,
            )?;
            info!(link = %link.display(), "meters on the line");
            tokio::signal::ctrl_c().await?;
            drop(bus);
            port.unplug();
        }
        RawDevice::Types { out } => {
            types::write_all(&out).with_context(|| format!("write types to {}", out.display()))?;
            info!(dir = %out.display(), "thing types written");
        }
    }
    Ok(())
}

async fn keep_connected(config: ThermostatConfig) {
    loop {
        match Thermostat::connect(config.clone()).await {
            Ok(mut thermostat) => {
                if let Err(e) = thermostat.finished().await {
                    warn!(error = %e, "connection ended");
                }
            }
            Err(e) => warn!(error = %e, "cannot connect"),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
