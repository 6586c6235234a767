//! CoAP devices through the whole hub: real CoAP stacks as devices (aiocoap's library through
//! `tests/peers/coap_peer.py`, libcoap's `coap-client-notls`), the CoAP gateway as the hub runs
//! it (`[coap]`, attached to the things service), and Autobahn-Python as the WAMP application
//! (`tests/peers/coap_wamp_app.py`), which provisions the things, follows their topics and calls
//! the things API. Nothing in between is simulated.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use device_models::ThingId;
use gateways::coap::gateway::DeviceConfig;
use hub::config::Config;
use serde_json::{Value, json};
use tests::hub::TestHub;
use tests::peers::{LinePeer, apt, run_script_json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;
use tokio::time::{Instant, timeout};

/// How long to wait for anything a peer does (Python peers start slowly on a busy machine).
const WAIT: Duration = Duration::from_secs(20);
/// How long "nothing happens" is watched for.
const QUIET: Duration = Duration::from_millis(500);
const DEVICE: &str = "coap_peer.py";
const APP: &str = "coap_wamp_app.py";

/// A user thing type for every device of these tests: state pushed or observed, a writable
/// setpoint, a long info text (for block-wise transfers), an action, an event, and the
/// `[bindings.coap]` table that maps `coap_peer.py server`'s resources for the hub to observe.
const TYPE: &str = r#"
id = "coap_thermostat"
title = "CoAP thermostat"
version = "1"

[properties.temperature]
type = "number"

[properties.humidity]
type = "number"

[properties.setpoint]
type = "number"
minimum = 5
maximum = 35
writable = true

[properties.on]
type = "boolean"

[properties.n]
type = "integer"

[properties.firmware]
type = "string"
kind = "info"
max_length = 64

[properties.notes]
type = "string"
kind = "info"
max_length = 8192

[actions.boost]
timeout_ms = 5000
input = { type = "object", properties = { minutes = { type = "integer", minimum = 1 } }, required = ["minutes"] }
output = { type = "object" }

[events.fault]
payload = { type = "object", properties = { code = { type = "integer" } } }

[bindings.coap]
format = "json"
properties.temperature.path = "/sensors/temperature"
properties.setpoint.path = "/config/setpoint"
properties.humidity.path = "/sensors/humidity"
actions.boost.path = "/actions/boost"
"#;

const TYPE_ID: &str = "coap_thermostat";

/// A hub whose user types directory (in its data directory) holds [`TYPE`].
async fn hub_with(edit: impl FnOnce(&mut Config)) -> TestHub {
    TestHub::start_with(|c| {
        let types = c.hub.data_dir.join("types");
        std::fs::create_dir_all(&types).unwrap();
        std::fs::write(types.join("coap_thermostat.toml"), TYPE).unwrap();
        c.things.types_dir = Some(types);
        edit(c);
    })
    .await
}

fn coap_addr(hub: &TestHub) -> SocketAddr {
    hub.hub.gateway_addrs().coap.expect("the CoAP gateway runs")
}

/// `coap://<hub>/things/<thing>/<resource>?s=<secret>`.
fn uri(hub: &TestHub, thing: &str, resource: &str, secret: &str) -> String {
    format!(
        "coap://{}/things/{thing}/{resource}?s={secret}",
        coap_addr(hub)
    )
}

/// A WAMP error as the app saw it: its URI and message.
#[derive(Debug)]
struct CallError {
    uri: String,
    args: Value,
}

/// Autobahn-Python as the WAMP application, driven line by line (see `coap_wamp_app.py`).
struct App {
    peer: LinePeer,
    /// Events received and not yet taken, as (topic, kwargs).
    events: VecDeque<(String, Value)>,
    results: HashMap<String, Result<Value, CallError>>,
    next_id: u64,
}

impl App {
    async fn spawn(hub: &TestHub) -> App {
        let peer = LinePeer::spawn(APP, &[hub.ws_url(), "json".to_owned()], WAIT).await;
        let mut app = App {
            peer,
            events: VecDeque::new(),
            results: HashMap::new(),
            next_id: 0,
        };
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(line) = app.pump(deadline, "the app to join").await
                && line == json!({"ready": true})
            {
                return app;
            }
        }
    }

    /// Reads one line, files events and call results away, and returns any other line.
    async fn pump(&mut self, deadline: Instant, what: &str) -> Option<Value> {
        let line = self
            .peer
            .line_before(deadline)
            .await
            .unwrap_or_else(|| panic!("timed out waiting for {what}"));
        self.file(line)
    }

    /// Files an event or a call result away; returns any other line.
    fn file(&mut self, v: Value) -> Option<Value> {
        if let Some(topic) = v.get("event").and_then(Value::as_str) {
            self.events
                .push_back((topic.to_owned(), v["kwargs"].clone()));
            return None;
        }
        if let Some(id) = v.get("id").and_then(Value::as_str) {
            let result = match v.get("error").and_then(Value::as_str) {
                Some(uri) => Err(CallError {
                    uri: uri.to_owned(),
                    args: v["args"].clone(),
                }),
                None => Ok(v["result"].clone()),
            };
            self.results.insert(id.to_owned(), result);
            return None;
        }
        Some(v)
    }

    async fn send(&mut self, command: Value) {
        self.peer.send(&command.to_string()).await;
    }

    /// Subscribes (`match`: exact, prefix or wildcard) and waits for the router's confirmation.
    async fn subscribe(&mut self, topic: &str, policy: &str) {
        self.send(json!({"op": "subscribe", "topic": topic, "match": policy}))
            .await;
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(line) = self.pump(deadline, "a subscription").await
                && line == json!({ "subscribed": topic })
            {
                return;
            }
        }
    }

    /// Sends a call without waiting for its answer; returns its id for [`App::answer`].
    async fn start_call(&mut self, procedure: &str, kwargs: Value) -> String {
        self.next_id += 1;
        let id = self.next_id.to_string();
        self.send(json!({"op": "call", "id": id, "procedure": procedure, "kwargs": kwargs}))
            .await;
        id
    }

    async fn answer(&mut self, id: &str) -> Result<Value, CallError> {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(r) = self.results.remove(id) {
                return r;
            }
            self.pump(deadline, "a call's answer").await;
        }
    }

    async fn call(&mut self, procedure: &str, kwargs: Value) -> Result<Value, CallError> {
        let id = self.start_call(procedure, kwargs).await;
        self.answer(&id).await
    }

    async fn ok(&mut self, procedure: &str, kwargs: Value) -> Value {
        self.call(procedure, kwargs)
            .await
            .unwrap_or_else(|e| panic!("{procedure} failed: {e:?}"))
    }

    /// Provisions a thing of [`TYPE`] and returns its secret.
    async fn provision(&mut self, thing: &str) -> String {
        let r = self
            .ok(
                "brume.things.provision",
                json!({"thing": thing, "type": TYPE_ID}),
            )
            .await;
        r["secret"].as_str().unwrap().to_owned()
    }

    async fn get(&mut self, thing: &str) -> Value {
        self.ok("brume.things.get", json!({ "thing": thing })).await
    }

    /// Takes the first event on `topic` (earlier events on other topics stay), waiting for it.
    async fn event(&mut self, topic: &str) -> Value {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(i) = self.events.iter().position(|(t, _)| t == topic) {
                return self.events.remove(i).unwrap().1;
            }
            self.pump(deadline, &format!("an event on {topic}")).await;
        }
    }

    /// Asserts that no event on a topic starting with `prefix` arrives within [`QUIET`] (nor
    /// is waiting).
    async fn no_event(&mut self, prefix: &str) {
        let deadline = Instant::now() + QUIET;
        while let Some(line) = self.peer.line_before(deadline).await {
            self.file(line);
        }
        let unexpected: Vec<_> = self
            .events
            .iter()
            .filter(|(t, _)| t.starts_with(prefix))
            .collect();
        assert!(unexpected.is_empty(), "unexpected events: {unexpected:?}");
    }
}

/// Runs `coap_peer.py` to completion and returns its JSON lines.
async fn device(args: &[&str]) -> Vec<Value> {
    run_script_json(DEVICE, &strings(args), WAIT).await
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|a| (*a).to_owned()).collect()
}

/// A long-running `coap_peer.py`, read line by line.
async fn device_peer(args: &[&str]) -> LinePeer {
    LinePeer::spawn(DEVICE, &strings(args), WAIT).await
}

/// One confirmable POST from aiocoap; returns the response code as aiocoap prints it.
async fn aiocoap_post(uri: &str, format: &str, body: &str) -> String {
    let lines = device(&["post", uri, format, body]).await;
    lines[0]["code"].as_str().unwrap().to_owned()
}

/// Runs `coap-client-notls` and returns what it printed: error codes on stderr, and with `-v 7`
/// every PDU sent and received on stdout.
async fn coap_client(args: &[&str]) -> String {
    let bin = tokio::task::spawn_blocking(|| apt("coap-client-notls", "libcoap3-bin"))
        .await
        .unwrap();
    let out = timeout(
        WAIT,
        Command::new(bin)
            .args(args)
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("coap-client finished in time")
    .unwrap();
    assert!(out.status.success(), "coap-client-notls failed: {out:?}");
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aiocoap_state_in_json_and_cbor_reaches_an_autobahn_subscriber() {
    let hub = hub_with(|_| {}).await;
    let mut app = App::spawn(&hub).await;
    let secret = app.provision("push-1").await;
    app.subscribe("brume.thing..state", "wildcard").await;
    let state = uri(&hub, "push-1", "state", &secret);

    let code = aiocoap_post(&state, "json", r#"{"temperature": 21.5}"#).await;
    assert_eq!(code, "2.04 Changed");
    let ev = app.event("brume.thing.push-1.state").await;
    assert_eq!(ev["thing"], "push-1");
    assert_eq!(ev["values"], json!({"temperature": 21.5}));
    assert!(ev["at"]["temperature"].as_u64().unwrap() > 0, "{ev}");

    let code = aiocoap_post(&state, "cbor", r#"{"temperature": 19, "on": true}"#).await;
    assert_eq!(code, "2.04 Changed");
    let ev = app.event("brume.thing.push-1.state").await;
    assert_eq!(ev["values"], json!({"temperature": 19, "on": true}));

    // Only what changed is published.
    let code = aiocoap_post(&state, "cbor", r#"{"temperature": 19, "on": false}"#).await;
    assert_eq!(code, "2.04 Changed");
    let ev = app.event("brume.thing.push-1.state").await;
    assert_eq!(ev["values"], json!({"on": false}));

    let t = app.get("push-1").await;
    assert_eq!(t["online"], true);
    assert_eq!(t["reported"]["temperature"]["value"], 19);
    assert_eq!(t["reported"]["on"]["value"], false);
    app.no_event("brume.thing.").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wamp_action_call_reaches_an_observing_aiocoap_device_and_returns_its_reply() {
    let hub = hub_with(|_| {}).await;
    let mut app = App::spawn(&hub).await;
    let secret = app.provision("dev-a").await;
    app.subscribe("brume.things.on_online", "exact").await;
    let base = format!("coap://{}/things/dev-a?s={secret}", coap_addr(&hub));
    let mut device = device_peer(&["device", &base, "1"]).await;
    assert_eq!(device.line().await, json!({"commands": []}));
    assert_eq!(app.event("brume.things.on_online").await["thing"], "dev-a");

    let r = app
        .call("brume.thing.dev-a.action.boost", json!({"minutes": 5}))
        .await;
    assert_eq!(r.unwrap(), json!({"echo": {"minutes": 5}}));
    let seen = device.line().await;
    let commands = seen["commands"].as_array().unwrap();
    assert_eq!(commands.len(), 1, "{seen}");
    assert_eq!(commands[0]["kind"], "action");
    assert_eq!(commands[0]["action"], "boost");
    assert_eq!(commands[0]["input"], json!({"minutes": 5}));
    assert_eq!(device.line().await, json!({"done": 1}));
    device.finish().await;

    // An action on a thing that does not exist fails at once.
    let e = app
        .call("brume.thing.nobody.action.boost", json!({"minutes": 1}))
        .await
        .unwrap_err();
    assert_eq!(e.uri, "brume.error.no_such_thing", "{e:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coap_client_observes_its_commands_and_answers_a_wamp_action_call() {
    let hub = hub_with(|_| {}).await;
    let mut app = App::spawn(&hub).await;
    let secret = app.provision("lib-dev").await;
    app.subscribe("brume.things.on_online", "exact").await;
    let bin = tokio::task::spawn_blocking(|| apt("coap-client-notls", "libcoap3-bin"))
        .await
        .unwrap();
    let commands = uri(&hub, "lib-dev", "commands", &secret);
    // -s: observe for that long; -w: a newline after each representation.
    let mut observer = Command::new(bin)
        .args(["-s", "60", "-B", "60", "-w", "-m", "get", &commands])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(observer.stdout.take().unwrap()).lines();
    let mut next_commands = async || -> Value {
        loop {
            let line = timeout(WAIT, lines.next_line())
                .await
                .expect("a representation from coap-client in time")
                .unwrap()
                .expect("coap-client is observing");
            if let Ok(v) = serde_json::from_str::<Value>(line.trim()) {
                return v;
            }
        }
    };
    assert_eq!(next_commands().await, json!({"commands": []}));
    assert_eq!(
        app.event("brume.things.on_online").await["thing"],
        "lib-dev"
    );

    let call = app
        .start_call("brume.thing.lib-dev.action.boost", json!({"minutes": 2}))
        .await;
    let seen = next_commands().await;
    let command = &seen["commands"][0];
    assert_eq!(command["action"], "boost", "{seen}");
    assert_eq!(command["input"], json!({"minutes": 2}));
    let correlation = command["id"].as_str().unwrap();
    let reply = json!({"id": correlation, "output": {"boosted": 2}}).to_string();
    let replies = uri(&hub, "lib-dev", "replies", &secret);
    let err = coap_client(&["-m", "post", "-t", "json", "-e", &reply, &replies]).await;
    assert!(!err.contains("4.") && !err.contains("5."), "{err}");
    assert_eq!(app.answer(&call).await.unwrap(), json!({"boosted": 2}));
    observer.start_kill().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn things_set_reaches_an_observing_aiocoap_device_and_resolves_when_it_reports() {
    let hub = hub_with(|_| {}).await;
    let mut app = App::spawn(&hub).await;
    let secret = app.provision("dev-s").await;
    app.subscribe("brume.things.on_online", "exact").await;
    app.subscribe("brume.thing..state", "wildcard").await;

    // Set while the device is away: refused as offline, the value kept as desired.
    let e = app
        .call(
            "brume.things.set",
            json!({"thing": "dev-s", "property": "setpoint", "value": 20}),
        )
        .await
        .unwrap_err();
    assert_eq!(e.uri, "brume.error.thing_offline", "{e:?}");
    assert!(e.args[0].as_str().unwrap().contains("pending"), "{e:?}");
    assert_eq!(app.get("dev-s").await["desired"]["setpoint"]["value"], 20);

    // The device connects (observes its commands) and gets the pending value.
    let base = format!("coap://{}/things/dev-s?s={secret}", coap_addr(&hub));
    let mut device = device_peer(&["device", &base, "2"]).await;
    assert_eq!(app.event("brume.things.on_online").await["thing"], "dev-s");
    loop {
        let seen = device.line().await;
        let commands = seen["commands"].as_array().unwrap();
        if let Some(c) = commands.first() {
            assert_eq!(c["kind"], "desired");
            assert_eq!(c["values"], json!({"setpoint": 20}));
            break;
        }
    }
    let ev = app.event("brume.thing.dev-s.state").await;
    assert_eq!(ev["values"], json!({"setpoint": 20}));

    // Set while it is online: the call resolves once the device reports the value.
    let r = app
        .call(
            "brume.things.set",
            json!({"thing": "dev-s", "property": "setpoint", "value": 24}),
        )
        .await
        .unwrap();
    assert_eq!(r["thing"], "dev-s");
    assert_eq!(r["settled"]["setpoint"]["value"], 24, "{r}");
    let seen = device.line().await;
    let commands = seen["commands"].as_array().unwrap();
    assert_eq!(commands.len(), 1, "{seen}");
    assert_eq!(commands[0]["kind"], "desired");
    assert_eq!(commands[0]["values"], json!({"setpoint": 24}));
    let ev = app.event("brume.thing.dev-s.state").await;
    assert_eq!(ev["values"], json!({"setpoint": 24}));
    assert_eq!(device.line().await, json!({"done": 2}));
    device.finish().await;

    let t = app.get("dev-s").await;
    assert_eq!(t["reported"]["setpoint"]["value"], 24);
    assert_eq!(
        t["desired"],
        json!({}),
        "settled desired values are cleared"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hub_observes_an_aiocoap_server_and_writes_its_setpoint() {
    // The server binds a port the system picks and says which.
    let mut server = device_peer(&["server"]).await;
    let ready = server.line().await;
    assert_eq!(ready["ready"], true, "{ready}");
    let port = ready["port"].as_u64().expect("the server's port");
    let hub = hub_with(|c| {
        c.coap.poll_interval_secs = 1;
        c.coap.devices = vec![DeviceConfig {
            thing: ThingId::new("srv").unwrap(),
            type_id: Some(TYPE_ID.into()),
            uri: format!("coap://127.0.0.1:{port}"),
            binding: None,
        }];
    })
    .await;
    let mut app = App::spawn(&hub).await;
    app.subscribe("brume.thing..state", "wildcard").await;
    app.subscribe("brume.things.on_online", "exact").await;

    // The device listed in [coap.devices] is a thing with every value it holds.
    let deadline = Instant::now() + WAIT;
    let t = loop {
        if let Ok(t) = app.call("brume.things.get", json!({"thing": "srv"})).await
            && t["online"] == true
            && t["reported"]["temperature"]["value"] == 20.0
            && t["reported"]["setpoint"]["value"] == 21
            && t["reported"]["humidity"]["value"] == 40
        {
            break t;
        }
        assert!(
            Instant::now() < deadline,
            "srv never showed its values: {:?}",
            app.call("brume.things.get", json!({"thing": "srv"})).await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(t["type"], TYPE_ID);

    // A change on the device is a WAMP state event.
    server.send(r#"{"temperature": 23.5}"#).await;
    let ev = app.event("brume.thing.srv.state").await;
    assert_eq!(ev["values"], json!({"temperature": 23.5}));

    // A polled resource (no Observe) reports its changes too.
    server.send(r#"{"humidity": 55}"#).await;
    let ev = app.event("brume.thing.srv.state").await;
    assert_eq!(ev["values"], json!({"humidity": 55}));

    // brume.things.set on a writable property is a PUT on the device's resource, and resolves
    // when the device's notification reports the new value.
    let r = app
        .call(
            "brume.things.set",
            json!({"thing": "srv", "property": "setpoint", "value": 22}),
        )
        .await
        .unwrap();
    assert_eq!(r["settled"]["setpoint"]["value"], 22, "{r}");
    assert_eq!(server.line().await, json!({"put": 22}));
    let ev = app.event("brume.thing.srv.state").await;
    assert_eq!(ev["values"], json!({"setpoint": 22}));

    // An action is a POST on the device's resource; its response is the result.
    let r = app
        .call("brume.thing.srv.action.boost", json!({"minutes": 3}))
        .await;
    assert_eq!(r.unwrap(), json!({"echo": {"minutes": 3}}));
    assert_eq!(server.line().await, json!({"post": {"minutes": 3}}));
}

/// Checks a `coap-client -v 7` log of a Block1 PUT: eight blocks answered 2.31 Continue, the
/// last 2.04 Changed, and no error. An answer to a retransmission logs the same line again, and
/// counts once.
fn assert_block_wise(log: &str) {
    let mut answers: Vec<&str> = Vec::new();
    for line in log.lines().filter(|l| l.starts_with("v:1 t:ACK")) {
        if !answers.contains(&line) {
            answers.push(line);
        }
    }
    let continues = answers.iter().filter(|l| l.contains(" c:2.31 ")).count();
    assert_eq!(continues, 8, "{answers:#?}");
    assert_eq!(answers.len(), 9, "{answers:#?}");
    assert!(answers[8].contains(" c:2.04 "), "{answers:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coap_client_puts_4_kib_of_info_block_wise_and_things_get_shows_it() {
    let hub = hub_with(|_| {}).await;
    let mut app = App::spawn(&hub).await;
    let secret = app.provision("lib-info").await;
    app.subscribe("brume.things.on_online", "exact").await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("info.json");
    let notes: String = (0..4096u32)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    std::fs::write(
        &file,
        json!({"firmware": "4.3.1", "notes": notes}).to_string(),
    )
    .unwrap();
    let info = uri(&hub, "lib-info", "info", &secret);
    let path = file.to_string_lossy().into_owned();
    // -b 1024: a Block1 transfer. libcoap sends 512-byte blocks (1024 and the options would
    // exceed its 1152-byte PDU), so the 4127-byte body takes nine requests, the first eight
    // answered 2.31 Continue. -v 7 logs every PDU, to show it happened.
    let put = [
        "-v", "7", "-m", "put", "-t", "json", "-b", "1024", "-f", &path, &info,
    ];
    let log = coap_client(&put).await;
    assert_block_wise(&log);
    assert_eq!(
        app.event("brume.things.on_online").await["thing"],
        "lib-info"
    );
    let t = app.get("lib-info").await;
    assert_eq!(t["info"]["firmware"], "4.3.1");
    assert_eq!(t["info"]["notes"], json!(notes));

    // A second transfer, once the device is known, updates the info in place.
    let notes2 = notes.to_uppercase();
    std::fs::write(
        &file,
        json!({"firmware": "4.3.2", "notes": notes2}).to_string(),
    )
    .unwrap();
    let log = coap_client(&put).await;
    assert_block_wise(&log);
    let deadline = Instant::now() + WAIT;
    loop {
        let t = app.get("lib-info").await;
        if t["info"]["firmware"] == "4.3.2" {
            assert_eq!(t["info"]["notes"], json!(notes2));
            break;
        }
        assert!(Instant::now() < deadline, "info never updated: {t}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_credentials_unknown_things_and_duplicate_posts() {
    let hub = hub_with(|c| c.coap.require_auth = true).await;
    let mut app = App::spawn(&hub).await;
    let secret = app.provision("guarded").await;
    // Every thing topic: state, events and lifecycle (brume.thing.* and brume.things.*).
    app.subscribe("brume.thing", "prefix").await;
    let addr = coap_addr(&hub);

    // Bad credentials: 4.01, and nothing reaches WAMP.
    let wrong = uri(&hub, "guarded", "state", "not-the-secret");
    assert_eq!(
        aiocoap_post(&wrong, "json", r#"{"temperature": 1}"#).await,
        "4.01 Unauthorized"
    );
    let none = format!("coap://{addr}/things/guarded/state");
    assert_eq!(
        aiocoap_post(&none, "json", r#"{"temperature": 1}"#).await,
        "4.01 Unauthorized"
    );
    let err = coap_client(&["-m", "post", "-t", "json", "-e", "{\"n\": 1}", &wrong]).await;
    assert!(err.contains("4.01"), "{err}");
    // An unknown thing: 4.04, from both stacks.
    let unknown = uri(&hub, "nobody", "state", &secret);
    assert_eq!(
        aiocoap_post(&unknown, "json", r#"{"temperature": 1}"#).await,
        "4.04 Not Found"
    );
    let err = coap_client(&["-m", "post", "-t", "json", "-e", "{\"n\": 1}", &unknown]).await;
    assert!(err.contains("4.04"), "{err}");
    app.no_event("brume.thing").await;
    let t = app.get("guarded").await;
    assert_eq!(t["online"], false);
    assert_eq!(t["reported"], json!({}));

    // One confirmable POST sent twice (same message id and token, as a retransmission): the
    // device gets the same piggy-backed answer twice, WAMP sees one event (an event, unlike a
    // state report of an unchanged value, would be published again if processed again).
    let (ip, port) = (addr.ip().to_string(), addr.port().to_string());
    let query = format!("s={secret}");
    let lines = device(&[
        "duplicate",
        &ip,
        &port,
        "/things/guarded/events/fault",
        &query,
        r#"{"code": 7}"#,
    ])
    .await;
    let answers = lines[0]["answers"].as_array().unwrap();
    // Version 1, ACK, token length 2; 2.01 Created; message id 0x1234; token 0x4243.
    let answer = answers[0].as_str().unwrap();
    assert!(answer.starts_with("624112344243"), "{answers:?}");
    assert_eq!(
        answers[0], answers[1],
        "the retransmission is answered alike"
    );
    assert_eq!(
        app.event("brume.things.on_online").await["thing"],
        "guarded"
    );
    let ev = app.event("brume.thing.guarded.event.fault").await;
    assert_eq!(ev["payload"], json!({"code": 7}));
    app.no_event("brume.thing").await;

    // A report that does not fit the thing's type: the hub refuses it, and the device hears
    // so (4.00, not 2.04); nothing is stored or published. A good one after it goes through.
    let state = uri(&hub, "guarded", "state", &secret);
    assert_eq!(
        aiocoap_post(&state, "json", r#"{"temperature": "hot"}"#).await,
        "4.00 Bad Request"
    );
    app.no_event("brume.thing").await;
    assert_eq!(app.get("guarded").await["reported"], json!({}));
    assert_eq!(
        aiocoap_post(&state, "json", r#"{"temperature": 21.5}"#).await,
        "2.04 Changed"
    );
    let ev = app.event("brume.thing.guarded.state").await;
    assert_eq!(ev["values"], json!({"temperature": 21.5}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_device_goes_offline_after_offline_after_secs_and_comes_back() {
    let hub = hub_with(|c| c.coap.offline_after_secs = 1).await;
    let mut app = App::spawn(&hub).await;
    let secret = app.provision("quiet").await;
    app.subscribe("brume.things.on_online", "exact").await;
    app.subscribe("brume.things.on_offline", "exact").await;
    let state = uri(&hub, "quiet", "state", &secret);

    assert_eq!(
        aiocoap_post(&state, "json", r#"{"n": 1}"#).await,
        "2.04 Changed"
    );
    assert_eq!(app.event("brume.things.on_online").await["thing"], "quiet");
    let online_at = Instant::now();
    assert_eq!(app.event("brume.things.on_offline").await["thing"], "quiet");
    let silent = online_at.elapsed();
    assert!(
        silent >= Duration::from_millis(500),
        "offline too early: {silent:?}"
    );
    assert_eq!(app.get("quiet").await["online"], false);

    // Its next request brings it back.
    assert_eq!(
        aiocoap_post(&state, "json", r#"{"n": 2}"#).await,
        "2.04 Changed"
    );
    assert_eq!(app.event("brume.things.on_online").await["thing"], "quiet");
    assert_eq!(app.get("quiet").await["reported"]["n"]["value"], 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_discovers_its_resources_and_reads_its_state_and_info_back() {
    let hub = hub_with(|_| {}).await;
    let mut app = App::spawn(&hub).await;
    let secret = app.provision("reader").await;
    // Discovery (RFC 6690), parsed by aiocoap's link-format parser.
    let links = device(&[
        "get",
        &format!("coap://{}/.well-known/core?ep=reader", coap_addr(&hub)),
    ])
    .await;
    assert_eq!(links[0]["code"], "2.05 Content", "{links:?}");
    assert_eq!(links[0]["content_format"], 40);
    let hrefs: Vec<&str> = links[0]["payload"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["href"].as_str().unwrap())
        .collect();
    assert_eq!(
        hrefs,
        [
            "/things/reader/state",
            "/things/reader/info",
            "/things/reader/desired",
            "/things/reader/commands",
            "/things/reader/replies",
            "/things/reader/events"
        ]
    );
    let commands = &links[0]["payload"][3];
    assert!(commands.get("obs").is_some(), "{commands}");

    // What the device reported and put in its info, read back from the hub's registry.
    let state = uri(&hub, "reader", "state", &secret);
    assert_eq!(
        aiocoap_post(&state, "json", r#"{"temperature": 21.5}"#).await,
        "2.04 Changed"
    );
    let info = uri(&hub, "reader", "info", &secret);
    let put = device(&["put", &info, "json", r#"{"firmware": "1.2.3"}"#]).await;
    assert_eq!(put[0]["code"], "2.04 Changed", "{put:?}");
    // The registry has taken both in once an app sees them (the device's requests are answered
    // before the hub has applied them).
    let deadline = Instant::now() + WAIT;
    while app.get("reader").await["info"]["firmware"] != "1.2.3" {
        assert!(
            Instant::now() < deadline,
            "the info never reached the registry"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let got = device(&["get", &state]).await;
    assert_eq!(got[0]["code"], "2.05 Content", "{got:?}");
    assert_eq!(got[0]["payload"], json!({"temperature": 21.5}));
    let got = device(&["get", &info]).await;
    assert_eq!(got[0]["payload"], json!({"firmware": "1.2.3"}), "{got:?}");
    // Only with its secret.
    let got = device(&["get", &uri(&hub, "reader", "state", "wrong")]).await;
    assert_eq!(got[0]["code"], "4.01 Unauthorized", "{got:?}");
}
