//! Request and response PDUs (function code and data, without the TCP or RTU envelope), parsed
//! and written here rather than by tokio-modbus's server codecs, so that a malformed request gets
//! the exception a device sends instead of a dropped connection.

use std::borrow::Cow;

use tokio_modbus::{ExceptionCode, Request, Response};

use super::device::{MAX_WRITE_BITS, MAX_WRITE_REGISTERS};

/// Why a request PDU is not a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadRequest {
    /// Answer with this exception for function code `function`.
    Exception {
        /// The request's function code.
        function: u8,
        /// What to answer.
        code: ExceptionCode,
    },
    /// Not answerable at all (empty, or a function code with the exception bit set): ignored.
    Ignore,
}

fn be(bytes: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*bytes.get(at)?, *bytes.get(at + 1)?]))
}

/// Parses a request PDU. Function codes this simulator does not implement parse as
/// [`Request::Custom`] (answered with illegal function); a known function with a wrong length,
/// byte count or coil value gives illegal data value.
pub fn decode_request(pdu: &[u8]) -> Result<Request<'static>, BadRequest> {
    let Some((&function, data)) = pdu.split_first() else {
        return Err(BadRequest::Ignore);
    };
    if function == 0 || function >= 0x80 {
        return Err(BadRequest::Ignore);
    }
    let bad = BadRequest::Exception {
        function,
        code: ExceptionCode::IllegalDataValue,
    };
    let fixed = |len: usize| if data.len() == len { Ok(()) } else { Err(bad) };
    let word = |at: usize| be(data, at).ok_or(bad);
    match function {
        0x01..=0x06 => {
            fixed(4)?;
            let (address, value) = (word(0)?, word(2)?);
            Ok(match function {
                0x01 => Request::ReadCoils(address, value),
                0x02 => Request::ReadDiscreteInputs(address, value),
                0x03 => Request::ReadHoldingRegisters(address, value),
                0x04 => Request::ReadInputRegisters(address, value),
                0x05 => Request::WriteSingleCoil(
                    address,
                    match value {
                        0xFF00 => true,
                        0x0000 => false,
                        _ => return Err(bad),
                    },
                ),
                _ => Request::WriteSingleRegister(address, value),
            })
        }
        0x0F => {
            let (address, quantity) = (word(0)?, word(2)?);
            let count = usize::from(*data.get(4).ok_or(bad)?);
            let packed = data.get(5..).ok_or(bad)?;
            if !(1..=MAX_WRITE_BITS).contains(&quantity)
                || count != usize::from(quantity).div_ceil(8)
                || packed.len() != count
            {
                return Err(bad);
            }
            let coils = (0..usize::from(quantity))
                .map(|i| packed.get(i / 8).is_some_and(|b| (b >> (i % 8)) & 1 == 1))
                .collect::<Vec<bool>>();
            Ok(Request::WriteMultipleCoils(address, Cow::Owned(coils)))
        }
        0x10 => {
            let (address, quantity) = (word(0)?, word(2)?);
            let count = usize::from(*data.get(4).ok_or(bad)?);
            let body = data.get(5..).ok_or(bad)?;
            if !(1..=MAX_WRITE_REGISTERS).contains(&quantity)
                || count != usize::from(quantity) * 2
                || body.len() != count
            {
                return Err(bad);
            }
            let words = body
                .chunks_exact(2)
                .map(|w| u16::from_be_bytes([w[0], w[1]]))
                .collect::<Vec<u16>>();
            Ok(Request::WriteMultipleRegisters(address, Cow::Owned(words)))
        }
        0x16 => {
            fixed(6)?;
            Ok(Request::MaskWriteRegister(word(0)?, word(2)?, word(4)?))
        }
        other => Ok(Request::Custom(other, Cow::Owned(data.to_vec()))),
    }
}

/// The function code of a request.
pub fn function_code(request: &Request<'_>) -> u8 {
    request.function_code().value()
}

/// The address and quantity a request names, for the request log.
pub fn span(request: &Request<'_>) -> Option<(u16, u16)> {
    let len = |n: usize| u16::try_from(n).unwrap_or(u16::MAX);
    match request {
        Request::ReadCoils(a, q)
        | Request::ReadDiscreteInputs(a, q)
        | Request::ReadHoldingRegisters(a, q)
        | Request::ReadInputRegisters(a, q) => Some((*a, *q)),
        Request::WriteSingleCoil(a, _)
        | Request::WriteSingleRegister(a, _)
        | Request::MaskWriteRegister(a, _, _) => Some((*a, 1)),
        Request::WriteMultipleCoils(a, c) => Some((*a, len(c.len()))),
        Request::WriteMultipleRegisters(a, w) => Some((*a, len(w.len()))),
        _ => None,
    }
}

fn pack_bits(out: &mut Vec<u8>, bits: &[bool]) {
    let count = bits.len().div_ceil(8);
    out.push(u8::try_from(count).unwrap_or(u8::MAX));
    for chunk in bits.chunks(8) {
        let mut byte = 0u8;
        for (i, bit) in chunk.iter().enumerate() {
            if *bit {
                byte |= 1 << i;
            }
        }
        out.push(byte);
    }
}

fn push_words(out: &mut Vec<u8>, words: &[u16]) {
    out.push(u8::try_from(words.len() * 2).unwrap_or(u8::MAX));
    for w in words {
        out.extend_from_slice(&w.to_be_bytes());
    }
}

/// Writes a response PDU. Responses this simulator never produces (device identification, raw
/// custom ones) come out as their function code followed by their raw data where they have it.
pub fn encode_response(response: &Response) -> Vec<u8> {
    let mut out = vec![response.function_code().value()];
    match response {
        Response::ReadCoils(bits) | Response::ReadDiscreteInputs(bits) => pack_bits(&mut out, bits),
        Response::ReadHoldingRegisters(words)
        | Response::ReadInputRegisters(words)
        | Response::ReadWriteMultipleRegisters(words) => push_words(&mut out, words),
        Response::WriteSingleCoil(a, on) => {
            out.extend_from_slice(&a.to_be_bytes());
            out.extend_from_slice(&(if *on { 0xFF00u16 } else { 0 }).to_be_bytes());
        }
        Response::WriteSingleRegister(a, v)
        | Response::WriteMultipleCoils(a, v)
        | Response::WriteMultipleRegisters(a, v) => {
            out.extend_from_slice(&a.to_be_bytes());
            out.extend_from_slice(&v.to_be_bytes());
        }
        Response::MaskWriteRegister(a, and_mask, or_mask) => {
            for w in [a, and_mask, or_mask] {
                out.extend_from_slice(&w.to_be_bytes());
            }
        }
        Response::Custom(_, data) => out.extend_from_slice(data),
        Response::ReportServerId(..) | Response::ReadDeviceIdentification(..) => {}
    }
    out
}

/// Writes an exception response PDU for `function`.
pub fn encode_exception(function: u8, code: ExceptionCode) -> Vec<u8> {
    vec![function | 0x80, u8::from(code)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_the_supported_functions() {
        assert_eq!(
            decode_request(&[0x03, 0x00, 0x64, 0x00, 0x02]),
            Ok(Request::ReadHoldingRegisters(100, 2))
        );
        assert_eq!(
            decode_request(&[0x05, 0x00, 0x0A, 0xFF, 0x00]),
            Ok(Request::WriteSingleCoil(10, true))
        );
        assert_eq!(
            decode_request(&[0x0F, 0x00, 0x00, 0x00, 0x0A, 0x02, 0b1000_0101, 0b10]),
            Ok(Request::WriteMultipleCoils(
                0,
                Cow::Owned(vec![
                    true, false, true, false, false, false, false, true, false, true
                ])
            ))
        );
        assert_eq!(
            decode_request(&[0x10, 0x00, 0x0A, 0x00, 0x02, 0x04, 0x01, 0x02, 0x03, 0x04]),
            Ok(Request::WriteMultipleRegisters(
                10,
                Cow::Owned(vec![0x0102, 0x0304])
            ))
        );
        assert_eq!(
            decode_request(&[0x16, 0x00, 0x32, 0xFF, 0xF7, 0x00, 0x08]),
            Ok(Request::MaskWriteRegister(50, 0xFFF7, 0x0008))
        );
    }

    #[test]
    fn malformed_requests_are_illegal_data_values() {
        let bad = |function| {
            Err(BadRequest::Exception {
                function,
                code: ExceptionCode::IllegalDataValue,
            })
        };
        // Coil value neither 0xFF00 nor 0x0000.
        assert_eq!(decode_request(&[0x05, 0, 10, 0x12, 0x34]), bad(0x05));
        // Byte count disagreeing with the quantity.
        assert_eq!(decode_request(&[0x10, 0, 10, 0, 2, 2, 0, 1]), bad(0x10));
        // Quantity 0 and quantity over the limit.
        assert_eq!(decode_request(&[0x10, 0, 10, 0, 0, 0]), bad(0x10));
        assert_eq!(decode_request(&[0x0F, 0, 0, 0x07, 0xB1, 0xF7]), bad(0x0F));
        // Truncated.
        assert_eq!(decode_request(&[0x03, 0, 10, 0]), bad(0x03));
        // Unknown functions parse as custom ones (answered with illegal function).
        assert_eq!(
            decode_request(&[0x2B, 0x0E, 0x01, 0x00]),
            Ok(Request::Custom(0x2B, Cow::Owned(vec![0x0E, 0x01, 0x00])))
        );
        assert_eq!(decode_request(&[]), Err(BadRequest::Ignore));
        assert_eq!(decode_request(&[0x83, 0x02]), Err(BadRequest::Ignore));
    }

    #[test]
    fn encodes_responses_and_exceptions() {
        assert_eq!(
            encode_response(&Response::ReadCoils(vec![true, false, true])),
            [0x01, 0x01, 0b101]
        );
        assert_eq!(
            encode_response(&Response::ReadInputRegisters(vec![0x4366, 0x8000])),
            [0x04, 0x04, 0x43, 0x66, 0x80, 0x00]
        );
        assert_eq!(
            encode_response(&Response::WriteSingleCoil(10, true)),
            [0x05, 0x00, 0x0A, 0xFF, 0x00]
        );
        assert_eq!(
            encode_response(&Response::WriteMultipleRegisters(10, 2)),
            [0x10, 0x00, 0x0A, 0x00, 0x02]
        );
        assert_eq!(
            encode_exception(0x03, ExceptionCode::IllegalDataAddress),
            [0x83, 0x02]
        );
    }
}
