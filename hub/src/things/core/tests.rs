use device_models::DeviceEvent;
use serde_json::{Map, json};
use tokio::sync::oneshot;

use super::*;
use crate::things::request::Reply;

fn id(s: &str) -> ThingId {
    ThingId::new(s).unwrap()
}

fn obj(v: Json) -> Map<String, Json> {
    v.as_object().cloned().unwrap()
}

struct Fixture {
    core: Core,
    commands: mpsc::Receiver<DeviceCommand>,
    now: Instant,
}

const GW: GatewayId = 7;

fn fixture(provisioning: Provisioning, auto_type: Option<&str>) -> Fixture {
    let settings = CoreSettings {
        provisioning,
        auto_type: auto_type.map(str::to_owned),
        set_timeout: Duration::from_millis(1000),
        td: TdContext::new("hub-1", "ws://127.0.0.1:1/ws"),
    };
    let mut core = Core::new(
        settings,
        TypeCatalog::builtin().unwrap(),
        Loaded::default(),
        Arc::new(ThingsStats::default()),
        Arc::new(RegistryCredentials::new(false)),
    )
    .unwrap();
    let (tx, commands) = mpsc::channel(8);
    core.attach(GW, "test".into(), tx);
    Fixture {
        core,
        commands,
        now: Instant::now(),
    }
}

impl Fixture {
    fn call(&mut self, req: Request) -> oneshot::Receiver<Result<Json, ApiError>> {
        let (tx, rx): (Reply, _) = oneshot::channel();
        self.core.handle_request(req, tx, self.now, 1000);
        rx
    }

    /// Calls and answers at once, committing (as the writer would) the replies that wait for
    /// their writes.
    fn answer(&mut self, req: Request) -> Result<Json, ApiError> {
        let mut rx = self.call(req);
        self.commit_replies();
        rx.try_recv().expect("answered at once")
    }

    /// Sends the replies held behind writes in the outbox, leaving the writes there.
    fn commit_replies(&mut self) {
        let ops = std::mem::take(&mut self.core.out.store);
        for op in ops {
            match op {
                StoreOp::Reply { reply, answer } => {
                    let _ = reply.send(answer);
                }
                op => self.core.out.store.push(op),
            }
        }
    }

    fn event(&mut self, e: DeviceEvent) {
        self.core.handle_event(GW, e, self.now, 2000);
    }

    fn provision(&mut self, thing: &str, ty: &str) {
        self.answer(Request::Provision {
            thing: id(thing),
            type_id: ty.into(),
            info: Map::new(),
        })
        .unwrap();
    }

    fn report(&mut self, thing: &str, values: Json, at_ms: u64) {
        self.event(DeviceEvent::Reported {
            thing: id(thing),
            values: obj(values),
            at_ms,
        });
    }

    /// `set` (or action) counters: called, succeeded, refused, failed, timed out, canceled.
    fn counted(&self, sets: bool) -> [u64; 6] {
        let c = if sets {
            &self.core.stats.sets
        } else {
            &self.core.stats.actions
        };
        let g = ThingsStats::get;
        [
            g(&c.called),
            g(&c.succeeded),
            g(&c.refused),
            g(&c.failed),
            g(&c.timed_out),
            g(&c.canceled),
        ]
    }

    fn topics(&mut self) -> Vec<(String, Payload)> {
        self.core
            .take_outbox()
            .publications
            .into_iter()
            .map(|p| (p.topic, p.payload))
            .collect()
    }
}

#[test]
fn reports_publish_only_what_changed_and_are_persisted() {
    let mut f = fixture(Provisioning::Explicit, None);
    f.provision("th1", "thermostat");
    let out = f.core.take_outbox();
    assert_eq!(out.publications[0].topic, "brume.things.on_provision");
    assert!(matches!(out.store[0], StoreOp::PutThing { .. }));

    f.report("th1", json!({"temperature": 20.5, "mode": "heat"}), 10);
    let topics = f.topics();
    assert_eq!(topics[0].0, "brume.things.on_online");
    assert_eq!(topics[1].0, "brume.thing.th1.state");
    let values = topics[1].1.kwarg("values").unwrap().as_dict().unwrap();
    assert_eq!(values.len(), 2);

    f.report("th1", json!({"temperature": 21, "mode": "heat"}), 11);
    let out = f.core.take_outbox();
    assert_eq!(out.publications.len(), 1);
    let p = &out.publications[0].payload;
    let values = p.kwarg("values").unwrap().as_dict().unwrap();
    assert_eq!(values.keys().collect::<Vec<_>>(), ["temperature"]);
    let at = p.kwarg("at").unwrap().as_dict().unwrap();
    assert_eq!(at.get("temperature"), Some(&Value::Int(11)));
    // Both values are written, the unchanged one with its refreshed timestamp.
    match &out.store[0] {
        StoreOp::PutReported { values, .. } => assert_eq!(values.len(), 2),
        other => panic!("{other:?}"),
    }

    let got = f
        .answer(Request::Get {
            thing: id("th1"),
            property: None,
        })
        .unwrap();
    assert_eq!(got["online"], json!(true));
    assert_eq!(
        got["reported"]["temperature"],
        json!({"value": 21, "at": 11})
    );
    let one = f
        .answer(Request::Get {
            thing: id("th1"),
            property: Some("mode".into()),
        })
        .unwrap();
    assert_eq!(one["value"], json!("heat"));
}

#[test]
fn invalid_reports_are_rejected_and_counted() {
    let mut f = fixture(Provisioning::Explicit, None);
    f.provision("th1", "thermostat");
    f.core.take_outbox();
    f.report("th1", json!({"temperature": 500}), 10);
    f.report("th1", json!({"nonsense": 1}), 10);
    assert_eq!(ThingsStats::get(&f.core.stats.invalid_reports), 2);
    let out = f.core.take_outbox();
    assert!(out.store.is_empty());
    assert!(
        out.publications
            .iter()
            .all(|p| !p.topic.ends_with(".state"))
    );
}

#[test]
fn set_resolves_when_the_device_reports_the_value() {
    let mut f = fixture(Provisioning::Explicit, None);
    f.provision("th1", "thermostat");
    f.report("th1", json!({"setpoint": 18}), 10);
    let mut rx = f.call(Request::Set {
        thing: id("th1"),
        values: obj(json!({"setpoint": 22})),
        timeout: None,
    });
    assert!(rx.try_recv().is_err(), "waits for the device");
    match f.commands.try_recv().unwrap() {
        DeviceCommand::SetDesired { values, .. } => assert_eq!(values["setpoint"], json!(22)),
        other => panic!("{other:?}"),
    }
    let got = f
        .answer(Request::Get {
            thing: id("th1"),
            property: Some("setpoint".into()),
        })
        .unwrap();
    assert_eq!(got["desired"]["value"], json!(22));
    f.report("th1", json!({"setpoint": 22}), 20);
    let result = rx.try_recv().unwrap().unwrap();
    assert_eq!(
        result["settled"]["setpoint"],
        json!({"value": 22, "at": 20})
    );
    let got = f
        .answer(Request::Get {
            thing: id("th1"),
            property: None,
        })
        .unwrap();
    assert_eq!(got["desired"], json!({}));
}

#[test]
fn set_checks_values_and_times_out_keeping_the_desired_value() {
    let mut f = fixture(Provisioning::Explicit, None);
    f.provision("th1", "thermostat");
    f.report("th1", json!({"setpoint": 18}), 10);
    let err = f
        .answer(Request::Set {
            thing: id("th1"),
            values: obj(json!({"setpoint": 40})),
            timeout: None,
        })
        .unwrap_err();
    assert_eq!(err.uri, uris::INVALID_ARGUMENT);
    assert!(
        err.message.contains("setpoint") && err.message.contains("maximum"),
        "{err}"
    );
    assert_eq!(err.kwargs.get("property"), Some(&Value::from("setpoint")));

    let mut rx = f.call(Request::Set {
        thing: id("th1"),
        values: obj(json!({"setpoint": 25})),
        timeout: Some(Duration::from_millis(100)),
    });
    assert_eq!(
        f.core.next_deadline(),
        Some(f.now + Duration::from_millis(100)),
        "the call's timeout is shorter than the service's"
    );
    f.core.expire(f.now + Duration::from_millis(99), 0);
    assert!(rx.try_recv().is_err());
    f.core.expire(f.now + Duration::from_millis(100), 0);
    let err = rx.try_recv().unwrap().unwrap_err();
    assert_eq!(err.uri, uris::TIMEOUT);
    let got = f
        .answer(Request::Get {
            thing: id("th1"),
            property: None,
        })
        .unwrap();
    assert_eq!(got["desired"]["setpoint"]["value"], json!(25));
    assert_eq!(f.counted(true), [2, 0, 1, 0, 1, 0]);
}

#[test]
fn a_later_set_supersedes_an_earlier_one_and_others_proceed() {
    let mut f = fixture(Provisioning::Explicit, None);
    f.provision("th1", "thermostat");
    f.report("th1", json!({"setpoint": 18, "mode": "off"}), 10);
    let mut first = f.call(Request::Set {
        thing: id("th1"),
        values: obj(json!({"setpoint": 20})),
        timeout: None,
    });
    let mut mode = f.call(Request::Set {
        thing: id("th1"),
        values: obj(json!({"mode": "heat"})),
        timeout: None,
    });
    let mut second = f.call(Request::Set {
        thing: id("th1"),
        values: obj(json!({"setpoint": 21})),
        timeout: None,
    });
    assert_eq!(first.try_recv().unwrap().unwrap_err().uri, uris::CANCELED);
    f.report("th1", json!({"setpoint": 21, "mode": "heat"}), 11);
    assert!(second.try_recv().unwrap().is_ok());
    assert!(mode.try_recv().unwrap().is_ok());
    assert_eq!(f.counted(true), [3, 2, 0, 0, 0, 1]);
}

#[test]
fn offline_things_refuse_actions_and_keep_desired_values_for_later() {
    let mut f = fixture(Provisioning::Explicit, None);
    f.provision("r1", "relay");
    let err = f
        .answer(Request::Action {
            thing: id("r1"),
            action: "toggle".into(),
            input: Json::Null,
            timeout: None,
        })
        .unwrap_err();
    assert_eq!(err.uri, errors::THING_OFFLINE);
    let err = f
        .answer(Request::Set {
            thing: id("r1"),
            values: obj(json!({"on": true})),
            timeout: None,
        })
        .unwrap_err();
    assert_eq!(err.uri, errors::THING_OFFLINE);
    assert!(f.commands.try_recv().is_err());
    // Coming online sends the pending desired value.
    f.event(DeviceEvent::Online { thing: id("r1") });
    match f.commands.try_recv().unwrap() {
        DeviceCommand::SetDesired { values, .. } => assert_eq!(values["on"], json!(true)),
        other => panic!("{other:?}"),
    }
    // Its gateway going away takes it offline.
    f.core.detach(GW);
    let topics = f.topics();
    assert!(topics.iter().any(|(t, _)| t == "brume.things.on_offline"));
}

#[test]
fn actions_resolve_with_the_checked_reply_fail_or_expire() {
    let mut f = fixture(Provisioning::Explicit, None);
    f.provision("r1", "relay");
    f.event(DeviceEvent::Online { thing: id("r1") });
    let invoke = |f: &mut Fixture, name: &str| {
        f.call(Request::Action {
            thing: id("r1"),
            action: name.into(),
            input: Json::Null,
            timeout: None,
        })
    };
    let mut ok = invoke(&mut f, "toggle");
    let correlation = match f.commands.try_recv().unwrap() {
        DeviceCommand::InvokeAction {
            correlation,
            deadline_ms,
            ..
        } => {
            assert_eq!(deadline_ms, 1000 + 5000);
            correlation
        }
        other => panic!("{other:?}"),
    };
    f.event(DeviceEvent::ActionReply {
        thing: id("r1"),
        correlation,
        outcome: Ok(json!(true)),
    });
    assert_eq!(ok.try_recv().unwrap().unwrap(), json!(true));

    let mut bad = invoke(&mut f, "on");
    let DeviceCommand::InvokeAction { correlation, .. } = f.commands.try_recv().unwrap() else {
        panic!()
    };
    f.event(DeviceEvent::ActionReply {
        thing: id("r1"),
        correlation,
        outcome: Ok(json!("yes")),
    });
    let err = bad.try_recv().unwrap().unwrap_err();
    assert_eq!(err.uri, errors::ACTION_FAILED);
    assert!(err.message.contains("output"), "{err}");

    let mut slow = invoke(&mut f, "off");
    f.core.expire(f.now + Duration::from_millis(5000), 7000);
    assert_eq!(slow.try_recv().unwrap().unwrap_err().uri, uris::TIMEOUT);
    let statuses: Vec<ActionStatus> = f
        .core
        .take_outbox()
        .store
        .into_iter()
        .filter_map(|op| match op {
            StoreOp::UpdateAction { status, .. } => Some(status),
            _ => None,
        })
        .collect();
    use ActionStatus::*;
    assert_eq!(statuses, [Sent, Done, Sent, Failed, Sent, Expired]);

    let err = f
        .answer(Request::Action {
            thing: id("r1"),
            action: "explode".into(),
            input: Json::Null,
            timeout: None,
        })
        .unwrap_err();
    assert_eq!(err.uri, errors::NO_SUCH_ACTION);
    let err = f
        .answer(Request::Action {
            thing: id("r1"),
            action: "toggle".into(),
            input: json!(5),
            timeout: None,
        })
        .unwrap_err();
    assert_eq!(err.uri, uris::INVALID_ARGUMENT);
    assert_eq!(f.counted(false), [5, 1, 2, 1, 1, 0]);
    assert_eq!(f.counted(true), [0; 6]);
}

#[test]
fn explicit_provisioning_drops_unknown_devices_and_auto_provisions_them() {
    let mut f = fixture(Provisioning::Explicit, None);
    f.report("stranger", json!({"temperature": 1}), 1);
    assert!(f.core.is_empty());
    assert_eq!(ThingsStats::get(&f.core.stats.unknown_devices), 1);

    let mut f = fixture(Provisioning::Auto, Some("temperature_sensor"));
    f.event(DeviceEvent::Hello {
        thing: id("r9"),
        type_hint: Some("relay".into()),
        info: obj(json!({"firmware": "2.1"})),
    });
    f.report("s9", json!({"temperature": 1}), 1);
    f.event(DeviceEvent::Hello {
        thing: id("x9"),
        type_hint: Some("no_such_type".into()),
        info: Map::new(),
    });
    let list = f
        .answer(Request::List {
            type_id: None,
            online: Some(true),
        })
        .unwrap();
    let things: Vec<(&str, &str)> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t["thing"].as_str().unwrap(), t["type"].as_str().unwrap()))
        .collect();
    assert_eq!(
        things,
        [
            ("r9", "relay"),
            ("s9", "temperature_sensor"),
            ("x9", "temperature_sensor")
        ]
    );
    let r9 = f
        .answer(Request::Get {
            thing: id("r9"),
            property: None,
        })
        .unwrap();
    assert_eq!(r9["info"]["firmware"], json!("2.1"));

    let mut f = fixture(Provisioning::Auto, None);
    f.report("s9", json!({"temperature": 1}), 1);
    assert!(f.core.is_empty(), "no hint and no auto_type: refused");
}

#[test]
fn a_device_present_before_it_is_provisioned_is_online_once_provisioned() {
    let mut f = fixture(Provisioning::Explicit, None);
    f.event(DeviceEvent::Hello {
        thing: id("r1"),
        type_hint: Some("relay".into()),
        info: obj(json!({"firmware": "3.0"})),
    });
    f.report("r1", json!({"on": true}), 1);
    // A device that came and went before it was provisioned is not taken for present.
    f.report("r2", json!({"on": true}), 1);
    f.event(DeviceEvent::Offline { thing: id("r2") });
    assert!(f.core.is_empty());
    assert!(
        f.topics().is_empty(),
        "nothing is published of unknown devices"
    );

    let p = f
        .answer(Request::Provision {
            thing: id("r1"),
            type_id: "relay".into(),
            info: Map::new(),
        })
        .unwrap();
    assert_eq!(p["thing"]["online"], json!(true));
    assert_eq!(p["thing"]["info"]["firmware"], json!("3.0"));
    let topics: Vec<String> = f.topics().into_iter().map(|(t, _)| t).collect();
    assert_eq!(
        topics,
        ["brume.things.on_provision", "brume.things.on_online"]
    );
    // Its commands go to the gateway it is on.
    let mut rx = f.call(Request::Action {
        thing: id("r1"),
        action: "toggle".into(),
        input: Json::Null,
        timeout: None,
    });
    assert!(matches!(
        f.commands.try_recv(),
        Ok(DeviceCommand::InvokeAction { .. })
    ));
    assert!(rx.try_recv().is_err(), "waiting for the device");

    f.provision("r2", "relay");
    let r2 = f
        .answer(Request::Get {
            thing: id("r2"),
            property: None,
        })
        .unwrap();
    assert_eq!(r2["online"], json!(false));

    // A detached gateway's devices are forgotten too.
    f.report("r3", json!({"on": false}), 1);
    f.core.detach(GW);
    f.provision("r3", "relay");
    assert!(
        f.topics()
            .iter()
            .all(|(t, _)| t != "brume.things.on_online")
    );
}

#[test]
fn unprovisioned_devices_are_remembered_within_bounds() {
    let mut u = Unprovisioned::default();
    for n in 0..Unprovisioned::MAX + 10 {
        u.heard(&id(&format!("d{n}")), GW, &Map::new());
    }
    assert_eq!(u.devices.len(), Unprovisioned::MAX);
    assert!(u.take(&id(&format!("d{}", Unprovisioned::MAX))).is_none());

    let many: Map<String, Json> = (0..Unprovisioned::MAX_INFO + 10)
        .map(|n| (format!("k{n}"), json!(n)))
        .collect();
    u.heard(&id("d0"), 8, &many);
    u.heard(&id("d0"), 8, &obj(json!({"k0": "again"})));
    let d0 = u.take(&id("d0")).unwrap();
    assert_eq!((d0.gateway, d0.info.len()), (8, Unprovisioned::MAX_INFO));
    assert_eq!(d0.info["k0"], json!("again"), "known keys are updated");

    // Gone only from the gateway it is on.
    u.heard(&id("d1"), 8, &Map::new());
    u.gone(&id("d1"), GW);
    assert!(u.devices.contains_key(&id("d1")));
    u.gone(&id("d1"), 8);
    assert!(!u.devices.contains_key(&id("d1")));
    u.detached(GW);
    assert!(u.devices.is_empty(), "d1 gone, d0 taken, the rest on GW");
}

#[test]
fn provision_delete_info_types_and_describe() {
    let mut f = fixture(Provisioning::Explicit, None);
    let p = f
        .answer(Request::Provision {
            thing: id("a1"),
            type_id: "alarm".into(),
            info: obj(json!({"location": "door"})),
        })
        .unwrap();
    let secret = p["secret"].as_str().unwrap().to_owned();
    use gateways::{CredentialCheck, DeviceCredentials as _};
    assert_eq!(
        f.core.credentials.check(&id("a1"), &secret),
        CredentialCheck::Valid
    );
    assert_eq!(
        f.core.credentials.check(&id("a1"), "guess"),
        CredentialCheck::Invalid
    );
    let again = f.answer(Request::Provision {
        thing: id("a1"),
        type_id: "alarm".into(),
        info: Map::new(),
    });
    assert_eq!(again.unwrap_err().uri, uris::INVALID_ARGUMENT);
    let nt = f.answer(Request::Provision {
        thing: id("a2"),
        type_id: "toaster".into(),
        info: Map::new(),
    });
    assert_eq!(nt.unwrap_err().uri, errors::NO_SUCH_TYPE);

    let info = f
        .answer(Request::UpdateInfo {
            thing: id("a1"),
            values: obj(json!({"location": "garage"})),
        })
        .unwrap();
    assert_eq!(info["info"]["location"], json!("garage"));
    let ro = f
        .answer(Request::UpdateInfo {
            thing: id("a1"),
            values: obj(json!({"firmware": "x"})),
        })
        .unwrap_err();
    assert!(ro.message.contains("read-only"), "{ro}");

    let td = f.answer(Request::Describe { thing: id("a1") }).unwrap();
    assert_eq!(td["id"], json!("urn:brume:hub-1:a1"));
    assert!(td["actions"]["arm"].is_object());
    let types = f.answer(Request::TypesList).unwrap();
    assert_eq!(
        types.as_array().unwrap().len(),
        device_models::TypeCatalog::builtin().unwrap().len()
    );
    let relay = f
        .answer(Request::TypesGet {
            type_id: "relay".into(),
        })
        .unwrap();
    assert!(relay["actions"]["toggle"].is_object());

    f.core.take_outbox();
    f.answer(Request::Delete { thing: id("a1") }).unwrap();
    let out = f.core.take_outbox();
    assert_eq!(
        f.core.credentials.check(&id("a1"), &secret),
        CredentialCheck::UnknownThing
    );
    assert_eq!(out.publications[0].topic, "brume.things.on_delete");
    assert!(matches!(out.store[0], StoreOp::DeleteThing { .. }));
    let gone = f.answer(Request::Get {
        thing: id("a1"),
        property: None,
    });
    assert_eq!(gone.unwrap_err().uri, errors::NO_SUCH_THING);
}

#[test]
fn events_are_checked_and_published() {
    let mut f = fixture(Provisioning::Explicit, None);
    f.provision("a1", "alarm");
    f.core.take_outbox();
    f.event(DeviceEvent::Event {
        thing: id("a1"),
        name: "triggered".into(),
        payload: json!({"zone": "hall"}),
        at_ms: 5,
    });
    f.event(DeviceEvent::Event {
        thing: id("a1"),
        name: "triggered".into(),
        payload: json!({"cause": "fire"}),
        at_ms: 6,
    });
    let topics = f.topics();
    let events: Vec<&(String, Payload)> = topics
        .iter()
        .filter(|(t, _)| t == "brume.thing.a1.event.triggered")
        .collect();
    assert_eq!(
        events.len(),
        1,
        "the event without its required zone is dropped"
    );
    assert_eq!(ThingsStats::get(&f.core.stats.invalid_messages), 1);
}

#[test]
fn call_timeout_only_shortens() {
    let own = Duration::from_millis(5000);
    assert_eq!(effective_timeout(own, None), 5000);
    assert_eq!(
        effective_timeout(own, Some(Duration::from_millis(200))),
        200
    );
    assert_eq!(
        effective_timeout(own, Some(Duration::from_millis(9000))),
        5000
    );
    assert_eq!(effective_timeout(own, Some(Duration::ZERO)), 5000);
}

#[test]
fn things_of_an_unknown_type_in_the_database_stop_the_start() {
    let settings = CoreSettings {
        provisioning: Provisioning::Explicit,
        auto_type: None,
        set_timeout: Duration::from_secs(1),
        td: TdContext::new("h", ""),
    };
    let loaded = Loaded {
        things: vec![crate::things::store::LoadedThing {
            id: id("x"),
            type_id: "toaster".into(),
            info: Map::new(),
            created_ms: 0,
            secret: None,
            reported: BTreeMap::new(),
            desired: BTreeMap::new(),
        }],
        ..Loaded::default()
    };
    let err = Core::new(
        settings,
        TypeCatalog::builtin().unwrap(),
        loaded,
        Arc::new(ThingsStats::default()),
        Arc::new(RegistryCredentials::new(false)),
    )
    .unwrap_err();
    assert!(err.to_string().contains("toaster"), "{err}");
}

#[test]
fn canceled_calls_are_forgotten_and_their_desired_values_kept() {
    let mut f = fixture(Provisioning::Explicit, None);
    f.provision("th1", "thermostat");
    f.report("th1", json!({"setpoint": 18}), 10);
    f.provision("r1", "relay");
    f.event(DeviceEvent::Online { thing: id("r1") });
    let set = f.call(Request::Set {
        thing: id("th1"),
        values: obj(json!({"setpoint": 22})),
        timeout: None,
    });
    let action = f.call(Request::Action {
        thing: id("r1"),
        action: "toggle".into(),
        input: Json::Null,
        timeout: None,
    });
    let kept = f.call(Request::Action {
        thing: id("r1"),
        action: "on".into(),
        input: Json::Null,
        timeout: None,
    });
    assert_eq!((f.core.sets.len(), f.core.actions.len()), (1, 2));
    // The API drops the replies of the calls whose caller canceled, then says so.
    drop(set);
    drop(action);
    assert_eq!(f.answer(Request::Canceled).unwrap(), Json::Null);
    assert!(f.core.sets.is_empty(), "the set no longer waits");
    assert_eq!(f.core.actions.len(), 1, "only the call still wanted waits");
    assert!(
        f.core
            .actions
            .values()
            .all(|w| w.action == "on" && !w.reply.is_closed())
    );
    drop(kept);
    // The desired value is still pending for the device.
    let got = f
        .answer(Request::Get {
            thing: id("th1"),
            property: Some("setpoint".into()),
        })
        .unwrap();
    assert_eq!(got["desired"]["value"], json!(22));
    assert_eq!(f.counted(true), [1, 0, 0, 0, 0, 1]);
    assert_eq!(f.counted(false), [2, 0, 0, 0, 0, 1]);
}

/// A gateway's view of the registry, as [`Core::follow`] feeds it.
#[derive(Default)]
struct View(std::sync::Mutex<Vec<String>>);

impl gateways::DirectoryListener for View {
    fn added(&self, thing: &ThingId, ty: &Arc<ThingType>) {
        self.0.lock().unwrap().push(format!("+{thing}:{}", ty.id));
    }
    fn removed(&self, thing: &ThingId) {
        self.0.lock().unwrap().push(format!("-{thing}"));
    }
}

#[test]
fn a_follower_gets_every_thing_then_each_change_in_order() {
    let mut f = fixture(Provisioning::Auto, Some("temperature_sensor"));
    f.provision("a1", "temperature_sensor");
    let view = Arc::new(View::default());
    f.core.follow(view.clone());
    assert_eq!(*view.0.lock().unwrap(), ["+a1:temperature_sensor"]);
    f.provision("b2", "temperature_sensor");
    f.event(DeviceEvent::Reported {
        thing: id("auto-3"),
        values: obj(json!({ "temperature": 20.5 })),
        at_ms: 1,
    });
    f.answer(Request::Delete { thing: id("a1") }).unwrap();
    assert_eq!(
        *view.0.lock().unwrap(),
        [
            "+a1:temperature_sensor",
            "+b2:temperature_sensor",
            "+auto-3:temperature_sensor",
            "-a1"
        ]
    );
}

#[test]
fn log_lines_about_a_thing_are_limited_and_say_what_went_unlogged() {
    let mut log = ThingLog::default();
    let t0 = Instant::now();
    assert_eq!(log.should_log(&id("a"), t0), Some(0));
    for i in 1..300 {
        assert_eq!(
            log.should_log(&id("a"), t0 + Duration::from_millis(i)),
            None
        );
    }
    assert_eq!(log.should_log(&id("b"), t0), Some(0), "per thing");
    assert_eq!(
        log.should_log(&id("a"), t0 + ThingLog::EVERY),
        Some(299),
        "the next line says how many were not logged"
    );
    assert_eq!(log.should_log(&id("a"), t0 + ThingLog::EVERY), None);
}

/// The hub checks what devices say against their type, in one place, and tells each device
/// through its member of the barrier covering the batch its message came in: `Rejected` for a
/// covered message with a refused report, info or event (any of its events), success for the
/// others of the batch, whose writes are queued before the barrier. A refused message the
/// barrier does not cover (QoS 0) leaves the others alone.
#[test]
fn a_refused_message_is_told_through_its_member_of_the_batch_s_barrier() {
    let mut f = fixture(Provisioning::Explicit, None);
    f.provision("r1", "relay");
    f.provision("r2", "relay");
    let report = |thing: &str, on: Json| DeviceEvent::Reported {
        thing: id(thing),
        values: obj(json!({ "on": on })),
        at_ms: 1,
    };
    let events = vec![
        report("r1", json!("yes")), // covered 0: refused
        report("r2", json!(true)),  // covered 1
        report("r1", json!(7)),     // not covered (QoS 0): refused
        DeviceEvent::Info {
            thing: id("r1"),
            info: obj(json!({ "on": true })),
        }, // covered 2: refused
        DeviceEvent::Event {
            thing: id("r1"),
            name: "no_such_event".into(),
            payload: Json::Null,
            at_ms: 1,
        }, // covered 3: refused
        report("r1", json!(true)),  // covered 4
        report("r2", json!(false)), // covered 5, with the next
        DeviceEvent::Info {
            thing: id("r2"),
            info: obj(json!({ "on": 1 })),
        }, // covered 5: refused
    ];
    let (commit, mut group) = device_models::gateway::group();
    let mut waits: Vec<_> = (0..6).map(|_| group.member()).collect();
    let batch = device_models::EventBatch {
        events,
        covered: Some((commit, vec![0..1, 1..2, 3..4, 4..5, 5..6, 6..8])),
    };
    f.core
        .handle_event(GW, DeviceEvent::Batch(Box::new(batch)), f.now, 2000);
    let ops = std::mem::take(&mut f.core.out.store);
    let written: Vec<(String, Json)> = ops
        .iter()
        .filter_map(|op| match op {
            StoreOp::PutReported { thing, values } => values
                .iter()
                .find(|(k, _)| k == "on")
                .map(|(_, v)| (thing.to_string(), v.value.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(
        written,
        [
            ("r2".to_owned(), json!(true)),
            ("r1".to_owned(), json!(true)),
            ("r2".to_owned(), json!(false)),
        ],
        "what fits is written, before the barrier"
    );
    assert!(matches!(ops.last(), Some(StoreOp::Barrier(_))));
    assert!(waits.iter_mut().all(|w| w.try_answer().is_none()));
    // The writer answers the barrier once the batch is committed.
    for op in ops {
        if let StoreOp::Barrier(c) = op {
            c.answer(Ok(()));
        }
    }
    let rejected = Err(device_models::CommitError::Rejected);
    let answers: Vec<_> = waits.iter_mut().map(|w| w.try_answer()).collect();
    assert_eq!(
        answers,
        [
            Some(rejected),
            Some(Ok(())),
            Some(rejected),
            Some(rejected),
            Some(Ok(())),
            Some(rejected),
        ]
    );
    assert_eq!(f.core.stats.invalid_reports.load(Ordering::Relaxed), 2);
}
