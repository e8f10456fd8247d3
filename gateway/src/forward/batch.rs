//! Batching: records read in place from a ring are appended to the open batch of their
//! `(device, group)`; a batch closes when it holds `max_records` or has been open `linger`.
//!
//! The append is the forwarder's one copy out of shared memory. A batch keeps its records (not
//! a rendered payload) so that it can go to the broker, or, when the broker is down or slow, to
//! the spool, without parsing anything back. A string value (a run of chunk records) never
//! straddles two batches.

use std::sync::Arc;
use std::time::{Duration, Instant};

use edgegw_ringbuf::{TelemetryRecord, flags};

use super::catalog::SourceCatalog;

/// Records of one source, one epoch and one `(device, group)`, in ring order.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    /// Index of the source in the forwarder's source list.
    pub source: u32,
    /// Group index within the source's catalog.
    pub group: u32,
    /// The source's epoch.
    pub epoch: u64,
    /// The records.
    pub records: Vec<TelemetryRecord>,
}

impl Batch {
    /// Lowest and highest `seq` (the first and last record, since a ring is in seq order).
    pub fn seq_range(&self) -> (u64, u64) {
        let first = self.records.first().map_or(0, |r| r.seq);
        let last = self.records.last().map_or(0, |r| r.seq);
        (first, last)
    }
}

struct Open {
    records: Vec<TelemetryRecord>,
    since: Instant,
}

/// Open batches of one source.
pub struct Batcher {
    source: u32,
    catalog: Arc<SourceCatalog>,
    open: Vec<Option<Open>>,
    max_records: usize,
    linger: Duration,
}

impl std::fmt::Debug for Batcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batcher")
            .field("source", &self.source)
            .field("open", &self.open.iter().filter(|o| o.is_some()).count())
            .finish()
    }
}

impl Batcher {
    /// Batches for source index `source` described by `catalog`.
    pub fn new(
        source: u32,
        catalog: Arc<SourceCatalog>,
        max_records: usize,
        linger: Duration,
    ) -> Self {
        let open = (0..catalog.groups.len()).map(|_| None).collect();
        Self {
            source,
            catalog,
            open,
            max_records: max_records.max(1),
            linger,
        }
    }

    /// The catalog this batcher routes with.
    pub fn catalog(&self) -> &Arc<SourceCatalog> {
        &self.catalog
    }

    /// Appends a record to its group's batch; returns that batch if it is now full.
    #[inline]
    pub fn push(&mut self, r: &TelemetryRecord, now: Instant) -> Option<Batch> {
        let g = self.catalog.group_of(r) as usize;
        let open = self.open[g].get_or_insert_with(|| Open {
            records: Vec::with_capacity(self.max_records.min(4096)),
            since: now,
        });
        open.records.push(*r);
        let mid_string = r.flags & flags::CONTINUED != 0;
        if open.records.len() >= self.max_records && !mid_string {
            return self.close(g, r.epoch);
        }
        None
    }

    fn close(&mut self, g: usize, epoch: u64) -> Option<Batch> {
        let open = self.open[g].take()?;
        Some(Batch {
            source: self.source,
            group: g as u32,
            epoch,
            records: open.records,
        })
    }

    /// When the oldest open batch is due, if any batch is open.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.open
            .iter()
            .flatten()
            .map(|o| o.since + self.linger)
            .min()
    }

    /// Closes every batch open for `linger` or longer (all of them if `all`), except one whose
    /// last record is a string chunk with more to come.
    pub fn close_due(&mut self, now: Instant, all: bool, out: &mut Vec<Batch>) {
        for g in 0..self.open.len() {
            let Some(open) = &self.open[g] else { continue };
            let due = all || now >= open.since + self.linger;
            let mid_string = open
                .records
                .last()
                .is_some_and(|r| r.flags & flags::CONTINUED != 0);
            if due && (!mid_string || all) {
                let epoch = open.records[0].epoch;
                out.extend(self.close(g, epoch));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::catalog::CatalogBuilder;
    use super::*;
    use edgegw_ringbuf::Value;

    fn catalog() -> Arc<SourceCatalog> {
        let mut b = CatalogBuilder::new("plc", "gw/plc/_unknown".into());
        let fast = b.group("plc", "fast", "gw/plc/fast".into());
        let slow = b.group("plc", "slow", "gw/plc/slow".into());
        b.tag(0, 0, fast, "a");
        b.tag(0, 1, slow, "b");
        Arc::new(b.build())
    }

    fn rec(tag: u32, seq: u64) -> TelemetryRecord {
        let mut r = TelemetryRecord::new(0, tag, seq, Value::U64(seq), 0);
        r.seq = seq;
        r.epoch = 4;
        r
    }

    #[test]
    fn records_split_by_group_and_close_when_full_or_due() {
        let mut b = Batcher::new(0, catalog(), 2, Duration::from_millis(10));
        let t0 = Instant::now();
        assert_eq!(b.push(&rec(0, 0), t0), None);
        assert_eq!(b.push(&rec(1, 1), t0), None);
        assert_eq!(b.push(&rec(9, 2), t0), None); // unknown tag
        let full = b.push(&rec(0, 3), t0).unwrap();
        assert_eq!((full.group, full.epoch, full.seq_range()), (0, 4, (0, 3)));

        assert_eq!(b.next_deadline(), Some(t0 + Duration::from_millis(10)));
        let mut out = Vec::new();
        b.close_due(t0 + Duration::from_millis(5), false, &mut out);
        assert!(out.is_empty());
        b.close_due(t0 + Duration::from_millis(10), false, &mut out);
        let groups: Vec<_> = out.iter().map(|b| (b.group, b.records.len())).collect();
        assert_eq!(groups, [(1, 1), (2, 1)]);
        assert_eq!(b.next_deadline(), None);
    }

    #[test]
    fn a_string_run_is_never_split_across_batches() {
        let mut b = Batcher::new(0, catalog(), 1, Duration::from_millis(10));
        let t0 = Instant::now();
        let chunk = |seq, more| {
            let mut r = TelemetryRecord::str_chunk(0, 0, 0, b"abcdefgh", 24, more, 0);
            r.seq = seq;
            r
        };
        assert_eq!(b.push(&chunk(0, true), t0), None);
        let mut out = Vec::new();
        b.close_due(t0 + Duration::from_secs(1), false, &mut out);
        assert!(out.is_empty(), "a batch ending mid-string stays open");
        assert_eq!(b.push(&chunk(1, true), t0), None);
        let batch = b.push(&chunk(2, false), t0).unwrap();
        assert_eq!(batch.records.len(), 3);
    }
}
