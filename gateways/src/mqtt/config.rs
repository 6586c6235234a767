//! [`MqttConfig`]: the `[mqtt]` section of the hub's config, validated before any port opens.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use super::error::ConfigError;

/// Default listen address: loopback only, the standard MQTT port.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:1883";

/// Settings of the MQTT gateway and its embedded broker.
///
/// Every field has a default, so an empty `[mqtt]` table is a working config; unknown keys are
/// errors. Check a config with [`MqttConfig::validate`] (done by
/// [`MqttGateway::start`](super::MqttGateway::start)).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MqttConfig {
    /// Whether the hub starts the MQTT gateway at all.
    pub enabled: bool,
    /// Address of the MQTT listener (3.1.1 and 5 on one port). Port 0 picks a free port.
    pub listen: SocketAddr,
    /// Whether devices must log in (username = thing id, password = its secret).
    ///
    /// Unset: required on any non-loopback address, optional on loopback. Setting `false` on a
    /// non-loopback address is allowed but logged as a warning at start.
    pub require_auth: Option<bool>,
    /// Most simultaneous MQTT connections; one more is refused at accept.
    pub max_connections: usize,
    /// Largest MQTT packet accepted, in bytes. A larger packet is a protocol error that closes the
    /// connection (MQTT 5 clients are told the limit in CONNACK).
    pub max_packet_bytes: usize,
    /// Largest payload of a message the gateway interprets (thing topics, raw bridge). A larger
    /// one still reaches MQTT subscribers but is rejected by the gateway and counted; the device
    /// stays connected.
    pub max_message_bytes: usize,
    /// Time a new connection gets to send its CONNECT, in milliseconds.
    pub connect_timeout_ms: u64,
    /// Idle limit in seconds for clients that ask for keep-alive 0 (no keep-alive), and the
    /// ceiling applied to any larger keep-alive they ask for.
    pub max_keep_alive_s: u16,
    /// Most packets read from one connection before they are handed to the router in a batch.
    pub max_inflight: usize,
    /// Whether MQTT topics outside the thing namespace are passed to the hub as raw messages
    /// (`a/b/c` ↔ WAMP `mqtt.a.b.c`).
    pub raw_bridge: bool,
    /// Most action invocations awaiting a reply that the gateway remembers (to check outputs and
    /// to match replies of firmware that carries no correlation id). The oldest is forgotten first.
    pub max_pending_actions: usize,
    /// Grace period of a shutdown before the remaining connections are dropped, in milliseconds.
    pub shutdown_grace_ms: u64,
    /// Limits of the embedded broker's router.
    pub router: RouterLimits,
    /// Roles of the hub realm's principals who may log in to watch every device topic (username
    /// = authid, password = the principal's ticket), as an anonymous client may where no login
    /// is required: `mosquitto_sub -t '#'` for an operator when devices must log in. Empty (the
    /// default): nobody. Observers publish under the device rules (never as a thing).
    pub observer_roles: Vec<String>,
}

/// Limits of the embedded broker's router (rumqttd). Its defaults refuse every connection and
/// keep 1 GB per topic filter, so they are always set explicitly from here.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RouterLimits {
    /// Most messages queued towards one connection before the router pauses it.
    pub max_outgoing_packets: u64,
    /// Size of one segment of a topic filter's in-memory log, in bytes.
    pub segment_bytes: usize,
    /// Segments kept per topic filter; older ones are dropped, and persistent sessions that had
    /// not read them skip ahead. A filter's log holds at most `segment_bytes × segment_count`.
    pub segment_count: usize,
}

impl Default for MqttConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            listen: SocketAddr::from(([127, 0, 0, 1], 1883)),
            require_auth: None,
            max_connections: 10_000,
            max_packet_bytes: 256 * 1024,
            max_message_bytes: 64 * 1024,
            connect_timeout_ms: 5_000,
            max_keep_alive_s: 600,
            max_inflight: 100,
            raw_bridge: true,
            max_pending_actions: 10_000,
            shutdown_grace_ms: 2_000,
            router: RouterLimits::default(),
            observer_roles: Vec::new(),
        }
    }
}

impl Default for RouterLimits {
    fn default() -> Self {
        Self {
            max_outgoing_packets: 200,
            segment_bytes: 1024 * 1024,
            segment_count: 4,
        }
    }
}

impl MqttConfig {
    /// Whether devices must authenticate, after applying the loopback rule to `listen`.
    pub fn auth_required(&self) -> bool {
        self.require_auth
            .unwrap_or_else(|| !self.listen.ip().is_loopback())
    }

    /// Checks limits and combinations; the error names the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let positive = |key: &'static str, value: u64| {
            if value == 0 {
                Err(ConfigError::Zero { key })
            } else {
                Ok(())
            }
        };
        positive("max_connections", self.max_connections as u64)?;
        positive("max_packet_bytes", self.max_packet_bytes as u64)?;
        positive("max_message_bytes", self.max_message_bytes as u64)?;
        positive("connect_timeout_ms", self.connect_timeout_ms)?;
        positive("max_keep_alive_s", u64::from(self.max_keep_alive_s))?;
        positive("max_inflight", self.max_inflight as u64)?;
        positive("max_pending_actions", self.max_pending_actions as u64)?;
        positive(
            "router.max_outgoing_packets",
            self.router.max_outgoing_packets,
        )?;
        positive("router.segment_bytes", self.router.segment_bytes as u64)?;
        positive("router.segment_count", self.router.segment_count as u64)?;
        if self.max_message_bytes > self.max_packet_bytes {
            return Err(ConfigError::MessageOverPacket {
                message: self.max_message_bytes,
                packet: self.max_packet_bytes,
            });
        }
        if self.max_packet_bytes > self.router.segment_bytes {
            return Err(ConfigError::PacketOverSegment {
                packet: self.max_packet_bytes,
                segment: self.router.segment_bytes,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_table_is_the_default() {
        let config: MqttConfig = toml::from_str("").unwrap();
        assert_eq!(config, MqttConfig::default());
        assert_eq!(config.listen.to_string(), DEFAULT_LISTEN);
        config.validate().unwrap();
        assert!(!config.auth_required(), "loopback: anonymous allowed");
    }

    #[test]
    fn auth_follows_the_listen_address_unless_set() {
        let any: MqttConfig = toml::from_str(r#"listen = "0.0.0.0:1883""#).unwrap();
        assert!(any.auth_required());
        let open: MqttConfig =
            toml::from_str("listen = \"0.0.0.0:1883\"\nrequire_auth = false").unwrap();
        assert!(!open.auth_required());
        let strict: MqttConfig = toml::from_str("require_auth = true").unwrap();
        assert!(strict.auth_required());
        let v6: MqttConfig = toml::from_str(r#"listen = "[::1]:0""#).unwrap();
        assert!(!v6.auth_required());
    }

    #[test]
    fn unknown_keys_and_bad_limits_are_refused() {
        assert!(toml::from_str::<MqttConfig>("listne = \"127.0.0.1:1\"").is_err());
        assert!(toml::from_str::<MqttConfig>("[router]\nsegment = 1").is_err());
        let zero: MqttConfig = toml::from_str("max_connections = 0").unwrap();
        assert!(matches!(
            zero.validate(),
            Err(ConfigError::Zero {
                key: "max_connections"
            })
        ));
        let big: MqttConfig =
            toml::from_str("max_message_bytes = 1000\nmax_packet_bytes = 999").unwrap();
        assert!(matches!(
            big.validate(),
            Err(ConfigError::MessageOverPacket { .. })
        ));
    }
}
