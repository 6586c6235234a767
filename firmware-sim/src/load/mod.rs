//! Load generators: drive a running system with the same Rust generator and report throughput and
//! latency. Never run as tests: speed is measured here, not asserted.
//!
//! - [`peer`]: a lean WAMP peer over RawSocket or WebSocket.
//! - [`wamp`]: pub/sub and RPC scenarios.
//! - [`target`]: starting the system under test (the `brume` binary) on free ports.

pub mod peer;
pub mod target;
pub mod wamp;
