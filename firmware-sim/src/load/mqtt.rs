//! MQTT load: telemetry from N devices to one subscriber (Brume: MQTT in, WAMP out; a plain
//! broker: MQTT in, MQTT out), with latency from a device's publish to its delivery, the
//! messages lost, and the resident memory of a broker holding many idle connections.
//!
//! Each device publishes `things/<id>/state` with `{"seq": n}`; the subscriber matches what it
//! receives to the send time of (device, n). Publishers keep at most `window` messages in flight
//! ahead of the subscriber, so the figure is delivered messages, not queued bytes.
//!
//! A message counts as sent once the broker accepted it: its PUBACK arrived (QoS 1), or it was
//! written to the broker's connection (QoS 0). After the measured time, publishing stops and the
//! subscriber gets up to [`super::DRAIN`] for the rest; an accepted message not delivered by
//! then is lost.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use hub::wamp::{Message, Serializer, Value, dict};
use rumqttc::{AsyncClient, Event, MqttOptions, Outgoing, Packet, QoS};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Notify;

use super::cpu::{CpuMeter, CpuUse};
use super::peer::Peer;

/// Most QoS 1 PUBLISHes one device's client keeps unacknowledged (rumqttc's in-flight limit).
pub const DEVICE_INFLIGHT: u16 = 200;

/// Where delivered telemetry is read.
#[derive(Clone, Debug)]
pub enum Sink {
    /// A WAMP subscriber of `brume.thing..state` on this router URL.
    Wamp(String),
    /// An MQTT subscriber of `things/+/state` on the same broker.
    Mqtt,
}

/// What to run: `devices` publishers and one subscriber for warm-up plus the measured time.
#[derive(Clone, Debug)]
pub struct TelemetryLoad {
    pub broker: SocketAddr,
    pub sink: Sink,
    pub devices: usize,
    pub qos: QoS,
    pub warmup: Duration,
    pub measure: Duration,
    /// Most messages published and not yet delivered, all devices together.
    pub window: u64,
    /// Processes of the system under test whose CPU use is read over the measured interval.
    pub cpu_of: Vec<u32>,
}

/// Delivered messages per second, latency, losses and CPU.
#[derive(Clone, Debug)]
pub struct TelemetryFigure {
    pub per_sec: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    /// Messages the broker accepted over the whole run (warm-up included).
    pub sent: u64,
    /// Accepted messages not delivered after the drain.
    pub lost: u64,
    /// Messages published that the broker never accepted (no PUBACK, or never written); not
    /// counted as lost.
    pub unaccepted: u64,
    /// Deliveries of a message already delivered (QoS 1 allows them).
    pub duplicates: u64,
    /// CPU over the measured interval.
    pub cpu: CpuUse,
}

/// A published message not delivered yet.
struct Pending {
    sent_at: Instant,
    accepted: bool,
}

/// Shared between publishers and the subscriber.
#[derive(Default)]
struct Tracking {
    /// Published and not yet delivered, by (device, seq).
    pending: Mutex<HashMap<(u32, u64), Pending>>,
    latencies: Mutex<Vec<f64>>,
    /// Messages delivered for the first time.
    received: AtomicU64,
    accepted: AtomicU64,
    duplicates: AtomicU64,
    progress: Notify,
}

impl Tracking {
    fn published(&self, device: u32, seq: u64) {
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(
                (device, seq),
                Pending {
                    sent_at: Instant::now(),
                    accepted: false,
                },
            );
    }

    fn accepted(&self, device: u32, seq: u64) {
        if let Some(p) = self
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_mut(&(device, seq))
        {
            p.accepted = true;
        }
        self.accepted.fetch_add(1, Ordering::Relaxed);
        self.progress.notify_one();
    }

    fn delivered(&self, device: u32, seq: u64, measuring: bool) {
        let sent = self
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&(device, seq));
        match sent {
            Some(p) => {
                if measuring {
                    self.latencies
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(p.sent_at.elapsed().as_secs_f64() * 1e6);
                }
                self.received.fetch_add(1, Ordering::Relaxed);
            }
            None => {
                self.duplicates.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.progress.notify_one();
    }

    /// (lost, unaccepted): what is still pending, by whether the broker had accepted it.
    fn undelivered(&self) -> (u64, u64) {
        let pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        let lost = pending.values().filter(|p| p.accepted).count() as u64;
        (lost, pending.len() as u64 - lost)
    }

    fn all_delivered(&self) -> bool {
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_empty()
    }
}

/// Follows one device's event loop: which of its messages the broker accepted. The client
/// sends a device's messages in the order they were published (rumqttc takes no new request
/// while a packet id collides), so the n-th outgoing PUBLISH is seq n.
struct Acceptance {
    device: u32,
    qos: QoS,
    next_seq: u64,
    by_pkid: HashMap<u16, u64>,
}

impl Acceptance {
    fn new(device: u32, qos: QoS) -> Self {
        Acceptance {
            device,
            qos,
            next_seq: 0,
            by_pkid: HashMap::new(),
        }
    }

    /// The seq accepted by this event, if any.
    fn handle(&mut self, event: &Event) -> Option<(u32, u64)> {
        match event {
            Event::Outgoing(Outgoing::Publish(pkid)) => {
                let seq = self.next_seq;
                self.next_seq += 1;
                if self.qos == QoS::AtMostOnce {
                    return Some((self.device, seq));
                }
                self.by_pkid.insert(*pkid, seq);
                None
            }
            Event::Incoming(Packet::PubAck(ack)) => {
                self.by_pkid.remove(&ack.pkid).map(|seq| (self.device, seq))
            }
            _ => None,
        }
    }
}

fn device_index(thing: &str) -> Option<u32> {
    thing.strip_prefix("bench-")?.parse().ok()
}

fn options(id: &str, addr: SocketAddr, clean: bool) -> MqttOptions {
    let mut o = MqttOptions::new(id, addr.ip().to_string(), addr.port());
    o.set_keep_alive(Duration::from_secs(60));
    o.set_clean_session(clean);
    o.set_inflight(DEVICE_INFLIGHT);
    o.set_max_packet_size(64 * 1024, 64 * 1024);
    o
}

/// Longest a device's client may take to take a publish request before the run fails (its
/// event loop has stopped, or the broker stopped reading).
const PUBLISH_STALL: Duration = Duration::from_secs(10);

/// Runs `load.devices` publishers and one subscriber for warm-up plus the measured time, then
/// drains.
pub async fn telemetry(load: &TelemetryLoad) -> anyhow::Result<TelemetryFigure> {
    let TelemetryLoad {
        broker,
        devices,
        qos,
        warmup,
        measure,
        window,
        ..
    } = *load;
    anyhow::ensure!(devices > 0, "no devices");
    let track = Arc::new(Tracking::default());
    let seen = track.clone();
    let _progress = crate::progress::track(
        format!("MQTT telemetry, {devices} devices"),
        "messages delivered",
        move || seen.received.load(Ordering::Relaxed),
    );
    let measuring = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    // The subscriber first.
    match &load.sink {
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
            // Wait for SUBACK so nothing is published before the subscription exists.
            let subscribed = tokio::time::timeout(Duration::from_secs(10), async {
                loop {
                    match events.poll().await {
                        Ok(Event::Incoming(Packet::SubAck(_))) => return Ok(()),
                        Ok(_) => {}
                        Err(e) => return Err(e),
                    }
                }
            })
            .await;
            subscribed
                .context("no SUBACK within 10 s")?
                .context("subscribing")?;
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
        let track = track.clone();
        tasks.push(tokio::spawn(async move {
            let mut acceptance = Acceptance::new(i as u32, qos);
            while let Ok(ev) = events.poll().await {
                if let Some((d, s)) = acceptance.handle(&ev) {
                    track.accepted(d, s);
                }
            }
        }));
        clients.push(client);
    }
    let publish = |i: usize, seq: u64| {
        track.published(i as u32, seq);
        let client = &clients[i];
        async move {
            tokio::time::timeout(
                PUBLISH_STALL,
                client.publish(
                    format!("things/bench-{i}/state"),
                    qos,
                    false,
                    format!("{{\"seq\":{seq}}}").into_bytes(),
                ),
            )
            .await
            .with_context(|| format!("device {i} stalled"))?
            .context("publish")
        }
    };
    // Let the subscription and connections settle (and, on Brume, the first reports provision
    // every device) before the clock starts.
    let mut seqs = vec![0u64; devices];
    for i in 0..devices {
        publish(i, 0).await?;
    }
    let mut published = devices as u64;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let start = Instant::now();
    let mut mark: Option<(Instant, u64, CpuMeter)> = None;
    let mut next = 0usize;
    loop {
        let now = Instant::now();
        if mark.is_none() && now >= start + warmup {
            measuring.store(true, Ordering::Relaxed);
            mark = Some((
                now,
                track.received.load(Ordering::Relaxed),
                CpuMeter::start(&load.cpu_of),
            ));
        }
        if let Some((t0, r0, meter)) = &mark
            && now >= *t0 + measure
        {
            let delivered = track.received.load(Ordering::Relaxed) - r0;
            let cpu = meter.read();
            let per_sec = delivered as f64 / now.duration_since(*t0).as_secs_f64();
            measuring.store(false, Ordering::Relaxed);
            // Drain: the clients send what they hold and the broker acknowledges it, the
            // subscriber receives the rest.
            let deadline = Instant::now() + super::DRAIN;
            while !track.all_delivered() && Instant::now() < deadline {
                let _ = tokio::time::timeout(Duration::from_millis(20), track.progress.notified())
                    .await;
            }
            let (lost, unaccepted) = track.undelivered();
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
                per_sec,
                p50_us: pick(0.5),
                p99_us: pick(0.99),
                sent: track.accepted.load(Ordering::Relaxed),
                lost,
                unaccepted,
                duplicates: track.duplicates.load(Ordering::Relaxed),
                cpu,
            });
        }
        let received = track.received.load(Ordering::Relaxed);
        if published.saturating_sub(received) >= window {
            let _ =
                tokio::time::timeout(Duration::from_millis(50), track.progress.notified()).await;
            continue;
        }
        let i = next % devices;
        next += 1;
        seqs[i] += 1;
        publish(i, seqs[i]).await?;
        published += 1;
    }
}

/// An MQTT 3.1.1 CONNECT packet for `client_id` (clean session, keep-alive 10 minutes), logged
/// in with the client id as user name and no password.
pub(crate) fn connect_packet(client_id: &str) -> Vec<u8> {
    let mut body = Vec::new();
    // Clean session, and the client id as user name: a device logged in as its thing (without
    // a password, which auto-provisioned things do not have).
    body.extend_from_slice(&[0, 4, b'M', b'Q', b'T', b'T', 4, 0x82, 0x02, 0x58]);
    for _ in 0..2 {
        body.extend_from_slice(&(client_id.len() as u16).to_be_bytes());
        body.extend_from_slice(client_id.as_bytes());
    }
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

/// Opens idle MQTT connections with client ids `idle-<i>` for `ids` (each CONNECT answered by
/// CONNACK) and keeps them open until the returned sockets are dropped.
pub async fn idle_connections(
    broker: SocketAddr,
    ids: std::ops::Range<usize>,
) -> anyhow::Result<Vec<TcpStream>> {
    let n = ids.len();
    let mut out = Vec::with_capacity(n);
    let opened_so_far = Arc::new(AtomicU64::new(0));
    let seen = opened_so_far.clone();
    let _progress =
        crate::progress::track(format!("{n} idle MQTT connections"), "opened", move || {
            seen.load(Ordering::Relaxed)
        });
    for chunk in ids.collect::<Vec<_>>().chunks(250) {
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

/// The lines of the mosquitto.conf used here: anonymous access, no connection limit, no
/// persistence, at most `inflight` unacknowledged QoS 1 messages towards one client (mosquitto's
/// default is 20) and at most `queued` more held per client before mosquitto drops (0: no
/// limit; the default is 1000).
fn mosquitto_conf(port: u16, inflight: u64, queued: usize) -> String {
    format!(
        "listener {port} 127.0.0.1\nallow_anonymous true\nmax_connections -1\npersistence false\n\
         log_dest none\nmax_inflight_messages {inflight}\nmax_queued_messages {queued}\n"
    )
}

/// Starts mosquitto with [`mosquitto_conf`].
pub fn start_mosquitto(
    binary: &std::path::Path,
    inflight: u64,
    queued: usize,
) -> anyhow::Result<Mosquitto> {
    let dir = tempfile::tempdir()?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let conf = dir.path().join("mosquitto.conf");
    std::fs::write(&conf, mosquitto_conf(port, inflight, queued))?;
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
    use super::*;

    #[test]
    fn mosquitto_gets_the_window() {
        let conf = mosquitto_conf(1883, 2000, 0);
        assert!(conf.contains("\nmax_inflight_messages 2000\n"), "{conf}");
        assert!(conf.contains("\nmax_queued_messages 0\n"), "{conf}");
        assert!(conf.starts_with("listener 1883 127.0.0.1\n"), "{conf}");
    }

    fn puback(pkid: u16) -> Event {
        Event::Incoming(Packet::PubAck(rumqttc::PubAck { pkid }))
    }

    #[test]
    fn qos1_is_accepted_on_puback_in_publish_order() {
        let mut a = Acceptance::new(7, QoS::AtLeastOnce);
        assert_eq!(a.handle(&Event::Outgoing(Outgoing::Publish(1))), None);
        assert_eq!(a.handle(&Event::Outgoing(Outgoing::Publish(2))), None);
        // Acks out of order still name the right messages.
        assert_eq!(a.handle(&puback(2)), Some((7, 1)));
        assert_eq!(a.handle(&puback(1)), Some((7, 0)));
        // An ack for nothing in flight accepts nothing.
        assert_eq!(a.handle(&puback(1)), None);
        // Packet ids are reused once acknowledged.
        assert_eq!(a.handle(&Event::Outgoing(Outgoing::Publish(1))), None);
        assert_eq!(a.handle(&puback(1)), Some((7, 2)));
    }

    #[test]
    fn qos0_is_accepted_when_written() {
        let mut a = Acceptance::new(3, QoS::AtMostOnce);
        assert_eq!(
            a.handle(&Event::Outgoing(Outgoing::Publish(0))),
            Some((3, 0))
        );
        assert_eq!(
            a.handle(&Event::Outgoing(Outgoing::Publish(0))),
            Some((3, 1))
        );
    }

    #[test]
    fn lost_is_accepted_and_undelivered_only() {
        let t = Tracking::default();
        for seq in 0..4 {
            t.published(0, seq);
        }
        t.accepted(0, 0);
        t.accepted(0, 1);
        t.accepted(0, 2);
        t.delivered(0, 0, true);
        // Delivered before its ack came back: neither lost nor unaccepted.
        t.delivered(0, 3, true);
        t.delivered(0, 0, true);
        assert_eq!(t.undelivered(), (2, 0));
        t.delivered(0, 1, false);
        assert_eq!(t.undelivered(), (1, 0));
        t.published(0, 4);
        assert_eq!(t.undelivered(), (1, 1));
        assert_eq!(t.duplicates.load(Ordering::Relaxed), 1);
        assert_eq!(t.received.load(Ordering::Relaxed), 3);
        assert_eq!(t.latencies.lock().map(|l| l.len()).unwrap_or(0), 2);
    }

    #[test]
    fn connect_packet_layout() {
        let p = super::connect_packet("a");
        assert_eq!(
            p,
            vec![
                0x10, 16, 0, 4, b'M', b'Q', b'T', b'T', 4, 0x82, 2, 0x58, 0, 1, b'a', 0, 1, b'a'
            ]
        );
    }
}
