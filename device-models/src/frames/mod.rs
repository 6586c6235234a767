//! Frame codecs for raw UDP, TCP and serial devices, described by data (a thing type's
//! `[bindings.frame]` table) so that a new kind of device needs no code.
//!
//! Bytes → frame → fields → thing id, property values, reply:
//!
//! | module | holds |
//! | --- | --- |
//! | `config` | [`FrameBinding`], the `[bindings.frame]` table as serde types, and [`FrameConfigError`] |
//! | `framing` | [`Framer`] and the stream [`FrameDecoder`]: datagrams, lines, length prefixes, delimiters with escapes, fixed length |
//! | `checksum` | CRC-16/MODBUS, CRC-32, XOR-8 and the trailer that carries them (binary or hex) |
//! | `layout` | payload ↔ named fields; JSON objects and pointers; [`LayoutError`] |
//! | `text` | `key=value` pairs and CSV, and how text values are typed |
//! | `binary` | fixed binary layouts: integers, floats, bit fields, scaling |
//! | `template` | `{placeholder}` templates and the id template (`"beacon-{:04x}"`) |
//! | `command` | commands from text/JSON/binary templates, and reply correlation |
//! | `errors` | [`FrameError`], [`LayoutError`] and [`EncodeError`], shared by the stages |
//! | `codec` | [`FrameCodec`], the compiled binding: `decode`, `encode_command`, `encode_report` |
//!
//! Use: build a [`FrameCodec`] once per thing type; per connection (or serial line, or UDP
//! listener) take a [`FrameDecoder`] from [`FrameCodec::decoder`], push the bytes read, and hand
//! each frame's payload to [`FrameCodec::decode`]. Everything here is synchronous and does no I/O.
//! Decoders never panic and never buffer more than the binding's `max_frame` for one frame, so fuzz
//! targets are one line each: `let _ = codec.decode(data);` and
//! `decoder.push(data); while let Ok(Some(_)) = decoder.next_frame() {}`.
//!
//! ```
//! use device_models::frames::{FrameBinding, FrameCodec};
//!
//! let table: toml::Table = toml::from_str(r#"
//!     id_field = "id"
//!     framing = { kind = "lines" }
//!     layout = { kind = "key_value" }
//! "#)?;
//! let codec = FrameCodec::new(&FrameBinding::from_toml(&table)?)?;
//! let mut decoder = codec.decoder();
//! decoder.push(b"id=kitchen;t=21.5;h=4");
//! assert!(decoder.next_frame()?.is_none()); // need more bytes
//! decoder.push(b"0\n");
//! let frame = decoder.next_frame()?.ok_or("no frame")?;
//! let decoded = codec.decode(&frame.payload)?;
//! assert_eq!(decoded.thing_id.as_deref(), Some("kitchen"));
//! assert_eq!(decoded.values["h"], 40);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod binary;
mod checksum;
mod codec;
mod command;
mod config;
mod errors;
mod framing;
mod layout;
mod template;
mod text;

#[cfg(test)]
mod tests;

pub use checksum::{crc16_modbus, crc32_ieee, xor8};
pub use codec::{DecodeError, DecodedFrame, FrameCodec};
pub use command::{Command, CommandFrame, Correlation, ReplyInfo};
pub use config::{
    BinaryCommand, BinaryField, BinaryType, ByteOrder, ChecksumConfig, ChecksumEncoding,
    ChecksumKind, CommandTemplate, CommandsConfig, ConfigProblem, CorrelateBy, DEFAULT_MAX_FRAME,
    FieldMatch, FrameBinding, FrameConfigError, FramingConfig, LayoutConfig, LengthWidth,
    LineEnding, MAX_FRAME_LIMIT, ReplyConfig, TextType,
};
pub use errors::{EncodeError, FrameError, LayoutError};
pub use framing::{Frame, FrameDecoder, Framer};
pub use template::{MAX_THING_ID_LEN, is_valid_thing_id};
