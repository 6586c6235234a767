//! Brume's hub: the WAMP router and everything that attaches to it.
//!
//! - [`wamp`]: the protocol as data (values, messages, serializers, URIs, ids).
//! - [`router`]: realms, sessions, broker and dealer.
//! - [`transport`]: RawSocket and WebSocket framing, listeners and the per-connection task.
//! - [`client`]: a WAMP client used for in-process sessions, the uplink and load tools.
//! - [`device_gateways`]: the MQTT, CoAP and raw device gateways as the hub runs them, and the
//!   MQTT ↔ WAMP bridge.
//! - [`config`]: the typed configuration, its embedded default and its validation.
//! - [`things`]: the things service: registry (SQLite), desired vs reported state, actions, and
//!   the gateway attachment API.
//! - [`uplink`]: the hub's WAMP client session to a cloud router, with a durable queue.
//! - [`server`]: `run(config, shutdown)`, which starts listeners and services and drains them.

pub mod client;
pub mod config;
pub mod device_gateways;
pub mod disk;
pub mod http;
pub mod memory;
pub mod router;
pub mod server;
pub mod supervisor;
pub mod things;
pub mod transport;
pub mod uplink;
pub mod wamp;
