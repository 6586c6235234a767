//! Device firmware in software, for demos, tests and load.
//!
//! Module map:
//! - [`device`]: [`SimDevice`], one simulated device of a built-in thing type (temperature
//!   sensor, thermostat, relay, alarm) as plain logic: commands and time in, device events out,
//!   deterministic from a seed, with silent and offline modes.
//! - [`gateway`]: [`SimGateway`], simulated devices attached to a hub in-process through the
//!   things service's gateway link, driven step by step by a [`SimHandle`].
//! - [`bench`]: the `bench-things` load run: a hub in-process, N devices reporting as fast as
//!   they can, one WAMP subscriber counting state events.
//! - [`load`]: load generators that measure a running hub (and, side by side, its peers).
//! - [`mqtt`]: simulated MQTT devices following Brume's conventions, singly or as a fleet.
//! - [`coap`]: simulated CoAP devices (pushing, and CoAP servers) and the CoAP load generator.
//! - [`raw`]: raw UDP, TCP and serial devices that follow the frame bindings of their thing types.
//! - [`modbus`]: Modbus energy meters and motor drives on one bus, served over Modbus TCP and
//!   Modbus RTU on a pseudo-terminal, with the controls tests need (dead units, unplugging).
//! - [`progress`]: once-a-second progress lines on stderr for the long-running commands.
//!
//! Protocol simulators (MQTT, CoAP, UDP/TCP, serial and Modbus devices) live beside these and talk
//! to the hub's gateways over real sockets instead of the in-process link.

pub mod bench;
pub mod coap;
pub mod device;
pub mod gateway;
pub mod load;
pub mod modbus;
pub mod mqtt;
pub mod progress;
pub mod raw;

pub use device::{Kind, Mode, SimDevice};
pub use gateway::{SimError, SimGateway, SimHandle, SimOptions};
