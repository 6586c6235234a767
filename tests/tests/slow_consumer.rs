//! A subscriber that stops reading never stalls the publisher or other subscribers: under the
//! default policy it is disconnected; under `drop_events` it loses events, counted.

// Test helpers fail the test by panicking.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use hub::client::Client;
use hub::router::SlowConsumerPolicy;
use hub::wamp::{Dict, Payload, Serializer, Value};
use tests::hub::TestHub;
use tests::raw::RawConn;

const EVENTS: usize = 1500;

/// A RawSocket JSON session that subscribes to `topic` and then never reads again.
async fn stuck_subscriber(hub: &TestHub, topic: &str) -> RawConn {
    let (mut c, _) = RawConn::handshake(hub.addr, 1).await;
    c.send(br#"[1, "brume", {"roles": {"subscriber": {}}}]"#)
        .await;
    let welcome = c.recv_json().await;
    assert_eq!(welcome[0], 2, "WELCOME: {welcome}");
    c.send(format!(r#"[32, 1, {{}}, "{topic}"]"#).as_bytes())
        .await;
    let subscribed = c.recv_json().await;
    assert_eq!(subscribed[0], 33, "SUBSCRIBED: {subscribed}");
    assert_eq!(
        subscribed[1], 1,
        "SUBSCRIBED answers request 1: {subscribed}"
    );
    c
}

/// How many events the publisher may be ahead of the healthy subscriber: well inside the
/// 64-message outbound queue, so the healthy subscriber keeps up by construction however slowly
/// the machine runs it, while the stuck one, which never reads, overflows its queue.
const WINDOW: usize = 16;

/// Publishes EVENTS events of 32 KiB, never more than [`WINDOW`] ahead of the healthy subscriber,
/// and returns how many the healthy subscriber received.
async fn flood(hub: &TestHub, topic: &str) -> usize {
    let publisher = hub.client("rawsocket", Serializer::MsgPack).await;
    let healthy: Client = hub.client("rawsocket", Serializer::MsgPack).await;
    let mut sub = healthy
        .subscribe_lossless(topic, Dict::new())
        .await
        .unwrap();
    let (received_tx, mut received) = tokio::sync::watch::channel(0usize);
    let counter = tokio::spawn(async move {
        let mut n = 0;
        while n < EVENTS {
            match sub.next().await {
                Some(ev) => {
                    assert_eq!(
                        ev.payload.arg(0),
                        Some(&Value::Int(n as i64)),
                        "the healthy subscriber gets every event, in order"
                    );
                    n += 1;
                    received_tx.send_replace(n);
                }
                None => break,
            }
        }
        n
    });
    let chunk = Value::Str("x".repeat(32 * 1024));
    let publishing = async {
        for i in 0..EVENTS {
            // Wait for the healthy subscriber to come within the window (or to be gone, which
            // the count below reports).
            let _ = received.wait_for(|&n| i < n + WINDOW).await;
            publisher
                .publish_acked(
                    topic,
                    Payload::args(vec![Value::Int(i as i64), chunk.clone()]),
                    Dict::new(),
                )
                .await
                .unwrap();
        }
    };
    tokio::time::timeout(Duration::from_secs(120), publishing)
        .await
        .expect("the publisher is never stalled by a stuck subscriber");
    counter.await.unwrap()
}

/// The stuck subscriber's session id: the realm's only session besides the hub's own in-process
/// services (things service, gateway bridge).
fn stuck_session(realm: &hub::router::Realm) -> u64 {
    let others: Vec<u64> = realm
        .sessions()
        .iter()
        .filter(|s| s.transport.kind != "local")
        .map(|s| s.id)
        .collect();
    assert_eq!(
        others.len(),
        1,
        "one session besides the hub's own services"
    );
    others[0]
}

async fn wait_until(mut cond: impl FnMut() -> bool) -> bool {
    tokio::time::timeout(Duration::from_secs(30), async {
        while !cond() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stuck_subscriber_is_disconnected_and_nobody_else_notices() {
    let hub = TestHub::start_with(|c| c.router.outbound_queue = 64).await;
    let realm = hub.hub.router().realm("brume").unwrap().clone();
    let _stuck = stuck_subscriber(&hub, "com.flood").await;
    let stuck_id = stuck_session(&realm);
    let received = flood(&hub, "com.flood").await;
    assert_eq!(received, EVENTS, "the healthy subscriber got every event");
    assert!(
        wait_until(|| realm.session(stuck_id).is_none()).await,
        "the stuck subscriber was disconnected"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_events_policy_keeps_the_session_and_counts() {
    let hub = TestHub::start_with(|c| {
        c.router.outbound_queue = 64;
        c.router.slow_consumer = SlowConsumerPolicy::DropEvents;
    })
    .await;
    let realm = hub.hub.router().realm("brume").unwrap().clone();
    let _stuck = stuck_subscriber(&hub, "com.flood").await;
    let stuck_id = stuck_session(&realm);
    let received = flood(&hub, "com.flood").await;
    assert_eq!(received, EVENTS);
    let stuck = realm
        .session(stuck_id)
        .expect("still connected under drop_events");
    assert!(stuck.dropped_events() > 0, "drops are counted");
}
