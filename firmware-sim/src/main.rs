//! `brume-sim`: simulated devices for demos, tests and load.

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "brume-sim", about = "Simulated Brume devices")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Raw UDP, TCP and serial devices.
    Raw(firmware_sim::raw::cli::RawArgs),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt().with_env_filter(filter).init();
    match Cli::parse().command {
        Command::Raw(args) => firmware_sim::raw::cli::run(args).await,
    }
}
