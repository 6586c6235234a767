//! `[things]`: the things service (registry, desired vs reported state, actions).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::realms::RealmSection;
use super::{ConfigError, invalid};

/// How the things service treats a device it does not know.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Provisioning {
    /// Only things provisioned through `brume.things.provision` are accepted; traffic from
    /// unknown devices is dropped, counted and logged (rate-limited).
    Explicit,
    /// An unknown device is provisioned on its first `Hello` or `Reported`, with the type it
    /// announces or `things.auto_type`.
    Auto,
}

/// `[things]`: the things service (registry, desired vs reported state, actions).
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ThingsSection {
    /// The realm the service's procedures and topics live in; the first of `[[realms]]` when
    /// absent.
    pub realm: Option<String>,
    /// SQLite database file, relative to `hub.data_dir` unless absolute.
    pub database: PathBuf,
    /// Directory of user thing type files (`*.toml`), read at start; none when absent.
    pub types_dir: Option<PathBuf>,
    pub provisioning: Provisioning,
    /// Type given to an auto-provisioned device that announces no known type; none means such a
    /// device is refused.
    pub auto_type: Option<String>,
    /// How long `brume.things.set` waits for the device to report the desired values.
    pub set_timeout_ms: u64,
    /// Capacity of each gateway's event channel (device → hub).
    pub event_queue: usize,
    /// Capacity of each gateway's command channel (hub → device).
    pub command_queue: usize,
    /// Capacity of the queue of writes waiting for the database writer thread.
    pub store_queue: usize,
    /// Rows kept in the action log; older rows are pruned.
    pub action_log_max: u64,
}

impl Default for ThingsSection {
    fn default() -> Self {
        ThingsSection {
            realm: None,
            database: "things.db".into(),
            types_dir: None,
            provisioning: Provisioning::Explicit,
            auto_type: None,
            set_timeout_ms: 10_000,
            event_queue: 4096,
            command_queue: 256,
            store_queue: 8192,
            action_log_max: 10_000,
        }
    }
}

impl ThingsSection {
    /// The realm the service joins: `realm`, else the first configured realm.
    pub fn realm_name<'a>(&'a self, realms: &'a [RealmSection]) -> &'a str {
        match &self.realm {
            Some(r) => r,
            None => realms.first().map_or("brume", |r| r.name.as_str()),
        }
    }

    /// The database path, resolved against the data directory.
    pub fn database_path(&self, data_dir: &Path) -> PathBuf {
        if self.database.is_absolute() {
            self.database.clone()
        } else {
            data_dir.join(&self.database)
        }
    }

    pub(super) fn validate(&self, realms: &[RealmSection]) -> Result<(), ConfigError> {
        if let Some(realm) = &self.realm
            && !realms.iter().any(|r| &r.name == realm)
        {
            return Err(invalid(
                "things.realm",
                format!("realm {realm:?} is not defined in [[realms]]"),
            ));
        }
        if self.database.as_os_str().is_empty() {
            return Err(invalid("things.database", "must name a file"));
        }
        if let Some(t) = &self.auto_type
            && !device_models::names::is_valid_name(t)
        {
            return Err(invalid(
                "things.auto_type",
                format!("{t:?} is not a type id (1-64 of a-z, 0-9, _)"),
            ));
        }
        if !(1..=device_models::thing_type::MAX_ACTION_TIMEOUT_MS).contains(&self.set_timeout_ms) {
            return Err(invalid(
                "things.set_timeout_ms",
                format!(
                    "must be between 1 and {}",
                    device_models::thing_type::MAX_ACTION_TIMEOUT_MS
                ),
            ));
        }
        for (key, n) in [
            ("things.event_queue", self.event_queue),
            ("things.command_queue", self.command_queue),
            ("things.store_queue", self.store_queue),
        ] {
            if !(1..=1_000_000).contains(&n) {
                return Err(invalid(key, "must be between 1 and 1000000"));
            }
        }
        if self.action_log_max < 10 {
            return Err(invalid("things.action_log_max", "must be at least 10"));
        }
        Ok(())
    }
}
