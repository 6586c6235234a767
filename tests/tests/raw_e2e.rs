//! Raw devices through the whole hub: simulated UDP, TCP and serial devices (firmware-sim) on the
//! hub's `[[raw.udp]]`, `[[raw.tcp]]` and `[[raw.serial]]` listeners, bound to the thing types in
//! `firmware-sim/types/raw/`, and WAMP apps (Autobahn-Python, and Brume's own client) that follow
//! their state, call their actions and set their desired values.

// Test helpers fail the test by panicking, so unwrap and expect are their error reporting.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Stdio;
use std::sync::atomic::Ordering;
use std::time::Duration;

use firmware_sim::raw::beacon::{Beacon, BeaconConfig, Reading};
use firmware_sim::raw::meter::{MeterBus, MeterNode};
use firmware_sim::raw::pty::PtyPort;
use firmware_sim::raw::thermostat::{State, Thermostat, ThermostatConfig};
use gateways::raw::{SerialConfig, StatsSnapshot, TcpConfig, UdpConfig};
use hub::client::{Client, ClientError, Subscription};
use hub::config::Config;
use hub::wamp::{Dict, Serializer, Value, dict};
use serde_json::{Value as Json, json};
use tests::hub::TestHub;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpStream, UdpSocket};
use tokio::process::{Child, ChildStdin};
use tokio::sync::mpsc;

const WAIT: Duration = Duration::from_secs(20);

/// Listener names, as `gateway_addrs().raw` and `gateways().raw_stats` list them.
const UDP: &str = "beacons";
const TCP: &str = "thermostats";
const SERIAL: &str = "meters";

/// A hub whose types directory holds the simulated devices' types, with the raw listeners
/// `configure` adds.
async fn hub_with(configure: impl FnOnce(&mut Config)) -> TestHub {
    TestHub::start_with(|c| {
        let types = c.hub.data_dir.join("types");
        firmware_sim::raw::types::write_all(&types).unwrap();
        c.things.types_dir = Some(types);
        configure(c);
    })
    .await
}

fn udp_listener() -> UdpConfig {
    let mut udp = UdpConfig::new("127.0.0.1:0", "udp_beacon");
    udp.name = Some(UDP.into());
    udp
}

fn tcp_listener() -> TcpConfig {
    let mut tcp = TcpConfig::new("127.0.0.1:0", "tcp_thermostat");
    tcp.name = Some(TCP.into());
    tcp
}

fn serial_listener(path: &Path) -> SerialConfig {
    let mut serial = SerialConfig::new(path.to_string_lossy(), "serial_meter");
    serial.name = Some(SERIAL.into());
    serial.baud_rate = 115_200;
    serial.reopen_min_ms = 20;
    serial.reopen_max_ms = 200;
    serial
}

fn addr(hub: &TestHub, name: &str) -> std::net::SocketAddr {
    hub.hub
        .gateway_addrs()
        .raw
        .iter()
        .find(|(n, _)| n == name)
        .and_then(|(_, a)| *a)
        .unwrap_or_else(|| panic!("no raw listener {name}"))
}

fn stats(hub: &TestHub, name: &str) -> StatsSnapshot {
    hub.hub
        .gateways()
        .raw_stats
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, s)| s.snapshot())
        .unwrap_or_else(|| panic!("no raw listener {name}"))
}

/// Waits until a listener's counters satisfy `cond`.
async fn stats_until(
    hub: &TestHub,
    name: &str,
    what: &str,
    cond: impl Fn(&StatsSnapshot) -> bool,
) -> StatsSnapshot {
    let start = std::time::Instant::now();
    loop {
        let s = stats(hub, name);
        if cond(&s) {
            return s;
        }
        assert!(start.elapsed() < WAIT, "{name}: {what}: {s:#?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn beacon_reading() -> Reading {
    Reading {
        temperature: -12.34,
        humidity: 61,
        battery: 87,
        charging: true,
    }
}

async fn beacon(hub: &TestHub) -> Beacon {
    Beacon::spawn(BeaconConfig {
        id: 258,
        hub: addr(hub, UDP),
        interval: Duration::from_millis(100),
        reading: beacon_reading(),
    })
    .await
    .unwrap()
}

/// A thermostat that reports when it connects and after each change (and otherwise rarely).
async fn thermostat(hub: &TestHub) -> Thermostat {
    Thermostat::connect(ThermostatConfig {
        id: "th-12".into(),
        hub: addr(hub, TCP),
        interval: Duration::from_secs(60),
        state: State {
            temperature: 20.5,
            setpoint: 21.0,
            mode: "eco".into(),
        },
    })
    .await
    .unwrap()
}

/// The meters on the line: node 3, reporting every 100 ms.
fn meters() -> (Vec<MeterNode>, Option<Duration>) {
    (vec![MeterNode::new(3)], Some(Duration::from_millis(100)))
}

/// A Python peer script from `tests/peers` driven step by step: it prints `STEP <name>` and waits
/// for a line on stdin before it goes on.
struct Peer {
    script: &'static str,
    child: Child,
    stdin: ChildStdin,
    lines: mpsc::UnboundedReceiver<String>,
    stdout: Vec<String>,
}

impl Peer {
    async fn start(script: &'static str, args: &[String]) -> Peer {
        let python = tokio::task::spawn_blocking(tests::peers::python)
            .await
            .unwrap();
        let mut child = tokio::process::Command::new(python)
            .arg(tests::peers::scripts_dir().join(script))
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn python");
        let stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut reader = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Peer {
            script,
            child,
            stdin,
            lines,
            stdout: Vec::new(),
        }
    }

    /// The script's stderr, once it has ended.
    async fn stderr(&mut self) -> String {
        let mut err = String::new();
        if let Some(mut stderr) = self.child.stderr.take() {
            let _ = tokio::time::timeout(WAIT, stderr.read_to_string(&mut err)).await;
        }
        err
    }

    async fn fail(&mut self, why: &str) -> ! {
        let _ = self.child.start_kill();
        let status = self.child.wait().await;
        let stderr = self.stderr().await;
        panic!(
            "{}: {why} ({status:?})\n--- stdout\n{}\n--- stderr\n{stderr}",
            self.script,
            self.stdout.join("\n"),
        );
    }

    /// Reads the script's output until it reaches step `name`.
    async fn reached(&mut self, name: &str) {
        let want = format!("STEP {name}");
        loop {
            let line = tokio::time::timeout(WAIT, self.lines.recv()).await;
            match line {
                Ok(Some(line)) => {
                    let done = line == want;
                    self.stdout.push(line);
                    if done {
                        return;
                    }
                }
                Ok(None) => self.fail(&format!("ended before step {name}")).await,
                Err(_) => self.fail(&format!("did not reach step {name}")).await,
            }
        }
    }

    /// Lets the script go on from the step it is at.
    async fn go(&mut self) {
        self.stdin.write_all(b"go\n").await.unwrap();
        self.stdin.flush().await.unwrap();
    }

    /// Waits for the script to end and checks that it passed.
    async fn passed(mut self) {
        let status = match tokio::time::timeout(Duration::from_secs(60), self.child.wait()).await {
            Ok(status) => status.unwrap(),
            Err(_) => self.fail("did not finish").await,
        };
        while let Ok(line) = self.lines.try_recv() {
            self.stdout.push(line);
        }
        if !status.success() || !self.stdout.iter().any(|l| l == "ALL OK") {
            self.fail("failed").await;
        }
    }
}

/// One hub, one device per transport, an Autobahn app: state arrives as WAMP events with the
/// decoded and scaled values, and actions and desired values reach the devices, whose answers
/// come back to the caller.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_tcp_and_serial_devices_report_to_autobahn_and_answer_its_calls() {
    let dir = tempfile::tempdir().unwrap();
    let port = PtyPort::new(dir.path().join("ttyMETER"));
    // Plugged before the hub starts; the meter runs once the things are provisioned.
    let device_end = port.plug().unwrap();
    let hub = hub_with(|c| {
        c.raw.udp.push(udp_listener());
        c.raw.tcp.push(tcp_listener());
        c.raw.serial.push(serial_listener(port.path()));
    })
    .await;

    let mut app = Peer::start("raw_devices.py", &[hub.ws_url(), "json".into()]).await;
    app.reached("provisioned").await;
    let beacon = beacon(&hub).await;
    let thermostat = thermostat(&hub).await;
    let (nodes, every) = meters();
    let bus = MeterBus::spawn(device_end, nodes, every).unwrap();
    app.go().await;
    app.passed().await;

    // What the devices themselves saw.
    assert_eq!(beacon.stats().identified.load(Ordering::Relaxed), 1);
    assert_eq!(
        beacon.stats().last_identify_seconds.load(Ordering::Relaxed),
        3
    );
    let state = thermostat.state();
    assert_eq!(
        (state.temperature, state.setpoint, state.mode.as_str()),
        (20.0, 22.5, "comfort")
    );
    assert!(!bus.nodes()[0].relay);
    let udp = stats(&hub, UDP);
    assert_eq!((udp.commands_sent, udp.replies), (1, 1), "{udp:#?}");
    let tcp = stats(&hub, TCP);
    // calibrate, then one frame per desired value.
    assert_eq!((tcp.commands_sent, tcp.replies), (3, 3), "{tcp:#?}");
    let serial = stats(&hub, SERIAL);
    assert_eq!(
        (serial.commands_sent, serial.replies),
        (2, 2),
        "{serial:#?}"
    );
    for s in [udp, tcp, serial] {
        assert_eq!(s.timeouts + s.commands_rejected, 0, "{s:#?}");
    }
    port.unplug();
}

/// A serial meter unplugged (its pty closed) and plugged back (a new pty behind the same path):
/// an Autobahn app sees `on_offline`, calls fail meanwhile (a desired value stays pending), then
/// `on_online`; the pending value reaches the meter, and commands work again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_serial_meter_unplugged_and_plugged_back_is_followed_over_wamp() {
    let dir = tempfile::tempdir().unwrap();
    let port = PtyPort::new(dir.path().join("ttyMETER"));
    let device_end = port.plug().unwrap();
    let hub = hub_with(|c| c.raw.serial.push(serial_listener(port.path()))).await;

    let mut app = Peer::start("raw_replug.py", &[hub.rs_url(), "msgpack".into()]).await;
    app.reached("provisioned").await;
    let (nodes, every) = meters();
    let bus = MeterBus::spawn(device_end, nodes, every).unwrap();
    app.go().await;

    app.reached("unplug").await;
    drop(bus);
    port.unplug();
    app.go().await;

    app.reached("plug").await;
    // The hub has lost the port and failed to open it again at least once.
    stats_until(&hub, SERIAL, "a failed reopen", |s| s.port_failures >= 2).await;
    let (nodes, every) = meters();
    let bus = MeterBus::spawn(port.plug().unwrap(), nodes, every).unwrap();
    app.go().await;
    app.passed().await;

    assert!(
        bus.nodes()[0].relay,
        "the set after the replug reached the meter"
    );
    let s = stats(&hub, SERIAL);
    assert_eq!(s.port_opens, 2, "{s:#?}");
    // poll, then after the replug: the pending relay value, poll, set.
    assert_eq!(
        (s.commands_sent, s.replies, s.timeouts),
        (4, 4, 0),
        "{s:#?}"
    );
    port.unplug();
}

fn object(v: Json) -> serde_json::Map<String, Json> {
    match v {
        Json::Object(m) => m,
        other => panic!("not an object: {other}"),
    }
}

fn kwargs(v: Json) -> Dict {
    match Value::from(v) {
        Value::Dict(d) => d,
        other => panic!("not a dict: {other:?}"),
    }
}

/// Calls a procedure with kwargs; returns the single result value as JSON.
async fn call(c: &Client, procedure: &str, kw: Json) -> Json {
    match c.call(procedure, vec![], kwargs(kw)).await {
        Ok(r) => r.payload.arg(0).map(Json::from).unwrap_or(Json::Null),
        Err(ClientError::Wamp(e)) => panic!("{procedure}: {e}"),
        Err(other) => panic!("{procedure}: {other}"),
    }
}

/// The next state event of `thing` (skipping other things'): its changed values.
async fn state_of(states: &mut Subscription, thing: &str) -> Json {
    let topic = format!("brume.thing.{thing}.state");
    loop {
        let ev = tokio::time::timeout(WAIT, states.next())
            .await
            .unwrap_or_else(|_| panic!("no state event of {thing}"))
            .expect("subscription open");
        if ev.topic.as_deref() == Some(topic.as_str()) {
            let kw = ev.payload.kwarg_dict().expect("kwargs");
            return Json::from(&Value::Dict(kw.clone()))["values"].clone();
        }
    }
}

/// Reads from a garbage peer's connection until the hub closes it.
async fn closed_by_hub(mut stream: TcpStream, what: &str) {
    let mut buf = [0u8; 256];
    loop {
        match tokio::time::timeout(WAIT, stream.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => return,
            Ok(Ok(_)) => {}
            Err(_) => panic!("{what}: the hub did not close the connection"),
        }
    }
}

/// Bad frames on each transport are dropped and counted by kind, a TCP peer that sends only
/// garbage is disconnected, and the good devices on the same ports go on reporting and answering
/// WAMP calls.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_frames_are_counted_and_garbage_does_not_disturb_good_devices() {
    let dir = tempfile::tempdir().unwrap();
    let port = PtyPort::new(dir.path().join("ttyMETER"));
    let mut device_end = port.plug().unwrap();
    let hub = hub_with(|c| {
        c.raw.udp.push(udp_listener());
        c.raw.tcp.push(tcp_listener());
        c.raw.serial.push(serial_listener(port.path()));
    })
    .await;
    let app = hub.client("websocket", Serializer::Json).await;
    let mut states = app
        .subscribe(
            "brume.thing..state",
            dict([("match", Value::from("wildcard"))]),
        )
        .await
        .unwrap();
    for (thing, ty) in [
        ("beacon-258", "udp_beacon"),
        ("th-12", "tcp_thermostat"),
        ("meter-3", "serial_meter"),
    ] {
        call(
            &app,
            "brume.things.provision",
            json!({ "thing": thing, "type": ty }),
        )
        .await;
    }

    // UDP: a beacon, and another source sending a datagram with a bad checksum, one too short for
    // the layout (with a good checksum) and one larger than max_frame.
    let beacon = beacon(&hub).await;
    assert_eq!(
        state_of(&mut states, "beacon-258").await["temperature"],
        -12.34
    );
    let codec = firmware_sim::raw::types::codec(firmware_sim::raw::types::UDP_BEACON).unwrap();
    let good = codec
        .encode_report(
            Some("beacon-258"),
            &object(json!({"_kind": 1, "seq": 0, "temperature": 1.0, "humidity": 1, "battery": 1, "charging": 0})),
        )
        .unwrap();
    let mut bad_checksum = good.to_vec();
    *bad_checksum.last_mut().unwrap() ^= 0x55;
    let mut short = good[..5].to_vec();
    short.push(device_models::frames::xor8(&short));
    let noise = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    for datagram in [&bad_checksum[..], &short[..], &[0xA5u8; 64][..]] {
        noise.send_to(datagram, addr(&hub, UDP)).await.unwrap();
    }
    let udp = stats_until(&hub, UDP, "bad datagrams counted", |s| {
        s.bad_checksum + s.truncated + s.oversize >= 3
    })
    .await;
    assert_eq!(
        (udp.bad_checksum, udp.truncated, udp.oversize),
        (1, 1, 1),
        "{udp:#?}"
    );
    beacon.set_reading(Reading {
        temperature: 30.5,
        ..beacon_reading()
    });
    assert_eq!(
        state_of(&mut states, "beacon-258").await,
        json!({"temperature": 30.5})
    );
    let r = call(
        &app,
        "brume.thing.beacon-258.action.identify",
        json!({"seconds": 1}),
    )
    .await;
    assert_eq!(r, Json::Null);

    // TCP: a thermostat, a peer speaking HTTP (its first bytes read as a length over max_frame:
    // the stream position is lost) and a peer sending well-framed frames that are not JSON.
    let thermostat = thermostat(&hub).await;
    assert_eq!(state_of(&mut states, "th-12").await["setpoint"], 21.0);
    let mut http = TcpStream::connect(addr(&hub, TCP)).await.unwrap();
    http.write_all(b"GET / HTTP/1.1\r\nHost: hub\r\n\r\n")
        .await
        .unwrap();
    closed_by_hub(http, "the HTTP peer").await;
    let mut junk = TcpStream::connect(addr(&hub, TCP)).await.unwrap();
    for _ in 0..tcp_listener().max_bad_frames {
        junk.write_all(b"\x00\x04nope").await.unwrap();
    }
    closed_by_hub(junk, "the junk peer").await;
    let tcp = stats_until(&hub, TCP, "garbage peers disconnected", |s| {
        s.garbage_disconnects >= 2
    })
    .await;
    assert_eq!(
        (tcp.garbage_disconnects, tcp.oversize, tcp.undecodable),
        (2, 1, u64::from(tcp_listener().max_bad_frames)),
        "{tcp:#?}"
    );
    let r = call(
        &app,
        "brume.thing.th-12.action.calibrate",
        json!({"offset": 1.5}),
    )
    .await;
    assert_eq!(r, json!(true));
    assert_eq!(
        state_of(&mut states, "th-12").await,
        json!({"temperature": 22.0})
    );
    assert_eq!(thermostat.state().temperature, 22.0);

    // Serial: before the meter speaks, the line carries a wrong CRC, a line without one, binary
    // noise, a line longer than max_frame and a line with a good CRC that is not key=value.
    stats_until(&hub, SERIAL, "the port open", |s| s.port_opens == 1).await;
    let line = |body: &str| {
        format!(
            "{body}*{:04X}\r\n",
            device_models::frames::crc16_modbus(body.as_bytes())
        )
    };
    let mut wrong_crc = line("node=3;v=1;a=0;relay=1").into_bytes();
    let at = wrong_crc.len() - 3;
    wrong_crc[at] = if wrong_crc[at] == b'0' { b'1' } else { b'0' };
    let noise: Vec<u8> = [
        wrong_crc,
        b"node=3;v=1\r\n".to_vec(),
        b"\x00\xff\xfe\x01\r\n".to_vec(),
        [b'x'; 300].iter().chain(b"\r\n").copied().collect(),
        line("no pairs here").into_bytes(),
    ]
    .concat();
    device_end.write_all(&noise).await.unwrap();
    let serial = stats_until(&hub, SERIAL, "bad lines counted", |s| {
        s.bad_checksum + s.oversize + s.undecodable >= 5
    })
    .await;
    assert_eq!(
        (serial.bad_checksum, serial.oversize, serial.undecodable),
        (3, 1, 1),
        "{serial:#?}"
    );
    let (nodes, every) = meters();
    let _bus = MeterBus::spawn(device_end, nodes, every).unwrap();
    assert_eq!(
        state_of(&mut states, "meter-3").await,
        json!({"voltage": 230.1, "current": 1.25, "relay": true})
    );
    let r = call(&app, "brume.thing.meter-3.action.poll", json!({})).await;
    assert_eq!(r["voltage"], 230.1);

    // Nothing bad was taken for a frame, and every good device is still online.
    for name in [UDP, TCP, SERIAL] {
        let s = stats(&hub, name);
        assert_eq!(s.unidentified + s.bad_id + s.id_mismatch, 0, "{s:#?}");
    }
    let online = call(&app, "brume.things.list", json!({"online": true})).await;
    assert_eq!(online.as_array().map(Vec::len), Some(3), "{online}");
    port.unplug();
}

/// A device already connected when it is provisioned (until then its traffic is dropped, with
/// explicit provisioning) is online as soon as `brume.things.provision` returns: a TCP thermostat
/// that reports only when it connects and when something changes answers a call at once, and its
/// next report is published whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_connected_before_it_is_provisioned_is_online_once_provisioned() {
    let hub = hub_with(|c| c.raw.tcp.push(tcp_listener())).await;
    let app = hub.client("rawsocket", Serializer::MsgPack).await;
    let mut onlines = app
        .subscribe("brume.things.on_online", Dict::new())
        .await
        .unwrap();
    let mut states = app
        .subscribe(
            "brume.thing..state",
            dict([("match", Value::from("wildcard"))]),
        )
        .await
        .unwrap();
    let thermostat = thermostat(&hub).await;
    // Its Hello and first report reach the hub, which does not know the thing yet.
    let things = hub.hub.things().stats().clone();
    let start = std::time::Instant::now();
    while hub::things::ThingsStats::get(&things.unknown_devices) < 2 {
        assert!(start.elapsed() < WAIT, "the thermostat was never heard");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let p = call(
        &app,
        "brume.things.provision",
        json!({ "thing": "th-12", "type": "tcp_thermostat" }),
    )
    .await;
    assert_eq!(p["thing"]["online"], json!(true), "{p}");
    let ev = tokio::time::timeout(WAIT, onlines.next())
        .await
        .expect("on_online in time")
        .expect("subscription open");
    assert_eq!(ev.payload.kwarg("thing"), Some(&Value::from("th-12")));
    let r = call(
        &app,
        "brume.thing.th-12.action.calibrate",
        json!({"offset": 1.0}),
    )
    .await;
    assert_eq!(r, json!(true));
    assert_eq!(
        state_of(&mut states, "th-12").await,
        json!({"temperature": 21.5, "setpoint": 21.0, "mode": "eco"})
    );
    assert_eq!(thermostat.state().temperature, 21.5);
}
