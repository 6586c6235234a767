//! The engine driven step by step with synthetic time: presence, identification, commands,
//! replies, half-duplex ordering and timeouts.

use std::sync::Arc;
use std::time::{Duration, Instant};

use device_models::{DeviceCommand, DeviceEvent, ThingId, ThingType};
use serde_json::{Value, json};

use super::{Clock, Engine, EngineSettings};
use crate::raw::model::DeviceModel;
use crate::raw::stats::ListenerStats;

/// Meters on a half-duplex bus: key=value lines, replies are the next `ack=1` line.
const METER: &str = r#"
id = "meter"
title = "Meter"
version = "1"
[properties.voltage]
type = "number"
[properties.relay]
type = "boolean"
writable = true
[properties.firmware]
type = "string"
kind = "info"
[actions.poll]
output = { type = "object" }
[bindings.frame]
id_field = "node"
id_template = "meter-{}"
framing = { kind = "lines" }
layout = { kind = "key_value", types = { relay = "bool", fw = "string" } }
properties = { voltage = "v", relay = "relay", firmware = "fw" }
reply = { correlate = "next_frame", when = { field = "ack", equals = 1 } }
[bindings.frame.commands]
set = { text = "node={id};set={property};value={value}", bools = ["0", "1"] }
actions.poll = { text = "node={id};poll=1" }
"#;

/// JSON devices whose replies echo the request's sequence number in `re`.
const THERMOSTAT: &str = r#"
id = "thermostat"
title = "Thermostat"
version = "1"
[properties.temperature]
type = "number"
[properties.setpoint]
type = "number"
writable = true
[actions.calibrate]
input = { type = "object", properties = { offset = { type = "number" } } }
output = { type = "boolean" }
[actions.beep]
[bindings.frame]
id_field = "id"
framing = { kind = "lines" }
layout = { kind = "json" }
properties = { temperature = "/t", setpoint = "/sp", ok = "ok", error = "error" }
reply = { correlate = "field", field = "re" }
[bindings.frame.commands]
set = { json = { op = "set", seq = "{seq}", "{property}" = "{value}" } }
actions.calibrate = { json = { op = "calibrate", seq = "{seq}", offset = "{offset}" } }
actions.beep = { json = { op = "beep" }, expect_reply = false }
"#;

struct Harness {
    engine: Engine<&'static str>,
    model: Arc<DeviceModel>,
    stats: Arc<ListenerStats>,
    clock: Clock,
}

fn settings() -> EngineSettings {
    EngineSettings {
        offline_after: Some(Duration::from_secs(10)),
        set_timeout: Duration::from_secs(2),
        max_in_flight: 8,
        max_queued: 4,
        max_devices: 100,
        implicit_links: true,
    }
}

impl Harness {
    fn new(type_toml: &str, settings: EngineSettings) -> Self {
        let ty = ThingType::from_toml(type_toml, "test.toml").unwrap();
        let model = Arc::new(DeviceModel::new(Arc::new(ty)).unwrap());
        let stats = Arc::new(ListenerStats::default());
        Self {
            engine: Engine::new(Arc::clone(&model), settings, Arc::clone(&stats)),
            model,
            stats,
            clock: Clock {
                mono: Instant::now(),
                wall_ms: 1_000_000,
            },
        }
    }

    fn advance(&mut self, by: Duration) {
        self.clock.mono += by;
        self.clock.wall_ms += u64::try_from(by.as_millis()).unwrap();
        self.engine.handle_timeout(self.clock.mono);
    }

    fn frame(&mut self, peer: &'static str, mapped: Option<&str>, payload: &str) {
        let frame = self.model.codec().decode(payload.as_bytes()).unwrap();
        let mapped = mapped.map(|m| ThingId::new(m).unwrap());
        self.engine
            .handle_frame(&peer, mapped.as_ref(), frame, self.clock);
    }

    fn events(&mut self) -> Vec<DeviceEvent> {
        std::iter::from_fn(|| self.engine.poll_event()).collect()
    }

    /// Frames written, as text without the line end.
    fn sent(&mut self) -> Vec<(&'static str, String)> {
        std::iter::from_fn(|| self.engine.poll_transmit())
            .map(|t| {
                let text = String::from_utf8(t.bytes.to_vec()).unwrap();
                (t.peer, text.trim_end().to_owned())
            })
            .collect()
    }

    fn action(&mut self, thing: &str, action: &str, input: Value, correlation: &str) {
        let command = DeviceCommand::InvokeAction {
            thing: id(thing),
            action: action.into(),
            input,
            correlation: correlation.into(),
            deadline_ms: self.clock.wall_ms + 5_000,
        };
        self.engine.handle_command(command, self.clock);
    }
}

fn id(text: &str) -> ThingId {
    ThingId::new(text).unwrap()
}

fn values(value: Value) -> serde_json::Map<String, Value> {
    value.as_object().cloned().unwrap()
}

fn reply(thing: &str, correlation: &str, outcome: Result<Value, &str>) -> DeviceEvent {
    DeviceEvent::ActionReply {
        thing: id(thing),
        correlation: correlation.into(),
        outcome: outcome.map_err(str::to_owned),
    }
}

#[test]
fn first_frame_says_hello_then_reports_and_silence_goes_offline() {
    let mut h = Harness::new(METER, settings());
    h.frame("bus", None, "node=3;v=230.5;relay=1;fw=1.2");
    let at_ms = h.clock.wall_ms;
    assert_eq!(
        h.events(),
        [
            DeviceEvent::Hello {
                thing: id("meter-3"),
                type_hint: Some("meter".into()),
                info: values(json!({"firmware": "1.2"})),
            },
            DeviceEvent::Reported {
                thing: id("meter-3"),
                values: values(json!({"voltage": 230.5, "relay": true})),
                at_ms,
            },
        ]
    );
    h.advance(Duration::from_secs(5));
    h.frame("bus", None, "node=3;v=231;fw=1.2");
    assert!(matches!(h.events()[..], [DeviceEvent::Reported { .. }]));
    h.frame("bus", None, "node=3;fw=1.3");
    assert_eq!(
        h.events(),
        [DeviceEvent::Info {
            thing: id("meter-3"),
            info: values(json!({"firmware": "1.3"}))
        }]
    );
    assert_eq!(h.engine.online(), ["meter-3"]);
    for _ in 0..12 {
        h.advance(Duration::from_secs(1));
    }
    assert_eq!(
        h.events(),
        [DeviceEvent::Offline {
            thing: id("meter-3")
        }]
    );
    assert!(h.engine.online().is_empty());
    assert_eq!(h.engine.poll_timeout(), None, "nothing left to time");
    h.frame("bus", None, "node=3;v=229");
    let events = h.events();
    assert_eq!(
        events[0],
        DeviceEvent::Online {
            thing: id("meter-3")
        }
    );
    assert!(matches!(events[1], DeviceEvent::Reported { .. }));
}

#[test]
fn peers_are_identified_by_frame_or_mapping() {
    let mut h = Harness::new(METER, settings());
    h.frame("a", Some("meter-9"), "v=1");
    assert!(
        matches!(&h.events()[0], DeviceEvent::Hello { thing, .. } if thing.as_str() == "meter-9")
    );
    h.frame("a", Some("meter-9"), "node=4;v=1");
    assert!(
        h.events().is_empty(),
        "a mapped peer cannot speak for another thing"
    );
    h.frame("b", None, "v=1");
    assert!(h.events().is_empty(), "no id, no mapping");
    let stats = h.stats.snapshot();
    assert_eq!(
        (stats.id_mismatch, stats.unidentified, stats.frames),
        (1, 1, 1)
    );
}

#[test]
fn field_correlated_replies_answer_their_action() {
    let mut h = Harness::new(THERMOSTAT, settings());
    h.frame("tcp-1", None, r#"{"id":"th-1","t":21.5}"#);
    h.events();
    h.action("th-1", "calibrate", json!({"offset": -0.5}), "c1");
    h.action("th-1", "calibrate", json!({"offset": 0.5}), "c2");
    let sent = h.sent();
    assert_eq!(sent.len(), 2, "full duplex: both go out at once");
    assert_eq!(
        serde_json::from_str::<Value>(&sent[0].1).unwrap(),
        json!({"op": "calibrate", "seq": 0, "offset": -0.5})
    );
    // Answered out of order, with an id-less reply and a failure.
    h.frame("tcp-1", None, r#"{"re":1,"error":"sensor busy"}"#);
    h.frame("tcp-1", None, r#"{"re":0,"ok":true}"#);
    h.frame("tcp-1", None, r#"{"re":0,"ok":true}"#);
    assert_eq!(
        h.events(),
        [
            reply("th-1", "c2", Err("sensor busy")),
            reply("th-1", "c1", Ok(json!(true))),
        ]
    );
    let stats = h.stats.snapshot();
    assert_eq!((stats.replies, stats.unmatched_replies), (2, 1));
    assert_eq!(stats.unknown_properties, 0, "reply fields are the output");
}

#[test]
fn commands_without_reply_complete_when_written() {
    let mut h = Harness::new(THERMOSTAT, settings());
    h.frame("tcp-1", None, r#"{"id":"th-1","t":21.5}"#);
    h.events();
    h.action("th-1", "beep", Value::Null, "b1");
    assert_eq!(h.sent().len(), 1);
    assert_eq!(h.events(), [reply("th-1", "b1", Ok(Value::Null))]);
}

#[test]
fn set_sends_a_frame_per_property_and_the_report_confirms() {
    let mut h = Harness::new(THERMOSTAT, settings());
    h.frame("tcp-1", None, r#"{"id":"th-1","t":21.5,"sp":20}"#);
    h.events();
    let command = DeviceCommand::SetDesired {
        thing: id("th-1"),
        values: values(json!({"setpoint": 22.5})),
    };
    h.engine.handle_command(command, h.clock);
    let sent = h.sent();
    assert_eq!(
        serde_json::from_str::<Value>(&sent[0].1).unwrap(),
        json!({"op": "set", "seq": 0, "setpoint": 22.5})
    );
    h.frame("tcp-1", None, r#"{"re":0,"ok":true}"#);
    h.frame("tcp-1", None, r#"{"id":"th-1","sp":22.5}"#);
    let events = h.events();
    assert_eq!(events.len(), 1, "{events:?}");
    assert!(
        matches!(&events[0], DeviceEvent::Reported { values, .. } if values["setpoint"] == 22.5)
    );
    // An unconfirmed set expires quietly (there is nobody to answer).
    let command = DeviceCommand::SetDesired {
        thing: id("th-1"),
        values: values(json!({"setpoint": 23})),
    };
    h.engine.handle_command(command, h.clock);
    h.sent();
    h.advance(Duration::from_secs(3));
    assert!(h.events().is_empty());
    assert_eq!(h.stats.snapshot().timeouts, 1);
}

#[test]
fn a_half_duplex_bus_has_one_request_out_at_a_time() {
    let mut s = settings();
    s.max_in_flight = 1;
    let mut h = Harness::new(METER, s);
    h.frame("bus", None, "node=1;v=230");
    h.frame("bus", None, "node=2;v=231");
    h.events();
    h.action("meter-1", "poll", Value::Null, "p1");
    h.action("meter-2", "poll", Value::Null, "p2");
    let command = DeviceCommand::SetDesired {
        thing: id("meter-2"),
        values: values(json!({"relay": false})),
    };
    h.engine.handle_command(command, h.clock);
    assert_eq!(h.sent(), [("bus", "node=1;poll=1".to_owned())]);
    // A report that is not a reply does not release the bus.
    h.frame("bus", None, "node=2;v=232");
    h.events();
    assert!(h.sent().is_empty());
    h.frame("bus", None, "node=1;ack=1;v=230.2;relay=0");
    let events = h.events();
    assert_eq!(
        events.last(),
        Some(&reply(
            "meter-1",
            "p1",
            Ok(json!({"voltage": 230.2, "relay": false}))
        ))
    );
    assert_eq!(h.sent(), [("bus", "node=2;poll=1".to_owned())]);
    // meter-2 never answers: at the deadline its poll fails and the set goes out.
    h.advance(Duration::from_secs(6));
    let events = h.events();
    assert_eq!(
        events,
        [reply(
            "meter-2",
            "p2",
            Err("the device did not answer before the deadline")
        )]
    );
    assert_eq!(h.sent(), [], "the set expired while it waited");
    assert_eq!(h.stats.snapshot().timeouts, 2);
}

#[test]
fn half_duplex_releases_the_bus_after_a_timeout() {
    let mut settings = settings();
    settings.max_in_flight = 1;
    let mut h = Harness::new(METER, settings);
    h.frame("bus", None, "node=1;v=230");
    h.frame("bus", None, "node=2;v=231");
    h.events();
    let command = |h: &mut Harness, thing: &str, correlation: &str, ms: u64| {
        let command = DeviceCommand::InvokeAction {
            thing: id(thing),
            action: "poll".into(),
            input: Value::Null,
            correlation: correlation.into(),
            deadline_ms: h.clock.wall_ms + ms,
        };
        h.engine.handle_command(command, h.clock);
    };
    command(&mut h, "meter-1", "p1", 1_000);
    command(&mut h, "meter-2", "p2", 5_000);
    assert_eq!(h.sent().len(), 1);
    h.advance(Duration::from_millis(1_000));
    assert_eq!(
        h.events(),
        [reply(
            "meter-1",
            "p1",
            Err("the device did not answer before the deadline")
        )]
    );
    assert_eq!(h.sent(), [("bus", "node=2;poll=1".to_owned())]);
    h.frame("bus", None, "node=2;ack=1;relay=1");
    let events = h.events();
    assert!(matches!(&events[0], DeviceEvent::Reported { values, .. } if values["relay"] == true));
    assert_eq!(
        events[1],
        reply("meter-2", "p2", Ok(json!({"relay": true})))
    );
}

#[test]
fn commands_that_cannot_be_delivered_are_answered_at_once() {
    let mut h = Harness::new(THERMOSTAT, settings());
    h.action("th-9", "calibrate", json!({"offset": 1}), "c1");
    assert_eq!(
        h.events(),
        [reply(
            "th-9",
            "c1",
            Err("the device has not been heard on this listener")
        )]
    );
    h.frame("tcp-1", None, r#"{"id":"th-1","t":21.5}"#);
    h.events();
    // Past its deadline already: the hub has given up, nothing is sent or answered.
    let late = DeviceCommand::InvokeAction {
        thing: id("th-1"),
        action: "calibrate".into(),
        input: json!({"offset": 1}),
        correlation: "late".into(),
        deadline_ms: h.clock.wall_ms - 1,
    };
    h.engine.handle_command(late, h.clock);
    assert!(h.events().is_empty() && h.sent().is_empty());
    // An input the template needs is missing.
    h.action("th-1", "calibrate", json!({}), "c2");
    assert!(matches!(
        &h.events()[..],
        [DeviceEvent::ActionReply { outcome: Err(e), .. }] if e.starts_with("cannot encode")
    ));
    // The queue is bounded.
    let mut s = settings();
    s.max_in_flight = 1;
    s.max_queued = 2;
    let mut h = Harness::new(THERMOSTAT, s);
    h.frame("tcp-1", None, r#"{"id":"th-1","t":21.5}"#);
    h.events();
    for i in 0..4 {
        h.action("th-1", "calibrate", json!({"offset": i}), &format!("q{i}"));
    }
    assert_eq!(
        h.events(),
        [reply(
            "th-1",
            "q3",
            Err("the device's command queue is full")
        )]
    );
    assert_eq!(h.stats.snapshot().commands_rejected, 1);
}

#[test]
fn a_lost_link_fails_its_requests_and_takes_its_things_offline() {
    let mut s = settings();
    s.implicit_links = false;
    let mut h = Harness::new(THERMOSTAT, s);
    h.action("th-1", "calibrate", json!({"offset": 1}), "c0");
    assert!(matches!(
        &h.events()[..],
        [DeviceEvent::ActionReply {
            outcome: Err(_),
            ..
        }]
    ));
    h.engine.handle_link_up(&"conn-1", h.clock.mono);
    h.frame("conn-1", None, r#"{"id":"th-1","t":21.5}"#);
    h.events();
    h.action("th-1", "calibrate", json!({"offset": 1}), "c1");
    assert_eq!(h.sent().len(), 1);
    h.engine.handle_link_down(&"conn-1", true);
    assert_eq!(
        h.events(),
        [
            reply(
                "th-1",
                "c1",
                Err("the connection to the device was lost before it answered")
            ),
            DeviceEvent::Offline { thing: id("th-1") },
        ]
    );
    h.action("th-1", "calibrate", json!({"offset": 1}), "c2");
    assert_eq!(
        h.events(),
        [reply("th-1", "c2", Err("the device is not connected"))]
    );
    // Back on a new connection: a new Hello.
    h.engine.handle_link_up(&"conn-2", h.clock.mono);
    h.frame("conn-2", None, r#"{"id":"th-1","t":21.5}"#);
    assert!(matches!(h.events()[0], DeviceEvent::Hello { .. }));
}

#[test]
fn a_closed_serial_port_keeps_commands_queued_until_it_reopens() {
    let mut s = settings();
    s.implicit_links = false;
    s.max_in_flight = 1;
    let mut h = Harness::new(METER, s);
    h.engine.handle_link_down(&"tty", false);
    h.engine.add_known(id("meter-1"), "tty", h.clock.mono);
    h.action("meter-1", "poll", Value::Null, "p1");
    assert!(h.sent().is_empty() && h.events().is_empty());
    h.engine.handle_link_up(&"tty", h.clock.mono);
    assert_eq!(h.sent(), [("tty", "node=1;poll=1".to_owned())]);
    h.engine.handle_link_down(&"tty", false);
    assert_eq!(
        h.events(),
        [reply(
            "meter-1",
            "p1",
            Err("the connection to the device was lost before it answered")
        )],
        "a known but never heard thing was not online, so no Offline"
    );
}

#[test]
fn the_device_table_is_bounded() {
    let mut s = settings();
    s.max_devices = 2;
    let mut h = Harness::new(METER, s);
    for node in 1..=3 {
        h.frame("bus", None, &format!("node={node};v=1"));
    }
    assert_eq!(h.engine.online(), ["meter-1", "meter-2"]);
    assert_eq!(h.stats.snapshot().too_many_devices, 1);
    h.advance(Duration::from_secs(11));
    h.frame("bus", None, "node=3;v=1");
    assert_eq!(h.engine.online(), ["meter-3"], "offline things made room");
}
