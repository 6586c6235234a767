//! Brume's simulated Modbus devices (`firmware_sim::modbus::SimBus`) against pymodbus, a
//! third-party Modbus stack: pymodbus as a client over Modbus TCP and over Modbus RTU on the
//! simulator's pseudo-terminal (`tests/modbus/pymodbus_client.py`), and pymodbus as a server of the
//! meter map (`tests/modbus/pymodbus_server.py`, which the gateway's tests use), checked here with
//! a plain Modbus TCP client.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use firmware_sim::modbus::{DeviceKind, Outcome, RtuOptions, SimBus, Table, Transport};
use serde_json::{Value, json};
use tests::peers;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::Command;
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;

/// Bound on a pymodbus run (the first run also installs the pinned Python peers).
const WAIT: Duration = Duration::from_secs(60);

fn script(name: &str) -> PathBuf {
    peers::workspace_root()
        .join("tests")
        .join("modbus")
        .join(name)
}

async fn python() -> PathBuf {
    tokio::task::spawn_blocking(peers::python)
        .await
        .expect("install task")
}

/// Runs `pymodbus_client.py` with `python` and `args`; returns the JSON object it prints.
async fn pymodbus_client(python: PathBuf, args: &[&str]) -> Value {
    let child = Command::new(python)
        .arg(script("pymodbus_client.py"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn python");
    let out = timeout(WAIT, child.wait_with_output())
        .await
        .expect("pymodbus_client.py finishes in time")
        .expect("pymodbus_client.py ran");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "pymodbus_client.py failed ({}):\n--- stdout\n{stdout}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let line = stdout.lines().last().expect("a result line");
    serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"))
}

fn bus() -> SimBus {
    tests::init_logging();
    let bus = SimBus::new();
    bus.add(1, DeviceKind::Meter).unwrap();
    bus.add(2, DeviceKind::Drive).unwrap();
    bus
}

/// What pymodbus saw of the meter and the drive, and what the bus saw of pymodbus: the same over
/// either transport.
fn check(seen: &Value, bus: &SimBus) {
    let num = |k: &str| seen[k].as_f64().unwrap_or_else(|| panic!("{k} in {seen}"));
    let (v, i, p) = (num("voltage"), num("current"), num("power"));
    assert!((225.0..235.0).contains(&v), "voltage {v}");
    assert!((3.5..5.0).contains(&i), "current {i}");
    assert!((p - v * i).abs() < 0.01 * p, "power {p} is not {v} * {i}");
    let energy = num("energy");
    assert!((13_345.0..13_445.0).contains(&energy), "energy {energy} Wh");
    assert!((4997.0..=5003.0).contains(&num("frequency")));
    assert_eq!(seen["serial"], json!("MTR-1"));
    assert_eq!(seen["ct_ratio"], json!(1));

    assert_eq!(seen["setpoint_after_fc6"], json!(1234));
    assert_eq!(seen["setpoint_and_accel"], json!([1500, 30]));
    assert_eq!(seen["run"], json!(true));
    assert_eq!(seen["status_ready"], json!(true));
    assert_eq!(
        bus.registers(2, Table::Holding, 10, 2),
        Some(vec![1500, 30]),
        "the writes landed"
    );
    assert_eq!(bus.register(2, Table::Coil, 0), Some(1));

    assert_eq!(seen["exc_unmapped"], json!(2), "{seen}");
    assert_eq!(seen["exc_past_end"], json!(2));
    assert_eq!(seen["exc_range"], json!(3));
    assert_eq!(seen["exc_read_only"], json!(2));
    assert_eq!(seen["exc_function"], json!(1));

    let meter = bus.stats(1).unwrap();
    assert_eq!(
        (meter.requests, meter.answered, meter.exceptions),
        (6, 3, 3),
        "{meter:?}"
    );
    assert_eq!(meter.by_function.get(&4), Some(&3));
    let drive = bus.stats(2).unwrap();
    assert_eq!(
        (drive.requests, drive.answered, drive.exceptions),
        (10, 8, 2),
        "{drive:?}"
    );
    for function in [0x05, 0x10, 0x16] {
        assert_eq!(drive.by_function.get(&function), Some(&1), "{drive:?}");
    }
    let log = bus.requests();
    assert!(log.iter().any(|r| r.unit == 2
        && r.function == 0x10
        && r.address == Some(10)
        && r.quantity == Some(2)
        && r.outcome == Outcome::Answered));
}

#[tokio::test]
async fn pymodbus_client_over_tcp() {
    // Installed first: the devices' values move with the clock from their creation on.
    let python = python().await;
    let bus = bus();
    let shutdown = CancellationToken::new();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = bus.serve_tcp(listener, shutdown.clone()).unwrap();
    let port = server.local_addr().port().to_string();

    let seen = pymodbus_client(python, &["tcp", &port]).await;
    check(&seen, &bus);
    assert_eq!(
        seen["unknown_unit"],
        json!(0x0B),
        "gateway target failed to respond"
    );
    let log = bus.requests();
    assert!(log.iter().all(|r| r.transport == Transport::Tcp));
    assert!(
        log.iter()
            .any(|r| r.unit == 9 && r.outcome == Outcome::Exception(0x0B))
    );
    shutdown.cancel();
}

#[tokio::test]
async fn pymodbus_client_over_rtu_on_the_pty() {
    let python = python().await;
    let bus = bus();
    let shutdown = CancellationToken::new();
    let path = bus
        .serve_rtu_pty(RtuOptions::default(), shutdown.clone())
        .unwrap();

    let seen = pymodbus_client(python, &["rtu", path.to_str().unwrap()]).await;
    check(&seen, &bus);
    assert_eq!(
        seen["unknown_unit"],
        json!("no answer"),
        "silence on a line"
    );
    assert!(bus.requests().iter().all(|r| r.transport == Transport::Rtu));
    let line = bus.line_stats();
    assert_eq!(line.frames, 17, "{line:?}");
    assert_eq!(line.bad_frames, 0, "{line:?}");
    assert_eq!(
        (line.max_in_flight, line.overlaps),
        (1, 0),
        "pymodbus waits for each answer: {line:?}"
    );
    assert!(line.min_gap.is_some());
    shutdown.cancel();
}

/// A bare Modbus TCP client: one request at a time, transaction ids checked.
struct Mbap {
    stream: TcpStream,
    transaction: u16,
}

impl Mbap {
    async fn call(&mut self, unit: u8, pdu: &[u8]) -> Option<Vec<u8>> {
        self.transaction += 1;
        let mut frame = self.transaction.to_be_bytes().to_vec();
        frame.extend_from_slice(&[0, 0]);
        frame.extend_from_slice(&u16::try_from(pdu.len() + 1).unwrap().to_be_bytes());
        frame.push(unit);
        frame.extend_from_slice(pdu);
        self.stream.write_all(&frame).await.unwrap();
        let mut header = [0u8; 7];
        timeout(
            Duration::from_millis(500),
            self.stream.read_exact(&mut header),
        )
        .await
        .ok()?
        .unwrap();
        assert_eq!(header[..2], self.transaction.to_be_bytes());
        assert_eq!(header[6], unit);
        let len = u16::from_be_bytes([header[4], header[5]]);
        let mut answer = vec![0u8; usize::from(len - 1)];
        self.stream.read_exact(&mut answer).await.unwrap();
        Some(answer)
    }

    async fn registers(&mut self, function: u8, address: u16, count: u16) -> Vec<u16> {
        let mut pdu = vec![function];
        pdu.extend_from_slice(&address.to_be_bytes());
        pdu.extend_from_slice(&count.to_be_bytes());
        let answer = self.call(1, &pdu).await.expect("an answer");
        assert_eq!(answer[..2], [function, u8::try_from(count * 2).unwrap()]);
        answer[2..]
            .chunks(2)
            .map(|w| u16::from_be_bytes([w[0], w[1]]))
            .collect()
    }
}

fn f32_of(words: &[u16]) -> f32 {
    f32::from_bits((u32::from(words[0]) << 16) | u32::from(words[1]))
}

#[tokio::test]
async fn pymodbus_server_serves_the_meter_map() {
    let mut server = Command::new(python().await)
        .arg(script("pymodbus_server.py"))
        .arg("0")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn python");
    let mut lines = tokio::io::BufReader::new(server.stdout.take().unwrap()).lines();
    let ready = timeout(WAIT, lines.next_line())
        .await
        .expect("ready in time")
        .unwrap()
        .expect("a line");
    let port: u16 = ready
        .strip_prefix("ready ")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("not a ready line: {ready}"));
    let mut c = Mbap {
        stream: TcpStream::connect(("127.0.0.1", port)).await.unwrap(),
        transaction: 0,
    };

    let input = c.registers(0x04, 0, 9).await;
    assert_eq!(f32_of(&input[0..2]), 231.5);
    assert_eq!(f32_of(&input[2..4]), 4.25);
    assert_eq!(f32_of(&input[4..6]), 983.875);
    assert_eq!(input[6..8], [1, 57_920], "123456 Wh, big word order");
    assert_eq!(input[8], 4998);
    let serial = c.registers(0x03, 200, 8).await;
    let bytes: Vec<u8> = serial.iter().flat_map(|w| w.to_be_bytes()).collect();
    assert_eq!(
        String::from_utf8_lossy(&bytes).trim_end_matches('\0'),
        "PYM-1"
    );
    assert_eq!(c.registers(0x03, 100, 1).await, [1]);

    // Holding registers are writable; the map's edges answer address errors.
    assert_eq!(
        c.call(1, &[0x06, 0, 100, 0, 5]).await,
        Some(vec![0x06, 0, 100, 0, 5])
    );
    assert_eq!(c.registers(0x03, 100, 1).await, [5]);
    assert_eq!(c.call(1, &[0x04, 0, 9, 0, 1]).await, Some(vec![0x84, 0x02]));
    assert_eq!(
        c.call(1, &[0x06, 0, 101, 0, 5]).await,
        Some(vec![0x86, 0x02])
    );

    // The reset coil zeroes the energy; its answer echoes the write.
    assert_eq!(
        c.call(1, &[0x05, 0, 10, 0xFF, 0]).await,
        Some(vec![0x05, 0, 10, 0xFF, 0])
    );
    assert_eq!(c.registers(0x04, 6, 2).await, [0, 0]);
    assert_eq!(
        c.call(1, &[0x01, 0, 10, 0, 1]).await,
        Some(vec![0x01, 1, 0])
    );

    // Only unit 1 exists.
    assert_eq!(c.call(2, &[0x04, 0, 0, 0, 1]).await, None);
    server.kill().await.unwrap();
}
