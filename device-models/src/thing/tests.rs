use serde_json::json;

use super::*;

fn map(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        _ => panic!("test values are objects"),
    }
}

#[test]
fn thing_id_rule() {
    let good = [
        "th-1",
        "a",
        "A_b-9",
        "0",
        &"x".repeat(64),
        "Shelly-Plug-S_C8C9A3",
    ];
    for id in good {
        assert_eq!(ThingId::new(id).map(|t| t.to_string()), Ok(id.to_owned()));
    }
    let cases = [
        ("", ThingIdError::Empty),
        (
            "a.b",
            ThingIdError::InvalidChar {
                id: "a.b".into(),
                found: '.',
                position: 1,
            },
        ),
        (
            "a/b",
            ThingIdError::InvalidChar {
                id: "a/b".into(),
                found: '/',
                position: 1,
            },
        ),
        (
            "+",
            ThingIdError::InvalidChar {
                id: "+".into(),
                found: '+',
                position: 0,
            },
        ),
        (
            "#",
            ThingIdError::InvalidChar {
                id: "#".into(),
                found: '#',
                position: 0,
            },
        ),
        (
            "a b",
            ThingIdError::InvalidChar {
                id: "a b".into(),
                found: ' ',
                position: 1,
            },
        ),
        (
            "thé",
            ThingIdError::InvalidChar {
                id: "thé".into(),
                found: 'é',
                position: 2,
            },
        ),
        (
            "a\0",
            ThingIdError::InvalidChar {
                id: "a\0".into(),
                found: '\0',
                position: 1,
            },
        ),
        (
            &"x".repeat(65),
            ThingIdError::TooLong {
                start: "x".repeat(64),
            },
        ),
        (
            &format!("{}.", "x".repeat(70)),
            ThingIdError::TooLong {
                start: "x".repeat(64),
            },
        ),
    ];
    for (id, want) in cases {
        assert_eq!(ThingId::new(id), Err(want), "{id:?}");
    }
    assert_eq!(
        ThingId::new("a.b").map_err(|e| e.to_string()),
        Err("thing id \"a.b\" has '.' at position 1: use A-Z, a-z, 0-9, _ and -".to_owned())
    );
}

#[test]
fn thing_id_serde_validates() {
    let id: ThingId = serde_json::from_value(json!("th-1")).expect("valid");
    assert_eq!(
        serde_json::to_value(&id).expect("serializes"),
        json!("th-1")
    );
    assert!(serde_json::from_value::<ThingId>(json!("th.1")).is_err());
    assert!(
        serde_json::from_value::<Thing>(json!({"id": "a b", "type_id": "relay", "created_ms": 0}))
            .is_err()
    );
}

#[test]
fn report_returns_only_changes() {
    let mut state = ThingState::default();
    let first = state.apply_report(&map(json!({"temperature": 21, "mode": "heat"})), 1000);
    assert_eq!(
        first.changed.keys().collect::<Vec<_>>(),
        ["mode", "temperature"]
    );
    assert!(first.settled.is_empty());

    let same = state.apply_report(&map(json!({"temperature": 21.0, "mode": "heat"})), 2000);
    assert!(
        same.is_empty(),
        "same values, spelled differently, are no change"
    );
    assert_eq!(
        state.reported["temperature"].at_ms, 2000,
        "timestamp refreshed"
    );

    let one = state.apply_report(&map(json!({"temperature": 21.5, "mode": "heat"})), 3000);
    assert_eq!(
        one.changed,
        BTreeMap::from([(
            "temperature".to_owned(),
            Stamped {
                value: json!(21.5),
                at_ms: 3000
            }
        )])
    );

    let stale = state.apply_report(&map(json!({"temperature": 18})), 2500);
    assert!(stale.is_empty(), "older than what is stored");
    assert_eq!(state.reported["temperature"].value, json!(21.5));
    assert_eq!(
        state.reported_values(),
        map(json!({"temperature": 21.5, "mode": "heat"}))
    );
}

/// `merge_report` tells its caller, in one pass, every property it stored or refreshed (the rows
/// to write) and which of them changed (the event); a stale value is neither.
#[test]
fn merge_report_calls_back_for_stored_and_refreshed_values() {
    let mut state = ThingState::default();
    state.apply_report(&map(json!({"temperature": 21, "mode": "heat"})), 1000);
    state.set_desired(&map(json!({"mode": "off"})), 1100);

    let mut seen = Vec::new();
    let settled = state.merge_report(
        map(json!({"temperature": 21.0, "mode": "off", "fan": 2})),
        2000,
        |name, stored, changed| seen.push((name.to_owned(), stored.clone(), changed)),
    );
    let stamped = |v| Stamped {
        value: v,
        at_ms: 2000,
    };
    assert_eq!(
        seen,
        [
            ("fan".to_owned(), stamped(json!(2)), true),
            ("mode".to_owned(), stamped(json!("off")), true),
            ("temperature".to_owned(), stamped(json!(21)), false),
        ],
        "an equal value keeps its stored spelling and only gets the new time"
    );
    assert_eq!(settled, ["mode"]);
    assert!(state.desired.is_empty());

    let mut stale = Vec::new();
    let settled = state.merge_report(map(json!({"fan": 3})), 1500, |name, _, _| {
        stale.push(name.to_owned())
    });
    assert!(
        stale.is_empty() && settled.is_empty(),
        "older than what is stored"
    );
    assert_eq!(state.reported["fan"].value, json!(2));
}

#[test]
fn desired_values_clear_once_reported() {
    let mut state = ThingState::default();
    state.apply_report(&map(json!({"setpoint": 20, "mode": "off"})), 1000);

    let pending = state.set_desired(&map(json!({"setpoint": 22, "mode": "off"})), 1100);
    assert_eq!(pending, ["setpoint"], "mode is already off");
    assert_eq!(state.pending_desired(), map(json!({"setpoint": 22})));

    let not_yet = state.apply_report(&map(json!({"setpoint": 20})), 1200);
    assert!(not_yet.is_empty());
    assert!(state.desired.contains_key("setpoint"));

    let done = state.apply_report(&map(json!({"setpoint": 22.0})), 1300);
    assert_eq!(done.settled, ["setpoint"]);
    assert!(done.changed.contains_key("setpoint"));
    assert!(state.desired.is_empty());

    state.set_desired(&map(json!({"mode": "heat"})), 1400);
    let repeat = state.set_desired(&map(json!({"mode": "off"})), 1500);
    assert!(repeat.is_empty());
    assert!(
        state.desired.is_empty(),
        "going back to the reported value drops the old wish"
    );
}

#[test]
fn state_serializes_with_timestamps() {
    let mut state = ThingState::default();
    state.apply_report(&map(json!({"on": true})), 5);
    assert_eq!(
        serde_json::to_value(&state).expect("serializes"),
        json!({"reported": {"on": {"value": true, "at_ms": 5}}, "desired": {}})
    );
}

#[test]
fn info_merge_returns_only_changes() {
    let mut thing = Thing::new(ThingId::new("th-1").expect("valid"), "thermostat", 0);
    let first = thing.apply_info(&map(json!({"firmware": "1.0", "location": "hall"})));
    assert_eq!(first.len(), 2);
    let second = thing.apply_info(&map(json!({"firmware": "1.0", "location": "kitchen"})));
    assert_eq!(second, map(json!({"location": "kitchen"})));
    assert_eq!(
        thing.info,
        map(json!({"firmware": "1.0", "location": "kitchen"}))
    );
}
