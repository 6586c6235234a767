//! The REST API (`/api/...`): the things API of DESIGN.md §2 for tools that do not speak WAMP.
//!
//! Not a second implementation: every endpoint builds the same [`Request`] the WAMP procedure of
//! the same name builds and asks the same things service through [`GatewayLink::call`], so the
//! answers, the checks against thing types, the commit before a reply and the errors are the
//! WAMP API's. Authorization is the realm's role rules on that procedure's URI (see [`auth`]).
//! The endpoints and their WAMP procedures are listed in the OpenAPI document at
//! `/api/openapi.json` ([`super::openapi`]).
//!
//! `/api/events` streams the things service's publications as Server-Sent Events (see
//! [`events`]).
//!
//! [`auth`]: super::auth

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Router as Routes;
use axum::body::Bytes;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch, post};
use device_models::ThingId;
use serde_json::{Map, Value as Json, json};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use super::HubView;
use super::auth::{Caller, HttpAuth};
use super::error::{HttpError, NOT_ENABLED};
use crate::router::authz::Action;
use crate::things::request::Request;
use crate::wamp::uris;

pub mod events;

/// The largest request body taken (a provisioning's info, a set of values, an action's input).
pub const MAX_BODY: usize = 1024 * 1024;
/// Event streams open at once; more are refused with 503.
pub const MAX_STREAMS: usize = 64;
/// The longest `timeout_ms` a request may ask for.
const MAX_TIMEOUT: Duration = Duration::from_secs(300);

/// What the API handlers share.
#[derive(Debug)]
pub struct Api {
    pub view: Arc<HubView>,
    pub auth: HttpAuth,
    pub streams: Arc<Semaphore>,
    pub shutdown: CancellationToken,
}

type Shared = State<Arc<Api>>;
type Answer = Result<Response, HttpError>;
type Params = Result<Query<HashMap<String, String>>, QueryRejection>;

/// The `/api` routes.
pub fn routes(api: Arc<Api>) -> Routes {
    Routes::new()
        .route("/api/things", get(list).post(provision))
        .route("/api/things/{thing}", get(thing_get).delete(thing_delete))
        .route(
            "/api/things/{thing}/properties/{property}",
            get(property_get).put(property_put),
        )
        .route(
            "/api/things/{thing}/desired",
            get(desired_get).put(desired_put),
        )
        .route("/api/things/{thing}/info", patch(info_patch))
        .route("/api/things/{thing}/actions/{action}", post(action))
        .route("/api/things/{thing}/td", get(describe))
        .route("/api/types", get(types_list))
        .route("/api/types/{type}", get(types_get))
        .route("/api/stats", get(stats))
        .route("/api/uplink", get(uplink))
        .route("/api/whoami", get(whoami))
        .route("/api/events", get(events::stream))
        .route("/api/openapi.json", get(openapi))
        .with_state(api)
}

/// The caller, authenticated, and allowed to call `uri`.
async fn caller_for(api: &Api, headers: &HeaderMap, uri: &str) -> Result<Caller, HttpError> {
    let caller = api.auth.authenticate(headers).await?;
    api.auth.authorize(&caller, Action::Call, uri)?;
    Ok(caller)
}

/// Asks the things service, as the WAMP procedure `uri` would.
async fn ask(
    api: &Api,
    headers: &HeaderMap,
    uri: &str,
    request: Request,
) -> Result<Json, HttpError> {
    caller_for(api, headers, uri).await?;
    Ok(api.view.things.call(request).await?)
}

fn ok(value: Json) -> Answer {
    Ok(axum::Json(value).into_response())
}

fn params(q: Params) -> Result<HashMap<String, String>, HttpError> {
    q.map(|Query(q)| q)
        .map_err(|e| HttpError::invalid(format!("bad query string: {e}")))
}

fn path<T>(p: Result<Path<T>, PathRejection>) -> Result<T, HttpError> {
    p.map(|Path(p)| p)
        .map_err(|e| HttpError::invalid(format!("bad path: {e}")))
}

fn thing_id(id: &str) -> Result<ThingId, HttpError> {
    ThingId::new(id).map_err(|e| {
        let mut err = HttpError::invalid(e.to_string());
        err.details = json!({"thing": id});
        err
    })
}

/// The request body as JSON; an empty body is `null`.
fn body_json(body: &Bytes) -> Result<Json, HttpError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Json::Null);
    }
    serde_json::from_slice(body)
        .map_err(|e| HttpError::invalid(format!("the body is not JSON: {e}")))
}

fn body_object(body: &Bytes, what: &str) -> Result<Map<String, Json>, HttpError> {
    match body_json(body)? {
        Json::Object(m) => Ok(m),
        other => Err(HttpError::invalid(format!(
            "the body must be a JSON object of {what}, got {}",
            kind(&other)
        ))),
    }
}

fn kind(v: &Json) -> &'static str {
    match v {
        Json::Null => "null",
        Json::Bool(_) => "a boolean",
        Json::Number(_) => "a number",
        Json::String(_) => "a string",
        Json::Array(_) => "an array",
        Json::Object(_) => "an object",
    }
}

/// `?timeout_ms=`: how long a `set` or an action waits for the device (the WAMP CALL's
/// `timeout` option).
fn timeout(q: &HashMap<String, String>) -> Result<Option<Duration>, HttpError> {
    match q.get("timeout_ms") {
        None => Ok(None),
        Some(ms) => match ms.parse::<u64>() {
            Ok(0) => Ok(None),
            Ok(ms) => Ok(Some(Duration::from_millis(ms).min(MAX_TIMEOUT))),
            Err(_) => Err(HttpError::invalid(format!(
                "timeout_ms must be a number of milliseconds, got {ms:?}"
            ))),
        },
    }
}

async fn list(State(api): Shared, headers: HeaderMap, q: Params) -> Answer {
    let q = params(q)?;
    let online = match q.get("online").map(String::as_str) {
        None | Some("") => None,
        Some("true") => Some(true),
        Some("false") => Some(false),
        Some(other) => {
            return Err(HttpError::invalid(format!(
                "online must be true or false, got {other:?}"
            )));
        }
    };
    let type_id = q.get("type").filter(|t| !t.is_empty()).cloned();
    ok(ask(
        &api,
        &headers,
        uris::things::LIST,
        Request::List { type_id, online },
    )
    .await?)
}

async fn provision(State(api): Shared, headers: HeaderMap, body: Bytes) -> Answer {
    let mut b = body_object(&body, "{thing, type, info}")?;
    let text = |b: &mut Map<String, Json>, key: &str| match b.remove(key) {
        Some(Json::String(s)) => Ok(s),
        Some(other) => Err(HttpError::invalid(format!(
            "{key:?} must be a string, got {}",
            kind(&other)
        ))),
        None => Err(HttpError::invalid(format!("{key:?} is required"))),
    };
    let thing = thing_id(&text(&mut b, "thing")?)?;
    let type_id = text(&mut b, "type")?;
    let info = match b.remove("info") {
        None | Some(Json::Null) => Map::new(),
        Some(Json::Object(m)) => m,
        Some(other) => {
            return Err(HttpError::invalid(format!(
                "\"info\" must be an object, got {}",
                kind(&other)
            )));
        }
    };
    if let Some(key) = b.keys().next() {
        return Err(HttpError::invalid(format!(
            "unknown field {key:?} (known: thing, type, info)"
        )));
    }
    let request = Request::Provision {
        thing,
        type_id,
        info,
    };
    let made = ask(&api, &headers, uris::things::PROVISION, request).await?;
    Ok((StatusCode::CREATED, axum::Json(made)).into_response())
}

async fn thing_get(
    State(api): Shared,
    headers: HeaderMap,
    p: Result<Path<String>, PathRejection>,
) -> Answer {
    let thing = thing_id(&path(p)?)?;
    let request = Request::Get {
        thing,
        property: None,
    };
    ok(ask(&api, &headers, uris::things::GET, request).await?)
}

async fn thing_delete(
    State(api): Shared,
    headers: HeaderMap,
    p: Result<Path<String>, PathRejection>,
) -> Answer {
    let thing = thing_id(&path(p)?)?;
    ok(ask(
        &api,
        &headers,
        uris::things::DELETE,
        Request::Delete { thing },
    )
    .await?)
}

async fn property_get(
    State(api): Shared,
    headers: HeaderMap,
    p: Result<Path<(String, String)>, PathRejection>,
) -> Answer {
    let (thing, property) = path(p)?;
    let request = Request::Get {
        thing: thing_id(&thing)?,
        property: Some(property),
    };
    ok(ask(&api, &headers, uris::things::GET, request).await?)
}

/// Writes one property: a state property as `brume.things.set` (waits for the device), an
/// info property as `brume.things.update_info`.
async fn property_put(
    State(api): Shared,
    headers: HeaderMap,
    p: Result<Path<(String, String)>, PathRejection>,
    q: Params,
    body: Bytes,
) -> Answer {
    let (thing, property) = path(p)?;
    let thing = thing_id(&thing)?;
    let q = params(q)?;
    let value = body_json(&body)?;
    caller_for(&api, &headers, uris::things::GET).await?;
    let current = api
        .view
        .things
        .call(Request::Get {
            thing: thing.clone(),
            property: Some(property.clone()),
        })
        .await?;
    let mut values = Map::new();
    values.insert(property, value);
    if current.get("kind").and_then(Json::as_str) == Some("info") {
        let request = Request::UpdateInfo { thing, values };
        return ok(ask(&api, &headers, uris::things::UPDATE_INFO, request).await?);
    }
    let request = Request::Set {
        thing,
        values,
        timeout: timeout(&q)?,
    };
    ok(ask(&api, &headers, uris::things::SET, request).await?)
}

async fn desired_get(
    State(api): Shared,
    headers: HeaderMap,
    p: Result<Path<String>, PathRejection>,
) -> Answer {
    let thing = thing_id(&path(p)?)?;
    let request = Request::Get {
        thing,
        property: None,
    };
    let got = ask(&api, &headers, uris::things::GET, request).await?;
    ok(got.get("desired").cloned().unwrap_or_else(|| json!({})))
}

async fn desired_put(
    State(api): Shared,
    headers: HeaderMap,
    p: Result<Path<String>, PathRejection>,
    q: Params,
    body: Bytes,
) -> Answer {
    let thing = thing_id(&path(p)?)?;
    let q = params(q)?;
    let values = body_object(&body, "property names to desired values")?;
    let request = Request::Set {
        thing,
        values,
        timeout: timeout(&q)?,
    };
    ok(ask(&api, &headers, uris::things::SET, request).await?)
}

async fn info_patch(
    State(api): Shared,
    headers: HeaderMap,
    p: Result<Path<String>, PathRejection>,
    body: Bytes,
) -> Answer {
    let thing = thing_id(&path(p)?)?;
    let values = body_object(&body, "info properties to values")?;
    let request = Request::UpdateInfo { thing, values };
    ok(ask(&api, &headers, uris::things::UPDATE_INFO, request).await?)
}

async fn action(
    State(api): Shared,
    headers: HeaderMap,
    p: Result<Path<(String, String)>, PathRejection>,
    q: Params,
    body: Bytes,
) -> Answer {
    let (thing, action) = path(p)?;
    let thing = thing_id(&thing)?;
    let q = params(q)?;
    let input = body_json(&body)?;
    let uri = uris::things::action_uri(&thing, &action);
    let request = Request::Action {
        thing,
        action,
        input,
        timeout: timeout(&q)?,
    };
    ok(ask(&api, &headers, &uri, request).await?)
}

async fn describe(
    State(api): Shared,
    headers: HeaderMap,
    p: Result<Path<String>, PathRejection>,
) -> Answer {
    let thing = thing_id(&path(p)?)?;
    let td = ask(
        &api,
        &headers,
        uris::things::DESCRIBE,
        Request::Describe { thing },
    )
    .await?;
    Ok((
        [(header::CONTENT_TYPE, "application/td+json")],
        td.to_string(),
    )
        .into_response())
}

async fn types_list(State(api): Shared, headers: HeaderMap) -> Answer {
    ok(ask(&api, &headers, uris::things::TYPES_LIST, Request::TypesList).await?)
}

async fn types_get(
    State(api): Shared,
    headers: HeaderMap,
    p: Result<Path<String>, PathRejection>,
) -> Answer {
    let type_id = path(p)?;
    ok(ask(
        &api,
        &headers,
        uris::things::TYPES_GET,
        Request::TypesGet { type_id },
    )
    .await?)
}

async fn stats(State(api): Shared, headers: HeaderMap) -> Answer {
    ok(ask(&api, &headers, uris::things::STATS, Request::Stats).await?)
}

async fn uplink(State(api): Shared, headers: HeaderMap) -> Answer {
    caller_for(&api, &headers, uris::uplink::STATUS).await?;
    let Some(uplink) = &api.view.uplink else {
        return Err(HttpError::new(NOT_ENABLED, "the uplink is not enabled"));
    };
    ok(Json::from(&crate::wamp::Value::Dict(
        uplink.status().to_dict(),
    )))
}

async fn whoami(State(api): Shared, headers: HeaderMap) -> Answer {
    let c = api.auth.authenticate(&headers).await?;
    ok(json!({
        "authid": c.authid,
        "authrole": c.authrole,
        "anonymous": c.anonymous,
        "realm": api.auth.realm(),
    }))
}

async fn openapi(State(api): Shared, headers: HeaderMap) -> Answer {
    // The document describes the API; reading it needs no more than being let in.
    api.auth.authenticate(&headers).await?;
    ok(super::openapi::document(&api.view.id))
}
