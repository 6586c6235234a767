//! Serializers: WAMP messages to and from bytes, in JSON or MessagePack.
//!
//! This is the one home of the wire formats. Decoding is capped by the caller's frame limit (the
//! transport refuses larger frames before they get here) and by [`super::value::MAX_DEPTH`].

use bytes::Bytes;
use serde::de::DeserializeSeed;

use super::message::{Message, MessageError, Wire};
use super::value::{Flavor, Seed, Value};

/// The capacity an encoding starts with.
const ENCODE_START: usize = 256;

/// The serializers Brume speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Serializer {
    Json,
    MsgPack,
}

impl Serializer {
    /// The WebSocket subprotocol naming this serializer.
    pub fn subprotocol(self) -> &'static str {
        match self {
            Serializer::Json => "wamp.2.json",
            Serializer::MsgPack => "wamp.2.msgpack",
        }
    }

    /// The serializer for a WebSocket subprotocol, if supported.
    pub fn from_subprotocol(p: &str) -> Option<Serializer> {
        match p.trim() {
            "wamp.2.json" => Some(Serializer::Json),
            "wamp.2.msgpack" => Some(Serializer::MsgPack),
            _ => None,
        }
    }

    /// The RawSocket serializer code (1 JSON, 2 MessagePack).
    pub fn rawsocket_code(self) -> u8 {
        match self {
            Serializer::Json => 1,
            Serializer::MsgPack => 2,
        }
    }

    /// The serializer for a RawSocket code, if supported.
    pub fn from_rawsocket_code(c: u8) -> Option<Serializer> {
        match c {
            1 => Some(Serializer::Json),
            2 => Some(Serializer::MsgPack),
            _ => None,
        }
    }

    /// Whether this serializer produces text (WebSocket text frames) or binary frames.
    pub fn is_text(self) -> bool {
        self == Serializer::Json
    }

    /// 0 or 1, for caches that keep one encoding per serializer.
    pub fn index(self) -> usize {
        match self {
            Serializer::Json => 0,
            Serializer::MsgPack => 1,
        }
    }

    fn flavor(self) -> Flavor {
        match self {
            Serializer::Json => Flavor::Json,
            Serializer::MsgPack => Flavor::Binary,
        }
    }

    /// Encodes a message.
    pub fn encode(self, msg: &Message) -> Result<Bytes, CodecError> {
        let wire = Wire(msg, self.flavor());
        // Most messages fit: started at this size, the buffer is not grown piecemeal.
        let mut out = Vec::with_capacity(ENCODE_START);
        match self {
            Serializer::Json => serde_json::to_writer(&mut out, &wire)
                .map(|()| Bytes::from(out))
                .map_err(CodecError::EncodeJson),
            Serializer::MsgPack => rmp_serde::encode::write(&mut out, &wire)
                .map(|()| Bytes::from(out))
                .map_err(CodecError::EncodeMsgPack),
        }
    }

    /// Decodes one message from a complete frame.
    pub fn decode(self, bytes: &[u8]) -> Result<Message, CodecError> {
        let value = match self {
            Serializer::Json => {
                let seed = Seed::new(self.flavor());
                let mut de = serde_json::Deserializer::from_slice(bytes);
                let v = seed.deserialize(&mut de).map_err(CodecError::Json)?;
                de.end().map_err(CodecError::Json)?;
                v
            }
            Serializer::MsgPack => match crate::msgpack::decode(bytes) {
                Err(crate::msgpack::MsgPackError::Trailing) => {
                    return Err(CodecError::TrailingBytes);
                }
                other => other.map_err(CodecError::MsgPack)?,
            },
        };
        match value {
            Value::List(items) => Ok(Message::from_array(items)?),
            other => Err(CodecError::Message(MessageError::Field {
                field: "message",
                expected: "array",
                got: other.kind(),
            })),
        }
    }
}

/// Why bytes could not become a message, or a message could not become bytes.
/// The serializer's error is kept as the source; the text (which ABORT messages carry) also
/// names it, as peers have always seen it.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("undecodable input: {0}")]
    Json(#[source] serde_json::Error),
    #[error("undecodable input: {0}")]
    MsgPack(#[source] crate::msgpack::MsgPackError),
    #[error("undecodable input: trailing bytes after message")]
    TrailingBytes,
    #[error("invalid message: {0}")]
    Message(#[from] MessageError),
    #[error("could not encode message: {0}")]
    EncodeJson(#[source] serde_json::Error),
    #[error("could not encode message: {0}")]
    EncodeMsgPack(#[source] rmp_serde::encode::Error),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{Payload, dict};
    use crate::value::{Dict, Value};
    use bytes::Bytes;

    fn all_messages() -> Vec<Message> {
        let d = dict([("x", Value::Int(1))]);
        let p = Payload::new(
            vec![Value::Int(1), Value::Bytes(Bytes::from_static(b"\x00\xff"))],
            dict([("k", Value::from("v"))]),
        );
        let a = Payload::args(vec![Value::from("only")]);
        vec![
            Message::Hello {
                realm: "brume".into(),
                details: d.clone(),
            },
            Message::Welcome {
                session: 9,
                details: d.clone(),
            },
            Message::abort("wamp.error.no_such_realm", Some("no")),
            Message::Challenge {
                method: "ticket".into(),
                extra: Dict::new(),
            },
            Message::Authenticate {
                signature: "s".into(),
                extra: Dict::new(),
            },
            Message::Goodbye {
                details: Dict::new(),
                reason: "wamp.close.normal".into(),
            },
            Message::Error {
                request_type: 48,
                request: 3,
                details: Dict::new(),
                error: "e.x".into(),
                payload: p.clone(),
            },
            Message::Publish {
                request: 1,
                options: d.clone(),
                topic: "a.b".into(),
                payload: p.clone(),
            },
            Message::Published {
                request: 1,
                publication: 2,
            },
            Message::Subscribe {
                request: 1,
                options: Dict::new(),
                topic: "a".into(),
            },
            Message::Subscribed {
                request: 1,
                subscription: 5,
            },
            Message::Unsubscribe {
                request: 1,
                subscription: 5,
            },
            Message::Unsubscribed {
                request: 1,
                details: None,
            },
            Message::Unsubscribed {
                request: 0,
                details: Some(d.clone()),
            },
            Message::Event {
                subscription: 5,
                publication: 6,
                details: Dict::new(),
                payload: a.clone(),
            },
            Message::Call {
                request: 1,
                options: Dict::new(),
                procedure: "p".into(),
                payload: Payload::empty(),
            },
            Message::Cancel {
                request: 1,
                options: Dict::new(),
            },
            Message::Result {
                request: 1,
                details: Dict::new(),
                payload: Payload::kwargs(dict([("r", Value::Float(0.5))])),
            },
            Message::Register {
                request: 1,
                options: Dict::new(),
                procedure: "p".into(),
            },
            Message::Registered {
                request: 1,
                registration: 7,
            },
            Message::Unregister {
                request: 1,
                registration: 7,
            },
            Message::Unregistered {
                request: 1,
                details: None,
            },
            Message::Invocation {
                request: 1,
                registration: 7,
                details: Dict::new(),
                payload: p.clone(),
            },
            Message::Interrupt {
                request: 1,
                options: d,
            },
            Message::Yield {
                request: 1,
                options: Dict::new(),
                payload: p,
            },
        ]
    }

    #[test]
    fn every_message_roundtrips_in_both_serializers() {
        for ser in [Serializer::Json, Serializer::MsgPack] {
            for m in all_messages() {
                let bytes = ser.encode(&m).unwrap();
                assert_eq!(ser.decode(&bytes).unwrap(), m, "{ser:?} {}", m.name());
            }
        }
    }

    #[test]
    fn json_layout_matches_the_spec() {
        let m = Message::Publish {
            request: 1,
            options: Dict::new(),
            topic: "com.x".into(),
            payload: Payload::args(vec![Value::Int(1)]),
        };
        let text = Serializer::Json.encode(&m).unwrap();
        assert_eq!(&text[..], br#"[16,1,{},"com.x",[1]]"#);
        // kwargs without args still carries an empty Args list.
        let m = Message::Yield {
            request: 2,
            options: Dict::new(),
            payload: Payload::kwargs(dict([("a", Value::Int(1))])),
        };
        let text = Serializer::Json.encode(&m).unwrap();
        assert_eq!(&text[..], br#"[70,2,{},[],{"a":1}]"#);
    }

    #[test]
    fn bad_inputs_are_errors() {
        let cases: &[&[u8]] = &[
            b"",
            b"{}",
            b"[]",
            b"[\"x\"]",
            b"[1]",
            b"[1, 5, {}]",
            b"[1, \"realm\", {}, 7]",
            b"[999, 1]",
            b"[16, -1, {}, \"t\"]",
            b"[16, 1, {}, \"t\", {}]",
            b"[16, 1, {}, \"t\", [], []]",
            b"[16, 9007199254740993, {}, \"t\"]",
            b"[16, 1, {}, \"t\"] trailing",
            b"[16, 1, {}, \"t\", [\"\\u0000@@\"]]",
            b"[48, 1.5, {}, \"p\"]",
        ];
        for c in cases {
            assert!(
                Serializer::Json.decode(c).is_err(),
                "{:?}",
                String::from_utf8_lossy(c)
            );
        }
        let msgpack_cases: &[&[u8]] = &[b"", b"\xc1", b"\x91", b"\x92\x10\xa1x", b"\x90\x00"];
        for c in msgpack_cases {
            assert!(Serializer::MsgPack.decode(c).is_err(), "{c:?}");
        }
    }
}
