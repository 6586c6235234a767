//! [`SimDevice`]: one simulated device of a built-in thing type, as plain logic without I/O.
//!
//! It is fed the hub's [`DeviceCommand`]s and the current time and answers with the
//! [`DeviceEvent`]s a real device's gateway would produce. Everything random comes from a seeded
//! generator, so a device built with the same seed behaves the same way every run.

use device_models::{DeviceCommand, DeviceEvent, ThingId};
use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};
use serde_json::{Map, Value, json};

/// The built-in types a [`SimDevice`] can play.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    TemperatureSensor,
    Thermostat,
    Relay,
    Alarm,
}

impl Kind {
    /// The thing type id.
    pub fn type_id(self) -> &'static str {
        match self {
            Kind::TemperatureSensor => "temperature_sensor",
            Kind::Thermostat => "thermostat",
            Kind::Relay => "relay",
            Kind::Alarm => "alarm",
        }
    }

    /// The kind for a type id, if it is a built-in one.
    pub fn from_type_id(id: &str) -> Option<Kind> {
        Some(match id {
            "temperature_sensor" => Kind::TemperatureSensor,
            "thermostat" => Kind::Thermostat,
            "relay" => Kind::Relay,
            "alarm" => Kind::Alarm,
            _ => return None,
        })
    }

    pub const ALL: [Kind; 4] = [
        Kind::TemperatureSensor,
        Kind::Thermostat,
        Kind::Relay,
        Kind::Alarm,
    ];
}

/// How a device behaves towards the hub.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Reports and answers normally.
    Normal,
    /// Still reports on its own, but ignores every command (no reply, no confirmation): for
    /// testing timeouts.
    Silent,
    /// Unreachable: says nothing and hears nothing.
    Offline,
}

/// A simulated device.
#[derive(Debug)]
pub struct SimDevice {
    id: ThingId,
    kind: Kind,
    rng: StdRng,
    state: Map<String, Value>,
    mode: Mode,
    /// The alarm's user code; arm/disarm with another code fail.
    code: Option<String>,
    firmware: String,
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

impl SimDevice {
    /// A device with deterministic behaviour from `seed`.
    pub fn new(id: ThingId, kind: Kind, seed: u64) -> SimDevice {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut state = Map::new();
        match kind {
            Kind::TemperatureSensor => {
                state.insert(
                    "temperature".into(),
                    json!(round2(rng.random_range(15.0..25.0))),
                );
                state.insert(
                    "humidity".into(),
                    json!(round2(rng.random_range(30.0..60.0))),
                );
                state.insert("battery".into(), json!(100));
            }
            Kind::Thermostat => {
                state.insert(
                    "temperature".into(),
                    json!(round2(rng.random_range(16.0..22.0))),
                );
                state.insert("setpoint".into(), json!(20));
                state.insert("mode".into(), json!("off"));
            }
            Kind::Relay => {
                state.insert("on".into(), json!(false));
            }
            Kind::Alarm => {
                state.insert("armed".into(), json!(false));
            }
        }
        SimDevice {
            id,
            kind,
            rng,
            state,
            mode: Mode::Normal,
            code: None,
            firmware: "sim-1.0".into(),
        }
    }

    /// An alarm that wants `code` to arm and disarm.
    pub fn with_code(mut self, code: &str) -> SimDevice {
        self.code = Some(code.to_owned());
        self
    }

    pub fn id(&self) -> &ThingId {
        &self.id
    }

    pub fn kind(&self) -> Kind {
        self.kind
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// The device's current values.
    pub fn state(&self) -> &Map<String, Value> {
        &self.state
    }

    /// First contact: `Hello` with its type and firmware.
    pub fn hello(&self) -> DeviceEvent {
        let mut info = Map::new();
        info.insert("firmware".into(), json!(self.firmware));
        DeviceEvent::Hello {
            thing: self.id.clone(),
            type_hint: Some(self.kind.type_id().to_owned()),
            info,
        }
    }

    /// Switches mode; going offline or coming back produces the matching event.
    pub fn set_mode(&mut self, mode: Mode) -> Option<DeviceEvent> {
        let was = self.mode;
        self.mode = mode;
        match (was, mode) {
            (Mode::Offline, Mode::Offline) => None,
            (_, Mode::Offline) => Some(DeviceEvent::Offline {
                thing: self.id.clone(),
            }),
            (Mode::Offline, _) => Some(DeviceEvent::Online {
                thing: self.id.clone(),
            }),
            _ => None,
        }
    }

    /// Advances the simulation one step and reports every value (sensors drift, a thermostat
    /// moves towards its setpoint, a sensor's battery drains slowly). `None` when offline.
    pub fn tick(&mut self, now_ms: u64) -> Option<DeviceEvent> {
        if self.mode == Mode::Offline {
            return None;
        }
        match self.kind {
            Kind::TemperatureSensor => {
                self.walk("temperature", 0.5, -40.0, 125.0);
                self.walk("humidity", 1.0, 0.0, 100.0);
                if self.rng.random_ratio(1, 100) {
                    let b = self
                        .state
                        .get("battery")
                        .and_then(Value::as_i64)
                        .unwrap_or(100);
                    self.state.insert("battery".into(), json!((b - 1).max(0)));
                }
            }
            Kind::Thermostat => {
                let t = self.number("temperature");
                let target = self.number("setpoint");
                let mode = self
                    .state
                    .get("mode")
                    .and_then(Value::as_str)
                    .unwrap_or("off");
                let pull = match mode {
                    "heat" if t < target => 0.2,
                    "cool" if t > target => -0.2,
                    "auto" => (target - t).clamp(-0.2, 0.2),
                    _ => 0.0,
                };
                let noise = self.rng.random_range(-0.05..0.05);
                self.state.insert(
                    "temperature".into(),
                    json!(round2((t + pull + noise).clamp(-40.0, 85.0))),
                );
            }
            Kind::Relay | Kind::Alarm => {}
        }
        Some(self.report_all(now_ms))
    }

    /// A report of every current value.
    pub fn report_all(&self, now_ms: u64) -> DeviceEvent {
        DeviceEvent::Reported {
            thing: self.id.clone(),
            values: self.state.clone(),
            at_ms: now_ms,
        }
    }

    /// A new temperature reading (random walk), as a one-value report: the fast path of the
    /// load generator. Devices without a temperature toggle their main boolean instead.
    pub fn next_reading(&mut self, now_ms: u64) -> DeviceEvent {
        let mut values = Map::new();
        match self.kind {
            Kind::TemperatureSensor | Kind::Thermostat => {
                let max = if self.kind == Kind::Thermostat {
                    85.0
                } else {
                    125.0
                };
                let old = self.number("temperature");
                self.walk("temperature", 0.5, -40.0, max);
                if self.number("temperature") == old {
                    // A walk that lands on the same value would report no change.
                    let nudged = if old < 0.0 { old + 0.01 } else { old - 0.01 };
                    self.state
                        .insert("temperature".into(), json!(round2(nudged)));
                }
                values.insert("temperature".into(), self.state["temperature"].clone());
            }
            Kind::Relay | Kind::Alarm => {
                let key = if self.kind == Kind::Relay {
                    "on"
                } else {
                    "armed"
                };
                let v = !self
                    .state
                    .get(key)
                    .and_then(Value::as_bool)
                    .unwrap_or(false);
                self.state.insert(key.into(), json!(v));
                values.insert(key.into(), json!(v));
            }
        }
        DeviceEvent::Reported {
            thing: self.id.clone(),
            values,
            at_ms: now_ms,
        }
    }

    /// An alarm going off in `zone` (other kinds have no event).
    pub fn trigger(&self, zone: &str, now_ms: u64) -> Option<DeviceEvent> {
        (self.kind == Kind::Alarm && self.mode != Mode::Offline).then(|| DeviceEvent::Event {
            thing: self.id.clone(),
            name: "triggered".into(),
            payload: json!({ "zone": zone, "cause": "intrusion" }),
            at_ms: now_ms,
        })
    }

    fn number(&self, key: &str) -> f64 {
        self.state.get(key).and_then(Value::as_f64).unwrap_or(0.0)
    }

    fn walk(&mut self, key: &str, step: f64, min: f64, max: f64) {
        let v = self.number(key) + self.rng.random_range(-step..step);
        self.state
            .insert(key.into(), json!(round2(v.clamp(min, max))));
    }

    /// Handles a command; returns what the device says back (nothing when silent or offline).
    pub fn handle(&mut self, cmd: DeviceCommand, now_ms: u64) -> Vec<DeviceEvent> {
        if self.mode != Mode::Normal || cmd.thing() != &self.id {
            return Vec::new();
        }
        match cmd {
            DeviceCommand::SetDesired { values, .. } => {
                let mut applied = Map::new();
                for (k, v) in values {
                    if self.state.contains_key(&k) {
                        self.state.insert(k.clone(), v.clone());
                        applied.insert(k, v);
                    }
                }
                if applied.is_empty() {
                    return Vec::new();
                }
                vec![DeviceEvent::Reported {
                    thing: self.id.clone(),
                    values: applied,
                    at_ms: now_ms,
                }]
            }
            DeviceCommand::InvokeAction {
                action,
                input,
                correlation,
                ..
            } => {
                let outcome = self.act(&action, &input);
                let mut out = Vec::new();
                if outcome.is_ok() {
                    out.push(self.report_all(now_ms));
                }
                out.push(DeviceEvent::ActionReply {
                    thing: self.id.clone(),
                    correlation,
                    outcome,
                });
                out
            }
        }
    }

    fn act(&mut self, action: &str, input: &Value) -> Result<Value, String> {
        match (self.kind, action) {
            (Kind::Relay, "on" | "off" | "toggle") => {
                let now = self
                    .state
                    .get("on")
                    .and_then(Value::as_bool)
                    .unwrap_or(false);
                let next = match action {
                    "on" => true,
                    "off" => false,
                    _ => !now,
                };
                self.state.insert("on".into(), json!(next));
                Ok(json!(next))
            }
            (Kind::Alarm, "arm" | "disarm") => {
                if let Some(code) = &self.code {
                    let given = input.get("code").and_then(Value::as_str);
                    if given != Some(code.as_str()) {
                        return Err("wrong code".into());
                    }
                }
                let armed = action == "arm";
                self.state.insert("armed".into(), json!(armed));
                Ok(json!(armed))
            }
            _ => Err(format!("{} has no action {action:?}", self.kind.type_id())),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn id(s: &str) -> ThingId {
        ThingId::new(s).unwrap()
    }

    #[test]
    fn same_seed_same_behaviour() {
        let mut a = SimDevice::new(id("s"), Kind::TemperatureSensor, 42);
        let mut b = SimDevice::new(id("s"), Kind::TemperatureSensor, 42);
        for t in 0..50 {
            assert_eq!(a.tick(t), b.tick(t));
            assert_eq!(a.next_reading(t), b.next_reading(t));
        }
        let c = SimDevice::new(id("s"), Kind::TemperatureSensor, 43);
        assert_ne!(a.state(), c.state());
    }

    #[test]
    fn readings_always_change_and_fit_the_type() {
        let catalog = device_models::TypeCatalog::builtin().unwrap();
        for kind in Kind::ALL {
            let mut d = SimDevice::new(id("d"), kind, 1);
            let ty = catalog.get(kind.type_id()).unwrap();
            for t in 0..500 {
                let before = d.state().clone();
                let DeviceEvent::Reported { values, .. } = d.next_reading(t) else {
                    panic!()
                };
                ty.check_reported(d.id(), &values).unwrap();
                for (k, v) in &values {
                    assert_ne!(before.get(k), Some(v), "{k} did not change");
                }
                if let Some(DeviceEvent::Reported { values, .. }) = d.tick(t) {
                    ty.check_reported(d.id(), &values).unwrap();
                }
            }
        }
    }

    #[test]
    fn commands_are_answered_unless_silent() {
        let mut relay = SimDevice::new(id("r"), Kind::Relay, 1);
        let toggle = |c: &str| DeviceCommand::InvokeAction {
            thing: id("r"),
            action: "toggle".into(),
            input: Value::Null,
            correlation: c.into(),
            deadline_ms: 0,
        };
        let out = relay.handle(toggle("1"), 5);
        assert!(matches!(
            out.last(),
            Some(DeviceEvent::ActionReply { outcome: Ok(v), .. }) if v == &json!(true)
        ));
        relay.set_mode(Mode::Silent);
        assert!(relay.handle(toggle("2"), 6).is_empty());
        assert!(matches!(
            relay.set_mode(Mode::Offline),
            Some(DeviceEvent::Offline { .. })
        ));
        assert!(relay.tick(7).is_none());

        let mut t = SimDevice::new(id("t"), Kind::Thermostat, 1);
        let out = t.handle(
            DeviceCommand::SetDesired {
                thing: id("t"),
                values: json!({"setpoint": 23}).as_object().cloned().unwrap(),
            },
            9,
        );
        assert!(
            matches!(&out[0], DeviceEvent::Reported { values, .. } if values["setpoint"] == json!(23))
        );

        let mut alarm = SimDevice::new(id("a"), Kind::Alarm, 1).with_code("1234");
        let arm = |code: &str| DeviceCommand::InvokeAction {
            thing: id("a"),
            action: "arm".into(),
            input: json!({ "code": code }),
            correlation: "c".into(),
            deadline_ms: 0,
        };
        assert!(matches!(
            alarm.handle(arm("0000"), 1).last(),
            Some(DeviceEvent::ActionReply {
                outcome: Err(_),
                ..
            })
        ));
        assert!(matches!(
            alarm.handle(arm("1234"), 1).last(),
            Some(DeviceEvent::ActionReply { outcome: Ok(_), .. })
        ));
    }
}
