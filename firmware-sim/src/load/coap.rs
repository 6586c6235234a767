//! CoAP confirmable POSTs, Brume against libcoap's example server, driven by the same generator
//! ([`crate::coap::coap_load`]: devices on sockets of their own, a window of requests in flight
//! each, no retransmission).
//!
//! - **Brume**: `POST /things/<id>/state` on the hub's CoAP gateway. Every request changes the
//!   thing's state (its `seq` does), so each one is a registry write, a commit before the 2.04
//!   (acknowledged means durable) and a state EVENT, counted by a WAMP subscriber on
//!   `brume.thing..state`: an acknowledged request whose EVENT never comes is lost.
//! - **libcoap** (`coap-server-notls`, Debian's `libcoap3-bin`): `PUT /example_data`, which it
//!   keeps in memory and answers at once. It writes nothing and publishes nothing, so it is the
//!   cost of CoAP itself on this machine, the floor Brume's figure is read against.
//!
//! Both lose a request that is not answered within the generator's timeout.

use std::fmt::Write as _;
use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use coap_lite::RequestType;
use hub::wamp::{Message, Serializer, Value, dict};
use tokio_util::sync::CancellationToken;

use super::bench::BenchPlan;
use super::cpu::CpuMeter;
use super::peer::Peer;
use super::report::{self, Column, Loss, LossTally, Sample};
use super::target::{brume_binary, settle, start_brume};
use crate::coap::{LoadConfig, LoadReport, coap_load};

/// Devices, each on its own socket. With [`WINDOW`], 192 requests in flight: libcoap's server
/// keeps the system's default receive buffer (about 190 datagrams of this size on Linux) and
/// loses requests beyond it; Brume's gateway asks for a larger one.
pub const DEVICES: usize = 48;
/// Requests in flight per device.
pub const WINDOW: usize = 4;

/// The thing type the hub provisions the load devices with.
const BENCH_TYPE: &str = r#"id = "bench_coap"
title = "CoAP benchmark sensor"
version = "1.0"

[properties.temperature]
type = "number"

[properties.humidity]
type = "number"

[properties.seq]
type = "integer"
"#;

/// Appends the CoAP table to `out`.
pub async fn section(
    out: &mut String,
    notes: &mut Vec<String>,
    tally: &mut LossTally,
    plan: BenchPlan,
) -> anyhow::Result<()> {
    let libcoap = find_libcoap();
    if libcoap.is_none() {
        notes.push("libcoap skipped: no coap-server-notls (Debian: `apt-get install libcoap3-bin`, or set BRUME_COAP_SERVER)".into());
    }
    writeln!(out, "{}", report::coap_header(DEVICES, WINDOW))?;
    let mut columns = [Column::default(), Column::default()];
    for round in 0..plan.rounds {
        let order: [usize; 2] = if round % 2 == 0 { [0, 1] } else { [1, 0] };
        for i in order {
            let got = match (i, &libcoap) {
                (0, _) => brume(plan).await,
                (_, Some(server)) => peer(server, plan).await,
                (_, None) => continue,
            };
            match got {
                Ok(sample) => columns[i].samples.push(sample),
                Err(e) => {
                    let who = if i == 0 { "Brume" } else { "libcoap" };
                    notes.push(format!("CoAP, {who}, round {}: failed: {e:#}", round + 1));
                }
            }
            settle();
        }
    }
    let [brume, libcoap] = &columns;
    writeln!(out, "{}", report::coap_row(brume, libcoap))?;
    tally.add("CoAP, Brume".into(), brume);
    tally.add("CoAP, libcoap".into(), libcoap);
    notes.push(format!(
        "CoAP: {DEVICES} devices, each on its own UDP socket with {WINDOW} confirmable requests in flight, no retransmission (a request unanswered after 2 s counts as lost); Brume commits each request's report before its 2.04 and publishes it as a state EVENT (lost also: acknowledged and no EVENT), libcoap keeps the PUT body in memory"
    ));
    Ok(())
}

fn load_config(target: SocketAddr, plan: BenchPlan) -> LoadConfig {
    LoadConfig {
        target: Some(target),
        devices: DEVICES,
        window: WINDOW,
        warmup: plan.warmup,
        duration: plan.measure,
        ..LoadConfig::default()
    }
}

/// The figure of one measured load.
fn sample(r: &LoadReport, cpu: super::cpu::CpuUse, lost: u64) -> Sample {
    Sample {
        score: r.rate,
        text: format!(
            "{:.0} req/s, p50 {} µs, p99 {} µs",
            r.rate,
            r.p50.as_micros(),
            r.p99.as_micros()
        ),
        cpu,
        loss: Some(Loss { sent: r.sent, lost }),
    }
}

async fn brume(plan: BenchPlan) -> anyhow::Result<Sample> {
    let types = tempfile::tempdir()?;
    std::fs::write(types.path().join("bench_coap.toml"), BENCH_TYPE)?;
    let settings = format!(
        "router.outbound_queue = 65536\ncoap.rate_limit_per_second = 0.0\nthings.provisioning = \"auto\"\nthings.auto_type = \"bench_coap\"\nthings.types_dir = {:?}\n",
        types.path().display().to_string()
    );
    let hub = start_brume(&brume_binary()?, &settings).context("starting brume for CoAP")?;
    let target = hub.coap.context("brume did not log its CoAP address")?;
    let mut peer = Peer::join(&hub.rawsocket, "brume", Serializer::MsgPack).await?;
    peer.subscribe_with(
        "brume.thing..state",
        dict([("match", Value::from("wildcard"))]),
    )
    .await?;
    let events = Arc::new(AtomicU64::new(0));
    let stop = CancellationToken::new();
    let subscriber = {
        let (events, stop) = (events.clone(), stop.clone());
        tokio::spawn(async move {
            loop {
                let m = tokio::select! {
                    () = stop.cancelled() => return Ok::<_, anyhow::Error>(()),
                    m = peer.recv() => m?,
                };
                if matches!(m, Message::Event { .. }) {
                    events.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
    };
    // The warm-up provisions the devices (each one's first report); CPU is read over the
    // measured part only.
    let load = tokio::spawn(coap_load(load_config(target, plan)));
    tokio::time::sleep(plan.warmup).await;
    let cpu = CpuMeter::start(&[hub.pid()]);
    let r = load.await.context("the load task")??;
    let used = cpu.read();
    // Every acknowledged report, warm-up included, is a state EVENT.
    let deadline = Instant::now() + super::DRAIN;
    while events.load(Ordering::Relaxed) < r.all_ok && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let delivered = events.load(Ordering::Relaxed);
    stop.cancel();
    subscriber.await.context("the subscriber task")??;
    let lost = r.all_failed + r.all_ok.saturating_sub(delivered);
    Ok(sample(&r, used, lost))
}

/// libcoap's example server, killed when dropped.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn peer(binary: &std::path::Path, plan: BenchPlan) -> anyhow::Result<Sample> {
    let port = UdpSocket::bind("127.0.0.1:0")?.local_addr()?.port();
    let child = Command::new(binary)
        .args(["-A", "127.0.0.1", "-p", &port.to_string(), "-v", "0"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("spawn {}", binary.display()))?;
    let server = Server(child);
    let target = SocketAddr::from(([127, 0, 0, 1], port));
    let config = LoadConfig {
        method: RequestType::Put,
        path: Some("example_data".into()),
        secret: None,
        ..load_config(target, plan)
    };
    // Until it answers: the server takes a moment to bind.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let probe = coap_load(LoadConfig {
            devices: 1,
            window: 1,
            request_timeout: Duration::from_millis(200),
            warmup: Duration::ZERO,
            duration: Duration::from_millis(50),
            ..config.clone()
        })
        .await;
        // Before it binds, the port refuses (ICMP): try again.
        if probe.is_ok_and(|p| p.ok > 0) {
            break;
        }
        anyhow::ensure!(Instant::now() < deadline, "libcoap did not answer");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let load = tokio::spawn(coap_load(config));
    tokio::time::sleep(plan.warmup).await;
    let cpu = CpuMeter::start(&[server.0.id()]);
    let r = load.await.context("the load task")??;
    let used = cpu.read();
    Ok(sample(&r, used, r.all_failed))
}

/// libcoap's server without TLS: `BRUME_COAP_SERVER`, else Debian's path.
pub fn find_libcoap() -> Option<PathBuf> {
    std::env::var_os("BRUME_COAP_SERVER")
        .map(PathBuf::from)
        .or_else(|| Some(PathBuf::from("/usr/bin/coap-server-notls")))
        .filter(|p| p.exists())
}
