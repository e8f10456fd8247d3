//! The industrial tag model shared by every adapter: what a tag is, how its raw registers become
//! an engineering value, and when a new value is worth reporting.
//!
//! # Design constraints
//! - A [`Tag`] is immutable once resolved; all per-poll state lives in [`ReportFilter`], which is
//!   allocated once per tag and updated in place (no allocation per poll).
//! - Report by exception: a value is emitted when it moved beyond its [`Deadband`], when its
//!   [`Quality`] changed, or when `max_interval` passed since the last emitted record
//!   (heartbeat). A tag whose quality stays bad is therefore not re-reported every poll, only
//!   on the heartbeat.
//! - Sequence numbers count what is emitted, not what is polled: the ring stamps them, and only
//!   records that pass the filter are pushed.

use std::fmt;
use std::time::Duration;

use edgegw_ringbuf::Value;

use crate::quality::Quality;

/// The four Modbus data tables.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Deserialize, serde::Serialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum Table {
    /// Read/write bits, function code 0x01.
    Coil,
    /// Read-only bits, function code 0x02.
    DiscreteInput,
    /// Read/write 16-bit registers, function code 0x03.
    HoldingRegister,
    /// Read-only 16-bit registers, function code 0x04.
    InputRegister,
}

impl Table {
    /// Whether the table holds single bits (coils, discrete inputs) rather than registers.
    pub const fn is_bits(self) -> bool {
        matches!(self, Self::Coil | Self::DiscreteInput)
    }

    /// The Modbus read function code for this table.
    pub const fn read_function_code(self) -> u8 {
        match self {
            Self::Coil => 0x01,
            Self::DiscreteInput => 0x02,
            Self::HoldingRegister => 0x03,
            Self::InputRegister => 0x04,
        }
    }

    /// The largest quantity one read request may ask for (Modbus application protocol 1.1b3,
    /// 6.1–6.4): 2000 bits or 125 registers.
    pub const fn max_quantity(self) -> u16 {
        if self.is_bits() { 2000 } else { 125 }
    }

    /// The unit of one address in this table, for messages.
    pub const fn unit_name(self) -> &'static str {
        if self.is_bits() { "bits" } else { "registers" }
    }
}

impl fmt::Display for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Coil => "coil",
            Self::DiscreteInput => "discrete-input",
            Self::HoldingRegister => "holding-register",
            Self::InputRegister => "input-register",
        })
    }
}

/// How a tag's value is laid out in its registers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DataType {
    /// A coil, a discrete input, or one bit of a register.
    Bool,
    /// One register, two's complement.
    I16,
    /// One register.
    U16,
    /// Two registers, two's complement.
    I32,
    /// Two registers.
    U32,
    /// Four registers, two's complement.
    I64,
    /// Four registers.
    U64,
    /// Two registers, IEEE 754 single precision.
    F32,
    /// Four registers, IEEE 754 double precision.
    F64,
    /// `registers` registers of UTF-8 text, two bytes per register, trailing NULs trimmed.
    String {
        /// Number of registers the text occupies (1..=125).
        registers: u16,
    },
}

impl DataType {
    /// How many registers (or bits, for [`DataType::Bool`] on a bit table) the type occupies.
    pub const fn registers(self) -> u16 {
        match self {
            Self::Bool | Self::I16 | Self::U16 => 1,
            Self::I32 | Self::U32 | Self::F32 => 2,
            Self::I64 | Self::U64 | Self::F64 => 4,
            Self::String { registers } => registers,
        }
    }

    /// Whether values of this type are numbers (scalable, subject to a numeric deadband).
    pub const fn is_numeric(self) -> bool {
        !matches!(self, Self::Bool | Self::String { .. })
    }
}

impl fmt::Display for DataType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Bool => f.write_str("bool"),
            Self::I16 => f.write_str("i16"),
            Self::U16 => f.write_str("u16"),
            Self::I32 => f.write_str("i32"),
            Self::U32 => f.write_str("u32"),
            Self::I64 => f.write_str("i64"),
            Self::U64 => f.write_str("u64"),
            Self::F32 => f.write_str("f32"),
            Self::F64 => f.write_str("f64"),
            Self::String { registers } => write!(f, "string({registers})"),
        }
    }
}

/// Word and byte order of a multi-byte value, named by where the bytes of the big-endian value
/// `A B C D` (most significant first) end up on the wire.
///
/// | order | registers of `0xAABBCCDD` | meaning |
/// |---|---|---|
/// | `ABCD` | `AABB CCDD` | big-endian words, big-endian bytes (Modbus default) |
/// | `BADC` | `BBAA DDCC` | bytes swapped inside each register |
/// | `CDAB` | `CCDD AABB` | low word first ("word swap") |
/// | `DCBA` | `DDCC BBAA` | fully little-endian |
///
/// For 64-bit values the word order generalises: `CDAB` and `DCBA` reverse all four registers
/// (as pymodbus's `word_order="little"` does). For 16-bit values only the byte swap matters:
/// `BADC` and `DCBA` swap the two bytes. Strings honour the byte swap only.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Deserialize, serde::Serialize,
)]
pub enum ByteOrder {
    /// Big-endian words and bytes.
    #[default]
    ABCD,
    /// Big-endian words, bytes swapped inside each word.
    BADC,
    /// Words reversed, big-endian bytes inside each word.
    CDAB,
    /// Words reversed and bytes swapped: fully little-endian.
    DCBA,
}

impl ByteOrder {
    /// Whether the two bytes of each register are swapped.
    pub const fn swaps_bytes(self) -> bool {
        matches!(self, Self::BADC | Self::DCBA)
    }

    /// Whether the register order is reversed (least significant word first).
    pub const fn swaps_words(self) -> bool {
        matches!(self, Self::CDAB | Self::DCBA)
    }
}

impl fmt::Display for ByteOrder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// Linear conversion from the raw value to engineering units: `raw * scale + offset`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scaling {
    /// Multiplier; finite and non-zero.
    pub scale: f64,
    /// Added after scaling; finite.
    pub offset: f64,
}

impl Scaling {
    /// Applies the conversion.
    pub fn apply(self, raw: f64) -> f64 {
        raw.mul_add(self.scale, self.offset)
    }
}

/// How far a numeric value must move from the last reported one before it is reported again.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum Deadband {
    /// Report every change (the default): any different value is reported.
    #[default]
    None,
    /// Report when `|new - last| > band` (engineering units).
    Absolute(f64),
    /// Report when `|new - last| > percent / 100 * |last|`. A last value of 0 reports any change.
    Percent(f64),
}

impl Deadband {
    /// Whether moving from `last` to `new` exceeds the band.
    pub fn exceeded(self, last: f64, new: f64) -> bool {
        if last.is_nan() || new.is_nan() {
            // NaN never equals itself: report only a change between NaN and a number.
            return last.is_nan() != new.is_nan();
        }
        let delta = (new - last).abs();
        match self {
            Self::None => new != last,
            Self::Absolute(band) => delta > band,
            Self::Percent(pct) => delta > pct / 100.0 * last.abs() || (last == 0.0 && new != 0.0),
        }
    }
}

/// One configured tag, resolved and validated.
#[derive(Debug, Clone, PartialEq)]
pub struct Tag {
    /// Index of the tag in its source's configuration; becomes `TelemetryRecord::tag_id`.
    pub id: u32,
    /// Name as configured (unique within its device).
    pub name: String,
    /// Table the tag lives in.
    pub table: Table,
    /// Zero-based protocol address of its first register or bit.
    pub address: u16,
    /// Data type.
    pub data_type: DataType,
    /// Word/byte order.
    pub order: ByteOrder,
    /// For [`DataType::Bool`] on a register table: the bit (0 = least significant).
    pub bit: Option<u8>,
    /// Conversion to engineering units; turns any numeric type into `f64`.
    pub scaling: Option<Scaling>,
    /// Report-by-exception band.
    pub deadband: Deadband,
    /// Heartbeat: report at least this often even if nothing changed.
    pub max_interval: Option<Duration>,
}

impl Tag {
    /// Number of registers or bits the tag occupies in its table.
    pub const fn width(&self) -> u16 {
        if self.table.is_bits() {
            1
        } else {
            self.data_type.registers()
        }
    }

    /// One past the last address the tag occupies (`u32`, so 65535 + width cannot overflow).
    pub const fn end(&self) -> u32 {
        self.address as u32 + self.width() as u32
    }
}

/// A decoded value ready for the ring: numbers and booleans as [`Value`], text as bytes held
/// by the caller (so strings need no allocation per poll).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Reading<'a> {
    /// A scalar value.
    Scalar(Value),
    /// UTF-8 text, NUL-trimmed.
    Text(&'a [u8]),
}

/// Report-by-exception state of one tag, updated in place on every poll.
///
/// Construct it once per tag ([`ReportFilter::new`] reserves room for the longest string the
/// tag can hold); [`ReportFilter::should_report`] decides and [`ReportFilter::reported`]
/// records what was actually emitted, so a record the ring refused is retried on the next poll.
#[derive(Debug, Clone)]
pub struct ReportFilter {
    deadband: Deadband,
    max_interval: Option<Duration>,
    /// Quality of the last emitted record; `None` before the first one.
    last_quality: Option<Quality>,
    last_value: Value,
    last_text: Vec<u8>,
    /// Monotonic nanoseconds of the last emitted record.
    last_at_ns: u64,
}

impl ReportFilter {
    /// A filter for `tag` with nothing reported yet.
    pub fn new(tag: &Tag) -> Self {
        let text_cap = match tag.data_type {
            DataType::String { registers } => usize::from(registers) * 2,
            _ => 0,
        };
        Self {
            deadband: tag.deadband,
            max_interval: tag.max_interval,
            last_quality: None,
            last_value: Value::Empty,
            last_text: Vec::with_capacity(text_cap),
            last_at_ns: 0,
        }
    }

    /// Quality of the last emitted record, if any.
    pub fn last_quality(&self) -> Option<Quality> {
        self.last_quality
    }

    /// Whether a reading with `quality` (and `reading` when the quality is good or uncertain)
    /// observed at monotonic time `now_ns` must be emitted.
    pub fn should_report(
        &self,
        quality: Quality,
        reading: Option<Reading<'_>>,
        now_ns: u64,
    ) -> bool {
        let Some(last_quality) = self.last_quality else {
            return true;
        };
        if last_quality != quality {
            return true;
        }
        if let Some(max) = self.max_interval
            && now_ns.saturating_sub(self.last_at_ns)
                >= u64::try_from(max.as_nanos()).unwrap_or(u64::MAX)
        {
            return true;
        }
        match reading {
            None => false,
            Some(Reading::Text(text)) => text != self.last_text.as_slice(),
            Some(Reading::Scalar(value)) => self.value_moved(value),
        }
    }

    fn value_moved(&self, value: Value) -> bool {
        match (self.last_value, value) {
            (Value::F64(a), Value::F64(b)) => self.deadband.exceeded(a, b),
            // Integers compare through f64 for the band; exact comparison decides "no band".
            (Value::I64(a), Value::I64(b)) => match self.deadband {
                Deadband::None => a != b,
                band => band.exceeded(a as f64, b as f64),
            },
            (Value::U64(a), Value::U64(b)) => match self.deadband {
                Deadband::None => a != b,
                band => band.exceeded(a as f64, b as f64),
            },
            (a, b) => a != b,
        }
    }

    /// Records that a record with this quality and reading was emitted at `now_ns`.
    pub fn reported(&mut self, quality: Quality, reading: Option<Reading<'_>>, now_ns: u64) {
        self.last_quality = Some(quality);
        self.last_at_ns = now_ns;
        match reading {
            None => {}
            Some(Reading::Scalar(v)) => self.last_value = v,
            Some(Reading::Text(t)) => {
                self.last_text.clear();
                // Capacity was reserved for the longest text of the tag: no allocation.
                self.last_text.extend_from_slice(t);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quality::BadReason;

    fn tag(deadband: Deadband, max_interval: Option<Duration>) -> Tag {
        Tag {
            id: 0,
            name: "t".into(),
            table: Table::HoldingRegister,
            address: 0,
            data_type: DataType::F32,
            order: ByteOrder::ABCD,
            bit: None,
            scaling: None,
            deadband,
            max_interval,
        }
    }

    fn report(f: &mut ReportFilter, q: Quality, v: Option<f64>, now: u64) -> bool {
        let r = v.map(|v| Reading::Scalar(Value::F64(v)));
        let yes = f.should_report(q, r, now);
        if yes {
            f.reported(q, r, now);
        }
        yes
    }

    #[test]
    fn first_reading_is_always_reported_then_only_changes() {
        let mut f = ReportFilter::new(&tag(Deadband::None, None));
        assert!(report(&mut f, Quality::Good, Some(1.0), 0));
        assert!(!report(&mut f, Quality::Good, Some(1.0), 10));
        assert!(report(&mut f, Quality::Good, Some(1.5), 20));
    }

    #[test]
    fn absolute_deadband_suppresses_small_moves_relative_to_last_reported() {
        let mut f = ReportFilter::new(&tag(Deadband::Absolute(1.0), None));
        assert!(report(&mut f, Quality::Good, Some(10.0), 0));
        assert!(!report(&mut f, Quality::Good, Some(10.6), 1));
        // Creeping does not accumulate unreported: compared with 10.0, not 10.6.
        assert!(report(&mut f, Quality::Good, Some(11.2), 2));
    }

    #[test]
    fn percent_deadband_is_relative_to_last_reported_magnitude() {
        let mut f = ReportFilter::new(&tag(Deadband::Percent(5.0), None));
        assert!(report(&mut f, Quality::Good, Some(200.0), 0));
        assert!(!report(&mut f, Quality::Good, Some(209.0), 1));
        assert!(report(&mut f, Quality::Good, Some(189.0), 2));
    }

    #[test]
    fn heartbeat_reports_unchanged_value_after_max_interval() {
        let mut f = ReportFilter::new(&tag(Deadband::None, Some(Duration::from_secs(1))));
        assert!(report(&mut f, Quality::Good, Some(1.0), 0));
        assert!(!report(&mut f, Quality::Good, Some(1.0), 999_999_999));
        assert!(report(&mut f, Quality::Good, Some(1.0), 1_000_000_000));
    }

    #[test]
    fn quality_change_is_always_reported_and_bad_is_not_repeated() {
        let mut f = ReportFilter::new(&tag(Deadband::Absolute(100.0), None));
        let bad = Quality::Bad(BadReason::Disconnected);
        assert!(report(&mut f, Quality::Good, Some(1.0), 0));
        assert!(report(&mut f, bad, None, 1));
        for t in 2..100 {
            assert!(!report(&mut f, bad, None, t));
        }
        assert!(report(&mut f, Quality::Good, Some(1.0), 100));
    }

    #[test]
    fn text_reports_on_change_only() {
        let t = Tag {
            data_type: DataType::String { registers: 4 },
            ..tag(Deadband::None, None)
        };
        let mut f = ReportFilter::new(&t);
        let r = Some(Reading::Text(b"abc"));
        assert!(f.should_report(Quality::Good, r, 0));
        f.reported(Quality::Good, r, 0);
        assert!(!f.should_report(Quality::Good, r, 1));
        assert!(f.should_report(Quality::Good, Some(Reading::Text(b"abd")), 2));
    }

    #[test]
    fn nan_to_nan_is_not_a_change_but_nan_to_number_is() {
        assert!(!Deadband::None.exceeded(f64::NAN, f64::NAN));
        assert!(Deadband::Absolute(5.0).exceeded(f64::NAN, 1.0));
    }
}
