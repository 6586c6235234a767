//! Thing instances: [`ThingId`], [`Thing`] (identity, type and info) and [`ThingState`] (reported
//! and desired values with timestamps), with the merge rules the hub applies to reports.

use std::borrow::Borrow;
use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use thiserror::Error;

use crate::value::values_equal;

/// Longest thing id, in characters.
pub const MAX_THING_ID_LEN: usize = 64;

/// The id of one device, unique on a hub: 1 to 64 characters of `A-Z a-z 0-9 _ -`.
///
/// It appears as one WAMP URI component (`brume.thing.<id>.state`) and one MQTT topic level
/// (`things/<id>/state`), so it may not hold `.`, `/`, `+`, `#`, spaces or anything else those
/// would misread. Holding a `ThingId` proves the id was checked. The text is shared: an id is
/// cloned into every event, store write and log field of its device's reports, and a clone only
/// counts a reference.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ThingId(Arc<str>);

/// Why a text is not a valid [`ThingId`].
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ThingIdError {
    /// The id is empty.
    #[error("thing id is empty")]
    Empty,
    /// The id has more than [`MAX_THING_ID_LEN`] characters.
    #[error("thing id {start:?}… is longer than {MAX_THING_ID_LEN} characters")]
    TooLong {
        /// The id's first characters.
        start: String,
    },
    /// The id holds a character outside `A-Z a-z 0-9 _ -`.
    #[error("thing id {id:?} has {found:?} at position {position}: use A-Z, a-z, 0-9, _ and -")]
    InvalidChar {
        /// The id, cut to its first [`MAX_THING_ID_LEN`] characters.
        id: String,
        /// The first character not allowed.
        found: char,
        /// Its position, in characters.
        position: usize,
    },
}

impl ThingId {
    /// Checks and wraps an id.
    pub fn new(id: impl Into<String>) -> Result<Self, ThingIdError> {
        let id = id.into();
        if id.is_empty() {
            return Err(ThingIdError::Empty);
        }
        if let Some((position, found)) = id
            .chars()
            .enumerate()
            .find(|(_, c)| !(c.is_ascii_alphanumeric() || *c == '_' || *c == '-'))
        {
            if position >= MAX_THING_ID_LEN {
                return Err(too_long(&id));
            }
            return Err(ThingIdError::InvalidChar {
                id: id.chars().take(MAX_THING_ID_LEN).collect(),
                found,
                position,
            });
        }
        if id.len() > MAX_THING_ID_LEN {
            return Err(too_long(&id));
        }
        Ok(Self(id.into()))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The id as an owned `String`.
    pub fn into_string(self) -> String {
        self.0.as_ref().to_owned()
    }
}

fn too_long(id: &str) -> ThingIdError {
    ThingIdError::TooLong {
        start: id.chars().take(MAX_THING_ID_LEN).collect(),
    }
}

impl fmt::Display for ThingId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for ThingId {
    type Err = ThingIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl TryFrom<String> for ThingId {
    type Error = ThingIdError;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::new(s)
    }
}

impl TryFrom<&str> for ThingId {
    type Error = ThingIdError;

    fn try_from(s: &str) -> Result<Self, Self::Error> {
        Self::new(s)
    }
}

impl From<ThingId> for String {
    fn from(id: ThingId) -> Self {
        id.into_string()
    }
}

impl AsRef<str> for ThingId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl Borrow<str> for ThingId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

/// One device known to the hub: who it is, what type it is, and its info.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Thing {
    /// Its id.
    pub id: ThingId,
    /// Id of its [`ThingType`](crate::ThingType).
    pub type_id: String,
    /// Values of its info properties (firmware, location, ...), from the device or from people.
    #[serde(default)]
    pub info: Map<String, Value>,
    /// When it was provisioned, in milliseconds since the Unix epoch.
    pub created_ms: u64,
}

impl Thing {
    /// A thing with no info yet.
    pub fn new(id: ThingId, type_id: impl Into<String>, created_ms: u64) -> Self {
        Self {
            id,
            type_id: type_id.into(),
            info: Map::new(),
            created_ms,
        }
    }

    /// Merges info values (check them first with
    /// [`ThingType::check_info_reported`](crate::ThingType::check_info_reported) or
    /// [`ThingType::check_info_update`](crate::ThingType::check_info_update)) and returns those
    /// that changed; numbers compare by value.
    pub fn apply_info(&mut self, info: &Map<String, Value>) -> Map<String, Value> {
        let mut changed = Map::new();
        for (name, value) in info {
            let same = self
                .info
                .get(name)
                .is_some_and(|old| values_equal(old, value));
            if !same {
                self.info.insert(name.clone(), value.clone());
                changed.insert(name.clone(), value.clone());
            }
        }
        changed
    }
}

/// A value with the time it was reported or set, in milliseconds since the Unix epoch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stamped {
    /// The value.
    pub value: Value,
    /// When it was last reported (for reported values) or set (for desired values).
    pub at_ms: u64,
}

/// The state of a thing: what the device last reported, and what apps want it to become.
///
/// A desired value stays until the device reports the same value, which is how `brume.things.set`
/// learns that the device applied it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ThingState {
    /// Last reported value of each state property.
    #[serde(default)]
    pub reported: BTreeMap<String, Stamped>,
    /// Desired values not yet confirmed by a report.
    #[serde(default)]
    pub desired: BTreeMap<String, Stamped>,
}

/// What a report changed in a [`ThingState`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ReportOutcome {
    /// Properties whose value changed (or appeared), with the new value: what the
    /// `brume.thing.<id>.state` topic publishes.
    pub changed: BTreeMap<String, Stamped>,
    /// Desired values the report confirmed, now cleared.
    pub settled: Vec<String>,
}

impl ReportOutcome {
    /// True when the report changed nothing and confirmed nothing.
    pub fn is_empty(&self) -> bool {
        self.changed.is_empty() && self.settled.is_empty()
    }
}

impl ThingState {
    /// Merges reported values taken at `at_ms` (check them first with
    /// [`ThingType::check_reported`](crate::ThingType::check_reported)).
    ///
    /// Numbers compare by value (`21` equals `21.0`). A value equal to the stored one only
    /// refreshes its timestamp and is not reported as changed. A value older than the stored one
    /// (out-of-order delivery) is ignored. A desired value equal to the new reported value is
    /// cleared and listed as settled.
    pub fn apply_report(&mut self, values: &Map<String, Value>, at_ms: u64) -> ReportOutcome {
        let mut changed = BTreeMap::new();
        let settled = self.merge_report(values.clone(), at_ms, |name, stored, is_new| {
            if is_new {
                changed.insert(name.to_owned(), stored.clone());
            }
        });
        ReportOutcome { changed, settled }
    }

    /// Applies a report as [`apply_report`](Self::apply_report) does, taking its values (a
    /// known property's value moves in place, its name is not copied), and calls
    /// `each(name, stored, changed)` for every property the report stored or refreshed, so a
    /// caller builds its rows and its event in the same pass. Returns the desired values the
    /// report confirmed, now cleared.
    pub fn merge_report(
        &mut self,
        values: Map<String, Value>,
        at_ms: u64,
        mut each: impl FnMut(&str, &Stamped, bool),
    ) -> Vec<String> {
        let mut settled = Vec::new();
        for (name, value) in values {
            let confirms = self
                .desired
                .get(&name)
                .is_some_and(|d| values_equal(&d.value, &value));
            match self.reported.get_mut(&name) {
                Some(stored) if stored.at_ms > at_ms => continue,
                Some(stored) if values_equal(&stored.value, &value) => {
                    stored.at_ms = at_ms;
                    each(&name, stored, false);
                }
                Some(stored) => {
                    *stored = Stamped { value, at_ms };
                    each(&name, stored, true);
                }
                None => {
                    let stored = Stamped { value, at_ms };
                    each(&name, &stored, true);
                    self.reported.insert(name.clone(), stored);
                }
            }
            if confirms {
                self.desired.remove(&name);
                settled.push(name);
            }
        }
        settled
    }

    /// Records desired values set at `at_ms` (check them first with
    /// [`ThingType::check_desired`](crate::ThingType::check_desired)) and returns the names still
    /// pending. A value the device already reports is not stored, since there is nothing to wait
    /// for; it replaces any older desired value for that property.
    pub fn set_desired(&mut self, values: &Map<String, Value>, at_ms: u64) -> Vec<String> {
        let mut pending = Vec::new();
        for (name, value) in values {
            let already = self
                .reported
                .get(name)
                .is_some_and(|r| values_equal(&r.value, value));
            if already {
                self.desired.remove(name);
            } else {
                self.desired.insert(
                    name.clone(),
                    Stamped {
                        value: value.clone(),
                        at_ms,
                    },
                );
                pending.push(name.clone());
            }
        }
        pending
    }

    /// The desired values still pending, as the map a
    /// [`DeviceCommand::SetDesired`](crate::DeviceCommand::SetDesired) carries (to resend them when
    /// a device comes back online).
    pub fn pending_desired(&self) -> Map<String, Value> {
        self.desired
            .iter()
            .map(|(name, d)| (name.clone(), d.value.clone()))
            .collect()
    }

    /// The reported values without timestamps.
    pub fn reported_values(&self) -> Map<String, Value> {
        self.reported
            .iter()
            .map(|(name, r)| (name.clone(), r.value.clone()))
            .collect()
    }
}

#[cfg(test)]
mod tests;
