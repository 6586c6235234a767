//! Starting a system under test as its own process, on loopback, on ports it picks itself.

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

/// A `brume` hub started for a measurement; killed when dropped.
pub struct BrumeProcess {
    child: Child,
    pub rawsocket: String,
    pub websocket: String,
    /// The MQTT broker's address, if the hub logged one.
    pub mqtt: Option<std::net::SocketAddr>,
    /// The CoAP gateway's address, if the hub logged one.
    pub coap: Option<std::net::SocketAddr>,
    /// The HTTP listener's base URL (`http://host:port`: console, REST API, `/metrics`).
    pub http: String,
    pub started_in: Duration,
    _dir: tempfile::TempDir,
}

impl Drop for BrumeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl BrumeProcess {
    /// The process id, for resident-memory readings.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

/// The `brume` binary next to the running executable (both are built into the same directory).
pub fn brume_binary() -> anyhow::Result<PathBuf> {
    let me = std::env::current_exe()?;
    let dir = me.parent().context("executable has no directory")?;
    let candidate = dir.join("brume");
    if candidate.exists() {
        return Ok(candidate);
    }
    bail!(
        "no brume binary beside {}; build it with `cargo build --release -p hub`",
        me.display()
    )
}

/// Starts `brume run` with both listeners (and the gateways) on port 0 and waits for them,
/// measuring the time from spawn to listening. `settings` are root-level dotted keys, e.g.
/// `router.outbound_queue = 4096`.
pub fn start_brume(binary: &Path, settings: &str) -> anyhow::Result<BrumeProcess> {
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("brume.toml");
    std::fs::write(
        &config,
        format!(
            "{settings}\nmqtt.listen = \"127.0.0.1:0\"\ncoap.bind = \"127.0.0.1:0\"\nhttp.listen = \"127.0.0.1:0\"\n\
             [hub]\ndata_dir = {:?}\n\
             [[listeners]]\nname = \"ws\"\nkind = \"websocket\"\naddress = \"127.0.0.1:0\"\n\
             [[listeners]]\nname = \"rs\"\nkind = \"rawsocket\"\naddress = \"127.0.0.1:0\"\n",
            dir.path().join("data").display().to_string()
        ),
    )?;
    let started = Instant::now();
    let mut child = Command::new(binary)
        .args(["run", "--config"])
        .arg(&config)
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("spawn {}", binary.display()))?;
    let stdout = child.stdout.take().context("no stdout")?;
    // Read on a thread so a hub that stops talking cannot hang the caller; the thread then keeps
    // draining stdout so the hub never blocks on a full pipe.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            // Nobody listens any more once the hub is up: keep reading, drop the lines.
            let _ = tx.send(line);
        }
    });
    let deadline = started + LISTEN_TIMEOUT;
    let (mut ws, mut rs, mut mqtt, mut http, mut coap) = (None, None, None, None, None);
    let mut started_in = None;
    // The gateways log first, then the WAMP listeners, then HTTP.
    while ws.is_none() || rs.is_none() || http.is_none() {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = match rx.recv_timeout(left) {
            Ok(line) => line,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                let _ = child.kill();
                let _ = child.wait();
                bail!("brume did not log its listeners within {LISTEN_TIMEOUT:?}");
            }
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                let _ = child.wait();
                bail!("brume exited before listening");
            }
        };
        let after = |marker: &str| {
            line.find(marker).and_then(|i| {
                line[i + marker.len()..]
                    .split_whitespace()
                    .next()
                    .map(str::to_owned)
            })
        };
        if let Some(u) = after("WebSocket at ") {
            ws = Some(u);
        }
        if let Some(a) = after("RawSocket at ") {
            rs = Some(format!("rs://{a}"));
        }
        if let Some(a) = after("MQTT broker at mqtt://") {
            mqtt = a.parse().ok();
        }
        if let Some(a) = after("CoAP gateway listening local_addr=") {
            coap = a.parse().ok();
        }
        if let Some(u) = after("HTTP (console, REST API, health, metrics) at ") {
            http = Some(u.trim_end_matches('/').to_owned());
        }
        if started_in.is_none() && ws.is_some() && rs.is_some() {
            started_in = Some(started.elapsed());
        }
    }
    Ok(BrumeProcess {
        child,
        rawsocket: rs.context("no RawSocket listener")?,
        websocket: ws.context("no WebSocket listener")?,
        mqtt,
        coap,
        http: http.context("no HTTP listener")?,
        started_in: started_in.unwrap_or_else(|| started.elapsed()),
        _dir: dir,
    })
}

/// Longest wait for a started hub to log all its listeners.
const LISTEN_TIMEOUT: Duration = Duration::from_secs(30);

/// Raises this process's soft limit on open files to its hard limit (children inherit it), for
/// benchmarks that hold many connections; answers the limit now in force.
pub fn raise_open_files_limit() -> anyhow::Result<u64> {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).context("getrlimit(RLIMIT_NOFILE)")?;
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard).context("setrlimit(RLIMIT_NOFILE)")?;
    }
    Ok(soft.max(hard))
}

/// Resident set size of a process in KiB (Linux `/proc`).
pub fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    status_kib(pid, "VmRSS")
}

/// The largest resident set size of a process so far, in KiB (the kernel's high-water mark).
pub fn peak_rss_kib(pid: u32) -> anyhow::Result<u64> {
    status_kib(pid, "VmHWM")
}

/// A `kB` field of `/proc/<pid>/status`.
fn status_kib(pid: u32, field: &str) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .with_context(|| format!("no {field} in /proc status"))
}

/// Waits a little for a process to settle before reading its idle memory.
pub fn settle() {
    std::thread::sleep(Duration::from_millis(500));
}
