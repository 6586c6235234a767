//! The commands waiting for one push device, their representation on
//! `/things/<id>/commands`, and the replies that settle them.
//!
//! **Why the whole queue in every notification.** RFC 7641 gives eventual consistency, not
//! delivery of every representation: a newer notification replaces one still in flight, and a
//! device that re-registers only sees the current state. So the resource's representation is the
//! full list of pending commands, each with its own id; the device acts on ids it has not seen yet
//! and settles each with a reply. A command stays listed until it is settled (or its deadline
//! passes), so nothing is lost when a notification is, and a repeated id is simply skipped.
//!
//! ```json
//! {"commands": [
//!   {"id": "desired-7", "kind": "desired", "values": {"setpoint": 22}},
//!   {"id": "41", "kind": "action", "action": "boost", "input": {"minutes": 5}, "deadline_ms": 1767225600000}
//! ]}
//! ```
//!
//! - **Desired values** (`DeviceCommand::SetDesired`) merge into one `desired` entry, which gets a
//!   fresh id (`desired-<n>`, a prefix reserved by the gateway) each time it changes. A property
//!   leaves it when the device reports that value; the entry goes when a reply names its id.
//! - **Action requests** (`DeviceCommand::InvokeAction`) carry the hub's correlation id as their
//!   `id`, and leave the list when the device replies or the deadline passes.
//!
//! A reply, `POST /things/<id>/replies`, is `{"id": "41", "output": <value>}` on success,
//! `{"id": "41", "error": "text"}` on failure, and `{"id": "desired-7"}` to acknowledge desired
//! values (optional: reporting them is enough).

use std::collections::VecDeque;

use device_models::value::values_equal;
use serde::Deserialize;
use serde_json::{Map, Value, json};

/// Prefix of the ids the gateway gives desired-value entries.
pub(crate) const DESIRED_ID_PREFIX: &str = "desired-";

/// Longest reply id accepted.
const MAX_ID_LEN: usize = 256;

/// One action request waiting for its reply.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct PendingAction {
    pub correlation: String,
    pub action: String,
    pub input: Value,
    pub deadline_ms: u64,
}

/// The merged desired values not yet confirmed.
#[derive(Clone, Debug, PartialEq)]
struct PendingDesired {
    id: String,
    values: Map<String, Value>,
}

/// What a reply's id settled.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Settled {
    /// The current desired entry.
    Desired,
    /// An earlier desired entry, already replaced: nothing to do.
    StaleDesired,
    /// An action request, pending or not (the hub drops answers it no longer waits for).
    Action,
}

/// A device's reply to a command.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Reply {
    pub id: String,
    pub outcome: Result<Value, String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReplyRepr {
    id: String,
    #[serde(default)]
    output: Option<Value>,
    #[serde(default)]
    error: Option<String>,
}

impl Reply {
    /// Reads a reply body (already decoded), or says why it is not one.
    pub fn from_value(value: Value) -> Result<Self, String> {
        let r: ReplyRepr = serde_json::from_value(value).map_err(|e| e.to_string())?;
        if r.id.is_empty() || r.id.len() > MAX_ID_LEN {
            return Err(format!("id must be 1 to {MAX_ID_LEN} bytes"));
        }
        let outcome = match (r.output, r.error) {
            (Some(_), Some(_)) => return Err("output and error are exclusive".into()),
            (None, Some(e)) => Err(e),
            (output, None) => Ok(output.unwrap_or(Value::Null)),
        };
        Ok(Self { id: r.id, outcome })
    }
}

/// The commands waiting for one device. Bounded: at most one desired entry and
/// `max_actions` action requests.
#[derive(Clone, Debug, Default)]
pub(crate) struct PendingCommands {
    desired: Option<PendingDesired>,
    actions: VecDeque<PendingAction>,
}

impl PendingCommands {
    /// Nothing waiting.
    pub fn is_empty(&self) -> bool {
        self.desired.is_none() && self.actions.is_empty()
    }

    /// Merges desired values, giving the entry the new `id`.
    pub fn set_desired(&mut self, id: String, values: Map<String, Value>) {
        match &mut self.desired {
            Some(d) => {
                d.id = id;
                d.values.extend(values);
            }
            None => self.desired = Some(PendingDesired { id, values }),
        }
    }

    /// Queues an action request, or gives it back when `max_actions` are already waiting.
    pub fn push_action(
        &mut self,
        action: PendingAction,
        max_actions: usize,
    ) -> Result<(), PendingAction> {
        if self.actions.len() >= max_actions {
            return Err(action);
        }
        // The hub may resend a call with the same correlation: keep one.
        self.actions.retain(|a| a.correlation != action.correlation);
        self.actions.push_back(action);
        Ok(())
    }

    /// Drops the desired values the device now reports.
    pub fn confirm_reported(&mut self, reported: &Map<String, Value>) {
        if let Some(d) = &mut self.desired {
            d.values
                .retain(|k, v| !reported.get(k).is_some_and(|r| values_equal(r, v)));
            if d.values.is_empty() {
                self.desired = None;
            }
        }
    }

    /// Settles the command a reply names.
    pub fn settle(&mut self, id: &str) -> Settled {
        if self.desired.as_ref().is_some_and(|d| d.id == id) {
            self.desired = None;
            return Settled::Desired;
        }
        if is_desired_id(id) {
            return Settled::StaleDesired;
        }
        self.actions.retain(|a| a.correlation != id);
        Settled::Action
    }

    /// Drops action requests whose deadline has passed; returns how many.
    pub fn expire(&mut self, wall_ms: u64) -> usize {
        let before = self.actions.len();
        self.actions.retain(|a| a.deadline_ms > wall_ms);
        before - self.actions.len()
    }

    /// The pending desired values.
    pub fn desired_values(&self) -> Map<String, Value> {
        self.desired
            .as_ref()
            .map(|d| d.values.clone())
            .unwrap_or_default()
    }

    /// The representation of the commands resource (see the module docs).
    pub fn representation(&self) -> Value {
        let mut list = Vec::with_capacity(self.actions.len() + 1);
        if let Some(d) = &self.desired {
            list.push(json!({"id": d.id, "kind": "desired", "values": d.values}));
        }
        for a in &self.actions {
            list.push(json!({
                "id": a.correlation,
                "kind": "action",
                "action": a.action,
                "input": a.input,
                "deadline_ms": a.deadline_ms,
            }));
        }
        json!({ "commands": list })
    }
}

/// Whether `id` has the shape of a desired-entry id.
fn is_desired_id(id: &str) -> bool {
    id.strip_prefix(DESIRED_ID_PREFIX)
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap()
    }

    fn action(c: &str, deadline_ms: u64) -> PendingAction {
        PendingAction {
            correlation: c.into(),
            action: "boost".into(),
            input: json!({"minutes": 5}),
            deadline_ms,
        }
    }

    #[test]
    fn desired_values_merge_and_are_confirmed_by_reports() {
        let mut p = PendingCommands::default();
        p.set_desired(
            "desired-1".into(),
            obj(json!({"setpoint": 22, "mode": "heat"})),
        );
        p.set_desired("desired-2".into(), obj(json!({"setpoint": 23})));
        assert_eq!(
            p.desired_values(),
            obj(json!({"setpoint": 23, "mode": "heat"}))
        );
        assert_eq!(
            p.representation(),
            json!({"commands": [{"id": "desired-2", "kind": "desired", "values": {"setpoint": 23, "mode": "heat"}}]})
        );
        // 23.0 equals 23; the old value 22 does not confirm.
        p.confirm_reported(&obj(json!({"setpoint": 23.0, "mode": "off"})));
        assert_eq!(p.desired_values(), obj(json!({"mode": "heat"})));
        p.confirm_reported(&obj(json!({"mode": "heat"})));
        assert!(p.is_empty());
    }

    #[test]
    fn replies_settle_by_id() {
        let mut p = PendingCommands::default();
        p.set_desired("desired-3".into(), obj(json!({"a": 1})));
        p.push_action(action("41", 100), 4).unwrap();
        assert_eq!(p.settle("desired-2"), Settled::StaleDesired);
        assert_eq!(p.settle("desired-3"), Settled::Desired);
        assert_eq!(p.settle("41"), Settled::Action);
        assert!(p.is_empty());
        // Unknown ids are still action replies: the hub decides.
        assert_eq!(p.settle("desired-x"), Settled::Action);
    }

    #[test]
    fn actions_are_bounded_deduplicated_and_expire() {
        let mut p = PendingCommands::default();
        p.push_action(action("1", 100), 2).unwrap();
        p.push_action(action("1", 100), 2).unwrap();
        p.push_action(action("2", 200), 2).unwrap();
        assert!(p.push_action(action("3", 300), 2).is_err());
        assert_eq!(p.expire(150), 1);
        let repr = p.representation();
        assert_eq!(repr["commands"][0]["id"], "2");
        assert_eq!(repr["commands"][0]["deadline_ms"], 200);
        assert_eq!(repr["commands"].as_array().unwrap().len(), 1);
    }

    #[test]
    fn reply_bodies() {
        let ok = Reply::from_value(json!({"id": "7", "output": true})).unwrap();
        assert_eq!(ok.outcome, Ok(json!(true)));
        let none = Reply::from_value(json!({"id": "7"})).unwrap();
        assert_eq!(none.outcome, Ok(Value::Null));
        let err = Reply::from_value(json!({"id": "7", "error": "busy"})).unwrap();
        assert_eq!(err.outcome, Err("busy".into()));
        for bad in [
            json!({"id": "7", "output": 1, "error": "x"}),
            json!({"id": ""}),
            json!({"output": 1}),
            json!({"id": 7}),
            json!({"id": "7", "extra": 1}),
            json!([1]),
        ] {
            assert!(Reply::from_value(bad.clone()).is_err(), "{bad}");
        }
    }
}
