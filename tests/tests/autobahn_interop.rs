//! Autobahn-Python against Brume's router over every transport and serializer, with Autobahn on
//! both ends and with an in-process Rust session on one end.

// Test helpers fail the test by panicking.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use bytes::Bytes;
use hub::wamp::{Dict, Payload, Value};
use tests::hub::{COMBOS, TestHub};
use tests::peers::{assert_success, run_script};

fn ser_name(s: hub::wamp::Serializer) -> &'static str {
    match s {
        hub::wamp::Serializer::Json => "json",
        hub::wamp::Serializer::MsgPack => "msgpack",
    }
}

async fn interop(
    hub: &TestHub,
    a: (&str, hub::wamp::Serializer),
    b: (&str, hub::wamp::Serializer),
) {
    let args = vec![
        hub.url(a.0),
        ser_name(a.1).to_owned(),
        hub.url(b.0),
        ser_name(b.1).to_owned(),
    ];
    let out = run_script("autobahn_interop.py", &args, Duration::from_secs(120)).await;
    assert_success("autobahn_interop.py", &out);
    assert!(String::from_utf8_lossy(&out.stdout).contains("ALL OK"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn autobahn_on_both_ends_over_every_transport_and_serializer() {
    let hub = TestHub::start().await;
    for combo in COMBOS {
        interop(&hub, combo, combo).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payloads_cross_serializers_intact() {
    let hub = TestHub::start().await;
    // JSON (binary as base64 strings) on one side, MessagePack (native bin) on the other.
    interop(&hub, COMBOS[0], COMBOS[3]).await;
    interop(&hub, COMBOS[1], COMBOS[2]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn autobahn_with_an_in_process_rust_session() {
    let hub = TestHub::start().await;
    let rust = hub.local_client("rust-peer");

    let mut echo = rust.register("com.rust.echo", Dict::new()).await.unwrap();
    tokio::spawn(async move {
        while let Some(inv) = echo.next().await {
            let p = inv.payload.clone();
            let _ = inv.reply(p).await;
        }
    });
    let mut publish_now = rust
        .register("com.rust.publish_now", Dict::new())
        .await
        .unwrap();
    let publisher = rust.clone();
    tokio::spawn(async move {
        while let Some(inv) = publish_now.next().await {
            let blob: Vec<u8> = (0..=255).collect();
            let payload = Payload::new(
                vec![Value::Bytes(Bytes::from(blob))],
                hub::wamp::dict([("n", Value::Int(1))]),
            );
            publisher
                .publish_acked("com.rust.events", payload, Dict::new())
                .await
                .unwrap();
            let _ = inv.reply(Payload::args(vec!["published".into()])).await;
        }
    });
    let mut call_python = rust
        .register("com.rust.call_python", Dict::new())
        .await
        .unwrap();
    let caller = rust.clone();
    tokio::spawn(async move {
        while let Some(inv) = call_python.next().await {
            let r = caller
                .call(
                    "com.py.double",
                    inv.payload.arg_list().to_vec(),
                    Dict::new(),
                )
                .await
                .unwrap();
            let _ = inv.reply(r.payload).await;
        }
    });
    let mut events = rust.subscribe("com.py.events", Dict::new()).await.unwrap();

    for (transport, ser) in COMBOS {
        let args = vec![hub.url(transport), ser_name(ser).to_owned()];
        let out = run_script("autobahn_with_rust.py", &args, Duration::from_secs(120)).await;
        assert_success("autobahn_with_rust.py", &out);
        let ev = tokio::time::timeout(Duration::from_secs(20), events.next())
            .await
            .expect("event from Autobahn in time")
            .expect("subscription open");
        let blob: Vec<u8> = (0..=255).collect();
        assert_eq!(
            ev.payload.arg_list(),
            &[Value::from("hello"), Value::Bytes(Bytes::from(blob))],
            "{transport}/{ser:?}"
        );
    }
}
