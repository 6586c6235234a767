//! JSON value helpers shared by the value checks and the state merge: number comparison that does
//! not care how a number was written (`21` and `21.0` are the same temperature), and short
//! renderings of values for error messages.

use std::cmp::Ordering;

use serde_json::{Number, Value};

/// Longest rendering of a value in an error message, in characters, before it is cut.
const RENDER_MAX_CHARS: usize = 48;

/// Compares two numbers by value, exactly for integers and as `f64` otherwise.
pub fn cmp_numbers(a: &Number, b: &Number) -> Ordering {
    match (as_i128(a), as_i128(b)) {
        (Some(a), Some(b)) => a.cmp(&b),
        _ => {
            let (a, b) = (
                a.as_f64().unwrap_or(f64::NAN),
                b.as_f64().unwrap_or(f64::NAN),
            );
            a.total_cmp(&b)
        }
    }
}

fn as_i128(n: &Number) -> Option<i128> {
    n.as_i64()
        .map(i128::from)
        .or_else(|| n.as_u64().map(i128::from))
}

/// True when the number has no fractional part (`3` or `3.0`), as JSON Schema defines an integer.
pub fn is_integral(n: &Number) -> bool {
    as_i128(n).is_some()
        || n.as_f64()
            .is_some_and(|f| f.is_finite() && f.fract() == 0.0)
}

/// Equality of JSON values where numbers compare by value (`21 == 21.0`), recursively.
///
/// Devices and apps write numbers differently; a state change or a confirmed desired value must
/// not depend on that.
pub fn values_equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(a), Value::Number(b)) => cmp_numbers(a, b) == Ordering::Equal,
        (Value::Array(a), Value::Array(b)) => {
            a.len() == b.len() && a.iter().zip(b).all(|(a, b)| values_equal(a, b))
        }
        (Value::Object(a), Value::Object(b)) => {
            a.len() == b.len()
                && a.iter()
                    .all(|(k, v)| b.get(k).is_some_and(|w| values_equal(v, w)))
        }
        _ => a == b,
    }
}

/// The JSON kind of a value, as JSON Schema names it.
pub fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if is_integral(n) => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// A compact JSON rendering of a value for messages, cut to a few dozen characters.
pub fn render(value: &Value) -> String {
    let text = value.to_string();
    if text.chars().count() <= RENDER_MAX_CHARS {
        return text;
    }
    let mut cut: String = text.chars().take(RENDER_MAX_CHARS).collect();
    cut.push('…');
    cut
}

/// A compact rendering of a list of values, e.g. `["off", "heat"]`.
pub fn render_list(values: &[Value]) -> String {
    let items: Vec<String> = values.iter().map(render).collect();
    format!("[{}]", items.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn numbers_compare_by_value() {
        let n = |v: Value| match v {
            Value::Number(n) => n,
            _ => unreachable!(),
        };
        assert_eq!(cmp_numbers(&n(json!(21)), &n(json!(21.0))), Ordering::Equal);
        assert_eq!(
            cmp_numbers(&n(json!(-1)), &n(json!(u64::MAX))),
            Ordering::Less
        );
        assert_eq!(cmp_numbers(&n(json!(2.5)), &n(json!(2))), Ordering::Greater);
        assert!(is_integral(&n(json!(3.0))));
        assert!(!is_integral(&n(json!(3.5))));
    }

    #[test]
    fn values_equal_ignores_number_spelling() {
        assert!(values_equal(
            &json!({"a": [1, 2.0]}),
            &json!({"a": [1.0, 2]})
        ));
        assert!(!values_equal(&json!({"a": 1}), &json!({"a": 1, "b": 2})));
        assert!(!values_equal(&json!("1"), &json!(1)));
    }

    #[test]
    fn render_cuts_long_values() {
        let long = Value::String("x".repeat(200));
        assert!(render(&long).chars().count() <= RENDER_MAX_CHARS + 1);
        assert_eq!(render_list(&[json!("off"), json!(1)]), "[\"off\", 1]");
    }
}
