//! The REST API over real sockets, with simulated MQTT devices behind it: the same things service
//! as the WAMP API (what one surface changes, the other sees), desired values confirmed by the
//! device, actions answered by it, errors named as WAMP names them, the Server-Sent Events
//! stream, Thing Descriptions with HTTP forms, the OpenAPI document matching the routes; then
//! the realm's principals and roles (ticket as bearer or Basic, 401, 403), and HTTPS.

// Test helpers fail the test by panicking.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::time::Duration;

use hub::config::{RealmSection, RoleSection, RuleSection, UriMatch};
use hub::http::client::request;
use hub::router::authz::Action::{Call, Subscribe};
use hub::wamp::{Dict, Serializer, Value, dict};
use serde_json::{Value as Json, json};
use tests::hub::TestHub;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(10);

fn base(hub: &TestHub) -> String {
    format!(
        "http://{}",
        hub.hub.local_addr("http").expect("HTTP listener")
    )
}

/// One request; the status and the JSON body (`null` when the body is not JSON).
async fn call(
    hub: &TestHub,
    method: &str,
    path: &str,
    auth: Option<&str>,
    body: Option<Json>,
) -> (u16, Json) {
    let body = body.map(|b| b.to_string().into_bytes());
    let (status, bytes) = request(&base(hub), method, path, auth, body).await.unwrap();
    (status, serde_json::from_slice(&bytes).unwrap_or(Json::Null))
}

/// Runs a simulated MQTT device of `type_id`, with the secret its provisioning answered, until
/// the token is cancelled.
fn device(hub: &TestHub, id: &str, type_id: &str, provisioned: &Json) -> CancellationToken {
    let secret = provisioned["secret"].as_str().map(str::to_owned);
    hub.mqtt_device(id, type_id, secret, Duration::from_millis(100))
}

/// Polls GET `path` until `pred` holds for its body.
async fn until(hub: &TestHub, path: &str, what: &str, pred: impl Fn(&Json) -> bool) -> Json {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (status, body) = call(hub, "GET", path, None, None).await;
        if status == 200 && pred(&body) {
            return body;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: last answer {status} {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rest_api_is_the_things_api_over_http() {
    let hub = TestHub::start().await;

    // Provisioned over HTTP: 201, and the WAMP API sees the thing at once (one registry).
    let (status, made) = call(
        &hub,
        "POST",
        "/api/things",
        None,
        Some(json!({"thing": "th1", "type": "thermostat", "info": {"location": "hall"}})),
    )
    .await;
    assert_eq!(status, 201, "{made}");
    assert_eq!(made["thing"]["thing"], "th1");
    let (status, again) = call(
        &hub,
        "POST",
        "/api/things",
        None,
        Some(json!({"thing": "th1", "type": "relay"})),
    )
    .await;
    assert_eq!(status, 400, "provisioning twice with another type: {again}");
    let app = hub.client("ws", Serializer::Json).await;
    let got = app
        .call(
            "brume.things.get",
            Vec::new(),
            dict([("thing", Value::from("th1"))]),
        )
        .await
        .unwrap();
    assert_eq!(
        got.payload.arg_list()[0].as_dict().unwrap()["type"],
        Value::from("thermostat")
    );

    let stop = device(&hub, "th1", "thermostat", &made);
    let thing = until(&hub, "/api/things/th1", "the device reports", |t| {
        t["online"] == true && t["reported"]["temperature"]["value"].is_number()
    })
    .await;
    assert_eq!(thing["info"]["location"], "hall");
    let (_, online) = call(
        &hub,
        "GET",
        "/api/things?online=true&type=thermostat",
        None,
        None,
    )
    .await;
    assert_eq!(online.as_array().unwrap().len(), 1, "{online}");

    // The event stream carries the device's reports (read as a client would, over a socket).
    let mut events = tokio::net::TcpStream::connect(hub.hub.local_addr("http").unwrap())
        .await
        .unwrap();
    events
        .write_all(b"GET /api/events?thing=th1 HTTP/1.1\r\nHost: hub\r\n\r\n")
        .await
        .unwrap();

    // A desired value set over HTTP is answered once the device confirms it, and a WAMP
    // subscriber sees the change the device reports.
    let mut sub = app
        .subscribe("brume.thing.th1.state", Dict::new())
        .await
        .unwrap();
    let (status, set) = call(
        &hub,
        "PUT",
        "/api/things/th1/desired?timeout_ms=5000",
        None,
        Some(json!({"setpoint": 23.5})),
    )
    .await;
    assert_eq!(status, 200, "{set}");
    assert_eq!(set["settled"]["setpoint"]["value"], 23.5);
    let (_, p) = call(
        &hub,
        "GET",
        "/api/things/th1/properties/setpoint",
        None,
        None,
    )
    .await;
    assert_eq!((p["value"].clone(), p.get("desired")), (json!(23.5), None));
    let seen = tokio::time::timeout(WAIT, async {
        loop {
            let e = sub.next().await.unwrap();
            let kw = e.payload.kwarg_dict().unwrap().clone();
            if let Some(Value::Dict(v)) = kw.get("values")
                && v.get("setpoint").is_some()
            {
                return v["setpoint"].clone();
            }
        }
    })
    .await
    .expect("the WAMP subscriber sees the setpoint");
    assert_eq!(seen, Value::Float(23.5));

    // One property by PUT: a state property waits for the device, an info one is updated.
    let (status, mode) = call(
        &hub,
        "PUT",
        "/api/things/th1/properties/mode",
        None,
        Some(json!("heat")),
    )
    .await;
    assert_eq!(
        (status, mode["settled"]["mode"]["value"].clone()),
        (200, json!("heat"))
    );
    let (status, _) = call(
        &hub,
        "PUT",
        "/api/things/th1/properties/location",
        None,
        Some(json!("attic")),
    )
    .await;
    assert_eq!(status, 200);
    let (status, info) = call(
        &hub,
        "PATCH",
        "/api/things/th1/info",
        None,
        Some(json!({"location": "cellar"})),
    )
    .await;
    assert_eq!(
        (status, info["info"]["location"].clone()),
        (200, json!("cellar"))
    );

    // Errors carry the WAMP API's names and details.
    let (status, e) = call(
        &hub,
        "PUT",
        "/api/things/th1/desired",
        None,
        Some(json!({"setpoint": 99})),
    )
    .await;
    assert_eq!(
        (status, e["error"].as_str()),
        (400, Some("wamp.error.invalid_argument"))
    );
    assert_eq!(e["details"]["property"], "setpoint");
    assert!(
        e["details"]["rule"]
            .as_str()
            .unwrap()
            .contains("maximum 35"),
        "{e}"
    );
    let (status, e) = call(&hub, "GET", "/api/things/nope", None, None).await;
    assert_eq!(
        (status, e["error"].as_str()),
        (404, Some("brume.error.no_such_thing"))
    );
    let (status, e) = call(
        &hub,
        "PUT",
        "/api/things/th1/desired",
        None,
        Some(json!([1])),
    )
    .await;
    assert_eq!(
        (status, e["error"].as_str()),
        (400, Some("wamp.error.invalid_argument"))
    );
    let (status, e) = call(&hub, "POST", "/api/things/th1/actions/launch", None, None).await;
    assert_eq!(
        (status, e["error"].as_str()),
        (404, Some("brume.error.no_such_action"))
    );
    let (status, e) = call(&hub, "GET", "/api/things/a.b", None, None).await;
    assert_eq!(
        (status, e["error"].as_str()),
        (400, Some("wamp.error.invalid_argument"))
    );
    let big = vec![b'1'; hub::http::api::MAX_BODY + 10];
    let (status, _) = request(
        &base(&hub),
        "PUT",
        "/api/things/th1/desired",
        None,
        Some(big),
    )
    .await
    .unwrap();
    assert_eq!(status, 413, "a body over the limit is refused");
    let (status, e) = call(&hub, "GET", "/api/uplink", None, None).await;
    assert_eq!(
        (status, e["error"].as_str()),
        (404, Some("brume.error.not_enabled"))
    );

    // An action, answered by the device.
    let (_, relay) = call(
        &hub,
        "POST",
        "/api/things",
        None,
        Some(json!({"thing": "r1", "type": "relay"})),
    )
    .await;
    let stop_relay = device(&hub, "r1", "relay", &relay);
    until(&hub, "/api/things/r1", "the relay is online", |t| {
        t["online"] == true
    })
    .await;
    let (status, out) = call(
        &hub,
        "POST",
        "/api/things/r1/actions/on?timeout_ms=5000",
        None,
        None,
    )
    .await;
    assert_eq!(status, 200, "{out}");
    until(
        &hub,
        "/api/things/r1/properties/on",
        "the relay is on",
        |p| p["value"] == true,
    )
    .await;

    // The stream saw the reports and the confirmed setpoint, and nothing of the relay.
    let mut text = String::new();
    let mut buf = vec![0u8; 16384];
    tokio::time::timeout(WAIT, async {
        while !(text.contains("\"setpoint\":23.5") && text.contains("brume.thing.th1.state")) {
            let n = events.read(&mut buf).await.unwrap();
            assert!(n > 0, "the stream ended: {text}");
            text.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    })
    .await
    .unwrap_or_else(|_| panic!("the event stream: {text}"));
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.contains("content-type: text/event-stream"), "{text}");
    assert!(text.contains("event: publication"), "{text}");
    assert!(
        !text.contains("r1"),
        "a stream for th1 carries only th1: {text}"
    );

    // The Thing Description has HTTP forms beside the WAMP ones, pointing at this listener.
    let (status, td) = call(&hub, "GET", "/api/things/th1/td", None, None).await;
    assert_eq!(status, 200);
    let forms = td["properties"]["setpoint"]["forms"].as_array().unwrap();
    let http: Vec<&Json> = forms
        .iter()
        .filter(|f| f["href"].as_str().unwrap().starts_with(&base(&hub)))
        .collect();
    let op = |f: &Json| f["op"].to_string();
    assert!(
        http.iter()
            .any(|f| op(f).contains("readproperty") && f["htv:methodName"] == "GET")
    );
    assert!(
        http.iter()
            .any(|f| op(f).contains("writeproperty") && f["htv:methodName"] == "PUT")
    );
    assert!(
        http.iter()
            .any(|f| op(f).contains("observeproperty") && f["subprotocol"] == "sse")
    );
    assert_eq!(
        http[0]["href"],
        format!("{}/api/things/th1/properties/setpoint", base(&hub))
    );
    let temperature = td["properties"]["temperature"]["forms"].to_string();
    assert!(
        !temperature.contains("writeproperty"),
        "read-only: {temperature}"
    );
    // Each HTTP form works as its TD says.
    let href = http[0]["href"]
        .as_str()
        .unwrap()
        .trim_start_matches(&base(&hub))
        .to_owned();
    let (status, p) = call(&hub, "GET", &href, None, None).await;
    assert_eq!((status, p["value"].clone()), (200, json!(23.5)));

    // Every endpoint of the OpenAPI document is routed (none falls through to "not found" or
    // answers "method not allowed").
    let (status, doc) = call(&hub, "GET", "/api/openapi.json", None, None).await;
    assert_eq!((status, doc["openapi"].as_str()), (200, Some("3.1.0")));
    for e in hub::http::openapi::ENDPOINTS {
        if e.path == "/api/events" || e.method == "delete" {
            continue;
        }
        let path = e
            .path
            .replace("{thing}", "th1")
            .replace("{property}", "location")
            .replace("{action}", "launch")
            .replace("{type}", "thermostat");
        let body = (e.method != "get").then(|| json!({}));
        let (status, answer) = call(&hub, &e.method.to_uppercase(), &path, None, body).await;
        assert_ne!(status, 405, "{} {path}", e.method);
        assert_ne!(
            answer["error"], "brume.error.not_found",
            "{} {path}",
            e.method
        );
    }
    assert!(doc["paths"].as_object().unwrap().len() >= 14);

    // Deleted over HTTP: gone for WAMP too.
    let (status, _) = call(&hub, "DELETE", "/api/things/r1", None, None).await;
    assert_eq!(status, 200);
    let gone = app
        .call(
            "brume.things.get",
            Vec::new(),
            dict([("thing", Value::from("r1"))]),
        )
        .await;
    assert!(gone.is_err());
    stop.cancel();
    stop_relay.cancel();
}

fn rule(uri: &str, policy: UriMatch, allow: &[hub::router::authz::Action]) -> RuleSection {
    RuleSection {
        uri: uri.into(),
        policy,
        allow: allow.to_vec(),
    }
}

const OPS_TICKET: &str = "ops-ticket-1";
const VIEWER_TICKET: &str = "viewer-ticket-2";

/// The things realm without anonymous access: `ops` may do anything under `brume.`, `viewer`
/// may list and read things.
fn secure_realm() -> RealmSection {
    use tests::auth::ticket_principal as principal;
    let mut roles = BTreeMap::new();
    roles.insert(
        "admin".to_owned(),
        RoleSection {
            rules: vec![rule("brume.", UriMatch::Prefix, &[Call, Subscribe])],
        },
    );
    roles.insert(
        "reader".to_owned(),
        RoleSection {
            rules: vec![
                rule("brume.things.list", UriMatch::Exact, &[Call]),
                rule("brume.things.get", UriMatch::Exact, &[Call]),
            ],
        },
    );
    RealmSection {
        history: Vec::new(),
        name: "plant".into(),
        anonymous: false,
        strict_uris: false,
        roles,
        principals: vec![
            principal("ops", "admin", OPS_TICKET),
            principal("viewer", "reader", VIEWER_TICKET),
        ],
    }
}

fn basic(authid: &str, ticket: &str) -> String {
    use base64::Engine as _;
    let b = base64::engine::general_purpose::STANDARD.encode(format!("{authid}:{ticket}"));
    format!("Basic {b}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_realms_principals_and_roles_decide_what_http_callers_may_do() {
    let hub = TestHub::start_with(|c| c.realms = vec![secure_realm()]).await;
    let ops = format!("Bearer {OPS_TICKET}");
    let viewer = basic("viewer", VIEWER_TICKET);

    // Probes need no credentials; everything else does.
    let (status, _) = request(&base(&hub), "GET", "/healthz", None, None)
        .await
        .unwrap();
    assert_eq!(status, 200);
    for path in ["/api/things", "/status", "/metrics", "/api/whoami"] {
        let (status, e) = call(&hub, "GET", path, None, None).await;
        assert_eq!(
            (status, e["error"].as_str()),
            (401, Some("wamp.error.authentication_failed")),
            "{path}"
        );
    }
    let (status, _) = call(&hub, "GET", "/api/things", Some("Bearer wrong"), None).await;
    assert_eq!(status, 401);
    let (status, _) = call(
        &hub,
        "GET",
        "/api/things",
        Some(&basic("viewer", OPS_TICKET)),
        None,
    )
    .await;
    assert_eq!(status, 401, "another principal's ticket");

    // Who is who.
    let (_, me) = call(&hub, "GET", "/api/whoami", Some(&ops), None).await;
    assert_eq!(
        (me["authid"].as_str(), me["authrole"].as_str()),
        (Some("ops"), Some("admin"))
    );
    let (_, me) = call(&hub, "GET", "/api/whoami", Some(&viewer), None).await;
    assert_eq!(me["authrole"], "reader");

    // ops provisions; viewer reads but may not write, and is told why.
    let (status, _) = call(
        &hub,
        "POST",
        "/api/things",
        Some(&ops),
        Some(json!({"thing": "m1", "type": "thermostat"})),
    )
    .await;
    assert_eq!(status, 201);
    let (status, list) = call(&hub, "GET", "/api/things", Some(&viewer), None).await;
    assert_eq!((status, list.as_array().map(Vec::len)), (200, Some(1)));
    let (status, e) = call(
        &hub,
        "PUT",
        "/api/things/m1/desired",
        Some(&viewer),
        Some(json!({"setpoint": 20})),
    )
    .await;
    assert_eq!(
        (status, e["error"].as_str()),
        (403, Some("wamp.error.not_authorized"))
    );
    assert!(
        e["message"].as_str().unwrap().contains("brume.things.set"),
        "{e}"
    );
    for path in ["/status", "/metrics", "/api/events", "/api/things/m1/td"] {
        let (status, _) = request(&base(&hub), "GET", path, Some(&viewer), None)
            .await
            .unwrap();
        assert_eq!(status, 403, "{path}");
    }
    let (status, _) = request(&base(&hub), "GET", "/metrics", Some(&ops), None)
        .await
        .unwrap();
    assert_eq!(status, 200);
    // The TD says how to authenticate its HTTP forms.
    let (_, td) = call(&hub, "GET", "/api/things/m1/td", Some(&ops), None).await;
    assert_eq!(td["securityDefinitions"]["http_ticket"]["scheme"], "bearer");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_serves_the_same_routes() {
    let certs = tests::certs::TestCerts::generate();
    let hub = TestHub::start_with(|c| c.http.tls = Some(certs.section())).await;
    let addr = hub.hub.local_addr("http").unwrap();
    // Plain HTTP on the TLS port gets nothing useful.
    let plain = request(&format!("http://{addr}"), "GET", "/healthz", None, None).await;
    assert!(!matches!(plain, Ok((200, _))), "{plain:?}");
    let get = |path: &'static str| {
        let tls = certs.client_config();
        async move {
            let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
            let mut s = tls.connect(tcp, "127.0.0.1").await.unwrap();
            let req =
                format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
            s.write_all(req.as_bytes()).await.unwrap();
            let mut out = Vec::new();
            let _ = s.read_to_end(&mut out).await;
            String::from_utf8_lossy(&out).into_owned()
        }
    };
    let health = get("/healthz").await;
    assert!(
        health.starts_with("HTTP/1.1 200") && health.ends_with("ok\n"),
        "{health}"
    );
    let things = get("/api/things").await;
    assert!(
        things.starts_with("HTTP/1.1 200") && things.ends_with("[]"),
        "{things}"
    );
    // A client that never finishes its handshake does not hold up the next one.
    let _idle = tokio::net::TcpStream::connect(addr).await.unwrap();
    let again = get("/healthz").await;
    assert!(again.starts_with("HTTP/1.1 200"), "{again}");
}
