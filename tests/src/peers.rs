//! Third-party peers, installed on first use so that `cargo test` passes on a fresh machine.
//!
//! Python peers (Autobahn, Crossbar.io, paho-mqtt, aiocoap, Playwright) go into a virtualenv
//! under `target/peers/venv`, pinned by `tests/peers/requirements.txt`; a stamp holding the
//! file's content makes reinstalling happen only when the pins change. Debian packages (mosquitto
//! clients, libcoap, Chromium) are installed with apt-get when their binary is missing. A file
//! lock makes concurrent test binaries install once.

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

/// Debian's Chromium, the browser Playwright drives in the console tests (Playwright's own
/// browser download is never used). Installed with apt-get when missing; panics if it cannot.
pub fn chromium() -> PathBuf {
    apt("chromium", "chromium")
}

/// Everything a child writes to one of its pipes, collected as it writes it, so that a failure
/// can show what a peer said even when it hangs or is killed.
pub struct PipeText {
    text: std::sync::Arc<std::sync::Mutex<String>>,
    reader: tokio::task::JoinHandle<()>,
}

/// How much of a peer's output a failure message shows: the newest part.
const SHOWN: usize = 16 * 1024;

impl PipeText {
    /// Starts collecting from `pipe` until it closes.
    pub fn collect(pipe: impl tokio::io::AsyncRead + Unpin + Send + 'static) -> PipeText {
        use tokio::io::AsyncBufReadExt;
        let text = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let sink = text.clone();
        let reader = tokio::spawn(async move {
            let mut lines = tokio::io::BufReader::new(pipe).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let mut s = sink.lock().unwrap_or_else(|e| e.into_inner());
                s.push_str(&line);
                s.push('\n');
            }
        });
        PipeText { text, reader }
    }

    /// The newest part of what was collected so far, for a failure message.
    pub fn tail(&self) -> String {
        let s = self.text.lock().unwrap_or_else(|e| e.into_inner());
        let mut cut = s.len().saturating_sub(SHOWN);
        while !s.is_char_boundary(cut) {
            cut += 1;
        }
        s[cut..].to_owned()
    }

    /// Everything, once the pipe has closed (the child exited).
    pub async fn finish(self) -> String {
        let _ = self.reader.await;
        std::mem::take(&mut *self.text.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// Runs a Python peer script from `tests/peers` with arguments, with a deadline. Panics with the
/// script's output so far if it does not finish in time.
pub async fn run_script(script: &str, args: &[String], deadline: std::time::Duration) -> Output {
    let python = tokio::task::spawn_blocking(python)
        .await
        .expect("install task");
    let mut child = tokio::process::Command::new(python)
        .arg(scripts_dir().join(script))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn python");
    let stdout = PipeText::collect(child.stdout.take().expect("piped stdout"));
    let stderr = PipeText::collect(child.stderr.take().expect("piped stderr"));
    let status = match tokio::time::timeout(deadline, child.wait()).await {
        Ok(status) => status.expect("python ran"),
        Err(_) => panic!(
            "{script} did not finish within {deadline:?}\n--- stdout\n{}\n--- stderr\n{}",
            stdout.tail(),
            stderr.tail()
        ),
    };
    Output {
        status,
        stdout: stdout.finish().await.into_bytes(),
        stderr: stderr.finish().await.into_bytes(),
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
/// per line on stdout; its stderr is collected and shown when it fails. Killed when dropped.
pub struct LinePeer {
    script: String,
    child: tokio::process::Child,
    stderr: PipeText,
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
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn python");
        let stderr = PipeText::collect(child.stderr.take().expect("piped stderr"));
        let stdin = child.stdin.take().expect("piped stdin");
        let stdout = tokio::io::BufReader::new(child.stdout.take().expect("piped stdout")).lines();
        LinePeer {
            script: script.to_owned(),
            child,
            stderr,
            stdin,
            stdout,
            wait,
        }
    }

    /// The next line, parsed as JSON; panics, with the peer's stderr, if none comes in time or
    /// the peer exited.
    pub async fn line(&mut self) -> serde_json::Value {
        let deadline = tokio::time::Instant::now() + self.wait;
        match self.line_before(deadline).await {
            Some(v) => v,
            None => self.fail(&format!("no line within {:?}", self.wait)),
        }
    }

    /// The next line, parsed as JSON, or `None` once `deadline` passes first; panics, with the
    /// peer's stderr, if the peer exited.
    pub async fn line_before(
        &mut self,
        deadline: tokio::time::Instant,
    ) -> Option<serde_json::Value> {
        let line = match tokio::time::timeout_at(deadline, self.stdout.next_line()).await {
            Err(_) => return None,
            Ok(Ok(Some(line))) => line,
            Ok(Ok(None)) => self.fail("exited"),
            Ok(Err(e)) => self.fail(&format!("unreadable stdout: {e}")),
        };
        match serde_json::from_str(&line) {
            Ok(v) => Some(v),
            Err(e) => self.fail(&format!("printed a line that is not JSON ({e}): {line}")),
        }
    }

    /// Fails the test: one line saying what went wrong, then what the peer wrote on stderr.
    fn fail(&mut self, why: &str) -> ! {
        let status = self.child.try_wait().ok().flatten();
        let status = status.map_or_else(|| "still running".to_owned(), |s| s.to_string());
        panic!(
            "{}: {why} ({status})\n--- its stderr\n{}",
            self.script,
            self.stderr.tail()
        )
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
        let status = match tokio::time::timeout(self.wait, self.child.wait()).await {
            Ok(status) => status.expect("wait for the peer"),
            Err(_) => self.fail("did not exit in time"),
        };
        if !status.success() {
            self.fail("failed");
        }
    }
}
