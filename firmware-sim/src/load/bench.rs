//! The side-by-side benchmark: Brume, Crossbar.io and a plain frame relay (the machine's limit),
//! each started here on loopback and driven by the same generator, several rounds each,
//! reported as medians and ratios in one markdown table.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use hub::wamp::Serializer;

use super::cpu;
use super::target::{BrumeProcess, brume_binary, rss_kib, settle, start_brume};
use super::wamp::{self, WampLoad};
use super::{crossbar, relay_process};

/// How long and how often to measure.
#[derive(Clone, Copy, Debug)]
pub struct BenchPlan {
    pub rounds: usize,
    pub warmup: Duration,
    pub measure: Duration,
}

impl BenchPlan {
    pub fn quick() -> Self {
        BenchPlan {
            rounds: 1,
            warmup: Duration::from_millis(500),
            measure: Duration::from_secs(1),
        }
    }
    pub fn full() -> Self {
        BenchPlan {
            rounds: 3,
            warmup: Duration::from_secs(1),
            measure: Duration::from_secs(3),
        }
    }
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

/// One measurement: the figure (higher is better), a text rendering, and CPU use.
#[derive(Clone, Debug)]
struct Sample {
    score: f64,
    text: String,
    sut_cpu: f64,
    gen_cpu: f64,
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
    };
    let pids = sys.pids();
    let me = std::process::id();
    let (sut0, gen0, t0) = (cpu::total(&pids), cpu::cpu_seconds(me), Instant::now());
    let (score, text) = match scenario {
        Scenario::PubSub { subs, .. } => {
            let f = wamp::pubsub(&cfg, subs, 1000).await?;
            (f.delivered_per_sec, format!("{:.0}", f.delivered_per_sec))
        }
        Scenario::RpcSequential => {
            let f = wamp::rpc(&cfg, 1).await?;
            (
                1e6 / f.p99_us.max(1.0),
                format!("{:.0} µs ({:.0} µs)", f.p99_us, f.p50_us),
            )
        }
        Scenario::RpcParallel => {
            let f = wamp::rpc(&cfg, 100).await?;
            (f.calls_per_sec, format!("{:.0}", f.calls_per_sec))
        }
    };
    let wall = t0.elapsed().as_secs_f64();
    Ok(Some(Sample {
        score,
        text,
        sut_cpu: (cpu::total(&pids) - sut0) / wall * 100.0,
        gen_cpu: (cpu::cpu_seconds(me) - gen0) / wall * 100.0,
    }))
}

/// One row of the WAMP table: Brume, Crossbar.io and the relay in fixed columns, "–" where a
/// system was skipped or failed; the relay ratio only for pub/sub (the relay does no RPC).
fn table_row(
    name: &str,
    pubsub: bool,
    brume: &Option<Sample>,
    crossbar: &Option<Sample>,
    relay: &Option<Sample>,
) -> String {
    let text = |s: &Option<Sample>| s.as_ref().map_or("–".into(), |s| s.text.clone());
    let ratio = |a: &Option<Sample>, z: &Option<Sample>| match (a, z) {
        (Some(a), Some(z)) if z.score > 0.0 => format!("{:.1}×", a.score / z.score),
        _ => "–".into(),
    };
    let cpu = brume.as_ref().map_or("–".into(), |s| {
        format!("{:.0}% / {:.0}%", s.gen_cpu, s.sut_cpu)
    });
    format!(
        "| {name} | {} | {} | {} | {} | {} | {cpu} |",
        text(brume),
        text(crossbar),
        ratio(brume, crossbar),
        text(relay),
        if pubsub {
            ratio(brume, relay)
        } else {
            "–".into()
        },
    )
}

fn median(mut samples: Vec<Sample>) -> Option<Sample> {
    if samples.is_empty() {
        return None;
    }
    samples.sort_by(|a, b| a.score.total_cmp(&b.score));
    Some(samples.swap_remove(samples.len() / 2))
}

/// Runs every scenario and returns the markdown report.
pub async fn run(plan: BenchPlan) -> anyhow::Result<String> {
    let mut out = String::new();
    let mut notes = Vec::new();
    let brume =
        start_brume(&brume_binary()?, "router.outbound_queue = 4096").context("starting brume")?;
    settle();
    let brume_rss = rss_kib(brume.pid()).unwrap_or(0);
    let brume_start = brume.started_in;
    // Fixed columns: Brume, Crossbar.io (None when skipped), the relay.
    let mut systems = vec![("Brume", Some(System::Brume(brume)))];
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
    systems.push(("Crossbar.io", crossbar));
    systems.push(("relay", Some(System::Relay(relay_process::start()?))));
    notes.insert(
        0,
        format!(
            "Brume: listening {:.1} ms after spawn, idle RSS {brume_rss} KiB",
            brume_start.as_secs_f64() * 1e3
        ),
    );

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
    writeln!(
        out,
        "| scenario | Brume | Crossbar.io | Brume ÷ Crossbar.io | loopback relay | Brume ÷ relay | CPU: generator / Brume |"
    )?;
    writeln!(out, "|---|---|---|---|---|---|---|")?;
    for scenario in scenarios {
        let mut medians = Vec::new();
        for (name, sys) in &systems {
            let Some(sys) = sys else {
                medians.push(None);
                continue;
            };
            let mut samples = Vec::new();
            for _ in 0..plan.rounds {
                match measure(sys, scenario, plan).await {
                    Ok(Some(s)) => samples.push(s),
                    Ok(None) => {}
                    Err(e) => notes.push(format!("{name}, {}: failed: {e}", scenario.name())),
                }
            }
            medians.push(median(samples));
        }
        let [b, c, r]: [Option<Sample>; 3] = medians.try_into().unwrap_or_default();
        let pubsub = matches!(scenario, Scenario::PubSub { .. });
        writeln!(out, "{}", table_row(&scenario.name(), pubsub, &b, &c, &r))?;
    }
    writeln!(out)?;
    drop(systems);
    mqtt_section(&mut out, &mut notes, plan).await?;
    writeln!(out)?;
    for n in notes {
        writeln!(out, "- {n}")?;
    }
    Ok(out)
}

/// A thing type whose one state property is the generator's sequence number.
pub const BENCH_SENSOR: &str = "id = \"bench_sensor\"\ntitle = \"Benchmark sensor\"\nversion = \"1.0\"\n\n[properties.seq]\ntype = \"integer\"\n";

/// MQTT telemetry and idle-connection memory: Brume (MQTT in, WAMP out, registry writes
/// included) against mosquitto (MQTT in, MQTT out).
async fn mqtt_section(
    out: &mut String,
    notes: &mut Vec<String>,
    plan: BenchPlan,
) -> anyhow::Result<()> {
    use super::mqtt::{Sink, find_mosquitto, idle_connections, start_mosquitto, telemetry};
    use rumqttc::QoS;
    let types = tempfile::tempdir()?;
    std::fs::write(types.path().join("bench_sensor.toml"), BENCH_SENSOR)?;
    let settings = format!(
        "router.outbound_queue = 4096\nmqtt.max_connections = 20000\nthings.provisioning = \"auto\"\n\
         things.auto_type = \"bench_sensor\"\nthings.types_dir = {:?}\n",
        types.path().display().to_string()
    );
    let brume = start_brume(&brume_binary()?, &settings).context("starting brume for MQTT")?;
    let Some(brume_mqtt) = brume.mqtt else {
        notes.push("MQTT scenarios skipped: brume did not report its MQTT address".into());
        return Ok(());
    };
    let mosquitto = match find_mosquitto() {
        Some(bin) => match start_mosquitto(&bin) {
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
        "| MQTT, 100 devices → 1 subscriber | Brume (MQTT → WAMP, registry writes included) | mosquitto (MQTT → MQTT) | Brume ÷ mosquitto | CPU: generator / Brume |"
    )?;
    writeln!(out, "|---|---|---|---|---|")?;
    let me = std::process::id();
    for (qos, name) in [(QoS::AtMostOnce, "QoS 0"), (QoS::AtLeastOnce, "QoS 1")] {
        let mut cells = Vec::new();
        let mut brume_cpu = String::from("–");
        for (i, target) in [
            Some((brume_mqtt, Sink::Wamp(brume.rawsocket.clone()), brume.pid())),
            mosquitto.as_ref().map(|m| (m.addr, Sink::Mqtt, m.pid())),
        ]
        .into_iter()
        .enumerate()
        {
            let Some((addr, sink, pid)) = target else {
                cells.push(None);
                continue;
            };
            let mut samples = Vec::new();
            for _ in 0..plan.rounds {
                let (sut0, gen0, t0) =
                    (cpu::cpu_seconds(pid), cpu::cpu_seconds(me), Instant::now());
                match telemetry(
                    addr,
                    sink.clone(),
                    100,
                    qos,
                    plan.warmup,
                    plan.measure,
                    2000,
                )
                .await
                {
                    Ok(f) => {
                        let wall = t0.elapsed().as_secs_f64();
                        if i == 0 {
                            brume_cpu = format!(
                                "{:.0}% / {:.0}%",
                                (cpu::cpu_seconds(me) - gen0) / wall * 100.0,
                                (cpu::cpu_seconds(pid) - sut0) / wall * 100.0
                            );
                        }
                        samples.push(f);
                    }
                    Err(e) => notes.push(format!("MQTT {name}: failed: {e}")),
                }
            }
            samples.sort_by(|a, b| a.per_sec.total_cmp(&b.per_sec));
            cells.push(samples.get(samples.len() / 2).cloned());
        }
        let text = |c: &Option<super::mqtt::TelemetryFigure>| {
            c.as_ref().map_or("–".into(), |f| {
                format!(
                    "{:.0} msg/s, p50 {:.0} µs, p99 {:.0} µs",
                    f.per_sec, f.p50_us, f.p99_us
                )
            })
        };
        let ratio = match (&cells[0], cells.get(1).and_then(Option::as_ref)) {
            (Some(b), Some(m)) if m.per_sec > 0.0 => format!("{:.2}×", b.per_sec / m.per_sec),
            _ => "–".into(),
        };
        writeln!(
            out,
            "| {name} telemetry | {} | {} | {ratio} | {brume_cpu} |",
            text(&cells[0]),
            text(cells.get(1).unwrap_or(&None))
        )?;
    }
    // Resident memory per idle connection.
    let idle = if plan.rounds == 1 { 2_000 } else { 10_000 };
    let mut per = Vec::new();
    for target in [
        Some((brume_mqtt, brume.pid())),
        mosquitto.as_ref().map(|m| (m.addr, m.pid())),
    ] {
        let Some((addr, pid)) = target else {
            per.push(None);
            continue;
        };
        settle();
        let before = rss_kib(pid)?;
        match idle_connections(addr, idle).await {
            Ok(conns) => {
                settle();
                let after = rss_kib(pid)?;
                per.push(Some(after.saturating_sub(before) as f64 / idle as f64));
                drop(conns);
            }
            Err(e) => {
                notes.push(format!("idle connections: failed: {e}"));
                per.push(None);
            }
        }
    }
    let kib = |v: &Option<f64>| v.map_or("–".into(), |k| format!("{k:.2} KiB per connection"));
    let ratio = match (per[0], per.get(1).copied().flatten()) {
        (Some(b), Some(m)) if m > 0.0 => format!("{:.1}× the memory", b / m),
        _ => "–".into(),
    };
    writeln!(
        out,
        "| {idle} idle connections, resident memory | {} | {} | {ratio} | – |",
        kib(&per[0]),
        kib(per.get(1).unwrap_or(&None))
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(score: f64) -> Option<Sample> {
        Some(Sample {
            score,
            text: format!("{score}"),
            sut_cpu: 50.0,
            gen_cpu: 40.0,
        })
    }

    #[test]
    fn a_skipped_system_leaves_its_column_empty() {
        assert_eq!(
            table_row("s", true, &sample(400.0), &None, &sample(1000.0)),
            "| s | 400 | – | – | 1000 | 0.4× | 40% / 50% |"
        );
        assert_eq!(
            table_row("s", false, &sample(30.0), &sample(10.0), &None),
            "| s | 30 | 10 | 3.0× | – | – | 40% / 50% |"
        );
    }
}
