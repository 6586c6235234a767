//! What the WAMP API asks of the service ([`Request`]) and how it is answered ([`ApiError`] or a
//! result value).

use std::time::Duration;

use device_models::{CheckError, ThingId};
use serde_json::{Map, Value as Json};
use tokio::sync::oneshot;

use crate::client::WampError;
use crate::wamp::{Dict, Payload, Value, uris};

/// Error URIs of the things API (besides the standard `wamp.error.*` ones).
pub mod errors {
    pub use crate::wamp::uris::things::{
        ACTION_FAILED, NO_SUCH_ACTION, NO_SUCH_THING, NO_SUCH_TYPE, THING_OFFLINE, WRITE_FAILED,
    };
}

/// One API call, parsed and checked for shape (values are checked against types by the service).
#[derive(Debug)]
pub enum Request {
    /// `brume.things.list`
    List {
        type_id: Option<String>,
        online: Option<bool>,
    },
    /// `brume.things.get`
    Get {
        thing: ThingId,
        property: Option<String>,
    },
    /// `brume.things.provision`
    Provision {
        thing: ThingId,
        type_id: String,
        info: Map<String, Json>,
    },
    /// `brume.things.delete`
    Delete { thing: ThingId },
    /// `brume.things.update_info`
    UpdateInfo {
        thing: ThingId,
        values: Map<String, Json>,
    },
    /// `brume.things.set`
    Set {
        thing: ThingId,
        values: Map<String, Json>,
        /// The CALL's `timeout` option, when the router passes it on.
        timeout: Option<Duration>,
    },
    /// `brume.thing.<id>.action.<name>`
    Action {
        thing: ThingId,
        action: String,
        input: Json,
        timeout: Option<Duration>,
    },
    /// `brume.types.list`
    TypesList,
    /// `brume.types.get`
    TypesGet { type_id: String },
    /// `brume.things.describe`
    Describe { thing: ThingId },
    /// `brume.things.stats` (answered by the service, which also sees the database writer).
    Stats,
    /// The caller of a `set` or an action canceled it (the router interrupted the invocation):
    /// the API dropped that call's reply, and the service forgets every waiting call whose reply
    /// is gone (an action is logged as `canceled`; desired values stay pending).
    Canceled,
}

impl Request {
    /// A short name for logs.
    pub fn name(&self) -> &'static str {
        match self {
            Request::List { .. } => "list",
            Request::Get { .. } => "get",
            Request::Provision { .. } => "provision",
            Request::Delete { .. } => "delete",
            Request::UpdateInfo { .. } => "update_info",
            Request::Set { .. } => "set",
            Request::Action { .. } => "action",
            Request::TypesList => "types.list",
            Request::TypesGet { .. } => "types.get",
            Request::Describe { .. } => "describe",
            Request::Canceled => "canceled",
            Request::Stats => "stats",
        }
    }
}

/// A failed call: a WAMP error URI, a message naming the thing, property and rule, and details
/// in kwargs.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub uri: &'static str,
    pub message: String,
    pub kwargs: Dict,
}

impl ApiError {
    pub fn new(uri: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            uri,
            message: message.into(),
            kwargs: Dict::new(),
        }
    }

    /// Adds a detail to kwargs.
    pub fn with(mut self, key: &str, value: impl Into<Value>) -> ApiError {
        self.kwargs.insert(key.to_owned(), value.into());
        self
    }

    pub fn invalid(message: impl Into<String>) -> ApiError {
        ApiError::new(uris::INVALID_ARGUMENT, message)
    }

    /// The change could not be committed to the database.
    pub fn write_failed() -> ApiError {
        ApiError::new(
            errors::WRITE_FAILED,
            "the hub could not write the change to its database; nothing was changed on disk",
        )
    }

    pub fn no_such_thing(thing: &ThingId) -> ApiError {
        ApiError::new(
            errors::NO_SUCH_THING,
            format!("no thing {:?}", thing.as_str()),
        )
        .with("thing", thing.as_str())
    }

    /// A value rejected by a thing's type: `wamp.error.invalid_argument` with the check's
    /// message (`thing "t": property "setpoint": 40 is above maximum 35`) and, in kwargs, the
    /// thing, the property (or action, or event) and the rule.
    pub fn check(e: &CheckError) -> ApiError {
        use device_models::Target;
        let (key, name) = match &e.target {
            Target::Property(n) => ("property", n),
            Target::Action(n) | Target::ActionInput(n) | Target::ActionOutput(n) => ("action", n),
            Target::Event(n) | Target::EventPayload(n) => ("event", n),
        };
        ApiError::invalid(e.to_string())
            .with("thing", e.thing.as_str())
            .with(key, name.as_str())
            .with("rule", e.rule.to_string())
    }

    /// The WAMP error sent to the caller.
    pub fn into_wamp(self) -> WampError {
        WampError {
            uri: self.uri.to_owned(),
            details: Dict::new(),
            payload: Payload::new(vec![Value::Str(self.message)], self.kwargs),
        }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.uri, self.message)
    }
}

impl std::error::Error for ApiError {}

/// How the service answers a request: the call's single result value, or an error.
pub type Reply = oneshot::Sender<Result<Json, ApiError>>;
