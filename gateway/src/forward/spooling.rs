//! The bridge between the dispatcher and the SQLite spool: encodes batches into rows with the
//! names they were read under, renders rows back into payloads for replay, and logs and counts
//! everything the spool drops or loses, in one place.

use std::sync::Arc;

use crate::spool::{NewRow, Spool, decode, encode};

use super::batch::Batch;
use super::catalog::SourceCatalog;
use super::dispatch::{BatchSpool, Render, Rendered, RowId};
use super::encode::{BatchHeader, render_batch};

/// Counters of what the spool could not keep.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SpoolLoss {
    /// Records dropped by the spool's bound (oldest first, or newest refused).
    pub dropped_by_bound: u64,
    /// Records that could not be written (full disk, I/O error).
    pub failed_writes: u64,
    /// Rows that no longer decoded on replay (their records are lost).
    pub undecodable_rows: u64,
}

/// Live batches rendered with the current configuration's names.
#[derive(Debug, Clone)]
pub struct LiveRender {
    /// The gateway's name as a JSON string literal.
    pub gateway_json: Box<str>,
    /// Catalogs by source index.
    pub catalogs: Vec<Arc<SourceCatalog>>,
}

impl Render for LiveRender {
    fn render(&self, batch: &Batch) -> (&str, Vec<u8>) {
        let catalog = &self.catalogs[batch.source as usize];
        let group = &catalog.groups[batch.group as usize];
        let header = BatchHeader {
            gateway: &self.gateway_json,
            source: &catalog.name_json,
            device: &group.device_json,
            group: &group.group_json,
            epoch: batch.epoch,
            replayed: false,
        };
        let mut out = Vec::with_capacity(128 + batch.records.len() * 80);
        render_batch(&mut out, &header, &batch.records, |r| catalog.tag_name(r));
        (&group.topic, out)
    }
}

/// [`BatchSpool`] over the SQLite spool.
#[derive(Debug)]
pub struct SpoolBridge {
    spool: Spool,
    live: LiveRender,
    loss: SpoolLoss,
}

impl SpoolBridge {
    /// Bridges `spool`, naming live batches with `live`'s catalogs.
    pub fn new(spool: Spool, live: LiveRender) -> Self {
        Self {
            spool,
            live,
            loss: SpoolLoss::default(),
        }
    }

    /// A catalog for the next source index (a source added or changed by a reload).
    pub fn add_catalog(&mut self, catalog: Arc<SourceCatalog>) {
        self.live.catalogs.push(catalog);
    }

    /// What the spool could not keep so far.
    pub fn loss(&self) -> SpoolLoss {
        self.loss
    }

    /// The spool.
    pub fn spool(&self) -> &Spool {
        &self.spool
    }

    fn row(&self, b: &Batch) -> NewRow {
        let catalog = &self.live.catalogs[b.source as usize];
        let group = &catalog.groups[b.group as usize];
        NewRow {
            source: catalog.name_json.clone(),
            device: group.device_json.clone(),
            group: group.group_json.clone(),
            topic: group.topic.as_str().into(),
            epoch: b.epoch,
            seqs: b.seq_range(),
            records: b.records.len() as u64,
            oldest_ts: b.records.iter().map(|r| r.timestamp_ns).min().unwrap_or(0),
            body: encode(&[&b.records], |r| catalog.tag_name(r)),
        }
    }
}

impl BatchSpool for SpoolBridge {
    fn append(&mut self, batches: &[Batch]) -> u64 {
        let rows: Vec<NewRow> = batches.iter().map(|b| self.row(b)).collect();
        match self.spool.append(&rows) {
            Ok(report) => {
                let d = &report.dropped;
                if d.rows > 0 {
                    self.loss.dropped_by_bound += d.records;
                    crate::telemetry::events::spool_dropped(&d.ranges, d.records);
                }
                0
            }
            Err(e) => {
                let lost: u64 = rows.iter().map(|r| r.records).sum();
                self.loss.failed_writes += lost;
                crate::telemetry::events::spool_write_failed(&e, lost, e.is_full());
                lost
            }
        }
    }

    fn take_oldest(&mut self, n: usize) -> Vec<(RowId, Rendered)> {
        let rows = match self.spool.take_oldest(n) {
            Ok(rows) => rows,
            Err(e) => {
                tracing::error!(error = %e, "spool read failed; replay paused");
                return Vec::new();
            }
        };
        let mut out = Vec::with_capacity(rows.len());
        for stored in rows {
            let r = &stored.row;
            match decode(&r.body) {
                Ok((records, names)) => {
                    let header = BatchHeader {
                        gateway: &self.live.gateway_json,
                        source: &r.source,
                        device: &r.device,
                        group: &r.group,
                        epoch: r.epoch,
                        replayed: true,
                    };
                    let names: std::collections::HashMap<(u32, u32), &str> =
                        names.iter().map(|(s, t, n)| ((*s, *t), &**n)).collect();
                    let mut payload = Vec::with_capacity(128 + records.len() * 80);
                    render_batch(&mut payload, &header, &records, |rec| {
                        names.get(&(rec.source_id, rec.tag_id)).copied()
                    });
                    out.push((
                        stored.id,
                        Rendered {
                            topic: r.topic.clone(),
                            payload,
                            records: records.len() as u64,
                        },
                    ));
                }
                Err(e) => {
                    self.loss.undecodable_rows += r.records;
                    crate::telemetry::events::spool_row_undecodable(
                        stored.id, &r.source, r.epoch, r.seqs, r.records, &e,
                    );
                    if let Err(e) = self.spool.ack(stored.id) {
                        tracing::error!(row = stored.id, error = %e, "cannot delete an undecodable row");
                    }
                }
            }
        }
        out
    }

    fn ack(&mut self, row: RowId) {
        if let Err(e) = self.spool.ack(row) {
            // The row stays and will be sent again: a duplicate, never a loss.
            tracing::error!(row, error = %e, "cannot delete an acknowledged row");
        }
    }

    fn reset_handed_out(&mut self) {
        self.spool.reset_handed_out();
    }

    fn give_back(&mut self, row: RowId) {
        self.spool.give_back(row);
    }

    fn is_empty(&self) -> bool {
        !self.spool.has_waiting()
    }
}
