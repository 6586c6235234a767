//! [`DeviceModel`]: a thing type together with the frame codec compiled from its
//! `[bindings.frame]`, and the rules that turn decoded fields into device events.

use std::sync::Arc;

use device_models::frames::{FrameBinding, FrameCodec, FrameConfigError};
use device_models::{PropertyKind, SchemaType, ThingType};
use serde_json::{Map, Value};
use thiserror::Error;

/// The binding protocol name raw listeners read from a thing type.
pub const FRAME_BINDING: &str = "frame";

/// A thing type that raw devices cannot use.
#[derive(Debug, Error)]
pub enum ModelError {
    /// The type has no `[bindings.frame]` table.
    #[error("thing type `{0}` has no [bindings.frame]")]
    NoFrameBinding(String),
    /// The type's `[bindings.frame]` does not parse or does not make sense.
    #[error("thing type `{type_id}`: bindings.frame.{source}")]
    Binding {
        /// The type.
        type_id: String,
        /// Which key, and why.
        #[source]
        source: Box<FrameConfigError>,
    },
}

/// A thing type and its compiled frame codec, shared (`Arc`) by a listener's tasks.
#[derive(Debug)]
pub struct DeviceModel {
    thing_type: Arc<ThingType>,
    binding: FrameBinding,
    codec: FrameCodec,
}

/// Decoded values sorted by what the thing type says they are.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct SortedValues {
    /// State properties: a `Reported` event.
    pub state: Map<String, Value>,
    /// Info properties: an `Info` event (or the `Hello`'s info).
    pub info: Map<String, Value>,
    /// How many values name no property of the type (dropped).
    pub unknown: usize,
}

impl DeviceModel {
    /// Compiles the `[bindings.frame]` of `thing_type`.
    pub fn new(thing_type: Arc<ThingType>) -> Result<Self, ModelError> {
        let table = thing_type
            .binding(FRAME_BINDING)
            .ok_or_else(|| ModelError::NoFrameBinding(thing_type.id.clone()))?;
        let compiled = FrameBinding::from_toml(table)
            .and_then(|binding| FrameCodec::new(&binding).map(|codec| (binding, codec)));
        let (binding, codec) = compiled.map_err(|source| ModelError::Binding {
            type_id: thing_type.id.clone(),
            source: Box::new(source),
        })?;
        Ok(Self {
            thing_type,
            binding,
            codec,
        })
    }

    /// The `[bindings.frame]` table as read.
    pub fn binding(&self) -> &FrameBinding {
        &self.binding
    }

    /// The thing type.
    pub fn thing_type(&self) -> &Arc<ThingType> {
        &self.thing_type
    }

    /// The compiled `[bindings.frame]`.
    pub fn codec(&self) -> &FrameCodec {
        &self.codec
    }

    /// Splits decoded values into state and info properties of the type; the rest (a reply's
    /// `ok`, fields of other firmware versions) is counted and dropped, since the hub would refuse
    /// a report naming properties its type does not have.
    pub(crate) fn sort_values(&self, values: &Map<String, Value>) -> SortedValues {
        let mut sorted = SortedValues::default();
        for (name, value) in values {
            match self.thing_type.property(name).map(|p| p.kind) {
                Some(PropertyKind::State) => {
                    sorted.state.insert(name.clone(), value.clone());
                }
                Some(PropertyKind::Info) => {
                    sorted.info.insert(name.clone(), value.clone());
                }
                None => sorted.unknown += 1,
            }
        }
        sorted
    }

    /// The outcome of `action` carried by a reply frame's values:
    /// - a string `error` value makes it a failure with that message;
    /// - an action without output schema gets `null`;
    /// - an action whose output is not an object gets the one value of a one-value reply (a reply
    ///   `{"ok": true}` to an action with a boolean output gives `true`);
    /// - otherwise the values as an object.
    pub(crate) fn action_outcome(
        &self,
        action: &str,
        values: &Map<String, Value>,
    ) -> Result<Value, String> {
        if let Some(Value::String(message)) = values.get("error") {
            return Err(message.clone());
        }
        let output = self
            .thing_type
            .action(action)
            .and_then(|a| a.output.as_ref());
        match output {
            None => Ok(Value::Null),
            Some(schema) if schema.schema_type != SchemaType::Object && values.len() == 1 => {
                Ok(values.values().next().cloned().unwrap_or(Value::Null))
            }
            Some(_) => Ok(Value::Object(values.clone())),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn model() -> DeviceModel {
        let text = r#"
            id = "meter"
            title = "Meter"
            version = "1"
            [properties.voltage]
            type = "number"
            [properties.firmware]
            type = "string"
            kind = "info"
            [actions.poll]
            output = { type = "object" }
            [actions.ping]
            output = { type = "boolean" }
            [actions.reset]
            [bindings.frame]
            framing = { kind = "lines" }
            layout = { kind = "key_value" }
        "#;
        let ty = ThingType::from_toml(text, "meter.toml").unwrap();
        DeviceModel::new(Arc::new(ty)).unwrap()
    }

    fn object(value: Value) -> Map<String, Value> {
        value.as_object().cloned().unwrap()
    }

    #[test]
    fn values_are_sorted_by_property_kind() {
        let sorted = model().sort_values(&object(json!({"voltage": 1, "firmware": "2", "x": 3})));
        assert_eq!(Value::Object(sorted.state), json!({"voltage": 1}));
        assert_eq!(Value::Object(sorted.info), json!({"firmware": "2"}));
        assert_eq!(sorted.unknown, 1);
    }

    #[test]
    fn outcomes_follow_the_output_schema() {
        let m = model();
        let values = object(json!({"ok": true}));
        assert_eq!(m.action_outcome("ping", &values), Ok(json!(true)));
        assert_eq!(m.action_outcome("poll", &values), Ok(json!({"ok": true})));
        assert_eq!(m.action_outcome("reset", &values), Ok(Value::Null));
        let failed = object(json!({"error": "busy"}));
        assert_eq!(m.action_outcome("poll", &failed), Err("busy".to_owned()));
    }

    #[test]
    fn a_type_without_frame_binding_is_refused() {
        let ty = ThingType::from_toml("id = \"x\"\ntitle = \"X\"\nversion = \"1\"", "x").unwrap();
        assert!(matches!(
            DeviceModel::new(Arc::new(ty)),
            Err(ModelError::NoFrameBinding(_))
        ));
    }
}
