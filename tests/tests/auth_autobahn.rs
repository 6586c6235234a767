//! Autobahn-Python authenticating to Brume with its own crypto (`derive_key`, `compute_wcs`,
//! `CryptosignKey`): every method over WebSocket and RawSocket, plain and TLS; wrong secrets and
//! unknown authids refused alike; `tls-unique` refused with a clear reason; a CHALLENGE never
//! answered closed at the HELLO deadline.

// Test helpers fail the test by panicking.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use hub::config::{ListenerKind, ListenerSection};
use hub::wamp::uris;
use serde_json::{Value, json};
use tests::auth::{self, METHODS, REALM};
use tests::certs::TestCerts;
use tests::hub::TestHub;
use tests::peers::{assert_success, run_script};

struct Setup {
    hub: TestHub,
    certs: TestCerts,
    _data: tempfile::TempDir,
}

impl Setup {
    async fn start() -> Setup {
        let certs = TestCerts::generate();
        let data = tempfile::tempdir().unwrap();
        let realm = auth::realm(data.path());
        let tls = ListenerSection {
            name: "tls".into(),
            kind: ListenerKind::Both,
            address: "127.0.0.1:0".into(),
            path: "/ws".into(),
            serializers: vec!["json".into(), "msgpack".into()],
            max_message_size: 1024 * 1024,
            allow_anonymous_remote: false,
            tls: Some(certs.section()),
        };
        let hub = TestHub::start_with(|c| {
            c.realms.push(realm);
            c.listeners.push(tls);
            c.router.hello_timeout_secs = 2;
        })
        .await;
        Setup {
            hub,
            certs,
            _data: data,
        }
    }

    /// The URL for a transport, plain or TLS.
    fn url(&self, transport: &str, tls: bool) -> String {
        if !tls {
            return self.hub.url(transport);
        }
        let port = self.hub.hub.local_addr("tls").unwrap().port();
        match transport {
            "websocket" => format!("wss://localhost:{port}/ws"),
            _ => format!("rss://127.0.0.1:{port}"),
        }
    }

    /// A case for `method` (a test method name) with `authid` and `secret`.
    fn case(&self, name: &str, transport: &str, tls: bool, ser: &str, method: &str) -> Value {
        let (wire_method, secret) = match method {
            "ticket" => ("ticket", auth::TICKET),
            "wampcra-salted" => ("wampcra", auth::CRA_PASSWORD),
            "wampcra-plain" => ("wampcra", auth::CRA_PLAIN_SECRET),
            "cryptosign" => ("cryptosign", auth::DEVICE_KEY),
            other => panic!("unknown method {other}"),
        };
        json!({
            "name": name,
            "url": self.url(transport, tls),
            "serializer": ser,
            "realm": REALM,
            "method": wire_method,
            "authid": auth::authid(method),
            "secret": secret,
            "ca": self.certs.ca_file,
            "expect": "welcome",
            "authid_expected": auth::authid(method),
            "authrole": "app",
            "authmethod": wire_method,
        })
    }

    async fn run(&self, cases: Vec<Value>) {
        let file = self.certs.dir.path().join("cases.json");
        std::fs::write(&file, serde_json::to_vec_pretty(&cases).unwrap()).unwrap();
        let args = vec![file.display().to_string()];
        let out = run_script("auth_autobahn.py", &args, Duration::from_secs(300)).await;
        assert_success("auth_autobahn.py", &out);
        assert!(String::from_utf8_lossy(&out.stdout).contains("ALL OK"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn autobahn_authenticates_with_every_method_over_every_transport_plain_and_tls() {
    let s = Setup::start().await;
    let mut cases = Vec::new();
    for tls in [false, true] {
        for (i, transport) in ["websocket", "rawsocket"].into_iter().enumerate() {
            for (j, method) in METHODS.into_iter().enumerate() {
                // Alternate serializers so both meet every method and transport.
                let ser = if (i + j) % 2 == 0 { "json" } else { "msgpack" };
                let name = format!("{method} over {transport} ({ser}, tls={tls})");
                cases.push(s.case(&name, transport, tls, ser, method));
            }
        }
    }
    s.run(cases).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn autobahn_joins_over_tls_1_2_and_tls_1_3() {
    let s = Setup::start().await;
    let mut cases = Vec::new();
    for version in ["1.2", "1.3"] {
        for (transport, ser) in [("websocket", "json"), ("rawsocket", "msgpack")] {
            let name = format!("ticket over {transport} with TLS {version} only");
            let mut case = s.case(&name, transport, true, ser, "ticket");
            case["tls_version"] = json!(version);
            cases.push(case);
        }
    }
    s.run(cases).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn autobahn_failures_look_alike_and_are_final() {
    let s = Setup::start().await;
    let mut cases = Vec::new();
    for (transport, tls, ser) in [("websocket", false, "json"), ("rawsocket", true, "msgpack")] {
        for method in METHODS {
            let mut wrong = s.case(
                &format!("{method} wrong secret"),
                transport,
                tls,
                ser,
                method,
            );
            wrong["secret"] = if method == "cryptosign" {
                // Another key pair altogether.
                json!("6e1fde9cf9e2359a87420b65a87dc0c66136e66945196ba2475990d8a0c3a25b")
            } else {
                json!(format!("{}x", wrong["secret"].as_str().unwrap()))
            };
            let mut unknown = s.case(
                &format!("{method} unknown authid"),
                transport,
                tls,
                ser,
                method,
            );
            unknown["authid"] = json!("nobody");
            for mut c in [wrong, unknown] {
                c["expect"] = json!("abort");
                c["reason"] = json!(uris::AUTHENTICATION_FAILED);
                c["message"] = json!("authentication failed");
                cases.push(c);
            }
        }
    }
    // Anonymous where the realm requires authentication.
    let mut anon = s.case("anonymous refused", "websocket", false, "json", "ticket");
    anon["method"] = json!("anonymous");
    anon["authid"] = Value::Null;
    anon["expect"] = json!("abort");
    anon["reason"] = json!(uris::NO_MATCHING_AUTH_METHOD);
    cases.push(anon);
    // Autobahn's only channel binding, tls-unique, is refused with the reason.
    let mut unique = s.case(
        "tls-unique refused",
        "websocket",
        true,
        "json",
        "cryptosign",
    );
    unique["channel_binding"] = json!("tls-unique");
    unique["expect"] = json!("abort");
    unique["reason"] = json!(uris::AUTHENTICATION_FAILED);
    unique["message_contains"] = json!(["tls-unique", "tls-exporter"]);
    cases.push(unique);
    // A CHALLENGE never answered: closed at the 2 s HELLO deadline.
    for (transport, method) in [("rawsocket", "wampcra-salted"), ("websocket", "cryptosign")] {
        let mut silent = s.case(
            &format!("{method} never answered"),
            transport,
            false,
            "json",
            method,
        );
        silent["expect"] = json!("closed");
        silent["at_least_seconds"] = json!(1.5);
        silent["within_seconds"] = json!(5);
        cases.push(silent);
    }
    s.run(cases).await;
}
