//! Modbus devices through the whole hub: simulated meters and drives (firmware-sim's `SimBus`)
//! on a Modbus TCP server and on an RTU line (a pseudo-terminal), bound to the bundled thing types
//! `modbus_meter` and `modbus_drive`, followed and driven over WAMP by a client on a real socket.

// Test helpers fail the test by panicking, so unwrap and expect are their error reporting.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use firmware_sim::modbus::{DeviceKind, RtuOptions, SimBus, Table};
use gateways::modbus::{BusSnapshot, DeviceConfig, RtuBusConfig, TcpBusConfig};
use hub::client::{Client, ClientError, Subscription};
use hub::wamp::{Dict, Serializer, Value, dict};
use serde_json::{Value as Json, json};
use tests::hub::TestHub;
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(20);

fn device(unit: u8, thing: &str, ty: &str) -> DeviceConfig {
    DeviceConfig {
        unit,
        thing: thing.into(),
        thing_type: ty.into(),
    }
}

fn tcp_bus(
    name: &str,
    address: impl std::fmt::Display,
    devices: Vec<DeviceConfig>,
) -> TcpBusConfig {
    let mut bus: TcpBusConfig = toml::from_str(&format!(
        "name = '{name}'\naddress = '{address}'\ntimeout_ms = 300\nconnect_timeout_ms = 500\n\
         offline_after_failures = 2\nbackoff_min_ms = 100\nbackoff_max_ms = 400\n"
    ))
    .unwrap();
    bus.devices = devices;
    bus
}

fn stats(hub: &TestHub, name: &str) -> BusSnapshot {
    hub.hub
        .gateways()
        .modbus_stats
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, s)| s.snapshot())
        .unwrap_or_else(|| panic!("no Modbus bus {name}"))
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

/// Waits for the next event on `sub` whose topic is `topic` (events of an exact subscription
/// carry no topic); returns its kwargs.
async fn event(sub: &mut Subscription, topic: &str) -> Json {
    loop {
        let ev = tokio::time::timeout(WAIT, sub.next())
            .await
            .unwrap_or_else(|_| panic!("no event on {topic}"))
            .expect("subscription open");
        if ev.topic.as_deref().is_none_or(|t| t == topic) {
            let kw = ev.payload.kwarg_dict().cloned().unwrap_or_default();
            return Json::from(&Value::Dict(kw));
        }
    }
}

/// Waits for a state event of `thing` whose values satisfy `cond`; returns those values.
async fn state_until(sub: &mut Subscription, thing: &str, cond: impl Fn(&Json) -> bool) -> Json {
    let topic = format!("brume.thing.{thing}.state");
    let start = Instant::now();
    loop {
        assert!(start.elapsed() < WAIT, "no fitting state event of {thing}");
        let values = event(sub, &topic).await["values"].clone();
        if cond(&values) {
            return values;
        }
    }
}

/// Reads `thing` from the registry until `cond` holds for it; returns it.
async fn thing_until(app: &Client, thing: &str, cond: impl Fn(&Json) -> bool) -> Json {
    let start = Instant::now();
    loop {
        let t = call(app, "brume.things.get", json!({ "thing": thing })).await;
        if cond(&t) {
            return t;
        }
        assert!(start.elapsed() < WAIT, "{thing} never fit: {t}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Polls `cond` until it holds.
async fn until(what: &str, cond: impl Fn() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < WAIT, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn subscribe_states(app: &Client) -> Subscription {
    app.subscribe(
        "brume.thing..state",
        dict([("match", Value::from("wildcard"))]),
    )
    .await
    .unwrap()
}

/// A meter and a drive behind one Modbus TCP server: polled values become state events (floats
/// in their shortest form, scaled integers rounded to their scale, strings as info), a set is
/// written (a register, a coil, a bit of a status word) and confirmed by reading it back, an
/// action writes its coil, and each poll group is read with merged requests.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_devices_are_polled_set_and_acted_on_over_wamp() {
    let shutdown = CancellationToken::new();
    let sim = SimBus::new();
    sim.add(1, DeviceKind::Meter).unwrap();
    sim.add(2, DeviceKind::Drive).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = sim.serve_tcp(listener, shutdown.clone()).unwrap();
    let hub = TestHub::start_with(|c| {
        c.modbus.tcp.push(tcp_bus(
            "switchboard",
            server.local_addr(),
            vec![
                device(1, "meter-1", "modbus_meter"),
                device(2, "drive-1", "modbus_drive"),
            ],
        ));
    })
    .await;
    let app = hub.client("websocket", Serializer::Json).await;
    let mut states = subscribe_states(&app).await;

    // Each poll group reports on its own: the fast group (voltage, current, power) ...
    let fast = state_until(&mut states, "meter-1", |v| v.get("voltage").is_some()).await;
    let voltage = fast["voltage"].as_f64().expect("voltage is a number");
    assert!((200.0..260.0).contains(&voltage), "{fast}");
    assert!(fast["power"].as_f64().is_some(), "{fast}");
    // ... and the registry holds the default group's values (energy, frequency, ct_ratio) and
    // the slow group's strings as info.
    let meter = thing_until(&app, "meter-1", |t| {
        t["reported"]["frequency"]["value"].is_number() && t["info"]["serial"].is_string()
    })
    .await;
    let frequency = meter["reported"]["frequency"]["value"].as_f64().unwrap();
    assert!((49.0..51.0).contains(&frequency), "{meter}");
    assert_eq!(meter["info"]["serial"], "MTR-1", "{meter}");
    assert_eq!(meter["online"], true, "{meter}");
    // An f32 register arrives in its shortest form (230.1, not 230.10000610351562).
    let at_rest = thing_until(&app, "meter-1", |t| {
        t["reported"]["voltage"]["value"].is_number()
    })
    .await;
    let reported = at_rest["reported"]["voltage"]["value"].as_f64().unwrap();
    let as_f32 = reported as f32;
    assert_eq!(
        reported.to_string(),
        as_f32.to_string(),
        "{reported} is not an f32's shortest form"
    );

    thing_until(&app, "drive-1", |t| t["online"] == true).await;
    // A holding register, written and read back; the call settles on the read-back.
    let r = call(
        &app,
        "brume.things.set",
        json!({"thing": "drive-1", "property": "speed_setpoint", "value": 1500}),
    )
    .await;
    assert_eq!(r["settled"]["speed_setpoint"]["value"], 1500, "{r}");
    assert_eq!(sim.register(2, Table::Holding, 10), Some(1500));
    // A scaled register: 2.5 s is 25 tenths.
    let r = call(
        &app,
        "brume.things.set",
        json!({"thing": "drive-1", "property": "acceleration", "value": 2.5}),
    )
    .await;
    assert_eq!(r["settled"]["acceleration"]["value"], 2.5, "{r}");
    assert_eq!(sim.register(2, Table::Holding, 11), Some(25));
    // A coil: the drive runs and ramps towards its setpoint.
    call(
        &app,
        "brume.things.set",
        json!({"thing": "drive-1", "property": "run", "value": true}),
    )
    .await;
    assert_eq!(sim.register(2, Table::Coil, 0), Some(1));
    state_until(&mut states, "drive-1", |v| {
        v["actual_speed"].as_u64().is_some_and(|s| s > 0)
    })
    .await;
    // The status word's bit 0, a bit field of a holding register.
    thing_until(&app, "drive-1", |t| {
        t["reported"]["running"]["value"] == true
    })
    .await;

    // An action writes its coil; the meter zeroes its energy counter.
    until("energy above zero", || {
        sim.registers(1, Table::Input, 6, 2)
            .is_some_and(|r| r != [0, 0])
    })
    .await;
    let before = sim.registers(1, Table::Input, 6, 2).unwrap();
    let r = call(&app, "brume.thing.meter-1.action.reset_energy", json!({})).await;
    assert_eq!(r, Json::Null);
    let after = sim.registers(1, Table::Input, 6, 2).unwrap();
    let wh = |r: &[u16]| (u32::from(r[0]) << 16) | u32::from(r[1]);
    assert!(wh(&after) < wh(&before), "{before:?} -> {after:?}");

    // A value out of the type's range is refused by the hub before any write.
    match app
        .call(
            "brume.things.set",
            vec![],
            kwargs(json!({"thing": "drive-1", "property": "speed_setpoint", "value": 9000})),
        )
        .await
    {
        Err(ClientError::Wamp(e)) => assert_eq!(e.uri, "wamp.error.invalid_argument", "{e:?}"),
        other => panic!("an out-of-range set passed: {other:?}"),
    }
    assert_eq!(sim.register(2, Table::Holding, 10), Some(1500));

    let s = stats(&hub, "switchboard");
    assert_eq!(s.devices_online, 2, "{s:#?}");
    assert_eq!(
        (s.timeouts, s.transport_errors, s.protocol_errors),
        (0, 0, 0),
        "{s:#?}"
    );
    assert!(s.exceptions.iter().all(|(_, n)| *n == 0), "{s:#?}");
    assert_eq!(s.writes, 4, "{s:#?}");
    // Merged reads: the meter's fast group (voltage, current, power: six registers) is one
    // request of function 4.
    let meter_reads = sim.stats(1).unwrap();
    assert!(
        meter_reads.by_function.get(&4).copied().unwrap_or(0) >= 2,
        "{meter_reads:?}"
    );
    assert!(
        sim.requests().iter().any(|r| r.unit == 1
            && r.function == 4
            && r.address == Some(0)
            && r.quantity == Some(6)),
        "the fast group was not read in one request"
    );
    shutdown.cancel();
}

/// The TCP server is unplugged: its devices go offline (an app sees `on_offline`), a set made
/// meanwhile stays pending, and once the server is back the devices come online and the pending
/// value is written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_modbus_server_unplugged_and_back_is_followed_and_gets_pending_values() {
    let shutdown = CancellationToken::new();
    let sim = SimBus::new();
    sim.add(1, DeviceKind::Drive).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = sim.serve_tcp(listener, shutdown.clone()).unwrap();
    let hub = TestHub::start_with(|c| {
        // By name: resolved at each connection attempt.
        c.modbus.tcp.push(tcp_bus(
            "drives",
            format!("localhost:{}", server.local_addr().port()),
            vec![device(1, "drive-7", "modbus_drive")],
        ));
    })
    .await;
    let app = hub.client("rawsocket", Serializer::MsgPack).await;
    let mut online = app
        .subscribe("brume.things.on_online", Dict::new())
        .await
        .unwrap();
    let mut offline = app
        .subscribe("brume.things.on_offline", Dict::new())
        .await
        .unwrap();
    let mut states = subscribe_states(&app).await;
    thing_until(&app, "drive-7", |t| t["online"] == true).await;

    server.unplug().await;
    assert_eq!(
        event(&mut offline, "brume.things.on_offline").await["thing"],
        "drive-7"
    );
    match app
        .call(
            "brume.things.set",
            vec![],
            kwargs(json!({"thing": "drive-7", "property": "speed_setpoint", "value": 900})),
        )
        .await
    {
        Err(ClientError::Wamp(e)) => assert_eq!(e.uri, "brume.error.thing_offline", "{e:?}"),
        other => panic!("a set to an offline drive passed: {other:?}"),
    }

    server.plug().await.unwrap();
    assert_eq!(
        event(&mut online, "brume.things.on_online").await["thing"],
        "drive-7"
    );
    until("the pending setpoint written", || {
        sim.register(1, Table::Holding, 10) == Some(900)
    })
    .await;
    state_until(&mut states, "drive-7", |v| v["speed_setpoint"] == 900).await;
    let s = stats(&hub, "drives");
    assert!(s.connects >= 2, "{s:#?}");
    assert!(s.connect_failures + s.transport_errors >= 1, "{s:#?}");
    shutdown.cancel();
}

/// Ten devices on one RTU line, one of them dead: the nine others are polled and online, the dead
/// one is offline and backed off (asked a handful of times, not at every poll), the line never
/// carries two requests at once and keeps the inter-frame gap, and the dead device is found
/// again when it comes back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_rtu_line_of_ten_devices_with_one_dead() {
    let shutdown = CancellationToken::new();
    let sim = SimBus::new();
    for unit in 1..=10u8 {
        let kind = if unit % 2 == 0 {
            DeviceKind::Drive
        } else {
            DeviceKind::Meter
        };
        sim.add(unit, kind).unwrap();
    }
    sim.set_alive(7, false);
    let dir = tempfile::tempdir().unwrap();
    let path = sim
        .serve_rtu_pty(
            RtuOptions {
                link: Some(dir.path().join("ttyRS485")),
                ..RtuOptions::default()
            },
            shutdown.clone(),
        )
        .unwrap();
    let hub = TestHub::start_with(|c| {
        let mut bus: RtuBusConfig = toml::from_str(&format!(
            "name = 'rs485'\npath = '{}'\nbaud_rate = 115200\nparity = 'none'\ntimeout_ms = 100\n\
             frame_gap_ms = 20\noffline_after_failures = 2\nbackoff_min_ms = 300\nbackoff_max_ms = 1200\n",
            path.display()
        ))
        .unwrap();
        bus.devices = (1..=10u8)
            .map(|u| {
                let ty = if u % 2 == 0 { "modbus_drive" } else { "modbus_meter" };
                device(u, &format!("node-{u}"), ty)
            })
            .collect();
        c.modbus.rtu.push(bus);
    })
    .await;
    let app = hub.client("websocket", Serializer::Json).await;
    until("nine devices online", || {
        stats(&hub, "rs485").devices_online == 9
    })
    .await;
    let listed = call(&app, "brume.things.list", json!({"online": true})).await;
    let names: Vec<&str> = listed
        .as_array()
        .expect("a list")
        .iter()
        .filter_map(|t| t["thing"].as_str())
        .collect();
    assert_eq!(names.len(), 9, "{listed}");
    assert!(!names.contains(&"node-7"), "{listed}");

    // Three seconds of polling: every live device keeps being read; the dead one is only tried
    // again after its back-off (300, 600, 1200 ms...).
    sim.reset_stats();
    tokio::time::sleep(Duration::from_secs(3)).await;
    for unit in (1..=10u8).filter(|u| *u != 7) {
        let s = sim.stats(unit).unwrap();
        assert!(s.answered >= 2, "unit {unit}: {s:?}");
    }
    let dead = sim.stats(7).unwrap();
    assert!(
        dead.requests <= 6,
        "the dead unit is asked too often: {dead:?}"
    );
    let line = sim.line_stats();
    assert_eq!(line.max_in_flight, 1, "{line:?}");
    assert_eq!(line.overlaps, 0, "{line:?}");
    // The configured 20 ms of silence between frames (less what scheduling takes off the
    // simulator's own measurement).
    assert!(
        line.min_gap.is_some_and(|g| g >= Duration::from_millis(15)),
        "{line:?}"
    );

    sim.set_alive(7, true);
    until("the tenth device back", || {
        stats(&hub, "rs485").devices_online == 10
    })
    .await;
    let s = stats(&hub, "rs485");
    assert!(s.timeouts >= 2, "{s:#?}");
    shutdown.cancel();
}

/// The hub's Modbus gateway against a third-party server: pymodbus serving the meter map with
/// known values. Values arrive exactly (f32 in shortest form, scaled integers rounded to their
/// scale), strings as info, a set is written to pymodbus's holding register and confirmed, and
/// an action writes pymodbus's coil.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_polls_and_writes_a_pymodbus_server() {
    use tokio::io::AsyncBufReadExt;
    let python = tokio::task::spawn_blocking(tests::peers::python)
        .await
        .expect("install task");
    let script = tests::peers::workspace_root().join("tests/modbus/pymodbus_server.py");
    let mut server = tokio::process::Command::new(python)
        .arg(script)
        .arg("0")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn python");
    let mut lines = tokio::io::BufReader::new(server.stdout.take().unwrap()).lines();
    let ready = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
        .await
        .expect("pymodbus ready in time")
        .unwrap()
        .expect("a line");
    let port: u16 = ready
        .strip_prefix("ready ")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("not a ready line: {ready}"));
    let hub = TestHub::start_with(|c| {
        c.modbus.tcp.push(tcp_bus(
            "pymodbus",
            std::net::SocketAddr::from(([127, 0, 0, 1], port)),
            vec![device(1, "pym-meter", "modbus_meter")],
        ));
    })
    .await;
    let app = hub.client("websocket", Serializer::MsgPack).await;
    let t = thing_until(&app, "pym-meter", |t| {
        t["reported"]["voltage"]["value"].is_number()
            && t["reported"]["energy"]["value"].is_number()
            && t["info"]["serial"].is_string()
    })
    .await;
    let value = |p: &str| t["reported"][p]["value"].clone();
    assert_eq!(value("voltage"), 231.5, "{t}");
    assert_eq!(value("current"), 4.25, "{t}");
    assert_eq!(value("power"), 983.875, "{t}");
    assert_eq!(value("energy"), 123.456, "{t}");
    assert_eq!(value("frequency"), 49.98, "{t}");
    assert_eq!(value("ct_ratio"), 1, "{t}");
    assert_eq!(t["info"]["serial"], "PYM-1", "{t}");
    assert_eq!(t["info"]["firmware"], "3.11", "{t}");

    let r = call(
        &app,
        "brume.things.set",
        json!({"thing": "pym-meter", "property": "ct_ratio", "value": 40}),
    )
    .await;
    assert_eq!(r["settled"]["ct_ratio"]["value"], 40, "{r}");
    let r = call(&app, "brume.thing.pym-meter.action.reset_energy", json!({})).await;
    assert_eq!(r, Json::Null);
    thing_until(&app, "pym-meter", |t| {
        t["reported"]["energy"]["value"] == 0.0
    })
    .await;
    let s = stats(&hub, "pymodbus");
    assert_eq!(
        (s.timeouts, s.protocol_errors, s.writes_failed),
        (0, 0, 0),
        "{s:#?}"
    );
}

/// A thing type whose map names a register the device does not have: the merged read that
/// covers it gets an illegal-address exception, the gateway then reads each property alone, so
/// its neighbour still arrives, and the bad property is listed as failing, with its exception, in
/// the bus's counters and in `/metrics`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_register_the_device_lacks_fails_alone_and_is_reported() {
    const TYPE: &str = r#"
id = "meter_with_a_gap"
title = "Meter whose map names a register the device lacks"
version = "1"

[properties.voltage]
type = "number"

[properties.bogus]
type = "integer"

[bindings.modbus]
max_gap = 60
poll_ms = 200

[bindings.modbus.properties]
voltage = { table = "input", address = 0, type = "f32" }
bogus = { table = "input", address = 50, type = "u16" }
"#;
    let shutdown = CancellationToken::new();
    let sim = SimBus::new();
    sim.add(1, DeviceKind::Meter).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = sim.serve_tcp(listener, shutdown.clone()).unwrap();
    let hub = TestHub::start_with(|c| {
        let types = c.hub.data_dir.join("types");
        std::fs::create_dir_all(&types).unwrap();
        std::fs::write(types.join("meter_with_a_gap.toml"), TYPE).unwrap();
        c.things.types_dir = Some(types);
        c.modbus.tcp.push(tcp_bus(
            "gappy",
            server.local_addr(),
            vec![device(1, "gappy-1", "meter_with_a_gap")],
        ));
    })
    .await;
    let app = hub.client("websocket", Serializer::Json).await;
    let t = thing_until(&app, "gappy-1", |t| {
        t["reported"]["voltage"]["value"].is_number()
    })
    .await;
    assert!(t["reported"]["bogus"].is_null(), "{t}");
    until("the fault listed", || {
        stats(&hub, "gappy")
            .faults
            .iter()
            .any(|f| f.property == "bogus")
    })
    .await;
    let s = stats(&hub, "gappy");
    assert_eq!(s.faults.len(), 1, "{s:#?}");
    assert_eq!(s.faults[0].thing, "gappy-1");
    assert_eq!(s.faults[0].error, "illegal_data_address");
    let illegal = s
        .exceptions
        .iter()
        .find(|(n, _)| *n == "illegal_data_address")
        .map(|(_, n)| *n);
    assert!(illegal.is_some_and(|n| n >= 2), "{s:#?}");
    // The merged read (0..=50) was tried once, then each property alone.
    let merged = sim
        .requests()
        .iter()
        .filter(|r| r.function == 4 && r.address == Some(0) && r.quantity == Some(51))
        .count();
    assert_eq!(merged, 1, "the merged read is not retried once split");
    let metrics = scrape_metrics(&hub).await;
    assert!(
        metrics.contains("brume_modbus_properties_failing{bus=\"gappy\"} 1"),
        "{metrics}"
    );
    shutdown.cancel();
}

/// `/metrics` of a test hub, over plain HTTP.
async fn scrape_metrics(hub: &TestHub) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = hub.hub.local_addr("http").expect("HTTP listener");
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut body = String::new();
    s.read_to_string(&mut body).await.unwrap();
    body
}

/// An RTU line's adapter unplugged and plugged back (the pseudo-terminal closed, then a new one
/// behind the same `/dev/serial/by-id`-style link): the devices go offline, the hub reopens the
/// port with back-off and they come back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_rtu_adapter_unplugged_and_back() {
    let sim = SimBus::new();
    sim.add(3, DeviceKind::Meter).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("ttyUSB-by-id");
    let options = || RtuOptions {
        link: Some(link.clone()),
        ..RtuOptions::default()
    };
    let first = CancellationToken::new();
    sim.serve_rtu_pty(options(), first.clone()).unwrap();
    let hub = TestHub::start_with(|c| {
        let mut bus: RtuBusConfig = toml::from_str(&format!(
            "name = 'line'\npath = '{}'\nbaud_rate = 115200\ntimeout_ms = 100\n\
             offline_after_failures = 2\nbackoff_min_ms = 100\nbackoff_max_ms = 400\n",
            link.display()
        ))
        .unwrap();
        bus.devices = vec![device(3, "meter-3", "modbus_meter")];
        c.modbus.rtu.push(bus);
    })
    .await;
    let app = hub.client("websocket", Serializer::Json).await;
    let mut offline = app
        .subscribe("brume.things.on_offline", Dict::new())
        .await
        .unwrap();
    thing_until(&app, "meter-3", |t| t["online"] == true).await;

    first.cancel();
    assert_eq!(
        event(&mut offline, "brume.things.on_offline").await["thing"],
        "meter-3"
    );
    until("a failed reopen", || {
        stats(&hub, "line").connect_failures >= 1
    })
    .await;

    let second = CancellationToken::new();
    sim.serve_rtu_pty(options(), second.clone()).unwrap();
    thing_until(&app, "meter-3", |t| t["online"] == true).await;
    let s = stats(&hub, "line");
    assert!(s.connects >= 2, "{s:#?}");
    assert_eq!(s.devices_online, 1, "{s:#?}");
    second.cancel();
}
