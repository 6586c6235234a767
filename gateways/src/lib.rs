//! Brume's device gateways: each speaks one device protocol and knows nothing
//! of WAMP. The hub turns what they report into thing state and events.
//!
//! - [`link`]: what a gateway gets from the hub ([`GatewayIo`]: events out, commands in,
//!   device credentials).
//! - [`coap`]: the CoAP protocol engine (server and client endpoints, sans
//!   I/O), its tokio drivers, and the CoAP gateway built on them ([`coap::gateway`]).

pub mod coap;
pub mod link;

pub use link::{CredentialCheck, DeviceCredentials, GatewayIo, StaticCredentials};
