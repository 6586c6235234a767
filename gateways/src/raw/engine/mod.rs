//! The protocol logic of a raw listener, without I/O: which thing a frame comes from, when a device
//! is online, how commands become frames for a peer, how replies are matched to requests and when
//! requests time out.
//!
//! Fed with [`Engine::handle_frame`], [`Engine::handle_command`], [`Engine::handle_timeout`] and the
//! link calls, all with the current time; drained with [`Engine::poll_event`],
//! [`Engine::poll_transmit`] and [`Engine::poll_timeout`]. One engine serves a whole listener and is
//! owned by one task (the UDP socket task, the TCP listener's engine task, the serial port task).
//!
//! A *peer* is where frames come from and go to: a UDP source address, a TCP connection, a serial
//! port. Several things may share a peer (a concentrator, an RS-485 bus).
//!
//! Identification: the frame's id field names the thing; otherwise the peer's mapping from the
//! config does. When both are there and disagree, the frame is dropped (`id_mismatch`), so a mapped
//! peer cannot speak for other things. A reply without id belongs to the thing of the request it
//! answers.
//!
//! Presence: the first frame of a thing gives `Hello` (with the type id as hint and any info
//! properties of the frame); a frame after `Offline` gives `Online`. A thing silent for
//! `offline_after`, or whose peer is lost, goes `Offline`.

mod link;
#[cfg(test)]
mod tests;

use std::collections::{HashMap, VecDeque};
use std::fmt::Display;
use std::hash::Hash;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use device_models::frames::{Command, DecodedFrame};
use device_models::{DeviceCommand, DeviceEvent, ThingId};
use serde_json::{Map, Value};
use tracing::{debug, warn};

use self::link::{Link, Purpose, Request};
use super::model::DeviceModel;
use super::stats::ListenerStats;

/// The current time, monotonic for timers and wall-clock for event stamps and hub deadlines.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Clock {
    pub mono: Instant,
    pub wall_ms: u64,
}

impl Clock {
    /// Now, by tokio's clock (so paused-time tests work) and the system's.
    pub fn now() -> Self {
        let wall_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        Self {
            mono: tokio::time::Instant::now().into_std(),
            wall_ms,
        }
    }

    /// The monotonic instant of a wall-clock deadline.
    fn instant_of(&self, deadline_ms: u64) -> Option<Instant> {
        let left = deadline_ms.checked_sub(self.wall_ms).filter(|ms| *ms > 0)?;
        Some(self.mono + Duration::from_millis(left))
    }
}

/// Bytes to write to a peer.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Transmit<P> {
    pub peer: P,
    pub bytes: Bytes,
}

/// What an engine is told by its listener's config.
#[derive(Debug, Clone)]
pub(crate) struct EngineSettings {
    /// Silence after which a thing goes offline; `None`: never (only when its peer is lost).
    pub offline_after: Option<Duration>,
    /// How long a desired-state change may wait for its turn and its reply.
    pub set_timeout: Duration,
    /// Requests outstanding at once per peer (1 on a half-duplex bus).
    pub max_in_flight: usize,
    /// Command frames waiting per peer beyond those in flight.
    pub max_queued: usize,
    /// Things tracked at once.
    pub max_devices: usize,
    /// Whether peers are reachable without being announced (UDP): a link is made on demand.
    /// Otherwise commands reach only peers announced by [`Engine::handle_link_up`].
    pub implicit_links: bool,
}

/// Why a request failed without a reply.
#[derive(Debug, Clone, Copy)]
enum Failure {
    Timeout,
    NotSent,
    LinkLost,
}

impl Failure {
    fn message(self) -> &'static str {
        match self {
            Self::Timeout => "the device did not answer before the deadline",
            Self::NotSent => "the device could not be reached before the deadline",
            Self::LinkLost => "the connection to the device was lost before it answered",
        }
    }
}

#[derive(Debug)]
struct Device<P> {
    peer: P,
    /// `Hello` was sent (since the device's last peer was lost).
    greeted: bool,
    online: bool,
    last_heard: Instant,
    /// Info values last told to the hub.
    info: Map<String, Value>,
}

/// A raw listener's protocol state; see the module docs.
#[derive(Debug)]
pub(crate) struct Engine<P> {
    model: Arc<DeviceModel>,
    settings: EngineSettings,
    stats: Arc<ListenerStats>,
    devices: HashMap<ThingId, Device<P>>,
    links: HashMap<P, Link>,
    seq: u32,
    events: VecDeque<DeviceEvent>,
    transmits: VecDeque<Transmit<P>>,
    next_sweep: Option<Instant>,
}

impl<P: Clone + Eq + Hash + Display> Engine<P> {
    pub fn new(
        model: Arc<DeviceModel>,
        settings: EngineSettings,
        stats: Arc<ListenerStats>,
    ) -> Self {
        Self {
            model,
            settings,
            stats,
            devices: HashMap::new(),
            links: HashMap::new(),
            seq: 0,
            events: VecDeque::new(),
            transmits: VecDeque::new(),
            next_sweep: None,
        }
    }

    /// The next event for the hub.
    pub fn poll_event(&mut self) -> Option<DeviceEvent> {
        let event = self.events.pop_front();
        if event.is_some() {
            ListenerStats::bump(&self.stats.events);
        }
        event
    }

    /// The next frame to write.
    pub fn poll_transmit(&mut self) -> Option<Transmit<P>> {
        self.transmits.pop_front()
    }

    /// When [`Engine::handle_timeout`] should next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.links
            .values()
            .filter_map(Link::next_deadline)
            .chain(self.next_sweep)
            .min()
    }

    /// Makes a thing known at a peer before it is heard (a serial port's configured `thing`, a
    /// mapped `ip:port`), so commands can reach it. It is not reported online until heard.
    pub fn add_known(&mut self, thing: ThingId, peer: P, now: Instant) {
        self.devices.entry(thing).or_insert(Device {
            peer,
            greeted: false,
            online: false,
            last_heard: now,
            info: Map::new(),
        });
    }

    /// A peer can be written to (a TCP connection opened, a serial port opened).
    pub fn handle_link_up(&mut self, peer: &P, now: Instant) {
        self.links.entry(peer.clone()).or_default().up = true;
        self.pump(peer, now);
    }

    /// A peer can no longer be written to (or, for a serial port not yet open, cannot be yet).
    /// Requests in flight fail and frames not yet written are dropped; with `forget` (a closed TCP
    /// connection, which never comes back) queued requests fail too, otherwise they wait for the
    /// link to come back (a serial port being reopened). Things last heard there go offline.
    pub fn handle_link_down(&mut self, peer: &P, forget: bool) {
        let mut failed = Vec::new();
        if forget {
            if let Some(link) = self.links.remove(peer) {
                failed.extend(link.in_flight);
                failed.extend(link.queue);
            }
        } else {
            let link = self.links.entry(peer.clone()).or_default();
            link.up = false;
            failed.extend(link.in_flight.drain(..));
        }
        self.transmits.retain(|t| t.peer != *peer);
        for request in failed {
            self.fail(request, Failure::LinkLost);
        }
        for (thing, device) in &mut self.devices {
            if device.peer != *peer {
                continue;
            }
            if device.online {
                device.online = false;
                self.events.push_back(DeviceEvent::Offline {
                    thing: thing.clone(),
                });
            }
            if forget {
                device.greeted = false;
            }
        }
    }

    /// One decoded frame from `peer`. `mapped` is the thing the config maps the peer to, if any.
    pub fn handle_frame(
        &mut self,
        peer: &P,
        mapped: Option<&ThingId>,
        frame: DecodedFrame,
        now: Clock,
    ) {
        let named = match frame.thing_id.map(ThingId::new).transpose() {
            Ok(named) => named,
            Err(_) => {
                ListenerStats::bump(&self.stats.bad_id);
                return;
            }
        };
        if let (Some(named), Some(mapped)) = (&named, mapped)
            && named != mapped
        {
            ListenerStats::bump(&self.stats.id_mismatch);
            debug!(%peer, named = %named.as_str(), mapped = %mapped.as_str(), "frame names another thing than its peer's");
            return;
        }
        let mut thing = named.or_else(|| mapped.cloned());
        let answered = match &frame.reply {
            None => None,
            Some(reply) => {
                let request = self
                    .links
                    .get_mut(peer)
                    .and_then(|link| link.take_reply(&reply.correlation, thing.as_ref()));
                if request.is_some() {
                    ListenerStats::bump(&self.stats.replies);
                } else {
                    ListenerStats::bump(&self.stats.unmatched_replies);
                }
                request
            }
        };
        if thing.is_none() {
            thing = answered.as_ref().map(|r| r.thing.clone());
        }
        let Some(thing) = thing else {
            ListenerStats::bump(&self.stats.unidentified);
            return;
        };
        ListenerStats::bump(&self.stats.frames);
        let sorted = self.model.sort_values(&frame.values);
        if sorted.unknown > 0 && answered.is_none() {
            self.stats
                .unknown_properties
                .fetch_add(sorted.unknown as u64, std::sync::atomic::Ordering::Relaxed);
        }
        if self.heard(&thing, peer, sorted.info, now.mono) {
            if !sorted.state.is_empty() {
                self.events.push_back(DeviceEvent::Reported {
                    thing: thing.clone(),
                    values: sorted.state,
                    at_ms: now.wall_ms,
                });
            }
        } else if answered.is_none() {
            return;
        }
        if let Some(request) = answered {
            if let Purpose::Action { name, correlation } = request.purpose {
                self.events.push_back(DeviceEvent::ActionReply {
                    thing: request.thing,
                    correlation,
                    outcome: self.model.action_outcome(&name, &frame.values),
                });
            } else {
                debug!(%peer, thing = %request.thing.as_str(), "desired values acknowledged");
            }
        }
        self.pump(peer, now.mono);
    }

    /// Records that `thing` was heard at `peer`, with presence events. Returns false when the
    /// thing is new and the listener already tracks `max_devices` things (the frame is dropped).
    fn heard(&mut self, thing: &ThingId, peer: &P, info: Map<String, Value>, now: Instant) -> bool {
        if !self.devices.contains_key(thing) && self.devices.len() >= self.settings.max_devices {
            self.devices.retain(|_, d| d.online);
            if self.devices.len() >= self.settings.max_devices {
                ListenerStats::bump(&self.stats.too_many_devices);
                return false;
            }
        }
        let device = self.devices.entry(thing.clone()).or_insert(Device {
            peer: peer.clone(),
            greeted: false,
            online: false,
            last_heard: now,
            info: Map::new(),
        });
        device.peer = peer.clone();
        device.last_heard = now;
        let was_online = std::mem::replace(&mut device.online, true);
        if !device.greeted {
            device.greeted = true;
            device.info = info.clone();
            self.events.push_back(DeviceEvent::Hello {
                thing: thing.clone(),
                type_hint: Some(self.model.thing_type().id.clone()),
                info,
            });
        } else {
            if !was_online {
                self.events.push_back(DeviceEvent::Online {
                    thing: thing.clone(),
                });
            }
            let changed: Map<String, Value> = info
                .into_iter()
                .filter(|(k, v)| device.info.get(k) != Some(v))
                .collect();
            if !changed.is_empty() {
                device.info.extend(changed.clone());
                self.events.push_back(DeviceEvent::Info {
                    thing: thing.clone(),
                    info: changed,
                });
            }
        }
        if self.settings.offline_after.is_some() && self.next_sweep.is_none() {
            self.next_sweep = Some(now + self.sweep_interval());
        }
        true
    }

    fn sweep_interval(&self) -> Duration {
        let after = self
            .settings
            .offline_after
            .unwrap_or(Duration::from_secs(1));
        (after / 4).clamp(Duration::from_millis(20), Duration::from_secs(1))
    }

    /// A command from the hub.
    pub fn handle_command(&mut self, command: DeviceCommand, now: Clock) {
        match command {
            DeviceCommand::SetDesired { thing, values } => {
                let deadline = now.mono + self.settings.set_timeout;
                self.queue_command(&thing, Command::Set(&values), Purpose::Set, deadline, now);
            }
            DeviceCommand::InvokeAction {
                thing,
                action,
                input,
                correlation,
                deadline_ms,
            } => {
                let Some(deadline) = now.instant_of(deadline_ms) else {
                    // The hub has given up already: nobody waits for an answer.
                    ListenerStats::bump(&self.stats.timeouts);
                    debug!(thing = %thing.as_str(), %action, "action arrived past its deadline");
                    return;
                };
                let command = Command::Action {
                    name: &action,
                    input: &input,
                };
                let purpose = Purpose::Action {
                    name: action.clone(),
                    correlation,
                };
                self.queue_command(&thing, command, purpose, deadline, now);
            }
        }
    }

    fn queue_command(
        &mut self,
        thing: &ThingId,
        command: Command<'_>,
        purpose: Purpose,
        deadline: Instant,
        now: Clock,
    ) {
        let Some(peer) = self.devices.get(thing).map(|d| d.peer.clone()) else {
            return self.reject(
                thing,
                purpose,
                "the device has not been heard on this listener",
            );
        };
        if !self.links.contains_key(&peer) {
            if !self.settings.implicit_links {
                return self.reject(thing, purpose, "the device is not connected");
            }
            self.links.insert(peer.clone(), Link::new(true));
        }
        let frames = match self
            .model
            .codec()
            .encode_command(thing.as_str(), command, self.seq)
        {
            Ok(frames) => frames,
            Err(e) => {
                self.drop_idle_link(&peer);
                return self.reject(thing, purpose, &format!("cannot encode the command: {e}"));
            }
        };
        self.seq = self
            .seq
            .wrapping_add(u32::try_from(frames.len()).unwrap_or(u32::MAX));
        let room = self.links.get(&peer).map_or(0, |l| {
            self.settings.max_queued.saturating_sub(l.queue.len())
        });
        if frames.len() > room {
            self.drop_idle_link(&peer);
            return self.reject(thing, purpose, "the device's command queue is full");
        }
        let count = frames.len();
        if let Some(link) = self.links.get_mut(&peer) {
            for (i, frame) in frames.into_iter().enumerate() {
                // Only `set` may take several frames; an action's reply is its (only) frame's.
                let purpose = if i + 1 == count {
                    purpose.clone()
                } else {
                    Purpose::Set
                };
                link.queue.push_back(Request {
                    thing: thing.clone(),
                    purpose,
                    bytes: frame.bytes,
                    reply: frame.reply,
                    deadline,
                });
            }
        }
        self.pump(&peer, now.mono);
    }

    fn reject(&mut self, thing: &ThingId, purpose: Purpose, why: &str) {
        ListenerStats::bump(&self.stats.commands_rejected);
        match purpose {
            Purpose::Action { correlation, .. } => {
                self.events.push_back(DeviceEvent::ActionReply {
                    thing: thing.clone(),
                    correlation,
                    outcome: Err(why.to_owned()),
                });
            }
            Purpose::Set => warn!(thing = %thing.as_str(), reason = why, "desired values not sent"),
        }
    }

    fn fail(&mut self, request: Request, failure: Failure) {
        ListenerStats::bump(&self.stats.timeouts);
        match request.purpose {
            Purpose::Action { correlation, .. } => {
                self.events.push_back(DeviceEvent::ActionReply {
                    thing: request.thing,
                    correlation,
                    outcome: Err(failure.message().to_owned()),
                });
            }
            Purpose::Set => {
                debug!(thing = %request.thing.as_str(), reason = failure.message(), "desired values unconfirmed");
            }
        }
    }

    /// Writes queued requests while the peer has room for them.
    fn pump(&mut self, peer: &P, now: Instant) {
        let max_in_flight = self.settings.max_in_flight.max(1);
        let mut done = Vec::new();
        let mut expired = Vec::new();
        if let Some(link) = self.links.get_mut(peer)
            && link.up
        {
            while link.in_flight.len() < max_in_flight {
                let Some(request) = link.queue.pop_front() else {
                    break;
                };
                if request.deadline <= now {
                    expired.push(request);
                    continue;
                }
                self.transmits.push_back(Transmit {
                    peer: peer.clone(),
                    bytes: request.bytes.clone(),
                });
                ListenerStats::bump(&self.stats.commands_sent);
                if request.reply.is_some() {
                    link.in_flight.push_back(request);
                } else {
                    done.push(request);
                }
            }
        }
        for request in expired {
            self.fail(request, Failure::NotSent);
        }
        for request in done {
            if let Purpose::Action { correlation, .. } = request.purpose {
                self.events.push_back(DeviceEvent::ActionReply {
                    thing: request.thing,
                    correlation,
                    outcome: Ok(Value::Null),
                });
            }
        }
        self.drop_idle_link(peer);
    }

    /// Forgets an implicit link with nothing pending, so UDP sources do not accumulate.
    fn drop_idle_link(&mut self, peer: &P) {
        if self.settings.implicit_links && self.links.get(peer).is_some_and(Link::is_idle) {
            self.links.remove(peer);
        }
    }

    /// Expires requests and finds silent things.
    pub fn handle_timeout(&mut self, now: Instant) {
        let due: Vec<P> = self
            .links
            .iter()
            .filter(|(_, l)| l.next_deadline().is_some_and(|d| d <= now))
            .map(|(p, _)| p.clone())
            .collect();
        for peer in due {
            let expired = self
                .links
                .get_mut(&peer)
                .map(|l| l.take_expired(now))
                .unwrap_or_default();
            for (request, was_sent) in expired {
                let failure = if was_sent {
                    Failure::Timeout
                } else {
                    Failure::NotSent
                };
                self.fail(request, failure);
            }
            self.pump(&peer, now);
        }
        if self.next_sweep.is_some_and(|t| t <= now) {
            self.sweep(now);
        }
    }

    fn sweep(&mut self, now: Instant) {
        let Some(after) = self.settings.offline_after else {
            self.next_sweep = None;
            return;
        };
        let mut any_online = false;
        for (thing, device) in &mut self.devices {
            if !device.online {
                continue;
            }
            if now.saturating_duration_since(device.last_heard) >= after {
                device.online = false;
                self.events.push_back(DeviceEvent::Offline {
                    thing: thing.clone(),
                });
            } else {
                any_online = true;
            }
        }
        self.next_sweep = any_online.then(|| now + self.sweep_interval());
    }

    /// Things currently online (for tests and diagnostics).
    #[cfg(test)]
    pub fn online(&self) -> Vec<&str> {
        let mut online: Vec<&str> = self
            .devices
            .iter()
            .filter(|(_, d)| d.online)
            .map(|(t, _)| t.as_str())
            .collect();
        online.sort_unstable();
        online
    }
}
