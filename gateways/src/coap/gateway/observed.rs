//! Devices that are CoAP servers: the sans-I/O core of the hub acting as their client. It says
//! which resources to observe, turns notifications into `Reported` values, plans the PUTs and
//! POSTs that carry hub commands, and turns their results into events. The client engine does
//! the protocol (re-registration of lapsed observations, polling when a device does not do
//! Observe, retransmission, block-wise).

use std::collections::HashMap;
use std::net::SocketAddr;

use bytes::Bytes;
use device_models::{DeviceCommand, DeviceEvent, ThingId};
use serde_json::{Map, Value};
use tracing::{debug, debug_span, warn};

use super::binding::CoapBinding;
use super::config::ServerDevice;
use super::payload::{self, PayloadFormat};
use crate::coap::client::{ClientEvent, ObservationId, Operation, RequestId};
use crate::coap::{ClientError, Method, ResponseType};

/// What an observed resource holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Target {
    /// One property's value.
    Property(String),
    /// An object of state values.
    State,
}

/// A request to start for a hub command.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Planned {
    pub peer: SocketAddr,
    pub method: Method,
    pub uri: String,
    pub content_format: Option<u16>,
    pub payload: Bytes,
    pub purpose: Purpose,
}

/// Why a request was sent, which decides what its result means.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Purpose {
    /// Desired values written to a resource.
    Write { thing: ThingId, resource: String },
    /// An action invoked.
    Action { thing: ThingId, correlation: String },
}

/// An observation to start.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct ToObserve {
    pub thing: ThingId,
    pub target: Target,
    pub peer: SocketAddr,
    pub uri: String,
}

#[derive(Debug)]
struct Device {
    type_id: Option<String>,
    peer: SocketAddr,
    binding: CoapBinding,
    greeted: bool,
    online: bool,
}

/// The CoAP-server devices' state. Owned by the gateway task alone.
#[derive(Debug, Default)]
pub(crate) struct ObservedDevices {
    devices: HashMap<ThingId, Device>,
    observations: HashMap<ObservationId, (ThingId, Target)>,
    requests: HashMap<RequestId, Purpose>,
}

impl ObservedDevices {
    /// Devices with their resolved addresses.
    pub fn new(devices: Vec<(ServerDevice, SocketAddr)>) -> Self {
        let devices = devices
            .into_iter()
            .map(|(d, peer)| {
                (
                    d.thing,
                    Device {
                        type_id: d.type_id,
                        peer,
                        binding: d.binding,
                        greeted: false,
                        online: false,
                    },
                )
            })
            .collect();
        Self {
            devices,
            ..Self::default()
        }
    }

    /// Whether there is any device to observe.
    pub fn is_empty(&self) -> bool {
        self.devices.is_empty()
    }

    /// Whether commands for `thing` go through this core.
    pub fn owns(&self, thing: &ThingId) -> bool {
        self.devices.contains_key(thing)
    }

    /// Every resource to observe.
    pub fn to_observe(&self) -> Vec<ToObserve> {
        let mut out = Vec::new();
        for (thing, d) in &self.devices {
            if let Some(path) = &d.binding.state_path {
                out.push(ToObserve {
                    thing: thing.clone(),
                    target: Target::State,
                    peer: d.peer,
                    uri: path.clone(),
                });
            }
            for (name, r) in &d.binding.properties {
                out.push(ToObserve {
                    thing: thing.clone(),
                    target: Target::Property(name.clone()),
                    peer: d.peer,
                    uri: r.path.clone(),
                });
            }
        }
        out
    }

    /// Remembers what an observation is for.
    pub fn observing(&mut self, id: ObservationId, thing: ThingId, target: Target) {
        self.observations.insert(id, (thing, target));
    }

    /// Remembers what a request is for.
    pub fn requested(&mut self, id: RequestId, purpose: Purpose) {
        self.requests.insert(id, purpose);
    }

    /// The requests that carry a command: a PUT per property with its own resource, one PUT of
    /// an object to `state_path` for the others, a POST for an action. `Err` holds the events
    /// answering a command that cannot be carried.
    pub fn plan(&self, command: &DeviceCommand) -> Result<Vec<Planned>, Vec<DeviceEvent>> {
        let thing = command.thing();
        let Some(d) = self.devices.get(thing) else {
            return Ok(Vec::new());
        };
        let format = d.binding.format;
        let span = debug_span!("coap_device", thing = %thing, peer = %d.peer);
        let _entered = span.enter();
        match command {
            DeviceCommand::SetDesired { values, .. } => {
                let mut out = Vec::new();
                let mut rest = Map::new();
                for (name, value) in values {
                    match d.binding.properties.get(name) {
                        Some(r) => out.push(Planned {
                            peer: d.peer,
                            method: Method::Put,
                            uri: r.path.clone(),
                            content_format: Some(format.content_format()),
                            payload: payload::encode(format, value),
                            purpose: Purpose::Write {
                                thing: thing.clone(),
                                resource: r.path.clone(),
                            },
                        }),
                        None => {
                            rest.insert(name.clone(), value.clone());
                        }
                    }
                }
                if !rest.is_empty() {
                    match &d.binding.state_path {
                        Some(path) => out.push(Planned {
                            peer: d.peer,
                            method: Method::Put,
                            uri: path.clone(),
                            content_format: Some(format.content_format()),
                            payload: payload::encode(format, &Value::Object(rest)),
                            purpose: Purpose::Write {
                                thing: thing.clone(),
                                resource: path.clone(),
                            },
                        }),
                        None => warn!(
                            properties = ?rest.keys().collect::<Vec<_>>(),
                            "desired values with no CoAP resource dropped"
                        ),
                    }
                }
                Ok(out)
            }
            DeviceCommand::InvokeAction {
                action,
                input,
                correlation,
                ..
            } => {
                let Some(r) = d.binding.actions.get(action) else {
                    return Err(vec![DeviceEvent::ActionReply {
                        thing: thing.clone(),
                        correlation: correlation.clone(),
                        outcome: Err(format!("action {action} has no CoAP resource")),
                    }]);
                };
                let (content_format, payload) = if input.is_null() {
                    (None, Bytes::new())
                } else {
                    (
                        Some(format.content_format()),
                        payload::encode(format, input),
                    )
                };
                Ok(vec![Planned {
                    peer: d.peer,
                    method: Method::Post,
                    uri: r.path.clone(),
                    content_format,
                    payload,
                    purpose: Purpose::Action {
                        thing: thing.clone(),
                        correlation: correlation.clone(),
                    },
                }])
            }
        }
    }

    /// The events answering a request that could not even be started.
    pub fn not_started(purpose: Purpose, error: &str) -> Vec<DeviceEvent> {
        match purpose {
            Purpose::Write { thing, resource } => {
                warn!(%thing, %resource, error, "desired value not written");
                Vec::new()
            }
            Purpose::Action { thing, correlation } => vec![DeviceEvent::ActionReply {
                thing,
                correlation,
                outcome: Err(error.to_owned()),
            }],
        }
    }

    /// Turns a client engine event into hub events.
    pub fn on_event(&mut self, event: ClientEvent, wall_ms: u64) -> Vec<DeviceEvent> {
        match event {
            ClientEvent::Notification {
                id,
                content_format,
                payload,
            } => self.on_notification(id, content_format, &payload, wall_ms),
            ClientEvent::Response {
                id,
                code,
                content_format,
                payload,
            } => self.on_response(id, code, content_format, &payload),
            ClientEvent::Failed {
                op: Operation::Request(id),
                error,
            } => match self.requests.remove(&id) {
                Some(purpose) => Self::not_started(purpose, &error.to_string()),
                None => Vec::new(),
            },
            ClientEvent::Failed {
                op: Operation::Observation(id),
                error,
            } => self.on_observation_failed(id, &error),
        }
    }

    fn on_notification(
        &mut self,
        id: ObservationId,
        content_format: Option<u16>,
        payload: &[u8],
        wall_ms: u64,
    ) -> Vec<DeviceEvent> {
        let Some((thing, target)) = self.observations.get(&id).cloned() else {
            return Vec::new();
        };
        let span = debug_span!("coap_device", thing = %thing);
        let _entered = span.enter();
        let Some(format) = PayloadFormat::from_content_format(content_format.unwrap_or(0)) else {
            warn!(
                ?content_format,
                "notification in an unsupported format ignored"
            );
            return Vec::new();
        };
        let value = match payload::decode(format, payload) {
            Ok(v) => v,
            Err(e) => {
                warn!(error = %e, "unreadable notification ignored");
                return Vec::new();
            }
        };
        let values = match (target, value) {
            (Target::Property(name), value) => {
                let mut m = Map::new();
                m.insert(name, value);
                m
            }
            (Target::State, Value::Object(m)) => m,
            (Target::State, other) => {
                warn!(
                    kind = device_models::value::kind_of(&other),
                    "state resource is not an object"
                );
                return Vec::new();
            }
        };
        let mut events = self.presence(&thing);
        events.push(DeviceEvent::Reported {
            thing,
            values,
            at_ms: wall_ms,
        });
        events
    }

    fn on_response(
        &mut self,
        id: RequestId,
        code: ResponseType,
        content_format: Option<u16>,
        payload: &[u8],
    ) -> Vec<DeviceEvent> {
        let Some(purpose) = self.requests.remove(&id) else {
            return Vec::new();
        };
        let success = !code.is_error();
        match purpose {
            Purpose::Write { thing, resource } => {
                if success {
                    debug!(%thing, %resource, ?code, "desired value written");
                    self.presence(&thing)
                } else {
                    warn!(%thing, %resource, ?code, "device refused a desired value");
                    Vec::new()
                }
            }
            Purpose::Action { thing, correlation } => {
                let outcome = if !success {
                    Err(format!(
                        "device answered {code:?}{}",
                        diagnostic_suffix(payload)
                    ))
                } else if payload.is_empty() {
                    Ok(Value::Null)
                } else {
                    let format = PayloadFormat::from_content_format(content_format.unwrap_or(0));
                    match format.map(|f| payload::decode(f, payload)) {
                        Some(Ok(v)) => Ok(v),
                        Some(Err(e)) => Err(format!("unreadable action result: {e}")),
                        None => Err(format!(
                            "action result in unsupported Content-Format {content_format:?}"
                        )),
                    }
                };
                let mut events = self.presence(&thing);
                events.push(DeviceEvent::ActionReply {
                    thing,
                    correlation,
                    outcome,
                });
                events
            }
        }
    }

    fn on_observation_failed(
        &mut self,
        id: ObservationId,
        error: &ClientError,
    ) -> Vec<DeviceEvent> {
        let Some((thing, _)) = self.observations.get(&id) else {
            return Vec::new();
        };
        let thing = thing.clone();
        match error {
            ClientError::Timeout | ClientError::Reset => {
                let Some(d) = self.devices.get_mut(&thing) else {
                    return Vec::new();
                };
                if d.online {
                    debug!(%thing, %error, "device unreachable; offline");
                    d.online = false;
                    return vec![DeviceEvent::Offline { thing }];
                }
                Vec::new()
            }
            other => {
                warn!(%thing, error = %other, "observation failed; retrying later");
                Vec::new()
            }
        }
    }

    /// `Hello` on the first answer from a device, `Online` on the first after it went offline.
    fn presence(&mut self, thing: &ThingId) -> Vec<DeviceEvent> {
        let Some(d) = self.devices.get_mut(thing) else {
            return Vec::new();
        };
        if !d.greeted {
            d.greeted = true;
            d.online = true;
            return vec![DeviceEvent::Hello {
                thing: thing.clone(),
                type_hint: d.type_id.clone(),
                info: Map::new(),
            }];
        }
        if !d.online {
            d.online = true;
            return vec![DeviceEvent::Online {
                thing: thing.clone(),
            }];
        }
        Vec::new()
    }
}

/// `": text"` when an error response carries a printable diagnostic.
fn diagnostic_suffix(payload: &[u8]) -> String {
    match std::str::from_utf8(payload) {
        Ok(text) if !text.is_empty() && text.len() <= 120 => format!(": {text}"),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::coap::gateway::binding::ResourceBinding;

    fn thing() -> ThingId {
        ThingId::new("boiler").unwrap()
    }

    fn core() -> ObservedDevices {
        let mut binding = CoapBinding {
            state_path: Some("/state".into()),
            ..CoapBinding::default()
        };
        binding.properties.insert(
            "setpoint".into(),
            ResourceBinding {
                path: "/config/setpoint".into(),
            },
        );
        binding.actions.insert(
            "boost".into(),
            ResourceBinding {
                path: "/actions/boost".into(),
            },
        );
        let device = ServerDevice {
            thing: thing(),
            type_id: Some("thermostat".into()),
            host: "127.0.0.1".into(),
            port: 5690,
            binding,
        };
        ObservedDevices::new(vec![(device, "127.0.0.1:5690".parse().unwrap())])
    }

    #[test]
    fn notifications_become_reports_with_presence() {
        let mut c = core();
        let obs = c.to_observe();
        assert_eq!(obs.len(), 2);
        for (i, o) in obs.into_iter().enumerate() {
            c.observing(ObservationId(i as u64), o.thing, o.target);
        }
        let n = |id, cf, p: &str| ClientEvent::Notification {
            id: ObservationId(id),
            content_format: cf,
            payload: Bytes::from(p.to_owned()),
        };
        let events = c.on_event(n(0, Some(50), "{\"temperature\": 20.5}"), 9);
        assert!(
            matches!(&events[0], DeviceEvent::Hello { type_hint: Some(t), .. } if t == "thermostat")
        );
        assert!(
            matches!(&events[1], DeviceEvent::Reported { values, at_ms: 9, .. } if values["temperature"] == json!(20.5))
        );
        let events = c.on_event(n(1, None, "21"), 10);
        assert!(
            matches!(&events[..], [DeviceEvent::Reported { values, .. }] if values["setpoint"] == json!(21))
        );
        // Unreadable payloads and unknown formats are dropped, never fatal.
        assert!(c.on_event(n(0, Some(50), "{"), 11).is_empty());
        assert!(c.on_event(n(0, Some(42), "x"), 11).is_empty());
        assert!(c.on_event(n(0, Some(50), "[1]"), 11).is_empty());
        // A timed-out observation takes the device offline; the next notification brings it back.
        let failed = ClientEvent::Failed {
            op: Operation::Observation(ObservationId(1)),
            error: ClientError::Timeout,
        };
        assert!(matches!(
            &c.on_event(failed, 12)[..],
            [DeviceEvent::Offline { .. }]
        ));
        let events = c.on_event(n(1, None, "22"), 13);
        assert!(matches!(&events[0], DeviceEvent::Online { .. }));
    }

    #[test]
    fn commands_become_requests() {
        let mut c = core();
        let set = DeviceCommand::SetDesired {
            thing: thing(),
            values: json!({"setpoint": 22, "mode": "heat"})
                .as_object()
                .cloned()
                .unwrap(),
        };
        let planned = c.plan(&set).unwrap();
        assert_eq!(planned.len(), 2);
        assert_eq!(planned[0].uri, "/config/setpoint");
        assert_eq!(planned[0].payload, Bytes::from("22"));
        assert_eq!(planned[1].uri, "/state");
        assert_eq!(planned[1].payload, Bytes::from("{\"mode\":\"heat\"}"));

        let invoke = |action: &str| DeviceCommand::InvokeAction {
            thing: thing(),
            action: action.into(),
            input: json!({"minutes": 5}),
            correlation: "c1".into(),
            deadline_ms: 1,
        };
        let planned = c.plan(&invoke("boost")).unwrap();
        assert_eq!(planned[0].method, Method::Post);
        c.requested(RequestId(7), planned[0].purpose.clone());
        let reply = c.on_event(
            ClientEvent::Response {
                id: RequestId(7),
                code: ResponseType::Changed,
                content_format: Some(50),
                payload: Bytes::from("true"),
            },
            1,
        );
        assert!(
            matches!(reply.last(), Some(DeviceEvent::ActionReply { outcome: Ok(v), .. }) if *v == json!(true))
        );
        let refused = c.plan(&invoke("nope")).unwrap_err();
        assert!(matches!(
            &refused[..],
            [DeviceEvent::ActionReply {
                outcome: Err(_),
                ..
            }]
        ));

        c.requested(RequestId(8), planned[0].purpose.clone());
        let failed = c.on_event(
            ClientEvent::Failed {
                op: Operation::Request(RequestId(8)),
                error: ClientError::Timeout,
            },
            1,
        );
        assert!(
            matches!(&failed[..], [DeviceEvent::ActionReply { outcome: Err(e), .. }] if e.contains("timed out"))
        );
        let other = DeviceCommand::SetDesired {
            thing: ThingId::new("other").unwrap(),
            values: Map::new(),
        };
        assert!(!c.owns(other.thing()));
    }
}
