//! `brume`: the hub's command line.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use hub::config::{Config, DEFAULT_TOML};
use tokio_util::sync::CancellationToken;

/// Brume: an IoT edge hub with a WAMP router, device gateways and a cloud uplink.
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
    /// Runs the hub (on the embedded defaults unless --config is given).
    Run {
        /// A TOML config file; keys it omits keep their defaults.
        #[arg(short, long)]
        config: Option<PathBuf>,
    },
    /// Prints the full default configuration, with comments.
    PrintConfig,
    /// Validates a config file and names the offending key if it is wrong.
    CheckConfig { file: PathBuf },
}

fn init_logging(verbose: u8) {
    let default = match verbose {
        0 => "info",
        1 => "debug",
        _ => "trace",
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
    match cli.command {
        Command::PrintConfig => {
            use std::io::Write as _;
            std::io::stdout().write_all(DEFAULT_TOML.as_bytes())?;
            Ok(())
        }
        Command::CheckConfig { file } => {
            Config::load(&file)?;
            use std::io::Write as _;
            writeln!(std::io::stdout(), "{}: ok", file.display())?;
            Ok(())
        }
        Command::Run { config } => {
            init_logging(cli.verbose);
            let config = match &config {
                Some(path) => Config::load(path)?,
                None => Config::default(),
            };
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("cannot start the async runtime")?;
            runtime.block_on(serve(config))
        }
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let stop = CancellationToken::new();
    let hub = hub::server::Hub::start(config).await?;
    let signal_stop = stop.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutting down");
        signal_stop.cancel();
    });
    stop.cancelled().await;
    hub.shutdown().await;
    Ok(())
}

/// Resolves on SIGINT or SIGTERM.
async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGTERM; only SIGINT stops the hub");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
