use std::sync::Arc;

use device_models::TypeCatalog;
use serde_json::json;

use super::*;
use crate::mqtt::binding::MqttBinding;
use crate::mqtt::pending::Pending;

struct Fixture {
    directory: Directory,
    pending: Mutex<PendingActions>,
}

impl Fixture {
    fn new() -> Self {
        let catalog = TypeCatalog::builtin().unwrap();
        let mut directory = Directory::default();
        let relay = catalog.get("relay").unwrap().clone();
        directory
            .insert(
                ThingId::new("r1").unwrap(),
                Registered {
                    ty: relay,
                    binding: None,
                    name: "r1".into(),
                },
            )
            .unwrap();
        let plug = catalog.get("tasmota_plug").unwrap().clone();
        directory
            .insert(
                ThingId::new("p1").unwrap(),
                Registered {
                    binding: MqttBinding::from_type(&plug).unwrap().map(Arc::new),
                    ty: plug,
                    name: "kitchen".into(),
                },
            )
            .unwrap();
        Self {
            directory,
            pending: Mutex::new(PendingActions::new(16)),
        }
    }

    fn translator(&self) -> Translator<'_> {
        Translator {
            directory: &self.directory,
            pending: &self.pending,
            max_message_bytes: 64,
            raw_bridge: true,
        }
    }
}

fn session(id: &str) -> DeviceSession {
    DeviceSession::new(Some(ThingId::new(id).unwrap()))
}

fn bytes(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

fn kinds(out: &Outcome) -> Vec<&'static str> {
    out.events
        .iter()
        .map(|e| match e {
            DeviceEvent::Hello { .. } => "hello",
            DeviceEvent::Online { .. } => "online",
            DeviceEvent::Offline { .. } => "offline",
            DeviceEvent::Reported { .. } => "reported",
            DeviceEvent::Info { .. } => "info",
            DeviceEvent::Event { .. } => "event",
            DeviceEvent::ActionReply { .. } => "reply",
            DeviceEvent::Raw { .. } => "raw",
            DeviceEvent::Barrier(_) => "barrier",
            DeviceEvent::Batch(_) => "batch",
        })
        .collect()
}

#[test]
fn presence_follows_first_contact_and_status() {
    let f = Fixture::new();
    let t = f.translator();
    let mut s = session("r1");
    let out = t.handle(&mut s, "things/r1/state", &bytes(r#"{"on":true}"#), 5);
    assert_eq!(kinds(&out), ["hello", "reported"]);
    assert!(
        matches!(&out.events[0], DeviceEvent::Hello { type_hint: Some(h), .. } if h == "relay")
    );
    let out = t.handle(&mut s, "things/r1/status", &bytes("online"), 6);
    assert!(out.events.is_empty(), "already online");
    assert!(s.announced);
    let out = t.handle(&mut s, "things/r1/status", &bytes("offline"), 7);
    assert_eq!(kinds(&out), ["offline"]);
    let out = t.handle(&mut s, "things/r1/state", &bytes(r#"{"on":false}"#), 8);
    assert_eq!(kinds(&out), ["online", "reported"]);
    let out = t.handle(&mut s, "things/r1/status", &bytes(""), 9);
    assert!(
        out.events.is_empty() && out.rejected.is_none(),
        "cleared retained status"
    );
}

#[test]
fn rejections_name_the_reason() {
    let f = Fixture::new();
    let t = f.translator();
    let mut s = session("r1");
    let cases = [
        ("things/r1/state", "nope", "not JSON"),
        ("things/r1/state", "3", "JSON object"),
        ("things/r1/events/Bad", "{}", "event name"),
        ("things/r1/replies", r#"{"result": 1}"#, "correlation"),
        ("things/r1/status", r#"{"status": "asleep"}"#, "online"),
        ("things/r1/foo", "{}", "foo"),
        ("sensors/x", &"x".repeat(65), "over the limit"),
    ];
    for (topic, payload, needle) in cases {
        let out = t.handle(&mut s, topic, &bytes(payload), 1);
        let rejection = out
            .rejected
            .unwrap_or_else(|| panic!("{topic} {payload} should be rejected"));
        assert!(
            rejection.to_string().contains(needle),
            "{topic}: {rejection}"
        );
        assert!(out.events.is_empty(), "{topic}: {:?}", out.events);
    }
    // What breaks the thing's type is the hub's to refuse (it answers the message's barrier):
    // the gateway passes it on.
    let typed = [
        ("things/r1/state", r#"{"on": 1}"#, "reported"),
        ("things/r1/state", r#"{"firmware": "1"}"#, "reported"),
        ("things/r1/info", r#"{"on": true}"#, "info"),
        ("things/r1/events/ghost", "{}", "event"),
    ];
    for (topic, payload, kind) in typed {
        let out = t.handle(&mut s, topic, &bytes(payload), 1);
        assert!(
            out.rejected.is_none(),
            "{topic} {payload}: {:?}",
            out.rejected
        );
        assert_eq!(kinds(&out).last().copied(), Some(kind), "{topic} {payload}");
    }
}

#[test]
fn replies_match_pending_calls() {
    let f = Fixture::new();
    let t = f.translator();
    let mut s = session("r1");
    s.contacted = true;
    s.online = true;
    f.pending.lock().unwrap().insert(
        "c1".into(),
        Pending {
            thing: ThingId::new("r1").unwrap(),
            action: "toggle".into(),
            deadline_ms: 100,
        },
        0,
    );
    let out = t.handle(
        &mut s,
        "things/r1/replies",
        &bytes(r#"{"correlation":"c1","result":true}"#),
        1,
    );
    assert!(
        matches!(&out.events[..], [DeviceEvent::ActionReply { outcome: Ok(v), .. }] if v == &json!(true))
    );
    assert!(!out.unmatched_reply);
    let out = t.handle(
        &mut s,
        "things/r1/replies",
        &bytes(r#"{"correlation":"c1","result":true}"#),
        1,
    );
    assert!(out.unmatched_reply, "a second reply matches nothing");
}

#[test]
fn bound_topics_raw_topics_and_foreign_ones() {
    let f = Fixture::new();
    let t = f.translator();
    let mut plug = session("p1");
    let out = t.handle(&mut plug, "tele/kitchen/LWT", &bytes("Online"), 1);
    assert_eq!(kinds(&out), ["hello"]);
    let out = t.handle(
        &mut plug,
        "tele/kitchen/SENSOR",
        &bytes(r#"{"AM2301":{"Temperature":99}}"#),
        1,
    );
    // 99 °C is above the type's maximum: the hub refuses it, the gateway passes it on.
    assert!(out.rejected.is_none());
    assert_eq!(kinds(&out).last().copied(), Some("reported"));
    let out = t.handle(&mut plug, "tele/kitchen/LWT", &bytes("Offline"), 1);
    assert_eq!(kinds(&out), ["offline"]);
    // The hub's own command topic published by the device: nothing to report.
    let out = t.handle(&mut plug, "cmnd/kitchen/POWER", &bytes("ON"), 1);
    assert!(out.events.is_empty() && out.rejected.is_none());

    let mut anon = DeviceSession::new(None);
    let out = t.handle(&mut anon, "tele/unknown/SENSOR", &bytes("{}"), 1);
    assert!(out.raw);
    assert!(
        matches!(&out.events[..], [DeviceEvent::Raw { source, .. }] if source == "mqtt:tele/unknown/SENSOR")
    );
    // Thing topics of another identity never translate (the ACL refuses them first anyway).
    let out = t.handle(&mut anon, "things/r1/state", &bytes(r#"{"on":true}"#), 1);
    assert!(out.events.is_empty());
    let out = t.handle(&mut anon, "tele/kitchen/SENSOR", &bytes("{}"), 1);
    assert!(out.events.is_empty());
}
