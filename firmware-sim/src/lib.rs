//! Simulated device firmware and the load tools (`brume-sim`).
//!
//! - [`load`]: load generators that measure a running hub (and, side by side, its peers).

pub mod load;
