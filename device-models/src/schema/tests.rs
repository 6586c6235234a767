use serde_json::{Value, json};

use super::*;

fn schema(toml_text: &str) -> DataSchema {
    toml::from_str(toml_text).expect("test schema parses")
}

/// (schema, value, expected error text or None when the value is accepted)
#[test]
fn value_checks() {
    let number = schema("type = 'number'\nminimum = 5\nmaximum = 35");
    let integer = schema("type = 'integer'\nminimum = 0\nmaximum = 100");
    let mode = schema("type = 'string'\nenum = ['off', 'heat', 'cool', 'auto']");
    let code = schema("type = 'string'\nmin_length = 2\nmax_length = 4");
    let boolean = schema("type = 'boolean'");
    let null = schema("type = 'null'");
    let levels = schema("type = 'array'\nitems = { type = 'integer', minimum = 0 }");
    let int_enum = schema("type = 'integer'\nenum = [1, 2, 3]");
    let object = schema(
        "type = 'object'\nrequired = ['zone']\n\
         [properties.zone]\ntype = 'string'\n\
         [properties.level]\ntype = 'integer'\nmaximum = 3",
    );

    let cases: Vec<(&DataSchema, Value, Option<&str>)> = vec![
        (&number, json!(20), None),
        (&number, json!(20.5), None),
        (&number, json!(5), None),
        (&number, json!(35.0), None),
        (&number, json!(40), Some("40 is above maximum 35")),
        (&number, json!(4.9), Some("4.9 is below minimum 5")),
        (&number, json!("20"), Some("expected number, got \"20\"")),
        (&number, json!(null), Some("expected number, got null")),
        (&number, json!(true), Some("expected number, got true")),
        (&integer, json!(42), None),
        (&integer, json!(42.0), None),
        (&integer, json!(42.5), Some("expected integer, got 42.5")),
        (&integer, json!(-1), Some("-1 is below minimum 0")),
        (
            &integer,
            json!(u64::MAX),
            Some("18446744073709551615 is above maximum 100"),
        ),
        (&mode, json!("heat"), None),
        (
            &mode,
            json!("warm"),
            Some("\"warm\" is not one of [\"off\", \"heat\", \"cool\", \"auto\"]"),
        ),
        (&mode, json!(1), Some("expected string, got 1")),
        (&int_enum, json!(2.0), None),
        (&int_enum, json!(4), Some("4 is not one of [1, 2, 3]")),
        (&code, json!("1234"), None),
        (
            &code,
            json!("1"),
            Some("is 1 characters long, shorter than min_length 2"),
        ),
        (
            &code,
            json!("12345"),
            Some("is 5 characters long, longer than max_length 4"),
        ),
        (&code, json!("éàü"), None),
        (&boolean, json!(false), None),
        (&boolean, json!(0), Some("expected boolean, got 0")),
        (&null, json!(null), None),
        (&null, json!(0), Some("expected null, got 0")),
        (&levels, json!([0, 1, 2]), None),
        (&levels, json!([]), None),
        (&levels, json!([0, -1]), Some("[1]: -1 is below minimum 0")),
        (
            &levels,
            json!({"0": 1}),
            Some("expected array, got {\"0\":1}"),
        ),
        (&object, json!({"zone": "hall"}), None),
        (
            &object,
            json!({"zone": "hall", "level": 3, "extra": true}),
            None,
        ),
        (
            &object,
            json!({"level": 1}),
            Some("misses required field \"zone\""),
        ),
        (
            &object,
            json!({"zone": 7}),
            Some("zone: expected string, got 7"),
        ),
        (
            &object,
            json!({"zone": "x", "level": 4}),
            Some("level: 4 is above maximum 3"),
        ),
        (&object, json!([]), Some("expected object, got []")),
    ];
    for (schema, value, want) in cases {
        let got = schema.check(&value).err().map(|e| e.to_string());
        assert_eq!(got.as_deref(), want, "value {value}");
    }
}

#[test]
fn wrong_type_message_cuts_long_values() {
    let number = DataSchema::of(SchemaType::Number);
    let error = number
        .check(&Value::String("x".repeat(10_000)))
        .expect_err("a string is not a number");
    assert!(error.to_string().len() < 120, "{error}");
}

/// (schema TOML, expected error text or None when the definition is accepted)
#[test]
fn definition_checks() {
    let cases = [
        ("type = 'number'\nminimum = 5\nmaximum = 35", None),
        ("type = 'number'\nminimum = 5\nmaximum = 5", None),
        (
            "type = 'number'\nminimum = 35\nmaximum = 5",
            Some("s.minimum: must be <= maximum (35 > 5)"),
        ),
        (
            "type = 'number'\nminimum = 0.5\nmaximum = 0.25",
            Some("s.minimum: must be <= maximum (0.5 > 0.25)"),
        ),
        (
            "type = 'string'\nminimum = 1",
            Some("s.minimum: does not apply to type string"),
        ),
        (
            "type = 'boolean'\nunit = '%'",
            Some("s.unit: does not apply to type boolean"),
        ),
        (
            "type = 'integer'\nmax_length = 3",
            Some("s.max_length: does not apply to type integer"),
        ),
        (
            "type = 'string'\nmin_length = 4\nmax_length = 3",
            Some("s.min_length: must be <= max_length (4 > 3)"),
        ),
        (
            "type = 'string'\nitems = { type = 'string' }",
            Some("s.items: does not apply to type string"),
        ),
        (
            "type = 'array'\nrequired = ['a']",
            Some("s.required: does not apply to type array"),
        ),
        (
            "type = 'string'\nenum = []",
            Some("s.enum: must list at least one value"),
        ),
        (
            "type = 'string'\nenum = ['a', 'b', 'a']",
            Some("s.enum[2]: repeats \"a\""),
        ),
        (
            "type = 'integer'\nenum = [1, 1.0]",
            Some("s.enum[1]: repeats 1.0"),
        ),
        (
            "type = 'string'\nenum = ['a', 2]",
            Some("s.enum[1]: expected string, got 2"),
        ),
        (
            "type = 'integer'\nmaximum = 3\nenum = [1, 5]",
            Some("s.enum[1]: 5 is above maximum 3"),
        ),
        (
            "type = 'object'\nrequired = ['a']",
            Some("s.required[0]: names \"a\", which is not in properties"),
        ),
        (
            "type = 'object'\n[properties.a]\ntype = 'number'\nminimum = 2\nmaximum = 1",
            Some("s.properties.a.minimum: must be <= maximum (2 > 1)"),
        ),
        (
            "type = 'array'\nitems = { type = 'string', min_length = 2, max_length = 1 }",
            Some("s.items.min_length: must be <= max_length (2 > 1)"),
        ),
    ];
    for (text, want) in cases {
        let got = schema(text)
            .validate(&KeyPath::root().key("s"))
            .err()
            .map(|e| e.to_string());
        assert_eq!(got.as_deref(), want, "schema {text:?}");
    }
}

#[test]
fn nesting_is_bounded() {
    let mut deep = DataSchema::of(SchemaType::Integer);
    for _ in 0..MAX_SCHEMA_DEPTH - 1 {
        let mut wrapper = DataSchema::of(SchemaType::Array);
        wrapper.items = Some(Box::new(deep));
        deep = wrapper;
    }
    assert_eq!(deep.validate(&KeyPath::root()), Ok(()));
    let mut deeper = DataSchema::of(SchemaType::Array);
    deeper.items = Some(Box::new(deep));
    let error = deeper.validate(&KeyPath::root()).expect_err("too deep");
    assert_eq!(
        error.rule,
        DefinitionRule::TooDeep {
            max: MAX_SCHEMA_DEPTH
        }
    );
}
