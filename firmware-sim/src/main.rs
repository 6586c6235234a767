//! `brume-sim`: simulated devices and load tools for Brume.

use std::io::Write as _;
use std::time::Duration;

use clap::{Parser, Subcommand};
use firmware_sim::bench::{BenchOptions, bench_things};

/// Simulated device firmware and load tools for Brume.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Cli {
    /// More log output (-v debug, -vv trace). RUST_LOG overrides it.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Runs a hub in-process with N simulated devices reporting as fast as they can, and one
    /// WAMP subscriber following every thing's state; prints updates/s and events/s.
    BenchThings {
        /// Simulated devices.
        #[arg(long, default_value_t = 1000)]
        devices: usize,
        /// In-process gateways the devices are spread over.
        #[arg(long, default_value_t = 2)]
        gateways: usize,
        /// Seconds to run.
        #[arg(long, default_value_t = 5.0)]
        seconds: f64,
        /// Subscribe over RawSocket with MessagePack instead of in-process.
        #[arg(long)]
        remote: bool,
        /// Seed of the devices' random walks.
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
}

fn init_logging(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info,hub=debug",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .init();
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_logging(cli.verbose);
    match cli.command {
        Command::BenchThings {
            devices,
            gateways,
            seconds,
            remote,
            seed,
        } => {
            if !(seconds > 0.0 && seconds <= 3600.0) {
                anyhow::bail!("--seconds must be between 0 and 3600");
            }
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            let report = runtime.block_on(bench_things(&BenchOptions {
                devices: devices.max(1),
                gateways,
                duration: Duration::from_secs_f64(seconds),
                remote,
                seed,
            }))?;
            writeln!(std::io::stdout(), "{report}")?;
            Ok(())
        }
    }
}
