//! W3C Web of Things Thing Description (TD 1.1, JSON-LD) of a thing, so any WoT consumer can
//! discover what the thing offers and how to reach it over the hub's WAMP surface.
//!
//! Forms point at the WAMP URIs of DESIGN.md §2, in extension terms of the `wamp:` prefix:
//!
//! | operation | WAMP | kwargs |
//! | --- | --- | --- |
//! | `readproperty` | call `brume.things.get` | `thing`, `property` |
//! | `writeproperty` (state) | call `brume.things.set` | `thing`, `property`; the value in `value` |
//! | `writeproperty` (info) | call `brume.things.update_info` | `thing`, `property`; the value in `value` |
//! | `observeproperty` | subscribe `brume.thing.<id>.state` | (events carry the changed properties) |
//! | `readallproperties` | call `brume.things.get` | `thing` |
//! | `writemultipleproperties` | call `brume.things.set` | `thing`; the values in `values` |
//! | `invokeaction` | call `brume.thing.<id>.action.<name>` | the input |
//! | `subscribeevent` | subscribe `brume.thing.<id>.event.<name>` | |
//!
//! The fixed kwargs of a call sit in `wamp:kwargs`. Gateways add forms of their own protocol
//! (MQTT topics, CoAP paths) through [`TdContext::extra_forms`].

use serde_json::{Map, Value, json};

use crate::schema::DataSchema;
use crate::thing::Thing;
use crate::thing_type::{Property, PropertyKind, ThingType};
use crate::uris::things as t;

/// The TD 1.1 JSON-LD context.
pub const TD_CONTEXT_V11: &str = "https://www.w3.org/2022/wot/td/v1.1";
/// Namespace of the `wamp:` extension terms (`wamp:procedure`, `wamp:topic`, `wamp:realm`,
/// `wamp:kwargs`).
pub const WAMP_NAMESPACE: &str = "https://example.invalid/brume/ns/wamp#";
/// Namespace of the `brume:` extension terms (`brume:thingType`, `brume:kind`,
/// `brume:timeoutMs`).
pub const BRUME_NAMESPACE: &str = "https://example.invalid/brume/ns/td#";
/// The W3C HTTP vocabulary (`htv:methodName` in HTTP forms).
pub const HTTP_NAMESPACE: &str = "http://www.w3.org/2011/http#";
/// The WebSocket subprotocol named in WAMP forms.
pub const WAMP_SUBPROTOCOL: &str = "wamp.2.json";

/// What a TD needs to know about the hub that serves the thing.
#[derive(Debug, Clone, PartialEq)]
pub struct TdContext {
    /// The hub's id, used in thing ids `urn:brume:<hub_id>:<thing id>`; keep it to
    /// `A-Z a-z 0-9 _ -` so the URN stays valid.
    pub hub_id: String,
    /// The hub's WAMP WebSocket URL (`ws://127.0.0.1:8080/ws`): the `href` of every WAMP form.
    pub ws_url: String,
    /// The WAMP realm the URIs live in.
    pub realm: String,
    /// How consumers authenticate.
    pub security: TdSecurity,
    /// Forms added by other protocols, appended after the WAMP forms of the affordances they
    /// select.
    pub extra_forms: Vec<ExtraForm>,
}

impl TdContext {
    /// A context for realm `brume`, no security, no extra forms.
    pub fn new(hub_id: impl Into<String>, ws_url: impl Into<String>) -> Self {
        Self {
            hub_id: hub_id.into(),
            ws_url: ws_url.into(),
            realm: "brume".to_owned(),
            security: TdSecurity::NoSec,
            extra_forms: Vec::new(),
        }
    }
}

/// The security a TD declares.
#[derive(Debug, Clone, PartialEq)]
pub enum TdSecurity {
    /// Anonymous access (the hub's default on loopback): `nosec_sc`.
    NoSec,
    /// Given security definitions, and the names of those that apply to the whole thing.
    Custom {
        /// Name to TD security scheme object (`{"scheme": "basic", ...}`).
        definitions: Map<String, Value>,
        /// Names from `definitions` that apply.
        security: Vec<String>,
    },
}

/// Which affordances an [`ExtraForm`] belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AffordanceSelector {
    /// The thing itself (root `forms`, for `readallproperties` and the like).
    Thing,
    /// One property by name.
    Property(String),
    /// Every property of one kind.
    PropertiesOfKind(PropertyKind),
    /// Every writable property of one kind (for `writeproperty` forms).
    WritablePropertiesOfKind(PropertyKind),
    /// One action by name.
    Action(String),
    /// Every action.
    AllActions,
    /// One event by name.
    Event(String),
    /// Every event.
    AllEvents,
}

/// A form another protocol adds to the TD, e.g. an MQTT topic for every state property.
///
/// In every string of `form`, `{thing}` becomes the thing id and `{name}` the affordance name, so
/// one entry can serve all things and affordances. The form must have an `href`, and an `op`
/// valid for the affordance kind (root forms must have one).
#[derive(Debug, Clone, PartialEq)]
pub struct ExtraForm {
    /// Where the form goes.
    pub selector: AffordanceSelector,
    /// The form object.
    pub form: Map<String, Value>,
}

/// Where a form is being built: the affordance kind and name, for selectors and placeholders.
enum Affordance<'a> {
    Thing,
    /// Name, kind, writable.
    Property(&'a str, PropertyKind, bool),
    Action(&'a str),
    Event(&'a str),
}

impl AffordanceSelector {
    fn matches(&self, affordance: &Affordance<'_>) -> bool {
        match (self, affordance) {
            (Self::Thing, Affordance::Thing)
            | (Self::AllActions, Affordance::Action(_))
            | (Self::AllEvents, Affordance::Event(_)) => true,
            (Self::Property(want), Affordance::Property(name, _, _))
            | (Self::Action(want), Affordance::Action(name))
            | (Self::Event(want), Affordance::Event(name)) => want == name,
            (Self::PropertiesOfKind(want), Affordance::Property(_, kind, _))
            | (Self::WritablePropertiesOfKind(want), Affordance::Property(_, kind, true)) => {
                want == kind
            }
            _ => false,
        }
    }
}

/// The Thing Description of `thing`, of type `thing_type`, served by the hub described by `ctx`.
pub fn thing_description(thing: &Thing, thing_type: &ThingType, ctx: &TdContext) -> Value {
    let forms = FormBuilder { thing, ctx };
    let mut td = Map::new();
    td.insert(
        "@context".into(),
        json!([TD_CONTEXT_V11, { "wamp": WAMP_NAMESPACE, "brume": BRUME_NAMESPACE, "htv": HTTP_NAMESPACE }]),
    );
    td.insert(
        "id".into(),
        Value::String(format!("urn:brume:{}:{}", ctx.hub_id, thing.id)),
    );
    td.insert(
        "title".into(),
        Value::String(format!("{} {}", thing_type.title, thing.id)),
    );
    if let Some(description) = &thing_type.description {
        td.insert("description".into(), Value::String(description.clone()));
    }
    td.insert("version".into(), json!({ "instance": thing_type.version }));
    td.insert(
        "created".into(),
        Value::String(crate::clock::rfc3339_from_ms(thing.created_ms)),
    );
    td.insert(
        "brume:thingType".into(),
        Value::String(thing_type.id.clone()),
    );
    let (definitions, security) = match &ctx.security {
        TdSecurity::NoSec => (
            json!({ "nosec_sc": { "scheme": "nosec" } }),
            json!(["nosec_sc"]),
        ),
        TdSecurity::Custom {
            definitions,
            security,
        } => (Value::Object(definitions.clone()), json!(security)),
    };
    td.insert("securityDefinitions".into(), definitions);
    td.insert("security".into(), security);

    let properties: Map<String, Value> = thing_type
        .properties
        .iter()
        .map(|(name, p)| (name.clone(), property_affordance(name, p, &forms)))
        .collect();
    if !properties.is_empty() {
        td.insert("properties".into(), Value::Object(properties));
    }
    let actions: Map<String, Value> = thing_type
        .actions
        .iter()
        .map(|(name, action)| {
            let mut a = Map::new();
            put_text(&mut a, "title", action.title.as_ref());
            put_text(&mut a, "description", action.description.as_ref());
            if let Some(input) = &action.input {
                a.insert("input".into(), schema_json(input));
            }
            if let Some(output) = &action.output {
                a.insert("output".into(), schema_json(output));
            }
            a.insert("synchronous".into(), Value::Bool(true));
            a.insert("brume:timeoutMs".into(), json!(action.timeout_ms));
            let uri = t::action_uri(&thing.id, name);
            let wamp = forms.call("invokeaction", &uri, None);
            a.insert(
                "forms".into(),
                forms.with_extra(vec![wamp], &Affordance::Action(name)),
            );
            (name.clone(), Value::Object(a))
        })
        .collect();
    if !actions.is_empty() {
        td.insert("actions".into(), Value::Object(actions));
    }
    let events: Map<String, Value> = thing_type
        .events
        .iter()
        .map(|(name, event)| {
            let mut e = Map::new();
            put_text(&mut e, "title", event.title.as_ref());
            put_text(&mut e, "description", event.description.as_ref());
            if let Some(payload) = &event.payload {
                e.insert("data".into(), schema_json(payload));
            }
            let uri = t::event_topic(&thing.id, name);
            let wamp = forms.subscribe(json!(["subscribeevent", "unsubscribeevent"]), &uri);
            e.insert(
                "forms".into(),
                forms.with_extra(vec![wamp], &Affordance::Event(name)),
            );
            (name.clone(), Value::Object(e))
        })
        .collect();
    if !events.is_empty() {
        td.insert("events".into(), Value::Object(events));
    }
    td.insert("forms".into(), root_forms(thing_type, &forms));
    Value::Object(td)
}

/// Builds WAMP forms for one thing.
struct FormBuilder<'a> {
    thing: &'a Thing,
    ctx: &'a TdContext,
}

impl FormBuilder<'_> {
    fn base(&self, op: Value) -> Map<String, Value> {
        let mut form = Map::new();
        form.insert("href".into(), Value::String(self.ctx.ws_url.clone()));
        form.insert("subprotocol".into(), Value::String(WAMP_SUBPROTOCOL.into()));
        form.insert(
            "contentType".into(),
            Value::String("application/json".into()),
        );
        form.insert("op".into(), op);
        form.insert("wamp:realm".into(), Value::String(self.ctx.realm.clone()));
        form
    }

    /// A form calling `procedure`, with the thing (and property) as fixed kwargs.
    fn call(&self, op: &str, procedure: &str, kwargs: Option<Value>) -> Value {
        let mut form = self.base(Value::String(op.into()));
        form.insert("wamp:procedure".into(), Value::String(procedure.into()));
        if let Some(kwargs) = kwargs {
            form.insert("wamp:kwargs".into(), kwargs);
        }
        Value::Object(form)
    }

    /// A form subscribing to `topic`.
    fn subscribe(&self, op: Value, topic: &str) -> Value {
        let mut form = self.base(op);
        form.insert("wamp:topic".into(), Value::String(topic.into()));
        Value::Object(form)
    }

    fn state_topic(&self) -> String {
        t::state_topic(self.thing.id.as_str())
    }

    /// `forms` followed by the extra forms selecting this affordance, placeholders filled in.
    fn with_extra(&self, mut forms: Vec<Value>, affordance: &Affordance<'_>) -> Value {
        let name = match affordance {
            Affordance::Thing => "",
            Affordance::Property(name, _, _)
            | Affordance::Action(name)
            | Affordance::Event(name) => name,
        };
        for extra in &self.ctx.extra_forms {
            if extra.selector.matches(affordance) {
                let mut form = Value::Object(extra.form.clone());
                fill_placeholders(&mut form, self.thing.id.as_str(), name);
                forms.push(form);
            }
        }
        Value::Array(forms)
    }
}

fn property_affordance(name: &str, property: &Property, forms: &FormBuilder<'_>) -> Value {
    let mut p = schema_map(&property.schema);
    p.insert("readOnly".into(), Value::Bool(!property.writable));
    let thing = forms.thing.id.as_str();
    let kwargs = json!({ "thing": thing, "property": name });
    let mut list = vec![forms.call("readproperty", t::GET, Some(kwargs.clone()))];
    match property.kind {
        PropertyKind::State => {
            p.insert("observable".into(), Value::Bool(true));
            list.push(forms.subscribe(
                json!(["observeproperty", "unobserveproperty"]),
                &forms.state_topic(),
            ));
            if property.writable {
                list.push(forms.call("writeproperty", t::SET, Some(kwargs)));
            }
        }
        PropertyKind::Info => {
            p.insert("observable".into(), Value::Bool(false));
            p.insert("brume:kind".into(), Value::String("info".into()));
            if property.writable {
                list.push(forms.call("writeproperty", t::UPDATE_INFO, Some(kwargs)));
            }
        }
    }
    p.insert(
        "forms".into(),
        forms.with_extra(
            list,
            &Affordance::Property(name, property.kind, property.writable),
        ),
    );
    Value::Object(p)
}

fn root_forms(thing_type: &ThingType, forms: &FormBuilder<'_>) -> Value {
    let kwargs = json!({ "thing": forms.thing.id.as_str() });
    let mut list = vec![
        forms.call("readallproperties", t::GET, Some(kwargs.clone())),
        forms.subscribe(
            json!(["observeallproperties", "unobserveallproperties"]),
            &forms.state_topic(),
        ),
    ];
    let any_writable_state = thing_type
        .properties_of(PropertyKind::State)
        .any(|(_, p)| p.writable);
    if any_writable_state {
        list.push(forms.call("writemultipleproperties", t::SET, Some(kwargs)));
    }
    forms.with_extra(list, &Affordance::Thing)
}

/// A [`DataSchema`] in TD terms (`minLength` for `min_length`, ...).
pub fn schema_json(schema: &DataSchema) -> Value {
    Value::Object(schema_map(schema))
}

fn schema_map(schema: &DataSchema) -> Map<String, Value> {
    let mut s = Map::new();
    s.insert(
        "type".into(),
        Value::String(schema.schema_type.as_str().into()),
    );
    put_text(&mut s, "title", schema.title.as_ref());
    put_text(&mut s, "description", schema.description.as_ref());
    put_text(&mut s, "unit", schema.unit.as_ref());
    if let Some(minimum) = &schema.minimum {
        s.insert("minimum".into(), Value::Number(minimum.clone()));
    }
    if let Some(maximum) = &schema.maximum {
        s.insert("maximum".into(), Value::Number(maximum.clone()));
    }
    if let Some(values) = &schema.enum_values {
        s.insert("enum".into(), Value::Array(values.clone()));
    }
    if let Some(min_length) = schema.min_length {
        s.insert("minLength".into(), json!(min_length));
    }
    if let Some(max_length) = schema.max_length {
        s.insert("maxLength".into(), json!(max_length));
    }
    if !schema.properties.is_empty() {
        let fields: Map<String, Value> = schema
            .properties
            .iter()
            .map(|(name, field)| (name.clone(), schema_json(field)))
            .collect();
        s.insert("properties".into(), Value::Object(fields));
    }
    if !schema.required.is_empty() {
        s.insert("required".into(), json!(schema.required));
    }
    if let Some(items) = &schema.items {
        s.insert("items".into(), schema_json(items));
    }
    s
}

fn put_text(map: &mut Map<String, Value>, key: &str, text: Option<&String>) {
    if let Some(text) = text {
        map.insert(key.into(), Value::String(text.clone()));
    }
}

fn fill_placeholders(value: &mut Value, thing: &str, name: &str) {
    match value {
        Value::String(s) if s.contains('{') => {
            *s = s.replace("{thing}", thing).replace("{name}", name);
        }
        Value::Array(items) => {
            for item in items {
                fill_placeholders(item, thing, name);
            }
        }
        Value::Object(fields) => {
            for field in fields.values_mut() {
                fill_placeholders(field, thing, name);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_terms_use_td_names() {
        let schema: DataSchema = toml::from_str(
            "type = 'string'\nmin_length = 1\nmax_length = 3\nenum = ['a']\ntitle = 'T'",
        )
        .expect("parses");
        assert_eq!(
            schema_json(&schema),
            json!({"type": "string", "minLength": 1, "maxLength": 3, "enum": ["a"], "title": "T"})
        );
    }

    #[test]
    fn placeholders() {
        let mut form =
            json!({"a": "x/{thing}/{name}", "b": ["{thing}"], "c": {"d": "{other}"}, "e": 1});
        fill_placeholders(&mut form, "t-1", "go");
        assert_eq!(
            form,
            json!({"a": "x/t-1/go", "b": ["t-1"], "c": {"d": "{other}"}, "e": 1})
        );
    }
}
