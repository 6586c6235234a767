//! `brume-sim soak`: a fleet of MQTT thing devices reporting at a steady rate for minutes,
//! against a `brume` started here, with the hub's resident memory sampled all along and every
//! report accounted for.
//!
//! Each device logs in as its own thing (user name = client id = `soak-<i>`, no password; the
//! hub provisions it automatically as a `soak_sensor`), sends one report on connecting, then
//! `rate` reports a second at its own phase (drawn from a seeded generator) for the whole run:
//! `{"seq": n, "sent_us": t}` on `things/soak-<i>/state`, QoS 1 by default, so each report is
//! acknowledged once the hub has committed it. Connects are spread at `connect_rate` a second;
//! the clock starts once every device is connected and its first report has come back as a
//! state EVENT. One WAMP subscriber on the hub (RawSocket, MessagePack) follows
//! `brume.thing..state` and marks every (device, seq) it receives.
//!
//! A report counts as sent once its PUBLISH was written to the hub's socket. After the run the
//! generator stops, and the subscriber gets up to [`super::DRAIN`] for what is still on its way;
//! sent and not received by then is lost, and any loss, any device the hub disconnected, any
//! report left unacknowledged and any non-zero drop counter in `/metrics` fails the run, as does
//! a hub whose resident memory reached the limit.
//!
//! Devices are lean: one task each, a raw MQTT 3.1.1 connection, no client library, so the
//! generator's cost stays small next to the hub's. How far each report went out behind its
//! schedule is recorded, and the rate the generator achieved is reported, so a slow generator
//! is not mistaken for a slow hub.

use std::collections::VecDeque;
use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use bytes::{Buf as _, BytesMut};
use hub::wamp::{Message, Serializer, Value, dict};
use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::cpu::{CpuMeter, CpuUse, cpu_seconds};
use super::peer::Peer;
use super::target::{brume_binary, peak_rss_kib, raise_open_files_limit, rss_kib, start_brume};

/// The thing type every soak device is provisioned as: the report's sequence number and the
/// generator's send time, both changing with every report, so each one is a state EVENT.
pub const SOAK_SENSOR: &str = "id = \"soak_sensor\"\ntitle = \"Soak sensor\"\nversion = \"1.0\"\n\n\
    [properties.seq]\ntype = \"integer\"\n\n[properties.sent_us]\ntype = \"integer\"\n";

/// Client id, user name and thing id of device `i`.
fn device_name(i: usize) -> String {
    format!("soak-{i}")
}

/// The device index of a thing id of this run.
fn device_index(thing: &str) -> Option<usize> {
    thing.strip_prefix("soak-")?.parse().ok()
}

/// `brume-sim soak` options.
#[derive(clap::Args, Clone, Debug)]
pub struct SoakArgs {
    /// Simulated MQTT devices, each logged in as its own thing.
    #[arg(long, default_value_t = 10_000)]
    pub devices: usize,
    /// Minutes of reporting (fractions allowed), after the fleet is up.
    #[arg(long, default_value_t = 10.0)]
    pub minutes: f64,
    /// Reports per second from each device.
    #[arg(long, default_value_t = 1.0)]
    pub rate: f64,
    /// QoS of the reports: 1 (each acknowledged once the hub has committed it) or 0.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(0..=1))]
    pub qos: u8,
    /// Devices connecting per second while the fleet comes up.
    #[arg(long, default_value_t = 1000.0)]
    pub connect_rate: f64,
    /// Seconds between two samples of the hub's resident memory.
    #[arg(long, default_value_t = 2.0)]
    pub sample_secs: f64,
    /// The verdict's limit on the hub's resident memory, in MiB (the run fails at or above it).
    #[arg(long, default_value_t = 200.0)]
    pub max_rss_mib: f64,
    /// Seed of the devices' phases.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

/// What to run, checked.
#[derive(Clone, Debug)]
pub struct SoakPlan {
    /// Simulated devices.
    pub devices: usize,
    /// How long the devices report once the fleet is up.
    pub duration: Duration,
    /// Time between two reports of one device.
    pub period: Duration,
    /// 0 or 1.
    pub qos: u8,
    /// Devices connecting per second.
    pub connect_rate: f64,
    /// How often the hub's resident memory is read.
    pub sample_every: Duration,
    /// The verdict's limit on the hub's resident memory, KiB.
    pub max_rss_kib: u64,
    /// Seed of the devices' phases.
    pub seed: u64,
}

impl SoakPlan {
    /// The plan of `args`, or why it cannot run.
    pub fn from_args(args: &SoakArgs) -> anyhow::Result<SoakPlan> {
        anyhow::ensure!(
            (1..=1_000_000).contains(&args.devices),
            "--devices must be between 1 and 1000000"
        );
        anyhow::ensure!(
            args.minutes > 0.0 && args.minutes <= 24.0 * 60.0,
            "--minutes must be above 0 and at most 1440"
        );
        // The slowest rate keeps a report within the 600 s keep-alive the devices ask for.
        anyhow::ensure!(
            args.rate >= 0.01 && args.rate <= 100.0,
            "--rate must be between 0.01 and 100 reports per second"
        );
        anyhow::ensure!(
            args.connect_rate >= 1.0 && args.connect_rate <= 100_000.0,
            "--connect-rate must be between 1 and 100000 a second"
        );
        anyhow::ensure!(
            args.sample_secs >= 0.1 && args.sample_secs <= 60.0,
            "--sample-secs must be between 0.1 and 60"
        );
        anyhow::ensure!(args.max_rss_mib > 0.0, "--max-rss-mib must be above 0");
        Ok(SoakPlan {
            devices: args.devices,
            duration: Duration::from_secs_f64(args.minutes * 60.0),
            period: Duration::from_secs_f64(1.0 / args.rate),
            qos: args.qos,
            connect_rate: args.connect_rate,
            sample_every: Duration::from_secs_f64(args.sample_secs),
            max_rss_kib: (args.max_rss_mib * 1024.0) as u64,
            seed: args.seed,
        })
    }

    /// Timed reports per device (the one sent on connecting aside).
    pub fn reports_per_device(&self) -> u64 {
        ((self.duration.as_secs_f64() / self.period.as_secs_f64()).round() as u64).max(1)
    }

    /// Reports per second the generator is to send, all devices together.
    pub fn scheduled_per_sec(&self) -> f64 {
        self.devices as f64 / self.period.as_secs_f64()
    }
}

/// The hub under test.
#[derive(Clone, Debug)]
pub struct SoakTarget {
    /// Its MQTT broker.
    pub mqtt: SocketAddr,
    /// A RawSocket URL of its router (`rs://host:port`).
    pub wamp: String,
    /// Its HTTP base URL, for `/metrics` at the end; none: not read.
    pub http: Option<String>,
    /// Its process, whose memory and CPU are read.
    pub pid: u32,
}

/// Starts a `brume` from the same build directory and runs the soak against it.
pub async fn run(args: &SoakArgs) -> anyhow::Result<SoakReport> {
    let plan = SoakPlan::from_args(args)?;
    // The generator holds one descriptor per device, the hub one per connection: both inherit
    // the raised limit.
    let limit = raise_open_files_limit()?;
    anyhow::ensure!(
        plan.devices as u64 + 1024 <= limit,
        "{} devices need more open files than the limit of {limit} allows",
        plan.devices
    );
    let types = tempfile::tempdir().context("types directory")?;
    std::fs::write(types.path().join("soak_sensor.toml"), SOAK_SENSOR)?;
    let settings = hub_settings(plan.devices, &types.path().display().to_string());
    let brume = start_brume(&brume_binary()?, &settings).context("starting brume")?;
    let target = SoakTarget {
        mqtt: brume
            .mqtt
            .context("brume did not report its MQTT address")?,
        wamp: brume.rawsocket.clone(),
        http: Some(brume.http.clone()),
        pid: brume.pid(),
    };
    let mut report = soak(&plan, &target).await?;
    report.hub_settings = Some(
        hub_settings(plan.devices, "<soak_sensor.toml's directory>")
            .trim()
            .replace('\n', "; "),
    );
    drop(brume);
    Ok(report)
}

/// The hub's settings for a run of `devices` (beside what [`start_brume`] sets): automatic
/// provisioning as `soak_sensor` from `types_dir`, room for every device, and a subscriber queue
/// deep enough that a subscriber slowed down by other work on the machine is not cut off.
fn hub_settings(devices: usize, types_dir: &str) -> String {
    format!(
        "router.outbound_queue = {SUBSCRIBER_QUEUE}\nmqtt.max_connections = {}\n\
         things.provisioning = \"auto\"\nthings.auto_type = \"soak_sensor\"\nthings.types_dir = {types_dir:?}\n",
        devices + 1000
    )
}

/// `router.outbound_queue` of the hub started here (messages).
const SUBSCRIBER_QUEUE: usize = 65_536;

/// Longest a device's TCP connect, and its wait for CONNACK, may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Beyond the connect ramp, how long the fleet may take to be up (connected, first reports
/// delivered) before the run starts with what it has.
const FLEET_UP_GRACE: Duration = Duration::from_secs(120);

/// After the run, how long devices still behind their schedule get to send the rest.
const CATCH_UP: Duration = Duration::from_secs(60);

/// Largest packet accepted from the hub.
const MAX_PACKET: usize = 64 * 1024;

/// Device failure reasons kept (the count is always complete).
const KEPT_REASONS: usize = 5;

/// The length of a row of the timeline.
const MINUTE: Duration = Duration::from_secs(60);

/// Runs the soak against `target`.
pub async fn soak(plan: &SoakPlan, target: &SoakTarget) -> anyhow::Result<SoakReport> {
    let per_device = plan.reports_per_device();
    let epoch = Instant::now();

    // The subscriber first, so that nothing is published before it listens.
    let mut peer = Peer::join(&target.wamp, "brume", Serializer::MsgPack)
        .await
        .context("subscriber")?;
    peer.subscribe_with(
        "brume.thing..state",
        dict([("match", Value::from("wildcard"))]),
    )
    .await
    .context("subscribing to brume.thing..state")?;
    let seen = Arc::new(Seen::default());
    let sub_stop = CancellationToken::new();
    let subscriber = tokio::spawn(subscribe(
        peer,
        Received::new(plan.devices, per_device),
        seen.clone(),
        epoch,
        sub_stop.clone(),
    ));

    let idle_kib = rss_kib(target.pid).ok();
    let samples = Arc::new(Mutex::new(Vec::<RssSample>::new()));
    let sampler_stop = CancellationToken::new();
    let sampler = tokio::spawn(sample_rss(
        target.pid,
        plan.sample_every,
        epoch,
        samples.clone(),
        sampler_stop.clone(),
    ));

    // The fleet.
    let (start_tx, start_rx) = watch::channel(None);
    let fleet = Arc::new(Fleet {
        broker: target.mqtt,
        qos: plan.qos,
        per_device,
        period: plan.period,
        connect_rate: plan.connect_rate,
        epoch,
        stop: CancellationToken::new(),
        counters: Counters::default(),
        lag: Histogram::new(),
        failures: Mutex::new(Vec::new()),
    });
    let counted = fleet.clone();
    let progress = crate::progress::track(
        format!("soak, {} devices connecting", plan.devices),
        "devices connected",
        move || counted.counters.connected.load(Ordering::Relaxed),
    );
    let mut rng = StdRng::seed_from_u64(plan.seed);
    let mut devices = Vec::with_capacity(plan.devices);
    for i in 0..plan.devices {
        let phase = plan.period.mul_f64(rng.random::<f64>());
        devices.push(tokio::spawn(run_device(
            fleet.clone(),
            i,
            phase,
            start_rx.clone(),
        )));
    }
    drop(start_rx);

    // Up: every device connected (or failed) and its first report delivered.
    let ramp = Duration::from_secs_f64(plan.devices as f64 / plan.connect_rate);
    let give_up = epoch + ramp + FLEET_UP_GRACE;
    let c = &fleet.counters;
    let up = loop {
        let settled = get(&c.connected) + get(&c.failed) >= plan.devices as u64;
        if settled && get(&seen.hellos) >= get(&c.hellos_sent) {
            break true;
        }
        if Instant::now() >= give_up {
            break false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let up_in = epoch.elapsed();
    let connected = get(&c.connected);
    let hellos_delivered = get(&seen.hellos);
    drop(progress);
    if connected == 0 {
        fleet.stop.cancel();
        sub_stop.cancel();
        sampler_stop.cancel();
        anyhow::bail!("no device could connect: {}", fleet.reasons().join("; "));
    }
    let connected_kib = rss_kib(target.pid).ok();

    // The run.
    let counted = seen.clone();
    let _progress = crate::progress::track(
        format!("soak, {connected} devices reporting"),
        "state EVENTs received",
        move || counted.received.load(Ordering::Relaxed),
    );
    let t0 = Instant::now() + Duration::from_millis(200);
    let _ = start_tx.send(Some(t0));
    tokio::time::sleep_until(t0).await;
    let meter = CpuMeter::start(&[target.pid]);
    let machine0 = machine_jiffies();
    let load0 = load_average();
    let snap = |at: Instant| Snapshot {
        at: at.duration_since(t0),
        sent: get(&fleet.counters.sent),
        received: get(&seen.received),
        hub_cpu_s: cpu_seconds(target.pid),
        generator_cpu_s: cpu_seconds(std::process::id()),
    };
    let mut marks = vec![snap(t0)];
    let end = t0 + plan.duration;
    let mut boundary = t0 + MINUTE;
    while boundary < end {
        tokio::time::sleep_until(boundary).await;
        marks.push(snap(Instant::now()));
        boundary += MINUTE;
    }
    tokio::time::sleep_until(end).await;
    let cpu = meter.read();
    let machine = match (machine0, machine_jiffies()) {
        (Some((b0, t0)), Some((b1, t1))) if t1 > t0 => Some((b1 - b0) as f64 / (t1 - t0) as f64),
        _ => None,
    };
    let load1 = load_average();
    let now = Instant::now();
    let measured = now.duration_since(t0);
    marks.push(snap(now));
    let sent_in_time = get(&fleet.counters.sent);

    // Devices still behind their schedule send the rest; then what is on its way arrives.
    let catch_up = Instant::now() + CATCH_UP;
    while get(&fleet.counters.finished) < plan.devices as u64 && Instant::now() < catch_up {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let drain = Instant::now() + super::DRAIN;
    loop {
        let sent = get(&fleet.counters.sent) + get(&fleet.counters.hellos_sent);
        let delivered = get(&seen.received) + get(&seen.hellos) >= sent;
        let acked = plan.qos == 0 || get(&fleet.counters.acked) >= sent;
        if (delivered && acked) || Instant::now() >= drain {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // With every device still connected.
    let final_kib = rss_kib(target.pid).ok();
    let hwm_kib = peak_rss_kib(target.pid).ok();
    let end_metrics = match &target.http {
        Some(base) => Some(scrape_metrics(base).await),
        None => None,
    };

    fleet.stop.cancel();
    for d in devices {
        let _ = tokio::time::timeout(Duration::from_secs(10), d).await;
    }
    sampler_stop.cancel();
    let _ = sampler.await;
    sub_stop.cancel();
    let (received, subscriber_error) = match subscriber.await {
        Ok(r) => r,
        Err(e) => (
            Received::new(plan.devices, per_device),
            Some(format!("subscriber task: {e}")),
        ),
    };
    let samples = std::mem::take(&mut *samples.lock().unwrap_or_else(|e| e.into_inner()));
    let c = &fleet.counters;
    let hellos_sent = get(&c.hellos_sent);
    let sent = get(&c.sent);
    Ok(SoakReport {
        devices: plan.devices,
        qos: plan.qos,
        period: plan.period,
        duration: plan.duration,
        connect_rate: plan.connect_rate,
        sample_every: plan.sample_every,
        connected,
        up,
        up_in,
        hellos_sent,
        hellos_delivered,
        reports_per_device: per_device,
        sent,
        sent_in_time,
        measured,
        acked: (plan.qos == 1).then(|| get(&c.acked)),
        received: received.distinct,
        duplicates: received.duplicates,
        strangers: received.strangers,
        lost: (hellos_sent + sent).saturating_sub(received.distinct),
        device_failures: get(&c.failed),
        failure_reasons: fleet.reasons(),
        subscriber_error,
        lag: fleet.lag.summary(),
        latency: seen.latency.summary(),
        idle_kib,
        connected_kib,
        final_kib,
        hwm_kib,
        start_offset: t0.duration_since(epoch),
        samples,
        max_rss_kib: plan.max_rss_kib,
        cpu,
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        machine_busy: machine,
        load_average: (load0, load1),
        marks,
        end_metrics,
        hub_settings: None,
    })
}

/// Busy and total clock ticks of all the machine's cores so far (Linux `/proc/stat`).
fn machine_jiffies() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let ticks: Vec<u64> = stat
        .lines()
        .next()?
        .strip_prefix("cpu ")?
        .split_whitespace()
        .filter_map(|v| v.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is inside user already).
    let total: u64 = ticks.iter().take(8).sum();
    let idle = ticks.get(3)? + ticks.get(4).copied().unwrap_or(0);
    Some((total.saturating_sub(idle), total))
}

/// The machine's one-minute load average.
fn load_average() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn get(c: &AtomicU64) -> u64 {
    c.load(Ordering::Relaxed)
}

fn add(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// Counters and timings at one moment of the run.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Snapshot {
    /// Since the run started.
    pub at: Duration,
    /// Timed reports sent so far.
    pub sent: u64,
    /// Timed reports received as state EVENTs so far.
    pub received: u64,
    /// CPU seconds the hub has used so far.
    pub hub_cpu_s: f64,
    /// CPU seconds this process (devices and subscriber) has used so far.
    pub generator_cpu_s: f64,
}

/// One reading of the hub's resident memory.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RssSample {
    /// Since the soak began (before the fleet connected).
    pub at: Duration,
    /// Resident memory, KiB.
    pub kib: u64,
}

async fn sample_rss(
    pid: u32,
    every: Duration,
    epoch: Instant,
    samples: Arc<Mutex<Vec<RssSample>>>,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        match rss_kib(pid) {
            Ok(kib) => samples
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(RssSample {
                    at: epoch.elapsed(),
                    kib,
                }),
            Err(e) => tracing::warn!(error = %e, pid, "cannot read the hub's resident memory"),
        }
    }
}

/// `/metrics` read once: the series that count drops, and a few totals.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MetricsRead {
    /// Why it could not be read.
    pub error: Option<String>,
    /// Every drop series (name with labels, value).
    pub drops: Vec<(String, f64)>,
    /// `things_state_events`: state events the hub published.
    pub state_events: Option<f64>,
    /// `mqtt_messages_in`: MQTT messages the hub took.
    pub mqtt_messages_in: Option<f64>,
    /// `mqtt_connections`: MQTT sessions open.
    pub mqtt_open: Option<f64>,
    /// `router_outbound_queued`: messages queued towards WAMP sessions.
    pub outbound_queued: Option<f64>,
}

impl MetricsRead {
    /// The drop series that are not zero.
    pub fn nonzero_drops(&self) -> Vec<&(String, f64)> {
        self.drops.iter().filter(|(_, v)| *v != 0.0).collect()
    }
}

async fn scrape_metrics(base: &str) -> MetricsRead {
    match tokio::time::timeout(
        Duration::from_secs(10),
        hub::http::client::get(base, "/metrics"),
    )
    .await
    {
        Err(_) => MetricsRead {
            error: Some("no answer within 10 s".into()),
            ..MetricsRead::default()
        },
        Ok(Err(e)) => MetricsRead {
            error: Some(e.to_string()),
            ..MetricsRead::default()
        },
        Ok(Ok((status, body))) => match super::scrape::check(status, &body) {
            Ok(()) => parse_metrics(&String::from_utf8_lossy(&body)),
            Err(reason) => MetricsRead {
                error: Some(reason),
                ..MetricsRead::default()
            },
        },
    }
}

/// Reads a `/metrics` body: every series whose metric name speaks of dropping, shedding,
/// refusing or rejecting, and the totals of [`MetricsRead`].
pub fn parse_metrics(body: &str) -> MetricsRead {
    let mut read = MetricsRead::default();
    for line in body.lines() {
        if line.starts_with('#') {
            continue;
        }
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(value) = value.parse::<f64>() else {
            continue;
        };
        let name = series.split('{').next().unwrap_or(series);
        let Some(short) = name.strip_prefix("brume_") else {
            continue;
        };
        if ["dropped", "shed", "refused", "rejected"]
            .iter()
            .any(|w| short.contains(w))
        {
            read.drops.push((series.to_owned(), value));
        }
        let short = short.strip_suffix("_total").unwrap_or(short);
        match short {
            "things_state_events" => read.state_events = Some(value),
            "mqtt_messages_in" => read.mqtt_messages_in = Some(value),
            "mqtt_connections" => read.mqtt_open = Some(value),
            "router_outbound_queued" => read.outbound_queued = Some(value),
            _ => {}
        }
    }
    read
}

/// What the subscriber has counted so far (read while it runs).
#[derive(Default)]
struct Seen {
    /// Timed reports received (each (device, seq) once).
    received: AtomicU64,
    /// First reports received.
    hellos: AtomicU64,
    /// Publish → EVENT, microseconds, of timed reports.
    latency: Histogram,
}

/// Which reports arrived: one bit per (device, seq).
#[derive(Clone, Debug)]
pub struct Received {
    bits: Vec<Vec<u64>>,
    /// Reports received, each once.
    pub distinct: u64,
    /// Reports received again.
    pub duplicates: u64,
    /// EVENTs of no report of this run (another thing, or a seq out of range).
    pub strangers: u64,
}

/// How an EVENT was taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mark {
    /// The first time this report arrived.
    New,
    /// It had arrived before.
    Duplicate,
    /// No report of this run.
    Stranger,
}

impl Received {
    /// Room for `devices` devices of seq 0 ..= `per_device`.
    pub fn new(devices: usize, per_device: u64) -> Received {
        let words = (per_device as usize + 1).div_ceil(64);
        Received {
            bits: vec![vec![0; words]; devices],
            distinct: 0,
            duplicates: 0,
            strangers: 0,
        }
    }

    /// Marks report `seq` of `device` received.
    pub fn mark(&mut self, device: usize, seq: u64) -> Mark {
        let word = usize::try_from(seq / 64).unwrap_or(usize::MAX);
        let Some(w) = self.bits.get_mut(device).and_then(|b| b.get_mut(word)) else {
            self.strangers += 1;
            return Mark::Stranger;
        };
        let bit = 1u64 << (seq % 64);
        if *w & bit != 0 {
            self.duplicates += 1;
            return Mark::Duplicate;
        }
        *w |= bit;
        self.distinct += 1;
        Mark::New
    }
}

/// Microseconds since `epoch`, as the devices stamp their reports.
fn micros_since(epoch: Instant) -> u64 {
    u64::try_from(epoch.elapsed().as_micros()).unwrap_or(u64::MAX)
}

/// Receives state EVENTs until stopped; answers what arrived and why it ended early, if it did.
async fn subscribe(
    mut peer: Peer,
    mut received: Received,
    seen: Arc<Seen>,
    epoch: Instant,
    stop: CancellationToken,
) -> (Received, Option<String>) {
    loop {
        let m = tokio::select! {
            () = stop.cancelled() => return (received, None),
            m = peer.recv() => m,
        };
        let m = match m {
            Ok(m) => m,
            Err(e) => return (received, Some(format!("{e:#}"))),
        };
        let Message::Event { payload, .. } = m else {
            continue;
        };
        let device = payload
            .kwarg("thing")
            .and_then(Value::as_str)
            .and_then(device_index);
        let values = payload.kwarg("values").and_then(Value::as_dict);
        let seq = values.and_then(|v| v.get("seq")).and_then(Value::as_u64);
        let sent_us = values
            .and_then(|v| v.get("sent_us"))
            .and_then(Value::as_u64);
        let (Some(device), Some(seq)) = (device, seq) else {
            received.strangers += 1;
            continue;
        };
        if received.mark(device, seq) != Mark::New {
            continue;
        }
        if seq == 0 {
            add(&seen.hellos);
            continue;
        }
        add(&seen.received);
        if let Some(t) = sent_us {
            seen.latency.record(micros_since(epoch).saturating_sub(t));
        }
    }
}

/// Shared by the devices.
struct Fleet {
    broker: SocketAddr,
    qos: u8,
    per_device: u64,
    period: Duration,
    connect_rate: f64,
    /// When the connect ramp starts; the devices' time stamps count from it.
    epoch: Instant,
    stop: CancellationToken,
    counters: Counters,
    /// How far behind its schedule each timed report went out, microseconds.
    lag: Histogram,
    failures: Mutex<Vec<String>>,
}

impl Fleet {
    fn fail(&self, device: usize, reason: String) {
        add(&self.counters.failed);
        let mut kept = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        if kept.len() < KEPT_REASONS {
            kept.push(format!("{}: {reason}", device_name(device)));
        }
    }

    fn reasons(&self) -> Vec<String> {
        self.failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

#[derive(Default)]
struct Counters {
    connected: AtomicU64,
    failed: AtomicU64,
    /// First reports written.
    hellos_sent: AtomicU64,
    /// Timed reports written.
    sent: AtomicU64,
    /// PUBACKs received (first reports included).
    acked: AtomicU64,
    /// Devices done sending (all sent, or failed).
    finished: AtomicU64,
}

async fn run_device(
    fleet: Arc<Fleet>,
    i: usize,
    phase: Duration,
    start: watch::Receiver<Option<Instant>>,
) {
    let mut done = false;
    if let Err(reason) = device(&fleet, i, phase, start, &mut done).await {
        tracing::debug!(device = i, %reason, "soak device failed");
        fleet.fail(i, reason);
    }
    if !done {
        add(&fleet.counters.finished);
    }
}

/// One device: connect at its slot of the ramp, send the first report, wait for the start,
/// then report on schedule until stopped. `done` is set once it has sent everything.
async fn device(
    fleet: &Fleet,
    i: usize,
    phase: Duration,
    mut start: watch::Receiver<Option<Instant>>,
    done: &mut bool,
) -> Result<(), String> {
    let slot = fleet.epoch + Duration::from_secs_f64(i as f64 / fleet.connect_rate);
    tokio::select! {
        () = fleet.stop.cancelled() => return Ok(()),
        () = tokio::time::sleep_until(slot) => {}
    }
    let name = device_name(i);
    let mut conn = Conn::open(fleet.broker, &name).await?;
    add(&fleet.counters.connected);
    let topic = format!("things/{name}/state");
    conn.publish(fleet, &topic, 0).await?;
    add(&fleet.counters.hellos_sent);
    let mut t0: Option<Instant> = None;
    let mut k = 1u64;
    loop {
        if t0.is_none() {
            t0 = *start.borrow_and_update();
        }
        let next = t0
            .filter(|_| k <= fleet.per_device)
            .map(|t| t + phase + fleet.period.mul_f64((k - 1) as f64));
        tokio::select! {
            biased;
            () = fleet.stop.cancelled() => break,
            r = conn.stream.read_buf(&mut conn.rbuf) => match r {
                Ok(0) => return Err("connection closed by the hub".into()),
                Ok(_) => conn.take_incoming(fleet).await?,
                Err(e) => return Err(format!("read: {e}")),
            },
            r = start.changed(), if t0.is_none() => {
                if r.is_err() {
                    // The run ended before it started.
                    break;
                }
            }
            () = tokio::time::sleep_until(next.unwrap_or(fleet.epoch)), if next.is_some() => {
                if let Some(due) = next {
                    let late = Instant::now().saturating_duration_since(due);
                    fleet.lag.record(u64::try_from(late.as_micros()).unwrap_or(u64::MAX));
                }
                conn.publish(fleet, &topic, k).await?;
                add(&fleet.counters.sent);
                if k == fleet.per_device {
                    *done = true;
                    add(&fleet.counters.finished);
                }
                k += 1;
            }
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(1), conn.stream.write_all(&[0xe0, 0])).await;
    Ok(())
}

/// A device's connection.
struct Conn {
    stream: TcpStream,
    rbuf: BytesMut,
    /// Packet ids of QoS 1 reports not acknowledged yet, oldest first.
    outstanding: VecDeque<u16>,
    next_pkid: u16,
}

impl Conn {
    /// Connects as thing `name` and waits for a successful CONNACK.
    async fn open(broker: SocketAddr, name: &str) -> Result<Conn, String> {
        let mut stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(broker))
            .await
            .map_err(|_| "TCP connect timed out".to_owned())?
            .map_err(|e| format!("connect: {e}"))?;
        stream
            .set_nodelay(true)
            .map_err(|e| format!("TCP_NODELAY: {e}"))?;
        stream
            .write_all(&super::mqtt::connect_packet(name))
            .await
            .map_err(|e| format!("CONNECT: {e}"))?;
        let mut ack = [0u8; 4];
        tokio::time::timeout(CONNECT_TIMEOUT, stream.read_exact(&mut ack))
            .await
            .map_err(|_| "no CONNACK".to_owned())?
            .map_err(|e| format!("CONNACK: {e}"))?;
        if ack != [0x20, 2, ack[2], 0] {
            return Err(format!("connection refused: CONNACK {ack:02x?}"));
        }
        Ok(Conn {
            stream,
            rbuf: BytesMut::with_capacity(64),
            outstanding: VecDeque::new(),
            next_pkid: 1,
        })
    }

    /// Writes report `seq`.
    async fn publish(&mut self, fleet: &Fleet, topic: &str, seq: u64) -> Result<(), String> {
        let pkid = if fleet.qos == 1 {
            if self.outstanding.len() >= usize::from(u16::MAX) - 1 {
                return Err("every packet id is awaiting its PUBACK".into());
            }
            let mut id = self.next_pkid;
            while self.outstanding.contains(&id) {
                id = id.checked_add(1).unwrap_or(1);
            }
            self.next_pkid = id.checked_add(1).unwrap_or(1);
            self.outstanding.push_back(id);
            Some(id)
        } else {
            None
        };
        let payload = format!(
            "{{\"seq\":{seq},\"sent_us\":{}}}",
            micros_since(fleet.epoch)
        );
        let packet = publish_packet(topic, pkid, payload.as_bytes());
        self.stream
            .write_all(&packet)
            .await
            .map_err(|e| format!("PUBLISH: {e}"))
    }

    /// Handles every whole packet read so far.
    async fn take_incoming(&mut self, fleet: &Fleet) -> Result<(), String> {
        while let Some((packet, len)) = next_packet(&self.rbuf)? {
            self.rbuf.advance(len);
            match packet {
                Incoming::PubAck(pkid) => {
                    if self.outstanding.front() == Some(&pkid) {
                        self.outstanding.pop_front();
                    } else if let Some(at) = self.outstanding.iter().position(|&p| p == pkid) {
                        self.outstanding.remove(at);
                    } else {
                        return Err(format!("PUBACK for packet id {pkid}, not in flight"));
                    }
                    add(&fleet.counters.acked);
                }
                Incoming::Publish { pkid: Some(pkid) } => {
                    let [hi, lo] = pkid.to_be_bytes();
                    self.stream
                        .write_all(&[0x40, 2, hi, lo])
                        .await
                        .map_err(|e| format!("PUBACK: {e}"))?;
                }
                Incoming::Publish { pkid: None } | Incoming::Other(_) => {}
            }
        }
        Ok(())
    }
}

/// An MQTT PUBLISH of `payload` on `topic`: QoS 1 with packet id `pkid`, or QoS 0 without.
pub fn publish_packet(topic: &str, pkid: Option<u16>, payload: &[u8]) -> Vec<u8> {
    let remaining = 2 + topic.len() + if pkid.is_some() { 2 } else { 0 } + payload.len();
    let mut p = Vec::with_capacity(remaining + 5);
    p.push(if pkid.is_some() { 0x32 } else { 0x30 });
    let mut len = remaining;
    loop {
        let mut byte = (len % 128) as u8;
        len /= 128;
        if len > 0 {
            byte |= 0x80;
        }
        p.push(byte);
        if len == 0 {
            break;
        }
    }
    p.extend_from_slice(&(topic.len() as u16).to_be_bytes());
    p.extend_from_slice(topic.as_bytes());
    if let Some(id) = pkid {
        p.extend_from_slice(&id.to_be_bytes());
    }
    p.extend_from_slice(payload);
    p
}

/// A packet from the hub, as far as a device cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Incoming {
    /// The acknowledgement of the QoS 1 report with this packet id.
    PubAck(u16),
    /// A message for the device; with a packet id when it wants a PUBACK (QoS 1).
    Publish { pkid: Option<u16> },
    /// Anything else, by packet type.
    Other(u8),
}

/// The first whole packet of `buf` and its length; none while it is incomplete.
pub fn next_packet(buf: &[u8]) -> Result<Option<(Incoming, usize)>, String> {
    let Some(&header) = buf.first() else {
        return Ok(None);
    };
    let mut remaining = 0usize;
    let mut used = 0usize;
    loop {
        let Some(&b) = buf.get(1 + used) else {
            return Ok(None);
        };
        remaining |= usize::from(b & 0x7f) << (7 * used);
        used += 1;
        if b & 0x80 == 0 {
            break;
        }
        if used == 4 {
            return Err("malformed remaining length".into());
        }
    }
    let total = 1 + used + remaining;
    if total > MAX_PACKET {
        return Err(format!("packet of {total} bytes from the hub"));
    }
    let Some(body) = buf.get(1 + used..total) else {
        return Ok(None);
    };
    let id_at = |at: usize| {
        body.get(at..at + 2)
            .map(|b| u16::from_be_bytes([b[0], b[1]]))
    };
    let packet = match header >> 4 {
        4 => Incoming::PubAck(id_at(0).ok_or("short PUBACK")?),
        3 => {
            let qos = (header >> 1) & 3;
            let topic_len = usize::from(id_at(0).ok_or("short PUBLISH")?);
            let pkid = match qos {
                0 => None,
                1 => Some(id_at(2 + topic_len).ok_or("short PUBLISH")?),
                _ => return Err("QoS 2 PUBLISH to a device that subscribed to nothing".into()),
            };
            Incoming::Publish { pkid }
        }
        other => Incoming::Other(other),
    };
    Ok(Some((packet, total)))
}

/// Sub-buckets per power of two of a [`Histogram`] (8: at most 12.5 % above the true value).
const SUB_BUCKETS: u32 = 8;
const BUCKETS: usize = 496;

/// A histogram of microsecond values with [`SUB_BUCKETS`] buckets per power of two, recorded
/// from many tasks at once.
#[derive(Debug)]
pub struct Histogram {
    buckets: Box<[AtomicU64]>,
    count: AtomicU64,
    max: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram::new()
    }
}

/// Percentiles of a [`Histogram`], microseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Spread {
    /// Values recorded.
    pub count: u64,
    /// Median.
    pub p50: u64,
    /// 99th percentile.
    pub p99: u64,
    /// Largest value recorded.
    pub max: u64,
}

impl Histogram {
    /// An empty histogram.
    pub fn new() -> Histogram {
        Histogram {
            buckets: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
            count: AtomicU64::new(0),
            max: AtomicU64::new(0),
        }
    }

    fn index(v: u64) -> usize {
        if v < u64::from(SUB_BUCKETS) {
            return v as usize;
        }
        let e = 63 - v.leading_zeros();
        let m = (v >> (e - 3)) - u64::from(SUB_BUCKETS);
        ((e - 2) * SUB_BUCKETS) as usize + m as usize
    }

    /// The largest value of bucket `b`.
    fn upper(b: usize) -> u64 {
        if b < SUB_BUCKETS as usize {
            return b as u64;
        }
        let e = (b / SUB_BUCKETS as usize) as u32 + 2;
        let m = (b % SUB_BUCKETS as usize) as u64 + u64::from(SUB_BUCKETS);
        ((m + 1) << (e - 3)).wrapping_sub(1)
    }

    /// Records one value.
    pub fn record(&self, v: u64) {
        self.buckets[Self::index(v)].fetch_add(1, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
        self.max.fetch_max(v, Ordering::Relaxed);
    }

    /// The smallest bucket bound at or under which a fraction `q` of the values lie (never
    /// above the largest value recorded).
    pub fn quantile(&self, q: f64) -> u64 {
        let count = get(&self.count);
        if count == 0 {
            return 0;
        }
        let rank = ((q * count as f64).ceil() as u64).clamp(1, count);
        let mut seen = 0;
        for (b, n) in self.buckets.iter().enumerate() {
            seen += get(n);
            if seen >= rank {
                return Self::upper(b).min(get(&self.max));
            }
        }
        get(&self.max)
    }

    /// Count, median, 99th percentile and largest value.
    pub fn summary(&self) -> Spread {
        Spread {
            count: get(&self.count),
            p50: self.quantile(0.5),
            p99: self.quantile(0.99),
            max: get(&self.max),
        }
    }
}

/// What a soak measured.
#[derive(Clone, Debug)]
pub struct SoakReport {
    /// Devices of the plan.
    pub devices: usize,
    /// QoS of the reports.
    pub qos: u8,
    /// Time between two reports of one device.
    pub period: Duration,
    /// Planned length of the run.
    pub duration: Duration,
    /// Devices connecting per second.
    pub connect_rate: f64,
    /// How often the hub's resident memory was read.
    pub sample_every: Duration,
    /// Devices that connected.
    pub connected: u64,
    /// Whether the fleet was up (every device connected or failed, every first report
    /// delivered) before the grace time ran out.
    pub up: bool,
    /// From the first connect to the start of the run.
    pub up_in: Duration,
    /// First reports written.
    pub hellos_sent: u64,
    /// First reports received before the run started.
    pub hellos_delivered: u64,
    /// Timed reports each device was to send.
    pub reports_per_device: u64,
    /// Timed reports written.
    pub sent: u64,
    /// Timed reports written before the run's time was up.
    pub sent_in_time: u64,
    /// The run's length as measured.
    pub measured: Duration,
    /// PUBACKs received (QoS 1), first reports included.
    pub acked: Option<u64>,
    /// Reports received as state EVENTs (first reports included), each once.
    pub received: u64,
    /// Reports received again.
    pub duplicates: u64,
    /// EVENTs of no report of this run.
    pub strangers: u64,
    /// Reports written and not received.
    pub lost: u64,
    /// Devices whose connection failed, or that the hub disconnected.
    pub device_failures: u64,
    /// The first few failures, by device.
    pub failure_reasons: Vec<String>,
    /// Why the subscriber stopped early, if it did.
    pub subscriber_error: Option<String>,
    /// How far behind schedule timed reports went out.
    pub lag: Spread,
    /// From a timed report's send to its EVENT.
    pub latency: Spread,
    /// Hub resident memory before the fleet connected, KiB.
    pub idle_kib: Option<u64>,
    /// Hub resident memory once the fleet was up, KiB.
    pub connected_kib: Option<u64>,
    /// Hub resident memory at the end, every device still connected, KiB.
    pub final_kib: Option<u64>,
    /// The kernel's high-water mark of the hub's resident memory at the end, KiB.
    pub hwm_kib: Option<u64>,
    /// When the run started, after the soak began (the samples count from the latter).
    pub start_offset: Duration,
    /// Resident memory read every `sample_every`.
    pub samples: Vec<RssSample>,
    /// The verdict's limit on the hub's resident memory, KiB.
    pub max_rss_kib: u64,
    /// CPU over the run: the hub, and this process (devices and subscriber).
    pub cpu: CpuUse,
    /// The machine's cores.
    pub cores: usize,
    /// The fraction of the cores' time busy over the run (every process, the hub's and the
    /// generator's included).
    pub machine_busy: Option<f64>,
    /// The one-minute load average at the start and the end of the run.
    pub load_average: (Option<f64>, Option<f64>),
    /// Snapshots at the start, each minute, and the end of the run.
    pub marks: Vec<Snapshot>,
    /// `/metrics` at the end, every device still connected.
    pub end_metrics: Option<MetricsRead>,
    /// The settings the hub was started with, when started here.
    pub hub_settings: Option<String>,
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn show_mib(kib: Option<u64>) -> String {
    kib.map_or_else(|| "–".to_owned(), |k| format!("{:.1} MiB", mib(k)))
}

fn ms(us: u64) -> f64 {
    us as f64 / 1e3
}

impl SoakReport {
    /// Reports written, first reports included.
    pub fn total_sent(&self) -> u64 {
        self.hellos_sent + self.sent
    }

    /// Timed reports a second the generator sent within the run's time.
    pub fn achieved_per_sec(&self) -> f64 {
        self.sent_in_time as f64 / self.measured.as_secs_f64().max(1e-9)
    }

    /// Timed reports a second the plan asked for.
    pub fn scheduled_per_sec(&self) -> f64 {
        self.devices as f64 / self.period.as_secs_f64()
    }

    /// The largest sampled resident memory.
    pub fn peak_sampled_kib(&self) -> Option<u64> {
        self.samples.iter().map(|s| s.kib).max()
    }

    /// The largest resident memory sampled from the end of the run's first minute on.
    pub fn peak_after_first_minute_kib(&self) -> Option<u64> {
        let from = self.start_offset + MINUTE;
        self.samples
            .iter()
            .filter(|s| s.at >= from)
            .map(|s| s.kib)
            .max()
    }

    /// The peak the verdict is judged on: the kernel's high-water mark, or the sampled peak
    /// where that could not be read.
    pub fn peak_kib(&self) -> Option<u64> {
        self.hwm_kib
            .max(self.peak_sampled_kib())
            .max(self.final_kib)
    }

    /// Why the run failed; empty when it passed.
    pub fn failures(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.lost > 0 {
            out.push(format!("{} reports lost", self.lost));
        }
        if self.device_failures > 0 {
            out.push(format!("{} devices failed", self.device_failures));
        }
        if let Some(acked) = self.acked
            && acked < self.total_sent()
        {
            out.push(format!(
                "{} reports never acknowledged",
                self.total_sent() - acked
            ));
        }
        let expected = self.devices as u64 * self.reports_per_device;
        if self.sent < expected {
            out.push(format!(
                "{} of {expected} scheduled reports never sent",
                expected - self.sent
            ));
        }
        if let Some(e) = &self.subscriber_error {
            out.push(format!("the subscriber stopped: {e}"));
        }
        if let Some(m) = &self.end_metrics {
            if let Some(e) = &m.error {
                out.push(format!("/metrics could not be read: {e}"));
            }
            let drops = m.nonzero_drops();
            if !drops.is_empty() {
                out.push(format!(
                    "{} non-zero drop counters in /metrics",
                    drops.len()
                ));
            }
        }
        match self.peak_kib() {
            Some(peak) if peak >= self.max_rss_kib => out.push(format!(
                "hub RSS peak {:.1} MiB, not under {:.0} MiB",
                mib(peak),
                mib(self.max_rss_kib)
            )),
            Some(_) => {}
            None => out.push("the hub's resident memory could not be read".into()),
        }
        out
    }

    /// One row per minute of the run (the last one possibly shorter).
    fn timeline(&self) -> Vec<String> {
        let mut rows = Vec::new();
        for (n, pair) in self.marks.windows(2).enumerate() {
            let (a, b) = (pair[0], pair[1]);
            let secs = (b.at - a.at).as_secs_f64().max(1e-9);
            let from = self.start_offset + a.at;
            let to = self.start_offset + b.at;
            let rss = self
                .samples
                .iter()
                .filter(|s| s.at >= from && s.at <= to)
                .map(|s| s.kib)
                .max();
            rows.push(super::report::row(&[
                format!("{}", n + 1),
                format!("{:.0}", (b.sent - a.sent) as f64 / secs),
                format!(
                    "{:.0}",
                    (b.received.saturating_sub(a.received)) as f64 / secs
                ),
                rss.map_or_else(|| "–".into(), |k| format!("{:.1}", mib(k))),
                format!("{:.0}%", (b.hub_cpu_s - a.hub_cpu_s) / secs * 100.0),
                format!(
                    "{:.0}%",
                    (b.generator_cpu_s - a.generator_cpu_s) / secs * 100.0
                ),
            ]));
        }
        rows
    }
}

impl fmt::Display for SoakReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let rate = 1.0 / self.period.as_secs_f64();
        writeln!(
            f,
            "soak: {} MQTT devices, each logged in as its own thing, QoS {}, {rate} report/s each, {:.0} s",
            self.devices,
            self.qos,
            self.duration.as_secs_f64()
        )?;
        if let Some(s) = &self.hub_settings {
            writeln!(f, "  hub settings             : {s}")?;
        }
        writeln!(
            f,
            "  fleet up                 : {} of {} connected (spread at {:.0}/s), {} of {} first reports delivered, {:.1} s after the first connect{}",
            self.connected,
            self.devices,
            self.connect_rate,
            self.hellos_delivered,
            self.hellos_sent,
            self.up_in.as_secs_f64(),
            if self.up { "" } else { " (gave up waiting)" }
        )?;
        writeln!(
            f,
            "  reports sent             : {} ({} on connecting, then {} over the run, {} per device)",
            self.total_sent(),
            self.hellos_sent,
            self.sent,
            self.reports_per_device
        )?;
        match self.acked {
            Some(acked) => writeln!(
                f,
                "  acknowledged (PUBACK)    : {acked}, {} not acknowledged after the drain",
                self.total_sent().saturating_sub(acked)
            )?,
            None => writeln!(f, "  acknowledged             : – (QoS 0)")?,
        }
        writeln!(
            f,
            "  state EVENTs received    : {} ({} duplicates, {} not of this run)",
            self.received, self.duplicates, self.strangers
        )?;
        writeln!(f, "  lost (sent − received)   : {}", self.lost)?;
        writeln!(
            f,
            "  generator                : {:.0} reports/s sent of {:.0}/s scheduled ({:.2} %) over {:.1} s; behind schedule p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms; CPU {:.0} % of one core (devices and subscriber)",
            self.achieved_per_sec(),
            self.scheduled_per_sec(),
            self.achieved_per_sec() / self.scheduled_per_sec().max(1e-9) * 100.0,
            self.measured.as_secs_f64(),
            ms(self.lag.p50),
            ms(self.lag.p99),
            ms(self.lag.max),
            self.cpu.generator
        )?;
        writeln!(
            f,
            "  publish → EVENT          : p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            ms(self.latency.p50),
            ms(self.latency.p99),
            ms(self.latency.max)
        )?;
        writeln!(
            f,
            "  hub RSS                  : peak {} (sampled every {:.0} s: {}; kernel high-water mark: {}), peak after the first minute {}, final {} (devices still connected); before the devices {}, fleet up {}",
            show_mib(self.peak_kib()),
            self.sample_every.as_secs_f64(),
            show_mib(self.peak_sampled_kib()),
            show_mib(self.hwm_kib),
            show_mib(self.peak_after_first_minute_kib()),
            show_mib(self.final_kib),
            show_mib(self.idle_kib),
            show_mib(self.connected_kib)
        )?;
        writeln!(
            f,
            "  hub CPU                  : {:.0} % of one core over the run",
            self.cpu.system
        )?;
        let show = |v: Option<f64>| v.map_or_else(|| "–".into(), |v| format!("{v:.2}"));
        writeln!(
            f,
            "  machine                  : {} cores, {} % busy over the run (everything: hub, generator and any other work; {} % of one core outside both), load average {} at the start, {} at the end",
            self.cores,
            self.machine_busy
                .map_or_else(|| "–".into(), |b| format!("{:.0}", b * 100.0)),
            self.machine_busy.map_or_else(
                || "–".into(),
                |b| format!(
                    "{:.0}",
                    (b * self.cores as f64 * 100.0 - self.cpu.system - self.cpu.generator).max(0.0)
                )
            ),
            show(self.load_average.0),
            show(self.load_average.1)
        )?;
        match &self.end_metrics {
            None => writeln!(f, "  /metrics                 : not read")?,
            Some(m) => match &m.error {
                Some(e) => writeln!(f, "  /metrics                 : not read: {e}")?,
                None => {
                    let nonzero = m.nonzero_drops();
                    if nonzero.is_empty() {
                        writeln!(
                            f,
                            "  /metrics drop counters   : {} series, all 0",
                            m.drops.len()
                        )?;
                    } else {
                        let list: Vec<String> =
                            nonzero.iter().map(|(s, v)| format!("{s} {v}")).collect();
                        writeln!(
                            f,
                            "  /metrics drop counters   : {} series, not 0: {}",
                            m.drops.len(),
                            list.join(", ")
                        )?;
                    }
                    let show = |v: Option<f64>| v.map_or_else(|| "–".into(), |v| format!("{v}"));
                    writeln!(
                        f,
                        "  /metrics at the end      : {} MQTT messages in, {} state events published, {} MQTT connections open, {} messages queued towards WAMP sessions",
                        show(m.mqtt_messages_in),
                        show(m.state_events),
                        show(m.mqtt_open),
                        show(m.outbound_queued)
                    )?;
                }
            },
        }
        if !self.failure_reasons.is_empty() {
            writeln!(
                f,
                "  first device failures    : {}",
                self.failure_reasons.join("; ")
            )?;
        }
        let failures = self.failures();
        let verdict = if failures.is_empty() {
            format!(
                "PASS: hub RSS peak {} < {:.0} MiB, nothing lost",
                show_mib(self.peak_kib()),
                mib(self.max_rss_kib)
            )
        } else {
            format!("FAIL: {}", failures.join("; "))
        };
        writeln!(f, "  verdict                  : {verdict}")?;
        writeln!(f)?;
        writeln!(
            f,
            "{}",
            super::report::header(&[
                "minute",
                "reports sent/s",
                "EVENTs received/s",
                "hub RSS max, MiB",
                "hub CPU",
                "generator CPU",
            ])
        )?;
        for row in self.timeline() {
            writeln!(f, "{row}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_packets_are_well_formed() {
        let p = publish_packet("t/a", Some(0x0102), b"{}");
        assert_eq!(p, vec![0x32, 9, 0, 3, b't', b'/', b'a', 1, 2, b'{', b'}']);
        let p = publish_packet("t", None, b"x");
        assert_eq!(p, vec![0x30, 4, 0, 1, b't', b'x']);
        // A remaining length of two bytes.
        let big = vec![b'x'; 200];
        let p = publish_packet("t", Some(1), &big);
        assert_eq!(&p[..3], &[0x32, 0xcd, 0x01]);
        assert_eq!(
            next_packet(&p),
            Ok(Some((Incoming::Publish { pkid: Some(1) }, p.len())))
        );
    }

    #[test]
    fn incoming_packets_are_split_and_read() {
        let mut stream = vec![0x40, 2, 0, 7, 0xd0, 0];
        stream.extend(publish_packet("things/a/set", Some(9), b"{}"));
        stream.extend(publish_packet("things/a/set", None, b"{}"));
        let mut at = 0;
        let mut got = Vec::new();
        while let Some((p, len)) = next_packet(&stream[at..]).unwrap() {
            got.push(p);
            at += len;
        }
        assert_eq!(at, stream.len());
        assert_eq!(
            got,
            vec![
                Incoming::PubAck(7),
                Incoming::Other(13),
                Incoming::Publish { pkid: Some(9) },
                Incoming::Publish { pkid: None },
            ]
        );
        // Incomplete packets wait for more bytes.
        assert_eq!(next_packet(&[]), Ok(None));
        assert_eq!(next_packet(&[0x40]), Ok(None));
        assert_eq!(next_packet(&[0x40, 2, 0]), Ok(None));
        assert_eq!(next_packet(&[0x30, 0x80]), Ok(None));
        // What a device cannot take is an error, not a panic.
        assert!(next_packet(&[0x40, 0]).is_err());
        assert!(next_packet(&[0x32, 2, 0, 5]).is_err());
        assert!(next_packet(&[0x30, 0xff, 0xff, 0xff, 0xff, 1]).is_err());
        assert!(next_packet(&[0x30, 0xff, 0xff, 0x7f]).is_err());
        assert!(next_packet(&[0x34, 2, 0, 0]).is_err());
    }

    #[test]
    fn received_reports_are_counted_once() {
        let mut r = Received::new(2, 100);
        assert_eq!(r.mark(0, 0), Mark::New);
        assert_eq!(r.mark(1, 100), Mark::New);
        assert_eq!(r.mark(1, 64), Mark::New);
        assert_eq!(r.mark(1, 100), Mark::Duplicate);
        assert_eq!(r.mark(2, 0), Mark::Stranger);
        assert_eq!(r.mark(0, 128), Mark::Stranger);
        assert_eq!(r.mark(0, u64::MAX), Mark::Stranger);
        assert_eq!((r.distinct, r.duplicates, r.strangers), (3, 1, 3));
    }

    #[test]
    fn histogram_buckets_bound_their_values() {
        for v in [
            0u64,
            1,
            7,
            8,
            9,
            15,
            16,
            17,
            100,
            1000,
            123_456,
            u64::MAX / 3,
            u64::MAX,
        ] {
            let b = Histogram::index(v);
            assert!(b < BUCKETS, "{v}");
            assert!(Histogram::upper(b) >= v, "{v}");
            assert!(b == 0 || Histogram::upper(b - 1) < v, "{v}");
        }
        let h = Histogram::new();
        assert_eq!(h.summary(), Spread::default());
        for v in 1..=1000 {
            h.record(v);
        }
        let s = h.summary();
        assert_eq!((s.count, s.max), (1000, 1000));
        // Within a bucket's width (12.5 %) above the true percentile.
        assert!((500..=563).contains(&s.p50), "{s:?}");
        assert!((990..=1000).contains(&s.p99), "{s:?}");
    }

    #[test]
    fn drop_series_and_totals_are_read_from_metrics() {
        let body = "# HELP brume_things_dropped Device messages dropped.\n\
            # TYPE brume_things_dropped counter\n\
            brume_things_dropped_total{cause=\"unknown_device\"} 0\n\
            brume_things_dropped_total{cause=\"command_queue\"} 3\n\
            brume_mqtt_dropped_total{cause=\"device_queue\"} 0\n\
            brume_memory_shed_events_total 0\n\
            brume_mqtt_connections_refused_total{cause=\"auth\"} 0\n\
            brume_mqtt_rejected_total{cause=\"payload\"} 0\n\
            brume_router_dropped_events_open_sessions 0\n\
            brume_router_call_outcomes_total{realm=\"brume\",outcome=\"refused\"} 5\n\
            brume_things_state_events_total 6010000\n\
            brume_mqtt_messages_in_total 6010000\n\
            brume_mqtt_connections 10000\n\
            brume_router_outbound_queued 2\n\
            # EOF\n";
        let m = parse_metrics(body);
        assert_eq!(m.drops.len(), 7);
        assert_eq!(
            m.nonzero_drops(),
            vec![&(
                "brume_things_dropped_total{cause=\"command_queue\"}".to_owned(),
                3.0
            )]
        );
        assert_eq!(m.state_events, Some(6_010_000.0));
        assert_eq!(m.mqtt_messages_in, Some(6_010_000.0));
        assert_eq!(m.mqtt_open, Some(10_000.0));
        assert_eq!(m.outbound_queued, Some(2.0));
    }

    fn args() -> SoakArgs {
        SoakArgs {
            devices: 10_000,
            minutes: 10.0,
            rate: 1.0,
            qos: 1,
            connect_rate: 1000.0,
            sample_secs: 2.0,
            max_rss_mib: 200.0,
            seed: 1,
        }
    }

    #[test]
    fn the_plan_counts_reports_and_refuses_nonsense() {
        let plan = SoakPlan::from_args(&args()).unwrap();
        assert_eq!(plan.reports_per_device(), 600);
        assert_eq!(plan.scheduled_per_sec(), 10_000.0);
        assert_eq!(plan.max_rss_kib, 200 * 1024);
        let short = SoakPlan::from_args(&SoakArgs {
            minutes: 0.5,
            rate: 4.0,
            ..args()
        })
        .unwrap();
        assert_eq!(short.reports_per_device(), 120);
        for bad in [
            SoakArgs {
                devices: 0,
                ..args()
            },
            SoakArgs {
                minutes: 0.0,
                ..args()
            },
            SoakArgs {
                minutes: f64::NAN,
                ..args()
            },
            SoakArgs {
                rate: 0.0,
                ..args()
            },
            SoakArgs {
                connect_rate: 0.0,
                ..args()
            },
        ] {
            assert!(SoakPlan::from_args(&bad).is_err(), "{bad:?}");
        }
    }

    /// A hub in this process with automatic provisioning as `soak_sensor` and every listener on
    /// a free port.
    async fn hub_in_process(dir: &std::path::Path) -> hub::server::Hub {
        use hub::config::{Config, ListenerKind, ListenerSection, Provisioning};
        let types = dir.join("types");
        std::fs::create_dir_all(&types).unwrap();
        std::fs::write(types.join("soak_sensor.toml"), SOAK_SENSOR).unwrap();
        let mut config = Config::default();
        config.hub.data_dir = dir.join("data");
        config.hub.shutdown_grace_secs = 2;
        config.things.provisioning = Provisioning::Auto;
        config.things.auto_type = Some("soak_sensor".into());
        config.things.types_dir = Some(types);
        config.mqtt.listen = "127.0.0.1:0".parse().unwrap();
        config.coap.bind = "127.0.0.1:0".parse().unwrap();
        config.http.listen = "127.0.0.1:0".parse().unwrap();
        config.listeners = vec![ListenerSection {
            name: "rs".into(),
            kind: ListenerKind::Rawsocket,
            address: "127.0.0.1:0".into(),
            path: "/ws".into(),
            serializers: vec!["msgpack".into()],
            max_message_size: 1024 * 1024,
            allow_anonymous_remote: false,
            tls: None,
        }];
        hub::server::Hub::start(config).await.unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_report_of_a_small_fleet_is_acknowledged_and_received() {
        let dir = tempfile::tempdir().unwrap();
        let hub = hub_in_process(dir.path()).await;
        let target = SoakTarget {
            mqtt: hub.gateway_addrs().mqtt.unwrap(),
            wamp: format!("rs://{}", hub.local_addr("rs").unwrap()),
            http: None,
            pid: std::process::id(),
        };
        let plan = SoakPlan {
            devices: 20,
            duration: Duration::from_secs(2),
            period: Duration::from_millis(250),
            qos: 1,
            connect_rate: 200.0,
            sample_every: Duration::from_millis(500),
            max_rss_kib: u64::MAX,
            seed: 1,
        };
        let r = soak(&plan, &target).await.unwrap();
        hub.shutdown().await;
        assert_eq!(r.failures(), Vec::<String>::new(), "{r}");
        assert_eq!(
            (r.connected, r.hellos_sent, r.sent),
            (20, 20, 20 * 8),
            "{r}"
        );
        assert_eq!(r.received, r.total_sent(), "{r}");
        assert_eq!(r.acked, Some(r.total_sent()), "{r}");
        assert_eq!((r.lost, r.duplicates, r.strangers), (0, 0, 0), "{r}");
        assert_eq!(r.latency.count, 20 * 8, "{r}");
    }
}
