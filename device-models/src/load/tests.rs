use super::*;
use crate::schema::{DefinitionRule, SchemaType};
use crate::thing_type::PropertyKind;

const HEAD: &str = "id = \"thermostat\"\ntitle = \"Thermostat\"\nversion = \"1\"\n";

fn load(body: &str) -> Result<ThingType, LoadError> {
    ThingType::from_toml(&format!("{HEAD}{body}"), "thermostat.toml")
}

#[test]
fn loads_a_complete_type() {
    let ty = load(
        r#"
description = "test"

[properties.setpoint]
type = "number"
unit = "°C"
minimum = 5
maximum = 35
writable = true

[properties.location]
type = "string"
kind = "info"
writable = true

[actions.boost]
timeout_ms = 2000
input = { type = "object", properties = { minutes = { type = "integer", minimum = 1 } }, required = ["minutes"] }
output = { type = "boolean" }

[events.fault]
payload = { type = "string" }

[bindings.mqtt]
state_topic = "tele/{id}/SENSOR"
scale = { temperature = 0.1 }
"#,
    )
    .expect("valid type");
    assert_eq!(ty.id, "thermostat");
    assert_eq!(ty.description.as_deref(), Some("test"));
    let setpoint = ty.property("setpoint").expect("setpoint");
    assert!(setpoint.writable);
    assert_eq!(setpoint.kind, PropertyKind::State);
    assert_eq!(setpoint.schema.schema_type, SchemaType::Number);
    assert_eq!(setpoint.schema.unit.as_deref(), Some("°C"));
    assert_eq!(
        ty.property("location").map(|p| p.kind),
        Some(PropertyKind::Info)
    );
    let boost = ty.action("boost").expect("boost");
    assert_eq!(boost.timeout_ms, 2000);
    assert_eq!(
        boost.input.as_ref().map(|s| s.required.clone()),
        Some(vec!["minutes".to_owned()])
    );
    assert!(ty.event("fault").is_some());
    let mqtt = ty.binding("mqtt").expect("mqtt binding kept");
    assert_eq!(
        mqtt.get("state_topic").and_then(|v| v.as_str()),
        Some("tele/{id}/SENSOR")
    );
}

#[test]
fn defaults() {
    let ty = load("[properties.t]\ntype = 'number'\n[actions.go]\n[events.e]\n").expect("valid");
    let t = ty.property("t").expect("t");
    assert!(!t.writable);
    assert_eq!(t.kind, PropertyKind::State);
    let go = ty.action("go").expect("go");
    assert_eq!(go.timeout_ms, crate::thing_type::DEFAULT_ACTION_TIMEOUT_MS);
    assert!(go.input.is_none() && go.output.is_none());
    assert!(ty.event("e").and_then(|e| e.payload.as_ref()).is_none());
    assert!(ty.bindings.is_empty());
}

/// Each bad file: (body after the id/title/version head, expected full error text).
#[test]
fn errors_name_file_line_and_key() {
    let cases = [
        (
            "[properties.setpoint]\ntype = 'number'\nminimum = 35\nmaximum = 5\n",
            "thermostat.toml:6: properties.setpoint.minimum: must be <= maximum (35 > 5)",
        ),
        (
            "[properties.setpoint]\ntype = 'number'\nminimun = 35\n",
            "thermostat.toml:6: properties.setpoint.minimun: unknown field `minimun`, expected one of \
             `type`, `writable`, `kind`, `title`, `description`, `unit`, `minimum`, `maximum`, `enum`, \
             `min_length`, `max_length`, `properties`, `required`, `items`",
        ),
        (
            "colour = 'red'\n",
            "thermostat.toml:4: colour: unknown field `colour`, expected one of `id`, `title`, \
             `description`, `version`, `properties`, `actions`, `events`, `bindings`",
        ),
        (
            "[actions.go]\ntimeout = 5\n",
            "thermostat.toml:5: actions.go.timeout: unknown field `timeout`, expected one of \
             `title`, `description`, `input`, `output`, `timeout_ms`",
        ),
        (
            "[actions.go.input]\ntype = 'object'\n[actions.go.input.properties.x]\ntype = 'string'\nmax = 3\n",
            "thermostat.toml:8: actions.go.input.properties.x.max: unknown field `max`, expected one of \
             `type`, `title`, `description`, `unit`, `minimum`, `maximum`, `enum`, `min_length`, \
             `max_length`, `properties`, `required`, `items`",
        ),
        (
            "[events.e]\npayload = { type = 'string', writable = true }\n",
            "thermostat.toml:5: events.e.payload.writable: unknown field `writable`, expected one of \
             `type`, `title`, `description`, `unit`, `minimum`, `maximum`, `enum`, `min_length`, \
             `max_length`, `properties`, `required`, `items`",
        ),
        (
            "[properties.x]\ntype = 'float'\n",
            "thermostat.toml:5: properties.x.type: unknown variant `float`, expected one of `number`, \
             `integer`, `boolean`, `string`, `object`, `array`, `null`",
        ),
        (
            "[properties.x]\nminimum = 1\n",
            "thermostat.toml:4: properties.x: missing field `type`",
        ),
        (
            "[properties.x]\ntype = 'string'\nkind = 'meta'\n",
            "thermostat.toml:6: properties.x.kind: unknown variant `meta`, expected `state` or `info`",
        ),
        (
            "[properties.x]\ntype = 'integer'\nminimum = 'low'\n",
            "thermostat.toml:6: properties.x.minimum: invalid type: string \"low\", expected a JSON number",
        ),
        (
            "[properties.x]\ntype = 'number'\nmaximum = nan\n",
            "thermostat.toml:6: properties.x.maximum: not a JSON number",
        ),
        (
            "[properties.x]\ntype = 'string'\nwritable = 'yes'\n",
            "thermostat.toml:6: properties.x.writable: invalid type: string \"yes\", expected a boolean",
        ),
        (
            "[properties.Setpoint]\ntype = 'number'\n",
            "thermostat.toml:4: properties.Setpoint: invalid name \"Setpoint\": use 1 to 64 characters \
             of a-z, 0-9 and _",
        ),
        (
            "[actions.\"set.point\"]\n",
            "thermostat.toml:4: actions.\"set.point\": invalid name \"set.point\": use 1 to 64 \
             characters of a-z, 0-9 and _",
        ),
        (
            "[events.a-b]\n",
            "thermostat.toml:4: events.a-b: invalid name \"a-b\": use 1 to 64 characters of a-z, 0-9 and _",
        ),
        (
            "[bindings.MQTT]\ntopic = 'x'\n",
            "thermostat.toml:4: bindings.MQTT: invalid name \"MQTT\": use 1 to 64 characters of a-z, 0-9 and _",
        ),
        (
            "[properties.mode]\ntype = 'string'\nenum = ['off', 3]\n",
            "thermostat.toml:6: properties.mode.enum[1]: expected string, got 3",
        ),
        (
            "[actions.go]\ntimeout_ms = 0\n",
            "thermostat.toml:5: actions.go.timeout_ms: must be between 1 and 300000 ms (got 0)",
        ),
        (
            "[actions.go]\ntimeout_ms = 3600000\n",
            "thermostat.toml:5: actions.go.timeout_ms: must be between 1 and 300000 ms (got 3600000)",
        ),
        (
            "[actions.go]\ntimeout_ms = -1\n",
            "thermostat.toml:5: actions.go.timeout_ms: invalid value: integer `-1`, expected u64",
        ),
        (
            "[actions.go.output]\ntype = 'object'\nrequired = ['ok']\n",
            "thermostat.toml:6: actions.go.output.required[0]: names \"ok\", which is not in properties",
        ),
        (
            "[properties.x\ntype = 'number'\n",
            "thermostat.toml:4: invalid TOML: unclosed table, expected `]`",
        ),
        (
            "[properties.x]\ntype = 'number'\ntype = 'string'\n",
            "thermostat.toml:6: invalid TOML: duplicate key",
        ),
    ];
    for (body, want) in cases {
        let error = load(body).expect_err(body);
        assert_eq!(error.to_string(), want, "body {body:?}");
    }
}

#[test]
fn head_errors() {
    let cases = [
        (
            "title = 'T'\nversion = '1'\n",
            "t.toml:1: missing field `id`",
        ),
        (
            "id = 'Thermo'\ntitle = 'T'\nversion = '1'\n",
            "t.toml:1: id: invalid name \"Thermo\": use 1 to 64 characters of a-z, 0-9 and _",
        ),
        (
            "id = 't'\ntitle = ' '\nversion = '1'\n",
            "t.toml:2: title: must not be empty",
        ),
        (
            "id = 't'\ntitle = 'T'\nversion = ''\n",
            "t.toml:3: version: must not be empty",
        ),
        (
            "id = 7\ntitle = 'T'\nversion = '1'\n",
            "t.toml:1: id: invalid type: integer `7`, expected a string",
        ),
        ("", "t.toml:1: missing field `id`"),
    ];
    for (text, want) in cases {
        let error = ThingType::from_toml(text, "t.toml").expect_err(text);
        assert_eq!(error.to_string(), want, "text {text:?}");
    }
}

#[test]
fn definition_errors_carry_the_rule() {
    let error =
        load("[properties.s]\ntype = 'number'\nminimum = 35\nmaximum = 5\n").expect_err("bad");
    let LoadError::Invalid { at, error } = error else {
        panic!("expected an Invalid error");
    };
    assert_eq!(at.file, "thermostat.toml");
    assert_eq!(error.path.to_string(), "properties.s.minimum");
    assert!(matches!(
        error.rule,
        DefinitionRule::MinimumAboveMaximum { .. }
    ));
}

#[test]
fn round_trips_through_toml() {
    let ty = load(
        "[properties.s]\ntype = 'number'\nminimum = 5\nmaximum = 35.5\nwritable = true\n\
         [actions.a]\ninput = { type = 'array', items = { type = 'string', enum = ['x', 'y'] } }\n\
         [events.e]\npayload = { type = 'null' }\n\
         [bindings.coap]\npath = '/x'\nobserve = true\nlist = [1, 2]\n",
    )
    .expect("valid");
    let text = ty.to_toml().expect("serializes");
    let again = ThingType::from_toml(&text, "again.toml").expect("reloads");
    assert_eq!(ty, again, "{text}");
}

/// Whatever the bytes, loading returns an error or a type, never a panic: every prefix of a real
/// type file, and the file with bytes overwritten by a fixed pseudo-random sequence.
#[test]
fn never_panics_on_mangled_files() {
    let text = include_str!("../../types/alarm.toml");
    for end in (0..=text.len()).filter(|&i| text.is_char_boundary(i)) {
        let _ = ThingType::from_toml(&text[..end], "prefix.toml");
    }
    let specials = b"[]{}=\"'.,#\n \\0-_aZ9";
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for _ in 0..2000 {
        let mut bytes = text.as_bytes().to_vec();
        for _ in 0..3 {
            let at = (next() as usize) % bytes.len();
            bytes[at] = specials[(next() as usize) % specials.len()];
        }
        if let Ok(mangled) = std::str::from_utf8(&bytes) {
            let _ = ThingType::from_toml(mangled, "mangled.toml");
        }
    }
    let deep = format!(
        "id = 't'\ntitle = 'T'\nversion = '1'\n[events.e]\npayload = {}",
        "{ type = 'array', items = ".repeat(5000)
    );
    assert!(ThingType::from_toml(&deep, "deep.toml").is_err());
    let deep = format!(
        "id = 't'\ntitle = 'T'\nversion = '1'\n[events.e.payload{}]\ntype = 'array'\n",
        ".items".repeat(20_000)
    );
    assert!(ThingType::from_toml(&deep, "deep.toml").is_err());
}

/// The example in the type file format guide loads.
#[test]
fn format_guide_example_loads() {
    let guide = include_str!("../../types/README.md");
    let start = guide.find("```toml\n").expect("example present") + "```toml\n".len();
    let end = start + guide[start..].find("```").expect("example closed");
    let ty = ThingType::from_toml(&guide[start..end], "README.md").expect("example is valid");
    assert_eq!(ty.id, "thermostat");
    assert!(ty.binding("mqtt").is_some());
}
