//! [`coap_load`]: the CoAP load generator. `devices` simulated devices, each with its own UDP
//! socket (so its own source address), send Confirmable `POST /things/<id>/state` requests with a
//! JSON body, keeping `window` of them in flight, for `duration`. Every answered request's latency
//! (send to ACK) is recorded; the report gives the rate of 2.xx answers and latency percentiles.
//! Each body carries a `seq` that changes with every request, so that on Brume every request is
//! a state change (a registry write and a state EVENT). With a `path`, another server (a peer)
//! is loaded the same way.
//!
//! Without a `target`, it starts a gateway in-process (rate limit off, secrets checked) on a
//! runtime of its own, and drains its events as a hub would, so the figure is the gateway's end
//! to end: datagram in, `DeviceEvent` delivered, ACK out. Against another gateway, that gateway's
//! per-address rate limit must allow `rate / devices` per second or it will drop the excess.
//!
//! Requests are built once and patched (message ID, token, `seq`) to keep the generator cheap; a request
//! not answered within `request_timeout` counts as a timeout and is not retransmitted.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use coap_lite::{CoapOption, ContentFormat, MessageClass, MessageType, Packet, RequestType};
use device_models::{DeviceEvent, TypeCatalog};
use gateways::coap::gateway::{CoapConfig, CoapGateway};
use gateways::link::HubEnds;
use gateways::{GatewayIo, StaticCredentials};
use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;

use super::local_bind_for;

/// The secret of every load device (`load-<n>`) of the in-process gateway.
pub const LOAD_SECRET: &str = "load-secret";

/// Settings of a load run.
#[derive(Clone, Debug)]
pub struct LoadConfig {
    /// The gateway to load; `None` starts one in-process.
    pub target: Option<SocketAddr>,
    /// Simulated devices, each with its own socket.
    pub devices: usize,
    /// Requests in flight per device.
    pub window: usize,
    /// How long to send before measuring, on the same sockets (so the same sessions, on a
    /// server that keeps one per address); counted only in [`LoadReport::all_ok`] and
    /// [`LoadReport::all_failed`].
    pub warmup: Duration,
    /// How long to send, measured.
    pub duration: Duration,
    /// When an unanswered request counts as a timeout.
    pub request_timeout: Duration,
    /// The secret sent by every device (`?s=`); `None` sends none.
    pub secret: Option<String>,
    /// The method of every request (POST for Brume's gateway).
    pub method: RequestType,
    /// The path every device sends to, slash-separated; `None`: `things/<id>/state`, the
    /// device's own state resource on Brume's gateway. Another CoAP server (a peer measured
    /// beside Brume) takes a resource of its own.
    pub path: Option<String>,
}

impl Default for LoadConfig {
    fn default() -> Self {
        Self {
            target: None,
            devices: 32,
            window: 4,
            warmup: Duration::ZERO,
            duration: Duration::from_secs(5),
            request_timeout: Duration::from_secs(2),
            secret: Some(LOAD_SECRET.to_owned()),
            method: RequestType::Post,
            path: None,
        }
    }
}

/// What a load run measured.
#[derive(Clone, Debug, PartialEq)]
pub struct LoadReport {
    /// Requests sent.
    pub sent: u64,
    /// Answered with a success (2.xx: 2.04 Changed from Brume).
    pub ok: u64,
    /// Answered with another code.
    pub refused: u64,
    /// Not answered in time.
    pub timeouts: u64,
    /// From the first send to the last answer.
    pub elapsed: Duration,
    /// `ok` per second.
    pub rate: f64,
    /// Latency percentiles of answered requests.
    pub p50: Duration,
    /// 90th percentile.
    pub p90: Duration,
    /// 99th percentile.
    pub p99: Duration,
    /// Slowest.
    pub max: Duration,
    /// `Reported` events the in-process gateway delivered (0 against a remote target).
    pub events: u64,
    /// Requests answered with a success, warm-up included.
    pub all_ok: u64,
    /// Requests refused or not answered, warm-up included.
    pub all_failed: u64,
}

impl std::fmt::Display for LoadReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:.0} confirmable POSTs/s ({} ok, {} refused, {} timed out of {} sent in {:.2} s); latency p50 {:?} p90 {:?} p99 {:?} max {:?}",
            self.rate,
            self.ok,
            self.refused,
            self.timeouts,
            self.sent,
            self.elapsed.as_secs_f64(),
            self.p50,
            self.p90,
            self.p99,
            self.max,
        )?;
        if self.events > 0 {
            write!(f, "; {} events delivered to the hub side", self.events)?;
        }
        Ok(())
    }
}

/// Runs a load test; see the module docs.
pub async fn coap_load(config: LoadConfig) -> anyhow::Result<LoadReport> {
    anyhow::ensure!(
        config.devices > 0 && config.window > 0,
        "devices and window must be > 0"
    );
    let shutdown = CancellationToken::new();
    let _stop = shutdown.clone().drop_guard();
    let (target, counter) = match config.target {
        Some(t) => (t, None),
        None => {
            let (addr, counter) = in_process_gateway(config.devices, shutdown.clone()).await?;
            (addr, Some(counter))
        }
    };
    let answered = Arc::new(AtomicU64::new(0));
    let seen = answered.clone();
    let _progress = crate::progress::track(
        format!("CoAP load, {} devices", config.devices),
        "requests answered",
        move || seen.load(Ordering::Relaxed),
    );
    let started = Instant::now() + config.warmup;
    let deadline = started + config.duration;
    let mut tasks = Vec::with_capacity(config.devices);
    for n in 0..config.devices {
        let cfg = config.clone();
        let answered = answered.clone();
        tasks.push(tokio::spawn(async move {
            run_device(n, target, &cfg, (started, deadline), &answered).await
        }));
    }
    let mut total = DeviceStats::default();
    for t in tasks {
        let stats = t.await.context("load device task")??;
        total.merge(stats);
    }
    let elapsed = total.last_answer.map_or(config.duration, |t| t - started);
    shutdown.cancel();
    let events = match counter {
        Some(c) => c.await.unwrap_or(0),
        None => 0,
    };
    Ok(total.report(elapsed, events))
}

/// Starts a gateway on loopback port 0 for devices `load-0..n`, on a runtime of its own (two
/// workers, as the hub process has on two cores; apart from the devices' runtime), with a
/// task counting the `Reported` events it delivers until shutdown.
async fn in_process_gateway(
    devices: usize,
    shutdown: CancellationToken,
) -> anyhow::Result<(SocketAddr, tokio::sync::oneshot::Receiver<u64>)> {
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let (count_tx, count_rx) = tokio::sync::oneshot::channel();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("coap-load-gateway")
        .enable_all()
        .build()
        .context("building the gateway runtime")?;
    std::thread::Builder::new()
        .name("coap-load-gateway".into())
        .spawn(move || {
            runtime.block_on(async move {
                match start_gateway(devices, shutdown.clone()).await {
                    Ok((addr, hub)) => {
                        let _ = ready_tx.send(Ok(addr));
                        let _ = count_tx.send(count_reports(hub, shutdown).await);
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                    }
                }
            });
        })
        .context("spawning the gateway thread")?;
    let addr = ready_rx.await.context("gateway thread")??;
    Ok((addr, count_rx))
}

async fn start_gateway(
    devices: usize,
    shutdown: CancellationToken,
) -> anyhow::Result<(SocketAddr, HubEnds)> {
    let secrets = (0..devices)
        .map(|n| (thing_id(n), LOAD_SECRET.to_owned()))
        .collect::<HashMap<_, _>>();
    let (io, hub) = GatewayIo::pair("coap-load", 8_192, Arc::new(StaticCredentials(secrets)));
    let config = CoapConfig {
        bind: SocketAddr::from(([127, 0, 0, 1], 0)),
        rate_limit_per_second: 0.0,
        ..CoapConfig::default()
    };
    let gateway = CoapGateway::start(&config, &TypeCatalog::new(), io, shutdown)
        .await
        .context("starting the in-process gateway")?;
    Ok((gateway.local_addr(), hub))
}

/// Counts `Reported` events until shutdown, then those still queued.
async fn count_reports(mut hub: HubEnds, shutdown: CancellationToken) -> u64 {
    let mut reported = 0u64;
    let mut count = |e: DeviceEvent| {
        if matches!(e, DeviceEvent::Reported { .. }) {
            reported += 1;
        }
    };
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            e = hub.events.recv() => match e {
                Some(e) => count(e),
                None => break,
            },
        }
    }
    while let Ok(e) = hub.events.try_recv() {
        count(e);
    }
    reported
}

fn thing_id(n: usize) -> String {
    format!("load-{n}")
}

#[derive(Debug, Default)]
struct DeviceStats {
    sent: u64,
    ok: u64,
    refused: u64,
    timeouts: u64,
    latencies_us: Vec<u32>,
    last_answer: Option<Instant>,
    /// Successes, warm-up included.
    all_ok: u64,
    /// Refusals and timeouts, warm-up included.
    all_failed: u64,
}

impl DeviceStats {
    fn merge(&mut self, other: DeviceStats) {
        self.sent += other.sent;
        self.ok += other.ok;
        self.refused += other.refused;
        self.timeouts += other.timeouts;
        self.latencies_us.extend(other.latencies_us);
        self.last_answer = self.last_answer.max(other.last_answer);
        self.all_ok += other.all_ok;
        self.all_failed += other.all_failed;
    }

    fn report(mut self, elapsed: Duration, events: u64) -> LoadReport {
        self.latencies_us.sort_unstable();
        let pct = |p: f64| {
            let n = self.latencies_us.len();
            if n == 0 {
                return Duration::ZERO;
            }
            let i = ((n as f64 - 1.0) * p).round() as usize;
            Duration::from_micros(u64::from(self.latencies_us.get(i).copied().unwrap_or(0)))
        };
        let secs = elapsed.as_secs_f64().max(1e-9);
        LoadReport {
            sent: self.sent,
            ok: self.ok,
            refused: self.refused,
            timeouts: self.timeouts,
            elapsed,
            rate: self.ok as f64 / secs,
            p50: pct(0.50),
            p90: pct(0.90),
            p99: pct(0.99),
            max: pct(1.0),
            events,
            all_ok: self.all_ok,
            all_failed: self.all_failed,
        }
    }
}

/// The body of every request: `seq` (six digits, patched per send) makes each report a change,
/// so each one is a state EVENT.
const BODY: &[u8] = br#"{"temperature":21.5,"humidity":40,"seq":100000}"#;
/// Where the six digits of `seq` start in [`BODY`].
const SEQ_AT: usize = BODY.len() - 7;

/// A request template: built once, message ID, token and `seq` patched per send.
struct Template {
    bytes: Vec<u8>,
}

impl Template {
    fn new(path: &str, method: RequestType, secret: Option<&str>) -> anyhow::Result<Self> {
        let mut p = Packet::new();
        p.header.set_type(MessageType::Confirmable);
        p.header.code = MessageClass::Request(method);
        p.set_token(vec![0, 0]);
        for seg in path.split('/').filter(|s| !s.is_empty()) {
            p.add_option(CoapOption::UriPath, seg.as_bytes().to_vec());
        }
        p.set_content_format(ContentFormat::ApplicationJSON);
        if let Some(s) = secret {
            p.add_option(CoapOption::UriQuery, format!("s={s}").into_bytes());
        }
        p.payload = BODY.to_vec();
        let bytes = p
            .to_bytes()
            .map_err(|e| anyhow::anyhow!("encoding the request: {e:?}"))?;
        Ok(Self { bytes })
    }

    /// The request with message ID and token `mid`, and `seq` 100000 + `mid`.
    fn with_mid(&mut self, mid: u16) -> &[u8] {
        let b = mid.to_be_bytes();
        if let Some(slot) = self.bytes.get_mut(2..6) {
            slot.copy_from_slice(&[b[0], b[1], b[0], b[1]]);
        }
        let seq = format!("{}", 100_000 + u32::from(mid));
        let at = self.bytes.len() - BODY.len() + SEQ_AT;
        if let Some(slot) = self.bytes.get_mut(at..at + 6) {
            slot.copy_from_slice(seq.as_bytes());
        }
        &self.bytes
    }
}

/// One device's closed loop.
async fn run_device(
    n: usize,
    target: SocketAddr,
    config: &LoadConfig,
    (measured_from, deadline): (Instant, Instant),
    answered: &AtomicU64,
) -> anyhow::Result<DeviceStats> {
    let socket = UdpSocket::bind(local_bind_for(target)).await?;
    socket.connect(target).await?;
    let path = match &config.path {
        Some(p) => p.clone(),
        None => format!("things/{}/state", thing_id(n)),
    };
    let mut template = Template::new(&path, config.method, config.secret.as_deref())?;
    let mut stats = DeviceStats::default();
    let mut inflight: Vec<(u16, Instant)> = Vec::with_capacity(config.window);
    let mut mid: u16 = u16::try_from(n % 4096).unwrap_or(0).wrapping_mul(16);
    let mut buf = [0u8; 1500];
    loop {
        let now = Instant::now();
        while inflight.len() < config.window && now < deadline {
            mid = mid.wrapping_add(1);
            socket.send(template.with_mid(mid)).await?;
            let at = Instant::now();
            if at >= measured_from {
                stats.sent += 1;
            }
            inflight.push((mid, at));
        }
        if inflight.is_empty() {
            return Ok(stats);
        }
        match tokio::time::timeout(Duration::from_millis(50), socket.recv(&mut buf)).await {
            Ok(Ok(len)) => {
                let Some(answer) = buf.get(..len).and_then(parse_answer) else {
                    continue;
                };
                if let Some(i) = inflight.iter().position(|(m, _)| *m == answer.mid) {
                    let (_, sent_at) = inflight.swap_remove(i);
                    answered.fetch_add(1, Ordering::Relaxed);
                    let at = Instant::now();
                    let measured = sent_at >= measured_from;
                    if answer.success {
                        stats.all_ok += 1;
                    } else {
                        stats.all_failed += 1;
                    }
                    if !measured {
                        continue;
                    }
                    if answer.success {
                        stats.ok += 1;
                        let us = at.duration_since(sent_at).as_micros();
                        stats
                            .latencies_us
                            .push(u32::try_from(us).unwrap_or(u32::MAX));
                    } else {
                        stats.refused += 1;
                    }
                    stats.last_answer = Some(at);
                }
            }
            Ok(Err(e)) => return Err(e).context("receiving"),
            Err(_) => {}
        }
        let now = Instant::now();
        inflight.retain(|(_, at)| {
            let waiting = now.duration_since(*at) < config.request_timeout;
            if !waiting {
                stats.all_failed += 1;
                if *at >= measured_from {
                    stats.timeouts += 1;
                }
            }
            waiting
        });
    }
}

struct Answer {
    mid: u16,
    success: bool,
}

/// Reads the type, code and message ID of a datagram; only ACKs are answers.
fn parse_answer(d: &[u8]) -> Option<Answer> {
    let (b0, code, m0, m1) = (*d.first()?, *d.get(1)?, *d.get(2)?, *d.get(3)?);
    let ack = (b0 >> 4) & 0b11 == 2;
    ack.then(|| Answer {
        mid: u16::from_be_bytes([m0, m1]),
        // 2.xx: 2.04 Changed from Brume, 2.01 Created or 2.04 from another server.
        success: code >> 5 == 2,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn template_patches_message_id_and_token() {
        let mut t = Template::new("things/load-1/state", RequestType::Post, Some("x"))
            .unwrap_or_else(|e| panic!("{e}"));
        let bytes = t.with_mid(0xabcd).to_vec();
        let p = Packet::from_bytes(&bytes).unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(p.header.message_id, 0xabcd);
        assert_eq!(p.get_token(), &[0xab, 0xcd]);
        assert_eq!(p.get_option(CoapOption::UriPath).map(|o| o.len()), Some(3));
        let body: serde_json::Value =
            serde_json::from_slice(&p.payload).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(body["seq"], 100_000 + 0xabcd);
        assert!(
            parse_answer(&[0x60, 0x44, 0xab, 0xcd]).is_some_and(|a| a.success && a.mid == 0xabcd)
        );
        assert!(parse_answer(&[0x60, 0x41, 0, 1]).is_some_and(|a| a.success));
        assert!(parse_answer(&[0x60, 0x80, 0, 1]).is_some_and(|a| !a.success));
        assert!(parse_answer(&[0x50, 0x44, 0, 1]).is_none());
        assert!(parse_answer(&[0x60]).is_none());
    }
}
