//! The hub's configuration: typed, with an embedded commented default, validated before any port
//! opens.
//!
//! [`DEFAULT_TOML`] is the documentation users read (`brume print-config`) and the source of the
//! defaults: [`Config::default`] parses it, so the two cannot drift apart.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::router::auth::cryptosign;
use crate::router::auth::ticket::TicketHash;
use crate::router::auth::wampcra::{self, CraKey};
use crate::router::auth::{Principal, PrincipalStore, Secret};
use crate::router::authz::{self, Action, Authorizer, Rule};
use crate::router::{RealmConfig, RouterConfig, SlowConsumerPolicy};
use crate::transport::connection::SessionLimits;
use crate::transport::listener::WampListener;
use crate::transport::tls::{TlsAcceptor, TlsError};
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
    #[serde(default)]
    pub things: ThingsSection,
    #[serde(default)]
    pub uplink: crate::uplink::UplinkConfig,
    /// `[mqtt]`: the MQTT gateway and its embedded broker.
    #[serde(default)]
    pub mqtt: gateways::mqtt::MqttConfig,
    /// `[coap]`: the CoAP gateway.
    #[serde(default)]
    pub coap: gateways::coap::gateway::CoapConfig,
    /// `[raw]`: raw UDP, TCP and serial device listeners.
    #[serde(default)]
    pub raw: gateways::raw::RawConfig,
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
    /// Capacity of the queue of WAMP publications waiting to leave the service.
    pub publish_queue: usize,
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
            publish_queue: 8192,
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

    fn validate(&self, realms: &[RealmSection]) -> Result<(), ConfigError> {
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
            ("things.publish_queue", self.publish_queue),
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
    /// `[realms.roles.NAME]`: what each role may do. None configured means no restriction.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub roles: BTreeMap<String, RoleSection>,
    /// `[[realms.principals]]`: who may authenticate.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub principals: Vec<PrincipalSection>,
}

/// `[realms.roles.NAME]`
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RoleSection {
    #[serde(default)]
    pub rules: Vec<RuleSection>,
}

/// One authorization rule: `{ uri, match, allow }`.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSection {
    pub uri: String,
    #[serde(rename = "match", default)]
    pub policy: UriMatch,
    pub allow: Vec<Action>,
}

/// How a rule's URI matches.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum UriMatch {
    #[default]
    Exact,
    Prefix,
    Wildcard,
}

impl From<UriMatch> for MatchPolicy {
    fn from(m: UriMatch) -> Self {
        match m {
            UriMatch::Exact => MatchPolicy::Exact,
            UriMatch::Prefix => MatchPolicy::Prefix,
            UriMatch::Wildcard => MatchPolicy::Wildcard,
        }
    }
}

/// `[[realms.principals]]`: an authid, its role, and one or more credentials, all in verifier
/// form. `Debug` hides every secret.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PrincipalSection {
    pub authid: String,
    pub role: String,
    /// A ticket hash, `$pbkdf2-sha256$i=N$SALT$HASH`, never the ticket itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ticket: Option<Secret>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wampcra: Option<WampCraSection>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cryptosign: Option<CryptosignSection>,
}

/// A principal's WAMP-CRA credential: salted (`derived_key` with `salt`, `iterations`, `keylen`)
/// or plain (the secret itself, read from `secret_file` or `secret_env`, never inline).
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WampCraSection {
    /// base64(PBKDF2-HMAC-SHA256(password, salt, iterations, keylen)), as Autobahn's
    /// `derive_key` computes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub derived_key: Option<Secret>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub salt: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iterations: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keylen: Option<u32>,
    /// A file holding a plain secret (one line; a trailing newline is ignored).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_file: Option<PathBuf>,
    /// An environment variable holding a plain secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_env: Option<String>,
    /// Always refused; accepted by the parser only so the error can say what to do instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<Secret>,
}

/// A principal's cryptosign credential.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CryptosignSection {
    /// Ed25519 public keys, 64 hex digits each; any of them may sign.
    pub public_keys: Vec<String>,
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
    /// `[listeners.tls]`: serve TLS (`wss://`, `rss://`) with this certificate and key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsSection>,
}

/// `[listeners.tls]`: PEM files, read and checked before any port opens.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSection {
    /// The certificate chain, leaf first.
    pub cert_file: PathBuf,
    /// The leaf certificate's private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
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
            roles: BTreeMap::new(),
            principals: Vec::new(),
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
            tls: None,
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
            things: ThingsSection::default(),
            mqtt: gateways::mqtt::MqttConfig::default(),
            coap: gateways::coap::gateway::CoapConfig::default(),
            raw: gateways::raw::RawConfig::default(),
            uplink: crate::uplink::UplinkConfig::default(),
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
        self.things.validate(&self.realms)?;
        self.uplink.validate()?;
        self.realm_configs()?;
        self.listener_plans().map(|_| ())
    }

    /// Validated realms with their principals and roles, secrets read from their files and
    /// environment variables.
    pub fn realm_configs(&self) -> Result<Vec<RealmConfig>, ConfigError> {
        self.realms
            .iter()
            .enumerate()
            .map(|(i, realm)| {
                let at = format!("realms[{i}]");
                Ok(RealmConfig {
                    name: realm.name.clone(),
                    strict_uris: realm.strict_uris,
                    anonymous: realm.anonymous,
                    history: realm
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
                    principals: Arc::new(principal_store(realm, &at)?),
                    authorizer: Arc::new(authorizer(realm, &at)?),
                })
            })
            .collect()
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
            let tls = match &l.tls {
                None => None,
                Some(t) => Some(tls_acceptor(t, &key("tls"))?),
            };
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
                    tls,
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

    /// The router's settings (reading the secrets the realms refer to).
    pub fn router_config(&self) -> Result<RouterConfig, ConfigError> {
        Ok(RouterConfig {
            realms: self.realm_configs()?,
            outbound_queue: self.router.outbound_queue,
            slow_consumer: self.router.slow_consumer,
        })
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

/// A listener's TLS acceptor; errors name `cert_file`, `key_file` or the section.
fn tls_acceptor(t: &TlsSection, at: &str) -> Result<TlsAcceptor, ConfigError> {
    TlsAcceptor::from_pem_files(&t.cert_file, &t.key_file).map_err(|e| {
        let which = match &e {
            TlsError::Read { path, .. } if *path == t.key_file => "key_file",
            TlsError::Read { .. } | TlsError::NoCertificate { .. } | TlsError::Pem { .. } => {
                "cert_file"
            }
            TlsError::NoKey { .. } => "key_file",
            _ => "",
        };
        let key = if which.is_empty() {
            at.to_owned()
        } else {
            format!("{at}.{which}")
        };
        invalid(key, e.to_string())
    })
}

/// A realm's authorizer: no roles, no restriction.
fn authorizer(realm: &RealmSection, at: &str) -> Result<Authorizer, ConfigError> {
    if realm.roles.is_empty() {
        return Ok(Authorizer::allow_all());
    }
    let mut roles = Vec::new();
    for (name, role) in &realm.roles {
        let at = format!("{at}.roles.{name}");
        if name == authz::TRUSTED_ROLE {
            return Err(invalid(
                at,
                "role \"trusted\" is reserved for in-process sessions",
            ));
        }
        let mut seen = HashSet::new();
        let mut rules = Vec::new();
        for (j, r) in role.rules.iter().enumerate() {
            let policy = MatchPolicy::from(r.policy);
            if !uri::is_valid(&r.uri, policy, false) {
                return Err(invalid(
                    format!("{at}.rules[{j}].uri"),
                    format!("{:?} is not a valid {} URI", r.uri, policy.as_str()),
                ));
            }
            if !seen.insert((r.uri.as_str(), r.policy)) {
                return Err(invalid(
                    format!("{at}.rules[{j}]"),
                    format!("a second rule for {} URI {:?}", policy.as_str(), r.uri),
                ));
            }
            rules.push(Rule {
                uri: r.uri.clone(),
                policy,
                allow: r.allow.clone(),
            });
        }
        roles.push((name.clone(), rules));
    }
    Authorizer::new(roles).map_err(|e| invalid(format!("{at}.roles"), e.to_string()))
}

/// A realm's principals, credentials parsed and plain secrets read.
fn principal_store(realm: &RealmSection, at: &str) -> Result<PrincipalStore, ConfigError> {
    let mut authids = HashSet::new();
    let mut keys = HashSet::new();
    let mut principals = Vec::new();
    for (j, p) in realm.principals.iter().enumerate() {
        let at = format!("{at}.principals[{j}]");
        let key = |k: &str| format!("{at}.{k}");
        if p.authid.is_empty() {
            return Err(invalid(key("authid"), "must not be empty"));
        }
        if !authids.insert(p.authid.as_str()) {
            return Err(invalid(
                key("authid"),
                format!("authid {:?} is defined twice in this realm", p.authid),
            ));
        }
        if p.role.is_empty() {
            return Err(invalid(key("role"), "must not be empty"));
        }
        if p.role == authz::TRUSTED_ROLE {
            return Err(invalid(
                key("role"),
                "role \"trusted\" is reserved for in-process sessions",
            ));
        }
        if !realm.roles.is_empty() && !realm.roles.contains_key(&p.role) {
            return Err(invalid(
                key("role"),
                format!("role {:?} is not defined in this realm's roles", p.role),
            ));
        }
        let ticket = match &p.ticket {
            None => None,
            Some(t) => Some(
                TicketHash::parse(t.expose()).map_err(|e| invalid(key("ticket"), e.to_string()))?,
            ),
        };
        let wampcra = match &p.wampcra {
            None => None,
            Some(w) => Some(cra_key(w, &key("wampcra"))?),
        };
        let mut cryptosign_keys = Vec::new();
        if let Some(c) = &p.cryptosign {
            if c.public_keys.is_empty() {
                return Err(invalid(
                    key("cryptosign.public_keys"),
                    "at least one public key is needed",
                ));
            }
            for (k, hex) in c.public_keys.iter().enumerate() {
                let at = key(&format!("cryptosign.public_keys[{k}]"));
                let pk = cryptosign::parse_public_key(hex).ok_or_else(|| {
                    invalid(&at, "must be an Ed25519 public key as 64 hex digits")
                })?;
                if !keys.insert(pk.to_bytes()) {
                    return Err(invalid(
                        &at,
                        "this key already belongs to another principal",
                    ));
                }
                cryptosign_keys.push(pk);
            }
        }
        if ticket.is_none() && wampcra.is_none() && cryptosign_keys.is_empty() {
            return Err(invalid(
                at,
                "a principal needs a credential: ticket, wampcra or cryptosign",
            ));
        }
        principals.push(Principal {
            authid: p.authid.clone(),
            role: p.role.clone(),
            ticket,
            wampcra,
            cryptosign: cryptosign_keys,
        });
    }
    PrincipalStore::new(principals).map_err(|e| invalid(format!("{at}.principals"), e.to_string()))
}

/// A WAMP-CRA credential: salted from the config, or plain from a file or the environment.
fn cra_key(w: &WampCraSection, at: &str) -> Result<CraKey, ConfigError> {
    let key = |k: &str| format!("{at}.{k}");
    if w.secret.is_some() {
        return Err(invalid(
            key("secret"),
            "a plain WAMP-CRA secret may not be written in the config; put it in a file \
             (secret_file) or an environment variable (secret_env), or store a salted \
             derived_key instead (brume new-principal --method wampcra prints one)",
        ));
    }
    let salted =
        w.derived_key.is_some() || w.salt.is_some() || w.iterations.is_some() || w.keylen.is_some();
    let plain = w.secret_file.is_some() || w.secret_env.is_some();
    if salted && plain {
        return Err(invalid(
            at,
            "either derived_key with salt, iterations and keylen (salted), or secret_file or \
             secret_env (plain), not both",
        ));
    }
    if salted {
        let missing = |k: &str| {
            invalid(
                key(k),
                "missing: a salted WAMP-CRA key needs derived_key, salt, iterations and keylen",
            )
        };
        let derived_key = w
            .derived_key
            .clone()
            .ok_or_else(|| missing("derived_key"))?;
        let salt = w.salt.clone().ok_or_else(|| missing("salt"))?;
        let iterations = w.iterations.ok_or_else(|| missing("iterations"))?;
        let keylen = w.keylen.ok_or_else(|| missing("keylen"))?;
        if salt.is_empty() {
            return Err(invalid(key("salt"), "must not be empty"));
        }
        if !(1..=wampcra::MAX_ITERATIONS).contains(&iterations) {
            return Err(invalid(
                key("iterations"),
                format!("must be between 1 and {}", wampcra::MAX_ITERATIONS),
            ));
        }
        if !(1..=wampcra::MAX_KEYLEN).contains(&keylen) {
            return Err(invalid(
                key("keylen"),
                format!("must be between 1 and {}", wampcra::MAX_KEYLEN),
            ));
        }
        let decoded = crate::router::auth::secret::b64_decode(derived_key.expose());
        if decoded.map(|d| d.len()) != usize::try_from(keylen).ok() {
            return Err(invalid(
                key("derived_key"),
                "must be the base64 of `keylen` bytes, as Autobahn's derive_key prints it",
            ));
        }
        return Ok(CraKey::Salted {
            derived_key,
            salt,
            iterations,
            keylen,
        });
    }
    let secret = match (&w.secret_file, &w.secret_env) {
        (Some(_), Some(_)) => {
            return Err(invalid(at, "give secret_file or secret_env, not both"));
        }
        (Some(path), None) => {
            let text = std::fs::read_to_string(path).map_err(|e| {
                invalid(
                    key("secret_file"),
                    format!("cannot read {}: {e}", path.display()),
                )
            })?;
            text.trim_end_matches(['\n', '\r']).to_owned()
        }
        (None, Some(var)) => std::env::var(var).map_err(|_| {
            invalid(
                key("secret_env"),
                format!("environment variable {var} is not set (or not UTF-8)"),
            )
        })?,
        (None, None) => {
            return Err(invalid(
                at,
                "needs derived_key, salt, iterations and keylen (salted), or secret_file or \
                 secret_env (plain)",
            ));
        }
    };
    if secret.is_empty() {
        let k = if w.secret_file.is_some() {
            "secret_file"
        } else {
            "secret_env"
        };
        return Err(invalid(key(k), "the secret is empty"));
    }
    Ok(CraKey::Plain {
        secret: Secret::new(secret),
    })
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
        let e = err("[things]\nprovisioning = \"sometimes\"\n");
        assert!(e.contains("provisioning"), "{e}");
        let e = err("[things]\nauto_type = \"Bad Type\"\n");
        assert!(e.starts_with("things.auto_type:"), "{e}");
        let e = err("[things]\nrealm = \"elsewhere\"\n");
        assert!(e.starts_with("things.realm:"), "{e}");
        let e = err("[things]\nset_timeout_ms = 0\n");
        assert!(e.starts_with("things.set_timeout_ms:"), "{e}");
    }

    #[test]
    fn things_section_parses_and_resolves_the_database() {
        let c = Config::from_toml(
            "[things]\nprovisioning = \"auto\"\nauto_type = \"relay\"\ntypes_dir = \"/etc/brume/types\"\n",
            "x",
        )
        .unwrap();
        assert_eq!(c.things.provisioning, Provisioning::Auto);
        assert_eq!(c.things.auto_type.as_deref(), Some("relay"));
        assert_eq!(
            c.things.database_path(Path::new("/data")),
            Path::new("/data/things.db")
        );
        assert_eq!(c.things.realm_name(&c.realms), "brume");
        let c = Config::from_toml("[[realms]]\nname = \"site\"\n", "x").unwrap();
        assert_eq!(
            c.things.realm_name(&c.realms),
            "site",
            "the first realm by default"
        );
        let c = Config::from_toml("[things]\ndatabase = \"/abs/t.db\"\n", "x").unwrap();
        assert_eq!(
            c.things.database_path(Path::new("/data")),
            Path::new("/abs/t.db")
        );
    }

    #[test]
    fn non_loopback_with_anonymous_is_allowed_only_explicitly() {
        let text = "[[listeners]]\nname = \"a\"\nkind = \"both\"\naddress = \"0.0.0.0:8080\"\nallow_anonymous_remote = true\n";
        assert!(Config::from_toml(text, "x").is_ok());
        let text = "[[realms]]\nname = \"r\"\nanonymous = false\n[[listeners]]\nname = \"a\"\nkind = \"both\"\naddress = \"0.0.0.0:8080\"\n";
        assert!(Config::from_toml(text, "x").is_ok());
    }

    /// The commented example of a secure realm in the embedded default.
    fn documented_example() -> String {
        let start = DEFAULT_TOML
            .find("# ----- example: a realm with authentication -----")
            .unwrap();
        let end = DEFAULT_TOML.find("# ----- end of example -----").unwrap();
        DEFAULT_TOML[start..end]
            .lines()
            .skip(1)
            .map(|l| l.strip_prefix("#   ").unwrap_or(""))
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[test]
    fn the_documented_secure_realm_parses_and_validates() {
        let c = Config::from_toml(&documented_example(), "example").unwrap();
        let realms = c.realm_configs().unwrap();
        let plant = &realms[0];
        assert_eq!(plant.name, "plant");
        assert!(!plant.anonymous);
        assert_eq!(plant.principals.len(), 3);
        let dashboard = plant.principals.get("dashboard").unwrap();
        assert_eq!(dashboard.role, "app");
        assert!(dashboard.ticket.is_some());
        assert!(plant.principals.get("historian").unwrap().wampcra.is_some());
        assert_eq!(
            plant.principals.get("gateway-7").unwrap().cryptosign.len(),
            1
        );
        use crate::router::authz::Action;
        let a = &plant.authorizer;
        assert!(a.allows("app", Action::Call, "brume.things.list", MatchPolicy::Exact));
        assert!(!a.allows(
            "app",
            Action::Call,
            "brume.things.delete",
            MatchPolicy::Exact
        ));
        assert!(a.allows(
            "device",
            Action::Publish,
            "brume.thing.t1.state",
            MatchPolicy::Exact
        ));
        assert!(!a.allows(
            "anonymous",
            Action::Subscribe,
            "brume.x",
            MatchPolicy::Exact
        ));
    }

    #[test]
    fn realms_without_roles_allow_everything() {
        let c = Config::default();
        let realms = c.realm_configs().unwrap();
        assert!(!realms[0].authorizer.restricts());
        assert!(realms[0].principals.is_empty());
    }

    #[test]
    fn secrets_never_appear_in_debug_output() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("s");
        std::fs::write(&file, "file-secret-value\n").unwrap();
        let text = format!(
            "{}\n[[realms.principals]]\nauthid = \"legacy\"\nrole = \"app\"\n\
             wampcra = {{ secret_file = {:?} }}\n",
            documented_example(),
            file.display().to_string()
        );
        let c = Config::from_toml(&text, "x").unwrap();
        let router = c.router_config().unwrap();
        for shown in [format!("{c:?}"), format!("{router:?}")] {
            for secret in [
                "5ffdVEserplTawUNt1cl8a3j2IVWxh4BwuisObl",
                "RTvdTZP3yqvX1diVYZxsOA",
                "TMuKrppUDemQi1+dLKtqyVzbbnNqoYhzOX7X9lNnO94=",
                "file-secret-value",
            ] {
                assert!(!shown.contains(secret), "{secret} leaked into {shown}");
            }
        }
        // The plain secret was read from its file.
        let legacy = router.realms[0].principals.get("legacy").unwrap();
        assert_eq!(
            legacy.wampcra.as_ref().unwrap().hmac_key(),
            b"file-secret-value"
        );
    }

    #[test]
    fn a_plain_secret_from_the_environment() {
        // PATH is set wherever tests run; a test may not set variables (no unsafe code).
        let text = "[[realms]]\nname = \"r\"\n[[realms.principals]]\nauthid = \"a\"\nrole = \"x\"\n\
                    wampcra = { secret_env = \"PATH\" }\n";
        let c = Config::from_toml(text, "x").unwrap();
        let realms = c.realm_configs().unwrap();
        let key = realms[0]
            .principals
            .get("a")
            .unwrap()
            .wampcra
            .clone()
            .unwrap();
        assert_eq!(key.hmac_key(), std::env::var("PATH").unwrap().as_bytes());
    }

    #[test]
    fn security_errors_name_the_key() {
        let principal = |body: &str| {
            format!(
                "[[realms]]\nname = \"r\"\nanonymous = false\n[realms.roles.app]\nrules = []\n\
                 [[realms.principals]]\nauthid = \"a\"\nrole = \"app\"\n{body}\n"
            )
        };
        let cases: Vec<(String, &str, &str)> = vec![
            (
                principal("wampcra = { secret = \"hunter2\" }"),
                "realms[0].principals[0].wampcra.secret:",
                "secret_file",
            ),
            (
                principal("ticket = \"hunter2\""),
                "realms[0].principals[0].ticket:",
                "new-principal",
            ),
            (
                principal("wampcra = { derived_key = \"AAAA\", salt = \"s\", iterations = 10 }"),
                "realms[0].principals[0].wampcra.keylen:",
                "missing",
            ),
            (
                principal(
                    "wampcra = { derived_key = \"AAAA\", salt = \"s\", iterations = 10, keylen = 32 }",
                ),
                "realms[0].principals[0].wampcra.derived_key:",
                "base64",
            ),
            (
                principal("wampcra = { secret_file = \"/nonexistent/brume-secret\" }"),
                "realms[0].principals[0].wampcra.secret_file:",
                "cannot read",
            ),
            (
                principal("wampcra = { secret_env = \"BRUME_SURELY_UNSET_VARIABLE\" }"),
                "realms[0].principals[0].wampcra.secret_env:",
                "not set",
            ),
            (
                principal("wampcra = { secret_env = \"PATH\", salt = \"s\" }"),
                "realms[0].principals[0].wampcra:",
                "not both",
            ),
            (
                principal("cryptosign = { public_keys = [\"abcd\"] }"),
                "realms[0].principals[0].cryptosign.public_keys[0]:",
                "64 hex",
            ),
            (principal(""), "realms[0].principals[0]:", "credential"),
            (
                principal("ticket = \"x\"").replace("role = \"app\"", "role = \"admin\""),
                "realms[0].principals[0].role:",
                "not defined",
            ),
            (
                principal("cryptosign = { public_keys = [\"9e53bd3d7be4e806d9fbf89c01e5fea41aca7456adc3e432c703ed3fcd626eb5\"] }\n\
                           [[realms.principals]]\nauthid = \"a\"\nrole = \"app\"\n\
                           cryptosign = { public_keys = [\"9e53bd3d7be4e806d9fbf89c01e5fea41aca7456adc3e432c703ed3fcd626eb5\"] }"),
                "realms[0].principals[1].authid:",
                "twice",
            ),
            (
                "[[realms]]\nname = \"r\"\n[realms.roles.trusted]\nrules = []\n".to_owned(),
                "realms[0].roles.trusted:",
                "reserved",
            ),
            (
                "[[realms]]\nname = \"r\"\n[realms.roles.app]\nrules = [{ uri = \"a..b\", allow = [\"call\"] }]\n"
                    .to_owned(),
                "realms[0].roles.app.rules[0].uri:",
                "exact",
            ),
            (
                "[[realms]]\nname = \"r\"\n[realms.roles.app]\nrules = [{ uri = \"a\", allow = [\"call\"] }, { uri = \"a\", match = \"exact\", allow = [] }]\n"
                    .to_owned(),
                "realms[0].roles.app.rules[1]:",
                "second rule",
            ),
            (
                "[[listeners]]\nname = \"t\"\nkind = \"both\"\naddress = \"127.0.0.1:1\"\n\
                 [listeners.tls]\ncert_file = \"/nonexistent/c.pem\"\nkey_file = \"/nonexistent/k.pem\"\n"
                    .to_owned(),
                "listeners[0].tls.cert_file:",
                "/nonexistent/c.pem",
            ),
        ];
        for (text, key, hint) in cases {
            let e = err(&text);
            assert!(e.starts_with(key) && e.contains(hint), "{text}\n=> {e}");
            // The error never repeats a secret.
            assert!(!e.contains("hunter2"), "{e}");
        }
        // Unknown actions and match policies are parse errors naming the field.
        let e = err(
            "[[realms]]\nname = \"r\"\n[realms.roles.app]\nrules = [{ uri = \"a\", allow = [\"delete\"] }]\n",
        );
        assert!(e.contains("allow") || e.contains("delete"), "{e}");
        let e = err(
            "[[realms]]\nname = \"r\"\n[realms.roles.app]\nrules = [{ uri = \"a\", match = \"regex\", allow = [] }]\n",
        );
        assert!(e.contains("match") || e.contains("regex"), "{e}");
    }

    #[test]
    fn the_readme_security_example_parses() {
        let readme = include_str!("../../README.md");
        let start = readme.find("A realm with authentication").unwrap();
        let block = &readme[start..];
        let body = block
            .split("```toml\n")
            .nth(1)
            .and_then(|b| b.split("```").next())
            .unwrap();
        let c: Config = toml::from_str(body).unwrap();
        // Realms validate fully; the listener's certificate files only exist on a real host.
        let realms = c.realm_configs().unwrap();
        assert_eq!(realms[0].principals.len(), 3);
        assert!(c.listeners[0].tls.is_some());
    }
}
