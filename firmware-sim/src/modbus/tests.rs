//! The bus and its transports, driven by tokio-modbus's clients.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_modbus::client::Context;
use tokio_modbus::client::{rtu as rtu_client, tcp as tcp_client};
use tokio_modbus::prelude::{Reader as _, SlaveContext as _, Writer as _};
use tokio_modbus::{ExceptionCode, Request, Response, Slave, SlaveRequest};
use tokio_util::sync::CancellationToken;

use super::device::{drive, meter};
use super::rtu::frame;
use super::*;

/// How long a test waits for an answer that should come.
const ANSWER: Duration = Duration::from_secs(5);
/// How long a test waits to be sure an answer does not come.
const NO_ANSWER: Duration = Duration::from_millis(300);

fn bus(clock_runs: bool) -> SimBus {
    let bus = if clock_runs {
        SimBus::new()
    } else {
        SimBus::manual_clock()
    };
    bus.add(1, DeviceKind::Meter).unwrap();
    bus.add(2, DeviceKind::Drive).unwrap();
    bus
}

#[tokio::test]
async fn dispatch_counts_logs_and_handles_unknown_and_dead_units() {
    let bus = bus(false);
    assert_eq!(bus.add(0, DeviceKind::Meter), Err(BusError::BadUnit(0)));
    assert_eq!(bus.add(248, DeviceKind::Meter), Err(BusError::BadUnit(248)));
    assert_eq!(bus.add(1, DeviceKind::Drive), Err(BusError::Taken(1)));
    assert_eq!(
        bus.units(),
        [(1, DeviceKind::Meter), (2, DeviceKind::Drive)]
    );

    let read = Request::ReadInputRegisters(meter::VOLTAGE, 9);
    let Ok(Some(Response::ReadInputRegisters(words))) = bus.request(1, &read) else {
        panic!("the meter answers");
    };
    assert_eq!(words.len(), 9);
    assert_eq!(
        bus.request(9, &read),
        Err(ExceptionCode::GatewayTargetDevice)
    );
    assert!(bus.set_alive(1, false));
    assert!(!bus.is_alive(1));
    assert_eq!(bus.request(1, &read), Ok(None), "a dead unit never answers");
    assert!(bus.set_alive(1, true));
    assert!(!bus.set_alive(7, true));
    assert_eq!(
        bus.request(1, &Request::ReadInputRegisters(9, 1)),
        Err(ExceptionCode::IllegalDataAddress)
    );

    let stats = bus.stats(1).unwrap();
    assert_eq!(
        (
            stats.requests,
            stats.answered,
            stats.exceptions,
            stats.ignored
        ),
        (3, 1, 1, 1)
    );
    assert_eq!(stats.by_function.get(&4), Some(&3));
    let log = bus.requests();
    let outcomes: Vec<(u8, Option<u16>, Option<u16>, Outcome)> = log
        .iter()
        .map(|r| (r.unit, r.address, r.quantity, r.outcome))
        .collect();
    assert_eq!(
        outcomes,
        [
            (1, Some(0), Some(9), Outcome::Answered),
            (9, Some(0), Some(9), Outcome::Exception(0x0B)),
            (1, Some(0), Some(9), Outcome::Silent),
            (1, Some(9), Some(1), Outcome::Exception(0x02)),
        ]
    );
    assert!(log.iter().all(|r| r.transport == Transport::Direct));

    // Broadcast: writes reach every live device that maps them, nobody answers.
    assert_eq!(
        bus.request(0, &Request::WriteSingleRegister(drive::SPEED_SETPOINT, 500)),
        Ok(None)
    );
    assert_eq!(
        bus.register(2, Table::Holding, drive::SPEED_SETPOINT),
        Some(500)
    );

    // Test controls.
    assert!(bus.set_register(1, Table::Holding, meter::CT_RATIO, 5));
    assert_eq!(
        bus.registers(1, Table::Holding, meter::CT_RATIO, 1),
        Some(vec![5])
    );
    assert!(!bus.set_register(1, Table::Holding, 7, 5));
    assert!(bus.trip(2));
    assert_eq!(bus.register(2, Table::Discrete, drive::FAULT), Some(1));
    assert!(!bus.trip(1));
    let before = bus.registers(1, Table::Input, meter::ENERGY, 2);
    bus.advance(Duration::from_secs(600));
    assert_ne!(bus.registers(1, Table::Input, meter::ENERGY, 2), before);
    bus.reset_stats();
    assert_eq!(bus.stats(1), Some(UnitStats::default()));
    assert!(bus.requests().is_empty());

    // As a tokio-modbus service.
    use tokio_modbus::server::Service as _;
    let answer = bus
        .call(SlaveRequest {
            slave: 2,
            request: Request::ReadHoldingRegisters(drive::SPEED_SETPOINT, 1),
        })
        .await;
    assert_eq!(answer, Ok(Some(Response::ReadHoldingRegisters(vec![500]))));
}

#[test]
fn malformed_pdus_get_exceptions() {
    let bus = bus(false);
    let answer = |pdu: &[u8]| bus.answer(1, Transport::Tcp, pdu).pdu;
    // FC 16 whose byte count disagrees with its quantity.
    assert_eq!(
        answer(&[0x10, 0, 100, 0, 1, 4, 0, 1, 0, 2]),
        Some(vec![0x90, 0x03])
    );
    // A function the meter does not implement.
    assert_eq!(answer(&[0x41, 1, 2]), Some(vec![0xC1, 0x01]));
    assert_eq!(answer(&[0x2B, 0x0E, 0x01, 0x00]), Some(vec![0xAB, 0x01]));
    assert_eq!(answer(&[0x83, 0x02]), None);
    assert_eq!(
        answer(&[0x03, 0, 100, 0, 1]),
        Some(vec![0x03, 0x02, 0x00, 0x01])
    );
    // A dead unit does not even answer malformed requests.
    bus.set_alive(1, false);
    assert_eq!(answer(&[0x41, 1, 2]), None);
}

fn f32_of(words: &[u16]) -> f32 {
    f32::from_bits((u32::from(words[0]) << 16) | u32::from(words[1]))
}

/// Waits until `done` holds, for up to [`ANSWER`].
async fn eventually(what: &str, done: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + ANSWER;
    while !done() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "not in time: {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn timed<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(ANSWER, f)
        .await
        .expect("an answer in time")
}

/// Reads the meter, writes the drive and reads it back, gets an address exception: the same on
/// either transport.
async fn exercise(ctx: &mut Context, bus: &SimBus) {
    ctx.set_slave(Slave(1));
    let words = timed(ctx.read_input_registers(meter::VOLTAGE, 9))
        .await
        .unwrap()
        .unwrap();
    let voltage = f32_of(&words[0..2]);
    assert!((225.0..235.0).contains(&voltage), "voltage {voltage}");
    let serial = timed(ctx.read_holding_registers(meter::SERIAL, meter::SERIAL_COUNT))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(serial[..3], [0x4D54, 0x522D, 0x3100], "MTR-1");
    assert_eq!(
        timed(ctx.read_input_registers(9, 1)).await.unwrap(),
        Err(ExceptionCode::IllegalDataAddress)
    );
    assert_eq!(
        timed(ctx.read_holding_registers(0, 126)).await.unwrap(),
        Err(ExceptionCode::IllegalDataValue)
    );

    ctx.set_slave(Slave(2));
    timed(ctx.write_single_register(drive::SPEED_SETPOINT, 1500))
        .await
        .unwrap()
        .unwrap();
    timed(ctx.write_multiple_registers(drive::SPEED_SETPOINT, &[1600, 20]))
        .await
        .unwrap()
        .unwrap();
    timed(ctx.masked_write_register(drive::SPEED_SETPOINT, 0xFFFF, 0))
        .await
        .unwrap()
        .unwrap();
    timed(ctx.write_single_coil(drive::RUN, true))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        timed(ctx.read_holding_registers(drive::SPEED_SETPOINT, 2))
            .await
            .unwrap(),
        Ok(vec![1600, 20])
    );
    assert_eq!(
        timed(ctx.read_coils(drive::RUN, 1)).await.unwrap(),
        Ok(vec![true])
    );
    assert_eq!(
        bus.registers(2, Table::Holding, drive::SPEED_SETPOINT, 2),
        Some(vec![1600, 20])
    );
    assert_eq!(bus.register(2, Table::Coil, drive::RUN), Some(1));
    assert_eq!(
        timed(ctx.write_single_register(drive::SPEED_SETPOINT, 3001))
            .await
            .unwrap(),
        Err(ExceptionCode::IllegalDataValue)
    );
}

#[tokio::test]
async fn tcp_serves_units_and_can_be_unplugged() {
    let bus = bus(true);
    let shutdown = CancellationToken::new();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = bus.serve_tcp(listener, shutdown.clone()).unwrap();
    let addr = server.local_addr();
    let mut ctx = tcp_client::connect_slave(addr, Slave(1)).await.unwrap();
    exercise(&mut ctx, &bus).await;
    assert_eq!(server.connections(), 1);

    // An unknown unit: the gateway's exception.
    ctx.set_slave(Slave(9));
    assert_eq!(
        timed(ctx.read_input_registers(0, 1)).await.unwrap(),
        Err(ExceptionCode::GatewayTargetDevice)
    );
    // A dead unit: nothing at all.
    bus.set_alive(1, false);
    let mut other = tcp_client::connect_slave(addr, Slave(1)).await.unwrap();
    assert!(
        tokio::time::timeout(NO_ANSWER, other.read_input_registers(0, 1))
            .await
            .is_err()
    );
    bus.set_alive(1, true);
    let stats = bus.stats(1).unwrap();
    assert_eq!(stats.ignored, 1);
    assert!(bus.requests().iter().all(|r| r.transport == Transport::Tcp));

    // Unplugged: open connections close, new ones are refused.
    server.unplug().await;
    assert!(!server.is_plugged());
    assert_eq!(server.connections(), 0);
    ctx.set_slave(Slave(1));
    assert!(
        timed(ctx.read_input_registers(0, 1)).await.is_err(),
        "the connection is gone"
    );
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
    // Plugged back on the same port.
    server.plug().await.unwrap();
    assert!(server.is_plugged());
    let mut ctx = tcp_client::connect_slave(addr, Slave(1)).await.unwrap();
    assert_eq!(
        timed(ctx.read_holding_registers(meter::CT_RATIO, 1))
            .await
            .unwrap(),
        Ok(vec![1])
    );

    shutdown.cancel();
    let deadline = tokio::time::Instant::now() + ANSWER;
    while tokio::net::TcpStream::connect(addr).await.is_ok() {
        assert!(tokio::time::Instant::now() < deadline, "still listening");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn open(path: &std::path::Path) -> tokio_serial::SerialStream {
    tokio_serial::SerialStream::open(&tokio_serial::new(path.to_string_lossy(), 19_200))
        .unwrap_or_else(|e| panic!("open {}: {e}", path.display()))
}

#[tokio::test]
async fn rtu_on_a_pty_answers_known_live_units_only() {
    let bus = bus(true);
    let shutdown = CancellationToken::new();
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("ttyMODBUS");
    let options = RtuOptions {
        link: Some(link.clone()),
        ..RtuOptions::default()
    };
    let path = bus.serve_rtu_pty(options, shutdown.clone()).unwrap();
    assert_eq!(path, link);
    assert!(std::fs::read_link(&link).unwrap().starts_with("/dev/pts"));

    let mut ctx = rtu_client::attach_slave(open(&path), Slave(1));
    exercise(&mut ctx, &bus).await;
    let line = bus.line_stats();
    assert_eq!(line.max_in_flight, 1, "{line:?}");
    assert_eq!(line.overlaps, 0);
    assert_eq!(line.bad_frames, 0);
    assert_eq!(line.frames, 11);
    assert!(line.min_gap.is_some() && line.last_gap.is_some());
    assert!(bus.requests().iter().all(|r| r.transport == Transport::Rtu));
    drop(ctx);

    // Unknown and dead units: silence.
    let mut port = open(&path);
    let mut buf = [0u8; 256];
    for unit in [9, 1] {
        bus.set_alive(1, unit != 1);
        port.write_all(&frame(unit, &[0x04, 0, 0, 0, 1]))
            .await
            .unwrap();
        assert!(
            tokio::time::timeout(NO_ANSWER, port.read(&mut buf))
                .await
                .is_err(),
            "unit {unit} answered"
        );
    }
    bus.set_alive(1, true);
    assert_eq!(bus.stats(1).unwrap().ignored, 1);

    // An unknown function, delimited by silence, is answered with illegal function.
    port.write_all(&frame(2, &[0x2B, 0x0E, 0x01, 0x00]))
        .await
        .unwrap();
    let expected = frame(2, &[0xAB, 0x01]);
    let mut got = vec![0u8; expected.len()];
    timed(port.read_exact(&mut got)).await.unwrap();
    assert_eq!(got, expected);

    // Garbage is discarded and counted; the line recovers.
    port.write_all(&[0x02, 0x03, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF])
        .await
        .unwrap();
    eventually("garbage discarded", || bus.line_stats().bad_frames == 1).await;

    // Two requests back to back, without waiting for the first answer: both in flight at once
    // (the first answer held back, so that the second surely comes while it is pending).
    bus.reset_stats();
    bus.set_response_delay(1, Duration::from_millis(200));
    let mut both = frame(1, &[0x03, 0, 100, 0, 1]);
    both.extend(frame(2, &[0x03, 0, 10, 0, 1]));
    port.write_all(&both).await.unwrap();
    let mut first = frame(1, &[0x03, 0x02, 0x00, 0x01]);
    first.extend(frame(2, &[0x03, 0x02, 0x06, 0x40]));
    let mut got = vec![0u8; first.len()];
    timed(port.read_exact(&mut got)).await.unwrap();
    assert_eq!(got, first);
    let line = bus.line_stats();
    assert_eq!((line.max_in_flight, line.overlaps), (2, 1), "{line:?}");

    shutdown.cancel();
    eventually("link removed", || std::fs::symlink_metadata(&link).is_err()).await;
}

#[tokio::test]
async fn broadcast_on_rtu_writes_without_answers() {
    let bus = SimBus::manual_clock();
    bus.add(2, DeviceKind::Drive).unwrap();
    bus.add(3, DeviceKind::Drive).unwrap();
    let shutdown = CancellationToken::new();
    let path = bus
        .serve_rtu_pty(RtuOptions::default(), shutdown.clone())
        .unwrap();
    let mut port = open(&path);
    port.write_all(&frame(0, &[0x06, 0, 10, 0x04, 0xB0]))
        .await
        .unwrap();
    let mut buf = [0u8; 64];
    assert!(
        tokio::time::timeout(NO_ANSWER, port.read(&mut buf))
            .await
            .is_err()
    );
    assert_eq!(bus.register(2, Table::Holding, 10), Some(1200));
    assert_eq!(bus.register(3, Table::Holding, 10), Some(1200));
    shutdown.cancel();
}
