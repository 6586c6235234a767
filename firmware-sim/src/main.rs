//! `brume-sim`: simulated devices and load tools for Brume.

use std::io::{IsTerminal as _, Write as _};
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};
use firmware_sim::bench::{BenchOptions, bench_things};
use firmware_sim::coap;
use firmware_sim::load::target::{brume_binary, rss_kib, settle, start_brume};
use firmware_sim::load::wamp::{self, WampLoad};
use hub::wamp::Serializer;
use tokio_util::sync::CancellationToken;

/// The generator shares the machine with the system it measures: the same allocator as the hub
/// keeps its own cost per message low, for every peer alike.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser, Debug)]
#[command(version, about = "Simulated devices and load tools for Brume")]
struct Cli {
    /// More log output (-v info, -vv debug). RUST_LOG overrides it.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    /// Print a progress line to stderr about once a second while a load or bench command runs
    /// (elapsed time, messages so far, rate); the default when stderr is a terminal.
    #[arg(long, global = true, conflicts_with = "quiet")]
    progress: bool,
    /// No progress lines.
    #[arg(long, global = true)]
    quiet: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Ser {
    Json,
    Msgpack,
}

/// A table of `brume-sim bench`.
#[derive(Clone, Copy, Debug, ValueEnum)]
enum BenchSection {
    Wamp,
    Mqtt,
    Coap,
    Modbus,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// The side-by-side benchmark: Brume, Crossbar.io (if installed) and a plain frame relay,
    /// started here on loopback and driven by the same generator; then MQTT against mosquitto,
    /// CoAP against libcoap and Modbus TCP against pymodbus; prints markdown tables.
    /// Exits non-zero, after printing the report, if any message was lost.
    Bench {
        /// One short round per scenario (under two minutes), 2,000 idle connections only.
        #[arg(long)]
        quick: bool,
        /// Rounds per scenario, the median reported (default: 1 with --quick, else 3).
        #[arg(long, value_parser = clap::value_parser!(u16).range(1..=100))]
        rounds: Option<u16>,
        /// Measure every Brume scenario also with /metrics scraped once a second (alternating
        /// without and with in each round) and report both.
        #[arg(long)]
        scrape_metrics: bool,
        /// Run only one table: WAMP (Brume, Crossbar.io, relay), MQTT (Brume, mosquitto), CoAP
        /// (Brume, libcoap) or Modbus TCP (Brume, pymodbus).
        #[arg(long, value_enum)]
        only: Option<BenchSection>,
    },
    /// Uplink replay: queue N events while the cloud router is unreachable, then measure how
    /// fast they reach a subscriber on Crossbar.io once the link opens.
    BenchUplink {
        #[arg(long, default_value_t = 20_000)]
        events: usize,
        /// Also replay into a second brume process, to show the uplink's own limit.
        #[arg(long)]
        with_brume_cloud: bool,
    },
    /// MQTT telemetry from N devices to one WAMP subscriber through a brume started here (or
    /// a running broker with --broker and --wamp), QoS 0 or 1: messages/s and latency.
    LoadMqtt {
        #[arg(long, default_value_t = 100)]
        devices: usize,
        #[arg(long, default_value_t = 0)]
        qos: u8,
        #[arg(long, default_value_t = 5)]
        seconds: u64,
        /// host:port of a running MQTT broker (with --wamp, the hub's RawSocket URL).
        #[arg(long, requires = "wamp")]
        broker: Option<std::net::SocketAddr>,
        #[arg(long)]
        wamp: Option<String>,
    },
    /// A RawSocket relay with no routing (used by `bench` as the machine's limit); prints its URL.
    Relay,
    /// Measures WAMP pub/sub and RPC against a hub: `--url` for a running one, or a `brume`
    /// started from the same build directory.
    LoadWamp {
        /// rs://host:port or ws://host:port/path of a running router; default: start brume.
        #[arg(long)]
        url: Option<String>,
        #[arg(long, default_value = "brume")]
        realm: String,
        #[arg(long, value_enum, default_value = "msgpack")]
        serializer: Ser,
        /// Seconds measured per scenario (after one second of warm-up).
        #[arg(long, default_value_t = 5)]
        seconds: u64,
        /// Payload size in bytes.
        #[arg(long, default_value_t = 32)]
        payload: usize,
    },
    /// Simulated CoAP devices (`push`, `server`).
    Coap(coap::cli::CoapArgs),
    /// Measures confirmable CoAP POSTs per second and their latency against a gateway.
    CoapLoad(coap::cli::LoadArgs),
    /// Simulated MQTT devices (one with --id, or a fleet) reporting state, answering actions.
    Mqtt(firmware_sim::mqtt::MqttArgs),
    /// Raw UDP, TCP and serial devices.
    Raw(firmware_sim::raw::cli::RawArgs),
    /// Simulated Modbus devices (energy meters, motor drives) over Modbus TCP and/or RTU on a
    /// pseudo-terminal; prints where they listen and runs until Ctrl-C.
    Modbus(firmware_sim::modbus::cli::ModbusArgs),
    /// Soak: N MQTT thing devices reporting once a second (QoS 1) for M minutes through a brume
    /// started here, one WAMP subscriber counting their state EVENTs, the hub's memory sampled.
    /// Exits non-zero, after printing the report, if anything was lost or the memory limit hit.
    Soak(firmware_sim::load::soak::SoakArgs),
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
        1 => "info",
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
    // Device simulators and the CoAP load report what they do by default.
    let verbose = match cli.command {
        Command::Raw(_) | Command::Modbus(_) | Command::CoapLoad(_) => cli.verbose.max(1),
        _ => cli.verbose,
    };
    init_logging(verbose);
    if cli.progress || (!cli.quiet && std::io::stderr().is_terminal()) {
        firmware_sim::progress::start();
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match cli.command {
        Command::Bench {
            quick,
            rounds,
            scrape_metrics,
            only,
        } => {
            use firmware_sim::load::bench::{BenchPlan, Section, run};
            let mut plan = if quick {
                BenchPlan::quick()
            } else {
                BenchPlan::full()
            };
            if let Some(n) = rounds {
                plan.rounds = usize::from(n);
            }
            plan.scrape_metrics = scrape_metrics;
            plan.only = only.map(|s| match s {
                BenchSection::Wamp => Section::Wamp,
                BenchSection::Mqtt => Section::Mqtt,
                BenchSection::Coap => Section::Coap,
                BenchSection::Modbus => Section::Modbus,
            });
            let report = rt.block_on(run(plan))?;
            let mut out = std::io::stdout();
            out.write_all(report.text.as_bytes())?;
            out.flush()?;
            if report.lost > 0 {
                anyhow::bail!("{} messages lost (see the notes)", report.lost);
            }
            Ok(())
        }
        Command::BenchUplink {
            events,
            with_brume_cloud,
        } => {
            use firmware_sim::load::uplink::{Cloud, replay};
            let mut clouds = vec![("Crossbar.io", Cloud::Crossbar)];
            if with_brume_cloud {
                clouds.push(("a second brume", Cloud::Brume));
            }
            for (name, cloud) in clouds {
                let f = rt.block_on(replay(events, cloud))?;
                writeln!(
                    std::io::stdout(),
                    "uplink replay of {} events into {name}: {:.0} events/s (CPU: hub {:.0}%, cloud router {:.0}%)",
                    f.events,
                    f.per_sec,
                    f.hub_cpu,
                    f.cloud_cpu
                )?;
            }
            Ok(())
        }
        Command::LoadMqtt { devices, qos, seconds, broker, wamp } => rt.block_on(async {
            use firmware_sim::load::mqtt::{Sink, TelemetryLoad, telemetry};
            let qos = if qos == 0 { rumqttc::QoS::AtMostOnce } else { rumqttc::QoS::AtLeastOnce };
            let mut started = None;
            let types = tempfile::tempdir()?;
            let (broker, wamp) = match (broker, wamp) {
                (Some(b), Some(w)) => (b, w),
                _ => {
                    std::fs::write(types.path().join("bench_sensor.toml"), firmware_sim::load::bench::BENCH_SENSOR)?;
                    let settings = format!(
                        "router.outbound_queue = 4096\nmqtt.max_connections = 20000\nthings.provisioning = \"auto\"\n\
                         things.auto_type = \"bench_sensor\"\nthings.types_dir = {:?}\n",
                        types.path().display().to_string()
                    );
                    let p = start_brume(&brume_binary()?, &settings)?;
                    let b = p.mqtt.context("brume did not report its MQTT address")?;
                    let w = p.rawsocket.clone();
                    writeln!(std::io::stdout(), "brume pid {}", p.pid())?;
                    started = Some(p);
                    (b, w)
                }
            };
            let load = TelemetryLoad {
                broker,
                sink: Sink::Wamp(wamp),
                devices: devices.max(1),
                qos,
                warmup: Duration::from_secs(1),
                measure: Duration::from_secs(seconds),
                window: firmware_sim::load::bench::MQTT_WINDOW,
                cpu_of: started.as_ref().map(|p| vec![p.pid()]).unwrap_or_default(),
            };
            let f = telemetry(&load).await?;
            writeln!(
                std::io::stdout(),
                "MQTT telemetry, {devices} devices, QoS {}: {:.0} messages/s delivered to WAMP, p50 {:.0} µs, p99 {:.0} µs, {} sent, {} lost",
                if qos == rumqttc::QoS::AtMostOnce { 0 } else { 1 },
                f.per_sec, f.p50_us, f.p99_us, f.sent, f.lost
            )?;
            drop(started);
            Ok(())
        }),
        Command::Relay => rt.block_on(async {
            let url = firmware_sim::load::relay::start().await?;
            use std::io::Write as _;
            let mut out = std::io::stdout();
            writeln!(out, "{url}")?;
            out.flush()?;
            std::future::pending::<()>().await;
            Ok(())
        }),
        Command::LoadWamp {
            url,
            realm,
            serializer,
            seconds,
            payload,
        } => rt.block_on(load_wamp(url, realm, serializer, seconds, payload)),
        Command::Coap(args) => rt.block_on(coap_devices(args)),
        Command::CoapLoad(args) => rt.block_on(async {
            let report = coap::cli::load(args).await?;
            use std::io::Write as _;
            writeln!(std::io::stdout(), "{report}")?;
            Ok(())
        }),
        Command::Mqtt(args) => {
            let summary = rt.block_on(firmware_sim::mqtt::run_cli(args))?;
            std::io::Write::write_all(&mut std::io::stdout(), summary.as_bytes())?;
            Ok(())
        }
        Command::Raw(args) => rt.block_on(firmware_sim::raw::cli::run(args)),
        Command::Modbus(args) => rt.block_on(modbus_devices(args)),
        Command::Soak(args) => {
            let report = rt.block_on(firmware_sim::load::soak::run(&args))?;
            let mut out = std::io::stdout();
            write!(out, "{report}")?;
            out.flush()?;
            let failures = report.failures();
            if !failures.is_empty() {
                anyhow::bail!("soak failed: {}", failures.join("; "));
            }
            Ok(())
        }
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
            let report = rt.block_on(bench_things(&BenchOptions {
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

/// Logs to stderr (`RUST_LOG` sets the level, `info` by default).
/// Runs simulated CoAP devices until Ctrl-C.
async fn coap_devices(args: coap::cli::CoapArgs) -> anyhow::Result<()> {
    init_logging(1);
    let shutdown = CancellationToken::new();
    let on_signal = shutdown.clone();
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        on_signal.cancel();
    });
    if matches!(args.command, coap::cli::CoapCommand::Server(_)) {
        use std::io::Write as _;
        writeln!(
            std::io::stdout(),
            "# binding for a thing type:\n{}",
            coap::SERVER_DEVICE_BINDING
        )?;
    }
    coap::cli::run(args, shutdown).await
}

/// Runs simulated Modbus devices until Ctrl-C; prints the devices and where they listen.
async fn modbus_devices(args: firmware_sim::modbus::cli::ModbusArgs) -> anyhow::Result<()> {
    let shutdown = CancellationToken::new();
    let listening = firmware_sim::modbus::cli::start(args, shutdown.clone()).await?;
    let mut out = std::io::stdout();
    for (unit, kind) in listening.bus.units() {
        writeln!(out, "unit {unit}: {kind} (thing type {})", kind.type_id())?;
    }
    if let Some(tcp) = &listening.tcp {
        writeln!(out, "modbus tcp {}", tcp.local_addr())?;
    }
    if let Some(path) = &listening.rtu {
        writeln!(out, "modbus rtu {}", path.display())?;
    }
    out.flush()?;
    tokio::signal::ctrl_c().await?;
    shutdown.cancel();
    // Let the RTU line remove its link.
    tokio::time::sleep(Duration::from_millis(50)).await;
    Ok(())
}

async fn load_wamp(
    url: Option<String>,
    realm: String,
    ser: Ser,
    seconds: u64,
    payload: usize,
) -> anyhow::Result<()> {
    let serializer = match ser {
        Ser::Json => Serializer::Json,
        Ser::Msgpack => Serializer::MsgPack,
    };
    let mut started = None;
    let url = match url {
        Some(u) => u,
        None => {
            let p = start_brume(&brume_binary()?, "").context("starting brume")?;
            let u = p.rawsocket.clone();
            started = Some(p);
            u
        }
    };
    let cfg = WampLoad {
        url: url.clone(),
        realm,
        serializer,
        payload_bytes: payload,
        warmup: Duration::from_secs(1),
        measure: Duration::from_secs(seconds),
        cpu_of: started.iter().map(|p| p.pid()).collect(),
    };
    let mut out = String::new();
    use std::fmt::Write as _;
    writeln!(
        out,
        "target: {url} ({serializer:?}, {payload}-byte payload, {seconds} s per scenario)"
    )?;
    if let Some(p) = &started {
        settle();
        writeln!(
            out,
            "brume: listening {:.0} ms after spawn, idle RSS {} KiB",
            p.started_in.as_secs_f64() * 1e3,
            rss_kib(p.pid())?
        )?;
    }
    writeln!(out, "| scenario | result |")?;
    writeln!(out, "|---|---|")?;
    for subs in [1, 10] {
        let f = wamp::pubsub(&cfg, subs, 1000).await?;
        writeln!(
            out,
            "| pub/sub 1 → {subs} | {:.0} events/s delivered |",
            f.delivered_per_sec
        )?;
    }
    let seq = wamp::rpc(&cfg, 1).await?;
    writeln!(
        out,
        "| RPC sequential | {:.0} calls/s, p50 {:.0} µs, p99 {:.0} µs |",
        seq.calls_per_sec, seq.p50_us, seq.p99_us
    )?;
    let par = wamp::rpc(&cfg, 100).await?;
    writeln!(
        out,
        "| RPC 100 in flight | {:.0} calls/s, p50 {:.0} µs, p99 {:.0} µs |",
        par.calls_per_sec, par.p50_us, par.p99_us
    )?;
    if let Some(p) = &started {
        writeln!(out, "brume RSS after load: {} KiB", rss_kib(p.pid())?)?;
    }
    std::io::stdout().write_all(out.as_bytes())?;
    Ok(())
}
