//! What a device's message means: [`DeviceSession`] (per connection) and [`Translator`], which
//! turns one PUBLISH into [`DeviceEvent`]s following the conventions (`things/<id>/...`), the
//! thing's `[bindings.mqtt]`, or the raw bridge. Synchronous and free of I/O.
//!
//! Presence: the first message of a thing on a connection gives [`DeviceEvent::Hello`] (with the
//! type the device announced in its status, or its registered type), a message after an
//! `offline` gives [`DeviceEvent::Online`], and `offline` (said by the device, or by its last
//! will) gives [`DeviceEvent::Offline`]. The connection's end gives `Offline` too if nothing said
//! so (see the gateway's `closed` hook).

use std::sync::Mutex;

use bytes::Bytes;
use device_models::names::is_valid_name;
use device_models::{DeviceEvent, ThingId};
use serde_json::{Map, Value};
use smallvec::SmallVec;

use super::directory::{Directory, Registered};
use super::error::Rejection;
use super::pending::PendingActions;
use super::topics::{ThingTopic, parse_thing_topic};

/// What the gateway knows of one connection.
#[derive(Debug)]
pub struct DeviceSession {
    /// The thing this connection speaks for: its login, or (anonymous on an open listener) its
    /// client id when that is a thing id holding no secret.
    pub thing: Option<ThingId>,
    /// Whether `Hello` was sent for this connection.
    pub contacted: bool,
    /// Whether the hub was last told the thing is online.
    pub online: bool,
    /// Whether the device said `online` on `things/<id>/status` (so the gateway says `offline`
    /// there, retained, if it vanishes without a will that does).
    pub announced: bool,
    /// Whether the client may subscribe to any filter (but `$` topics) rather than only its own
    /// thing's and the raw namespace: a client without a login on a listener that requires none,
    /// or one that logged in as an observer (see [`ObserverLogins`](crate::ObserverLogins) and
    /// [`acl::may_observe`](super::acl::may_observe)).
    pub observer: bool,
    /// What this read of the connection said, gathered for the hub (see
    /// [`Outgoing`]); boxed and taken only while a read is handled, so that an idle connection
    /// holds a pointer.
    pub outgoing: Option<Box<Outgoing>>,
}

/// The events of a connection's messages since the last batch went to the hub, and the
/// barrier covering the messages whose acknowledgement waits for their commit.
#[derive(Debug, Default)]
pub struct Outgoing {
    /// The batch as it will be sent.
    pub batch: device_models::EventBatch,
    /// The gateway's end of the batch's barrier, handing out a wait per covered message.
    pub group: Option<device_models::CommitGroup>,
}

impl DeviceSession {
    /// A new connection's state.
    pub fn new(thing: Option<ThingId>) -> Self {
        Self {
            thing,
            contacted: false,
            online: false,
            announced: false,
            observer: false,
            outgoing: None,
        }
    }
}

/// What one message came to.
#[derive(Debug, Default, PartialEq)]
pub struct Outcome {
    /// Events for the hub, in order: held inline, as a message gives one or two (a report,
    /// and on first contact its `Hello`), so translating one allocates nothing for them.
    pub events: SmallVec<[DeviceEvent; 2]>,
    /// Why (part of) the message was rejected.
    pub rejected: Option<Rejection>,
    /// Whether it went over the raw bridge.
    pub raw: bool,
    /// Whether it was a reply no pending call was waiting for.
    pub unmatched_reply: bool,
}

/// Translation rules and the state they read.
pub struct Translator<'a> {
    /// Registered things.
    pub directory: &'a Directory,
    /// Calls waiting for replies.
    pub pending: &'a Mutex<PendingActions>,
    /// Largest payload interpreted.
    pub max_message_bytes: usize,
    /// Whether unmodelled topics are bridged.
    pub raw_bridge: bool,
}

impl Translator<'_> {
    /// Translates a message the ACL let through.
    pub fn handle(
        &self,
        session: &mut DeviceSession,
        topic: &str,
        payload: &Bytes,
        now_ms: u64,
    ) -> Outcome {
        let mut out = Outcome::default();
        let result = if let Some((id, kind)) = parse_thing_topic(topic) {
            match session.thing.clone() {
                Some(thing) if thing.as_str() == id => {
                    self.convention(session, &thing, kind, payload, now_ms, &mut out)
                }
                _ => Ok(()),
            }
        } else if let Some((owner, entry)) = self.directory.bound_owner(topic) {
            if session.thing.as_ref() == Some(owner) {
                let owner = owner.clone();
                self.bound(session, &owner, entry, topic, payload, now_ms, &mut out)
            } else {
                Ok(())
            }
        } else if self.raw_bridge {
            self.size(payload).map(|()| {
                out.raw = true;
                out.events.push(DeviceEvent::Raw {
                    source: format!("mqtt:{topic}"),
                    payload: payload.clone(),
                });
            })
        } else {
            Ok(())
        };
        if let Err(rejection) = result {
            out.rejected = Some(rejection);
        }
        out
    }

    fn size(&self, payload: &Bytes) -> Result<(), Rejection> {
        if payload.len() > self.max_message_bytes {
            Err(Rejection::TooLarge {
                size: payload.len(),
                max: self.max_message_bytes,
            })
        } else {
            Ok(())
        }
    }

    fn convention(
        &self,
        session: &mut DeviceSession,
        thing: &ThingId,
        kind: ThingTopic<'_>,
        payload: &Bytes,
        now_ms: u64,
        out: &mut Outcome,
    ) -> Result<(), Rejection> {
        let entry = self.directory.get(thing);
        match kind {
            // The hub's own direction: a device may clear or read them, nothing to report.
            ThingTopic::Desired | ThingTopic::Action(_) => return Ok(()),
            ThingTopic::Other(rest) => return Err(Rejection::UnknownTopic(rest.to_owned())),
            _ => {}
        }
        self.size(payload)?;
        match kind {
            ThingTopic::State => {
                let values = json_object(payload)?;
                present(session, thing, entry, None, Map::new(), out);
                out.events.push(DeviceEvent::Reported {
                    thing: thing.clone(),
                    values,
                    at_ms: now_ms,
                });
            }
            ThingTopic::Info => {
                let info = json_object(payload)?;
                present(session, thing, entry, None, Map::new(), out);
                out.events.push(DeviceEvent::Info {
                    thing: thing.clone(),
                    info,
                });
            }
            ThingTopic::Event(name) => {
                if !is_valid_name(name) {
                    return Err(Rejection::Malformed(format!(
                        "{name:?} is not an event name"
                    )));
                }
                let payload = json_or_null(payload)?;
                present(session, thing, entry, None, Map::new(), out);
                out.events.push(DeviceEvent::Event {
                    thing: thing.clone(),
                    name: name.to_owned(),
                    payload,
                    at_ms: now_ms,
                });
            }
            ThingTopic::Status => {
                let Some(status) = parse_status(payload)? else {
                    return Ok(());
                };
                if status.online {
                    session.announced = true;
                    let known = session.contacted;
                    present(
                        session,
                        thing,
                        entry,
                        status.type_hint,
                        status.info.clone(),
                        out,
                    );
                    if known && !status.info.is_empty() {
                        out.events.push(DeviceEvent::Info {
                            thing: thing.clone(),
                            info: status.info,
                        });
                    }
                } else {
                    session.announced = false;
                    absent(session, thing, out);
                }
            }
            ThingTopic::Replies => {
                let reply = parse_reply(payload)?;
                let pending = lock(self.pending).take(&reply.correlation);
                present(session, thing, entry, None, Map::new(), out);
                if pending.is_none() {
                    out.unmatched_reply = true;
                }
                out.events.push(DeviceEvent::ActionReply {
                    thing: thing.clone(),
                    correlation: reply.correlation,
                    outcome: reply.outcome,
                });
            }
            ThingTopic::Desired | ThingTopic::Action(_) | ThingTopic::Other(_) => {}
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn bound(
        &self,
        session: &mut DeviceSession,
        thing: &ThingId,
        entry: &Registered,
        topic: &str,
        payload: &Bytes,
        now_ms: u64,
        out: &mut Outcome,
    ) -> Result<(), Rejection> {
        let Some(binding) = &entry.binding else {
            return Ok(());
        };
        if !binding.is_device_topic(topic) {
            return Ok(());
        }
        self.size(payload)?;
        let decoded = binding.decode(topic, payload)?;
        if decoded.status == Some(false) {
            absent(session, thing, out);
            return Ok(());
        }
        present(session, thing, Some(entry), None, Map::new(), out);
        if !decoded.reported.is_empty() {
            out.events.push(DeviceEvent::Reported {
                thing: thing.clone(),
                values: decoded.reported,
                at_ms: now_ms,
            });
        }
        if !decoded.info.is_empty() {
            out.events.push(DeviceEvent::Info {
                thing: thing.clone(),
                info: decoded.info,
            });
        }
        if decoded.is_reply_topic {
            let waiting = lock(self.pending).take_oldest(thing, now_ms, |action| {
                binding.action_replies_on(action, topic)
            });
            if let Some((correlation, _)) = waiting {
                out.events.push(DeviceEvent::ActionReply {
                    thing: thing.clone(),
                    correlation,
                    outcome: Ok(decoded.reply.unwrap_or(Value::Null)),
                });
            }
        }
        Ok(())
    }
}

/// Marks the thing present: `Hello` on first contact, `Online` after an `offline`.
fn present(
    session: &mut DeviceSession,
    thing: &ThingId,
    entry: Option<&Registered>,
    type_hint: Option<String>,
    info: Map<String, Value>,
    out: &mut Outcome,
) {
    if !session.contacted {
        session.contacted = true;
        session.online = true;
        out.events.push(DeviceEvent::Hello {
            thing: thing.clone(),
            type_hint: type_hint.or_else(|| entry.map(|e| e.ty.id.clone())),
            info,
        });
    } else if !session.online {
        session.online = true;
        out.events.push(DeviceEvent::Online {
            thing: thing.clone(),
        });
    }
}

/// Marks the thing absent: `Offline` if the hub thinks it online.
fn absent(session: &mut DeviceSession, thing: &ThingId, out: &mut Outcome) {
    if session.online {
        session.online = false;
        out.events.push(DeviceEvent::Offline {
            thing: thing.clone(),
        });
    }
}

fn lock(pending: &Mutex<PendingActions>) -> std::sync::MutexGuard<'_, PendingActions> {
    // The table's invariants hold between calls, so a panic elsewhere cannot break it.
    pending.lock().unwrap_or_else(|p| p.into_inner())
}

fn json(payload: &[u8]) -> Result<Value, Rejection> {
    serde_json::from_slice(payload).map_err(|e| Rejection::Malformed(format!("not JSON: {e}")))
}

fn json_object(payload: &[u8]) -> Result<Map<String, Value>, Rejection> {
    match json(payload)? {
        Value::Object(map) => Ok(map),
        other => Err(Rejection::Malformed(format!(
            "expected a JSON object, got {}",
            kind_of(&other)
        ))),
    }
}

fn json_or_null(payload: &[u8]) -> Result<Value, Rejection> {
    if payload.iter().all(u8::is_ascii_whitespace) {
        Ok(Value::Null)
    } else {
        json(payload)
    }
}

fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// `things/<id>/status`: `online` / `offline`, or
/// `{"status": "online", "type": "<type id>", "info": {...}}`.
struct Status {
    online: bool,
    type_hint: Option<String>,
    info: Map<String, Value>,
}

fn parse_status(payload: &[u8]) -> Result<Option<Status>, Rejection> {
    let text = std::str::from_utf8(payload)
        .map_err(|_| Rejection::Malformed("status is not UTF-8".into()))?
        .trim();
    let plain = |online| {
        Ok(Some(Status {
            online,
            type_hint: None,
            info: Map::new(),
        }))
    };
    match text {
        // An empty retained message clears the status; nothing to report.
        "" => Ok(None),
        "online" => plain(true),
        "offline" => plain(false),
        _ => {
            let mut doc = json_object(payload)?;
            let online = match doc.get("status").and_then(Value::as_str) {
                Some("online") => true,
                Some("offline") => false,
                _ => {
                    return Err(Rejection::Malformed(
                        "status must be \"online\" or \"offline\"".into(),
                    ));
                }
            };
            let type_hint = match doc.remove("type") {
                None => None,
                Some(Value::String(t)) if is_valid_name(&t) => Some(t),
                Some(_) => return Err(Rejection::Malformed("type must be a type id".into())),
            };
            let info = match doc.remove("info") {
                None => Map::new(),
                Some(Value::Object(info)) => info,
                Some(_) => return Err(Rejection::Malformed("info must be an object".into())),
            };
            Ok(Some(Status {
                online,
                type_hint,
                info,
            }))
        }
    }
}

/// `things/<id>/replies`: `{"correlation": "...", "result": ...}` or `{..., "error": ...}`.
struct Reply {
    correlation: String,
    outcome: Result<Value, String>,
}

fn parse_reply(payload: &[u8]) -> Result<Reply, Rejection> {
    let mut doc = json_object(payload)?;
    let correlation = match doc.remove("correlation") {
        Some(Value::String(c)) if !c.is_empty() => c,
        _ => {
            return Err(Rejection::Malformed(
                "a reply needs a non-empty string \"correlation\"".into(),
            ));
        }
    };
    let outcome = match doc.remove("error") {
        Some(Value::Null) | None => Ok(doc.remove("result").unwrap_or(Value::Null)),
        Some(Value::String(e)) => Err(e),
        Some(other) => Err(other.to_string()),
    };
    Ok(Reply {
        correlation,
        outcome,
    })
}

#[cfg(test)]
mod tests;
