//! MessagePack straight into [`Value`]: one pass over the frame, no serde visitor between the
//! bytes and the tree.
//!
//! Every EVENT a subscriber reads and every message a MessagePack peer sends goes through here,
//! so the generic path (rmp-serde driving a serde visitor) was worth replacing. It accepts
//! exactly what that path accepted, value for value:
//! - a `str` that is not UTF-8 becomes [`Value::Bytes`], as rmp-serde hands such strings on;
//! - dict keys are strings (or binaries holding UTF-8); anything else is refused;
//! - extension types and the reserved marker `0xc1` are refused;
//! - nesting deeper than [`MAX_DEPTH`] is refused, so a hostile peer cannot exhaust the stack;
//! - a declared length is never trusted for an allocation beyond what the frame can hold.
//!
//! The fuzz target `wamp_msgpack` checks this decoder against that path ([`reference_decode`])
//! on every input.

use bytes::Bytes;

use crate::value::{Dict, Flavor, MAX_DEPTH, Seed, Value};

/// Why a MessagePack frame is not a value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MsgPackError {
    #[error("unexpected end of MessagePack data")]
    Truncated,
    #[error("MessagePack marker 0x{0:02x} is not a WAMP value")]
    Marker(u8),
    #[error("a dict key must be a string")]
    Key,
    #[error("a dict key is not UTF-8")]
    KeyUtf8,
    #[error("nesting deeper than {MAX_DEPTH}")]
    TooDeep,
    #[error("trailing bytes after message")]
    Trailing,
}

/// Decodes one value that fills `bytes` exactly.
pub fn decode(bytes: &[u8]) -> Result<Value, MsgPackError> {
    let mut r = Reader { buf: bytes, pos: 0 };
    let v = r.value(0)?;
    if r.pos != bytes.len() {
        return Err(MsgPackError::Trailing);
    }
    Ok(v)
}

/// The generic path this decoder replaced (rmp-serde driving the [`Seed`] visitor): the
/// reference its tests and the fuzz target `wamp_msgpack` hold it to. `None` where that path
/// refused the bytes.
pub fn reference_decode(bytes: &[u8]) -> Option<Value> {
    use serde::de::DeserializeSeed as _;
    let mut rest = bytes;
    let mut de = rmp_serde::Deserializer::new(&mut rest);
    let v = Seed::new(Flavor::Binary).deserialize(&mut de).ok()?;
    rest.is_empty().then_some(v)
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], MsgPackError> {
        let end = self.pos.checked_add(n).ok_or(MsgPackError::Truncated)?;
        let s = self.buf.get(self.pos..end).ok_or(MsgPackError::Truncated)?;
        self.pos = end;
        Ok(s)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], MsgPackError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    fn u8(&mut self) -> Result<u8, MsgPackError> {
        let b = *self.buf.get(self.pos).ok_or(MsgPackError::Truncated)?;
        self.pos += 1;
        Ok(b)
    }

    fn u16(&mut self) -> Result<u16, MsgPackError> {
        self.array().map(u16::from_be_bytes)
    }

    fn u32(&mut self) -> Result<u32, MsgPackError> {
        self.array().map(u32::from_be_bytes)
    }

    fn u64(&mut self) -> Result<u64, MsgPackError> {
        self.array().map(u64::from_be_bytes)
    }

    /// A length of 1, 2 or 4 bytes (`width` 0, 1 or 2: markers of one kind come in that order).
    fn length(&mut self, width: u8) -> Result<usize, MsgPackError> {
        let n = match width {
            0 => u32::from(self.u8()?),
            1 => u32::from(self.u16()?),
            _ => self.u32()?,
        };
        // Beyond the address space it cannot be in the frame either.
        Ok(usize::try_from(n).unwrap_or(usize::MAX))
    }

    /// A count of items, each at least one byte: never more than what is left, so it can size
    /// an allocation.
    fn capacity(&self, n: usize) -> usize {
        n.min(self.buf.len() - self.pos)
    }

    fn value(&mut self, depth: usize) -> Result<Value, MsgPackError> {
        let m = self.u8()?;
        Ok(match m {
            0x00..=0x7f => Value::Int(i64::from(m)),
            0x80..=0x8f => self.map(usize::from(m & 0x0f), depth)?,
            0x90..=0x9f => self.list(usize::from(m & 0x0f), depth)?,
            0xa0..=0xbf => self.str(usize::from(m & 0x1f))?,
            0xc0 => Value::Null,
            0xc2 => Value::Bool(false),
            0xc3 => Value::Bool(true),
            0xc4..=0xc6 => {
                let n = self.length(m - 0xc4)?;
                self.bin(n)?
            }
            0xca => Value::Float(f64::from(f32::from_bits(self.u32()?))),
            0xcb => Value::Float(f64::from_bits(self.u64()?)),
            0xcc => Value::Int(i64::from(self.u8()?)),
            0xcd => Value::Int(i64::from(self.u16()?)),
            0xce => Value::Int(i64::from(self.u32()?)),
            0xcf => Value::from(self.u64()?),
            0xd0 => Value::Int(i64::from(i8::from_be_bytes(self.array()?))),
            0xd1 => Value::Int(i64::from(i16::from_be_bytes(self.array()?))),
            0xd2 => Value::Int(i64::from(i32::from_be_bytes(self.array()?))),
            0xd3 => Value::Int(i64::from_be_bytes(self.array()?)),
            0xd9..=0xdb => {
                let n = self.length(m - 0xd9)?;
                self.str(n)?
            }
            0xdc | 0xdd => {
                let n = self.length(m - 0xdb)?;
                self.list(n, depth)?
            }
            0xde | 0xdf => {
                let n = self.length(m - 0xdd)?;
                self.map(n, depth)?
            }
            0xe0..=0xff => Value::Int(i64::from(m as i8)),
            // 0xc1 (never used), 0xc7..=0xc9 and 0xd4..=0xd8 (extension types).
            _ => return Err(MsgPackError::Marker(m)),
        })
    }

    fn str(&mut self, n: usize) -> Result<Value, MsgPackError> {
        let raw = self.take(n)?;
        Ok(match std::str::from_utf8(raw) {
            Ok(s) => Value::Str(s.to_owned()),
            Err(_) => Value::Bytes(Bytes::copy_from_slice(raw)),
        })
    }

    fn bin(&mut self, n: usize) -> Result<Value, MsgPackError> {
        self.take(n)
            .map(|b| Value::Bytes(Bytes::copy_from_slice(b)))
    }

    fn list(&mut self, n: usize, depth: usize) -> Result<Value, MsgPackError> {
        if depth >= MAX_DEPTH {
            return Err(MsgPackError::TooDeep);
        }
        let mut out = Vec::with_capacity(self.capacity(n).min(64));
        for _ in 0..n {
            out.push(self.value(depth + 1)?);
        }
        Ok(Value::List(out))
    }

    fn map(&mut self, n: usize, depth: usize) -> Result<Value, MsgPackError> {
        if depth >= MAX_DEPTH {
            return Err(MsgPackError::TooDeep);
        }
        let mut out = Dict::new();
        for _ in 0..n {
            let key = self.key()?;
            let v = self.value(depth + 1)?;
            out.insert(key, v);
        }
        Ok(Value::Dict(out))
    }

    fn key(&mut self) -> Result<String, MsgPackError> {
        let m = self.u8()?;
        let n = match m {
            0xa0..=0xbf => usize::from(m & 0x1f),
            0xd9..=0xdb => self.length(m - 0xd9)?,
            0xc4..=0xc6 => self.length(m - 0xc4)?,
            _ => return Err(MsgPackError::Key),
        };
        let raw = self.take(n)?;
        std::str::from_utf8(raw)
            .map(str::to_owned)
            .map_err(|_| MsgPackError::KeyUtf8)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::value::Ser;

    use super::reference_decode as reference;

    fn encode(v: &Value) -> Vec<u8> {
        rmp_serde::to_vec(&Ser(v, Flavor::Binary)).unwrap()
    }

    #[test]
    fn every_kind_of_value_decodes_as_before() {
        let mut inner = Dict::new();
        inner.insert("seq".into(), Value::Int(123_456));
        inner.insert("t".into(), Value::Float(30.009999999999998));
        inner.insert("".into(), Value::Null);
        let mut d = Dict::new();
        d.insert("values".into(), Value::Dict(inner));
        d.insert("bin".into(), Value::Bytes(Bytes::from_static(b"\x00\xff")));
        d.insert("long".into(), Value::Str("x".repeat(70_000)));
        let values = vec![
            Value::Null,
            Value::Bool(true),
            Value::Bool(false),
            Value::Int(0),
            Value::Int(127),
            Value::Int(128),
            Value::Int(-1),
            Value::Int(-32),
            Value::Int(-33),
            Value::Int(i64::MIN),
            Value::Int(i64::MAX),
            Value::UInt(u64::MAX),
            Value::Float(-0.0),
            Value::Float(f64::INFINITY),
            Value::Str(String::new()),
            Value::Str("é".repeat(20)),
            Value::Str("y".repeat(300)),
            Value::List((0..20).map(Value::Int).collect()),
            Value::List(vec![Value::Int(1); 70_000]),
            Value::Dict(d),
        ];
        for v in values {
            let bytes = encode(&v);
            assert_eq!(decode(&bytes), Ok(v.clone()));
            assert_eq!(reference(&bytes), Some(v));
        }
    }

    #[test]
    fn hand_made_encodings_agree_with_the_reference() {
        let cases: &[&[u8]] = &[
            b"\xca\x3f\xc0\x00\x00",   // float32 1.5
            b"\xd0\x80",               // int8 -128
            b"\xd1\x80\x00",           // int16
            b"\xd2\x80\x00\x00\x00",   // int32
            b"\xcd\x01\x00",           // uint16
            b"\xa2\xff\xfe",           // str that is not UTF-8: bytes
            b"\x81\xc4\x01k\x01",      // a binary key holding UTF-8
            b"\x82\xa1a\x01\xa1a\x02", // a repeated key: the last wins
            b"\xdc\x00\x01\x01",       // array16
            b"\xde\x00\x01\xa1a\xc0",  // map16
            b"\xdb\x00\x00\x00\x01z",  // str32
        ];
        for c in cases {
            let ours = decode(c).ok();
            assert!(ours.is_some(), "{c:?}");
            assert_eq!(ours, reference(c), "{c:?}");
        }
    }

    #[test]
    fn what_the_reference_refuses_is_refused() {
        let cases: &[&[u8]] = &[
            b"",
            b"\xc1",                     // reserved
            b"\xd4\x01\x00",             // fixext1
            b"\xc7\x01\x05\x00",         // ext8
            b"\x91",                     // array missing its item
            b"\x81\x01\x02",             // integer key
            b"\x81\xa2\xff\xfe\x01",     // key that is not UTF-8
            b"\x81\xc0\x01",             // nil key
            b"\xa5abc",                  // string shorter than declared
            b"\xdd\xff\xff\xff\xff",     // huge array, no items
            b"\xdf\xff\xff\xff\xff",     // huge map, no items
            b"\xc6\xff\xff\xff\xff\x00", // huge binary
            b"\x90\x00",                 // trailing byte
            b"\xcb\x00\x00",             // short float
        ];
        for c in cases {
            assert!(decode(c).is_err(), "{c:?}");
            assert_eq!(reference(c), None, "{c:?}");
        }
    }

    #[test]
    fn nesting_is_bounded() {
        // MAX_DEPTH lists inside one another, and one more.
        let deepest = [vec![0x91u8; MAX_DEPTH - 1], vec![0x90]].concat();
        assert!(decode(&deepest).is_ok());
        assert!(reference(&deepest).is_some());
        let too_deep = [vec![0x91u8; MAX_DEPTH + 1], vec![0x90]].concat();
        assert_eq!(decode(&too_deep), Err(MsgPackError::TooDeep));
        assert_eq!(reference(&too_deep), None);
        let maps = [0x81u8, 0xa1, b'k'].repeat(MAX_DEPTH + 1);
        assert_eq!(
            decode(&[maps, vec![0xc0]].concat()),
            Err(MsgPackError::TooDeep)
        );
    }
}
