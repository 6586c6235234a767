//! The interface between gateways and the hub: [`DeviceEvent`]s flow from devices to the hub,
//! [`DeviceCommand`]s from the hub to devices.
//!
//! Gateways know device protocols and nothing of WAMP; the hub knows WAMP and nothing of device
//! protocols. Both depend on these two types and not on each other. They are plain data, free of
//! any async runtime, so a gateway can be driven step by step in tests; how they travel (bounded
//! channels, in practice) is the hub's business. Both serialize with a `kind` tag, for logs and
//! test fixtures.

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::thing::ThingId;

pub mod commit;
pub use commit::{Commit, CommitError, CommitGroup, CommitWait, commit, group};

/// Something a device said, translated by its gateway.
///
/// Timestamps are milliseconds since the Unix epoch, taken by the gateway when the message
/// arrived (device clocks are not trusted).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum DeviceEvent {
    /// First contact from a device the gateway has not seen on this connection: lets the hub
    /// auto-provision an unknown thing when its config allows it, using `type_hint` (a type id
    /// the device announced or its binding implies) and the info the device sent. For a known
    /// thing the hub treats it as `Online` plus `Info`.
    Hello {
        /// The device.
        thing: ThingId,
        /// The thing type the device claims, if it says.
        type_hint: Option<String>,
        /// Info the device announced (firmware, model), possibly empty.
        info: Map<String, Value>,
    },
    /// The device is reachable (connected, or heard from after being offline).
    Online {
        /// The device.
        thing: ThingId,
    },
    /// The device is no longer reachable (disconnected, last will, silence past its timeout).
    Offline {
        /// The device.
        thing: ThingId,
    },
    /// Current values of some state properties.
    Reported {
        /// The device.
        thing: ThingId,
        /// Property name to value; any subset of the type's state properties.
        values: Map<String, Value>,
        /// When the report arrived.
        at_ms: u64,
    },
    /// Values of info properties (firmware version, ...), from the device.
    Info {
        /// The device.
        thing: ThingId,
        /// Info property name to value.
        info: Map<String, Value>,
    },
    /// An event of the thing's type happened.
    Event {
        /// The device.
        thing: ThingId,
        /// The event's name in the type.
        name: String,
        /// The payload, `null` when the event has none.
        payload: Value,
        /// When the event arrived.
        at_ms: u64,
    },
    /// The device's answer to an [`DeviceCommand::InvokeAction`].
    ActionReply {
        /// The device.
        thing: ThingId,
        /// The `correlation` of the command answered.
        correlation: String,
        /// The action's output, or the device's error message.
        outcome: Result<Value, String>,
    },
    /// Traffic that no thing type models, passed on as bytes (e.g. bridged MQTT `a/b/c` to WAMP
    /// `mqtt.a.b.c`).
    Raw {
        /// Where it came from: the protocol, a colon, and the protocol's address, e.g.
        /// `mqtt:a/b/c`, `coap:/sensors/7`, `udp:192.0.2.1:5000`.
        source: String,
        /// The message as received.
        payload: Bytes,
    },
    /// Not something a device said: asks the hub to answer the [`Commit`] once every event this
    /// gateway sent before it is durable (see [`commit`]). Never serialized.
    #[serde(skip)]
    Barrier(Commit),
    /// Not something a device said: several messages' events, handled in order, with the
    /// barrier (if any) covering those of the messages the gateway acknowledges once durable.
    /// One channel operation for what one read of a connection, or one turn of a gateway's
    /// loop, brought. Never serialized.
    #[serde(skip)]
    Batch(Box<EventBatch>),
}

/// Events of several device messages, sent as one [`DeviceEvent::Batch`].
#[derive(Debug, Clone, PartialEq, Default)]
pub struct EventBatch {
    /// The events, in the order the messages came; never a batch or a barrier.
    pub events: Vec<DeviceEvent>,
    /// The barrier made by [`group`] covering some of the messages, with, for each member in
    /// order, the range of `events` its message produced (never empty). The hub answers it
    /// once every event of the batch is durable, and marks a member refused
    /// ([`Commit::refuse`]) when it refused one of that message's events.
    pub covered: Option<(Commit, Vec<std::ops::Range<u32>>)>,
}

impl EventBatch {
    /// The events at which a gateway closes a batch and starts another. The hub's channel from
    /// a gateway holds `things.event_queue` sends, so this bounds what it holds in events. A
    /// device message's events are never split between batches, so a batch covering messages
    /// may hold one message's events more.
    pub const MAX_EVENTS: usize = 32;

    /// Whether the batch holds nothing to send.
    pub fn is_empty(&self) -> bool {
        self.events.is_empty() && self.covered.is_none()
    }

    /// Covers the events from `start` on (one message's, just added) by the batch's barrier,
    /// made with `group` for its first covered message: the wait that message's
    /// acknowledgement is held behind, or `None` when it added no event.
    pub fn cover(&mut self, group: &mut Option<CommitGroup>, start: usize) -> Option<CommitWait> {
        if start >= self.events.len() {
            return None;
        }
        // A batch holds a few dozen events, so the bounds always fit; saturating, the message
        // would still be covered (its wait answers with the barrier), never acknowledged early.
        let bound = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        let range = bound(start)..bound(self.events.len());
        let covered = &mut self.covered;
        let group = group.get_or_insert_with(|| {
            let (commit, group) = commit::group();
            *covered = Some((commit, Vec::new()));
            group
        });
        if let Some((_, ranges)) = covered {
            ranges.push(range);
        }
        Some(group.member())
    }
}

impl DeviceEvent {
    /// The thing concerned; `None` for [`DeviceEvent::Raw`].
    pub fn thing(&self) -> Option<&ThingId> {
        match self {
            Self::Hello { thing, .. }
            | Self::Online { thing }
            | Self::Offline { thing }
            | Self::Reported { thing, .. }
            | Self::Info { thing, .. }
            | Self::Event { thing, .. }
            | Self::ActionReply { thing, .. } => Some(thing),
            Self::Raw { .. } | Self::Barrier(_) | Self::Batch(_) => None,
        }
    }
}

/// Something the hub asks of a device, for its gateway to deliver.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum DeviceCommand {
    /// Apply these desired values of writable state properties. The device confirms by
    /// reporting the new values; there is no separate reply.
    SetDesired {
        /// The device.
        thing: ThingId,
        /// Property name to desired value, already checked against the type.
        values: Map<String, Value>,
    },
    /// Run an action; the device answers with a [`DeviceEvent::ActionReply`] carrying the same
    /// `correlation`.
    InvokeAction {
        /// The device.
        thing: ThingId,
        /// The action's name in the type.
        action: String,
        /// The input, already checked against the type; `null` when there is none.
        input: Value,
        /// Opaque id, unique among the hub's pending calls, that the reply must echo.
        correlation: String,
        /// Time (ms since the Unix epoch) after which the hub has given up on the reply; a
        /// gateway may drop the command if it cannot deliver it before then.
        deadline_ms: u64,
    },
}

impl DeviceCommand {
    /// The thing concerned.
    pub fn thing(&self) -> &ThingId {
        match self {
            Self::SetDesired { thing, .. } | Self::InvokeAction { thing, .. } => thing,
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn thing() -> ThingId {
        ThingId::new("th-1").expect("valid id")
    }

    /// Each covered message gets the range of its events and its own member of one barrier; a
    /// message that added no event is not covered; a refusal reaches only its message.
    #[test]
    fn cover_gives_each_message_its_range_and_its_member() {
        let mut batch = EventBatch::default();
        let mut group = None;
        let online = || DeviceEvent::Online { thing: thing() };
        batch.events.extend([online(), online()]);
        let mut first = batch.cover(&mut group, 0).expect("covered");
        assert!(batch.cover(&mut group, 2).is_none(), "no event, no wait");
        batch.events.push(online());
        let mut second = batch.cover(&mut group, 2).expect("covered");
        let (commit, ranges) = batch.covered.clone().expect("a barrier");
        assert_eq!(ranges, vec![0..2, 2..3]);
        assert_eq!(first.try_answer(), None, "waits for the barrier");
        commit.refuse(1);
        commit.answer(Ok(()));
        assert_eq!(first.try_answer(), Some(Ok(())));
        assert_eq!(second.try_answer(), Some(Err(CommitError::Rejected)));
    }

    #[test]
    fn events_and_commands_round_trip_through_json() {
        let events = [
            DeviceEvent::Hello {
                thing: thing(),
                type_hint: Some("thermostat".into()),
                info: Map::new(),
            },
            DeviceEvent::Online { thing: thing() },
            DeviceEvent::Offline { thing: thing() },
            DeviceEvent::Reported {
                thing: thing(),
                values: json!({"temperature": 21.5})
                    .as_object()
                    .cloned()
                    .unwrap_or_default(),
                at_ms: 7,
            },
            DeviceEvent::Info {
                thing: thing(),
                info: json!({"firmware": "1.0"})
                    .as_object()
                    .cloned()
                    .unwrap_or_default(),
            },
            DeviceEvent::Event {
                thing: thing(),
                name: "triggered".into(),
                payload: json!({"zone": "hall"}),
                at_ms: 8,
            },
            DeviceEvent::ActionReply {
                thing: thing(),
                correlation: "c1".into(),
                outcome: Ok(json!(true)),
            },
            DeviceEvent::ActionReply {
                thing: thing(),
                correlation: "c2".into(),
                outcome: Err("busy".into()),
            },
            DeviceEvent::Raw {
                source: "mqtt:a/b/c".into(),
                payload: Bytes::from_static(b"\x00\xffraw"),
            },
        ];
        for event in events {
            let text = serde_json::to_string(&event).expect("serializes");
            let back: DeviceEvent = serde_json::from_str(&text).expect("deserializes");
            assert_eq!(back, event, "{text}");
        }
        let commands = [
            DeviceCommand::SetDesired {
                thing: thing(),
                values: json!({"setpoint": 22})
                    .as_object()
                    .cloned()
                    .unwrap_or_default(),
            },
            DeviceCommand::InvokeAction {
                thing: thing(),
                action: "toggle".into(),
                input: Value::Null,
                correlation: "c3".into(),
                deadline_ms: 10_000,
            },
        ];
        for command in commands {
            let text = serde_json::to_string(&command).expect("serializes");
            let back: DeviceCommand = serde_json::from_str(&text).expect("deserializes");
            assert_eq!(back, command, "{text}");
            assert_eq!(command.thing(), &thing());
        }
    }

    #[test]
    fn serialized_form_is_tagged() {
        let event = DeviceEvent::Online { thing: thing() };
        assert_eq!(
            serde_json::to_value(&event).expect("serializes"),
            json!({"kind": "online", "thing": "th-1"})
        );
        assert_eq!(event.thing(), Some(&thing()));
        let bad = json!({"kind": "online", "thing": "th/1"});
        assert!(serde_json::from_value::<DeviceEvent>(bad).is_err());
    }
}
