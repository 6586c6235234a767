//! Typed WAMP messages and their conversion from and to the wire array.
//!
//! A message on the wire is an array `[type, fields..., Args?, KwArgs?]`. Decoding first reads the
//! array into [`Value`]s (the serializer layer), then [`Message::from_array`] checks each field's type
//! against the spec and builds a typed message; any mismatch is a [`MessageError`], which the router
//! answers with a protocol violation. Encoding goes straight from the typed message to the
//! serializer without an intermediate array.

use std::sync::Arc;

use serde::ser::SerializeSeq;
use serde::{Serialize, Serializer};

use super::value::{Dict, DictSer, Flavor, List, ListSer, Value};

/// A WAMP id (session, publication, subscription, registration, request).
pub type Id = u64;

/// The largest id the spec allows (2^53), so ids survive a trip through a JavaScript number.
pub const MAX_ID: u64 = 1 << 53;

/// Message type codes.
pub mod code {
    pub const HELLO: u64 = 1;
    pub const WELCOME: u64 = 2;
    pub const ABORT: u64 = 3;
    pub const CHALLENGE: u64 = 4;
    pub const AUTHENTICATE: u64 = 5;
    pub const GOODBYE: u64 = 6;
    pub const ERROR: u64 = 8;
    pub const PUBLISH: u64 = 16;
    pub const PUBLISHED: u64 = 17;
    pub const SUBSCRIBE: u64 = 32;
    pub const SUBSCRIBED: u64 = 33;
    pub const UNSUBSCRIBE: u64 = 34;
    pub const UNSUBSCRIBED: u64 = 35;
    pub const EVENT: u64 = 36;
    pub const CALL: u64 = 48;
    pub const CANCEL: u64 = 49;
    pub const RESULT: u64 = 50;
    pub const REGISTER: u64 = 64;
    pub const REGISTERED: u64 = 65;
    pub const UNREGISTER: u64 = 66;
    pub const UNREGISTERED: u64 = 67;
    pub const INVOCATION: u64 = 68;
    pub const INTERRUPT: u64 = 69;
    pub const YIELD: u64 = 70;
}

/// The application payload of a message (`Args` and `KwArgs`).
///
/// Shared behind an `Arc` so one publication's payload is not copied for every subscription it
/// matches, and so an in-process session can hand a payload over without serializing it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Payload(Option<Arc<(List, Dict)>>);

impl Payload {
    /// A payload; empty args and kwargs take no allocation.
    pub fn new(args: List, kwargs: Dict) -> Self {
        if args.is_empty() && kwargs.is_empty() {
            Payload(None)
        } else {
            Payload(Some(Arc::new((args, kwargs))))
        }
    }

    /// A payload of positional arguments only.
    pub fn args(args: List) -> Self {
        Payload::new(args, Dict::new())
    }

    /// A payload of keyword arguments only.
    pub fn kwargs(kwargs: Dict) -> Self {
        Payload::new(List::new(), kwargs)
    }

    pub fn empty() -> Self {
        Payload(None)
    }

    pub fn arg_list(&self) -> &[Value] {
        self.0.as_ref().map_or(&[], |p| &p.0)
    }

    /// The keyword arguments, or `None` when there are none.
    pub fn kwarg_dict(&self) -> Option<&Dict> {
        self.0.as_ref().map(|p| &p.1).filter(|d| !d.is_empty())
    }

    /// Positional argument `i`, if present.
    pub fn arg(&self, i: usize) -> Option<&Value> {
        self.arg_list().get(i)
    }

    /// Keyword argument `key`, if present.
    pub fn kwarg(&self, key: &str) -> Option<&Value> {
        self.kwarg_dict().and_then(|d| d.get(key))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_none()
    }

    /// Takes the parts out, copying only if the payload is shared.
    pub fn into_parts(self) -> (List, Dict) {
        match self.0 {
            None => (List::new(), Dict::new()),
            Some(arc) => Arc::try_unwrap(arc).unwrap_or_else(|shared| (*shared).clone()),
        }
    }

    fn from_tail(mut tail: std::vec::IntoIter<Value>) -> Result<Self, MessageError> {
        let args = match tail.next() {
            None => return Ok(Payload(None)),
            Some(Value::List(l)) => l,
            Some(other) => return Err(MessageError::field("Args", "list", &other)),
        };
        let kwargs = match tail.next() {
            None => Dict::new(),
            Some(Value::Dict(d)) => d,
            Some(other) => return Err(MessageError::field("KwArgs", "dict", &other)),
        };
        if tail.next().is_some() {
            return Err(MessageError::Length);
        }
        Ok(Payload::new(args, kwargs))
    }
}

/// A WAMP message, typed.
#[derive(Clone, Debug, PartialEq)]
pub enum Message {
    Hello {
        realm: String,
        details: Dict,
    },
    Welcome {
        session: Id,
        details: Dict,
    },
    Abort {
        details: Dict,
        reason: String,
    },
    Challenge {
        method: String,
        extra: Dict,
    },
    Authenticate {
        signature: String,
        extra: Dict,
    },
    Goodbye {
        details: Dict,
        reason: String,
    },
    Error {
        request_type: u64,
        request: Id,
        details: Dict,
        error: String,
        payload: Payload,
    },
    Publish {
        request: Id,
        options: Dict,
        topic: String,
        payload: Payload,
    },
    Published {
        request: Id,
        publication: Id,
    },
    Subscribe {
        request: Id,
        options: Dict,
        topic: String,
    },
    Subscribed {
        request: Id,
        subscription: Id,
    },
    Unsubscribe {
        request: Id,
        subscription: Id,
    },
    /// `details` is only present for a router-initiated revocation (request 0).
    Unsubscribed {
        request: Id,
        details: Option<Dict>,
    },
    Event {
        subscription: Id,
        publication: Id,
        details: Dict,
        payload: Payload,
    },
    Call {
        request: Id,
        options: Dict,
        procedure: String,
        payload: Payload,
    },
    Cancel {
        request: Id,
        options: Dict,
    },
    Result {
        request: Id,
        details: Dict,
        payload: Payload,
    },
    Register {
        request: Id,
        options: Dict,
        procedure: String,
    },
    Registered {
        request: Id,
        registration: Id,
    },
    Unregister {
        request: Id,
        registration: Id,
    },
    /// `details` is only present for a router-initiated revocation (request 0).
    Unregistered {
        request: Id,
        details: Option<Dict>,
    },
    Invocation {
        request: Id,
        registration: Id,
        details: Dict,
        payload: Payload,
    },
    Interrupt {
        request: Id,
        options: Dict,
    },
    Yield {
        request: Id,
        options: Dict,
        payload: Payload,
    },
}

/// Why a decoded array is not a valid WAMP message.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum MessageError {
    #[error("a WAMP message must be a non-empty array")]
    NotAnArray,
    #[error("unknown message type {0}")]
    UnknownType(u64),
    #[error("message type is not a non-negative integer")]
    BadType,
    #[error("wrong number of fields for this message type")]
    Length,
    #[error("field {field}: expected {expected}, got {got}")]
    Field {
        field: &'static str,
        expected: &'static str,
        got: &'static str,
    },
    #[error("field {0}: id out of range [0, 2^53]")]
    IdRange(&'static str),
}

impl MessageError {
    fn field(field: &'static str, expected: &'static str, got: &Value) -> Self {
        MessageError::Field {
            field,
            expected,
            got: got.kind(),
        }
    }
}

/// Reads typed fields off the front of a message array.
struct Fields {
    items: std::vec::IntoIter<Value>,
}

impl Fields {
    fn next(&mut self) -> Result<Value, MessageError> {
        self.items.next().ok_or(MessageError::Length)
    }

    fn id(&mut self, name: &'static str) -> Result<Id, MessageError> {
        let v = self.next()?;
        let id = v
            .as_u64()
            .ok_or_else(|| MessageError::field(name, "id", &v))?;
        if id > MAX_ID {
            return Err(MessageError::IdRange(name));
        }
        Ok(id)
    }

    fn uint(&mut self, name: &'static str) -> Result<u64, MessageError> {
        let v = self.next()?;
        v.as_u64()
            .ok_or_else(|| MessageError::field(name, "integer", &v))
    }

    fn string(&mut self, name: &'static str) -> Result<String, MessageError> {
        match self.next()? {
            Value::Str(s) => Ok(s),
            other => Err(MessageError::field(name, "string", &other)),
        }
    }

    fn dict(&mut self, name: &'static str) -> Result<Dict, MessageError> {
        match self.next()? {
            Value::Dict(d) => Ok(d),
            other => Err(MessageError::field(name, "dict", &other)),
        }
    }

    fn payload(self) -> Result<Payload, MessageError> {
        Payload::from_tail(self.items)
    }

    /// Succeeds only if every field was consumed.
    fn end(mut self) -> Result<(), MessageError> {
        match self.items.next() {
            None => Ok(()),
            Some(_) => Err(MessageError::Length),
        }
    }
}

impl Message {
    /// Builds a typed message from a decoded array, checking every field.
    pub fn from_array(items: Vec<Value>) -> Result<Message, MessageError> {
        let mut f = Fields {
            items: items.into_iter(),
        };
        let ty = f.next().map_err(|_| MessageError::NotAnArray)?;
        let ty = ty.as_u64().ok_or(MessageError::BadType)?;
        use code::*;
        let msg = match ty {
            HELLO => {
                let realm = f.string("Realm")?;
                let details = f.dict("Details")?;
                f.end()?;
                Message::Hello { realm, details }
            }
            WELCOME => {
                let session = f.id("Session")?;
                let details = f.dict("Details")?;
                f.end()?;
                Message::Welcome { session, details }
            }
            ABORT => {
                let details = f.dict("Details")?;
                let reason = f.string("Reason")?;
                // Some peers attach an explanation payload to ABORT; it carries nothing we act on.
                let _ = f.payload()?;
                Message::Abort { details, reason }
            }
            CHALLENGE => {
                let method = f.string("AuthMethod")?;
                let extra = f.dict("Extra")?;
                f.end()?;
                Message::Challenge { method, extra }
            }
            AUTHENTICATE => {
                let signature = f.string("Signature")?;
                let extra = f.dict("Extra")?;
                f.end()?;
                Message::Authenticate { signature, extra }
            }
            GOODBYE => {
                let details = f.dict("Details")?;
                let reason = f.string("Reason")?;
                f.end()?;
                Message::Goodbye { details, reason }
            }
            ERROR => {
                let request_type = f.uint("REQUEST.Type")?;
                let request = f.id("REQUEST.Request")?;
                let details = f.dict("Details")?;
                let error = f.string("Error")?;
                let payload = f.payload()?;
                Message::Error {
                    request_type,
                    request,
                    details,
                    error,
                    payload,
                }
            }
            PUBLISH => {
                let request = f.id("Request")?;
                let options = f.dict("Options")?;
                let topic = f.string("Topic")?;
                let payload = f.payload()?;
                Message::Publish {
                    request,
                    options,
                    topic,
                    payload,
                }
            }
            PUBLISHED => {
                let request = f.id("Request")?;
                let publication = f.id("Publication")?;
                f.end()?;
                Message::Published {
                    request,
                    publication,
                }
            }
            SUBSCRIBE => {
                let request = f.id("Request")?;
                let options = f.dict("Options")?;
                let topic = f.string("Topic")?;
                f.end()?;
                Message::Subscribe {
                    request,
                    options,
                    topic,
                }
            }
            SUBSCRIBED => {
                let request = f.id("Request")?;
                let subscription = f.id("Subscription")?;
                f.end()?;
                Message::Subscribed {
                    request,
                    subscription,
                }
            }
            UNSUBSCRIBE => {
                let request = f.id("Request")?;
                let subscription = f.id("Subscription")?;
                f.end()?;
                Message::Unsubscribe {
                    request,
                    subscription,
                }
            }
            UNSUBSCRIBED => {
                let request = f.id("Request")?;
                let details = match f.items.next() {
                    None => None,
                    Some(Value::Dict(d)) => Some(d),
                    Some(other) => return Err(MessageError::field("Details", "dict", &other)),
                };
                f.end()?;
                Message::Unsubscribed { request, details }
            }
            EVENT => {
                let subscription = f.id("Subscription")?;
                let publication = f.id("Publication")?;
                let details = f.dict("Details")?;
                let payload = f.payload()?;
                Message::Event {
                    subscription,
                    publication,
                    details,
                    payload,
                }
            }
            CALL => {
                let request = f.id("Request")?;
                let options = f.dict("Options")?;
                let procedure = f.string("Procedure")?;
                let payload = f.payload()?;
                Message::Call {
                    request,
                    options,
                    procedure,
                    payload,
                }
            }
            CANCEL => {
                let request = f.id("Request")?;
                let options = f.dict("Options")?;
                f.end()?;
                Message::Cancel { request, options }
            }
            RESULT => {
                let request = f.id("Request")?;
                let details = f.dict("Details")?;
                let payload = f.payload()?;
                Message::Result {
                    request,
                    details,
                    payload,
                }
            }
            REGISTER => {
                let request = f.id("Request")?;
                let options = f.dict("Options")?;
                let procedure = f.string("Procedure")?;
                f.end()?;
                Message::Register {
                    request,
                    options,
                    procedure,
                }
            }
            REGISTERED => {
                let request = f.id("Request")?;
                let registration = f.id("Registration")?;
                f.end()?;
                Message::Registered {
                    request,
                    registration,
                }
            }
            UNREGISTER => {
                let request = f.id("Request")?;
                let registration = f.id("Registration")?;
                f.end()?;
                Message::Unregister {
                    request,
                    registration,
                }
            }
            UNREGISTERED => {
                let request = f.id("Request")?;
                let details = match f.items.next() {
                    None => None,
                    Some(Value::Dict(d)) => Some(d),
                    Some(other) => return Err(MessageError::field("Details", "dict", &other)),
                };
                f.end()?;
                Message::Unregistered { request, details }
            }
            INVOCATION => {
                let request = f.id("Request")?;
                let registration = f.id("Registration")?;
                let details = f.dict("Details")?;
                let payload = f.payload()?;
                Message::Invocation {
                    request,
                    registration,
                    details,
                    payload,
                }
            }
            INTERRUPT => {
                let request = f.id("Request")?;
                let options = f.dict("Options")?;
                f.end()?;
                Message::Interrupt { request, options }
            }
            YIELD => {
                let request = f.id("Request")?;
                let options = f.dict("Options")?;
                let payload = f.payload()?;
                Message::Yield {
                    request,
                    options,
                    payload,
                }
            }
            other => return Err(MessageError::UnknownType(other)),
        };
        Ok(msg)
    }

    /// The message's type code.
    pub fn code(&self) -> u64 {
        use code::*;
        match self {
            Message::Hello { .. } => HELLO,
            Message::Welcome { .. } => WELCOME,
            Message::Abort { .. } => ABORT,
            Message::Challenge { .. } => CHALLENGE,
            Message::Authenticate { .. } => AUTHENTICATE,
            Message::Goodbye { .. } => GOODBYE,
            Message::Error { .. } => ERROR,
            Message::Publish { .. } => PUBLISH,
            Message::Published { .. } => PUBLISHED,
            Message::Subscribe { .. } => SUBSCRIBE,
            Message::Subscribed { .. } => SUBSCRIBED,
            Message::Unsubscribe { .. } => UNSUBSCRIBE,
            Message::Unsubscribed { .. } => UNSUBSCRIBED,
            Message::Event { .. } => EVENT,
            Message::Call { .. } => CALL,
            Message::Cancel { .. } => CANCEL,
            Message::Result { .. } => RESULT,
            Message::Register { .. } => REGISTER,
            Message::Registered { .. } => REGISTERED,
            Message::Unregister { .. } => UNREGISTER,
            Message::Unregistered { .. } => UNREGISTERED,
            Message::Invocation { .. } => INVOCATION,
            Message::Interrupt { .. } => INTERRUPT,
            Message::Yield { .. } => YIELD,
        }
    }

    /// The message's name, for logs.
    pub fn name(&self) -> &'static str {
        match self {
            Message::Hello { .. } => "HELLO",
            Message::Welcome { .. } => "WELCOME",
            Message::Abort { .. } => "ABORT",
            Message::Challenge { .. } => "CHALLENGE",
            Message::Authenticate { .. } => "AUTHENTICATE",
            Message::Goodbye { .. } => "GOODBYE",
            Message::Error { .. } => "ERROR",
            Message::Publish { .. } => "PUBLISH",
            Message::Published { .. } => "PUBLISHED",
            Message::Subscribe { .. } => "SUBSCRIBE",
            Message::Subscribed { .. } => "SUBSCRIBED",
            Message::Unsubscribe { .. } => "UNSUBSCRIBE",
            Message::Unsubscribed { .. } => "UNSUBSCRIBED",
            Message::Event { .. } => "EVENT",
            Message::Call { .. } => "CALL",
            Message::Cancel { .. } => "CANCEL",
            Message::Result { .. } => "RESULT",
            Message::Register { .. } => "REGISTER",
            Message::Registered { .. } => "REGISTERED",
            Message::Unregister { .. } => "UNREGISTER",
            Message::Unregistered { .. } => "UNREGISTERED",
            Message::Invocation { .. } => "INVOCATION",
            Message::Interrupt { .. } => "INTERRUPT",
            Message::Yield { .. } => "YIELD",
        }
    }

    /// An ABORT with a reason and an optional human-readable message in its details.
    pub fn abort(reason: &str, message: Option<&str>) -> Message {
        let mut details = Dict::new();
        if let Some(m) = message {
            details.insert("message".into(), Value::from(m));
        }
        Message::Abort {
            details,
            reason: reason.to_owned(),
        }
    }

    /// An ERROR answering request `request` of type `request_type`, with an optional message as its
    /// first positional argument (as Autobahn and Crossbar do).
    pub fn error(request_type: u64, request: Id, error: &str, message: Option<String>) -> Message {
        Message::Error {
            request_type,
            request,
            details: Dict::new(),
            error: error.to_owned(),
            payload: message.map_or_else(Payload::empty, |m| Payload::args(vec![Value::Str(m)])),
        }
    }
}

/// Serializes a message as its wire array under a flavor.
pub struct Wire<'a>(pub &'a Message, pub Flavor);

enum El<'a> {
    U(u64),
    S(&'a str),
    D(&'a Dict),
}

impl Serialize for Wire<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use El::*;
        let flavor = self.1;
        let (head, payload): (Vec<El<'_>>, Option<&Payload>) = match self.0 {
            Message::Hello { realm, details } => (vec![S(realm), D(details)], None),
            Message::Welcome { session, details } => (vec![U(*session), D(details)], None),
            Message::Abort { details, reason } => (vec![D(details), S(reason)], None),
            Message::Challenge { method, extra } => (vec![S(method), D(extra)], None),
            Message::Authenticate { signature, extra } => (vec![S(signature), D(extra)], None),
            Message::Goodbye { details, reason } => (vec![D(details), S(reason)], None),
            Message::Error {
                request_type,
                request,
                details,
                error,
                payload,
            } => (
                vec![U(*request_type), U(*request), D(details), S(error)],
                Some(payload),
            ),
            Message::Publish {
                request,
                options,
                topic,
                payload,
            } => (vec![U(*request), D(options), S(topic)], Some(payload)),
            Message::Published {
                request,
                publication,
            } => (vec![U(*request), U(*publication)], None),
            Message::Subscribe {
                request,
                options,
                topic,
            } => (vec![U(*request), D(options), S(topic)], None),
            Message::Subscribed {
                request,
                subscription,
            } => (vec![U(*request), U(*subscription)], None),
            Message::Unsubscribe {
                request,
                subscription,
            } => (vec![U(*request), U(*subscription)], None),
            Message::Unsubscribed { request, details } => match details {
                Some(d) => (vec![U(*request), D(d)], None),
                None => (vec![U(*request)], None),
            },
            Message::Event {
                subscription,
                publication,
                details,
                payload,
            } => (
                vec![U(*subscription), U(*publication), D(details)],
                Some(payload),
            ),
            Message::Call {
                request,
                options,
                procedure,
                payload,
            } => (vec![U(*request), D(options), S(procedure)], Some(payload)),
            Message::Cancel { request, options } => (vec![U(*request), D(options)], None),
            Message::Result {
                request,
                details,
                payload,
            } => (vec![U(*request), D(details)], Some(payload)),
            Message::Register {
                request,
                options,
                procedure,
            } => (vec![U(*request), D(options), S(procedure)], None),
            Message::Registered {
                request,
                registration,
            } => (vec![U(*request), U(*registration)], None),
            Message::Unregister {
                request,
                registration,
            } => (vec![U(*request), U(*registration)], None),
            Message::Unregistered { request, details } => match details {
                Some(d) => (vec![U(*request), D(d)], None),
                None => (vec![U(*request)], None),
            },
            Message::Invocation {
                request,
                registration,
                details,
                payload,
            } => (
                vec![U(*request), U(*registration), D(details)],
                Some(payload),
            ),
            Message::Interrupt { request, options } => (vec![U(*request), D(options)], None),
            Message::Yield {
                request,
                options,
                payload,
            } => (vec![U(*request), D(options)], Some(payload)),
        };
        let args = payload.map_or(&[][..], Payload::arg_list);
        let kwargs = payload.and_then(Payload::kwarg_dict);
        let tail = match (args.is_empty(), kwargs) {
            (_, Some(_)) => 2,
            (false, None) => 1,
            (true, None) => 0,
        };
        let mut seq = s.serialize_seq(Some(1 + head.len() + tail))?;
        seq.serialize_element(&self.0.code())?;
        for el in &head {
            match el {
                U(u) => seq.serialize_element(u)?,
                S(v) => seq.serialize_element(v)?,
                D(d) => seq.serialize_element(&DictSer(d, flavor))?,
            }
        }
        if tail >= 1 {
            seq.serialize_element(&ListSer(args, flavor))?;
        }
        if let Some(kw) = kwargs {
            seq.serialize_element(&DictSer(kw, flavor))?;
        }
        seq.end()
    }
}

/// Convenience for building option and detail dicts: `dict([("acknowledge", true.into())])`.
pub fn dict<const N: usize>(entries: [(&str, Value); N]) -> Dict {
    entries
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
}

/// Reads a boolean option, treating absence (or a non-boolean) as `default`.
pub fn opt_bool(d: &Dict, key: &str, default: bool) -> bool {
    d.get(key).and_then(Value::as_bool).unwrap_or(default)
}

/// Reads a string option.
pub fn opt_str<'a>(d: &'a Dict, key: &str) -> Option<&'a str> {
    d.get(key).and_then(Value::as_str)
}
