//! The `brume` binary: printing and checking configuration, running on a config file, and
//! shutting down gracefully on SIGTERM and SIGINT.

// Test helpers fail the test by panicking.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use hub::client::{Client, ConnectOptions};
use hub::config::{Config, DEFAULT_TOML};
use hub::wamp::{Serializer, uris};

fn brume() -> Command {
    Command::new(env!("CARGO_BIN_EXE_brume"))
}

#[test]
fn print_config_prints_the_embedded_default() {
    let out = brume().arg("print-config").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(text, DEFAULT_TOML);
    assert_eq!(
        Config::from_toml(&text, "printed").unwrap(),
        Config::default()
    );
    assert!(text.contains("# "), "the printed config is commented");
}

#[test]
fn check_config_accepts_good_files_and_names_the_bad_key() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.toml");
    std::fs::write(&good, "[hub]\nid = \"edge-1\"\n").unwrap();
    let out = brume().arg("check-config").arg(&good).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let cases = [
        ("[router]\noutbound_queue = 0\n", "router.outbound_queue"),
        ("[hub]\nunknown_key = 1\n", "unknown_key"),
        (
            "[[listeners]]\nname = \"w\"\nkind = \"websocket\"\naddress = \"not an address\"\n",
            "listeners[0].address",
        ),
        (
            "[[modbus.tcp]]\naddress = \"127.0.0.1:502\"\n\
             devices = [{ unit = 1, thing = \"m\", thing_type = \"no_such_type\" }]\n",
            "modbus: tcp[0].devices[0].thing_type: no thing type `no_such_type`",
        ),
        (
            "[[raw.udp]]\naddress = \"127.0.0.1:9\"\nthing_type = \"thermostat\"\n",
            "raw",
        ),
    ];
    for (text, key) in cases {
        let bad = dir.path().join("bad.toml");
        std::fs::write(&bad, text).unwrap();
        let out = brume().arg("check-config").arg(&bad).output().unwrap();
        assert!(!out.status.success(), "{text}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(key),
            "error for {text:?} should name {key}: {err}"
        );
    }
}

/// Starts `brume run` on a config with both listeners on port 0; returns the child, the
/// RawSocket and WebSocket addresses from its log lines, and the log receiver.
fn start(dir: &std::path::Path) -> (Child, String, String, mpsc::Receiver<String>) {
    let config = dir.join("brume.toml");
    std::fs::write(
        &config,
        format!(
            "[hub]\ndata_dir = {:?}\nshutdown_grace_secs = 3\n\
             [mqtt]\nlisten = \"127.0.0.1:0\"\n[coap]\nbind = \"127.0.0.1:0\"\n[http]\nlisten = \"127.0.0.1:0\"\n\
             [[listeners]]\nname = \"ws\"\nkind = \"websocket\"\naddress = \"127.0.0.1:0\"\n\
             [[listeners]]\nname = \"rs\"\nkind = \"rawsocket\"\naddress = \"127.0.0.1:0\"\n",
            dir.join("data").display().to_string()
        ),
    )
    .unwrap();
    let mut child = brume()
        .args(["run", "--config"])
        .arg(&config)
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let (mut ws, mut rs) = (None, None);
    let deadline = Instant::now() + Duration::from_secs(10);
    while ws.is_none() || rs.is_none() {
        let line = rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("listener log lines");
        if let Some(i) = line.find("WebSocket at ws://") {
            ws = line[i + "WebSocket at ".len()..]
                .split_whitespace()
                .next()
                .map(str::to_owned);
        }
        if let Some(i) = line.find("RawSocket at ") {
            rs = line[i + "RawSocket at ".len()..]
                .split_whitespace()
                .next()
                .map(|a| format!("rs://{a}"));
        }
    }
    (child, ws.unwrap(), rs.unwrap(), rx)
}

fn signal(child: &Child, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok);
}

fn wait_exit(child: &mut Child, within: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("brume did not exit within {within:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn run_logs_listeners_and_sigterm_gives_sessions_goodbye() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, ws, rs, _logs) = start(dir.path());
    assert!(ws.ends_with("/ws"), "{ws}");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let clients = rt.block_on(async {
        let a = Client::connect(&ConnectOptions::new(&ws, "brume").serializer(Serializer::Json))
            .await
            .unwrap();
        let b = Client::connect(&ConnectOptions::new(&rs, "brume"))
            .await
            .unwrap();
        (a, b)
    });
    assert!(
        dir.path().join("data").is_dir(),
        "the data directory is created"
    );
    signal(&child, "-TERM");
    let status = wait_exit(&mut child, Duration::from_secs(5));
    assert!(status.success(), "{status}");
    rt.block_on(async {
        for c in [clients.0, clients.1] {
            let reason = tokio::time::timeout(Duration::from_secs(5), c.closed())
                .await
                .unwrap();
            assert_eq!(reason.as_deref(), Some(uris::CLOSE_SYSTEM_SHUTDOWN));
        }
    });
}

#[test]
fn sigint_stops_the_hub_too() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, _, _, _logs) = start(dir.path());
    signal(&child, "-INT");
    assert!(wait_exit(&mut child, Duration::from_secs(5)).success());
}

#[test]
fn a_bad_config_exits_before_listening() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("bad.toml");
    std::fs::write(&config, "[router]\nmax_connections = 0\n").unwrap();
    let out = brume()
        .args(["run", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("router.max_connections"));
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("WAMP over"),
        "no listener was opened"
    );
}
