//! The uplink against a real cloud router (Crossbar.io): forwarding, cloud calls to edge devices,
//! outages, a half-open link, a crash, and the queue bounds.

// Test helpers fail the test by panicking.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, HashSet};
use std::process::Stdio;
use std::time::Duration;

use device_models::ThingId;
use firmware_sim::{Kind, SimDevice, SimGateway, SimOptions};
use hub::client::{Client, ConnectOptions};
use hub::uplink::UplinkConfig;
use hub::wamp::{Dict, Payload, Serializer, Value, dict};
use tests::cloud::{Crossbar, Proxy, ProxyMode};
use tests::hub::{BrumeProcess, TestHub};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::mpsc;

fn uplink_to(hub: &str, addr: std::net::SocketAddr) -> UplinkConfig {
    let mut c = UplinkConfig {
        enabled: true,
        url: format!("ws://{addr}/ws"),
        realm: "cloud".into(),
        reconnect_initial_ms: 100,
        reconnect_max_ms: 400,
        keepalive_secs: 1,
        ..UplinkConfig::default()
    };
    c.auth.method = "ticket".into();
    c.auth.authid = hub.into();
    c.auth.secret = Some(format!("secret-{hub}"));
    c
}

async fn hub_with_uplink(
    hub: &str,
    addr: std::net::SocketAddr,
    edit: impl FnOnce(&mut UplinkConfig),
) -> TestHub {
    let mut up = uplink_to(hub, addr);
    edit(&mut up);
    let id = hub.to_owned();
    TestHub::start_with(move |c| {
        c.hub.id = id;
        c.uplink = up;
    })
    .await
}

/// A cloud app subscribed to every hub's events; events arrive on the returned channel as
/// (topic, kwargs).
async fn cloud_subscriber(cb: &Crossbar) -> (Client, mpsc::UnboundedReceiver<(String, Dict)>) {
    let opts = ConnectOptions::new(&cb.app_url(), "cloud").serializer(Serializer::MsgPack);
    let client = Client::connect(&opts).await.expect("cloud app joins");
    let mut sub = client
        .subscribe_lossless("brume.hub.", dict([("match", Value::from("prefix"))]))
        .await
        .unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(ev) = sub.next().await {
            let kw = ev.payload.kwarg_dict().cloned().unwrap_or_default();
            if tx.send((ev.topic.unwrap_or_default(), kw)).is_err() {
                return;
            }
        }
    });
    (client, rx)
}

async fn status(local: &Client) -> Dict {
    local
        .call("brume.uplink.status", vec![], Dict::new())
        .await
        .unwrap()
        .payload
        .kwarg_dict()
        .cloned()
        .unwrap()
}

async fn wait_status(local: &Client, what: &str, mut ok: impl FnMut(&Dict) -> bool) {
    let r = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            if ok(&status(local).await) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(
        r.is_ok(),
        "uplink never reached: {what} (last {:?})",
        status(local).await
    );
}

fn connected(s: &Dict) -> bool {
    s.get("connected").and_then(Value::as_bool) == Some(true)
}

fn queued(s: &Dict) -> u64 {
    s.get("queued").and_then(Value::as_u64).unwrap_or(u64::MAX)
}

fn state(thing: &str, n: i64) -> (String, Payload) {
    (
        format!("brume.thing.{thing}.state"),
        Payload::kwargs(dict([(
            "values",
            Value::Dict(dict([("n", Value::Int(n))])),
        )])),
    )
}

/// Receives cloud events until `want` distinct (hub, seq) were seen; returns them per thing in
/// arrival order (after dropping duplicates).
async fn collect(
    rx: &mut mpsc::UnboundedReceiver<(String, Dict)>,
    want: usize,
) -> BTreeMap<String, Vec<i64>> {
    let mut seen = HashSet::new();
    let mut per_thing: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    let r = tokio::time::timeout(Duration::from_secs(60), async {
        while seen.len() < want {
            let (topic, kw) = rx.recv().await.expect("cloud subscription open");
            let Some(meta) = kw.get("_brume").and_then(Value::as_dict) else {
                continue;
            };
            let key = (
                meta["hub"].as_str().unwrap().to_owned(),
                meta["seq"].as_u64().unwrap(),
            );
            if !seen.insert(key) || !topic.contains(".thing.") {
                continue;
            }
            let n = kw["values"].as_dict().unwrap()["n"].as_i64().unwrap();
            per_thing.entry(topic).or_default().push(n);
        }
    })
    .await;
    assert!(r.is_ok(), "only {} of {want} events arrived", seen.len());
    per_thing
}

/// Asserts that what [`collect`] returned holds every number of `expected` once, each topic's
/// in increasing order.
fn assert_each_once_in_order(got: &BTreeMap<String, Vec<i64>>, expected: std::ops::Range<i64>) {
    for (topic, ns) in got {
        assert!(
            ns.windows(2).all(|w| w[0] < w[1]),
            "{topic} arrived in order"
        );
    }
    let all: HashSet<i64> = got.values().flatten().copied().collect();
    assert_eq!(
        all,
        expected.collect::<HashSet<i64>>(),
        "every event exactly once after dedup"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hubs_forward_state_and_serve_cloud_calls() {
    let cb = Crossbar::start(&["edge-a", "edge-b"]).await;
    let a = hub_with_uplink("edge-a", cb.hub_addr(), |_| {}).await;
    let b = hub_with_uplink("edge-b", cb.hub_addr(), |_| {}).await;
    let mut locals = Vec::new();
    let mut devices = Vec::new();
    for (name, h) in [("edge-a", &a), ("edge-b", &b)] {
        let local = h.local_client("app");
        wait_status(&local, "connected", connected).await;
        // A relay behind this hub, its location naming the hub, for the cloud to read and act on.
        local
            .call(
                "brume.things.provision",
                vec![],
                dict([
                    ("thing", Value::from("r1")),
                    ("type", Value::from("relay")),
                    ("info", Value::Dict(dict([("location", Value::from(name))]))),
                ]),
            )
            .await
            .unwrap();
        let relay = SimDevice::new(ThingId::new("r1").unwrap(), Kind::Relay, 5);
        let sim = SimGateway::start(h.hub.things(), vec![relay], SimOptions::default())
            .await
            .unwrap();
        devices.push(sim);
        locals.push(local);
    }

    // The cloud app (Autobahn) subscribes, then the hubs report.
    let python = tokio::task::spawn_blocking(tests::peers::python)
        .await
        .unwrap();
    let mut app = tokio::process::Command::new(python)
        .arg(tests::peers::scripts_dir().join("cloud_app.py"))
        .args([cb.app_url(), "edge-a".into(), "edge-b".into()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(app.stdout.take().unwrap()).lines();
    let ready = tokio::time::timeout(Duration::from_secs(60), async {
        while let Ok(Some(l)) = lines.next_line().await {
            if l == "READY" {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(ready, Ok(true), "the cloud app subscribed");
    for local in &locals {
        local
            .publish_acked(
                "brume.thing.t1.state",
                Payload::kwargs(dict([(
                    "values",
                    Value::Dict(dict([("temperature", Value::Float(21.5))])),
                )])),
                Dict::new(),
            )
            .await
            .unwrap();
    }
    let out = tokio::time::timeout(Duration::from_secs(60), app.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let mut stdout = String::new();
    while let Ok(Some(l)) = lines.next_line().await {
        stdout.push_str(&l);
        stdout.push('\n');
    }
    assert!(
        out.status.success() && stdout.contains("ALL OK"),
        "cloud app failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A Rust cloud client reaches procedures behind each hub too, and errors come back intact.
    let cloud = Client::connect(&ConnectOptions::new(&cb.app_url(), "cloud"))
        .await
        .unwrap();
    // The cloud app toggled each relay on; this toggles edge-b's off again.
    let r = cloud
        .call(
            "brume.hub.edge-b.thing.r1.action.toggle",
            vec![],
            Dict::new(),
        )
        .await
        .unwrap();
    assert_eq!(r.payload.arg(0), Some(&Value::Bool(false)));
    let err = cloud
        .call(
            "brume.hub.edge-a.thing.nope.action.toggle",
            vec![],
            Dict::new(),
        )
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("brume.error.no_such_thing"),
        "{err}"
    );
    let err = cloud
        .call(
            "brume.hub.edge-a.things.get",
            vec![Value::from("r1"), Value::Int(5)],
            Dict::new(),
        )
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("wamp.error.invalid_argument"),
        "{err}"
    );
    drop(devices);
    let err = cloud
        .call("brume.hub.edge-a.thing.t1.state", vec![], Dict::new())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("no_such_procedure"), "{err}");
}

/// The uplink serves the cloud's calls from the things service itself, whichever realm that
/// service is in: here the first realm (the uplink's own) holds no things procedures at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cloud_calls_reach_things_in_a_realm_that_is_not_the_first() {
    let cb = Crossbar::start(&["edge-a"]).await;
    let up = uplink_to("edge-a", cb.hub_addr());
    let hub = TestHub::start_with(move |c| {
        c.hub.id = "edge-a".into();
        c.uplink = up;
        let mut apps = c.realms[0].clone();
        apps.name = "apps".into();
        c.things.realm = Some(c.realms[0].name.clone());
        c.realms.insert(0, apps);
    })
    .await;
    let things = hub.local_client("app");
    things
        .call(
            "brume.things.provision",
            vec![],
            dict([("thing", Value::from("r1")), ("type", Value::from("relay"))]),
        )
        .await
        .unwrap();
    let cloud = Client::connect(&ConnectOptions::new(&cb.app_url(), "cloud"))
        .await
        .unwrap();
    // Until the hub has connected and registered its procedures on the cloud router.
    let listed = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            match cloud
                .call("brume.hub.edge-a.things.list", vec![], Dict::new())
                .await
            {
                Ok(r) => return r,
                Err(e) if e.to_string().contains("no_such_procedure") => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => panic!("things.list from the cloud: {e}"),
            }
        }
    })
    .await
    .expect("the hub registered its procedures on the cloud router");
    let ids: Vec<&str> = listed
        .payload
        .arg(0)
        .and_then(Value::as_list)
        .into_iter()
        .flatten()
        .filter_map(|t| t.as_dict()?.get("thing")?.as_str())
        .collect();
    assert_eq!(ids, ["r1"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outage_loses_nothing_and_local_apps_never_notice() {
    let mut cb = Crossbar::start(&["edge-a"]).await;
    let proxy = Proxy::start(cb.hub_addr()).await;
    let hub = hub_with_uplink("edge-a", proxy.addr, |_| {}).await;
    let local = hub.local_client("devices");
    wait_status(&local, "connected", connected).await;
    let (_cloud, mut rx) = cloud_subscriber(&cb).await;
    let app = hub.client("rawsocket", Serializer::MsgPack).await;
    let mut local_app = app
        .subscribe_lossless("brume.thing.", dict([("match", Value::from("prefix"))]))
        .await
        .unwrap();

    let things = ["t0", "t1", "t2", "t3", "t4"];
    let mut n = 0i64;
    let mut publish = async |count: usize| {
        let mut batch = Vec::new();
        for _ in 0..count {
            let thing = things[(n as usize) % things.len()];
            batch.push(state(thing, n));
            n += 1;
        }
        for (topic, payload) in batch {
            local.publish(&topic, payload, Dict::new()).await.unwrap();
        }
    };
    publish(100).await;
    let before = collect(&mut rx, 100).await;
    assert_eq!(before.values().map(Vec::len).sum::<usize>(), 100);

    // The cloud goes away: the link is cut and Crossbar is killed.
    proxy.set(ProxyMode::Closed);
    cb.stop().await;
    wait_status(&local, "disconnected", |s| !connected(s)).await;
    publish(3000).await;
    // Local apps get everything during the outage.
    for _ in 0..3100 {
        tokio::time::timeout(Duration::from_secs(10), local_app.next())
            .await
            .unwrap()
            .unwrap();
    }
    wait_status(&local, "3000 queued", |s| queued(s) == 3000).await;

    // Crossbar comes back; a cloud app subscribes; then the link is restored.
    cb.restart().await;
    let (_cloud, mut rx) = cloud_subscriber(&cb).await;
    proxy.set(ProxyMode::Open);
    let after = collect(&mut rx, 3000).await;
    assert_each_once_in_order(&after, 100..3100);
    wait_status(&local, "the queue empties", |s| {
        connected(s) && queued(s) == 0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_open_link_is_detected_and_redialled() {
    let cb = Crossbar::start(&["edge-a"]).await;
    let proxy = Proxy::start(cb.hub_addr()).await;
    let hub = hub_with_uplink("edge-a", proxy.addr, |_| {}).await;
    let local = hub.local_client("devices");
    wait_status(&local, "connected", connected).await;
    let (_cloud, mut rx) = cloud_subscriber(&cb).await;
    proxy.set(ProxyMode::Frozen);
    // Nothing comes back through a frozen link: the keepalive notices within a few seconds.
    wait_status(&local, "the half-open link is dropped", |s| !connected(s)).await;
    for i in 0..50 {
        let (t, p) = state("t1", i);
        local.publish(&t, p, Dict::new()).await.unwrap();
    }
    proxy.set(ProxyMode::Open);
    let got = collect(&mut rx, 50).await;
    assert_eq!(
        got["brume.hub.edge-a.thing.t1.state"],
        (0..50).collect::<Vec<_>>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_bounds_drop_oldest_telemetry_and_report_exact_counts() {
    let cb = Crossbar::start(&["edge-a"]).await;
    let proxy = Proxy::start(cb.hub_addr()).await;
    proxy.set(ProxyMode::Closed);
    let hub = hub_with_uplink("edge-a", proxy.addr, |u| u.queue_max_bytes = 16 * 1024).await;
    let local = hub.local_client("devices");
    for i in 0..1000 {
        let (t, p) = state("t1", i);
        local.publish(&t, p, Dict::new()).await.unwrap();
    }
    for i in 0..3 {
        local
            .publish(
                "brume.things.on_online",
                Payload::args(vec![Value::Int(i)]),
                Dict::new(),
            )
            .await
            .unwrap();
    }
    // Every event published is in the queue (or was pushed out of it by the bound) before the
    // link opens.
    wait_status(&local, "all 1003 events taken in", |s| {
        s.get("accepted").and_then(Value::as_u64) == Some(1003)
    })
    .await;
    let (_cloud, mut rx) = cloud_subscriber(&cb).await;
    proxy.set(ProxyMode::Open);
    wait_status(&local, "drained", |s| connected(s) && queued(s) == 0).await;
    let mut telemetry = Vec::new();
    let mut lifecycle = 0;
    let mut reported = None;
    while let Ok(Some((topic, kw))) = tokio::time::timeout(Duration::from_secs(2), rx.recv()).await
    {
        if topic.ends_with(".uplink.dropped") {
            reported = Some(kw);
        } else if topic.ends_with(".things.on_online") {
            lifecycle += 1;
        } else {
            telemetry.push(kw["values"].as_dict().unwrap()["n"].as_i64().unwrap());
        }
    }
    let reported = reported.expect("drops were reported on <prefix>.<hub>.uplink.dropped");
    let counts = reported["counts"].as_dict().unwrap();
    let dropped = counts["brume.thing.t1.state"].as_u64().unwrap() as usize;
    assert_eq!(lifecycle, 3, "lifecycle events are kept over telemetry");
    assert!(dropped > 0 && !telemetry.is_empty());
    assert_eq!(
        telemetry.len() + dropped,
        1000,
        "received + reported dropped = published"
    );
    assert_eq!(
        telemetry,
        ((1000 - telemetry.len()) as i64..1000).collect::<Vec<_>>(),
        "the oldest went first"
    );
    assert_eq!(reported["total"].as_u64(), Some(dropped as u64));
    // The hub's own ledger says the same, by cause.
    let s = status(&local).await;
    assert_eq!(
        s.get("dropped").and_then(Value::as_u64),
        Some(dropped as u64)
    );
    let by_cause = s.get("dropped_by_cause").and_then(Value::as_dict).unwrap();
    assert_eq!(
        by_cause.get("queue_bound").and_then(Value::as_u64),
        Some(dropped as u64),
        "{by_cause:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_age_bound_applies_while_the_link_is_down() {
    let cb = Crossbar::start(&["edge-a"]).await;
    let proxy = Proxy::start(cb.hub_addr()).await;
    proxy.set(ProxyMode::Closed);
    let hub = hub_with_uplink("edge-a", proxy.addr, |u| u.queue_max_age_secs = 1).await;
    let local = hub.local_client("devices");
    for i in 0..20 {
        let (t, p) = state("t1", i);
        local.publish(&t, p, Dict::new()).await.unwrap();
    }
    // Older than a second, they leave the queue while the cloud is unreachable, counted.
    wait_status(&local, "the old events expired", |s| {
        let age = s
            .get("dropped_by_cause")
            .and_then(Value::as_dict)
            .and_then(|d| d.get("age"))
            .and_then(Value::as_u64);
        age == Some(20) && queued(s) == 0
    })
    .await;
    let s = status(&local).await;
    assert_eq!(s.get("connected"), Some(&Value::Bool(false)), "{s:?}");
    assert_eq!(s.get("dropped").and_then(Value::as_u64), Some(20));
    // Once the link is back, the cloud hears of them.
    let (_cloud, mut rx) = cloud_subscriber(&cb).await;
    proxy.set(ProxyMode::Open);
    let report = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let (topic, kw) = rx.recv().await.expect("subscribed");
            if topic.ends_with(".uplink.dropped") {
                return kw;
            }
        }
    })
    .await
    .expect("the drops were reported");
    assert_eq!(report["total"].as_u64(), Some(20));
}

/// A config file for a `brume run` process with hub id `edge-a`, its uplink to `cloud`, data in
/// `dir/data` and every listener on port 0.
fn process_config(dir: &tempfile::TempDir, cloud: std::net::SocketAddr) -> std::path::PathBuf {
    let config = dir.path().join("brume.toml");
    std::fs::write(
        &config,
        format!(
            "[hub]\nid = \"edge-a\"\ndata_dir = {:?}\n\
             [mqtt]\nlisten = \"127.0.0.1:0\"\n[coap]\nbind = \"127.0.0.1:0\"\n[http]\nlisten = \"127.0.0.1:0\"\n\
             [[listeners]]\nname = \"rs\"\nkind = \"rawsocket\"\naddress = \"127.0.0.1:0\"\n\
             [uplink]\nenabled = true\nurl = \"ws://{}/ws\"\nrealm = \"cloud\"\n\
             reconnect_initial_ms = 100\nreconnect_max_ms = 400\n\
             [uplink.auth]\nmethod = \"ticket\"\nauthid = \"edge-a\"\nsecret = \"secret-edge-a\"\n",
            dir.path().join("data").display().to_string(),
            cloud
        ),
    )
    .unwrap();
    config
}

/// Crossbar.io behind a closed proxy, and a config for a `brume run` process that uplinks
/// through it (its directory holds the data).
async fn offline_cloud_and_config() -> (Crossbar, Proxy, tempfile::TempDir, std::path::PathBuf) {
    let cb = Crossbar::start(&["edge-a"]).await;
    let proxy = Proxy::start(cb.hub_addr()).await;
    proxy.set(ProxyMode::Closed);
    let dir = tempfile::tempdir().unwrap();
    let config = process_config(&dir, proxy.addr);
    (cb, proxy, dir, config)
}

/// A client of realm `brume` on a `brume run` process.
async fn process_client(hub: &BrumeProcess) -> Client {
    Client::connect(&ConnectOptions::new(&hub.rs_url, "brume"))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigterm_writes_the_events_still_in_memory() {
    let (_cb, _proxy, _dir, config) = offline_cloud_and_config().await;
    let mut hub = BrumeProcess::start(&config);
    let devices = process_client(&hub).await;
    // Every one acknowledged by the router, so each is in the hub's memory at least; sent in
    // pipelined batches, so the uplink may still be writing the last ones.
    const EVENTS: i64 = 20_000;
    for chunk in (0..EVENTS).collect::<Vec<_>>().chunks(2000) {
        let batch = chunk.iter().map(|&i| state("t1", i)).collect();
        for r in devices.publish_batch_acked(batch).await {
            r.unwrap();
        }
    }
    // Stopped at once, gracefully: what is in memory is written before the process exits.
    let pid = hub.child.id().to_string();
    let sent = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(sent.success());
    let exited = tokio::task::spawn_blocking(move || {
        let status = hub.child.wait();
        (hub, status)
    });
    let (hub, exit) = tokio::time::timeout(Duration::from_secs(30), exited)
        .await
        .expect("the hub exits after SIGTERM")
        .unwrap();
    assert!(exit.unwrap().success(), "a clean exit");
    drop(hub);
    drop(devices);

    let hub = BrumeProcess::start(&config);
    let devices = process_client(&hub).await;
    let s = status(&devices).await;
    assert_eq!(
        queued(&s),
        EVENTS as u64,
        "every acknowledged event was written: {s:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_events_survive_a_crash_of_the_hub() {
    let (cb, proxy, _dir, config) = offline_cloud_and_config().await;
    let mut hub = BrumeProcess::start(&config);
    let devices = process_client(&hub).await;
    for i in 0..500 {
        let (t, p) = state("t1", i);
        devices.publish(&t, p, Dict::new()).await.unwrap();
    }
    wait_status(&devices, "500 queued", |s| queued(s) == 500).await;
    hub.kill9();
    drop(devices);

    let hub = BrumeProcess::start(&config);
    let (_cloud, mut rx) = cloud_subscriber(&cb).await;
    proxy.set(ProxyMode::Open);
    let got = collect(&mut rx, 500).await;
    assert_eq!(
        got["brume.hub.edge-a.thing.t1.state"],
        (0..500).collect::<Vec<_>>(),
        "every queued event, in order"
    );
    let devices = Client::connect(&ConnectOptions::new(&hub.rs_url, "brume"))
        .await
        .unwrap();
    wait_status(&devices, "the queue empties", |s| {
        connected(s) && queued(s) == 0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uplink_authenticates_by_wampcra_and_cryptosign() {
    let cb = Crossbar::start(&["edge-c", "edge-d"]).await;
    let cra = hub_with_uplink("edge-c", cb.hub_addr(), |u| {
        u.auth.method = "wampcra".into();
        u.auth.secret = Some("cra-edge-c".into());
    })
    .await;
    let cs = hub_with_uplink("edge-d", cb.hub_addr(), |u| {
        u.auth.method = "cryptosign".into();
        u.auth.secret = Some(tests::cloud::HUB_SEED.into());
    })
    .await;
    let (_cloud, mut rx) = cloud_subscriber(&cb).await;
    for (hub, name) in [(&cra, "edge-c"), (&cs, "edge-d")] {
        let local = hub.local_client("devices");
        wait_status(&local, &format!("{name} connected"), connected).await;
        let (t, p) = state("t1", 7);
        local.publish(&t, p, Dict::new()).await.unwrap();
        let got = collect(&mut rx, 1).await;
        assert_eq!(got[&format!("brume.hub.{name}.thing.t1.state")], vec![7]);
    }
    // A wrong secret never connects, and the status says why.
    let bad = hub_with_uplink("edge-c", cb.hub_addr(), |u| {
        u.auth.method = "wampcra".into();
        u.auth.secret = Some("wrong".into());
    })
    .await;
    let local = bad.local_client("devices");
    wait_status(&local, "an error recorded", |s| {
        s.get("last_error").is_some_and(|e| *e != Value::Null)
    })
    .await;
    assert!(!connected(&status(&local).await));
}

/// Calls `procedure` in the cloud with kwargs and returns its one result as JSON.
async fn cloud_call(
    cloud: &Client,
    procedure: &str,
    kwargs: serde_json::Value,
) -> serde_json::Value {
    let Value::Dict(kw) = Value::from(kwargs) else {
        panic!("kwargs must be an object");
    };
    let r = cloud
        .call(procedure, vec![], kw)
        .await
        .unwrap_or_else(|e| panic!("{procedure}: {e}"));
    match (r.payload.arg(0), r.payload.kwarg_dict()) {
        (Some(v), _) => serde_json::Value::from(v),
        (None, Some(kw)) => serde_json::Value::from(&Value::Dict(kw.clone())),
        (None, None) => serde_json::Value::Null,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cloud_apps_read_and_set_things_and_see_the_link_status() {
    use firmware_sim::device::{Kind, SimDevice};
    use firmware_sim::gateway::{SimGateway, SimOptions};
    use serde_json::json;

    let cb = Crossbar::start(&["edge-a"]).await;
    let proxy = Proxy::start(cb.hub_addr()).await;
    proxy.set(ProxyMode::Closed);
    let hub = hub_with_uplink("edge-a", proxy.addr, |_| {}).await;
    let local = hub.local_client("watcher");
    // Subscribed while the link is down, so every change of its state is seen.
    let mut on_status = local
        .subscribe_lossless("brume.uplink.on_status", Dict::new())
        .await
        .unwrap();
    local
        .call(
            "brume.things.provision",
            vec![],
            dict([("thing", Value::from("r1")), ("type", Value::from("relay"))]),
        )
        .await
        .unwrap();
    let _devices = SimGateway::start(
        hub.hub.things(),
        vec![SimDevice::new(
            device_models::ThingId::new("r1").unwrap(),
            Kind::Relay,
            1,
        )],
        SimOptions::default(),
    )
    .await
    .unwrap();
    // The next status change that says `connected` is `want` (failed attempts while the link
    // is down are changes too: their `last_error` differs).
    let status_change = async |sub: &mut hub::client::Subscription, want: bool| -> Dict {
        loop {
            let ev = tokio::time::timeout(Duration::from_secs(30), sub.next())
                .await
                .unwrap_or_else(|_| panic!("no status change to connected = {want}"))
                .expect("subscribed");
            let status = ev
                .payload
                .kwarg_dict()
                .cloned()
                .expect("the status as kwargs");
            if status.get("connected") == Some(&Value::Bool(want)) {
                return status;
            }
        }
    };

    proxy.set(ProxyMode::Open);
    let up = status_change(&mut on_status, true).await;
    assert!(up.get("since").and_then(Value::as_str).is_some(), "{up:?}");
    wait_status(&local, "connected", connected).await;

    let cloud = Client::connect(&ConnectOptions::new(&cb.app_url(), "cloud"))
        .await
        .unwrap();
    // The device is online behind the hub; the cloud sees it through the hub's procedures.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let t = cloud_call(
            &cloud,
            "brume.hub.edge-a.things.get",
            json!({"thing": "r1"}),
        )
        .await;
        if t["online"] == true {
            assert_eq!(t["type"], "relay");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "r1 never came online: {t}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let list = cloud_call(&cloud, "brume.hub.edge-a.things.list", json!({})).await;
    assert_eq!(list[0]["thing"], "r1", "{list}");
    let set = cloud_call(
        &cloud,
        "brume.hub.edge-a.things.set",
        json!({"thing": "r1", "property": "on", "value": true}),
    )
    .await;
    assert_eq!(set["settled"]["on"]["value"], true, "{set}");
    let td = cloud_call(
        &cloud,
        "brume.hub.edge-a.things.describe",
        json!({"thing": "r1"}),
    )
    .await;
    assert!(
        td["id"].as_str().is_some_and(|id| id.contains("r1")),
        "{td}"
    );
    assert!(td["properties"]["on"].is_object(), "{td}");
    let status = cloud_call(&cloud, "brume.hub.edge-a.uplink.status", json!({})).await;
    assert_eq!(status["connected"], true, "{status}");
    assert_eq!(status["url"], format!("ws://{}/ws", proxy.addr), "{status}");

    // The link going down is a status change too.
    proxy.set(ProxyMode::Closed);
    let down = status_change(&mut on_status, false).await;
    assert!(
        down.get("last_error").and_then(Value::as_str).is_some(),
        "{down:?}"
    );
}

/// The drill of a crash under load: 100 MQTT devices publish QoS 1 reports as fast as the hub
/// acknowledges them while the cloud is unreachable, the hub is SIGKILLed in the middle, and
/// after the restart every report a device got a PUBACK for reaches the cloud, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_report_a_device_got_a_puback_for_reaches_the_cloud_after_a_crash() {
    use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};

    const DEVICES: usize = 100;
    const REPORTS: u64 = 40;
    let (cb, proxy, _dir, config) = offline_cloud_and_config().await;
    let mqtt = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let text = std::fs::read_to_string(&config).unwrap().replace(
        "[mqtt]\nlisten = \"127.0.0.1:0\"",
        &format!("[mqtt]\nlisten = \"{mqtt}\""),
    );
    std::fs::write(&config, text).unwrap();
    let mut hub = BrumeProcess::start(&config);
    let admin = process_client(&hub).await;
    let mut devices = Vec::new();
    for d in 0..DEVICES {
        let thing = format!("drill-{d}");
        let p = admin
            .call(
                "brume.things.provision",
                vec![],
                dict([
                    ("thing", Value::from(thing.as_str())),
                    ("type", Value::from("temperature_sensor")),
                ]),
            )
            .await
            .unwrap();
        let secret = p.payload.arg(0).and_then(Value::as_dict).unwrap()["secret"]
            .as_str()
            .unwrap()
            .to_owned();
        let mut o = MqttOptions::new(thing.clone(), mqtt.ip().to_string(), mqtt.port());
        o.set_credentials(thing.clone(), secret);
        o.set_inflight(50);
        o.set_keep_alive(Duration::from_secs(30));
        let (client, mut events) = AsyncClient::new(o, 64);
        let acked = Arc::new(AtomicU64::new(0));
        let counter = acked.clone();
        let poll = tokio::spawn(async move {
            // Until the hub dies: every PUBACK counted (the broker acknowledges in order).
            while let Ok(e) = events.poll().await {
                if let Event::Incoming(Packet::PubAck(_)) = e {
                    counter.fetch_add(1, Ordering::SeqCst);
                }
            }
        });
        let publish = tokio::spawn({
            let thing = thing.clone();
            async move {
                for i in 0..REPORTS {
                    let payload = format!("{{\"temperature\": {}}}", i as f64 / 100.0);
                    let topic = format!("things/{thing}/state");
                    if client
                        .publish(topic, QoS::AtLeastOnce, false, payload)
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            }
        });
        devices.push((thing, acked, poll, publish));
    }
    // Killed in the middle of the run, acknowledgements still flowing.
    let total = || {
        devices
            .iter()
            .map(|d| d.1.load(Ordering::SeqCst))
            .sum::<u64>()
    };
    let half = DEVICES as u64 * REPORTS / 2;
    tokio::time::timeout(Duration::from_secs(60), async {
        while total() < half {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await
    .expect("half the reports acknowledged");
    hub.kill9();
    drop(admin);
    let mut acked = BTreeMap::new();
    for (thing, count, poll, publish) in devices {
        let _ = tokio::time::timeout(Duration::from_secs(10), poll).await;
        publish.abort();
        acked.insert(
            format!("brume.hub.edge-a.thing.{thing}.state"),
            count.load(Ordering::SeqCst),
        );
    }
    assert!(acked.values().sum::<u64>() >= half);

    let _hub = BrumeProcess::start(&config);
    let (_cloud, mut rx) = cloud_subscriber(&cb).await;
    proxy.set(ProxyMode::Open);
    // Per device: the values the cloud got, duplicates (same hub, seq) dropped.
    let mut seen = HashSet::new();
    let mut got: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let complete = |got: &BTreeMap<String, Vec<u64>>| {
        acked
            .iter()
            .all(|(topic, n)| got.get(topic).map_or(0, Vec::len) as u64 >= *n)
    };
    let arrived = tokio::time::timeout(Duration::from_secs(90), async {
        while !complete(&got) {
            let (topic, kw) = rx.recv().await.expect("cloud subscription open");
            let Some(meta) = kw.get("_brume").and_then(Value::as_dict) else {
                continue;
            };
            let key = (
                meta["hub"].as_str().unwrap().to_owned(),
                meta["seq"].as_u64().unwrap(),
            );
            if !seen.insert(key) || !acked.contains_key(&topic) {
                continue;
            }
            let t = kw["values"].as_dict().unwrap()["temperature"]
                .as_f64()
                .unwrap();
            got.entry(topic)
                .or_default()
                .push((t * 100.0).round() as u64);
        }
    })
    .await;
    for (topic, n) in &acked {
        let values = got.get(topic).cloned().unwrap_or_default();
        let prefix: Vec<u64> = values.iter().copied().take(*n as usize).collect();
        assert_eq!(
            prefix,
            (0..*n).collect::<Vec<_>>(),
            "{topic}: the {n} acknowledged reports, in order (arrived in time: {})",
            arrived.is_ok()
        );
    }
}

/// A burst far larger than the uplink's local session can hold while the cloud is slow (its
/// link carries 256 KiB/s): the session is never closed, what it missed is counted
/// (`slow_consumer`), every other event is queued, forwarding goes on through the slow link
/// while the backlog waits, and an event published after the burst reaches the cloud.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_100k_events_with_the_cloud_slow_is_counted_to_the_last_and_forwarding_goes_on()
{
    const BURST: u64 = 100_000;
    let cb = Crossbar::start(&["edge-a"]).await;
    let proxy = Proxy::start(cb.hub_addr()).await;
    // A small session queue, so the burst certainly outruns the queue's writes.
    let hub = hub_with_uplink("edge-a", proxy.addr, |u| u.session_queue = 16).await;
    let local = hub.local_client("devices");
    wait_status(&local, "connected", connected).await;
    let (_cloud, mut rx) = cloud_subscriber(&cb).await;
    proxy.set(ProxyMode::Slow);
    for i in 0..BURST {
        let (t, p) = state("t1", i as i64);
        local.publish(&t, p, Dict::new()).await.unwrap();
    }
    let counted = |s: &Dict| {
        let slow = s["dropped_by_cause"].as_dict().unwrap()["slow_consumer"]
            .as_u64()
            .unwrap();
        (s["accepted"].as_u64().unwrap(), slow)
    };
    wait_status(&local, "every event of the burst queued or counted", |s| {
        let (accepted, slow) = counted(s);
        accepted + slow == BURST
    })
    .await;
    // Through the slow link the cloud keeps receiving, window after window.
    let mut received = 0usize;
    for window in 0..3 {
        let end = tokio::time::Instant::now() + Duration::from_secs(2);
        let mut n = 0usize;
        while let Ok(Some(_)) = tokio::time::timeout_at(end, rx.recv()).await {
            n += 1;
        }
        assert!(
            n > 0,
            "window {window}: nothing reached the cloud through the slow link"
        );
        received += n;
    }
    assert!(
        (received as u64) < BURST,
        "the link was slow enough to hold a backlog ({received} arrived in 6 s)"
    );
    proxy.set(ProxyMode::Open);
    let (t, p) = state("after-burst", 1);
    local.publish(&t, p, Dict::new()).await.unwrap();
    let arrived = tokio::time::timeout(Duration::from_secs(180), async {
        loop {
            let (topic, _) = rx.recv().await.expect("cloud subscription open");
            if topic == "brume.hub.edge-a.thing.after-burst.state" {
                return;
            }
        }
    })
    .await;
    let s = status(&local).await;
    assert!(arrived.is_ok(), "forwarding stopped after the burst: {s:?}");
    let (accepted, slow) = counted(&s);
    assert_eq!(accepted + slow, BURST + 1, "{s:?}");
    assert!(slow > 0, "the burst outran the session: {s:?}");
    assert_eq!(s["dropped"].as_u64(), Some(slow), "{s:?}");
}

/// The drill of a flapping link: the cloud link goes down and up every second for a minute
/// while local publishers keep going; once it settles, the cloud has every event exactly once
/// after dropping duplicates by (hub, seq), each thing's in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_flapping_every_second_for_a_minute_under_load_loses_nothing() {
    const FLAPS: usize = 60;
    let cb = Crossbar::start(&["edge-a"]).await;
    let proxy = Proxy::start(cb.hub_addr()).await;
    let hub = hub_with_uplink("edge-a", proxy.addr, |_| {}).await;
    let local = hub.local_client("devices");
    wait_status(&local, "connected", connected).await;
    let (_cloud, mut rx) = cloud_subscriber(&cb).await;
    let things = ["t0", "t1", "t2", "t3", "t4"];
    let flapping = async {
        for i in 0..FLAPS {
            tokio::time::sleep(Duration::from_secs(1)).await;
            proxy.set(if i % 2 == 0 {
                ProxyMode::Closed
            } else {
                ProxyMode::Open
            });
        }
        proxy.set(ProxyMode::Open);
    };
    // About 400 events a second, for as long as the link flaps.
    const EVENTS: i64 = FLAPS as i64 * 400;
    let publishing = async {
        for n in 0..EVENTS {
            let (topic, payload) = state(things[(n as usize) % things.len()], n);
            local.publish(&topic, payload, Dict::new()).await.unwrap();
            if n % 40 == 39 {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    tokio::join!(flapping, publishing);
    let got = collect(&mut rx, EVENTS as usize).await;
    assert_each_once_in_order(&got, 0..EVENTS);
    let s = status(&local).await;
    assert_eq!(s["dropped"].as_u64(), Some(0), "{s:?}");
}

/// The drill of a disk filling up: the hub's disk budget (`hub.max_disk_bytes`, here 4 MiB)
/// runs out while the cloud is unreachable. The hub keeps serving, sheds the oldest telemetry
/// (counted as `disk_full`, and said on `brume.uplink.on_status`), keeps the newest, and once
/// the link is back and the queue drains, takes events again without shedding.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_sheds_the_oldest_telemetry_counted_and_the_hub_recovers() {
    let cb = Crossbar::start(&["edge-a"]).await;
    let proxy = Proxy::start(cb.hub_addr()).await;
    proxy.set(ProxyMode::Closed);
    let up = uplink_to("edge-a", proxy.addr);
    let hub = TestHub::start_with(move |c| {
        c.hub.id = "edge-a".into();
        c.hub.max_disk_bytes = 4 * 1024 * 1024;
        c.uplink = up;
    })
    .await;
    let local = hub.local_client("devices");
    let mut on_status = local
        .subscribe("brume.uplink.on_status", Dict::new())
        .await
        .unwrap();
    let pad = "p".repeat(2000);
    let padded = |n: i64| {
        Payload::kwargs(dict([(
            "values",
            Value::Dict(dict([
                ("n", Value::Int(n)),
                ("pad", Value::from(pad.as_str())),
            ])),
        )]))
    };
    const EVENTS: i64 = 4000;
    for n in 0..EVENTS {
        local
            .publish("brume.thing.t1.state", padded(n), Dict::new())
            .await
            .unwrap();
    }
    let disk_full = |s: &Dict| {
        s["dropped_by_cause"].as_dict().unwrap()["disk_full"]
            .as_u64()
            .unwrap()
    };
    wait_status(&local, "every event queued or shed", |s| {
        queued(s) + disk_full(s) == EVENTS as u64
    })
    .await;
    let s = status(&local).await;
    let shed = disk_full(&s);
    assert!(shed > 0, "the budget ran out: {s:?}");
    assert_eq!(s["dropped"].as_u64(), Some(shed), "{s:?}");
    assert_eq!(s["accepted"].as_u64(), Some(EVENTS as u64), "{s:?}");
    // Said on the status topic.
    let said = tokio::time::timeout(Duration::from_secs(10), on_status.next())
        .await
        .expect("a status event")
        .unwrap();
    let said = said.payload.kwarg_dict().cloned().unwrap();
    assert!(disk_full(&said) > 0, "{said:?}");
    // The hub serves on.
    local
        .call("brume.things.list", vec![], Dict::new())
        .await
        .unwrap();

    // The link comes back: the newest events arrive, the oldest were shed.
    let (_cloud, mut rx) = cloud_subscriber(&cb).await;
    proxy.set(ProxyMode::Open);
    let kept = (EVENTS as u64 - shed) as usize;
    let got = collect(&mut rx, kept).await;
    let ns = &got["brume.hub.edge-a.thing.t1.state"];
    assert_eq!(
        ns,
        &((EVENTS - kept as i64)..EVENTS).collect::<Vec<_>>(),
        "the newest kept, in order"
    );
    wait_status(&local, "the queue drained", |s| queued(s) == 0).await;
    // Space is back: new events are taken without shedding.
    for n in EVENTS..EVENTS + 100 {
        local
            .publish("brume.thing.t1.state", padded(n), Dict::new())
            .await
            .unwrap();
    }
    let got = collect(&mut rx, 100).await;
    assert_eq!(got["brume.hub.edge-a.thing.t1.state"].len(), 100);
    assert_eq!(disk_full(&status(&local).await), shed, "nothing more shed");
}

/// `command` run in a private mount namespace where `data` is a fresh tmpfs of `size_mib`,
/// holding a filler file of `filler_mib` (so the disk fills up early, and space comes back when
/// the test deletes the filler). Root gets a plain mount namespace; others a user namespace.
fn on_small_filesystem(
    data: &std::path::Path,
    size_mib: u32,
    filler_mib: u32,
    brume_args: &[&std::ffi::OsStr],
) -> std::process::Command {
    let script = format!(
        "set -e; mount -t tmpfs -o size={size_mib}m tmpfs \"$1\"; \
         head -c {} /dev/zero > \"$1/filler\"; shift; exec \"$@\"",
        u64::from(filler_mib) << 20
    );
    let root = std::process::Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0\n"));
    let mut cmd = std::process::Command::new("unshare");
    if !root {
        cmd.args(["--user", "--map-root-user"]);
    }
    cmd.args([
        "--mount",
        "--propagation",
        "private",
        "sh",
        "-c",
        &script,
        "sh",
    ])
    .arg(data)
    .arg(tests::hub::brume_binary())
    .args(brume_args);
    cmd
}

/// The drill of a real disk filling up: the hub's data directory is a 32 MiB filesystem, and the
/// cloud is unreachable while events keep coming. First the queue's own growth meets the room
/// the hub keeps free (two disk reserves): it stops growing and sheds its oldest telemetry.
/// Then another program takes every byte left: the hub releases its disk reserve, provisioning
/// and info updates still commit, and the queue goes on shedding (`disk_full`), never failing
/// (`disk_error`). Once the space is back and the link too, the kept events arrive in order,
/// the reserve is written again, and new events are taken without shedding.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_full_disk_sheds_telemetry_keeps_provisioning_and_recovers() {
    let cb = Crossbar::start(&["edge-a"]).await;
    let proxy = Proxy::start(cb.hub_addr()).await;
    proxy.set(ProxyMode::Closed);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let config = dir.path().join("brume.toml");
    std::fs::write(
        &config,
        format!(
            "[hub]\nid = \"edge-a\"\ndata_dir = {:?}\nmax_disk_bytes = 1073741824\n\
             [mqtt]\nenabled = false\n[coap]\nenabled = false\n[http]\nlisten = \"127.0.0.1:0\"\n\
             [[listeners]]\nname = \"rs\"\nkind = \"rawsocket\"\naddress = \"127.0.0.1:0\"\n\
             [uplink]\nenabled = true\nurl = \"ws://{}/ws\"\nrealm = \"cloud\"\n\
             reconnect_initial_ms = 100\nreconnect_max_ms = 400\n\
             [uplink.auth]\nmethod = \"ticket\"\nauthid = \"edge-a\"\nsecret = \"secret-edge-a\"\n",
            data.display().to_string(),
            proxy.addr,
        ),
    )
    .unwrap();
    let hub = BrumeProcess::spawn(on_small_filesystem(
        &data,
        32,
        8,
        &["run".as_ref(), "--config".as_ref(), config.as_os_str()],
    ));
    // The hub's data directory as this process sees it, through the hub's mount namespace.
    let seen = std::path::PathBuf::from(format!("/proc/{}/root{}", hub.child.id(), data.display()));
    let reserve = seen.join(hub::disk::RESERVE_FILE);
    assert!(
        seen.join("filler").exists(),
        "the data directory is the small filesystem"
    );
    let written = tokio::time::timeout(Duration::from_secs(10), async {
        while !reserve.exists() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(written.is_ok(), "the hub keeps a disk reserve");
    let app =
        Client::connect(&ConnectOptions::new(&hub.rs_url, "brume").serializer(Serializer::MsgPack))
            .await
            .unwrap();
    let pad = "p".repeat(2000);
    let padded = |n: i64| {
        (
            "brume.thing.t1.state".to_owned(),
            Payload::kwargs(dict([(
                "values",
                Value::Dict(dict([
                    ("n", Value::Int(n)),
                    ("pad", Value::from(pad.as_str())),
                ])),
            )])),
        )
    };
    let publish = |range: std::ops::Range<i64>| {
        let app = app.clone();
        let events: Vec<_> = range.map(padded).collect();
        async move {
            for chunk in events.chunks(500) {
                for r in app.publish_batch_acked(chunk.to_vec()).await {
                    r.unwrap();
                }
            }
        }
    };
    let cause = |s: &Dict, c: &str| {
        s["dropped_by_cause"].as_dict().unwrap()[c]
            .as_u64()
            .unwrap()
    };
    let settled = |n: i64| {
        move |s: &Dict| queued(s) + cause(s, "disk_full") + cause(s, "disk_error") == n as u64
    };

    // 1. 6,000 events of 2 KB: more than the room the queue may take (16 MiB free less 8).
    const FIRST: i64 = 6000;
    publish(0..FIRST).await;
    wait_status(&app, "every event queued or shed", settled(FIRST)).await;
    let s = status(&app).await;
    assert!(
        cause(&s, "disk_full") > 0,
        "the queue met the room kept free: {s:?}"
    );
    assert_eq!(cause(&s, "disk_error"), 0, "shed, never failed: {s:?}");
    assert!(reserve.exists(), "the reserve is untouched: {s:?}");

    // 2. Another program takes every byte left.
    let hog = seen.join("hog");
    {
        use std::io::Write as _;
        let mut f = std::fs::File::create(&hog).unwrap();
        let mb = vec![1u8; 1 << 20];
        while f.write_all(&mb).and_then(|()| f.sync_all()).is_ok() {}
        let mut kb = [1u8; 4096];
        while f.write_all(&kb).and_then(|()| f.sync_all()).is_ok() {
            kb[0] = kb[0].wrapping_add(1);
        }
    }
    const EVENTS: i64 = FIRST + 2000;
    publish(FIRST..EVENTS).await;
    wait_status(&app, "every event queued or shed", settled(EVENTS)).await;
    // What is never shed still commits on the full disk.
    let provisioned = app
        .call(
            "brume.things.provision",
            vec![],
            dict([
                ("thing", Value::from("late-1")),
                ("type", Value::from("temperature_sensor")),
            ]),
        )
        .await;
    assert!(
        provisioned.is_ok(),
        "provisioning on a full disk: {provisioned:?}"
    );
    let updated = app
        .call(
            "brume.things.update_info",
            vec![],
            dict([
                ("thing", Value::from("late-1")),
                ("property", Value::from("location")),
                ("value", Value::from("on a full disk")),
            ]),
        )
        .await;
    assert!(
        updated.is_ok(),
        "an info update on a full disk: {updated:?}"
    );
    let s = status(&app).await;
    let shed = cause(&s, "disk_full");
    assert_eq!(cause(&s, "disk_error"), 0, "shed, never failed: {s:?}");
    assert!(
        !reserve.exists(),
        "the reserve was released for the full disk"
    );

    // 3. Space comes back and so does the link: the newest events arrive, in order.
    std::fs::remove_file(&hog).unwrap();
    std::fs::remove_file(seen.join("filler")).unwrap();
    let (_cloud, mut rx) = cloud_subscriber(&cb).await;
    proxy.set(ProxyMode::Open);
    let kept = (EVENTS as u64 - shed) as usize;
    let got = collect(&mut rx, kept).await;
    assert_eq!(
        got["brume.hub.edge-a.thing.t1.state"],
        ((EVENTS - kept as i64)..EVENTS).collect::<Vec<_>>(),
        "the newest kept, in order"
    );
    wait_status(&app, "the queue drained", |s| queued(s) == 0).await;
    publish(EVENTS..EVENTS + 500).await;
    // Every new one reaches the cloud (after what else the queue held: the new thing's events).
    let last = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            let (topic, kw) = rx.recv().await.expect("cloud subscription open");
            let n = kw
                .get("values")
                .and_then(Value::as_dict)
                .and_then(|v| v.get("n"))
                .and_then(Value::as_i64);
            if topic == "brume.hub.edge-a.thing.t1.state" && n == Some(EVENTS + 499) {
                return;
            }
        }
    })
    .await;
    assert!(
        last.is_ok(),
        "the events after the disk had room again reached the cloud"
    );
    let s = status(&app).await;
    assert_eq!(cause(&s, "disk_full"), shed, "nothing more shed: {s:?}");
    assert!(reserve.exists(), "the disk reserve is back");
}
