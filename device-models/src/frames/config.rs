//! The `[bindings.frame]` table of a thing type, as data.
//!
//! These types only describe; [`FrameCodec::new`](super::FrameCodec::new) checks them and compiles
//! them into the codec that runs. Every table denies unknown keys so that a typo in a thing type file
//! is an error at load time rather than a silently ignored option. Keys in error messages are relative
//! to the `[bindings.frame]` table (`layout.fields[2].bits`).
//!
//! # Keys at a glance
//! ```toml
//! [bindings.frame]
//! max_frame = 4096            # cap on one frame, bytes
//! id_field = "id"             # optional: the field naming the thing
//! id_template = "beacon-{}"   # optional: {} {:x} {:X} {:04x} {:06}
//! properties = { temperature = "/sensors/t" }  # optional: property = field or JSON pointer
//!
//! framing = { kind = "datagram" }               # default; or:
//! # { kind = "lines", ending = "lf" | "crlf" }
//! # { kind = "length_prefixed", type = "u8" | "u16" | "u32", order = "big" | "little",
//! #   includes_header = false, offset = 0, adjust = 0 }
//! # { kind = "delimited", start = 0x02, end = 0x03, escape = 0x10,
//! #   escaped_start = 0x12, escaped_end = 0x13, escaped_escape = 0x11 }
//! # { kind = "fixed", length = 8 }
//!
//! checksum = { kind = "crc16_modbus" }  # optional: crc16_modbus | crc32 | xor8, and
//! # order = "big" | "little", encoding = "binary" | "hex", separator = "*", skip = 0
//!
//! layout = { kind = "json" }            # or:
//! # { kind = "key_value", separator = "=", delimiter = ";", types = { fw = "string" } }
//! # { kind = "csv", fields = ["id", "t", "h"], delimiter = ",", types = {} }
//! # { kind = "binary", order = "big", length = 6, fields = [
//! #     { name = "t", offset = 2, type = "i16", order = "little", scale = 0.01,
//! #       offset_value = -40.0, bits = "0..12" } ] }
//!
//! reply = { correlate = "field", field = "seq", when = { field = "type", equals = "ack" } }
//! # or { correlate = "next_frame" } for half-duplex buses
//!
//! [bindings.frame.commands]
//! set = { text = "SET {property}={value} #{seq}", bools = ["OFF", "ON"] }
//! actions.reboot = { json = { cmd = "reboot", seq = "{seq}" } }
//! actions.interval = { binary = { bytes = [0xA5, 0, 0], fields = [
//!     { name = "seconds", offset = 1, type = "u16" } ] }, expect_reply = false }
//! ```

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Default cap on one frame, in bytes (see [`FrameBinding::max_frame`]).
pub const DEFAULT_MAX_FRAME: usize = 4096;

/// Largest cap a binding may ask for: a raw device frame larger than this is a configuration mistake.
pub const MAX_FRAME_LIMIT: usize = 1 << 20;

/// How a raw UDP/TCP/serial device's bytes map to a thing's properties and back.
///
/// This is what a thing type's `[bindings.frame]` table holds. Parse it with serde (any format) or
/// [`FrameBinding::from_toml`], then build a [`FrameCodec`](super::FrameCodec) from it, which
/// validates it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FrameBinding {
    /// Cap on one frame in bytes, counted without line ends, delimiters or escape bytes but with any
    /// length header and checksum. Anything larger is rejected before it is buffered.
    #[serde(default = "default_max_frame")]
    pub max_frame: usize,
    /// How a byte stream is cut into frames. Defaults to one datagram per frame (UDP); stream
    /// transports (TCP, serial) need one of the other kinds.
    #[serde(default)]
    pub framing: FramingConfig,
    /// An optional checksum trailing every frame, verified on receive and appended on send.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checksum: Option<ChecksumConfig>,
    /// How the bytes of one frame map to named fields.
    pub layout: LayoutConfig,
    /// Property name → field of the frame (a key, a CSV or binary field name, or a JSON pointer such
    /// as `/sensors/temp`). When empty, every field is a property under its own name, except the id
    /// field, the reply correlation field and fields whose name starts with `_`. When given, only the
    /// listed properties are reported.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub properties: BTreeMap<String, String>,
    /// The field that names the thing. Without it, frames carry no id and the listener maps the
    /// peer (address, port, serial line) to a thing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id_field: Option<String>,
    /// How the id field's value becomes a thing id: one placeholder, `{}` (decimal or text), `{:x}`
    /// / `{:X}` (hex), optionally zero padded (`{:04x}`, `{:06}`), e.g. `"beacon-{}"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id_template: Option<String>,
    /// How the device's answers to commands are recognised and matched to the request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply: Option<ReplyConfig>,
    /// How desired-state changes and action invocations are written to the device.
    #[serde(default, skip_serializing_if = "CommandsConfig::is_empty")]
    pub commands: CommandsConfig,
}

fn default_max_frame() -> usize {
    DEFAULT_MAX_FRAME
}

/// Byte order of a multi-byte integer or float on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ByteOrder {
    /// Most significant byte first (network order).
    #[default]
    Big,
    /// Least significant byte first.
    Little,
}

/// How a byte stream is cut into frames.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum FramingConfig {
    /// One pushed datagram is one frame (UDP). Not usable on a byte stream.
    Datagram {},
    /// Text lines ended by `\n` or `\r\n` (both accepted on receive); empty lines are skipped.
    Lines {
        /// Line end written on send.
        #[serde(default)]
        ending: LineEnding,
    },
    /// A length field announces the size of what follows.
    LengthPrefixed {
        /// Width of the length field.
        #[serde(rename = "type")]
        width: LengthWidth,
        /// Byte order of the length field.
        #[serde(default)]
        order: ByteOrder,
        /// Whether the length counts the header (the `offset` bytes and the length field itself)
        /// as well as what follows it.
        #[serde(default)]
        includes_header: bool,
        /// Bytes before the length field (a sync or type byte). They are kept: the payload handed to
        /// the layout is those bytes followed by the bytes after the length field.
        #[serde(default)]
        offset: usize,
        /// Added to the length value to get the byte count, for protocols whose length leaves out
        /// something (e.g. `2` when a CRC-16 follows but is not counted).
        #[serde(default)]
        adjust: i64,
    },
    /// Frames between delimiter bytes, with an optional escape byte (SLIP, HDLC-like, STX/ETX).
    Delimited {
        /// Byte that opens a frame; bytes before it are skipped. May equal `end` (a shared flag).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        start: Option<u8>,
        /// Byte that closes a frame.
        end: u8,
        /// Escape byte: on the wire, a special byte inside a frame is sent as `escape` followed by its
        /// substitute.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        escape: Option<u8>,
        /// Substitute sent after `escape` for a `start` byte inside a frame.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        escaped_start: Option<u8>,
        /// Substitute sent after `escape` for an `end` byte inside a frame.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        escaped_end: Option<u8>,
        /// Substitute sent after `escape` for an `escape` byte inside a frame.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        escaped_escape: Option<u8>,
    },
    /// Every frame has the same length (checksum included).
    Fixed {
        /// Bytes per frame.
        length: usize,
    },
}

impl Default for FramingConfig {
    fn default() -> Self {
        Self::Datagram {}
    }
}

impl FramingConfig {
    /// Whether this framing needs datagram boundaries, i.e. cannot run on a TCP or serial stream.
    pub fn needs_datagrams(&self) -> bool {
        matches!(self, Self::Datagram {})
    }
}

/// Line end written by [`FramingConfig::Lines`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LineEnding {
    /// `\n`
    #[default]
    Lf,
    /// `\r\n`
    Crlf,
}

/// Width of a length prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LengthWidth {
    /// One byte.
    U8,
    /// Two bytes.
    U16,
    /// Four bytes.
    U32,
}

impl LengthWidth {
    /// Bytes taken by the length field.
    pub fn bytes(self) -> usize {
        match self {
            Self::U8 => 1,
            Self::U16 => 2,
            Self::U32 => 4,
        }
    }
}

/// A checksum trailing every frame.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChecksumConfig {
    /// The algorithm.
    pub kind: ChecksumKind,
    /// Byte order of a binary trailer. Defaults to little for CRC-16/MODBUS (as Modbus RTU sends
    /// it) and big for CRC-32.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order: Option<ByteOrder>,
    /// Raw bytes, or upper-case hex digits (most significant first) for text protocols.
    #[serde(default)]
    pub encoding: ChecksumEncoding,
    /// Text between the payload and a hex checksum (`"*"` in `t=21.5*4B37`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub separator: Option<String>,
    /// Leading bytes of the frame that the checksum does not cover (a `$` or a sync byte). The
    /// checksum covers the frame as the framing sees it: after unescaping, without line ends or
    /// delimiters, with the length header.
    #[serde(default)]
    pub skip: usize,
}

/// Checksum algorithms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChecksumKind {
    /// CRC-16/MODBUS: poly 0x8005 reflected, init 0xFFFF.
    Crc16Modbus,
    /// CRC-32 (IEEE 802.3, zlib).
    Crc32,
    /// XOR of every byte.
    Xor8,
}

/// How a checksum is written on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChecksumEncoding {
    /// The checksum's bytes in the configured order.
    #[default]
    Binary,
    /// Upper-case hex digits, most significant first (lower case accepted on receive).
    Hex,
}

/// How the bytes of one frame map to named fields.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum LayoutConfig {
    /// A JSON object per frame; its members are the fields.
    Json {},
    /// Text pairs such as `t=21.5;h=40`.
    KeyValue {
        /// Between a key and its value.
        #[serde(default = "default_kv_separator")]
        separator: String,
        /// Between pairs; empty pieces (a trailing delimiter) are ignored.
        #[serde(default = "default_kv_delimiter")]
        delimiter: String,
        /// Field name → how its text is read. Without an entry the text is read as a bool
        /// (`true`/`false`), an integer, a finite float, else a string.
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        types: BTreeMap<String, TextType>,
    },
    /// Delimiter-separated values in a fixed field order (no quoting).
    Csv {
        /// Field names in order; `""` or `"_"` skips a column.
        fields: Vec<String>,
        /// Between values.
        #[serde(default = "default_csv_delimiter")]
        delimiter: String,
        /// As for `key_value`.
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        types: BTreeMap<String, TextType>,
    },
    /// Fields at fixed byte offsets.
    Binary {
        /// Default byte order of the fields.
        #[serde(default)]
        order: ByteOrder,
        /// Exact frame length (checksum excluded). Without it, frames may be longer than the last
        /// field; shorter is always an error.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        length: Option<usize>,
        /// The fields.
        fields: Vec<BinaryField>,
    },
}

fn default_kv_separator() -> String {
    "=".to_owned()
}

fn default_kv_delimiter() -> String {
    ";".to_owned()
}

fn default_csv_delimiter() -> String {
    ",".to_owned()
}

/// How a text value is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TextType {
    /// Kept as text, even when it looks like a number (`"007"`, `"1.0"`).
    String,
    /// An integer or finite float.
    Number,
    /// `true`/`false`, `1`/`0`, `on`/`off` (any case).
    Bool,
}

/// One field of a binary layout: `raw * scale + offset_value` is the property value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BinaryField {
    /// Field name (the property name unless `properties` maps it). A leading `_` keeps it out of the
    /// reported values.
    pub name: String,
    /// Byte offset of the field in the frame.
    pub offset: usize,
    /// Wire type.
    #[serde(rename = "type")]
    pub ty: BinaryType,
    /// Byte order; defaults to the layout's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order: Option<ByteOrder>,
    /// Multiplier applied to the raw value; must be finite and non-zero.
    #[serde(default = "default_scale")]
    pub scale: f64,
    /// Added after scaling.
    #[serde(default)]
    pub offset_value: f64,
    /// A bit field within the integer: `"3..5"` (bits 3 and 4), `"3..=5"` (bits 3 to 5) or `"7"`;
    /// bit 0 is the least significant. Signed types sign-extend from the field's top bit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bits: Option<String>,
}

fn default_scale() -> f64 {
    1.0
}

/// Wire types of binary fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BinaryType {
    /// Unsigned 8-bit integer.
    U8,
    /// Signed 8-bit integer.
    I8,
    /// Unsigned 16-bit integer.
    U16,
    /// Signed 16-bit integer.
    I16,
    /// Unsigned 32-bit integer.
    U32,
    /// Signed 32-bit integer.
    I32,
    /// IEEE 754 single precision.
    F32,
    /// IEEE 754 double precision.
    F64,
}

impl BinaryType {
    /// Bytes taken on the wire.
    pub fn size(self) -> usize {
        match self {
            Self::U8 | Self::I8 => 1,
            Self::U16 | Self::I16 => 2,
            Self::U32 | Self::I32 | Self::F32 => 4,
            Self::F64 => 8,
        }
    }

    /// Whether this is an integer type (bit fields apply).
    pub fn is_integer(self) -> bool {
        !matches!(self, Self::F32 | Self::F64)
    }

    /// Whether this integer type is signed.
    pub fn is_signed(self) -> bool {
        matches!(self, Self::I8 | Self::I16 | Self::I32)
    }
}

/// How a device's reply to a command is recognised and matched to the pending request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplyConfig {
    /// The correlation scheme.
    pub correlate: CorrelateBy,
    /// With `correlate = "field"`: the field carrying the request's sequence number back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// Only frames whose field equals a value are replies (e.g. a message type byte); without it,
    /// any frame carrying the correlation field (or, for `next_frame`, any frame) is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub when: Option<FieldMatch>,
}

/// Correlation schemes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CorrelateBy {
    /// The reply carries the request's sequence number in a field.
    Field,
    /// Half-duplex buses: the next reply frame from the device answers the oldest pending request.
    NextFrame,
}

/// A test of one field's value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldMatch {
    /// Field name (or JSON pointer).
    pub field: String,
    /// Value it must have; numbers compare by value (`1` equals `1.0`).
    pub equals: serde_json::Value,
}

/// How commands are written to the device.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandsConfig {
    /// Writes desired values of writable properties.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub set: Option<CommandTemplate>,
    /// Action name → how an invocation is written.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub actions: BTreeMap<String, CommandTemplate>,
}

impl CommandsConfig {
    /// Whether no command is configured.
    pub fn is_empty(&self) -> bool {
        self.set.is_none() && self.actions.is_empty()
    }
}

/// One command: exactly one of `text`, `json` or `binary`.
///
/// Placeholders in text and JSON templates: `{id}` the device's id as its frames carry it (the
/// thing id read back through `id_template`), `{thing_id}`, `{seq}` sequence number, `{action}`,
/// `{input}` the whole action input, `{values}` every desired value, `{property}` and `{value}` for
/// one desired value (a `set` template using `{property}` sends one frame per property), and
/// `{name}` for a member of the action input or of the desired values. `{{` and `}}` are literal
/// braces. A JSON string that is exactly one placeholder becomes that value with its type.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandTemplate {
    /// A text payload, e.g. `"SET {property}={value}"`. The framing adds the line end and
    /// checksum.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// A JSON payload template.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub json: Option<serde_json::Value>,
    /// A binary payload: fixed bytes with fields written into them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub binary: Option<BinaryCommand>,
    /// How booleans are written in text templates, `[false, true]`, e.g. `["OFF", "ON"]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bools: Option<[String; 2]>,
    /// Whether the device answers this command. Defaults to true when `reply` is configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expect_reply: Option<bool>,
}

/// A binary command payload.
///
/// Each field takes its value from the action input or desired values by name; a field named like
/// the reply correlation field gets the sequence number (wrapped to its width), one named like
/// `id_field` gets the thing id (read back through `id_template`). A field with no value is an
/// error, so a `set` command with a binary body needs the whole desired state, not just the change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BinaryCommand {
    /// The payload before fields are written; its length is the payload length.
    pub bytes: Vec<u8>,
    /// Default byte order of the fields.
    #[serde(default)]
    pub order: ByteOrder,
    /// Fields written into `bytes`.
    #[serde(default)]
    pub fields: Vec<BinaryField>,
}

/// A `[bindings.frame]` table that cannot be used.
#[derive(Debug, Error)]
pub enum FrameConfigError {
    /// The table does not have the expected shape (unknown key, wrong type, missing key).
    #[error("{key}: {}", .source.message())]
    Parse {
        /// Key path of the offending value (`layout.fields[0].type`).
        key: String,
        /// What the deserializer said.
        #[source]
        source: toml::de::Error,
    },
    /// The table parses but says something impossible.
    #[error("{key}: {problem}")]
    Invalid {
        /// Key path of the offending value.
        key: String,
        /// Why it cannot be used.
        problem: ConfigProblem,
    },
}

impl FrameConfigError {
    pub(crate) fn invalid(key: impl Into<String>, problem: ConfigProblem) -> Self {
        Self::Invalid {
            key: key.into(),
            problem,
        }
    }

    /// Key path of the offending value, relative to `[bindings.frame]`.
    pub fn key(&self) -> &str {
        match self {
            Self::Parse { key, .. } | Self::Invalid { key, .. } => key,
        }
    }
}

/// Why a parsed binding cannot be used.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum ConfigProblem {
    /// A number outside what the key accepts.
    #[error("{value} is out of range ({min}..={max})")]
    OutOfRange {
        /// The value given.
        value: i128,
        /// Smallest accepted.
        min: i128,
        /// Largest accepted.
        max: i128,
    },
    /// A scale of zero, infinity or NaN cannot be inverted when encoding.
    #[error("scale must be finite and non-zero, got {0}")]
    BadScale(f64),
    /// `offset_value` must be a finite number.
    #[error("offset_value must be finite, got {0}")]
    BadOffsetValue(f64),
    /// A `bits` value that is not `N`, `A..B` or `A..=B`.
    #[error("`{0}` is not a bit range (write \"3\", \"3..5\" or \"3..=5\")")]
    BitsSyntax(String),
    /// A bit range that is empty or runs past the integer.
    #[error("bit range {lo}..{hi} does not fit a {type_bits}-bit integer")]
    BitsOutsideType {
        /// First bit.
        lo: u32,
        /// One past the last bit.
        hi: u32,
        /// Width of the field's type.
        type_bits: u32,
    },
    /// Bit fields are for integer types.
    #[error("bit fields need an integer type")]
    BitsOnFloat,
    /// A field that ends past the frame length.
    #[error("field ends at byte {end}, past the {length}-byte frame")]
    FieldPastEnd {
        /// One past the field's last byte.
        end: usize,
        /// The frame length it must fit in.
        length: usize,
    },
    /// Two fields share bytes (only bit fields of the same integer may, with disjoint bits).
    #[error("overlaps field `{0}`")]
    FieldsOverlap(String),
    /// A name used twice.
    #[error("`{0}` is defined twice")]
    DuplicateName(String),
    /// A name or string that must not be empty.
    #[error("must not be empty")]
    Empty,
    /// A field referred to that the layout does not have.
    #[error("the layout has no field `{0}`")]
    NoSuchField(String),
    /// Two roles given the same byte.
    #[error("byte 0x{byte:02X} is also used as `{other}`")]
    ByteClash {
        /// The byte.
        byte: u8,
        /// The other key using it.
        other: &'static str,
    },
    /// A key needed by another key that is set.
    #[error("required when `{because}` is set")]
    Required {
        /// The key that needs it.
        because: &'static str,
    },
    /// A key that means nothing with the rest of the table.
    #[error("not used {0}")]
    NotApplicable(&'static str),
    /// A binary checksum could contain the line end or end delimiter.
    #[error(
        "a binary checksum may contain the frame's end byte; use encoding = \"hex\" or an escape byte"
    )]
    ChecksumNeedsHex,
    /// A fixed length too short for its checksum.
    #[error("{length} bytes cannot hold the {needed}-byte checksum trailer")]
    TooShortForChecksum {
        /// Frame length.
        length: usize,
        /// Trailer length.
        needed: usize,
    },
    /// A template that does not parse.
    #[error("bad template: {0}")]
    Template(&'static str),
    /// An id template that is not one placeholder with optional text around it.
    #[error("bad id template: {0}")]
    IdTemplate(&'static str),
    /// A command must have exactly one of `text`, `json` or `binary`.
    #[error("give exactly one of `text`, `json` or `binary`")]
    TemplateKind,
    /// A command expects a reply correlated by field but never sends the sequence number.
    #[error("replies are correlated by `{0}` but this command never sends the sequence number")]
    NoSequenceSent(String),
    /// A sequence or id field of a binary command that is scaled or not an integer.
    #[error("field `{0}` carries a sequence number or id and must be an unscaled integer")]
    NotPlainInteger(String),
    /// A text template containing the line end that the framing adds.
    #[error("contains a line end; the lines framing adds it")]
    LineEndInTemplate,
}

impl FrameBinding {
    /// Reads a `[bindings.frame]` table, naming the key of the first value that does not fit.
    ///
    /// This checks the shape only; [`FrameBinding::validate`] (or building a
    /// [`FrameCodec`](super::FrameCodec)) checks the meaning.
    pub fn from_toml(table: &toml::Table) -> Result<Self, FrameConfigError> {
        let value = toml::Value::Table(table.clone());
        serde_path_to_error::deserialize(value).map_err(|err| {
            let key = err.path().to_string();
            // Tagged tables (`layout`, `framing`) are buffered before they are read, which loses the
            // path inside them; for the list of binary fields, read it again alone to find it.
            let layout = table.get("layout");
            if key == "layout"
                && layout
                    .and_then(|l| l.get("kind"))
                    .and_then(toml::Value::as_str)
                    == Some("binary")
                && let Some(fields) = layout.and_then(|l| l.get("fields"))
                && let Err(inner) =
                    serde_path_to_error::deserialize::<_, Vec<BinaryField>>(fields.clone())
            {
                return FrameConfigError::Parse {
                    key: format!("layout.fields{}", inner.path()),
                    source: inner.into_inner(),
                };
            }
            FrameConfigError::Parse {
                key,
                source: err.into_inner(),
            }
        })
    }

    /// Checks that the binding can be compiled into a codec, naming the key and the reason of the
    /// first problem found.
    pub fn validate(&self) -> Result<(), FrameConfigError> {
        super::FrameCodec::new(self).map(|_| ())
    }
}
