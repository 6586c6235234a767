//! Checks of values against a thing's type before they are stored, published or sent to a device:
//! reported state and info from devices, desired state from apps, info edits from people, action
//! inputs and outputs, event payloads. A rejected value gives a [`CheckError`] naming the thing,
//! the property (or action, or event) and the rule, e.g.
//! `thing "th-1": property "setpoint": 40 is above maximum 35`.

use std::fmt;

use serde_json::{Map, Value};
use thiserror::Error;

use crate::schema::{DataSchema, ValueError};
use crate::thing::ThingId;
use crate::thing_type::{PropertyKind, ThingType};
use crate::value::render;

/// A value rejected for a thing.
#[derive(Debug, Clone, PartialEq, Error)]
#[error("thing \"{thing}\": {target}: {rule}")]
pub struct CheckError {
    /// The thing the value was for.
    pub thing: ThingId,
    /// The property, action or event concerned.
    pub target: Target,
    /// The rule broken.
    pub rule: CheckRule,
}

/// What a checked value was for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A property's value.
    Property(String),
    /// An action, when the action itself is unknown.
    Action(String),
    /// An action's input.
    ActionInput(String),
    /// An action's output (the device's reply).
    ActionOutput(String),
    /// An event, when the event itself is unknown.
    Event(String),
    /// An event's payload.
    EventPayload(String),
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Property(name) => write!(f, "property {name:?}"),
            Self::Action(name) => write!(f, "action {name:?}"),
            Self::ActionInput(name) => write!(f, "action {name:?} input"),
            Self::ActionOutput(name) => write!(f, "action {name:?} output"),
            Self::Event(name) => write!(f, "event {name:?}"),
            Self::EventPayload(name) => write!(f, "event {name:?} payload"),
        }
    }
}

/// The rule a value broke.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum CheckRule {
    /// The thing's type has no property, action or event of that name.
    #[error("is not defined by type {type_id:?}")]
    Undefined {
        /// The thing's type.
        type_id: String,
    },
    /// A desired value or info edit for a property that is not writable.
    #[error("is read-only")]
    ReadOnly,
    /// An info property sent as state (reported or desired).
    #[error("is an info property, not state")]
    InfoNotState,
    /// A state property sent as info.
    #[error("is a state property, not info")]
    StateNotInfo,
    /// A value where the type defines none (an action without input, an event without payload).
    #[error("takes no value, got {found}")]
    NoValueExpected {
        /// The value, rendered.
        found: String,
    },
    /// The value breaks its schema (boxed to keep the error small on the happy path).
    #[error("{0}")]
    Value(Box<ValueError>),
}

impl ThingType {
    /// Checks state reported by a device: every name is a state property of this type and every
    /// value fits its schema. A report may carry any subset of the properties; a device without a
    /// reading should leave the property out, as `null` only fits a `null`-typed property.
    pub fn check_reported(
        &self,
        thing: &ThingId,
        values: &Map<String, Value>,
    ) -> Result<(), CheckError> {
        self.check_properties(thing, values, PropertyKind::State, false)
    }

    /// Checks desired state set by an app: every name is a *writable* state property and every
    /// value fits its schema.
    pub fn check_desired(
        &self,
        thing: &ThingId,
        values: &Map<String, Value>,
    ) -> Result<(), CheckError> {
        self.check_properties(thing, values, PropertyKind::State, true)
    }

    /// Checks info reported by a device (firmware version, ...): every name is an info property
    /// of this type, writable or not, and every value fits its schema.
    pub fn check_info_reported(
        &self,
        thing: &ThingId,
        info: &Map<String, Value>,
    ) -> Result<(), CheckError> {
        self.check_properties(thing, info, PropertyKind::Info, false)
    }

    /// Checks an info edit by a person (`update_info`): every name is a *writable* info property
    /// and every value fits its schema.
    pub fn check_info_update(
        &self,
        thing: &ThingId,
        info: &Map<String, Value>,
    ) -> Result<(), CheckError> {
        self.check_properties(thing, info, PropertyKind::Info, true)
    }

    /// Checks the input of an action call.
    ///
    /// "No input" is `null` or `{}` (what a call without arguments becomes). It is accepted by an
    /// action without input, and by one whose input is an object with no required field, so
    /// optional arguments can be left out entirely.
    pub fn check_action_input(
        &self,
        thing: &ThingId,
        action: &str,
        input: &Value,
    ) -> Result<(), CheckError> {
        let Some(def) = self.action(action) else {
            return Err(self.undefined(thing, Target::Action(action.to_owned())));
        };
        check_optional(
            thing,
            Target::ActionInput(action.to_owned()),
            def.input.as_ref(),
            input,
        )
    }

    /// Checks a device's reply to an action against the action's output schema; an action without
    /// output accepts `null` or `{}`.
    pub fn check_action_output(
        &self,
        thing: &ThingId,
        action: &str,
        output: &Value,
    ) -> Result<(), CheckError> {
        let Some(def) = self.action(action) else {
            return Err(self.undefined(thing, Target::Action(action.to_owned())));
        };
        check_optional(
            thing,
            Target::ActionOutput(action.to_owned()),
            def.output.as_ref(),
            output,
        )
    }

    /// Checks an event from a device: the event exists and its payload fits; an event without
    /// payload accepts `null` or `{}`.
    pub fn check_event_payload(
        &self,
        thing: &ThingId,
        event: &str,
        payload: &Value,
    ) -> Result<(), CheckError> {
        let Some(def) = self.event(event) else {
            return Err(self.undefined(thing, Target::Event(event.to_owned())));
        };
        check_optional(
            thing,
            Target::EventPayload(event.to_owned()),
            def.payload.as_ref(),
            payload,
        )
    }

    fn check_properties(
        &self,
        thing: &ThingId,
        values: &Map<String, Value>,
        kind: PropertyKind,
        must_be_writable: bool,
    ) -> Result<(), CheckError> {
        for (name, value) in values {
            let target = || Target::Property(name.clone());
            let fail = |rule| CheckError {
                thing: thing.clone(),
                target: target(),
                rule,
            };
            let Some(property) = self.property(name) else {
                return Err(self.undefined(thing, target()));
            };
            if property.kind != kind {
                return Err(fail(match kind {
                    PropertyKind::State => CheckRule::InfoNotState,
                    PropertyKind::Info => CheckRule::StateNotInfo,
                }));
            }
            if must_be_writable && !property.writable {
                return Err(fail(CheckRule::ReadOnly));
            }
            property
                .schema
                .check(value)
                .map_err(|e| fail(CheckRule::Value(Box::new(e))))?;
        }
        Ok(())
    }

    fn undefined(&self, thing: &ThingId, target: Target) -> CheckError {
        CheckError {
            thing: thing.clone(),
            target,
            rule: CheckRule::Undefined {
                type_id: self.id.clone(),
            },
        }
    }
}

fn is_no_value(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::Object(fields) => fields.is_empty(),
        _ => false,
    }
}

fn check_optional(
    thing: &ThingId,
    target: Target,
    schema: Option<&DataSchema>,
    value: &Value,
) -> Result<(), CheckError> {
    let fail = |rule| CheckError {
        thing: thing.clone(),
        target: target.clone(),
        rule,
    };
    match schema {
        None if is_no_value(value) => Ok(()),
        None => Err(fail(CheckRule::NoValueExpected {
            found: render(value),
        })),
        Some(schema)
            if value.is_null()
                && schema.schema_type == crate::schema::SchemaType::Object
                && schema.required.is_empty() =>
        {
            Ok(())
        }
        Some(schema) => schema
            .check(value)
            .map_err(|e| fail(CheckRule::Value(Box::new(e)))),
    }
}

#[cfg(test)]
mod tests;
