//! The side-by-side benchmark: Brume, Crossbar.io and a plain frame relay (the machine's limit),
//! each started here on loopback and driven by the same generator, several rounds each (the
//! systems take turns within a round), reported as medians and ratios in markdown tables, with
//! the messages lost; then MQTT telemetry and idle-connection memory against mosquitto; then
//! CoAP confirmable requests against libcoap ([`super::coap`]); then Modbus TCP against
//! pymodbus ([`super::modbus`]). [`BenchPlan::only`] runs one of them.
//!
//! With `--scrape-metrics`, every Brume measurement is made twice per round, without and with
//! `/metrics` scraped once a second ([`super::scrape`]), in alternating order.

use std::fmt::Write as _;
use std::time::Duration;

use anyhow::Context as _;
use hub::wamp::Serializer;

use super::report::{self, Column, Loss, LossTally, Sample};
use super::scrape::{ScrapeStats, Scraper};
use super::target::{
    BrumeProcess, brume_binary, raise_open_files_limit, rss_kib, settle, start_brume,
};
use super::wamp::{self, WampLoad};
use super::{crossbar, relay_process};

/// How long and how often to measure.
#[derive(Clone, Copy, Debug)]
pub struct BenchPlan {
    pub rounds: usize,
    pub warmup: Duration,
    pub measure: Duration,
    /// Idle-connection counts whose resident memory is reported (opened one after the other).
    pub idle_connections: &'static [usize],
    /// Measure each Brume scenario also with `/metrics` scraped once a second.
    pub scrape_metrics: bool,
    /// Run only this section (default: all).
    pub only: Option<Section>,
}

/// A section of the benchmark: one table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Section {
    /// WAMP pub/sub and RPC: Brume, Crossbar.io, the relay.
    Wamp,
    /// MQTT telemetry and idle connections: Brume, mosquitto.
    Mqtt,
    /// Modbus TCP registers/s and latency: Brume, pymodbus.
    Modbus,
    /// CoAP confirmable requests/s and latency: Brume, libcoap.
    Coap,
}

impl BenchPlan {
    /// Whether `section` is run.
    pub fn runs(&self, section: Section) -> bool {
        self.only.is_none_or(|s| s == section)
    }
}

impl BenchPlan {
    pub fn quick() -> Self {
        BenchPlan {
            rounds: 1,
            warmup: Duration::from_millis(500),
            measure: Duration::from_secs(1),
            idle_connections: &[2_000],
            scrape_metrics: false,
            only: None,
        }
    }
    pub fn full() -> Self {
        BenchPlan {
            rounds: 3,
            warmup: Duration::from_secs(1),
            measure: Duration::from_secs(3),
            idle_connections: &[2_000, 10_000],
            scrape_metrics: false,
            only: None,
        }
    }
}

/// Brume's per-session outbound queue in every run here (messages).
const OUTBOUND_QUEUE: usize = 4096;
/// Most WAMP events published and not yet received by the slowest subscriber.
const WAMP_WINDOW: u64 = 1000;
/// Most MQTT messages published and not yet delivered, all devices together.
pub const MQTT_WINDOW: u64 = 2000;
/// mosquitto's `max_queued_messages`: no limit. The window keeps what waits behind the
/// in-flight messages small anyway, and mosquitto 2.0.11 (Debian 12) with any finite queue limit
/// drops QoS 1 messages towards the subscriber well below it ("Outgoing messages are being
/// dropped", about a window's worth per run, even with `max_inflight_messages` at twice the
/// window).
const MOSQUITTO_QUEUE: usize = 0;
/// Devices of the MQTT telemetry scenarios.
const MQTT_DEVICES: usize = 100;

/// The report and whether the run passed.
#[derive(Clone, Debug)]
pub struct BenchReport {
    pub text: String,
    /// Messages lost over the whole run; any makes the run fail.
    pub lost: u64,
}

/// One system under test.
enum System {
    Brume(BrumeProcess),
    Crossbar(crossbar::CrossbarProcess),
    Relay(relay_process::RelayProcess),
}

impl System {
    fn url(&self, websocket: bool) -> Option<String> {
        match self {
            System::Brume(b) => Some(if websocket {
                b.websocket.clone()
            } else {
                b.rawsocket.clone()
            }),
            System::Crossbar(c) => Some(if websocket {
                c.websocket.clone()
            } else {
                c.rawsocket.clone()
            }),
            System::Relay(r) => (!websocket).then(|| r.url.clone()),
        }
    }
    fn pids(&self) -> Vec<u32> {
        match self {
            System::Brume(b) => vec![b.pid()],
            System::Crossbar(c) => c.pids(),
            System::Relay(r) => vec![r.pid()],
        }
    }
}

#[derive(Clone, Copy, Debug)]
enum Scenario {
    PubSub { subs: usize, websocket: bool },
    RpcSequential,
    RpcParallel,
}

impl Scenario {
    fn name(self) -> String {
        match self {
            Scenario::PubSub { subs, websocket } => format!(
                "pub/sub 1 → {subs}, {}, events/s",
                if websocket {
                    "WebSocket JSON"
                } else {
                    "RawSocket MessagePack"
                }
            ),
            Scenario::RpcSequential => {
                "RPC sequential, RawSocket MessagePack, p99 latency (p50)".into()
            }
            Scenario::RpcParallel => "RPC 100 in flight, RawSocket MessagePack, calls/s".into(),
        }
    }
}

/// One column of a table: a system, and whether `/metrics` is scraped while it is measured.
struct Variant<'a> {
    name: &'static str,
    system: Option<&'a System>,
    /// The HTTP base URL scraped during each measurement.
    scrape: Option<String>,
}

/// The order the variants are measured in round `round`: a Brume pair (without, with
/// scraping; the first two) swaps every other round, so neither always goes first.
fn round_order(variants: usize, paired: bool, round: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..variants).collect();
    if paired && round % 2 == 1 && variants >= 2 {
        order.swap(0, 1);
    }
    order
}

/// Runs `load` with `/metrics` of `scrape` fetched once a second meanwhile, if given.
async fn scraped<T>(
    scrape: Option<&str>,
    stats: &mut ScrapeStats,
    load: impl std::future::Future<Output = T>,
) -> T {
    let scraper = scrape.map(|base| Scraper::start(base.to_owned()));
    let out = load.await;
    if let Some(s) = scraper {
        stats.merge(s.finish().await);
    }
    out
}

async fn measure(
    sys: &System,
    scenario: Scenario,
    plan: BenchPlan,
) -> anyhow::Result<Option<Sample>> {
    let websocket = matches!(
        scenario,
        Scenario::PubSub {
            websocket: true,
            ..
        }
    );
    if matches!(sys, System::Relay(_)) && !matches!(scenario, Scenario::PubSub { .. }) {
        return Ok(None);
    }
    let Some(url) = sys.url(websocket) else {
        return Ok(None);
    };
    let cfg = WampLoad {
        url,
        realm: "brume".into(),
        serializer: if websocket {
            Serializer::Json
        } else {
            Serializer::MsgPack
        },
        payload_bytes: 32,
        warmup: plan.warmup,
        measure: plan.measure,
        cpu_of: sys.pids(),
    };
    Ok(Some(match scenario {
        Scenario::PubSub { subs, .. } => {
            let f = wamp::pubsub(&cfg, subs, WAMP_WINDOW).await?;
            Sample {
                score: f.delivered_per_sec,
                text: format!("{:.0}", f.delivered_per_sec),
                cpu: f.cpu,
                loss: Some(Loss {
                    sent: f.published * subs as u64,
                    lost: f.lost,
                }),
            }
        }
        Scenario::RpcSequential => {
            let f = wamp::rpc(&cfg, 1).await?;
            Sample {
                score: 1e6 / f.p99_us.max(1.0),
                text: format!("{:.0} µs ({:.0} µs)", f.p99_us, f.p50_us),
                cpu: f.cpu,
                loss: None,
            }
        }
        Scenario::RpcParallel => {
            let f = wamp::rpc(&cfg, 100).await?;
            Sample {
                score: f.calls_per_sec,
                text: format!("{:.0}", f.calls_per_sec),
                cpu: f.cpu,
                loss: None,
            }
        }
    }))
}

/// Runs every scenario (or those of [`BenchPlan::only`]) and returns the markdown report.
pub async fn run(plan: BenchPlan) -> anyhow::Result<BenchReport> {
    let mut out = String::new();
    let mut notes = Vec::new();
    let mut tally = LossTally::default();
    let mut scrapes = ScrapeStats::default();
    let open_files = match raise_open_files_limit() {
        Ok(n) => Some(n),
        Err(e) => {
            notes.push(format!("open-files limit left as it was: {e:#}"));
            None
        }
    };
    notes.push(format!(
        "median of {} round(s) per cell, the systems taking turns within each round; CPU is percent of one core over the measured interval of the round the median figure came from",
        plan.rounds
    ));
    if plan.runs(Section::Wamp) {
        wamp_section(&mut out, &mut notes, &mut tally, &mut scrapes, plan).await?;
    }
    if plan.runs(Section::Mqtt) {
        mqtt_section(
            &mut out,
            &mut notes,
            &mut tally,
            &mut scrapes,
            plan,
            open_files,
        )
        .await?;
        writeln!(out)?;
    }
    if plan.runs(Section::Coap) {
        super::coap::section(&mut out, &mut notes, &mut tally, plan).await?;
        writeln!(out)?;
    }
    if plan.runs(Section::Modbus) {
        super::modbus::section(&mut out, &mut notes, plan).await?;
        writeln!(out)?;
    }
    if plan.scrape_metrics {
        notes.push(scrapes.summary());
    }
    if plan.runs(Section::Wamp) || plan.runs(Section::Mqtt) || plan.runs(Section::Coap) {
        notes.push(tally.note(super::DRAIN));
    }
    for n in notes {
        writeln!(out, "- {n}")?;
    }
    Ok(BenchReport {
        text: out,
        lost: tally.lost(),
    })
}

/// WAMP pub/sub and RPC: Brume, Crossbar.io and the relay.
async fn wamp_section(
    out: &mut String,
    notes: &mut Vec<String>,
    tally: &mut LossTally,
    scrapes: &mut ScrapeStats,
    plan: BenchPlan,
) -> anyhow::Result<()> {
    let brume = start_brume(
        &brume_binary()?,
        &format!("router.outbound_queue = {OUTBOUND_QUEUE}"),
    )
    .context("starting brume")?;
    settle();
    let brume_rss = rss_kib(brume.pid()).unwrap_or(0);
    let brume_start = brume.started_in;
    let brume_http = brume.http.clone();
    let brume = System::Brume(brume);
    let mut crossbar = None;
    match crossbar::find() {
        Some(bin) => match crossbar::start(&bin) {
            Ok(cb) => {
                settle();
                let rss: u64 = cb.pids().iter().filter_map(|p| rss_kib(*p).ok()).sum();
                notes.push(format!(
                    "Crossbar.io: listening {:.0} ms after spawn, idle RSS {rss} KiB (controller and router worker)",
                    cb.started_in.as_secs_f64() * 1e3
                ));
                crossbar = Some(System::Crossbar(cb));
            }
            Err(e) => notes.push(format!("Crossbar.io skipped: {e}")),
        },
        None => notes.push(
            "Crossbar.io skipped: not installed (run `cargo test -p tests --test autobahn_interop` once to install the pinned peers, or set BRUME_CROSSBAR)"
                .into(),
        ),
    }
    let relay = System::Relay(relay_process::start()?);
    notes.insert(
        0,
        format!(
            "Brume: listening {:.1} ms after spawn, idle RSS {brume_rss} KiB",
            brume_start.as_secs_f64() * 1e3
        ),
    );
    // Fixed columns: Brume, Brume scraped (with --scrape-metrics), Crossbar.io, the relay.
    let mut variants = vec![Variant {
        name: "Brume",
        system: Some(&brume),
        scrape: None,
    }];
    if plan.scrape_metrics {
        variants.push(Variant {
            name: "Brume scraped",
            system: Some(&brume),
            scrape: Some(brume_http),
        });
    }
    variants.push(Variant {
        name: "Crossbar.io",
        system: crossbar.as_ref(),
        scrape: None,
    });
    variants.push(Variant {
        name: "relay",
        system: Some(&relay),
        scrape: None,
    });

    let scenarios = [
        Scenario::PubSub {
            subs: 1,
            websocket: false,
        },
        Scenario::PubSub {
            subs: 10,
            websocket: false,
        },
        Scenario::PubSub {
            subs: 1,
            websocket: true,
        },
        Scenario::PubSub {
            subs: 10,
            websocket: true,
        },
        Scenario::RpcSequential,
        Scenario::RpcParallel,
    ];
    writeln!(out, "{}", report::wamp_header(plan.scrape_metrics))?;
    for scenario in scenarios {
        let mut columns = vec![Column::default(); variants.len()];
        for round in 0..plan.rounds {
            for i in round_order(variants.len(), plan.scrape_metrics, round) {
                let v = &variants[i];
                let Some(sys) = v.system else { continue };
                let got = scraped(v.scrape.as_deref(), scrapes, measure(sys, scenario, plan)).await;
                match got {
                    Ok(Some(s)) => columns[i].samples.push(s),
                    Ok(None) => {}
                    Err(e) => notes.push(format!("{}, {}: failed: {e:#}", v.name, scenario.name())),
                }
            }
        }
        for (v, c) in variants.iter().zip(&columns) {
            tally.add(format!("{}, {}", scenario.name(), v.name), c);
        }
        let pubsub = matches!(scenario, Scenario::PubSub { .. });
        let scraped_column = plan.scrape_metrics.then(|| &columns[1]);
        let rest = if plan.scrape_metrics { 2 } else { 1 };
        writeln!(
            out,
            "{}",
            report::wamp_row(
                &scenario.name(),
                pubsub,
                &columns[0],
                scraped_column,
                &columns[rest],
                &columns[rest + 1],
            )
        )?;
    }
    writeln!(out)?;
    drop(variants);
    drop((brume, crossbar, relay));
    notes.push(format!(
        "WAMP pub/sub window: the publisher keeps at most {WAMP_WINDOW} events published and not yet received by the slowest subscriber (Brume's router.outbound_queue is {OUTBOUND_QUEUE}, so its slow-consumer policy never triggers)"
    ));
    Ok(())
}

/// A thing type whose one state property is the generator's sequence number.
pub const BENCH_SENSOR: &str = "id = \"bench_sensor\"\ntitle = \"Benchmark sensor\"\nversion = \"1.0\"\n\n[properties.seq]\ntype = \"integer\"\n";

/// MQTT telemetry and idle-connection memory: Brume (MQTT in, WAMP out, registry writes
/// included) against mosquitto (MQTT in, MQTT out).
async fn mqtt_section(
    out: &mut String,
    notes: &mut Vec<String>,
    tally: &mut LossTally,
    scrapes: &mut ScrapeStats,
    plan: BenchPlan,
    open_files: Option<u64>,
) -> anyhow::Result<()> {
    use super::mqtt::{
        DEVICE_INFLIGHT, Sink, TelemetryLoad, find_mosquitto, start_mosquitto, telemetry,
    };
    use rumqttc::QoS;
    let types = tempfile::tempdir()?;
    std::fs::write(types.path().join("bench_sensor.toml"), BENCH_SENSOR)?;
    let settings = format!(
        "router.outbound_queue = {OUTBOUND_QUEUE}\nmqtt.max_connections = 20000\nthings.provisioning = \"auto\"\n\
         things.auto_type = \"bench_sensor\"\nthings.types_dir = {:?}\n",
        types.path().display().to_string()
    );
    let brume = start_brume(&brume_binary()?, &settings).context("starting brume for MQTT")?;
    let Some(brume_mqtt) = brume.mqtt else {
        notes.push("MQTT scenarios skipped: brume did not report its MQTT address".into());
        return Ok(());
    };
    let mosquitto = match find_mosquitto() {
        Some(bin) => match start_mosquitto(&bin, MQTT_WINDOW, MOSQUITTO_QUEUE) {
            Ok(m) => Some(m),
            Err(e) => {
                notes.push(format!("mosquitto skipped: {e}"));
                None
            }
        },
        None => {
            notes.push("mosquitto skipped: not installed (apt-get install mosquitto, or set BRUME_MOSQUITTO)".into());
            None
        }
    };
    writeln!(
        out,
        "{}",
        report::mqtt_header(MQTT_DEVICES, plan.scrape_metrics)
    )?;
    // (name, broker, sink, pids, scraped URL)
    let mut variants = vec![(
        "Brume",
        Some((brume_mqtt, Sink::Wamp(brume.rawsocket.clone()), brume.pid())),
        None,
    )];
    if plan.scrape_metrics {
        variants.push((
            "Brume scraped",
            Some((brume_mqtt, Sink::Wamp(brume.rawsocket.clone()), brume.pid())),
            Some(brume.http.clone()),
        ));
    }
    variants.push((
        "mosquitto",
        mosquitto.as_ref().map(|m| (m.addr, Sink::Mqtt, m.pid())),
        None,
    ));
    for (qos, name) in [(QoS::AtMostOnce, "QoS 0"), (QoS::AtLeastOnce, "QoS 1")] {
        let mut columns = vec![Column::default(); variants.len()];
        for round in 0..plan.rounds {
            for i in round_order(variants.len(), plan.scrape_metrics, round) {
                let (vname, target, scrape) = &variants[i];
                let Some((broker, sink, pid)) = target else {
                    continue;
                };
                let load = TelemetryLoad {
                    broker: *broker,
                    sink: sink.clone(),
                    devices: MQTT_DEVICES,
                    qos,
                    warmup: plan.warmup,
                    measure: plan.measure,
                    window: MQTT_WINDOW,
                    cpu_of: vec![*pid],
                };
                match scraped(scrape.as_deref(), scrapes, telemetry(&load)).await {
                    Ok(f) => {
                        if f.unaccepted > 0 || f.duplicates > 0 {
                            notes.push(format!(
                                "{vname}, MQTT {name}, round {}: {} published and never accepted by the broker (not counted as lost), {} delivered twice",
                                round + 1,
                                f.unaccepted,
                                f.duplicates
                            ));
                        }
                        columns[i].samples.push(Sample {
                            score: f.per_sec,
                            text: format!(
                                "{:.0} msg/s, p50 {:.0} µs, p99 {:.0} µs",
                                f.per_sec, f.p50_us, f.p99_us
                            ),
                            cpu: f.cpu,
                            loss: Some(Loss {
                                sent: f.sent,
                                lost: f.lost,
                            }),
                        });
                    }
                    Err(e) => notes.push(format!("{vname}, MQTT {name}: failed: {e:#}")),
                }
            }
        }
        for ((vname, ..), c) in variants.iter().zip(&columns) {
            tally.add(format!("MQTT {name} telemetry, {vname}"), c);
        }
        let scraped_column = plan.scrape_metrics.then(|| &columns[1]);
        writeln!(
            out,
            "{}",
            report::mqtt_row(
                &format!("{name} telemetry"),
                &columns[0],
                scraped_column,
                &columns[columns.len() - 1],
            )
        )?;
    }
    notes.push(format!(
        "MQTT window, the same for both brokers: the generator keeps at most {MQTT_WINDOW} messages published and not yet delivered, all {MQTT_DEVICES} devices together; each device's client keeps at most {DEVICE_INFLIGHT} QoS 1 PUBLISHes unacknowledged, and Brume's MQTT gateway at most 100 per connection awaiting their registry commit (mqtt.max_inflight). \
         Towards the subscriber, mosquitto runs with max_inflight_messages {MQTT_WINDOW} (default 20), so its QoS 1 subscriber may hold unacknowledged as many messages as the generator lets be in flight, like the WAMP subscriber on Brume, which acknowledges nothing (router.outbound_queue {OUTBOUND_QUEUE}), \
         and max_queued_messages {MOSQUITTO_QUEUE} (no limit; default 1000): with a finite limit mosquitto 2.0.11 drops about a window's worth of QoS 1 messages per run (\"Outgoing messages are being dropped\") and the rest of the run crawls at low latency with the few messages left in flight"
    ));
    // Resident memory per idle connection, the counts opened one after the other, each broker
    // freshly started.
    let counts = plan.idle_connections;
    let most = counts.iter().copied().max().unwrap_or(0);
    let counts: Vec<usize> = match open_files {
        // The generator holds one descriptor per connection, plus its own.
        Some(limit) if (most as u64) + 1024 > limit => {
            notes.push(format!(
                "idle connections above {} skipped: the open-files limit is {limit}",
                limit.saturating_sub(1024)
            ));
            counts
                .iter()
                .copied()
                .filter(|&n| (n as u64) + 1024 <= limit)
                .collect()
        }
        _ => counts.to_vec(),
    };
    // On fresh processes: memory a broker freed after the telemetry load stays resident and is
    // reused for new connections, which would hide their cost.
    let had_mosquitto = mosquitto.is_some();
    drop((brume, mosquitto));
    let brume = start_brume(&brume_binary()?, &settings).context("starting brume")?;
    let brume_mqtt = brume
        .mqtt
        .context("brume did not report its MQTT address")?;
    let mosquitto = match find_mosquitto() {
        Some(bin) if had_mosquitto => Some(start_mosquitto(&bin, MQTT_WINDOW, MOSQUITTO_QUEUE)?),
        _ => None,
    };
    let mut per: Vec<Vec<Option<f64>>> = Vec::new();
    for target in [
        Some((brume_mqtt, brume.pid())),
        mosquitto.as_ref().map(|m| (m.addr, m.pid())),
    ] {
        let Some((addr, pid)) = target else {
            per.push(vec![None; counts.len()]);
            continue;
        };
        per.push(idle_memory(addr, pid, &counts, notes).await?);
    }
    for (k, n) in counts.iter().enumerate() {
        let at = |t: usize| per.get(t).and_then(|v| v.get(k)).copied().flatten();
        writeln!(
            out,
            "{}",
            report::memory_row(*n, at(0), at(1), plan.scrape_metrics)
        )?;
    }
    Ok(())
}

/// KiB of resident memory per idle connection at each of `counts` connections (ascending),
/// opened one batch after the other on the broker at `addr` (process `pid`).
async fn idle_memory(
    addr: std::net::SocketAddr,
    pid: u32,
    counts: &[usize],
    notes: &mut Vec<String>,
) -> anyhow::Result<Vec<Option<f64>>> {
    use super::mqtt::idle_connections;
    settle();
    let before = rss_kib(pid)?;
    let mut held = Vec::new();
    let mut per = Vec::new();
    for &n in counts {
        if per.last().is_some_and(Option::is_none) {
            per.push(None);
            continue;
        }
        match idle_connections(addr, held.len()..n).await {
            Ok(conns) => {
                held.extend(conns);
                settle();
                let after = rss_kib(pid)?;
                per.push(Some(after.saturating_sub(before) as f64 / n as f64));
            }
            Err(e) => {
                notes.push(format!("{n} idle connections: failed: {e:#}"));
                per.push(None);
            }
        }
    }
    drop(held);
    Ok(per)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn brume_with_and_without_scraping_take_turns_going_first() {
        assert_eq!(round_order(4, true, 0), vec![0, 1, 2, 3]);
        assert_eq!(round_order(4, true, 1), vec![1, 0, 2, 3]);
        assert_eq!(round_order(4, true, 2), vec![0, 1, 2, 3]);
        assert_eq!(round_order(3, false, 1), vec![0, 1, 2]);
    }

    #[test]
    fn the_quick_plan_keeps_one_round_and_2000_connections() {
        assert_eq!(BenchPlan::quick().rounds, 1);
        assert_eq!(BenchPlan::quick().idle_connections, &[2_000]);
        assert_eq!(BenchPlan::full().rounds, 3);
        assert_eq!(BenchPlan::full().idle_connections, &[2_000, 10_000]);
    }
}
