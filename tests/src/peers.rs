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
