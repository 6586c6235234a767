//! Crossbar.io as a system under test: found in the test peers' virtualenv (or `BRUME_CROSSBAR`,
//! or `PATH`), started on free loopback ports with a config written here, in its own process
//! group so it dies whole.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

/// A running Crossbar.io router with realm `brume` open to anonymous sessions.
pub struct CrossbarProcess {
    child: Child,
    pub websocket: String,
    pub rawsocket: String,
    pub started_in: Duration,
    _dir: tempfile::TempDir,
}

impl CrossbarProcess {
    /// Process ids of the controller and its workers (for memory and CPU readings).
    pub fn pids(&self) -> Vec<u32> {
        let group = self.child.id();
        let mut pids = vec![group];
        if let Ok(entries) = std::fs::read_dir("/proc") {
            for e in entries.flatten() {
                let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
                    continue;
                };
                if pid == group {
                    continue;
                }
                let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                    continue;
                };
                // Field 5 (after the parenthesised name) is the process group.
                let pgrp = stat
                    .rsplit_once(')')
                    .and_then(|(_, rest)| rest.split_whitespace().nth(2))
                    .and_then(|g| g.parse::<u32>().ok());
                if pgrp == Some(group) {
                    pids.push(pid);
                }
            }
        }
        pids
    }
}

impl Drop for CrossbarProcess {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-9", "--", &format!("-{}", self.child.id())])
            .stderr(Stdio::null())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Where Crossbar is installed, if it is.
pub fn find() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("BRUME_CROSSBAR") {
        return Some(PathBuf::from(p));
    }
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("target/peers/venv/bin/crossbar");
    if venv.exists() {
        return Some(venv);
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("crossbar"))
            .find(|p| p.exists())
    })
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Starts Crossbar and waits for both transports.
pub fn start(binary: &std::path::Path) -> anyhow::Result<CrossbarProcess> {
    use std::os::unix::process::CommandExt as _;
    let dir = tempfile::tempdir()?;
    let cbdir = dir.path().join(".crossbar");
    std::fs::create_dir_all(&cbdir)?;
    let (ws, rs) = (free_port()?, free_port()?);
    let allow = serde_json::json!([{
        "uri": "", "match": "prefix",
        "allow": {"call": true, "register": true, "publish": true, "subscribe": true},
        "disclose": {"caller": false, "publisher": false}, "cache": true
    }]);
    let config = serde_json::json!({
        "version": 2,
        "controller": {},
        "workers": [{
            "type": "router",
            "realms": [{"name": "brume", "roles": [{"name": "anonymous", "permissions": allow}]}],
            "transports": [
                {
                    "type": "websocket",
                    "endpoint": {"type": "tcp", "interface": "127.0.0.1", "port": ws},
                    "serializers": ["json", "msgpack"],
                    "auth": {"anonymous": {"type": "static", "role": "anonymous"}},
                    "options": {"auto_ping_interval": 0, "max_message_size": 1048576}
                },
                {
                    "type": "rawsocket",
                    "endpoint": {"type": "tcp", "interface": "127.0.0.1", "port": rs},
                    "serializers": ["json", "msgpack"],
                    "auth": {"anonymous": {"type": "static", "role": "anonymous"}},
                    "options": {"max_message_size": 1048576}
                }
            ]
        }]
    });
    std::fs::write(cbdir.join("config.json"), config.to_string())?;
    let started = Instant::now();
    let child = Command::new(binary)
        .args(["start", "--cbdir"])
        .arg(&cbdir)
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("spawn {}", binary.display()))?;
    let mut cb = CrossbarProcess {
        child,
        websocket: format!("ws://127.0.0.1:{ws}/ws"),
        rawsocket: format!("rs://127.0.0.1:{rs}"),
        started_in: Duration::ZERO,
        _dir: dir,
    };
    for port in [ws, rs] {
        let deadline = Instant::now() + Duration::from_secs(60);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                bail!("crossbar did not listen on {port} within 60 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    cb.started_in = started.elapsed();
    Ok(cb)
}
