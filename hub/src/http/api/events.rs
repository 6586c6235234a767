//! `GET /api/events`: the things service's publications (state changes, thing events, online,
//! offline, provisioned, deleted) as Server-Sent Events, read straight from the service
//! ([`GatewayLink::watch`](crate::things::GatewayLink::watch)), not through the router.
//!
//! Each publication is `event: publication` with `data: {"topic", "kwargs"}`, sent only if the
//! caller's role may subscribe to its topic; `?thing=<id>` keeps one thing's. Drop policy: a
//! stream that falls more than the service's watch capacity behind misses the oldest
//! publications and gets `event: lagged` with `{"missed": n}`, after which a client reads the
//! current state again; nothing else waits for it. At most [`super::MAX_STREAMS`] streams are
//! open at once; all of them end when the hub stops.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::IntoResponse;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::stream;
use serde_json::{Value as Json, json};
use tokio::sync::broadcast::error::RecvError;

use super::{Answer, Api, Params, params};
use crate::http::error::HttpError;
use crate::router::authz::Action;
use crate::things::core::Publication;
use crate::wamp::uris;

/// A comment line this often keeps proxies and clients from timing the stream out.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

pub(super) async fn stream(State(api): State<Arc<Api>>, headers: HeaderMap, q: Params) -> Answer {
    let q: HashMap<String, String> = params(q)?;
    let caller = api.auth.authenticate(&headers).await?;
    let thing = q.get("thing").filter(|t| !t.is_empty()).cloned();
    // The stream needs leave to follow at least what it asks for.
    let asked = match &thing {
        Some(t) => uris::things::state_topic(t),
        None => uris::things::THING_PREFIX.to_owned(),
    };
    api.auth.authorize(&caller, Action::Subscribe, &asked)?;
    let Some(rx) = api.view.things.watch() else {
        return Err(HttpError::new(
            uris::UNAVAILABLE,
            "the things service does not publish to in-process watchers",
        ));
    };
    let permit = api.streams.clone().try_acquire_owned().map_err(|_| {
        HttpError::new(
            uris::UNAVAILABLE,
            format!("{} event streams are open already", super::MAX_STREAMS),
        )
    })?;
    let state = Follow {
        rx,
        api: api.clone(),
        caller,
        thing,
        _permit: permit,
    };
    let events = stream::unfold(state, |mut s| async move {
        let event = s.next().await?;
        Some((Ok::<_, Infallible>(event), s))
    });
    Ok(Sse::new(events)
        .keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
        .into_response())
}

/// One open stream.
struct Follow {
    rx: tokio::sync::broadcast::Receiver<Arc<Publication>>,
    api: Arc<Api>,
    caller: super::Caller,
    thing: Option<String>,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

impl Follow {
    /// The next event to send; `None` ends the stream (the hub stops).
    async fn next(&mut self) -> Option<Event> {
        loop {
            let got = tokio::select! {
                _ = self.api.shutdown.cancelled() => return None,
                got = self.rx.recv() => got,
            };
            match got {
                Ok(p) => {
                    if let Some(e) = self.event(&p) {
                        return Some(e);
                    }
                }
                Err(RecvError::Lagged(missed)) => {
                    return Some(
                        Event::default()
                            .event("lagged")
                            .data(json!({ "missed": missed }).to_string()),
                    );
                }
                Err(RecvError::Closed) => return None,
            }
        }
    }

    fn event(&self, p: &Publication) -> Option<Event> {
        let kwargs = Json::from(&crate::wamp::Value::Dict(
            p.payload.kwarg_dict().cloned().unwrap_or_default(),
        ));
        if let Some(want) = &self.thing {
            let about = kwargs.get("thing").and_then(Json::as_str) == Some(want.as_str())
                || p.topic
                    .strip_prefix(uris::things::THING_PREFIX)
                    .and_then(|rest| rest.split('.').next())
                    == Some(want.as_str());
            if !about {
                return None;
            }
        }
        if !self.api.auth.may_receive(&self.caller, &p.topic) {
            return None;
        }
        let data = json!({ "topic": p.topic, "kwargs": kwargs });
        Some(Event::default().event("publication").data(data.to_string()))
    }
}
