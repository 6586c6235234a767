//! No part of the hub dies alone: a fault injected into each part (`BRUME_FAULT`, see
//! `device_models::fault`) either stops the whole `brume` process with status 70, so that its
//! service manager starts it again, or, for the uplink's cloud link, is restarted in place.

// Test helpers fail the test by panicking.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// A config with every device gateway and an uplink towards a port nobody listens on.
fn config(dir: &std::path::Path) -> std::path::PathBuf {
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let config = dir.join("brume.toml");
    std::fs::write(
        &config,
        format!(
            "[hub]\ndata_dir = {:?}\nshutdown_grace_secs = 3\n\
             [mqtt]\nlisten = \"127.0.0.1:0\"\n[coap]\nbind = \"127.0.0.1:0\"\n[http]\nlisten = \"127.0.0.1:0\"\n\
             [[listeners]]\nname = \"rs\"\nkind = \"rawsocket\"\naddress = \"127.0.0.1:0\"\n\
             [uplink]\nenabled = true\nurl = \"ws://{closed}/ws\"\nrealm = \"cloud\"\n\
             reconnect_initial_ms = 100\nreconnect_max_ms = 200\n",
            dir.join("data").display().to_string()
        ),
    )
    .unwrap();
    config
}

/// `brume run` with `BRUME_FAULT=<fault>`; its log lines (stdout and stderr) on the receiver.
fn run_with_fault(fault: &str, dir: &std::path::Path) -> (Child, mpsc::Receiver<String>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_brume"))
        .args(["run", "--config"])
        .arg(config(dir))
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .env("BRUME_FAULT", fault)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel();
    let out: Box<dyn std::io::Read + Send> = Box::new(child.stdout.take().unwrap());
    let err: Box<dyn std::io::Read + Send> = Box::new(child.stderr.take().unwrap());
    for stream in [out, err] {
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
    }
    (child, rx)
}

fn wait_exit(child: &mut Child, within: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits for a log line containing every one of `words`; returns the lines seen until then.
fn wait_line(rx: &mpsc::Receiver<String>, words: &[&str], within: Duration) -> Vec<String> {
    let deadline = Instant::now() + within;
    let mut seen = Vec::new();
    loop {
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(line) => {
                let found = words.iter().all(|w| line.contains(w));
                seen.push(line);
                if found {
                    return seen;
                }
            }
            Err(_) => panic!("no log line with {words:?}; saw:\n{}", seen.join("\n")),
        }
    }
}

#[test]
fn a_critical_part_that_panics_stops_the_process_with_status_70() {
    let parts = [
        "things_service",
        "things_store",
        "things_session",
        "uplink_ingest",
        "mqtt_router_link",
        "coap_gateway",
        "wamp_listener",
        "memory_watch",
        "http_listener",
    ];
    // In pairs, so the run stays short on two cores.
    for pair in parts.chunks(2) {
        let runs: Vec<_> = pair
            .iter()
            .map(|part| {
                let dir = tempfile::tempdir().unwrap();
                let (child, logs) = run_with_fault(part, dir.path());
                (part, dir, child, logs)
            })
            .collect();
        for (part, _dir, mut child, logs) in runs {
            let status = wait_exit(&mut child, Duration::from_secs(30));
            let lines: Vec<String> = logs.try_iter().collect();
            let status = status.unwrap_or_else(|| {
                panic!(
                    "{part}: the hub went on running without it:\n{}",
                    lines.join("\n")
                )
            });
            assert_eq!(status.code(), Some(70), "{part}:\n{}", lines.join("\n"));
            assert!(
                lines
                    .iter()
                    .any(|l| l.contains("a part of the hub failed") && l.contains(part)),
                "{part}: the log names the failed part:\n{}",
                lines.join("\n")
            );
        }
    }
}

#[test]
fn the_uplink_link_is_restarted_in_place_and_the_hub_runs_on() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, logs) = run_with_fault("uplink_link", dir.path());
    wait_line(
        &logs,
        &["uplink_link", "starting it again"],
        Duration::from_secs(20),
    );
    // The new link goes back to work: it tries the (unreachable) cloud again.
    wait_line(&logs, &["uplink cannot connect"], Duration::from_secs(20));
    assert!(child.try_wait().unwrap().is_none(), "the hub runs on");
    let ok = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok);
    let status = wait_exit(&mut child, Duration::from_secs(10)).expect("exits on SIGTERM");
    assert!(status.success(), "{status}");
}
