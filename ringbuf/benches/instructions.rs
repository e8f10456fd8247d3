//! Instructions per record, for callgrind: one queue at a time, producer and consumer taking
//! turns on one thread (push a batch, read and release it), so the count is the work each side
//! does per record without the noise of two CPUs (the cross-process cache traffic is not in it).
//! The same record, capacity and per-record work as `ring.rs`.
//!
//! ```sh
//! cargo bench -p edgegw-ringbuf --bench instructions --no-run
//! B=$(ls -t target/release/deps/instructions-* | grep -v '\.d$' | head -1)
//! for q in ring1 ring64 rtrb1 rtrb64; do
//!   valgrind --tool=callgrind --callgrind-out-file=/dev/null "$B" $q 0 2>&1 | grep refs
//!   valgrind --tool=callgrind --callgrind-out-file=/dev/null "$B" $q 1000000 2>&1 | grep refs
//! done
//! ```
//! (instructions per record = (refs at 1M − refs at 0) / 1M). Without valgrind it just runs.

use edgegw_ringbuf::{RingOptions, SharedRing, TelemetryRecord, Value};

const CAP: usize = 4096;
const BATCH: u64 = 64;

fn rec(i: u64) -> TelemetryRecord {
    TelemetryRecord::new(1, i as u32, i, Value::U64(i), 0)
}

fn ring(n: u64, batch: u64) -> u64 {
    let ring = SharedRing::<TelemetryRecord>::create(&RingOptions {
        capacity: CAP,
        epoch: 1,
        source_id: 1,
    })
    .expect("ring");
    let mut c = ring.consumer().expect("consumer");
    let mut p = ring.producer().expect("producer");
    let (mut sent, mut sum) = (0u64, 0u64);
    while sent < n {
        if batch == 1 {
            p.try_push(rec(sent)).expect("room");
            sent += 1;
        } else {
            let end = n.min(sent + batch);
            sent += p.try_push_from_iter((sent..end).map(rec)) as u64;
        }
        let b = c.read().expect("read");
        sum += b.iter().map(|r| u64::from(r.tag_id)).sum::<u64>();
        b.release_all();
    }
    sum
}

fn rtrb(n: u64, batch: u64) -> u64 {
    let (mut p, mut c) = rtrb::RingBuffer::<TelemetryRecord>::new(CAP);
    let (mut sent, mut sum) = (0u64, 0u64);
    while sent < n {
        if batch == 1 {
            p.push(rec(sent)).expect("room");
            sent += 1;
        } else {
            let want = (n - sent).min(batch) as usize;
            let chunk = p.write_chunk_uninit(want).expect("room");
            sent += chunk.fill_from_iter((sent..).map(rec)) as u64;
        }
        let k = c.slots();
        let chunk = c.read_chunk(k).expect("read_chunk");
        let (a, b) = chunk.as_slices();
        sum += a.iter().chain(b).map(|r| u64::from(r.tag_id)).sum::<u64>();
        chunk.commit_all();
    }
    sum
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let queue = args.first().map_or("ring64", String::as_str);
    let n: u64 = args
        .get(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);
    let sum = match queue {
        "ring1" => ring(n, 1),
        "ring64" => ring(n, BATCH),
        "rtrb1" => rtrb(n, 1),
        "rtrb64" => rtrb(n, BATCH),
        other => panic!("unknown queue {other:?}: ring1 | ring64 | rtrb1 | rtrb64"),
    };
    println!("{queue} {n} records, checksum {sum}");
}
