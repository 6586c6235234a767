//! Brume's shared vocabulary of devices, used by the gateways and the hub alike.
//!
//! Module map:
//! - [`thing_type`]: [`ThingType`], a kind of device (properties, actions, events, raw protocol
//!   bindings), defined by a TOML data file.
//! - [`schema`]: [`DataSchema`], the JSON Schema subset that describes values, how a schema
//!   definition is validated, and how a value is checked against it.
//! - [`load`]: parsing a thing type from TOML and [`LoadError`], which names file, line and key.
//! - [`catalog`]: [`TypeCatalog`], the built-in types (`types/*.toml`, compiled in) plus the user's
//!   type directory.
//! - [`check`]: checks of reported, desired and info values, action inputs and outputs and event
//!   payloads against a thing's type, and [`CheckError`].
//! - [`thing`]: thing instances: [`ThingId`], [`Thing`], [`ThingState`] and its merge rules.
//! - [`gateway`]: the gateway interface, [`DeviceEvent`] (device → hub) and [`DeviceCommand`]
//!   (hub → device).
//! - [`log_limit`]: [`LogLimiter`], warnings rate-limited per window, the rest counted.
//! - [`clock`]: [`now_ms`] and [`rfc3339_from_ms`], the one wall clock and date format.
//! - [`td`]: export of a W3C WoT Thing Description (TD 1.1) per thing.
//! - [`names`]: the naming rule for type ids and property, action, event and binding names.
//! - [`key_path`]: key paths used by errors to say where a problem is.
//! - [`value`]: JSON value helpers (number-aware equality, short renderings).
//! - [`uris`]: the WAMP URIs of the things API (procedures, topics, errors).
//! - [`frames`]: frame codecs for raw UDP/TCP/serial devices: framings, checksums, payload
//!   layouts, identification and command templates, declared in a type's `[bindings.frame]`.

// Tests may `expect`: a failed expectation is a failed test. The library itself is linted without
// this allowance by the non-test build.
#![cfg_attr(test, allow(clippy::expect_used, clippy::unwrap_used))]

pub mod catalog;
pub mod check;
pub mod clock;
pub mod fault;
pub mod frames;
pub mod gateway;
pub mod key_path;
pub mod load;
pub mod log_limit;
pub mod modbus;
pub mod names;
pub mod pressure;
pub mod schema;
pub mod td;
pub mod thing;
pub mod thing_type;
pub mod uris;
pub mod value;

pub use catalog::{TypeCatalog, TypeOrigin};
pub use check::{CheckError, CheckRule, Target};
pub use clock::{now_ms, rfc3339_from_ms};
pub use gateway::{
    Commit, CommitError, CommitGroup, CommitWait, DeviceCommand, DeviceEvent, EventBatch,
};
pub use key_path::KeyPath;
pub use load::LoadError;
pub use log_limit::{LogLimiter, LogPermit};
pub use pressure::MemoryPressure;
pub use schema::{DataSchema, DefinitionError, DefinitionRule, SchemaType, ValueError, Violation};
pub use td::{AffordanceSelector, ExtraForm, TdContext, TdSecurity, thing_description};
pub use thing::{ReportOutcome, Stamped, Thing, ThingId, ThingIdError, ThingState};
pub use thing_type::{Action, Event, Property, PropertyKind, ThingType};
