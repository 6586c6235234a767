//! Brume's device gateways: each speaks one device protocol and knows nothing
//! of WAMP. The hub turns what they report into thing state and events.
//!
//! - [`link`]: what a gateway gets from the hub ([`GatewayIo`]: events out, commands in,
//!   device credentials).
//! - [`coap`]: the CoAP protocol engine (server and client endpoints, sans
//!   I/O), its tokio drivers, and the CoAP gateway built on them ([`coap::gateway`]).
//! - [`raw`]: UDP, TCP and serial devices whose framing and codec come from their thing type's
//!   `[bindings.frame]`.
//! - [`modbus`]: Modbus TCP and RTU devices polled as their thing type's `[bindings.modbus]` maps them.
//! - [`mqtt`]: the MQTT gateway: an embedded broker (rumqttd's router behind our own connection
//!   handling), device conventions, `[bindings.mqtt]`, per-device ACL and the raw bridge.
//! - `outbox`: the events of one turn of a raw or Modbus gateway's loop, sent to the hub in
//!   batches of at most 32 (fire-and-forget: no barrier).
//! - `udp`: which socket errors the UDP listeners (CoAP, raw UDP) treat as per-datagram.

// Tests may `expect`: a failed expectation is a failed test.
#![cfg_attr(test, allow(clippy::expect_used, clippy::unwrap_used))]

pub mod coap;
pub mod link;
pub mod modbus;
pub mod mqtt;
mod outbox;
pub mod raw;
mod udp;

pub use link::{
    CredentialCheck, DeviceCredentials, DirectoryListener, Following, GatewayIo, ObserverCheck,
    ObserverLogins, StaticCredentials, StaticDirectory, StaticThings, ThingDirectory, ThingRead,
    ThingReader, ThingView,
};
