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
