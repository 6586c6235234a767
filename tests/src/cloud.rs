//! A cloud for uplink tests: Crossbar.io started on free loopback ports with a config written
//! here, and a TCP proxy between a hub and Crossbar that a test can cut, restore or freeze.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// A free TCP port on loopback (bound, read, released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// The Ed25519 seed every test hub uses for cryptosign with Crossbar.
pub const HUB_SEED: &str = "a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1";

/// Crossbar.io with realm `cloud`: an anonymous WebSocket transport for cloud apps and an
/// authenticated one for hubs, where each hub id `<h>` is a principal for ticket (`secret-<h>`),
/// WAMP-CRA (`cra-<h>`) and cryptosign (the key of [`HUB_SEED`]).
pub struct Crossbar {
    pub app_port: u16,
    pub hub_port: u16,
    dir: tempfile::TempDir,
    child: Option<tokio::process::Child>,
}

impl Crossbar {
    /// Starts Crossbar and waits until both transports accept connections.
    pub async fn start(hubs: &[&str]) -> Crossbar {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut cb = Crossbar {
            app_port: free_port(),
            hub_port: free_port(),
            dir,
            child: None,
        };
        cb.write_config(hubs);
        cb.restart().await;
        cb
    }

    fn cbdir(&self) -> PathBuf {
        self.dir.path().join(".crossbar")
    }

    pub fn app_url(&self) -> String {
        format!("ws://127.0.0.1:{}/ws", self.app_port)
    }

    pub fn hub_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.hub_port))
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
                        "endpoint": {"type": "tcp", "interface": "127.0.0.1", "port": self.app_port},
                        "serializers": ["json", "msgpack"],
                        "auth": {"anonymous": {"type": "static", "role": "anonymous"}},
                        "options": {"auto_ping_interval": 0, "max_message_size": 1048576}
                    },
                    {
                        "type": "websocket",
                        "endpoint": {"type": "tcp", "interface": "127.0.0.1", "port": self.hub_port},
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

    /// (Re)starts the Crossbar process and waits for its ports.
    pub async fn restart(&mut self) {
        self.stop().await;
        let python = tokio::task::spawn_blocking(crate::peers::python)
            .await
            .expect("install");
        let crossbar = python.parent().expect("venv bin").join("crossbar");
        // Its own process group, so the controller and its workers die together.
        let child = tokio::process::Command::new(crossbar)
            .args(["start", "--cbdir"])
            .arg(self.cbdir())
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn crossbar");
        self.child = Some(child);
        for port in [self.app_port, self.hub_port] {
            let ready = tokio::time::timeout(Duration::from_secs(60), async {
                while TcpStream::connect(("127.0.0.1", port)).await.is_err() {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            })
            .await;
            assert!(
                ready.is_ok(),
                "crossbar did not listen on {port} within 60 s"
            );
        }
    }

    /// Stops Crossbar (SIGKILL: the worst case for its peers) and waits until its ports are free.
    pub async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill_group(&child);
            let _ = child.kill().await;
            let _ = child.wait().await;
            for port in [self.app_port, self.hub_port] {
                let _ = tokio::time::timeout(Duration::from_secs(10), async {
                    while TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                })
                .await;
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
}

/// A TCP proxy from a local port to a target, switchable at run time.
pub struct Proxy {
    pub addr: SocketAddr,
    mode: Arc<AtomicU8>,
    changed: watch::Sender<u8>,
}

impl Proxy {
    pub async fn start(target: SocketAddr) -> Proxy {
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
                let mut watch = ch.subscribe();
                tokio::spawn(async move {
                    let Ok(outbound) = TcpStream::connect(target).await else {
                        return;
                    };
                    let (mut ri, mut wi) = inbound.into_split();
                    let (mut ro, mut wo) = outbound.into_split();
                    let pump = async {
                        tokio::select! {
                            _ = tokio::io::copy(&mut ri, &mut wo) => {}
                            _ = tokio::io::copy(&mut ro, &mut wi) => {}
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
