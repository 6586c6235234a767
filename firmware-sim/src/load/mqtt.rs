//! MQTT load: telemetry from N devices to one subscriber (Brume: MQTT in, WAMP out; a plain
//! broker: MQTT in, MQTT out), with latency from a device's publish to its delivery, and the
//! resident memory of a broker holding many idle connections.
//!
//! Each device publishes `things/<id>/state` with `{"seq": n}`; the subscriber matches what it
//! receives to the send time of (device, n). Publishers keep at most `window` messages in flight
//! ahead of the subscriber, so the figure is delivered messages, not queued bytes.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use hub::wamp::{Message, Serializer, Value, dict};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Notify;

use super::peer::Peer;

/// Where delivered telemetry is read.
#[derive(Clone, Debug)]
pub enum Sink {
    /// A WAMP subscriber of `brume.thing..state` on this router URL.
    Wamp(String),
    /// An MQTT subscriber of `things/+/state` on the same broker.
    Mqtt,
}

/// Delivered messages per second and latency.
#[derive(Clone, Debug)]
pub struct TelemetryFigure {
    pub per_sec: f64,
    pub p50_us: f64,
    pub p99_us: f64,
}

/// Shared between publishers and the subscriber.
#[derive(Default)]
struct Tracking {
    sent: Mutex<HashMap<(u32, u64), Instant>>,
    latencies: Mutex<Vec<f64>>,
    received: AtomicU64,
    progress: Notify,
}

impl Tracking {
    fn delivered(&self, device: u32, seq: u64, measuring: bool) {
        let sent = self
            .sent
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&(device, seq));
        if let (Some(t), true) = (sent, measuring) {
            self.latencies
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(t.elapsed().as_secs_f64() * 1e6);
        }
        self.received.fetch_add(1, Ordering::Relaxed);
        self.progress.notify_one();
    }
}

fn device_index(thing: &str) -> Option<u32> {
    thing.strip_prefix("bench-")?.parse().ok()
}

fn options(id: &str, addr: SocketAddr, clean: bool) -> MqttOptions {
    let mut o = MqttOptions::new(id, addr.ip().to_string(), addr.port());
    o.set_keep_alive(Duration::from_secs(60));
    o.set_clean_session(clean);
    o.set_inflight(200);
    o.set_max_packet_size(64 * 1024, 64 * 1024);
    o
}

/// Runs `devices` publishers and one subscriber for warm-up plus the measured time.
pub async fn telemetry(
    broker: SocketAddr,
    sink: Sink,
    devices: usize,
    qos: QoS,
    warmup: Duration,
    measure: Duration,
    window: u64,
) -> anyhow::Result<TelemetryFigure> {
    let track = Arc::new(Tracking::default());
    let seen = track.clone();
    let _progress = crate::progress::track(
        format!("MQTT telemetry, {devices} devices"),
        "messages delivered",
        move || seen.received.load(Ordering::Relaxed),
    );
    let measuring = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut tasks = Vec::new();
    // The subscriber first.
    match &sink {
        Sink::Wamp(url) => {
            let mut peer = Peer::join(url, "brume", Serializer::MsgPack).await?;
            peer.subscribe_with(
                "brume.thing..state",
                dict([("match", Value::from("wildcard"))]),
            )
            .await?;
            let (track, measuring) = (track.clone(), measuring.clone());
            tasks.push(tokio::spawn(async move {
                while let Ok(m) = peer.recv().await {
                    let Message::Event { payload, .. } = m else {
                        continue;
                    };
                    let thing = payload
                        .kwarg("thing")
                        .and_then(Value::as_str)
                        .and_then(device_index);
                    let seq = payload
                        .kwarg("values")
                        .and_then(Value::as_dict)
                        .and_then(|v| v.get("seq"))
                        .and_then(Value::as_u64);
                    if let (Some(d), Some(s)) = (thing, seq) {
                        track.delivered(d, s, measuring.load(Ordering::Relaxed));
                    }
                }
            }));
        }
        Sink::Mqtt => {
            let (client, mut events) =
                AsyncClient::new(options("bench-subscriber", broker, true), 10_000);
            client.subscribe("things/+/state", qos).await?;
            let (track, measuring) = (track.clone(), measuring.clone());
            tasks.push(tokio::spawn(async move {
                let _client = client;
                while let Ok(ev) = events.poll().await {
                    let Event::Incoming(Packet::Publish(p)) = ev else {
                        continue;
                    };
                    let thing = p.topic.split('/').nth(1).and_then(device_index);
                    let seq = serde_json::from_slice::<serde_json::Value>(&p.payload)
                        .ok()
                        .and_then(|v| v["seq"].as_u64());
                    if let (Some(d), Some(s)) = (thing, seq) {
                        track.delivered(d, s, measuring.load(Ordering::Relaxed));
                    }
                }
            }));
        }
    }
    // The devices.
    let mut clients = Vec::new();
    for i in 0..devices {
        let (client, mut events) =
            AsyncClient::new(options(&format!("bench-{i}"), broker, true), 256);
        tasks.push(tokio::spawn(
            async move { while events.poll().await.is_ok() {} },
        ));
        clients.push(client);
    }
    // Let the subscription and connections settle (and, on Brume, the first reports provision
    // every device) before the clock starts.
    let mut seqs = vec![0u64; devices];
    for (i, c) in clients.iter().enumerate() {
        c.publish(
            format!("things/bench-{i}/state"),
            qos,
            false,
            b"{\"seq\":0}".to_vec(),
        )
        .await?;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut published = 0u64;
    let base = track.received.load(Ordering::Relaxed);
    let start = Instant::now();
    let mut mark: Option<(Instant, u64)> = None;
    let mut next = 0usize;
    loop {
        let now = Instant::now();
        if mark.is_none() && now >= start + warmup {
            measuring.store(true, Ordering::Relaxed);
            mark = Some((now, track.received.load(Ordering::Relaxed)));
        }
        if let Some((t0, r0)) = mark
            && now >= t0 + measure
        {
            let delivered = track.received.load(Ordering::Relaxed) - r0;
            for t in tasks {
                t.abort();
            }
            let mut lat =
                std::mem::take(&mut *track.latencies.lock().unwrap_or_else(|e| e.into_inner()));
            lat.sort_by(f64::total_cmp);
            let pick = |p: f64| {
                lat.get(((lat.len() as f64 - 1.0) * p).round() as usize)
                    .copied()
                    .unwrap_or(0.0)
            };
            return Ok(TelemetryFigure {
                per_sec: delivered as f64 / now.duration_since(t0).as_secs_f64(),
                p50_us: pick(0.5),
                p99_us: pick(0.99),
            });
        }
        let received = track.received.load(Ordering::Relaxed) - base;
        if published.saturating_sub(received) >= window {
            let _ =
                tokio::time::timeout(Duration::from_millis(50), track.progress.notified()).await;
            continue;
        }
        let i = next % devices;
        next += 1;
        seqs[i] += 1;
        track
            .sent
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert((i as u32, seqs[i]), Instant::now());
        clients[i]
            .publish(
                format!("things/bench-{i}/state"),
                qos,
                false,
                format!("{{\"seq\":{}}}", seqs[i]).into_bytes(),
            )
            .await
            .context("publish")?;
        published += 1;
    }
}

/// An MQTT 3.1.1 CONNECT packet for `client_id` (clean session, keep-alive 10 minutes).
fn connect_packet(client_id: &str) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&[0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, 0x02, 0x58]);
    body.extend_from_slice(&(client_id.len() as u16).to_be_bytes());
    body.extend_from_slice(client_id.as_bytes());
    let mut packet = vec![0x10];
    let mut len = body.len();
    loop {
        let mut byte = (len % 128) as u8;
        len /= 128;
        if len > 0 {
            byte |= 0x80;
        }
        packet.push(byte);
        if len == 0 {
            break;
        }
    }
    packet.extend_from_slice(&body);
    packet
}

/// Opens `n` idle MQTT connections (each CONNECT answered by CONNACK) and keeps them open until
/// the returned sockets are dropped.
pub async fn idle_connections(broker: SocketAddr, n: usize) -> anyhow::Result<Vec<TcpStream>> {
    let mut out = Vec::with_capacity(n);
    let opened_so_far = Arc::new(AtomicU64::new(0));
    let seen = opened_so_far.clone();
    let _progress =
        crate::progress::track(format!("{n} idle MQTT connections"), "opened", move || {
            seen.load(Ordering::Relaxed)
        });
    for chunk in (0..n).collect::<Vec<_>>().chunks(250) {
        let opened = futures_util::future::join_all(chunk.iter().map(|i| async move {
            let mut s = TcpStream::connect(broker).await?;
            s.write_all(&connect_packet(&format!("idle-{i}"))).await?;
            let mut ack = [0u8; 4];
            tokio::time::timeout(Duration::from_secs(10), s.read_exact(&mut ack))
                .await
                .context("no CONNACK")??;
            anyhow::ensure!(
                ack[0] == 0x20 && ack[3] == 0,
                "connection refused: {ack:02x?}"
            );
            Ok::<_, anyhow::Error>(s)
        }))
        .await;
        for s in opened {
            out.push(s?);
        }
        opened_so_far.store(out.len() as u64, Ordering::Relaxed);
    }
    Ok(out)
}

/// mosquitto, if installed, started on a free loopback port.
pub struct Mosquitto {
    child: std::process::Child,
    pub addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Mosquitto {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Where mosquitto is installed (`BRUME_MOSQUITTO` or Debian's path).
pub fn find_mosquitto() -> Option<std::path::PathBuf> {
    std::env::var_os("BRUME_MOSQUITTO")
        .map(std::path::PathBuf::from)
        .or_else(|| Some(std::path::PathBuf::from("/usr/sbin/mosquitto")))
        .filter(|p| p.exists())
}

/// Starts mosquitto with anonymous access, no connection limit and no persistence.
pub fn start_mosquitto(binary: &std::path::Path) -> anyhow::Result<Mosquitto> {
    let dir = tempfile::tempdir()?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let conf = dir.path().join("mosquitto.conf");
    std::fs::write(
        &conf,
        format!(
            "listener {port} 127.0.0.1\nallow_anonymous true\nmax_connections -1\npersistence false\nlog_dest none\n"
        ),
    )?;
    let child = std::process::Command::new(binary)
        .arg("-c")
        .arg(&conf)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .with_context(|| format!("spawn {}", binary.display()))?;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(addr).is_err() {
        anyhow::ensure!(Instant::now() < deadline, "mosquitto did not listen");
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(Mosquitto {
        child,
        addr,
        _dir: dir,
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn connect_packet_layout() {
        let p = super::connect_packet("a");
        assert_eq!(
            p,
            vec![
                0x10, 13, 0, 4, b'M', b'Q', b'T', b'T', 4, 2, 2, 0x58, 0, 1, b'a'
            ]
        );
    }
}
