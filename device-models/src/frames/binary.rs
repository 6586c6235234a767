//! Fixed binary layouts: integers and floats at byte offsets, bit fields, and linear scaling.
//!
//! A field's value is `raw * scale + offset_value`. Decoded values of integer fields are rounded to
//! the decimals of `scale` and `offset_value`, so that 2345 × 0.01 reads 23.45 and not
//! 23.450000000000003; an unscaled integer stays a JSON integer. Encoding inverts the scaling,
//! rounds to the nearest raw integer and fails when that does not fit the field.

use serde_json::{Map, Number, Value};

use super::config::{BinaryField, BinaryType, ByteOrder, ConfigProblem, FrameConfigError};
use super::errors::LayoutError;

/// A compiled binary layout.
#[derive(Debug, Clone)]
pub(crate) struct BinaryLayout {
    fields: Vec<FieldCodec>,
    /// One past the last byte of the last field.
    min_len: usize,
    exact_len: Option<usize>,
}

/// One compiled field.
#[derive(Debug, Clone)]
pub(crate) struct FieldCodec {
    pub(crate) name: String,
    offset: usize,
    ty: BinaryType,
    order: ByteOrder,
    scale: f64,
    offset_value: f64,
    bits: Option<BitRange>,
    /// Decimals to round decoded values to; `None` keeps full precision.
    decimals: Option<i32>,
}

/// Bits `lo..lo + width` of an integer, bit 0 being the least significant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct BitRange {
    lo: u32,
    width: u32,
}

impl BitRange {
    fn overlaps(self, other: Self) -> bool {
        self.lo < other.lo + other.width && other.lo < self.lo + self.width
    }
}

/// Reads `"7"`, `"3..5"` (exclusive) or `"3..=5"` (inclusive) as `(lo, hi)` with `hi` exclusive.
fn parse_bits(text: &str) -> Option<(u32, u32)> {
    let number = |s: &str| s.trim().parse::<u32>().ok();
    if let Some((lo, hi)) = text.split_once("..=") {
        Some((number(lo)?, number(hi)?.checked_add(1)?))
    } else if let Some((lo, hi)) = text.split_once("..") {
        Some((number(lo)?, number(hi)?))
    } else {
        let bit = number(text)?;
        Some((bit, bit.checked_add(1)?))
    }
}

/// Smallest count of decimals that writes `x` exactly (up to 9), if any.
fn decimals(x: f64) -> Option<i32> {
    (0..=9).find(|&d| {
        let scaled = x * 10f64.powi(d);
        (scaled - scaled.round()).abs() <= 1e-9 * scaled.abs().max(1.0)
    })
}

fn mask(width: u32) -> u64 {
    if width >= 64 {
        u64::MAX
    } else {
        (1u64 << width) - 1
    }
}

fn sign_extend(pattern: u64, width: u32) -> i64 {
    if width == 0 || width >= 64 {
        return pattern as i64;
    }
    let shift = 64 - width;
    ((pattern << shift) as i64) >> shift
}

fn read_unsigned(bytes: &[u8], order: ByteOrder) -> u64 {
    let fold = |acc: u64, &byte: &u8| (acc << 8) | u64::from(byte);
    match order {
        ByteOrder::Big => bytes.iter().fold(0, fold),
        ByteOrder::Little => bytes.iter().rev().fold(0, fold),
    }
}

fn write_unsigned(target: &mut [u8], value: u64, order: ByteOrder) {
    let len = target.len();
    for (i, byte) in target.iter_mut().enumerate() {
        let shift = match order {
            ByteOrder::Big => 8 * (len - 1 - i),
            ByteOrder::Little => 8 * i,
        };
        *byte = (value >> shift) as u8;
    }
}

/// A finite f64 as a JSON number; NaN and infinities (a sensor's "no reading") become null.
fn number_or_null(value: f64) -> Value {
    Number::from_f64(value).map_or(Value::Null, Value::Number)
}

impl FieldCodec {
    fn new(
        key: &str,
        field: &BinaryField,
        default_order: ByteOrder,
    ) -> Result<Self, FrameConfigError> {
        if field.name.is_empty() {
            return Err(FrameConfigError::invalid(
                format!("{key}.name"),
                ConfigProblem::Empty,
            ));
        }
        if !field.scale.is_finite() || field.scale == 0.0 {
            return Err(FrameConfigError::invalid(
                format!("{key}.scale"),
                ConfigProblem::BadScale(field.scale),
            ));
        }
        if !field.offset_value.is_finite() {
            return Err(FrameConfigError::invalid(
                format!("{key}.offset_value"),
                ConfigProblem::BadOffsetValue(field.offset_value),
            ));
        }
        let bits = match &field.bits {
            None => None,
            Some(text) => {
                let bits_key = format!("{key}.bits");
                if !field.ty.is_integer() {
                    return Err(FrameConfigError::invalid(
                        bits_key,
                        ConfigProblem::BitsOnFloat,
                    ));
                }
                let (lo, hi) = parse_bits(text).ok_or_else(|| {
                    FrameConfigError::invalid(&bits_key, ConfigProblem::BitsSyntax(text.clone()))
                })?;
                let type_bits = bit_width(field.ty);
                if lo >= hi || hi > type_bits {
                    return Err(FrameConfigError::invalid(
                        bits_key,
                        ConfigProblem::BitsOutsideType { lo, hi, type_bits },
                    ));
                }
                Some(BitRange { lo, width: hi - lo })
            }
        };
        let decimals = match (decimals(field.scale), decimals(field.offset_value)) {
            (Some(a), Some(b)) => Some(a.max(b)),
            _ => None,
        };
        Ok(Self {
            name: field.name.clone(),
            offset: field.offset,
            ty: field.ty,
            order: field.order.unwrap_or(default_order),
            scale: field.scale,
            offset_value: field.offset_value,
            bits,
            decimals,
        })
    }

    fn end(&self) -> usize {
        self.offset.saturating_add(self.ty.size())
    }

    fn is_identity(&self) -> bool {
        self.scale == 1.0 && self.offset_value == 0.0
    }

    /// Width in bits of the value (the bit field, or the whole integer).
    fn value_bits(&self) -> u32 {
        self.bits.map_or(bit_width(self.ty), |b| b.width)
    }

    /// Whether two fields may share bytes: bit fields of one integer (same offset, width and order;
    /// signedness may differ) with disjoint bits.
    fn can_share(&self, other: &Self) -> bool {
        match (self.bits, other.bits) {
            (Some(a), Some(b)) => {
                self.offset == other.offset
                    && self.ty.size() == other.ty.size()
                    && self.order == other.order
                    && !a.overlaps(b)
            }
            _ => false,
        }
    }

    fn slot<'a>(&self, bytes: &'a [u8]) -> Result<&'a [u8], LayoutError> {
        bytes
            .get(self.offset..self.end())
            .ok_or(LayoutError::Truncated {
                len: bytes.len(),
                needed: self.end(),
            })
    }

    /// Reads this field from a frame.
    pub(crate) fn read(&self, bytes: &[u8]) -> Result<Value, LayoutError> {
        let word = read_unsigned(self.slot(bytes)?, self.order);
        let raw = match self.ty {
            BinaryType::F32 => {
                let value = f32::from_bits(word as u32);
                // Through the shortest decimal text, so that 21.37f32 reads 21.37 and not
                // 21.3700008392334.
                let widened = if value.is_finite() {
                    value.to_string().parse::<f64>().unwrap_or(f64::from(value))
                } else {
                    f64::from(value)
                };
                return Ok(number_or_null(self.apply_scale(widened)));
            }
            BinaryType::F64 => return Ok(number_or_null(self.apply_scale(f64::from_bits(word)))),
            _ => {
                let (pattern, width) = match self.bits {
                    Some(bits) => ((word >> bits.lo) & mask(bits.width), bits.width),
                    None => (word, bit_width(self.ty)),
                };
                if self.ty.is_signed() {
                    sign_extend(pattern, width)
                } else {
                    // At most 32 bits wide, so it always fits.
                    i64::try_from(pattern).unwrap_or(i64::MAX)
                }
            }
        };
        if self.is_identity() {
            return Ok(Value::from(raw));
        }
        let value = self.apply_scale(raw as f64);
        let value = match self.decimals {
            Some(decimals) => {
                let power = 10f64.powi(decimals);
                (value * power).round() / power
            }
            None => value,
        };
        Ok(number_or_null(value))
    }

    fn apply_scale(&self, raw: f64) -> f64 {
        if self.is_identity() {
            raw
        } else {
            raw * self.scale + self.offset_value
        }
    }

    /// Range of raw integers this field holds.
    fn raw_range(&self) -> (i64, i64) {
        let width = self.value_bits();
        if self.ty.is_signed() {
            let half = 1i64 << (width - 1);
            (-half, half - 1)
        } else {
            (0, i64::try_from(mask(width)).unwrap_or(i64::MAX))
        }
    }

    /// Writes a property value (number, or bool as 1/0) into `frame`, inverting the scaling.
    pub(crate) fn write(&self, frame: &mut [u8], value: &Value) -> Result<(), LayoutError> {
        let number = match value {
            Value::Number(n) => n.as_f64(),
            Value::Bool(b) => Some(f64::from(u8::from(*b))),
            _ => None,
        }
        .ok_or_else(|| LayoutError::NotANumber {
            field: self.name.clone(),
        })?;
        let raw = (number - self.offset_value) / self.scale;
        match self.ty {
            BinaryType::F32 => {
                if !raw.is_finite() || raw.abs() > f64::from(f32::MAX) {
                    return Err(self.out_of_range(
                        number,
                        -f64::from(f32::MAX),
                        f64::from(f32::MAX),
                    ));
                }
                let bits = (raw as f32).to_bits();
                write_unsigned(self.slot_mut(frame)?, u64::from(bits), self.order);
                Ok(())
            }
            BinaryType::F64 => {
                write_unsigned(self.slot_mut(frame)?, raw.to_bits(), self.order);
                Ok(())
            }
            _ => {
                let (min, max) = self.raw_range();
                let rounded = raw.round();
                if !rounded.is_finite() || rounded < min as f64 || rounded > max as f64 {
                    return Err(self.out_of_range(number, min as f64, max as f64));
                }
                self.write_raw(frame, rounded as i64)
            }
        }
    }

    /// Writes a raw integer (no scaling), wrapped to the field's width: for sequence numbers.
    /// Returns the value as the field reads back (sign-extended for signed types).
    pub(crate) fn write_wrapped(&self, frame: &mut [u8], raw: u64) -> Result<i64, LayoutError> {
        let wrapped = raw & mask(self.value_bits());
        let signed = if self.ty.is_signed() {
            sign_extend(wrapped, self.value_bits())
        } else {
            i64::try_from(wrapped).unwrap_or(i64::MAX)
        };
        self.write_raw(frame, signed)?;
        Ok(signed)
    }

    fn write_raw(&self, frame: &mut [u8], raw: i64) -> Result<(), LayoutError> {
        let order = self.order;
        let bits = self.bits;
        let slot = self.slot_mut(frame)?;
        let pattern = (raw as u64) & mask(self.value_bits());
        let word = match bits {
            Some(bits) => {
                let current = read_unsigned(slot, order);
                (current & !(mask(bits.width) << bits.lo)) | (pattern << bits.lo)
            }
            None => pattern,
        };
        write_unsigned(slot, word, order);
        Ok(())
    }

    fn slot_mut<'a>(&self, frame: &'a mut [u8]) -> Result<&'a mut [u8], LayoutError> {
        let len = frame.len();
        frame
            .get_mut(self.offset..self.end())
            .ok_or(LayoutError::Truncated {
                len,
                needed: self.end(),
            })
    }

    /// Whether the field is an integer with no scaling, so a raw value can go in directly.
    pub(crate) fn is_plain_integer(&self) -> bool {
        self.ty.is_integer() && self.is_identity()
    }

    fn out_of_range(&self, value: f64, raw_min: f64, raw_max: f64) -> LayoutError {
        let a = self.apply_scale(raw_min);
        let b = self.apply_scale(raw_max);
        LayoutError::OutOfRange {
            field: self.name.clone(),
            value,
            min: a.min(b),
            max: a.max(b),
        }
    }
}

fn bit_width(ty: BinaryType) -> u32 {
    u32::try_from(ty.size() * 8).unwrap_or(u32::MAX)
}

impl BinaryLayout {
    /// Compiles `fields` (at key `key`, e.g. `layout.fields`), checking names, bit ranges, overlaps
    /// and that every field fits `length` (or `max_len` when no length is given).
    pub(crate) fn new(
        key: &str,
        order: ByteOrder,
        length: Option<usize>,
        fields: &[BinaryField],
        max_len: usize,
    ) -> Result<Self, FrameConfigError> {
        let mut compiled: Vec<FieldCodec> = Vec::with_capacity(fields.len());
        let limit = length.unwrap_or(max_len);
        for (i, field) in fields.iter().enumerate() {
            let field_key = format!("{key}[{i}]");
            let codec = FieldCodec::new(&field_key, field, order)?;
            if compiled.iter().any(|other| other.name == codec.name) {
                return Err(FrameConfigError::invalid(
                    format!("{field_key}.name"),
                    ConfigProblem::DuplicateName(codec.name),
                ));
            }
            if codec.end() > limit || codec.offset >= limit {
                return Err(FrameConfigError::invalid(
                    format!("{field_key}.offset"),
                    ConfigProblem::FieldPastEnd {
                        end: codec.end(),
                        length: limit,
                    },
                ));
            }
            let overlapping = compiled.iter().find(|other| {
                codec.offset < other.end() && other.offset < codec.end() && !codec.can_share(other)
            });
            if let Some(other) = overlapping {
                return Err(FrameConfigError::invalid(
                    format!("{field_key}.offset"),
                    ConfigProblem::FieldsOverlap(other.name.clone()),
                ));
            }
            compiled.push(codec);
        }
        if let Some(length) = length
            && length > max_len
        {
            return Err(FrameConfigError::invalid(
                key.trim_end_matches(".fields").to_owned() + ".length",
                ConfigProblem::FieldPastEnd {
                    end: length,
                    length: max_len,
                },
            ));
        }
        let min_len = compiled.iter().map(FieldCodec::end).max().unwrap_or(0);
        Ok(Self {
            fields: compiled,
            min_len,
            exact_len: length,
        })
    }

    pub(crate) fn fields(&self) -> &[FieldCodec] {
        &self.fields
    }

    pub(crate) fn field(&self, name: &str) -> Option<&FieldCodec> {
        self.fields.iter().find(|f| f.name == name)
    }

    /// Length of an encoded frame.
    pub(crate) fn len(&self) -> usize {
        self.exact_len.unwrap_or(self.min_len)
    }

    /// Reads every field of a frame.
    pub(crate) fn decode(&self, bytes: &[u8]) -> Result<Map<String, Value>, LayoutError> {
        match self.exact_len {
            Some(expected) if bytes.len() != expected => {
                return Err(LayoutError::WrongLength {
                    len: bytes.len(),
                    expected,
                });
            }
            _ if bytes.len() < self.min_len => {
                return Err(LayoutError::Truncated {
                    len: bytes.len(),
                    needed: self.min_len,
                });
            }
            _ => {}
        }
        self.fields
            .iter()
            .map(|field| Ok((field.name.clone(), field.read(bytes)?)))
            .collect()
    }

    /// Writes every field from `values` (by field name) into a zeroed frame.
    pub(crate) fn encode(&self, values: &Map<String, Value>) -> Result<Vec<u8>, LayoutError> {
        let mut frame = vec![0; self.len()];
        for field in &self.fields {
            let value = values
                .get(&field.name)
                .ok_or_else(|| LayoutError::MissingValue {
                    field: field.name.clone(),
                })?;
            field.write(&mut frame, value)?;
        }
        Ok(frame)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use serde_json::json;

    use super::*;

    fn field(name: &str, offset: usize, ty: BinaryType) -> BinaryField {
        BinaryField {
            name: name.to_owned(),
            offset,
            ty,
            order: None,
            scale: 1.0,
            offset_value: 0.0,
            bits: None,
        }
    }

    fn layout(fields: &[BinaryField]) -> BinaryLayout {
        BinaryLayout::new("layout.fields", ByteOrder::Big, None, fields, 64).unwrap()
    }

    #[test]
    fn scaled_big_endian_u16() {
        let temperature = BinaryField {
            scale: 0.1,
            offset_value: -0.0,
            ..field("temperature", 0, BinaryType::U16)
        };
        let layout = layout(&[temperature]);
        let values = layout.decode(&[0x00, 0xEB]).unwrap();
        assert_eq!(values["temperature"], json!(23.5));
        assert_eq!(layout.encode(&values).unwrap(), vec![0x00, 0xEB]);
    }

    #[test]
    fn scaled_values_are_rounded_to_the_scale_decimals() {
        let f = BinaryField {
            scale: 0.01,
            ..field("t", 0, BinaryType::I16)
        };
        let layout = layout(&[f]);
        // 2345 × 0.01 in f64 is 23.450000000000003.
        let values = layout.decode(&2345i16.to_be_bytes()).unwrap();
        assert_eq!(values["t"], json!(23.45));
        let values = layout.decode(&(-1234i16).to_be_bytes()).unwrap();
        assert_eq!(values["t"], json!(-12.34));
    }

    #[test]
    fn offset_value_and_signed_little_endian() {
        let f = BinaryField {
            order: Some(ByteOrder::Little),
            scale: 0.5,
            offset_value: -40.0,
            ..field("t", 1, BinaryType::I16)
        };
        let layout = layout(&[f]);
        let values = layout.decode(&[0xFF, 0x9C, 0xFF]).unwrap(); // -100 LE at offset 1
        assert_eq!(values["t"], json!(-90.0));
        let mut frame = layout.encode(&values).unwrap();
        assert_eq!(frame, vec![0x00, 0x9C, 0xFF]);
        frame[1] = 0x00;
        frame[2] = 0x80; // i16::MIN
        assert_eq!(layout.decode(&frame).unwrap()["t"], json!(-16424.0));
    }

    #[test]
    fn unscaled_integers_stay_integers_in_every_width() {
        let layout = layout(&[
            field("a", 0, BinaryType::U8),
            field("b", 1, BinaryType::I8),
            field("c", 2, BinaryType::U16),
            field("d", 4, BinaryType::I16),
            field("e", 6, BinaryType::U32),
            field("f", 10, BinaryType::I32),
        ]);
        let frame = [
            0xFF, 0xFF, 0xFF, 0xFE, 0x80, 0x00, 0xFF, 0xFF, 0xFF, 0xFF, 0x80, 0x00, 0x00, 0x00,
        ];
        let values = layout.decode(&frame).unwrap();
        assert_eq!(
            Value::Object(values.clone()),
            json!({"a": 255, "b": -1, "c": 65534, "d": -32768, "e": 4294967295u32, "f": -2147483648i64})
        );
        assert_eq!(layout.encode(&values).unwrap(), frame.to_vec());
    }

    #[test]
    fn floats_in_both_orders() {
        let layout = layout(&[
            field("x", 0, BinaryType::F32),
            BinaryField {
                order: Some(ByteOrder::Little),
                ..field("y", 4, BinaryType::F64)
            },
        ]);
        let mut frame = 21.37f32.to_be_bytes().to_vec();
        frame.extend_from_slice(&(-0.125f64).to_le_bytes());
        let values = layout.decode(&frame).unwrap();
        assert_eq!(values["x"], json!(21.37));
        assert_eq!(values["y"], json!(-0.125));
        assert_eq!(layout.encode(&values).unwrap(), frame);
        let nan = f32::NAN.to_be_bytes();
        let mut frame = nan.to_vec();
        frame.extend_from_slice(&[0; 8]);
        assert_eq!(layout.decode(&frame).unwrap()["x"], Value::Null);
    }

    #[test]
    fn bit_fields_share_an_integer() {
        let layout = layout(&[
            BinaryField {
                bits: Some("0..=6".to_owned()),
                ..field("battery", 0, BinaryType::U8)
            },
            BinaryField {
                bits: Some("7".to_owned()),
                ..field("charging", 0, BinaryType::U8)
            },
            BinaryField {
                bits: Some("4..8".to_owned()),
                ..field("mode", 1, BinaryType::I8)
            },
            BinaryField {
                bits: Some("0..4".to_owned()),
                ..field("level", 1, BinaryType::U8)
            },
        ]);
        let values = layout.decode(&[0b1101_0000, 0b1110_0101]).unwrap();
        assert_eq!(values["battery"], json!(80));
        assert_eq!(values["charging"], json!(1));
        assert_eq!(values["mode"], json!(-2)); // 0b1110 sign-extended
        assert_eq!(values["level"], json!(5));
        assert_eq!(
            layout.encode(&values).unwrap(),
            vec![0b1101_0000, 0b1110_0101]
        );
        let mut values = values;
        values.insert("charging".to_owned(), json!(false));
        values.insert("battery".to_owned(), json!(127));
        assert_eq!(
            layout.encode(&values).unwrap(),
            vec![0b0111_1111, 0b1110_0101]
        );
        values.insert("battery".to_owned(), json!(128));
        assert!(matches!(
            layout.encode(&values),
            Err(LayoutError::OutOfRange { ref field, .. }) if field == "battery"
        ));
    }

    #[test]
    fn encode_rounds_and_checks_the_range() {
        let f = BinaryField {
            scale: 0.1,
            offset_value: -40.0,
            ..field("t", 0, BinaryType::U8)
        };
        let layout = layout(&[f]);
        let mut values = Map::new();
        values.insert("t".to_owned(), json!(-12.34)); // raw 276.6 → 277 does not fit a u8
        let err = layout.encode(&values).unwrap_err();
        assert!(
            matches!(err, LayoutError::OutOfRange { ref field, value, min, max }
                if field == "t" && value == -12.34 && min == -40.0 && max == -14.5),
            "{err:?}"
        );
        values.insert("t".to_owned(), json!(-20.04)); // raw 199.6 → 200
        assert_eq!(layout.encode(&values).unwrap(), vec![200]);
        values.insert("t".to_owned(), json!("warm"));
        assert!(matches!(
            layout.encode(&values),
            Err(LayoutError::NotANumber { .. })
        ));
        values.clear();
        assert!(matches!(
            layout.encode(&values),
            Err(LayoutError::MissingValue { .. })
        ));
    }

    #[test]
    fn short_long_and_empty_frames() {
        let layout = layout(&[
            field("a", 0, BinaryType::U8),
            field("b", 2, BinaryType::U16),
        ]);
        assert!(matches!(
            layout.decode(&[1, 2, 3]),
            Err(LayoutError::Truncated { len: 3, needed: 4 })
        ));
        assert!(matches!(
            layout.decode(&[]),
            Err(LayoutError::Truncated { len: 0, needed: 4 })
        ));
        assert!(layout.decode(&[1, 2, 3, 4, 5]).is_ok());
        let exact = BinaryLayout::new(
            "layout.fields",
            ByteOrder::Big,
            Some(4),
            &[field("a", 0, BinaryType::U8)],
            64,
        )
        .unwrap();
        assert!(matches!(
            exact.decode(&[1, 2, 3, 4, 5]),
            Err(LayoutError::WrongLength {
                len: 5,
                expected: 4
            })
        ));
    }

    #[test]
    fn sequence_numbers_wrap_to_the_field() {
        let layout = layout(&[field("seq", 0, BinaryType::U8)]);
        let mut frame = vec![0];
        let written = layout.fields()[0].write_wrapped(&mut frame, 300).unwrap();
        assert_eq!((written, frame[0]), (44, 44));
    }

    fn config_error(fields: &[BinaryField], length: Option<usize>) -> (String, ConfigProblem) {
        match BinaryLayout::new("layout.fields", ByteOrder::Big, length, fields, 16) {
            Err(FrameConfigError::Invalid { key, problem }) => (key, problem),
            other => panic!("expected a config error, got {other:?}"),
        }
    }

    #[test]
    fn config_errors_name_the_key() {
        let zero = BinaryField {
            scale: 0.0,
            ..field("t", 0, BinaryType::U8)
        };
        assert_eq!(
            config_error(&[zero], None),
            (
                "layout.fields[0].scale".to_owned(),
                ConfigProblem::BadScale(0.0)
            )
        );
        let wide = BinaryField {
            bits: Some("4..=8".to_owned()),
            ..field("t", 0, BinaryType::U8)
        };
        assert_eq!(
            config_error(&[wide], None),
            (
                "layout.fields[0].bits".to_owned(),
                ConfigProblem::BitsOutsideType {
                    lo: 4,
                    hi: 9,
                    type_bits: 8
                }
            )
        );
        let junk = BinaryField {
            bits: Some("x..3".to_owned()),
            ..field("t", 0, BinaryType::U8)
        };
        assert_eq!(
            config_error(&[junk], None).1,
            ConfigProblem::BitsSyntax("x..3".to_owned())
        );
        let float_bits = BinaryField {
            bits: Some("1".to_owned()),
            ..field("t", 0, BinaryType::F32)
        };
        assert_eq!(
            config_error(&[float_bits], None).1,
            ConfigProblem::BitsOnFloat
        );
        assert_eq!(
            config_error(
                &[
                    field("a", 0, BinaryType::U16),
                    field("b", 1, BinaryType::U8)
                ],
                None
            ),
            (
                "layout.fields[1].offset".to_owned(),
                ConfigProblem::FieldsOverlap("a".to_owned())
            )
        );
        let a = BinaryField {
            bits: Some("0..4".to_owned()),
            ..field("a", 0, BinaryType::U8)
        };
        let b = BinaryField {
            bits: Some("3..5".to_owned()),
            ..field("b", 0, BinaryType::U8)
        };
        assert_eq!(
            config_error(&[a, b], None).1,
            ConfigProblem::FieldsOverlap("a".to_owned())
        );
        assert_eq!(
            config_error(&[field("a", 3, BinaryType::U16)], Some(4)),
            (
                "layout.fields[0].offset".to_owned(),
                ConfigProblem::FieldPastEnd { end: 5, length: 4 }
            )
        );
        assert_eq!(
            config_error(&[field("a", 15, BinaryType::U32)], None).1,
            ConfigProblem::FieldPastEnd {
                end: 19,
                length: 16
            }
        );
        assert_eq!(
            config_error(
                &[field("a", 0, BinaryType::U8), field("a", 1, BinaryType::U8)],
                None
            )
            .1,
            ConfigProblem::DuplicateName("a".to_owned())
        );
        assert_eq!(
            config_error(&[field("a", 0, BinaryType::U8)], Some(17)),
            (
                "layout.length".to_owned(),
                ConfigProblem::FieldPastEnd {
                    end: 17,
                    length: 16
                }
            )
        );
    }
}
