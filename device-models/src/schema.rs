//! [`DataSchema`]: the JSON Schema subset that W3C WoT uses to describe a value (property, action
//! input and output, event payload), how a schema definition is validated when a thing type is
//! loaded, and how a JSON value is checked against a schema.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::{Number, Value};
use thiserror::Error;

use crate::key_path::KeyPath;
use crate::value::{cmp_numbers, is_integral, render, render_list, values_equal};

/// Deepest nesting of schemas (`properties` of objects, `items` of arrays) a definition may have.
///
/// Device payloads are flat in practice; the bound keeps every walk over a schema shallow.
pub const MAX_SCHEMA_DEPTH: usize = 8;

/// The JSON type a schema accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SchemaType {
    /// Any JSON number, integral or not.
    Number,
    /// A number without a fractional part (`3` or `3.0`, as JSON Schema defines it).
    Integer,
    /// `true` or `false`.
    Boolean,
    /// A string.
    String,
    /// An object; its fields may be described by `properties` and `required`.
    Object,
    /// An array; its items may be described by `items`.
    Array,
    /// Only `null`.
    Null,
}

impl SchemaType {
    /// The name used in TOML, JSON Schema and Thing Descriptions.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Number => "number",
            Self::Integer => "integer",
            Self::Boolean => "boolean",
            Self::String => "string",
            Self::Object => "object",
            Self::Array => "array",
            Self::Null => "null",
        }
    }

    fn is_numeric(self) -> bool {
        matches!(self, Self::Number | Self::Integer)
    }
}

impl fmt::Display for SchemaType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Describes one JSON value: its type and the limits it must keep.
///
/// Keys are written in snake_case in TOML (`min_length`); the Thing Description export maps them to
/// the WoT terms (`minLength`). A schema that gives no limit accepts any value of its type; objects
/// may carry fields their schema does not list, as in JSON Schema.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataSchema {
    /// The JSON type of the value.
    #[serde(rename = "type")]
    pub schema_type: SchemaType,
    /// Short human name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// Longer human explanation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Unit of a number (`°C`, `%`, `W`); informative, never converted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
    /// Smallest accepted number, inclusive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minimum: Option<Number>,
    /// Largest accepted number, inclusive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maximum: Option<Number>,
    /// The only values accepted, when given.
    #[serde(rename = "enum", default, skip_serializing_if = "Option::is_none")]
    pub enum_values: Option<Vec<Value>>,
    /// Fewest characters of a string.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_length: Option<u64>,
    /// Most characters of a string.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_length: Option<u64>,
    /// Schemas of the fields of an object.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub properties: BTreeMap<String, DataSchema>,
    /// Fields an object must have; each must be listed in `properties`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub required: Vec<String>,
    /// Schema of every item of an array.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub items: Option<Box<DataSchema>>,
}

impl DataSchema {
    /// A schema of the given type with no limits.
    pub fn of(schema_type: SchemaType) -> Self {
        Self {
            schema_type,
            title: None,
            description: None,
            unit: None,
            minimum: None,
            maximum: None,
            enum_values: None,
            min_length: None,
            max_length: None,
            properties: BTreeMap::new(),
            required: Vec::new(),
            items: None,
        }
    }

    /// Checks that the definition is coherent: keywords fit the type, bounds are ordered, enum
    /// values fit the schema, `required` names declared fields, nesting stays within
    /// [`MAX_SCHEMA_DEPTH`]. `at` is where this schema sits in its document, for the error.
    pub fn validate(&self, at: &KeyPath) -> Result<(), DefinitionError> {
        self.validate_nested(at, 1)
    }

    fn validate_nested(&self, at: &KeyPath, depth: usize) -> Result<(), DefinitionError> {
        let fail = |key: &str, rule| {
            Err(DefinitionError {
                path: at.key(key),
                rule,
            })
        };
        if depth > MAX_SCHEMA_DEPTH {
            return Err(DefinitionError {
                path: at.clone(),
                rule: DefinitionRule::TooDeep {
                    max: MAX_SCHEMA_DEPTH,
                },
            });
        }
        let ty = self.schema_type;
        let not_for = DefinitionRule::NotForType { schema_type: ty };
        if !ty.is_numeric() {
            if self.minimum.is_some() {
                return fail("minimum", not_for);
            }
            if self.maximum.is_some() {
                return fail("maximum", not_for);
            }
            if self.unit.is_some() {
                return fail("unit", not_for);
            }
        }
        if ty != SchemaType::String {
            if self.min_length.is_some() {
                return fail("min_length", not_for);
            }
            if self.max_length.is_some() {
                return fail("max_length", not_for);
            }
        }
        if ty != SchemaType::Object {
            if !self.properties.is_empty() {
                return fail("properties", not_for);
            }
            if !self.required.is_empty() {
                return fail("required", not_for);
            }
        }
        if ty != SchemaType::Array && self.items.is_some() {
            return fail("items", not_for);
        }
        if let (Some(minimum), Some(maximum)) = (&self.minimum, &self.maximum)
            && cmp_numbers(minimum, maximum).is_gt()
        {
            return fail(
                "minimum",
                DefinitionRule::MinimumAboveMaximum {
                    minimum: minimum.clone(),
                    maximum: maximum.clone(),
                },
            );
        }
        if let (Some(min_length), Some(max_length)) = (self.min_length, self.max_length)
            && min_length > max_length
        {
            return fail(
                "min_length",
                DefinitionRule::MinLengthAboveMaxLength {
                    min_length,
                    max_length,
                },
            );
        }
        for (field, schema) in &self.properties {
            schema.validate_nested(&at.key("properties").key(field), depth + 1)?;
        }
        for (index, field) in self.required.iter().enumerate() {
            if !self.properties.contains_key(field) {
                return Err(DefinitionError {
                    path: at.key("required").index(index),
                    rule: DefinitionRule::RequiredNotDeclared {
                        field: field.clone(),
                    },
                });
            }
        }
        if let Some(items) = &self.items {
            items.validate_nested(&at.key("items"), depth + 1)?;
        }
        if let Some(values) = &self.enum_values {
            self.validate_enum(values, &at.key("enum"))?;
        }
        Ok(())
    }

    fn validate_enum(&self, values: &[Value], at: &KeyPath) -> Result<(), DefinitionError> {
        if values.is_empty() {
            return Err(DefinitionError {
                path: at.clone(),
                rule: DefinitionRule::EmptyEnum,
            });
        }
        for (index, value) in values.iter().enumerate() {
            if let Err(error) = self.check_without_enum(value, &KeyPath::root()) {
                return Err(DefinitionError {
                    path: at.index(index),
                    rule: DefinitionRule::EnumValueMismatch {
                        violation: error.violation,
                    },
                });
            }
            if values[..index].iter().any(|v| values_equal(v, value)) {
                return Err(DefinitionError {
                    path: at.index(index),
                    rule: DefinitionRule::DuplicateEnumValue {
                        value: render(value),
                    },
                });
            }
        }
        Ok(())
    }

    /// Checks a value against this schema. Returns the first rule broken, with where in the value.
    pub fn check(&self, value: &Value) -> Result<(), ValueError> {
        self.check_at(value, &KeyPath::root())
    }

    fn check_at(&self, value: &Value, at: &KeyPath) -> Result<(), ValueError> {
        self.check_without_enum(value, at)?;
        if let Some(allowed) = &self.enum_values
            && !allowed.iter().any(|a| values_equal(a, value))
        {
            return Err(ValueError {
                at: at.clone(),
                violation: Violation::NotInEnum {
                    value: render(value),
                    allowed: render_list(allowed),
                },
            });
        }
        Ok(())
    }

    fn check_without_enum(&self, value: &Value, at: &KeyPath) -> Result<(), ValueError> {
        let fail = |violation| {
            Err(ValueError {
                at: at.clone(),
                violation,
            })
        };
        let wrong_type = || Violation::WrongType {
            expected: self.schema_type,
            found: render(value),
        };
        match (self.schema_type, value) {
            (SchemaType::Null, Value::Null) | (SchemaType::Boolean, Value::Bool(_)) => Ok(()),
            (SchemaType::Number | SchemaType::Integer, Value::Number(n)) => {
                if self.schema_type == SchemaType::Integer && !is_integral(n) {
                    return fail(wrong_type());
                }
                if let Some(minimum) = &self.minimum
                    && cmp_numbers(n, minimum).is_lt()
                {
                    return fail(Violation::BelowMinimum {
                        value: n.clone(),
                        minimum: minimum.clone(),
                    });
                }
                if let Some(maximum) = &self.maximum
                    && cmp_numbers(n, maximum).is_gt()
                {
                    return fail(Violation::AboveMaximum {
                        value: n.clone(),
                        maximum: maximum.clone(),
                    });
                }
                Ok(())
            }
            (SchemaType::String, Value::String(s)) => {
                let length = s.chars().count();
                if let Some(min_length) = self.min_length
                    && (length as u64) < min_length
                {
                    return fail(Violation::TooShort { length, min_length });
                }
                if let Some(max_length) = self.max_length
                    && (length as u64) > max_length
                {
                    return fail(Violation::TooLong { length, max_length });
                }
                Ok(())
            }
            (SchemaType::Object, Value::Object(fields)) => {
                for field in &self.required {
                    if !fields.contains_key(field) {
                        return fail(Violation::MissingField {
                            field: field.clone(),
                        });
                    }
                }
                for (field, schema) in &self.properties {
                    if let Some(v) = fields.get(field) {
                        schema.check_at(v, &at.key(field))?;
                    }
                }
                Ok(())
            }
            (SchemaType::Array, Value::Array(items)) => {
                if let Some(schema) = &self.items {
                    for (index, item) in items.iter().enumerate() {
                        schema.check_at(item, &at.index(index))?;
                    }
                }
                Ok(())
            }
            _ => fail(wrong_type()),
        }
    }
}

/// Why a schema or thing type definition is rejected.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum DefinitionRule {
    /// A type id or property, action, event or binding name breaks the naming rule.
    #[error(
        "invalid name {name:?}: use 1 to {max} characters of a-z, 0-9 and _",
        max = crate::names::MAX_NAME_LEN
    )]
    InvalidName {
        /// The rejected name.
        name: String,
    },
    /// A text that must say something is empty.
    #[error("must not be empty")]
    Empty,
    /// `minimum` is larger than `maximum`.
    #[error("must be <= maximum ({minimum} > {maximum})")]
    MinimumAboveMaximum {
        /// The minimum given.
        minimum: Number,
        /// The maximum given.
        maximum: Number,
    },
    /// `min_length` is larger than `max_length`.
    #[error("must be <= max_length ({min_length} > {max_length})")]
    MinLengthAboveMaxLength {
        /// The min_length given.
        min_length: u64,
        /// The max_length given.
        max_length: u64,
    },
    /// A keyword that has no meaning for the schema's type, such as `minimum` on a string.
    #[error("does not apply to type {schema_type}")]
    NotForType {
        /// The schema's type.
        schema_type: SchemaType,
    },
    /// `enum` lists no value, so nothing would be accepted.
    #[error("must list at least one value")]
    EmptyEnum,
    /// An `enum` value is listed twice.
    #[error("repeats {value}")]
    DuplicateEnumValue {
        /// The repeated value, rendered.
        value: String,
    },
    /// An `enum` value does not fit the schema's own type or limits.
    #[error("{violation}")]
    EnumValueMismatch {
        /// How the value breaks the schema.
        violation: Violation,
    },
    /// `required` names a field that `properties` does not declare.
    #[error("names {field:?}, which is not in properties")]
    RequiredNotDeclared {
        /// The undeclared field.
        field: String,
    },
    /// Schemas nest deeper than [`MAX_SCHEMA_DEPTH`].
    #[error("schemas nest deeper than {max} levels")]
    TooDeep {
        /// The limit.
        max: usize,
    },
    /// An action timeout outside the accepted range.
    #[error("must be between 1 and {max} ms (got {timeout_ms})")]
    TimeoutOutOfRange {
        /// The timeout given.
        timeout_ms: u64,
        /// The largest accepted timeout.
        max: u64,
    },
}

/// A definition rejected at a key path of its document, e.g.
/// `properties.setpoint.minimum: must be <= maximum (35 > 5)`.
#[derive(Debug, Clone, PartialEq, Error)]
#[error("{path}: {rule}")]
pub struct DefinitionError {
    /// Where in the document.
    pub path: KeyPath,
    /// What is wrong there.
    pub rule: DefinitionRule,
}

/// The rule a value breaks.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum Violation {
    /// The value's JSON type is not the schema's (an integer schema also rejects `2.5`).
    #[error("expected {expected}, got {found}")]
    WrongType {
        /// The schema's type.
        expected: SchemaType,
        /// The value, rendered.
        found: String,
    },
    /// A number below `minimum`.
    #[error("{value} is below minimum {minimum}")]
    BelowMinimum {
        /// The value.
        value: Number,
        /// The schema's minimum.
        minimum: Number,
    },
    /// A number above `maximum`.
    #[error("{value} is above maximum {maximum}")]
    AboveMaximum {
        /// The value.
        value: Number,
        /// The schema's maximum.
        maximum: Number,
    },
    /// A value not listed in `enum`.
    #[error("{value} is not one of {allowed}")]
    NotInEnum {
        /// The value, rendered.
        value: String,
        /// The accepted values, rendered.
        allowed: String,
    },
    /// A string shorter than `min_length` characters.
    #[error("is {length} characters long, shorter than min_length {min_length}")]
    TooShort {
        /// Characters in the string.
        length: usize,
        /// The schema's min_length.
        min_length: u64,
    },
    /// A string longer than `max_length` characters.
    #[error("is {length} characters long, longer than max_length {max_length}")]
    TooLong {
        /// Characters in the string.
        length: usize,
        /// The schema's max_length.
        max_length: u64,
    },
    /// An object without one of its `required` fields.
    #[error("misses required field {field:?}")]
    MissingField {
        /// The missing field.
        field: String,
    },
}

/// A value that breaks its schema: the rule, and where inside the value (empty for the value
/// itself, `zones[1].name` for a nested field).
#[derive(Debug, Clone, PartialEq, Error)]
pub struct ValueError {
    /// Where inside the checked value.
    pub at: KeyPath,
    /// The rule broken there.
    pub violation: Violation,
}

impl fmt::Display for ValueError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.at.is_root() {
            write!(f, "{}", self.violation)
        } else {
            write!(f, "{}: {}", self.at, self.violation)
        }
    }
}

#[cfg(test)]
mod tests;
