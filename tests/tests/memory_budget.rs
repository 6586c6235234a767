//! The memory budget drill (`hub.max_memory_bytes`), on a real `brume run` process: a subscriber
//! that stops reading while a publisher floods would hold every event in the hub's memory (its
//! queue is allowed 200,000 messages under `drop_events`); with a 64 MiB budget the hub sheds
//! that backlog instead, says so on `brume.hub.on_memory`, counts it in `brume.hub.status`,
//! refuses new connections while over, keeps serving the sessions it has, and recovers.

// Test helpers fail the test by panicking.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use hub::client::{Client, ConnectOptions};
use hub::wamp::{Dict, Payload, Serializer, Value};
use tests::hub::BrumeProcess;
use tests::raw::RawConn;

const BUDGET: u64 = 64 * 1024 * 1024;
/// What the hub may overshoot its budget by: what a flood adds between two samples (50 ms).
const OVERSHOOT: u64 = 48 * 1024 * 1024;
const EVENTS: usize = 40_000;
const EVENT_BYTES: usize = 8 * 1024;

fn config(dir: &tempfile::TempDir) -> std::path::PathBuf {
    let config = dir.path().join("brume.toml");
    std::fs::write(
        &config,
        format!(
            "[hub]\ndata_dir = {:?}\nmax_memory_bytes = {BUDGET}\n\
             [router]\noutbound_queue = 200000\nslow_consumer = \"drop_events\"\nwrite_timeout_secs = 4\n\
             [mqtt]\nenabled = false\n[coap]\nenabled = false\n[http]\nlisten = \"127.0.0.1:0\"\n\
             [[listeners]]\nname = \"rs\"\nkind = \"rawsocket\"\naddress = \"127.0.0.1:0\"\n",
            dir.path().join("data").display().to_string(),
        ),
    )
    .unwrap();
    config
}

/// A kB field of `/proc/<pid>/status`, in bytes.
fn proc_status(pid: u32, field: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = text.lines().find(|l| l.starts_with(field)).unwrap();
    let kib: u64 = line[field.len()..]
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    kib * 1024
}

async fn hub_status(client: &Client) -> Dict {
    let r = client
        .call("brume.hub.status", vec![], Dict::new())
        .await
        .unwrap();
    r.payload.kwarg_dict().cloned().unwrap()
}

fn memory_field(status: &Dict, key: &str) -> Value {
    status
        .get("memory")
        .and_then(Value::as_dict)
        .and_then(|m| m.get(key))
        .cloned()
        .unwrap_or(Value::Null)
}

/// Waits for a `brume.hub.on_memory` event whose `shedding` is `shedding`.
async fn announced(rx: &mut tokio::sync::mpsc::UnboundedReceiver<Dict>, shedding: bool) -> Dict {
    tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            let d = rx.recv().await.expect("monitor subscribed");
            if d.get("shedding").and_then(Value::as_bool) == Some(shedding) {
                return d;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no brume.hub.on_memory with shedding = {shedding}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_subscriber_cannot_take_the_hub_past_its_memory_budget() {
    let dir = tempfile::tempdir().unwrap();
    let hub = BrumeProcess::start(&config(&dir));
    let pid = hub.child.id();
    let addr: std::net::SocketAddr = hub.rs_url.trim_start_matches("rs://").parse().unwrap();
    let opts = ConnectOptions::new(&hub.rs_url, "brume").serializer(Serializer::MsgPack);

    // A monitor of the announcements, which reads everything it is sent.
    let monitor = Client::connect(&opts).await.unwrap();
    let mut sub = monitor
        .subscribe("brume.hub.on_memory", Dict::new())
        .await
        .unwrap();
    let (tx, mut announcements) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(ev) = sub.next().await {
            let _ = tx.send(ev.payload.kwarg_dict().cloned().unwrap_or_default());
        }
    });
    let before = hub_status(&monitor).await;
    assert_eq!(memory_field(&before, "budget_bytes").as_u64(), Some(BUDGET));
    assert_eq!(memory_field(&before, "shedding").as_bool(), Some(false));

    // A subscriber that never reads after SUBSCRIBED.
    let (mut stuck, _) = RawConn::handshake(addr, 1).await;
    stuck
        .send(br#"[1, "brume", {"roles": {"subscriber": {}}}]"#)
        .await;
    assert_eq!(stuck.recv_json().await[0], 2, "WELCOME");
    stuck.send(br#"[32, 1, {}, "flood"]"#).await;
    assert_eq!(stuck.recv_json().await[0], 33, "SUBSCRIBED");

    // The flood: 40,000 events of 8 KiB (320 MiB), acknowledged in batches so the publisher
    // cannot outrun the router by more than a batch.
    let publisher = Client::connect(&opts).await.unwrap();
    let chunk = Value::Str("x".repeat(EVENT_BYTES));
    for batch in (0..EVENTS).collect::<Vec<_>>().chunks(500) {
        let events = batch
            .iter()
            .map(|&i| {
                (
                    "flood".to_owned(),
                    Payload::args(vec![Value::Int(i as i64), chunk.clone()]),
                )
            })
            .collect();
        for r in publisher.publish_batch_acked(events).await {
            r.unwrap();
        }
    }
    let over = announced(&mut announcements, true).await;
    assert!(over.get("rss_bytes").and_then(Value::as_u64).unwrap() > BUDGET);

    // Over the budget: the sessions the hub has are still served, new connections are not.
    let during = hub_status(&publisher).await;
    let shed = memory_field(&during, "shed_events").as_u64().unwrap();
    assert!(
        shed > 0,
        "the stuck subscriber's events were shed: {during:?}"
    );
    let refused = if memory_field(&during, "shedding").as_bool() == Some(true) {
        let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut byte = [0u8; 1];
        let read = tokio::time::timeout(
            Duration::from_secs(10),
            tokio::io::AsyncReadExt::read(&mut c, &mut byte),
        )
        .await
        .expect("a refused connection is closed at once");
        assert!(matches!(read, Ok(0) | Err(_)), "closed without a handshake");
        true
    } else {
        false
    };
    let peak = proc_status(pid, "VmHWM:");
    assert!(
        peak < BUDGET + OVERSHOOT,
        "the hub's peak resident memory {peak} stayed near its budget {BUDGET}"
    );

    // The stuck subscriber is closed by its write timeout; with its backlog gone the hub is back
    // under the budget and accepts connections again.
    announced(&mut announcements, false).await;
    let late = Client::connect(&opts).await.unwrap();
    let after = hub_status(&late).await;
    assert_eq!(memory_field(&after, "shedding").as_bool(), Some(false));
    assert!(memory_field(&after, "episodes").as_u64().unwrap() >= 1);
    if refused {
        assert!(
            memory_field(&after, "refused_connections")
                .as_u64()
                .unwrap()
                >= 1
        );
    }
    drop(stuck);
}
