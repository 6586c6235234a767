//! Simulated device firmware and the load tools (`brume-sim`).
//!
//! - [`load`]: load generators that measure a running hub (and, side by side, its peers).
//! - [`raw`]: raw UDP, TCP and serial devices that follow the frame bindings of their thing types.

pub mod load;
pub mod raw;
