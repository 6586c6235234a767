//! TLS: WebSocket (`wss://`) and RawSocket (`rss://`) on one TLS listener, every authentication
//! method over it, cryptosign bound to the TLS channel with RFC 9266 `tls-exporter` (and a
//! signature made for another channel refused), `tls-unique` refused with a clear reason, and
//! bad certificate or key files refused at startup naming the key.

// Test helpers fail the test by panicking.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;

use hub::client::{Client, ClientAuth, ClientError, ConnectOptions};
use hub::config::{ListenerKind, ListenerSection, TlsSection};
use hub::router::auth::cryptosign::PrivateKey;
use hub::router::auth::secret::hex_array;
use hub::server::Hub;
use hub::transport::WampTransport;
use hub::transport::rawsocket::RawSocket;
use hub::transport::tls::{self, TlsClientConfig};
use hub::wamp::{Dict, Message, Payload, Serializer, Value, dict, uris};
use tests::auth::{self, METHODS, REALM};
use tests::certs::TestCerts;
use tests::hub::TestHub;

fn tls_listener(certs: &TestCerts) -> ListenerSection {
    ListenerSection {
        name: "tls".into(),
        kind: ListenerKind::Both,
        address: "127.0.0.1:0".into(),
        path: "/ws".into(),
        serializers: vec!["json".into(), "msgpack".into()],
        max_message_size: 1024 * 1024,
        allow_anonymous_remote: false,
        tls: Some(certs.section()),
    }
}

/// A hub with the plain listener `wamp` and the TLS listener `tls`, realms `brume` and `secure`.
async fn tls_hub(certs: &TestCerts, data: &tempfile::TempDir) -> (TestHub, SocketAddr) {
    let realm = auth::realm(data.path());
    let listener = tls_listener(certs);
    let hub = TestHub::start_with(|c| {
        c.realms.push(realm);
        c.listeners.push(listener);
    })
    .await;
    let addr = hub.hub.local_addr("tls").unwrap();
    (hub, addr)
}

fn url(transport: &str, addr: SocketAddr) -> String {
    match transport {
        "websocket" => format!("wss://localhost:{}/ws", addr.port()),
        _ => format!("rss://127.0.0.1:{}", addr.port()),
    }
}

fn device(channel_binding: bool) -> ClientAuth {
    ClientAuth::Cryptosign {
        authid: Some(auth::DEVICE_AUTHID.into()),
        key: PrivateKey::from_hex(auth::DEVICE_KEY).unwrap(),
        channel_binding,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_method_over_wss_and_rss() {
    let certs = TestCerts::generate();
    let data = tempfile::tempdir().unwrap();
    let (_hub, addr) = tls_hub(&certs, &data).await;
    for transport in ["websocket", "rawsocket"] {
        for ser in [Serializer::Json, Serializer::MsgPack] {
            // Anonymous on the default realm, with a round trip.
            let opts = ConnectOptions::new(&url(transport, addr), "brume")
                .serializer(ser)
                .tls(certs.client_config());
            let a = Client::connect(&opts).await.unwrap();
            let b = Client::connect(&opts).await.unwrap();
            let mut sub = b.subscribe("com.tls.topic", Dict::new()).await.unwrap();
            a.publish_acked(
                "com.tls.topic",
                Payload::args(vec!["over TLS".into()]),
                Dict::new(),
            )
            .await
            .unwrap();
            let ev = tokio::time::timeout(std::time::Duration::from_secs(20), sub.next())
                .await
                .unwrap()
                .unwrap();
            assert_eq!(ev.payload.arg(0), Some(&Value::from("over TLS")));
            // Every method on the secure realm.
            for method in METHODS {
                let what = format!("{method} over {transport}/{ser:?} with TLS");
                let opts = ConnectOptions::new(&url(transport, addr), REALM)
                    .serializer(ser)
                    .tls(certs.client_config())
                    .auth(auth::good(method));
                let c = Client::connect(&opts)
                    .await
                    .unwrap_or_else(|e| panic!("{what}: {e}"));
                assert_eq!(
                    c.welcome_details().get("authid").and_then(Value::as_str),
                    Some(auth::authid(method)),
                    "{what}"
                );
                c.leave().await.unwrap();
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cryptosign_bound_to_the_tls_channel() {
    let certs = TestCerts::generate();
    let data = tempfile::tempdir().unwrap();
    let (hub, addr) = tls_hub(&certs, &data).await;
    for transport in ["websocket", "rawsocket"] {
        let opts = ConnectOptions::new(&url(transport, addr), REALM)
            .tls(certs.client_config())
            .auth(device(true));
        let c = Client::connect(&opts)
            .await
            .unwrap_or_else(|e| panic!("{transport}: {e}"));
        assert_eq!(
            c.welcome_details()
                .get("authmethod")
                .and_then(Value::as_str),
            Some("cryptosign")
        );
        c.leave().await.unwrap();
    }
    // Without TLS there is no channel to bind to: the client refuses before connecting.
    let opts = ConnectOptions::new(&hub.ws_url(), REALM).auth(device(true));
    assert!(matches!(
        Client::connect(&opts).await,
        Err(ClientError::Auth(m)) if m.contains("TLS")
    ));
}

/// A raw TLS RawSocket connection (JSON) for driving the handshake by hand.
struct RawTls {
    t: RawSocket<tls::ClientTlsStream<tokio::net::TcpStream>>,
    binding: [u8; 32],
}

impl RawTls {
    async fn connect(addr: SocketAddr, config: &TlsClientConfig) -> RawTls {
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let stream = config.connect(tcp, "localhost").await.unwrap();
        let binding = *tls::client_channel_binding(&stream)
            .expect("TLS 1.3 gives a tls-exporter value")
            .as_bytes();
        let t = RawSocket::connect(stream, Serializer::Json, 1 << 20)
            .await
            .unwrap();
        RawTls { t, binding }
    }

    async fn send(&mut self, msg: &Message) {
        let bytes = Serializer::Json.encode(msg).unwrap();
        self.t.queue(&bytes).unwrap();
        self.t.flush().await.unwrap();
    }

    async fn recv(&mut self) -> Message {
        let bytes = tokio::time::timeout(std::time::Duration::from_secs(20), self.t.recv())
            .await
            .expect("a message in time")
            .unwrap()
            .expect("a message, not a close");
        Serializer::Json.decode(&bytes).unwrap()
    }

    /// Sends HELLO for the device with `channel_binding`; returns the challenge bytes, or the
    /// ABORT if the router refused.
    async fn hello(&mut self, channel_binding: &str) -> Result<[u8; 32], Message> {
        let key = PrivateKey::from_hex(auth::DEVICE_KEY).unwrap();
        let details = dict([
            (
                "roles",
                Value::Dict(dict([("caller", Value::Dict(Dict::new()))])),
            ),
            ("authmethods", Value::List(vec!["cryptosign".into()])),
            ("authid", Value::from(auth::DEVICE_AUTHID)),
            (
                "authextra",
                Value::Dict(dict([
                    ("pubkey", Value::from(key.public_key_hex())),
                    ("channel_binding", Value::from(channel_binding)),
                ])),
            ),
        ]);
        self.send(&Message::Hello {
            realm: REALM.into(),
            details,
        })
        .await;
        match self.recv().await {
            Message::Challenge { method, extra } => {
                assert_eq!(method, "cryptosign");
                assert_eq!(
                    extra.get("channel_binding").and_then(Value::as_str),
                    Some("tls-exporter")
                );
                let hex = extra.get("challenge").and_then(Value::as_str).unwrap();
                Ok(hex_array::<32>(hex).unwrap())
            }
            other => Err(other),
        }
    }

    async fn authenticate(&mut self, signature: String) -> Message {
        self.send(&Message::Authenticate {
            signature,
            extra: Dict::new(),
        })
        .await;
        self.recv().await
    }
}

fn abort_reason(m: &Message) -> (&str, Option<&str>) {
    match m {
        Message::Abort { reason, details } => (
            reason.as_str(),
            details.get("message").and_then(Value::as_str),
        ),
        other => panic!("expected ABORT, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signature_made_for_another_channel_is_refused() {
    let certs = TestCerts::generate();
    let data = tempfile::tempdir().unwrap();
    let (_hub, addr) = tls_hub(&certs, &data).await;
    let config = certs.client_config();
    let key = PrivateKey::from_hex(auth::DEVICE_KEY).unwrap();

    // The honest case, by hand: sign with this connection's exporter value.
    let mut honest = RawTls::connect(addr, &config).await;
    let challenge = honest.hello("tls-exporter").await.unwrap();
    let sig = key.sign_challenge(&challenge, Some(&honest.binding));
    assert!(matches!(
        honest.authenticate(sig).await,
        Message::Welcome { .. }
    ));

    // A relay: the router's challenge on connection B is answered by a client that signed it
    // on its own connection A (as a client talking to a man in the middle would).
    let a = RawTls::connect(addr, &config).await;
    let mut b = RawTls::connect(addr, &config).await;
    assert_ne!(
        a.binding, b.binding,
        "each connection has its own exporter value"
    );
    let challenge = b.hello("tls-exporter").await.unwrap();
    let relayed = key.sign_challenge(&challenge, Some(&a.binding));
    let answer = b.authenticate(relayed).await;
    assert_eq!(
        abort_reason(&answer),
        (uris::AUTHENTICATION_FAILED, Some("authentication failed"))
    );

    // Binding requested, but the signature is unbound.
    let mut c = RawTls::connect(addr, &config).await;
    let challenge = c.hello("tls-exporter").await.unwrap();
    let unbound = key.sign_challenge(&challenge, None);
    assert_eq!(
        abort_reason(&c.authenticate(unbound).await).0,
        uris::AUTHENTICATION_FAILED
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_unique_is_refused_with_a_reason() {
    let certs = TestCerts::generate();
    let data = tempfile::tempdir().unwrap();
    let (_hub, addr) = tls_hub(&certs, &data).await;
    let mut c = RawTls::connect(addr, &certs.client_config()).await;
    let refused = c.hello("tls-unique").await.unwrap_err();
    let (reason, message) = abort_reason(&refused);
    assert_eq!(reason, uris::AUTHENTICATION_FAILED);
    let message = message.unwrap();
    assert!(
        message.contains("tls-unique") && message.contains("tls-exporter"),
        "{message}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_check_the_router_certificate() {
    let certs = TestCerts::generate();
    let data = tempfile::tempdir().unwrap();
    let (_hub, addr) = tls_hub(&certs, &data).await;
    // A CA the router's certificate does not come from.
    let other = TestCerts::generate();
    let opts = ConnectOptions::new(&url("websocket", addr), "brume").tls(other.client_config());
    assert!(matches!(
        Client::connect(&opts).await,
        Err(ClientError::Tls(_))
    ));
    // Mozilla's roots do not know a test CA either.
    let opts = ConnectOptions::new(&url("rawsocket", addr), "brume");
    assert!(matches!(
        Client::connect(&opts).await,
        Err(ClientError::Tls(_))
    ));
    // A plain client on the TLS port gets nowhere.
    let opts = ConnectOptions::new(&format!("rs://{addr}"), "brume");
    assert!(Client::connect(&opts).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_certificate_or_key_files_stop_the_hub_naming_the_key() {
    let certs = TestCerts::generate();
    let other = TestCerts::generate();
    let garbage = certs.dir.path().join("garbage.pem");
    std::fs::write(&garbage, "not a PEM file").unwrap();
    let missing = certs.dir.path().join("missing.pem");
    let cases = [
        (
            missing.clone(),
            certs.key_file.clone(),
            "listeners[1].tls.cert_file",
        ),
        (
            certs.cert_file.clone(),
            missing,
            "listeners[1].tls.key_file",
        ),
        (
            garbage.clone(),
            certs.key_file.clone(),
            "listeners[1].tls.cert_file",
        ),
        (
            certs.cert_file.clone(),
            garbage,
            "listeners[1].tls.key_file",
        ),
        // A key that belongs to another certificate.
        (
            certs.cert_file.clone(),
            other.key_file.clone(),
            "listeners[1].tls",
        ),
    ];
    for (cert_file, key_file, key) in cases {
        let data = tempfile::tempdir().unwrap();
        let mut config = hub::config::Config::default();
        config.hub.data_dir = data.path().to_owned();
        config.listeners[0].address = "127.0.0.1:0".into();
        config.listeners[1].address = "127.0.0.1:0".into();
        config.listeners[1].tls = Some(TlsSection {
            cert_file: cert_file.clone(),
            key_file: key_file.clone(),
        });
        let err = Hub::start(config).await.unwrap_err().to_string();
        assert!(
            err.starts_with(&format!("{key}:")),
            "{cert_file:?} / {key_file:?}: expected an error naming {key}, got {err}"
        );
    }
}
