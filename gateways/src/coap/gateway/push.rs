//! Devices that push to the hub: the sans-I/O core behind `/things/<id>/...`. It turns one
//! request into one response plus at most [`MAX_EVENTS_PER_REQUEST`] events, keeps each thing's
//! presence and pending commands, and says when a commands resource must be notified. Time comes
//! in as arguments; nothing here waits.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use device_models::{DeviceCommand, DeviceEvent, LogLimiter, LogPermit, ThingId};
use serde_json::{Map, Value};
use tracing::{debug, debug_span, warn};

use super::commands::{DESIRED_ID_PREFIX, PendingAction, PendingCommands, Reply, Settled};
use super::payload::{self, PayloadError, PayloadFormat};
use super::resource::{
    LINK_FORMAT, Query, Resource, commands_path, is_well_known_core, link_format, route,
    thing_of_commands_path,
};
use crate::coap::ResponseType;
use crate::coap::server::{Notification, Request, Response};
use crate::link::{CredentialCheck, DeviceCredentials};

/// Most events one request produces: `Hello` or `Online`, then what the request says.
pub(crate) const MAX_EVENTS_PER_REQUEST: usize = 2;

/// Longest diagnostic payload put in an error response.
const MAX_DIAGNOSTIC: usize = 120;

/// The settings of [`PushDevices`], taken from the config.
#[derive(Clone, Debug)]
pub(crate) struct PushSettings {
    pub auth_required: bool,
    pub offline_after: Duration,
    pub commands_max_age: u32,
    pub max_things: usize,
    pub max_pending_actions: usize,
}

/// What the gateway knows of one push device.
#[derive(Debug)]
struct ThingEntry {
    /// When the device last sent a request; `None` while it is known only from commands.
    last_heard: Option<Instant>,
    /// Whether `Hello` was sent since the gateway started.
    greeted: bool,
    online: bool,
    /// Observations of its commands resource, as the server engine last reported them.
    observers: usize,
    /// When it was last probed with a confirmable notification while silent.
    last_probe: Option<Instant>,
    /// The address it last spoke from, for logs.
    peer: Option<SocketAddr>,
    commands: PendingCommands,
    /// Format of its commands representation (the Accept of its last GET of it).
    commands_format: PayloadFormat,
}

impl ThingEntry {
    fn new() -> Self {
        Self {
            last_heard: None,
            greeted: false,
            online: false,
            observers: 0,
            last_probe: None,
            peer: None,
            commands: PendingCommands::default(),
            commands_format: PayloadFormat::Json,
        }
    }

    /// May be forgotten to make room: offline, unobserved, nothing pending.
    fn evictable(&self) -> bool {
        !self.online && self.observers == 0 && self.commands.is_empty()
    }
}

/// What to do about one request.
#[derive(Debug)]
pub(crate) struct Reaction {
    /// The answer.
    pub response: Response,
    /// Events for the hub, in order.
    pub events: Vec<DeviceEvent>,
    /// A thing whose commands representation changed, to notify.
    pub notify: Option<ThingId>,
    /// The device reads its thing back: the answer comes from the hub's registry, later; then
    /// `response` is not sent.
    pub read: Option<Read>,
}

/// A device's GET of its own `state` or `info`, answered from the hub's registry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Read {
    pub thing: ThingId,
    pub what: ReadWhat,
    pub format: PayloadFormat,
}

/// Which part of the thing a [`Read`] asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ReadWhat {
    State,
    Info,
}

impl Read {
    /// The answer once the hub replied: the values as a map, or 4.04 for a thing the hub does
    /// not hold.
    pub fn answer(&self, view: Option<&crate::link::ThingView>) -> Response {
        let Some(view) = view else {
            return Response::new(ResponseType::NotFound);
        };
        let values = match self.what {
            ReadWhat::State => &view.state,
            ReadWhat::Info => &view.info,
        };
        Response::content(
            self.format.content_format(),
            payload::encode(self.format, &Value::Object(values.clone())),
        )
    }
}

impl Reaction {
    fn answer(response: Response) -> Self {
        Self {
            response,
            events: Vec::new(),
            notify: None,
            read: None,
        }
    }

    fn error(code: ResponseType, diagnostic: &str) -> Self {
        Refusal::with(code, diagnostic).into()
    }
}

/// An error answer decided while reading a request: a code and a diagnostic text.
#[derive(Debug)]
struct Refusal {
    code: ResponseType,
    diagnostic: String,
}

impl Refusal {
    fn code(code: ResponseType) -> Self {
        Self {
            code,
            diagnostic: String::new(),
        }
    }

    fn with(code: ResponseType, diagnostic: &str) -> Self {
        let cut = diagnostic
            .char_indices()
            .map(|(i, c)| i + c.len_utf8())
            .take_while(|end| *end <= MAX_DIAGNOSTIC)
            .last()
            .unwrap_or(0);
        Self {
            code,
            diagnostic: diagnostic.get(..cut).unwrap_or("").to_owned(),
        }
    }
}

impl From<Refusal> for Reaction {
    fn from(r: Refusal) -> Self {
        let mut response = Response::new(r.code);
        response.payload = Bytes::from(r.diagnostic);
        Reaction::answer(response)
    }
}

/// What a hub command led to.
#[derive(Debug, Default)]
pub(crate) struct CommandOutcome {
    /// The thing to notify.
    pub notify: Option<ThingId>,
    /// Events for the hub (an immediate error reply to an action that cannot be queued).
    pub events: Vec<DeviceEvent>,
}

/// What a periodic sweep found.
#[derive(Debug, Default)]
pub(crate) struct Sweep {
    /// `Offline` events.
    pub offline: Vec<DeviceEvent>,
    /// Silent but observed things to probe with a confirmable notification.
    pub probes: Vec<ThingId>,
}

/// The push devices' state. Owned by the gateway task alone.
pub(crate) struct PushDevices {
    settings: PushSettings,
    credentials: Arc<dyn DeviceCredentials>,
    things: HashMap<ThingId, ThingEntry>,
    next_desired: u64,
    /// Warnings about a full thing table: at most ten per ten seconds (each refusal is also
    /// seen: a request answered 5.03 counts as busy, a command is refused to the hub).
    full_log: LogLimiter,
}

/// What a request asks for, once its payload is read.
enum Act {
    Report(Map<String, Value>),
    Event(String, Value),
    Info(Map<String, Value>),
    Desired(PayloadFormat),
    Commands(PayloadFormat),
    Reply(Reply),
    Read(ReadWhat, PayloadFormat),
}

impl PushDevices {
    pub fn new(settings: PushSettings, credentials: Arc<dyn DeviceCredentials>) -> Self {
        Self {
            settings,
            credentials,
            things: HashMap::new(),
            next_desired: 0,
            full_log: LogLimiter::default(),
        }
    }

    /// Answers one request.
    pub fn on_request(&mut self, now: Instant, wall_ms: u64, req: &Request) -> Reaction {
        if is_well_known_core(&req.path) {
            if req.method != crate::coap::Method::Get {
                return Reaction::answer(Response::new(ResponseType::MethodNotAllowed));
            }
            return Reaction::answer(Response::content(LINK_FORMAT, link_format(&req.query)));
        }
        let Ok((thing, resource)) = route(&req.path) else {
            return Reaction::error(ResponseType::NotFound, "no such resource");
        };
        let span = debug_span!("coap_device", thing = %thing, peer = %req.peer);
        let _entered = span.enter();
        if !resource.allows(req.method) {
            return Reaction::answer(Response::new(ResponseType::MethodNotAllowed));
        }
        if let Err(refusal) = self.authenticate(&thing, &req.query) {
            return refusal.into();
        }
        let act = match read_request(&resource, req) {
            Ok(act) => act,
            Err(refusal) => return refusal.into(),
        };
        if !self.make_room(&thing) {
            if let LogPermit::Log { suppressed } = self.full_log.permit(now) {
                warn!(
                    max_things = self.settings.max_things,
                    suppressed, "thing table full; request answered 5.03"
                );
            }
            let mut busy = Response::new(ResponseType::ServiceUnavailable);
            busy.max_age = Some(30);
            return Reaction::answer(busy);
        }
        let type_hint = Query::parse(&req.query).type_hint.map(str::to_owned);
        let max_age = self.settings.commands_max_age;
        let entry = self
            .things
            .entry(thing.clone())
            .or_insert_with(ThingEntry::new);
        entry.last_heard = Some(now);
        entry.last_probe = None;
        entry.peer = Some(req.peer);

        let mut events = Vec::with_capacity(MAX_EVENTS_PER_REQUEST);
        let mut info_in_hello = false;
        if !entry.greeted {
            // First contact: `Hello`, carrying the info when that is what the device sent.
            let info = match &act {
                Act::Info(info) => {
                    info_in_hello = true;
                    info.clone()
                }
                _ => Map::new(),
            };
            debug!("first contact");
            events.push(DeviceEvent::Hello {
                thing: thing.clone(),
                type_hint,
                info,
            });
            entry.greeted = true;
            entry.online = true;
        } else if !entry.online {
            debug!("back online");
            events.push(DeviceEvent::Online {
                thing: thing.clone(),
            });
            entry.online = true;
        }

        let reaction = match act {
            Act::Report(values) => {
                entry.commands.confirm_reported(&values);
                events.push(DeviceEvent::Reported {
                    thing,
                    values,
                    at_ms: wall_ms,
                });
                Reaction::answer(Response::new(ResponseType::Changed))
            }
            Act::Event(name, payload) => {
                events.push(DeviceEvent::Event {
                    thing,
                    name,
                    payload,
                    at_ms: wall_ms,
                });
                Reaction::answer(Response::new(ResponseType::Created))
            }
            Act::Info(info) => {
                if !info_in_hello {
                    events.push(DeviceEvent::Info { thing, info });
                }
                Reaction::answer(Response::new(ResponseType::Changed))
            }
            Act::Desired(format) => Reaction::answer(Response::content(
                format.content_format(),
                payload::encode(format, &Value::Object(entry.commands.desired_values())),
            )),
            Act::Commands(format) => {
                entry.commands_format = format;
                let body = payload::encode(format, &entry.commands.representation());
                Reaction::answer(
                    Response::content(format.content_format(), body).with_max_age(max_age),
                )
            }
            Act::Read(what, format) => Reaction {
                read: Some(Read {
                    thing,
                    what,
                    format,
                }),
                ..Reaction::answer(Response::new(ResponseType::Content))
            },
            Act::Reply(reply) => match entry.commands.settle(&reply.id) {
                Settled::Desired | Settled::StaleDesired => {
                    Reaction::answer(Response::new(ResponseType::Changed))
                }
                Settled::Action => {
                    events.push(DeviceEvent::ActionReply {
                        thing,
                        correlation: reply.id,
                        outcome: reply.outcome,
                    });
                    Reaction::answer(Response::new(ResponseType::Changed))
                }
            },
        };
        Reaction { events, ..reaction }
    }

    /// Applies the credentials verdict: `Err` carries the refusal.
    fn authenticate(&self, thing: &ThingId, query: &[String]) -> Result<(), Refusal> {
        let secret = Query::parse(query).secret;
        match self.credentials.check(thing, secret.unwrap_or("")) {
            CredentialCheck::Valid => Ok(()),
            CredentialCheck::UnknownThing => {
                debug!("unknown thing");
                Err(Refusal::with(ResponseType::NotFound, "unknown thing"))
            }
            CredentialCheck::Invalid if secret.is_none() && !self.settings.auth_required => Ok(()),
            CredentialCheck::Invalid => {
                debug!(secret_given = secret.is_some(), "bad credentials");
                Err(Refusal::with(ResponseType::Unauthorized, "bad credentials"))
            }
        }
    }

    /// Makes sure `thing` has or can get an entry, forgetting an evictable one if the table is
    /// full. False when there is no room.
    fn make_room(&mut self, thing: &ThingId) -> bool {
        if self.things.len() < self.settings.max_things || self.things.contains_key(thing) {
            return true;
        }
        let victim = self
            .things
            .iter()
            .find(|(_, e)| e.evictable())
            .map(|(id, _)| id.clone());
        match victim {
            Some(id) => {
                self.things.remove(&id);
                true
            }
            None => false,
        }
    }

    /// Queues a hub command for a push device.
    pub fn on_command(&mut self, wall_ms: u64, command: DeviceCommand) -> CommandOutcome {
        let thing = command.thing().clone();
        let span = debug_span!("coap_device", thing = %thing);
        let _entered = span.enter();
        if !self.make_room(&thing) {
            if let LogPermit::Log { suppressed } = self.full_log.permit(Instant::now()) {
                warn!(
                    max_things = self.settings.max_things,
                    suppressed, "thing table full; command refused"
                );
            }
            return CommandOutcome {
                notify: None,
                events: refusal(command, "gateway thing table full"),
            };
        }
        let max_actions = self.settings.max_pending_actions;
        self.next_desired += 1;
        let desired_id = format!("{DESIRED_ID_PREFIX}{}", self.next_desired);
        let entry = self
            .things
            .entry(thing.clone())
            .or_insert_with(ThingEntry::new);
        match command {
            DeviceCommand::SetDesired { values, .. } => {
                debug!(count = values.len(), "desired values queued");
                entry.commands.set_desired(desired_id, values);
            }
            DeviceCommand::InvokeAction {
                action,
                input,
                correlation,
                deadline_ms,
                ..
            } => {
                if deadline_ms <= wall_ms {
                    debug!(%correlation, "action past its deadline dropped");
                    return CommandOutcome::default();
                }
                let pending = PendingAction {
                    correlation,
                    action,
                    input,
                    deadline_ms,
                };
                if let Err(refused) = entry.commands.push_action(pending, max_actions) {
                    warn!(correlation = %refused.correlation, "too many pending actions");
                    return CommandOutcome {
                        notify: None,
                        events: vec![DeviceEvent::ActionReply {
                            thing,
                            correlation: refused.correlation,
                            outcome: Err("too many commands pending for the device".into()),
                        }],
                    };
                }
            }
        }
        CommandOutcome {
            notify: Some(thing),
            events: Vec::new(),
        }
    }

    /// The notification carrying `thing`'s current commands (confirmable, so a lost one is
    /// retransmitted and an observer that stopped answering is dropped), and its path.
    pub fn notification(&self, thing: &ThingId) -> Option<(String, Notification)> {
        let entry = self.things.get(thing)?;
        let format = entry.commands_format;
        let payload = payload::encode(format, &entry.commands.representation());
        let mut n = Notification::new(format.content_format(), payload);
        n.confirmable = Some(true);
        n.max_age = Some(self.settings.commands_max_age);
        Some((commands_path(thing), n))
    }

    /// Records how many observers a thing's commands resource has, as the server engine counted
    /// them when notifying.
    pub fn set_observers(&mut self, thing: &ThingId, count: usize) {
        if let Some(e) = self.things.get_mut(thing) {
            e.observers = count;
        }
    }

    /// An observer of some path was added or dropped by the server engine.
    pub fn on_observer(&mut self, path: &str, added: bool) {
        let Some(thing) = thing_of_commands_path(path) else {
            return;
        };
        if let Some(e) = self.things.get_mut(&thing) {
            e.observers = if added {
                e.observers.saturating_add(1)
            } else {
                e.observers.saturating_sub(1)
            };
            debug!(%thing, observers = e.observers, "commands observers changed");
        }
    }

    /// Expires action requests, marks silent unobserved things offline, and picks silent
    /// observed ones to probe.
    pub fn sweep(&mut self, now: Instant, wall_ms: u64) -> Sweep {
        let mut out = Sweep::default();
        let quiet = self.settings.offline_after;
        for (thing, e) in &mut self.things {
            e.commands.expire(wall_ms);
            if !e.online {
                continue;
            }
            let silent = e
                .last_heard
                .is_none_or(|t| now.saturating_duration_since(t) >= quiet);
            if !silent {
                continue;
            }
            if e.observers == 0 {
                debug!(%thing, peer = ?e.peer, "silent; offline");
                e.online = false;
                out.offline.push(DeviceEvent::Offline {
                    thing: thing.clone(),
                });
            } else if e
                .last_probe
                .is_none_or(|t| now.saturating_duration_since(t) >= quiet)
            {
                e.last_probe = Some(now);
                out.probes.push(thing.clone());
            }
        }
        out
    }

    /// Whether the thing is online (for tests and stats).
    #[cfg(test)]
    pub fn is_online(&self, thing: &ThingId) -> bool {
        self.things.get(thing).is_some_and(|e| e.online)
    }
}

/// The immediate answer to a command that cannot be queued: an error reply for an action,
/// nothing for desired values (the hub's `set` times out).
fn refusal(command: DeviceCommand, why: &str) -> Vec<DeviceEvent> {
    match command {
        DeviceCommand::InvokeAction {
            thing, correlation, ..
        } => vec![DeviceEvent::ActionReply {
            thing,
            correlation,
            outcome: Err(why.to_owned()),
        }],
        DeviceCommand::SetDesired { .. } => Vec::new(),
    }
}

/// Reads what the request carries; `Err` is the answer to a bad one.
fn read_request(resource: &Resource, req: &Request) -> Result<Act, Refusal> {
    let bad = |e: PayloadError| Refusal::with(ResponseType::BadRequest, &e.to_string());
    let body_format = || match req.content_format {
        None => Ok(PayloadFormat::Json),
        Some(cf) => match PayloadFormat::from_content_format(cf) {
            Some(PayloadFormat::Text) | None => {
                Err(Refusal::code(ResponseType::UnsupportedContentFormat))
            }
            Some(f) => Ok(f),
        },
    };
    let accept = || match req.accept {
        None => Ok(PayloadFormat::Json),
        Some(cf) => match PayloadFormat::from_content_format(cf) {
            Some(PayloadFormat::Text) | None => Err(Refusal::code(ResponseType::NotAcceptable)),
            Some(f) => Ok(f),
        },
    };
    let get = req.method == crate::coap::Method::Get;
    Ok(match resource {
        Resource::State if get => Act::Read(ReadWhat::State, accept()?),
        Resource::Info if get => Act::Read(ReadWhat::Info, accept()?),
        Resource::State => {
            Act::Report(payload::decode_object(body_format()?, &req.payload).map_err(bad)?)
        }
        Resource::Event(name) => {
            let value = if req.payload.is_empty() {
                Value::Null
            } else {
                payload::decode(body_format()?, &req.payload).map_err(bad)?
            };
            Act::Event(name.clone(), value)
        }
        Resource::Info => {
            Act::Info(payload::decode_object(body_format()?, &req.payload).map_err(bad)?)
        }
        Resource::Desired => Act::Desired(accept()?),
        Resource::Commands => Act::Commands(accept()?),
        Resource::Replies => {
            let value = payload::decode(body_format()?, &req.payload).map_err(bad)?;
            Act::Reply(
                Reply::from_value(value)
                    .map_err(|e| Refusal::with(ResponseType::BadRequest, &e))?,
            )
        }
    })
}

#[cfg(test)]
mod tests;
