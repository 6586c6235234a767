use serde_json::json;

use super::*;
use crate::catalog::TypeCatalog;

fn builtin(id: &str) -> ThingType {
    let catalog = TypeCatalog::builtin().expect("valid");
    (**catalog.get(id).expect("built-in")).clone()
}

fn map(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        _ => panic!("test values are objects"),
    }
}

fn id(s: &str) -> ThingId {
    ThingId::new(s).expect("valid id")
}

#[derive(Clone, Copy, Debug)]
enum Check {
    Reported,
    Desired,
    InfoReported,
    InfoUpdate,
}

/// (which check, values, expected error text or None when accepted), on thermostat "th-1".
#[test]
fn property_checks() {
    let ty = builtin("thermostat");
    let thing = id("th-1");
    let cases = [
        (
            Check::Reported,
            json!({"temperature": 21.5, "setpoint": 20, "mode": "heat"}),
            None,
        ),
        (Check::Reported, json!({}), None),
        (
            Check::Reported,
            json!({"temperature": "hot"}),
            Some(r#"thing "th-1": property "temperature": expected number, got "hot""#),
        ),
        (
            Check::Reported,
            json!({"setpoint": 40}),
            Some(r#"thing "th-1": property "setpoint": 40 is above maximum 35"#),
        ),
        (
            Check::Reported,
            json!({"humidity": 40}),
            Some(r#"thing "th-1": property "humidity": is not defined by type "thermostat""#),
        ),
        (
            Check::Reported,
            json!({"firmware": "1.2"}),
            Some(r#"thing "th-1": property "firmware": is an info property, not state"#),
        ),
        (
            Check::Desired,
            json!({"setpoint": 22.5, "mode": "auto"}),
            None,
        ),
        (
            Check::Desired,
            json!({"setpoint": 40}),
            Some(r#"thing "th-1": property "setpoint": 40 is above maximum 35"#),
        ),
        (
            Check::Desired,
            json!({"setpoint": 4}),
            Some(r#"thing "th-1": property "setpoint": 4 is below minimum 5"#),
        ),
        (
            Check::Desired,
            json!({"mode": "warm"}),
            Some(
                r#"thing "th-1": property "mode": "warm" is not one of ["off", "heat", "cool", "auto"]"#,
            ),
        ),
        (
            Check::Desired,
            json!({"temperature": 20}),
            Some(r#"thing "th-1": property "temperature": is read-only"#),
        ),
        (
            Check::Desired,
            json!({"fan": "on"}),
            Some(r#"thing "th-1": property "fan": is not defined by type "thermostat""#),
        ),
        (
            Check::Desired,
            json!({"location": "hall"}),
            Some(r#"thing "th-1": property "location": is an info property, not state"#),
        ),
        (
            Check::InfoReported,
            json!({"firmware": "1.2.3", "location": "hall"}),
            None,
        ),
        (
            Check::InfoReported,
            json!({"firmware": 12}),
            Some(r#"thing "th-1": property "firmware": expected string, got 12"#),
        ),
        (
            Check::InfoReported,
            json!({"setpoint": 20}),
            Some(r#"thing "th-1": property "setpoint": is a state property, not info"#),
        ),
        (Check::InfoUpdate, json!({"location": "kitchen"}), None),
        (
            Check::InfoUpdate,
            json!({"firmware": "9.9"}),
            Some(r#"thing "th-1": property "firmware": is read-only"#),
        ),
        (
            Check::InfoUpdate,
            json!({"location": "x".repeat(129)}),
            Some(
                r#"thing "th-1": property "location": is 129 characters long, longer than max_length 128"#,
            ),
        ),
        (
            Check::InfoUpdate,
            json!({"mode": "off"}),
            Some(r#"thing "th-1": property "mode": is a state property, not info"#),
        ),
        (
            Check::InfoUpdate,
            json!({"owner": "me"}),
            Some(r#"thing "th-1": property "owner": is not defined by type "thermostat""#),
        ),
    ];
    for (check, values, want) in cases {
        let values = map(values);
        let result = match check {
            Check::Reported => ty.check_reported(&thing, &values),
            Check::Desired => ty.check_desired(&thing, &values),
            Check::InfoReported => ty.check_info_reported(&thing, &values),
            Check::InfoUpdate => ty.check_info_update(&thing, &values),
        };
        let got = result.err().map(|e| e.to_string());
        assert_eq!(got.as_deref(), want, "{check:?} {values:?}");
    }
}

#[test]
fn integer_versus_number() {
    let ty = builtin("temperature_sensor");
    let thing = id("ts-1");
    assert!(
        ty.check_reported(&thing, &map(json!({"battery": 80})))
            .is_ok()
    );
    assert!(
        ty.check_reported(&thing, &map(json!({"battery": 80.0})))
            .is_ok()
    );
    let error = ty
        .check_reported(&thing, &map(json!({"battery": 80.5})))
        .expect_err("not an integer");
    assert_eq!(
        error.to_string(),
        r#"thing "ts-1": property "battery": expected integer, got 80.5"#
    );
    assert_eq!(error.target, Target::Property("battery".into()));
    assert!(
        matches!(&error.rule, CheckRule::Value(e) if matches!(e.violation, crate::Violation::WrongType { .. }))
    );
}

/// (type, action, input, expected error text or None when accepted).
#[test]
fn action_input_checks() {
    let alarm = builtin("alarm");
    let relay = builtin("relay");
    let cases = [
        (&alarm, "arm", json!({"code": "1234"}), None),
        (&alarm, "arm", json!({}), None),
        (&alarm, "arm", json!(null), None),
        (
            &alarm,
            "arm",
            json!({"code": 1234}),
            Some(r#"thing "x-1": action "arm" input: code: expected string, got 1234"#),
        ),
        (
            &alarm,
            "arm",
            json!({"code": ""}),
            Some(
                r#"thing "x-1": action "arm" input: code: is 0 characters long, shorter than min_length 1"#,
            ),
        ),
        (
            &alarm,
            "arm",
            json!("1234"),
            Some(r#"thing "x-1": action "arm" input: expected object, got "1234""#),
        ),
        (&alarm, "disarm", json!({"code": "1"}), None),
        (
            &alarm,
            "reboot",
            json!(null),
            Some(r#"thing "x-1": action "reboot": is not defined by type "alarm""#),
        ),
        (&relay, "toggle", json!(null), None),
        (&relay, "toggle", json!({}), None),
        (
            &relay,
            "toggle",
            json!(true),
            Some(r#"thing "x-1": action "toggle" input: takes no value, got true"#),
        ),
    ];
    let thing = id("x-1");
    for (ty, action, input, want) in cases {
        let got = ty
            .check_action_input(&thing, action, &input)
            .err()
            .map(|e| e.to_string());
        assert_eq!(got.as_deref(), want, "{action} {input}");
    }
}

#[test]
fn action_output_and_event_payload_checks() {
    let relay = builtin("relay");
    let alarm = builtin("alarm");
    let thing = id("x-1");
    assert!(
        relay
            .check_action_output(&thing, "toggle", &json!(true))
            .is_ok()
    );
    assert_eq!(
        relay
            .check_action_output(&thing, "toggle", &json!("on"))
            .map_err(|e| e.to_string()),
        Err(r#"thing "x-1": action "toggle" output: expected boolean, got "on""#.to_owned())
    );
    assert!(
        alarm
            .check_event_payload(
                &thing,
                "triggered",
                &json!({"zone": "hall", "cause": "tamper"})
            )
            .is_ok()
    );
    assert_eq!(
        alarm
            .check_event_payload(&thing, "triggered", &json!({"cause": "tamper"}))
            .map_err(|e| e.to_string()),
        Err(r#"thing "x-1": event "triggered" payload: misses required field "zone""#.to_owned())
    );
    assert_eq!(
        alarm.check_event_payload(&thing, "triggered", &json!({"zone": "a", "cause": "smoke"})).map_err(|e| e.to_string()),
        Err(r#"thing "x-1": event "triggered" payload: cause: "smoke" is not one of ["intrusion", "tamper", "panic", "fire"]"#.to_owned())
    );
    assert_eq!(
        alarm
            .check_event_payload(&thing, "smoke", &json!(null))
            .map_err(|e| e.to_string()),
        Err(r#"thing "x-1": event "smoke": is not defined by type "alarm""#.to_owned())
    );
}
