//! `brume-sim bench-things`: how many device updates per second the things service turns into
//! WAMP events, with registry writes included.
//!
//! A hub runs in-process on a temporary data directory with automatic provisioning. N simulated
//! temperature sensors, spread over G in-process gateways, report a new temperature as fast as
//! their gateway channel takes it. One subscriber follows `brume.thing..state` (wildcard) and
//! counts events. Not a timed test: a load tool that prints what it saw.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use device_models::ThingId;
use hub::client::{Client, ConnectOptions};
use hub::config::{Config, ListenerKind, ListenerSection, Provisioning};
use hub::router::{AuthInfo, SlowConsumerPolicy};
use hub::server::Hub;
use hub::things::ThingsStats;
use hub::wamp::{Serializer, Value, dict};

use crate::device::{Kind, SimDevice};

/// What to run.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    pub devices: usize,
    pub gateways: usize,
    pub duration: Duration,
    /// Subscribe over RawSocket/MessagePack instead of in-process.
    pub remote: bool,
    pub seed: u64,
}

/// What was measured.
#[derive(Debug, Clone)]
pub struct BenchReport {
    pub devices: usize,
    pub gateways: usize,
    pub seconds: f64,
    /// Device reports accepted by the service's gateway channels.
    pub updates: u64,
    /// State events the subscriber received during the run.
    pub received: u64,
    /// State events the subscriber received in all, after the queues drained.
    pub received_after_drain: u64,
    /// State events the service published.
    pub published: u64,
    pub db_ops: u64,
    pub db_batches: u64,
}

impl BenchReport {
    pub fn updates_per_s(&self) -> f64 {
        self.updates as f64 / self.seconds
    }
    pub fn events_per_s(&self) -> f64 {
        self.received as f64 / self.seconds
    }
}

impl std::fmt::Display for BenchReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "things bench: {} devices on {} gateways, {:.1} s",
            self.devices, self.gateways, self.seconds
        )?;
        writeln!(
            f,
            "  device updates accepted : {:>10}  ({:.0}/s)",
            self.updates,
            self.updates_per_s()
        )?;
        writeln!(
            f,
            "  state events received   : {:>10}  ({:.0}/s), {} after draining",
            self.received,
            self.events_per_s(),
            self.received_after_drain
        )?;
        writeln!(
            f,
            "  state events published  : {:>10}  (not delivered: {})",
            self.published,
            self.published.saturating_sub(self.received_after_drain)
        )?;
        write!(
            f,
            "  database writes         : {:>10}  in {} transactions ({:.0} per transaction)",
            self.db_ops,
            self.db_batches,
            self.db_ops as f64 / self.db_batches.max(1) as f64
        )
    }
}

fn bench_config(dir: &std::path::Path) -> Config {
    let mut config = Config::default();
    config.hub.data_dir = dir.to_owned();
    config.hub.shutdown_grace_secs = 5;
    config.router.slow_consumer = SlowConsumerPolicy::DropEvents;
    config.router.outbound_queue = 65_536;
    config.things.provisioning = Provisioning::Auto;
    config.things.auto_type = Some("temperature_sensor".into());
    config.things.store_queue = 65_536;
    config.http.listen = "127.0.0.1:0".parse().unwrap_or(config.http.listen);
    config.listeners = vec![ListenerSection {
        name: "wamp".into(),
        kind: ListenerKind::Both,
        address: "127.0.0.1:0".into(),
        path: "/ws".into(),
        serializers: vec!["json".into(), "msgpack".into()],
        max_message_size: 1024 * 1024,
        allow_anonymous_remote: false,
        tls: None,
    }];
    config
}

/// Runs the benchmark.
pub async fn bench_things(opts: &BenchOptions) -> anyhow::Result<BenchReport> {
    let dir = tempfile::tempdir().context("temporary data directory")?;
    let hub = Hub::start(bench_config(dir.path()))
        .await
        .context("starting the hub")?;
    let subscriber = if opts.remote {
        let addr = hub.local_addr("wamp").context("listener address")?;
        let o =
            ConnectOptions::new(&format!("rs://{addr}"), "brume").serializer(Serializer::MsgPack);
        Client::connect(&o).await.context("remote subscriber")?
    } else {
        Client::local(
            hub.router(),
            "brume",
            AuthInfo {
                authid: "bench".into(),
                authrole: "trusted".into(),
                authmethod: "trusted".into(),
                authprovider: "static".into(),
            },
        )
        .context("in-process subscriber")?
    };
    let mut sub = subscriber
        .subscribe_lossless(
            "brume.thing..state",
            dict([("match", Value::from("wildcard"))]),
        )
        .await
        .context("subscribe")?;
    let received = Arc::new(AtomicU64::new(0));
    let counter = received.clone();
    tokio::spawn(async move {
        while sub.next().await.is_some() {
            counter.fetch_add(1, Ordering::Relaxed);
        }
    });

    let gateways = opts.gateways.clamp(1, opts.devices.max(1));
    let mut fleets: Vec<Vec<SimDevice>> = (0..gateways).map(|_| Vec::new()).collect();
    for i in 0..opts.devices {
        let id = ThingId::new(format!("sim-{i:06}")).context("device id")?;
        fleets[i % gateways].push(SimDevice::new(
            id,
            Kind::TemperatureSensor,
            opts.seed + i as u64,
        ));
    }
    let stats = hub.things().stats().clone();
    let mut attachments = Vec::new();
    for (g, fleet) in fleets.iter().enumerate() {
        let a = hub
            .things()
            .attach(&format!("bench-{g}"))
            .await
            .context("attach")?;
        for d in fleet {
            a.events.send(d.hello()).await.context("hello")?;
        }
        attachments.push(a);
    }
    let provisioned = Instant::now();
    while ThingsStats::get(&stats.auto_provisioned) < opts.devices as u64 {
        if provisioned.elapsed() > Duration::from_secs(30) {
            anyhow::bail!("devices were not provisioned within 30 s");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let stop = Arc::new(AtomicBool::new(false));
    let updates = Arc::new(AtomicU64::new(0));
    let seen = updates.clone();
    let _progress = crate::progress::track(
        format!("things bench, {} devices", opts.devices),
        "device updates",
        move || seen.load(Ordering::Relaxed),
    );
    let published_before = ThingsStats::get(&stats.state_events);
    let received_before = received.load(Ordering::Relaxed);
    let store_stats = hub.things_store_stats().clone();
    let ops_before = store_stats.ops.load(Ordering::Relaxed);
    let batches_before = store_stats.batches.load(Ordering::Relaxed);
    let start = Instant::now();
    let mut generators = Vec::new();
    for (mut fleet, a) in fleets.into_iter().zip(attachments) {
        let stop = stop.clone();
        let updates = updates.clone();
        generators.push(tokio::spawn(async move {
            let events = a.events;
            let _commands = a.commands;
            let mut sent = 0u64;
            let mut now = device_models::now_ms();
            'run: loop {
                for d in fleet.iter_mut() {
                    if events.send(d.next_reading(now)).await.is_err() {
                        break 'run;
                    }
                    sent += 1;
                    if sent.is_multiple_of(256) {
                        updates.fetch_add(256, Ordering::Relaxed);
                        now = device_models::now_ms();
                        if stop.load(Ordering::Relaxed) {
                            break 'run;
                        }
                    }
                }
            }
            updates.fetch_add(sent % 256, Ordering::Relaxed);
        }));
    }
    tokio::time::sleep(opts.duration).await;
    stop.store(true, Ordering::Relaxed);
    let received_in_run = received.load(Ordering::Relaxed) - received_before;
    let seconds = start.elapsed().as_secs_f64();
    for g in generators {
        let _ = g.await;
    }
    // Let the queues drain: wait until the count stops moving.
    let mut last = received.load(Ordering::Relaxed);
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let now = received.load(Ordering::Relaxed);
        if now == last {
            break;
        }
        last = now;
    }
    let report = BenchReport {
        devices: opts.devices,
        gateways,
        seconds,
        updates: updates.load(Ordering::Relaxed),
        received: received_in_run,
        received_after_drain: last - received_before,
        published: ThingsStats::get(&stats.state_events) - published_before,
        db_ops: store_stats.ops.load(Ordering::Relaxed) - ops_before,
        db_batches: store_stats.batches.load(Ordering::Relaxed) - batches_before,
    };
    drop(subscriber);
    hub.shutdown().await;
    Ok(report)
}
