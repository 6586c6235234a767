//! [`FrameCodec`]: a compiled [`FrameBinding`] that reads frames into a thing id, property values
//! and reply correlation, and writes reports and commands back into frames.

use std::collections::BTreeMap;

use bytes::Bytes;
use serde_json::{Map, Value};
use thiserror::Error;

use super::command::{
    Command, CommandContext, CommandFrame, Commands, Correlation, ReplyInfo, Sources,
};
use super::config::{
    ConfigProblem, CorrelateBy, FieldMatch, FrameBinding, FrameConfigError, FramingConfig,
    LayoutConfig,
};
use super::errors::{EncodeError, LayoutError};
use super::framing::{FrameDecoder, Framer};
use super::layout::Layout;
use super::template::{IdTemplate, is_valid_thing_id};

/// What one frame says.
#[derive(Debug, Clone, PartialEq)]
pub struct DecodedFrame {
    /// The thing named by the frame's id field; `None` when the binding has no id field or the frame
    /// does not carry it, and the listener must map the peer to a thing.
    pub thing_id: Option<String>,
    /// Property values (or an action's output, for a reply), by property name.
    pub values: Map<String, Value>,
    /// Set when the frame is a reply to a command.
    pub reply: Option<ReplyInfo>,
}

/// Why a frame's payload could not be read.
#[derive(Debug, Error)]
pub enum DecodeError {
    /// A payload larger than the binding's cap.
    #[error("payload of {len} bytes exceeds the {max}-byte cap")]
    Oversize {
        /// Payload length.
        len: usize,
        /// The cap.
        max: usize,
    },
    /// Bytes that do not fit the layout.
    #[error(transparent)]
    Layout(#[from] LayoutError),
    /// An id field whose value cannot name a thing.
    #[error("id field `{field}` holds {found}, which does not make a valid thing id")]
    BadId {
        /// The id field.
        field: String,
        /// Its value (shortened).
        found: String,
    },
}

/// A compiled, validated [`FrameBinding`]: framing, checksum, layout, identification, replies and
/// commands. Immutable and cheap to share (`Arc`) between the connections of a listener.
///
/// Decoding is pure and bounded: [`FrameCodec::decode`] reads one payload of at most the binding's
/// `max_frame` bytes, so a fuzz target is `let _ = codec.decode(data);`.
#[derive(Debug, Clone)]
pub struct FrameCodec {
    framer: Framer,
    layout: Layout,
    /// Property name → field name.
    properties: BTreeMap<String, String>,
    id: Option<IdRule>,
    reply: Option<ReplyRule>,
    commands: Commands,
}

#[derive(Debug, Clone)]
struct IdRule {
    field: String,
    template: IdTemplate,
}

#[derive(Debug, Clone)]
struct ReplyRule {
    correlate: CorrelateBy,
    field: Option<String>,
    when: Option<FieldMatch>,
}

fn invalid(key: impl Into<String>, problem: ConfigProblem) -> FrameConfigError {
    FrameConfigError::invalid(key, problem)
}

/// Loose equality for `when`: numbers by value, everything else exactly.
fn same_value(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        _ => a == b,
    }
}

/// A correlation value as text: integers without a fraction, strings as they are.
fn correlation_text(value: &Value) -> Option<String> {
    match value {
        Value::String(text) => Some(text.clone()),
        Value::Number(number) => Some(match (number.as_i64(), number.as_f64()) {
            (Some(n), _) => n.to_string(),
            (None, Some(f)) if f.fract() == 0.0 && f.abs() < 2f64.powi(53) => {
                (f as i64).to_string()
            }
            _ => number.to_string(),
        }),
        _ => None,
    }
}

impl FrameCodec {
    /// Checks a binding and compiles it. Errors name the key (relative to `[bindings.frame]`) and
    /// the reason.
    pub fn new(binding: &FrameBinding) -> Result<Self, FrameConfigError> {
        let framer = Framer::new(
            &binding.framing,
            binding.checksum.as_ref(),
            binding.max_frame,
        )?;
        if let Some(field) = &binding.id_field
            && field.is_empty()
        {
            return Err(invalid("id_field", ConfigProblem::Empty));
        }
        let layout = Layout::new(
            &binding.layout,
            framer.max_payload(),
            binding.id_field.as_deref(),
        )?;
        let field_key = |key: &str, name: &str| -> Result<(), FrameConfigError> {
            if name.is_empty() {
                return Err(invalid(key, ConfigProblem::Empty));
            }
            if !layout.may_have(name) {
                return Err(invalid(key, ConfigProblem::NoSuchField(name.to_owned())));
            }
            Ok(())
        };
        for (property, field) in &binding.properties {
            if property.is_empty() {
                return Err(invalid("properties", ConfigProblem::Empty));
            }
            field_key(&format!("properties.{property}"), field)?;
        }
        let id = match &binding.id_field {
            Some(field) => {
                field_key("id_field", field)?;
                let template = match &binding.id_template {
                    Some(text) => IdTemplate::parse(text).map_err(|reason| {
                        invalid("id_template", ConfigProblem::IdTemplate(reason))
                    })?,
                    None => IdTemplate::default(),
                };
                Some(IdRule {
                    field: field.clone(),
                    template,
                })
            }
            None if binding.id_template.is_some() => {
                return Err(invalid(
                    "id_template",
                    ConfigProblem::NotApplicable("without `id_field`"),
                ));
            }
            None => None,
        };
        let reply = match &binding.reply {
            None => None,
            Some(config) => {
                match (config.correlate, &config.field) {
                    (CorrelateBy::Field, None) => {
                        return Err(invalid(
                            "reply.field",
                            ConfigProblem::Required {
                                because: "correlate = \"field\"",
                            },
                        ));
                    }
                    (CorrelateBy::Field, Some(field)) => {
                        field_key("reply.field", field)?;
                        if let LayoutConfig::Binary { fields, .. } = &binding.layout
                            && let Some(f) = fields.iter().find(|f| &f.name == field)
                            && (!f.ty.is_integer() || f.scale != 1.0 || f.offset_value != 0.0)
                        {
                            return Err(invalid(
                                "reply.field",
                                ConfigProblem::NotPlainInteger(field.clone()),
                            ));
                        }
                    }
                    (CorrelateBy::NextFrame, Some(_)) => {
                        return Err(invalid(
                            "reply.field",
                            ConfigProblem::NotApplicable("with correlate = \"next_frame\""),
                        ));
                    }
                    (CorrelateBy::NextFrame, None) => {}
                }
                if let Some(when) = &config.when {
                    field_key("reply.when.field", &when.field)?;
                }
                Some(ReplyRule {
                    correlate: config.correlate,
                    field: config.field.clone(),
                    when: config.when.clone(),
                })
            }
        };
        let commands = Commands::new(
            &binding.commands,
            &CommandContext {
                framer: &framer,
                lines: matches!(binding.framing, FramingConfig::Lines { .. }),
                reply: binding.reply.as_ref(),
                id_field: binding.id_field.as_deref(),
            },
        )?;
        Ok(Self {
            framer,
            layout,
            properties: binding.properties.clone(),
            id,
            reply,
            commands,
        })
    }

    /// The framing, checksum and size cap.
    pub fn framer(&self) -> &Framer {
        &self.framer
    }

    /// A new stream decoder for one connection, serial line or UDP listener.
    pub fn decoder(&self) -> FrameDecoder {
        self.framer.decoder()
    }

    /// Whether the binding can send this action.
    pub fn has_action(&self, name: &str) -> bool {
        self.commands.has_action(name)
    }

    /// Reads one frame's payload (as produced by the [`FrameDecoder`]).
    pub fn decode(&self, payload: &[u8]) -> Result<DecodedFrame, DecodeError> {
        let max = self.framer.max_frame();
        if payload.len() > max {
            return Err(DecodeError::Oversize {
                len: payload.len(),
                max,
            });
        }
        let fields = self.layout.decode(payload)?;
        let thing_id = match &self.id {
            None => None,
            Some(rule) => match self.layout.lookup(&fields, &rule.field) {
                None | Some(Value::Null) => None,
                Some(value) => Some(
                    rule.template
                        .format(value)
                        .filter(|id| is_valid_thing_id(id))
                        .ok_or_else(|| DecodeError::BadId {
                            field: rule.field.clone(),
                            found: value.to_string().chars().take(64).collect(),
                        })?,
                ),
            },
        };
        let reply = self.reply.as_ref().and_then(|rule| {
            if let Some(when) = &rule.when {
                let value = self.layout.lookup(&fields, &when.field)?;
                if !same_value(value, &when.equals) {
                    return None;
                }
            }
            let correlation = match (&rule.correlate, &rule.field) {
                (CorrelateBy::Field, Some(field)) => {
                    Correlation::Sequence(correlation_text(self.layout.lookup(&fields, field)?)?)
                }
                (CorrelateBy::Field, None) => return None,
                (CorrelateBy::NextFrame, _) => Correlation::NextFrame,
            };
            Some(ReplyInfo { correlation })
        });
        let values = self.properties_of(fields);
        Ok(DecodedFrame {
            thing_id,
            values,
            reply,
        })
    }

    fn properties_of(&self, mut fields: Map<String, Value>) -> Map<String, Value> {
        if !self.properties.is_empty() {
            return self
                .properties
                .iter()
                .filter_map(|(property, field)| {
                    let value = self.layout.lookup(&fields, field)?;
                    Some((property.clone(), value.clone()))
                })
                .collect();
        }
        if let Some(id) = &self.id {
            fields.remove(&id.field);
        }
        if let Some(field) = self.reply.as_ref().and_then(|r| r.field.as_ref()) {
            fields.remove(field);
        }
        fields.retain(|name, _| !name.starts_with('_'));
        fields
    }

    /// The field name a property is written under.
    fn field_of<'a>(&'a self, property: &'a str) -> &'a str {
        self.properties
            .get(property)
            .map_or(property, String::as_str)
    }

    /// Writes a device's report (property values, plus any other fields by their field name, such as
    /// a reply's sequence number) as one framed message: what a device would send. For simulated
    /// devices and tests.
    pub fn encode_report(
        &self,
        thing_id: Option<&str>,
        values: &Map<String, Value>,
    ) -> Result<Bytes, EncodeError> {
        let mut fields = Map::new();
        for (property, value) in values {
            self.layout
                .insert(&mut fields, self.field_of(property), value.clone());
        }
        if let (Some(rule), Some(thing_id)) = (&self.id, thing_id) {
            let bad_id = || EncodeError::BadThingId(thing_id.to_owned());
            // Binary id fields are numbers; text and JSON ids are written as text.
            let value = match &self.layout {
                Layout::Binary(_) => {
                    Value::from(rule.template.parse_number(thing_id).ok_or_else(bad_id)?)
                }
                _ => Value::from(rule.template.strip(thing_id).ok_or_else(bad_id)?),
            };
            self.layout.insert(&mut fields, &rule.field, value);
        }
        let payload = self.layout.encode(&fields)?;
        Ok(self.framer.encode(&payload)?)
    }

    /// Writes a command as framed bytes: one frame, or one per desired value when the `set` template
    /// uses `{property}`. Frame `i` carries sequence number `seq + i` (wrapping); each says which
    /// reply to wait for.
    pub fn encode_command(
        &self,
        thing_id: &str,
        command: Command<'_>,
        seq: u32,
    ) -> Result<Vec<CommandFrame>, EncodeError> {
        let wire_values: Map<String, Value> = match command {
            Command::Set(values) => values
                .iter()
                .map(|(property, value)| (self.field_of(property).to_owned(), value.clone()))
                .collect(),
            Command::Action { .. } => Map::new(),
        };
        let default_template = IdTemplate::default();
        let sources = Sources {
            thing_id,
            seq,
            command,
            wire_values: &wire_values,
            field_names: &self.properties,
            id_field: self.id.as_ref().map(|id| id.field.as_str()),
            id_template: self
                .id
                .as_ref()
                .map_or(&default_template, |id| &id.template),
            sequence_field: self
                .reply
                .as_ref()
                .filter(|r| r.correlate == CorrelateBy::Field)
                .and_then(|r| r.field.as_deref()),
            correlate: self.reply.as_ref().map(|r| r.correlate),
        };
        self.commands.encode(&self.framer, &sources)
    }
}
