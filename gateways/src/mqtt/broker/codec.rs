//! MQTT packets on one connection, through rumqttd's v4 (3.1.1) and v5 codecs: which one is picked
//! from the CONNECT, and guards around them.
//!
//! rumqttd's decoders panic (`unreachable!`) on some packet types a client never sends (CONNACK or
//! UNSUBACK under v5), and its v4 encoder panics on a packet that carries v5 properties. Both are
//! avoided here: packet types a client may not send are refused before decoding, and properties
//! are dropped before encoding for a 3.1.1 client.

use bytes::BytesMut;
use rumqttd::protocol::v4::V4;
use rumqttd::protocol::v5::V5;
use rumqttd::protocol::{Error as ProtocolError, Packet, Protocol};
use thiserror::Error;

/// Protocol levels of the CONNECT packet.
const LEVEL_311: u8 = 4;
const LEVEL_5: u8 = 5;

/// Why a connection's bytes could not be read or written.
#[derive(Debug, Error)]
pub enum CodecError {
    /// The first packet is not a CONNECT.
    #[error("the first packet is not CONNECT")]
    NotConnect,
    /// A protocol level other than 3.1.1 (4) or 5.
    #[error("unsupported MQTT protocol level {0}")]
    UnsupportedLevel(u8),
    /// A packet type a client never sends.
    #[error("packet type {0} is not sent by clients")]
    UnexpectedType(u8),
    /// Malformed, over the size limit, or otherwise refused by the decoder or encoder.
    #[error("protocol error")]
    Protocol(#[source] ProtocolError),
}

/// The codec of one connection.
#[derive(Debug, Clone)]
pub enum Codec {
    /// MQTT 3.1.1.
    V4(V4),
    /// MQTT 5.
    V5(V5),
}

impl Codec {
    /// Picks the codec from the start of a CONNECT; `Ok(None)` until enough bytes are there.
    /// `Err(UnsupportedLevel)` leaves the caller to answer with a 3.1.1 CONNACK "unacceptable
    /// protocol version", which every client version understands.
    pub fn detect(buf: &[u8]) -> Result<Option<Codec>, CodecError> {
        let Some(&first) = buf.first() else {
            return Ok(None);
        };
        if first >> 4 != 1 {
            return Err(CodecError::NotConnect);
        }
        // Remaining length: 1 to 4 bytes with a continuation bit.
        let mut at = 1;
        loop {
            let Some(&b) = buf.get(at) else {
                return Ok(None);
            };
            at += 1;
            if b & 0x80 == 0 {
                break;
            }
            if at > 4 {
                return Err(CodecError::Protocol(
                    ProtocolError::MalformedRemainingLength,
                ));
            }
        }
        // Protocol name (length-prefixed), then the level.
        let (Some(&hi), Some(&lo)) = (buf.get(at), buf.get(at + 1)) else {
            return Ok(None);
        };
        let name_len = usize::from(u16::from_be_bytes([hi, lo]));
        if name_len > 6 {
            return Err(CodecError::Protocol(ProtocolError::InvalidProtocol));
        }
        let Some(&level) = buf.get(at + 2 + name_len) else {
            return Ok(None);
        };
        match level {
            LEVEL_311 => Ok(Some(Codec::V4(V4))),
            LEVEL_5 => Ok(Some(Codec::V5(V5))),
            other => Err(CodecError::UnsupportedLevel(other)),
        }
    }

    /// Whether this is MQTT 5.
    pub fn is_v5(&self) -> bool {
        matches!(self, Codec::V5(_))
    }

    /// The next whole packet in `buf`, `Ok(None)` when more bytes are needed. `connected` tells
    /// whether the CONNECT was already read (then only the packets a client sends afterwards are
    /// accepted).
    pub fn read(
        &mut self,
        buf: &mut BytesMut,
        max_size: usize,
        connected: bool,
    ) -> Result<Option<Packet>, CodecError> {
        let Some(&first) = buf.first() else {
            return Ok(None);
        };
        let kind = first >> 4;
        let allowed = if connected {
            // PUBLISH, PUBACK, PUBREC, PUBREL, PUBCOMP, SUBSCRIBE, UNSUBSCRIBE, PINGREQ, DISCONNECT
            matches!(kind, 3..=8 | 10 | 12 | 14)
        } else {
            kind == 1
        };
        if !allowed {
            return Err(CodecError::UnexpectedType(kind));
        }
        let result = match self {
            Codec::V4(p) => p.read_mut(buf, max_size),
            Codec::V5(p) => p.read_mut(buf, max_size),
        };
        match result {
            Ok(packet) => Ok(Some(packet)),
            Err(ProtocolError::InsufficientBytes(_)) => Ok(None),
            Err(e) => Err(CodecError::Protocol(e)),
        }
    }

    /// Appends one packet to `out`.
    pub fn write(&self, packet: Packet, out: &mut BytesMut) -> Result<(), CodecError> {
        let result = match self {
            Codec::V4(p) => p.write(strip_properties(packet), out),
            Codec::V5(p) => p.write(packet, out),
        };
        result.map(|_| ()).map_err(CodecError::Protocol)
    }
}

/// The 3.1.1 form of a packet: v5 properties dropped, and no DISCONNECT from the server (3.1.1
/// has none, the connection is just closed).
fn strip_properties(packet: Packet) -> Packet {
    match packet {
        Packet::Publish(p, _) => Packet::Publish(p, None),
        Packet::PubAck(p, _) => Packet::PubAck(p, None),
        Packet::PubRec(p, _) => Packet::PubRec(p, None),
        Packet::PubRel(p, _) => Packet::PubRel(p, None),
        Packet::PubComp(p, _) => Packet::PubComp(p, None),
        Packet::SubAck(p, _) => Packet::SubAck(p, None),
        Packet::UnsubAck(p, _) => Packet::UnsubAck(p, None),
        Packet::Subscribe(p, _) => Packet::Subscribe(p, None),
        Packet::Unsubscribe(p, _) => Packet::Unsubscribe(p, None),
        Packet::Disconnect(p, _) => Packet::Disconnect(p, None),
        Packet::Connect(c, _, w, _, l) => Packet::Connect(c, None, w, None, l),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A CONNECT's first bytes up to the level: type, remaining length, name, level.
    fn connect_head(name: &[u8], level: u8) -> Vec<u8> {
        let mut v = vec![0x10, 0x20, 0, name.len() as u8];
        v.extend_from_slice(name);
        v.push(level);
        v
    }

    #[test]
    fn detects_the_protocol_from_connect() {
        let v4 = connect_head(b"MQTT", 4);
        for cut in 0..v4.len() {
            assert!(Codec::detect(&v4[..cut]).unwrap().is_none(), "cut {cut}");
        }
        assert!(!Codec::detect(&v4).unwrap().unwrap().is_v5());
        assert!(
            Codec::detect(&connect_head(b"MQTT", 5))
                .unwrap()
                .unwrap()
                .is_v5()
        );
        assert!(matches!(
            Codec::detect(&connect_head(b"MQIsdp", 3)),
            Err(CodecError::UnsupportedLevel(3))
        ));
        assert!(matches!(
            Codec::detect(&[0x30, 0]),
            Err(CodecError::NotConnect)
        ));
        assert!(matches!(
            Codec::detect(&[0x10, 0xff, 0xff, 0xff, 0xff, 0x01]),
            Err(CodecError::Protocol(_))
        ));
    }

    #[test]
    fn refuses_packets_clients_never_send() {
        for codec in [Codec::V4(V4), Codec::V5(V5)] {
            // CONNACK (2), SUBACK (9), UNSUBACK (11), PINGRESP (13), AUTH (15), reserved (0)
            for kind in [0u8, 2, 9, 11, 13, 15] {
                let mut buf = BytesMut::from(&[kind << 4, 2, 0, 0][..]);
                assert!(
                    matches!(
                        codec.clone().read(&mut buf, 1024, true),
                        Err(CodecError::UnexpectedType(k)) if k == kind
                    ),
                    "type {kind}"
                );
            }
            let mut publish_first = BytesMut::from(&[0x30, 3, 0, 1, b'a'][..]);
            assert!(codec.clone().read(&mut publish_first, 1024, false).is_err());
        }
    }

    #[test]
    fn partial_and_oversized_packets() {
        let mut codec = Codec::V4(V4);
        // PUBLISH QoS 0, topic "a", payload "xyz"
        let whole = [0x30, 6, 0, 1, b'a', b'x', b'y', b'z'];
        let mut buf = BytesMut::from(&whole[..5]);
        assert!(codec.read(&mut buf, 1024, true).unwrap().is_none());
        buf.extend_from_slice(&whole[5..]);
        assert!(matches!(
            codec.read(&mut buf, 1024, true).unwrap(),
            Some(Packet::Publish(..))
        ));
        let mut big = BytesMut::from(&whole[..]);
        assert!(codec.read(&mut big, 4, true).is_err());
    }
}
