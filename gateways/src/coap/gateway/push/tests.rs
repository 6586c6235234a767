use std::collections::HashMap;

use bytes::Bytes;
use serde_json::json;

use super::*;
use crate::coap::Method;
use crate::coap::server::RequestId;
use crate::link::StaticCredentials;

const SECRET: &str = "s3cret";

fn thing(id: &str) -> ThingId {
    ThingId::new(id).unwrap()
}

fn settings() -> PushSettings {
    PushSettings {
        auth_required: false,
        offline_after: Duration::from_secs(10),
        commands_max_age: 60,
        max_things: 100,
        max_pending_actions: 2,
    }
}

fn core_with(settings: PushSettings) -> PushDevices {
    let mut secrets = HashMap::new();
    for id in ["t1", "t2", "t3"] {
        secrets.insert(id.to_owned(), SECRET.to_owned());
    }
    PushDevices::new(settings, Arc::new(StaticCredentials(secrets)))
}

fn core() -> PushDevices {
    core_with(settings())
}

struct Req {
    method: Method,
    path: &'static str,
    query: Vec<String>,
    content_format: Option<u16>,
    accept: Option<u16>,
    payload: Bytes,
}

impl Req {
    fn new(method: Method, path: &'static str) -> Self {
        Self {
            method,
            path,
            query: vec![format!("s={SECRET}")],
            content_format: None,
            accept: None,
            payload: Bytes::new(),
        }
    }
    fn body(mut self, cf: u16, payload: impl Into<Bytes>) -> Self {
        self.content_format = Some(cf);
        self.payload = payload.into();
        self
    }
    fn json(self, v: serde_json::Value) -> Self {
        self.body(50, v.to_string())
    }
    fn query(mut self, q: &[&str]) -> Self {
        self.query = q.iter().map(|s| (*s).to_owned()).collect();
        self
    }
    fn accept(mut self, cf: u16) -> Self {
        self.accept = Some(cf);
        self
    }
    fn build(self) -> Request {
        Request {
            id: RequestId(1),
            peer: "127.0.0.1:40000".parse().unwrap(),
            method: self.method,
            path: crate::coap::split_path(self.path),
            query: self.query,
            content_format: self.content_format,
            accept: self.accept,
            payload: self.payload,
            observe: None,
            confirmable: true,
        }
    }
}

fn send(core: &mut PushDevices, now: Instant, req: Req) -> Reaction {
    core.on_request(now, 1_000, &req.build())
}

fn obj(v: serde_json::Value) -> Map<String, Value> {
    v.as_object().cloned().unwrap()
}

#[test]
fn state_in_json_and_cbor_with_hello_first() {
    let mut c = core();
    let t0 = Instant::now();
    let r = send(
        &mut c,
        t0,
        Req::new(Method::Post, "/things/t1/state")
            .query(&["s=s3cret", "t=thermostat"])
            .json(json!({"temperature": 21.5})),
    );
    assert_eq!(r.response.code, ResponseType::Changed);
    assert!(matches!(
        &r.events[..],
        [DeviceEvent::Hello { type_hint: Some(t), info, .. }, DeviceEvent::Reported { values, at_ms: 1_000, .. }]
            if t == "thermostat" && info.is_empty() && values["temperature"] == json!(21.5)
    ));
    let mut cbor = Vec::new();
    ciborium::into_writer(&json!({"temperature": 22}), &mut cbor).unwrap();
    let r = send(
        &mut c,
        t0,
        Req::new(Method::Post, "/things/t1/state").body(60, cbor),
    );
    assert!(matches!(
        &r.events[..],
        [DeviceEvent::Reported { values, .. }] if values["temperature"] == json!(22)
    ));
    // No Content-Format means JSON.
    let r = send(
        &mut c,
        t0,
        Req::new(Method::Post, "/things/t1/state").body(50, "{\"a\":1}"),
    );
    assert_eq!(r.response.code, ResponseType::Changed);
    let mut req = Req::new(Method::Post, "/things/t1/state");
    req.payload = Bytes::from("{\"a\":2}");
    assert_eq!(send(&mut c, t0, req).response.code, ResponseType::Changed);
}

#[test]
fn credentials_and_routing() {
    let mut c = core();
    let t0 = Instant::now();
    let state = || Req::new(Method::Post, "/things/t1/state").json(json!({"a": 1}));
    let cases = [
        (state().query(&["s=wrong"]), ResponseType::Unauthorized),
        (
            Req::new(Method::Post, "/things/nobody/state").json(json!({})),
            ResponseType::NotFound,
        ),
        (
            Req::new(Method::Post, "/things/t1/nothing").json(json!({})),
            ResponseType::NotFound,
        ),
        (
            Req::new(Method::Put, "/things/t1/state"),
            ResponseType::MethodNotAllowed,
        ),
        (
            Req::new(Method::Delete, "/things/t1/info"),
            ResponseType::MethodNotAllowed,
        ),
        (
            Req::new(Method::Get, "/.well-known/other"),
            ResponseType::NotFound,
        ),
        // Loopback policy: a known thing may omit its secret.
        (state().query(&[]), ResponseType::Changed),
    ];
    for (req, want) in cases {
        let path = req.path;
        let r = send(&mut c, t0, req);
        assert_eq!(r.response.code, want, "{path}");
        if want.is_error() {
            assert!(r.events.is_empty(), "{path}: {:?}", r.events);
        }
    }
    let mut strict = core_with(PushSettings {
        auth_required: true,
        ..settings()
    });
    let r = send(&mut strict, t0, state().query(&[]));
    assert_eq!(r.response.code, ResponseType::Unauthorized);
    assert_eq!(
        send(&mut strict, t0, state()).response.code,
        ResponseType::Changed
    );
}

#[test]
fn bad_bodies_get_4_00_with_a_diagnostic() {
    let mut c = core();
    let t0 = Instant::now();
    let cases = [
        Req::new(Method::Post, "/things/t1/state").body(50, "{not json"),
        Req::new(Method::Post, "/things/t1/state").json(json!([1, 2])),
        Req::new(Method::Post, "/things/t1/state").body(50, ""),
        Req::new(Method::Post, "/things/t1/state").body(60, vec![0xff, 0x00]),
        Req::new(Method::Put, "/things/t1/info").json(json!("x")),
        Req::new(Method::Post, "/things/t1/replies").json(json!({"output": 1})),
        Req::new(Method::Post, "/things/t1/replies").body(50, "x".repeat(500)),
    ];
    for req in cases {
        let r = send(&mut c, t0, req);
        assert_eq!(r.response.code, ResponseType::BadRequest);
        assert!(!r.response.payload.is_empty());
        assert!(r.response.payload.len() <= MAX_DIAGNOSTIC);
        assert!(r.events.is_empty());
    }
    let r = send(
        &mut c,
        t0,
        Req::new(Method::Post, "/things/t1/state").body(0, "21"),
    );
    assert_eq!(r.response.code, ResponseType::UnsupportedContentFormat);
    let r = send(
        &mut c,
        t0,
        Req::new(Method::Get, "/things/t1/commands").accept(0),
    );
    assert_eq!(r.response.code, ResponseType::NotAcceptable);
}

#[test]
fn info_on_first_contact_goes_into_hello() {
    let mut c = core();
    let t0 = Instant::now();
    let info = || Req::new(Method::Put, "/things/t2/info").json(json!({"firmware": "1.2"}));
    let r = send(&mut c, t0, info());
    assert!(matches!(
        &r.events[..],
        [DeviceEvent::Hello { info, .. }] if info["firmware"] == json!("1.2")
    ));
    let r = send(&mut c, t0, info());
    assert!(matches!(&r.events[..], [DeviceEvent::Info { .. }]));
    let r = send(
        &mut c,
        t0,
        Req::new(Method::Post, "/things/t2/events/fault"),
    );
    assert_eq!(r.response.code, ResponseType::Created);
    assert!(matches!(
        &r.events[..],
        [DeviceEvent::Event { name, payload: Value::Null, .. }] if name == "fault"
    ));
}

#[test]
fn commands_are_listed_until_settled() {
    let mut c = core();
    let t0 = Instant::now();
    let out = c.on_command(
        0,
        DeviceCommand::SetDesired {
            thing: thing("t1"),
            values: obj(json!({"setpoint": 22})),
        },
    );
    assert_eq!(out.notify, Some(thing("t1")));
    let invoke = |correlation: &str, deadline_ms| DeviceCommand::InvokeAction {
        thing: thing("t1"),
        action: "boost".into(),
        input: json!({"minutes": 5}),
        correlation: correlation.into(),
        deadline_ms,
    };
    assert_eq!(
        c.on_command(0, invoke("41", 5_000)).notify,
        Some(thing("t1"))
    );

    let r = send(&mut c, t0, Req::new(Method::Get, "/things/t1/commands"));
    assert_eq!(r.response.code, ResponseType::Content);
    assert_eq!(r.response.max_age, Some(60));
    let listed: Value = serde_json::from_slice(&r.response.payload).unwrap();
    let desired_id = listed["commands"][0]["id"].as_str().unwrap().to_owned();
    assert!(desired_id.starts_with("desired-"));
    assert_eq!(listed["commands"][0]["values"], json!({"setpoint": 22}));
    assert_eq!(listed["commands"][1]["id"], "41");
    assert_eq!(listed["commands"][1]["action"], "boost");

    let r = send(&mut c, t0, Req::new(Method::Get, "/things/t1/desired"));
    assert_eq!(
        serde_json::from_slice::<Value>(&r.response.payload).unwrap(),
        json!({"setpoint": 22})
    );

    // The notification carries the same list, confirmable, in the observer's format.
    let r = send(
        &mut c,
        t0,
        Req::new(Method::Get, "/things/t1/commands").accept(60),
    );
    assert_eq!(r.response.content_format, Some(60));
    let (path, n) = c.notification(&thing("t1")).unwrap();
    assert_eq!(path, "things/t1/commands");
    assert_eq!(n.confirmable, Some(true));
    assert_eq!(n.content_format, Some(60));
    let decoded = payload::decode(PayloadFormat::Cbor, &n.payload).unwrap();
    assert_eq!(decoded["commands"][1]["id"], "41");

    // Replies settle: the action one becomes an ActionReply, the desired one only clears.
    let r = send(
        &mut c,
        t0,
        Req::new(Method::Post, "/things/t1/replies").json(json!({"id": "41", "output": true})),
    );
    assert!(matches!(
        &r.events[..],
        [DeviceEvent::ActionReply { correlation, outcome: Ok(v), .. }] if correlation == "41" && *v == json!(true)
    ));
    let r = send(
        &mut c,
        t0,
        Req::new(Method::Post, "/things/t1/replies").json(json!({"id": desired_id})),
    );
    assert_eq!(r.response.code, ResponseType::Changed);
    assert!(r.events.is_empty());
    let (_, n) = c.notification(&thing("t1")).unwrap();
    let decoded = payload::decode(PayloadFormat::Cbor, &n.payload).unwrap();
    assert_eq!(decoded, json!({"commands": []}));
}

#[test]
fn reported_values_confirm_desired_ones() {
    let mut c = core();
    let t0 = Instant::now();
    c.on_command(
        0,
        DeviceCommand::SetDesired {
            thing: thing("t1"),
            values: obj(json!({"setpoint": 22, "mode": "heat"})),
        },
    );
    send(
        &mut c,
        t0,
        Req::new(Method::Post, "/things/t1/state").json(json!({"setpoint": 22.0})),
    );
    let r = send(&mut c, t0, Req::new(Method::Get, "/things/t1/desired"));
    assert_eq!(
        serde_json::from_slice::<Value>(&r.response.payload).unwrap(),
        json!({"mode": "heat"})
    );
}

#[test]
fn actions_beyond_the_cap_or_deadline_are_refused() {
    let mut c = core();
    let invoke = |correlation: &str, deadline_ms| DeviceCommand::InvokeAction {
        thing: thing("t1"),
        action: "boost".into(),
        input: Value::Null,
        correlation: correlation.into(),
        deadline_ms,
    };
    assert!(c.on_command(100, invoke("late", 50)).notify.is_none());
    c.on_command(100, invoke("1", 1_000));
    c.on_command(100, invoke("2", 2_000));
    let out = c.on_command(100, invoke("3", 3_000));
    assert!(out.notify.is_none());
    assert!(matches!(
        &out.events[..],
        [DeviceEvent::ActionReply { correlation, outcome: Err(_), .. }] if correlation == "3"
    ));
    // Past its deadline, an action leaves the list.
    c.sweep(Instant::now(), 1_500);
    let (_, n) = c.notification(&thing("t1")).unwrap();
    let listed: Value = serde_json::from_slice(&n.payload).unwrap();
    assert_eq!(listed["commands"].as_array().unwrap().len(), 1);
    assert_eq!(listed["commands"][0]["id"], "2");
}

#[test]
fn presence_follows_traffic_and_observation() {
    let mut c = core();
    let t0 = Instant::now();
    let ten = Duration::from_secs(10);
    let state = || Req::new(Method::Post, "/things/t1/state").json(json!({"a": 1}));
    send(&mut c, t0, state());
    assert!(c.sweep(t0 + Duration::from_secs(9), 0).offline.is_empty());
    let sweep = c.sweep(t0 + ten, 0);
    assert!(matches!(&sweep.offline[..], [DeviceEvent::Offline { .. }]));
    assert!(!c.is_online(&thing("t1")));
    let r = send(&mut c, t0 + ten, state());
    assert!(matches!(&r.events[0], DeviceEvent::Online { .. }));

    // Observed: probed instead of marked offline, once per period.
    c.on_observer("things/t1/commands", true);
    let t1 = t0 + ten * 2;
    let sweep = c.sweep(t1, 0);
    assert!(sweep.offline.is_empty());
    assert_eq!(sweep.probes, vec![thing("t1")]);
    assert!(c.sweep(t1 + Duration::from_secs(1), 0).probes.is_empty());
    // The probe found no observer (or the engine dropped it): offline at the next sweep.
    c.set_observers(&thing("t1"), 0);
    let sweep = c.sweep(t1 + Duration::from_secs(2), 0);
    assert!(matches!(&sweep.offline[..], [DeviceEvent::Offline { .. }]));
    assert!(c.sweep(t1 + ten * 5, 0).offline.is_empty());
}

#[test]
fn the_thing_table_is_bounded() {
    let mut c = core_with(PushSettings {
        max_things: 1,
        ..settings()
    });
    let t0 = Instant::now();
    let state = |path| Req::new(Method::Post, path).json(json!({"a": 1}));
    send(&mut c, t0, state("/things/t1/state"));
    let r = send(&mut c, t0, state("/things/t2/state"));
    assert_eq!(r.response.code, ResponseType::ServiceUnavailable);
    assert!(r.events.is_empty());
    // Once t1 is offline with nothing pending, it makes room.
    c.sweep(t0 + Duration::from_secs(10), 0);
    let r = send(&mut c, t0, state("/things/t2/state"));
    assert_eq!(r.response.code, ResponseType::Changed);
    let out = c.on_command(
        0,
        DeviceCommand::InvokeAction {
            thing: thing("t3"),
            action: "x".into(),
            input: Value::Null,
            correlation: "9".into(),
            deadline_ms: 10,
        },
    );
    assert!(matches!(
        &out.events[..],
        [DeviceEvent::ActionReply {
            outcome: Err(_),
            ..
        }]
    ));
}

#[test]
fn random_requests_never_panic() {
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};
    let mut rng = StdRng::seed_from_u64(7);
    let mut c = core();
    let t0 = Instant::now();
    let segments = [
        "things", "t1", "t2", "state", "info", "events", "fault", "desired", "commands", "replies",
        "", "x", "Ünï", "..",
    ];
    let methods = [Method::Get, Method::Post, Method::Put, Method::Delete];
    let formats = [None, Some(0), Some(50), Some(60), Some(42), Some(u16::MAX)];
    for i in 0..20_000u32 {
        let path = (0..rng.random_range(0..5))
            .map(|_| segments[rng.random_range(0..segments.len())].to_owned())
            .collect::<Vec<_>>();
        let payload: Vec<u8> = match rng.random_range(0..4) {
            0 => Vec::new(),
            1 => (0..rng.random_range(0..64)).map(|_| rng.random()).collect(),
            2 => json!({"id": "desired-1", "a": [1, {"b": null}]})
                .to_string()
                .into_bytes(),
            _ => {
                let mut v = Vec::new();
                ciborium::into_writer(&json!({"id": "41", "output": 1.5}), &mut v).unwrap();
                v
            }
        };
        let req = Request {
            id: RequestId(u64::from(i)),
            peer: "127.0.0.1:1".parse().unwrap(),
            method: methods[rng.random_range(0..methods.len())],
            path,
            query: vec![format!("s={}", if rng.random() { SECRET } else { "x" })],
            content_format: formats[rng.random_range(0..formats.len())],
            accept: formats[rng.random_range(0..formats.len())],
            payload: Bytes::from(payload),
            observe: None,
            confirmable: rng.random(),
        };
        let r = c.on_request(t0, 0, &req);
        assert!(r.events.len() <= MAX_EVENTS_PER_REQUEST);
        if i % 1000 == 0 {
            c.sweep(t0 + Duration::from_secs(u64::from(i / 100)), u64::from(i));
        }
    }
}

#[test]
fn a_device_reads_its_state_and_info_from_the_registry() {
    let mut c = core();
    let now = Instant::now();
    let r = c.on_request(now, 1, &Req::new(Method::Get, "/things/t1/state").build());
    let read = r.read.expect("answered from the registry");
    assert_eq!(
        (read.thing.as_str(), read.what, read.format),
        ("t1", ReadWhat::State, PayloadFormat::Json)
    );
    // Reading is contact: the first one greets.
    assert!(matches!(r.events.as_slice(), [DeviceEvent::Hello { .. }]));
    let view = crate::link::ThingView {
        state: json!({"t": 21.5}).as_object().unwrap().clone(),
        info: json!({"fw": "1"}).as_object().unwrap().clone(),
    };
    let answer = read.answer(Some(&view));
    assert_eq!(answer.code, ResponseType::Content);
    assert_eq!(answer.payload, Bytes::from(r#"{"t":21.5}"#));
    assert_eq!(read.answer(None).code, ResponseType::NotFound);
    // Info in CBOR when the device accepts it.
    let r = c.on_request(
        now,
        2,
        &Req::new(Method::Get, "/things/t1/info").accept(60).build(),
    );
    let read = r.read.expect("answered from the registry");
    assert_eq!(
        (read.what, read.format),
        (ReadWhat::Info, PayloadFormat::Cbor)
    );
    // Still only with the secret, and only the methods each resource takes.
    let r = c.on_request(
        now,
        3,
        &Req::new(Method::Get, "/things/t1/state")
            .query(&["s=nope"])
            .build(),
    );
    assert!(r.read.is_none());
    assert_eq!(r.response.code, ResponseType::Unauthorized);
    let r = c.on_request(now, 4, &Req::new(Method::Put, "/things/t1/state").build());
    assert_eq!(r.response.code, ResponseType::MethodNotAllowed);
}

#[test]
fn well_known_core_is_open_to_discovery() {
    let mut c = core();
    let r = c.on_request(
        Instant::now(),
        1,
        &Req::new(Method::Get, "/.well-known/core")
            .query(&["ep=t1"])
            .build(),
    );
    assert_eq!(r.response.code, ResponseType::Content);
    assert_eq!(r.response.content_format, Some(40));
    assert!(r.events.is_empty(), "discovery is not contact");
    let body = String::from_utf8(r.response.payload.to_vec()).unwrap();
    assert!(body.starts_with("</things/t1/state>;"), "{body}");
    let r = c.on_request(
        Instant::now(),
        2,
        &Req::new(Method::Post, "/.well-known/core").build(),
    );
    assert_eq!(r.response.code, ResponseType::MethodNotAllowed);
}
