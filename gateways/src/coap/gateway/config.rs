//! The gateway's configuration, `[coap]` in the hub's config file: typed, with defaults for every
//! key, unknown keys refused, and checked (with the device list resolved against the thing types)
//! before the socket opens.
//!
//! [`DEFAULT_TOML`] documents every key with its default value; a test checks that it parses to
//! [`CoapConfig::default`].

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::Duration;

use device_models::{ThingId, TypeCatalog};
use serde::{Deserialize, Serialize};

use super::binding::{BindingError, CoapBinding};
use crate::coap::RateLimitConfig;
use crate::coap::driver::{ClientDriverConfig, ServerDriverConfig};
use crate::coap::server::ServerConfig;

/// The documented default `[coap]` section.
pub const DEFAULT_TOML: &str = r#"[coap]
# Run the CoAP gateway.
enabled = true
# UDP address devices send to. A non-loopback address makes device authentication mandatory
# unless `allow_unauthenticated_remote` is set.
bind = "127.0.0.1:5683"
# Require every request to carry the device's secret (`?s=<secret>`), even on loopback.
require_auth = false
# Let devices on a non-loopback `bind` omit their secret. Unsafe outside a closed network.
allow_unauthenticated_remote = false
# A device that sent nothing for this long, and holds no observation of its commands, is offline.
# An observed device silent this long is probed with a confirmable notification, and is offline
# once that goes unacknowledged: CoAP retransmits it for up to about 93 s first.
offline_after_secs = 180
# Max-Age of the commands resource: observers re-register after it lapses, which also keeps NAT
# bindings open.
commands_max_age_secs = 60
# Most things tracked at once; offline things without pending commands make room for new ones.
max_things = 100000
# Most action requests waiting for one device; more are answered with an error at once.
max_pending_actions = 16
# Largest request body accepted, block-wise included (bytes); larger ones get 4.13.
max_body_size = 65536
# Datagrams per second and burst admitted from one source address (0 turns the limit off).
rate_limit_per_second = 500.0
rate_limit_burst = 1000
# Most observations held at once, over all devices.
max_observers = 4096
# Receive buffer of the device socket, in bytes, so bursts from many devices are not dropped by the
# kernel while the gateway is busy (capped by the OS: net.core.rmem_max on Linux). 0 keeps the
# OS default.
recv_buffer_bytes = 1048576
# Local address of the socket the hub uses as a CoAP client of devices that are servers
# ("[::]:0" for IPv6 devices).
client_bind = "0.0.0.0:0"
# Seconds between GETs of a device resource whose server does not do Observe.
poll_interval_secs = 30
# Devices that are CoAP servers, observed by the hub. `type` names a thing type whose
# `[bindings.coap]` maps resources to properties and actions; `binding` gives the same table
# inline instead. The hub provisions each device that names its `type` at start, unless the
# things registry already holds it. Example:
#   [[coap.devices]]
#   thing = "boiler-1"
#   type = "thermostat"
#   uri = "coap://192.0.2.7:5683"
devices = []
"#;

/// `[coap]`: the CoAP gateway.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct CoapConfig {
    /// Whether the hub runs the gateway at all.
    pub enabled: bool,
    /// UDP address devices send to.
    pub bind: SocketAddr,
    /// Whether a secret is required even on loopback.
    pub require_auth: bool,
    /// Whether a non-loopback `bind` may admit devices without a secret.
    pub allow_unauthenticated_remote: bool,
    /// Silence (and no observation) after which a device is offline, in seconds.
    pub offline_after_secs: u64,
    /// Max-Age of the commands resource, in seconds.
    pub commands_max_age_secs: u32,
    /// Most things tracked at once.
    pub max_things: usize,
    /// Most pending action requests per thing.
    pub max_pending_actions: usize,
    /// Largest request body, in bytes.
    pub max_body_size: usize,
    /// Per-address datagram rate; 0 turns the limit off.
    pub rate_limit_per_second: f64,
    /// Per-address burst.
    pub rate_limit_burst: u32,
    /// Most observations at once.
    pub max_observers: usize,
    /// `SO_RCVBUF` of the device socket; 0 keeps the OS default.
    pub recv_buffer_bytes: usize,
    /// Local address of the client socket.
    pub client_bind: SocketAddr,
    /// Polling period of resources on devices without Observe, in seconds.
    pub poll_interval_secs: u64,
    /// Devices that are CoAP servers.
    pub devices: Vec<DeviceConfig>,
}

/// `[[coap.devices]]`: a device that is a CoAP server, observed by the hub.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceConfig {
    /// The thing it is.
    pub thing: ThingId,
    /// Its thing type: the source of the binding (unless `binding` is given), the type hint
    /// of its `Hello`, and the type the hub provisions it with at start if it is not a thing yet.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub type_id: Option<String>,
    /// `coap://host[:port]` (port 5683 by default).
    pub uri: String,
    /// An inline binding, used instead of the type's `[bindings.coap]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub binding: Option<CoapBinding>,
}

/// A device entry resolved against the thing types: what the gateway observes.
#[derive(Clone, Debug, PartialEq)]
pub struct ServerDevice {
    /// The thing.
    pub thing: ThingId,
    /// Its type, if configured.
    pub type_id: Option<String>,
    /// Host name or IP address (without brackets).
    pub host: String,
    /// UDP port.
    pub port: u16,
    /// Which resources hold what.
    pub binding: CoapBinding,
}

/// A configuration problem, naming the key and the reason.
#[derive(Debug, thiserror::Error)]
pub enum CoapConfigError {
    /// A value is out of range or malformed.
    #[error("coap.{key}: {reason}")]
    Invalid {
        /// Which key.
        key: String,
        /// Why.
        reason: String,
    },
    /// A device's binding is not usable.
    #[error("coap.devices[{index}]: {source}")]
    Binding {
        /// Position in the device list.
        index: usize,
        /// The binding problem.
        #[source]
        source: BindingError,
    },
}

fn invalid(key: impl Into<String>, reason: impl Into<String>) -> CoapConfigError {
    CoapConfigError::Invalid {
        key: key.into(),
        reason: reason.into(),
    }
}

impl Default for CoapConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            bind: SocketAddr::from(([127, 0, 0, 1], 5683)),
            require_auth: false,
            allow_unauthenticated_remote: false,
            offline_after_secs: 180,
            commands_max_age_secs: 60,
            max_things: 100_000,
            max_pending_actions: 16,
            max_body_size: 64 * 1024,
            rate_limit_per_second: 500.0,
            rate_limit_burst: 1_000,
            max_observers: 4_096,
            recv_buffer_bytes: 1 << 20,
            client_bind: SocketAddr::from(([0, 0, 0, 0], 0)),
            poll_interval_secs: 30,
            devices: Vec::new(),
        }
    }
}

impl CoapConfig {
    /// Whether requests must carry the device's secret: when `require_auth` says so, and on any
    /// non-loopback `bind` unless `allow_unauthenticated_remote` says otherwise.
    pub fn auth_required(&self) -> bool {
        self.require_auth || (!self.bind.ip().is_loopback() && !self.allow_unauthenticated_remote)
    }

    /// Checks ranges, URIs and inline bindings.
    pub fn validate(&self) -> Result<(), CoapConfigError> {
        if self.offline_after_secs == 0 {
            return Err(invalid("offline_after_secs", "must be at least 1"));
        }
        if self.poll_interval_secs == 0 {
            return Err(invalid("poll_interval_secs", "must be at least 1"));
        }
        if self.max_things == 0 {
            return Err(invalid("max_things", "must be at least 1"));
        }
        if self.max_body_size < 1024 {
            return Err(invalid("max_body_size", "must be at least 1024"));
        }
        if !self.rate_limit_per_second.is_finite() || self.rate_limit_per_second < 0.0 {
            return Err(invalid(
                "rate_limit_per_second",
                "must be a finite number >= 0",
            ));
        }
        if self.rate_limit_per_second > 0.0 && self.rate_limit_burst == 0 {
            return Err(invalid("rate_limit_burst", "must be at least 1"));
        }
        let mut seen = HashSet::new();
        for (index, device) in self.devices.iter().enumerate() {
            if !seen.insert(&device.thing) {
                return Err(invalid(
                    format!("devices[{index}].thing"),
                    format!("{} is listed twice", device.thing),
                ));
            }
            parse_coap_uri(&device.uri)
                .map_err(|reason| invalid(format!("devices[{index}].uri"), reason))?;
            if let Some(binding) = &device.binding {
                binding
                    .validate()
                    .map_err(|source| CoapConfigError::Binding { index, source })?;
            }
        }
        Ok(())
    }

    /// Validates, then resolves each device's binding: its inline `binding`, else its type's
    /// `[bindings.coap]` from `catalog`.
    pub fn resolve_devices(
        &self,
        catalog: &TypeCatalog,
    ) -> Result<Vec<ServerDevice>, CoapConfigError> {
        self.validate()?;
        let mut out = Vec::with_capacity(self.devices.len());
        for (index, device) in self.devices.iter().enumerate() {
            let ty = match &device.type_id {
                Some(id) => Some(catalog.get(id).ok_or_else(|| {
                    invalid(
                        format!("devices[{index}].type"),
                        format!("no thing type {id:?}"),
                    )
                })?),
                None => None,
            };
            let binding = match (&device.binding, ty.and_then(|t| t.binding("coap"))) {
                (Some(inline), _) => inline.clone(),
                (None, Some(table)) => CoapBinding::from_toml(table)
                    .map_err(|source| CoapConfigError::Binding { index, source })?,
                (None, None) => {
                    return Err(invalid(
                        format!("devices[{index}]"),
                        "needs a `binding`, or a `type` with a [bindings.coap] table",
                    ));
                }
            };
            let (host, port) = parse_coap_uri(&device.uri)
                .map_err(|reason| invalid(format!("devices[{index}].uri"), reason))?;
            out.push(ServerDevice {
                thing: device.thing.clone(),
                type_id: device.type_id.clone(),
                host,
                port,
                binding,
            });
        }
        Ok(out)
    }

    /// The client driver settings this config implies.
    pub(crate) fn client_driver(&self) -> ClientDriverConfig {
        let mut config = ClientDriverConfig::default();
        config.engine.poll_interval = Duration::from_secs(self.poll_interval_secs);
        config
    }

    /// The server driver settings this config implies.
    pub(crate) fn server_driver(&self) -> ServerDriverConfig {
        let mut engine = ServerConfig::default();
        engine.blockwise.max_body_size = self.max_body_size;
        engine.observe.max_observers = self.max_observers;
        engine.rate_limit = (self.rate_limit_per_second > 0.0).then(|| RateLimitConfig {
            per_second: self.rate_limit_per_second,
            burst: self.rate_limit_burst,
            ..RateLimitConfig::default()
        });
        ServerDriverConfig {
            engine,
            ..ServerDriverConfig::default()
        }
    }
}

/// Splits `coap://host[:port][/]` into host and port.
fn parse_coap_uri(uri: &str) -> Result<(String, u16), String> {
    let rest = uri
        .strip_prefix("coap://")
        .ok_or_else(|| format!("{uri:?} must start with coap:// (coaps is not supported)"))?;
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    if authority.contains(['/', '?', '#', '@']) {
        return Err(format!(
            "{uri:?} must be coap://host[:port]; paths belong in the binding"
        ));
    }
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (host, after) = v6
            .split_once(']')
            .ok_or_else(|| format!("{uri:?}: unclosed '['"))?;
        (host, after.strip_prefix(':'))
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return Err(format!("{uri:?} has no host"));
    }
    let port = match port {
        None => 5683,
        Some(p) => p
            .parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| format!("{uri:?}: bad port {p:?}"))?,
    };
    Ok((host.to_owned(), port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Doc {
        coap: CoapConfig,
    }

    #[test]
    fn documented_default_is_the_default() {
        let doc: Doc = toml::from_str(DEFAULT_TOML).unwrap();
        assert_eq!(doc.coap, CoapConfig::default());
        doc.coap.validate().unwrap();
        let empty: Doc = toml::from_str("[coap]").unwrap();
        assert_eq!(empty.coap, CoapConfig::default());
    }

    #[test]
    fn unknown_keys_are_refused() {
        assert!(toml::from_str::<Doc>("[coap]\nbnid = \"127.0.0.1:1\"").is_err());
        let dev = "[coap]\n[[coap.devices]]\nthing = \"a\"\nuri = \"coap://h\"\nextra = 1\n";
        assert!(toml::from_str::<Doc>(dev).is_err());
        let bad_id = "[coap]\n[[coap.devices]]\nthing = \"a/b\"\nuri = \"coap://h\"\n";
        assert!(toml::from_str::<Doc>(bad_id).is_err());
    }

    #[test]
    fn auth_policy() {
        let mut c = CoapConfig::default();
        assert!(!c.auth_required());
        c.require_auth = true;
        assert!(c.auth_required());
        c.require_auth = false;
        c.bind = "0.0.0.0:5683".parse().unwrap();
        assert!(c.auth_required());
        c.allow_unauthenticated_remote = true;
        assert!(!c.auth_required());
        c.bind = "[::1]:5683".parse().unwrap();
        c.allow_unauthenticated_remote = false;
        assert!(!c.auth_required());
    }

    #[test]
    fn uris() {
        let ok = [
            ("coap://127.0.0.1:5690", ("127.0.0.1", 5690)),
            ("coap://dev.local", ("dev.local", 5683)),
            ("coap://[::1]:7/", ("::1", 7)),
            ("coap://[fe80::1]", ("fe80::1", 5683)),
        ];
        for (uri, (host, port)) in ok {
            assert_eq!(parse_coap_uri(uri), Ok((host.to_owned(), port)), "{uri}");
        }
        let bad = [
            "coaps://h",
            "http://h",
            "coap://",
            "coap://h:0",
            "coap://h:x",
            "coap://h/path",
            "coap://[::1",
            "coap://u@h",
        ];
        for uri in bad {
            assert!(parse_coap_uri(uri).is_err(), "{uri}");
        }
    }

    #[test]
    fn devices_resolve_through_the_type_binding() {
        let ty = device_models::ThingType::from_toml(
            r#"
            id = "probe"
            title = "Probe"
            version = "1"
            [properties.temperature]
            type = "number"
            [bindings.coap]
            properties.temperature.path = "/t"
            "#,
            "probe.toml",
        )
        .unwrap();
        let mut catalog = TypeCatalog::new();
        catalog
            .insert(ty, device_models::TypeOrigin::Builtin)
            .unwrap();
        let doc: Doc = toml::from_str(
            r#"
            [coap]
            [[coap.devices]]
            thing = "p-1"
            type = "probe"
            uri = "coap://127.0.0.1:5690"
            [[coap.devices]]
            thing = "p-2"
            uri = "coap://127.0.0.1:5691"
            binding.properties.temperature.path = "/x"
            "#,
        )
        .unwrap();
        let devices = doc.coap.resolve_devices(&catalog).unwrap();
        assert_eq!(devices[0].binding.properties["temperature"].path, "/t");
        assert_eq!(devices[1].binding.properties["temperature"].path, "/x");
        assert_eq!(devices[1].port, 5691);

        let mut missing = doc.coap.clone();
        missing.devices[0].type_id = Some("nope".into());
        assert!(missing.resolve_devices(&catalog).is_err());
        let mut twice = doc.coap.clone();
        twice.devices[1].thing = twice.devices[0].thing.clone();
        assert!(twice.validate().is_err());
        let mut unbound = doc.coap;
        unbound.devices[0].type_id = None;
        assert!(unbound.resolve_devices(&catalog).is_err());
    }
}
