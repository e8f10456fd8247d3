//! Quality of a reading, and how it is carried in a [`TelemetryRecord`](edgegw_ringbuf::TelemetryRecord).
//!
//! # Format
//! `quality: u16` = `major << 14 | reason`, `detail: u32` = reason-specific detail.
//!
//! | quality | code | detail |
//! |---|---|---|
//! | good | `0x0000` | 0 |
//! | uncertain: overrun (cycle took longer than its interval) | `0x4001` | 0 |
//! | bad: timeout (no answer within the request timeout) | `0x8001` | 0 |
//! | bad: device exception | `0x8002` | Modbus exception code (e.g. 2 = illegal data address) |
//! | bad: disconnected (connect failed, connection lost, serial port error) | `0x8003` | 0 |
//! | bad: decode error (value bytes not valid for the type, e.g. bad UTF-8) | `0x8004` | 0 |
//! | bad: protocol error (answer did not match the request) | `0x8005` | 0 |
//!
//! The major class sits in the two top bits, as in OPC UA status codes, so a consumer that only
//! cares about good/uncertain/bad can test `code >> 14` and ignore reasons it does not know.
//! Record `detail` is also used for string lengths; for strings the quality detail is 0.

use std::fmt;

/// Why a reading is uncertain: the value is real but should be used with care.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum UncertainReason {
    /// The poll cycle that read the value took longer than its interval.
    Overrun,
}

/// Why a reading is bad: there is no usable value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BadReason {
    /// The device did not answer within the request timeout.
    Timeout,
    /// The device answered with a Modbus exception (code as sent by the device).
    DeviceException(u8),
    /// No connection: connect failed, the connection was lost, or the serial port failed.
    Disconnected,
    /// The registers arrived but do not decode as the configured type.
    DecodeError,
    /// The answer did not match the request (wrong transaction, unit or function code).
    Protocol,
}

/// Quality of a reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Quality {
    /// The value is as the device reported it.
    #[default]
    Good,
    /// A value is present but suspect.
    Uncertain(UncertainReason),
    /// No usable value.
    Bad(BadReason),
}

/// Major class bits of a quality code.
pub mod major {
    /// Good.
    pub const GOOD: u16 = 0b00 << 14;
    /// Uncertain.
    pub const UNCERTAIN: u16 = 0b01 << 14;
    /// Bad.
    pub const BAD: u16 = 0b10 << 14;
    /// Mask selecting the major class.
    pub const MASK: u16 = 0b11 << 14;
}

impl Quality {
    /// The `(quality, detail)` pair stored in a telemetry record.
    pub const fn to_code(self) -> (u16, u32) {
        match self {
            Self::Good => (major::GOOD, 0),
            Self::Uncertain(UncertainReason::Overrun) => (major::UNCERTAIN | 1, 0),
            Self::Bad(BadReason::Timeout) => (major::BAD | 1, 0),
            Self::Bad(BadReason::DeviceException(code)) => (major::BAD | 2, code as u32),
            Self::Bad(BadReason::Disconnected) => (major::BAD | 3, 0),
            Self::Bad(BadReason::DecodeError) => (major::BAD | 4, 0),
            Self::Bad(BadReason::Protocol) => (major::BAD | 5, 0),
        }
    }

    /// Decodes a record's `(quality, detail)`; `None` for a code this version does not know.
    pub fn from_code(code: u16, detail: u32) -> Option<Self> {
        Some(match code {
            0x0000 => Self::Good,
            0x4001 => Self::Uncertain(UncertainReason::Overrun),
            0x8001 => Self::Bad(BadReason::Timeout),
            0x8002 => Self::Bad(BadReason::DeviceException(u8::try_from(detail).ok()?)),
            0x8003 => Self::Bad(BadReason::Disconnected),
            0x8004 => Self::Bad(BadReason::DecodeError),
            0x8005 => Self::Bad(BadReason::Protocol),
            _ => return None,
        })
    }

    /// Whether a value accompanies this quality (good or uncertain).
    pub const fn has_value(self) -> bool {
        !matches!(self, Self::Bad(_))
    }

    /// Whether the quality is good.
    pub const fn is_good(self) -> bool {
        matches!(self, Self::Good)
    }
}

impl fmt::Display for Quality {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Good => f.write_str("good"),
            Self::Uncertain(UncertainReason::Overrun) => f.write_str("uncertain: poll overrun"),
            Self::Bad(BadReason::Timeout) => f.write_str("bad: timeout"),
            Self::Bad(BadReason::DeviceException(code)) => {
                write!(f, "bad: device exception {code:#04x}")
            }
            Self::Bad(BadReason::Disconnected) => f.write_str("bad: disconnected"),
            Self::Bad(BadReason::DecodeError) => f.write_str("bad: decode error"),
            Self::Bad(BadReason::Protocol) => f.write_str("bad: protocol error"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_quality_round_trips_through_its_record_code() {
        let all = [
            Quality::Good,
            Quality::Uncertain(UncertainReason::Overrun),
            Quality::Bad(BadReason::Timeout),
            Quality::Bad(BadReason::DeviceException(2)),
            Quality::Bad(BadReason::DeviceException(0xff)),
            Quality::Bad(BadReason::Disconnected),
            Quality::Bad(BadReason::DecodeError),
            Quality::Bad(BadReason::Protocol),
        ];
        for q in all {
            let (code, detail) = q.to_code();
            assert_eq!(Quality::from_code(code, detail), Some(q), "{q}");
        }
    }

    #[test]
    fn major_class_is_readable_from_top_bits() {
        assert_eq!(Quality::Good.to_code().0 & major::MASK, major::GOOD);
        assert_eq!(
            Quality::Uncertain(UncertainReason::Overrun).to_code().0 & major::MASK,
            major::UNCERTAIN
        );
        assert_eq!(
            Quality::Bad(BadReason::Timeout).to_code().0 & major::MASK,
            major::BAD
        );
    }

    #[test]
    fn unknown_code_is_not_guessed() {
        assert_eq!(Quality::from_code(0x8099, 0), None);
        assert_eq!(Quality::from_code(0x8002, 300), None);
    }
}
