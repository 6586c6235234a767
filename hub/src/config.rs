//! The hub's configuration: typed, with an embedded commented default, validated before any port
//! opens.
//!
//! [`DEFAULT_TOML`] is the documentation users read (`brume print-config`) and the source of the
//! defaults: [`Config::default`] parses it, so the two cannot drift apart.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::router::{RealmConfig, RouterConfig, SlowConsumerPolicy};
use crate::transport::connection::SessionLimits;
use crate::transport::listener::WampListener;
use crate::wamp::{MatchPolicy, Serializer, uri};

/// The embedded default configuration, with comments.
pub const DEFAULT_TOML: &str = include_str!("../config/default.toml");

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
    #[serde(default = "defaults::realms")]
    pub realms: Vec<RealmSection>,
    #[serde(default = "defaults::listeners")]
    pub listeners: Vec<ListenerSection>,
}

/// `[hub]`
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct HubSection {
    pub id: String,
    pub data_dir: PathBuf,
    pub shutdown_grace_secs: u64,
}

/// `[router]`
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct RouterSection {
    pub outbound_queue: usize,
    pub slow_consumer: SlowConsumerPolicy,
    pub max_connections: usize,
    pub hello_timeout_secs: u64,
    pub write_timeout_secs: u64,
}

/// `[[realms]]`
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RealmSection {
    pub name: String,
    #[serde(default = "yes")]
    pub anonymous: bool,
    #[serde(default)]
    pub strict_uris: bool,
    /// Topic patterns whose last events are kept for `wamp.subscription.get_events`.
    #[serde(default)]
    pub history: Vec<HistorySection>,
}

/// `[[realms.history]]`
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HistorySection {
    pub topic: String,
    #[serde(default = "defaults::exact", rename = "match")]
    pub policy: String,
    pub limit: usize,
}

/// Which protocols a listener accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ListenerKind {
    Websocket,
    Rawsocket,
    Both,
}

/// `[[listeners]]`
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerSection {
    pub name: String,
    pub kind: ListenerKind,
    pub address: String,
    #[serde(default = "defaults::path")]
    pub path: String,
    #[serde(default = "defaults::serializers")]
    pub serializers: Vec<String>,
    #[serde(default = "defaults::max_message_size")]
    pub max_message_size: usize,
    #[serde(default)]
    pub allow_anonymous_remote: bool,
}

fn yes() -> bool {
    true
}

/// Defaults for omitted keys. A unit test checks they equal the embedded file, so the documented
/// defaults and the real ones cannot drift apart.
mod defaults {
    use super::*;

    pub fn realms() -> Vec<RealmSection> {
        vec![RealmSection {
            name: "brume".into(),
            anonymous: true,
            strict_uris: false,
            history: Vec::new(),
        }]
    }
    pub fn listeners() -> Vec<ListenerSection> {
        let listener = |name: &str, kind, address: &str| ListenerSection {
            name: name.into(),
            kind,
            address: address.into(),
            path: path(),
            serializers: serializers(),
            max_message_size: max_message_size(),
            allow_anonymous_remote: false,
        };
        vec![
            listener("websocket", ListenerKind::Websocket, "127.0.0.1:8080"),
            listener("rawsocket", ListenerKind::Rawsocket, "127.0.0.1:8081"),
        ]
    }
    pub fn path() -> String {
        "/ws".into()
    }
    pub fn exact() -> String {
        "exact".into()
    }
    pub fn serializers() -> Vec<String> {
        vec!["json".into(), "msgpack".into()]
    }
    pub fn max_message_size() -> usize {
        1024 * 1024
    }
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

impl Default for RouterSection {
    fn default() -> Self {
        RouterSection {
            outbound_queue: 1024,
            slow_consumer: SlowConsumerPolicy::Disconnect,
            max_connections: 10_000,
            hello_timeout_secs: 10,
            write_timeout_secs: 10,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            hub: HubSection::default(),
            router: RouterSection::default(),
            realms: defaults::realms(),
            listeners: defaults::listeners(),
        }
    }
}

/// A listener ready to bind: its validated address and what it serves.
#[derive(Clone, Debug)]
pub struct ListenerPlan {
    pub address: SocketAddr,
    pub kind: ListenerKind,
    pub spec: WampListener,
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
        let id = &self.hub.id;
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
        let r = &self.router;
        if !(1..=1_000_000).contains(&r.outbound_queue) {
            return Err(invalid(
                "router.outbound_queue",
                "must be between 1 and 1000000",
            ));
        }
        if r.max_connections == 0 {
            return Err(invalid("router.max_connections", "must be at least 1"));
        }
        if r.hello_timeout_secs == 0 {
            return Err(invalid("router.hello_timeout_secs", "must be at least 1"));
        }
        if r.write_timeout_secs == 0 {
            return Err(invalid("router.write_timeout_secs", "must be at least 1"));
        }
        if self.realms.is_empty() {
            return Err(invalid("realms", "at least one realm is needed"));
        }
        let mut names = HashSet::new();
        for (i, realm) in self.realms.iter().enumerate() {
            if !uri::is_valid(&realm.name, MatchPolicy::Exact, false) {
                return Err(invalid(
                    format!("realms[{i}].name"),
                    format!("{:?} is not a valid URI", realm.name),
                ));
            }
            if !names.insert(realm.name.as_str()) {
                return Err(invalid(
                    format!("realms[{i}].name"),
                    format!("realm {:?} is defined twice", realm.name),
                ));
            }
            for (j, h) in realm.history.iter().enumerate() {
                let key = |k: &str| format!("realms[{i}].history[{j}].{k}");
                let policy = history_policy(&h.policy).map_err(|e| invalid(key("match"), e))?;
                if !uri::is_valid(&h.topic, policy, realm.strict_uris) {
                    return Err(invalid(
                        key("topic"),
                        format!("{:?} is not a valid {} pattern", h.topic, h.policy),
                    ));
                }
                if !(1..=100_000).contains(&h.limit) {
                    return Err(invalid(key("limit"), "must be between 1 and 100000"));
                }
            }
        }
        self.listener_plans().map(|_| ())
    }

    /// Validated listeners, ready to bind.
    pub fn listener_plans(&self) -> Result<Vec<ListenerPlan>, ConfigError> {
        let anonymous = self.realms.iter().any(|r| r.anonymous);
        let mut names = HashSet::new();
        let mut plans = Vec::new();
        for (i, l) in self.listeners.iter().enumerate() {
            let key = |k: &str| format!("listeners[{i}].{k}");
            if !names.insert(l.name.as_str()) {
                return Err(invalid(
                    key("name"),
                    format!("listener {:?} is defined twice", l.name),
                ));
            }
            let address: SocketAddr = l.address.parse().map_err(|e| {
                invalid(
                    key("address"),
                    format!("{:?} is not an ip:port address ({e})", l.address),
                )
            })?;
            if !l.path.starts_with('/') {
                return Err(invalid(key("path"), "must start with `/`"));
            }
            if l.serializers.is_empty() {
                return Err(invalid(
                    key("serializers"),
                    "at least one serializer is needed",
                ));
            }
            let serializers = l
                .serializers
                .iter()
                .map(|s| match s.as_str() {
                    "json" => Ok(Serializer::Json),
                    "msgpack" => Ok(Serializer::MsgPack),
                    other => Err(invalid(
                        key("serializers"),
                        format!("unknown serializer {other:?} (known: json, msgpack)"),
                    )),
                })
                .collect::<Result<Vec<_>, _>>()?;
            if !(512..=16 * 1024 * 1024).contains(&l.max_message_size) {
                return Err(invalid(
                    key("max_message_size"),
                    "must be between 512 and 16777216",
                ));
            }
            if anonymous && !address.ip().is_loopback() && !l.allow_anonymous_remote {
                return Err(invalid(
                    key("address"),
                    format!(
                        "{address} is not a loopback address and a realm admits anonymous sessions; \
                         require authentication or set allow_anonymous_remote = true explicitly"
                    ),
                ));
            }
            plans.push(ListenerPlan {
                address,
                kind: l.kind,
                spec: WampListener {
                    name: l.name.clone(),
                    accept_websocket: l.kind != ListenerKind::Rawsocket,
                    accept_rawsocket: l.kind != ListenerKind::Websocket,
                    path: l.path.clone(),
                    serializers,
                    max_message: l.max_message_size,
                    limits: self.session_limits(),
                },
            });
        }
        Ok(plans)
    }

    /// Session time limits from `[router]`.
    pub fn session_limits(&self) -> SessionLimits {
        SessionLimits {
            hello_timeout: Duration::from_secs(self.router.hello_timeout_secs),
            write_timeout: Duration::from_secs(self.router.write_timeout_secs),
            ..SessionLimits::default()
        }
    }

    /// The router's settings.
    pub fn router_config(&self) -> RouterConfig {
        RouterConfig {
            realms: self
                .realms
                .iter()
                .map(|r| RealmConfig {
                    name: r.name.clone(),
                    strict_uris: r.strict_uris,
                    anonymous: r.anonymous,
                    history: r
                        .history
                        .iter()
                        .filter_map(|h| {
                            Some(crate::router::broker::HistorySpec {
                                uri: h.topic.clone(),
                                policy: history_policy(&h.policy).ok()?,
                                limit: h.limit,
                            })
                        })
                        .collect(),
                })
                .collect(),
            outbound_queue: self.router.outbound_queue,
            slow_consumer: self.router.slow_consumer,
        }
    }
}

fn history_policy(name: &str) -> Result<MatchPolicy, String> {
    match name {
        "exact" => Ok(MatchPolicy::Exact),
        "prefix" => Ok(MatchPolicy::Prefix),
        "wildcard" => Ok(MatchPolicy::Wildcard),
        other => Err(format!(
            "unknown match policy {other:?} (exact, prefix, wildcard)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_default_parses_and_validates() {
        let c = Config::from_toml(DEFAULT_TOML, "default.toml").unwrap();
        assert_eq!(c, Config::default());
        assert_eq!(c.realms[0].name, "brume");
        let plans = c.listener_plans().unwrap();
        assert_eq!(plans[0].address.to_string(), "127.0.0.1:8080");
        assert_eq!(plans[0].spec.path, "/ws");
        assert_eq!(plans[1].address.to_string(), "127.0.0.1:8081");
    }

    #[test]
    fn an_empty_file_means_the_defaults() {
        assert_eq!(Config::from_toml("", "x").unwrap(), Config::default());
    }

    #[test]
    fn partial_sections_keep_other_defaults() {
        let c = Config::from_toml("[hub]\nid = \"edge-7\"\n", "x").unwrap();
        assert_eq!(c.hub.id, "edge-7");
        assert_eq!(c.hub.data_dir, HubSection::default().data_dir);
        assert_eq!(c.listeners, Config::default().listeners);
    }

    fn err(text: &str) -> String {
        Config::from_toml(text, "bad.toml").unwrap_err().to_string()
    }

    #[test]
    fn errors_name_the_key() {
        assert!(
            err("[hub]\nidd = 1").contains("idd"),
            "{}",
            err("[hub]\nidd = 1")
        );
        assert!(err("[router]\noutbound_queue = \"x\"").contains("outbound_queue"));
        let e = err("[[listeners]]\nname = \"a\"\nkind = \"websocket\"\naddress = \"nowhere\"\n");
        assert!(e.starts_with("listeners[0].address:"), "{e}");
        let e =
            err("[[listeners]]\nname = \"a\"\nkind = \"websocket\"\naddress = \"0.0.0.0:80\"\n");
        assert!(
            e.starts_with("listeners[0].address:") && e.contains("allow_anonymous_remote"),
            "{e}"
        );
        let e = err(
            "[[listeners]]\nname = \"a\"\nkind = \"websocket\"\naddress = \"127.0.0.1:1\"\nserializers = [\"cbor\"]\n",
        );
        assert!(e.starts_with("listeners[0].serializers:"), "{e}");
        let e = err("[[realms]]\nname = \"a b\"\n");
        assert!(e.starts_with("realms[0].name:"), "{e}");
        let e = err("[[realms]]\nname = \"a\"\n[[realms]]\nname = \"a\"\n");
        assert!(e.starts_with("realms[1].name:"), "{e}");
        let e = err("[router]\nslow_consumer = \"explode\"\n");
        assert!(e.contains("slow_consumer"), "{e}");
        let e = err("[hub]\nid = \"a/b\"\n");
        assert!(e.starts_with("hub.id:"), "{e}");
    }

    #[test]
    fn non_loopback_with_anonymous_is_allowed_only_explicitly() {
        let text = "[[listeners]]\nname = \"a\"\nkind = \"both\"\naddress = \"0.0.0.0:8080\"\nallow_anonymous_remote = true\n";
        assert!(Config::from_toml(text, "x").is_ok());
        let text = "[[realms]]\nname = \"r\"\nanonymous = false\n[[listeners]]\nname = \"a\"\nkind = \"both\"\naddress = \"0.0.0.0:8080\"\n";
        assert!(Config::from_toml(text, "x").is_ok());
    }
}
