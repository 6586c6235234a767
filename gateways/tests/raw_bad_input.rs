//! Raw listeners fed bad input on real sockets and ptys: bad frames are counted and dropped while
//! good ones still pass, a TCP peer that sends only garbage is disconnected, connection limits and
//! idle timeouts hold, and a flooding UDP source does not starve another one.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use device_models::DeviceEvent;
use device_models::frames::{crc16_modbus, xor8};
use firmware_sim::raw::beacon::{Beacon, BeaconConfig, Reading};
use firmware_sim::raw::pty::PtyPort;
use firmware_sim::raw::thermostat::{State, Thermostat, ThermostatConfig};
use gateways::raw::{RawConfig, SerialConfig, TcpConfig, UdpConfig};
use support::{Gateway, catalog};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

/// A beacon datagram as `udp_beacon` defines it: kind 1, seq 0, id, 21.00 °C, 50 %, 80 %.
fn beacon_datagram(id: u16) -> Vec<u8> {
    let [hi, lo] = id.to_be_bytes();
    let body = [1, 0, hi, lo, 0x08, 0x34, 50, 80];
    let mut datagram = body.to_vec();
    datagram.push(xor8(&body));
    datagram
}

fn udp(rate_per_sec: f64, burst: u32) -> RawConfig {
    let mut config = UdpConfig::new("127.0.0.1:0", "udp_beacon");
    config.rate_per_sec = rate_per_sec;
    config.burst = burst;
    RawConfig {
        udp: vec![config],
        ..RawConfig::default()
    }
}

#[tokio::test]
async fn raw_udp_bad_datagrams_are_counted_and_good_ones_pass() {
    let mut gw = Gateway::start(udp(1000.0, 1000), &catalog()).await;
    let device = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let good = beacon_datagram(7);
    let mut corrupt = good.clone();
    corrupt[5] ^= 0x40;
    let mut short = good[..5].to_vec();
    short.push(xor8(&good[..5]));
    let oversize = vec![0u8; 40];
    for datagram in [&corrupt, &short, &good, &oversize, &[][..], &good] {
        device.send_to(datagram, gw.addr()).await.unwrap();
    }
    gw.reported("beacon-7", |v| v["temperature"] == 21.0).await;
    gw.reported("beacon-7", |_| true).await;
    let stats = gw
        .stats_until("every datagram", |s| s.frames == 2 && s.oversize == 1)
        .await;
    assert_eq!(stats.bad_checksum, 2, "the corrupt and the empty datagram");
    assert_eq!(stats.truncated, 1);
    assert_eq!(stats.frames, 2);
}

#[tokio::test]
async fn raw_udp_flood_from_one_source_does_not_starve_another() {
    let mut gw = Gateway::start(udp(20.0, 20), &catalog()).await;
    let flooder = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let flood = beacon_datagram(1);
    let addr = gw.addr();
    let flooding = tokio::spawn(async move {
        for i in 0..5_000u32 {
            let _ = flooder.send_to(&flood, addr).await;
            if i % 100 == 0 {
                tokio::task::yield_now().await;
            }
        }
    });
    let beacon = Beacon::spawn(BeaconConfig {
        id: 2,
        hub: gw.addr(),
        interval: Duration::from_millis(50),
        reading: Reading::default(),
    })
    .await
    .unwrap();
    let started = tokio::time::Instant::now();
    let mut quiet_reports = 0;
    let mut flood_reports = 0;
    while quiet_reports < 10 {
        match gw.next().await {
            DeviceEvent::Reported { thing, .. } if thing.as_str() == "beacon-2" => {
                quiet_reports += 1;
            }
            DeviceEvent::Reported { thing, .. } if thing.as_str() == "beacon-1" => {
                flood_reports += 1;
            }
            _ => {}
        }
    }
    flooding.await.unwrap();
    let elapsed = started.elapsed().as_secs_f64();
    let stats = gw.stats();
    assert!(stats.rate_limited > 0, "{stats:?}");
    let allowed = 20.0 + 20.0 * (elapsed + 0.5);
    assert!(
        f64::from(flood_reports) <= allowed,
        "{flood_reports} reports from the flooder in {elapsed:.2} s"
    );
    drop(beacon);
}

fn tcp(adjust: impl FnOnce(&mut TcpConfig)) -> RawConfig {
    let mut config = TcpConfig::new("127.0.0.1:0", "tcp_thermostat");
    adjust(&mut config);
    RawConfig {
        tcp: vec![config],
        ..RawConfig::default()
    }
}

/// Reads until the server closes the connection; false if it stays open for `within`.
async fn closed_by_peer(stream: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 256];
    let read_all = async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(within, read_all).await.is_ok()
}

async fn thermostat(gw: &Gateway, id: &str) -> Thermostat {
    Thermostat::connect(ThermostatConfig {
        id: id.into(),
        hub: gw.addr(),
        interval: Duration::from_millis(50),
        state: State::default(),
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn raw_tcp_garbage_peer_is_disconnected_after_the_threshold_and_others_carry_on() {
    let mut gw = Gateway::start(tcp(|c| c.max_bad_frames = 3), &catalog()).await;
    let good = thermostat(&gw, "th-1").await;
    gw.reported("th-1", |_| true).await;

    // Well-framed but not JSON: counted, and the connection survives until the third in a row.
    let mut garbage = TcpStream::connect(gw.addr()).await.unwrap();
    garbage
        .write_all(b"\x00\x05hello\x00\x05world")
        .await
        .unwrap();
    gw.stats_until("two bad frames", |s| s.undecodable == 2)
        .await;
    assert!(!closed_by_peer(&mut garbage, Duration::from_millis(100)).await);
    garbage.write_all(b"\x00\x01{").await.unwrap();
    assert!(closed_by_peer(&mut garbage, Duration::from_secs(5)).await);
    let stats = gw
        .stats_until("a disconnect", |s| s.garbage_disconnects == 1)
        .await;
    assert_eq!(stats.undecodable, 3);

    // A length prefix past the frame cap loses the stream position: closed at once.
    let mut lost = TcpStream::connect(gw.addr()).await.unwrap();
    lost.write_all(b"\xff\xff{}").await.unwrap();
    assert!(closed_by_peer(&mut lost, Duration::from_secs(5)).await);
    let stats = gw
        .stats_until("a second disconnect", |s| s.garbage_disconnects == 2)
        .await;
    assert_eq!(stats.oversize, 1);

    // Bad frames between good ones never add up to a disconnect.
    let mut mixed = TcpStream::connect(gw.addr()).await.unwrap();
    let report = br#"{"id":"th-2","sensors":{"temperature":19.5}}"#;
    for _ in 0..4 {
        mixed.write_all(b"\x00\x02no").await.unwrap();
        mixed.write_all(b"\x00\x02[]").await.unwrap();
        let len = u16::try_from(report.len()).unwrap().to_be_bytes();
        mixed.write_all(&len).await.unwrap();
        mixed.write_all(report).await.unwrap();
    }
    gw.reported("th-2", |v| v["temperature"] == 19.5).await;
    gw.stats_until("eight more bad frames", |s| s.undecodable == 11)
        .await;
    assert!(!closed_by_peer(&mut mixed, Duration::from_millis(100)).await);

    // The good device was never disturbed.
    gw.reported("th-1", |_| true).await;
    drop(good);
}

#[tokio::test]
async fn raw_tcp_connection_limit_and_idle_timeout() {
    let gw = Gateway::start(
        tcp(|c| {
            c.max_connections = 1;
            c.idle_timeout_secs = 1;
        }),
        &catalog(),
    )
    .await;
    let mut first = TcpStream::connect(gw.addr()).await.unwrap();
    gw.stats_until("the first connection", |s| s.connections == 1)
        .await;
    let mut second = TcpStream::connect(gw.addr()).await.unwrap();
    assert!(closed_by_peer(&mut second, Duration::from_secs(5)).await);
    assert_eq!(gw.stats().connections_refused, 1);
    // The first one says nothing and is closed after the idle timeout, which frees its slot.
    let started = tokio::time::Instant::now();
    assert!(closed_by_peer(&mut first, Duration::from_secs(5)).await);
    assert!(started.elapsed() >= Duration::from_millis(500));
    gw.stats_until("an idle disconnect", |s| s.idle_disconnects == 1)
        .await;
    // The slot is released as the connection task ends, just after the counter moves.
    for attempt in 0.. {
        let mut third = TcpStream::connect(gw.addr()).await.unwrap();
        if !closed_by_peer(&mut third, Duration::from_millis(200)).await {
            break;
        }
        assert!(attempt < 20, "the slot was never released");
    }
    assert_eq!(gw.stats().connections, 2);
}

#[tokio::test]
async fn raw_tcp_accepts_no_connection_while_the_hub_is_over_its_memory_budget() {
    let memory = device_models::MemoryPressure::new();
    let mut prepared = tcp(|_| {}).prepare(&catalog()).unwrap();
    let gw = Gateway::start_under(prepared.remove(0), memory.clone()).await;
    let mut kept = TcpStream::connect(gw.addr()).await.unwrap();
    gw.stats_until("the first connection", |s| s.connections == 1)
        .await;
    memory.set_over(true);
    let mut refused = TcpStream::connect(gw.addr()).await.unwrap();
    assert!(closed_by_peer(&mut refused, Duration::from_secs(5)).await);
    assert_eq!(gw.stats().connections_refused_memory, 1);
    assert_eq!(memory.refused_connections(), 1);
    // The connection it had is not touched; back under the budget, new ones are taken again.
    assert!(!closed_by_peer(&mut kept, Duration::from_millis(100)).await);
    memory.set_over(false);
    let _later = TcpStream::connect(gw.addr()).await.unwrap();
    gw.stats_until("the later connection", |s| s.connections == 2)
        .await;
}

fn meter_line(pairs: &str) -> Vec<u8> {
    format!("{pairs}*{:04X}\r\n", crc16_modbus(pairs.as_bytes())).into_bytes()
}

#[tokio::test]
async fn raw_serial_bad_lines_are_counted_and_the_port_keeps_working() {
    let dir = tempfile::tempdir().unwrap();
    let port = PtyPort::new(dir.path().join("ttyNOISY"));
    let mut device = port.plug().unwrap();
    let mut gw = Gateway::start(
        RawConfig {
            serial: vec![SerialConfig::new(
                port.path().to_string_lossy(),
                "serial_meter",
            )],
            ..RawConfig::default()
        },
        &catalog(),
    )
    .await;
    gw.stats_until("the port open", |s| s.port_opens == 1).await;
    let mut wire = b"node=3;v=231.0*0000\r\n".to_vec();
    wire.extend_from_slice(b"\xff\xfe\x00 line noise\r\n");
    wire.extend_from_slice(&meter_line("node=3;no pair here"));
    wire.extend_from_slice(&meter_line("node=3;v=229.5;a=0.5;relay=0"));
    device.write_all(&wire).await.unwrap();
    let values = gw.reported("meter-3", |_| true).await;
    assert_eq!(values["voltage"], 229.5);
    let stats = gw.stats();
    assert_eq!(stats.bad_checksum, 2, "{stats:?}");
    assert_eq!(stats.undecodable, 1);
    assert_eq!(stats.frames, 1);
    assert_eq!(stats.port_failures, 0);
    drop(device);
    port.unplug();
}
