//! `[uplink]`: where the cloud router is, who the hub is there, and what goes up.

use serde::{Deserialize, Serialize};

use super::ConfigError;
use crate::wamp::{MatchPolicy, Serializer, uri};

/// The uplink's configuration.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct UplinkConfig {
    /// Off by default: a hub works alone until it is given a cloud router.
    pub enabled: bool,
    /// The cloud router: `ws://host:port/path` or `rs://host:port`.
    pub url: String,
    /// The realm joined on the cloud router.
    pub realm: String,
    /// `json` or `msgpack`.
    pub serializer: String,
    /// How the hub authenticates to the cloud router.
    pub auth: UplinkAuth,
    /// Cloud URIs start with `<prefix>.<hub id>.`.
    pub prefix: String,
    /// Local topics forwarded to the cloud.
    pub forward: Vec<ForwardRule>,
    /// Bounds of the store-and-forward queue.
    pub queue_max_bytes: u64,
    pub queue_max_age_secs: u64,
    /// Reconnection back-off: first delay, doubling up to the cap, with jitter.
    pub reconnect_initial_ms: u64,
    pub reconnect_max_ms: u64,
    /// Ping the cloud router when idle this long; give up on the link after twice as long.
    pub keepalive_secs: u64,
    /// Acknowledged publications in flight while replaying.
    pub window: usize,
    /// Events from other publishers than the things service that the uplink's local session holds
    /// while its queue writes catch up; beyond it they are dropped and counted as
    /// `slow_consumer` in `brume.uplink.status`, and the session stays.
    pub session_queue: usize,
}

/// How the uplink authenticates.
#[derive(Clone, PartialEq, Deserialize, Serialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct UplinkAuth {
    /// `anonymous`, `ticket`, `wampcra` or `cryptosign`.
    pub method: String,
    /// Who the hub is on the cloud router (optional for cryptosign, which the router may
    /// identify by public key).
    pub authid: String,
    /// The secret: the ticket, the WAMP-CRA secret (or password, when the router salts it), or
    /// the Ed25519 seed in hex for cryptosign. Inline here, or better in `secret_file` or
    /// `secret_env`.
    pub secret: Option<String>,
    /// A file holding the secret.
    pub secret_file: Option<String>,
    /// An environment variable holding the secret.
    pub secret_env: Option<String>,
    /// Cryptosign only: bind the signature to the TLS connection (`tls-exporter`); needs a
    /// `wss://` or `rss://` URL.
    pub channel_binding: bool,
    /// A PEM file of certificates to trust for `wss://`/`rss://` (default: the Mozilla roots).
    pub ca_file: Option<String>,
}

impl std::fmt::Debug for UplinkAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UplinkAuth")
            .field("method", &self.method)
            .field("authid", &self.authid)
            .field("secret", &self.secret.as_ref().map(|_| "<hidden>"))
            .field("secret_file", &self.secret_file)
            .field("secret_env", &self.secret_env)
            .field("channel_binding", &self.channel_binding)
            .field("ca_file", &self.ca_file)
            .finish()
    }
}

/// A local topic pattern forwarded to the cloud.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ForwardRule {
    pub topic: String,
    #[serde(rename = "match", default = "exact")]
    pub policy: String,
    /// `telemetry` (dropped first when the queue is full) or `lifecycle`.
    #[serde(default = "telemetry")]
    pub kind: String,
}

fn exact() -> String {
    "exact".into()
}
fn telemetry() -> String {
    "telemetry".into()
}

impl Default for UplinkConfig {
    fn default() -> Self {
        UplinkConfig {
            enabled: false,
            url: "ws://127.0.0.1:8090/ws".into(),
            realm: "cloud".into(),
            serializer: "msgpack".into(),
            auth: UplinkAuth {
                method: "anonymous".into(),
                ..UplinkAuth::default()
            },
            prefix: "brume.hub".into(),
            forward: vec![
                ForwardRule {
                    topic: crate::wamp::uris::things::THING_PREFIX.into(),
                    policy: "prefix".into(),
                    kind: "telemetry".into(),
                },
                ForwardRule {
                    topic: crate::wamp::uris::things::LIFECYCLE_PREFIX.into(),
                    policy: "prefix".into(),
                    kind: "lifecycle".into(),
                },
            ],
            queue_max_bytes: 64 * 1024 * 1024,
            queue_max_age_secs: 7 * 24 * 3600,
            reconnect_initial_ms: 500,
            reconnect_max_ms: 30_000,
            keepalive_secs: 15,
            window: 500,
            session_queue: 65_536,
        }
    }
}

/// What kind of event a forwarding rule queues, which decides what the uplink queue drops first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// State reports and device events: dropped first when the queue is full.
    Telemetry,
    /// Things coming online, going offline, provisioned or deleted: kept longest.
    Lifecycle,
}

/// A forwarding rule, checked.
#[derive(Clone, Debug)]
pub struct Rule {
    pub topic: String,
    pub policy: MatchPolicy,
    pub kind: Kind,
}

impl UplinkConfig {
    fn invalid(key: &str, reason: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            key: format!("uplink.{key}"),
            reason: reason.into(),
        }
    }

    /// Checks the section; errors name the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !self.enabled {
            return Ok(());
        }
        crate::client::connect::parse_url(&self.url)
            .map_err(|e| super::section_error("uplink.url", e))?;
        if !uri::is_valid(&self.realm, MatchPolicy::Exact, false) {
            return Err(Self::invalid("realm", "not a valid realm URI"));
        }
        self.serializer()?;
        if !uri::is_valid(&self.prefix, MatchPolicy::Exact, false) {
            return Err(Self::invalid("prefix", "not a valid URI"));
        }
        self.rules()?;
        match self.auth.method.as_str() {
            "anonymous" => {}
            method @ ("ticket" | "wampcra" | "cryptosign") => {
                if method != "cryptosign" && self.auth.authid.is_empty() {
                    return Err(Self::invalid(
                        "auth.authid",
                        format!("{method} authentication needs an authid"),
                    ));
                }
                let sources = [
                    &self.auth.secret,
                    &self.auth.secret_file,
                    &self.auth.secret_env,
                ]
                .iter()
                .filter(|s| s.is_some())
                .count();
                if sources != 1 {
                    return Err(Self::invalid(
                        "auth",
                        "give exactly one of secret, secret_file, secret_env",
                    ));
                }
            }
            other => {
                return Err(Self::invalid(
                    "auth.method",
                    format!("unknown method {other:?} (anonymous, ticket, wampcra, cryptosign)"),
                ));
            }
        }
        let tls = self.url.starts_with("wss://") || self.url.starts_with("rss://");
        if self.auth.channel_binding && (self.auth.method != "cryptosign" || !tls) {
            return Err(Self::invalid(
                "auth.channel_binding",
                "needs method cryptosign and a wss:// or rss:// URL",
            ));
        }
        if self.queue_max_bytes < 4096 {
            return Err(Self::invalid("queue_max_bytes", "must be at least 4096"));
        }
        if self.queue_max_age_secs == 0 {
            return Err(Self::invalid("queue_max_age_secs", "must be at least 1"));
        }
        if self.reconnect_initial_ms == 0 || self.reconnect_max_ms < self.reconnect_initial_ms {
            return Err(Self::invalid(
                "reconnect_max_ms",
                "needs 0 < reconnect_initial_ms <= reconnect_max_ms",
            ));
        }
        if !(1..=10_000).contains(&self.window) {
            return Err(Self::invalid("window", "must be between 1 and 10000"));
        }
        if !(16..=1_048_576).contains(&self.session_queue) {
            return Err(Self::invalid(
                "session_queue",
                "must be between 16 and 1048576",
            ));
        }
        Ok(())
    }

    pub fn serializer(&self) -> Result<Serializer, ConfigError> {
        match self.serializer.as_str() {
            "json" => Ok(Serializer::Json),
            "msgpack" => Ok(Serializer::MsgPack),
            other => Err(Self::invalid(
                "serializer",
                format!("unknown serializer {other:?}"),
            )),
        }
    }

    pub fn rules(&self) -> Result<Vec<Rule>, ConfigError> {
        self.forward
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let key = |k: &str| format!("forward[{i}].{k}");
                let policy = match r.policy.as_str() {
                    "exact" => MatchPolicy::Exact,
                    "prefix" => MatchPolicy::Prefix,
                    "wildcard" => MatchPolicy::Wildcard,
                    other => {
                        return Err(Self::invalid(
                            &key("match"),
                            format!("unknown policy {other:?}"),
                        ));
                    }
                };
                if !uri::is_valid(&r.topic, policy, false) {
                    return Err(Self::invalid(&key("topic"), "not a valid pattern"));
                }
                let kind = match r.kind.as_str() {
                    "telemetry" => Kind::Telemetry,
                    "lifecycle" => Kind::Lifecycle,
                    other => {
                        return Err(Self::invalid(
                            &key("kind"),
                            format!("unknown kind {other:?}"),
                        ));
                    }
                };
                Ok(Rule {
                    topic: r.topic.clone(),
                    policy,
                    kind,
                })
            })
            .collect()
    }

    /// The ticket, from wherever the config says it is.
    pub fn secret(&self) -> Result<String, ConfigError> {
        if let Some(s) = &self.auth.secret {
            return Ok(s.clone());
        }
        if let Some(path) = &self.auth.secret_file {
            return std::fs::read_to_string(path)
                .map(|s| s.trim_end().to_owned())
                .map_err(|e| Self::invalid("auth.secret_file", format!("{path}: {e}")));
        }
        if let Some(var) = &self.auth.secret_env {
            return std::env::var(var)
                .map_err(|_| Self::invalid("auth.secret_env", format!("{var} is not set")));
        }
        Err(Self::invalid("auth", "no secret configured"))
    }
}
