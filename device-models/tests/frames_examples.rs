//! The example `[bindings.frame]` tables in `tests/data/frames/`, driven end to end: bytes as the
//! device sends them → decoder → codec → values, and commands → bytes as the device receives them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;

use device_models::frames::{
    Command, Correlation, DecodedFrame, FrameBinding, FrameCodec, FrameError, crc16_modbus, xor8,
};
use serde_json::{Map, Value, json};

fn data_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/frames")
}

fn load(name: &str) -> FrameCodec {
    let text = std::fs::read_to_string(data_dir().join(name)).expect("example file");
    let document: toml::Table = toml::from_str(&text).expect("TOML");
    let table = document
        .get("bindings")
        .and_then(|b| b.get("frame"))
        .and_then(toml::Value::as_table)
        .expect("[bindings.frame]");
    let binding = FrameBinding::from_toml(table).expect("binding shape");
    FrameCodec::new(&binding).expect("valid binding")
}

fn object(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        other => panic!("not an object: {other}"),
    }
}

/// Pushes `wire` in chunks of `chunk` bytes and decodes every frame.
fn decode_stream(codec: &FrameCodec, wire: &[u8], chunk: usize) -> Vec<DecodedFrame> {
    let mut decoder = codec.decoder();
    let mut out = Vec::new();
    for piece in wire.chunks(chunk) {
        decoder.push(piece);
        while let Some(frame) = decoder.next_frame().expect("good frame") {
            out.push(codec.decode(&frame.payload).expect("decodable"));
        }
    }
    out
}

#[test]
fn every_example_is_valid() {
    let mut count = 0;
    for entry in std::fs::read_dir(data_dir()).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        if name.ends_with(".toml") {
            load(&name).framer();
            count += 1;
        }
    }
    assert_eq!(count, 3);
}

#[test]
fn udp_beacon() {
    let codec = load("udp_beacon.toml");
    // id 0x0102, 23.45 °C, 61 %, battery 87 % and charging.
    let payload = [0x01, 0x02, 0x09, 0x29, 61, 0x80 | 87];
    let mut datagram = payload.to_vec();
    datagram.push(xor8(&payload));

    let mut decoder = codec.decoder();
    decoder.push(&datagram);
    let frame = decoder.next_frame().unwrap().unwrap();
    let decoded = codec.decode(&frame.payload).unwrap();
    assert_eq!(decoded.thing_id.as_deref(), Some("beacon-258"));
    assert_eq!(
        Value::Object(decoded.values.clone()),
        json!({"temperature": 23.45, "humidity": 61, "battery": 87, "charging": 1})
    );
    assert_eq!(decoded.reply, None);

    // What a simulated beacon sends is the same datagram.
    let sent = codec
        .encode_report(Some("beacon-258"), &decoded.values)
        .unwrap();
    assert_eq!(&sent[..], &datagram[..]);

    // A corrupted datagram is refused by the checksum.
    datagram[3] ^= 0x04;
    decoder.push(&datagram);
    assert!(matches!(
        decoder.next_frame(),
        Err(FrameError::ChecksumMismatch { .. })
    ));
    assert!(!codec.has_action("reboot"));
}

#[test]
fn tcp_json_thermostat() {
    let codec = load("tcp_json_thermostat.toml");
    let report = br#"{"id":"th-12","sensors":{"temperature":21.5},"heating":{"setpoint":20.0,"mode":"eco"}}"#;
    let reply = br#"{"id":"th-12","re":7,"ok":true}"#;
    let mut wire = Vec::new();
    for body in [&report[..], &reply[..]] {
        wire.extend_from_slice(&u16::try_from(body.len()).unwrap().to_be_bytes());
        wire.extend_from_slice(body);
    }
    for chunk in [1, 2, 5, 64, wire.len()] {
        let frames = decode_stream(&codec, &wire, chunk);
        assert_eq!(frames.len(), 2);
        assert_eq!(frames[0].thing_id.as_deref(), Some("th-12"));
        assert_eq!(
            Value::Object(frames[0].values.clone()),
            json!({"temperature": 21.5, "setpoint": 20.0, "mode": "eco"})
        );
        assert_eq!(frames[0].reply, None);
        assert_eq!(
            frames[1].reply.as_ref().map(|r| &r.correlation),
            Some(&Correlation::Sequence("7".to_owned()))
        );
        assert_eq!(Value::Object(frames[1].values.clone()), json!({"ok": true}));
    }

    // Desired values go out one frame each, with consecutive sequence numbers.
    let desired = object(json!({"mode": "comfort", "setpoint": 21.0}));
    let frames = codec
        .encode_command("th-12", Command::Set(&desired), 7)
        .unwrap();
    let bodies: Vec<Value> = frames
        .iter()
        .map(|f| {
            let len = usize::from(u16::from_be_bytes([f.bytes[0], f.bytes[1]]));
            assert_eq!(len, f.bytes.len() - 2);
            serde_json::from_slice(&f.bytes[2..]).unwrap()
        })
        .collect();
    assert_eq!(
        bodies,
        [
            json!({"op": "set", "seq": 7, "mode": "comfort"}),
            json!({"op": "set", "seq": 8, "setpoint": 21.0})
        ]
    );
    let expected: Vec<_> = frames.iter().map(|f| f.reply.clone()).collect();
    assert_eq!(
        expected,
        [
            Some(Correlation::Sequence("7".to_owned())),
            Some(Correlation::Sequence("8".to_owned()))
        ]
    );

    let input = json!({"offset": -0.5});
    let frames = codec
        .encode_command(
            "th-12",
            Command::Action {
                name: "calibrate",
                input: &input,
            },
            u32::MAX,
        )
        .unwrap();
    let body: Value = serde_json::from_slice(&frames[0].bytes[2..]).unwrap();
    assert_eq!(
        body,
        json!({"op": "calibrate", "seq": u32::MAX, "offset": -0.5})
    );
}

/// A meter line as the meter writes it: pairs, `*`, CRC-16/MODBUS in hex, CR LF.
fn meter_line(pairs: &str) -> Vec<u8> {
    format!("{pairs}*{:04X}\r\n", crc16_modbus(pairs.as_bytes())).into_bytes()
}

#[test]
fn serial_key_value_meter() {
    let codec = load("serial_kv_meter.toml");
    let mut wire = meter_line("node=3;v=230.1;a=1.25;relay=1");
    wire.extend_from_slice(&meter_line("node=3;ack=1;relay=0"));
    for chunk in [1, 3, 7, wire.len()] {
        let frames = decode_stream(&codec, &wire, chunk);
        assert_eq!(frames.len(), 2);
        assert_eq!(frames[0].thing_id.as_deref(), Some("meter-3"));
        assert_eq!(
            Value::Object(frames[0].values.clone()),
            json!({"voltage": 230.1, "current": 1.25, "relay": true})
        );
        assert_eq!(frames[0].reply, None);
        assert_eq!(
            frames[1].reply.as_ref().map(|r| &r.correlation),
            Some(&Correlation::NextFrame)
        );
        assert_eq!(
            Value::Object(frames[1].values.clone()),
            json!({"relay": false})
        );
    }

    // A line whose CRC does not match is a typed error, and the next line still reads.
    let mut noisy = b"node=3;v=231.0*0000\r\n".to_vec();
    noisy.extend_from_slice(&meter_line("node=3;v=231.0"));
    let mut decoder = codec.decoder();
    decoder.push(&noisy);
    assert!(matches!(
        decoder.next_frame(),
        Err(FrameError::ChecksumMismatch { received: 0, .. })
    ));
    let frame = decoder.next_frame().unwrap().unwrap();
    assert_eq!(
        codec.decode(&frame.payload).unwrap().values["voltage"],
        231.0
    );

    // Commands address the meter by its node number and carry the CRC.
    let desired = object(json!({"relay": false}));
    let frames = codec
        .encode_command("meter-3", Command::Set(&desired), 0)
        .unwrap();
    assert_eq!(frames.len(), 1);
    assert_eq!(frames[0].bytes, meter_line("node=3;set=relay;value=0"));
    assert_eq!(frames[0].reply, Some(Correlation::NextFrame));
    let frames = codec
        .encode_command(
            "meter-3",
            Command::Action {
                name: "poll",
                input: &Value::Null,
            },
            0,
        )
        .unwrap();
    assert_eq!(frames[0].bytes, meter_line("node=3;poll=1"));
}
