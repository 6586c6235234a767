//! `[hub]`: who this hub is, where it keeps its data, how long shutdown may take.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{ConfigError, invalid};

/// `[hub]`
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct HubSection {
    pub id: String,
    pub data_dir: PathBuf,
    pub shutdown_grace_secs: u64,
}

impl Default for HubSection {
    fn default() -> Self {
        HubSection {
            id: "brume".into(),
            data_dir: "./brume-data".into(),
            shutdown_grace_secs: 5,
        }
    }
}

impl HubSection {
    /// Checks `[hub]`.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let id = &self.id;
        if id.is_empty()
            || id.len() > 64
            || !id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            return Err(invalid(
                "hub.id",
                "must be 1-64 letters, digits, `_` or `-`",
            ));
        }
        Ok(())
    }
}
