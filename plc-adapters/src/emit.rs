//! Emission: a tag's reading and quality → telemetry records in the adapter's ring.
//!
//! # Design constraints
//! - The ring stamps `epoch` and `seq`; the emitter fills everything else. Strings travel as
//!   runs of ≤ 8-byte chunks ([`TelemetryRecord::str_chunk`]).
//! - No allocation: records are built on the stack and copied into the ring.
//!
//! # When the ring is full (policy: bounded wait, then drop newest and count)
//! A record that does not fit waits for space, but the waiting is budgeted per batch (one poll
//! of one group, see [`Emitter::begin_batch`]): at most [`FullPolicy::max_wait_per_batch`] in
//! total, so a stalled consumer costs each poll at most that long and can never make polls
//! pile up. Once the budget is spent, records that do not fit are dropped at once. Every
//! dropped record is counted twice: in [`EmitStats::dropped`] here and in the ring's shared
//! drop counter through [`RecordSink::count_dropped`], which also skips its sequence number so
//! subscribers see the loss as a gap. A string is all-or-nothing from the first dropped chunk
//! on: its remaining chunks are dropped (and counted) too.
//!
//! The caller learns whether a reading went out ([`Emitter::emit`] returns `false` if any
//! record of it was dropped) and keeps its report-by-exception state unchanged in that case,
//! so the value is offered again on the next poll rather than lost until it changes.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use edgegw_ringbuf::{Producer, TelemetryRecord, Value};

use crate::quality::Quality;
use crate::tag::Reading;

/// Where records go: the ring's producer, or anything that behaves like it (tests).
pub trait RecordSink {
    /// Pushes one record; hands it back if there is no room.
    fn try_push(&mut self, record: TelemetryRecord) -> Result<u64, TelemetryRecord>;
    /// Pushes one record, waiting up to `timeout` for room; hands it back if there is none.
    fn push_timeout(
        &mut self,
        record: TelemetryRecord,
        timeout: Duration,
    ) -> Result<u64, TelemetryRecord>;
    /// Records that `n` records were dropped because there was no room.
    fn count_dropped(&mut self, n: u64);
}

impl RecordSink for Producer<TelemetryRecord> {
    fn try_push(&mut self, record: TelemetryRecord) -> Result<u64, TelemetryRecord> {
        Producer::try_push(self, record).map_err(|full| full.0)
    }

    fn push_timeout(
        &mut self,
        record: TelemetryRecord,
        timeout: Duration,
    ) -> Result<u64, TelemetryRecord> {
        Producer::push_timeout(self, record, timeout).map_err(|full| full.0)
    }

    fn count_dropped(&mut self, n: u64) {
        Producer::count_dropped(self, n);
    }
}

/// A sink shared by several link tasks of one process (the ring has one producer). The lock
/// is held for one push; a bounded wait for room holds it for at most the caller's budget.
impl<S: RecordSink> RecordSink for Arc<Mutex<S>> {
    fn try_push(&mut self, record: TelemetryRecord) -> Result<u64, TelemetryRecord> {
        self.lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .try_push(record)
    }

    fn push_timeout(
        &mut self,
        record: TelemetryRecord,
        timeout: Duration,
    ) -> Result<u64, TelemetryRecord> {
        self.lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push_timeout(record, timeout)
    }

    fn count_dropped(&mut self, n: u64) {
        self.lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .count_dropped(n);
    }
}

/// An unbounded in-memory sink for tests and tools: never full, keeps every record, numbers
/// them like the ring would (epoch 0).
#[derive(Debug, Default, Clone)]
pub struct VecSink {
    /// Records received, in order, with `seq` stamped.
    pub records: Vec<TelemetryRecord>,
    next_seq: u64,
}

impl RecordSink for VecSink {
    fn try_push(&mut self, mut record: TelemetryRecord) -> Result<u64, TelemetryRecord> {
        let seq = self.next_seq;
        record.seq = seq;
        self.next_seq += 1;
        self.records.push(record);
        Ok(seq)
    }

    fn push_timeout(
        &mut self,
        record: TelemetryRecord,
        _timeout: Duration,
    ) -> Result<u64, TelemetryRecord> {
        self.try_push(record)
    }

    fn count_dropped(&mut self, n: u64) {
        self.next_seq += n;
    }
}

/// What to do when the ring is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FullPolicy {
    /// Total time one batch may wait for room before dropping.
    pub max_wait_per_batch: Duration,
}

impl FullPolicy {
    /// Default wait budget per batch: 5 ms.
    pub const DEFAULT_MAX_WAIT: Duration = Duration::from_millis(5);
}

impl Default for FullPolicy {
    fn default() -> Self {
        Self {
            max_wait_per_batch: Self::DEFAULT_MAX_WAIT,
        }
    }
}

/// Counters of one emitter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct EmitStats {
    /// Records pushed into the ring.
    pub emitted: u64,
    /// Records dropped because the ring stayed full.
    pub dropped: u64,
    /// Pushes that had to wait for room.
    pub waits: u64,
}

/// Turns readings into records and pushes them, applying the [`FullPolicy`].
#[derive(Debug)]
pub struct Emitter<S> {
    sink: S,
    policy: FullPolicy,
    budget_left: Duration,
    dropping: bool,
    stats: EmitStats,
}

impl<S: RecordSink> Emitter<S> {
    /// An emitter into `sink`.
    pub fn new(sink: S, policy: FullPolicy) -> Self {
        Self {
            sink,
            policy,
            budget_left: policy.max_wait_per_batch,
            dropping: false,
            stats: EmitStats::default(),
        }
    }

    /// Starts a batch (one poll of one group): refills the wait budget.
    pub fn begin_batch(&mut self) {
        self.budget_left = self.policy.max_wait_per_batch;
    }

    /// Counters so far.
    pub fn stats(&self) -> EmitStats {
        self.stats
    }

    /// The sink.
    pub fn sink(&self) -> &S {
        &self.sink
    }

    /// The sink, mutably.
    pub fn sink_mut(&mut self) -> &mut S {
        &mut self.sink
    }

    /// Gives the sink back.
    pub fn into_sink(self) -> S {
        self.sink
    }

    /// Emits one reading of tag `tag_id` of source `source_id`, read at `timestamp_ns` (ns since
    /// the Unix epoch). `reading` is ignored for a bad quality (the record then carries no
    /// value). Returns whether every record of it went into the ring.
    pub fn emit(
        &mut self,
        source_id: u32,
        tag_id: u32,
        timestamp_ns: u64,
        quality: Quality,
        reading: Option<Reading<'_>>,
    ) -> bool {
        let (code, detail) = quality.to_code();
        let reading = if quality.has_value() { reading } else { None };
        match reading {
            None | Some(Reading::Scalar(_)) => {
                let value = match reading {
                    Some(Reading::Scalar(v)) => v,
                    _ => Value::Empty,
                };
                let mut rec = TelemetryRecord::new(source_id, tag_id, timestamp_ns, value, code);
                rec.detail = detail;
                self.push(rec)
            }
            Some(Reading::Text(text)) => {
                let total = u32::try_from(text.len()).unwrap_or(u32::MAX);
                if text.is_empty() {
                    return self.push(TelemetryRecord::str_chunk(
                        source_id,
                        tag_id,
                        timestamp_ns,
                        &[],
                        0,
                        false,
                        code,
                    ));
                }
                let mut chunks = text.chunks(8).peekable();
                while let Some(chunk) = chunks.next() {
                    let more = chunks.peek().is_some();
                    let rec = TelemetryRecord::str_chunk(
                        source_id,
                        tag_id,
                        timestamp_ns,
                        chunk,
                        total,
                        more,
                        code,
                    );
                    if !self.push(rec) {
                        let rest = chunks.count() as u64;
                        if rest > 0 {
                            self.drop_records(rest);
                        }
                        return false;
                    }
                }
                true
            }
        }
    }

    /// Pushes one record under the policy; `false` if it was dropped.
    fn push(&mut self, rec: TelemetryRecord) -> bool {
        let rec = match self.sink.try_push(rec) {
            Ok(_) => return self.pushed(),
            Err(rec) => rec,
        };
        if !self.budget_left.is_zero() {
            self.stats.waits += 1;
            let started = Instant::now();
            let res = self.sink.push_timeout(rec, self.budget_left);
            self.budget_left = self.budget_left.saturating_sub(started.elapsed());
            if res.is_ok() {
                return self.pushed();
            }
            self.budget_left = Duration::ZERO;
        }
        self.drop_records(1);
        false
    }

    fn pushed(&mut self) -> bool {
        self.stats.emitted += 1;
        if self.dropping {
            self.dropping = false;
            tracing::warn!(
                dropped_total = self.stats.dropped,
                "ring has room again; records were dropped while it was full"
            );
        }
        true
    }

    fn drop_records(&mut self, n: u64) {
        self.sink.count_dropped(n);
        self.stats.dropped += n;
        if !self.dropping {
            self.dropping = true;
            tracing::warn!(
                dropped_total = self.stats.dropped,
                "ring full: dropping records (counted in the ring)"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quality::BadReason;
    use edgegw_ringbuf::{ValueKind, flags};

    /// A sink with room for `room` records.
    #[derive(Default)]
    struct Tight {
        room: usize,
        got: Vec<TelemetryRecord>,
        dropped: u64,
    }

    impl RecordSink for Tight {
        fn try_push(&mut self, r: TelemetryRecord) -> Result<u64, TelemetryRecord> {
            if self.got.len() < self.room {
                self.got.push(r);
                Ok(self.got.len() as u64)
            } else {
                Err(r)
            }
        }
        fn push_timeout(
            &mut self,
            r: TelemetryRecord,
            t: Duration,
        ) -> Result<u64, TelemetryRecord> {
            std::thread::sleep(t);
            self.try_push(r)
        }
        fn count_dropped(&mut self, n: u64) {
            self.dropped += n;
        }
    }

    #[test]
    fn scalar_and_quality_go_into_one_record() {
        let mut e = Emitter::new(VecSink::default(), FullPolicy::default());
        assert!(e.emit(
            7,
            3,
            99,
            Quality::Good,
            Some(Reading::Scalar(Value::F64(1.5)))
        ));
        assert!(e.emit(
            7,
            3,
            100,
            Quality::Bad(BadReason::DeviceException(2)),
            Some(Reading::Scalar(Value::F64(9.0)))
        ));
        let r = &e.sink().records;
        assert_eq!((r[0].source_id, r[0].tag_id, r[0].timestamp_ns), (7, 3, 99));
        assert_eq!(r[0].value(), Some(Value::F64(1.5)));
        assert_eq!(
            Quality::from_code(r[1].quality, r[1].detail),
            Some(Quality::Bad(BadReason::DeviceException(2)))
        );
        assert_eq!(
            r[1].value(),
            Some(Value::Empty),
            "bad quality carries no value"
        );
    }

    #[test]
    fn text_is_split_into_eight_byte_chunks() {
        let mut e = Emitter::new(VecSink::default(), FullPolicy::default());
        assert!(e.emit(
            1,
            2,
            3,
            Quality::Good,
            Some(Reading::Text(b"hello, world!!"))
        ));
        let r = &e.sink().records;
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].kind, ValueKind::Str as u8);
        assert_eq!(
            (&r[0].value[..], r[0].flags, r[0].detail),
            (&b"hello, w"[..], flags::CONTINUED, 14)
        );
        assert_eq!((&r[1].value[..6], r[1].flags), (&b"orld!!"[..], 0));
    }

    #[test]
    fn full_ring_waits_once_per_batch_then_drops_and_counts() {
        let policy = FullPolicy {
            max_wait_per_batch: Duration::from_millis(2),
        };
        let mut e = Emitter::new(
            Tight {
                room: 1,
                ..Tight::default()
            },
            policy,
        );
        e.begin_batch();
        let v = Some(Reading::Scalar(Value::U64(1)));
        assert!(e.emit(0, 0, 0, Quality::Good, v));
        assert!(!e.emit(0, 1, 0, Quality::Good, v));
        assert!(!e.emit(0, 2, 0, Quality::Good, v));
        assert!(!e.emit(
            0,
            3,
            0,
            Quality::Good,
            Some(Reading::Text(b"0123456789abcdefXYZ"))
        ));
        let s = e.stats();
        assert_eq!(
            (s.emitted, s.dropped, s.waits),
            (1, 5, 1),
            "one wait, then 2 scalars + 3 chunks dropped"
        );
        assert_eq!(e.sink().dropped, 5);
        e.begin_batch();
        assert!(!e.emit(0, 4, 0, Quality::Good, v));
        assert_eq!(e.stats().waits, 2, "a new batch gets a new budget");
    }
}
