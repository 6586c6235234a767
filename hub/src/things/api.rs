//! The WAMP procedures of the things service: registration, argument parsing into
//! [`Request`]s, and answering.
//!
//! Every procedure takes keyword arguments, or the same arguments positionally in the order of
//! DESIGN.md §2 (thing first): `list(type, online)`, `get(thing, property)`, `provision(thing,
//! type, info)`, `set(thing, property, value)` or `set(thing, values)`, `update_info` likewise,
//! `delete`/`describe(thing)`, `types.get(type)`; an action's input is one positional value or
//! the keyword arguments. Each returns one positional value. Each invocation is handled in its
//! own task, so a `set` waiting for a device never holds up other calls; at most
//! [`MAX_IN_FLIGHT`] calls are in progress at once, beyond which the router's own queue (and its
//! `wamp.error.unavailable`) takes over.

use std::sync::Arc;
use std::time::Duration;

use device_models::ThingId;
use serde_json::{Map, Value as Json};
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::request::{ApiError, Request};
use crate::client::{Client, ClientError, Invocation, Registration};
use crate::wamp::{Dict, MatchPolicy, Payload, Value, dict, uris};

/// Calls in progress at once, over all procedures.
pub const MAX_IN_FLIGHT: usize = 4096;

/// The procedures served, by URI (DESIGN.md §2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Procedure {
    List,
    Get,
    Provision,
    Delete,
    UpdateInfo,
    Set,
    Describe,
    TypesList,
    TypesGet,
    Stats,
    /// `brume.thing.<id>.action.<name>`, registered as the wildcard [`ACTION_PATTERN`].
    Action,
}

pub use crate::wamp::uris::things::ACTION_PATTERN;

impl Procedure {
    pub const ALL: [Procedure; 11] = [
        Procedure::List,
        Procedure::Get,
        Procedure::Provision,
        Procedure::Delete,
        Procedure::UpdateInfo,
        Procedure::Set,
        Procedure::Describe,
        Procedure::TypesList,
        Procedure::TypesGet,
        Procedure::Stats,
        Procedure::Action,
    ];

    /// The URI registered, and its match policy.
    pub fn uri(self) -> (&'static str, MatchPolicy) {
        use crate::wamp::uris::things as t;
        let exact = |u| (u, MatchPolicy::Exact);
        match self {
            Procedure::List => exact(t::LIST),
            Procedure::Get => exact(t::GET),
            Procedure::Provision => exact(t::PROVISION),
            Procedure::Delete => exact(t::DELETE),
            Procedure::UpdateInfo => exact(t::UPDATE_INFO),
            Procedure::Set => exact(t::SET),
            Procedure::Describe => exact(t::DESCRIBE),
            Procedure::TypesList => exact(t::TYPES_LIST),
            Procedure::TypesGet => exact(t::TYPES_GET),
            Procedure::Stats => exact(t::STATS),
            Procedure::Action => (ACTION_PATTERN, MatchPolicy::Wildcard),
        }
    }
}

/// The call's arguments, as the parser sees them.
struct Args<'a> {
    args: &'a [Value],
    kwargs: Option<&'a Dict>,
}

impl<'a> Args<'a> {
    fn new(payload: &'a Payload) -> Self {
        Args {
            args: payload.arg_list(),
            kwargs: payload.kwarg_dict(),
        }
    }

    /// Keyword `key`, else positional argument `pos`.
    fn get(&self, key: &str, pos: Option<usize>) -> Option<&'a Value> {
        self.kwargs
            .and_then(|k| k.get(key))
            .or_else(|| pos.and_then(|i| self.args.get(i)))
    }

    fn str(&self, key: &str, pos: Option<usize>) -> Result<Option<&'a str>, ApiError> {
        match self.get(key, pos) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Str(s)) => Ok(Some(s)),
            Some(other) => Err(ApiError::invalid(format!(
                "argument {key:?} must be a string, got {}",
                other.kind()
            ))),
        }
    }

    fn required_str(&self, key: &str, pos: Option<usize>) -> Result<&'a str, ApiError> {
        self.str(key, pos)?
            .ok_or_else(|| ApiError::invalid(format!("argument {key:?} is required")))
    }

    fn thing(&self) -> Result<ThingId, ApiError> {
        let id = self.required_str("thing", Some(0))?;
        ThingId::new(id).map_err(|e| ApiError::invalid(e.to_string()).with("thing", id))
    }

    fn object(&self, key: &str, pos: Option<usize>) -> Result<Option<Map<String, Json>>, ApiError> {
        match self.get(key, pos) {
            None | Some(Value::Null) => Ok(None),
            Some(v @ Value::Dict(_)) => match Json::from(v) {
                Json::Object(m) => Ok(Some(m)),
                _ => Ok(None),
            },
            Some(other) => Err(ApiError::invalid(format!(
                "argument {key:?} must be a dict, got {}",
                other.kind()
            ))),
        }
    }

    /// `{property, value}` or `{values}` (positionally, after the thing: `property, value` or
    /// one dict of values): the values to write.
    fn values(&self) -> Result<Map<String, Json>, ApiError> {
        let (property_at, values_at) = match self.args.get(1) {
            Some(Value::Dict(_)) => (None, Some(1)),
            Some(_) => (Some(1), None),
            None => (None, None),
        };
        let single = self.str("property", property_at)?;
        let many = self.object("values", values_at)?;
        match (single, many) {
            (Some(p), None) => {
                let value = self.get("value", property_at.map(|_| 2)).ok_or_else(|| {
                    ApiError::invalid("argument \"value\" is required with \"property\"")
                })?;
                let mut m = Map::new();
                m.insert(p.to_owned(), Json::from(value));
                Ok(m)
            }
            (None, Some(m)) => Ok(m),
            (Some(_), Some(_)) => Err(ApiError::invalid(
                "give either \"property\" and \"value\", or \"values\", not both",
            )),
            (None, None) => Err(ApiError::invalid(
                "give \"property\" and \"value\", or \"values\" (a dict of property to value)",
            )),
        }
    }
}

/// The CALL's `timeout` option in ms, when the router passes it on in the INVOCATION details.
fn call_timeout(details: &Dict) -> Option<Duration> {
    details
        .get("timeout")
        .and_then(Value::as_u64)
        .filter(|ms| *ms > 0)
        .map(Duration::from_millis)
}

/// Splits `brume.thing.<id>.action.<name>`.
pub fn parse_action_uri(uri: &str) -> Option<(&str, &str)> {
    let rest = uri.strip_prefix(crate::wamp::uris::things::THING_PREFIX)?;
    let mut parts = rest.split('.');
    let (id, kw, name) = (parts.next()?, parts.next()?, parts.next()?);
    (kw == "action" && parts.next().is_none() && !id.is_empty() && !name.is_empty())
        .then_some((id, name))
}

/// Turns an invocation of `proc` into a request.
pub fn parse(
    proc: Procedure,
    procedure_uri: Option<&str>,
    payload: &Payload,
    details: &Dict,
) -> Result<Request, ApiError> {
    let a = Args::new(payload);
    Ok(match proc {
        Procedure::List => {
            let online = match a.get("online", Some(1)) {
                None | Some(Value::Null) => None,
                Some(Value::Bool(b)) => Some(*b),
                Some(other) => {
                    return Err(ApiError::invalid(format!(
                        "argument \"online\" must be a bool, got {}",
                        other.kind()
                    )));
                }
            };
            Request::List {
                type_id: a.str("type", Some(0))?.map(str::to_owned),
                online,
            }
        }
        Procedure::Get => Request::Get {
            thing: a.thing()?,
            property: a.str("property", Some(1))?.map(str::to_owned),
        },
        Procedure::Provision => Request::Provision {
            thing: a.thing()?,
            type_id: a.required_str("type", Some(1))?.to_owned(),
            info: a.object("info", Some(2))?.unwrap_or_default(),
        },
        Procedure::Delete => Request::Delete { thing: a.thing()? },
        Procedure::UpdateInfo => Request::UpdateInfo {
            thing: a.thing()?,
            values: a.values()?,
        },
        Procedure::Set => Request::Set {
            thing: a.thing()?,
            values: a.values()?,
            timeout: call_timeout(details),
        },
        Procedure::Describe => Request::Describe { thing: a.thing()? },
        Procedure::TypesList => Request::TypesList,
        Procedure::Stats => Request::Stats,
        Procedure::TypesGet => Request::TypesGet {
            type_id: a.required_str("type", Some(0))?.to_owned(),
        },
        Procedure::Action => {
            let uri = procedure_uri.unwrap_or_default();
            let Some((id, action)) = parse_action_uri(uri) else {
                return Err(ApiError::new(
                    uris::NO_SUCH_PROCEDURE,
                    format!("{uri:?} is not brume.thing.<id>.action.<name>"),
                ));
            };
            let thing =
                ThingId::new(id).map_err(|e| ApiError::invalid(e.to_string()).with("thing", id))?;
            let input = match (a.args, a.kwargs) {
                ([], None) => Json::Null,
                ([], Some(k)) => Json::from(&Value::Dict(k.clone())),
                ([one], None) => Json::from(one),
                _ => {
                    return Err(ApiError::invalid(
                        "give the action's input as one positional argument or as keyword arguments",
                    ));
                }
            };
            Request::Action {
                thing,
                action: action.to_owned(),
                input,
                timeout: call_timeout(details),
            }
        }
    })
}

/// Registers every procedure on `client`.
pub async fn register_all(client: &Client) -> Result<Vec<(Procedure, Registration)>, ClientError> {
    let mut regs = Vec::new();
    for proc in Procedure::ALL {
        let (uri, policy) = proc.uri();
        let options = match policy {
            MatchPolicy::Exact => Dict::new(),
            other => dict([("match", Value::from(other.as_str()))]),
        };
        regs.push((proc, client.register(uri, options).await?));
    }
    Ok(regs)
}

/// Serves one registration until shutdown: each invocation is parsed and handed to the service
/// in a task of its own.
pub async fn serve(
    proc: Procedure,
    mut reg: Registration,
    requests: mpsc::Sender<(Request, super::request::Reply)>,
    permits: Arc<Semaphore>,
    tracker: TaskTracker,
    shutdown: CancellationToken,
) {
    loop {
        let inv = tokio::select! {
            _ = shutdown.cancelled() => break,
            inv = reg.next() => match inv {
                Some(inv) => inv,
                None => break,
            },
        };
        let permit = tokio::select! {
            _ = shutdown.cancelled() => break,
            p = permits.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let requests = requests.clone();
        tracker.spawn(async move {
            answer(proc, inv, requests).await;
            drop(permit);
        });
    }
}

async fn answer(
    proc: Procedure,
    mut inv: Invocation,
    requests: mpsc::Sender<(Request, super::request::Reply)>,
) {
    let stopped = || ApiError::new(uris::CANCELED, "the things service has stopped");
    let result = match parse(proc, inv.procedure.as_deref(), &inv.payload, &inv.details) {
        Err(e) => Err(e),
        Ok(req) => {
            let waits_on_device = matches!(req, Request::Set { .. } | Request::Action { .. });
            let (tx, rx) = oneshot::channel();
            let work = async {
                if requests.send((req, tx)).await.is_err() {
                    return Err(stopped());
                }
                rx.await.unwrap_or_else(|_| Err(stopped()))
            };
            tokio::select! {
                r = work => r,
                Some(interrupt) = inv.interrupted() => {
                    // The reply is dropped with `work`; a canceled call that waits on a device
                    // is forgotten by the service too (a timed-out one expires there by itself,
                    // since its deadline came with the invocation).
                    if waits_on_device && interrupt.reason != uris::TIMEOUT {
                        let (tx, _) = oneshot::channel();
                        let _ = requests.send((Request::Canceled, tx)).await;
                    }
                    Err(interrupted(&interrupt.reason))
                }
            }
        }
    };
    reply(inv, result, "a things API call").await;
}

/// The error a caller gets when the router interrupted its call (`reason`).
pub fn interrupted(reason: &str) -> ApiError {
    if reason == uris::TIMEOUT {
        ApiError::new(uris::TIMEOUT, "the call timed out")
    } else {
        ApiError::new(uris::CANCELED, "the call was canceled")
    }
}

/// Answers an invocation with what the things service said: its value as the one positional
/// result, or its error. A caller that went away is only logged (`what` names the call).
pub async fn reply(inv: Invocation, result: Result<Json, ApiError>, what: &str) {
    let sent = match result {
        Ok(value) => inv.reply(Payload::args(vec![Value::from(value)])).await,
        Err(e) => inv.fail(e.into_wamp()).await,
    };
    if let Err(e) = sent {
        tracing::debug!(error = %e, "could not answer {what}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn action_uris() {
        let cases = [
            ("brume.thing.t1.action.toggle", Some(("t1", "toggle"))),
            ("brume.thing.t-1_x.action.on", Some(("t-1_x", "on"))),
            ("brume.thing.t1.action", None),
            ("brume.thing.t1.state", None),
            ("brume.thing.t1.action.a.b", None),
            ("brume.things.list", None),
            ("brume.thing..action.x", None),
        ];
        for (uri, want) in cases {
            assert_eq!(parse_action_uri(uri), want, "{uri}");
        }
    }

    fn kw(pairs: &[(&str, Value)]) -> Payload {
        Payload::kwargs(
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), v.clone()))
                .collect(),
        )
    }

    #[test]
    fn set_takes_one_property_or_many() {
        let one = kw(&[
            ("thing", "t1".into()),
            ("property", "setpoint".into()),
            ("value", Value::Float(21.5)),
        ]);
        match parse(Procedure::Set, None, &one, &Dict::new()).unwrap() {
            Request::Set { thing, values, .. } => {
                assert_eq!(thing.as_str(), "t1");
                assert_eq!(values.get("setpoint"), Some(&serde_json::json!(21.5)));
            }
            other => panic!("{other:?}"),
        }
        let many = kw(&[
            ("thing", "t1".into()),
            ("values", Value::Dict(dict([("mode", Value::from("heat"))]))),
        ]);
        let timeout = dict([("timeout", Value::Int(250))]);
        match parse(Procedure::Set, None, &many, &timeout).unwrap() {
            Request::Set {
                values, timeout, ..
            } => {
                assert_eq!(values.get("mode"), Some(&serde_json::json!("heat")));
                assert_eq!(timeout, Some(Duration::from_millis(250)));
            }
            other => panic!("{other:?}"),
        }
        let neither = kw(&[("thing", "t1".into())]);
        assert!(parse(Procedure::Set, None, &neither, &Dict::new()).is_err());
        let bad_id = kw(&[
            ("thing", "a.b".into()),
            ("values", Value::Dict(Dict::new())),
        ]);
        let e = parse(Procedure::Set, None, &bad_id, &Dict::new()).unwrap_err();
        assert_eq!(e.uri, uris::INVALID_ARGUMENT);
    }

    #[test]
    fn every_procedure_takes_its_arguments_positionally() {
        let p = Payload::args(vec!["t1".into(), "setpoint".into(), Value::Float(21.5)]);
        match parse(Procedure::Set, None, &p, &Dict::new()).unwrap() {
            Request::Set { thing, values, .. } => {
                assert_eq!(thing.as_str(), "t1");
                assert_eq!(values.get("setpoint"), Some(&serde_json::json!(21.5)));
            }
            other => panic!("{other:?}"),
        }
        let many = Payload::args(vec![
            "t1".into(),
            Value::Dict(dict([("mode", Value::from("heat"))])),
        ]);
        match parse(Procedure::UpdateInfo, None, &many, &Dict::new()).unwrap() {
            Request::UpdateInfo { values, .. } => {
                assert_eq!(values.get("mode"), Some(&serde_json::json!("heat")));
            }
            other => panic!("{other:?}"),
        }
        let no_value = Payload::args(vec!["t1".into(), "setpoint".into()]);
        assert!(parse(Procedure::Set, None, &no_value, &Dict::new()).is_err());
        let list = Payload::args(vec!["relay".into(), Value::Bool(true)]);
        match parse(Procedure::List, None, &list, &Dict::new()).unwrap() {
            Request::List { type_id, online } => {
                assert_eq!(type_id.as_deref(), Some("relay"));
                assert_eq!(online, Some(true));
            }
            other => panic!("{other:?}"),
        }
        let provision = Payload::args(vec![
            "t2".into(),
            "relay".into(),
            Value::Dict(dict([("location", Value::from("hall"))])),
        ]);
        match parse(Procedure::Provision, None, &provision, &Dict::new()).unwrap() {
            Request::Provision {
                thing,
                type_id,
                info,
            } => {
                assert_eq!((thing.as_str(), type_id.as_str()), ("t2", "relay"));
                assert_eq!(info.get("location"), Some(&serde_json::json!("hall")));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn thing_may_be_positional_and_action_input_either_way() {
        let p = Payload::args(vec!["t9".into(), "temperature".into()]);
        match parse(Procedure::Get, None, &p, &Dict::new()).unwrap() {
            Request::Get { thing, property } => {
                assert_eq!(thing.as_str(), "t9");
                assert_eq!(property.as_deref(), Some("temperature"));
            }
            other => panic!("{other:?}"),
        }
        let uri = Some("brume.thing.a1.action.arm");
        let by_kw = kw(&[("code", "1234".into())]);
        match parse(Procedure::Action, uri, &by_kw, &Dict::new()).unwrap() {
            Request::Action { input, action, .. } => {
                assert_eq!(action, "arm");
                assert_eq!(input, serde_json::json!({"code": "1234"}));
            }
            other => panic!("{other:?}"),
        }
        match parse(Procedure::Action, uri, &Payload::empty(), &Dict::new()).unwrap() {
            Request::Action { input, .. } => assert_eq!(input, Json::Null),
            other => panic!("{other:?}"),
        }
        let both = Payload::new(vec![Value::Int(1)], dict([("x", Value::Int(1))]));
        assert!(parse(Procedure::Action, uri, &both, &Dict::new()).is_err());
    }
}
