//! The `[bindings.modbus]` table of a thing type, as data, and [`ModbusConfigError`].
//!
//! These types only describe; [`ModbusModel::new`](super::ModbusModel::new) checks them against the
//! thing type and compiles them. Every table denies unknown keys so that a typo in a type file is an
//! error at load time rather than an option silently ignored. Keys in error messages are relative to
//! the `[bindings.modbus]` table (`properties.voltage.type`).

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::schema::SchemaType;

use super::codec::ModbusValueError;

/// Default cap on one merged read of input or holding registers: the most one Modbus read allows.
pub const DEFAULT_MAX_REGISTERS: u64 = 125;
/// Default cap on one merged read of coils or discrete inputs: the most one Modbus read allows.
pub const DEFAULT_MAX_BITS: u64 = 2000;
/// Default poll interval of the `default` group, in milliseconds.
pub const DEFAULT_POLL_MS: u64 = 5000;
/// Shortest poll interval a binding may ask for, in milliseconds.
pub const MIN_POLL_MS: u64 = 100;
/// Longest poll interval a binding may ask for, in milliseconds (one day).
pub const MAX_POLL_MS: u64 = 86_400_000;
/// Most registers one read of input or holding registers may cover (Modbus FC 3 and 4).
pub const MAX_READ_REGISTERS: u64 = 125;
/// Most coils or discrete inputs one read may cover (Modbus FC 1 and 2).
pub const MAX_READ_BITS: u64 = 2000;
/// Most registers one "write multiple registers" request may carry (Modbus FC 16), which bounds
/// the strings that can be written.
pub const MAX_WRITE_REGISTERS: u64 = 123;
/// Widest span of unused registers or bits a merged read may cover.
pub const MAX_GAP: u64 = 125;
/// The implicit poll group, polled every `poll_ms`.
pub const DEFAULT_GROUP: &str = "default";

/// How a Modbus device's registers and coils map to a thing's properties and actions.
///
/// This is what a thing type's `[bindings.modbus]` table holds. Parse it with serde (any format) or
/// [`ModbusBinding::from_toml`]; [`ModbusModel`](super::ModbusModel) checks it against the type.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModbusBinding {
    /// Byte order within one 16-bit register, for every property that does not override it.
    #[serde(default)]
    pub byte_order: Order,
    /// Register order of 32- and 64-bit values, for every property that does not override it.
    #[serde(default)]
    pub word_order: Order,
    /// Cap on the registers one merged read of input or holding registers covers, 1 to 125.
    #[serde(default = "default_max_registers")]
    pub max_registers: u64,
    /// Cap on the coils or discrete inputs one merged read covers, 1 to 2000.
    #[serde(default = "default_max_bits")]
    pub max_bits: u64,
    /// Unused registers (or bits) one merged read may span between two properties, 0 to 125.
    /// Reading a few unused registers is usually cheaper than another round trip, but some devices
    /// refuse reads of addresses they do not implement, hence the default of 0.
    #[serde(default)]
    pub max_gap: u64,
    /// Poll interval of the `default` group, in milliseconds, 100 to 86 400 000.
    #[serde(default = "default_poll_ms")]
    pub poll_ms: u64,
    /// Named poll groups besides `default`, by name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub groups: BTreeMap<String, GroupConfig>,
    /// Property name → where its value is. Each must be a property of the type.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub properties: BTreeMap<String, PropertyMapping>,
    /// Action name → the writes that perform it. Each must be an action of the type.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub actions: BTreeMap<String, ActionMapping>,
}

fn default_max_registers() -> u64 {
    DEFAULT_MAX_REGISTERS
}

fn default_max_bits() -> u64 {
    DEFAULT_MAX_BITS
}

fn default_poll_ms() -> u64 {
    DEFAULT_POLL_MS
}

/// A named poll group: properties that are read at their own pace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupConfig {
    /// Poll interval in milliseconds, 100 to 86 400 000.
    pub poll_ms: u64,
}

/// The four Modbus data tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Table {
    /// Coils: read/write bits (FC 1, 5, 15).
    Coil,
    /// Discrete inputs: read-only bits (FC 2).
    Discrete,
    /// Input registers: read-only 16-bit words (FC 4).
    Input,
    /// Holding registers: read/write 16-bit words (FC 3, 6, 16, 22).
    Holding,
}

impl Table {
    /// The name used in TOML.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Coil => "coil",
            Self::Discrete => "discrete",
            Self::Input => "input",
            Self::Holding => "holding",
        }
    }

    /// Whether the table holds bits (coils, discrete inputs) rather than registers.
    pub fn is_bits(self) -> bool {
        matches!(self, Self::Coil | Self::Discrete)
    }

    /// Whether a master can write the table (coils, holding registers).
    pub fn is_writable(self) -> bool {
        matches!(self, Self::Coil | Self::Holding)
    }
}

impl fmt::Display for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The order of bytes within a register, or of registers within a 32- or 64-bit value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Order {
    /// Most significant first: `AB` within a register (the Modbus default), the high register
    /// first within a value.
    #[default]
    Big,
    /// Least significant first: `BA` within a register, the low register first within a value.
    Little,
}

/// How a value is stored in registers or bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ValueType {
    /// One coil or discrete input, or one bit (`bit`) of a register.
    Bool,
    /// Unsigned 16-bit integer, one register.
    U16,
    /// Signed 16-bit integer, one register.
    I16,
    /// Unsigned 32-bit integer, two registers.
    U32,
    /// Signed 32-bit integer, two registers.
    I32,
    /// IEEE 754 single precision, two registers.
    F32,
    /// Unsigned 64-bit integer, four registers.
    U64,
    /// Signed 64-bit integer, four registers.
    I64,
    /// IEEE 754 double precision, four registers.
    F64,
    /// Text, two bytes per register, `count` registers.
    String,
}

impl ValueType {
    /// The name used in TOML.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Bool => "bool",
            Self::U16 => "u16",
            Self::I16 => "i16",
            Self::U32 => "u32",
            Self::I32 => "i32",
            Self::F32 => "f32",
            Self::U64 => "u64",
            Self::I64 => "i64",
            Self::F64 => "f64",
            Self::String => "string",
        }
    }

    /// Registers taken by a numeric type (1, 2 or 4); `None` for bool and string, whose size
    /// depends on the mapping.
    pub fn registers(self) -> Option<u16> {
        match self {
            Self::U16 | Self::I16 => Some(1),
            Self::U32 | Self::I32 | Self::F32 => Some(2),
            Self::U64 | Self::I64 | Self::F64 => Some(4),
            Self::Bool | Self::String => None,
        }
    }

    /// Whether this is an integer type.
    pub fn is_integer(self) -> bool {
        matches!(
            self,
            Self::U16 | Self::I16 | Self::U32 | Self::I32 | Self::U64 | Self::I64
        )
    }
}

impl fmt::Display for ValueType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where one property's value is: its table, address and type, and how it is scaled.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PropertyMapping {
    /// The data table.
    pub table: Table,
    /// PDU address of the first register or bit, 0-based as on the wire (no 40001 notation).
    pub address: u64,
    /// How the value is stored.
    #[serde(rename = "type")]
    pub ty: ValueType,
    /// Registers of a string, 1 to 125; strings only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u64>,
    /// For a bool in an input or holding register: which bit, 0 (least significant) to 15.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bit: Option<u64>,
    /// For a u16 or i16: an unsigned bit field `"a..b"` (bits a to b - 1, 0 <= a < b <= 16).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bits: Option<String>,
    /// Multiplier: value = raw * scale + offset. Finite and non-zero; numeric types only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale: Option<f64>,
    /// Added after scaling. Finite; numeric types only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<f64>,
    /// Overrides the binding's byte order; register tables only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub byte_order: Option<Order>,
    /// Overrides the binding's word order; 32- and 64-bit types only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub word_order: Option<Order>,
    /// The poll group; `default` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
}

/// The register writes that perform one action.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActionMapping {
    /// The writes, performed in order; the action succeeds when all of them did.
    pub writes: Vec<WriteMapping>,
}

/// One write of an action: where, in which type, and what value.
///
/// The location keys mean what they mean for a [`PropertyMapping`]; exactly one of `value` and
/// `input` gives the value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WriteMapping {
    /// The data table: `coil` or `holding`.
    pub table: Table,
    /// PDU address of the first register or the coil.
    pub address: u64,
    /// How the value is stored.
    #[serde(rename = "type")]
    pub ty: ValueType,
    /// Registers of a string.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u64>,
    /// For a bool in a holding register: which bit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bit: Option<u64>,
    /// For a u16 or i16: an unsigned bit field `"a..b"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bits: Option<String>,
    /// Multiplier: raw = (value - offset) / scale.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale: Option<f64>,
    /// Subtracted before the scale is divided out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<f64>,
    /// Overrides the binding's byte order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub byte_order: Option<Order>,
    /// Overrides the binding's word order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub word_order: Option<Order>,
    /// A constant value to write.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<serde_json::Value>,
    /// A JSON pointer into the action's input (`/seconds`; `""` is the whole input).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<String>,
}

/// The location keys shared by properties and action writes, for the compiler.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Location<'a> {
    pub(crate) table: Table,
    pub(crate) address: u64,
    pub(crate) ty: ValueType,
    pub(crate) count: Option<u64>,
    pub(crate) bit: Option<u64>,
    pub(crate) bits: Option<&'a str>,
    pub(crate) scale: Option<f64>,
    pub(crate) offset: Option<f64>,
    pub(crate) byte_order: Option<Order>,
    pub(crate) word_order: Option<Order>,
}

impl PropertyMapping {
    pub(crate) fn location(&self) -> Location<'_> {
        Location {
            table: self.table,
            address: self.address,
            ty: self.ty,
            count: self.count,
            bit: self.bit,
            bits: self.bits.as_deref(),
            scale: self.scale,
            offset: self.offset,
            byte_order: self.byte_order,
            word_order: self.word_order,
        }
    }
}

impl WriteMapping {
    pub(crate) fn location(&self) -> Location<'_> {
        Location {
            table: self.table,
            address: self.address,
            ty: self.ty,
            count: self.count,
            bit: self.bit,
            bits: self.bits.as_deref(),
            scale: self.scale,
            offset: self.offset,
            byte_order: self.byte_order,
            word_order: self.word_order,
        }
    }
}

/// A `[bindings.modbus]` table that cannot be used.
#[derive(Debug, Error)]
pub enum ModbusConfigError {
    /// The thing type has no `[bindings.modbus]` table.
    #[error("type `{type_id}` has no [bindings.modbus] table")]
    Missing {
        /// The type's id.
        type_id: String,
    },
    /// The table does not have the expected shape (unknown key, wrong type, missing key).
    #[error("{key}: {}", .source.message())]
    Parse {
        /// Key path of the offending value (`properties.voltage.type`).
        key: String,
        /// What the deserializer said.
        #[source]
        source: toml::de::Error,
    },
    /// The table parses but says something impossible, or something the type contradicts.
    #[error("{key}: {problem}")]
    Invalid {
        /// Key path of the offending value.
        key: String,
        /// Why it cannot be used.
        problem: ModbusConfigProblem,
    },
    /// One of the errors above, in the binding of a named thing type.
    #[error("type `{type_id}`: [bindings.modbus] {error}")]
    InType {
        /// The type's id.
        type_id: String,
        /// The error within its binding.
        error: Box<ModbusConfigError>,
    },
}

impl ModbusConfigError {
    pub(crate) fn invalid(key: impl ToString, problem: ModbusConfigProblem) -> Self {
        Self::Invalid {
            key: key.to_string(),
            problem,
        }
    }

    pub(crate) fn in_type(self, type_id: &str) -> Self {
        match self {
            Self::Missing { .. } | Self::InType { .. } => self,
            other => Self::InType {
                type_id: type_id.to_owned(),
                error: Box::new(other),
            },
        }
    }

    /// Key path of the offending value, relative to `[bindings.modbus]`; `None` when the whole
    /// table is missing.
    pub fn key(&self) -> Option<&str> {
        match self {
            Self::Missing { .. } => None,
            Self::Parse { key, .. } | Self::Invalid { key, .. } => Some(key),
            Self::InType { error, .. } => error.key(),
        }
    }

    /// Why a table that parses cannot be used, if that is the error.
    pub fn problem(&self) -> Option<&ModbusConfigProblem> {
        match self {
            Self::Invalid { problem, .. } => Some(problem),
            Self::InType { error, .. } => error.problem(),
            Self::Missing { .. } | Self::Parse { .. } => None,
        }
    }
}

/// Why a parsed `[bindings.modbus]` table cannot be used.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum ModbusConfigProblem {
    /// A number outside what the key accepts.
    #[error("{value} is out of range ({min}..={max})")]
    OutOfRange {
        /// The value given.
        value: u64,
        /// Smallest accepted.
        min: u64,
        /// Largest accepted.
        max: u64,
    },
    /// A value that runs past the last address, 65535.
    #[error("address {address} plus {len} {unit} runs past address 65535")]
    PastLastAddress {
        /// The first address.
        address: u64,
        /// Registers or bits taken.
        len: u64,
        /// `registers` or `bits`.
        unit: &'static str,
    },
    /// A scale of zero, infinity or NaN cannot be inverted when writing.
    #[error("scale must be finite and non-zero, got {0}")]
    BadScale(f64),
    /// An offset must be a finite number.
    #[error("offset must be finite, got {0}")]
    BadOffset(f64),
    /// A `bits` value that is not `a..b` with 0 <= a < b <= 16.
    #[error("`{0}` is not a bit field a..b with 0 <= a < b <= 16 (bits a to b - 1, e.g. \"4..8\")")]
    BadBits(String),
    /// A type the table cannot hold (only bools are bits).
    #[error("the {table} table holds bits; type must be bool, not {ty}")]
    TypeNotForTable {
        /// The table.
        table: Table,
        /// The type given.
        ty: ValueType,
    },
    /// A key needed by the rest of the mapping.
    #[error("required {0}")]
    Required(&'static str),
    /// A key that means nothing with the rest of the mapping.
    #[error("not used {0}")]
    NotApplicable(&'static str),
    /// The thing type has no such property.
    #[error("the type has no property `{0}`")]
    NoSuchProperty(String),
    /// The thing type has no such action.
    #[error("the type has no action `{0}`")]
    NoSuchAction(String),
    /// A property in a group that `groups` does not define.
    #[error("no group `{0}` in `groups` (nor `default`)")]
    NoSuchGroup(String),
    /// `default` is the implicit group, polled every `poll_ms`.
    #[error("`default` is the implicit group; set its interval with the top-level `poll_ms`")]
    DefaultGroupDefined,
    /// A group name that breaks the naming rule.
    #[error("`{0}` is not a valid name (1 to 64 of a-z, 0-9 and _)")]
    InvalidName(String),
    /// A mapping whose value type does not fit the property's or input's schema.
    #[error("{ty}{scaled} reads as {reads}, but the schema's type is {schema}")]
    SchemaMismatch {
        /// The mapping's type.
        ty: ValueType,
        /// `" with scale/offset"` when scaled, or empty.
        scaled: &'static str,
        /// What the mapping produces (`integer or number`, `boolean`, ...).
        reads: &'static str,
        /// The schema's type.
        schema: SchemaType,
    },
    /// A property that apps may write, on a table that cannot be written.
    #[error(
        "the property is writable in the type, so it must be on a coil or holding register, not {0}"
    )]
    WritableOnReadOnlyTable(Table),
    /// Action writes go to coils and holding registers.
    #[error("actions write coils or holding registers, not {0}")]
    WriteToReadOnlyTable(Table),
    /// A value larger than one read may cover.
    #[error("takes {len} {unit}, more than one read may cover (`{cap_key}` = {cap})")]
    LargerThanRead {
        /// Registers or bits taken.
        len: u64,
        /// `registers` or `bits`.
        unit: &'static str,
        /// The cap's key.
        cap_key: &'static str,
        /// The cap.
        cap: u64,
    },
    /// A written string longer than one "write multiple registers" request carries.
    #[error("{count} registers cannot be written in one request (at most {max})")]
    TooLongToWrite {
        /// Registers of the string.
        count: u64,
        /// The limit.
        max: u64,
    },
    /// Two properties share registers or bits (only bit fields of one register may, with distinct
    /// bits).
    #[error("overlaps property `{0}`")]
    Overlaps(String),
    /// An action write needs exactly one source of its value.
    #[error("give exactly one of `value` or `input`")]
    ValueOrInput,
    /// A JSON pointer that is neither empty nor starts with `/`.
    #[error("`{0}` is not a JSON pointer (\"\" or starting with \"/\")")]
    BadPointer(String),
    /// `input` on an action that takes none.
    #[error("the action takes no input")]
    NoInput,
    /// A pointer that the action's input schema does not describe.
    #[error("the action's input schema has nothing at `{0}`")]
    NotInInput(String),
    /// Modbus actions reply null once their writes succeeded; an output schema cannot be met.
    #[error("the action has an output schema, but Modbus actions reply null")]
    ActionHasOutput,
    /// A list that must not be empty.
    #[error("must not be empty")]
    Empty,
    /// A constant that cannot be written with the mapping's type.
    #[error("{0}")]
    BadValue(ModbusValueError),
}

impl ModbusBinding {
    /// Reads a `[bindings.modbus]` table, naming the key of the first value that does not fit.
    ///
    /// This checks the shape only; [`ModbusModel`](super::ModbusModel) checks the meaning against
    /// the thing type.
    pub fn from_toml(table: &toml::Table) -> Result<Self, ModbusConfigError> {
        let value = toml::Value::Table(table.clone());
        serde_path_to_error::deserialize(value).map_err(|err| ModbusConfigError::Parse {
            key: err.path().to_string(),
            source: err.into_inner(),
        })
    }
}
