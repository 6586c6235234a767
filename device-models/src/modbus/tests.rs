//! Tests of the Modbus binding: every type in every byte and word order against hand-computed
//! registers, scaling and rounding, bits, strings, read plans, sets and actions, garbage answers,
//! and configuration errors naming their key.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::{Value, json};

use super::*;
use crate::thing_type::ThingType;

// ---------------------------------------------------------------------------------------------
// Helpers

/// A thing type `dev` from the TOML of its properties, actions and bindings.
fn thing_type(body: &str) -> ThingType {
    let text = format!("id = \"dev\"\ntitle = \"Dev\"\nversion = \"1\"\n{body}");
    ThingType::from_toml(&text, "dev.toml").expect("thing type")
}

fn model(body: &str) -> ModbusModel {
    ModbusModel::new(&thing_type(body)).expect("valid binding")
}

/// Decodes one property from an answer to its read-back request.
fn decode_one(
    model: &ModbusModel,
    property: &str,
    data: ReadData<'_>,
) -> Result<Value, ModbusValueError> {
    let read = model.read_back(property).expect("mapped property");
    let mut out = model.decode(&read, data);
    assert_eq!(out.len(), 1, "one property per read-back");
    let (name, value) = out.remove(0);
    assert_eq!(name, property);
    value
}

fn decode_registers(
    model: &ModbusModel,
    property: &str,
    registers: &[u16],
) -> Result<Value, ModbusValueError> {
    decode_one(model, property, ReadData::Registers(registers))
}

/// The registers a write of whole registers carries.
fn written_registers(writes: &[Write]) -> Vec<u16> {
    match writes {
        [Write::Register { value, .. }] => vec![*value],
        [Write::Registers { values, .. }] => values.clone(),
        other => panic!("not a register write: {other:?}"),
    }
}

/// Deterministic pseudo-random numbers (xorshift), for garbage input.
fn garbage(seed: u64, len: usize) -> Vec<u16> {
    let mut state = seed | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u16
        })
        .collect()
}

/// A writable property of every register type at fixed addresses, in the given orders.
fn all_types(byte_order: &str, word_order: &str) -> ModbusModel {
    model(&format!(
        r#"
[properties]
a_u16 = {{ type = "integer", writable = true }}
a_i16 = {{ type = "integer", writable = true }}
a_u32 = {{ type = "integer", writable = true }}
a_i32 = {{ type = "integer", writable = true }}
a_f32 = {{ type = "number", writable = true }}
a_u64 = {{ type = "integer", writable = true }}
a_i64 = {{ type = "integer", writable = true }}
a_f64 = {{ type = "number", writable = true }}
a_string = {{ type = "string", writable = true }}
a_flag = {{ type = "boolean", writable = true }}
a_field = {{ type = "integer", writable = true }}
a_coil = {{ type = "boolean", writable = true }}
a_input = {{ type = "boolean" }}

[bindings.modbus]
byte_order = "{byte_order}"
word_order = "{word_order}"

[bindings.modbus.properties]
a_u16 = {{ table = "holding", address = 0, type = "u16" }}
a_i16 = {{ table = "holding", address = 1, type = "i16" }}
a_u32 = {{ table = "holding", address = 2, type = "u32" }}
a_i32 = {{ table = "holding", address = 4, type = "i32" }}
a_f32 = {{ table = "holding", address = 6, type = "f32" }}
a_u64 = {{ table = "holding", address = 8, type = "u64" }}
a_i64 = {{ table = "holding", address = 12, type = "i64" }}
a_f64 = {{ table = "holding", address = 16, type = "f64" }}
a_string = {{ table = "holding", address = 20, type = "string", count = 3 }}
a_flag = {{ table = "holding", address = 23, type = "bool", bit = 3 }}
a_field = {{ table = "holding", address = 24, type = "u16", bits = "4..8" }}
a_coil = {{ table = "coil", address = 0, type = "bool" }}
a_input = {{ table = "discrete", address = 0, type = "bool" }}
"#
    ))
}

const ORDERS: [(&str, &str); 4] = [
    ("big", "big"),
    ("big", "little"),
    ("little", "big"),
    ("little", "little"),
];

// ---------------------------------------------------------------------------------------------
// Types and orders

#[test]
fn every_type_in_every_order_matches_hand_computed_registers() {
    // Per property: the value and its registers in the orders of ORDERS (byte, word):
    // big/big, big/little, little/big, little/little.
    let cases: Vec<(&str, Value, [Vec<u16>; 4])> = vec![
        (
            "a_u16",
            json!(0x1234),
            [vec![0x1234], vec![0x1234], vec![0x3412], vec![0x3412]],
        ),
        (
            "a_i16",
            json!(-2),
            [vec![0xFFFE], vec![0xFFFE], vec![0xFEFF], vec![0xFEFF]],
        ),
        (
            "a_u32",
            json!(0x1234_5678),
            [
                vec![0x1234, 0x5678],
                vec![0x5678, 0x1234],
                vec![0x3412, 0x7856],
                vec![0x7856, 0x3412],
            ],
        ),
        (
            // -123456789 = 0xF8A432EB
            "a_i32",
            json!(-123_456_789),
            [
                vec![0xF8A4, 0x32EB],
                vec![0x32EB, 0xF8A4],
                vec![0xA4F8, 0xEB32],
                vec![0xEB32, 0xA4F8],
            ],
        ),
        (
            // 21.1f32 = 0x41A8CCCD
            "a_f32",
            json!(21.1),
            [
                vec![0x41A8, 0xCCCD],
                vec![0xCCCD, 0x41A8],
                vec![0xA841, 0xCDCC],
                vec![0xCDCC, 0xA841],
            ],
        ),
        (
            "a_u64",
            json!(0x0102_0304_0506_0708u64),
            [
                vec![0x0102, 0x0304, 0x0506, 0x0708],
                vec![0x0708, 0x0506, 0x0304, 0x0102],
                vec![0x0201, 0x0403, 0x0605, 0x0807],
                vec![0x0807, 0x0605, 0x0403, 0x0201],
            ],
        ),
        (
            "a_i64",
            json!(-2),
            [
                vec![0xFFFF, 0xFFFF, 0xFFFF, 0xFFFE],
                vec![0xFFFE, 0xFFFF, 0xFFFF, 0xFFFF],
                vec![0xFFFF, 0xFFFF, 0xFFFF, 0xFEFF],
                vec![0xFEFF, 0xFFFF, 0xFFFF, 0xFFFF],
            ],
        ),
        (
            // 30.009999999999998 = 0x403E028F5C28F5C2
            "a_f64",
            json!(30.009999999999998),
            [
                vec![0x403E, 0x028F, 0x5C28, 0xF5C2],
                vec![0xF5C2, 0x5C28, 0x028F, 0x403E],
                vec![0x3E40, 0x8F02, 0x285C, 0xC2F5],
                vec![0xC2F5, 0x285C, 0x8F02, 0x3E40],
            ],
        ),
        (
            // Word order does not apply to text.
            "a_string",
            json!("AB C"),
            [
                vec![0x4142, 0x2043, 0x0000],
                vec![0x4142, 0x2043, 0x0000],
                vec![0x4241, 0x4320, 0x0000],
                vec![0x4241, 0x4320, 0x0000],
            ],
        ),
    ];
    for (order_index, (byte_order, word_order)) in ORDERS.iter().enumerate() {
        let model = all_types(byte_order, word_order);
        for (property, value, registers) in &cases {
            let registers = &registers[order_index];
            let context = format!("{property} in {byte_order}/{word_order}");
            let decoded = decode_registers(&model, property, registers).expect(&context);
            assert_eq!(&decoded, value, "decode {context}");
            let writes = model.encode_set(property, value).expect(&context);
            assert_eq!(&written_registers(&writes), registers, "encode {context}");
            assert_eq!(
                writes[0].address(),
                model.read_back(property).unwrap().address
            );
        }
    }
}

#[test]
fn one_register_is_a_single_write_and_more_a_multiple_write() {
    let model = all_types("big", "big");
    assert_eq!(
        model.encode_set("a_u16", &json!(7)).unwrap(),
        [Write::Register {
            address: 0,
            value: 7
        }]
    );
    assert_eq!(
        model.encode_set("a_u32", &json!(7)).unwrap(),
        [Write::Registers {
            address: 2,
            values: vec![0, 7]
        }]
    );
    assert_eq!(
        model.encode_set("a_coil", &json!(true)).unwrap(),
        [Write::Coil {
            address: 0,
            value: true
        }]
    );
}

#[test]
fn bools_from_coils_discrete_inputs_and_register_bits() {
    let model = all_types("big", "big");
    assert_eq!(
        decode_one(&model, "a_coil", ReadData::Bits(&[true])),
        Ok(json!(true))
    );
    assert_eq!(
        decode_one(&model, "a_input", ReadData::Bits(&[false])),
        Ok(json!(false))
    );
    assert_eq!(
        decode_registers(&model, "a_flag", &[0x0008]),
        Ok(json!(true))
    );
    assert_eq!(
        decode_registers(&model, "a_flag", &[0xFFF7]),
        Ok(json!(false))
    );
    // Little byte order: bit 3 of the value is bit 11 of the register as received.
    let little = all_types("little", "big");
    assert_eq!(
        decode_registers(&little, "a_flag", &[0x0800]),
        Ok(json!(true))
    );
    assert_eq!(
        decode_registers(&little, "a_flag", &[0x0008]),
        Ok(json!(false))
    );
}

#[test]
fn bit_fields_read_unsigned_and_write_with_a_mask() {
    let model = all_types("big", "big");
    // Bits 4..8 of 0x00A5 are 0xA.
    assert_eq!(
        decode_registers(&model, "a_field", &[0x00A5]),
        Ok(json!(10))
    );
    assert_eq!(decode_registers(&model, "a_field", &[0xFF0F]), Ok(json!(0)));
    let writes = model.encode_set("a_field", &json!(3)).unwrap();
    assert_eq!(
        writes,
        [Write::Mask {
            address: 24,
            and_mask: 0xFF0F,
            or_mask: 0x0030
        }]
    );
    // FC 22 semantics: the other bits of the register are kept.
    assert_eq!(apply_mask(0xFFFF, 0xFF0F, 0x0030), 0xFF3F);
    assert_eq!(apply_mask(0x0000, 0xFF0F, 0x0030), 0x0030);
    assert_eq!(decode_registers(&model, "a_field", &[0xFF3F]), Ok(json!(3)));
    assert!(matches!(
        model.encode_set("a_field", &json!(16)),
        Err(ModbusValueError::OutOfRange { .. })
    ));
    assert!(matches!(
        model.encode_set("a_field", &json!(-1)),
        Err(ModbusValueError::OutOfRange { .. })
    ));

    let writes = model.encode_set("a_flag", &json!(true)).unwrap();
    assert_eq!(
        writes,
        [Write::Mask {
            address: 23,
            and_mask: 0xFFF7,
            or_mask: 0x0008
        }]
    );
    let writes = model.encode_set("a_flag", &json!(false)).unwrap();
    assert_eq!(
        writes,
        [Write::Mask {
            address: 23,
            and_mask: 0xFFF7,
            or_mask: 0
        }]
    );

    // Little byte order: the masks are in the register's byte order too.
    let little = all_types("little", "little");
    assert_eq!(
        little.encode_set("a_field", &json!(10)).unwrap(),
        [Write::Mask {
            address: 24,
            and_mask: 0x0FFF,
            or_mask: 0xA000
        }]
    );
    assert_eq!(
        decode_registers(&little, "a_field", &[0xA000]),
        Ok(json!(10))
    );
    assert_eq!(
        little.encode_set("a_flag", &json!(true)).unwrap(),
        [Write::Mask {
            address: 23,
            and_mask: 0xF7FF,
            or_mask: 0x0800
        }]
    );
}

#[test]
fn a_signed_register_with_bits_reads_an_unsigned_field() {
    let model = model(
        r#"
[properties]
top = { type = "integer" }
[bindings.modbus.properties]
top = { table = "input", address = 0, type = "i16", bits = "12..16" }
"#,
    );
    assert_eq!(decode_registers(&model, "top", &[0xF000]), Ok(json!(15)));
}

#[test]
fn sixty_four_bit_integers_beyond_2_pow_53_stay_exact_integers() {
    let model = all_types("big", "big");
    let beyond = 9_007_199_254_740_993u64; // 2^53 + 1, not an f64
    let registers = [0x0020, 0x0000, 0x0000, 0x0001];
    let value = decode_registers(&model, "a_u64", &registers).unwrap();
    assert_eq!(value.as_u64(), Some(beyond));
    assert_eq!(value.to_string(), "9007199254740993");
    assert_eq!(
        written_registers(&model.encode_set("a_u64", &json!(beyond)).unwrap()),
        registers
    );

    let max = decode_registers(&model, "a_u64", &[0xFFFF; 4]).unwrap();
    assert_eq!(max.as_u64(), Some(u64::MAX));
    let min = decode_registers(&model, "a_i64", &[0x8000, 0, 0, 0]).unwrap();
    assert_eq!(min.as_i64(), Some(i64::MIN));
    assert_eq!(
        written_registers(&model.encode_set("a_i64", &json!(i64::MIN)).unwrap()),
        [0x8000, 0, 0, 0]
    );
    assert_eq!(
        written_registers(&model.encode_set("a_u64", &json!(u64::MAX)).unwrap()),
        [0xFFFF; 4]
    );
    // Integers without scaling read as JSON integers, never floats.
    assert!(decode_registers(&model, "a_u16", &[5]).unwrap().is_u64());
    assert!(
        decode_registers(&model, "a_i16", &[0xFFFF])
            .unwrap()
            .is_i64()
    );
}

#[test]
fn f32_reads_its_shortest_decimal_form() {
    let model = all_types("big", "big");
    let value = decode_registers(&model, "a_f32", &[0x41A8, 0xCCCD]).unwrap();
    assert_eq!(value.as_f64(), Some(21.1));
    assert_eq!(value.to_string(), "21.1");
    // 21.37f32 widens to 21.3700008392334 in f64; shortest form is 21.37.
    let bits = 21.37f32.to_bits();
    let registers = [(bits >> 16) as u16, bits as u16];
    assert_eq!(
        decode_registers(&model, "a_f32", &registers)
            .unwrap()
            .to_string(),
        "21.37"
    );
    assert_eq!(
        written_registers(&model.encode_set("a_f32", &json!(21.37)).unwrap()),
        registers
    );
}

#[test]
fn f64_passes_bit_identical() {
    let model = all_types("little", "little");
    for x in [
        30.009999999999998,
        0.1 + 0.2,
        -1e-300,
        f64::MAX,
        f64::MIN_POSITIVE,
        5e-324,
    ] {
        let writes = model.encode_set("a_f64", &json!(x)).unwrap();
        let back = decode_registers(&model, "a_f64", &written_registers(&writes)).unwrap();
        assert_eq!(back.as_f64().map(f64::to_bits), Some(x.to_bits()), "{x:e}");
    }
    // Through JSON text as well, as a set arrives.
    let value: Value = serde_json::from_str("30.009999999999998").unwrap();
    let writes = model.encode_set("a_f64", &value).unwrap();
    let back = decode_registers(&model, "a_f64", &written_registers(&writes)).unwrap();
    assert_eq!(back.to_string(), "30.009999999999998");
}

#[test]
fn nan_and_infinities_are_errors_for_that_property() {
    let model = all_types("big", "big");
    assert_eq!(
        decode_registers(&model, "a_f32", &[0x7FC0, 0x0000]),
        Err(ModbusValueError::NotFinite)
    );
    assert_eq!(
        decode_registers(&model, "a_f64", &[0xFFF0, 0, 0, 0]),
        Err(ModbusValueError::NotFinite)
    );
    // Too large for an f32.
    assert!(matches!(
        model.encode_set("a_f32", &json!(1e39)),
        Err(ModbusValueError::OutOfRange { .. })
    ));
}

#[test]
fn strings_are_trimmed_padded_and_checked() {
    let model = all_types("big", "big");
    // "Hi" then a space and NULs: trailing NULs and spaces go.
    assert_eq!(
        decode_registers(&model, "a_string", &[0x4869, 0x2000, 0x0000]),
        Ok(json!("Hi"))
    );
    assert_eq!(
        decode_registers(&model, "a_string", &[0, 0, 0]),
        Ok(json!(""))
    );
    assert_eq!(
        decode_registers(&model, "a_string", &[0x4142, 0x4344, 0x4546]),
        Ok(json!("ABCDEF"))
    );
    assert_eq!(
        decode_registers(&model, "a_string", &[0xC328, 0, 0]),
        Err(ModbusValueError::NotUtf8)
    );
    // "é" is two bytes in UTF-8.
    assert_eq!(
        written_registers(&model.encode_set("a_string", &json!("é")).unwrap()),
        [0xC3A9, 0, 0]
    );
    assert_eq!(
        decode_registers(&model, "a_string", &[0xC3A9, 0, 0]),
        Ok(json!("é"))
    );
    assert_eq!(
        written_registers(&model.encode_set("a_string", &json!("ABCDEF")).unwrap()),
        [0x4142, 0x4344, 0x4546]
    );
    assert_eq!(
        model.encode_set("a_string", &json!("ABCDEFG")),
        Err(ModbusValueError::StringTooLong { len: 7, max: 6 })
    );
    assert!(matches!(
        model.encode_set("a_string", &json!(5)),
        Err(ModbusValueError::WrongType {
            expected: "a string",
            ..
        })
    ));
}

// ---------------------------------------------------------------------------------------------
// Scaling

fn scaled() -> ModbusModel {
    model(
        r#"
[properties]
volts = { type = "number", writable = true }
temp = { type = "number", writable = true }
temp_le = { type = "number" }
energy = { type = "number" }
ratio = { type = "number", writable = true }
inverted = { type = "number", writable = true }
quarter = { type = "number" }
float = { type = "number", writable = true }
big = { type = "number" }

[bindings.modbus.properties]
volts = { table = "holding", address = 0, type = "u16", scale = 0.1 }
temp = { table = "holding", address = 1, type = "i16", scale = 0.1, offset = -40.0 }
temp_le = { table = "input", address = 1, type = "i16", scale = 0.1, offset = -40, byte_order = "little" }
energy = { table = "input", address = 2, type = "u32", scale = 0.001 }
ratio = { table = "holding", address = 2, type = "u16", scale = 0.01 }
inverted = { table = "holding", address = 3, type = "i16", scale = -0.5 }
quarter = { table = "input", address = 4, type = "u16", scale = 0.25, offset = 0.5 }
float = { table = "holding", address = 4, type = "f32", scale = 0.1 }
big = { table = "input", address = 6, type = "f64", scale = 10 }
"#,
    )
}

#[test]
fn scaled_values_are_rounded_to_the_decimals_of_scale_and_offset() {
    let model = scaled();
    // 2301 * 0.1 is 230.10000000000002 in f64.
    let volts = decode_registers(&model, "volts", &[2301]).unwrap();
    assert_eq!(volts.as_f64(), Some(230.1));
    assert_eq!(volts.to_string(), "230.1");
    // i16 -405 (0xFE6B) * 0.1 - 40 = -80.5; -400 (0xFE70) gives -80.
    assert_eq!(
        decode_registers(&model, "temp", &[0xFE6B])
            .unwrap()
            .as_f64(),
        Some(-80.5)
    );
    assert_eq!(
        decode_registers(&model, "temp", &[0xFE70])
            .unwrap()
            .as_f64(),
        Some(-80.0)
    );
    assert_eq!(
        decode_registers(&model, "temp", &[653])
            .unwrap()
            .to_string(),
        "25.3"
    );
    assert_eq!(
        decode_registers(&model, "temp_le", &[0x6BFE])
            .unwrap()
            .as_f64(),
        Some(-80.5)
    );
    // 0x0001E240 = 123456 Wh.
    assert_eq!(
        decode_registers(&model, "energy", &[0x0001, 0xE240])
            .unwrap()
            .to_string(),
        "123.456"
    );
    assert_eq!(
        decode_registers(&model, "ratio", &[2345])
            .unwrap()
            .to_string(),
        "23.45"
    );
    assert_eq!(
        decode_registers(&model, "inverted", &[3]).unwrap().as_f64(),
        Some(-1.5)
    );
    assert_eq!(
        decode_registers(&model, "quarter", &[3]).unwrap().as_f64(),
        Some(1.25)
    );
    // Scaled integers are JSON numbers even when whole; zero is never negative.
    let whole = decode_registers(&model, "volts", &[100]).unwrap();
    assert!(whole.is_f64());
    assert_eq!(whole.as_f64(), Some(10.0));
    assert_eq!(
        decode_registers(&model, "inverted", &[0])
            .unwrap()
            .to_string(),
        "0.0"
    );
}

#[test]
fn scaled_floats_keep_their_own_decimals() {
    let model = scaled();
    let bits = 21.37f32.to_bits();
    let registers = [(bits >> 16) as u16, bits as u16];
    assert_eq!(
        decode_registers(&model, "float", &registers)
            .unwrap()
            .to_string(),
        "2.137"
    );
    assert_eq!(
        written_registers(&model.encode_set("float", &json!(2.137)).unwrap()),
        registers
    );
    // 1e308 * 10 overflows.
    let huge = 1e308f64.to_bits();
    let huge = [
        (huge >> 48) as u16,
        (huge >> 32) as u16,
        (huge >> 16) as u16,
        huge as u16,
    ];
    assert_eq!(
        decode_registers(&model, "big", &huge),
        Err(ModbusValueError::NotFinite)
    );
}

#[test]
fn writes_invert_the_scaling_and_round_to_the_nearest_raw_value() {
    let model = scaled();
    assert_eq!(
        written_registers(&model.encode_set("volts", &json!(230.1)).unwrap()),
        [2301]
    );
    assert_eq!(
        written_registers(&model.encode_set("volts", &json!(230.14)).unwrap()),
        [2301]
    );
    assert_eq!(
        written_registers(&model.encode_set("volts", &json!(230.16)).unwrap()),
        [2302]
    );
    assert_eq!(
        written_registers(&model.encode_set("temp", &json!(-80.5)).unwrap()),
        [0xFE6B]
    );
    assert_eq!(
        written_registers(&model.encode_set("temp", &json!(25.3)).unwrap()),
        [653]
    );
    assert_eq!(
        written_registers(&model.encode_set("ratio", &json!(23.45)).unwrap()),
        [2345]
    );
    assert_eq!(
        written_registers(&model.encode_set("inverted", &json!(-1.5)).unwrap()),
        [3]
    );
    assert_eq!(
        model.encode_set("volts", &json!(6553.6)),
        Err(ModbusValueError::OutOfRange {
            value: "6553.6".into(),
            min: "0".into(),
            max: "6553.5".into()
        })
    );
    assert!(matches!(
        model.encode_set("volts", &json!(-0.1)),
        Err(ModbusValueError::OutOfRange { .. })
    ));
    // A negative scale turns the range around: raw -32768..=32767 is 16383.5..=-16384.
    assert_eq!(
        model.encode_set("inverted", &json!(20000)),
        Err(ModbusValueError::OutOfRange {
            value: "20000".into(),
            min: "-16383.5".into(),
            max: "16384".into()
        })
    );
    // Every raw value reads back as what it was written from.
    for raw in [0u16, 1, 2301, 9999, 65535] {
        let value = decode_registers(&model, "volts", &[raw]).unwrap();
        assert_eq!(
            written_registers(&model.encode_set("volts", &value).unwrap()),
            [raw]
        );
    }
    for raw in [0u16, 1, 0x7FFF, 0x8000, 0xFE6B, 0xFFFF] {
        let value = decode_registers(&model, "temp", &[raw]).unwrap();
        assert_eq!(
            written_registers(&model.encode_set("temp", &value).unwrap()),
            [raw]
        );
    }
}

#[test]
fn unscaled_writes_check_range_and_kind() {
    let model = all_types("big", "big");
    let out_of_range = |v: &str, min: &str, max: &str| ModbusValueError::OutOfRange {
        value: v.into(),
        min: min.into(),
        max: max.into(),
    };
    assert_eq!(
        model.encode_set("a_u16", &json!(65536)),
        Err(out_of_range("65536", "0", "65535"))
    );
    assert_eq!(
        model.encode_set("a_u16", &json!(-1)),
        Err(out_of_range("-1", "0", "65535"))
    );
    assert_eq!(
        model.encode_set("a_i16", &json!(32768)),
        Err(out_of_range("32768", "-32768", "32767"))
    );
    assert_eq!(
        model.encode_set("a_u64", &json!(1e20)),
        Err(out_of_range("1e+20", "0", "18446744073709551615"))
    );
    // A fraction is rounded to the nearest integer.
    assert_eq!(
        written_registers(&model.encode_set("a_u16", &json!(12.6)).unwrap()),
        [13]
    );
    assert_eq!(
        model.encode_set("a_u16", &json!("12")),
        Err(ModbusValueError::WrongType {
            expected: "a number",
            found: "\"12\"".into()
        })
    );
    assert!(matches!(
        model.encode_set("a_flag", &json!(1)),
        Err(ModbusValueError::WrongType {
            expected: "a boolean",
            ..
        })
    ));
    assert!(matches!(
        model.encode_set("a_coil", &json!(null)),
        Err(ModbusValueError::WrongType {
            expected: "a boolean",
            ..
        })
    ));
    assert_eq!(
        model.encode_set("a_input", &json!(true)),
        Err(ModbusValueError::ReadOnly("a_input".into()))
    );
    assert_eq!(
        model.encode_set("nope", &json!(true)),
        Err(ModbusValueError::UnknownProperty("nope".into()))
    );
    assert!(model.read_back("nope").is_none());
}

#[test]
fn encode_set_is_the_inverse_of_decode_for_every_type() {
    for (byte_order, word_order) in ORDERS {
        let model = all_types(byte_order, word_order);
        for (seed, read) in model.groups().iter().flat_map(|g| &g.reads).enumerate() {
            for slot in &read.slots {
                let property = model.properties().nth(slot.property).unwrap().to_owned();
                let single = model.read_back(&property).unwrap();
                for round in 0..50u64 {
                    let data = garbage(seed as u64 * 1000 + round, usize::from(single.count));
                    let bits: Vec<bool> = data.iter().map(|w| w & 1 == 1).collect();
                    let answer = if single.table.is_bits() {
                        ReadData::Bits(&bits)
                    } else {
                        ReadData::Registers(&data)
                    };
                    let Ok(value) = decode_one(&model, &property, answer) else {
                        continue; // NaN, or text that is not UTF-8
                    };
                    if !model.is_writable(&property) {
                        continue;
                    }
                    let writes = model.encode_set(&property, &value).unwrap();
                    let back = match (&writes[..], answer) {
                        ([Write::Coil { value, .. }], _) => {
                            decode_one(&model, &property, ReadData::Bits(&[*value]))
                        }
                        (
                            [
                                Write::Mask {
                                    and_mask, or_mask, ..
                                },
                            ],
                            ReadData::Registers(regs),
                        ) => {
                            let current = regs[0] ^ 0x5A5A;
                            let after = apply_mask(current, *and_mask, *or_mask);
                            // The other bits are kept.
                            assert_eq!(after & and_mask, current & and_mask);
                            decode_registers(&model, &property, &[after])
                        }
                        (writes, _) => {
                            decode_registers(&model, &property, &written_registers(writes))
                        }
                    };
                    let context = format!("{property} {byte_order}/{word_order} {data:04X?}");
                    match (&back, &value) {
                        (Ok(Value::String(b)), Value::String(v)) => {
                            assert_eq!(b, v.trim_end_matches([' ', '\0']), "{context}");
                        }
                        (Ok(Value::Number(b)), Value::Number(v)) if b.is_f64() => {
                            assert_eq!(
                                b.as_f64().map(f64::to_bits),
                                v.as_f64().map(f64::to_bits),
                                "{context}"
                            );
                        }
                        _ => assert_eq!(back.as_ref(), Ok(&value), "{context}"),
                    }
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Read plans

fn plan_model(binding: &str, properties: &str) -> ModbusModel {
    // Every property used here is an integer.
    let names: Vec<&str> = properties
        .lines()
        .filter_map(|line| line.split_once(" = ").map(|(name, _)| name.trim()))
        .collect();
    let schemas: String = names
        .iter()
        .map(|name| format!("{name} = {{ type = \"integer\" }}\n"))
        .collect();
    model(&format!(
        "[properties]\n{schemas}\n[bindings.modbus]\n{binding}\n[bindings.modbus.properties]\n{properties}"
    ))
}

/// A read as (table, address, count, property names).
type ReadLayout = (Table, u16, u16, Vec<String>);

/// Each group's name and reads.
fn layout(model: &ModbusModel) -> Vec<(String, Vec<ReadLayout>)> {
    let names: Vec<&str> = model.properties().collect();
    model
        .groups()
        .iter()
        .map(|group| {
            let reads = group
                .reads
                .iter()
                .map(|read| {
                    let props = read
                        .slots
                        .iter()
                        .map(|slot| names[slot.property].to_owned())
                        .collect();
                    (read.table, read.address, read.count, props)
                })
                .collect();
            (group.name.clone(), reads)
        })
        .collect()
}

fn read(table: Table, address: u16, count: u16, props: &[&str]) -> ReadLayout {
    (
        table,
        address,
        count,
        props.iter().map(|p| (*p).to_owned()).collect(),
    )
}

#[test]
fn adjacent_properties_merge_into_one_read() {
    let model = plan_model(
        "",
        "a = { table = \"holding\", address = 0, type = \"u32\" }\n\
         b = { table = \"holding\", address = 2, type = \"u16\" }\n\
         c = { table = \"holding\", address = 3, type = \"i64\" }\n",
    );
    assert_eq!(
        layout(&model),
        [(
            "default".to_owned(),
            vec![read(Table::Holding, 0, 7, &["a", "b", "c"])]
        )]
    );
    assert_eq!(
        model.groups()[0].interval,
        std::time::Duration::from_millis(5000)
    );
    // The merged answer decodes each property at its offset.
    let out = model.decode(
        &model.groups()[0].reads[0],
        ReadData::Registers(&[0, 1, 2, 0, 0, 0, 3]),
    );
    assert_eq!(
        out,
        [
            ("a", Ok(json!(1))),
            ("b", Ok(json!(2))),
            ("c", Ok(json!(3)))
        ]
    );
}

#[test]
fn a_gap_splits_reads_unless_max_gap_spans_it() {
    let properties = "a = { table = \"input\", address = 0, type = \"u16\" }\n\
                      b = { table = \"input\", address = 5, type = \"u16\" }\n";
    assert_eq!(
        layout(&plan_model("", properties)),
        [(
            "default".to_owned(),
            vec![
                read(Table::Input, 0, 1, &["a"]),
                read(Table::Input, 5, 1, &["b"])
            ]
        )]
    );
    assert_eq!(
        layout(&plan_model("max_gap = 3", properties)),
        [(
            "default".to_owned(),
            vec![
                read(Table::Input, 0, 1, &["a"]),
                read(Table::Input, 5, 1, &["b"])
            ]
        )]
    );
    let model = plan_model("max_gap = 4", properties);
    assert_eq!(
        layout(&model),
        [(
            "default".to_owned(),
            vec![read(Table::Input, 0, 6, &["a", "b"])]
        )]
    );
    let out = model.decode(
        &model.groups()[0].reads[0],
        ReadData::Registers(&[7, 0, 0, 0, 0, 9]),
    );
    assert_eq!(out, [("a", Ok(json!(7))), ("b", Ok(json!(9)))]);
}

#[test]
fn merged_reads_stay_within_the_caps() {
    let properties = "a = { table = \"holding\", address = 0, type = \"u16\" }\n\
                      b = { table = \"holding\", address = 1, type = \"u16\" }\n\
                      c = { table = \"holding\", address = 2, type = \"u16\" }\n\
                      d = { table = \"holding\", address = 3, type = \"u32\" }\n";
    assert_eq!(
        layout(&plan_model("max_registers = 2", properties)),
        [(
            "default".to_owned(),
            vec![
                read(Table::Holding, 0, 2, &["a", "b"]),
                read(Table::Holding, 2, 1, &["c"]),
                read(Table::Holding, 3, 2, &["d"]),
            ]
        )]
    );
    assert_eq!(
        layout(&plan_model("max_registers = 3", properties)),
        [(
            "default".to_owned(),
            vec![
                read(Table::Holding, 0, 3, &["a", "b", "c"]),
                read(Table::Holding, 3, 2, &["d"])
            ]
        )]
    );
    // Bits: capped by max_bits.
    let model = model(
        r#"
[properties]
a = { type = "boolean" }
b = { type = "boolean" }
c = { type = "boolean" }
[bindings.modbus]
max_bits = 2
max_gap = 10
[bindings.modbus.properties]
a = { table = "coil", address = 0, type = "bool" }
b = { table = "coil", address = 1, type = "bool" }
c = { table = "coil", address = 2, type = "bool" }
"#,
    );
    assert_eq!(
        layout(&model),
        [(
            "default".to_owned(),
            vec![
                read(Table::Coil, 0, 2, &["a", "b"]),
                read(Table::Coil, 2, 1, &["c"])
            ]
        )]
    );
    let out = model.decode(&model.groups()[0].reads[0], ReadData::Bits(&[false, true]));
    assert_eq!(out, [("a", Ok(json!(false))), ("b", Ok(json!(true)))]);
}

#[test]
fn tables_and_groups_are_read_separately() {
    let model = model(
        r#"
[properties]
coil = { type = "boolean" }
discrete = { type = "boolean" }
input = { type = "integer" }
holding = { type = "integer" }
fast_one = { type = "integer" }
slow_one = { type = "integer" }
[bindings.modbus]
poll_ms = 2000
[bindings.modbus.groups]
fast = { poll_ms = 100 }
slow = { poll_ms = 60000 }
unused = { poll_ms = 1000 }
[bindings.modbus.properties]
holding = { table = "holding", address = 0, type = "u16" }
input = { table = "input", address = 0, type = "u16" }
discrete = { table = "discrete", address = 0, type = "bool" }
coil = { table = "coil", address = 0, type = "bool" }
fast_one = { table = "holding", address = 1, type = "u16", group = "fast" }
slow_one = { table = "holding", address = 2, type = "u16", group = "slow" }
"#,
    );
    assert_eq!(
        layout(&model),
        [
            (
                "default".to_owned(),
                vec![
                    read(Table::Coil, 0, 1, &["coil"]),
                    read(Table::Discrete, 0, 1, &["discrete"]),
                    read(Table::Input, 0, 1, &["input"]),
                    read(Table::Holding, 0, 1, &["holding"]),
                ]
            ),
            (
                "fast".to_owned(),
                vec![read(Table::Holding, 1, 1, &["fast_one"])]
            ),
            (
                "slow".to_owned(),
                vec![read(Table::Holding, 2, 1, &["slow_one"])]
            ),
        ]
    );
    let intervals: Vec<u128> = model
        .groups()
        .iter()
        .map(|g| g.interval.as_millis())
        .collect();
    assert_eq!(intervals, [2000, 100, 60000]);
}

#[test]
fn a_default_group_without_properties_is_left_out() {
    let model = plan_model(
        "groups.fast = { poll_ms = 500 }",
        "a = { table = \"holding\", address = 0, type = \"u16\", group = \"fast\" }\n",
    );
    assert_eq!(
        layout(&model),
        [("fast".to_owned(), vec![read(Table::Holding, 0, 1, &["a"])])]
    );
}

#[test]
fn bit_fields_of_one_register_share_its_read() {
    let model = model(
        r#"
[properties]
ready = { type = "boolean" }
mode = { type = "integer" }
[bindings.modbus.properties]
ready = { table = "holding", address = 50, type = "bool", bit = 3 }
mode = { table = "holding", address = 50, type = "u16", bits = "4..8" }
"#,
    );
    assert_eq!(
        layout(&model),
        [(
            "default".to_owned(),
            vec![read(Table::Holding, 50, 1, &["mode", "ready"])]
        )]
    );
    let out = model.decode(&model.groups()[0].reads[0], ReadData::Registers(&[0x00A8]));
    assert_eq!(out, [("mode", Ok(json!(10))), ("ready", Ok(json!(true)))]);
    assert_eq!(
        model.properties_of(&model.groups()[0].reads[0]),
        ["mode", "ready"]
    );
}

// ---------------------------------------------------------------------------------------------
// Answers that do not fit

#[test]
fn short_answers_fail_only_the_properties_they_miss() {
    let model = plan_model(
        "",
        "a = { table = \"holding\", address = 0, type = \"u16\" }\n\
         b = { table = \"holding\", address = 1, type = \"u32\" }\n",
    );
    let read = &model.groups()[0].reads[0];
    assert_eq!(
        model.decode(read, ReadData::Registers(&[4, 0])),
        [
            ("a", Ok(json!(4))),
            ("b", Err(ModbusValueError::ShortData { needed: 3, got: 2 }))
        ]
    );
    assert_eq!(
        model.decode(read, ReadData::Registers(&[])),
        [
            ("a", Err(ModbusValueError::ShortData { needed: 1, got: 0 })),
            ("b", Err(ModbusValueError::ShortData { needed: 3, got: 0 }))
        ]
    );
    assert_eq!(
        model.decode(read, ReadData::Bits(&[true; 3])),
        [
            (
                "a",
                Err(ModbusValueError::WrongData {
                    table: Table::Holding,
                    expected: "registers"
                })
            ),
            (
                "b",
                Err(ModbusValueError::WrongData {
                    table: Table::Holding,
                    expected: "registers"
                })
            )
        ]
    );
    // Longer answers are fine: the extra values are ignored.
    assert_eq!(
        model.decode(read, ReadData::Registers(&[1, 0, 2, 9, 9]))[1],
        ("b", Ok(json!(2)))
    );

    let coils = all_types("big", "big");
    let coil_read = coils.read_back("a_coil").unwrap();
    assert_eq!(
        coils.decode(&coil_read, ReadData::Bits(&[])),
        [(
            "a_coil",
            Err(ModbusValueError::ShortData { needed: 1, got: 0 })
        )]
    );
    assert!(matches!(
        coils.decode(&coil_read, ReadData::Registers(&[1]))[0].1,
        Err(ModbusValueError::WrongData {
            expected: "bits",
            ..
        })
    ));
}

#[test]
fn garbage_answers_of_any_length_never_panic() {
    for (byte_order, word_order) in ORDERS {
        let model = all_types(byte_order, word_order);
        let reads: Vec<ReadRequest> = model
            .groups()
            .iter()
            .flat_map(|g| g.reads.clone())
            .chain(model.properties().filter_map(|p| model.read_back(p)))
            .collect();
        for (i, read) in reads.iter().enumerate() {
            for len in 0..=usize::from(read.count) + 2 {
                let words = garbage(i as u64 * 131 + len as u64, len);
                let bits: Vec<bool> = words.iter().map(|w| w & 0x100 != 0).collect();
                let out = model.decode(read, ReadData::Registers(&words));
                assert_eq!(out.len(), read.property_count());
                let out = model.decode(read, ReadData::Bits(&bits));
                assert_eq!(out.len(), read.property_count());
            }
        }
        for value in [
            json!(null),
            json!(true),
            json!(-1),
            json!(1e300),
            json!(-1e300),
            json!(u64::MAX),
            json!(i64::MIN),
            json!(0.5),
            json!(""),
            json!("x".repeat(100)),
            json!([1]),
            json!({"a": 1}),
        ] {
            let names: Vec<String> = model.properties().map(str::to_owned).collect();
            for name in names {
                let _ = model.encode_set(&name, &value);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The spec's example, loaded from a type file

const METER: &str = r#"
id = "power_meter"
title = "Power meter"
version = "1.0"

[properties]
voltage = { type = "number", unit = "V" }
energy = { type = "number", unit = "kWh" }
frequency = { type = "number", unit = "Hz" }
serial = { type = "string", kind = "info" }
running = { type = "boolean" }
fault = { type = "boolean" }
ready = { type = "boolean" }
mode = { type = "integer" }
speed_setpoint = { type = "integer", writable = true, minimum = 0, maximum = 3000 }
temperature = { type = "number", unit = "°C" }

[actions.reset_energy]
input = { type = "object", properties = { seconds = { type = "integer" } }, required = ["seconds"] }

[bindings.modbus]
byte_order = "big"
word_order = "big"
max_registers = 125
max_bits = 2000
max_gap = 0
poll_ms = 5000

[bindings.modbus.groups]
fast = { poll_ms = 1000 }
slow = { poll_ms = 60000 }

[bindings.modbus.properties]
voltage   = { table = "input", address = 0, type = "f32", group = "fast" }
energy    = { table = "input", address = 6, type = "u32", scale = 0.001 }
frequency = { table = "input", address = 8, type = "u16", scale = 0.01 }
serial    = { table = "holding", address = 200, type = "string", count = 8, group = "slow" }
running   = { table = "coil", address = 0, type = "bool" }
fault     = { table = "discrete", address = 3, type = "bool" }
ready     = { table = "holding", address = 50, type = "bool", bit = 3 }
mode      = { table = "holding", address = 50, type = "u16", bits = "4..8" }
speed_setpoint = { table = "holding", address = 10, type = "u16" }
temperature = { table = "input", address = 20, type = "i16", scale = 0.1, offset = -40.0, byte_order = "little" }

[bindings.modbus.actions.reset_energy]
writes = [
  { table = "coil", address = 10, type = "bool", value = true },
  { table = "holding", address = 300, type = "u16", input = "/seconds" },
]
"#;

#[test]
fn the_example_type_loads_polls_decodes_and_writes() {
    let ty = ThingType::from_toml(METER, "power_meter.toml").unwrap();
    let model = ModbusModel::new(&ty).unwrap();
    assert_eq!(model.type_id(), "power_meter");
    assert_eq!(
        layout(&model),
        [
            (
                "default".to_owned(),
                vec![
                    read(Table::Coil, 0, 1, &["running"]),
                    read(Table::Discrete, 3, 1, &["fault"]),
                    read(Table::Input, 6, 3, &["energy", "frequency"]),
                    read(Table::Input, 20, 1, &["temperature"]),
                    read(Table::Holding, 10, 1, &["speed_setpoint"]),
                    read(Table::Holding, 50, 1, &["mode", "ready"]),
                ]
            ),
            (
                "fast".to_owned(),
                vec![read(Table::Input, 0, 2, &["voltage"])]
            ),
            (
                "slow".to_owned(),
                vec![read(Table::Holding, 200, 8, &["serial"])]
            ),
        ]
    );
    let default = &model.groups()[0];
    assert_eq!(
        model.decode(
            &default.reads[2],
            ReadData::Registers(&[0x0001, 0xE240, 5000])
        ),
        [
            ("energy", Ok(json!(123.456))),
            ("frequency", Ok(json!(50.0)))
        ]
    );
    // -400 in little byte order: 0xFE70 swapped.
    assert_eq!(
        model.decode(&default.reads[3], ReadData::Registers(&[0x70FE])),
        [("temperature", Ok(json!(-80.0)))]
    );
    let fast = &model.groups()[1];
    assert_eq!(
        model.decode(&fast.reads[0], ReadData::Registers(&[0x4366, 0x199A])),
        [("voltage", Ok(json!(230.1)))]
    );
    let slow = &model.groups()[2];
    let serial: Vec<u16> = b"SN-0042\0\0\0\0\0\0\0\0\0"
        .chunks(2)
        .map(|pair| u16::from_be_bytes([pair[0], pair[1]]))
        .collect();
    assert_eq!(
        model.decode(&slow.reads[0], ReadData::Registers(&serial)),
        [("serial", Ok(json!("SN-0042")))]
    );
    assert!(model.is_info("serial"));
    assert!(!model.is_info("voltage"));
    assert!(!model.is_info("nope"));

    assert_eq!(
        model.encode_set("speed_setpoint", &json!(1500)).unwrap(),
        [Write::Register {
            address: 10,
            value: 1500
        }]
    );
    assert_eq!(
        model.encode_set("voltage", &json!(1.0)),
        Err(ModbusValueError::ReadOnly("voltage".into()))
    );
    let back = model.read_back("speed_setpoint").unwrap();
    assert_eq!(
        (back.table, back.address, back.count),
        (Table::Holding, 10, 1)
    );
    assert_eq!(
        model.decode(&back, ReadData::Registers(&[1500])),
        [("speed_setpoint", Ok(json!(1500)))]
    );

    assert!(model.has_action("reset_energy"));
    assert!(!model.has_action("reboot"));
    assert_eq!(model.actions().collect::<Vec<_>>(), ["reset_energy"]);
    assert_eq!(
        model
            .encode_action("reset_energy", &json!({"seconds": 30}))
            .unwrap(),
        [
            Write::Coil {
                address: 10,
                value: true
            },
            Write::Register {
                address: 300,
                value: 30
            }
        ]
    );
    assert_eq!(
        model.encode_action("reset_energy", &json!({})),
        Err(ModbusValueError::MissingInput {
            pointer: "/seconds".into()
        })
    );
    assert_eq!(
        model.encode_action("reset_energy", &json!({"seconds": -5})),
        Err(ModbusValueError::Input {
            pointer: "/seconds".into(),
            error: Box::new(ModbusValueError::OutOfRange {
                value: "-5".into(),
                min: "0".into(),
                max: "65535".into()
            })
        })
    );
    assert_eq!(
        model.encode_action("reboot", &json!(null)),
        Err(ModbusValueError::UnknownAction("reboot".into()))
    );
}

#[test]
fn a_whole_input_and_masked_action_writes() {
    let model = model(
        r#"
[actions.set_mode]
input = { type = "integer" }
[actions.arm]
[bindings.modbus.actions.set_mode]
writes = [{ table = "holding", address = 7, type = "u16", bits = "0..4", input = "" }]
[bindings.modbus.actions.arm]
writes = [
  { table = "holding", address = 7, type = "bool", bit = 15, value = true },
  { table = "holding", address = 8, type = "f32", word_order = "little", value = 21.1 },
]
"#,
    );
    assert!(model.groups().is_empty());
    assert_eq!(
        model.encode_action("set_mode", &json!(9)).unwrap(),
        [Write::Mask {
            address: 7,
            and_mask: 0xFFF0,
            or_mask: 0x0009
        }]
    );
    assert_eq!(
        model.encode_action("arm", &json!(null)).unwrap(),
        [
            Write::Mask {
                address: 7,
                and_mask: 0x7FFF,
                or_mask: 0x8000
            },
            Write::Registers {
                address: 8,
                values: vec![0xCCCD, 0x41A8]
            }
        ]
    );
}

#[test]
fn every_built_in_type_with_a_modbus_binding_compiles() {
    let catalog = crate::TypeCatalog::builtin().unwrap();
    for ty in catalog.list() {
        if ty.binding(MODBUS_BINDING).is_some() {
            let model = ModbusModel::new(ty).unwrap_or_else(|e| panic!("{e}"));
            assert!(!model.groups().is_empty(), "{}", ty.id);
        }
    }
}

#[test]
fn the_binding_round_trips_through_serde() {
    let ty = ThingType::from_toml(METER, "power_meter.toml").unwrap();
    let binding = ModbusBinding::from_toml(ty.binding(MODBUS_BINDING).unwrap()).unwrap();
    let text = toml::to_string(&binding).unwrap();
    let again: toml::Table = toml::from_str(&text).unwrap();
    assert_eq!(ModbusBinding::from_toml(&again).unwrap(), binding);
    assert_eq!(binding.properties["temperature"].offset, Some(-40.0));
    assert!(ModbusModel::with_binding(&ty, &binding).is_ok());
    assert_eq!(Table::Discrete.to_string(), "discrete");
    assert_eq!(ValueType::F64.to_string(), "f64");
}

// ---------------------------------------------------------------------------------------------
// Configuration errors

/// Properties and actions the error cases map.
const ERROR_TYPE: &str = r#"
[properties]
temp = { type = "number" }
count = { type = "integer" }
flag = { type = "boolean" }
flag2 = { type = "boolean" }
name = { type = "string" }
setpoint = { type = "number", writable = true }
label = { type = "string", writable = true }

[actions.go]
input = { type = "object", properties = { seconds = { type = "integer" }, name = { type = "string" } } }
[actions.stop]
[actions.query]
output = { type = "integer" }
"#;

/// Builds a model from ERROR_TYPE and a `[bindings.modbus]` body; returns the error's key and text.
fn config_error(binding: &str) -> (Option<String>, String) {
    let ty = thing_type(&format!("{ERROR_TYPE}\n[bindings.modbus]\n{binding}"));
    let error = ModbusModel::new(&ty).expect_err("binding should be refused");
    let text = error.to_string();
    assert!(
        text.contains("type `dev`"),
        "message names the type: {text}"
    );
    (error.key().map(str::to_owned), text)
}

#[test]
fn config_errors_name_the_key_and_reason() {
    let p = |body: &str| format!("[bindings.modbus.properties]\n{body}");
    let a = |body: &str| format!("[bindings.modbus.actions]\n{body}");
    let cases: Vec<(String, &str, &str)> = vec![
        // Shape.
        ("bogus = 1".into(), "bogus", "unknown field `bogus`"),
        (
            p("temp = { table = \"register\", address = 0, type = \"u16\" }"),
            "properties.temp.table",
            "unknown variant `register`",
        ),
        (
            p("temp = { table = \"input\", address = -1, type = \"u16\" }"),
            "properties.temp.address",
            "-1",
        ),
        (
            p("temp = { table = \"input\", address = 0, type = \"u24\" }"),
            "properties.temp.type",
            "unknown variant `u24`",
        ),
        (
            p("temp = { table = \"input\", address = 0, type = \"u16\", scal = 0.1 }"),
            "properties.temp.scal",
            "unknown field `scal`",
        ),
        (
            p("temp = { table = \"input\", type = \"u16\" }"),
            "properties.temp",
            "missing field `address`",
        ),
        (
            "byte_order = \"middle\"".into(),
            "byte_order",
            "unknown variant `middle`",
        ),
        (
            "groups.fast = {}".into(),
            "groups.fast",
            "missing field `poll_ms`",
        ),
        (
            a(
                "go = { writes = [{ table = \"coil\", address = 0, type = \"bool\", value = true, group = \"x\" }] }",
            ),
            "actions.go.writes[0].group",
            "unknown field `group`",
        ),
        (a("go = {}"), "actions.go", "missing field `writes`"),
        // Top-level limits and groups.
        (
            "max_registers = 0".into(),
            "max_registers",
            "0 is out of range (1..=125)",
        ),
        (
            "max_registers = 126".into(),
            "max_registers",
            "126 is out of range (1..=125)",
        ),
        (
            "max_bits = 2001".into(),
            "max_bits",
            "out of range (1..=2000)",
        ),
        ("max_gap = 126".into(), "max_gap", "out of range (0..=125)"),
        (
            "poll_ms = 99".into(),
            "poll_ms",
            "out of range (100..=86400000)",
        ),
        ("poll_ms = 86400001".into(), "poll_ms", "out of range"),
        (
            "groups.default = { poll_ms = 1000 }".into(),
            "groups.default",
            "implicit group",
        ),
        (
            "groups.Fast = { poll_ms = 1000 }".into(),
            "groups.Fast",
            "not a valid name",
        ),
        (
            "groups.fast = { poll_ms = 50 }".into(),
            "groups.fast.poll_ms",
            "out of range",
        ),
        // Locations.
        (
            p("nope = { table = \"input\", address = 0, type = \"u16\" }"),
            "properties.nope",
            "no property `nope`",
        ),
        (
            p("count = { table = \"input\", address = 65536, type = \"u16\" }"),
            "properties.count.address",
            "out of range (0..=65535)",
        ),
        (
            p("count = { table = \"input\", address = 65535, type = \"u32\" }"),
            "properties.count.address",
            "runs past address 65535",
        ),
        (
            p("name = { table = \"input\", address = 65530, type = \"string\", count = 7 }"),
            "properties.name.address",
            "runs past",
        ),
        (
            p("count = { table = \"coil\", address = 0, type = \"u16\" }"),
            "properties.count.type",
            "the coil table holds bits; type must be bool, not u16",
        ),
        (
            p("count = { table = \"input\", address = 0, type = \"u16\", count = 1 }"),
            "properties.count.count",
            "not used",
        ),
        (
            p("count = { table = \"input\", address = 0, type = \"u16\", bit = 1 }"),
            "properties.count.bit",
            "not used",
        ),
        (
            p("flag = { table = \"coil\", address = 0, type = \"bool\", bit = 1 }"),
            "properties.flag.bit",
            "not used",
        ),
        (
            p("flag = { table = \"input\", address = 0, type = \"bool\" }"),
            "properties.flag.bit",
            "required",
        ),
        (
            p("flag = { table = \"input\", address = 0, type = \"bool\", bit = 16 }"),
            "properties.flag.bit",
            "16 is out of range (0..=15)",
        ),
        (
            p("flag = { table = \"input\", address = 0, type = \"bool\", bits = \"1..2\" }"),
            "properties.flag.bits",
            "not used",
        ),
        (
            p("count = { table = \"input\", address = 0, type = \"u32\", bits = \"1..2\" }"),
            "properties.count.bits",
            "not used",
        ),
        (
            p("count = { table = \"input\", address = 0, type = \"u16\", bits = \"4..17\" }"),
            "properties.count.bits",
            "not a bit field",
        ),
        (
            p("count = { table = \"input\", address = 0, type = \"u16\", bits = \"8..4\" }"),
            "properties.count.bits",
            "not a bit field",
        ),
        (
            p("count = { table = \"input\", address = 0, type = \"u16\", bits = \"3\" }"),
            "properties.count.bits",
            "not a bit field",
        ),
        (
            p("flag = { table = \"coil\", address = 0, type = \"bool\", scale = 2.0 }"),
            "properties.flag.scale",
            "not used",
        ),
        (
            p(
                "name = { table = \"input\", address = 0, type = \"string\", count = 2, offset = 1.0 }",
            ),
            "properties.name.offset",
            "not used",
        ),
        (
            p("temp = { table = \"input\", address = 0, type = \"u16\", scale = 0.0 }"),
            "properties.temp.scale",
            "finite and non-zero",
        ),
        (
            p("temp = { table = \"input\", address = 0, type = \"u16\", scale = inf }"),
            "properties.temp.scale",
            "finite and non-zero",
        ),
        (
            p("temp = { table = \"input\", address = 0, type = \"u16\", offset = nan }"),
            "properties.temp.offset",
            "must be finite",
        ),
        (
            p("flag = { table = \"coil\", address = 0, type = \"bool\", byte_order = \"little\" }"),
            "properties.flag.byte_order",
            "not used",
        ),
        (
            p(
                "count = { table = \"input\", address = 0, type = \"u16\", word_order = \"little\" }",
            ),
            "properties.count.word_order",
            "not used",
        ),
        (
            p(
                "name = { table = \"input\", address = 0, type = \"string\", count = 2, word_order = \"little\" }",
            ),
            "properties.name.word_order",
            "not used",
        ),
        (
            p("name = { table = \"input\", address = 0, type = \"string\" }"),
            "properties.name.count",
            "required",
        ),
        (
            p("name = { table = \"input\", address = 0, type = \"string\", count = 0 }"),
            "properties.name.count",
            "out of range (1..=125)",
        ),
        (
            p("name = { table = \"input\", address = 0, type = \"string\", count = 126 }"),
            "properties.name.count",
            "out of range (1..=125)",
        ),
        (
            p("temp = { table = \"input\", address = 0, type = \"u16\", group = \"slow\" }"),
            "properties.temp.group",
            "no group `slow`",
        ),
        // Schemas.
        (
            p("temp = { table = \"input\", address = 0, type = \"string\", count = 2 }"),
            "properties.temp.type",
            "schema's type is number",
        ),
        (
            p("count = { table = \"input\", address = 0, type = \"u16\", scale = 0.1 }"),
            "properties.count.type",
            "u16 with scale/offset reads as number",
        ),
        (
            p("count = { table = \"input\", address = 0, type = \"f32\" }"),
            "properties.count.type",
            "schema's type is integer",
        ),
        (
            p("flag = { table = \"input\", address = 0, type = \"u16\" }"),
            "properties.flag.type",
            "schema's type is boolean",
        ),
        (
            p("name = { table = \"input\", address = 0, type = \"u16\" }"),
            "properties.name.type",
            "schema's type is string",
        ),
        // Writable properties.
        (
            p("setpoint = { table = \"input\", address = 0, type = \"f32\" }"),
            "properties.setpoint.table",
            "writable in the type",
        ),
        (
            p("setpoint = { table = \"discrete\", address = 0, type = \"bool\" }"),
            "properties.setpoint.type",
            "schema's type is number",
        ),
        (
            p("label = { table = \"holding\", address = 0, type = \"string\", count = 124 }"),
            "properties.label.count",
            "cannot be written in one request",
        ),
        // Caps.
        (
            format!(
                "max_registers = 3\n{}",
                p("count = { table = \"input\", address = 0, type = \"u64\" }")
            ),
            "properties.count.type",
            "more than one read may cover (`max_registers` = 3)",
        ),
        (
            format!(
                "max_registers = 8\n{}",
                p("name = { table = \"input\", address = 0, type = \"string\", count = 10 }")
            ),
            "properties.name.count",
            "takes 10 registers",
        ),
        // Overlaps.
        (
            p(
                "count = { table = \"input\", address = 1, type = \"u16\" }\ntemp = { table = \"input\", address = 0, type = \"u32\" }",
            ),
            "properties.temp.address",
            "overlaps property `count`",
        ),
        (
            p(
                "count = { table = \"input\", address = 0, type = \"u16\", bits = \"3..5\" }\nflag = { table = \"input\", address = 0, type = \"bool\", bit = 4 }",
            ),
            "properties.flag.address",
            "overlaps property `count`",
        ),
        (
            p(
                "count = { table = \"input\", address = 0, type = \"u16\" }\nflag = { table = \"input\", address = 0, type = \"bool\", bit = 4 }",
            ),
            "properties.flag.address",
            "overlaps property `count`",
        ),
        (
            p("count = { table = \"coil\", address = 0, type = \"bool\" }"),
            "properties.count.type",
            "schema's type is integer",
        ),
        (
            p(
                "flag = { table = \"coil\", address = 2, type = \"bool\" }\nflag2 = { table = \"coil\", address = 2, type = \"bool\" }\nsetpoint = { table = \"holding\", address = 2, type = \"f32\" }",
            ),
            "properties.flag2.address",
            "overlaps property `flag`",
        ),
        // Actions.
        (
            a(
                "nope = { writes = [{ table = \"coil\", address = 0, type = \"bool\", value = true }] }",
            ),
            "actions.nope",
            "no action `nope`",
        ),
        (
            a(
                "query = { writes = [{ table = \"coil\", address = 0, type = \"bool\", value = true }] }",
            ),
            "actions.query",
            "output schema",
        ),
        (
            a("go = { writes = [] }"),
            "actions.go.writes",
            "must not be empty",
        ),
        (
            a(
                "go = { writes = [{ table = \"coil\", address = 0, type = \"bool\", value = true, input = \"/x\" }] }",
            ),
            "actions.go.writes[0]",
            "exactly one of `value` or `input`",
        ),
        (
            a("go = { writes = [{ table = \"coil\", address = 0, type = \"bool\" }] }"),
            "actions.go.writes[0]",
            "exactly one of",
        ),
        (
            a(
                "go = { writes = [{ table = \"discrete\", address = 0, type = \"bool\", value = true }] }",
            ),
            "actions.go.writes[0].table",
            "coils or holding registers, not discrete",
        ),
        (
            a(
                "go = { writes = [{ table = \"coil\", address = 0, type = \"bool\", value = true }, { table = \"holding\", address = 70000, type = \"u16\", value = 1 }] }",
            ),
            "actions.go.writes[1].address",
            "out of range",
        ),
        (
            a(
                "go = { writes = [{ table = \"holding\", address = 0, type = \"u16\", input = \"seconds\" }] }",
            ),
            "actions.go.writes[0].input",
            "not a JSON pointer",
        ),
        (
            a(
                "stop = { writes = [{ table = \"holding\", address = 0, type = \"u16\", input = \"/seconds\" }] }",
            ),
            "actions.stop.writes[0].input",
            "takes no input",
        ),
        (
            a(
                "go = { writes = [{ table = \"holding\", address = 0, type = \"u16\", input = \"/minutes\" }] }",
            ),
            "actions.go.writes[0].input",
            "nothing at `/minutes`",
        ),
        (
            a(
                "go = { writes = [{ table = \"holding\", address = 0, type = \"u16\", input = \"/name\" }] }",
            ),
            "actions.go.writes[0].input",
            "schema's type is string",
        ),
        (
            a(
                "go = { writes = [{ table = \"holding\", address = 0, type = \"u16\", input = \"\" }] }",
            ),
            "actions.go.writes[0].input",
            "schema's type is object",
        ),
        (
            a(
                "stop = { writes = [{ table = \"holding\", address = 0, type = \"u16\", value = 70000 }] }",
            ),
            "actions.stop.writes[0].value",
            "70000 is out of range (0..=65535)",
        ),
        (
            a(
                "stop = { writes = [{ table = \"coil\", address = 0, type = \"bool\", value = \"on\" }] }",
            ),
            "actions.stop.writes[0].value",
            "expected a boolean",
        ),
        (
            a(
                "stop = { writes = [{ table = \"holding\", address = 0, type = \"string\", count = 124, value = \"x\" }] }",
            ),
            "actions.stop.writes[0].count",
            "cannot be written in one request",
        ),
    ];
    for (binding, key, reason) in &cases {
        let (got_key, text) = config_error(binding);
        assert_eq!(
            got_key.as_deref(),
            Some(*key),
            "key for:\n{binding}\n→ {text}"
        );
        assert!(
            text.contains(key),
            "message names the key:\n{binding}\n→ {text}"
        );
        assert!(
            text.contains(reason),
            "reason `{reason}` for:\n{binding}\n→ {text}"
        );
    }
}

#[test]
fn a_type_without_the_table_is_refused_by_name() {
    let ty = thing_type("[properties]\nt = { type = \"number\" }\n");
    let error = ModbusModel::new(&ty).unwrap_err();
    assert!(matches!(error, ModbusConfigError::Missing { .. }));
    assert_eq!(error.key(), None);
    assert_eq!(
        error.to_string(),
        "type `dev` has no [bindings.modbus] table"
    );
}

#[test]
fn errors_in_a_type_carry_its_id_key_and_problem() {
    let error = config_error("max_gap = 200");
    assert_eq!(
        error.1,
        "type `dev`: [bindings.modbus] max_gap: 200 is out of range (0..=125)"
    );
    let ty = thing_type(&format!("{ERROR_TYPE}\n[bindings.modbus]\nmax_gap = 200"));
    let error = ModbusModel::new(&ty).unwrap_err();
    assert_eq!(
        error.problem(),
        Some(&ModbusConfigProblem::OutOfRange {
            value: 200,
            min: 0,
            max: 125
        })
    );
    // Parsed alone, a table's errors have no type.
    let table: toml::Table = toml::from_str("poll = 5").unwrap();
    let error = ModbusBinding::from_toml(&table).unwrap_err();
    assert_eq!(error.key(), Some("poll"));
    assert!(error.to_string().starts_with("poll: unknown field `poll`"));
}

#[test]
fn the_model_is_shareable() {
    fn assert_send_sync<T: Send + Sync + 'static>() {}
    assert_send_sync::<ModbusModel>();
    assert_send_sync::<ModbusConfigError>();
    assert_send_sync::<ModbusValueError>();
}
