//! Wire-level helpers around coap-lite's [`Packet`]: validated decoding of
//! datagrams, the uint and Block option codecs, request option checks and the
//! canned empty ACK / RST messages.
//!
//! Everything that looks at peer bytes lives here, so the state machines in
//! `server` and `client` only ever see a validated `Packet`.

use bytes::Bytes;
use coap_lite::{CoapOption, MessageClass, MessageType, Packet};

use super::error::{DecodeError, RawHeader};

/// Content-Format number of `application/json` (RFC 7252 §12.3).
pub const CONTENT_FORMAT_JSON: u16 = 50;
/// Content-Format number of `application/cbor` (RFC 7049).
pub const CONTENT_FORMAT_CBOR: u16 = 60;

/// Option numbers used directly (RFC 7252 §5.10, RFC 7641, RFC 7959).
pub(crate) mod opt {
    pub const URI_HOST: u16 = 3;
    pub const ETAG: u16 = 4;
    pub const OBSERVE: u16 = 6;
    pub const URI_PORT: u16 = 7;
    pub const LOCATION_PATH: u16 = 8;
    pub const URI_PATH: u16 = 11;
    pub const CONTENT_FORMAT: u16 = 12;
    pub const MAX_AGE: u16 = 14;
    pub const URI_QUERY: u16 = 15;
    pub const ACCEPT: u16 = 17;
    pub const BLOCK2: u16 = 23;
    pub const BLOCK1: u16 = 27;
    pub const SIZE2: u16 = 28;
    pub const PROXY_URI: u16 = 35;
    pub const PROXY_SCHEME: u16 = 39;
    pub const SIZE1: u16 = 60;
}

/// Largest Observe value; sequence numbers are 24-bit (RFC 7641 §4.4).
pub const OBSERVE_MAX: u32 = 0x00FF_FFFF;

/// A CoAP token: 0 to 8 bytes (RFC 7252 §5.3.1), stored inline so that it can
/// be a cheap map key.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Token {
    len: u8,
    bytes: [u8; 8],
}

impl Token {
    /// Builds a token from up to 8 bytes; `None` when longer.
    pub fn new(bytes: &[u8]) -> Option<Self> {
        let len = u8::try_from(bytes.len()).ok().filter(|l| *l <= 8)?;
        let mut buf = [0u8; 8];
        buf.get_mut(..bytes.len())?.copy_from_slice(bytes);
        Some(Self { len, bytes: buf })
    }

    /// The token bytes.
    pub fn as_bytes(&self) -> &[u8] {
        self.bytes.get(..usize::from(self.len)).unwrap_or(&[])
    }
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Token(")?;
        for b in self.as_bytes() {
            write!(f, "{b:02x}")?;
        }
        write!(f, ")")
    }
}

/// Reads the token of a decoded packet (coap-lite guarantees at most 8 bytes).
pub(crate) fn token_of(packet: &Packet) -> Token {
    Token::new(packet.get_token()).unwrap_or_default()
}

/// Decodes and validates one datagram.
///
/// On top of coap-lite's parser this rejects versions other than 1, a payload
/// marker followed by nothing, Empty messages with a token, options or
/// payload, and the reserved code classes 1, 3, 6 and 7 (RFC 7252 §3, §4.1,
/// §12.1). Never panics, whatever the input.
pub(crate) fn decode(bytes: &[u8]) -> Result<Packet, DecodeError> {
    let [b0, code, m0, m1, ..] = *bytes else {
        return Err(DecodeError::TooShort(bytes.len()));
    };
    let version = b0 >> 6;
    if version != 1 {
        return Err(DecodeError::Version(version));
    }
    let header = RawHeader {
        message_id: u16::from_be_bytes([m0, m1]),
        confirmable: (b0 >> 4) & 0x3 == 0,
    };
    let malformed = |reason: &'static str| DecodeError::Malformed { header, reason };
    let packet = Packet::from_bytes(bytes).map_err(|e| {
        malformed(match e {
            coap_lite::error::MessageError::InvalidTokenLength => "invalid token length",
            coap_lite::error::MessageError::InvalidOptionDelta => "invalid option delta",
            coap_lite::error::MessageError::InvalidOptionLength => "invalid option length",
            _ => "invalid header",
        })
    })?;
    if code == 0 {
        if bytes.len() != 4 {
            return Err(malformed("empty message with token, options or payload"));
        }
        return Ok(packet);
    }
    if matches!(code >> 5, 1 | 3 | 6 | 7) {
        return Err(malformed("reserved code class"));
    }
    if packet.payload.is_empty()
        && bytes.last() == Some(&0xFF)
        && has_trailing_marker(&packet, bytes.len())
    {
        return Err(malformed("payload marker without payload"));
    }
    Ok(packet)
}

/// coap-lite accepts a payload marker at the very end; re-encoding (the
/// encoding of options is canonical) shows whether the last 0xFF was one.
fn has_trailing_marker(packet: &Packet, received_len: usize) -> bool {
    packet
        .to_bytes_unlimited()
        .map(|b| b.len() + 1 == received_len)
        .unwrap_or(true)
}

/// Encodes a packet we built ourselves. Sizes are governed by the block size
/// we chose, so the 1280-byte default limit of coap-lite is not used.
pub(crate) fn encode(packet: &Packet) -> Result<Bytes, super::error::EncodeError> {
    packet
        .to_bytes_unlimited()
        .map(Bytes::from)
        .map_err(super::error::EncodeError)
}

/// An empty ACK for `message_id` (RFC 7252 §4.2).
pub(crate) fn empty_ack(message_id: u16) -> Bytes {
    let [a, b] = message_id.to_be_bytes();
    Bytes::copy_from_slice(&[0x60, 0x00, a, b])
}

/// A Reset for `message_id` (RFC 7252 §4.2, §4.3).
pub(crate) fn reset(message_id: u16) -> Bytes {
    let [a, b] = message_id.to_be_bytes();
    Bytes::copy_from_slice(&[0x70, 0x00, a, b])
}

/// Minimal big-endian encoding of an unsigned option value (RFC 7252 §3.2).
pub(crate) fn encode_uint(value: u32) -> Vec<u8> {
    let bytes = value.to_be_bytes();
    let skip = bytes.iter().take_while(|b| **b == 0).count();
    bytes.get(skip..).unwrap_or(&[]).to_vec()
}

/// Decodes an unsigned option value of at most `max_len` bytes.
pub(crate) fn decode_uint(value: &[u8], max_len: usize) -> Option<u32> {
    if value.len() > max_len.min(4) {
        return None;
    }
    Some(value.iter().fold(0u32, |acc, b| (acc << 8) | u32::from(*b)))
}

/// First value of option `number`, if present.
pub(crate) fn first_option(packet: &Packet, number: u16) -> Option<&[u8]> {
    packet
        .get_first_option(CoapOption::from(number))
        .map(Vec::as_slice)
}

/// First value of a uint option, if present and well formed.
pub(crate) fn uint_option(packet: &Packet, number: u16, max_len: usize) -> Option<u32> {
    first_option(packet, number).and_then(|v| decode_uint(v, max_len))
}

/// Content-Format of a message, if present and well formed (at most 2 bytes).
pub(crate) fn content_format(packet: &Packet) -> Option<u16> {
    uint_option(packet, opt::CONTENT_FORMAT, 2).and_then(|v| u16::try_from(v).ok())
}

/// Sets a uint option, replacing any previous value.
pub(crate) fn set_uint_option(packet: &mut Packet, number: u16, value: u32) {
    let mut list = std::collections::LinkedList::new();
    list.push_back(encode_uint(value));
    packet.set_option(CoapOption::from(number), list);
}

/// Sets an opaque option, replacing any previous value.
pub(crate) fn set_option(packet: &mut Packet, number: u16, value: Vec<u8>) {
    let mut list = std::collections::LinkedList::new();
    list.push_back(value);
    packet.set_option(CoapOption::from(number), list);
}

/// Collects the string values of a repeatable option (Uri-Path, Uri-Query);
/// `None` when one of them is not UTF-8.
pub(crate) fn string_options(packet: &Packet, number: u16) -> Option<Vec<String>> {
    match packet.get_option(CoapOption::from(number)) {
        None => Some(Vec::new()),
        Some(list) => list
            .iter()
            .map(|v| std::str::from_utf8(v).ok().map(str::to_owned))
            .collect(),
    }
}

/// Adds one option value per path segment (Uri-Path, Location-Path).
pub(crate) fn add_segments<S: AsRef<str>>(packet: &mut Packet, number: u16, segments: &[S]) {
    for s in segments {
        packet.add_option(CoapOption::from(number), s.as_ref().as_bytes().to_vec());
    }
}

/// Splits `"/a/b"` or `"a/b"` into Uri-Path segments. The leading slash is
/// optional; other empty segments are kept, as RFC 7252 §6.4 maps them.
pub fn split_path(path: &str) -> Vec<String> {
    let trimmed = path.strip_prefix('/').unwrap_or(path);
    if trimmed.is_empty() {
        return Vec::new();
    }
    trimmed.split('/').map(str::to_owned).collect()
}

/// Joins path segments into the key used for observers and block caches.
pub(crate) fn path_key<S: AsRef<str>>(segments: &[S]) -> String {
    let mut key = String::new();
    for (i, s) in segments.iter().enumerate() {
        if i > 0 {
            key.push('/');
        }
        key.push_str(s.as_ref());
    }
    key
}

/// Value of a Block1 or Block2 option (RFC 7959 §2.2): a 20-bit block number,
/// the More flag and the size exponent. Written here rather than using
/// coap-lite's `BlockValue` because that one only decodes 2-byte values and
/// so rejects block numbers of 4096 and above.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct BlockOpt {
    pub num: u32,
    pub more: bool,
    pub szx: u8,
}

impl BlockOpt {
    /// Largest block number that fits the 3-byte option.
    pub const MAX_NUM: u32 = 0x000F_FFFF;

    /// Decodes an option value; `None` for more than 3 bytes or the reserved
    /// SZX 7.
    pub fn decode(value: &[u8]) -> Option<Self> {
        let v = decode_uint(value, 3)?;
        let szx = u8::try_from(v & 0x7).ok()?;
        if szx == 7 {
            return None;
        }
        Some(Self {
            num: v >> 4,
            more: v & 0x8 != 0,
            szx,
        })
    }

    /// Minimal encoding of the option value.
    pub fn encode(self) -> Vec<u8> {
        encode_uint(
            (self.num.min(Self::MAX_NUM) << 4)
                | (u32::from(self.more) << 3)
                | u32::from(self.szx & 0x7),
        )
    }

    /// Block size in bytes, 16 to 1024.
    pub fn size(self) -> usize {
        szx_size(self.szx)
    }

    /// Byte offset of this block.
    pub fn offset(self) -> usize {
        (self.num as usize).saturating_mul(self.size())
    }
}

/// Block size for a size exponent.
pub(crate) fn szx_size(szx: u8) -> usize {
    16usize << szx.min(6)
}

/// Largest size exponent whose block size does not exceed `size` (at least 0,
/// at most 6 = 1024 bytes).
pub(crate) fn szx_for(size: usize) -> u8 {
    let mut szx = 0u8;
    while szx < 6 && szx_size(szx + 1) <= size {
        szx += 1;
    }
    szx
}

/// Reads a Block option from a packet: `Ok(None)` when absent, `Err(())` when
/// malformed.
pub(crate) fn block_option(packet: &Packet, number: u16) -> Result<Option<BlockOpt>, ()> {
    match first_option(packet, number) {
        None => Ok(None),
        Some(v) => BlockOpt::decode(v).map(Some).ok_or(()),
    }
}

/// Why a request's options cannot be honoured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum OptionProblem {
    /// An unrecognised critical option, or a recognised critical one that is
    /// repeated or has a bad length (RFC 7252 §5.4.1, §5.4.3, §5.4.5): 4.02.
    BadOption(u16),
    /// Proxy-Uri or Proxy-Scheme: we are not a proxy, 5.05.
    Proxy,
}

/// Checks a request's options. Elective (even) options we do not know are
/// ignored, as RFC 7252 §5.4.1 requires.
pub(crate) fn check_request_options(packet: &Packet) -> Result<(), OptionProblem> {
    for (&number, values) in packet.options() {
        if values.is_empty() {
            continue;
        }
        let repeatable;
        let (min, max) = match number {
            opt::URI_HOST => {
                repeatable = false;
                (1, 255)
            }
            opt::URI_PORT | opt::ACCEPT => {
                repeatable = false;
                (0, 2)
            }
            opt::URI_PATH | opt::URI_QUERY => {
                repeatable = true;
                (0, 255)
            }
            opt::BLOCK1 | opt::BLOCK2 => {
                repeatable = false;
                (0, 3)
            }
            opt::PROXY_URI | opt::PROXY_SCHEME => return Err(OptionProblem::Proxy),
            n if n & 1 == 1 => return Err(OptionProblem::BadOption(n)),
            _ => continue,
        };
        if !repeatable && values.len() > 1 {
            return Err(OptionProblem::BadOption(number));
        }
        if values.iter().any(|v| v.len() < min || v.len() > max) {
            return Err(OptionProblem::BadOption(number));
        }
    }
    Ok(())
}

/// Is this code a response code of class 2 (success)?
pub(crate) fn is_success(code: MessageClass) -> bool {
    let raw: u8 = code.into();
    raw >> 5 == 2
}

/// Builds the skeleton of a message: type, code, message ID and token.
pub(crate) fn new_packet(
    mtype: MessageType,
    code: MessageClass,
    message_id: u16,
    token: Token,
) -> Packet {
    let mut p = Packet::new();
    p.header.set_version(1);
    p.header.set_type(mtype);
    p.header.code = code;
    p.header.message_id = message_id;
    p.set_token(token.as_bytes().to_vec());
    p
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]
mod tests {
    use super::*;

    #[test]
    fn block_option_round_trips_with_20_bit_numbers() {
        for (num, more, szx) in [
            (0, false, 0),
            (1, true, 6),
            (4095, false, 2),
            (4096, true, 6),
            (BlockOpt::MAX_NUM, false, 5),
        ] {
            let b = BlockOpt { num, more, szx };
            let enc = b.encode();
            assert!(enc.len() <= 3);
            assert_eq!(BlockOpt::decode(&enc), Some(b));
        }
        assert_eq!(BlockOpt::decode(&[0x07]), None, "SZX 7 is reserved");
        assert_eq!(BlockOpt::decode(&[1, 2, 3, 4]), None);
        assert_eq!(
            BlockOpt::decode(&[]),
            Some(BlockOpt {
                num: 0,
                more: false,
                szx: 0
            })
        );
    }

    #[test]
    fn uint_encoding_is_minimal() {
        assert_eq!(encode_uint(0), Vec::<u8>::new());
        assert_eq!(encode_uint(0x12), vec![0x12]);
        assert_eq!(encode_uint(0x1234), vec![0x12, 0x34]);
        assert_eq!(encode_uint(OBSERVE_MAX), vec![0xFF, 0xFF, 0xFF]);
        assert_eq!(decode_uint(&[1, 0], 2), Some(256));
        assert_eq!(decode_uint(&[1, 0, 0], 2), None);
    }

    #[test]
    fn szx_follows_block_sizes() {
        assert_eq!(szx_for(1024), 6);
        assert_eq!(szx_for(5000), 6);
        assert_eq!(szx_for(1000), 5);
        assert_eq!(szx_for(16), 0);
        assert_eq!(szx_for(0), 0);
    }

    #[test]
    fn decode_rejects_bad_datagrams_without_panicking() {
        assert!(matches!(
            decode(&[0x40, 0x01]),
            Err(DecodeError::TooShort(2))
        ));
        assert!(matches!(
            decode(&[0x80, 0x01, 0, 1]),
            Err(DecodeError::Version(2))
        ));
        // CON GET with TKL 9.
        assert!(matches!(
            decode(&[0x49, 0x01, 0, 1]),
            Err(DecodeError::Malformed {
                header: RawHeader {
                    message_id: 1,
                    confirmable: true
                },
                ..
            })
        ));
        // Payload marker with no payload.
        assert!(matches!(
            decode(&[0x40, 0x01, 0, 1, 0xFF]),
            Err(DecodeError::Malformed { .. })
        ));
        // Option delta 15 (reserved).
        assert!(matches!(
            decode(&[0x40, 0x01, 0, 1, 0xF0]),
            Err(DecodeError::Malformed { .. })
        ));
        // Empty message with a token.
        assert!(matches!(
            decode(&[0x41, 0x00, 0, 1, 7]),
            Err(DecodeError::Malformed { .. })
        ));
        // Option value running past the end.
        assert!(matches!(
            decode(&[0x40, 0x01, 0, 1, 0xB5, b'a']),
            Err(DecodeError::Malformed { .. })
        ));
        // An option value that happens to end in 0xFF is not a marker.
        let p = decode(&[0x40, 0x01, 0, 1, 0xB1, 0xFF]).unwrap();
        assert!(p.payload.is_empty());
        // Exhaustive short inputs never panic.
        for a in 0..=255u8 {
            for b in [0u8, 0x01, 0x45, 0xFF] {
                let _ = decode(&[a, b, 0, 0, 0xDD, 0xFF, 0xEE, 0x0D]);
                let _ = decode(&[a, b, 0, 0, a]);
            }
        }
    }

    #[test]
    fn random_datagrams_never_panic_and_valid_ones_round_trip() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(42);
        let mut decoded = 0;
        for _ in 0..200_000 {
            let len = rng.random_range(0..48);
            let mut bytes: Vec<u8> = (0..len).map(|_| rng.random()).collect();
            if let Some(b0) = bytes.first_mut() {
                // Mostly version 1 with a small token, to get past the header.
                *b0 = 0x40 | (*b0 & 0x33);
            }
            if let Ok(p) = decode(&bytes) {
                decoded += 1;
                let again = decode(&p.to_bytes_unlimited().unwrap()).unwrap();
                assert_eq!(again, p);
                let _ = check_request_options(&p);
                let _ = block_option(&p, opt::BLOCK1);
                let _ = string_options(&p, opt::URI_PATH);
            }
        }
        assert!(
            decoded > 1_000,
            "the generator reaches valid messages ({decoded})"
        );
    }

    #[test]
    fn option_checks_follow_rfc_7252() {
        let mut p = new_packet(
            MessageType::Confirmable,
            MessageClass::Request(coap_lite::RequestType::Get),
            1,
            Token::default(),
        );
        add_segments(&mut p, opt::URI_PATH, &["a", "b"]);
        assert_eq!(check_request_options(&p), Ok(()));
        p.add_option(CoapOption::Unknown(2050), vec![1]);
        assert_eq!(
            check_request_options(&p),
            Ok(()),
            "unknown elective options are ignored"
        );
        p.add_option(CoapOption::Unknown(2049), vec![1]);
        assert_eq!(
            check_request_options(&p),
            Err(OptionProblem::BadOption(2049))
        );
        let mut q = new_packet(
            MessageType::Confirmable,
            MessageClass::Request(coap_lite::RequestType::Get),
            1,
            Token::default(),
        );
        q.add_option(CoapOption::Block2, vec![0]);
        q.add_option(CoapOption::Block2, vec![0]);
        assert_eq!(
            check_request_options(&q),
            Err(OptionProblem::BadOption(opt::BLOCK2))
        );
    }

    #[test]
    fn paths_split_and_join() {
        assert_eq!(split_path("/things/a/state"), vec!["things", "a", "state"]);
        assert_eq!(split_path("things"), vec!["things"]);
        assert!(split_path("/").is_empty());
        assert_eq!(path_key(&split_path("/a/b")), "a/b");
    }
}
