//! The router with Rust clients over real sockets: pub/sub and RPC across transports and
//! serializers, options Autobahn no longer sends, realms, session close and shutdown.

// Test helpers fail the test by panicking.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use bytes::Bytes;
use hub::client::{Client, ClientError, ConnectOptions};
use hub::wamp::{Dict, Payload, Serializer, Value, dict, uris};
use tests::hub::{COMBOS, TestHub};

const WAIT: Duration = Duration::from_secs(20);

fn blob() -> Value {
    Value::Bytes(Bytes::from((0..=255u8).collect::<Vec<_>>()))
}

fn wamp_error(e: ClientError) -> String {
    match e {
        ClientError::Wamp(w) => w.uri,
        other => panic!("expected a WAMP error, got {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pubsub_and_rpc_across_every_transport_pair() {
    let hub = TestHub::start().await;
    for a in COMBOS {
        for b in COMBOS {
            let publisher = hub.client(a.0, a.1).await;
            let subscriber = hub.client(b.0, b.1).await;
            let mut sub = subscriber
                .subscribe("com.x.topic", Dict::new())
                .await
                .unwrap();
            let payload = Payload::new(
                vec![Value::Int(-3), blob(), Value::Float(0.25)],
                dict([("b", blob())]),
            );
            publisher
                .publish_acked("com.x.topic", payload.clone(), Dict::new())
                .await
                .unwrap();
            let ev = tokio::time::timeout(WAIT, sub.next())
                .await
                .unwrap()
                .unwrap();
            assert_eq!(ev.payload, payload, "{a:?} -> {b:?}");

            let mut reg = subscriber
                .register("com.x.echo", Dict::new())
                .await
                .unwrap();
            tokio::spawn(async move {
                if let Some(inv) = reg.next().await {
                    let p = inv.payload.clone();
                    let _ = inv.reply(p).await;
                }
            });
            let r = publisher
                .call_with("com.x.echo", payload.clone(), Dict::new())
                .await
                .unwrap();
            assert_eq!(r.payload, payload, "{a:?} -> {b:?} rpc");
            publisher.leave().await.unwrap();
            subscriber.leave().await.unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publisher_and_caller_disclosure() {
    let hub = TestHub::start().await;
    let a = hub.client("rawsocket", Serializer::MsgPack).await;
    let b = hub.client("websocket", Serializer::Json).await;
    let mut sub = b.subscribe("com.d.t", Dict::new()).await.unwrap();
    a.publish_acked(
        "com.d.t",
        Payload::empty(),
        dict([("disclose_me", true.into())]),
    )
    .await
    .unwrap();
    let ev = tokio::time::timeout(WAIT, sub.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        ev.details.get("publisher").and_then(Value::as_u64),
        Some(a.session_id())
    );
    assert!(ev.details.contains_key("publisher_authid"));
    a.publish_acked("com.d.t", Payload::empty(), Dict::new())
        .await
        .unwrap();
    let ev = tokio::time::timeout(WAIT, sub.next())
        .await
        .unwrap()
        .unwrap();
    assert!(
        !ev.details.contains_key("publisher"),
        "not disclosed unless asked"
    );

    let mut reg = b.register("com.d.p", Dict::new()).await.unwrap();
    tokio::spawn(async move {
        while let Some(inv) = reg.next().await {
            let caller = inv.details.get("caller").cloned().unwrap_or(Value::Null);
            let _ = inv.reply(Payload::args(vec![caller])).await;
        }
    });
    let r = a
        .call_with(
            "com.d.p",
            Payload::empty(),
            dict([("disclose_me", true.into())]),
        )
        .await
        .unwrap();
    assert_eq!(
        r.payload.arg(0).and_then(Value::as_u64),
        Some(a.session_id())
    );
    let r = a.call("com.d.p", vec![], Dict::new()).await.unwrap();
    assert_eq!(r.payload.arg(0), Some(&Value::Null));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_uris_and_options_are_refused() {
    let hub = TestHub::start().await;
    let c = hub.client("rawsocket", Serializer::Json).await;
    assert_eq!(
        wamp_error(c.call("com..bad", vec![], Dict::new()).await.unwrap_err()),
        uris::INVALID_URI
    );
    assert_eq!(
        wamp_error(c.call("com.a b", vec![], Dict::new()).await.unwrap_err()),
        uris::INVALID_URI
    );
    assert_eq!(
        wamp_error(c.subscribe("com.#x", Dict::new()).await.unwrap_err()),
        uris::INVALID_URI
    );
    assert_eq!(
        wamp_error(c.register("a..b", Dict::new()).await.unwrap_err()),
        uris::INVALID_URI,
        "empty components only in wildcard patterns"
    );
    assert!(
        c.register("a..b", dict([("match", "wildcard".into())]))
            .await
            .is_ok()
    );
    assert_eq!(
        wamp_error(
            c.publish_acked("x y", Payload::empty(), Dict::new())
                .await
                .unwrap_err()
        ),
        uris::INVALID_URI
    );
    assert_eq!(
        wamp_error(
            c.subscribe("a", dict([("match", "regex".into())]))
                .await
                .unwrap_err()
        ),
        uris::INVALID_ARGUMENT
    );
    assert_eq!(
        wamp_error(
            c.publish_acked("a", Payload::empty(), dict([("exclude", "nope".into())]))
                .await
                .unwrap_err()
        ),
        uris::INVALID_ARGUMENT
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_uris_when_the_realm_asks() {
    let hub = TestHub::start_with(|c| c.realms[0].strict_uris = true).await;
    let c = hub.client("rawsocket", Serializer::MsgPack).await;
    assert_eq!(
        wamp_error(c.subscribe("com.Upper", Dict::new()).await.unwrap_err()),
        uris::INVALID_URI
    );
    assert!(c.subscribe("com.lower_case", Dict::new()).await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_realm_is_aborted_with_no_such_realm() {
    let hub = TestHub::start().await;
    for (transport, ser) in COMBOS {
        let opts = ConnectOptions::new(&hub.url(transport), "nowhere").serializer(ser);
        match Client::connect(&opts).await {
            Err(ClientError::Aborted { reason, .. }) => assert_eq!(reason, uris::NO_SUCH_REALM),
            other => panic!("expected ABORT, got {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn realm_without_anonymous_refuses_anonymous_sessions() {
    let hub = TestHub::start_with(|c| c.realms[0].anonymous = false).await;
    let opts = ConnectOptions::new(&hub.rs_url(), "brume");
    match Client::connect(&opts).await {
        Err(ClientError::Aborted { reason, .. }) => {
            assert_eq!(reason, uris::NO_MATCHING_AUTH_METHOD)
        }
        other => panic!("expected ABORT, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leaving_removes_subscriptions_and_registrations() {
    let hub = TestHub::start().await;
    let realm = hub.hub.router().realm("brume").unwrap().clone();
    // The hub's own sessions (the things service).
    let base = realm.session_count();
    let a = hub.client("websocket", Serializer::Json).await;
    let _sub = a.subscribe("com.l.t", Dict::new()).await.unwrap();
    let _reg = a.register("com.l.p", Dict::new()).await.unwrap();
    assert_eq!(realm.session_count(), base + 1);
    a.leave().await.unwrap();
    let b = hub.client("rawsocket", Serializer::Json).await;
    // The procedure is free again, and nobody is left subscribed.
    assert!(b.register("com.l.p", Dict::new()).await.is_ok());
    assert_eq!(
        wamp_error(b.call("com.l.none", vec![], Dict::new()).await.unwrap_err()),
        uris::NO_SUCH_PROCEDURE
    );
    tokio::time::timeout(WAIT, async {
        while realm.session_count() != base + 1 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_registration_round_robin() {
    let hub = TestHub::start().await;
    let caller = hub.client("rawsocket", Serializer::MsgPack).await;
    let mut callees = Vec::new();
    for n in 0..3 {
        let c = hub.client("rawsocket", Serializer::MsgPack).await;
        let mut reg = c
            .register("com.rr", dict([("invoke", "roundrobin".into())]))
            .await
            .unwrap();
        tokio::spawn(async move {
            while let Some(inv) = reg.next().await {
                let _ = inv.reply(Payload::args(vec![Value::Int(n)])).await;
            }
        });
        callees.push(c);
    }
    let mut seen = Vec::new();
    for _ in 0..6 {
        let r = caller.call("com.rr", vec![], Dict::new()).await.unwrap();
        seen.push(r.payload.arg(0).and_then(Value::as_i64).unwrap());
    }
    assert_eq!(seen, vec![0, 1, 2, 0, 1, 2]);
    let other = hub.client("rawsocket", Serializer::MsgPack).await;
    assert_eq!(
        wamp_error(
            other
                .register("com.rr", dict([("invoke", "random".into())]))
                .await
                .unwrap_err()
        ),
        uris::PROCEDURE_ALREADY_EXISTS,
        "a different policy for the same URI"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_sends_goodbye_system_shutdown() {
    let hub = TestHub::start().await;
    let ws = hub.client("websocket", Serializer::Json).await;
    let rs = hub.client("rawsocket", Serializer::MsgPack).await;
    let started = std::time::Instant::now();
    let TestHub { hub, data, .. } = hub;
    assert!(
        hub.shutdown().await,
        "every task finished within the grace period"
    );
    assert!(started.elapsed() < Duration::from_secs(3));
    for c in [ws, rs] {
        let reason = tokio::time::timeout(WAIT, c.closed()).await.unwrap();
        assert_eq!(reason.as_deref(), Some(uris::CLOSE_SYSTEM_SHUTDOWN));
    }
    drop(data);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsubscribe_unregister_and_leaving_publish_their_meta_events() {
    let hub = TestHub::start().await;
    let watcher = hub.local_client("watcher");
    let mut meta = watcher
        .subscribe("wamp.", dict([("match", Value::from("prefix"))]))
        .await
        .unwrap();
    // (topic, session, subscription or registration) of the next meta event this test is about.
    let mut next = async || loop {
        let ev = tokio::time::timeout(WAIT, meta.next())
            .await
            .expect("a meta event in time")
            .expect("subscription open");
        let topic = ev.topic.unwrap_or_default();
        if topic.ends_with(".on_unsubscribe")
            || topic.ends_with(".on_unregister")
            || topic.ends_with(".on_delete")
        {
            let id = |i| ev.payload.arg(i).and_then(Value::as_u64).unwrap();
            return (topic, id(0), id(1));
        }
    };

    let a = hub.client("rawsocket", Serializer::Json).await;
    let b = hub.client("websocket", Serializer::MsgPack).await;
    let (sa, sb) = (a.session_id(), b.session_id());
    let sub_a = a.subscribe("com.m.t", Dict::new()).await.unwrap();
    let sub_b = b.subscribe("com.m.t", Dict::new()).await.unwrap();
    let sub = sub_a.id;
    assert_eq!(sub_b.id, sub);

    // Not the last subscriber: no on_delete.
    a.unsubscribe(sub_a).await.unwrap();
    assert_eq!(
        next().await,
        ("wamp.subscription.on_unsubscribe".into(), sa, sub)
    );
    let reg = a.register("com.m.p", Dict::new()).await.unwrap();
    let reg_id = reg.id;
    a.unregister(reg).await.unwrap();
    assert_eq!(
        next().await,
        ("wamp.registration.on_unregister".into(), sa, reg_id)
    );
    assert_eq!(
        next().await,
        ("wamp.registration.on_delete".into(), sa, reg_id)
    );

    // Leaving ends b's subscription (the last one) and registration.
    let q = b.register("com.m.q", Dict::new()).await.unwrap().id;
    b.leave().await.unwrap();
    let mut left = vec![next().await, next().await, next().await, next().await];
    left.sort();
    let mut want = vec![
        ("wamp.registration.on_delete".to_owned(), sb, q),
        ("wamp.registration.on_unregister".to_owned(), sb, q),
        ("wamp.subscription.on_delete".to_owned(), sb, sub),
        ("wamp.subscription.on_unsubscribe".to_owned(), sb, sub),
    ];
    want.sort();
    assert_eq!(left, want);
}
