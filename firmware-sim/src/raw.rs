//! Raw device firmware in software: devices that speak the byte protocols of the thing types in
//! `types/raw/` (which follow device-models' frame binding examples), for demos and tests of the
//! hub's raw UDP, TCP and serial listeners.
//!
//! | module | holds |
//! | --- | --- |
//! | [`types`] | the thing types of these devices (built in, or written out for a hub's type directory) and their codecs |
//! | [`beacon`] | a UDP sensor beacon: binary datagrams with an XOR-8, acknowledges `identify` |
//! | [`thermostat`] | a TCP thermostat: length-prefixed JSON, answers `set` and `calibrate` by sequence number |
//! | [`meter`] | energy meters on a serial bus: CRC-checked key=value lines, answers polls and sets on the next line |
//! | [`pty`] | a pseudo-terminal "serial port" at a path of our choosing, which can be unplugged and plugged back |
//! | [`cli`] | `brume-sim raw ...` |
//!
//! Devices encode what they report with the gateway's own codec (`FrameCodec::encode_report`), and
//! parse the commands they receive by hand, as firmware would.

pub mod beacon;
pub mod cli;
pub mod meter;
pub mod pty;
pub mod thermostat;
pub mod types;
