//! Dynamic WAMP values: what a payload or a details dict can hold.
//!
//! WAMP is serializer-agnostic, so values are kept in one enum that maps onto JSON and MessagePack.
//! Byte strings need care: MessagePack has a `bin` type, JSON does not, so WAMP's convention sends
//! bytes in JSON as a string starting with NUL followed by standard base64. Serialization therefore
//! takes a [`Flavor`] that says which convention applies; the same value encodes to `bin` in
//! MessagePack and to `"\u0000<base64>"` in JSON, and decodes back to [`Value::Bytes`] from either.

use std::collections::BTreeMap;
use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Serialize, Serializer};

/// A WAMP dictionary: string keys, any values. Ordered so encodings are deterministic.
pub type Dict = BTreeMap<String, Value>;
/// A WAMP list.
pub type List = Vec<Value>;

/// Deepest nesting accepted when decoding, so a hostile peer cannot exhaust the stack.
pub const MAX_DEPTH: usize = 64;

/// One dynamic value of a WAMP message.
#[derive(Clone, Debug, PartialEq, Default)]
pub enum Value {
    #[default]
    Null,
    Bool(bool),
    /// Integers that fit an `i64` (all WAMP ids do).
    Int(i64),
    /// Integers above `i64::MAX`.
    UInt(u64),
    Float(f64),
    Str(String),
    Bytes(Bytes),
    List(List),
    Dict(Dict),
}

impl Value {
    /// The value as a non-negative integer, if it is one.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Value::Int(i) => u64::try_from(i).ok(),
            Value::UInt(u) => Some(u),
            _ => None,
        }
    }

    /// The value as an `i64`, if it is an integer that fits.
    pub fn as_i64(&self) -> Option<i64> {
        match *self {
            Value::Int(i) => Some(i),
            Value::UInt(u) => i64::try_from(u).ok(),
            _ => None,
        }
    }

    /// The value as a float; integers are converted.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Value::Float(f) => Some(f),
            Value::Int(i) => Some(i as f64),
            Value::UInt(u) => Some(u as f64),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            Value::Bool(b) => Some(b),
            _ => None,
        }
    }

    pub fn as_list(&self) -> Option<&List> {
        match self {
            Value::List(l) => Some(l),
            _ => None,
        }
    }

    pub fn as_dict(&self) -> Option<&Dict> {
        match self {
            Value::Dict(d) => Some(d),
            _ => None,
        }
    }

    /// A short name of the value's type, for error messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "bool",
            Value::Int(_) | Value::UInt(_) => "integer",
            Value::Float(_) => "float",
            Value::Str(_) => "string",
            Value::Bytes(_) => "bytes",
            Value::List(_) => "list",
            Value::Dict(_) => "dict",
        }
    }
}

impl From<&str> for Value {
    fn from(s: &str) -> Self {
        Value::Str(s.to_owned())
    }
}
impl From<String> for Value {
    fn from(s: String) -> Self {
        Value::Str(s)
    }
}
impl From<bool> for Value {
    fn from(b: bool) -> Self {
        Value::Bool(b)
    }
}
impl From<i64> for Value {
    fn from(i: i64) -> Self {
        Value::Int(i)
    }
}
impl From<u64> for Value {
    fn from(u: u64) -> Self {
        i64::try_from(u).map_or(Value::UInt(u), Value::Int)
    }
}
impl From<f64> for Value {
    fn from(f: f64) -> Self {
        Value::Float(f)
    }
}
impl From<Bytes> for Value {
    fn from(b: Bytes) -> Self {
        Value::Bytes(b)
    }
}
impl From<List> for Value {
    fn from(l: List) -> Self {
        Value::List(l)
    }
}
impl From<Dict> for Value {
    fn from(d: Dict) -> Self {
        Value::Dict(d)
    }
}

/// Which wire convention a value is (de)serialized with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavor {
    /// Bytes travel as `"\0" + base64` strings.
    Json,
    /// Bytes travel as native binary.
    Binary,
}

/// Serializes a [`Value`] under a [`Flavor`].
pub struct Ser<'a>(pub &'a Value, pub Flavor);

impl Serialize for Ser<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Value::Null => s.serialize_unit(),
            Value::Bool(b) => s.serialize_bool(*b),
            Value::Int(i) => s.serialize_i64(*i),
            Value::UInt(u) => s.serialize_u64(*u),
            Value::Float(f) => s.serialize_f64(*f),
            Value::Str(v) => s.serialize_str(v),
            Value::Bytes(b) => match self.1 {
                Flavor::Binary => s.serialize_bytes(b),
                Flavor::Json => {
                    let mut text = String::with_capacity(1 + b.len().div_ceil(3) * 4);
                    text.push('\0');
                    BASE64.encode_string(b, &mut text);
                    s.serialize_str(&text)
                }
            },
            Value::List(l) => ListSer(l, self.1).serialize(s),
            Value::Dict(d) => DictSer(d, self.1).serialize(s),
        }
    }
}

/// Serializes a list of values under a flavor.
pub struct ListSer<'a>(pub &'a [Value], pub Flavor);

impl Serialize for ListSer<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.0.len()))?;
        for v in self.0 {
            seq.serialize_element(&Ser(v, self.1))?;
        }
        seq.end()
    }
}

/// Serializes a dict under a flavor.
pub struct DictSer<'a>(pub &'a Dict, pub Flavor);

impl Serialize for DictSer<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in self.0 {
            map.serialize_entry(k, &Ser(v, self.1))?;
        }
        map.end()
    }
}

/// Deserializes a [`Value`] under a flavor, refusing nesting deeper than [`MAX_DEPTH`].
#[derive(Clone, Copy)]
pub struct Seed {
    pub flavor: Flavor,
    pub depth: usize,
}

impl Seed {
    pub fn new(flavor: Flavor) -> Self {
        Seed { flavor, depth: 0 }
    }

    fn nested<E: de::Error>(self) -> Result<Seed, E> {
        if self.depth >= MAX_DEPTH {
            return Err(E::custom(format!("nesting deeper than {MAX_DEPTH}")));
        }
        Ok(Seed {
            flavor: self.flavor,
            depth: self.depth + 1,
        })
    }

    fn string<E: de::Error>(self, s: &str) -> Result<Value, E> {
        if self.flavor == Flavor::Json
            && let Some(b64) = s.strip_prefix('\0')
        {
            return BASE64
                .decode(b64)
                .map(|b| Value::Bytes(Bytes::from(b)))
                .map_err(|e| E::custom(format!("bad base64 in binary string: {e}")));
        }
        Ok(Value::Str(s.to_owned()))
    }
}

impl<'de> DeserializeSeed<'de> for Seed {
    type Value = Value;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Seed {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a WAMP value")
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_some<D: de::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Int(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Value::Float(v))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        self.string(v)
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Value, E> {
        if self.flavor == Flavor::Json && v.starts_with('\0') {
            return self.string(&v);
        }
        Ok(Value::Str(v))
    }
    fn visit_bytes<E>(self, v: &[u8]) -> Result<Value, E> {
        Ok(Value::Bytes(Bytes::copy_from_slice(v)))
    }
    fn visit_byte_buf<E>(self, v: Vec<u8>) -> Result<Value, E> {
        Ok(Value::Bytes(Bytes::from(v)))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let inner = self.nested()?;
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
        while let Some(v) = seq.next_element_seed(inner)? {
            out.push(v);
        }
        Ok(Value::List(out))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let inner = self.nested()?;
        let mut out = Dict::new();
        while let Some(key) = map.next_key_seed(KeySeed)? {
            let v = map.next_value_seed(inner)?;
            out.insert(key, v);
        }
        Ok(Value::Dict(out))
    }
}

/// Dict keys must be strings; anything else is refused.
struct KeySeed;

impl<'de> DeserializeSeed<'de> for KeySeed {
    type Value = String;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<String, D::Error> {
        d.deserialize_str(self)
    }
}

impl Visitor<'_> for KeySeed {
    type Value = String;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string dict key")
    }
    fn visit_str<E>(self, v: &str) -> Result<String, E> {
        Ok(v.to_owned())
    }
    fn visit_string<E>(self, v: String) -> Result<String, E> {
        Ok(v)
    }
    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<String, E> {
        std::str::from_utf8(v)
            .map(str::to_owned)
            .map_err(|_| E::custom("dict key is not UTF-8"))
    }
}

/// Converts a JSON value (as used by device models) into a WAMP value.
impl From<serde_json::Value> for Value {
    fn from(v: serde_json::Value) -> Self {
        match v {
            serde_json::Value::Null => Value::Null,
            serde_json::Value::Bool(b) => Value::Bool(b),
            serde_json::Value::Number(n) => {
                if let Some(i) = n.as_i64() {
                    Value::Int(i)
                } else if let Some(u) = n.as_u64() {
                    Value::UInt(u)
                } else {
                    Value::Float(n.as_f64().unwrap_or(0.0))
                }
            }
            serde_json::Value::String(s) => Value::Str(s),
            serde_json::Value::Array(a) => Value::List(a.into_iter().map(Value::from).collect()),
            serde_json::Value::Object(o) => {
                Value::Dict(o.into_iter().map(|(k, v)| (k, Value::from(v))).collect())
            }
        }
    }
}

/// Converts a WAMP value into JSON; bytes become WAMP's `"\0" + base64` string.
impl From<&Value> for serde_json::Value {
    fn from(v: &Value) -> Self {
        match v {
            Value::Null => serde_json::Value::Null,
            Value::Bool(b) => serde_json::Value::Bool(*b),
            Value::Int(i) => serde_json::Value::from(*i),
            Value::UInt(u) => serde_json::Value::from(*u),
            Value::Float(f) => serde_json::Number::from_f64(*f)
                .map_or(serde_json::Value::Null, serde_json::Value::Number),
            Value::Str(s) => serde_json::Value::String(s.clone()),
            Value::Bytes(b) => serde_json::Value::String(format!("\0{}", BASE64.encode(b))),
            Value::List(l) => serde_json::Value::Array(l.iter().map(Into::into).collect()),
            Value::Dict(d) => {
                serde_json::Value::Object(d.iter().map(|(k, v)| (k.clone(), v.into())).collect())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json_roundtrip(v: &Value) -> Value {
        let text = serde_json::to_string(&Ser(v, Flavor::Json)).unwrap();
        let mut de = serde_json::Deserializer::from_str(&text);
        Seed::new(Flavor::Json).deserialize(&mut de).unwrap()
    }

    fn msgpack_roundtrip(v: &Value) -> Value {
        let bytes = rmp_serde::to_vec(&Ser(v, Flavor::Binary)).unwrap();
        let mut de = rmp_serde::Deserializer::from_read_ref(&bytes);
        Seed::new(Flavor::Binary).deserialize(&mut de).unwrap()
    }

    fn sample() -> Value {
        let mut d = Dict::new();
        d.insert("n".into(), Value::Null);
        d.insert("b".into(), Value::Bool(true));
        d.insert("i".into(), Value::Int(-7));
        d.insert("u".into(), Value::UInt(u64::MAX));
        d.insert("f".into(), Value::Float(1.5));
        d.insert("s".into(), Value::from("héllo"));
        d.insert(
            "x".into(),
            Value::Bytes(Bytes::from_static(&[0, 1, 2, 255])),
        );
        d.insert(
            "l".into(),
            Value::List(vec![Value::Int(1), Value::from("two")]),
        );
        Value::Dict(d)
    }

    #[test]
    fn roundtrips_in_both_flavors() {
        let v = sample();
        assert_eq!(json_roundtrip(&v), v);
        assert_eq!(msgpack_roundtrip(&v), v);
    }

    #[test]
    fn json_bytes_follow_the_wamp_convention() {
        // The spec's example vector.
        let raw = [
            0x10, 0xe3, 0xff, 0x90, 0x53, 0x07, 0x5c, 0x52, 0x6f, 0x5f, 0xc0, 0x6d, 0x4f, 0xe3,
            0x7c, 0xdb,
        ];
        let v = Value::Bytes(Bytes::copy_from_slice(&raw));
        let text = serde_json::to_string(&Ser(&v, Flavor::Json)).unwrap();
        assert_eq!(text, r#""\u0000EOP/kFMHXFJvX8BtT+N82w==""#);
        assert_eq!(json_roundtrip(&v), v);
    }

    #[test]
    fn msgpack_strings_with_nul_stay_strings() {
        let v = Value::from("\0not base64");
        assert_eq!(msgpack_roundtrip(&v), v);
    }

    #[test]
    fn bad_base64_is_an_error_not_a_panic() {
        let mut de = serde_json::Deserializer::from_str(r#""\u0000!!!""#);
        assert!(Seed::new(Flavor::Json).deserialize(&mut de).is_err());
    }

    #[test]
    fn deep_nesting_is_refused() {
        let text = format!("{}{}", "[".repeat(MAX_DEPTH + 2), "]".repeat(MAX_DEPTH + 2));
        let mut de = serde_json::Deserializer::from_str(&text);
        assert!(Seed::new(Flavor::Json).deserialize(&mut de).is_err());
    }

    #[test]
    fn non_string_keys_are_refused() {
        // msgpack map {1: 2}
        let bytes = [0x81, 0x01, 0x02];
        let mut de = rmp_serde::Deserializer::from_read_ref(&bytes);
        assert!(Seed::new(Flavor::Binary).deserialize(&mut de).is_err());
    }
}
