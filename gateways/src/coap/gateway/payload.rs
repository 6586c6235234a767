//! Payload codecs of the gateway: bodies in JSON (Content-Format 50), CBOR (60) or plain text (0)
//! to and from `serde_json::Value`, the values [`DeviceEvent`](device_models::DeviceEvent)s carry.
//!
//! CBOR is mapped onto the JSON data model: integers that fit `i64`/`u64`, finite floats, text,
//! arrays and maps with text keys; tags are read through. What JSON cannot hold (byte strings,
//! non-text map keys, NaN and infinities, undefined, integers beyond 64 bits) is refused, so a
//! device learns about it (4.00) instead of seeing its value silently changed.

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Number, Value};

use crate::coap::{CONTENT_FORMAT_CBOR, CONTENT_FORMAT_JSON};

/// Content-Format number of `text/plain; charset=utf-8`.
pub const CONTENT_FORMAT_TEXT: u16 = 0;

/// A payload encoding the gateway reads and writes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PayloadFormat {
    /// `application/json` (50).
    #[default]
    Json,
    /// `application/cbor` (60).
    Cbor,
    /// `text/plain` (0): read as JSON when it parses as JSON, else as a string; written as the
    /// bare string, or JSON text for other values.
    Text,
}

impl PayloadFormat {
    /// The format of a Content-Format number; `None` for formats the gateway does not read.
    pub fn from_content_format(cf: u16) -> Option<Self> {
        match cf {
            CONTENT_FORMAT_JSON => Some(Self::Json),
            CONTENT_FORMAT_CBOR => Some(Self::Cbor),
            CONTENT_FORMAT_TEXT => Some(Self::Text),
            _ => None,
        }
    }

    /// The Content-Format number.
    pub fn content_format(self) -> u16 {
        match self {
            Self::Json => CONTENT_FORMAT_JSON,
            Self::Cbor => CONTENT_FORMAT_CBOR,
            Self::Text => CONTENT_FORMAT_TEXT,
        }
    }
}

/// Why a payload could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum PayloadError {
    /// The body is not valid JSON.
    #[error("invalid JSON: {0}")]
    Json(#[source] serde_json::Error),
    /// The body is not valid CBOR, or has bytes after its one data item.
    #[error("invalid CBOR: {0}")]
    Cbor(#[source] ciborium::de::Error<std::io::Error>),
    /// Bytes follow the body's one CBOR data item.
    #[error("invalid CBOR: {0} bytes after the data item")]
    CborTrailing(usize),
    /// The CBOR item has no JSON equivalent.
    #[error("CBOR {0} has no JSON equivalent")]
    NotJson(&'static str),
    /// A text body is not UTF-8.
    #[error("text payload is not UTF-8")]
    Utf8,
    /// The body is empty where a value is required.
    #[error("empty payload")]
    Empty,
    /// The value must be an object (a map of names to values).
    #[error("payload must be an object, found {0}")]
    NotObject(&'static str),
}

/// Reads one value.
pub fn decode(format: PayloadFormat, bytes: &[u8]) -> Result<Value, PayloadError> {
    if bytes.is_empty() {
        return Err(PayloadError::Empty);
    }
    match format {
        PayloadFormat::Json => serde_json::from_slice(bytes).map_err(PayloadError::Json),
        PayloadFormat::Cbor => {
            let mut reader = bytes;
            let item: ciborium::Value =
                ciborium::from_reader(&mut reader).map_err(PayloadError::Cbor)?;
            if !reader.is_empty() {
                return Err(PayloadError::CborTrailing(reader.len()));
            }
            cbor_to_json(item)
        }
        PayloadFormat::Text => {
            let text = std::str::from_utf8(bytes).map_err(|_| PayloadError::Utf8)?;
            let trimmed = text.trim();
            Ok(serde_json::from_str(trimmed).unwrap_or_else(|_| Value::String(trimmed.to_owned())))
        }
    }
}

/// Reads an object (property or info names to values).
pub fn decode_object(
    format: PayloadFormat,
    bytes: &[u8],
) -> Result<Map<String, Value>, PayloadError> {
    match decode(format, bytes)? {
        Value::Object(map) => Ok(map),
        other => Err(PayloadError::NotObject(device_models::value::kind_of(
            &other,
        ))),
    }
}

/// Writes one value.
pub fn encode(format: PayloadFormat, value: &Value) -> Bytes {
    match format {
        PayloadFormat::Json => Bytes::from(value.to_string()),
        PayloadFormat::Cbor => {
            let mut out = Vec::new();
            // Writing a `serde_json::Value` into a `Vec` cannot fail: every JSON value has a CBOR
            // form and the writer is infallible.
            if ciborium::into_writer(value, &mut out).is_err() {
                out.clear();
            }
            Bytes::from(out)
        }
        PayloadFormat::Text => match value {
            Value::String(s) => Bytes::from(s.clone()),
            other => Bytes::from(other.to_string()),
        },
    }
}

/// Maps a CBOR data item onto the JSON data model (see the module docs).
fn cbor_to_json(item: ciborium::Value) -> Result<Value, PayloadError> {
    use ciborium::Value as C;
    Ok(match item {
        C::Null => Value::Null,
        C::Bool(b) => Value::Bool(b),
        C::Text(s) => Value::String(s),
        C::Integer(i) => {
            let wide = i128::from(i);
            if let Ok(u) = u64::try_from(wide) {
                Value::Number(Number::from(u))
            } else if let Ok(s) = i64::try_from(wide) {
                Value::Number(Number::from(s))
            } else {
                return Err(PayloadError::NotJson("integer beyond 64 bits"));
            }
        }
        C::Float(f) => Value::Number(
            Number::from_f64(f).ok_or(PayloadError::NotJson("NaN or infinite float"))?,
        ),
        C::Tag(_, inner) => cbor_to_json(*inner)?,
        C::Array(items) => Value::Array(
            items
                .into_iter()
                .map(cbor_to_json)
                .collect::<Result<_, _>>()?,
        ),
        C::Map(entries) => {
            let mut map = Map::new();
            for (k, v) in entries {
                let C::Text(key) = k else {
                    return Err(PayloadError::NotJson("map key that is not text"));
                };
                map.insert(key, cbor_to_json(v)?);
            }
            Value::Object(map)
        }
        C::Bytes(_) => return Err(PayloadError::NotJson("byte string")),
        _ => return Err(PayloadError::NotJson("simple value")),
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn cbor(value: &ciborium::Value) -> Vec<u8> {
        let mut out = Vec::new();
        ciborium::into_writer(value, &mut out).unwrap();
        out
    }

    #[test]
    fn json_and_cbor_round_trip() {
        let v = json!({"t": 21.5, "n": -3, "big": u64::MAX, "on": true, "s": "x", "l": [1, null]});
        for format in [PayloadFormat::Json, PayloadFormat::Cbor] {
            let bytes = encode(format, &v);
            assert_eq!(decode(format, &bytes).unwrap(), v, "{format:?}");
        }
    }

    #[test]
    fn cbor_outside_json_is_refused() {
        use ciborium::Value as C;
        let cases = [
            C::Bytes(vec![1, 2]),
            C::Map(vec![(C::Integer(1.into()), C::Null)]),
            C::Float(f64::NAN),
            C::Float(f64::INFINITY),
        ];
        for case in cases {
            assert!(
                matches!(
                    decode(PayloadFormat::Cbor, &cbor(&case)),
                    Err(PayloadError::NotJson(_))
                ),
                "{case:?}"
            );
        }
        let tagged = C::Tag(1, Box::new(C::Integer(7.into())));
        assert_eq!(
            decode(PayloadFormat::Cbor, &cbor(&tagged)).unwrap(),
            json!(7)
        );
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let inputs: [&[u8]; 6] = [b"", b"{", b"\xff\xff", b"\x9f", b"\xa1\x61", b"1 2"];
        for input in inputs {
            for format in [PayloadFormat::Json, PayloadFormat::Cbor] {
                let _ = decode(format, input);
            }
        }
        // A second CBOR item after the first is refused.
        let two = [cbor(&ciborium::Value::Integer(1.into())), vec![0x01]].concat();
        assert!(matches!(
            decode(PayloadFormat::Cbor, &two),
            Err(PayloadError::CborTrailing(1))
        ));
        assert!(matches!(
            decode(PayloadFormat::Json, b""),
            Err(PayloadError::Empty)
        ));
    }

    #[test]
    fn text_is_lenient() {
        assert_eq!(
            decode(PayloadFormat::Text, b" 21.5\n").unwrap(),
            json!(21.5)
        );
        assert_eq!(decode(PayloadFormat::Text, b"on").unwrap(), json!("on"));
        assert!(decode(PayloadFormat::Text, b"\xff").is_err());
        assert_eq!(encode(PayloadFormat::Text, &json!("on")), Bytes::from("on"));
        assert_eq!(encode(PayloadFormat::Text, &json!(3)), Bytes::from("3"));
    }

    #[test]
    fn objects_only_where_required() {
        assert!(decode_object(PayloadFormat::Json, b"{\"a\":1}").is_ok());
        assert!(matches!(
            decode_object(PayloadFormat::Json, b"[1]"),
            Err(PayloadError::NotObject("array"))
        ));
    }
}
