use device_models::TypeCatalog;
use serde_json::json;

use super::*;

fn plug() -> ThingType {
    let catalog = TypeCatalog::builtin().unwrap();
    (**catalog.get("tasmota_plug").unwrap()).clone()
}

fn with_binding(toml_text: &str) -> ThingType {
    let mut ty = plug();
    ty.bindings
        .insert("mqtt".into(), toml::from_str(toml_text).unwrap());
    ty
}

#[test]
fn the_shipped_tasmota_binding_decodes_and_encodes() {
    let b = MqttBinding::from_type(&plug()).unwrap().unwrap();
    assert_eq!(b.type_id(), "tasmota_plug");

    let d = b
        .decode(
            "tele/kitchen/SENSOR",
            br#"{"AM2301":{"Temperature":21.5,"Humidity":40},"TempUnit":"C"}"#,
        )
        .unwrap();
    assert_eq!(
        Value::Object(d.reported),
        json!({"temperature": 21.5, "humidity": 40})
    );
    // Missing fields are skipped, not errors.
    let d = b.decode("tele/kitchen/SENSOR", br#"{"Time":"x"}"#).unwrap();
    assert!(d.reported.is_empty());

    let d = b.decode("tele/kitchen/LWT", b"Online").unwrap();
    assert_eq!(d.status, Some(true));
    assert_eq!(
        b.decode("tele/kitchen/LWT", b"Offline").unwrap().status,
        Some(false)
    );
    assert!(b.decode("tele/kitchen/LWT", b"Dunno").is_err());

    let d = b.decode("stat/kitchen/POWER", b"ON").unwrap();
    assert_eq!(d.reported["on"], true);
    assert!(d.is_reply_topic);
    assert_eq!(d.reply, Some(json!(true)));
    assert!(b.decode("stat/kitchen/POWER", b"MAYBE").is_err());

    let d = b
        .decode("tele/kitchen/STATE", br#"{"POWER":"OFF","Wifi":{}}"#)
        .unwrap();
    assert_eq!(d.reported["on"], false);
    let d = b
        .decode(
            "stat/kitchen/STATUS2",
            br#"{"StatusFWR":{"Version":"13.1.0"}}"#,
        )
        .unwrap();
    assert_eq!(d.info["firmware"], "13.1.0");
    assert!(b.decode("tele/kitchen/SENSOR", b"{not json").is_err());

    assert!(b.is_device_topic("tele/kitchen/SENSOR"));
    assert!(!b.is_device_topic("cmnd/kitchen/POWER"));
    assert!(b.action_replies_on("toggle", "stat/kitchen/POWER"));
    assert!(!b.action_replies_on("toggle", "stat/kitchen/RESULT"));

    let values = json!({"on": true, "location": "x"});
    let (out, rest) = b.encode_desired("plug-1", "kitchen", values.as_object().unwrap());
    assert_eq!(
        out,
        [Outgoing {
            topic: "cmnd/kitchen/POWER".into(),
            payload: Bytes::from_static(b"ON"),
            retain: false
        }]
    );
    assert_eq!(Value::Object(rest), json!({"location": "x"}));

    let call = b
        .encode_action("plug-1", "kitchen", "toggle", &Value::Null, "c1")
        .unwrap();
    assert_eq!(call.topic, "cmnd/kitchen/POWER");
    assert_eq!(&call.payload[..], b"TOGGLE");
    assert!(
        b.encode_action("plug-1", "kitchen", "nope", &Value::Null, "c")
            .is_none()
    );

    let templates: Vec<String> = b.templates().map(ToString::to_string).collect();
    assert!(templates.contains(&"tele/{name}/SENSOR".to_owned()));
    assert!(templates.contains(&"cmnd/{name}/POWER".to_owned()));
}

#[test]
fn payload_templates() {
    let b = MqttBinding::from_type(&with_binding(
        r#"
        [actions.on]
        topic = "dev/{id}/cmd"
        payload = '{"op":"on","id":"{correlation}","arg":{input},"who":"{name}"}'
        [desired.on]
        topic = "dev/{id}/set"
        payload = "power={value}"
        retain = true
        "#,
    ))
    .unwrap()
    .unwrap();
    let call = b
        .encode_action("p1", "n1", "on", &json!({"a": 1}), "c9")
        .unwrap();
    assert_eq!(call.topic, "dev/p1/cmd");
    assert_eq!(
        std::str::from_utf8(&call.payload).unwrap(),
        r#"{"op":"on","id":"c9","arg":{"a":1},"who":"n1"}"#
    );
    let (out, rest) = b.encode_desired("p1", "n1", json!({"on": false}).as_object().unwrap());
    assert!(rest.is_empty());
    assert_eq!(&out[0].payload[..], b"power=false");
    assert!(out[0].retain);
    assert_eq!(
        render("{a}{b}{", |k| (k == "a").then(|| "x".into())),
        "x{b}{"
    );
}

#[test]
fn invalid_bindings_name_the_key() {
    let cases = [
        (r#"bogus = 1"#, "unknown field"),
        (
            r#"reports = [{ topic = "tele/SENSOR", properties = { on = "" } }]"#,
            "reports[0].topic",
        ),
        (
            r#"reports = [{ topic = "t/{name}", properties = { nope = "" } }]"#,
            "reports[0].properties.nope",
        ),
        (
            r#"reports = [{ topic = "t/{name}", properties = { firmware = "" } }]"#,
            "info property",
        ),
        (
            r#"reports = [{ topic = "t/{name}", properties = { on = "POWER" } }]"#,
            "JSON pointer",
        ),
        (
            r#"reports = [{ topic = "t/{name}", format = "text", properties = { on = "/x" } }]"#,
            "text payload",
        ),
        (
            r#"desired.temperature = { topic = "c/{name}" }"#,
            "writable",
        ),
        (r#"actions.fly = { topic = "c/{name}" }"#, "not an action"),
        (
            r#"actions.on = { topic = "c/{name}", payload = "{oops}" }"#,
            "unknown placeholder",
        ),
        (r#"status = { topic = "things/{id}/x" }"#, "things/"),
    ];
    for (text, needle) in cases {
        let err = MqttBinding::from_type(&with_binding(text))
            .err()
            .unwrap_or_else(|| panic!("{text} should fail"));
        let message = err.to_string();
        assert!(message.contains(needle), "{text}: {message}");
        assert!(message.contains("tasmota_plug"), "{message}");
    }
}

#[test]
fn a_type_without_mqtt_binding_has_none() {
    let catalog = TypeCatalog::builtin().unwrap();
    let relay = catalog.get("relay").unwrap();
    assert_eq!(MqttBinding::from_type(relay).unwrap(), None);
}
