//! Authentication with the Rust client over real sockets: every method over every transport and
//! serializer, the identity WELCOME reports, identical failures for a wrong secret and an unknown
//! authid, anonymous refusal, the challenge naming the session it grants, and the HELLO deadline
//! covering an AUTHENTICATE that never comes.

// Test helpers fail the test by panicking.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use hub::client::{Client, ClientAuth, ClientError, ConnectOptions};
use hub::router::auth::wampcra;
use hub::wamp::{Dict, Payload, Value, uris};
use serde_json::json;
use tests::auth::{self, METHODS, REALM};
use tests::hub::{COMBOS, TestHub};
use tests::raw::RawConn;

/// A hub with the default anonymous realm `brume` and the authenticated realm `secure`.
async fn secure_hub(data: &tempfile::TempDir) -> TestHub {
    let realm = auth::realm(data.path());
    TestHub::start_with(|c| {
        c.realms.push(realm);
        c.router.hello_timeout_secs = 1;
    })
    .await
}

fn opts(
    hub: &TestHub,
    transport: &str,
    ser: hub::wamp::Serializer,
    a: ClientAuth,
) -> ConnectOptions {
    ConnectOptions::new(&hub.url(transport), REALM)
        .serializer(ser)
        .auth(a)
}

fn text<'a>(d: &'a Dict, k: &str) -> &'a str {
    d.get(k).and_then(Value::as_str).unwrap_or_default()
}

fn expect_abort(r: Result<Client, ClientError>, reason: &str, what: &str) -> Option<String> {
    match r {
        Err(ClientError::Aborted {
            reason: got,
            message,
        }) => {
            assert_eq!(got, reason, "{what}");
            message
        }
        Err(other) => panic!("{what}: expected ABORT {reason}, got {other}"),
        Ok(_) => panic!("{what}: expected ABORT {reason}, but the session was welcomed"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_method_over_every_transport_and_serializer() {
    let data = tempfile::tempdir().unwrap();
    let hub = secure_hub(&data).await;
    for method in METHODS {
        for (transport, ser) in COMBOS {
            let what = format!("{method} over {transport}/{ser:?}");
            let client = Client::connect(&opts(&hub, transport, ser, auth::good(method)))
                .await
                .unwrap_or_else(|e| panic!("{what}: {e}"));
            let w = client.welcome_details();
            assert_eq!(text(w, "authid"), auth::authid(method), "{what}");
            assert_eq!(text(w, "authrole"), "app", "{what}");
            let expected_method = method.split('-').next().unwrap();
            assert_eq!(text(w, "authmethod"), expected_method, "{what}");
            assert_eq!(text(w, "authprovider"), "static", "{what}");
            // The session works.
            client
                .publish_acked("com.auth.check", Payload::default(), Dict::new())
                .await
                .unwrap_or_else(|e| panic!("{what}: publish: {e}"));
            client.leave().await.unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_secrets_and_unknown_authids_fail_alike() {
    let data = tempfile::tempdir().unwrap();
    let hub = secure_hub(&data).await;
    for method in METHODS {
        for (case, a) in [
            ("wrong secret", auth::wrong_secret(method)),
            ("unknown authid", auth::unknown_authid(method)),
        ] {
            for transport in ["websocket", "rawsocket"] {
                let what = format!("{method}, {case}, {transport}");
                let r = Client::connect(&opts(
                    &hub,
                    transport,
                    hub::wamp::Serializer::Json,
                    a.clone(),
                ))
                .await;
                let message = expect_abort(r, uris::AUTHENTICATION_FAILED, &what);
                // No hint which part was wrong.
                assert_eq!(message.as_deref(), Some("authentication failed"), "{what}");
            }
        }
    }
    // The right credentials still work afterwards.
    let c = Client::connect(&opts(
        &hub,
        "rawsocket",
        hub::wamp::Serializer::MsgPack,
        auth::good("ticket"),
    ))
    .await
    .unwrap();
    c.leave().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_only_where_the_realm_admits_it() {
    let data = tempfile::tempdir().unwrap();
    let hub = secure_hub(&data).await;
    let r = Client::connect(&opts(
        &hub,
        "websocket",
        hub::wamp::Serializer::Json,
        ClientAuth::Anonymous,
    ))
    .await;
    expect_abort(
        r,
        uris::NO_MATCHING_AUTH_METHOD,
        "anonymous on the secure realm",
    );
    // The default realm keeps anonymous access.
    let c = hub.client("websocket", hub::wamp::Serializer::Json).await;
    assert_eq!(text(c.welcome_details(), "authrole"), "anonymous");
    assert_eq!(text(c.welcome_details(), "authmethod"), "anonymous");
    // A principal of another realm is unknown here.
    let r =
        Client::connect(&ConnectOptions::new(&hub.ws_url(), "brume").auth(auth::good("ticket")))
            .await;
    expect_abort(
        r,
        uris::NO_MATCHING_AUTH_METHOD,
        "ticket on a realm without principals",
    );
}

/// HELLO for `authid` with `method` over a raw JSON RawSocket; returns the connection and the
/// CHALLENGE.
async fn raw_challenge(hub: &TestHub, method: &str, authid: &str) -> (RawConn, serde_json::Value) {
    let (mut c, _) = RawConn::handshake(hub.addr, 1).await;
    let hello =
        json!([1, REALM, {"roles": {"caller": {}}, "authmethods": [method], "authid": authid}]);
    c.send(hello.to_string().as_bytes()).await;
    let (_, body) = c.recv().await.expect("CHALLENGE");
    let challenge: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        challenge[0],
        json!(4),
        "CHALLENGE expected, got {challenge}"
    );
    assert_eq!(challenge[1], json!(method));
    (c, challenge)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wampcra_challenge_names_the_session_it_grants() {
    let data = tempfile::tempdir().unwrap();
    let hub = secure_hub(&data).await;
    let (mut c, challenge) = raw_challenge(&hub, "wampcra", auth::CRA_PLAIN_AUTHID).await;
    let text = challenge[2]["challenge"].as_str().unwrap();
    let fields: serde_json::Value = serde_json::from_str(text).unwrap();
    assert_eq!(fields["authid"], json!(auth::CRA_PLAIN_AUTHID));
    assert_eq!(fields["authrole"], json!("app"));
    assert_eq!(fields["authmethod"], json!("wampcra"));
    assert_eq!(fields["authprovider"], json!("static"));
    assert!(fields["nonce"].as_str().is_some_and(|n| !n.is_empty()));
    assert!(
        fields["timestamp"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z'))
    );
    let signature = wampcra::sign(auth::CRA_PLAIN_SECRET.as_bytes(), text);
    c.send(json!([5, signature, {}]).to_string().as_bytes())
        .await;
    let (_, body) = c.recv().await.expect("WELCOME");
    let welcome: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(welcome[0], json!(2), "{welcome}");
    assert_eq!(
        welcome[1], fields["session"],
        "WELCOME has the session id the challenge named"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_authenticate_never_sent_closes_the_connection_at_the_hello_deadline() {
    let data = tempfile::tempdir().unwrap();
    let hub = secure_hub(&data).await; // hello_timeout_secs = 1
    for method in ["ticket", "wampcra"] {
        let authid = if method == "ticket" {
            auth::TICKET_AUTHID
        } else {
            auth::CRA_SALTED_AUTHID
        };
        let started = Instant::now();
        let (mut c, _) = raw_challenge(&hub, method, authid).await;
        let rest = c.recv_until_closed().await;
        let waited = started.elapsed();
        assert!(
            rest.iter().all(|m| m[0] != json!(2)),
            "no WELCOME: {rest:?}"
        );
        assert!(
            waited >= Duration::from_millis(900) && waited < Duration::from_secs(4),
            "{method}: closed after {waited:?}, the deadline is 1 s"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anything_but_authenticate_after_a_challenge_is_a_protocol_violation() {
    let data = tempfile::tempdir().unwrap();
    let hub = secure_hub(&data).await;
    let (mut c, _) = raw_challenge(&hub, "ticket", auth::TICKET_AUTHID).await;
    c.send(br#"[16, 1, {}, "com.sneaky"]"#).await;
    let rest = c.recv_until_closed().await;
    assert!(
        rest.last()
            .is_some_and(|m| m[0] == json!(3) && m[2] == json!(uris::PROTOCOL_VIOLATION)),
        "{rest:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cryptosign_without_authid_is_found_by_its_public_key() {
    let data = tempfile::tempdir().unwrap();
    let hub = secure_hub(&data).await;
    let key = hub::router::auth::cryptosign::PrivateKey::from_hex(auth::DEVICE_KEY).unwrap();
    let a = ClientAuth::Cryptosign {
        authid: None,
        key,
        channel_binding: false,
    };
    let c = Client::connect(&opts(&hub, "rawsocket", hub::wamp::Serializer::MsgPack, a))
        .await
        .unwrap();
    assert_eq!(text(c.welcome_details(), "authid"), auth::DEVICE_AUTHID);
    assert_eq!(text(c.welcome_details(), "authmethod"), "cryptosign");
    // An unknown key without authid is refused like any failure.
    let stranger = ClientAuth::Cryptosign {
        authid: None,
        key: hub::router::auth::cryptosign::PrivateKey::generate(),
        channel_binding: false,
    };
    let r = Client::connect(&opts(
        &hub,
        "rawsocket",
        hub::wamp::Serializer::MsgPack,
        stranger,
    ))
    .await;
    expect_abort(r, uris::AUTHENTICATION_FAILED, "unknown key");
}
