//! The spool: batches that could not be delivered, kept in SQLite until the broker
//! acknowledges them.
//!
//! # Design constraints
//! - Nothing the spool accepted is lost, except by its stated bound: when `max_bytes` is reached,
//!   the oldest batches are dropped (or, with `when_full = "drop-newest"`, new ones refused), and
//!   every drop is reported with `(source, epoch, seq range)` so the gateway can log and count it;
//!   upstream sees it as a gap in `seq`.
//! - Small writes for flash: one row per batch (hundreds of records), appended in one
//!   transaction, with the records column-encoded (`codec.rs`) to a few bytes each.
//! - A spool can be lost or corrupt without taking the gateway down: a file that is not a healthy
//!   spool of this schema is moved aside (`<file>.corrupt-<unix seconds>`) and a fresh one is
//!   created; a full disk makes appends fail, and the caller counts those records as lost while
//!   the gateway keeps running.
//! - Rows are self-describing (names, topic, tag names in the blob), so a replay after a
//!   configuration change still names everything as it was when the data was read.
//!
//! # Format
//! One SQLite database (`store.rs` has the schema): table `batches`, FIFO by `id`, blob encoded
//! by `codec.rs`. `PRAGMA user_version` holds the schema version; `auto_vacuum = INCREMENTAL`
//! (set before the table exists) lets deletes return space to the filesystem; WAL journal,
//! capped by `journal_size_limit` (64 MiB).
//!
//! # Operation and durability
//! - Append: rows go in one transaction. With `durability = "normal"` (WAL,
//!   `synchronous=NORMAL`) a committed row survives a crash or SIGKILL of the gateway, but a power
//!   loss may roll back the commits since the last WAL sync. With `"full"`, each commit is fsynced
//!   and survives power loss.
//! - Replay: `take_oldest` hands out the oldest rows not already out, reading only those rows
//!   (a cursor past the rows handed out, plus the rows given back); a row is deleted only
//!   when the broker acknowledged it (`ack`). Acknowledged rows are deleted 64 at a time in
//!   one transaction (or at once when nothing else is out); a crash before that delete
//!   replays them once more, a duplicate upstream. After a disconnect every handed-out row is
//!   available again (`reset_handed_out`), so a row may be sent twice (counted as a duplicate
//!   upstream), never zero times.
//! - What a SIGKILL of the gateway can lose: records still in the rings (at most the ring
//!   capacity per source), batches open in the forwarder (at most `linger`), and live batches in
//!   flight to the broker that were neither acknowledged nor spooled (at most the MQTT window).
//!   A clean stop (SIGTERM) spools all of those.

mod codec;
mod config;
mod store;

pub use codec::{BlobDecodeError, NameTable, decode, encode};
pub use config::{Durability, SpoolConfig, WhenFull, default_max_bytes};
pub use store::{
    AppendReport, Dropped, NewRow, OpenReport, Spool, SpoolError, SpoolStats, StoredRow,
};

#[cfg(test)]
mod tests {
    use super::*;

    fn row(source: &str, first: u64, n: u64) -> NewRow {
        NewRow {
            source: format!("\"{source}\"").into(),
            device: "\"d\"".into(),
            group: "\"g\"".into(),
            topic: "gw/d/g".into(),
            epoch: 1,
            seqs: (first, first + n - 1),
            records: n,
            oldest_ts: first,
            body: vec![7; 1000],
        }
    }

    fn cfg(max_bytes: u64, when_full: WhenFull) -> SpoolConfig {
        SpoolConfig {
            path: None,
            max_bytes,
            durability: Durability::Normal,
            when_full,
        }
    }

    #[test]
    fn rows_come_back_in_order_survive_reopen_and_leave_on_ack() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("spool.db");
        let (mut spool, report) = Spool::open(&path, &SpoolConfig::default()).unwrap();
        assert_eq!(report, OpenReport::default());
        spool
            .append(&[row("a", 0, 10), row("a", 10, 10), row("b", 0, 5)])
            .unwrap();
        drop(spool);

        let (mut spool, _) = Spool::open(&path, &SpoolConfig::default()).unwrap();
        assert_eq!((spool.stats().rows, spool.stats().records), (3, 25));
        let first = spool.take_oldest(2).unwrap();
        assert_eq!(
            first.iter().map(|r| r.row.seqs.0).collect::<Vec<_>>(),
            [0, 10]
        );
        let next = spool.take_oldest(5).unwrap();
        assert_eq!(next.len(), 1, "handed-out rows are not handed out twice");
        spool.reset_handed_out();
        assert_eq!(
            spool.take_oldest(5).unwrap().len(),
            3,
            "after a reset they come back"
        );
        for r in first.iter().chain(&next) {
            spool.ack(r.id).unwrap();
        }
        assert_eq!(spool.stats().rows, 0);
        assert!(!spool.has_waiting());
    }

    #[test]
    fn replay_finds_given_back_rows_first_and_rows_under_reused_ids() {
        let dir = tempfile::tempdir().unwrap();
        let (mut spool, _) =
            Spool::open(&dir.path().join("spool.db"), &SpoolConfig::default()).unwrap();
        spool
            .append(&[row("a", 0, 10), row("a", 10, 10), row("a", 20, 10)])
            .unwrap();
        let out = spool.take_oldest(3).unwrap();
        assert_eq!(out.len(), 3);
        assert!(!spool.has_waiting());
        // The newest row is acknowledged and the oldest given back: the next append takes the
        // deleted row's id again (no AUTOINCREMENT), below the replay cursor.
        spool.ack(out[2].id).unwrap();
        spool.give_back(out[0].id);
        spool.append(&[row("a", 30, 10)]).unwrap();
        let next: Vec<u64> = spool
            .take_oldest(5)
            .unwrap()
            .iter()
            .map(|r| r.row.seqs.0)
            .collect();
        assert_eq!(next, [0, 30], "oldest first, and nothing unreachable");
        assert!(!spool.has_waiting());
        spool.reset_handed_out();
        let all: Vec<u64> = spool
            .take_oldest(5)
            .unwrap()
            .iter()
            .map(|r| r.row.seqs.0)
            .collect();
        assert_eq!(all, [0, 10, 30]);
    }

    #[test]
    fn at_the_bound_the_oldest_rows_are_dropped_and_reported() {
        let dir = tempfile::tempdir().unwrap();
        let (mut spool, _) =
            Spool::open(&dir.path().join("s.db"), &cfg(4_000, WhenFull::DropOldest)).unwrap();
        spool
            .append(&[row("a", 0, 10), row("a", 10, 10), row("a", 20, 10)])
            .unwrap();
        let report = spool.append(&[row("a", 30, 10), row("a", 40, 10)]).unwrap();
        assert_eq!(report.stored, 2);
        assert_eq!(report.dropped.rows, 2);
        assert_eq!(report.dropped.ranges[0], ("\"a\"".into(), 1, 0, 9));
        assert_eq!(report.dropped.ranges[1], ("\"a\"".into(), 1, 10, 19));
        let left: Vec<_> = spool
            .take_oldest(10)
            .unwrap()
            .iter()
            .map(|r| r.row.seqs.0)
            .collect();
        assert_eq!(left, [20, 30, 40]);
        assert!(spool.stats().bytes <= 4_000);
    }

    #[test]
    fn drop_newest_refuses_what_does_not_fit() {
        let dir = tempfile::tempdir().unwrap();
        let (mut spool, _) =
            Spool::open(&dir.path().join("s.db"), &cfg(2_500, WhenFull::DropNewest)).unwrap();
        let report = spool
            .append(&[row("a", 0, 10), row("a", 10, 10), row("a", 20, 10)])
            .unwrap();
        assert_eq!((report.stored, report.dropped.rows), (2, 1));
        assert_eq!(report.dropped.ranges[0].2, 20);
    }

    #[test]
    fn a_garbage_file_is_moved_aside_and_a_fresh_spool_starts() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("spool.db");
        std::fs::write(&path, vec![0x5a; 8192]).unwrap();
        let (mut spool, report) = Spool::open(&path, &SpoolConfig::default()).unwrap();
        let (aside, why) = report.moved_aside.expect("moved aside");
        assert!(
            aside.to_string_lossy().contains("spool.db.corrupt-"),
            "{}",
            aside.display()
        );
        assert!(aside.exists());
        assert!(!why.is_empty());
        assert_eq!(spool.corruptions(), 1);
        spool.append(&[row("a", 0, 1)]).unwrap();
        assert_eq!(spool.stats().rows, 1);
    }

    #[test]
    fn a_truncated_spool_is_moved_aside() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("spool.db");
        {
            let (mut spool, _) = Spool::open(&path, &SpoolConfig::default()).unwrap();
            let rows: Vec<_> = (0..200).map(|i| row("a", i * 10, 10)).collect();
            spool.append(&rows).unwrap();
        }
        let len = std::fs::metadata(&path).unwrap().len();
        let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        f.set_len(len / 3).unwrap();
        std::fs::remove_file(dir.path().join("spool.db-wal")).ok();
        let (_, report) = Spool::open(&path, &SpoolConfig::default()).unwrap();
        assert!(
            report.moved_aside.is_some(),
            "a truncated file must not be trusted"
        );
    }

    #[test]
    fn space_is_returned_after_draining() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("spool.db");
        let (mut spool, _) = Spool::open(&path, &SpoolConfig::default()).unwrap();
        let rows: Vec<_> = (0..2000).map(|i| row("a", i * 10, 10)).collect();
        spool.append(&rows).unwrap();
        spool.conn_checkpoint();
        let full = std::fs::metadata(&path).unwrap().len();
        for r in spool.take_oldest(2000).unwrap() {
            spool.ack(r.id).unwrap();
        }
        spool.conn_checkpoint();
        let drained = std::fs::metadata(&path).unwrap().len();
        assert!(drained < full / 4, "{drained} bytes left of {full}");
    }

    #[test]
    fn a_realistic_spill_takes_at_most_16_bytes_per_record_on_disk() {
        use edgegw_ringbuf::{TelemetryRecord, Value};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("spool.db");
        let (mut spool, _) = Spool::open(&path, &SpoolConfig::default()).unwrap();
        // 100 tags (f32 values and scaled u16s) polled every 100 ms, 1000 records per batch.
        let (mut seq, mut total) = (0u64, 0u64);
        for batch in 0..200u64 {
            let mut recs = Vec::with_capacity(1000);
            for poll in 0..10u64 {
                for tag in 0..100u32 {
                    let t = batch * 10 + poll;
                    let v = if tag.is_multiple_of(2) {
                        f64::from((t as f32 * 0.01 + tag as f32).sin() * 100.0)
                    } else {
                        f64::from((t % 4000) as u16 + tag as u16) * 0.1
                    };
                    let mut r = TelemetryRecord::new(
                        0,
                        tag,
                        1_795_000_000_000_000_000 + t * 100_000_000,
                        Value::F64(v),
                        0,
                    );
                    r.epoch = 9;
                    r.seq = seq;
                    seq += 1;
                    recs.push(r);
                }
            }
            total += recs.len() as u64;
            let body = encode(&[&recs], |r| {
                if r.tag_id < 100 {
                    Some("\"some_tag_name\"")
                } else {
                    None
                }
            });
            spool
                .append(&[NewRow {
                    source: "\"press-1\"".into(),
                    device: "\"press-1\"".into(),
                    group: "\"fast\"".into(),
                    topic: "edge-gateway/line3/press-1/fast".into(),
                    epoch: 9,
                    seqs: (recs[0].seq, recs[recs.len() - 1].seq),
                    records: recs.len() as u64,
                    oldest_ts: recs[0].timestamp_ns,
                    body,
                }])
                .unwrap();
        }
        spool.conn_checkpoint();
        let on_disk = std::fs::metadata(&path).unwrap().len();
        let per_record = on_disk as f64 / total as f64;
        eprintln!(
            "spool: {total} records in {on_disk} bytes on disk = {per_record:.2} bytes per record"
        );
        assert!(
            per_record <= 16.0,
            "{per_record:.2} bytes per record on disk"
        );
    }
}
