//! Text layouts: `key=value` pairs and CSV with a named field list, and how text values are typed.
//!
//! Values are read as a bool (`true`/`false`), an integer, a finite float, else a string, unless
//! the layout's `types` says otherwise. A value in double quotes is always a string, quotes removed.

use std::collections::BTreeMap;

use serde_json::{Map, Number, Value};

use super::config::{ConfigProblem, FrameConfigError, TextType};
use super::errors::LayoutError;

/// A compiled `key_value` layout.
#[derive(Debug, Clone)]
pub(crate) struct KeyValueLayout {
    separator: String,
    delimiter: String,
    types: BTreeMap<String, TextType>,
}

/// A compiled `csv` layout; `None` columns are skipped.
#[derive(Debug, Clone)]
pub(crate) struct CsvLayout {
    fields: Vec<Option<String>>,
    delimiter: String,
    types: BTreeMap<String, TextType>,
}

fn non_empty(key: &str, text: &str) -> Result<(), FrameConfigError> {
    if text.is_empty() {
        Err(FrameConfigError::invalid(key, ConfigProblem::Empty))
    } else {
        Ok(())
    }
}

impl KeyValueLayout {
    pub(crate) fn new(
        separator: &str,
        delimiter: &str,
        types: BTreeMap<String, TextType>,
    ) -> Result<Self, FrameConfigError> {
        non_empty("layout.separator", separator)?;
        non_empty("layout.delimiter", delimiter)?;
        if separator == delimiter {
            return Err(FrameConfigError::invalid(
                "layout.delimiter",
                ConfigProblem::DuplicateName(delimiter.to_owned()),
            ));
        }
        Ok(Self {
            separator: separator.to_owned(),
            delimiter: delimiter.to_owned(),
            types,
        })
    }

    pub(crate) fn decode(&self, bytes: &[u8]) -> Result<Map<String, Value>, LayoutError> {
        let text = std::str::from_utf8(bytes).map_err(|_| LayoutError::NotUtf8)?;
        let mut values = Map::new();
        for (index, pair) in text.split(self.delimiter.as_str()).enumerate() {
            let pair = pair.trim();
            if pair.is_empty() {
                continue;
            }
            let (key, value) = pair
                .split_once(self.separator.as_str())
                .ok_or(LayoutError::MalformedPair { index })?;
            let key = key.trim();
            if key.is_empty() {
                return Err(LayoutError::MalformedPair { index });
            }
            let value = read_value(key, value.trim(), self.types.get(key).copied())?;
            values.insert(key.to_owned(), value);
        }
        Ok(values)
    }

    pub(crate) fn encode(&self, values: &Map<String, Value>) -> Result<Vec<u8>, LayoutError> {
        let mut text = String::new();
        for (key, value) in values {
            let value = write_value(value, None);
            for part in [key.as_str(), value.as_str()] {
                if part.contains(self.separator.as_str()) || part.contains(self.delimiter.as_str())
                {
                    return Err(LayoutError::Unrepresentable { field: key.clone() });
                }
            }
            if !text.is_empty() {
                text.push_str(&self.delimiter);
            }
            text.push_str(key);
            text.push_str(&self.separator);
            text.push_str(&value);
        }
        Ok(text.into_bytes())
    }
}

impl CsvLayout {
    pub(crate) fn new(
        fields: &[String],
        delimiter: &str,
        types: BTreeMap<String, TextType>,
    ) -> Result<Self, FrameConfigError> {
        non_empty("layout.delimiter", delimiter)?;
        if fields.is_empty() {
            return Err(FrameConfigError::invalid(
                "layout.fields",
                ConfigProblem::Empty,
            ));
        }
        let mut compiled: Vec<Option<String>> = Vec::with_capacity(fields.len());
        for (i, name) in fields.iter().enumerate() {
            if name.is_empty() || name == "_" {
                compiled.push(None);
                continue;
            }
            if compiled.iter().flatten().any(|other| other == name) {
                return Err(FrameConfigError::invalid(
                    format!("layout.fields[{i}]"),
                    ConfigProblem::DuplicateName(name.clone()),
                ));
            }
            compiled.push(Some(name.clone()));
        }
        Ok(Self {
            fields: compiled,
            delimiter: delimiter.to_owned(),
            types,
        })
    }

    pub(crate) fn has_field(&self, name: &str) -> bool {
        self.fields.iter().flatten().any(|field| field == name)
    }

    pub(crate) fn decode(&self, bytes: &[u8]) -> Result<Map<String, Value>, LayoutError> {
        let text = std::str::from_utf8(bytes).map_err(|_| LayoutError::NotUtf8)?;
        let found = text.split(self.delimiter.as_str()).count();
        if found != self.fields.len() {
            return Err(LayoutError::FieldCount {
                expected: self.fields.len(),
                found,
            });
        }
        let mut values = Map::new();
        for (name, text) in self.fields.iter().zip(text.split(self.delimiter.as_str())) {
            let (Some(name), text) = (name, text.trim()) else {
                continue;
            };
            if text.is_empty() {
                continue;
            }
            let value = read_value(name, text, self.types.get(name).copied())?;
            values.insert(name.clone(), value);
        }
        Ok(values)
    }

    pub(crate) fn encode(&self, values: &Map<String, Value>) -> Result<Vec<u8>, LayoutError> {
        let mut columns = Vec::with_capacity(self.fields.len());
        for name in &self.fields {
            let text = match name.as_ref().and_then(|name| values.get(name)) {
                Some(value) => write_value(value, None),
                None => String::new(),
            };
            if text.contains(self.delimiter.as_str()) || text.contains(['\n', '\r']) {
                return Err(LayoutError::Unrepresentable {
                    field: name.clone().unwrap_or_default(),
                });
            }
            columns.push(text);
        }
        Ok(columns.join(&self.delimiter).into_bytes())
    }
}

/// Reads one text value, by its declared type or by inference.
pub(crate) fn read_value(
    field: &str,
    text: &str,
    ty: Option<TextType>,
) -> Result<Value, LayoutError> {
    if let Some(inner) = text
        .strip_prefix('"')
        .and_then(|rest| rest.strip_suffix('"'))
    {
        return match ty {
            None | Some(TextType::String) => Ok(Value::String(inner.to_owned())),
            Some(expected) => Err(LayoutError::BadText {
                field: field.to_owned(),
                expected,
            }),
        };
    }
    let bad = |expected| LayoutError::BadText {
        field: field.to_owned(),
        expected,
    };
    match ty {
        Some(TextType::String) => Ok(Value::String(text.to_owned())),
        Some(TextType::Number) => parse_number(text).ok_or(bad(TextType::Number)),
        Some(TextType::Bool) => match text.to_ascii_lowercase().as_str() {
            "true" | "1" | "on" => Ok(Value::Bool(true)),
            "false" | "0" | "off" => Ok(Value::Bool(false)),
            _ => Err(bad(TextType::Bool)),
        },
        None => Ok(infer(text)),
    }
}

fn infer(text: &str) -> Value {
    match text {
        "true" => Value::Bool(true),
        "false" => Value::Bool(false),
        _ => parse_number(text).unwrap_or_else(|| Value::String(text.to_owned())),
    }
}

/// An integer or a finite float written in decimal; `inf`, `NaN` and hex are not numbers.
fn parse_number(text: &str) -> Option<Value> {
    let numeric = text
        .bytes()
        .all(|b| b.is_ascii_digit() || matches!(b, b'+' | b'-' | b'.' | b'e' | b'E'));
    if !numeric || !text.bytes().any(|b| b.is_ascii_digit()) {
        return None;
    }
    if let Ok(n) = text.parse::<i64>() {
        return Some(Value::from(n));
    }
    if let Ok(n) = text.parse::<u64>() {
        return Some(Value::from(n));
    }
    text.parse::<f64>()
        .ok()
        .and_then(Number::from_f64)
        .map(Value::Number)
}

/// Writes a value as text: strings bare, numbers and bools as JSON writes them (bools optionally as
/// the given `[false, true]` words), null as nothing, arrays and objects as JSON.
pub(crate) fn write_value(value: &Value, bools: Option<&[String; 2]>) -> String {
    match (value, bools) {
        (Value::String(s), _) => s.clone(),
        (Value::Null, _) => String::new(),
        (Value::Bool(b), Some([off, on])) => if *b { on } else { off }.clone(),
        (other, _) => other.to_string(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use serde_json::json;

    use super::*;

    fn kv(separator: &str, delimiter: &str) -> KeyValueLayout {
        KeyValueLayout::new(separator, delimiter, BTreeMap::new()).unwrap()
    }

    #[test]
    fn key_value_pairs_are_typed() {
        let layout = kv("=", ";");
        let values = layout
            .decode(b"t=21.5;h=40; on=true ;name=kitchen;quoted=\"12\";neg=-3;big=1e3;x=inf;")
            .unwrap();
        assert_eq!(
            Value::Object(values),
            json!({"t": 21.5, "h": 40, "on": true, "name": "kitchen", "quoted": "12",
                   "neg": -3, "big": 1000.0, "x": "inf"})
        );
    }

    #[test]
    fn key_value_with_other_separators_and_types() {
        let mut types = BTreeMap::new();
        types.insert("fw".to_owned(), TextType::String);
        types.insert("relay".to_owned(), TextType::Bool);
        let layout = KeyValueLayout::new(":", " ", types).unwrap();
        let values = layout.decode(b"fw:1.0  relay:ON t:-0.5").unwrap();
        assert_eq!(
            Value::Object(values),
            json!({"fw": "1.0", "relay": true, "t": -0.5})
        );
        assert!(matches!(
            layout.decode(b"relay:maybe"),
            Err(LayoutError::BadText { .. })
        ));
    }

    #[test]
    fn malformed_key_value_text() {
        let layout = kv("=", ";");
        assert!(matches!(
            layout.decode(b"t=1;h"),
            Err(LayoutError::MalformedPair { index: 1 })
        ));
        assert!(matches!(
            layout.decode(b"=1"),
            Err(LayoutError::MalformedPair { index: 0 })
        ));
        assert!(matches!(
            layout.decode(b"t=\xFF"),
            Err(LayoutError::NotUtf8)
        ));
        assert!(layout.decode(b"").unwrap().is_empty());
    }

    #[test]
    fn key_value_round_trip() {
        let layout = kv("=", ";");
        let values = layout.decode(b"h=40;on=false;t=21.5").unwrap();
        assert_eq!(layout.encode(&values).unwrap(), b"h=40;on=false;t=21.5");
        let mut bad = Map::new();
        bad.insert("name".to_owned(), json!("a;b"));
        assert!(matches!(
            layout.encode(&bad),
            Err(LayoutError::Unrepresentable { .. })
        ));
    }

    #[test]
    fn csv_with_named_fields() {
        let fields = ["id", "temperature", "_", "humidity"].map(str::to_owned);
        let mut types = BTreeMap::new();
        types.insert("id".to_owned(), TextType::String);
        let layout = CsvLayout::new(&fields, ",", types).unwrap();
        let values = layout.decode(b"007, 21.5,junk,40").unwrap();
        assert_eq!(
            Value::Object(values.clone()),
            json!({"id": "007", "temperature": 21.5, "humidity": 40})
        );
        assert_eq!(layout.encode(&values).unwrap(), b"007,21.5,,40");
        let values = layout.decode(b"a,,,").unwrap();
        assert_eq!(Value::Object(values), json!({"id": "a"}));
        assert!(matches!(
            layout.decode(b"1,2,3"),
            Err(LayoutError::FieldCount {
                expected: 4,
                found: 3
            })
        ));
        assert!(matches!(
            layout.decode(b"1,2,3,4,5"),
            Err(LayoutError::FieldCount { found: 5, .. })
        ));
    }

    #[test]
    fn csv_config_errors() {
        let fields = ["a", "a"].map(str::to_owned);
        let err = CsvLayout::new(&fields, ",", BTreeMap::new()).unwrap_err();
        assert_eq!(err.key(), "layout.fields[1]");
        let err = CsvLayout::new(&[], ",", BTreeMap::new()).unwrap_err();
        assert_eq!(err.key(), "layout.fields");
        let err = CsvLayout::new(&fields[..1], "", BTreeMap::new()).unwrap_err();
        assert_eq!(err.key(), "layout.delimiter");
    }

    #[test]
    fn writing_values() {
        let bools = ["OFF".to_owned(), "ON".to_owned()];
        assert_eq!(write_value(&json!(true), Some(&bools)), "ON");
        assert_eq!(write_value(&json!(false), None), "false");
        assert_eq!(write_value(&json!("x y"), None), "x y");
        assert_eq!(write_value(&json!(2.5), None), "2.5");
        assert_eq!(write_value(&json!({"a": 1}), None), "{\"a\":1}");
        assert_eq!(write_value(&Value::Null, None), "");
    }
}
