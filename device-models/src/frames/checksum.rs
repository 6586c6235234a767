//! Frame checksums: CRC-16/MODBUS, CRC-32 (IEEE) and XOR-8, and the trailer that carries one.
//!
//! The CRCs are table driven with tables built at compile time; each is a dozen lines, which is less
//! than the dependency would cost.

use super::config::{ByteOrder, ChecksumConfig, ChecksumEncoding, ChecksumKind};
use super::errors::FrameError;

const fn crc16_modbus_table() -> [u16; 256] {
    let mut table = [0u16; 256];
    let mut i = 0;
    while i < 256 {
        let mut crc = i as u16;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xA001
            } else {
                crc >> 1
            };
            bit += 1;
        }
        table[i] = crc;
        i += 1;
    }
    table
}

const fn crc32_table() -> [u32; 256] {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut crc = i as u32;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
            bit += 1;
        }
        table[i] = crc;
        i += 1;
    }
    table
}

static CRC16_MODBUS: [u16; 256] = crc16_modbus_table();
static CRC32: [u32; 256] = crc32_table();

/// CRC-16/MODBUS (poly 0x8005 reflected, init 0xFFFF, no final xor): `"123456789"` → 0x4B37.
pub fn crc16_modbus(data: &[u8]) -> u16 {
    data.iter().fold(0xFFFF_u16, |crc, &byte| {
        // The index is masked to 0..=255, within the 256-entry table.
        (crc >> 8) ^ CRC16_MODBUS[usize::from((crc as u8) ^ byte)]
    })
}

/// CRC-32 as in IEEE 802.3 and zlib (poly 0x04C11DB7 reflected, init and final xor 0xFFFFFFFF):
/// `"123456789"` → 0xCBF43926.
pub fn crc32_ieee(data: &[u8]) -> u32 {
    !data.iter().fold(0xFFFF_FFFF_u32, |crc, &byte| {
        // The index is masked to 0..=255, within the 256-entry table.
        (crc >> 8) ^ CRC32[usize::from((crc as u8) ^ byte)]
    })
}

/// XOR of every byte (NMEA and many serial protocols): `"123456789"` → 0x31.
pub fn xor8(data: &[u8]) -> u8 {
    data.iter().fold(0, |acc, &byte| acc ^ byte)
}

impl ChecksumKind {
    /// Bytes the checksum takes in binary form.
    pub fn width(self) -> usize {
        match self {
            Self::Crc16Modbus => 2,
            Self::Crc32 => 4,
            Self::Xor8 => 1,
        }
    }

    /// Computes the checksum of `data`, widened to `u32`.
    pub fn compute(self, data: &[u8]) -> u32 {
        match self {
            Self::Crc16Modbus => u32::from(crc16_modbus(data)),
            Self::Crc32 => crc32_ieee(data),
            Self::Xor8 => u32::from(xor8(data)),
        }
    }

    fn default_order(self) -> ByteOrder {
        match self {
            Self::Crc16Modbus => ByteOrder::Little,
            Self::Crc32 | Self::Xor8 => ByteOrder::Big,
        }
    }
}

/// A compiled checksum trailer: computes, appends and verifies.
#[derive(Debug, Clone)]
pub(crate) struct Checksum {
    kind: ChecksumKind,
    order: ByteOrder,
    hex: bool,
    separator: Vec<u8>,
    skip: usize,
}

impl Checksum {
    pub(crate) fn new(config: &ChecksumConfig) -> Self {
        Self {
            kind: config.kind,
            order: config.order.unwrap_or(config.kind.default_order()),
            hex: config.encoding == ChecksumEncoding::Hex,
            separator: config
                .separator
                .as_deref()
                .unwrap_or_default()
                .as_bytes()
                .to_vec(),
            skip: config.skip,
        }
    }

    /// Bytes the trailer takes after the covered content.
    pub(crate) fn trailer_len(&self) -> usize {
        if self.hex {
            self.separator.len() + 2 * self.kind.width()
        } else {
            self.kind.width()
        }
    }

    /// Whether the trailer is printable text.
    pub(crate) fn is_text(&self) -> bool {
        self.hex
    }

    /// Leading bytes not covered.
    pub(crate) fn skip(&self) -> usize {
        self.skip
    }

    fn covered<'a>(&self, content: &'a [u8]) -> Result<&'a [u8], FrameError> {
        content
            .get(self.skip..)
            .ok_or(FrameError::TooShortForChecksum {
                len: content.len(),
                needed: self.skip + self.trailer_len(),
            })
    }

    /// Appends the trailer for `content` (which must already hold everything the checksum covers).
    pub(crate) fn append(&self, content: &mut Vec<u8>) -> Result<(), FrameError> {
        let value = self.kind.compute(self.covered(content)?);
        let width = self.kind.width();
        if self.hex {
            content.extend_from_slice(&self.separator);
            for i in (0..2 * width).rev() {
                let nibble = (value >> (4 * i)) & 0xF;
                content.push(b"0123456789ABCDEF"[nibble as usize]);
            }
        } else {
            let be = value.to_be_bytes();
            let bytes = be.get(4 - width..).unwrap_or_default();
            match self.order {
                ByteOrder::Big => content.extend_from_slice(bytes),
                ByteOrder::Little => content.extend(bytes.iter().rev()),
            }
        }
        Ok(())
    }

    /// Checks the trailer of `frame` and returns the length of the content before it.
    pub(crate) fn verify(&self, frame: &[u8]) -> Result<usize, FrameError> {
        let trailer = self.trailer_len();
        let too_short = FrameError::TooShortForChecksum {
            len: frame.len(),
            needed: self.skip + trailer,
        };
        let content_len = frame.len().checked_sub(trailer).ok_or(too_short.clone())?;
        let (content, tail) = frame.split_at_checked(content_len).ok_or(too_short)?;
        let received = if self.hex {
            let (separator, digits) = tail
                .split_at_checked(self.separator.len())
                .ok_or(FrameError::BadChecksumText)?;
            if separator != self.separator.as_slice() {
                return Err(FrameError::BadChecksumText);
            }
            parse_hex(digits).ok_or(FrameError::BadChecksumText)?
        } else {
            let fold = |acc: u32, &byte: &u8| (acc << 8) | u32::from(byte);
            match self.order {
                ByteOrder::Big => tail.iter().fold(0, fold),
                ByteOrder::Little => tail.iter().rev().fold(0, fold),
            }
        };
        let computed = self.kind.compute(self.covered(content)?);
        if received == computed {
            Ok(content_len)
        } else {
            Err(FrameError::ChecksumMismatch { received, computed })
        }
    }
}

fn parse_hex(digits: &[u8]) -> Option<u32> {
    digits.iter().try_fold(0u32, |acc, &digit| {
        let nibble = char::from(digit).to_digit(16)?;
        Some((acc << 4) | nibble)
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const CHECK: &[u8] = b"123456789";

    #[test]
    fn standard_check_values() {
        assert_eq!(crc16_modbus(CHECK), 0x4B37);
        assert_eq!(crc32_ieee(CHECK), 0xCBF4_3926);
        assert_eq!(xor8(CHECK), 0x31);
        assert_eq!(crc16_modbus(b""), 0xFFFF);
        assert_eq!(crc32_ieee(b""), 0);
    }

    #[test]
    fn modbus_request_frame() {
        // Read holding registers: slave 1, function 3, address 0, count 10 → CRC C5 CD on the wire.
        let frame = [0x01, 0x03, 0x00, 0x00, 0x00, 0x0A];
        assert_eq!(crc16_modbus(&frame), 0xCDC5);
    }

    fn config(kind: ChecksumKind) -> ChecksumConfig {
        ChecksumConfig {
            kind,
            order: None,
            encoding: ChecksumEncoding::Binary,
            separator: None,
            skip: 0,
        }
    }

    #[test]
    fn binary_trailers_round_trip_in_both_orders() {
        for kind in [
            ChecksumKind::Crc16Modbus,
            ChecksumKind::Crc32,
            ChecksumKind::Xor8,
        ] {
            for order in [ByteOrder::Big, ByteOrder::Little] {
                let checksum = Checksum::new(&ChecksumConfig {
                    order: Some(order),
                    ..config(kind)
                });
                let mut frame = CHECK.to_vec();
                checksum.append(&mut frame).unwrap();
                assert_eq!(frame.len(), CHECK.len() + kind.width());
                assert_eq!(checksum.verify(&frame).unwrap(), CHECK.len());
            }
        }
    }

    #[test]
    fn modbus_default_order_is_little_endian() {
        let checksum = Checksum::new(&config(ChecksumKind::Crc16Modbus));
        let mut frame = CHECK.to_vec();
        checksum.append(&mut frame).unwrap();
        assert_eq!(&frame[9..], &[0x37, 0x4B]);
        let checksum = Checksum::new(&config(ChecksumKind::Crc32));
        let mut frame = CHECK.to_vec();
        checksum.append(&mut frame).unwrap();
        assert_eq!(&frame[9..], &[0xCB, 0xF4, 0x39, 0x26]);
    }

    #[test]
    fn bad_checksums_are_typed_errors() {
        let checksum = Checksum::new(&config(ChecksumKind::Crc16Modbus));
        let mut frame = CHECK.to_vec();
        frame.extend_from_slice(&[0x37, 0x4C]);
        assert_eq!(
            checksum.verify(&frame),
            Err(FrameError::ChecksumMismatch {
                received: 0x4C37,
                computed: 0x4B37
            })
        );
        assert!(matches!(
            checksum.verify(&[0x01]),
            Err(FrameError::TooShortForChecksum { len: 1, .. })
        ));
        // A flipped payload bit is caught by every algorithm.
        for kind in [
            ChecksumKind::Crc16Modbus,
            ChecksumKind::Crc32,
            ChecksumKind::Xor8,
        ] {
            let checksum = Checksum::new(&config(kind));
            let mut frame = CHECK.to_vec();
            checksum.append(&mut frame).unwrap();
            frame[3] ^= 0x10;
            assert!(matches!(
                checksum.verify(&frame),
                Err(FrameError::ChecksumMismatch { .. })
            ));
        }
    }

    #[test]
    fn hex_trailer_with_separator_and_skip() {
        let checksum = Checksum::new(&ChecksumConfig {
            encoding: ChecksumEncoding::Hex,
            separator: Some("*".to_owned()),
            skip: 1,
            ..config(ChecksumKind::Crc16Modbus)
        });
        let mut frame = b"$123456789".to_vec();
        checksum.append(&mut frame).unwrap();
        assert_eq!(frame, b"$123456789*4B37");
        assert_eq!(checksum.verify(&frame).unwrap(), 10);
        assert_eq!(checksum.verify(b"$123456789*4b37").unwrap(), 10);
        assert_eq!(
            checksum.verify(b"$123456789#4B37"),
            Err(FrameError::BadChecksumText)
        );
        assert_eq!(
            checksum.verify(b"$123456789*4G37"),
            Err(FrameError::BadChecksumText)
        );
        assert!(matches!(
            checksum.verify(b"$123456780*4B37"),
            Err(FrameError::ChecksumMismatch { .. })
        ));
        assert!(checksum.verify(b"*4B37").is_err());
        assert!(checksum.verify(b"").is_err());
    }
}
