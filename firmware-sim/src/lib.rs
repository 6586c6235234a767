//! Simulated device firmware and the load tools (`brume-sim`).
//!
//! - [`load`]: load generators that measure a running hub (and, side by side, its peers).
//! - [`mqtt`]: simulated MQTT devices following Brume's conventions, singly or as a fleet.

pub mod load;
pub mod mqtt;
