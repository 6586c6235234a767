//! The router's limits as the README states them, each with a premise that holds by
//! construction: a peer whose socket blocks a write past `router.write_timeout_secs` is
//! disconnected; a call result or an invocation that does not fit a session's outbound queue
//! disconnects that session even under the `drop_events` policy; connections beyond
//! `router.max_connections` are refused; a message over the peer's announced maximum size is
//! dropped and counted while its session goes on (a result becomes an error for its caller).

// Test helpers fail the test by panicking.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use hub::client::WampError;
use hub::router::realm::Traffic;
use hub::router::{Realm, SlowConsumerPolicy};
use hub::wamp::{Dict, Payload, Serializer, Value};
use tests::hub::TestHub;
use tests::raw::RawConn;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const WAIT: Duration = Duration::from_secs(30);

/// Bytes of one message payload: large, and well under the 1 MiB message limit.
const CHUNK: usize = 512 * 1024;

fn chunk() -> Value {
    Value::Str("x".repeat(CHUNK))
}

/// How many messages of [`CHUNK`] bytes are sure to fill both ends' socket buffers (the kernel's
/// largest receive plus send buffer, twice over) and then a queue of `queue` messages.
fn enough_to_block(queue: usize) -> usize {
    let max = |path: &str| {
        std::fs::read_to_string(path)
            .ok()
            .and_then(|s| s.split_whitespace().nth(2)?.parse::<usize>().ok())
            .unwrap_or(64 << 20)
    };
    let buffers = max("/proc/sys/net/ipv4/tcp_rmem") + max("/proc/sys/net/ipv4/tcp_wmem");
    2 * buffers / CHUNK + queue + 16
}

/// A RawSocket JSON session with `roles` that then never reads again (unless the test reads).
async fn raw_session(hub: &TestHub, roles: &str) -> RawConn {
    let (mut c, _) = RawConn::handshake(hub.addr, 1).await;
    c.send(format!(r#"[1, "brume", {{"roles": {roles}}}]"#).as_bytes())
        .await;
    let welcome = c.recv_json().await;
    assert_eq!(welcome[0], 2, "WELCOME: {welcome}");
    c
}

/// The one session that is not in-process (the raw one under test).
fn remote_session(realm: &Realm) -> u64 {
    let ids: Vec<u64> = realm
        .sessions()
        .iter()
        .filter(|s| s.transport.kind != "local")
        .map(|s| s.id)
        .collect();
    assert_eq!(ids.len(), 1, "one remote session: {ids:?}");
    ids[0]
}

/// Waits until session `id` has left the realm.
async fn gone(realm: &Arc<Realm>, id: u64, what: &str) {
    let left = tokio::time::timeout(WAIT, async {
        while realm.session(id).is_some() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(left.is_ok(), "{what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_socket_that_blocks_writes_past_write_timeout_is_disconnected() {
    // A queue far larger than what is published: the session can only go by the write timeout.
    let hub = TestHub::start_with(|c| {
        c.router.write_timeout_secs = 1;
        c.router.outbound_queue = 100_000;
    })
    .await;
    let realm = hub.hub.router().realm("brume").unwrap().clone();
    let mut stuck = raw_session(&hub, r#"{"subscriber": {}}"#).await;
    stuck.send(br#"[32, 1, {}, "com.big"]"#).await;
    assert_eq!(stuck.recv_json().await[0], 33, "SUBSCRIBED");
    let id = remote_session(&realm);
    let publisher = hub.local_client("publisher");
    let events = enough_to_block(0);
    assert!(events < 100_000, "the queue must not be what fills");
    for i in 0..events as i64 {
        publisher
            .publish_acked(
                "com.big",
                Payload::args(vec![Value::Int(i), chunk()]),
                Dict::new(),
            )
            .await
            .unwrap();
    }
    gone(&realm, id, "the blocked session was disconnected").await;
}

/// A hub whose sessions have a 16-message queue under the `drop_events` policy, and no write
/// timeout to speak of: a session that goes can only have gone for its queue.
async fn small_queue_drop_events_hub() -> TestHub {
    TestHub::start_with(|c| {
        c.router.outbound_queue = 16;
        c.router.slow_consumer = SlowConsumerPolicy::DropEvents;
        c.router.write_timeout_secs = 3600;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invocation_that_does_not_fit_disconnects_the_callee_even_under_drop_events() {
    let hub = small_queue_drop_events_hub().await;
    let realm = hub.hub.router().realm("brume").unwrap().clone();
    let mut stuck = raw_session(&hub, r#"{"callee": {}}"#).await;
    stuck.send(br#"[64, 1, {}, "com.stuck"]"#).await;
    assert_eq!(stuck.recv_json().await[0], 65, "REGISTERED");
    let id = remote_session(&realm);
    let caller = hub.client("rawsocket", Serializer::MsgPack).await;
    // Enough calls to fill the callee's socket, then its queue: the invocation that does not
    // fit ends its session.
    let mut calls = tokio::task::JoinSet::new();
    for i in 0..enough_to_block(16) as i64 {
        let c = caller.clone();
        calls.spawn(async move {
            c.call("com.stuck", vec![Value::Int(i), chunk()], Dict::new())
                .await
        });
    }
    gone(
        &realm,
        id,
        "the callee whose queue overflowed was disconnected",
    )
    .await;
    // Every call got an answer, an error: none waits on the departed callee.
    let answered = tokio::time::timeout(WAIT, async {
        while let Some(r) = calls.join_next().await {
            assert!(r.unwrap().is_err(), "the stuck callee answered nothing");
        }
    })
    .await;
    assert!(answered.is_ok(), "every call was answered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_result_that_does_not_fit_disconnects_the_caller_even_under_drop_events() {
    let hub = small_queue_drop_events_hub().await;
    let realm = hub.hub.router().realm("brume").unwrap().clone();
    // The callee holds every invocation until it has all of them, then answers them at once:
    // the results arrive while the caller's socket is already full, whatever the timing.
    let calls = enough_to_block(16);
    let callee = hub.local_client("callee");
    let mut reg = callee.register("com.big", Dict::new()).await.unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Some(inv) = reg.next().await {
            held.push(inv);
            if held.len() == calls {
                for inv in held.drain(..) {
                    let _ = inv.reply(Payload::args(vec![chunk()])).await;
                }
            }
        }
    });
    let mut stuck = raw_session(&hub, r#"{"caller": {}}"#).await;
    let id = remote_session(&realm);
    // The caller sends its calls and never reads a result.
    for request in 1..=calls {
        stuck
            .send(format!(r#"[48, {request}, {{}}, "com.big"]"#).as_bytes())
            .await;
    }
    gone(
        &realm,
        id,
        "the caller whose queue overflowed was disconnected",
    )
    .await;
    // Its connection was closed, not just forgotten.
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(WAIT, stuck.stream.read_to_end(&mut rest)).await;
    assert!(closed.is_ok(), "the router closed the connection");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_max_connections_are_refused() {
    let hub = TestHub::start_with(|c| c.router.max_connections = 2).await;
    let a = hub.client("rawsocket", Serializer::Json).await;
    let _b = hub.client("websocket", Serializer::MsgPack).await;
    // The third is accepted by the kernel and closed by the router before any byte.
    let mut third = tokio::net::TcpStream::connect(hub.addr).await.unwrap();
    let mut buf = [0u8; 4];
    let n = tokio::time::timeout(WAIT, third.read(&mut buf))
        .await
        .expect("the router answered the third connection")
        .unwrap_or(0);
    assert_eq!(n, 0, "the third connection was closed unanswered");
    // In-process sessions do not count.
    let local = hub.local_client("inside");
    assert!(local.subscribe("com.x", Dict::new()).await.is_ok());
    // Once one leaves, a new connection is admitted.
    a.leave().await.unwrap();
    drop(a);
    let admitted = tokio::time::timeout(WAIT, async {
        loop {
            let opts = hub::client::ConnectOptions::new(&hub.rs_url(), "brume");
            if let Ok(c) = hub::client::Client::connect(&opts).await {
                return c;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(
        admitted.is_ok(),
        "a connection was admitted once a slot was free"
    );
}

/// A RawSocket JSON session with `roles` whose peer announced the smallest maximum message size,
/// 2^9 = 512 bytes: its WELCOME comes without the roles' feature lists, which would not fit.
async fn small_session(hub: &TestHub, roles: &str) -> RawConn {
    let mut stream = tokio::net::TcpStream::connect(hub.addr).await.unwrap();
    stream.write_all(&[0x7F, 0x01, 0, 0]).await.unwrap();
    let mut reply = [0u8; 4];
    stream.read_exact(&mut reply).await.unwrap();
    assert_eq!(reply[1] & 0x0F, 1, "JSON accepted: {reply:?}");
    let mut c = RawConn { stream };
    c.send(format!(r#"[1, "brume", {{"roles": {roles}}}]"#).as_bytes())
        .await;
    let welcome = c.recv_json().await;
    assert_eq!(welcome[0], 2, "WELCOME: {welcome}");
    assert_eq!(
        welcome[2]["roles"]["broker"],
        serde_json::json!({}),
        "{welcome}"
    );
    assert_eq!(welcome[2]["authrole"], "anonymous", "{welcome}");
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_over_the_peers_limit_is_dropped_and_counted_and_the_session_goes_on() {
    let hub = TestHub::start().await;
    let mut small = small_session(&hub, r#"{"subscriber": {}, "caller": {}}"#).await;
    small.send(br#"[32, 1, {}, "com.limits"]"#).await;
    assert_eq!(small.recv_json().await[0], 33, "SUBSCRIBED");

    // An event over the limit, then one under it: the first is dropped, the second arrives.
    let app = hub.local_client("app");
    let big = || Payload::args(vec![Value::Str("x".repeat(2048))]);
    app.publish("com.limits", big(), Dict::new()).await.unwrap();
    app.publish(
        "com.limits",
        Payload::args(vec![Value::from("after")]),
        Dict::new(),
    )
    .await
    .unwrap();
    let event = small.recv_json().await;
    assert_eq!(event[0], 36, "EVENT: {event}");
    assert_eq!(event[4], serde_json::json!(["after"]), "{event}");

    // A result over the limit becomes an error for the call.
    let mut reg = app.register("com.limits.big", Dict::new()).await.unwrap();
    tokio::spawn(async move {
        while let Some(inv) = reg.next().await {
            let _ = inv.reply(big()).await;
        }
    });
    small.send(br#"[48, 7, {}, "com.limits.big"]"#).await;
    let error = small.recv_json().await;
    assert_eq!(error[0], 8, "ERROR: {error}");
    assert_eq!(error[1], 48, "{error}");
    assert_eq!(error[2], 7, "{error}");
    assert_eq!(error[4], "wamp.error.payload_size_exceeded", "{error}");

    // An error over the limit goes with its URI and without its payload.
    let mut failing = app.register("com.limits.fails", Dict::new()).await.unwrap();
    tokio::spawn(async move {
        while let Some(inv) = failing.next().await {
            let _ = inv
                .fail(WampError::new("com.limits.no", "y".repeat(2048)))
                .await;
        }
    });
    small.send(br#"[48, 8, {}, "com.limits.fails"]"#).await;
    let error = small.recv_json().await;
    assert_eq!(
        error,
        serde_json::json!([8, 48, 8, {}, "com.limits.no"]),
        "ERROR without its payload"
    );

    // A progressive result over the limit ends its call with the error: later results could
    // not follow a gap, so the callee is interrupted and nothing more comes for that call.
    let mut progressive = app
        .register("com.limits.progress", Dict::new())
        .await
        .unwrap();
    let (interrupted_tx, interrupted) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        if let Some(mut inv) = progressive.next().await {
            let _ = inv.progress(Payload::args(vec![Value::from("p1")])).await;
            let _ = inv.progress(big()).await;
            let interrupt = tokio::time::timeout(WAIT, inv.interrupted()).await;
            let _ = interrupted_tx.send(interrupt.ok().flatten());
            let _ = inv.reply(Payload::args(vec![Value::from("late")])).await;
        }
    });
    small
        .send(br#"[48, 9, {"receive_progress": true}, "com.limits.progress"]"#)
        .await;
    let first = small.recv_json().await;
    assert_eq!(first[0], 50, "RESULT: {first}");
    assert_eq!(first[2]["progress"], true, "{first}");
    assert_eq!(first[3], serde_json::json!(["p1"]), "{first}");
    let error = small.recv_json().await;
    assert_eq!(error[0], 8, "ERROR: {error}");
    assert_eq!(
        (error[1].clone(), error[2].clone()),
        (48.into(), 9.into()),
        "{error}"
    );
    assert_eq!(error[4], "wamp.error.payload_size_exceeded", "{error}");
    let interrupt = interrupted
        .await
        .unwrap()
        .expect("the callee was interrupted");
    assert_eq!(interrupt.mode, "killnowait");
    // The callee's late final result goes nowhere: the next frame answers the next call.
    small.send(br#"[48, 10, {}, "com.limits.fails"]"#).await;
    let next = small.recv_json().await;
    assert_eq!(
        (next[0].clone(), next[2].clone()),
        (8.into(), 10.into()),
        "{next}"
    );

    // An invocation over the callee's limit is answered for it: the caller gets the error.
    let mut callee = small_session(&hub, r#"{"callee": {}}"#).await;
    callee.send(br#"[64, 2, {}, "com.limits.small"]"#).await;
    assert_eq!(callee.recv_json().await[0], 65, "REGISTERED");
    let refused = tokio::time::timeout(WAIT, app.call_with("com.limits.small", big(), Dict::new()))
        .await
        .expect("the caller is not left waiting")
        .expect_err("the invocation could not reach the callee");
    assert!(
        refused
            .to_string()
            .contains("wamp.error.payload_size_exceeded"),
        "{refused}"
    );
    // The callee's session goes on: a small invocation reaches it.
    let call = tokio::spawn({
        let app = app.clone();
        async move {
            app.call_with(
                "com.limits.small",
                Payload::args(vec![Value::Int(1)]),
                Dict::new(),
            )
            .await
        }
    });
    let invocation = callee.recv_json().await;
    assert_eq!(invocation[0], 68, "INVOCATION: {invocation}");
    callee
        .send(format!("[70, {}, {{}}, [\"ok\"]]", invocation[1]).as_bytes())
        .await;
    assert!(call.await.unwrap().is_ok(), "the small call was answered");

    // The six drops are counted (the second ERROR over the limit included), and an operator reads them.
    let drops = hub.hub.router().write_drops();
    assert_eq!(Traffic::get(&drops.too_large), 6);
    assert_eq!(Traffic::get(&drops.unencodable), 0);
    let http = hub.hub.local_addr("http").unwrap();
    let (status, body) = hub::http::client::get(&format!("http://{http}"), "/metrics")
        .await
        .unwrap();
    assert_eq!(status, 200);
    let text = String::from_utf8(body.to_vec()).unwrap();
    assert!(
        text.contains("brume_router_messages_dropped_total{cause=\"too_large\"} 6\n"),
        "{text}"
    );
}
