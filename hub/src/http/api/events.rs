//! `GET /api/events`: the things service's publications (state changes, thing events, online,
//! offline, provisioned, deleted) as Server-Sent Events, read straight from the service
//! ([`GatewayLink::watch`](crate::things::GatewayLink::watch)), not through the router.
//!
//! Each publication is `event: publication` with `data: {"topic", "kwargs"}`, sent only if the
//! caller's role may subscribe to its topic; `?thing=<id>` keeps one thing's. Both filters look
//! at the topic and the WAMP values; the JSON text is made once per publication and shared by
//! every stream that sends it ([`Watched::json`]).
//!
//! Drop policy: a stream that falls more than the service's watch capacity behind misses the
//! oldest publications and gets `event: lagged` with `{"missed": n}`, after which a client reads
//! the current state again; nothing else waits for it. At most [`super::MAX_STREAMS`] streams
//! are open at once; all of them end when the hub stops.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::IntoResponse;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::stream;
use serde_json::json;
use tokio::sync::broadcast::error::RecvError;

use super::{Answer, Api, Params, params};
use crate::http::error::HttpError;
use crate::router::authz::Action;
use crate::things::link::Watched;
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
    rx: tokio::sync::broadcast::Receiver<Arc<Watched>>,
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

    fn event(&self, w: &Watched) -> Option<Event> {
        let data = data(w, self.thing.as_deref(), |topic| {
            self.api.auth.may_receive(&self.caller, topic)
        })?;
        Some(Event::default().event("publication").data(data))
    }
}

/// What one stream sends for `w`: its shared JSON text, or `None` when the stream's `thing`
/// filter or the caller's leave (`may_receive`, on the topic) keeps it out. Both are decided on
/// the topic and the WAMP values, before any encoding, and the encoding is made once for every
/// stream ([`Watched::json`]).
fn data<'a>(
    w: &'a Watched,
    thing: Option<&str>,
    may_receive: impl FnOnce(&str) -> bool,
) -> Option<&'a str> {
    let p = &w.publication;
    if let Some(want) = thing {
        let about = p
            .payload
            .kwarg_dict()
            .and_then(|d| d.get("thing"))
            .and_then(crate::wamp::Value::as_str)
            == Some(want)
            || p.topic
                .strip_prefix(uris::things::THING_PREFIX)
                .and_then(|rest| rest.split('.').next())
                == Some(want);
        if !about {
            return None;
        }
    }
    if !may_receive(&p.topic) {
        return None;
    }
    Some(w.json())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::things::core::Publication;
    use crate::wamp::{Dict, Payload, Value};

    fn watched(topic: &str, thing: &str) -> Arc<Watched> {
        let mut kwargs = Dict::new();
        kwargs.insert("thing".into(), Value::from(thing));
        kwargs.insert("temperature".into(), Value::Float(21.5));
        Arc::new(Watched::new(Publication {
            topic: topic.to_owned(),
            payload: Payload::kwargs(kwargs),
        }))
    }

    /// Every stream takes what the broadcast hands it and sends the same text: the publication
    /// was encoded once, not once per stream.
    #[tokio::test]
    async fn one_encoding_serves_every_stream() {
        const STREAMS: usize = super::super::MAX_STREAMS;
        let (tx, _) = tokio::sync::broadcast::channel(4);
        let mut streams: Vec<_> = (0..STREAMS).map(|_| tx.subscribe()).collect();
        let sent = watched("brume.thing.t1.state", "t1");
        assert!(tx.send(sent.clone()).is_ok());
        let mut texts = Vec::new();
        for (i, rx) in streams.iter_mut().enumerate() {
            let got = rx.recv().await.expect("published");
            // Half the streams follow the thing, half follow everything.
            let thing = (i % 2 == 0).then_some("t1");
            let text = data(&got, thing, |_| true).expect("passes the filters");
            texts.push((text.as_ptr(), text.len()));
        }
        assert!(texts.iter().all(|t| *t == texts[0]), "one shared string");
        let json: serde_json::Value = serde_json::from_str(sent.json()).expect("JSON");
        assert_eq!(json["topic"], "brume.thing.t1.state");
        assert_eq!(json["kwargs"]["thing"], "t1");
        assert_eq!(json["kwargs"]["temperature"], 21.5);
    }

    /// A stream that filters a publication out decides on the topic and the WAMP values,
    /// before any encoding.
    #[test]
    fn filtered_out_publications_are_never_encoded() {
        let other = watched("brume.thing.t2.state", "t2");
        assert_eq!(data(&other, Some("t1"), |_| true), None);
        assert!(!other.is_encoded());
        let refused = watched("brume.thing.t1.state", "t1");
        assert_eq!(data(&refused, Some("t1"), |_| false), None);
        assert_eq!(data(&refused, None, |_| false), None);
        assert!(!refused.is_encoded());
        // A lifecycle topic names the thing in its kwargs only.
        let online = watched("brume.things.online", "t1");
        assert!(data(&online, Some("t1"), |_| true).is_some());
        assert!(online.is_encoded());
        // A thing's own topic names it even without the kwarg.
        let bare = Arc::new(Watched::new(Publication {
            topic: "brume.thing.t3.event.alarm".into(),
            payload: Payload::empty(),
        }));
        let text = data(&bare, Some("t3"), |_| true).expect("about t3");
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(text).expect("JSON"),
            json!({"topic": "brume.thing.t3.event.alarm", "kwargs": {}})
        );
    }
}
