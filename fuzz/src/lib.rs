//! Fuzz targets for every decoder that reads bytes from a device or a peer. Each target is one
//! function here, called by its libFuzzer binary in `fuzz_targets/` and by the `smoke` runner.
//!
//! | target | decoder |
//! | --- | --- |
//! | `frame_datagram` | datagram framing + XOR-8 (device-models example `udp_beacon.toml`) |
//! | `frame_lines` | lines + hex CRC-16/MODBUS (example `serial_kv_meter.toml`) |
//! | `frame_length_prefixed` | u16 length prefix (example `tcp_json_thermostat.toml`) |
//! | `frame_delimited` | STX/ETX with an escape byte and a binary CRC-16 |
//! | `frame_fixed` | fixed-length frames with XOR-8 |
//! | `layout_json`, `layout_key_value`, `layout_csv`, `layout_binary` | `FrameCodec::decode` of each payload layout |
//! | `wamp_json`, `wamp_msgpack` | `hub::wamp::Serializer::{Json, MsgPack}.decode` |
//! | `rawsocket_frame` | `hub::transport::rawsocket::decode_frame` |
//! | `coap_server`, `coap_client` | the CoAP engines' datagram parsing and handling |
//! | `mqtt_packets` | `gateways::mqtt::codec`: the CONNECT's protocol level, then packets (3.1.1 and 5) |
//! | `modbus_registers` | `ModbusModel::decode` of registers and bits, `encode_set` and `encode_action` of JSON |
//! | `modbus_sim_requests` | the Modbus simulator's request PDUs (`firmware_sim::modbus::pdu`), executed by a meter and a drive |
//!
//! Stream targets take the first input byte as a chunk size and push the rest in pieces of that
//! size, so frames split across reads are covered; after the input is drained, the decoder must
//! hold no more than two frames' worth of bytes. Datagram targets (`coap_*`) read the input as
//! datagrams, each preceded by its length byte. `modbus_registers` reads the input three ways: as
//! big-endian registers, as bits, and (when it parses) as a JSON value to write.

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use device_models::ThingType;
use device_models::frames::{FrameBinding, FrameCodec};
use device_models::modbus::{ModbusModel, ReadData, Write, apply_mask};
use gateways::coap::client::{Client, ClientConfig};
use gateways::coap::server::{Server, ServerConfig};
use hub::transport::rawsocket::decode_frame;
use hub::wamp::Serializer;
use serde_json::{Map, Value, json};

/// A fuzz target.
pub type Target = fn(&[u8]);

/// Makes a target's seed inputs.
pub type Seeds = fn() -> Vec<Vec<u8>>;

/// Every target by name, with the function that makes its seed inputs.
pub const TARGETS: &[(&str, Target, Seeds)] = &[
    ("frame_datagram", frame_datagram, seeds::frame_datagram),
    ("frame_lines", frame_lines, seeds::frame_lines),
    (
        "frame_length_prefixed",
        frame_length_prefixed,
        seeds::frame_length_prefixed,
    ),
    ("frame_delimited", frame_delimited, seeds::frame_delimited),
    ("frame_fixed", frame_fixed, seeds::frame_fixed),
    ("layout_json", layout_json, seeds::layout_json),
    (
        "layout_key_value",
        layout_key_value,
        seeds::layout_key_value,
    ),
    ("layout_csv", layout_csv, seeds::layout_csv),
    ("layout_binary", layout_binary, seeds::layout_binary),
    ("wamp_json", wamp_json, seeds::wamp_json),
    ("wamp_msgpack", wamp_msgpack, seeds::wamp_msgpack),
    ("rawsocket_frame", rawsocket_frame, seeds::rawsocket_frame),
    ("coap_server", coap_server, seeds::coap_server),
    ("coap_client", coap_client, seeds::coap_client),
    ("mqtt_packets", mqtt_packets, seeds::mqtt_packets),
    (
        "modbus_registers",
        modbus_registers,
        seeds::modbus_registers,
    ),
    (
        "modbus_sim_requests",
        modbus_sim_requests,
        seeds::modbus_sim_requests,
    ),
];

const BEACON: &str = include_str!("../../device-models/tests/data/frames/udp_beacon.toml");
const METER: &str = include_str!("../../device-models/tests/data/frames/serial_kv_meter.toml");
const THERMOSTAT: &str =
    include_str!("../../device-models/tests/data/frames/tcp_json_thermostat.toml");

/// Escaped STX/ETX frames: a node byte and a scaled reading, CRC-16 in binary.
const DELIMITED: &str = r#"
[bindings.frame]
max_frame = 64
id_field = "node"
framing = { kind = "delimited", start = 0x02, end = 0x03, escape = 0x10, escaped_start = 0x12, escaped_end = 0x13, escaped_escape = 0x11 }
checksum = { kind = "crc16_modbus" }
layout = { kind = "binary", order = "little", fields = [
    { name = "node", offset = 0, type = "u8" },
    { name = "power", offset = 1, type = "i32", scale = 0.001 },
    { name = "alarm", offset = 5, type = "u8", bits = "0" },
] }
"#;

/// Fixed 8-byte frames: seven bytes of readings and an XOR-8.
const FIXED: &str = r#"
[bindings.frame]
max_frame = 8
id_field = "id"
id_template = "tag-{:04x}"
framing = { kind = "fixed", length = 8 }
checksum = { kind = "xor8" }
layout = { kind = "binary", order = "big", length = 7, fields = [
    { name = "id", offset = 0, type = "u16" },
    { name = "t", offset = 2, type = "f32" },
    { name = "rssi", offset = 6, type = "i8" },
] }
"#;

/// CSV lines: `id,t,h`.
const CSV: &str = r#"
[bindings.frame]
max_frame = 128
id_field = "id"
framing = { kind = "lines" }
layout = { kind = "csv", fields = ["id", "t", "h"], types = { id = "string", h = "number" } }
"#;

/// Compiles the `[bindings.frame]` of a type file. The inputs are fixed at build time, so a
/// failure is a broken build, reported by the `smoke` runner's self-check.
fn compile(text: &str) -> FrameCodec {
    let document: toml::Table = toml::from_str(text).unwrap_or_default();
    let table = document
        .get("bindings")
        .and_then(|b| b.get("frame"))
        .and_then(toml::Value::as_table)
        .cloned()
        .unwrap_or_default();
    match FrameBinding::from_toml(&table).and_then(|b| FrameCodec::new(&b)) {
        Ok(codec) => codec,
        Err(e) => panic!("fuzz binding does not compile: {e}"),
    }
}

macro_rules! codec {
    ($name:ident, $text:expr) => {
        fn $name() -> &'static FrameCodec {
            static CODEC: OnceLock<FrameCodec> = OnceLock::new();
            CODEC.get_or_init(|| compile($text))
        }
    };
}

codec!(beacon, BEACON);
codec!(meter, METER);
codec!(thermostat, THERMOSTAT);
codec!(delimited, DELIMITED);
codec!(fixed, FIXED);
codec!(csv, CSV);

/// Every value type, byte and word order, bit field and scaling of a `[bindings.modbus]` once, in
/// merged and separate reads of two poll groups, with actions writing constants and input values.
const MODBUS: &str = r#"
id = "fuzz_modbus"
title = "Modbus fuzz"
version = "1"

[properties]
coil_b = { type = "boolean", writable = true }
disc_b = { type = "boolean" }
flag = { type = "boolean", writable = true }
field = { type = "integer", writable = true }
field_le = { type = "integer", writable = true }
u16_be = { type = "integer", writable = true }
i16_le = { type = "integer", writable = true }
u32_wl = { type = "integer", writable = true }
i32_bl = { type = "integer", writable = true }
f32_ll = { type = "number", writable = true }
u64_be = { type = "integer", writable = true }
i64_wl = { type = "integer", writable = true }
f64_bl = { type = "number", writable = true }
text = { type = "string", writable = true }
text_le = { type = "string", kind = "info", writable = true }
volts = { type = "number" }
temp = { type = "number", writable = true }
energy = { type = "number" }
ratio = { type = "number" }
wide = { type = "number" }
field_scaled = { type = "number", writable = true }

[actions.apply]
input = { type = "object", properties = { level = { type = "number" }, name = { type = "string" }, on = { type = "boolean" } } }
[actions.whole]
input = { type = "number" }

[bindings.modbus]
max_registers = 16
max_bits = 8
max_gap = 2

[bindings.modbus.groups]
fast = { poll_ms = 100 }

[bindings.modbus.properties]
coil_b = { table = "coil", address = 0, type = "bool" }
disc_b = { table = "discrete", address = 3, type = "bool" }
flag = { table = "holding", address = 0, type = "bool", bit = 15 }
field = { table = "holding", address = 0, type = "u16", bits = "0..4" }
field_le = { table = "holding", address = 1, type = "i16", bits = "3..11", byte_order = "little" }
u16_be = { table = "holding", address = 2, type = "u16" }
i16_le = { table = "holding", address = 3, type = "i16", byte_order = "little" }
u32_wl = { table = "holding", address = 4, type = "u32", word_order = "little" }
i32_bl = { table = "holding", address = 6, type = "i32", byte_order = "little" }
f32_ll = { table = "holding", address = 8, type = "f32", byte_order = "little", word_order = "little" }
u64_be = { table = "holding", address = 10, type = "u64" }
i64_wl = { table = "holding", address = 14, type = "i64", word_order = "little" }
f64_bl = { table = "holding", address = 18, type = "f64", byte_order = "little" }
text = { table = "holding", address = 22, type = "string", count = 4 }
text_le = { table = "holding", address = 26, type = "string", count = 3, byte_order = "little" }
volts = { table = "input", address = 0, type = "u16", scale = 0.1 }
temp = { table = "holding", address = 30, type = "i16", scale = 0.1, offset = -40.0 }
energy = { table = "input", address = 1, type = "u32", scale = 0.001, word_order = "little", group = "fast" }
ratio = { table = "input", address = 3, type = "f32", scale = 0.5, offset = 1.25, group = "fast" }
wide = { table = "input", address = 10, type = "u64", scale = 0.01 }
field_scaled = { table = "holding", address = 31, type = "u16", bits = "8..16", scale = 0.5 }

[bindings.modbus.actions.apply]
writes = [
  { table = "holding", address = 40, type = "u16", scale = 0.1, input = "/level" },
  { table = "holding", address = 41, type = "string", count = 2, input = "/name" },
  { table = "coil", address = 5, type = "bool", input = "/on" },
  { table = "holding", address = 42, type = "bool", bit = 2, value = true },
]

[bindings.modbus.actions.whole]
writes = [{ table = "holding", address = 43, type = "f32", word_order = "little", input = "" }]
"#;

/// Properties of [`MODBUS`] that are unscaled integers: a JSON integer written reads back equal.
const MODBUS_PLAIN_INTEGERS: &[&str] = &[
    "field", "field_le", "u16_be", "i16_le", "u32_wl", "i32_bl", "u64_be", "i64_wl",
];

/// The compiled [`MODBUS`] model. The input is fixed at build time, so a failure is a broken build,
/// reported by the `smoke` runner's self-check.
fn modbus() -> &'static ModbusModel {
    static MODEL: OnceLock<ModbusModel> = OnceLock::new();
    MODEL.get_or_init(|| {
        match ThingType::from_toml(MODBUS, "fuzz_modbus.toml")
            .map_err(|e| e.to_string())
            .and_then(|ty| ModbusModel::new(&ty).map_err(|e| e.to_string()))
        {
            Ok(model) => model,
            Err(e) => panic!("fuzz Modbus binding does not compile: {e}"),
        }
    })
}

/// Every codec, for the self-check.
pub fn check_codecs() {
    for codec in [beacon, meter, thermostat, delimited, fixed, csv] {
        let _ = codec().framer();
    }
    let _ = modbus().groups();
}

/// Pushes `data` (after its chunk-size byte) into a fresh decoder piece by piece, decoding every
/// frame; checks that the decoder's buffer stays bounded.
fn stream(codec: &FrameCodec, data: &[u8]) {
    let Some((&chunk, rest)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(chunk % 32) + 1;
    let mut decoder = codec.decoder();
    let bound = 2 * codec.framer().max_frame() + chunk + 8;
    for piece in rest.chunks(chunk) {
        decoder.push(piece);
        loop {
            match decoder.next_frame() {
                Ok(Some(frame)) => {
                    let _ = codec.decode(&frame.payload);
                }
                Ok(None) => break,
                Err(_) => {}
            }
        }
        assert!(
            decoder.buffered() <= bound,
            "decoder holds {} bytes, more than {bound}",
            decoder.buffered()
        );
    }
}

/// The datagram framing: the whole input is one datagram.
pub fn frame_datagram(data: &[u8]) {
    let codec = beacon();
    let mut decoder = codec.decoder();
    decoder.push(data);
    loop {
        match decoder.next_frame() {
            Ok(Some(frame)) => {
                let _ = codec.decode(&frame.payload);
            }
            Ok(None) => break,
            Err(_) => {}
        }
    }
    assert_eq!(decoder.buffered(), 0, "a drained datagram decoder is empty");
}

/// Lines with a hex CRC trailer.
pub fn frame_lines(data: &[u8]) {
    stream(meter(), data);
}

/// A u16 length prefix.
pub fn frame_length_prefixed(data: &[u8]) {
    stream(thermostat(), data);
}

/// Start/end delimiters with escapes and a binary CRC.
pub fn frame_delimited(data: &[u8]) {
    stream(delimited(), data);
}

/// Fixed-length frames.
pub fn frame_fixed(data: &[u8]) {
    stream(fixed(), data);
}

/// JSON objects with pointers and a reply field.
pub fn layout_json(data: &[u8]) {
    let _ = thermostat().decode(data);
}

/// `key=value` pairs with typed fields.
pub fn layout_key_value(data: &[u8]) {
    let _ = meter().decode(data);
}

/// CSV with typed columns.
pub fn layout_csv(data: &[u8]) {
    let _ = csv().decode(data);
}

/// Fixed binary layouts: integers, bit fields, scaling, floats.
pub fn layout_binary(data: &[u8]) {
    let _ = beacon().decode(data);
    let _ = delimited().decode(data);
    let _ = fixed().decode(data);
}

/// A WAMP message in JSON.
pub fn wamp_json(data: &[u8]) {
    let _ = Serializer::Json.decode(data);
}

/// A WAMP message in MessagePack; the value decoder agrees with the generic serde path it
/// replaced on every input (NaN compared by its encoding).
pub fn wamp_msgpack(data: &[u8]) {
    use hub::wamp::msgpack::{decode, reference_decode};
    let _ = Serializer::MsgPack.decode(data);
    let ours = decode(data).ok();
    let reference = reference_decode(data);
    let same = match (&ours, &reference) {
        (Some(a), Some(b)) => a == b || format!("{a:?}") == format!("{b:?}"),
        (None, None) => true,
        _ => false,
    };
    assert!(same, "MessagePack decoders disagree: {ours:?} against {reference:?}");
}

/// RawSocket frames, read from a buffer filled piece by piece.
pub fn rawsocket_frame(data: &[u8]) {
    let Some((&chunk, rest)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(chunk % 32) + 1;
    let mut buf = BytesMut::new();
    for piece in rest.chunks(chunk) {
        buf.extend_from_slice(piece);
        loop {
            match decode_frame(&mut buf, 1 << 16) {
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
}

/// MQTT packets as a broker connection reads them, from a buffer filled piece by piece: the
/// CONNECT picks the codec, then every packet a client may send.
pub fn mqtt_packets(data: &[u8]) {
    use gateways::mqtt::codec::Codec;
    let Some((&chunk, rest)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(chunk % 32) + 1;
    let max = 1 << 16;
    let mut buf = BytesMut::new();
    let mut codec: Option<Codec> = None;
    let mut connected = false;
    for piece in rest.chunks(chunk) {
        buf.extend_from_slice(piece);
        loop {
            if codec.is_none() {
                match Codec::detect(&buf) {
                    Ok(Some(c)) => codec = Some(c),
                    Ok(None) => break,
                    Err(_) => return,
                }
            }
            let Some(c) = codec.as_mut() else { break };
            match c.read(&mut buf, max, connected) {
                Ok(Some(packet)) => {
                    connected = true;
                    // What the broker answers goes through the same codec.
                    let mut out = BytesMut::new();
                    let _ = c.write(packet, &mut out);
                }
                Ok(None) => break,
                Err(_) => return,
            }
        }
        assert!(buf.len() <= 2 * max + chunk, "the codec buffered {} bytes", buf.len());
    }
}

/// The Modbus simulator's request decoder on the input as PDUs, each preceded by its length
/// byte; each request that parses is executed by a meter and a drive, and every answer must be a
/// PDU of at most 253 bytes naming the request's function (or its exception).
pub fn modbus_sim_requests(data: &[u8]) {
    use firmware_sim::modbus::pdu::{self, BadRequest};
    use firmware_sim::modbus::{DeviceKind, ModbusDevice};
    let mut devices = [
        ModbusDevice::new(1, DeviceKind::Meter),
        ModbusDevice::new(2, DeviceKind::Drive),
    ];
    let mut rest = data;
    while let Some((&len, tail)) = rest.split_first() {
        let len = usize::from(len).min(tail.len());
        let (request, next) = tail.split_at(len);
        rest = next;
        match pdu::decode_request(request) {
            Ok(req) => {
                let function = pdu::function_code(&req);
                for device in &mut devices {
                    let answer = match device.execute(&req) {
                        Ok(response) => pdu::encode_response(&response),
                        Err(code) => pdu::encode_exception(function, code),
                    };
                    assert!(answer.len() <= 253, "an answer of {} bytes", answer.len());
                    let first = answer.first().copied().unwrap_or_default();
                    assert!(
                        first == function || first == function | 0x80,
                        "function {function:#04x} answered as {first:#04x}"
                    );
                }
            }
            Err(BadRequest::Exception { function, code }) => {
                assert_eq!(pdu::encode_exception(function, code).len(), 2);
            }
            Err(BadRequest::Ignore) => {}
        }
    }
}

/// A Modbus model's decoders on the input as registers and as bits (from an offset given by the
/// first byte, so every property also meets short answers), then its writers on the input as JSON:
/// every set must read back, and an unscaled integer read back must equal what was written.
pub fn modbus_registers(data: &[u8]) {
    let model = modbus();
    let registers: Vec<u16> = data
        .chunks(2)
        .map(|pair| {
            u16::from_be_bytes([
                pair.first().copied().unwrap_or(0),
                pair.get(1).copied().unwrap_or(0),
            ])
        })
        .collect();
    let bits: Vec<bool> = data
        .iter()
        .flat_map(|byte| (0..8).map(move |i| (byte >> i) & 1 == 1))
        .collect();
    let skip = data.first().map_or(0, |b| usize::from(b % 8));
    let answers = [
        ReadData::Registers(&registers),
        ReadData::Registers(registers.get(skip..).unwrap_or(&[])),
        ReadData::Bits(&bits),
        ReadData::Bits(bits.get(skip..).unwrap_or(&[])),
    ];
    let reads = model
        .groups()
        .iter()
        .flat_map(|group| group.reads.iter().cloned())
        .chain(model.properties().filter_map(|p| model.read_back(p)));
    for read in reads {
        for answer in answers {
            let decoded = model.decode(&read, answer);
            assert_eq!(
                decoded.len(),
                read.property_count(),
                "one result per property"
            );
        }
    }

    let Ok(value) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    for property in model.properties() {
        let Ok(writes) = model.encode_set(property, &value) else {
            continue;
        };
        let back = match writes.as_slice() {
            [Write::Coil { value, .. }] => model
                .read_back(property)
                .map(|read| model.decode(&read, ReadData::Bits(&[*value]))),
            [Write::Register { value, .. }] => model
                .read_back(property)
                .map(|read| model.decode(&read, ReadData::Registers(&[*value]))),
            [Write::Registers { values, .. }] => model
                .read_back(property)
                .map(|read| model.decode(&read, ReadData::Registers(values))),
            [
                Write::Mask {
                    and_mask, or_mask, ..
                },
            ] => model.read_back(property).map(|read| {
                let register = apply_mask(0x5A5A, *and_mask, *or_mask);
                model.decode(&read, ReadData::Registers(&[register]))
            }),
            other => panic!("{property}: a set is one write, got {other:?}"),
        };
        let Some([(_, back)]) = back.as_deref() else {
            panic!("{property}: no read-back of one property");
        };
        let back = match back {
            Ok(back) => back,
            Err(e) => panic!("{property}: {value} was written but reads back as an error: {e}"),
        };
        if MODBUS_PLAIN_INTEGERS.contains(&property) && (value.is_u64() || value.is_i64()) {
            assert_eq!(back, &value, "{property} reads back what was written");
        }
    }
    for action in model.actions() {
        let _ = model.encode_action(action, &value);
    }
}

/// Splits the input into datagrams, each preceded by its length byte.
fn datagrams(mut data: &[u8]) -> impl Iterator<Item = &[u8]> {
    std::iter::from_fn(move || {
        let (&len, rest) = data.split_first()?;
        let len = usize::from(len).min(rest.len());
        let (datagram, tail) = rest.split_at(len);
        data = tail;
        Some(datagram)
    })
}

fn peer() -> SocketAddr {
    SocketAddr::from(([192, 0, 2, 1], 5683))
}

/// Datagrams to a CoAP server engine, with its answers and timers drained.
pub fn coap_server(data: &[u8]) {
    let mut server = Server::new(ServerConfig {
        rng_seed: Some(1),
        ..ServerConfig::default()
    });
    let start = Instant::now();
    for (i, datagram) in datagrams(data).enumerate() {
        let now = start + Duration::from_millis(u64::try_from(i).unwrap_or(0));
        server.handle_datagram(now, peer(), datagram);
        while server.poll_transmit().is_some() {}
        while server.poll_event().is_some() {}
    }
    server.handle_timeout(start + Duration::from_secs(600));
    while server.poll_transmit().is_some() {}
}

/// A CoAP client engine with a GET and an observation in flight, fed the datagrams as answers.
pub fn coap_client(data: &[u8]) {
    let (mut client, start) = coap_client_with_requests();
    for (i, datagram) in datagrams(data).enumerate() {
        let now = start + Duration::from_millis(u64::try_from(i).unwrap_or(0));
        client.handle_datagram(now, peer(), datagram);
        while client.poll_transmit().is_some() {}
        while client.poll_event().is_some() {}
    }
    client.handle_timeout(start + Duration::from_secs(600));
    while client.poll_transmit().is_some() {}
}

/// A seeded client that has sent a GET and an Observe registration; returns it with the requests'
/// bytes drained.
fn coap_client_with_requests() -> (Client, Instant) {
    let (client, start, _) = coap_client_and_requests();
    (client, start)
}

fn coap_client_and_requests() -> (Client, Instant, Vec<Bytes>) {
    let mut client = Client::new(ClientConfig {
        rng_seed: Some(7),
        ..ClientConfig::default()
    });
    let start = Instant::now();
    let _ = client.get(start, peer(), "/things/th-1/state");
    let _ = client.observe(start, peer(), "/things/th-1/commands");
    let sent = std::iter::from_fn(|| client.poll_transmit())
        .map(|t| t.bytes)
        .collect();
    (client, start, sent)
}

/// Seed inputs: valid messages for each target, which the fuzzer mutates.
pub mod seeds {
    use super::*;

    fn object(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(map) => map,
            _ => Map::new(),
        }
    }

    /// A chunk-size byte, then `wire`.
    fn chunked(chunk: u8, wire: &[u8]) -> Vec<u8> {
        let mut out = vec![chunk];
        out.extend_from_slice(wire);
        out
    }

    fn report(codec: &FrameCodec, thing: &str, values: Value) -> Vec<u8> {
        codec
            .encode_report(Some(thing), &object(values))
            .map(|b| b.to_vec())
            .unwrap_or_default()
    }

    pub fn frame_datagram() -> Vec<Vec<u8>> {
        let values = json!({"temperature": 23.45, "humidity": 61, "battery": 87, "charging": 1});
        vec![report(beacon(), "beacon-258", values)]
    }

    pub fn frame_lines() -> Vec<Vec<u8>> {
        let mut wire = report(
            meter(),
            "meter-3",
            json!({"voltage": 230.1, "current": 1.25, "relay": true}),
        );
        wire.extend(report(
            meter(),
            "meter-3",
            json!({"relay": false, "ack": 1}),
        ));
        vec![chunked(0, &wire), chunked(6, &wire)]
    }

    pub fn frame_length_prefixed() -> Vec<Vec<u8>> {
        let mut wire = report(
            thermostat(),
            "th-12",
            json!({"temperature": 21.5, "setpoint": 20.0, "mode": "eco"}),
        );
        let reply = thermostat()
            .encode_report(None, &object(json!({"re": 7, "ok": true})))
            .map(|b| b.to_vec())
            .unwrap_or_default();
        wire.extend(reply);
        vec![chunked(3, &wire), chunked(31, &wire)]
    }

    pub fn frame_delimited() -> Vec<Vec<u8>> {
        // 0x02 and 0x03 inside the values exercise the escapes.
        let mut wire = report(delimited(), "2", json!({"power": 0.770, "alarm": 1}));
        wire.extend(report(
            delimited(),
            "16",
            json!({"power": -3.0, "alarm": 0}),
        ));
        vec![chunked(0, &wire), chunked(4, &wire)]
    }

    pub fn frame_fixed() -> Vec<Vec<u8>> {
        let mut wire = report(fixed(), "tag-00ff", json!({"t": 21.5, "rssi": -70}));
        wire.extend(report(fixed(), "tag-0102", json!({"t": -1.0, "rssi": 3})));
        vec![chunked(2, &wire), chunked(7, &wire)]
    }

    pub fn layout_json() -> Vec<Vec<u8>> {
        vec![
            br#"{"id":"th-12","sensors":{"temperature":21.5},"heating":{"setpoint":20.0,"mode":"eco"}}"#.to_vec(),
            br#"{"id":"th-12","re":7,"ok":true}"#.to_vec(),
        ]
    }

    pub fn layout_key_value() -> Vec<Vec<u8>> {
        vec![
            b"node=3;v=230.1;a=1.25;relay=1".to_vec(),
            b"node=3;ack=1;relay=off".to_vec(),
        ]
    }

    pub fn layout_csv() -> Vec<Vec<u8>> {
        vec![b"probe-1,21.5,40".to_vec(), b"007,-3e2,1".to_vec()]
    }

    pub fn layout_binary() -> Vec<Vec<u8>> {
        vec![
            vec![0x01, 0x02, 0x09, 0x29, 61, 0x80 | 87],
            vec![0x05, 0x10, 0x27, 0x00, 0x00, 0x01],
            vec![0x00, 0xff, 0x41, 0xac, 0x00, 0x00, 0xba],
        ]
    }

    fn wamp_messages() -> Vec<&'static [u8]> {
        vec![
            br#"[1,"brume",{"roles":{"subscriber":{},"caller":{}}}]"#,
            br#"[16,1,{"acknowledge":true},"com.example.topic",[1,"two",3.5],{"k":{"x":[null,true]}}]"#,
            br#"[48,2,{"timeout":1000},"com.example.add",[1,2]]"#,
            br#"[32,3,{"match":"wildcard"},"brume.thing..state"]"#,
            br#"[8,48,2,{},"wamp.error.invalid_argument",["\u0000AAEC"]]"#,
        ]
    }

    pub fn wamp_json() -> Vec<Vec<u8>> {
        wamp_messages().into_iter().map(<[u8]>::to_vec).collect()
    }

    pub fn wamp_msgpack() -> Vec<Vec<u8>> {
        wamp_messages()
            .into_iter()
            .filter_map(|m| Serializer::Json.decode(m).ok())
            .filter_map(|m| Serializer::MsgPack.encode(&m).ok())
            .map(|b| b.to_vec())
            .collect()
    }

    pub fn rawsocket_frame() -> Vec<Vec<u8>> {
        let body = br#"[1,"brume",{}]"#;
        let mut wire = vec![0, 0, 0, u8::try_from(body.len()).unwrap_or(0)];
        wire.extend_from_slice(body);
        wire.extend_from_slice(&[1, 0, 0, 2, b'h', b'i', 2, 0, 0, 0]);
        vec![chunked(0, &wire), chunked(5, &wire)]
    }

    /// Datagrams with their length bytes.
    fn framed(datagrams: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for d in datagrams {
            out.push(u8::try_from(d.len()).unwrap_or(u8::MAX));
            out.extend_from_slice(d);
        }
        out
    }

    pub fn coap_server() -> Vec<Vec<u8>> {
        // CON POST /things/th-1/state, Content-Format JSON, token "abcd".
        let mut post = vec![0x44, 0x02, 0x12, 0x34, b'a', b'b', b'c', b'd'];
        post.extend_from_slice(&[0xB6]);
        post.extend_from_slice(b"things");
        post.extend_from_slice(&[0x04]);
        post.extend_from_slice(b"th-1");
        post.extend_from_slice(&[0x05]);
        post.extend_from_slice(b"state");
        post.extend_from_slice(&[0x11, 50, 0xFF]);
        post.extend_from_slice(br#"{"t":21.5}"#);
        // CON GET /things/th-1/commands with Observe=0 (option 6), then a Reset and an empty CON.
        let mut observe = vec![0x42, 0x01, 0x12, 0x35, b'o', b'b', 0x60, 0x56];
        observe.extend_from_slice(b"things");
        observe.extend_from_slice(&[0x04]);
        observe.extend_from_slice(b"th-1");
        observe.extend_from_slice(&[0x08]);
        observe.extend_from_slice(b"commands");
        let reset = [0x70, 0x00, 0x12, 0x34];
        let ping = [0x40, 0x00, 0x12, 0x36];
        vec![
            framed(&[&post]),
            framed(&[&post, &post, &observe, &reset, &ping]),
        ]
    }

    pub fn mqtt_packets() -> Vec<Vec<u8>> {
        // CONNECT (3.1.1, client id "d1", clean session), PUBLISH QoS 1 things/d1/state, PINGREQ.
        let connect_311 = [
            0x10, 14, 0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, 0, 60, 0, 2, b'd', b'1',
        ];
        let mut publish = vec![0x32, 0];
        publish.extend_from_slice(&[0, 15]);
        publish.extend_from_slice(b"things/d1/state");
        publish.extend_from_slice(&[0, 1]);
        publish.extend_from_slice(br#"{"t":21.5}"#);
        publish[1] = u8::try_from(publish.len() - 2).unwrap_or(0);
        let ping = [0xC0, 0];
        // CONNECT (5, no properties), SUBSCRIBE things/d1/desired QoS 1 (no properties).
        let connect_5 = [
            0x10, 15, 0, 4, b'M', b'Q', b'T', b'T', 5, 0x02, 0, 60, 0, 0, 2, b'd', b'1',
        ];
        let mut subscribe = vec![0x82, 0, 0, 1, 0];
        subscribe.extend_from_slice(&[0, 17]);
        subscribe.extend_from_slice(b"things/d1/desired");
        subscribe.push(1);
        subscribe[1] = u8::try_from(subscribe.len() - 2).unwrap_or(0);
        let chunked = |chunk: u8, parts: &[&[u8]]| {
            let mut out = vec![chunk];
            for p in parts {
                out.extend_from_slice(p);
            }
            out
        };
        vec![
            chunked(31, &[&connect_311, &publish, &ping]),
            chunked(2, &[&connect_311, &publish]),
            chunked(31, &[&connect_5, &subscribe, &ping]),
        ]
    }

    pub fn modbus_sim_requests() -> Vec<Vec<u8>> {
        // Each request preceded by its length: reads of every table, single and multiple writes,
        // a masked write, an unknown function, and a write whose byte count lies.
        let requests: [&[u8]; 9] = [
            &[0x04, 0x00, 0x00, 0x00, 0x09],
            &[0x03, 0x00, 0x64, 0x00, 0x01],
            &[0x01, 0x00, 0x00, 0x00, 0x10],
            &[0x02, 0x00, 0x00, 0x00, 0x08],
            &[0x06, 0x00, 0x0A, 0x05, 0xDC],
            &[0x10, 0x00, 0x0A, 0x00, 0x02, 0x04, 0x03, 0xE8, 0x00, 0x19],
            &[0x16, 0x00, 0x32, 0xFF, 0xF7, 0x00, 0x08],
            &[0x2B, 0x0E, 0x01, 0x00],
            &[0x0F, 0x00, 0x00, 0x00, 0x08, 0x05, 0xFF],
        ];
        let mut all = Vec::new();
        let mut seeds = Vec::new();
        for r in requests {
            let mut one = vec![r.len() as u8];
            one.extend_from_slice(r);
            all.extend_from_slice(&one);
            seeds.push(one);
        }
        seeds.push(all);
        seeds
    }

    pub fn modbus_registers() -> Vec<Vec<u8>> {
        let mut seeds: Vec<Vec<u8>> = [
            &b"21.5"[..],
            b"-1",
            b"65535",
            b"-32768",
            b"18446744073709551615",
            b"-9223372036854775808",
            b"30.009999999999998",
            b"1e300",
            b"true",
            b"\"SN-0042\"",
            br#"{"level":23.4,"name":"ab","on":true}"#,
        ]
        .iter()
        .map(|s| s.to_vec())
        .collect();
        // Registers: a counting pattern, all ones, and an f32 NaN with invalid UTF-8 after it.
        seeds.push((0u8..96).collect());
        seeds.push(vec![0xFF; 96]);
        let mut nan = vec![0x7F, 0xC0, 0x00, 0x00];
        nan.extend_from_slice(&[0xC3, 0x28, 0xFE, 0xFF]);
        nan.resize(96, 0x20);
        seeds.push(nan);
        seeds
    }

    pub fn coap_client() -> Vec<Vec<u8>> {
        // Answers shaped after the client's own requests: a piggybacked 2.05 for each, with the
        // request's message id and token.
        let (_, _, sent) = coap_client_and_requests();
        let answers: Vec<Vec<u8>> = sent
            .iter()
            .filter_map(|request| {
                let tkl = usize::from(*request.first()? & 0x0F);
                let mut answer = vec![0x60 | (*request.first()? & 0x0F), 0x45];
                answer.extend_from_slice(request.get(2..4 + tkl)?);
                answer.extend_from_slice(&[0x61, 0x01, 0x61, 50, 0xFF]);
                answer.extend_from_slice(br#"{"t":21.5}"#);
                Some(answer)
            })
            .collect();
        let refs: Vec<&[u8]> = answers.iter().map(Vec::as_slice).collect();
        vec![framed(&refs)]
    }
}
