//! Simulated device firmware and the load tools (`brume-sim`).
//!
//! - [`load`]: load generators that measure a running hub (and, side by side, its peers).
//! - [`coap`]: simulated CoAP devices (pushing, and CoAP servers) and the CoAP load generator.

pub mod coap;
pub mod load;
