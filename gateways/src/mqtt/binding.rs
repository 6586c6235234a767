//! `[bindings.mqtt]`: how firmware with its own topics (Tasmota, Shelly, zigbee2mqtt style) maps
//! onto a thing type, so it can be modelled without changing it.
//!
//! ```toml
//! [bindings.mqtt]
//! # {name} is the device's own name (Tasmota's "Topic"), the thing id unless registered
//! # otherwise; {id} is the thing id. Each topic holds exactly one of them, as a whole level.
//! status = { topic = "tele/{name}/LWT", online = "Online", offline = "Offline" }
//!
//! [[bindings.mqtt.reports]]              # device → hub: state and info values
//! topic = "tele/{name}/SENSOR"
//! format = "json"                        # json (default) | text
//! properties = { temperature = "/AM2301/Temperature", humidity = "/AM2301/Humidity" }
//!
//! [[bindings.mqtt.reports]]
//! topic = "stat/{name}/POWER"
//! format = "text"
//! properties = { on = { path = "", map = { ON = true, OFF = false } } }
//!
//! [bindings.mqtt.desired.on]             # hub → device: a writable property
//! topic = "cmnd/{name}/POWER"
//! payload = "{value}"                    # default; {value} {id} {name}
//! map = { "true" = "ON", "false" = "OFF" }
//!
//! [bindings.mqtt.actions.toggle]         # hub → device: an action, and where it answers
//! topic = "cmnd/{name}/POWER"
//! payload = "TOGGLE"                     # {input} {correlation} {id} {name}
//! reply = { topic = "stat/{name}/POWER", format = "text", value = { map = { ON = true, OFF = false } } }
//! ```
//!
//! A value is a JSON pointer into the payload (`""` is the whole payload), optionally with a `map`
//! from the text found there to the property's value. A text payload is the value itself (a number
//! or `true`/`false` when it reads as one). Fields missing from a report are skipped; a value
//! outside its `map` rejects the message. A reply without a correlation id answers the oldest
//! pending call of an action replying on that topic. Properties and actions without a binding
//! entry keep the default conventions (`things/<id>/desired`, `things/<id>/actions/<name>`), and
//! the conventional `things/<id>/...` topics always work too.

use std::collections::BTreeMap;

use bytes::Bytes;
use device_models::{PropertyKind, ThingType};
use serde::Deserialize;
use serde_json::{Map, Value};

use super::error::{BindingError, Rejection};
use super::topics::{Placeholder, TopicTemplate};

/// The compiled `[bindings.mqtt]` table of one thing type.
#[derive(Debug, Clone, PartialEq)]
pub struct MqttBinding {
    type_id: String,
    status: Option<StatusRule>,
    reports: Vec<ReportRule>,
    desired: BTreeMap<String, CommandRule>,
    actions: BTreeMap<String, ActionRule>,
}

#[derive(Debug, Clone, PartialEq)]
struct StatusRule {
    topic: TopicTemplate,
    online: String,
    offline: String,
}

#[derive(Debug, Clone, PartialEq)]
struct ReportRule {
    topic: TopicTemplate,
    format: PayloadFormat,
    properties: Vec<(String, ValueRule)>,
    info: Vec<(String, ValueRule)>,
}

#[derive(Debug, Clone, PartialEq)]
struct CommandRule {
    topic: TopicTemplate,
    payload: String,
    map: BTreeMap<String, String>,
    retain: bool,
}

#[derive(Debug, Clone, PartialEq)]
struct ActionRule {
    topic: TopicTemplate,
    payload: String,
    reply: Option<ReplyRule>,
}

#[derive(Debug, Clone, PartialEq)]
struct ReplyRule {
    topic: TopicTemplate,
    format: PayloadFormat,
    value: ValueRule,
}

#[derive(Debug, Clone, PartialEq)]
struct ValueRule {
    pointer: String,
    map: Option<BTreeMap<String, Value>>,
}

/// How a bound topic's payload is read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PayloadFormat {
    /// A JSON document; values are found by JSON pointer.
    #[default]
    Json,
    /// UTF-8 text that is the value itself.
    Text,
}

// ---- the TOML shape ----

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Spec {
    status: Option<StatusSpec>,
    #[serde(default)]
    reports: Vec<ReportSpec>,
    #[serde(default)]
    desired: BTreeMap<String, CommandSpec>,
    #[serde(default)]
    actions: BTreeMap<String, ActionSpec>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StatusSpec {
    topic: String,
    #[serde(default = "online")]
    online: String,
    #[serde(default = "offline")]
    offline: String,
}

fn online() -> String {
    "online".into()
}

fn offline() -> String {
    "offline".into()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReportSpec {
    topic: String,
    #[serde(default)]
    format: PayloadFormat,
    #[serde(default)]
    properties: BTreeMap<String, ValueSpec>,
    #[serde(default)]
    info: BTreeMap<String, ValueSpec>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum ValueSpec {
    Path(String),
    Mapped(MappedSpec),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MappedSpec {
    #[serde(default)]
    path: String,
    map: BTreeMap<String, toml::Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CommandSpec {
    topic: String,
    #[serde(default = "value_payload")]
    payload: String,
    #[serde(default)]
    map: BTreeMap<String, String>,
    #[serde(default)]
    retain: bool,
}

fn value_payload() -> String {
    "{value}".into()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ActionSpec {
    topic: String,
    #[serde(default = "input_payload")]
    payload: String,
    reply: Option<ReplySpec>,
}

fn input_payload() -> String {
    "{input}".into()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReplySpec {
    topic: String,
    #[serde(default)]
    format: PayloadFormat,
    value: Option<ValueSpec>,
}

/// What a device's message on a bound topic said.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Decoded {
    /// State values.
    pub reported: Map<String, Value>,
    /// Info values.
    pub info: Map<String, Value>,
    /// `Some(true)` online, `Some(false)` offline.
    pub status: Option<bool>,
    /// The reply value, for actions answering on this topic.
    pub reply: Option<Value>,
    /// Whether the topic is where some action answers.
    pub is_reply_topic: bool,
}

/// One message the gateway sends to a device.
#[derive(Debug, Clone, PartialEq)]
pub struct Outgoing {
    /// The topic.
    pub topic: String,
    /// The payload.
    pub payload: Bytes,
    /// Retained by the broker.
    pub retain: bool,
}

impl MqttBinding {
    /// Parses and checks the type's `[bindings.mqtt]` against the type; `Ok(None)` when it has
    /// none.
    pub fn from_type(ty: &ThingType) -> Result<Option<Self>, BindingError> {
        let Some(table) = ty.binding("mqtt") else {
            return Ok(None);
        };
        let spec: Spec =
            toml::Value::Table(table.clone())
                .try_into()
                .map_err(|e: toml::de::Error| BindingError::Shape {
                    type_id: ty.id.clone(),
                    message: e.message().to_owned(),
                })?;
        Compiler { ty }.compile(spec).map(Some)
    }

    /// The type this binding belongs to.
    pub fn type_id(&self) -> &str {
        &self.type_id
    }

    /// Every topic template the binding uses, device → hub and hub → device.
    pub fn templates(&self) -> impl Iterator<Item = &TopicTemplate> {
        self.status
            .iter()
            .map(|s| &s.topic)
            .chain(self.reports.iter().map(|r| &r.topic))
            .chain(self.desired.values().map(|d| &d.topic))
            .chain(
                self.actions.values().flat_map(|a| {
                    std::iter::once(&a.topic).chain(a.reply.as_ref().map(|r| &r.topic))
                }),
            )
    }

    /// Whether `topic` is one the device publishes on (status, reports or replies).
    pub fn is_device_topic(&self, topic: &str) -> bool {
        self.status.iter().any(|s| s.topic.capture(topic).is_some())
            || self
                .reports
                .iter()
                .any(|r| r.topic.capture(topic).is_some())
            || self
                .actions
                .values()
                .filter_map(|a| a.reply.as_ref())
                .any(|r| r.topic.capture(topic).is_some())
    }

    /// Reads a device's message on one of its bound topics.
    pub fn decode(&self, topic: &str, payload: &[u8]) -> Result<Decoded, Rejection> {
        let mut out = Decoded::default();
        let mut doc = LazyDoc::new(payload);
        if let Some(status) = &self.status
            && status.topic.capture(topic).is_some()
        {
            let text = doc.text()?.trim();
            out.status = Some(if text == status.online {
                true
            } else if text == status.offline {
                false
            } else {
                return Err(Rejection::Malformed(format!(
                    "status {text:?} is neither {:?} nor {:?}",
                    status.online, status.offline
                )));
            });
        }
        for report in self
            .reports
            .iter()
            .filter(|r| r.topic.capture(topic).is_some())
        {
            let value = doc.value(report.format)?;
            for (name, rule) in &report.properties {
                if let Some(v) = rule.extract(value)? {
                    out.reported.insert(name.clone(), v);
                }
            }
            for (name, rule) in &report.info {
                if let Some(v) = rule.extract(value)? {
                    out.info.insert(name.clone(), v);
                }
            }
        }
        for reply in self.actions.values().filter_map(|a| a.reply.as_ref()) {
            if reply.topic.capture(topic).is_some() {
                out.is_reply_topic = true;
                let value = doc.value(reply.format)?;
                out.reply = reply.value.extract(value)?;
            }
        }
        Ok(out)
    }

    /// Whether the action answers on `topic`.
    pub fn action_replies_on(&self, action: &str, topic: &str) -> bool {
        self.actions
            .get(action)
            .and_then(|a| a.reply.as_ref())
            .is_some_and(|r| r.topic.capture(topic).is_some())
    }

    /// Whether the action has a binding entry.
    pub fn has_action(&self, action: &str) -> bool {
        self.actions.contains_key(action)
    }

    /// Messages for the desired values that have a binding entry, and the values left for the
    /// conventional `things/<id>/desired`.
    pub fn encode_desired(
        &self,
        id: &str,
        name: &str,
        values: &Map<String, Value>,
    ) -> (Vec<Outgoing>, Map<String, Value>) {
        let mut out = Vec::new();
        let mut rest = Map::new();
        for (prop, value) in values {
            let Some(rule) = self.desired.get(prop) else {
                rest.insert(prop.clone(), value.clone());
                continue;
            };
            let text = scalar_text(value);
            let mapped = rule.map.get(&text).cloned().unwrap_or(text);
            let payload = render(&rule.payload, |key| match key {
                "value" => Some(mapped.clone()),
                "id" => Some(id.to_owned()),
                "name" => Some(name.to_owned()),
                _ => None,
            });
            out.push(Outgoing {
                topic: fill(&rule.topic, id, name),
                payload: Bytes::from(payload),
                retain: rule.retain,
            });
        }
        (out, rest)
    }

    /// The message that invokes a bound action; `None` when the action has no binding entry.
    pub fn encode_action(
        &self,
        id: &str,
        name: &str,
        action: &str,
        input: &Value,
        correlation: &str,
    ) -> Option<Outgoing> {
        let rule = self.actions.get(action)?;
        let payload = render(&rule.payload, |key| match key {
            "input" => Some(match input {
                Value::Null => String::new(),
                v => scalar_text(v),
            }),
            "correlation" => Some(correlation.to_owned()),
            "id" => Some(id.to_owned()),
            "name" => Some(name.to_owned()),
            _ => None,
        });
        Some(Outgoing {
            topic: fill(&rule.topic, id, name),
            payload: Bytes::from(payload),
            retain: false,
        })
    }
}

/// A template's topic for one device.
pub fn fill(template: &TopicTemplate, id: &str, name: &str) -> String {
    template.render(match template.placeholder() {
        Placeholder::Id => id,
        Placeholder::Name => name,
    })
}

/// A value as the text firmware expects: strings bare, everything else as JSON.
fn scalar_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        v => v.to_string(),
    }
}

/// Replaces `{key}` placeholders; unknown keys stay as written.
fn render(template: &str, lookup: impl Fn(&str) -> Option<String>) -> String {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(start) = rest.find('{') {
        out.push_str(&rest[..start]);
        let after = &rest[start + 1..];
        match after.find('}').map(|end| (&after[..end], end)) {
            Some((key, end)) if lookup(key).is_some() => {
                out.push_str(&lookup(key).unwrap_or_default());
                rest = &after[end + 1..];
            }
            _ => {
                out.push('{');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// Placeholder keys in a payload template: `{word}` with a lowercase identifier inside. Other
/// braces (JSON in the template) are text.
fn placeholders(template: &str) -> Vec<&str> {
    let mut keys = Vec::new();
    let mut rest = template;
    while let Some(start) = rest.find('{') {
        let after = &rest[start + 1..];
        match after.find('}').map(|end| &after[..end]) {
            Some(key)
                if !key.is_empty() && key.bytes().all(|b| b.is_ascii_lowercase() || b == b'_') =>
            {
                keys.push(key);
                rest = &after[key.len() + 1..];
            }
            _ => rest = after,
        }
    }
    keys
}

impl ValueRule {
    fn extract(&self, doc: &Value) -> Result<Option<Value>, Rejection> {
        let Some(found) = doc.pointer(&self.pointer) else {
            return Ok(None);
        };
        let Some(map) = &self.map else {
            return Ok(Some(found.clone()));
        };
        let key = scalar_text(found);
        match map.get(&key) {
            Some(v) => Ok(Some(v.clone())),
            None => Err(Rejection::Malformed(format!(
                "{key:?} at {:?} is not one of {:?}",
                self.pointer,
                map.keys().collect::<Vec<_>>()
            ))),
        }
    }
}

/// The payload, parsed at most once per format.
struct LazyDoc<'p> {
    payload: &'p [u8],
    json: Option<Value>,
    text: Option<Value>,
}

impl<'p> LazyDoc<'p> {
    fn new(payload: &'p [u8]) -> Self {
        Self {
            payload,
            json: None,
            text: None,
        }
    }

    fn text(&self) -> Result<&'p str, Rejection> {
        std::str::from_utf8(self.payload)
            .map_err(|_| Rejection::Malformed("payload is not UTF-8 text".into()))
    }

    fn value(&mut self, format: PayloadFormat) -> Result<&Value, Rejection> {
        match format {
            PayloadFormat::Json => {
                if self.json.is_none() {
                    let v: Value = serde_json::from_slice(self.payload)
                        .map_err(|e| Rejection::Malformed(format!("not JSON: {e}")))?;
                    self.json = Some(v);
                }
                Ok(self.json.get_or_insert(Value::Null))
            }
            PayloadFormat::Text => {
                if self.text.is_none() {
                    let text = self.text()?.trim();
                    let v = match serde_json::from_str::<Value>(text) {
                        Ok(v @ (Value::Number(_) | Value::Bool(_))) => v,
                        _ => Value::String(text.to_owned()),
                    };
                    self.text = Some(v);
                }
                Ok(self.text.get_or_insert(Value::Null))
            }
        }
    }
}

struct Compiler<'t> {
    ty: &'t ThingType,
}

impl Compiler<'_> {
    fn invalid(&self, at: impl Into<String>, problem: impl Into<String>) -> BindingError {
        BindingError::Invalid {
            type_id: self.ty.id.clone(),
            at: at.into(),
            problem: problem.into(),
        }
    }

    fn template(&self, at: &str, text: &str) -> Result<TopicTemplate, BindingError> {
        TopicTemplate::parse(text).map_err(|e| self.invalid(at, e.to_string()))
    }

    fn value(
        &self,
        at: &str,
        spec: ValueSpec,
        format: PayloadFormat,
    ) -> Result<ValueRule, BindingError> {
        let (pointer, map) = match spec {
            ValueSpec::Path(p) => (p, None),
            ValueSpec::Mapped(m) => {
                let mut map = BTreeMap::new();
                for (k, v) in m.map {
                    let v = serde_json::to_value(v)
                        .map_err(|e| self.invalid(format!("{at}.map.{k}"), e.to_string()))?;
                    map.insert(k, v);
                }
                (m.path, Some(map))
            }
        };
        if !(pointer.is_empty() || pointer.starts_with('/')) {
            return Err(self.invalid(
                at,
                format!("{pointer:?} is not a JSON pointer (\"\" or starting with /)"),
            ));
        }
        if format == PayloadFormat::Text && !pointer.is_empty() {
            return Err(self.invalid(at, "a text payload has no path: use \"\""));
        }
        Ok(ValueRule { pointer, map })
    }

    fn payload(&self, at: &str, text: &str, allowed: &[&str]) -> Result<(), BindingError> {
        match placeholders(text)
            .into_iter()
            .find(|k| !allowed.contains(k))
        {
            Some(k) => Err(self.invalid(
                at,
                format!("unknown placeholder {{{k}}}; use one of {allowed:?}"),
            )),
            None => Ok(()),
        }
    }

    fn compile(&self, spec: Spec) -> Result<MqttBinding, BindingError> {
        let status = match spec.status {
            None => None,
            Some(s) => Some(StatusRule {
                topic: self.template("status.topic", &s.topic)?,
                online: s.online,
                offline: s.offline,
            }),
        };
        let mut reports = Vec::new();
        for (i, r) in spec.reports.into_iter().enumerate() {
            let at = format!("reports[{i}]");
            let topic = self.template(&format!("{at}.topic"), &r.topic)?;
            let mut properties = Vec::new();
            for (name, v) in r.properties {
                let where_ = format!("{at}.properties.{name}");
                match self.ty.property(&name) {
                    Some(p) if p.kind == PropertyKind::State => {}
                    Some(_) => return Err(self.invalid(where_, "is an info property")),
                    None => return Err(self.invalid(where_, "is not a property of the type")),
                }
                properties.push((name, self.value(&where_, v, r.format)?));
            }
            let mut info = Vec::new();
            for (name, v) in r.info {
                let where_ = format!("{at}.info.{name}");
                match self.ty.property(&name) {
                    Some(p) if p.kind == PropertyKind::Info => {}
                    Some(_) => return Err(self.invalid(where_, "is a state property")),
                    None => return Err(self.invalid(where_, "is not a property of the type")),
                }
                info.push((name, self.value(&where_, v, r.format)?));
            }
            reports.push(ReportRule {
                topic,
                format: r.format,
                properties,
                info,
            });
        }
        let mut desired = BTreeMap::new();
        for (name, d) in spec.desired {
            let at = format!("desired.{name}");
            match self.ty.property(&name) {
                Some(p) if p.kind == PropertyKind::State && p.writable => {}
                _ => return Err(self.invalid(&at, "is not a writable state property")),
            }
            self.payload(
                &format!("{at}.payload"),
                &d.payload,
                &["value", "id", "name"],
            )?;
            desired.insert(
                name,
                CommandRule {
                    topic: self.template(&format!("{at}.topic"), &d.topic)?,
                    payload: d.payload,
                    map: d.map,
                    retain: d.retain,
                },
            );
        }
        let mut actions = BTreeMap::new();
        for (name, a) in spec.actions {
            let at = format!("actions.{name}");
            if self.ty.action(&name).is_none() {
                return Err(self.invalid(&at, "is not an action of the type"));
            }
            self.payload(
                &format!("{at}.payload"),
                &a.payload,
                &["input", "correlation", "id", "name"],
            )?;
            let reply = match a.reply {
                None => None,
                Some(r) => Some(ReplyRule {
                    topic: self.template(&format!("{at}.reply.topic"), &r.topic)?,
                    format: r.format,
                    value: self.value(
                        &format!("{at}.reply.value"),
                        r.value.unwrap_or(ValueSpec::Path(String::new())),
                        r.format,
                    )?,
                }),
            };
            actions.insert(
                name,
                ActionRule {
                    topic: self.template(&format!("{at}.topic"), &a.topic)?,
                    payload: a.payload,
                    reply,
                },
            );
        }
        Ok(MqttBinding {
            type_id: self.ty.id.clone(),
            status,
            reports,
            desired,
            actions,
        })
    }
}

#[cfg(test)]
mod tests;
