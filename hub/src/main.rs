//! `brume`: the hub's command line.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use hub::config::{Config, DEFAULT_TOML};
use hub::router::auth::AuthMethod;
use hub::router::auth::generate::new_principal;

/// mimalloc returns freed memory to the system within milliseconds, so the resident memory the
/// memory budget watches (`hub.max_memory_bytes`) falls once a backlog is shed.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    /// Prints the state of a running hub (readiness, things, gateways, uplink, memory), from
    /// its HTTP listener.
    Status {
        /// The hub's HTTP listener (`[http] listen`): `http://host:port`, or `https://host:port`
        /// when it has `[http.tls]`.
        #[arg(long, default_value = "http://127.0.0.1:8088")]
        url: String,
        /// For an `https://` URL: a PEM file of the certificates to trust (a private CA, or the
        /// listener's self-signed certificate) instead of Mozilla's public roots.
        #[arg(long, value_name = "PEM_FILE")]
        ca: Option<PathBuf>,
        /// Print the raw JSON of `/status` instead.
        #[arg(long)]
        json: bool,
        /// A WAMP ticket of a principal whose role may call `brume.hub.status`, when the
        /// things realm wants authentication (else the `BRUME_TICKET` environment variable).
        #[arg(long)]
        ticket: Option<String>,
    },
    /// Prints the full default configuration, with comments.
    PrintConfig,
    /// Validates a config file and names the offending key if it is wrong.
    CheckConfig { file: PathBuf },
    /// Prints the config entry for a new principal with a fresh secret (or Ed25519 key pair).
    ///
    /// The entry (stdout) holds only what the router needs to check the credential: a ticket
    /// hash, a WAMP-CRA derived key, a public key. The secret for the client is printed once,
    /// on stderr; it is not stored anywhere.
    NewPrincipal {
        /// The realm the principal belongs to (named in the entry's comment).
        #[arg(long, default_value = "brume")]
        realm: String,
        /// The principal's authid (what the client sends in HELLO).
        #[arg(long)]
        authid: String,
        /// The role, as listed under the realm's roles.
        #[arg(long)]
        role: String,
        /// The credential: a ticket, a WAMP-CRA secret (stored as a salted derived key), or an
        /// Ed25519 key pair.
        #[arg(long, value_enum)]
        method: PrincipalMethod,
    },
}

/// Credential kinds `new-principal` can generate.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum PrincipalMethod {
    Ticket,
    Wampcra,
    Cryptosign,
}

impl From<PrincipalMethod> for AuthMethod {
    fn from(m: PrincipalMethod) -> Self {
        match m {
            PrincipalMethod::Ticket => AuthMethod::Ticket,
            PrincipalMethod::Wampcra => AuthMethod::WampCra,
            PrincipalMethod::Cryptosign => AuthMethod::Cryptosign,
        }
    }
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
            let config = Config::load(&file)?;
            // The device gateways' sections against the thing types the hub would load, as
            // `run` checks them before anything opens.
            let catalog = hub::things::load_catalog(&config)?;
            hub::device_gateways::prepare(&config, &catalog)?;
            use std::io::Write as _;
            writeln!(std::io::stdout(), "{}: ok", file.display())?;
            Ok(())
        }
        Command::NewPrincipal {
            realm,
            authid,
            role,
            method,
        } => {
            use std::io::Write as _;
            let p = new_principal(&realm, &authid, &role, method.into())?;
            std::io::stdout().write_all(p.toml.as_bytes())?;
            writeln!(
                std::io::stderr(),
                "\n{} for {authid:?}, shown once; give it to the client and keep it out of the \
                 config:\n{}",
                p.secret_kind,
                p.secret.expose()
            )?;
            Ok(())
        }
        Command::Status {
            url,
            ca,
            json,
            ticket,
        } => {
            let ticket = ticket.or_else(|| std::env::var("BRUME_TICKET").ok());
            let authorization = ticket.map(|t| format!("Bearer {t}"));
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("cannot start the async runtime")?;
            let tls = match &ca {
                None => hub::transport::tls::TlsClientConfig::default(),
                Some(_) if !url.starts_with("https://") => {
                    anyhow::bail!("--ca applies to https:// URLs only, not {url}")
                }
                Some(file) => hub::transport::tls::TlsClientConfig::with_root_pem_file(file)
                    .with_context(|| format!("cannot trust --ca {}", file.display()))?,
            };
            let status = runtime.block_on(hub::http::client::get_json_trusting(
                &tls,
                &url,
                "/status",
                authorization.as_deref(),
            ))?;
            let text = if json {
                serde_json::to_string_pretty(&status)? + "\n"
            } else {
                hub::http::client::render_status(&status)
            };
            use std::io::Write as _;
            std::io::stdout().write_all(text.as_bytes())?;
            if status["readiness"]["ready"].as_bool() == Some(true) {
                Ok(())
            } else {
                // Scripts can tell: 0 ready, 1 not ready (the picture is printed either way).
                std::process::exit(1)
            }
        }
        Command::Run { config } => {
            init_logging(cli.verbose);
            let config = match &config {
                Some(path) => Config::load(path)?,
                None => Config::default(),
            };
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(config.hub.runtime_threads())
                .enable_all()
                .build()
                .context("cannot start the async runtime")?;
            runtime.block_on(serve(config))
        }
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    // Signal handlers first: a signal that arrives while the hub starts must still stop it
    // gracefully rather than kill it.
    use tokio::signal::unix::{SignalKind, signal};
    let mut interrupt = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    let mut terminate = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let hub = match hub::server::Hub::start(config).await {
        Ok(hub) => hub,
        Err(hub::server::ServerError::PartFailed(failure)) => {
            tracing::error!(%failure, status = hub::supervisor::EXIT_FAILED, "the hub stopped because a part of it failed");
            std::process::exit(hub::supervisor::EXIT_FAILED);
        }
        Err(e) => return Err(e.into()),
    };
    tokio::select! {
        _ = interrupt.recv() => {}
        _ = terminate.recv() => {}
        () = hub.failed() => {}
    }
    tracing::info!("shutting down");
    let failure = hub.failure();
    hub.shutdown().await;
    if let Some(failure) = failure {
        // Non-zero, so the service manager starts the hub again from its durable state.
        tracing::error!(%failure, status = hub::supervisor::EXIT_FAILED, "the hub stopped because a part of it failed");
        std::process::exit(hub::supervisor::EXIT_FAILED);
    }
    Ok(())
}
