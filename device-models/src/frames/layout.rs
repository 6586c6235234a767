//! Payload layouts: one frame's bytes ↔ named fields (a JSON object map).
//!
//! The layout only names and types what is in the frame; [`FrameCodec`](super::FrameCodec) then
//! picks the thing id, the reply correlation and the properties out of those fields. Field names
//! are keys (JSON, `key_value`), CSV column names or binary field names; with the JSON layout a name
//! starting with `/` is a JSON pointer into the object.

use serde_json::{Map, Value};

use super::binary::BinaryLayout;
use super::config::{ConfigProblem, FrameConfigError, LayoutConfig, TextType};
use super::errors::LayoutError;
use super::text::{CsvLayout, KeyValueLayout};

/// A compiled layout.
#[derive(Debug, Clone)]
pub(crate) enum Layout {
    Json,
    KeyValue(KeyValueLayout),
    Csv(CsvLayout),
    Binary(BinaryLayout),
}

impl Layout {
    /// Compiles a layout; `max_payload` bounds binary fields, `text_ids` are fields read as text
    /// whatever they look like (the id field: `007` must not become 7).
    pub(crate) fn new(
        config: &LayoutConfig,
        max_payload: usize,
        text_ids: Option<&str>,
    ) -> Result<Self, FrameConfigError> {
        let with_id = |types: &std::collections::BTreeMap<String, TextType>| {
            let mut types = types.clone();
            if let Some(id) = text_ids {
                types.entry(id.to_owned()).or_insert(TextType::String);
            }
            types
        };
        Ok(match config {
            LayoutConfig::Json {} => Self::Json,
            LayoutConfig::KeyValue {
                separator,
                delimiter,
                types,
            } => Self::KeyValue(KeyValueLayout::new(separator, delimiter, with_id(types))?),
            LayoutConfig::Csv {
                fields,
                delimiter,
                types,
            } => {
                let layout = CsvLayout::new(fields, delimiter, with_id(types))?;
                if let Some(name) = types.keys().find(|name| !layout.has_field(name)) {
                    return Err(FrameConfigError::invalid(
                        format!("layout.types.{name}"),
                        ConfigProblem::NoSuchField(name.clone()),
                    ));
                }
                Self::Csv(layout)
            }
            LayoutConfig::Binary {
                order,
                length,
                fields,
            } => {
                if fields.is_empty() {
                    return Err(FrameConfigError::invalid(
                        "layout.fields",
                        ConfigProblem::Empty,
                    ));
                }
                Self::Binary(BinaryLayout::new(
                    "layout.fields",
                    *order,
                    *length,
                    fields,
                    max_payload,
                )?)
            }
        })
    }

    /// Whether `name` can be a field of this layout; `true` for open layouts (JSON, `key_value`),
    /// which learn their fields from each frame.
    pub(crate) fn may_have(&self, name: &str) -> bool {
        match self {
            Self::Json | Self::KeyValue(_) => true,
            Self::Csv(layout) => layout.has_field(name),
            Self::Binary(layout) => layout.field(name).is_some(),
        }
    }

    /// Reads a payload into fields.
    pub(crate) fn decode(&self, payload: &[u8]) -> Result<Map<String, Value>, LayoutError> {
        match self {
            Self::Json => match serde_json::from_slice(payload).map_err(LayoutError::Json)? {
                Value::Object(fields) => Ok(fields),
                _ => Err(LayoutError::NotAnObject),
            },
            Self::KeyValue(layout) => layout.decode(payload),
            Self::Csv(layout) => layout.decode(payload),
            Self::Binary(layout) => layout.decode(payload),
        }
    }

    /// Writes fields into a payload.
    pub(crate) fn encode(&self, fields: &Map<String, Value>) -> Result<Vec<u8>, LayoutError> {
        match self {
            Self::Json => serde_json::to_vec(fields).map_err(LayoutError::Json),
            Self::KeyValue(layout) => layout.encode(fields),
            Self::Csv(layout) => layout.encode(fields),
            Self::Binary(layout) => layout.encode(fields),
        }
    }

    /// The field called `name` (a JSON pointer with the JSON layout when it starts with `/`).
    pub(crate) fn lookup<'a>(
        &self,
        fields: &'a Map<String, Value>,
        name: &str,
    ) -> Option<&'a Value> {
        match (self, pointer_tokens(name)) {
            (Self::Json, Some(mut tokens)) => {
                let first = tokens.next()?;
                let mut value = fields.get(&first)?;
                for token in tokens {
                    value = match value {
                        Value::Object(map) => map.get(&token)?,
                        Value::Array(items) => items.get(token.parse::<usize>().ok()?)?,
                        _ => return None,
                    };
                }
                Some(value)
            }
            _ => fields.get(name),
        }
    }

    /// Sets the field called `name`, creating the objects a JSON pointer walks through.
    pub(crate) fn insert(&self, fields: &mut Map<String, Value>, name: &str, value: Value) {
        match (self, pointer_tokens(name)) {
            (Self::Json, Some(tokens)) => {
                let tokens: Vec<String> = tokens.collect();
                let Some((last, path)) = tokens.split_last() else {
                    return;
                };
                let mut map = fields;
                for token in path {
                    let slot = map
                        .entry(token.clone())
                        .or_insert_with(|| Value::Object(Map::new()));
                    if !slot.is_object() {
                        *slot = Value::Object(Map::new());
                    }
                    let Value::Object(inner) = slot else { return };
                    map = inner;
                }
                map.insert(last.clone(), value);
            }
            _ => {
                fields.insert(name.to_owned(), value);
            }
        }
    }
}

/// The unescaped tokens of a JSON pointer (RFC 6901), or `None` for a plain name.
fn pointer_tokens(name: &str) -> Option<impl Iterator<Item = String> + '_> {
    let rest = name.strip_prefix('/')?;
    Some(
        rest.split('/')
            .map(|token| token.replace("~1", "/").replace("~0", "~")),
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn json_objects_and_pointers() {
        let layout = Layout::Json;
        let fields = layout
            .decode(br#"{"id":"a1","sensors":{"temp":21.5,"list":[1,2]},"a/b":3}"#)
            .unwrap();
        assert_eq!(layout.lookup(&fields, "id"), Some(&json!("a1")));
        assert_eq!(layout.lookup(&fields, "/sensors/temp"), Some(&json!(21.5)));
        assert_eq!(layout.lookup(&fields, "/sensors/list/1"), Some(&json!(2)));
        assert_eq!(layout.lookup(&fields, "/a~1b"), Some(&json!(3)));
        assert_eq!(layout.lookup(&fields, "/sensors/none"), None);
        assert_eq!(layout.lookup(&fields, "/id/deeper"), None);
        let mut out = Map::new();
        layout.insert(&mut out, "/sensors/temp", json!(20));
        layout.insert(&mut out, "/sensors/hum", json!(40));
        layout.insert(&mut out, "id", json!("a1"));
        assert_eq!(
            Value::Object(out),
            json!({"id": "a1", "sensors": {"temp": 20, "hum": 40}})
        );
    }

    #[test]
    fn json_garbage() {
        let layout = Layout::Json;
        assert!(matches!(
            layout.decode(b"[1,2]"),
            Err(LayoutError::NotAnObject)
        ));
        assert!(matches!(
            layout.decode(b"{\"a\":"),
            Err(LayoutError::Json(_))
        ));
        assert!(matches!(layout.decode(b""), Err(LayoutError::Json(_))));
        assert!(matches!(
            layout.decode(b"\xFF\xFE"),
            Err(LayoutError::Json(_))
        ));
        let deep = "[".repeat(10_000);
        assert!(matches!(
            layout.decode(deep.as_bytes()),
            Err(LayoutError::Json(_))
        ));
    }
}
