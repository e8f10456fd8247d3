//! Spool throughput: spilling batches (encode + SQLite append) and replaying them (read +
//! decode + render the MQTT payload + delete), for both durability settings.
//!
//! Run: `cargo bench -p edgegw --bench spool`.

use std::time::Instant;

use edgegw::forward::encode::{BatchHeader, json_string, render_batch};
use edgegw::spool::{Durability, NewRow, Spool, SpoolConfig, decode, encode};
use edgegw_ringbuf::{TelemetryRecord, Value};

const BATCHES: u64 = 1000;
const PER_BATCH: u64 = 1000;

fn batch(b: u64) -> Vec<TelemetryRecord> {
    (0..PER_BATCH)
        .map(|i| {
            let tag = (i % 100) as u32;
            let t = b * 10 + i / 100;
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
            r.epoch = 1;
            r.seq = b * PER_BATCH + i;
            r
        })
        .collect()
}

fn main() {
    let names: Vec<Box<str>> = (0..100)
        .map(|i| json_string(&format!("tag_{i:03}")))
        .collect();
    let batches: Vec<_> = (0..BATCHES).map(batch).collect();
    let total = (BATCHES * PER_BATCH) as f64;
    println!(
        "spool benchmark: {BATCHES} batches of {PER_BATCH} records (100 tags, f32 and scaled u16 values)"
    );
    for durability in [Durability::Normal, Durability::Full] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("spool.db");
        let cfg = SpoolConfig {
            durability,
            ..SpoolConfig::default()
        };
        let (mut spool, _) = Spool::open(&path, &cfg).unwrap();

        let start = Instant::now();
        for chunk in batches.chunks(16) {
            let rows: Vec<NewRow> = chunk
                .iter()
                .map(|recs| NewRow {
                    source: "\"press-1\"".into(),
                    device: "\"press-1\"".into(),
                    group: "\"fast\"".into(),
                    topic: "edge-gateway/line3/press-1/fast".into(),
                    epoch: 1,
                    seqs: (recs[0].seq, recs[recs.len() - 1].seq),
                    records: recs.len() as u64,
                    oldest_ts: recs[0].timestamp_ns,
                    body: encode(&[recs], |r| names.get(r.tag_id as usize).map(|n| &**n)),
                })
                .collect();
            spool.append(&rows).unwrap();
        }
        let spill = total / start.elapsed().as_secs_f64();
        let stats = spool.stats();
        let on_disk = stats.file_bytes as f64 / total;

        let (gw, src, dev, grp) = (
            json_string("gw"),
            json_string("press-1"),
            json_string("press-1"),
            json_string("fast"),
        );
        let start = Instant::now();
        let mut payload_bytes = 0usize;
        loop {
            let rows = spool.take_oldest(32).unwrap();
            if rows.is_empty() {
                break;
            }
            for row in rows {
                let (recs, table) = decode(&row.row.body).unwrap();
                let header = BatchHeader {
                    gateway: &gw,
                    source: &src,
                    device: &dev,
                    group: &grp,
                    epoch: row.row.epoch,
                    replayed: true,
                };
                let mut out = Vec::with_capacity(recs.len() * 80);
                render_batch(&mut out, &header, &recs, |r| {
                    table
                        .iter()
                        .find(|(_, t, _)| *t == r.tag_id)
                        .map(|(_, _, n)| &**n)
                });
                payload_bytes += out.len();
                spool.ack(row.id).unwrap();
            }
        }
        let replay = total / start.elapsed().as_secs_f64();
        println!(
            "durability {durability:?}: spill {spill:>10.0} records/s, replay (decode + JSON + delete) {replay:>10.0} records/s, \
             {on_disk:.2} bytes per record on disk (incl. WAL), JSON {:.0} bytes per record",
            payload_bytes as f64 / total
        );
    }
}
