//! The telemetry record every adapter writes and the forwarder reads in place.
//!
//! # Design constraints
//! - Fixed size (48 bytes), `#[repr(C)]`, [`bytemuck::Pod`], no pointers: it is read from another
//!   process's writes, so every bit pattern must be a valid value.
//! - The ring stamps `epoch` and `seq` when the record is pushed (see [`Sequenced`]); adapters fill
//!   the rest.
//! - Values are 8 bytes. Variable-length values (strings) travel on the same fixed path as a run
//!   of consecutive records of kind [`ValueKind::Str`]: each carries up to 8 bytes, `detail` holds
//!   the total length and [`flags::CONTINUED`] is set on every chunk but the last. The consumer
//!   reassembles by `seq`; nothing in the ring changes.
//!
//! # Format (little-endian, offsets in bytes)
//! | offset | field | meaning |
//! |---|---|---|
//! | 0 | `source_id: u32` | which adapter/device wrote it |
//! | 4 | `tag_id: u32` | index of the tag in that source's configuration |
//! | 8 | `epoch: u64` | per-source epoch; a new epoch restarts `seq` |
//! | 16 | `seq: u64` | +1 for every record pushed into the source's ring |
//! | 24 | `timestamp_ns: u64` | source timestamp, ns since the Unix epoch |
//! | 32 | `value: [u8; 8]` | the value, interpreted by `kind` |
//! | 40 | `quality: u16` | quality code (see the adapters' `Quality`) |
//! | 42 | `kind: u8` | [`ValueKind`] |
//! | 43 | `flags: u8` | [`flags`] |
//! | 44 | `detail: u32` | quality detail (e.g. Modbus exception code) or string length |

use bytemuck::{Pod, Zeroable};

/// Flag bits in [`TelemetryRecord::flags`].
pub mod flags {
    /// A string chunk that is followed by another chunk of the same value.
    pub const CONTINUED: u8 = 1 << 0;
}

/// How the 8 value bytes of a record are to be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum ValueKind {
    /// No value (e.g. a bad-quality record reporting only the quality change).
    Empty = 0,
    /// `value[0] != 0`.
    Bool = 1,
    /// `i64::from_le_bytes(value)`.
    I64 = 2,
    /// `u64::from_le_bytes(value)`.
    U64 = 3,
    /// `f64::from_le_bytes(value)`.
    F64 = 4,
    /// Up to 8 bytes of UTF-8; see the module docs for longer strings.
    Str = 5,
}

impl ValueKind {
    /// Decodes a kind byte; `None` for a byte no version of this layout has written.
    pub const fn from_u8(byte: u8) -> Option<Self> {
        Some(match byte {
            0 => Self::Empty,
            1 => Self::Bool,
            2 => Self::I64,
            3 => Self::U64,
            4 => Self::F64,
            5 => Self::Str,
            _ => return None,
        })
    }
}

/// A decoded value, for building and reading records without touching raw bytes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value {
    /// No value.
    Empty,
    /// A boolean (coil, discrete input, register bit).
    Bool(bool),
    /// A signed integer.
    I64(i64),
    /// An unsigned integer.
    U64(u64),
    /// A floating-point value (also every scaled engineering value).
    F64(f64),
}

/// One telemetry record: a tag's value and quality at a source timestamp.
#[derive(Clone, Copy, PartialEq, Eq, Pod, Zeroable)]
#[repr(C)]
pub struct TelemetryRecord {
    /// Adapter/device that produced the record.
    pub source_id: u32,
    /// Tag index within the source's configuration.
    pub tag_id: u32,
    /// Per-source epoch, stamped by the ring.
    pub epoch: u64,
    /// Per-source sequence number, stamped by the ring.
    pub seq: u64,
    /// Source timestamp: ns since the Unix epoch when the value was read.
    pub timestamp_ns: u64,
    /// Value bytes, interpreted by `kind`.
    pub value: [u8; 8],
    /// Quality code.
    pub quality: u16,
    /// [`ValueKind`] as a byte.
    pub kind: u8,
    /// [`flags`] bits.
    pub flags: u8,
    /// Quality detail or total string length.
    pub detail: u32,
}

const _: () = assert!(size_of::<TelemetryRecord>() == 48);

impl TelemetryRecord {
    /// A record carrying `value`; `epoch` and `seq` are left zero for the ring to stamp.
    pub fn new(source_id: u32, tag_id: u32, timestamp_ns: u64, value: Value, quality: u16) -> Self {
        let (kind, bytes) = match value {
            Value::Empty => (ValueKind::Empty, [0; 8]),
            Value::Bool(b) => (ValueKind::Bool, u64::from(b).to_le_bytes()),
            Value::I64(v) => (ValueKind::I64, v.to_le_bytes()),
            Value::U64(v) => (ValueKind::U64, v.to_le_bytes()),
            Value::F64(v) => (ValueKind::F64, v.to_le_bytes()),
        };
        Self {
            source_id,
            tag_id,
            epoch: 0,
            seq: 0,
            timestamp_ns,
            value: bytes,
            quality,
            kind: kind as u8,
            flags: 0,
            detail: 0,
        }
    }

    /// One chunk of a string value: `chunk` holds up to 8 bytes, `total_len` is the length of
    /// the whole string, `more` says another chunk follows.
    pub fn str_chunk(
        source_id: u32,
        tag_id: u32,
        timestamp_ns: u64,
        chunk: &[u8],
        total_len: u32,
        more: bool,
        quality: u16,
    ) -> Self {
        let mut value = [0u8; 8];
        let n = chunk.len().min(8);
        value[..n].copy_from_slice(&chunk[..n]);
        Self {
            source_id,
            tag_id,
            epoch: 0,
            seq: 0,
            timestamp_ns,
            value,
            quality,
            kind: ValueKind::Str as u8,
            flags: if more { flags::CONTINUED } else { 0 },
            detail: total_len,
        }
    }

    /// The value kind, or `None` if the kind byte is unknown (written by a newer layout or a
    /// broken producer).
    pub const fn value_kind(&self) -> Option<ValueKind> {
        ValueKind::from_u8(self.kind)
    }

    /// The decoded value; strings and unknown kinds decode as `None`.
    pub fn value(&self) -> Option<Value> {
        Some(match self.value_kind()? {
            ValueKind::Empty => Value::Empty,
            ValueKind::Bool => Value::Bool(self.value[0] != 0),
            ValueKind::I64 => Value::I64(i64::from_le_bytes(self.value)),
            ValueKind::U64 => Value::U64(u64::from_le_bytes(self.value)),
            ValueKind::F64 => Value::F64(f64::from_le_bytes(self.value)),
            ValueKind::Str => return None,
        })
    }
}

impl std::fmt::Debug for TelemetryRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TelemetryRecord")
            .field("source_id", &self.source_id)
            .field("tag_id", &self.tag_id)
            .field("epoch", &self.epoch)
            .field("seq", &self.seq)
            .field("timestamp_ns", &self.timestamp_ns)
            .field("kind", &self.value_kind())
            .field("value", &self.value())
            .field("quality", &self.quality)
            .field("flags", &self.flags)
            .field("detail", &self.detail)
            .finish()
    }
}

/// Record types the ring stamps with the producer's epoch and sequence number on push.
///
/// Pushing stamps `seq` inside the ring's own critical section, so the sequence kept in shared
/// memory and the records a consumer sees can never disagree, whichever process pushed them.
pub trait Sequenced: Pod {
    /// Identifies the record's layout in the ring header; change it whenever the layout
    /// changes, so a producer and consumer built differently refuse to attach.
    const LAYOUT_ID: u32;
    /// Writes the ring's epoch and the sequence number this record gets.
    fn stamp(&mut self, epoch: u64, seq: u64);
    /// The sequence number a pushed record carries.
    fn seq(&self) -> u64;
}

impl Sequenced for TelemetryRecord {
    /// `"TR"` + layout revision 1.
    const LAYOUT_ID: u32 = 0x5452_0001;

    fn stamp(&mut self, epoch: u64, seq: u64) {
        self.epoch = epoch;
        self.seq = seq;
    }

    fn seq(&self) -> u64 {
        self.seq
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip_through_record_bytes() {
        for v in [
            Value::Empty,
            Value::Bool(true),
            Value::Bool(false),
            Value::I64(-42),
            Value::U64(u64::MAX),
            Value::F64(-1.5e300),
        ] {
            let r = TelemetryRecord::new(1, 2, 3, v, 0);
            let back: TelemetryRecord = *bytemuck::from_bytes(bytemuck::bytes_of(&r));
            assert_eq!(back.value(), Some(v));
        }
    }

    #[test]
    fn unknown_kind_byte_is_reported_not_misread() {
        let mut r = TelemetryRecord::new(1, 2, 3, Value::U64(7), 0);
        r.kind = 200;
        assert_eq!(r.value_kind(), None);
        assert_eq!(r.value(), None);
    }
}
