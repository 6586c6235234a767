//! Tests across the frame modules: framings fed in every split, checksums inside framings,
//! garbage, and the codec from TOML to decoded values and back to command frames.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use bytes::Bytes;
use serde_json::{Map, Value, json};

use super::*;

// ---------------------------------------------------------------------------------------------
// Helpers

fn make_framer(framing: &str, checksum: Option<&str>, max_frame: usize) -> Framer {
    let framing: FramingConfig = toml::from_str(framing).expect("framing TOML");
    let checksum: Option<ChecksumConfig> =
        checksum.map(|c| toml::from_str(c).expect("checksum TOML"));
    Framer::new(&framing, checksum.as_ref(), max_frame).expect("valid framing")
}

/// An outcome with the error reduced to its variant, so outcomes from different splits compare.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Out {
    Frame(Bytes),
    Error(&'static str),
}

fn kind(error: &FrameError) -> &'static str {
    match error {
        FrameError::Oversize { .. } => "oversize",
        FrameError::BadLength { .. } => "bad length",
        FrameError::InvalidEscape { .. } => "invalid escape",
        FrameError::TooShortForChecksum { .. } => "too short",
        FrameError::BadChecksumText => "bad checksum text",
        FrameError::ChecksumMismatch { .. } => "checksum mismatch",
        other => panic!("decode produced an encode error: {other:?}"),
    }
}

/// Drains a decoder; panics if it does not stop (every error must consume input).
fn drain(decoder: &mut FrameDecoder, out: &mut Vec<Out>) {
    for _ in 0..100_000 {
        match decoder.next_frame() {
            Ok(None) => return,
            Ok(Some(frame)) => out.push(Out::Frame(frame.payload)),
            Err(error) => out.push(Out::Error(kind(&error))),
        }
    }
    panic!("decoder did not run out of frames");
}

fn decode_chunks<'a>(framer: &Framer, chunks: impl IntoIterator<Item = &'a [u8]>) -> Vec<Out> {
    let mut decoder = framer.decoder();
    let mut out = Vec::new();
    for chunk in chunks {
        decoder.push(chunk);
        drain(&mut decoder, &mut out);
        assert!(
            decoder.buffered() <= framer.max_frame() + 1,
            "decoder holds {} bytes, cap {}",
            decoder.buffered(),
            framer.max_frame()
        );
    }
    out
}

/// Decodes `wire` at once, byte by byte and split in two at every boundary; all must agree.
fn decode_every_split(framer: &Framer, wire: &[u8]) -> Vec<Out> {
    let whole = decode_chunks(framer, [wire]);
    let bytes = decode_chunks(framer, wire.chunks(1));
    assert_eq!(bytes, whole, "byte by byte");
    for at in 0..=wire.len() {
        let (a, b) = wire.split_at(at);
        assert_eq!(decode_chunks(framer, [a, b]), whole, "split at {at}");
    }
    whole
}

fn frame(bytes: &[u8]) -> Out {
    Out::Frame(Bytes::copy_from_slice(bytes))
}

fn make_codec(toml_text: &str) -> FrameCodec {
    let table: toml::Table = toml::from_str(toml_text).expect("binding TOML");
    let binding = FrameBinding::from_toml(&table).expect("binding shape");
    FrameCodec::new(&binding).expect("valid binding")
}

fn object(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        other => panic!("not an object: {other}"),
    }
}

/// Deterministic pseudo-random bytes (xorshift), for garbage input.
fn garbage(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Framings

#[test]
fn lines_in_every_split() {
    let framer = make_framer(r#"kind = "lines""#, None, 64);
    let out = decode_every_split(&framer, b"a=1\nb=2\r\n\n\r\nc=3\r\npartial");
    assert_eq!(out, [frame(b"a=1"), frame(b"b=2"), frame(b"c=3")]);
}

#[test]
fn over_long_lines_are_dropped_to_their_end() {
    let framer = make_framer(r#"kind = "lines""#, None, 8);
    let out = decode_every_split(
        &framer,
        b"0123456789abcdef\nok\n12345678\n123456789\nlast\n",
    );
    assert_eq!(
        out,
        [
            Out::Error("oversize"),
            frame(b"ok"),
            frame(b"12345678"),
            Out::Error("oversize"),
            frame(b"last")
        ]
    );
    // A line that never ends is dropped once and never buffered past the cap.
    let endless = vec![b'x'; 10_000];
    let out = decode_chunks(&framer, endless.chunks(7).chain([&b"\nok\n"[..]]));
    assert_eq!(out, [Out::Error("oversize"), frame(b"ok")]);
}

#[test]
fn lines_with_a_hex_crc() {
    let framer = make_framer(
        r#"kind = "lines""#,
        Some(
            r#"kind = "crc16_modbus"
encoding = "hex"
separator = "*""#,
        ),
        64,
    );
    let wire = framer.encode(b"123456789").unwrap();
    assert_eq!(&wire[..], b"123456789*4B37\n");
    let mut stream = wire.to_vec();
    stream.extend_from_slice(b"123456789*4B38\n123456789#4B37\n*4B37\n\n123456789*4b37\r\n");
    let out = decode_every_split(&framer, &stream);
    assert_eq!(
        out,
        [
            frame(b"123456789"),
            Out::Error("checksum mismatch"),
            Out::Error("bad checksum text"),
            Out::Error("checksum mismatch"),
            frame(b"123456789"),
        ]
    );
    assert_eq!(
        framer.encode(b"a\nb"),
        Err(FrameError::ForbiddenByte { byte: b'\n' })
    );
}

#[test]
fn lines_encode_with_crlf() {
    let framer = make_framer("kind = \"lines\"\nending = \"crlf\"", None, 16);
    assert_eq!(&framer.encode(b"hi").unwrap()[..], b"hi\r\n");
    assert_eq!(framer.encode(b""), Err(FrameError::EmptyFrame));
    assert_eq!(
        framer.encode(b"hi\r"),
        Err(FrameError::ForbiddenByte { byte: b'\r' })
    );
    assert!(matches!(
        framer.encode(&[b'a'; 17]),
        Err(FrameError::Oversize { len: 17, max: 16 })
    ));
}

#[test]
fn length_prefixed_u16_big_endian() {
    let framer = make_framer(
        r#"kind = "length_prefixed"
type = "u16""#,
        None,
        64,
    );
    let out = decode_every_split(&framer, b"\x00\x03abc\x00\x00\x00\x01x\x00\x05ab");
    assert_eq!(out, [frame(b"abc"), frame(b""), frame(b"x")]);
    assert_eq!(&framer.encode(b"abc").unwrap()[..], b"\x00\x03abc");
}

#[test]
fn length_prefixed_variants() {
    // u8 counting itself.
    let framer1 = make_framer(
        "kind = \"length_prefixed\"\ntype = \"u8\"\nincludes_header = true",
        None,
        64,
    );
    assert_eq!(
        decode_every_split(&framer1, b"\x04abc\x01\x02q"),
        [frame(b"abc"), frame(b""), frame(b"q")]
    );
    // A length below the header's own size loses the stream position: what is buffered goes.
    assert_eq!(
        decode_chunks(&framer1, [&b"\x04abc\x00\x02q"[..]]),
        [frame(b"abc"), Out::Error("bad length")]
    );
    assert_eq!(&framer1.encode(b"abc").unwrap()[..], b"\x04abc");
    // u32 little endian.
    let framer2 = make_framer(
        "kind = \"length_prefixed\"\ntype = \"u32\"\norder = \"little\"",
        None,
        64,
    );
    assert_eq!(
        decode_every_split(&framer2, b"\x02\x00\x00\x00hi"),
        [frame(b"hi")]
    );
    assert_eq!(&framer2.encode(b"hi").unwrap()[..], b"\x02\x00\x00\x00hi");
    // A sync/type byte before the length is kept in the payload.
    let framer3 = make_framer(
        "kind = \"length_prefixed\"\ntype = \"u8\"\noffset = 1",
        None,
        64,
    );
    assert_eq!(
        decode_every_split(&framer3, b"\xAA\x02hi\xAB\x00"),
        [frame(b"\xAAhi"), frame(b"\xAB")]
    );
    assert_eq!(&framer3.encode(b"\xAAhi").unwrap()[..], b"\xAA\x02hi");
    assert_eq!(
        framer3.encode(b""),
        Err(FrameError::WrongLength {
            len: 0,
            expected: 1
        })
    );
    // u8 too small for a big payload.
    let framer4 = make_framer("kind = \"length_prefixed\"\ntype = \"u8\"", None, 1024);
    assert_eq!(
        framer4.encode(&[0; 300]),
        Err(FrameError::LengthOverflow { len: 301, width: 1 })
    );
}

#[test]
fn length_prefixed_with_crc32_and_adjust() {
    // The length counts the payload only; the CRC-32 (big endian) over the whole frame follows.
    let framer = make_framer(
        "kind = \"length_prefixed\"\ntype = \"u16\"\nadjust = 4",
        Some("kind = \"crc32\""),
        64,
    );
    let wire = framer.encode(b"123456789").unwrap();
    assert_eq!(&wire[..2], b"\x00\x09");
    assert_eq!(wire.len(), 2 + 9 + 4);
    assert_eq!(
        crc32_ieee(&wire[..11]).to_be_bytes(),
        wire[11..],
        "covers the header too"
    );
    let mut stream = wire.to_vec();
    let mut bad = wire.to_vec();
    bad[5] ^= 1;
    stream.extend_from_slice(&bad);
    stream.extend_from_slice(&wire);
    assert_eq!(
        decode_every_split(&framer, &stream),
        [
            frame(b"123456789"),
            Out::Error("checksum mismatch"),
            frame(b"123456789")
        ]
    );
}

#[test]
fn length_prefixed_oversize_drops_the_stream_state() {
    let framer = make_framer("kind = \"length_prefixed\"\ntype = \"u32\"", None, 16);
    // A 4 GiB announcement is refused before anything is buffered, and the rest is dropped.
    let out = decode_chunks(
        &framer,
        [&b"\xFF\xFF\xFF\xFFabc"[..], b"\x00\x00\x00\x02ok"],
    );
    assert_eq!(out, [Out::Error("oversize"), frame(b"ok")]);
    // A negative total through `adjust` is a bad length, not a panic.
    let framer = make_framer(
        "kind = \"length_prefixed\"\ntype = \"u8\"\nadjust = -5",
        None,
        16,
    );
    assert_eq!(
        decode_chunks(&framer, [&b"\x01abc"[..]]),
        [Out::Error("bad length")]
    );
}

const SLIP: &str = "kind = \"delimited\"
end = 0xC0
escape = 0xDB
escaped_end = 0xDC
escaped_escape = 0xDD";

#[test]
fn slip_in_every_split() {
    let framer = make_framer(SLIP, None, 16);
    let wire = b"\xC0\x01\xDB\xDC\x02\xDB\xDD\xC0\xC0\x03\xC0\x04";
    assert_eq!(
        decode_every_split(&framer, wire),
        [frame(b"\x01\xC0\x02\xDB"), frame(b"\x03")]
    );
    assert_eq!(
        &framer.encode(b"\x01\xC0\x02\xDB").unwrap()[..],
        b"\x01\xDB\xDC\x02\xDB\xDD\xC0"
    );
}

#[test]
fn slip_errors_resync_at_the_next_end() {
    let framer = make_framer(SLIP, None, 4);
    let wire = b"\x01\xDB\x05\x02\xC0ok\xC0\x01\xDB\xC0ab\xC0toolong\xC0\x05\xC0";
    assert_eq!(
        decode_every_split(&framer, wire),
        [
            Out::Error("invalid escape"),
            frame(b"ok"),
            Out::Error("invalid escape"),
            frame(b"ab"),
            Out::Error("oversize"),
            frame(b"\x05")
        ]
    );
    // Escaped bytes count towards the cap too.
    let out = decode_chunks(
        &framer,
        [&b"\xDB\xDC\xDB\xDC\xDB\xDC\xDB\xDC\xDB\xDC\xC0"[..]],
    );
    assert_eq!(out, [Out::Error("oversize")]);
}

#[test]
fn slip_with_a_binary_crc16() {
    let framer = make_framer(SLIP, Some("kind = \"crc16_modbus\""), 32);
    // Payload chosen so that escapes are needed in the payload.
    let payload = b"\xC0\xDB123456789";
    let wire = framer.encode(payload).unwrap();
    let mut stream = wire.to_vec();
    let mut corrupted = wire.to_vec();
    corrupted[5] ^= 0x01;
    stream.extend_from_slice(&corrupted);
    stream.extend_from_slice(b"\x01\xC0");
    assert_eq!(
        decode_every_split(&framer, &stream),
        [
            frame(payload),
            Out::Error("checksum mismatch"),
            Out::Error("too short")
        ]
    );
}

#[test]
fn start_and_end_bytes_without_escape() {
    let framer = make_framer(
        "kind = \"delimited\"\nstart = 0x02\nend = 0x03",
        Some("kind = \"xor8\"\nencoding = \"hex\""),
        32,
    );
    let good = framer.encode(b"T=21").unwrap();
    assert_eq!(good[0], 0x02);
    let mut stream = b"noise\x03noise".to_vec();
    stream.extend_from_slice(&good);
    // A start inside a frame restarts it: the lost end is not reported, the frame after is read.
    stream.extend_from_slice(b"\x02half\x02");
    stream.extend_from_slice(&good[1..]);
    assert_eq!(
        decode_every_split(&framer, &stream),
        [frame(b"T=21"), frame(b"T=21")]
    );
    assert_eq!(
        framer.encode(b"a\x03b"),
        Err(FrameError::ForbiddenByte { byte: 0x03 })
    );
}

#[test]
fn hdlc_like_flag_with_escape() {
    let framer = make_framer(
        "kind = \"delimited\"
start = 0x7E
end = 0x7E
escape = 0x7D
escaped_end = 0x5E
escaped_escape = 0x5D",
        None,
        32,
    );
    let wire = framer.encode(b"a\x7Eb\x7Dc").unwrap();
    assert_eq!(&wire[..], b"\x7Ea\x7D\x5Eb\x7D\x5Dc\x7E");
    let mut stream = b"junk".to_vec();
    stream.extend_from_slice(&wire);
    stream.extend_from_slice(&wire);
    stream.extend_from_slice(b"\x7E\x7Ed\x7E");
    assert_eq!(
        decode_every_split(&framer, &stream),
        [frame(b"a\x7Eb\x7Dc"), frame(b"a\x7Eb\x7Dc"), frame(b"d")]
    );
}

#[test]
fn fixed_length_with_xor8() {
    let framer = make_framer("kind = \"fixed\"\nlength = 4", Some("kind = \"xor8\""), 16);
    let wire = framer.encode(b"\x01\x02\x03").unwrap();
    assert_eq!(&wire[..], b"\x01\x02\x03\x00");
    assert_eq!(
        decode_every_split(&framer, b"\x01\x02\x03\x00\x01\x02\x03\x01\x05\x00"),
        [frame(b"\x01\x02\x03"), Out::Error("checksum mismatch")]
    );
    assert_eq!(
        framer.encode(b"\x01"),
        Err(FrameError::WrongLength {
            len: 1,
            expected: 3
        })
    );
}

#[test]
fn datagrams_are_frames() {
    let framer = make_framer(
        "kind = \"datagram\"",
        Some("kind = \"crc16_modbus\"\norder = \"big\""),
        8,
    );
    let good = framer.encode(b"abc").unwrap();
    assert_eq!(&good[3..], crc16_modbus(b"abc").to_be_bytes());
    let out = decode_chunks(&framer, [&good[..], b"abcde", &[0; 9][..], b"", &good[..]]);
    assert_eq!(
        out,
        [
            frame(b"abc"),
            Out::Error("checksum mismatch"),
            Out::Error("oversize"),
            Out::Error("too short"),
            frame(b"abc")
        ]
    );
    assert!(framer.needs_datagrams());
}

#[test]
fn every_framing_round_trips_awkward_payloads() {
    let crc = Some("kind = \"crc16_modbus\"");
    let hex = Some("kind = \"crc32\"\nencoding = \"hex\"\nseparator = \",\"");
    let framers = [
        make_framer("kind = \"datagram\"", crc, 64),
        make_framer("kind = \"lines\"", hex, 64),
        make_framer(
            "kind = \"length_prefixed\"\ntype = \"u16\"\norder = \"little\"",
            crc,
            64,
        ),
        make_framer(
            "kind = \"length_prefixed\"\ntype = \"u8\"\noffset = 2\nincludes_header = true",
            crc,
            64,
        ),
        make_framer(SLIP, crc, 64),
        make_framer(
            "kind = \"delimited\"\nstart = 0x02\nend = 0x03\nescape = 0x10\nescaped_start = 0x12\nescaped_end = 0x13\nescaped_escape = 0x11",
            crc,
            64,
        ),
    ];
    for framer in &framers {
        for seed in 1..40u64 {
            let mut payload = garbage(seed, (seed as usize * 7) % 40 + 3);
            // The lines framing (second) cannot carry line ends in a payload.
            if std::ptr::eq(framer, &framers[1]) {
                payload.retain(|&b| b != b'\n' && b != b'\r');
                payload.push(b'x');
            }
            let wire = framer.encode(&payload).unwrap();
            let mut decoder = framer.decoder();
            decoder.push(&wire);
            let decoded = decoder.next_frame().unwrap().unwrap();
            assert_eq!(&decoded.payload[..], &payload[..], "{framer:?}");
            assert_eq!(decoder.next_frame().unwrap(), None);
        }
    }
}

#[test]
fn garbage_never_panics_or_hoards_memory() {
    let crc = Some("kind = \"crc16_modbus\"");
    let hex = Some("kind = \"xor8\"\nencoding = \"hex\"\nseparator = \"*\"\nskip = 1");
    let framers = [
        make_framer("kind = \"datagram\"", crc, 32),
        make_framer("kind = \"lines\"", None, 32),
        make_framer("kind = \"lines\"", hex, 32),
        make_framer("kind = \"length_prefixed\"\ntype = \"u16\"", crc, 32),
        make_framer(
            "kind = \"length_prefixed\"\ntype = \"u32\"\nincludes_header = true\nadjust = -3",
            None,
            32,
        ),
        make_framer(
            "kind = \"length_prefixed\"\ntype = \"u8\"\noffset = 3\nadjust = 2",
            hex,
            32,
        ),
        make_framer(SLIP, crc, 32),
        make_framer("kind = \"delimited\"\nstart = 0x02\nend = 0x03", hex, 32),
        make_framer(
            "kind = \"delimited\"\nstart = 0x7E\nend = 0x7E\nescape = 0x7D\nescaped_end = 0x5E\nescaped_escape = 0x5D",
            None,
            32,
        ),
        make_framer("kind = \"fixed\"\nlength = 5", crc, 32),
    ];
    for framer in &framers {
        for seed in 1..30u64 {
            let data = garbage(seed, 3000);
            for chunk in [1, 3, 64, 3000] {
                decode_chunks(framer, data.chunks(chunk));
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Codec

#[test]
fn json_with_pointers_id_and_replies() {
    let codec = make_codec(
        r#"
        id_field = "/device/id"
        framing = { kind = "length_prefixed", type = "u16" }
        layout = { kind = "json" }
        properties = { temperature = "/sensors/t", humidity = "h" }
        reply = { correlate = "field", field = "re" }
        "#,
    );
    let decoded = codec
        .decode(br#"{"device":{"id":"th-1"},"sensors":{"t":21.5},"h":40,"x":1}"#)
        .unwrap();
    assert_eq!(decoded.thing_id.as_deref(), Some("th-1"));
    assert_eq!(
        Value::Object(decoded.values),
        json!({"temperature": 21.5, "humidity": 40})
    );
    assert_eq!(decoded.reply, None);
    let reply = codec.decode(br#"{"re":17,"h":41}"#).unwrap();
    assert_eq!(reply.thing_id, None);
    assert_eq!(
        reply.reply,
        Some(ReplyInfo {
            correlation: Correlation::Sequence("17".to_owned())
        })
    );
    // A report written by a simulated device reads back the same.
    let values = object(json!({"temperature": 20.25, "humidity": 38}));
    let wire = codec.encode_report(Some("th-1"), &values).unwrap();
    let mut decoder = codec.decoder();
    decoder.push(&wire);
    let payload = decoder.next_frame().unwrap().unwrap().payload;
    let decoded = codec.decode(&payload).unwrap();
    assert_eq!(decoded.thing_id.as_deref(), Some("th-1"));
    assert_eq!(decoded.values, values);
}

#[test]
fn unmapped_fields_skip_id_reply_and_underscored_fields() {
    let codec = make_codec(
        r#"
        id_field = "id"
        layout = { kind = "key_value" }
        reply = { correlate = "field", field = "seq", when = { field = "_type", equals = "ack" } }
        "#,
    );
    let decoded = codec.decode(b"id=007;_type=data;seq=3;t=21.5").unwrap();
    assert_eq!(decoded.thing_id.as_deref(), Some("007"), "ids stay text");
    assert_eq!(Value::Object(decoded.values), json!({"t": 21.5}));
    assert_eq!(decoded.reply, None, "`when` does not match");
    let decoded = codec.decode(b"id=007;_type=ack;seq=3;ok=true").unwrap();
    assert_eq!(
        decoded.reply.map(|r| r.correlation),
        Some(Correlation::Sequence("3".to_owned()))
    );
}

#[test]
fn bad_ids_and_oversize_payloads() {
    let codec = make_codec(
        r#"
        max_frame = 64
        id_field = "id"
        layout = { kind = "json" }
        "#,
    );
    for payload in [
        &br#"{"id":"a.b"}"#[..],
        br#"{"id":""}"#,
        br#"{"id":true}"#,
        br#"{"id":-4}"#,
    ] {
        assert!(
            matches!(codec.decode(payload), Err(DecodeError::BadId { .. })),
            "{}",
            String::from_utf8_lossy(payload)
        );
    }
    assert_eq!(codec.decode(br#"{"id":null}"#).unwrap().thing_id, None);
    assert_eq!(
        codec.decode(br#"{"id":12}"#).unwrap().thing_id.as_deref(),
        Some("12")
    );
    assert!(matches!(
        codec.decode(&[b' '; 65]),
        Err(DecodeError::Oversize { len: 65, max: 64 })
    ));
}

#[test]
fn csv_codec_with_types() {
    let codec = make_codec(
        r#"
        id_field = "id"
        id_template = "station-{}"
        framing = { kind = "lines" }
        layout = { kind = "csv", fields = ["id", "temperature", "humidity", "fw"], types = { fw = "string" } }
        "#,
    );
    let decoded = codec.decode(b"12,21.5,40,2.0").unwrap();
    assert_eq!(decoded.thing_id.as_deref(), Some("station-12"));
    assert_eq!(
        Value::Object(decoded.values.clone()),
        json!({"temperature": 21.5, "humidity": 40, "fw": "2.0"})
    );
    let wire = codec
        .encode_report(Some("station-12"), &decoded.values)
        .unwrap();
    assert_eq!(&wire[..], b"12,21.5,40,2.0\n");
    assert!(matches!(
        codec.encode_report(Some("other-12"), &decoded.values),
        Err(EncodeError::BadThingId(_))
    ));
    assert!(matches!(
        codec.decode(b"12,21.5"),
        Err(DecodeError::Layout(LayoutError::FieldCount { .. }))
    ));
}

#[test]
fn garbage_payloads_never_panic() {
    let codecs = [
        make_codec("layout = { kind = \"json\" }\nid_field = \"id\""),
        make_codec(
            "layout = { kind = \"key_value\" }\nid_field = \"id\"\nreply = { correlate = \"field\", field = \"seq\" }",
        ),
        make_codec("layout = { kind = \"csv\", fields = [\"a\", \"b\"] }"),
        make_codec(BEACON),
    ];
    for codec in &codecs {
        for seed in 1..200u64 {
            let data = garbage(seed, (seed as usize) % 64);
            let _ = codec.decode(&data);
        }
        let _ = codec.decode(&[0xFF; 10_000]);
    }
}

// ---------------------------------------------------------------------------------------------
// Commands

#[test]
fn text_set_sends_one_frame_per_property() {
    let codec = make_codec(
        r#"
        framing = { kind = "lines" }
        layout = { kind = "key_value" }
        properties = { target = "sp" }
        [commands.set]
        text = "SET {property}={value}"
        bools = ["OFF", "ON"]
        "#,
    );
    let desired = object(json!({"relay": true, "target": 21.5}));
    let frames = codec
        .encode_command("x", Command::Set(&desired), 0)
        .unwrap();
    let wire: Vec<&[u8]> = frames.iter().map(|f| &f.bytes[..]).collect();
    assert_eq!(wire, [&b"SET relay=ON\n"[..], b"SET sp=21.5\n"]);
    assert!(frames.iter().all(|f| f.reply.is_none()));
    let empty = Map::new();
    assert!(matches!(
        codec.encode_command("x", Command::Set(&empty), 0),
        Err(EncodeError::NothingToSet)
    ));
    assert!(matches!(
        codec.encode_command("x", Command::Action { name: "reboot", input: &Value::Null }, 0),
        Err(EncodeError::UnknownAction(name)) if name == "reboot"
    ));
    let injected = object(json!({"name": "a\nb"}));
    assert!(matches!(
        codec.encode_command("x", Command::Set(&injected), 0),
        Err(EncodeError::Frame(FrameError::ForbiddenByte { .. }))
    ));
}

#[test]
fn json_action_with_sequence_correlation() {
    let codec = make_codec(
        r#"
        framing = { kind = "length_prefixed", type = "u16" }
        layout = { kind = "json" }
        reply = { correlate = "field", field = "re" }
        [commands.actions.blink]
        json = { cmd = "{action}", seq = "{seq}", times = "{times}", "for" = "{id}", note = "x{times}y", all = "{input}" }
        "#,
    );
    let input = json!({"times": 3});
    let frames = codec
        .encode_command(
            "lamp-1",
            Command::Action {
                name: "blink",
                input: &input,
            },
            41,
        )
        .unwrap();
    assert_eq!(frames.len(), 1);
    assert_eq!(
        frames[0].reply,
        Some(Correlation::Sequence("41".to_owned()))
    );
    let body: Value = serde_json::from_slice(&frames[0].bytes[2..]).unwrap();
    assert_eq!(
        body,
        json!({"cmd": "blink", "seq": 41, "times": 3, "for": "lamp-1", "note": "x3y", "all": {"times": 3}})
    );
    // The device's reply carries the number back.
    let reply = codec.decode(br#"{"re":41,"ok":true}"#).unwrap();
    assert_eq!(
        reply.reply.unwrap().correlation,
        frames[0].reply.clone().unwrap()
    );
    assert_eq!(Value::Object(reply.values), json!({"ok": true}));
    assert!(matches!(
        codec.encode_command("lamp-1", Command::Action { name: "blink", input: &json!({}) }, 1),
        Err(EncodeError::MissingValue(name)) if name == "times"
    ));
}

#[test]
fn binary_command_with_wrapping_sequence_and_next_frame_replies() {
    let codec = make_codec(
        r#"
        id_field = "addr"
        layout = { kind = "binary", fields = [
            { name = "addr", offset = 0, type = "u8" },
            { name = "seq", offset = 1, type = "u8" },
            { name = "t", offset = 2, type = "i16", scale = 0.1 },
        ] }
        reply = { correlate = "field", field = "seq" }
        [commands.actions.set_interval]
        binary = { bytes = [0xA5, 0, 0, 0, 0, 0x5A], fields = [
            { name = "addr", offset = 1, type = "u8" },
            { name = "seq", offset = 2, type = "u8" },
            { name = "seconds", offset = 3, type = "u16", order = "little" },
        ] }
        "#,
    );
    let input = json!({"seconds": 300});
    let frames = codec
        .encode_command(
            "7",
            Command::Action {
                name: "set_interval",
                input: &input,
            },
            258,
        )
        .unwrap();
    assert_eq!(&frames[0].bytes[..], &[0xA5, 7, 2, 0x2C, 0x01, 0x5A]);
    assert_eq!(frames[0].reply, Some(Correlation::Sequence("2".to_owned())));
    let reply = codec.decode(&[7, 2, 0x00, 0xEB]).unwrap();
    assert_eq!(reply.thing_id.as_deref(), Some("7"));
    assert_eq!(
        reply.reply.unwrap().correlation,
        Correlation::Sequence("2".to_owned())
    );
    assert_eq!(Value::Object(reply.values), json!({"t": 23.5}));
    let too_big = json!({"seconds": 70_000});
    assert!(matches!(
        codec.encode_command(
            "7",
            Command::Action {
                name: "set_interval",
                input: &too_big
            },
            0
        ),
        Err(EncodeError::Layout(LayoutError::OutOfRange { .. }))
    ));
    assert!(matches!(
        codec.encode_command(
            "x7",
            Command::Action {
                name: "set_interval",
                input: &input
            },
            0
        ),
        Err(EncodeError::BadThingId(_))
    ));

    let half_duplex = make_codec(
        r#"
        framing = { kind = "lines" }
        layout = { kind = "key_value" }
        reply = { correlate = "next_frame", when = { field = "ack", equals = 1 } }
        commands.actions.read = { text = "READ" }
        commands.actions.beep = { text = "BEEP", expect_reply = false }
        "#,
    );
    let frames = half_duplex
        .encode_command(
            "x",
            Command::Action {
                name: "read",
                input: &Value::Null,
            },
            0,
        )
        .unwrap();
    assert_eq!(frames[0].reply, Some(Correlation::NextFrame));
    let frames = half_duplex
        .encode_command(
            "x",
            Command::Action {
                name: "beep",
                input: &Value::Null,
            },
            0,
        )
        .unwrap();
    assert_eq!(frames[0].reply, None);
    assert_eq!(
        half_duplex.decode(b"ack=1.0;t=3").unwrap().reply,
        Some(ReplyInfo {
            correlation: Correlation::NextFrame
        })
    );
    assert_eq!(half_duplex.decode(b"t=3").unwrap().reply, None);
}

// ---------------------------------------------------------------------------------------------
// Configuration errors

/// Parses and validates a binding; returns the key of the error.
fn config_error(text: &str) -> (String, String) {
    let table: toml::Table = toml::from_str(text).expect("TOML");
    let error = match FrameBinding::from_toml(&table) {
        Err(error) => error,
        Ok(binding) => binding.validate().expect_err("binding should be refused"),
    };
    (error.key().to_owned(), error.to_string())
}

#[test]
fn config_errors_name_the_key_and_reason() {
    let cases: &[(&str, &str, &str)] = &[
        (
            "layout = { kind = \"json\" }\nbogus = 1",
            "bogus",
            "unknown field `bogus`",
        ),
        (
            "layout = { kind = \"yaml\" }",
            "layout.kind",
            "unknown variant `yaml`",
        ),
        (
            "layout = { kind = \"json\" }\nchecksum = { kind = \"crc8\" }",
            "checksum.kind",
            "unknown variant `crc8`",
        ),
        (
            "layout = { kind = \"json\" }\nframing = { kind = \"lines\", eol = \"x\" }",
            "framing",
            "unknown field `eol`",
        ),
        (
            "layout = { kind = \"binary\", fields = [{ name = \"a\", offset = 0, type = \"u24\" }] }",
            "layout.fields[0].type",
            "unknown variant `u24`",
        ),
        (
            "layout = { kind = \"binary\", fields = [{ name = \"a\", offset = 0, type = \"u8\", scale = 0.0 }] }",
            "layout.fields[0].scale",
            "scale must be finite and non-zero",
        ),
        (
            "layout = { kind = \"binary\", fields = [{ name = \"a\", offset = 0, type = \"u16\", bits = \"12..17\" }] }",
            "layout.fields[0].bits",
            "does not fit a 16-bit integer",
        ),
        (
            "layout = { kind = \"binary\", length = 4, fields = [{ name = \"a\", offset = 0, type = \"u16\" }, { name = \"b\", offset = 3, type = \"u16\" }] }",
            "layout.fields[1].offset",
            "past the 4-byte frame",
        ),
        (
            "layout = { kind = \"binary\", fields = [{ name = \"a\", offset = 0, type = \"u16\" }, { name = \"b\", offset = 1, type = \"u16\" }] }",
            "layout.fields[1].offset",
            "overlaps field `a`",
        ),
        (
            "max_frame = 8\nframing = { kind = \"fixed\", length = 6 }\nchecksum = { kind = \"crc32\" }\nlayout = { kind = \"binary\", fields = [{ name = \"a\", offset = 2, type = \"u8\" }] }",
            "layout.fields[0].offset",
            "past the 2-byte frame",
        ),
        (
            "layout = { kind = \"json\" }\nframing = { kind = \"lines\" }\nchecksum = { kind = \"crc16_modbus\" }",
            "checksum.encoding",
            "use encoding = \"hex\"",
        ),
        (
            "layout = { kind = \"json\" }\nframing = { kind = \"delimited\", end = 0xC0, escape = 0xC0 }",
            "framing.escape",
            "also used as `end`",
        ),
        (
            "layout = { kind = \"json\" }\nframing = { kind = \"delimited\", end = 0xC0, escape = 0xDB, escaped_end = 0xDC }",
            "framing.escaped_escape",
            "required when `escape` is set",
        ),
        (
            "layout = { kind = \"json\" }\nframing = { kind = \"delimited\", end = 0xC0, escape = 0xDB, escaped_end = 0xDB, escaped_escape = 0xDD }",
            "framing.escaped_end",
            "also used as `escape`",
        ),
        (
            "layout = { kind = \"json\" }\nmax_frame = 0",
            "max_frame",
            "out of range",
        ),
        (
            "layout = { kind = \"json\" }\nframing = { kind = \"fixed\", length = 1 }\nchecksum = { kind = \"crc16_modbus\" }",
            "framing.length",
            "cannot hold the 2-byte checksum",
        ),
        (
            "layout = { kind = \"csv\", fields = [\"a\"] }\nid_field = \"id\"",
            "id_field",
            "no field `id`",
        ),
        (
            "layout = { kind = \"json\" }\nid_field = \"id\"\nid_template = \"dev-{\"",
            "id_template",
            "bad id template",
        ),
        (
            "layout = { kind = \"json\" }\nreply = { correlate = \"field\" }",
            "reply.field",
            "required when",
        ),
        (
            "layout = { kind = \"json\" }\ncommands.set = { text = \"A\", json = \"B\" }",
            "commands.set",
            "exactly one of",
        ),
        (
            "layout = { kind = \"json\" }\ncommands.actions.go = { text = \"GO {\" }",
            "commands.actions.go.text",
            "bad template",
        ),
        (
            "layout = { kind = \"json\" }\nreply = { correlate = \"field\", field = \"seq\" }\ncommands.actions.go = { text = \"GO\" }",
            "commands.actions.go",
            "never sends the sequence number",
        ),
        (
            "layout = { kind = \"json\" }\nframing = { kind = \"lines\" }\ncommands.actions.go = { text = \"GO\\n\" }",
            "commands.actions.go.text",
            "the lines framing adds it",
        ),
        (
            "layout = { kind = \"json\" }\ncommands.actions.go = { text = \"GO\", expect_reply = true }",
            "commands.actions.go.expect_reply",
            "required when `reply` is set",
        ),
        (
            "layout = { kind = \"json\" }\ncommands.actions.go = { binary = { bytes = [1], fields = [{ name = \"x\", offset = 1, type = \"u8\" }] } }",
            "commands.actions.go.binary.fields[0].offset",
            "past the 1-byte frame",
        ),
    ];
    for (text, key, reason) in cases {
        let (found_key, message) = config_error(text);
        assert_eq!(&found_key, key, "{text}\n→ {message}");
        assert!(message.contains(reason), "{text}\n→ {message}");
    }
}

#[test]
fn the_key_reference_in_the_config_docs_is_a_valid_binding() {
    let source = include_str!("config.rs");
    let block: String = source
        .lines()
        .map_while(|line| line.strip_prefix("//!"))
        .skip_while(|line| !line.contains("```toml"))
        .skip(1)
        .take_while(|line| !line.contains("```"))
        .map(|line| format!("{}\n", line.strip_prefix(' ').unwrap_or(line)))
        .collect();
    let document: toml::Table = toml::from_str(&block).unwrap();
    let table = document["bindings"]["frame"].as_table().unwrap();
    FrameBinding::from_toml(table).unwrap().validate().unwrap();
}

#[test]
fn bindings_serialize_back_to_the_same_binding() {
    let table: toml::Table = toml::from_str(BEACON).unwrap();
    let binding = FrameBinding::from_toml(&table).unwrap();
    let text = toml::to_string(&binding).unwrap();
    let again: FrameBinding = toml::from_str(&text).unwrap();
    assert_eq!(again, binding);
}

// ---------------------------------------------------------------------------------------------
// The beacon from the module docs' example, used above.

const BEACON: &str = r#"
max_frame = 16
id_field = "id"
id_template = "beacon-{}"
framing = { kind = "datagram" }
checksum = { kind = "xor8" }

[layout]
kind = "binary"
length = 6
fields = [
  { name = "id", offset = 0, type = "u16" },
  { name = "temperature", offset = 2, type = "i16", scale = 0.01 },
  { name = "humidity", offset = 4, type = "u8" },
  { name = "battery", offset = 5, type = "u8", bits = "0..=6" },
  { name = "charging", offset = 5, type = "u8", bits = "7" },
]
"#;

#[test]
fn beacon_datagram() {
    let codec = make_codec(BEACON);
    let payload = [0x00, 0x2A, 0xF8, 0x30, 0x37, 0x80 | 87];
    let mut datagram = payload.to_vec();
    datagram.push(xor8(&payload));
    let mut decoder = codec.decoder();
    decoder.push(&datagram);
    let frame = decoder.next_frame().unwrap().unwrap();
    let decoded = codec.decode(&frame.payload).unwrap();
    assert_eq!(decoded.thing_id.as_deref(), Some("beacon-42"));
    assert_eq!(
        Value::Object(decoded.values.clone()),
        json!({"temperature": -20.0, "humidity": 55, "battery": 87, "charging": 1})
    );
    assert_eq!(
        &codec
            .encode_report(Some("beacon-42"), &decoded.values)
            .unwrap()[..],
        &datagram[..]
    );
    assert!(matches!(
        codec.decode(&payload[..5]),
        Err(DecodeError::Layout(LayoutError::WrongLength { .. }))
    ));
}
