//! Commands to devices (desired-state changes and action invocations) written as payloads from
//! text, JSON or binary templates, and how the device's replies are matched to them.
//!
//! Correlation: with `correlate = "field"`, each command frame carries a sequence number and the
//! device echoes it in a field of its reply; with `correlate = "next_frame"` (half-duplex buses)
//! the next reply frame from the device answers the oldest pending request, so the gateway sends
//! one request at a time. Either way the codec only says which correlation a frame expects or
//! carries; matching them to pending requests and timing out is the gateway's job.

use std::collections::BTreeMap;

use bytes::Bytes;
use serde_json::{Map, Value};

use super::binary::BinaryLayout;
use super::config::{
    CommandTemplate, CommandsConfig, ConfigProblem, CorrelateBy, FrameConfigError, ReplyConfig,
};
use super::errors::EncodeError;
use super::framing::Framer;
use super::template::{IdTemplate, TextTemplate};
use super::text::write_value;

/// A command for a device.
#[derive(Debug, Clone, Copy)]
pub enum Command<'a> {
    /// Desired values of writable properties, by property name.
    Set(&'a Map<String, Value>),
    /// An action invocation with its input (an object, a scalar, or null).
    Action {
        /// Action name, as in the thing type.
        name: &'a str,
        /// The action input.
        input: &'a Value,
    },
}

/// How a reply is matched to its request.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Correlation {
    /// The sequence number carried in the reply's correlation field, as text (`"17"`).
    Sequence(String),
    /// The next reply frame from the device answers its oldest pending request.
    NextFrame,
}

/// What a decoded frame says about being a reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplyInfo {
    /// Which request it answers.
    pub correlation: Correlation,
}

/// One frame of an encoded command, ready to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandFrame {
    /// The framed bytes (header, checksum, escapes and delimiters included).
    pub bytes: Bytes,
    /// The reply to wait for, if the device answers this command.
    pub reply: Option<Correlation>,
}

/// Compiled commands of one binding.
#[derive(Debug, Clone)]
pub(crate) struct Commands {
    set: Option<CompiledCommand>,
    actions: BTreeMap<String, CompiledCommand>,
}

#[derive(Debug, Clone)]
struct CompiledCommand {
    body: Body,
    /// Whether the body holds `{property}`: one frame per desired value.
    per_property: bool,
    expect_reply: bool,
}

#[derive(Debug, Clone)]
enum Body {
    Text {
        template: TextTemplate,
        bools: Option<[String; 2]>,
    },
    Json(Value),
    Binary {
        base: Vec<u8>,
        layout: BinaryLayout,
    },
}

/// What the command compiler needs to know about the rest of the binding.
pub(crate) struct CommandContext<'a> {
    pub(crate) framer: &'a Framer,
    pub(crate) lines: bool,
    pub(crate) reply: Option<&'a ReplyConfig>,
    pub(crate) id_field: Option<&'a str>,
}

impl CommandContext<'_> {
    fn sequence_field(&self) -> Option<&str> {
        self.reply
            .filter(|reply| reply.correlate == CorrelateBy::Field)
            .and_then(|reply| reply.field.as_deref())
    }
}

/// What an encoded frame's placeholders and fields are filled from.
pub(crate) struct Sources<'a> {
    pub(crate) thing_id: &'a str,
    pub(crate) seq: u32,
    pub(crate) command: Command<'a>,
    /// Desired values keyed by field name (through the `properties` mapping).
    pub(crate) wire_values: &'a Map<String, Value>,
    /// Property name → field name, for `{property}`.
    pub(crate) field_names: &'a BTreeMap<String, String>,
    pub(crate) id_field: Option<&'a str>,
    pub(crate) id_template: &'a IdTemplate,
    pub(crate) sequence_field: Option<&'a str>,
    pub(crate) correlate: Option<CorrelateBy>,
}

impl Commands {
    pub(crate) fn new(
        config: &CommandsConfig,
        context: &CommandContext<'_>,
    ) -> Result<Self, FrameConfigError> {
        let set = config
            .set
            .as_ref()
            .map(|template| CompiledCommand::new("commands.set", template, context))
            .transpose()?;
        let actions = config
            .actions
            .iter()
            .map(|(name, template)| {
                let key = format!("commands.actions.{name}");
                Ok((name.clone(), CompiledCommand::new(&key, template, context)?))
            })
            .collect::<Result<_, FrameConfigError>>()?;
        Ok(Self { set, actions })
    }

    /// Whether an action has a command.
    pub(crate) fn has_action(&self, name: &str) -> bool {
        self.actions.contains_key(name)
    }

    pub(crate) fn encode(
        &self,
        framer: &Framer,
        sources: &Sources<'_>,
    ) -> Result<Vec<CommandFrame>, EncodeError> {
        let command = match sources.command {
            Command::Set(_) => self.set.as_ref().ok_or(EncodeError::NoSetCommand)?,
            Command::Action { name, .. } => self
                .actions
                .get(name)
                .ok_or_else(|| EncodeError::UnknownAction(name.to_owned()))?,
        };
        command.encode(framer, sources)
    }
}

fn invalid(key: &str, problem: ConfigProblem) -> FrameConfigError {
    FrameConfigError::invalid(key, problem)
}

/// Every placeholder in a JSON template (keys and string values), or the first parse error.
fn json_placeholders(value: &Value, out: &mut Vec<String>) -> Result<(), &'static str> {
    match value {
        Value::String(text) => text_placeholders(text, out),
        Value::Array(items) => items
            .iter()
            .try_for_each(|item| json_placeholders(item, out)),
        Value::Object(map) => map.iter().try_for_each(|(key, item)| {
            text_placeholders(key, out)?;
            json_placeholders(item, out)
        }),
        _ => Ok(()),
    }
}

fn text_placeholders(text: &str, out: &mut Vec<String>) -> Result<(), &'static str> {
    let template = TextTemplate::parse(text)?;
    out.extend(template.placeholders().map(str::to_owned));
    Ok(())
}

impl CompiledCommand {
    fn new(
        key: &str,
        template: &CommandTemplate,
        context: &CommandContext<'_>,
    ) -> Result<Self, FrameConfigError> {
        let expect_reply = template.expect_reply.unwrap_or(context.reply.is_some());
        if expect_reply && context.reply.is_none() {
            return Err(invalid(
                &format!("{key}.expect_reply"),
                ConfigProblem::Required { because: "reply" },
            ));
        }
        if template.bools.is_some() && template.text.is_none() {
            return Err(invalid(
                &format!("{key}.bools"),
                ConfigProblem::NotApplicable("without `text`"),
            ));
        }
        let (body, placeholders, sends_sequence) =
            match (&template.text, &template.json, &template.binary) {
                (Some(text), None, None) => {
                    let text_key = format!("{key}.text");
                    let parsed = TextTemplate::parse(text)
                        .map_err(|reason| invalid(&text_key, ConfigProblem::Template(reason)))?;
                    if context.lines && parsed.literal_contains('\n') {
                        return Err(invalid(&text_key, ConfigProblem::LineEndInTemplate));
                    }
                    let placeholders: Vec<String> =
                        parsed.placeholders().map(str::to_owned).collect();
                    let sends = placeholders.iter().any(|p| p == "seq");
                    let body = Body::Text {
                        template: parsed,
                        bools: template.bools.clone(),
                    };
                    (body, placeholders, sends)
                }
                (None, Some(json), None) => {
                    let mut placeholders = Vec::new();
                    json_placeholders(json, &mut placeholders).map_err(|reason| {
                        invalid(&format!("{key}.json"), ConfigProblem::Template(reason))
                    })?;
                    let sends = placeholders.iter().any(|p| p == "seq");
                    (Body::Json(json.clone()), placeholders, sends)
                }
                (None, None, Some(binary)) => {
                    let layout = BinaryLayout::new(
                        &format!("{key}.binary.fields"),
                        binary.order,
                        Some(binary.bytes.len()),
                        &binary.fields,
                        context.framer.max_payload(),
                    )?;
                    let sequence = context.sequence_field();
                    if let Some(field) = sequence.and_then(|name| layout.field(name))
                        && !field.is_plain_integer()
                    {
                        return Err(invalid(
                            &format!("{key}.binary.fields"),
                            ConfigProblem::NotPlainInteger(field.name.clone()),
                        ));
                    }
                    let sends = sequence.is_some_and(|name| layout.field(name).is_some());
                    let body = Body::Binary {
                        base: binary.bytes.clone(),
                        layout,
                    };
                    (body, Vec::new(), sends)
                }
                _ => return Err(invalid(key, ConfigProblem::TemplateKind)),
            };
        if expect_reply
            && !sends_sequence
            && let Some(field) = context.sequence_field()
        {
            return Err(invalid(
                key,
                ConfigProblem::NoSequenceSent(field.to_owned()),
            ));
        }
        if let (Body::Binary { layout, .. }, Some(id_field)) = (&body, context.id_field)
            && let Some(field) = layout.field(id_field)
            && !field.is_plain_integer()
        {
            return Err(invalid(
                &format!("{key}.binary.fields"),
                ConfigProblem::NotPlainInteger(field.name.clone()),
            ));
        }
        Ok(Self {
            body,
            per_property: placeholders.iter().any(|p| p == "property"),
            expect_reply,
        })
    }

    fn encode(
        &self,
        framer: &Framer,
        sources: &Sources<'_>,
    ) -> Result<Vec<CommandFrame>, EncodeError> {
        let per_property: Vec<(&String, &Value)> = match (self.per_property, sources.command) {
            (true, Command::Set(values)) => values.iter().collect(),
            _ => Vec::new(),
        };
        if self.per_property && per_property.is_empty() {
            return Err(EncodeError::NothingToSet);
        }
        let rounds = per_property.len().max(1);
        let mut frames = Vec::with_capacity(rounds);
        for round in 0..rounds {
            let seq = sources
                .seq
                .wrapping_add(u32::try_from(round).unwrap_or(u32::MAX));
            let current = per_property.get(round).copied();
            let (payload, sent_seq) = self.payload(sources, seq, current)?;
            let reply = match (self.expect_reply, sources.correlate) {
                (true, Some(CorrelateBy::Field)) => Some(Correlation::Sequence(sent_seq)),
                (true, Some(CorrelateBy::NextFrame)) => Some(Correlation::NextFrame),
                _ => None,
            };
            frames.push(CommandFrame {
                bytes: framer.encode(&payload)?,
                reply,
            });
        }
        Ok(frames)
    }

    /// The payload and the sequence number as written.
    fn payload(
        &self,
        sources: &Sources<'_>,
        seq: u32,
        current: Option<(&String, &Value)>,
    ) -> Result<(Vec<u8>, String), EncodeError> {
        let resolver = Resolver {
            sources,
            seq,
            current,
        };
        match &self.body {
            Body::Text { template, bools } => {
                let text = template.render(|name| {
                    resolver
                        .value(name)
                        .map(|value| write_value(&value, bools.as_ref()))
                })?;
                Ok((text.into_bytes(), seq.to_string()))
            }
            Body::Json(template) => {
                let value = resolver.fill_json(template)?;
                let bytes = serde_json::to_vec(&value)
                    .map_err(|err| EncodeError::Layout(super::errors::LayoutError::Json(err)))?;
                Ok((bytes, seq.to_string()))
            }
            Body::Binary { base, layout } => {
                let mut frame = base.clone();
                let mut sent = seq.to_string();
                for field in layout.fields() {
                    let name = field.name.as_str();
                    if Some(name) == sources.sequence_field {
                        sent = field.write_wrapped(&mut frame, u64::from(seq))?.to_string();
                    } else if Some(name) == sources.id_field {
                        let id = sources
                            .id_template
                            .parse_number(sources.thing_id)
                            .ok_or_else(|| EncodeError::BadThingId(sources.thing_id.to_owned()))?;
                        field.write(&mut frame, &Value::from(id))?;
                    } else {
                        let value = resolver.value(name)?;
                        field.write(&mut frame, &value)?;
                    }
                }
                Ok((frame, sent))
            }
        }
    }
}

/// Looks placeholders and binary field names up in a command's sources.
struct Resolver<'a> {
    sources: &'a Sources<'a>,
    seq: u32,
    current: Option<(&'a String, &'a Value)>,
}

impl Resolver<'_> {
    fn value(&self, name: &str) -> Result<Value, EncodeError> {
        let sources = self.sources;
        let found = match (name, sources.command, self.current) {
            ("id", _, _) => {
                let id = sources
                    .id_template
                    .strip(sources.thing_id)
                    .ok_or_else(|| EncodeError::BadThingId(sources.thing_id.to_owned()))?;
                Some(Value::from(id))
            }
            ("thing_id", _, _) => Some(Value::from(sources.thing_id)),
            ("seq", _, _) => Some(Value::from(self.seq)),
            ("property", _, Some((property, _))) => Some(Value::from(
                sources
                    .field_names
                    .get(property)
                    .filter(|field| !field.starts_with('/'))
                    .unwrap_or(property)
                    .as_str(),
            )),
            ("value", _, Some((_, value))) => Some(value.clone()),
            ("action", Command::Action { name, .. }, _) => Some(Value::from(name)),
            ("input", Command::Action { input, .. }, _) => Some(input.clone()),
            ("values", Command::Set(values), _) => Some(Value::Object(values.clone())),
            ("value", Command::Action { input, .. }, _) if !input.is_object() => {
                Some(input.clone())
            }
            (_, Command::Action { input, .. }, _) => input.get(name).cloned(),
            (_, Command::Set(values), _) => values
                .get(name)
                .or_else(|| sources.wire_values.get(name))
                .cloned(),
        };
        found.ok_or_else(|| EncodeError::MissingValue(name.to_owned()))
    }

    fn fill_text(&self, text: &str) -> Result<Value, EncodeError> {
        // Templates were parsed when the codec was built; a failure here cannot happen and writes
        // the text unchanged.
        let Ok(template) = TextTemplate::parse(text) else {
            return Ok(Value::from(text));
        };
        if let Some(name) = template.single_placeholder() {
            return self.value(name);
        }
        let text = template.render(|name| self.value(name).map(|v| write_value(&v, None)))?;
        Ok(Value::from(text))
    }

    fn fill_json(&self, template: &Value) -> Result<Value, EncodeError> {
        Ok(match template {
            Value::String(text) => self.fill_text(text)?,
            Value::Array(items) => Value::Array(
                items
                    .iter()
                    .map(|item| self.fill_json(item))
                    .collect::<Result<_, _>>()?,
            ),
            Value::Object(map) => {
                let mut out = Map::new();
                for (key, item) in map {
                    let key = match self.fill_text(key)? {
                        Value::String(text) => text,
                        other => write_value(&other, None),
                    };
                    out.insert(key, self.fill_json(item)?);
                }
                Value::Object(out)
            }
            other => other.clone(),
        })
    }
}
