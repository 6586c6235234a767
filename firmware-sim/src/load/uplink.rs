//! Uplink replay: a `brume` hub queues N events while its cloud router is unreachable, then the
//! link opens and the time to deliver them all to a cloud subscriber on Crossbar.io is measured.
//!
//! The hub reaches Crossbar through a gate (a TCP relay that refuses connections until opened),
//! so the cloud subscriber is in place before the replay starts and nothing is published to an
//! empty realm.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use hub::client::{Client, ConnectOptions};
use hub::wamp::{Dict, Message, Payload, Serializer, Value, dict};
use tokio::net::{TcpListener, TcpStream};

use super::peer::Peer;
use super::target::{brume_binary, start_brume};
use super::{cpu, crossbar};

/// The replay's figures.
#[derive(Clone, Debug)]
pub struct ReplayFigure {
    pub events: usize,
    /// From the first replayed event received to the last.
    pub per_sec: f64,
    /// CPU use of the hub and of Crossbar during the replay, in percent of one core.
    pub hub_cpu: f64,
    pub cloud_cpu: f64,
}

/// A TCP relay to a target that refuses connections until opened.
struct Gate {
    addr: SocketAddr,
    open: Arc<AtomicBool>,
    target: Arc<std::sync::Mutex<Option<SocketAddr>>>,
}

impl Gate {
    async fn start() -> anyhow::Result<Gate> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let open = Arc::new(AtomicBool::new(false));
        let target: Arc<std::sync::Mutex<Option<SocketAddr>>> = Arc::default();
        let (o, t) = (open.clone(), target.clone());
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let to = *t.lock().unwrap_or_else(|e| e.into_inner());
                let (true, Some(to)) = (o.load(Ordering::SeqCst), to) else {
                    continue;
                };
                tokio::spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(to).await {
                        let _ = inbound.set_nodelay(true);
                        let _ = outbound.set_nodelay(true);
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        });
        Ok(Gate { addr, open, target })
    }

    fn open_to(&self, to: SocketAddr) {
        *self.target.lock().unwrap_or_else(|e| e.into_inner()) = Some(to);
        self.open.store(true, Ordering::SeqCst);
    }
}

fn port_of(url: &str) -> anyhow::Result<SocketAddr> {
    let host = url
        .split("://")
        .nth(1)
        .and_then(|r| r.split('/').next())
        .context("url")?;
    Ok(host.parse()?)
}

/// Which router plays the cloud.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cloud {
    Crossbar,
    /// A second `brume` process: not a cloud anyone would deploy, but it shows the uplink's own
    /// limit when the cloud router is not the bottleneck.
    Brume,
}

/// A started cloud router: its RawSocket and WebSocket URLs and its process ids.
struct CloudProcess {
    rawsocket: String,
    websocket: String,
    pids: Vec<u32>,
    _keep: Box<dyn std::any::Any>,
}

fn start_cloud(cloud: Cloud) -> anyhow::Result<CloudProcess> {
    match cloud {
        Cloud::Crossbar => {
            let bin = crossbar::find().context(
                "Crossbar.io is not installed (run the uplink tests once, or set BRUME_CROSSBAR)",
            )?;
            let cb = crossbar::start(&bin)?;
            Ok(CloudProcess {
                rawsocket: cb.rawsocket.clone(),
                websocket: cb.websocket.clone(),
                pids: cb.pids(),
                _keep: Box::new(cb),
            })
        }
        Cloud::Brume => {
            let b = start_brume(&brume_binary()?, "router.outbound_queue = 65536")?;
            Ok(CloudProcess {
                rawsocket: b.rawsocket.clone(),
                websocket: b.websocket.clone(),
                pids: vec![b.pid()],
                _keep: Box::new(b),
            })
        }
    }
}

/// Runs the replay measurement with `events` queued events.
pub async fn replay(events: usize, cloud: Cloud) -> anyhow::Result<ReplayFigure> {
    let gate = Gate::start().await?;
    let settings = format!(
        "uplink.enabled = true\nuplink.url = \"ws://{}/ws\"\nuplink.realm = \"brume\"\n\
         uplink.reconnect_initial_ms = 100\nuplink.reconnect_max_ms = 200\nuplink.window = 1000\n\
         uplink.queue_max_bytes = 1073741824\nrouter.outbound_queue = 65536\n",
        gate.addr
    );
    let hub = start_brume(&brume_binary()?, &settings).context("starting brume")?;
    let local = Client::connect(
        &ConnectOptions::new(&hub.rawsocket, "brume").serializer(Serializer::MsgPack),
    )
    .await?;
    let published = Arc::new(AtomicU64::new(0));
    let seen = published.clone();
    let queueing = crate::progress::track(
        "uplink: queueing while the cloud is unreachable",
        "events published",
        move || seen.load(Ordering::Relaxed),
    );
    for i in 0..events {
        published.fetch_add(1, Ordering::Relaxed);
        let payload = Payload::kwargs(dict([(
            "values",
            Value::Dict(dict([("n", Value::from(i as u64))])),
        )]));
        local
            .publish(
                &device_models::uris::things::state_topic(&format!("t{}", i % 10)),
                payload,
                Dict::new(),
            )
            .await?;
    }
    let queued = |s: &Dict| s.get("queued").and_then(Value::as_u64).unwrap_or(0);
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let s = local
            .call("brume.uplink.status", vec![], Dict::new())
            .await?;
        if queued(s.payload.kwarg_dict().unwrap_or(&Dict::new())) as usize >= events {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the hub never queued {events} events"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(queueing);

    let cb = start_cloud(cloud)?;
    let mut cloud = Peer::join(&cb.rawsocket, "brume", Serializer::MsgPack).await?;
    cloud
        .subscribe_with("brume.hub.", dict([("match", Value::from("prefix"))]))
        .await?;
    let received = Arc::new(AtomicU64::new(0));
    let seen = received.clone();
    let _progress = crate::progress::track(
        "uplink: replay",
        "events received by the cloud",
        move || seen.load(Ordering::Relaxed),
    );
    let first = Arc::new(std::sync::Mutex::new(None::<Instant>));
    let (r, f) = (received.clone(), first.clone());
    let counter = tokio::spawn(async move {
        while let Ok(m) = cloud.recv().await {
            if let Message::Event { .. } = m {
                f.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .get_or_insert_with(Instant::now);
                r.fetch_add(1, Ordering::Relaxed);
            }
        }
    });
    let pids = cb.pids.clone();
    let (hub0, cb0, t0) = (
        cpu::cpu_seconds(hub.pid()),
        cpu::total(&pids),
        Instant::now(),
    );
    gate.open_to(port_of(&cb.websocket)?);
    let deadline = Instant::now() + Duration::from_secs(600);
    while (received.load(Ordering::Relaxed) as usize) < events {
        anyhow::ensure!(
            Instant::now() < deadline,
            "replay stalled at {} of {events}",
            received.load(Ordering::Relaxed)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let end = Instant::now();
    let wall = t0.elapsed().as_secs_f64();
    counter.abort();
    let start = first
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .unwrap_or(t0);
    Ok(ReplayFigure {
        events,
        per_sec: events as f64 / end.duration_since(start).as_secs_f64().max(1e-6),
        hub_cpu: (cpu::cpu_seconds(hub.pid()) - hub0) / wall * 100.0,
        cloud_cpu: (cpu::total(&pids) - cb0) / wall * 100.0,
    })
}
