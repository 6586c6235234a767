//! Modbus TCP: registers read per second and the time from a device's answer to the value in the
//! reader's hands, Brume's Modbus gateway against pymodbus, both reading the same simulated bench
//! devices ([`DeviceKind::Bench`]) served here over Modbus TCP.
//!
//! - Brume: a `brume` process polls `devices` bench devices per bus, each bus one `[[modbus.tcp]]`
//!   connection to its own simulated server, with the thing type [`bench_type`] (every block of
//!   100 holding registers a poll group at 100 ms, the shortest interval). Registers read come
//!   from the hub's `brume_modbus_registers_read` counters over the measured window; a RawSocket
//!   subscriber of `brume.thing..state` takes, for each state EVENT, its receive time minus the
//!   stamp the device wrote into the block when it answered (both from this machine's wall clock).
//! - pymodbus: one asyncio client per bus (the script [`PEER_SCRIPT`]) reads the same blocks of
//!   the same devices one request at a time per connection, as fast as it can or at the same
//!   interval, and takes its decoded answer's time minus the stamp.
//!
//! The simulated devices and the subscriber run in this process, so their CPU is the
//! generator's, not the system's.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use hub::wamp::{Message, Serializer, Value, dict};
use tokio_util::sync::CancellationToken;

use super::bench::BenchPlan;
use super::cpu::{CpuMeter, CpuUse};
use super::peer::Peer;
use super::report::{self, Column, Sample};
use super::target::{brume_binary, start_brume};
use crate::modbus::device::bench::{BLOCK, BLOCKS, STAMP_COUNT};
use crate::modbus::{DeviceKind, SimBus, TcpServer};

/// The pymodbus client the peer runs (written to a temporary file and run by the Python of
/// [`find_python`]).
pub const PEER_SCRIPT: &str = include_str!("modbus_peer.py");

/// The poll interval of every group of [`bench_type`], ms: the shortest the gateway allows.
pub const POLL_MS: u64 = 100;

/// `u64` properties after the stamp in each block (4 registers each), filling the block.
const VALUES_PER_BLOCK: u16 = (BLOCK - STAMP_COUNT) / 4;

/// The thing type of the bench device (id [`DeviceKind::Bench`]'s `type_id`) reading its first
/// `blocks` blocks: per block `k` a poll group `g<k>` at [`POLL_MS`], the stamp as integer
/// property `s<k>` and the rest of the block as 24 `u64` integer properties `v<k>_<j>`, so each
/// group is one read of 100 holding registers (nothing is merged across groups) and its report
/// carries 25 properties.
pub fn bench_type(blocks: u16) -> String {
    let blocks = blocks.clamp(1, BLOCKS);
    let mut t = format!(
        "id = \"{}\"\ntitle = \"Modbus benchmark device\"\nversion = \"1.0\"\n\n",
        DeviceKind::Bench.type_id()
    );
    let mut groups = String::new();
    let mut mappings = String::new();
    for k in 0..blocks {
        let base = k * BLOCK;
        let _ = writeln!(groups, "g{k} = {{ poll_ms = {POLL_MS} }}");
        let _ = writeln!(t, "[properties.s{k}]\ntype = \"integer\"\n");
        let _ = writeln!(
            mappings,
            "s{k} = {{ table = \"holding\", address = {base}, type = \"u64\", group = \"g{k}\" }}"
        );
        for j in 0..VALUES_PER_BLOCK {
            let _ = writeln!(t, "[properties.v{k}_{j}]\ntype = \"integer\"\n");
            let _ = writeln!(
                mappings,
                "v{k}_{j} = {{ table = \"holding\", address = {}, type = \"u64\", group = \"g{k}\" }}",
                base + STAMP_COUNT + 4 * j
            );
        }
    }
    let _ = write!(
        t,
        "[bindings.modbus]\nmax_registers = 125\nmax_gap = 0\npoll_ms = {POLL_MS}\n\n\
         [bindings.modbus.groups]\n{groups}\n[bindings.modbus.properties]\n{mappings}"
    );
    t
}

/// One Modbus scenario.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Scenario {
    /// Buses: Modbus TCP connections, each to its own simulated server.
    pub buses: usize,
    /// Bench devices on each bus (units 1..=devices).
    pub devices: u8,
    /// Blocks of 100 registers read from each device, each its own poll group.
    pub blocks: u16,
    /// pymodbus reads each block every [`POLL_MS`] like the gateway; otherwise as fast as it can.
    pub paced: bool,
}

impl Scenario {
    /// Reads per second the gateway's schedule asks for.
    pub fn demand_per_sec(&self) -> f64 {
        (self.buses * usize::from(self.devices) * usize::from(self.blocks)) as f64 * 1000.0
            / POLL_MS as f64
    }

    /// The row's name.
    pub fn name(&self) -> String {
        let conns = if self.buses == 1 {
            "1 connection".to_owned()
        } else {
            format!("{} connections", self.buses)
        };
        let reads = if self.blocks == 1 {
            "100 registers".to_owned()
        } else {
            format!("{} × 100 registers", self.blocks)
        };
        if self.paced {
            format!(
                "{conns}, {} devices × {reads} every {POLL_MS} ms: stamp → value p99 (p50)",
                usize::from(self.devices) * self.buses
            )
        } else {
            format!(
                "{conns}, {} devices × {reads} every {POLL_MS} ms (pymodbus: back to back): registers/s",
                usize::from(self.devices) * self.buses
            )
        }
    }
}

/// What one measurement of one system saw.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Figures {
    /// Registers read per second over the window.
    pub registers_per_sec: f64,
    /// Read requests answered per second over the window.
    pub reads_per_sec: f64,
    /// Stamp → value in hand, microseconds: median.
    pub p50_us: u64,
    /// Stamp → value in hand, microseconds: 99th percentile.
    pub p99_us: u64,
    /// Latencies measured.
    pub samples: usize,
    /// Failed reads (pymodbus) or timeouts and exceptions (Brume's counters).
    pub errors: u64,
    /// CPU over the window: this process, and the system (hub or pymodbus).
    pub cpu: CpuUse,
}

impl Figures {
    fn sample(&self, paced: bool) -> Sample {
        if paced {
            Sample {
                score: 1e6 / (self.p99_us.max(1) as f64),
                text: format!("{} µs ({} µs)", self.p99_us, self.p50_us),
                cpu: self.cpu,
                loss: None,
            }
        } else {
            Sample {
                score: self.registers_per_sec,
                text: format!(
                    "{:.0} ({:.0} reads/s; stamp → value p50 {} µs, p99 {} µs)",
                    self.registers_per_sec, self.reads_per_sec, self.p50_us, self.p99_us
                ),
                cpu: self.cpu,
                loss: None,
            }
        }
    }
}

/// The nearest-rank `q` quantile of ascending `sorted` values; 0 when empty.
pub fn quantile(sorted: &[u64], q: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// The sum of every series of the counter `name` (with or without the `_total` suffix of the
/// text format) in a `/metrics` body; `None` if it has no such series.
pub fn metric_sum(body: &str, name: &str) -> Option<f64> {
    let total = format!("{name}_total");
    let mut sum = None;
    for line in body.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let metric = series.split('{').next().unwrap_or_default();
        if metric != name && metric != total {
            continue;
        }
        if let Ok(v) = value.parse::<f64>() {
            *sum.get_or_insert(0.0) += v;
        }
    }
    sum
}

/// The simulated servers of one scenario: one [`SimBus`] per bus on its own loopback port.
pub struct Fleet {
    servers: Vec<(SimBus, TcpServer)>,
    devices: u8,
    shutdown: CancellationToken,
}

impl Drop for Fleet {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

impl Fleet {
    /// Starts `buses` servers with `devices` bench devices each (units 1..=devices).
    pub async fn start(buses: usize, devices: u8) -> anyhow::Result<Fleet> {
        let shutdown = CancellationToken::new();
        let mut servers = Vec::new();
        for _ in 0..buses {
            let bus = SimBus::new();
            for unit in 1..=devices {
                bus.add(unit, DeviceKind::Bench)?;
            }
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
            let server = bus.serve_tcp(listener, shutdown.clone())?;
            servers.push((bus, server));
        }
        Ok(Fleet {
            servers,
            devices,
            shutdown,
        })
    }

    /// Closes every server's port (see [`TcpServer::unplug`]).
    pub async fn unplug(&self) {
        for (_, server) in &self.servers {
            server.unplug().await;
        }
    }

    /// Opens every server's port again.
    pub async fn plug(&self) -> std::io::Result<()> {
        for (_, server) in &self.servers {
            server.plug().await?;
        }
        Ok(())
    }

    /// The thing id of `unit` on bus `bus`.
    fn thing(bus: usize, unit: u8) -> String {
        format!("mb-{bus}-{unit:03}")
    }

    /// The hub's `modbus.tcp` setting for these servers (an inline array, one bus each).
    pub fn hub_setting(&self) -> String {
        let mut buses = Vec::new();
        for (b, (_, server)) in self.servers.iter().enumerate() {
            let devices: Vec<String> = (1..=self.devices)
                .map(|u| {
                    format!(
                        "{{ unit = {u}, thing = \"{}\", thing_type = \"{}\" }}",
                        Self::thing(b, u),
                        DeviceKind::Bench.type_id()
                    )
                })
                .collect();
            buses.push(format!(
                "{{ name = \"bench-{b}\", address = \"{}\", devices = [{}] }}",
                server.local_addr(),
                devices.join(", ")
            ));
        }
        format!("modbus.tcp = [{}]", buses.join(", "))
    }

    /// The peer's configuration (see [`PEER_SCRIPT`]).
    fn peer_config(&self, sc: &Scenario, warmup: Duration, measure: Duration) -> String {
        let buses: Vec<serde_json::Value> = self
            .servers
            .iter()
            .map(|(_, s)| {
                serde_json::json!({
                    "port": s.local_addr().port(),
                    "units": (1..=self.devices).collect::<Vec<u8>>(),
                })
            })
            .collect();
        serde_json::json!({
            "buses": buses,
            "blocks": sc.blocks,
            "block": BLOCK,
            "interval_ms": if sc.paced { POLL_MS } else { 0 },
            "warmup_s": warmup.as_secs_f64(),
            "measure_s": measure.as_secs_f64(),
        })
        .to_string()
    }
}

/// The hub's `/metrics` body.
async fn scrape(http: &str) -> anyhow::Result<String> {
    let (status, body) = tokio::time::timeout(
        Duration::from_secs(5),
        hub::http::client::get(http, "/metrics"),
    )
    .await
    .context("/metrics did not answer within 5 s")??;
    if status != 200 {
        bail!("/metrics answered {status}");
    }
    String::from_utf8(body.to_vec()).context("/metrics is not UTF-8")
}

/// The stamp of a state EVENT's values (any `s<k>` property), if it has one.
fn stamp_of(payload_values: Option<&hub::wamp::Dict>) -> Option<u64> {
    payload_values?.iter().find_map(|(k, v)| {
        let block = k.strip_prefix('s')?;
        (!block.is_empty() && block.bytes().all(|b| b.is_ascii_digit()))
            .then(|| v.as_u64())
            .flatten()
    })
}

fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// Brume polling the fleet: one `brume` process for this measurement.
pub async fn brume(
    fleet: &Fleet,
    sc: &Scenario,
    warmup: Duration,
    measure: Duration,
) -> anyhow::Result<Figures> {
    let types = tempfile::tempdir()?;
    std::fs::write(
        types
            .path()
            .join(format!("{}.toml", DeviceKind::Bench.type_id())),
        bench_type(sc.blocks),
    )?;
    let settings = format!(
        "router.outbound_queue = 65536\nthings.types_dir = {:?}\n{}\n",
        types.path().display().to_string(),
        fleet.hub_setting()
    );
    // The servers are unplugged until the hub listens, so that every bus connects at its first
    // retry, a second later, and all begin polling together.
    fleet.unplug().await;
    let hub = start_brume(&brume_binary()?, &settings);
    fleet.plug().await?;
    let hub = hub.context("starting brume for Modbus")?;
    let mut peer = Peer::join(&hub.rawsocket, "brume", Serializer::MsgPack).await?;
    peer.subscribe_with(
        "brume.thing..state",
        dict([("match", Value::from("wildcard"))]),
    )
    .await?;
    let recording = Arc::new(AtomicBool::new(false));
    let events = Arc::new(AtomicU64::new(0));
    let stop = CancellationToken::new();
    let subscriber = {
        let (recording, events, stop) = (recording.clone(), events.clone(), stop.clone());
        tokio::spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let m = tokio::select! {
                    () = stop.cancelled() => return Ok(latencies),
                    m = peer.recv() => m?,
                };
                let Message::Event { payload, .. } = m else {
                    continue;
                };
                let got = now_us();
                events.fetch_add(1, Ordering::Relaxed);
                let values = payload.kwarg("values").and_then(Value::as_dict);
                if let Some(stamp) = stamp_of(values)
                    && recording.load(Ordering::Relaxed)
                {
                    latencies.push(got.saturating_sub(stamp));
                }
            }
        })
    };
    let _progress =
        crate::progress::track(format!("Modbus, Brume, {}", sc.name()), "state events", {
            let events = events.clone();
            move || events.load(Ordering::Relaxed)
        });
    // Every device answering (one EVENT each at least) before the warm-up counts.
    let total = sc.buses * usize::from(sc.devices);
    let started = Instant::now();
    loop {
        let body = scrape(&hub.http).await?;
        tracing::debug!(waited = ?started.elapsed(), "waiting for the Modbus devices");
        if metric_sum(&body, "brume_modbus_devices_online").unwrap_or(0.0) >= total as f64 {
            break;
        }
        if started.elapsed() > Duration::from_secs(30) {
            bail!("the Modbus devices were not all online within 30 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(warmup).await;
    let counters = |body: &str| {
        (
            metric_sum(body, "brume_modbus_registers_read").unwrap_or(0.0),
            metric_sum(body, "brume_modbus_answered").unwrap_or(0.0),
            metric_sum(body, "brume_modbus_timeouts").unwrap_or(0.0)
                + metric_sum(body, "brume_modbus_exceptions").unwrap_or(0.0),
        )
    };
    let before = counters(&scrape(&hub.http).await?);
    let cpu = CpuMeter::start(&[hub.pid()]);
    let t0 = Instant::now();
    recording.store(true, Ordering::Relaxed);
    tokio::time::sleep(measure).await;
    recording.store(false, Ordering::Relaxed);
    let seconds = t0.elapsed().as_secs_f64();
    let cpu = cpu.read();
    let after = counters(&scrape(&hub.http).await?);
    stop.cancel();
    let mut latencies: Vec<u64> = subscriber
        .await
        .context("subscriber task")?
        .map_err(|e: anyhow::Error| e.context("subscriber"))?;
    drop(hub);
    latencies.sort_unstable();
    Ok(Figures {
        registers_per_sec: (after.0 - before.0) / seconds,
        reads_per_sec: (after.1 - before.1) / seconds,
        p50_us: quantile(&latencies, 0.5),
        p99_us: quantile(&latencies, 0.99),
        samples: latencies.len(),
        errors: (after.2 - before.2).max(0.0) as u64,
        cpu,
    })
}

/// What the peer script printed at the end.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PeerResult {
    /// Reads answered in the window.
    pub reads: u64,
    /// Registers read in the window.
    pub registers: u64,
    /// The window, s.
    pub seconds: f64,
    /// Reads that failed or came back short.
    pub errors: u64,
    /// Stamp → decoded answer of every read in the window, µs, ascending.
    pub latency_us: Vec<u64>,
}

/// Parses the peer's result line.
pub fn parse_peer_result(line: &str) -> anyhow::Result<PeerResult> {
    let v: serde_json::Value = serde_json::from_str(line).context("peer result is not JSON")?;
    let int = |k: &str| {
        v.get(k)
            .and_then(serde_json::Value::as_u64)
            .with_context(|| format!("peer result has no integer {k:?}"))
    };
    let seconds = v
        .get("seconds")
        .and_then(serde_json::Value::as_f64)
        .filter(|s| *s > 0.0)
        .context("peer result has no positive \"seconds\"")?;
    let mut latency_us: Vec<u64> = v
        .get("latency_us")
        .and_then(serde_json::Value::as_array)
        .context("peer result has no \"latency_us\" list")?
        .iter()
        .filter_map(serde_json::Value::as_u64)
        .collect();
    latency_us.sort_unstable();
    Ok(PeerResult {
        reads: int("reads")?,
        registers: int("registers")?,
        seconds,
        errors: int("errors")?,
        latency_us,
    })
}

/// The Python with pymodbus to run the peer with: `BRUME_PYTHON`, or the test peers'
/// virtualenv (`target/peers/venv`, which the test suite installs).
pub fn find_python() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("BRUME_PYTHON") {
        return Some(PathBuf::from(p));
    }
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("target/peers/venv/bin/python");
    venv.exists().then_some(venv)
}

/// The pymodbus version `python` imports, or why it cannot.
pub fn pymodbus_version(python: &Path) -> anyhow::Result<String> {
    let out = std::process::Command::new(python)
        .args(["-c", "import pymodbus; print(pymodbus.__version__)"])
        .output()
        .with_context(|| format!("run {}", python.display()))?;
    if !out.status.success() {
        bail!("{} cannot import pymodbus", python.display());
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// pymodbus reading the fleet: one Python process for this measurement.
pub async fn pymodbus(
    python: &Path,
    fleet: &Fleet,
    sc: &Scenario,
    warmup: Duration,
    measure: Duration,
) -> anyhow::Result<Figures> {
    use tokio::io::AsyncBufReadExt as _;
    let dir = tempfile::tempdir()?;
    let script = dir.path().join("modbus_peer.py");
    std::fs::write(&script, PEER_SCRIPT)?;
    let mut child = tokio::process::Command::new(python)
        .arg(&script)
        .arg(fleet.peer_config(sc, warmup, measure))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("spawn {}", python.display()))?;
    let pid = child.id().context("the peer has no pid")?;
    let stdout = child.stdout.take().context("no stdout")?;
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let deadline = warmup + measure + Duration::from_secs(30);
    let run = async {
        let mut cpu = None;
        while let Some(line) = lines.next_line().await? {
            if line.trim() == "measuring" {
                cpu = Some(CpuMeter::start(&[pid]));
            } else if line.starts_with('{') {
                let used = cpu.as_ref().map(CpuMeter::read).unwrap_or_default();
                return Ok::<_, anyhow::Error>(Some((parse_peer_result(&line)?, used)));
            }
        }
        Ok(None)
    };
    let got = tokio::time::timeout(deadline, run)
        .await
        .context("the pymodbus peer did not finish in time")??;
    let status = child.wait().await?;
    let Some((r, cpu)) = got else {
        let mut err = String::new();
        if let Some(mut e) = child.stderr.take() {
            use tokio::io::AsyncReadExt as _;
            let _ = e.read_to_string(&mut err).await;
        }
        let tail: Vec<&str> = err.lines().rev().take(3).collect();
        bail!(
            "the pymodbus peer ended ({status}) without a result: {}",
            tail.join(" / ")
        );
    };
    Ok(Figures {
        registers_per_sec: r.registers as f64 / r.seconds,
        reads_per_sec: r.reads as f64 / r.seconds,
        p50_us: quantile(&r.latency_us, 0.5),
        p99_us: quantile(&r.latency_us, 0.99),
        samples: r.latency_us.len(),
        errors: r.errors,
        cpu,
    })
}

/// The scenarios of the bench's Modbus table.
pub const SCENARIOS: [Scenario; 3] = [
    Scenario {
        buses: 1,
        devices: 80,
        blocks: 50,
        paced: false,
    },
    Scenario {
        buses: 4,
        devices: 30,
        blocks: 50,
        paced: false,
    },
    Scenario {
        buses: 1,
        devices: 20,
        blocks: 5,
        paced: true,
    },
];

/// The bench's Modbus table: every scenario, Brume and pymodbus taking turns in each round.
pub async fn section(
    out: &mut String,
    notes: &mut Vec<String>,
    plan: BenchPlan,
) -> anyhow::Result<()> {
    let python = match find_python() {
        Some(p) => match pymodbus_version(&p) {
            Ok(v) => Some((p, v)),
            Err(e) => {
                notes.push(format!("pymodbus skipped: {e:#}"));
                None
            }
        },
        None => {
            notes.push("pymodbus skipped: no Python with pymodbus (run `cargo test -p tests --test modbus_sim_interop` once to install the pinned peers, or set BRUME_PYTHON)".into());
            None
        }
    };
    let version = python.as_ref().map_or("–", |(_, v)| v.as_str());
    writeln!(out, "{}", report::modbus_header(version))?;
    for sc in SCENARIOS {
        let fleet = Fleet::start(sc.buses, sc.devices).await?;
        let mut columns = [Column::default(), Column::default()];
        let mut brume_reads = Vec::new();
        for round in 0..plan.rounds {
            let order: [usize; 2] = if round % 2 == 0 { [0, 1] } else { [1, 0] };
            for i in order {
                let got = if i == 0 {
                    brume(&fleet, &sc, plan.warmup, plan.measure).await
                } else if let Some((p, _)) = &python {
                    pymodbus(p, &fleet, &sc, plan.warmup, plan.measure).await
                } else {
                    continue;
                };
                let who = if i == 0 { "Brume" } else { "pymodbus" };
                match got {
                    Ok(f) => {
                        if f.errors > 0 {
                            notes.push(format!(
                                "{who}, Modbus {}, round {}: {} reads failed or timed out",
                                sc.name(),
                                round + 1,
                                f.errors
                            ));
                        }
                        if i == 0 {
                            brume_reads.push(f.reads_per_sec);
                        }
                        columns[i].samples.push(f.sample(sc.paced));
                    }
                    Err(e) => notes.push(format!("{who}, Modbus {}: failed: {e:#}", sc.name())),
                }
            }
        }
        if !sc.paced && !brume_reads.is_empty() {
            brume_reads.sort_by(f64::total_cmp);
            let median = brume_reads[brume_reads.len() / 2];
            notes.push(format!(
                "Modbus, {}: the gateway's schedule asks for {:.0} reads/s ({} devices × {} groups × 10/s); Brume answered {:.0} reads/s (median), {:.0} % of it{}",
                sc.name(),
                sc.demand_per_sec(),
                sc.buses * usize::from(sc.devices),
                sc.blocks,
                median,
                100.0 * median / sc.demand_per_sec(),
                if median < 0.9 * sc.demand_per_sec() {
                    ": saturated, the line and the gateway limit it, not the poll interval"
                } else {
                    ": NOT saturated, the poll interval limits it"
                }
            ));
        }
        writeln!(
            out,
            "{}",
            report::modbus_row(&sc.name(), sc.paced, &columns[0], &columns[1])
        )?;
        drop(fleet);
    }
    notes.push(format!(
        "Modbus: each bench device answers blocks of 100 holding registers (one read each), the first 4 a u64 stamp of the wall clock when it answered; Brume's thing type maps each block to a poll group at {POLL_MS} ms with 25 u64 properties (the stamp and 24 values), so each read is decoded into 25 values, reported, written to the registry and published as a state EVENT (with the values that changed: the stamp). \
         Registers/s: Brume's from the hub's brume_modbus_registers_read counters over the window, pymodbus's counted by the client; one request in flight per connection on both sides. \
         Stamp → value: the time from the device's answer to a RawSocket/MessagePack subscriber receiving the state EVENT (Brume: gateway, things service, registry, router) or to pymodbus's decoded answer. \
         The simulated devices and the subscriber run in the generator (CPU: generator); pymodbus runs all its connections in one Python process (one asyncio loop). \
         Each Brume measurement starts a fresh hub with the simulated servers unplugged until it listens (a bus polling at full speed delays the provisioning of the next bus's configured devices), so its buses connect about a second later, before the warm-up"
    ));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_nearest_rank() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(quantile(&v, 0.5), 50);
        assert_eq!(quantile(&v, 0.99), 99);
        assert_eq!(quantile(&v, 1.0), 100);
        assert_eq!(quantile(&v, 0.0), 1);
        assert_eq!(quantile(&[7], 0.99), 7);
        assert_eq!(quantile(&[], 0.5), 0);
        assert_eq!(quantile(&[1, 2, 3], 0.5), 2);
    }

    #[test]
    fn counters_are_summed_over_buses() {
        let body = "# HELP brume_modbus_registers_read Modbus registers and bits read, by bus\n\
                    # TYPE brume_modbus_registers_read counter\n\
                    brume_modbus_registers_read_total{bus=\"bench-0\"} 1200\n\
                    brume_modbus_registers_read_total{bus=\"bench-1\"} 800\n\
                    brume_modbus_registers_read_other 5\n\
                    brume_modbus_devices_online{bus=\"bench-0\"} 3\n\
                    brume_modbus_devices_online{bus=\"bench-1\"} 2.0\n";
        assert_eq!(
            metric_sum(body, "brume_modbus_registers_read"),
            Some(2000.0)
        );
        assert_eq!(metric_sum(body, "brume_modbus_devices_online"), Some(5.0));
        assert_eq!(metric_sum(body, "brume_modbus_timeouts"), None);
        assert_eq!(metric_sum("garbage\n\nx y z", "x"), None);
    }

    #[test]
    fn peer_results_parse_and_reject_garbage() {
        let r = parse_peer_result(
            r#"{"reads": 3, "registers": 300, "seconds": 1.5, "errors": 0, "latency_us": [30, 10, 20]}"#,
        );
        assert_eq!(
            r.ok(),
            Some(PeerResult {
                reads: 3,
                registers: 300,
                seconds: 1.5,
                errors: 0,
                latency_us: vec![10, 20, 30],
            })
        );
        assert!(parse_peer_result("not json").is_err());
        assert!(parse_peer_result(r#"{"reads": 3}"#).is_err());
        assert!(
            parse_peer_result(
                r#"{"reads": 3, "registers": 300, "seconds": 0, "errors": 0, "latency_us": []}"#
            )
            .is_err()
        );
        assert!(
            parse_peer_result(
                r#"{"reads": -1, "registers": 300, "seconds": 1, "errors": 0, "latency_us": []}"#
            )
            .is_err()
        );
    }

    #[test]
    fn the_bench_type_is_a_valid_modbus_binding() {
        let ty = device_models::ThingType::from_toml(&bench_type(2), "modbus_bench.toml")
            .expect("the bench type parses");
        let model = device_models::modbus::ModbusModel::new(&ty).expect("its binding is valid");
        let groups = model.groups();
        assert_eq!(groups.len(), 2);
        for g in groups {
            assert_eq!(g.interval, Duration::from_millis(POLL_MS));
            assert_eq!(g.reads.len(), 1);
            assert_eq!(g.reads[0].count, BLOCK);
        }
        let mut starts: Vec<u16> = groups.iter().map(|g| g.reads[0].address).collect();
        starts.sort_unstable();
        assert_eq!(starts, vec![0, BLOCK]);
        // 1 block at least, BLOCKS at most.
        assert!(bench_type(0).contains("[properties.s0]"));
        assert!(!bench_type(BLOCKS + 5).contains(&format!("[properties.s{BLOCKS}]")));
        let mut values = hub::wamp::Dict::new();
        values.insert("v0_1".into(), Value::from(5u64));
        assert_eq!(stamp_of(Some(&values)), None);
        values.insert("s12".into(), Value::from(1_800_000_000_000_000u64));
        assert_eq!(stamp_of(Some(&values)), Some(1_800_000_000_000_000));
        assert_eq!(stamp_of(None), None);
    }

    #[test]
    fn the_hub_setting_lists_every_device_of_every_bus() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let fleet = Fleet::start(2, 3).await.expect("fleet");
            let s = fleet.hub_setting();
            assert!(s.starts_with("modbus.tcp = [{ name = \"bench-0\""), "{s}");
            assert_eq!(s.matches("thing_type = \"modbus_bench\"").count(), 6, "{s}");
            assert!(s.contains("thing = \"mb-1-003\""), "{s}");
            assert_eq!(s.matches("{ name = ").count(), 2, "{s}");
        });
    }

    #[test]
    fn the_bench_device_stamps_the_blocks_it_answers() {
        use tokio_modbus::{ExceptionCode, Request, Response};
        let bus = SimBus::manual_clock();
        bus.add(3, DeviceKind::Bench).expect("unit 3");
        let before = now_us();
        let answer = bus.request(3, &Request::ReadHoldingRegisters(BLOCK, BLOCK));
        let after = now_us();
        let Ok(Some(Response::ReadHoldingRegisters(words))) = answer else {
            panic!("no registers: {answer:?}");
        };
        assert_eq!(words.len(), usize::from(BLOCK));
        let stamp = words[..4]
            .iter()
            .fold(0u64, |acc, w| (acc << 16) | u64::from(*w));
        assert!(
            (before..=after).contains(&stamp),
            "{before} {stamp} {after}"
        );
        assert_eq!(words[4], crate::modbus::device::bench::filler(3, BLOCK + 4));
        assert_eq!(
            words[99],
            crate::modbus::device::bench::filler(3, 2 * BLOCK - 1)
        );
        // Block 0 was not read: its stamp is still 0.
        assert_eq!(
            bus.registers(3, crate::modbus::Table::Holding, 0, 4),
            Some(vec![0; 4])
        );
        assert_eq!(
            bus.request(3, &Request::ReadHoldingRegisters(BLOCKS * BLOCK - 1, 2)),
            Err(ExceptionCode::IllegalDataAddress)
        );
        assert_eq!(
            bus.request(3, &Request::WriteSingleRegister(10, 1)),
            Err(ExceptionCode::IllegalDataAddress)
        );
        assert_eq!("bench".parse::<DeviceKind>(), Ok(DeviceKind::Bench));
        assert_eq!(DeviceKind::Bench.type_id(), "modbus_bench");
    }

    #[test]
    fn scenarios_name_their_load() {
        let sc = Scenario {
            buses: 4,
            devices: 50,
            blocks: 4,
            paced: false,
        };
        assert_eq!(sc.demand_per_sec(), 8000.0);
        assert!(
            sc.name()
                .starts_with("4 connections, 200 devices × 4 × 100 registers")
        );
        let paced = Scenario {
            buses: 1,
            devices: 10,
            blocks: 1,
            paced: true,
        };
        assert_eq!(paced.demand_per_sec(), 100.0);
        assert!(paced.name().contains("stamp → value p99 (p50)"));
    }
}
