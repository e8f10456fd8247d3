//! Benchmark (not a test): how many records per second the synthetic source pushes through a
//! real shared-memory ring to a consumer thread.
//!
//! ```text
//! cargo bench -p edgegw-plc --bench synthetic_throughput -- [--tags 1000] [--seconds 3]
//! ```
//! Two runs: flat out (samples as fast as the ring drains), and paced in real time at
//! `tags × 1000 Hz` (1,000,000 records/s with the default 1000 tags) to show the configured
//! rate is held. Target: ≥ 1,000,000 records/s.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use edgegw_plc::sim::{SyntheticConfig, SyntheticSource};
use edgegw_plc::{Emitter, FullPolicy};
use edgegw_ringbuf::{Consumer, RingOptions, SharedRing, TelemetryRecord};

fn consume(
    mut c: Consumer<TelemetryRecord>,
    done: Arc<AtomicBool>,
    n: Arc<AtomicU64>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        loop {
            let batch = c.read().unwrap();
            let len = batch.len() as u64;
            batch.release_all();
            n.fetch_add(len, Ordering::Relaxed);
            if len == 0 {
                if done.load(Ordering::Relaxed) {
                    break;
                }
                let _ = c.wait(Some(Duration::from_millis(10)));
            }
        }
    })
}

fn main() {
    let mut tags = 1000usize;
    let mut seconds = 3u64;
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        match k.as_str() {
            "--tags" => tags = it.next().unwrap().parse().unwrap(),
            "--seconds" => seconds = it.next().unwrap().parse().unwrap(),
            "--bench" => {}
            other => panic!("unknown argument {other}"),
        }
    }
    for paced in [false, true] {
        let ring = SharedRing::<TelemetryRecord>::create(&RingOptions {
            capacity: 1 << 16,
            epoch: 1,
            source_id: 100,
        })
        .unwrap();
        let (done, consumed) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicU64::new(0)),
        );
        let reader = consume(
            ring.consumer().unwrap(),
            Arc::clone(&done),
            Arc::clone(&consumed),
        );
        let cfg = SyntheticConfig::uniform(100, tags, 1000.0);
        let mut src = SyntheticSource::new(&cfg);
        // Flat out: never drop, wait for the consumer instead (a generous budget per batch).
        let policy = FullPolicy {
            max_wait_per_batch: Duration::from_secs(1),
        };
        let mut emitter = Emitter::new(ring.producer().unwrap(), policy);
        let started = Instant::now();
        let emitted = if paced {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                src.run(
                    &mut emitter,
                    Duration::from_millis(1),
                    tokio::time::sleep(Duration::from_secs(seconds)),
                )
                .await
            })
        } else {
            let mut total = 0;
            while started.elapsed() < Duration::from_secs(seconds) {
                total += src.run_flat_out(100, &mut emitter);
            }
            total
        };
        let wall = started.elapsed().as_secs_f64();
        done.store(true, Ordering::Relaxed);
        reader.join().unwrap();
        let stats = emitter.stats();
        println!(
            "{}: {tags} tags, {emitted} records in {wall:.2} s = {:.2} M records/s; consumer got {}; dropped {}",
            if paced {
                "paced at 1000 Hz per tag"
            } else {
                "flat out"
            },
            emitted as f64 / wall / 1e6,
            consumed.load(Ordering::Relaxed),
            stats.dropped
        );
    }
}
