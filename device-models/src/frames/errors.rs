//! The errors the codec's stages share: [`FrameError`] (framing and checksums), [`LayoutError`]
//! (payload layouts, text and binary) and [`EncodeError`] (writing reports and commands, which
//! goes through both). Kept apart from the stages so none of them imports another for its error.

use thiserror::Error;

use super::config::TextType;

/// Why bytes could not be framed or a payload could not be wrapped into a frame.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum FrameError {
    /// A frame larger than the cap (`len` counts the bytes seen so far, so it may be a lower bound).
    #[error("frame of at least {len} bytes exceeds the {max}-byte cap")]
    Oversize {
        /// Bytes seen or announced.
        len: u64,
        /// The cap.
        max: usize,
    },
    /// A length prefix announcing fewer bytes than the header and checksum take.
    #[error(
        "length field gives a {total}-byte frame, shorter than its {min}-byte header and checksum"
    )]
    BadLength {
        /// Frame size the length field works out to (may be negative with `adjust`).
        total: i128,
        /// Smallest possible frame.
        min: usize,
    },
    /// An escape byte followed by a byte that is no substitute.
    #[error("escape byte followed by 0x{byte:02X}, which is no escape substitute")]
    InvalidEscape {
        /// The byte after the escape.
        byte: u8,
    },
    /// A frame too short to hold its checksum (and the skipped bytes before it).
    #[error("frame of {len} bytes is too short for its checksum ({needed} bytes needed)")]
    TooShortForChecksum {
        /// Frame length.
        len: usize,
        /// Least length with a checksum.
        needed: usize,
    },
    /// A hex checksum trailer whose separator or digits are wrong.
    #[error("checksum trailer is not the separator followed by hex digits")]
    BadChecksumText,
    /// The checksum does not match the frame.
    #[error("checksum mismatch: frame carries 0x{received:X}, content gives 0x{computed:X}")]
    ChecksumMismatch {
        /// Checksum in the frame.
        received: u32,
        /// Checksum of the content.
        computed: u32,
    },
    /// On send: the length does not fit the length field.
    #[error("a {len}-byte frame does not fit a {width}-byte length field")]
    LengthOverflow {
        /// Frame length.
        len: usize,
        /// Bytes of the length field.
        width: usize,
    },
    /// On send: the payload holds a byte that ends the frame and cannot be escaped.
    #[error("payload contains byte 0x{byte:02X}, which ends a frame and has no escape")]
    ForbiddenByte {
        /// The byte.
        byte: u8,
    },
    /// On send: an empty frame, which receivers skip.
    #[error("empty frames are skipped by receivers and cannot be sent")]
    EmptyFrame,
    /// On send: a fixed-length frame of the wrong size, or a payload shorter than the bytes before
    /// the length field.
    #[error("payload of {len} bytes, expected {expected}")]
    WrongLength {
        /// Payload length.
        len: usize,
        /// Required length (a minimum for length-prefixed headers).
        expected: usize,
    },
}

/// Why a frame's payload does not fit the layout, or values do not fit a payload.
#[derive(Debug, Error)]
pub enum LayoutError {
    /// A text layout got bytes that are not UTF-8.
    #[error("payload is not UTF-8 text")]
    NotUtf8,
    /// The JSON layout got something that does not parse.
    #[error("payload is not JSON")]
    Json(#[source] serde_json::Error),
    /// The JSON layout got a value that is not an object.
    #[error("JSON payload is not an object")]
    NotAnObject,
    /// A `key_value` piece with no separator or an empty key.
    #[error("pair {index} has no key and separator")]
    MalformedPair {
        /// Position of the pair, from 0.
        index: usize,
    },
    /// A CSV line with the wrong number of columns.
    #[error("{found} CSV fields, expected {expected}")]
    FieldCount {
        /// Columns configured.
        expected: usize,
        /// Columns found.
        found: usize,
    },
    /// A text value that does not read as its declared type.
    #[error("field `{field}` is not a {expected:?}")]
    BadText {
        /// The field.
        field: String,
        /// Its declared type.
        expected: TextType,
    },
    /// A binary frame shorter than its fields.
    #[error("frame of {len} bytes is too short, fields need {needed}")]
    Truncated {
        /// Frame length.
        len: usize,
        /// Bytes the fields need.
        needed: usize,
    },
    /// A binary frame of the wrong length when the layout fixes one.
    #[error("frame of {len} bytes, the layout needs exactly {expected}")]
    WrongLength {
        /// Frame length.
        len: usize,
        /// Configured length.
        expected: usize,
    },
    /// On encode: a binary field with no value given.
    #[error("no value for field `{field}`")]
    MissingValue {
        /// The field.
        field: String,
    },
    /// On encode: a binary field given something other than a number or bool.
    #[error("field `{field}` needs a number")]
    NotANumber {
        /// The field.
        field: String,
    },
    /// On encode: a value that does not fit the field after scaling.
    #[error("value {value} of field `{field}` is outside {min}..={max}")]
    OutOfRange {
        /// The field.
        field: String,
        /// Value given.
        value: f64,
        /// Smallest value the field holds.
        min: f64,
        /// Largest value the field holds.
        max: f64,
    },
    /// On encode: a text value containing the layout's separator, delimiter or a line end.
    #[error("field `{field}` contains a separator, delimiter or line end")]
    Unrepresentable {
        /// The field.
        field: String,
    },
}

/// Why a report or command could not be written.
#[derive(Debug, Error)]
pub enum EncodeError {
    /// `set` was asked for but the binding has no `commands.set`.
    #[error("the binding has no `commands.set`")]
    NoSetCommand,
    /// The binding has no command for this action.
    #[error("the binding has no command for action `{0}`")]
    UnknownAction(String),
    /// A per-property `set` with no desired values.
    #[error("no desired values to send")]
    NothingToSet,
    /// A placeholder or binary field with no value in the input or desired values.
    #[error("no value for `{0}`")]
    MissingValue(String),
    /// A thing id that does not fit the id template (binary ids must read back as numbers).
    #[error("thing id `{0}` does not fit the id template")]
    BadThingId(String),
    /// Values that do not fit the layout.
    #[error(transparent)]
    Layout(#[from] LayoutError),
    /// A payload that cannot be framed.
    #[error(transparent)]
    Frame(#[from] FrameError),
}
