//! Authorization over real sockets: a table of URIs under exact, prefix and wildcard rules, each
//! of call, register, publish and subscribe checked allowed or denied (ERROR
//! `wamp.error.not_authorized`, and a denied publish delivers nothing), pattern subscriptions
//! checked against the rules that cover them, the `anonymous` role, in-process sessions always
//! allowed, and a realm without roles allowing everything.

// Test helpers fail the test by panicking.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::time::Duration;

use hub::client::{Client, ClientAuth, ClientError, ConnectOptions};
use hub::config::{RealmSection, RoleSection, RuleSection, UriMatch};
use hub::router::AuthInfo;
use hub::router::authz::Action::{self, Call, Publish, Register, Subscribe};
use hub::wamp::{Dict, Payload, Serializer, Value, dict, uris};
use tests::auth::{self, REALM};
use tests::hub::TestHub;

const ALL: &[Action] = &[Call, Register, Publish, Subscribe];

fn rule(uri: &str, m: UriMatch, allow: &[Action]) -> RuleSection {
    RuleSection {
        uri: uri.into(),
        policy: m,
        allow: allow.to_vec(),
    }
}

/// Realm `secure`: every principal has role `app`; anonymous sessions get role `anonymous`.
fn realm(dir: &std::path::Path) -> RealmSection {
    use UriMatch::{Exact, Prefix, Wildcard};
    let mut roles = BTreeMap::new();
    roles.insert(
        "app".to_owned(),
        RoleSection {
            rules: vec![
                rule("com.exact.ok", Exact, ALL),
                rule("com.exact.no", Exact, &[]),
                rule("com.prefix.", Prefix, ALL),
                rule("com.prefix.no.", Prefix, &[]),
                rule("wild..ok", Wildcard, ALL),
                rule("wild..no", Wildcard, &[]),
                rule("com.read.", Prefix, &[Subscribe]),
                rule("com.rpc.", Prefix, &[Call]),
                rule("com.serve.", Prefix, &[Register]),
                rule("com.emit.", Prefix, &[Publish]),
            ],
        },
    );
    roles.insert(
        "anonymous".to_owned(),
        RoleSection {
            rules: vec![rule("com.public.", Prefix, &[Subscribe])],
        },
    );
    RealmSection {
        history: Vec::new(),
        name: REALM.into(),
        anonymous: true,
        strict_uris: false,
        roles,
        principals: auth::principals(dir, "app"),
    }
}

async fn authz_hub(data: &tempfile::TempDir) -> TestHub {
    let realm = realm(data.path());
    TestHub::start_with(|c| c.realms.push(realm)).await
}

fn trusted(hub: &TestHub) -> Client {
    Client::local(
        hub.hub.router(),
        REALM,
        AuthInfo {
            authid: "helper".into(),
            authrole: "trusted".into(),
            authmethod: "trusted".into(),
            authprovider: "static".into(),
        },
    )
    .unwrap()
}

fn is_denied<T: std::fmt::Debug>(r: Result<T, ClientError>, what: &str) -> bool {
    match r {
        Ok(_) => false,
        Err(ClientError::Wamp(e)) if e.uri == uris::NOT_AUTHORIZED => true,
        Err(e) => panic!("{what}: expected success or not_authorized, got {e}"),
    }
}

/// What a role-`app` session may do: (uri, [call, register, publish, subscribe]).
const TABLE: &[(&str, [bool; 4])] = &[
    // Exact rules.
    ("com.exact.ok", [true, true, true, true]),
    ("com.exact.no", [false, false, false, false]),
    // The longest prefix decides: `com.prefix.no.` beats `com.prefix.`.
    ("com.prefix.a.b", [true, true, true, true]),
    ("com.prefix.no.x", [false, false, false, false]),
    // Wildcard rules.
    ("wild.x.ok", [true, true, true, true]),
    ("wild.x.no", [false, false, false, false]),
    // Rules allowing one action each.
    ("com.read.x", [false, false, false, true]),
    ("com.rpc.x", [true, false, false, false]),
    ("com.serve.x", [false, true, false, false]),
    ("com.emit.x", [false, false, true, false]),
    // No rule matches: denied.
    ("nothing.matches", [false, false, false, false]),
];

async fn check_table(actor: &Client, helper: &Client, what: &str) {
    for &(uri, [call, register, publish, subscribe]) in TABLE {
        let what = format!("{what}: {uri}");
        // register
        match actor.register(uri, Dict::new()).await {
            Ok(reg) => {
                assert!(register, "{what}: register was allowed");
                actor.unregister(reg).await.unwrap();
            }
            Err(e) => {
                assert!(is_denied::<()>(Err(e), &what));
                assert!(!register, "{what}: register was denied");
            }
        }
        // subscribe
        let r = actor.subscribe(uri, Dict::new()).await;
        match r {
            Ok(sub) => {
                assert!(subscribe, "{what}: subscribe was allowed");
                actor.unsubscribe(sub).await.unwrap();
            }
            Err(e) => {
                assert!(is_denied::<()>(Err(e), &what));
                assert!(!subscribe, "{what}: subscribe was denied");
            }
        }
        // publish: acknowledged, and seen (or not) by a trusted subscriber
        let mut seen = helper.subscribe(uri, Dict::new()).await.unwrap();
        let r = actor
            .publish_acked(uri, Payload::args(vec!["acked".into()]), Dict::new())
            .await;
        assert_eq!(!is_denied(r, &what), publish, "{what}: publish");
        let got = tokio::time::timeout(
            Duration::from_millis(if publish { 5000 } else { 200 }),
            seen.next(),
        )
        .await;
        assert_eq!(
            got.is_ok(),
            publish,
            "{what}: the event was delivered iff allowed"
        );
        // An unacknowledged publish that is denied gets no answer and delivers nothing.
        if !publish {
            actor
                .publish(uri, Payload::args(vec!["quiet".into()]), Dict::new())
                .await
                .unwrap();
            let got = tokio::time::timeout(Duration::from_millis(200), seen.next()).await;
            assert!(
                got.is_err(),
                "{what}: a denied unacknowledged publish delivered"
            );
        }
        helper.unsubscribe(seen).await.unwrap();
        // call, against a trusted callee
        let mut reg = helper.register(uri, Dict::new()).await.unwrap();
        let serve = tokio::spawn(async move {
            if let Some(inv) = reg.next().await {
                let _ = inv.reply(Payload::args(vec!["done".into()])).await;
            }
            reg
        });
        let r = actor.call(uri, vec![], Dict::new()).await;
        assert_eq!(!is_denied(r, &what), call, "{what}: call");
        if !call {
            // Let the trusted helper call itself to release the callee task.
            helper.call(uri, vec![], Dict::new()).await.unwrap();
        }
        let reg = serve.await.unwrap();
        helper.unregister(reg).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rule_table_for_every_action_over_real_sockets() {
    let data = tempfile::tempdir().unwrap();
    let hub = authz_hub(&data).await;
    let helper = trusted(&hub);
    for (transport, ser) in [
        ("websocket", Serializer::Json),
        ("rawsocket", Serializer::MsgPack),
    ] {
        let opts = ConnectOptions::new(&hub.url(transport), REALM)
            .serializer(ser)
            .auth(auth::good("ticket"));
        let actor = Client::connect(&opts).await.unwrap();
        check_table(&actor, &helper, transport).await;
        actor.leave().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pattern_subscriptions_and_registrations_need_a_covering_rule() {
    let data = tempfile::tempdir().unwrap();
    let hub = authz_hub(&data).await;
    let opts = ConnectOptions::new(&hub.ws_url(), REALM).auth(auth::good("cryptosign"));
    let actor = Client::connect(&opts).await.unwrap();
    let m = |policy: &str| dict([("match", Value::from(policy))]);
    let cases: &[(&str, &str, bool)] = &[
        ("com.prefix.", "prefix", true),
        ("com.prefix.a", "prefix", true),
        ("com.", "prefix", false),
        ("com.exact.ok", "prefix", false),
        ("wild..ok", "wildcard", true),
        ("wild..", "wildcard", false),
        ("com.prefix..x", "wildcard", true),
    ];
    for &(uri, policy, allowed) in cases {
        let what = format!("{policy} {uri}");
        let r = actor.subscribe(uri, m(policy)).await;
        assert_eq!(!is_denied(r, &what), allowed, "subscribe {what}");
        let r = actor.register(uri, m(policy)).await;
        assert_eq!(!is_denied(r, &what), allowed, "register {what}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_sessions_get_the_anonymous_role() {
    let data = tempfile::tempdir().unwrap();
    let hub = authz_hub(&data).await;
    let anon =
        Client::connect(&ConnectOptions::new(&hub.rs_url(), REALM).auth(ClientAuth::Anonymous))
            .await
            .unwrap();
    assert!(anon.subscribe("com.public.news", Dict::new()).await.is_ok());
    assert!(is_denied(
        anon.publish_acked("com.public.news", Payload::default(), Dict::new())
            .await,
        "anonymous publish"
    ));
    assert!(is_denied(
        anon.call("com.rpc.x", vec![], Dict::new()).await,
        "anonymous call"
    ));
    assert!(is_denied(
        anon.subscribe("com.read.x", Dict::new()).await,
        "anonymous subscribe outside its rules"
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_process_sessions_and_realms_without_roles_are_unrestricted() {
    let data = tempfile::tempdir().unwrap();
    let hub = authz_hub(&data).await;
    // Trusted, on a restricted realm, on a URI no rule mentions.
    let helper = trusted(&hub);
    let _reg = helper
        .register("nothing.matches.here", Dict::new())
        .await
        .unwrap();
    helper
        .publish_acked("nothing.matches.here", Payload::default(), Dict::new())
        .await
        .unwrap();
    // The default realm has no roles: anonymous sessions may do anything.
    let anon = hub.client("websocket", Serializer::Json).await;
    let _sub = anon.subscribe("any.topic", Dict::new()).await.unwrap();
    let _reg = anon.register("any.procedure", Dict::new()).await.unwrap();
    anon.publish_acked("any.topic", Payload::default(), Dict::new())
        .await
        .unwrap();
}
