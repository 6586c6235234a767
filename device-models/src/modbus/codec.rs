//! Values ↔ registers and bits: [`Codec`], the compiled location of one value, [`Write`], the
//! requests that put a value on a device, and [`ModbusValueError`].
//!
//! A register is the `u16` a Modbus read returns (the two bytes as they arrived, first byte high).
//! `byte_order = "little"` swaps the two bytes of every register before the value is read from it;
//! `word_order = "little"` takes the registers of a 32- or 64-bit value low register first. Numbers
//! are `raw * scale + offset`, rounded to the decimals that the exact result can have, so that
//! 2301 × 0.1 reads 230.1 and not 230.10000000000002; f32 values read as the f64 of their shortest
//! decimal form (21.1f32 reads 21.1), f64 values bit for bit. Writing inverts the scaling, rounds to
//! the nearest raw integer and refuses what does not fit.

use serde_json::{Number, Value};
use thiserror::Error;

use crate::key_path::KeyPath;
use crate::schema::SchemaType;
use crate::value::render;

use super::config::{
    Location, MAX_READ_REGISTERS, ModbusConfigError, ModbusConfigProblem, Order, Table, ValueType,
};

/// One request that writes (part of) a value to a device.
#[derive(Clone, Debug, PartialEq)]
pub enum Write {
    /// Write single coil (FC 5).
    Coil {
        /// The coil's address.
        address: u16,
        /// On or off.
        value: bool,
    },
    /// Write single register (FC 6).
    Register {
        /// The register's address.
        address: u16,
        /// The register as sent (first byte high).
        value: u16,
    },
    /// Write multiple registers (FC 16).
    Registers {
        /// The first register's address.
        address: u16,
        /// The registers as sent, in address order.
        values: Vec<u16>,
    },
    /// Mask write register (FC 22), which changes some bits of a register and keeps the others:
    /// the register becomes `(current & and_mask) | (or_mask & !and_mask)`, see [`apply_mask`].
    Mask {
        /// The register's address.
        address: u16,
        /// Bits kept from the current value.
        and_mask: u16,
        /// Bits set where `and_mask` is clear.
        or_mask: u16,
    },
}

impl Write {
    /// The first address the write touches.
    pub fn address(&self) -> u16 {
        match self {
            Self::Coil { address, .. }
            | Self::Register { address, .. }
            | Self::Registers { address, .. }
            | Self::Mask { address, .. } => *address,
        }
    }
}

/// What a mask write register request (FC 22) makes of a register's current value: the bits set
/// in `and_mask` are kept, the others come from `or_mask`.
pub fn apply_mask(current: u16, and_mask: u16, or_mask: u16) -> u16 {
    (current & and_mask) | (or_mask & !and_mask)
}

/// Why a value could not be read from registers or written to them, or a request not served.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum ModbusValueError {
    /// A JSON value of the wrong kind.
    #[error("expected {expected}, got {found}")]
    WrongType {
        /// What the mapping needs (`a boolean`, `a number`, `a string`).
        expected: &'static str,
        /// The value given, shortened.
        found: String,
    },
    /// A number that does not fit the type once unscaled and rounded.
    #[error("{value} is out of range ({min}..={max})")]
    OutOfRange {
        /// The value given.
        value: String,
        /// Smallest value that fits.
        min: String,
        /// Largest value that fits.
        max: String,
    },
    /// NaN or an infinity, read from the device or produced by the scaling.
    #[error("not a finite number")]
    NotFinite,
    /// A string longer than its registers hold.
    #[error("string of {len} bytes does not fit {max} bytes")]
    StringTooLong {
        /// Its length in UTF-8 bytes.
        len: usize,
        /// Bytes its registers hold.
        max: usize,
    },
    /// Registers of a string that hold no UTF-8 text.
    #[error("the registers do not hold UTF-8 text")]
    NotUtf8,
    /// A read that returned fewer registers or bits than the request covers.
    #[error("the read returned {got} values, {needed} are needed")]
    ShortData {
        /// Values needed to reach the end of this property.
        needed: usize,
        /// Values returned.
        got: usize,
    },
    /// Registers handed in for a read of bits, or bits for a read of registers.
    #[error("a read of the {table} table returns {expected}")]
    WrongData {
        /// The table read.
        table: Table,
        /// `bits` or `registers`.
        expected: &'static str,
    },
    /// A property the binding does not map.
    #[error("no Modbus mapping for property `{0}`")]
    UnknownProperty(String),
    /// A property that is not writable in the type.
    #[error("property `{0}` is not writable")]
    ReadOnly(String),
    /// An action the binding does not map.
    #[error("no Modbus mapping for action `{0}`")]
    UnknownAction(String),
    /// An action input without the value a write takes from it.
    #[error("the input has no value at `{pointer}`")]
    MissingInput {
        /// The write's JSON pointer.
        pointer: String,
    },
    /// An action input whose value at a pointer cannot be written.
    #[error("input at `{pointer}`: {error}")]
    Input {
        /// The write's JSON pointer.
        pointer: String,
        /// Why the value cannot be written.
        error: Box<ModbusValueError>,
    },
}

/// The compiled location of one value: its shape in registers or bits, orders and scaling.
#[derive(Debug, Clone)]
pub(crate) struct Codec {
    ty: ValueType,
    shape: Shape,
    /// Registers or bits taken.
    len: u16,
    byte_order: Order,
    word_order: Order,
    scaling: Option<Scaling>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    /// A coil or discrete input.
    Bit,
    /// One bit of a register, 0 being the least significant.
    RegisterBit(u32),
    /// Bits `lo..lo + width` of a register, unsigned.
    Field { lo: u32, width: u32 },
    /// An integer or float of 1, 2 or 4 registers.
    Number,
    /// Text, two bytes per register.
    Text,
}

#[derive(Debug, Clone, Copy)]
struct Scaling {
    scale: f64,
    offset: f64,
    scale_decimals: usize,
    offset_decimals: usize,
}

/// A raw value as read from registers, before scaling.
#[derive(Debug, Clone, Copy)]
enum Raw {
    Unsigned(u64),
    Signed(i64),
    Float(f64),
}

/// Digits after the decimal point in the shortest form of a finite `x` (Rust never writes an
/// exponent for f64, so `1e-7` is `0.0000001`, 7 decimals).
fn decimals(x: f64) -> usize {
    let text = x.to_string();
    text.split_once('.')
        .map_or(0, |(_, fraction)| fraction.len())
}

/// `x` rounded to `places` decimals, exactly as its decimal expansion rounds; `-0` becomes `0`.
fn round_to(x: f64, places: usize) -> f64 {
    let rounded = format!("{x:.places$}").parse::<f64>().unwrap_or(x);
    if rounded == 0.0 { 0.0 } else { rounded }
}

/// The f64 whose shortest decimal form is that of `x`: 21.1f32 gives 21.1, not 21.100000381469727.
fn widen_f32(x: f32) -> f64 {
    if x.is_finite() {
        x.to_string().parse::<f64>().unwrap_or(f64::from(x))
    } else {
        f64::from(x)
    }
}

fn mask(width: u32) -> u64 {
    if width >= 64 {
        u64::MAX
    } else {
        (1u64 << width) - 1
    }
}

fn in_byte_order(register: u16, order: Order) -> u16 {
    match order {
        Order::Big => register,
        Order::Little => register.swap_bytes(),
    }
}

/// The value held by `registers` (big-endian once bytes and words are put in order).
fn gather(registers: &[u16], byte_order: Order, word_order: Order) -> u64 {
    let fold =
        |acc: u64, register: &u16| (acc << 16) | u64::from(in_byte_order(*register, byte_order));
    match word_order {
        Order::Big => registers.iter().fold(0, fold),
        Order::Little => registers.iter().rev().fold(0, fold),
    }
}

/// The `count` registers that hold the low `16 * count` bits of `value`: the inverse of [`gather`].
fn scatter(value: u64, count: u16, byte_order: Order, word_order: Order) -> Vec<u16> {
    let count = u32::from(count);
    let mut registers: Vec<u16> = (0..count)
        .map(|i| {
            let shift = 16 * (count - 1 - i);
            let word = value.checked_shr(shift).unwrap_or(0) as u16;
            in_byte_order(word, byte_order)
        })
        .collect();
    if word_order == Order::Little {
        registers.reverse();
    }
    registers
}

fn wrong_type(expected: &'static str, found: &Value) -> ModbusValueError {
    ModbusValueError::WrongType {
        expected,
        found: render(found),
    }
}

/// Reads `"a..b"` (half-open, 0 <= a < b <= 16) as `(a, b)`.
fn parse_bits(text: &str) -> Option<(u32, u32)> {
    let (lo, hi) = text.split_once("..")?;
    let lo = lo.trim().parse::<u32>().ok()?;
    let hi = hi.trim().parse::<u32>().ok()?;
    (lo < hi && hi <= 16).then_some((lo, hi))
}

impl Codec {
    /// Checks one location (of a property or an action write) and compiles it. `orders` are the
    /// binding's byte and word orders; `at` is the mapping's key path, for errors.
    pub(crate) fn compile(
        location: &Location<'_>,
        orders: (Order, Order),
        at: &KeyPath,
    ) -> Result<Self, ModbusConfigError> {
        let fail = |key: &str, problem| Err(ModbusConfigError::invalid(at.key(key), problem));
        let ty = location.ty;
        let on_bits = location.table.is_bits();
        if location.address > u64::from(u16::MAX) {
            return fail(
                "address",
                ModbusConfigProblem::OutOfRange {
                    value: location.address,
                    min: 0,
                    max: u64::from(u16::MAX),
                },
            );
        }
        if on_bits && ty != ValueType::Bool {
            return fail(
                "type",
                ModbusConfigProblem::TypeNotForTable {
                    table: location.table,
                    ty,
                },
            );
        }
        if location.count.is_some() && ty != ValueType::String {
            return fail(
                "count",
                ModbusConfigProblem::NotApplicable("with a type other than string"),
            );
        }
        if location.bit.is_some() && (ty != ValueType::Bool || on_bits) {
            return fail(
                "bit",
                ModbusConfigProblem::NotApplicable(
                    "except for a bool in an input or holding register",
                ),
            );
        }
        if location.bits.is_some() && !matches!(ty, ValueType::U16 | ValueType::I16) {
            return fail(
                "bits",
                ModbusConfigProblem::NotApplicable("except with u16 or i16 (a bool takes `bit`)"),
            );
        }
        if matches!(ty, ValueType::Bool | ValueType::String) {
            if location.scale.is_some() {
                return fail(
                    "scale",
                    ModbusConfigProblem::NotApplicable("with bool or string"),
                );
            }
            if location.offset.is_some() {
                return fail(
                    "offset",
                    ModbusConfigProblem::NotApplicable("with bool or string"),
                );
            }
        }
        if location.byte_order.is_some() && on_bits {
            return fail(
                "byte_order",
                ModbusConfigProblem::NotApplicable("on a coil or discrete input"),
            );
        }
        if location.word_order.is_some() && !matches!(ty.registers(), Some(2 | 4)) {
            return fail(
                "word_order",
                ModbusConfigProblem::NotApplicable("except with 32- and 64-bit types"),
            );
        }
        if let Some(scale) = location.scale
            && (!scale.is_finite() || scale == 0.0)
        {
            return fail("scale", ModbusConfigProblem::BadScale(scale));
        }
        if let Some(offset) = location.offset
            && !offset.is_finite()
        {
            return fail("offset", ModbusConfigProblem::BadOffset(offset));
        }
        let (shape, len) = match ty {
            ValueType::Bool if on_bits => (Shape::Bit, 1),
            ValueType::Bool => {
                let Some(bit) = location.bit else {
                    return fail(
                        "bit",
                        ModbusConfigProblem::Required("for a bool in an input or holding register"),
                    );
                };
                match u32::try_from(bit) {
                    Ok(bit) if bit <= 15 => (Shape::RegisterBit(bit), 1),
                    _ => {
                        return fail(
                            "bit",
                            ModbusConfigProblem::OutOfRange {
                                value: bit,
                                min: 0,
                                max: 15,
                            },
                        );
                    }
                }
            }
            ValueType::String => {
                let Some(count) = location.count else {
                    return fail("count", ModbusConfigProblem::Required("for a string"));
                };
                match u16::try_from(count) {
                    Ok(len) if (1..=MAX_READ_REGISTERS).contains(&count) => (Shape::Text, len),
                    _ => {
                        return fail(
                            "count",
                            ModbusConfigProblem::OutOfRange {
                                value: count,
                                min: 1,
                                max: MAX_READ_REGISTERS,
                            },
                        );
                    }
                }
            }
            _ => {
                let len = ty.registers().unwrap_or(1);
                match location.bits {
                    None => (Shape::Number, len),
                    Some(text) => match parse_bits(text) {
                        Some((lo, hi)) => (Shape::Field { lo, width: hi - lo }, len),
                        None => {
                            return fail("bits", ModbusConfigProblem::BadBits(text.to_owned()));
                        }
                    },
                }
            }
        };
        if location.address + u64::from(len) > 1 << 16 {
            return fail(
                "address",
                ModbusConfigProblem::PastLastAddress {
                    address: location.address,
                    len: u64::from(len),
                    unit: if on_bits { "bits" } else { "registers" },
                },
            );
        }
        let scaling = if location.scale.is_some() || location.offset.is_some() {
            let scale = location.scale.unwrap_or(1.0);
            let offset = location.offset.unwrap_or(0.0);
            Some(Scaling {
                scale,
                offset,
                scale_decimals: decimals(scale),
                offset_decimals: decimals(offset),
            })
        } else {
            None
        };
        Ok(Self {
            ty,
            shape,
            len,
            byte_order: location.byte_order.unwrap_or(orders.0),
            word_order: location.word_order.unwrap_or(orders.1),
            scaling,
        })
    }

    /// Registers or bits taken.
    pub(crate) fn len(&self) -> u16 {
        self.len
    }

    /// The bits of the one register this value takes, if it is a bit or bit field; such values may
    /// share their register.
    pub(crate) fn register_bits(&self) -> Option<u16> {
        match self.shape {
            Shape::RegisterBit(bit) => Some((1u64 << bit) as u16),
            Shape::Field { lo, width } => Some((mask(width) << lo) as u16),
            Shape::Bit | Shape::Number | Shape::Text => None,
        }
    }

    /// What values read as, in schema terms, for messages.
    pub(crate) fn reads_as(&self) -> &'static str {
        match self.shape {
            Shape::Bit | Shape::RegisterBit(_) => "boolean",
            Shape::Text => "string",
            Shape::Field { .. } | Shape::Number if self.is_plain_integer() => "integer or number",
            Shape::Field { .. } | Shape::Number => "number",
        }
    }

    /// Whether values fit a schema of this type.
    pub(crate) fn fits_schema(&self, schema: SchemaType) -> bool {
        match self.shape {
            Shape::Bit | Shape::RegisterBit(_) => schema == SchemaType::Boolean,
            Shape::Text => schema == SchemaType::String,
            Shape::Field { .. } | Shape::Number if self.is_plain_integer() => {
                matches!(schema, SchemaType::Integer | SchemaType::Number)
            }
            Shape::Field { .. } | Shape::Number => schema == SchemaType::Number,
        }
    }

    /// `" with scale/offset"` when scaled, for messages.
    pub(crate) fn scaled_note(&self) -> &'static str {
        if self.scaling.is_some() {
            " with scale/offset"
        } else {
            ""
        }
    }

    /// The mapping's type.
    pub(crate) fn ty(&self) -> ValueType {
        self.ty
    }

    /// An integer (or bit field) read without scaling: a JSON integer.
    fn is_plain_integer(&self) -> bool {
        self.scaling.is_none() && self.ty.is_integer()
    }

    /// Reads the value from a coil or discrete input.
    pub(crate) fn decode_bit(&self, bit: bool) -> Value {
        Value::Bool(bit)
    }

    /// Reads the value from its registers (`registers.len()` must be [`Codec::len`]; fewer is an
    /// error, more are ignored).
    pub(crate) fn decode_registers(&self, registers: &[u16]) -> Result<Value, ModbusValueError> {
        let len = usize::from(self.len);
        let Some(registers) = registers.get(..len) else {
            return Err(ModbusValueError::ShortData {
                needed: len,
                got: registers.len(),
            });
        };
        let word = || gather(registers, self.byte_order, self.word_order);
        let raw = match (self.shape, self.ty) {
            (Shape::Text, _) => return self.decode_text(registers),
            // Only compiled for coils and discrete inputs, which are read as bits.
            (Shape::Bit, _) => return Ok(Value::Bool(word() & 1 == 1)),
            (Shape::RegisterBit(bit), _) => return Ok(Value::Bool((word() >> bit) & 1 == 1)),
            (Shape::Field { lo, width }, _) => Raw::Unsigned((word() >> lo) & mask(width)),
            (Shape::Number, ValueType::I16) => Raw::Signed(i64::from(word() as u16 as i16)),
            (Shape::Number, ValueType::I32) => Raw::Signed(i64::from(word() as u32 as i32)),
            (Shape::Number, ValueType::I64) => Raw::Signed(word() as i64),
            (Shape::Number, ValueType::F32) => Raw::Float(widen_f32(f32::from_bits(word() as u32))),
            (Shape::Number, ValueType::F64) => Raw::Float(f64::from_bits(word())),
            (Shape::Number, _) => Raw::Unsigned(word()),
        };
        self.value_of(raw)
    }

    fn decode_text(&self, registers: &[u16]) -> Result<Value, ModbusValueError> {
        let mut bytes: Vec<u8> = registers
            .iter()
            .flat_map(|&register| in_byte_order(register, self.byte_order).to_be_bytes())
            .collect();
        while let Some(&last) = bytes.last()
            && (last == 0 || last == b' ')
        {
            bytes.pop();
        }
        String::from_utf8(bytes)
            .map(Value::String)
            .map_err(|_| ModbusValueError::NotUtf8)
    }

    /// A raw value as JSON: integers stay integers unless scaled; scaled values are rounded to the
    /// decimals their exact value can have; NaN and infinities are errors.
    fn value_of(&self, raw: Raw) -> Result<Value, ModbusValueError> {
        let Some(scaling) = self.scaling else {
            return match raw {
                Raw::Unsigned(n) => Ok(Value::from(n)),
                Raw::Signed(n) => Ok(Value::from(n)),
                Raw::Float(x) => Number::from_f64(x)
                    .map(Value::Number)
                    .ok_or(ModbusValueError::NotFinite),
            };
        };
        let (x, raw_decimals) = match raw {
            Raw::Unsigned(n) => (n as f64, 0),
            Raw::Signed(n) => (n as f64, 0),
            Raw::Float(x) if x.is_finite() => (x, decimals(x)),
            Raw::Float(_) => return Err(ModbusValueError::NotFinite),
        };
        let value = x * scaling.scale + scaling.offset;
        if !value.is_finite() {
            return Err(ModbusValueError::NotFinite);
        }
        let places = raw_decimals
            .saturating_add(scaling.scale_decimals)
            .max(scaling.offset_decimals);
        Number::from_f64(round_to(value, places))
            .map(Value::Number)
            .ok_or(ModbusValueError::NotFinite)
    }

    /// The write that puts `value` at `address`.
    pub(crate) fn encode(&self, address: u16, value: &Value) -> Result<Write, ModbusValueError> {
        let registers = match (self.shape, self.ty) {
            (Shape::Bit, _) => {
                let bit = value
                    .as_bool()
                    .ok_or_else(|| wrong_type("a boolean", value))?;
                return Ok(Write::Coil {
                    address,
                    value: bit,
                });
            }
            (Shape::RegisterBit(bit), _) => {
                let on = value
                    .as_bool()
                    .ok_or_else(|| wrong_type("a boolean", value))?;
                let bits = (1u64 << bit) as u16;
                return Ok(self.mask_write(address, bits, if on { bits } else { 0 }));
            }
            (Shape::Field { lo, width }, _) => {
                let max = mask(width);
                let raw = self.integer_raw(value, 0, i128::from(max))?;
                let pattern = (raw as u64) & max;
                return Ok(self.mask_write(address, (max << lo) as u16, (pattern << lo) as u16));
            }
            (Shape::Text, _) => self.encode_text(value)?,
            (Shape::Number, ValueType::F32) => {
                let raw = self.float_raw(value)?;
                let narrow = raw as f32;
                if !narrow.is_finite() {
                    let max = f64::from(f32::MAX);
                    return Err(self.out_of_range(value, -max, max));
                }
                scatter(
                    u64::from(narrow.to_bits()),
                    2,
                    self.byte_order,
                    self.word_order,
                )
            }
            (Shape::Number, ValueType::F64) => {
                let raw = self.float_raw(value)?;
                scatter(raw.to_bits(), 4, self.byte_order, self.word_order)
            }
            (Shape::Number, ty) => {
                let (min, max) = match ty {
                    ValueType::I16 => (i128::from(i16::MIN), i128::from(i16::MAX)),
                    ValueType::I32 => (i128::from(i32::MIN), i128::from(i32::MAX)),
                    ValueType::I64 => (i128::from(i64::MIN), i128::from(i64::MAX)),
                    ValueType::U32 => (0, i128::from(u32::MAX)),
                    ValueType::U64 => (0, i128::from(u64::MAX)),
                    _ => (0, i128::from(u16::MAX)),
                };
                let raw = self.integer_raw(value, min, max)?;
                // Two's complement, cut to the type's width by `scatter`.
                scatter(raw as u64, self.len, self.byte_order, self.word_order)
            }
        };
        Ok(match registers.as_slice() {
            [value] => Write::Register {
                address,
                value: *value,
            },
            _ => Write::Registers {
                address,
                values: registers,
            },
        })
    }

    /// A mask write setting `bits` (of the register's value) to `pattern`, in the byte order.
    fn mask_write(&self, address: u16, bits: u16, pattern: u16) -> Write {
        Write::Mask {
            address,
            and_mask: in_byte_order(!bits, self.byte_order),
            or_mask: in_byte_order(pattern & bits, self.byte_order),
        }
    }

    fn encode_text(&self, value: &Value) -> Result<Vec<u16>, ModbusValueError> {
        let text = value
            .as_str()
            .ok_or_else(|| wrong_type("a string", value))?;
        let max = 2 * usize::from(self.len);
        let bytes = text.as_bytes();
        if bytes.len() > max {
            return Err(ModbusValueError::StringTooLong {
                len: bytes.len(),
                max,
            });
        }
        let mut padded = bytes.to_vec();
        padded.resize(max, 0);
        Ok(padded
            .chunks(2)
            .map(|pair| {
                let high = pair.first().copied().unwrap_or(0);
                let low = pair.get(1).copied().unwrap_or(0);
                in_byte_order(u16::from_be_bytes([high, low]), self.byte_order)
            })
            .collect())
    }

    /// `value` as a float with the scaling undone.
    fn float_raw(&self, value: &Value) -> Result<f64, ModbusValueError> {
        let x = value
            .as_f64()
            .ok_or_else(|| wrong_type("a number", value))?;
        let raw = match self.scaling {
            None => x,
            Some(s) => (x - s.offset) / s.scale,
        };
        if raw.is_finite() {
            Ok(raw)
        } else {
            Err(ModbusValueError::NotFinite)
        }
    }

    /// `value` as a raw integer within `min..=max`: exact for JSON integers without scaling,
    /// otherwise unscaled and rounded to the nearest integer.
    fn integer_raw(&self, value: &Value, min: i128, max: i128) -> Result<i128, ModbusValueError> {
        let Value::Number(number) = value else {
            return Err(wrong_type("a number", value));
        };
        let exact = if self.scaling.is_none() {
            number
                .as_u64()
                .map(i128::from)
                .or_else(|| number.as_i64().map(i128::from))
        } else {
            None
        };
        let raw = match exact {
            Some(raw) => raw,
            None => {
                let rounded = self.float_raw(value)?.round();
                // Saturating: anything beyond i128 is out of range anyway.
                rounded as i128
            }
        };
        if (min..=max).contains(&raw) {
            Ok(raw)
        } else if self.scaling.is_none() {
            Err(ModbusValueError::OutOfRange {
                value: render(value),
                min: min.to_string(),
                max: max.to_string(),
            })
        } else {
            Err(self.out_of_range(value, min as f64, max as f64))
        }
    }

    /// An out-of-range error, with the raw limits turned into the value's units.
    fn out_of_range(&self, value: &Value, raw_min: f64, raw_max: f64) -> ModbusValueError {
        let show = |raw: f64| match self.scaling {
            None => raw.to_string(),
            Some(s) => {
                let places = s.scale_decimals.max(s.offset_decimals);
                round_to(raw * s.scale + s.offset, places).to_string()
            }
        };
        let (a, b) = (show(raw_min), show(raw_max));
        // A negative scale turns the range around.
        let (min, max) = match self.scaling {
            Some(s) if s.scale < 0.0 => (b, a),
            _ => (a, b),
        };
        ModbusValueError::OutOfRange {
            value: render(value),
            min,
            max,
        }
    }
}
