//! The WAMP meta API over real sockets: the registration meta events REGISTER publishes, and
//! `wamp.registration.remove` / `wamp.subscription.remove` with their revocations and meta events.

// Test helpers fail the test by panicking.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use hub::client::{Client, ClientError, Subscription};
use hub::wamp::{Dict, List, Serializer, Value, dict, uris};
use serde_json::json;
use tests::hub::TestHub;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const WAIT: Duration = Duration::from_secs(5);

fn wamp_error(e: ClientError) -> String {
    match e {
        ClientError::Wamp(w) => w.uri,
        other => panic!("expected a WAMP error, got {other}"),
    }
}

/// Subscribes to every meta event under `prefix`.
async fn watch(watcher: &Client, prefix: &str) -> Subscription {
    watcher
        .subscribe(prefix, dict([("match", Value::from("prefix"))]))
        .await
        .unwrap()
}

/// The next meta event: (topic, positional args).
async fn next_meta(meta: &mut Subscription) -> (String, List) {
    let ev = tokio::time::timeout(WAIT, meta.next())
        .await
        .expect("a meta event in time")
        .expect("subscription open");
    let (args, _) = ev.payload.into_parts();
    (ev.topic.unwrap_or_default(), args)
}

/// The next meta event, which must carry (session, id).
async fn next_pair(meta: &mut Subscription) -> (String, u64, u64) {
    let (topic, args) = next_meta(meta).await;
    assert_eq!(args.len(), 2, "{topic} carries (session, id): {args:?}");
    let id = |i: usize| args[i].as_u64().expect("an id");
    (topic, id(0), id(1))
}

/// Calls a meta procedure and returns its first result.
async fn call(c: &Client, procedure: &str, args: List, kwargs: Dict) -> Result<Value, ClientError> {
    let r = c.call(procedure, args, kwargs).await?;
    Ok(r.payload.arg(0).cloned().unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_publishes_on_create_then_on_register() {
    let hub = TestHub::start().await;
    let watcher = hub.local_client("watcher");
    let mut meta = watch(&watcher, "wamp.registration.").await;

    let a = hub.client("rawsocket", Serializer::Json).await;
    let b = hub.client("websocket", Serializer::MsgPack).await;
    let shared = dict([("invoke", Value::from("roundrobin"))]);
    let reg = a.register("com.meta.proc", shared.clone()).await.unwrap();

    // A new registration: on_create(session, RegistrationDetails), then on_register.
    let (topic, args) = next_meta(&mut meta).await;
    assert_eq!(topic, "wamp.registration.on_create");
    assert_eq!(args.len(), 2);
    assert_eq!(args[0].as_u64(), Some(a.session_id()));
    let details = args[1].as_dict().expect("RegistrationDetails");
    assert_eq!(details.get("id").and_then(Value::as_u64), Some(reg.id));
    assert_eq!(
        details.get("uri").and_then(Value::as_str),
        Some("com.meta.proc")
    );
    assert_eq!(details.get("match").and_then(Value::as_str), Some("exact"));
    assert_eq!(
        details.get("invoke").and_then(Value::as_str),
        Some("roundrobin")
    );
    let created = details.get("created").and_then(Value::as_str).unwrap();
    assert!(created.ends_with('Z') && created.contains('T'), "{created}");
    assert_eq!(
        next_pair(&mut meta).await,
        (
            "wamp.registration.on_register".into(),
            a.session_id(),
            reg.id
        )
    );

    // A second callee of the same registration: on_register only.
    let reg_b = b.register("com.meta.proc", shared).await.unwrap();
    assert_eq!(reg_b.id, reg.id);
    assert_eq!(
        next_pair(&mut meta).await,
        (
            "wamp.registration.on_register".into(),
            b.session_id(),
            reg.id
        )
    );

    // A refused REGISTER publishes nothing: the next event is the one after it.
    let refused = b.register("com.meta.proc", Dict::new()).await.unwrap_err();
    assert_eq!(wamp_error(refused), uris::PROCEDURE_ALREADY_EXISTS);
    let other = a.register("com.meta.other", Dict::new()).await.unwrap();
    let (topic, args) = next_meta(&mut meta).await;
    assert_eq!(topic, "wamp.registration.on_create");
    let details = args[1].as_dict().unwrap();
    assert_eq!(details.get("id").and_then(Value::as_u64), Some(other.id));
    assert_eq!(
        details.get("invoke").and_then(Value::as_str),
        Some("single")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn force_reregister_publishes_the_takeover() {
    let hub = TestHub::start().await;
    let watcher = hub.local_client("watcher");
    let mut meta = watch(&watcher, "wamp.registration.").await;
    let a = hub.client("websocket", Serializer::Json).await;
    let b = hub.client("rawsocket", Serializer::MsgPack).await;
    let mut old = a.register("com.meta.take", Dict::new()).await.unwrap();
    assert_eq!(next_meta(&mut meta).await.0, "wamp.registration.on_create");
    assert_eq!(
        next_meta(&mut meta).await.0,
        "wamp.registration.on_register"
    );

    let force = dict([("force_reregister", Value::Bool(true))]);
    let new = b.register("com.meta.take", force).await.unwrap();
    assert_eq!(new.id, old.id);
    assert_eq!(
        next_pair(&mut meta).await,
        (
            "wamp.registration.on_unregister".into(),
            a.session_id(),
            old.id
        )
    );
    assert_eq!(
        next_pair(&mut meta).await,
        (
            "wamp.registration.on_register".into(),
            b.session_id(),
            new.id
        )
    );
    // `a` announced registration_revocation, so it was told.
    let revoked = tokio::time::timeout(WAIT, old.next()).await.unwrap();
    assert!(revoked.is_none(), "the displaced registration ends");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registration_remove_revokes_the_callee() {
    let hub = TestHub::start().await;
    let admin = hub.local_client("admin");
    let mut meta = watch(&admin, "wamp.registration.on_").await;
    let a = hub.client("websocket", Serializer::Json).await;
    let b = hub.client("rawsocket", Serializer::Json).await;
    let (sa, sb) = (a.session_id(), b.session_id());
    let shared = dict([("invoke", Value::from("first"))]);
    let mut reg_a = a.register("com.meta.rm", shared.clone()).await.unwrap();
    let mut reg_b = b.register("com.meta.rm", shared).await.unwrap();
    let id = reg_a.id;
    for _ in 0..3 {
        next_meta(&mut meta).await; // on_create, on_register ×2
    }

    // Unknown registration, or a session that is not one of its callees.
    let err = call(
        &admin,
        "wamp.registration.remove",
        vec![Value::from(id + 1), Value::from(sa)],
        Dict::new(),
    )
    .await
    .unwrap_err();
    assert_eq!(wamp_error(err), uris::NO_SUCH_REGISTRATION);
    let err = call(
        &admin,
        "wamp.registration.remove",
        vec![Value::from(id), Value::from(admin.session_id())],
        Dict::new(),
    )
    .await
    .unwrap_err();
    assert_eq!(wamp_error(err), uris::NOT_AUTHORIZED);

    // Removing `a`: it is told (its registration ends), on_unregister without on_delete, and
    // calls now reach `b`.
    call(
        &admin,
        "wamp.registration.remove",
        vec![Value::from(id), Value::from(sa)],
        Dict::new(),
    )
    .await
    .unwrap();
    assert!(
        tokio::time::timeout(WAIT, reg_a.next())
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(
        next_pair(&mut meta).await,
        ("wamp.registration.on_unregister".into(), sa, id)
    );
    let callees = call(
        &admin,
        "wamp.registration.list_callees",
        vec![Value::from(id)],
        Dict::new(),
    )
    .await
    .unwrap();
    assert_eq!(callees, Value::List(vec![Value::from(sb)]));
    let err = call(
        &admin,
        "wamp.registration.remove",
        vec![Value::from(id), Value::from(sa)],
        Dict::new(),
    )
    .await
    .unwrap_err();
    assert_eq!(wamp_error(err), uris::NO_SUCH_SESSION, "already removed");
    let callee = tokio::spawn(async move {
        let inv = reg_b.next().await.expect("an invocation");
        inv.reply(hub::wamp::Payload::args(vec![Value::from("b")]))
            .await
            .unwrap();
        reg_b
    });
    let answer = call(&admin, "com.meta.rm", List::new(), Dict::new())
        .await
        .unwrap();
    assert_eq!(answer, Value::from("b"));
    let mut reg_b = callee.await.unwrap();

    // Removing the last callee deletes the registration; the reason is the caller's.
    call(
        &admin,
        "wamp.registration.remove",
        vec![Value::from(id), Value::from(sb)],
        dict([("reason", Value::from("com.meta.maintenance"))]),
    )
    .await
    .unwrap();
    assert!(
        tokio::time::timeout(WAIT, reg_b.next())
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(
        next_pair(&mut meta).await,
        ("wamp.registration.on_unregister".into(), sb, id)
    );
    assert_eq!(
        next_pair(&mut meta).await,
        ("wamp.registration.on_delete".into(), sb, id)
    );
    let err = call(&admin, "com.meta.rm", List::new(), Dict::new())
        .await
        .unwrap_err();
    assert_eq!(wamp_error(err), uris::NO_SUCH_PROCEDURE);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscription_remove_revokes_the_subscriber() {
    let hub = TestHub::start().await;
    let admin = hub.local_client("admin");
    let mut meta = watch(&admin, "wamp.subscription.on_").await;
    let a = hub.client("rawsocket", Serializer::MsgPack).await;
    let b = hub.client("websocket", Serializer::Json).await;
    let (sa, sb) = (a.session_id(), b.session_id());
    let mut sub_a = a.subscribe("com.meta.topic", Dict::new()).await.unwrap();
    let mut sub_b = b.subscribe("com.meta.topic", Dict::new()).await.unwrap();
    let id = sub_a.id;
    // The admin's own subscription to the meta topics, then a's and b's.
    loop {
        let (topic, args) = next_meta(&mut meta).await;
        if topic == "wamp.subscription.on_subscribe" && args[0].as_u64() == Some(sb) {
            break;
        }
    }

    let err = call(
        &admin,
        "wamp.subscription.remove",
        vec![Value::from(id + 1), Value::from(sa)],
        Dict::new(),
    )
    .await
    .unwrap_err();
    assert_eq!(wamp_error(err), uris::NO_SUCH_SUBSCRIPTION);

    call(
        &admin,
        "wamp.subscription.remove",
        vec![Value::from(id), Value::from(sa)],
        Dict::new(),
    )
    .await
    .unwrap();
    assert!(
        tokio::time::timeout(WAIT, sub_a.next())
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(
        next_pair(&mut meta).await,
        ("wamp.subscription.on_unsubscribe".into(), sa, id)
    );
    let subscribers = call(
        &admin,
        "wamp.subscription.count_subscribers",
        vec![Value::from(id)],
        Dict::new(),
    )
    .await
    .unwrap();
    assert_eq!(subscribers, Value::from(1u64));

    // Events still reach the remaining subscriber.
    admin
        .publish_acked(
            "com.meta.topic",
            hub::wamp::Payload::args(vec![Value::from(7u64)]),
            Dict::new(),
        )
        .await
        .unwrap();
    let ev = tokio::time::timeout(WAIT, sub_b.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ev.payload.arg(0), Some(&Value::from(7u64)));

    call(
        &admin,
        "wamp.subscription.remove",
        vec![Value::from(id), Value::from(sb)],
        Dict::new(),
    )
    .await
    .unwrap();
    assert!(
        tokio::time::timeout(WAIT, sub_b.next())
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(
        next_pair(&mut meta).await,
        ("wamp.subscription.on_unsubscribe".into(), sb, id)
    );
    assert_eq!(
        next_pair(&mut meta).await,
        ("wamp.subscription.on_delete".into(), sb, id)
    );
}

/// A WebSocket JSON session that speaks raw WAMP frames.
struct JsonPeer {
    ws: tokio_tungstenite::WebSocketStream<TcpStream>,
}

impl JsonPeer {
    /// Joins realm `brume` announcing `roles`.
    async fn join(hub: &TestHub, roles: serde_json::Value) -> (JsonPeer, u64) {
        let mut req = hub.ws_url().as_str().into_client_request().unwrap();
        req.headers_mut()
            .insert("Sec-WebSocket-Protocol", "wamp.2.json".parse().unwrap());
        let stream = TcpStream::connect(hub.addr).await.unwrap();
        let (ws, _) = tokio_tungstenite::client_async(req, stream).await.unwrap();
        let mut peer = JsonPeer { ws };
        peer.send(json!([1, "brume", {"roles": roles}])).await;
        let welcome = peer.recv().await;
        assert_eq!(welcome[0], 2, "WELCOME: {welcome}");
        (peer, welcome[1].as_u64().unwrap())
    }

    async fn send(&mut self, frame: serde_json::Value) {
        self.ws
            .send(WsMessage::Text(frame.to_string().into()))
            .await
            .unwrap();
    }

    async fn recv(&mut self) -> serde_json::Value {
        loop {
            let msg = tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("a frame in time")
                .expect("connection open")
                .unwrap();
            if let WsMessage::Text(t) = msg {
                return serde_json::from_str(&t).unwrap();
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocation_frames_follow_the_spec_and_the_announced_features() {
    let hub = TestHub::start().await;
    let admin = hub.local_client("admin");

    // The router announces both revocation features.
    let (mut peer, session) = JsonPeer::join(
        &hub,
        json!({
            "callee": {"features": {"registration_revocation": true}},
            "subscriber": {"features": {"subscription_revocation": true}}
        }),
    )
    .await;
    peer.send(json!([64, 1, {}, "com.meta.raw"])).await;
    let registered = peer.recv().await;
    assert_eq!(registered[0], 65);
    let reg = registered[2].as_u64().unwrap();
    peer.send(json!([32, 2, {}, "com.meta.raw"])).await;
    let subscribed = peer.recv().await;
    assert_eq!(subscribed[0], 33);
    let sub = subscribed[2].as_u64().unwrap();

    call(
        &admin,
        "wamp.registration.remove",
        vec![Value::from(reg), Value::from(session)],
        Dict::new(),
    )
    .await
    .unwrap();
    assert_eq!(
        peer.recv().await,
        json!([67, 0, {"registration": reg, "reason": uris::REVOKED_REMOVED}])
    );
    call(
        &admin,
        "wamp.subscription.remove",
        vec![Value::from(sub), Value::from(session)],
        dict([("reason", Value::from("com.meta.why"))]),
    )
    .await
    .unwrap();
    assert_eq!(
        peer.recv().await,
        json!([35, 0, {"subscription": sub, "reason": "com.meta.why"}])
    );

    // A callee without registration_revocation is removed silently: the next frame it gets is
    // the answer to its own later request.
    let (mut quiet, quiet_session) =
        JsonPeer::join(&hub, json!({"callee": {}, "subscriber": {}})).await;
    quiet.send(json!([64, 1, {}, "com.meta.quiet"])).await;
    let reg = quiet.recv().await[2].as_u64().unwrap();
    call(
        &admin,
        "wamp.registration.remove",
        vec![Value::from(reg), Value::from(quiet_session)],
        Dict::new(),
    )
    .await
    .unwrap();
    let count = call(
        &admin,
        "wamp.registration.lookup",
        vec![Value::from("com.meta.quiet")],
        Dict::new(),
    )
    .await
    .unwrap();
    assert_eq!(count, Value::Null, "the registration is gone");
    quiet.send(json!([66, 9, reg])).await;
    let reply = quiet.recv().await;
    assert_eq!(
        reply[0], 8,
        "ERROR for UNREGISTER, no UNREGISTERED before it: {reply}"
    );
    assert_eq!(reply[2], 9);
    assert_eq!(reply[4], uris::NO_SUCH_REGISTRATION);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn welcome_announces_both_revocation_features() {
    let hub = TestHub::start().await;
    let c = hub.client("websocket", Serializer::Json).await;
    let roles = c
        .welcome_details()
        .get("roles")
        .and_then(Value::as_dict)
        .unwrap();
    let has = |role: &str, feature: &str| {
        roles
            .get(role)
            .and_then(Value::as_dict)
            .and_then(|r| r.get("features"))
            .and_then(Value::as_dict)
            .and_then(|f| f.get(feature))
            .and_then(Value::as_bool)
            == Some(true)
    };
    assert!(has("dealer", "registration_revocation"));
    assert!(has("broker", "subscription_revocation"));
    // What is announced exists.
    let admin = hub.local_client("admin");
    for procedure in ["wamp.registration.remove", "wamp.subscription.remove"] {
        let err = call(
            &admin,
            procedure,
            vec![Value::from(1u64), Value::from(2u64)],
            Dict::new(),
        )
        .await
        .unwrap_err();
        assert_ne!(
            wamp_error(err),
            uris::NO_SUCH_PROCEDURE,
            "{procedure} exists"
        );
    }
}
