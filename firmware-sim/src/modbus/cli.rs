//! `brume-sim modbus ...`: simulated Modbus devices on TCP and/or an RTU pseudo-terminal.
//!
//! ```text
//! brume-sim modbus --tcp 127.0.0.1:5020 --device meter:1 --device drive:2
//! brume-sim modbus --rtu-pty --link /tmp/ttyMODBUS --device meter:3
//! ```

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{ArgGroup, Args};
use tokio_util::sync::CancellationToken;

use super::device::DeviceKind;
use super::rtu::RtuOptions;
use super::{SimBus, TcpServer};

/// `brume-sim modbus`
#[derive(Debug, Args)]
#[command(group(ArgGroup::new("transport").required(true).multiple(true).args(["tcp", "rtu_pty"])))]
pub struct ModbusArgs {
    /// Serve Modbus TCP on this address; the unit id of a request selects the device.
    #[arg(long)]
    pub tcp: Option<SocketAddr>,
    /// Serve Modbus RTU on a new pseudo-terminal, whose path is printed.
    #[arg(long)]
    pub rtu_pty: bool,
    /// Also reach the pseudo-terminal at this path (a symlink, removed on exit).
    #[arg(long, requires = "rtu_pty")]
    pub link: Option<PathBuf>,
    /// Milliseconds between an RTU request and its answer.
    #[arg(long, default_value_t = 2)]
    pub turnaround_ms: u64,
    /// An RTU baud rate whose transmission time answers take (default: none, answers at once).
    #[arg(long)]
    pub baud: Option<u32>,
    /// A device, KIND:UNIT with KIND `meter`, `drive` or `bench` and UNIT 1..=247; repeatable.
    /// Default: meter:1 and drive:2.
    #[arg(long = "device", value_name = "KIND:UNIT")]
    pub devices: Vec<DeviceSpec>,
}

/// One `--device` argument.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceSpec {
    /// What the device is.
    pub kind: DeviceKind,
    /// Its unit id.
    pub unit: u8,
}

impl std::str::FromStr for DeviceSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (kind, unit) = s
            .split_once(':')
            .ok_or_else(|| format!("{s:?}: expected KIND:UNIT, e.g. meter:1"))?;
        let unit = unit
            .parse::<u8>()
            .ok()
            .filter(|u| (1..=247).contains(u))
            .ok_or_else(|| format!("{s:?}: the unit must be 1..=247"))?;
        Ok(DeviceSpec {
            kind: kind.parse()?,
            unit,
        })
    }
}

/// What `brume-sim modbus` serves.
#[derive(Debug)]
pub struct Listening {
    /// The devices.
    pub bus: SimBus,
    /// The TCP server, with `--tcp`.
    pub tcp: Option<TcpServer>,
    /// The path a serial client opens, with `--rtu-pty`.
    pub rtu: Option<PathBuf>,
}

/// Builds the bus and starts serving it; everything stops when `shutdown` is cancelled.
pub async fn start(args: ModbusArgs, shutdown: CancellationToken) -> anyhow::Result<Listening> {
    let bus = SimBus::new();
    let specs = if args.devices.is_empty() {
        vec![
            DeviceSpec {
                kind: DeviceKind::Meter,
                unit: 1,
            },
            DeviceSpec {
                kind: DeviceKind::Drive,
                unit: 2,
            },
        ]
    } else {
        args.devices
    };
    for spec in specs {
        bus.add(spec.unit, spec.kind)?;
    }
    let tcp = match args.tcp {
        Some(addr) => {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("listen on {addr}"))?;
            Some(bus.serve_tcp(listener, shutdown.clone())?)
        }
        None => None,
    };
    let rtu = if args.rtu_pty {
        let options = RtuOptions {
            link: args.link,
            turnaround: Duration::from_millis(args.turnaround_ms),
            baud: args.baud,
        };
        Some(
            bus.serve_rtu_pty(options, shutdown)
                .context("open a pseudo-terminal")?,
        )
    } else {
        None
    };
    Ok(Listening { bus, tcp, rtu })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_specs_parse() {
        assert_eq!(
            "drive:2".parse::<DeviceSpec>(),
            Ok(DeviceSpec {
                kind: DeviceKind::Drive,
                unit: 2
            })
        );
        assert!("meter".parse::<DeviceSpec>().is_err());
        assert!("meter:0".parse::<DeviceSpec>().is_err());
        assert!("meter:248".parse::<DeviceSpec>().is_err());
        assert!("pump:3".parse::<DeviceSpec>().is_err());
    }
}
