//! Every built-in type's Thing Description validates against the official W3C TD 1.1 JSON Schema
//! (see `tests/data/README.md` for its origin), and the validator does reject broken TDs, so a TD
//! that breaks the schema fails this test.

// Fixtures and expectations: a failed `expect` is a failed test.
#![allow(clippy::expect_used)]

use device_models::{
    AffordanceSelector, ExtraForm, PropertyKind, TdContext, TdSecurity, Thing, ThingId, ThingType,
    TypeCatalog, thing_description,
};
use serde_json::{Map, Value, json};

fn validator() -> jsonschema::Validator {
    let schema: Value = serde_json::from_str(include_str!("data/td-json-schema-validation.json"))
        .expect("schema is JSON");
    jsonschema::options()
        .should_validate_formats(true)
        .build(&schema)
        .expect("schema compiles")
}

fn errors(validator: &jsonschema::Validator, td: &Value) -> Vec<String> {
    validator
        .iter_errors(td)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect()
}

fn types() -> Vec<ThingType> {
    let mut types: Vec<ThingType> = TypeCatalog::builtin()
        .expect("built-in types are valid")
        .list()
        .map(|t| (**t).clone())
        .collect();
    types.push(
        ThingType::from_toml(
            include_str!("data/types/weather_station.toml"),
            "weather_station.toml",
        )
        .expect("fixture is valid"),
    );
    types
}

fn thing(ty: &ThingType) -> Thing {
    let id = format!("{}-1", ty.id.replace('_', "-"));
    let mut thing = Thing::new(
        ThingId::new(id).expect("valid id"),
        ty.id.clone(),
        1_714_564_800_000,
    );
    thing.info.insert("location".into(), json!("lab"));
    thing
}

fn object(value: Value) -> Map<String, Value> {
    value.as_object().cloned().expect("an object")
}

fn contexts() -> Vec<TdContext> {
    let plain = TdContext::new("hub-1", "ws://127.0.0.1:8080/ws");
    let mut rich = TdContext::new("hub-1", "wss://hub.local:8443/ws");
    rich.realm = "home".into();
    rich.security = TdSecurity::Custom {
        definitions: object(json!({
            "basic_sc": { "scheme": "basic", "in": "header" },
            "bearer_sc": { "scheme": "bearer", "format": "jwt" }
        })),
        security: vec!["basic_sc".into()],
    };
    rich.extra_forms = vec![
        ExtraForm {
            selector: AffordanceSelector::PropertiesOfKind(PropertyKind::State),
            form: object(json!({
                "href": "mqtt://127.0.0.1:1883",
                "op": "observeproperty",
                "mqv:topic": "things/{thing}/state",
                "contentType": "application/json"
            })),
        },
        ExtraForm {
            selector: AffordanceSelector::AllActions,
            form: object(json!({
                "href": "mqtt://127.0.0.1:1883",
                "op": "invokeaction",
                "mqv:topic": "things/{thing}/actions/{name}"
            })),
        },
        ExtraForm {
            selector: AffordanceSelector::AllEvents,
            form: object(json!({
                "href": "coap://127.0.0.1/things/{thing}/events/{name}",
                "op": ["subscribeevent", "unsubscribeevent"],
                "subprotocol": "cov:observe"
            })),
        },
        ExtraForm {
            selector: AffordanceSelector::Thing,
            form: object(json!({
                "href": "coap://127.0.0.1/things/{thing}/state",
                "op": "readallproperties"
            })),
        },
    ];
    vec![plain, rich]
}

#[test]
fn every_builtin_type_td_validates_against_the_w3c_schema() {
    let validator = validator();
    let mut checked = 0;
    for ctx in contexts() {
        for ty in types() {
            let td = thing_description(&thing(&ty), &ty, &ctx);
            let errors = errors(&validator, &td);
            assert!(
                errors.is_empty(),
                "TD of {} breaks the TD 1.1 schema:\n{}\n{td:#}",
                ty.id,
                errors.join("\n")
            );
            checked += 1;
        }
    }
    assert_eq!(
        checked, 16,
        "7 built-in types and the fixture, in 2 contexts"
    );
}

#[test]
fn validator_rejects_broken_tds() {
    let validator = validator();
    let ty = TypeCatalog::builtin()
        .expect("valid")
        .get("thermostat")
        .map(|t| (**t).clone())
        .expect("thermostat");
    let td = thing_description(
        &thing(&ty),
        &ty,
        &TdContext::new("hub-1", "ws://127.0.0.1:8080/ws"),
    );
    assert!(errors(&validator, &td).is_empty());

    type Breakage = Box<dyn Fn(&mut Value)>;
    let breakages: Vec<(&str, Breakage)> = vec![
        (
            "no @context",
            Box::new(|td| {
                td.as_object_mut().map(|m| m.remove("@context"));
            }),
        ),
        (
            "old context only",
            Box::new(|td| td["@context"] = json!("https://example.org/td")),
        ),
        (
            "no security",
            Box::new(|td| {
                td.as_object_mut().map(|m| m.remove("security"));
            }),
        ),
        (
            "empty securityDefinitions",
            Box::new(|td| td["securityDefinitions"] = json!({})),
        ),
        (
            "property without forms",
            Box::new(|td| td["properties"]["setpoint"]["forms"] = json!([])),
        ),
        (
            "property form without href",
            Box::new(|td| {
                td["properties"]["setpoint"]["forms"][0]
                    .as_object_mut()
                    .map(|f| f.remove("href"));
            }),
        ),
        (
            "action op on a property",
            Box::new(|td| td["properties"]["mode"]["forms"][0]["op"] = json!("invokeaction")),
        ),
        (
            "unknown data type",
            Box::new(|td| td["properties"]["setpoint"]["type"] = json!("float")),
        ),
        ("id not a URI", Box::new(|td| td["id"] = json!("not a uri"))),
        (
            "root form without op",
            Box::new(|td| {
                td["forms"][0].as_object_mut().map(|f| f.remove("op"));
            }),
        ),
    ];
    for (what, breakage) in breakages {
        let mut broken = td.clone();
        breakage(&mut broken);
        assert!(
            !errors(&validator, &broken).is_empty(),
            "the schema should reject: {what}"
        );
    }
}

#[test]
fn forms_point_at_the_wamp_uris() {
    let catalog = TypeCatalog::builtin().expect("valid");
    let ty = catalog.get("alarm").expect("alarm");
    let thing = Thing::new(ThingId::new("al-1").expect("valid"), "alarm", 0);
    let td = thing_description(
        &thing,
        ty,
        &TdContext::new("hub-1", "ws://127.0.0.1:8080/ws"),
    );
    assert_eq!(td["id"], "urn:brume:hub-1:al-1");
    assert_eq!(td["created"], "1970-01-01T00:00:00.000Z");
    assert_eq!(td["security"], json!(["nosec_sc"]));
    let armed = &td["properties"]["armed"];
    assert_eq!(
        (armed["readOnly"].clone(), armed["observable"].clone()),
        (json!(true), json!(true))
    );
    assert_eq!(armed["forms"][0]["wamp:procedure"], "brume.things.get");
    assert_eq!(armed["forms"][1]["wamp:topic"], "brume.thing.al-1.state");
    let location = &td["properties"]["location"];
    assert_eq!(location["readOnly"], json!(false));
    assert_eq!(location["forms"][1]["op"], "writeproperty");
    assert_eq!(
        location["forms"][1]["wamp:procedure"],
        "brume.things.update_info"
    );
    assert_eq!(
        td["actions"]["arm"]["forms"][0]["wamp:procedure"],
        "brume.thing.al-1.action.arm"
    );
    assert_eq!(
        td["actions"]["arm"]["forms"][0]["href"],
        "ws://127.0.0.1:8080/ws"
    );
    assert_eq!(
        td["events"]["triggered"]["forms"][0]["wamp:topic"],
        "brume.thing.al-1.event.triggered"
    );
    assert_eq!(
        td["events"]["triggered"]["data"]["required"],
        json!(["zone"])
    );
}

#[test]
fn extra_forms_fill_placeholders_and_select_affordances() {
    let catalog = TypeCatalog::builtin().expect("valid");
    let ty = catalog.get("relay").expect("relay");
    let thing = Thing::new(ThingId::new("plug-7").expect("valid"), "relay", 0);
    let ctx = &contexts()[1];
    let td = thing_description(&thing, ty, ctx);
    let on_forms = td["properties"]["on"]["forms"].as_array().expect("forms");
    let last = on_forms.last().expect("a form");
    assert_eq!(last["mqv:topic"], "things/plug-7/state");
    let firmware_forms = td["properties"]["firmware"]["forms"]
        .as_array()
        .expect("forms");
    assert!(
        firmware_forms.iter().all(|f| f.get("mqv:topic").is_none()),
        "state forms only"
    );
    let toggle = td["actions"]["toggle"]["forms"].as_array().expect("forms");
    assert_eq!(
        toggle.last().map(|f| f["mqv:topic"].clone()),
        Some(json!("things/plug-7/actions/toggle"))
    );
    assert_eq!(td["security"], json!(["basic_sc"]));
    assert_eq!(td["properties"]["on"]["forms"][0]["wamp:realm"], "home");
    let root = td["forms"].as_array().expect("root forms");
    assert_eq!(
        root.last().map(|f| f["href"].clone()),
        Some(json!("coap://127.0.0.1/things/plug-7/state"))
    );
}
