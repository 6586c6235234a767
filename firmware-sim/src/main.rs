//! `brume-sim`: simulated devices and load generators.

use std::io::Write as _;

use clap::{Parser, Subcommand};
use firmware_sim::coap;
use tokio_util::sync::CancellationToken;

/// Simulated Brume devices and load generators.
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
    /// Simulated CoAP devices (`push`, `server`).
    Coap(coap::cli::CoapArgs),
    /// Measures confirmable CoAP POSTs per second and their latency against a gateway.
    CoapLoad(coap::cli::LoadArgs),
}

fn init_logging(verbose: u8) {
    let default = match verbose {
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt().with_env_filter(filter).init();
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_logging(cli.verbose);
    let shutdown = CancellationToken::new();
    let on_signal = shutdown.clone();
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        on_signal.cancel();
    });
    match cli.command {
        Command::Coap(args) => {
            if matches!(args.command, coap::cli::CoapCommand::Server(_)) {
                writeln!(
                    std::io::stdout(),
                    "# binding for a thing type:\n{}",
                    coap::SERVER_DEVICE_BINDING
                )?;
            }
            coap::cli::run(args, shutdown).await
        }
        Command::CoapLoad(args) => {
            let report = coap::cli::load(args).await?;
            writeln!(std::io::stdout(), "{report}")?;
            Ok(())
        }
    }
}
