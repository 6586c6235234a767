//! Modbus devices described by data: a thing type's `[bindings.modbus]` table maps properties to
//! coils, discrete inputs and registers, and actions to register writes, so that a new Modbus
//! device needs no code.
//!
//! | module | holds |
//! | --- | --- |
//! | `config` | [`ModbusBinding`], the `[bindings.modbus]` table as serde types, and [`ModbusConfigError`] |
//! | `codec` | values ↔ registers and bits: types, byte and word orders, bit fields, scaling; [`Write`] and [`ModbusValueError`] |
//! | `plan` | [`PollGroup`] and [`ReadRequest`]: neighbouring properties merged into few reads |
//! | `model` | [`ModbusModel`], the binding checked against its thing type: `decode`, `encode_set`, `encode_action` |
//!
//! Use: build a [`ModbusModel`] once per thing type. Every [`PollGroup::interval`], send each of
//! the group's [`ReadRequest`]s and hand the answer to [`ModbusModel::decode`]; values of
//! [`ModbusModel::is_info`] properties go to the thing's info, the others to its reported state. A
//! desired value becomes [`ModbusModel::encode_set`]'s writes, confirmed by reading
//! [`ModbusModel::read_back`]; an action becomes [`ModbusModel::encode_action`]'s writes. Nothing
//! here does I/O, and decoding never panics, whatever a device answers.
//!
//! # Keys at a glance
//! ```toml
//! [bindings.modbus]
//! byte_order = "big"      # within one register: "big" (AB, the Modbus default) | "little" (BA)
//! word_order = "big"      # 32/64-bit values: "big" (high register first) | "little"
//! max_registers = 125     # cap on one merged read of input/holding registers, 1..=125
//! max_bits = 2000         # cap on one merged read of coils/discrete inputs, 1..=2000
//! max_gap = 0             # unused registers (or bits) a merged read may span, 0..=125
//! poll_ms = 5000          # interval of the "default" group, 100..=86_400_000
//!
//! [bindings.modbus.groups]          # optional poll groups besides "default"
//! fast = { poll_ms = 1000 }
//!
//! [bindings.modbus.properties]      # a property of the type (state or info) -> where it is
//! voltage = { table = "input", address = 0, type = "f32", group = "fast" }
//! # table:   "coil" | "discrete" | "input" | "holding"
//! # address: PDU address 0..=65535, 0-based as on the wire (no 40001 notation)
//! # type:    bool | u16 | i16 | u32 | i32 | f32 | u64 | i64 | f64 | string
//! #          (1, 1, 1, 2, 2, 2, 4, 4, 4 registers; a string `count` = 1..=125 registers)
//! # bit = 0..=15          a bool in an input or holding register (coils/discretes are bools)
//! # bits = "4..8"         an unsigned bit field of a u16/i16 (half-open, 0 <= a < b <= 16)
//! # scale = 0.1, offset = -40.0   value = raw * scale + offset (a JSON number)
//! # byte_order, word_order        override the binding's
//! # group = "fast"        default "default"
//! serial = { table = "holding", address = 200, type = "string", count = 8 }
//! ready  = { table = "holding", address = 50, type = "bool", bit = 3 }
//! mode   = { table = "holding", address = 50, type = "u16", bits = "4..8" }
//!
//! [bindings.modbus.actions.reset_energy]   # an action of the type (no output) -> writes, in order
//! writes = [
//!   { table = "coil", address = 10, type = "bool", value = true },            # a constant
//!   { table = "holding", address = 300, type = "u16", input = "/seconds" },   # from the input
//! ]
//! ```
//!
//! Rules checked when the model is built, each error naming its key relative to
//! `[bindings.modbus]` (`properties.voltage.type`):
//! - every table denies unknown keys; `count` is for strings, `bit` for bools in registers,
//!   `bits` for u16/i16, `scale`/`offset` for numbers, `byte_order` for register tables,
//!   `word_order` for 32/64-bit types;
//! - the value fits the address space (`address` + registers <= 65536) and one read (the caps);
//! - the schema fits: bool ↔ boolean, string ↔ string, an unscaled integer (or bit field) ↔
//!   integer or number, anything scaled and f32/f64 ↔ number;
//! - a property writable in the type is on a coil or holding register (and a string written is at
//!   most 123 registers, what one write carries); action writes go to coils and holding registers;
//! - properties of one table do not share registers or bits, except bits and bit fields of one
//!   register with distinct bits;
//! - an action has no output schema; each write has exactly one of `value` (checked to encode) or
//!   `input` (a JSON pointer the input schema describes, of a fitting type).
//!
//! Values read: integers without scale or offset are JSON integers (64-bit ones included, beyond
//! 2^53); scaled values are rounded to the decimals the exact result can have (those of `scale`
//! plus those of the raw value, or those of `offset` if more: 2301 × 0.1 reads 230.1); f32 reads as
//! the f64 of its shortest decimal form (21.1f32 reads 21.1), f64 bit for bit; NaN and infinities
//! are errors for that property. Strings lose trailing NULs and spaces; text that is not UTF-8 is
//! an error. Writes invert this: the scaling undone, rounded to the nearest raw integer and
//! range-checked; strings padded with NULs; bits and bit fields of registers by a mask write
//! (FC 22), so the register's other bits stay as they are.
//!
//! ```
//! use device_models::ThingType;
//! use device_models::modbus::{ModbusModel, ReadData, Write};
//! use serde_json::json;
//!
//! let ty = ThingType::from_toml(r#"
//!     id = "meter"
//!     title = "Meter"
//!     version = "1"
//!     [properties.voltage]
//!     type = "number"
//!     [properties.limit]
//!     type = "integer"
//!     writable = true
//!     [bindings.modbus.properties]
//!     voltage = { table = "input", address = 0, type = "u16", scale = 0.1 }
//!     limit = { table = "holding", address = 10, type = "u16" }
//! "#, "meter.toml")?;
//! let model = ModbusModel::new(&ty)?;
//! let read = &model.groups()[0].reads[0];
//! assert_eq!((read.address, read.count), (0, 1));
//! let values = model.decode(read, ReadData::Registers(&[2301]));
//! assert_eq!(values[0].0, "voltage");
//! assert_eq!(values[0].1, Ok(json!(230.1)));
//! assert_eq!(
//!     model.encode_set("limit", &json!(16))?,
//!     [Write::Register { address: 10, value: 16 }]
//! );
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod codec;
mod config;
mod model;
mod plan;

#[cfg(test)]
mod tests;

pub use codec::{ModbusValueError, Write, apply_mask};
pub use config::{
    ActionMapping, DEFAULT_GROUP, DEFAULT_MAX_BITS, DEFAULT_MAX_REGISTERS, DEFAULT_POLL_MS,
    GroupConfig, MAX_GAP, MAX_POLL_MS, MAX_READ_BITS, MAX_READ_REGISTERS, MAX_WRITE_REGISTERS,
    MIN_POLL_MS, ModbusBinding, ModbusConfigError, ModbusConfigProblem, Order, PropertyMapping,
    Table, ValueType, WriteMapping,
};
pub use model::ModbusModel;
pub use plan::{PollGroup, ReadData, ReadRequest};

/// The key of the binding in a thing type's `bindings` (`[bindings.modbus]`).
pub const MODBUS_BINDING: &str = "modbus";
