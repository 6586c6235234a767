//! A cloud for uplink tests: Crossbar.io started with a config written here, listening on Unix
//! sockets in its own directory (so no TCP port is picked for it and freed before it binds), each
//! reached through a loopback proxy bound to port 0; and a TCP proxy between a hub and Crossbar
//! that a test can cut, restore or freeze.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream, UnixStream};
use tokio::sync::watch;

/// The Ed25519 seed every test hub uses for cryptosign with Crossbar.
pub const HUB_SEED: &str = "a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1";

/// Crossbar's socket for cloud apps, in its cbdir.
const APP_SOCKET: &str = "app.sock";
/// Crossbar's socket for hubs, in its cbdir.
const HUB_SOCKET: &str = "hub.sock";

/// Crossbar.io with realm `cloud`: an anonymous WebSocket transport for cloud apps and an
/// authenticated one for hubs, where each hub id `<h>` is a principal for ticket (`secret-<h>`),
/// WAMP-CRA (`cra-<h>`) and cryptosign (the key of [`HUB_SEED`]). Both transports listen on
/// Unix sockets; `app_url` and `hub_addr` are loopback proxies to them that stay up while
/// Crossbar restarts (a connection made while it is down is accepted, then closed).
pub struct Crossbar {
    app: Proxy,
    hub: Proxy,
    dir: tempfile::TempDir,
    child: Option<tokio::process::Child>,
    /// Where Crossbar's own output goes, for failure messages.
    log: PathBuf,
}

impl Crossbar {
    /// Starts Crossbar and waits until both transports accept connections.
    pub async fn start(hubs: &[&str]) -> Crossbar {
        let dir = tempfile::tempdir().expect("temp dir");
        let cbdir = dir.path().join(".crossbar");
        let app = Proxy::start(Target::Unix(cbdir.join(APP_SOCKET))).await;
        let hub = Proxy::start(Target::Unix(cbdir.join(HUB_SOCKET))).await;
        let log = dir.path().join("crossbar.log");
        let mut cb = Crossbar {
            app,
            hub,
            dir,
            child: None,
            log,
        };
        cb.write_config(hubs);
        cb.restart().await;
        cb
    }

    fn cbdir(&self) -> PathBuf {
        self.dir.path().join(".crossbar")
    }

    fn sockets(&self) -> [PathBuf; 2] {
        [self.cbdir().join(APP_SOCKET), self.cbdir().join(HUB_SOCKET)]
    }

    pub fn app_url(&self) -> String {
        format!("ws://{}/ws", self.app.addr)
    }

    pub fn hub_addr(&self) -> SocketAddr {
        self.hub.addr
    }

    fn write_config(&self, hubs: &[&str]) {
        let principals: serde_json::Map<String, serde_json::Value> = hubs
            .iter()
            .map(|h| {
                (
                    (*h).to_owned(),
                    serde_json::json!({"ticket": format!("secret-{h}"), "role": "hub"}),
                )
            })
            .collect();
        let cra_users: serde_json::Map<String, serde_json::Value> = hubs
            .iter()
            .map(|h| {
                (
                    (*h).to_owned(),
                    serde_json::json!({"secret": format!("cra-{h}"), "role": "hub"}),
                )
            })
            .collect();
        let pubkey = hub::router::auth::cryptosign::PrivateKey::from_hex(HUB_SEED)
            .expect("seed")
            .public_key_hex();
        let cs_principals: serde_json::Map<String, serde_json::Value> = hubs
            .iter()
            .map(|h| {
                (
                    (*h).to_owned(),
                    serde_json::json!({"realm": "cloud", "role": "hub", "authorized_keys": [pubkey]}),
                )
            })
            .collect();
        let allow_all = serde_json::json!([{
            "uri": "", "match": "prefix",
            "allow": {"call": true, "register": true, "publish": true, "subscribe": true},
            "disclose": {"caller": false, "publisher": false}, "cache": true
        }]);
        let config = serde_json::json!({
            "version": 2,
            "controller": {},
            "workers": [{
                "type": "router",
                "realms": [{
                    "name": "cloud",
                    "roles": [
                        {"name": "anonymous", "permissions": allow_all},
                        {"name": "hub", "permissions": allow_all}
                    ]
                }],
                "transports": [
                    {
                        "type": "websocket",
                        "endpoint": {"type": "unix", "path": APP_SOCKET},
                        "serializers": ["json", "msgpack"],
                        "auth": {"anonymous": {"type": "static", "role": "anonymous"}},
                        "options": {"auto_ping_interval": 0, "max_message_size": 1048576}
                    },
                    {
                        "type": "websocket",
                        "endpoint": {"type": "unix", "path": HUB_SOCKET},
                        "serializers": ["json", "msgpack"],
                        "auth": {
                            "ticket": {"type": "static", "principals": principals},
                            "wampcra": {"type": "static", "users": cra_users},
                            "cryptosign": {"type": "static", "principals": cs_principals}
                        },
                        "options": {"auto_ping_interval": 0, "max_message_size": 1048576}
                    }
                ]
            }]
        });
        std::fs::create_dir_all(self.cbdir()).expect("cbdir");
        std::fs::write(self.cbdir().join("config.json"), config.to_string())
            .expect("crossbar config");
    }

    /// (Re)starts the Crossbar process and waits until both of its sockets accept connections.
    pub async fn restart(&mut self) {
        self.stop().await;
        // A socket file left by a killed Crossbar would make its bind fail.
        for socket in self.sockets() {
            let _ = std::fs::remove_file(socket);
        }
        let python = tokio::task::spawn_blocking(crate::peers::python)
            .await
            .expect("install");
        let crossbar = python.parent().expect("venv bin").join("crossbar");
        let log = std::fs::File::create(&self.log).expect("crossbar log file");
        let log2 = log.try_clone().expect("crossbar log file");
        // Its own process group, so the controller and its workers die together.
        let child = tokio::process::Command::new(crossbar)
            .args(["start", "--cbdir"])
            .arg(self.cbdir())
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .kill_on_drop(true)
            .spawn()
            .expect("spawn crossbar");
        self.child = Some(child);
        for socket in self.sockets() {
            self.wait_for(&socket).await;
        }
    }

    /// Waits until `socket` accepts a connection; fails with Crossbar's log if Crossbar exits
    /// first or takes longer than a minute (it starts in a few seconds on an idle machine).
    async fn wait_for(&mut self, socket: &Path) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            if UnixStream::connect(socket).await.is_ok() {
                return;
            }
            let exited = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            if let Some(status) = exited {
                panic!(
                    "crossbar exited ({status}) before listening on {}:\n{}",
                    socket.display(),
                    self.log_tail()
                );
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "crossbar did not listen on {} within 60 s:\n{}",
                socket.display(),
                self.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The last lines Crossbar printed.
    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// Stops Crossbar (SIGKILL: the worst case for its peers) and waits until it is gone: the
    /// process group is reaped and its sockets refuse connections.
    pub async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill_group(&child);
            let _ = child.kill().await;
            let _ = child.wait().await;
            for socket in self.sockets() {
                let gone = tokio::time::timeout(Duration::from_secs(30), async {
                    while UnixStream::connect(&socket).await.is_ok() {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                })
                .await;
                assert!(gone.is_ok(), "crossbar still serves {}", socket.display());
            }
        }
    }
}

impl Drop for Crossbar {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            kill_group(child);
            let _ = child.start_kill();
        }
    }
}

/// SIGKILLs the process group a child leads (Crossbar's controller and its worker processes).
fn kill_group(child: &tokio::process::Child) {
    if let Some(pid) = child.id() {
        let _ = std::process::Command::new("kill")
            .args(["-9", "--", &format!("-{pid}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// What the proxy does with traffic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProxyMode {
    /// Forward both ways.
    Open = 0,
    /// Close every connection and refuse new ones (a link that is down).
    Closed = 1,
    /// Keep connections open but forward nothing (a half-open link).
    Frozen = 2,
    /// Forward both ways at [`SLOW_BYTES_PER_SEC`] each (a slow link, or a cloud that takes its
    /// time).
    Slow = 3,
}

/// What a [`ProxyMode::Slow`] proxy forwards per second, each way.
pub const SLOW_BYTES_PER_SEC: usize = 256 * 1024;

/// Where a [`Proxy`] forwards to.
#[derive(Clone, Debug)]
pub enum Target {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

impl From<SocketAddr> for Target {
    fn from(addr: SocketAddr) -> Target {
        Target::Tcp(addr)
    }
}

/// A TCP proxy from a loopback port (bound to port 0) to a target, switchable at run time.
pub struct Proxy {
    pub addr: SocketAddr,
    mode: Arc<AtomicU8>,
    changed: watch::Sender<u8>,
}

impl Proxy {
    pub async fn start(target: impl Into<Target>) -> Proxy {
        let target = target.into();
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("proxy bind");
        let addr = listener.local_addr().expect("proxy addr");
        let mode = Arc::new(AtomicU8::new(ProxyMode::Open as u8));
        let (changed, _) = watch::channel(ProxyMode::Open as u8);
        let (m, ch) = (mode.clone(), changed.clone());
        tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                if m.load(Ordering::SeqCst) == ProxyMode::Closed as u8 {
                    drop(inbound);
                    continue;
                }
                let watch = ch.subscribe();
                let target = target.clone();
                let m = m.clone();
                tokio::spawn(async move {
                    match target {
                        Target::Tcp(a) => {
                            if let Ok(out) = TcpStream::connect(a).await {
                                pump(inbound, out, watch, m.clone()).await;
                            }
                        }
                        Target::Unix(p) => {
                            if let Ok(out) = UnixStream::connect(p).await {
                                pump(inbound, out, watch, m.clone()).await;
                            }
                        }
                    }
                });
            }
        });
        Proxy {
            addr,
            mode,
            changed,
        }
    }

    pub fn set(&self, mode: ProxyMode) {
        self.mode.store(mode as u8, Ordering::SeqCst);
        self.changed.send_replace(mode as u8);
    }
}

/// Copies `from` to `to` until either ends, at [`SLOW_BYTES_PER_SEC`] while the mode is
/// [`ProxyMode::Slow`].
async fn copy_paced<R, W>(from: &mut R, to: &mut W, mode: &AtomicU8)
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let slow = mode.load(Ordering::SeqCst) == ProxyMode::Slow as u8;
        let want = if slow { 4096 } else { buf.len() };
        let n = match from.read(&mut buf[..want]).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
        if slow {
            let pause = Duration::from_secs_f64(n as f64 / SLOW_BYTES_PER_SEC as f64);
            tokio::time::sleep(pause).await;
        }
    }
}

/// Forwards both ways between `inbound` and `outbound` as the mode says, until either side
/// closes or the mode becomes [`ProxyMode::Closed`].
async fn pump<O>(
    inbound: TcpStream,
    outbound: O,
    mut watch: watch::Receiver<u8>,
    mode: Arc<AtomicU8>,
) where
    O: AsyncRead + AsyncWrite + Unpin,
{
    let (mut ri, mut wi) = inbound.into_split();
    let (mut ro, mut wo) = tokio::io::split(outbound);
    let pump = async {
        tokio::select! {
            () = copy_paced(&mut ri, &mut wo, &mode) => {}
            () = copy_paced(&mut ro, &mut wi, &mode) => {}
        }
    };
    tokio::pin!(pump);
    loop {
        let now = *watch.borrow_and_update();
        if now == ProxyMode::Closed as u8 {
            break;
        }
        if now == ProxyMode::Frozen as u8 {
            // Hold the sockets, forward nothing: a half-open link.
            if watch.changed().await.is_err() {
                break;
            }
            continue;
        }
        tokio::select! {
            () = &mut pump => break,
            r = watch.changed() => if r.is_err() { break },
        }
    }
}
