//! The hub's configuration: typed, with an embedded commented default, validated before any port
//! opens.
//!
//! [`DEFAULT_TOML`] is the documentation users read (`brume print-config`) and the source of the
//! defaults: [`Config::default`] parses it, so the two cannot drift apart.

//!
//! One file per section: [`hub`], [`router`], [`realms`] (realms, principals, roles),
//! [`listeners`], [`things`] and [`uplink`]. The gateway sections (`[mqtt]`, `[coap]`, `[raw]`, `[modbus]`)
//! are the gateways crate's own types. This module holds [`Config`], loading and validation.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub mod http;
pub mod hub;
pub mod listeners;
pub mod realms;
pub mod router;
pub mod things;
pub mod uplink;

pub use hub::HubSection;
pub use listeners::{ListenerKind, ListenerPlan, ListenerSection, TlsSection};
pub use realms::{
    CryptosignSection, HistorySection, PrincipalSection, RealmSection, RoleSection, RuleSection,
    UriMatch, WampCraSection,
};
pub use router::RouterSection;
pub use things::{Provisioning, ThingsSection};
pub use uplink::UplinkConfig;

/// The embedded default configuration, with comments.
pub const DEFAULT_TOML: &str = include_str!("../../config/default.toml");

/// A configuration problem, naming the key and the reason.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: String, message: String },
    #[error("{key}: {reason}")]
    Invalid { key: String, reason: String },
    /// A section's own check failed; its error is kept as the source.
    #[error("{key}: {source}")]
    Section {
        key: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// A [`ConfigError::Section`] for `key`, wrapping the section's own error.
pub(crate) fn section_error(
    key: impl Into<String>,
    source: impl std::error::Error + Send + Sync + 'static,
) -> ConfigError {
    ConfigError::Section {
        key: key.into(),
        source: Box::new(source),
    }
}

fn invalid(key: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        reason: reason.into(),
    }
}

/// The whole configuration.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub hub: HubSection,
    #[serde(default)]
    pub router: RouterSection,
    #[serde(default = "realms::default_realms")]
    pub realms: Vec<RealmSection>,
    #[serde(default = "listeners::default_listeners")]
    pub listeners: Vec<ListenerSection>,
    #[serde(default)]
    pub things: ThingsSection,
    #[serde(default)]
    pub uplink: UplinkConfig,
    /// `[mqtt]`: the MQTT gateway and its embedded broker.
    #[serde(default)]
    pub mqtt: gateways::mqtt::MqttConfig,
    /// `[coap]`: the CoAP gateway.
    #[serde(default)]
    pub coap: gateways::coap::gateway::CoapConfig,
    /// `[raw]`: raw UDP, TCP and serial device listeners.
    #[serde(default)]
    pub raw: gateways::raw::RawConfig,
    /// `[modbus]`: Modbus TCP servers and RTU lines the hub polls.
    #[serde(default)]
    pub modbus: gateways::modbus::ModbusConfig,
    /// `[http]`: health, readiness, metrics and status for operators.
    #[serde(default)]
    pub http: http::HttpSection,
}

/// The defaults for omitted keys. A unit test checks they equal the embedded file, so the
/// documented defaults and the real ones cannot drift apart.
impl Default for Config {
    fn default() -> Self {
        Config {
            hub: HubSection::default(),
            router: RouterSection::default(),
            realms: realms::default_realms(),
            listeners: listeners::default_listeners(),
            things: ThingsSection::default(),
            mqtt: gateways::mqtt::MqttConfig::default(),
            coap: gateways::coap::gateway::CoapConfig::default(),
            raw: gateways::raw::RawConfig::default(),
            modbus: gateways::modbus::ModbusConfig::default(),
            uplink: UplinkConfig::default(),
            http: http::HttpSection::default(),
        }
    }
}

impl Config {
    /// Parses and validates a TOML document; `origin` names it in errors.
    pub fn from_toml(text: &str, origin: &str) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: origin.to_owned(),
            message: e.to_string(),
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Reads, parses and validates a file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Config::from_toml(&text, &path.display().to_string())
    }

    /// Checks everything that parsing cannot, naming the offending key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.hub.validate()?;
        self.router.validate()?;
        realms::validate(&self.realms)?;
        self.things.validate(&self.realms)?;
        self.uplink.validate()?;
        self.realm_configs()?;
        self.http_plan()?;
        self.listener_plans().map(|_| ())
    }
}

#[cfg(test)]
mod tests;
