//! WAMP load: events delivered per second from publishers to subscribers, and RPC round trips
//! (sequential latency percentiles, and throughput with many calls in flight).
//!
//! Publishers keep at most `window` events in flight (published but not yet received by every
//! subscriber), so the figure is delivered throughput, not how fast bytes can be queued, and the
//! router's slow-consumer policy never triggers. When the measured time is over, publishing
//! stops and the subscribers get up to [`super::DRAIN`] to receive the rest: whatever was
//! published (written to the router's connection) and not delivered by then is lost.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::bail;
use hub::wamp::{Dict, Message, Payload, Serializer, Value};
use tokio::sync::Notify;

use super::cpu::{CpuMeter, CpuUse};
use super::peer::Peer;

/// Settings shared by the WAMP scenarios.
#[derive(Clone, Debug)]
pub struct WampLoad {
    pub url: String,
    pub realm: String,
    pub serializer: Serializer,
    pub payload_bytes: usize,
    pub warmup: Duration,
    pub measure: Duration,
    /// Processes of the system under test whose CPU use is read over the measured interval.
    pub cpu_of: Vec<u32>,
}

/// Events per second delivered, summed over subscribers.
#[derive(Clone, Debug)]
pub struct PubSubFigure {
    pub subscribers: usize,
    pub delivered_per_sec: f64,
    /// Events published over the whole run (warm-up included), each meant for every subscriber.
    pub published: u64,
    /// Deliveries expected but not made after the drain, summed over subscribers.
    pub lost: u64,
    /// CPU over the measured interval.
    pub cpu: CpuUse,
}

/// Round-trip figures.
#[derive(Clone, Debug)]
pub struct RpcFigure {
    pub in_flight: usize,
    pub calls_per_sec: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    /// CPU over the measured interval.
    pub cpu: CpuUse,
}

fn payload(bytes: usize) -> Payload {
    Payload::args(vec![Value::Str("x".repeat(bytes))])
}

/// 1 publisher → `subscribers` subscribers on one topic.
pub async fn pubsub(
    cfg: &WampLoad,
    subscribers: usize,
    window: u64,
) -> anyhow::Result<PubSubFigure> {
    let counters: Vec<Arc<AtomicU64>> = (0..subscribers)
        .map(|_| Arc::new(AtomicU64::new(0)))
        .collect();
    let seen = counters.clone();
    let _progress = crate::progress::track(
        format!("pub/sub 1 → {subscribers}"),
        "events delivered",
        move || seen.iter().map(|c| c.load(Ordering::Relaxed)).sum(),
    );
    let progress = Arc::new(Notify::new());
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for received in &counters {
        let mut sub = Peer::join(&cfg.url, &cfg.realm, cfg.serializer).await?;
        sub.subscribe("bench.topic").await?;
        let (received, progress, stop) = (received.clone(), progress.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                match sub.recv().await {
                    // The relay forwards PUBLISH frames unchanged; routers send EVENTs.
                    Ok(Message::Event { .. } | Message::Publish { .. }) => {
                        received.fetch_add(1, Ordering::Relaxed);
                        progress.notify_one();
                    }
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
        }));
    }
    let slowest = || {
        counters
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .min()
            .unwrap_or(0)
    };
    let total = || {
        counters
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .sum::<u64>()
    };
    let mut publisher = Peer::join(&cfg.url, &cfg.realm, cfg.serializer).await?;
    let body = payload(cfg.payload_bytes);
    let mut published = 0u64;
    let start = Instant::now();
    let mut mark: Option<(Instant, u64, CpuMeter)> = None;
    loop {
        let now = Instant::now();
        if mark.is_none() && now >= start + cfg.warmup {
            mark = Some((now, total(), CpuMeter::start(&cfg.cpu_of)));
        }
        if let Some((t0, r0, meter)) = &mark
            && now >= *t0 + cfg.measure
        {
            let delivered = total() - r0;
            let cpu = meter.read();
            let delivered_per_sec = delivered as f64 / now.duration_since(*t0).as_secs_f64();
            // Drain: everything published is owed to every subscriber.
            let deadline = Instant::now() + super::DRAIN;
            while slowest() < published && Instant::now() < deadline {
                let _ = tokio::time::timeout(Duration::from_millis(20), progress.notified()).await;
            }
            let lost = counters
                .iter()
                .map(|c| published.saturating_sub(c.load(Ordering::Relaxed)))
                .sum();
            stop.store(true, Ordering::Relaxed);
            for t in tasks {
                t.abort();
            }
            return Ok(PubSubFigure {
                subscribers,
                delivered_per_sec,
                published,
                lost,
                cpu,
            });
        }
        let in_flight = published - slowest();
        if in_flight >= window {
            let _ = tokio::time::timeout(Duration::from_millis(50), progress.notified()).await;
            continue;
        }
        let batch = (window - in_flight).clamp(1, 64);
        for _ in 0..batch {
            let request = publisher.request_id();
            publisher.queue(&Message::Publish {
                request,
                options: Dict::new(),
                topic: "bench.topic".into(),
                payload: body.clone(),
            })?;
        }
        // Counted as sent once written to the router's connection.
        publisher.flush().await?;
        published += batch;
    }
}

/// A callee that echoes every invocation, until the task is aborted.
async fn echo_callee(cfg: &WampLoad) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let mut callee = Peer::join(&cfg.url, &cfg.realm, cfg.serializer).await?;
    callee.register("bench.echo").await?;
    Ok(tokio::spawn(async move {
        loop {
            match callee.recv().await {
                Ok(Message::Invocation {
                    request, payload, ..
                }) => {
                    let y = Message::Yield {
                        request,
                        options: Dict::new(),
                        payload,
                    };
                    if callee.send(&y).await.is_err() {
                        break;
                    }
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
    }))
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// RPC with `in_flight` calls outstanding (1 = sequential), one caller, one callee.
pub async fn rpc(cfg: &WampLoad, in_flight: usize) -> anyhow::Result<RpcFigure> {
    let callee = echo_callee(cfg).await?;
    let mut caller = Peer::join(&cfg.url, &cfg.realm, cfg.serializer).await?;
    let body = payload(cfg.payload_bytes);
    let mut sent_at = std::collections::HashMap::new();
    let mut latencies = Vec::new();
    let start = Instant::now();
    let mut measuring_since: Option<(Instant, CpuMeter)> = None;
    let mut completed = 0u64;
    let answered = Arc::new(AtomicU64::new(0));
    let seen = answered.clone();
    let _progress = crate::progress::track(
        format!("RPC, {in_flight} in flight"),
        "calls answered",
        move || seen.load(Ordering::Relaxed),
    );
    let call = |caller: &mut Peer, sent_at: &mut std::collections::HashMap<u64, Instant>| {
        let request = caller.request_id();
        sent_at.insert(request, Instant::now());
        caller.queue(&Message::Call {
            request,
            options: Dict::new(),
            procedure: "bench.echo".into(),
            payload: body.clone(),
        })
    };
    for _ in 0..in_flight {
        call(&mut caller, &mut sent_at)?;
    }
    caller.flush().await?;
    loop {
        match caller.recv().await? {
            Message::Result { request, .. } => {
                answered.fetch_add(1, Ordering::Relaxed);
                let now = Instant::now();
                if let Some(t) = sent_at.remove(&request)
                    && measuring_since.is_some()
                {
                    latencies.push(now.duration_since(t).as_secs_f64() * 1e6);
                    completed += 1;
                }
                if measuring_since.is_none() && now >= start + cfg.warmup {
                    measuring_since = Some((now, CpuMeter::start(&cfg.cpu_of)));
                }
                if let Some((t0, meter)) = &measuring_since
                    && now >= *t0 + cfg.measure
                {
                    let (t0, cpu) = (*t0, meter.read());
                    callee.abort();
                    latencies.sort_by(f64::total_cmp);
                    return Ok(RpcFigure {
                        in_flight,
                        calls_per_sec: completed as f64 / now.duration_since(t0).as_secs_f64(),
                        p50_us: percentile(&latencies, 0.50),
                        p99_us: percentile(&latencies, 0.99),
                        cpu,
                    });
                }
                call(&mut caller, &mut sent_at)?;
                caller.flush().await?;
            }
            Message::Error { error, .. } => bail!("call failed: {error}"),
            _ => {}
        }
    }
}
