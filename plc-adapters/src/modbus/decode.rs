//! Register and bit decoding: from the words a read returned to a tag's [`Reading`].
//!
//! # Design constraints
//! - Pure and total: no I/O, no allocation, no panics on any input (fuzzed by
//!   `fuzz/fuzz_targets/decode.rs`). Text is written into a caller-owned buffer.
//! - Byte order semantics are those of [`ByteOrder`]: the wire registers are first put back in
//!   big-endian order (`A B C D …`), then read as the configured type.

use edgegw_ringbuf::Value;

use crate::tag::{ByteOrder, DataType, Reading, Scaling};

/// Why registers could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Fewer registers than the type needs.
    #[error("{data_type} needs {need} registers, got {got}")]
    TooShort {
        /// Configured type.
        data_type: DataType,
        /// Registers needed.
        need: usize,
        /// Registers present.
        got: usize,
    },
    /// A string tag's bytes are not UTF-8.
    #[error("string is not valid UTF-8")]
    InvalidUtf8,
    /// The bit index is not within a 16-bit register.
    #[error("bit {0} is outside a 16-bit register")]
    BitOutOfRange(u8),
    /// The text buffer is smaller than the string.
    #[error("text buffer holds {cap} bytes, string needs {need}")]
    TextBufferTooSmall {
        /// Bytes needed.
        need: usize,
        /// Bytes available.
        cap: usize,
    },
}

/// How to turn registers into a value: the decoding-relevant part of a tag.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RegisterCodec {
    /// Data type.
    pub data_type: DataType,
    /// Word/byte order.
    pub order: ByteOrder,
    /// For [`DataType::Bool`]: the bit of the register (`None` = register non-zero).
    pub bit: Option<u8>,
    /// Conversion to engineering units.
    pub scaling: Option<Scaling>,
}

/// Puts the registers of one value back into big-endian byte order (`A B C D …`).
///
/// Writes `2 * words.len()` bytes into `out`; returns how many were written (fewer if `out` is
/// shorter).
pub fn to_big_endian(words: &[u16], order: ByteOrder, out: &mut [u8]) -> usize {
    let n = words.len().min(out.len() / 2);
    for i in 0..n {
        let w = if order.swaps_words() {
            words[words.len() - 1 - i]
        } else {
            words[i]
        };
        let [hi, lo] = w.to_be_bytes();
        let (a, b) = if order.swaps_bytes() {
            (lo, hi)
        } else {
            (hi, lo)
        };
        out[2 * i] = a;
        out[2 * i + 1] = b;
    }
    2 * n
}

/// The inverse of [`to_big_endian`]: lays big-endian bytes `A B C D …` out as registers in
/// `order`. Writes `be.len() / 2` registers (fewer if `out` is shorter); returns how many.
pub fn from_big_endian(be: &[u8], order: ByteOrder, out: &mut [u16]) -> usize {
    let n = (be.len() / 2).min(out.len());
    for i in 0..n {
        let (a, b) = (be[2 * i], be[2 * i + 1]);
        let w = if order.swaps_bytes() {
            u16::from_be_bytes([b, a])
        } else {
            u16::from_be_bytes([a, b])
        };
        let slot = if order.swaps_words() { n - 1 - i } else { i };
        out[slot] = w;
    }
    n
}

/// Encodes a number as `data_type` in `order` into `out` (for simulators and tests): the
/// value is converted with `as` (saturating for floats to integers). Returns the registers
/// written; 0 for `Bool` and `String`, which are not numbers.
pub fn encode_number(value: f64, data_type: DataType, order: ByteOrder, out: &mut [u16]) -> usize {
    let mut be = [0u8; 8];
    let len = match data_type {
        DataType::I16 => {
            be[..2].copy_from_slice(&(value as i16).to_be_bytes());
            2
        }
        DataType::U16 => {
            be[..2].copy_from_slice(&(value as u16).to_be_bytes());
            2
        }
        DataType::I32 => {
            be[..4].copy_from_slice(&(value as i32).to_be_bytes());
            4
        }
        DataType::U32 => {
            be[..4].copy_from_slice(&(value as u32).to_be_bytes());
            4
        }
        DataType::F32 => {
            be[..4].copy_from_slice(&(value as f32).to_be_bytes());
            4
        }
        DataType::I64 => {
            be = (value as i64).to_be_bytes();
            8
        }
        DataType::U64 => {
            be = (value as u64).to_be_bytes();
            8
        }
        DataType::F64 => {
            be = value.to_be_bytes();
            8
        }
        DataType::Bool | DataType::String { .. } => return 0,
    };
    from_big_endian(&be[..len], order, out)
}

/// Decodes the registers of one tag. `words` starts at the tag's first register and may be
/// longer than the type needs. Text goes into `text_buf` (NUL-trimmed); numbers are scaled if
/// the codec says so.
pub fn decode_registers<'b>(
    words: &[u16],
    codec: &RegisterCodec,
    text_buf: &'b mut [u8],
) -> Result<Reading<'b>, DecodeError> {
    let need = usize::from(codec.data_type.registers());
    if words.len() < need {
        return Err(DecodeError::TooShort {
            data_type: codec.data_type,
            need,
            got: words.len(),
        });
    }
    let words = &words[..need];
    if let DataType::String { .. } = codec.data_type {
        return decode_text(words, codec.order, text_buf);
    }
    let mut be = [0u8; 8];
    to_big_endian(words, codec.order, &mut be);
    let raw = match codec.data_type {
        DataType::Bool => {
            let w = u16::from_be_bytes([be[0], be[1]]);
            let on = match codec.bit {
                Some(bit) if bit >= 16 => return Err(DecodeError::BitOutOfRange(bit)),
                Some(bit) => (w >> bit) & 1 == 1,
                None => w != 0,
            };
            return Ok(Reading::Scalar(Value::Bool(on)));
        }
        DataType::I16 => Value::I64(i16::from_be_bytes([be[0], be[1]]).into()),
        DataType::U16 => Value::U64(u16::from_be_bytes([be[0], be[1]]).into()),
        DataType::I32 => Value::I64(i32::from_be_bytes([be[0], be[1], be[2], be[3]]).into()),
        DataType::U32 => Value::U64(u32::from_be_bytes([be[0], be[1], be[2], be[3]]).into()),
        DataType::F32 => Value::F64(f32::from_be_bytes([be[0], be[1], be[2], be[3]]).into()),
        DataType::I64 => Value::I64(i64::from_be_bytes(be)),
        DataType::U64 => Value::U64(u64::from_be_bytes(be)),
        DataType::F64 => Value::F64(f64::from_be_bytes(be)),
        DataType::String { .. } => unreachable!("handled above"),
    };
    Ok(Reading::Scalar(scale(raw, codec.scaling)))
}

/// Applies scaling: any number becomes `f64` in engineering units.
pub fn scale(raw: Value, scaling: Option<Scaling>) -> Value {
    let Some(s) = scaling else { return raw };
    match raw {
        Value::I64(v) => Value::F64(s.apply(v as f64)),
        Value::U64(v) => Value::F64(s.apply(v as f64)),
        Value::F64(v) => Value::F64(s.apply(v)),
        other => other,
    }
}

fn decode_text<'b>(
    words: &[u16],
    order: ByteOrder,
    buf: &'b mut [u8],
) -> Result<Reading<'b>, DecodeError> {
    let need = words.len() * 2;
    if buf.len() < need {
        return Err(DecodeError::TextBufferTooSmall {
            need,
            cap: buf.len(),
        });
    }
    // Text is a byte sequence: only the byte swap inside registers applies, never word reversal.
    let order = if order.swaps_bytes() {
        ByteOrder::BADC
    } else {
        ByteOrder::ABCD
    };
    let n = to_big_endian(words, order, buf);
    let mut len = n;
    while len > 0 && buf[len - 1] == 0 {
        len -= 1;
    }
    let text = &buf[..len];
    if std::str::from_utf8(text).is_err() {
        return Err(DecodeError::InvalidUtf8);
    }
    Ok(Reading::Text(text))
}

/// Decodes one coil or discrete input of a bit read.
pub fn decode_bit(bits: &[bool], index: usize) -> Result<Reading<'static>, DecodeError> {
    match bits.get(index) {
        Some(&b) => Ok(Reading::Scalar(Value::Bool(b))),
        None => Err(DecodeError::TooShort {
            data_type: DataType::Bool,
            need: index + 1,
            got: bits.len(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn codec(data_type: DataType, order: ByteOrder) -> RegisterCodec {
        RegisterCodec {
            data_type,
            order,
            bit: None,
            scaling: None,
        }
    }

    fn dec(words: &[u16], c: RegisterCodec) -> Value {
        let mut buf = [0u8; 8];
        match decode_registers(words, &c, &mut buf).unwrap() {
            Reading::Scalar(v) => v,
            Reading::Text(_) => panic!("text"),
        }
    }

    #[test]
    fn u32_in_all_four_orders_decodes_to_the_same_value() {
        let cases = [
            (ByteOrder::ABCD, [0xAABB, 0xCCDD]),
            (ByteOrder::BADC, [0xBBAA, 0xDDCC]),
            (ByteOrder::CDAB, [0xCCDD, 0xAABB]),
            (ByteOrder::DCBA, [0xDDCC, 0xBBAA]),
        ];
        for (order, words) in cases {
            assert_eq!(
                dec(&words, codec(DataType::U32, order)),
                Value::U64(0xAABB_CCDD),
                "{order}"
            );
        }
    }

    #[test]
    fn u64_word_swap_reverses_all_four_registers() {
        let v = 0x0102_0304_0506_0708u64;
        let words = [0x0708, 0x0506, 0x0304, 0x0102];
        assert_eq!(
            dec(&words, codec(DataType::U64, ByteOrder::CDAB)),
            Value::U64(v)
        );
        let words = [0x0807, 0x0605, 0x0403, 0x0201];
        assert_eq!(
            dec(&words, codec(DataType::U64, ByteOrder::DCBA)),
            Value::U64(v)
        );
    }

    #[test]
    fn signed_and_float_types_decode() {
        assert_eq!(
            dec(&[0xFFFE], codec(DataType::I16, ByteOrder::ABCD)),
            Value::I64(-2)
        );
        assert_eq!(
            dec(&[0xFEFF], codec(DataType::I16, ByteOrder::BADC)),
            Value::I64(-2)
        );
        let [a, b] = [(1.5f32.to_bits() >> 16) as u16, 1.5f32.to_bits() as u16];
        assert_eq!(
            dec(&[a, b], codec(DataType::F32, ByteOrder::ABCD)),
            Value::F64(1.5)
        );
        let bits = (-2.25f64).to_bits();
        let w = [
            (bits >> 48) as u16,
            (bits >> 32) as u16,
            (bits >> 16) as u16,
            bits as u16,
        ];
        assert_eq!(
            dec(&w, codec(DataType::F64, ByteOrder::ABCD)),
            Value::F64(-2.25)
        );
        assert_eq!(
            dec(&[0xFFFF, 0xFFFF], codec(DataType::I32, ByteOrder::ABCD)),
            Value::I64(-1)
        );
    }

    #[test]
    fn bit_of_register_reads_that_bit() {
        let c = RegisterCodec {
            bit: Some(3),
            ..codec(DataType::Bool, ByteOrder::ABCD)
        };
        assert_eq!(dec(&[0b1000], c), Value::Bool(true));
        assert_eq!(dec(&[0b0111], c), Value::Bool(false));
        let c = RegisterCodec { bit: Some(16), ..c };
        assert_eq!(
            decode_registers(&[0], &c, &mut []),
            Err(DecodeError::BitOutOfRange(16))
        );
    }

    #[test]
    fn scaling_turns_raw_counts_into_engineering_units() {
        let c = RegisterCodec {
            scaling: Some(Scaling {
                scale: 0.1,
                offset: -40.0,
            }),
            ..codec(DataType::U16, ByteOrder::ABCD)
        };
        let Value::F64(v) = dec(&[650], c) else {
            panic!()
        };
        assert!((v - 25.0).abs() < 1e-9);
    }

    #[test]
    fn string_is_nul_trimmed_and_honours_byte_swap() {
        let mut buf = [0u8; 8];
        let c = codec(DataType::String { registers: 4 }, ByteOrder::ABCD);
        let r = decode_registers(&[0x4142, 0x4300, 0, 0], &c, &mut buf).unwrap();
        assert_eq!(r, Reading::Text(b"ABC"));
        let c = codec(DataType::String { registers: 2 }, ByteOrder::BADC);
        let r = decode_registers(&[0x4241, 0x0043], &c, &mut buf).unwrap();
        assert_eq!(r, Reading::Text(b"ABC"));
    }

    #[test]
    fn invalid_utf8_and_short_input_are_errors_not_panics() {
        let mut buf = [0u8; 4];
        let c = codec(DataType::String { registers: 1 }, ByteOrder::ABCD);
        assert_eq!(
            decode_registers(&[0xFF41], &c, &mut buf),
            Err(DecodeError::InvalidUtf8)
        );
        assert!(matches!(
            decode_registers(&[1], &codec(DataType::F64, ByteOrder::ABCD), &mut buf),
            Err(DecodeError::TooShort {
                need: 4,
                got: 1,
                ..
            })
        ));
        let c = codec(DataType::String { registers: 4 }, ByteOrder::ABCD);
        assert!(matches!(
            decode_registers(&[0; 4], &c, &mut buf),
            Err(DecodeError::TextBufferTooSmall { .. })
        ));
    }

    #[test]
    fn encode_then_decode_gives_the_number_back_in_every_order() {
        for order in [
            ByteOrder::ABCD,
            ByteOrder::BADC,
            ByteOrder::CDAB,
            ByteOrder::DCBA,
        ] {
            for (dt, v) in [
                (DataType::F32, -1.25),
                (DataType::I32, -7.0),
                (DataType::U16, 65535.0),
                (DataType::F64, 1e300),
            ] {
                let mut w = [0u16; 4];
                let n = encode_number(v, dt, order, &mut w);
                assert_eq!(n, usize::from(dt.registers()));
                let back = match dec(&w[..n], codec(dt, order)) {
                    Value::F64(x) => x,
                    Value::I64(x) => x as f64,
                    Value::U64(x) => x as f64,
                    other => panic!("{other:?}"),
                };
                assert_eq!(back, v, "{dt} {order}");
            }
        }
    }

    proptest! {
        #[test]
        fn every_order_round_trips_u64(v: u64, order in prop_oneof![
            Just(ByteOrder::ABCD), Just(ByteOrder::BADC), Just(ByteOrder::CDAB), Just(ByteOrder::DCBA)
        ]) {
            // Encode: the inverse of to_big_endian.
            let be = v.to_be_bytes();
            let mut words = [0u16; 4];
            for i in 0..4 {
                let (a, b) = (be[2 * i], be[2 * i + 1]);
                let w = if order.swaps_bytes() { u16::from_be_bytes([b, a]) } else { u16::from_be_bytes([a, b]) };
                let slot = if order.swaps_words() { 3 - i } else { i };
                words[slot] = w;
            }
            prop_assert_eq!(dec(&words, codec(DataType::U64, order)), Value::U64(v));
        }
    }
}
