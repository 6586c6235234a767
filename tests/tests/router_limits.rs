//! The router's limits as the README states them, each with a premise that holds by
//! construction: a peer whose socket blocks a write past `router.write_timeout_secs` is
//! disconnected; a call result or an invocation that does not fit a session's outbound queue
//! disconnects that session even under the `drop_events` policy; connections beyond
//! `router.max_connections` are refused.

// Test helpers fail the test by panicking.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use hub::router::{Realm, SlowConsumerPolicy};
use hub::wamp::{Dict, Payload, Serializer, Value};
use tests::hub::TestHub;
use tests::raw::RawConn;
use tokio::io::AsyncReadExt;

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
