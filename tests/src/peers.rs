//! Third-party peers, installed on first use so that `cargo test` passes on a fresh machine.
//!
//! Python peers (Autobahn, Crossbar.io, paho-mqtt, aiocoap) go into a virtualenv under
//! `target/peers/venv`, pinned by `tests/peers/requirements.txt`; a stamp holding the file's
//! content makes reinstalling happen only when the pins change. Debian packages (mosquitto,
//! libcoap, socat) are installed with apt-get when their binary is missing. A file lock makes
//! concurrent test binaries install once.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

/// The repository root.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_owned)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// Where peers are installed.
fn peers_dir() -> PathBuf {
    workspace_root().join("target").join("peers")
}

/// The directory holding the Python peer scripts.
pub fn scripts_dir() -> PathBuf {
    workspace_root().join("tests").join("peers")
}

fn locked<T>(f: impl FnOnce() -> Result<T, String>) -> Result<T, String> {
    let dir = peers_dir();
    fs::create_dir_all(&dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
    let lock = File::create(dir.join(".lock")).map_err(|e| format!("lock file: {e}"))?;
    lock.lock().map_err(|e| format!("lock: {e}"))?;
    let out = f();
    let _ = lock.unlock();
    out
}

fn run(cmd: &mut Command) -> Result<(), String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{cmd:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{cmd:?} failed ({}):\n{}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(())
}

/// The virtualenv's Python, installing the pinned peers if needed. Panics with the installer's
/// output if installation fails, since no peer test can run without it.
pub fn python() -> PathBuf {
    static PYTHON: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let r = PYTHON.get_or_init(|| {
        locked(|| {
            let venv = peers_dir().join("venv");
            let python = venv.join("bin").join("python");
            let reqs_path = scripts_dir().join("requirements.txt");
            let reqs = fs::read_to_string(&reqs_path)
                .map_err(|e| format!("{}: {e}", reqs_path.display()))?;
            let stamp = venv.join(".brume-requirements");
            if fs::read_to_string(&stamp).ok().as_deref() == Some(reqs.as_str()) && python.exists()
            {
                return Ok(python);
            }
            let _ = fs::remove_dir_all(&venv);
            run(Command::new("python3").arg("-m").arg("venv").arg(&venv))?;
            run(Command::new(&python)
                .args([
                    "-m",
                    "pip",
                    "install",
                    "--disable-pip-version-check",
                    "-q",
                    "-r",
                ])
                .arg(&reqs_path)
                .env("AUTOBAHN_USE_NVX", "0"))?;
            fs::write(&stamp, &reqs).map_err(|e| format!("stamp: {e}"))?;
            Ok(python)
        })
    });
    match r {
        Ok(p) => p.clone(),
        Err(e) => panic!("cannot install the Python peers: {e}"),
    }
}

/// Makes sure `binary` exists, installing Debian `package` if not. Panics if it cannot.
pub fn apt(binary: &str, package: &str) -> PathBuf {
    let found = |b: &str| {
        ["/usr/bin", "/usr/sbin", "/usr/local/bin", "/bin", "/sbin"]
            .iter()
            .map(|d| Path::new(d).join(b))
            .find(|p| p.exists())
    };
    if let Some(p) = found(binary) {
        return p;
    }
    let r = locked(|| {
        if found(binary).is_some() {
            return Ok(());
        }
        run(Command::new("apt-get").args(["update", "-qq"]))?;
        run(Command::new("apt-get")
            .args(["install", "-y", "-qq", "--no-install-recommends", package])
            .env("DEBIAN_FRONTEND", "noninteractive"))
    });
    if let Err(e) = r {
        panic!("cannot install {package} for {binary}: {e}");
    }
    found(binary).unwrap_or_else(|| panic!("{package} installed but {binary} not found"))
}

/// Runs a Python peer script from `tests/peers` with arguments, with a deadline.
pub async fn run_script(script: &str, args: &[String], deadline: std::time::Duration) -> Output {
    let python = tokio::task::spawn_blocking(python)
        .await
        .expect("install task");
    let child = tokio::process::Command::new(python)
        .arg(scripts_dir().join(script))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn python");
    match tokio::time::timeout(deadline, child.wait_with_output()).await {
        Ok(out) => out.expect("python ran"),
        Err(_) => panic!("{script} did not finish within {deadline:?}"),
    }
}

/// Asserts a script succeeded, showing its output otherwise.
pub fn assert_success(script: &str, out: &Output) {
    assert!(
        out.status.success(),
        "{script} failed ({}):\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs a peer script to completion (see [`run_script`]), asserts it succeeded, and parses each
/// line it printed as JSON.
pub async fn run_script_json(
    script: &str,
    args: &[String],
    deadline: std::time::Duration,
) -> Vec<serde_json::Value> {
    let out = run_script(script, args, deadline).await;
    assert_success(script, &out);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// A long-running peer script that takes commands as lines on stdin and reports one JSON value
/// per line on stdout (stderr goes to the test's output). Killed when dropped.
pub struct LinePeer {
    script: String,
    child: tokio::process::Child,
    stdin: tokio::process::ChildStdin,
    stdout: tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
    wait: std::time::Duration,
}

impl LinePeer {
    /// Starts `script` from `tests/peers` with `args`; `wait` bounds every later read and the
    /// final exit.
    pub async fn spawn(script: &str, args: &[String], wait: std::time::Duration) -> LinePeer {
        use tokio::io::AsyncBufReadExt;
        let python = tokio::task::spawn_blocking(python)
            .await
            .expect("install task");
        let mut child = tokio::process::Command::new(python)
            .arg(scripts_dir().join(script))
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn python");
        let stdin = child.stdin.take().expect("piped stdin");
        let stdout = tokio::io::BufReader::new(child.stdout.take().expect("piped stdout")).lines();
        LinePeer {
            script: script.to_owned(),
            child,
            stdin,
            stdout,
            wait,
        }
    }

    /// The next line, parsed as JSON; panics if none comes in time or the peer exited.
    pub async fn line(&mut self) -> serde_json::Value {
        let line = tokio::time::timeout(self.wait, self.stdout.next_line())
            .await
            .unwrap_or_else(|_| panic!("no line from {} in time", self.script))
            .expect("read the peer's stdout")
            .unwrap_or_else(|| panic!("{} exited", self.script));
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"))
    }

    /// The next line, parsed as JSON, or `None` once `deadline` passes first; panics if the peer
    /// exited.
    pub async fn line_before(
        &mut self,
        deadline: tokio::time::Instant,
    ) -> Option<serde_json::Value> {
        let line = tokio::time::timeout_at(deadline, self.stdout.next_line())
            .await
            .ok()?
            .expect("read the peer's stdout")
            .unwrap_or_else(|| panic!("{} exited", self.script));
        Some(serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}")))
    }

    /// Sends one command line.
    pub async fn send(&mut self, line: &str) {
        use tokio::io::AsyncWriteExt;
        self.stdin.write_all(line.as_bytes()).await.expect("write");
        self.stdin.write_all(b"\n").await.expect("write");
        self.stdin.flush().await.expect("flush");
    }

    /// Waits for the peer to exit and asserts it succeeded.
    pub async fn finish(mut self) {
        let status = tokio::time::timeout(self.wait, self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("{} did not exit in time", self.script))
            .expect("wait for the peer");
        assert!(status.success(), "{} failed: {status}", self.script);
    }
}
