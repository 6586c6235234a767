//! Routing options the README promises, each proved on the router: the shared-registration
//! policies `single`, `first`, `last` and `random`, and publisher black/white listing by
//! session id, authid and authrole.
//!
//! Whether an event was withheld is decided without waiting: after the event under test the
//! publisher sends a marker event to everyone, and events from one publisher reach a subscriber
//! in order, so a subscriber's next event is either the one under test or the marker.

// Test helpers fail the test by panicking.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use hub::client::{Client, ClientError, Subscription};
use hub::router::AuthInfo;
use hub::wamp::{Dict, Payload, Value, dict, uris};
use tests::hub::TestHub;

const WAIT: Duration = Duration::from_secs(20);

fn wamp_error(e: ClientError) -> String {
    match e {
        ClientError::Wamp(w) => w.uri,
        other => panic!("expected a WAMP error, got {other:?}"),
    }
}

/// An in-process session with the given authid and authrole.
fn session(hub: &TestHub, authid: &str, authrole: &str) -> Client {
    Client::local(
        hub.hub.router(),
        "brume",
        AuthInfo {
            authid: authid.into(),
            authrole: authrole.into(),
            authmethod: "trusted".into(),
            authprovider: "static".into(),
        },
    )
    .expect("joins")
}

/// Registers `uri` with `invoke` on `client`, answering every call with `name`.
async fn callee(client: &Client, uri: &str, invoke: &str, name: &'static str) -> hub::wamp::Id {
    let mut reg = client
        .register(uri, dict([("invoke", Value::from(invoke))]))
        .await
        .unwrap();
    let id = reg.id;
    tokio::spawn(async move {
        while let Some(inv) = reg.next().await {
            let _ = inv.reply(Payload::args(vec![Value::from(name)])).await;
        }
    });
    id
}

async fn who(caller: &Client, uri: &str) -> String {
    let r = caller.call(uri, vec![], Dict::new()).await.unwrap();
    r.payload
        .arg(0)
        .and_then(Value::as_str)
        .expect("a name")
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invoke_single_refuses_a_second_callee() {
    let hub = TestHub::start().await;
    let (a, b) = (session(&hub, "a", "app"), session(&hub, "b", "app"));
    callee(&a, "com.single", "single", "a").await;
    let e = b
        .register("com.single", dict([("invoke", Value::from("single"))]))
        .await
        .unwrap_err();
    assert_eq!(wamp_error(e), uris::PROCEDURE_ALREADY_EXISTS);
    // The default policy is `single` too.
    let e = b.register("com.single", Dict::new()).await.unwrap_err();
    assert_eq!(wamp_error(e), uris::PROCEDURE_ALREADY_EXISTS);
    assert_eq!(who(&b, "com.single").await, "a");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invoke_first_and_last_pick_by_registration_order() {
    let hub = TestHub::start().await;
    let caller = session(&hub, "caller", "app");
    let callees: Vec<Client> = ["a", "b", "c"]
        .iter()
        .map(|n| session(&hub, n, "app"))
        .collect();
    for (c, name) in callees.iter().zip(["a", "b", "c"]) {
        callee(c, "com.first", "first", name).await;
        callee(c, "com.last", "last", name).await;
    }
    for _ in 0..3 {
        assert_eq!(who(&caller, "com.first").await, "a");
        assert_eq!(who(&caller, "com.last").await, "c");
    }
    // When the first (last) callee leaves, the next in line takes over.
    callees[0].leave().await.unwrap();
    callees[2].leave().await.unwrap();
    assert_eq!(who(&caller, "com.first").await, "b");
    assert_eq!(who(&caller, "com.last").await, "b");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invoke_random_reaches_every_callee() {
    let hub = TestHub::start().await;
    let caller = session(&hub, "caller", "app");
    let (a, b) = (session(&hub, "a", "app"), session(&hub, "b", "app"));
    callee(&a, "com.random", "random", "a").await;
    callee(&b, "com.random", "random", "b").await;
    // With a fair pick, one callee missing all of 200 calls has probability 2^-199.
    let mut seen = std::collections::BTreeMap::<String, u32>::new();
    for _ in 0..200 {
        *seen.entry(who(&caller, "com.random").await).or_default() += 1;
    }
    assert_eq!(seen.len(), 2, "both callees were picked: {seen:?}");
}

/// A subscriber and the name it is known by in assertions.
struct Watcher {
    name: &'static str,
    sub: Subscription,
}

impl Watcher {
    /// The payload of the next event: the tag of the event under test, or "marker".
    async fn next(&mut self) -> String {
        let ev = tokio::time::timeout(WAIT, self.sub.next())
            .await
            .unwrap_or_else(|_| panic!("{}: no event", self.name))
            .expect("subscribed");
        ev.payload
            .arg(0)
            .and_then(Value::as_str)
            .unwrap()
            .to_owned()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publisher_black_and_white_lists_by_session_authid_and_authrole() {
    let hub = TestHub::start().await;
    let publisher = session(&hub, "pub", "app");
    let people = [
        ("alice", "operator"),
        ("bob", "viewer"),
        ("carol", "operator"),
    ];
    let mut clients = Vec::new();
    let mut watchers = Vec::new();
    for (authid, role) in people {
        let c = session(&hub, authid, role);
        let sub = c.subscribe("com.listed", Dict::new()).await.unwrap();
        watchers.push(Watcher { name: authid, sub });
        clients.push(c);
    }
    let ids: Vec<Value> = clients
        .iter()
        .map(|c| Value::from(c.session_id()))
        .collect();
    let list = |v: &[&str]| Value::List(v.iter().map(|s| Value::from(*s)).collect());
    let cases: Vec<(&str, Dict, [bool; 3])> = vec![
        (
            "eligible",
            dict([("eligible", Value::List(vec![ids[1].clone()]))]),
            [false, true, false],
        ),
        (
            "exclude",
            dict([("exclude", Value::List(vec![ids[0].clone()]))]),
            [false, true, true],
        ),
        (
            "eligible_authid",
            dict([("eligible_authid", list(&["alice", "bob"]))]),
            [true, true, false],
        ),
        (
            "exclude_authid",
            dict([("exclude_authid", list(&["carol"]))]),
            [true, true, false],
        ),
        (
            "eligible_authrole",
            dict([("eligible_authrole", list(&["operator"]))]),
            [true, false, true],
        ),
        (
            "exclude_authrole",
            dict([("exclude_authrole", list(&["operator"]))]),
            [false, true, false],
        ),
        (
            "eligible_authrole and exclude_authid",
            dict([
                ("eligible_authrole", list(&["operator"])),
                ("exclude_authid", list(&["alice"])),
            ]),
            [false, false, true],
        ),
    ];
    for (tag, options, receives) in cases {
        publisher
            .publish_acked("com.listed", Payload::args(vec![Value::from(tag)]), options)
            .await
            .unwrap();
        publisher
            .publish_acked(
                "com.listed",
                Payload::args(vec!["marker".into()]),
                Dict::new(),
            )
            .await
            .unwrap();
        for (w, want) in watchers.iter_mut().zip(receives) {
            let first = w.next().await;
            if want {
                assert_eq!(first, tag, "{}: {tag}", w.name);
                assert_eq!(w.next().await, "marker", "{}: {tag}", w.name);
            } else {
                assert_eq!(first, "marker", "{} must not receive {tag}", w.name);
            }
        }
    }
}

/// A subscriber that leaves still gets every event published to it before it left: the events
/// its session queued ahead of the router's GOODBYE reply are delivered, not dropped (the
/// uplink's feed relies on it at shutdown). More are published than the subscription's channel
/// holds, so some still wait in the session's queue when the subscriber leaves.
#[tokio::test]
async fn a_subscriber_that_leaves_gets_what_was_published_before() {
    const N: usize = hub::client::DELIVERY_QUEUE + 776;
    let hub = TestHub::start().await;
    let publisher = session(&hub, "publisher", "trusted");
    let subscriber = session(&hub, "subscriber", "trusted");
    let mut sub = subscriber
        .subscribe_lossless("com.example.leaving", Dict::new())
        .await
        .unwrap();
    // In batches smaller than the publisher's own queue, which takes their acknowledgements.
    for chunk in (0..N).collect::<Vec<_>>().chunks(256) {
        let batch = chunk
            .iter()
            .map(|&i| {
                let payload = Payload::args(vec![Value::from(i as u64)]);
                ("com.example.leaving".to_owned(), payload)
            })
            .collect();
        for r in publisher.publish_batch_acked(batch).await {
            r.unwrap();
        }
    }
    let leaving = tokio::spawn(async move { subscriber.leave().await });
    let mut got = 0;
    while let Ok(Some(_)) = tokio::time::timeout(Duration::from_secs(5), sub.next()).await {
        got += 1;
    }
    assert_eq!(got, N, "every event published before the subscriber left");
    leaving.await.unwrap().unwrap();
}
