//! The MQTT gateway: an embedded MQTT broker (3.1.1 and 5 on one port; QoS 0/1/2, retained
//! messages, last wills, persistent sessions) whose clients are Brume's devices.
//!
//! Start it with [`MqttGateway::start`]`(`[`MqttConfig`]`, `[`GatewayIo`](crate::GatewayIo)`)`;
//! the returned [`MqttHandle`] registers things' types ([`MqttHandle::register`]), publishes the
//! WAMP side of the raw bridge ([`MqttHandle::publish_raw`]), reads counters and shuts down.
//!
//! # What devices do (DESIGN.md §3)
//! | topic | direction | payload | becomes |
//! | --- | --- | --- | --- |
//! | `things/<id>/state` | device → hub | JSON object of property values | `Reported` |
//! | `things/<id>/events/<name>` | device → hub | JSON (empty: `null`) | `Event` |
//! | `things/<id>/info` | device → hub | JSON object of info values | `Info` |
//! | `things/<id>/status` | device → hub, retained, the last will says `offline` | `online` / `offline`, or `{"status": "online", "type": "<type>", "info": {..}}` | `Hello` (first contact) / `Online` / `Offline` |
//! | `things/<id>/replies` | device → hub | `{"correlation": "..", "result": ..}` or `{.., "error": ".."}` | `ActionReply` |
//! | `things/<id>/desired` | hub → device, retained, QoS 1 | JSON object of desired values; cleared (empty retained message) once the device reported them all | from `SetDesired` |
//! | `things/<id>/actions/<name>` | hub → device, QoS 1 | `{"correlation", "input", "deadline_ms"}` | from `InvokeAction` |
//! | anything outside `things/` and bound topics | both | bytes | `Raw { source: "mqtt:<topic>" }` / [`MqttHandle::publish_raw`] |
//!
//! Firmware with its own topics is modelled by a type's `[bindings.mqtt]` (see [`binding`];
//! `device-models/types/tasmota_plug.toml` is the shipped example). A message the gateway cannot
//! read (not JSON, not an object, over `max_message_bytes`, an undefined topic) is rejected here,
//! counted ([`MqttStats::rejected_payloads`], exact) and logged (one WARN line per cause every
//! 10 s at most, with the number held back, see [`log_limit`]). Values are checked against the
//! thing's type in one place, the hub's things service, for every gateway: a connection sends
//! what one read brought as one batch, whose barrier covers its QoS 1 and 2 messages, and the hub
//! marks each covered message whose report, info or event it refused, so that message's wait
//! says "rejected". Either way MQTT subscribers still get the message, an MQTT 5 device
//! publishing it at QoS 1 gets its PUBACK with reason 0x99 (payload format invalid) or 0x97
//! (over `max_message_bytes`; 0x95 is a DISCONNECT-only code), and the device stays
//! connected. A thing that connects, talks and vanishes without a will still ends `Offline`.
//!
//! # Authentication and ACL
//! The MQTT username is the thing id and the password its secret, checked through
//! [`DeviceCredentials`](crate::DeviceCredentials); the client id is free. Without a login (only
//! when `require_auth` is off, the default on loopback), a client whose client id is a thing id
//! that holds no secret speaks for that thing; any other anonymous client has the raw namespace
//! only. The rules (in [`acl`]) are enforced in the broker's connection tasks, before the router
//! sees a packet: a client may publish and subscribe under `things/<its id>/`, on its own binding
//! topics, and in the raw namespace; never on another thing's topics, `$` topics, or with a
//! wildcard where thing ids or device names go. Exception: on a listener that requires no login,
//! a client without one may subscribe to any filter but `$` topics (`mosquitto_sub -t '#'`), as
//! anyone could read everything there anyway ([`acl::may_observe`]). What a client sees: a refused login gets a
//! CONNACK with "bad user name or password" (or "not authorized" when a login is missing), a
//! refused PUBLISH is acknowledged but dropped (MQTT 5: reason 0x87), a refused SUBSCRIBE gets
//! failure codes for all its filters, a will on a foreign topic refuses the CONNECT. The device
//! stays connected in every case.
//!
//! # rumqttd 0.20 and what is worked around here
//! rumqttd provides the router (matching, retained messages, QoS state machines, persistent
//! sessions) on its own OS thread. Its connection handling (`Server`) is not used:
//! - **No per-topic ACL hook and no publisher identity on forwarded messages**, so the gateway
//!   could not even tell who published `things/x/state`. Our own listener and connection tasks
//!   (`broker::connection`) decode with rumqttd's public codecs, apply the ACL, and attach each
//!   client to the router through a public local link (`LinkBuilder`), as rumqttd's own remote
//!   links do.
//! - **No CONNACK on a failed login** (the socket was just closed, so clients retried hard): the
//!   connection task answers with the right return code.
//! - **No connect or disconnect events**: the connection task knows both, so presence is
//!   reliable (a lost device ends `Offline` and its retained `things/<id>/status` is set to
//!   `offline` if it had announced `online`), and the last will is published by the connection
//!   task (QoS 2 wills go out at QoS 1). MQTT 5 will delay is not applied.
//! - **Local links publish at QoS 0 without retain only** (`Publish.qos` is private): the
//!   gateway builds QoS 1 and retained publishes through `Publish::deserialize`
//!   (`broker::hub_link`), so desired state is retained and commands reach persistent sessions.
//! - **`Unschedule`**: the router stops serving a link about 200 notifications behind until it
//!   calls `wake`; every link here does.
//! - **`RouterConfig::default()` refuses every connection** and keeps up to 1 GB per filter: all
//!   limits come from [`RouterLimits`].
//! - **Panicking codecs**: the v5 decoder panics on packet types a client never sends and the v4
//!   encoder on v5 properties; those packets are refused before decoding and properties are
//!   stripped for 3.1.1 clients, and a panic in a connection task is caught and cleaned up.
//! - **Sessions do not expire by themselves, and past client ids are never forgotten** (the
//!   "graveyard"): MQTT 5 session expiry is kept by the connection tasks (`broker::expiry`),
//!   which purge a router session when its interval is over. A thing's session is keyed by its
//!   thing id whatever its client id, and anonymous clean sessions get recycled router ids, so
//!   the map grows with the number of things and of distinct persistent client ids only.
//!   Persistent sessions and retained messages live in memory; a restart loses them (the hub
//!   republishes `things/<id>/desired` from its database once the device is heard from again).
//! - **The router delivers at the subscription's QoS and ignores MQTT 5 subscription options**
//!   ("no local", retain as published, retain handling): every routed PUBLISH carries an
//!   internal mark of its QoS, retain flag and origin, and the connection tasks apply the
//!   lower QoS and the options on the way out (`broker::envelope`). Will delay and the
//!   client's Maximum Packet Size are applied there too. Subscription identifiers are passed
//!   on, but a message matching two filters of a client comes once per filter.
//! - **Topic aliases** (MQTT 5) are not offered (CONNACK says 0), so every PUBLISH names its
//!   topic for the ACL.
//! - **No stop for the router thread**: shutdown closes every connection and the listener; the
//!   idle router thread stays parked until the process exits.
//! - **The router channel blocks**: `LinkTx::send` uses a blocking channel send, so a saturated
//!   router (1000 queued events) briefly blocks the sending task's worker thread.
//! - TLS and WebSocket listeners are not offered (rumqttd's TLS needs its own listener).
//!
//! # Modules
//! | module | holds |
//! | --- | --- |
//! | [`config`] | [`MqttConfig`], [`RouterLimits`] |
//! | `broker` | the embedded broker: rumqttd's router behind our listener and connection tasks, the `Hooks` it calls |
//! | `gateway` | [`MqttGateway`], [`MqttHandle`], the hooks' implementation and the command loop |
//! | [`device`] | per-connection device state and the translation of a PUBLISH into device events |
//! | [`binding`] | `[bindings.mqtt]`: parsing, checks, decoding and command encoding |
//! | [`acl`] | who may publish and subscribe where |
//! | [`topics`] | convention topics, topic templates, filter matching |
//! | [`directory`] | registered things: type, binding, device name |
//! | [`pending`] | actions waiting for replies, bounded |
//! | [`stats`] | counters, [`MqttStats`] |
//! | [`error`] | error enums |
//! | [`log_limit`] | one log line per cause and interval for per-message warnings |
//! | [`codec`] | MQTT 3.1.1 and 5 packets on a connection (rumqttd's codecs, guarded) |

pub mod acl;
pub mod binding;
mod broker;
pub use broker::codec;
pub mod config;
pub mod device;
pub mod directory;
pub mod error;
mod gateway;
pub mod log_limit;
pub mod pending;
pub mod stats;
pub mod topics;

pub use binding::MqttBinding;
pub use config::{MqttConfig, RouterLimits};
pub use error::{
    BindingError, ConfigError, MqttError, PublishError, RegisterError, Rejection, TemplateError,
};
pub use gateway::{MqttGateway, MqttHandle};
pub use stats::MqttStats;
