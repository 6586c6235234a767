//! [`ThingType`]: what a kind of device offers (properties, actions, events) and how gateways reach
//! it (`bindings`), loaded from a TOML data file so a new kind of device needs no new code. The
//! file format is described, with an example, in `device-models/types/README.md`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Number, Value};

use crate::key_path::KeyPath;
use crate::names::is_valid_name;
use crate::schema::{DataSchema, DefinitionError, DefinitionRule, SchemaType};

/// Action timeout used when a type gives none.
pub const DEFAULT_ACTION_TIMEOUT_MS: u64 = 10_000;
/// Longest action timeout a type may ask for; a device that needs longer should answer at once and
/// report completion as an event.
pub const MAX_ACTION_TIMEOUT_MS: u64 = 300_000;

/// A kind of device: its properties, actions, events and protocol bindings.
///
/// Built from TOML by [`ThingType::from_toml`] or a [`TypeCatalog`](crate::TypeCatalog), which
/// validate it; a type built in code should be checked with [`ThingType::validate`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThingType {
    /// Unique id of the type, a valid name (`thermostat`).
    pub id: String,
    /// Human name of the type.
    pub title: String,
    /// What the device is and does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Version of this definition, free text (`1.0`), so a change to a type can be told apart.
    pub version: String,
    /// Values the device has, by name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub properties: BTreeMap<String, Property>,
    /// Operations the device performs on request, by name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub actions: BTreeMap<String, Action>,
    /// Things the device tells without being asked, by name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub events: BTreeMap<String, Event>,
    /// Per protocol (`mqtt`, `coap`, `udp`, ...), how the device's traffic maps onto the model.
    ///
    /// Kept as raw TOML here: each gateway's binding module parses its own table, so protocol
    /// details stay with the protocol while the type still round-trips and exports whole.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub bindings: BTreeMap<String, toml::Table>,
}

/// Whether a property is live device state or descriptive metadata.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PropertyKind {
    /// Live state the device reports (temperature, relay on/off); observable, and settable as a
    /// desired value when writable.
    #[default]
    State,
    /// Metadata (firmware version, location) kept in the thing's `info`; when writable, people
    /// edit it through `update_info` rather than by sending it to the device.
    Info,
}

/// One property: the schema of its value, whether it can be written, and its kind.
///
/// In TOML the schema keys sit beside `writable` and `kind` in the property's table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(from = "PropertyRepr", into = "PropertyRepr")]
pub struct Property {
    /// Type and limits of the value.
    pub schema: DataSchema,
    /// For state, whether apps may set a desired value; for info, whether people may edit it.
    pub writable: bool,
    /// State or info.
    pub kind: PropertyKind,
}

/// An operation a device performs on request, with a reply.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Action {
    /// Short human name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// What the action does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Schema of the input; none means the action takes no input.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<DataSchema>,
    /// Schema of the reply; none means the reply carries no value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<DataSchema>,
    /// How long the hub waits for the device's reply, 1 to [`MAX_ACTION_TIMEOUT_MS`].
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
}

fn default_timeout_ms() -> u64 {
    DEFAULT_ACTION_TIMEOUT_MS
}

/// Something a device tells on its own (an alarm went off), with an optional payload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Event {
    /// Short human name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// What the event means.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Schema of the payload; none means the event carries no value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<DataSchema>,
}

impl ThingType {
    /// Checks the whole definition: names, texts, every schema and every timeout. The error names
    /// the key path of the first problem.
    pub fn validate(&self) -> Result<(), DefinitionError> {
        let root = KeyPath::root();
        check_name(&self.id, &root.key("id"))?;
        check_not_blank(&self.title, &root.key("title"))?;
        check_not_blank(&self.version, &root.key("version"))?;
        for (name, property) in &self.properties {
            let at = root.key("properties").key(name);
            check_name(name, &at)?;
            property.schema.validate(&at)?;
        }
        for (name, action) in &self.actions {
            let at = root.key("actions").key(name);
            check_name(name, &at)?;
            if let Some(input) = &action.input {
                input.validate(&at.key("input"))?;
            }
            if let Some(output) = &action.output {
                output.validate(&at.key("output"))?;
            }
            if !(1..=MAX_ACTION_TIMEOUT_MS).contains(&action.timeout_ms) {
                return Err(DefinitionError {
                    path: at.key("timeout_ms"),
                    rule: DefinitionRule::TimeoutOutOfRange {
                        timeout_ms: action.timeout_ms,
                        max: MAX_ACTION_TIMEOUT_MS,
                    },
                });
            }
        }
        for (name, event) in &self.events {
            let at = root.key("events").key(name);
            check_name(name, &at)?;
            if let Some(payload) = &event.payload {
                payload.validate(&at.key("payload"))?;
            }
        }
        for protocol in self.bindings.keys() {
            check_name(protocol, &root.key("bindings").key(protocol))?;
        }
        Ok(())
    }

    /// The property with this name, if the type has it.
    pub fn property(&self, name: &str) -> Option<&Property> {
        self.properties.get(name)
    }

    /// The action with this name, if the type has it.
    pub fn action(&self, name: &str) -> Option<&Action> {
        self.actions.get(name)
    }

    /// The event with this name, if the type has it.
    pub fn event(&self, name: &str) -> Option<&Event> {
        self.events.get(name)
    }

    /// The raw binding table for a protocol, for that protocol's binding parser.
    pub fn binding(&self, protocol: &str) -> Option<&toml::Table> {
        self.bindings.get(protocol)
    }

    /// Properties of one kind, in name order.
    pub fn properties_of(&self, kind: PropertyKind) -> impl Iterator<Item = (&str, &Property)> {
        self.properties
            .iter()
            .filter(move |(_, p)| p.kind == kind)
            .map(|(name, p)| (name.as_str(), p))
    }
}

fn check_name(name: &str, at: &KeyPath) -> Result<(), DefinitionError> {
    if is_valid_name(name) {
        Ok(())
    } else {
        Err(DefinitionError {
            path: at.clone(),
            rule: DefinitionRule::InvalidName {
                name: name.to_owned(),
            },
        })
    }
}

fn check_not_blank(text: &str, at: &KeyPath) -> Result<(), DefinitionError> {
    if text.trim().is_empty() {
        Err(DefinitionError {
            path: at.clone(),
            rule: DefinitionRule::Empty,
        })
    } else {
        Ok(())
    }
}

/// The flat TOML form of a [`Property`]: schema keys beside `writable` and `kind`.
///
/// serde cannot combine `flatten` with `deny_unknown_fields`, so the schema keys are repeated here.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct PropertyRepr {
    #[serde(rename = "type")]
    schema_type: SchemaType,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    writable: bool,
    #[serde(default)]
    kind: PropertyKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    title: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    unit: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    minimum: Option<Number>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    maximum: Option<Number>,
    #[serde(rename = "enum", default, skip_serializing_if = "Option::is_none")]
    enum_values: Option<Vec<Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    min_length: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    max_length: Option<u64>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    properties: BTreeMap<String, DataSchema>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    required: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    items: Option<Box<DataSchema>>,
}

impl From<PropertyRepr> for Property {
    fn from(r: PropertyRepr) -> Self {
        Self {
            schema: DataSchema {
                schema_type: r.schema_type,
                title: r.title,
                description: r.description,
                unit: r.unit,
                minimum: r.minimum,
                maximum: r.maximum,
                enum_values: r.enum_values,
                min_length: r.min_length,
                max_length: r.max_length,
                properties: r.properties,
                required: r.required,
                items: r.items,
            },
            writable: r.writable,
            kind: r.kind,
        }
    }
}

impl From<Property> for PropertyRepr {
    fn from(p: Property) -> Self {
        let s = p.schema;
        Self {
            schema_type: s.schema_type,
            writable: p.writable,
            kind: p.kind,
            title: s.title,
            description: s.description,
            unit: s.unit,
            minimum: s.minimum,
            maximum: s.maximum,
            enum_values: s.enum_values,
            min_length: s.min_length,
            max_length: s.max_length,
            properties: s.properties,
            required: s.required,
            items: s.items,
        }
    }
}
