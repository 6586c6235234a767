//! Load generators: drive a running system with the same Rust generator and report throughput and
//! latency. Never run as tests: speed is measured here, not asserted.
//!
//! - [`peer`]: a lean WAMP peer over RawSocket or WebSocket.
//! - [`wamp`]: pub/sub and RPC scenarios.
//! - [`target`]: starting the system under test (the `brume` binary) on free ports.
//! - [`crossbar`]: starting Crossbar.io the same way, for side-by-side figures.
//! - [`relay`], [`relay_process`]: a frame relay with no routing: the machine's limit.
//! - [`mqtt`]: MQTT telemetry and idle-connection memory, Brume against mosquitto.
//! - [`coap`]: CoAP confirmable requests/s and latency, Brume's gateway (through the registry and
//!   the router) against libcoap's example server.
//! - [`modbus`]: Modbus TCP registers/s and stamp-to-value latency, Brume's gateway against
//!   pymodbus, on simulated bench devices.
//! - [`uplink`]: how fast the uplink replays its queue into Crossbar.io after an outage.
//! - [`cpu`]: CPU time of processes, to say which side limited a figure.
//! - [`scrape`]: `/metrics` scraped once a second during a measurement (`bench --scrape-metrics`).
//! - [`soak`]: thousands of MQTT thing devices reporting for minutes, the hub's memory sampled
//!   and every report accounted for (`soak`).
//! - [`bench`]: the side-by-side benchmark; [`report`]: its markdown tables, medians and losses.

pub mod bench;
pub mod coap;
pub mod cpu;
pub mod crossbar;
pub mod modbus;
pub mod mqtt;
pub mod peer;
pub mod relay;
pub mod relay_process;
pub mod report;
pub mod scrape;
pub mod soak;
pub mod target;
pub mod uplink;
pub mod wamp;

/// How long subscribers get, once a measurement ends and publishing stops, to receive what is
/// still on its way; what has not arrived by then counts as lost. Ends early once everything
/// has arrived (a few milliseconds when nothing is lost).
pub const DRAIN: std::time::Duration = std::time::Duration::from_secs(5);
