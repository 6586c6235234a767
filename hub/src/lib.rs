//! Brume's hub: the WAMP router and everything that attaches to it.
//!
//! - [`wamp`]: the protocol as data (values, messages, serializers, URIs, ids).
//! - [`router`]: realms, sessions, broker and dealer.
//! - [`transport`]: RawSocket and WebSocket framing, listeners and the per-connection task.
//! - [`client`]: a WAMP client used for in-process sessions, the uplink and load tools.
//! - [`config`]: the typed configuration, its embedded default and its validation.
//! - [`uplink`]: the hub's WAMP client session to a cloud router, with a durable queue.
//! - [`server`]: `run(config, shutdown)`, which starts listeners and services and drains them.

pub mod client;
pub mod config;
pub mod router;
pub mod server;
pub mod transport;
pub mod uplink;
pub mod wamp;
