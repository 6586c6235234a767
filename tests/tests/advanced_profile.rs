//! The Advanced Profile: Autobahn for everything it supports, Rust clients for the rest (event
//! history, kill by authid/role and kill_all, flushing testaments, cancel modes).

// Test helpers fail the test by panicking.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use hub::client::ClientError;
use hub::config::HistorySection;
use hub::wamp::{Dict, Payload, Serializer, Value, dict, uris};
use tests::hub::{COMBOS, TestHub};
use tests::peers::{assert_success, run_script};

const WAIT: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn autobahn_advanced_profile_over_every_transport() {
    let hub = TestHub::start().await;
    for (transport, ser) in COMBOS {
        let name = if ser == Serializer::Json {
            "json"
        } else {
            "msgpack"
        };
        let out = run_script(
            "advanced_profile.py",
            &[hub.url(transport), name.to_owned()],
            Duration::from_secs(120),
        )
        .await;
        assert_success("advanced_profile.py", &out);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_history_per_configured_pattern() {
    let hub = TestHub::start_with(|c| {
        c.realms[0].history = vec![HistorySection {
            topic: "com.hist.".into(),
            policy: "prefix".into(),
            limit: 3,
        }];
    })
    .await;
    let p = hub.client("rawsocket", Serializer::MsgPack).await;
    let s = hub.client("websocket", Serializer::Json).await;
    let sub = s.subscribe("com.hist.a", Dict::new()).await.unwrap();
    for i in 0..5 {
        p.publish_acked(
            "com.hist.a",
            Payload::args(vec![Value::Int(i)]),
            Dict::new(),
        )
        .await
        .unwrap();
    }
    p.publish_acked(
        "com.other",
        Payload::args(vec![Value::Int(99)]),
        Dict::new(),
    )
    .await
    .unwrap();
    let r = s
        .call(
            "wamp.subscription.get_events",
            vec![Value::from(sub.id)],
            dict([("limit", Value::Int(10))]),
        )
        .await
        .unwrap();
    let events = r.payload.arg(0).and_then(Value::as_list).unwrap();
    let got: Vec<i64> = events
        .iter()
        .map(|e| {
            e.as_dict().unwrap()["args"].as_list().unwrap()[0]
                .as_i64()
                .unwrap()
        })
        .collect();
    assert_eq!(
        got,
        vec![4, 3, 2],
        "newest first, bounded by the configured limit"
    );
    let err = s
        .call(
            "wamp.subscription.get_events",
            vec![Value::Int(12345)],
            Dict::new(),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::Wamp(e) if e.uri == uris::NO_SUCH_SUBSCRIPTION));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_by_authid_authrole_and_all_spare_the_caller() {
    let hub = TestHub::start().await;
    let admin = hub.local_client("admin");
    let victims: Vec<_> = futures_util::future::join_all(
        (0..3).map(|_| hub.client("rawsocket", Serializer::MsgPack)),
    )
    .await;
    let target = victims[0].welcome_details()["authid"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = admin
        .call(
            "wamp.session.kill_by_authid",
            vec![Value::from(target.as_str())],
            Dict::new(),
        )
        .await
        .unwrap();
    assert_eq!(
        r.payload.arg(0).and_then(Value::as_list).map(Vec::len),
        Some(1)
    );
    assert_eq!(
        tokio::time::timeout(WAIT, victims[0].closed())
            .await
            .unwrap()
            .as_deref(),
        Some(uris::CLOSE_KILLED)
    );
    let r = admin
        .call(
            "wamp.session.kill_by_authrole",
            vec![Value::from("anonymous")],
            Dict::new(),
        )
        .await
        .unwrap();
    assert_eq!(
        r.payload.arg(0).and_then(Value::as_list).map(Vec::len),
        Some(2)
    );
    let more = hub.client("websocket", Serializer::Json).await;
    let r = admin
        .call(
            "wamp.session.kill_all",
            vec![],
            dict([("reason", Value::from("com.example.maintenance"))]),
        )
        .await
        .unwrap();
    // Only `more`: the hub's own in-process services are spared.
    assert_eq!(r.payload.arg(0).and_then(Value::as_u64), Some(1));
    assert!(
        admin
            .call("brume.things.list", vec![], Dict::new())
            .await
            .is_ok(),
        "the things service survived kill_all"
    );
    let internal = hub
        .hub
        .router()
        .realm("brume")
        .unwrap()
        .sessions()
        .into_iter()
        .find(|s| s.transport.kind == "local" && s.id != admin.session_id())
        .expect("an internal service session");
    let err = admin
        .call(
            "wamp.session.kill",
            vec![Value::from(internal.id)],
            Dict::new(),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::Wamp(e) if e.uri == uris::NOT_AUTHORIZED));
    assert_eq!(
        tokio::time::timeout(WAIT, more.closed())
            .await
            .unwrap()
            .as_deref(),
        Some("com.example.maintenance")
    );
    // The caller survives every kill.
    assert!(
        admin
            .call("wamp.session.count", vec![], Dict::new())
            .await
            .is_ok()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flushed_testaments_are_not_published() {
    let hub = TestHub::start().await;
    let watcher = hub.client("rawsocket", Serializer::MsgPack).await;
    let mut wills = watcher.subscribe("com.will", Dict::new()).await.unwrap();
    let dying = hub.client("rawsocket", Serializer::Json).await;
    for (topic, scope) in [("com.will", "destroyed"), ("com.will", "detached")] {
        dying
            .call(
                "wamp.session.add_testament",
                vec![
                    Value::from(topic),
                    Value::List(vec![Value::from(scope)]),
                    Value::Dict(Dict::new()),
                ],
                dict([("scope", Value::from(scope))]),
            )
            .await
            .unwrap();
    }
    let r = dying
        .call(
            "wamp.session.flush_testaments",
            vec![],
            dict([("scope", Value::from("destroyed"))]),
        )
        .await
        .unwrap();
    assert_eq!(r.payload.arg(0).and_then(Value::as_u64), Some(1));
    dying.leave().await.unwrap();
    let ev = tokio::time::timeout(WAIT, wills.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ev.payload.arg(0), Some(&Value::from("detached")));
    assert!(
        tokio::time::timeout(Duration::from_millis(300), wills.next())
            .await
            .is_err(),
        "the flushed one stays unpublished"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progressive_results_restart_the_timeout() {
    const STEP: Duration = Duration::from_millis(800);
    const TIMEOUT: Duration = Duration::from_millis(2000);
    let hub = TestHub::start().await;
    let callee = hub.local_client("callee");
    let mut reg = callee
        .register("com.slowstream", Dict::new())
        .await
        .unwrap();
    tokio::spawn(async move {
        while let Some(inv) = reg.next().await {
            for i in 0..4 {
                tokio::time::sleep(STEP).await;
                inv.progress(Payload::args(vec![Value::Int(i)]))
                    .await
                    .unwrap();
            }
            inv.reply(Payload::args(vec!["end".into()])).await.unwrap();
        }
    });
    let caller = hub.client("rawsocket", Serializer::MsgPack).await;
    let (tx, mut rx) = tokio::sync::mpsc::channel(10);
    // Four steps under a timeout that is shorter than all of them together but far longer than
    // one (by more than any scheduling delay): each progressive result restarts it.
    let r = caller
        .call_progressive(
            "com.slowstream",
            Payload::empty(),
            dict([("timeout", Value::Int(TIMEOUT.as_millis() as i64))]),
            tx,
        )
        .await
        .unwrap();
    assert_eq!(r.payload.arg(0), Some(&Value::from("end")));
    let mut parts = Vec::new();
    while let Ok(p) = rx.try_recv() {
        parts.push(p.payload.arg(0).and_then(Value::as_i64).unwrap());
    }
    assert_eq!(parts, vec![0, 1, 2, 3]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_session_testament_is_published() {
    let hub = TestHub::start().await;
    let watcher = hub.client("rawsocket", Serializer::MsgPack).await;
    let mut wills = watcher.subscribe("com.will", Dict::new()).await.unwrap();
    let dying = hub.client("websocket", Serializer::Json).await;
    dying
        .call(
            "wamp.session.add_testament",
            vec![
                Value::from("com.will"),
                Value::List(vec![Value::from("gone")]),
                Value::Dict(Dict::new()),
            ],
            Dict::new(),
        )
        .await
        .unwrap();
    watcher
        .call(
            "wamp.session.kill",
            vec![Value::from(dying.session_id())],
            Dict::new(),
        )
        .await
        .unwrap();
    let ev = tokio::time::timeout(WAIT, wills.next())
        .await
        .expect("testament in time")
        .unwrap();
    assert_eq!(ev.payload.arg(0), Some(&Value::from("gone")));
    assert_eq!(
        tokio::time::timeout(WAIT, dying.closed())
            .await
            .unwrap()
            .as_deref(),
        Some(uris::CLOSE_KILLED)
    );
}

/// A raw JSON session that joined with the given roles; returns the connection.
async fn raw_session(hub: &TestHub, roles: &str) -> tests::raw::RawConn {
    let (mut c, _) = tests::raw::RawConn::handshake(hub.addr, 1).await;
    c.send(format!(r#"[1, "brume", {{"roles": {roles}}}]"#).as_bytes())
        .await;
    let (_, welcome) = c.recv().await.expect("WELCOME");
    assert!(
        welcome.starts_with(b"[2,"),
        "{}",
        String::from_utf8_lossy(&welcome)
    );
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_modes_skip_and_killnowait() {
    let hub = TestHub::start().await;
    let mut callee = raw_session(
        &hub,
        r#"{"callee": {"features": {"call_canceling": true}}}"#,
    )
    .await;
    callee.send(br#"[64, 1, {}, "com.cancel"]"#).await;
    assert_eq!(callee.recv_json().await[0], 65);
    let mut caller = raw_session(
        &hub,
        r#"{"caller": {"features": {"call_canceling": true}}}"#,
    )
    .await;

    // skip: the caller hears canceled at once, the callee hears nothing.
    caller.send(br#"[48, 1, {}, "com.cancel"]"#).await;
    let inv = callee.recv_json().await;
    assert_eq!(inv[0], 68);
    caller.send(br#"[49, 1, {"mode": "skip"}]"#).await;
    let err = caller.recv_json().await;
    assert_eq!(
        (err[0].clone(), err[2].clone(), err[4].clone()),
        (8.into(), 1.into(), "wamp.error.canceled".into())
    );
    // The callee's late answer is dropped; the caller hears nothing more for request 1.
    callee
        .send(format!("[70, {}, {{}}, [\"late\"]]", inv[1]).as_bytes())
        .await;

    // killnowait: the caller hears canceled at once, the callee gets INTERRUPT.
    caller.send(br#"[48, 2, {}, "com.cancel"]"#).await;
    let inv = callee.recv_json().await;
    assert_eq!(inv[0], 68);
    caller.send(br#"[49, 2, {"mode": "killnowait"}]"#).await;
    let err = caller.recv_json().await;
    assert_eq!((err[0].clone(), err[2].clone()), (8.into(), 2.into()));
    let interrupt = callee.recv_json().await;
    assert_eq!(
        (interrupt[0].clone(), interrupt[1].clone()),
        (69.into(), inv[1].clone())
    );
    assert_eq!(interrupt[2]["mode"], "killnowait");

    // kill: INTERRUPT, and the caller gets what the callee answers.
    caller.send(br#"[48, 3, {}, "com.cancel"]"#).await;
    let inv = callee.recv_json().await;
    caller.send(br#"[49, 3, {"mode": "kill"}]"#).await;
    let interrupt = callee.recv_json().await;
    assert_eq!(interrupt[2]["mode"], "kill");
    callee
        .send(
            format!(
                "[8, 68, {}, {{}}, \"wamp.error.canceled\", [\"stopped\"]]",
                inv[1]
            )
            .as_bytes(),
        )
        .await;
    let err = caller.recv_json().await;
    assert_eq!(
        (err[0].clone(), err[2].clone(), err[5][0].clone()),
        (8.into(), 3.into(), "stopped".into())
    );

    // kill, answered with another error (as Autobahn callees do): the caller still hears
    // wamp.error.canceled, with the callee's arguments, as from Crossbar.io.
    caller.send(br#"[48, 4, {}, "com.cancel"]"#).await;
    let inv = callee.recv_json().await;
    caller.send(br#"[49, 4, {"mode": "kill"}]"#).await;
    let interrupt = callee.recv_json().await;
    assert_eq!(interrupt[2]["mode"], "kill");
    callee
        .send(
            format!(
                "[8, 68, {}, {{}}, \"wamp.error.runtime_error\", [\"interrupted\"]]",
                inv[1]
            )
            .as_bytes(),
        )
        .await;
    let err = caller.recv_json().await;
    assert_eq!(
        (
            err[0].clone(),
            err[2].clone(),
            err[4].clone(),
            err[5][0].clone()
        ),
        (
            8.into(),
            4.into(),
            "wamp.error.canceled".into(),
            "interrupted".into()
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_call_timeout_reaches_callees_that_announce_call_timeout() {
    let hub = TestHub::start().await;
    let mut with = raw_session(&hub, r#"{"callee": {"features": {"call_timeout": true}}}"#).await;
    with.send(br#"[64, 1, {}, "com.with"]"#).await;
    assert_eq!(with.recv_json().await[0], 65);
    let mut without = raw_session(&hub, r#"{"callee": {}}"#).await;
    without.send(br#"[64, 1, {}, "com.without"]"#).await;
    assert_eq!(without.recv_json().await[0], 65);
    let mut caller = raw_session(&hub, r#"{"caller": {}}"#).await;
    caller
        .send(br#"[48, 1, {"timeout": 30000}, "com.with"]"#)
        .await;
    let inv = with.recv_json().await;
    assert_eq!(
        (inv[0].clone(), inv[3]["timeout"].clone()),
        (68.into(), 30000.into())
    );
    caller
        .send(br#"[48, 2, {"timeout": 30000}, "com.without"]"#)
        .await;
    let inv = without.recv_json().await;
    assert_eq!(inv[0], 68);
    assert!(inv[3].get("timeout").is_none(), "{inv}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_open_callee_is_replaced_with_force_reregister() {
    let hub = TestHub::start().await;
    // A callee that registered and then went silent (its socket stays open, nobody reads it).
    // It announced registration_revocation, so it is told when it is displaced.
    let mut stale = raw_session(
        &hub,
        r#"{"callee": {"features": {"registration_revocation": true}}}"#,
    )
    .await;
    stale.send(br#"[64, 1, {}, "com.takeover"]"#).await;
    assert_eq!(stale.recv_json().await[0], 65);

    let fresh = hub.client("rawsocket", Serializer::MsgPack).await;
    let plain = fresh
        .register("com.takeover", Dict::new())
        .await
        .unwrap_err();
    assert!(matches!(plain, ClientError::Wamp(ref e) if e.uri == uris::PROCEDURE_ALREADY_EXISTS));
    let mut reg = fresh
        .register(
            "com.takeover",
            dict([("force_reregister", Value::Bool(true))]),
        )
        .await
        .unwrap();
    tokio::spawn(async move {
        while let Some(inv) = reg.next().await {
            let _ = inv.reply(Payload::args(vec!["fresh".into()])).await;
        }
    });
    let caller = hub.client("websocket", Serializer::Json).await;
    let r = tokio::time::timeout(WAIT, caller.call("com.takeover", vec![], Dict::new()))
        .await
        .expect("the call is not sent to the stale callee")
        .unwrap();
    assert_eq!(r.payload.arg(0), Some(&Value::from("fresh")));
    // The stale callee was told its registration was revoked.
    let revoked = stale.recv_json().await;
    assert_eq!(
        (revoked[0].clone(), revoked[1].clone()),
        (67.into(), 0.into())
    );
}
