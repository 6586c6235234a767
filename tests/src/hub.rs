//! A hub for one test: all listeners on 127.0.0.1 port 0, data in a temporary directory.

use std::net::SocketAddr;

use hub::client::{Client, ConnectOptions};
use hub::config::{Config, ListenerKind, ListenerSection};
use hub::server::Hub;
use hub::wamp::Serializer;

/// A running hub and where to reach it.
pub struct TestHub {
    pub hub: Hub,
    pub addr: SocketAddr,
    pub data: tempfile::TempDir,
}

impl TestHub {
    /// Runs a simulated MQTT device (`firmware_sim`) of the built-in type `type_id` as `thing`,
    /// with the secret its provisioning answered (anonymous when `None`), reporting every
    /// `every`, until the returned token is cancelled.
    pub fn mqtt_device(
        &self,
        thing: &str,
        type_id: &str,
        secret: Option<String>,
        every: std::time::Duration,
    ) -> tokio_util::sync::CancellationToken {
        use firmware_sim::mqtt::{DeviceConfig, SimStats, run_device};
        let mqtt = self.hub.gateway_addrs().mqtt.expect("MQTT gateway");
        let ty = device_models::TypeCatalog::builtin()
            .expect("built-in types")
            .get(type_id)
            .expect("a built-in type")
            .clone();
        let config = DeviceConfig {
            host: mqtt.ip().to_string(),
            port: mqtt.port(),
            thing: device_models::ThingId::new(thing).expect("thing id"),
            secret,
            ty,
            report_every: every,
            keep_alive: std::time::Duration::from_secs(30),
            clean_session: true,
            seed: 7,
        };
        let stop = tokio_util::sync::CancellationToken::new();
        tokio::spawn(run_device(
            config,
            stop.clone(),
            std::sync::Arc::new(SimStats::default()),
        ));
        stop
    }

    /// Starts a hub with the default config, one listener serving both protocols on port 0.
    pub async fn start() -> TestHub {
        TestHub::start_with(|_| {}).await
    }

    /// Starts a hub after `edit` adjusts the config (data dir and listener already set).
    pub async fn start_with(edit: impl FnOnce(&mut Config)) -> TestHub {
        crate::init_logging();
        let data = tempfile::tempdir().expect("temp dir");
        let mut config = Config::default();
        config.hub.data_dir = data.path().to_owned();
        config.hub.shutdown_grace_secs = 3;
        config.listeners = vec![ListenerSection {
            name: "wamp".into(),
            kind: ListenerKind::Both,
            address: "127.0.0.1:0".into(),
            path: "/ws".into(),
            serializers: vec!["json".into(), "msgpack".into()],
            max_message_size: 1024 * 1024,
            allow_anonymous_remote: false,
            tls: None,
        }];
        // Gateways on free ports too, so tests can run side by side.
        config.mqtt.listen = "127.0.0.1:0".parse().expect("address");
        config.coap.bind = "127.0.0.1:0".parse().expect("address");
        config.http.listen = "127.0.0.1:0".parse().expect("address");
        edit(&mut config);
        let hub = Hub::start(config).await.expect("hub starts");
        let addr = hub.local_addr("wamp").expect("listener bound");
        TestHub { hub, addr, data }
    }

    pub fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    pub fn rs_url(&self) -> String {
        format!("rs://{}", self.addr)
    }

    /// The URL for a transport by name: `websocket` or `rawsocket`.
    pub fn url(&self, transport: &str) -> String {
        if transport == "websocket" {
            self.ws_url()
        } else {
            self.rs_url()
        }
    }

    /// Joins realm `brume` over a transport and serializer.
    pub async fn client(&self, transport: &str, ser: Serializer) -> Client {
        let opts = ConnectOptions::new(&self.url(transport), "brume").serializer(ser);
        Client::connect(&opts).await.expect("client joins")
    }

    /// Joins realm `brume` in-process.
    pub fn local_client(&self, name: &str) -> Client {
        Client::local(
            self.hub.router(),
            "brume",
            hub::router::AuthInfo {
                authid: name.into(),
                authrole: "trusted".into(),
                authmethod: "trusted".into(),
                authprovider: "static".into(),
            },
        )
        .expect("local client joins")
    }
}

/// Every (transport, serializer) combination the router serves.
pub const COMBOS: [(&str, Serializer); 4] = [
    ("websocket", Serializer::Json),
    ("websocket", Serializer::MsgPack),
    ("rawsocket", Serializer::Json),
    ("rawsocket", Serializer::MsgPack),
];

/// The `brume` binary of this build, brought up to date once per test process (`cargo test -p
/// tests` alone does not build other packages' binaries, and a stale one would test old code).
pub fn brume_binary() -> std::path::PathBuf {
    static BUILT: std::sync::Once = std::sync::Once::new();
    let exe = std::env::current_exe().expect("test executable");
    // target/<profile>/deps/<test> → target/<profile>/brume
    let profile_dir = exe.parent().and_then(|d| d.parent()).expect("target dir");
    let release = profile_dir.file_name().is_some_and(|n| n == "release");
    BUILT.call_once(|| {
        let mut cmd = std::process::Command::new(env!("CARGO"));
        cmd.args(["build", "-p", "hub", "--bin", "brume"]);
        if release {
            cmd.arg("--release");
        }
        let status = cmd
            .current_dir(crate::peers::workspace_root())
            .status()
            .expect("cargo build");
        assert!(status.success(), "building brume failed");
    });
    profile_dir.join("brume")
}

/// A `brume run` process on a config file; killed when dropped.
pub struct BrumeProcess {
    pub child: std::process::Child,
    pub rs_url: String,
}

impl BrumeProcess {
    /// Starts `brume run --config <config>` and waits for its RawSocket listener's log line.
    pub fn start(config: &std::path::Path) -> BrumeProcess {
        let mut cmd = std::process::Command::new(brume_binary());
        cmd.args(["run", "--config"]).arg(config);
        Self::spawn(cmd)
    }

    /// Runs `command`, which ends by exec'ing `brume run` (a wrapper that sets up a namespace or
    /// a mount first), and waits for the hub's RawSocket listener's log line.
    pub fn spawn(mut command: std::process::Command) -> BrumeProcess {
        use std::io::{BufRead, BufReader};
        let mut child = command
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn brume");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            let Ok(line) =
                rx.recv_timeout(deadline.saturating_duration_since(std::time::Instant::now()))
            else {
                let _ = child.kill();
                let _ = child.wait();
                panic!("brume did not log its RawSocket listener");
            };
            if let Some(i) = line.find("RawSocket at ") {
                let addr = line[i + "RawSocket at ".len()..]
                    .split_whitespace()
                    .next()
                    .unwrap_or_default();
                // Keep draining the log so brume never blocks on a full pipe; its warnings
                // and errors go to the test's output (shown when the test fails).
                std::thread::spawn(move || {
                    for line in rx {
                        if line.contains(" WARN ") || line.contains(" ERROR ") {
                            // The test harness shows this only for a failing test.
                            #[allow(clippy::print_stderr)]
                            {
                                eprintln!("brume: {line}");
                            }
                        }
                    }
                });
                return BrumeProcess {
                    child,
                    rs_url: format!("rs://{addr}"),
                };
            }
        }
    }

    /// SIGKILL, the crash case.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for BrumeProcess {
    fn drop(&mut self) {
        self.kill9();
    }
}
