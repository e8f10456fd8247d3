//! Helpers of the adapter's tests: the real peers (pymodbus, socat) come from the workspace's
//! `edgegw-tests` crate; the ring and the link under test are set up here. A
//! missing peer fails the test with a message saying what to install: these tests never skip.
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use edgegw_plc::modbus::{LinkCounters, ModbusLink, run_link};
use edgegw_plc::{Emitter, FullPolicy, Quality};
use edgegw_ringbuf::{Consumer, Producer, RingOptions, SharedRing, TelemetryRecord};

/// A temporary directory removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let p = std::env::temp_dir().join(format!(
            "edgegw-plc-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&p).unwrap();
        Self(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if !self.0.as_os_str().is_empty() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// A shared-memory ring as the gateway makes it, with its producer and consumer.
pub fn ring(capacity: usize) -> (Producer<TelemetryRecord>, Consumer<TelemetryRecord>) {
    let ring = SharedRing::<TelemetryRecord>::create(&RingOptions {
        capacity,
        epoch: 1,
        source_id: 7,
    })
    .expect("create ring");
    let p = ring.producer().expect("producer");
    let c = ring.consumer().expect("consumer");
    (p, c)
}

/// Moves everything readable from the ring into `out`.
pub fn drain(c: &mut Consumer<TelemetryRecord>, out: &mut Vec<TelemetryRecord>) {
    let batch = c.read().expect("ring intact");
    let (a, b) = batch.as_slices();
    out.extend_from_slice(a);
    out.extend_from_slice(b);
    batch.release_all();
}

/// A link polled in the background into a real ring; records are collected by the caller.
pub struct Running {
    stop: Arc<tokio::sync::Notify>,
    task: tokio::task::JoinHandle<Emitter<Producer<TelemetryRecord>>>,
    pub counters: Arc<LinkCounters>,
    pub consumer: Consumer<TelemetryRecord>,
    pub records: Vec<TelemetryRecord>,
}

impl Running {
    pub fn start(link: ModbusLink) -> Self {
        let (p, consumer) = ring(1 << 16);
        let stop = Arc::new(tokio::sync::Notify::new());
        let counters = Arc::new(LinkCounters::default());
        let task = {
            let (stop, counters) = (Arc::clone(&stop), Arc::clone(&counters));
            tokio::spawn(async move {
                let mut emitter = Emitter::new(p, FullPolicy::default());
                run_link(&link, &mut emitter, &counters, stop.notified()).await;
                emitter
            })
        };
        Self {
            stop,
            task,
            counters,
            consumer,
            records: Vec::new(),
        }
    }

    /// Collects records until `done(records)` holds; panics after `timeout` with what arrived.
    pub async fn until(
        &mut self,
        what: &str,
        timeout: Duration,
        done: impl Fn(&[TelemetryRecord]) -> bool,
    ) {
        let deadline = Instant::now() + timeout;
        loop {
            drain(&mut self.consumer, &mut self.records);
            if done(&self.records) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; counters {:?}; records:\n{:#?}",
                self.counters.snapshot(),
                self.records.iter().rev().take(20).collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Keeps collecting for `d`.
    pub async fn collect_for(&mut self, d: Duration) {
        let deadline = Instant::now() + d;
        while Instant::now() < deadline {
            drain(&mut self.consumer, &mut self.records);
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        drain(&mut self.consumer, &mut self.records);
    }

    pub async fn stop(mut self) -> (Vec<TelemetryRecord>, Emitter<Producer<TelemetryRecord>>) {
        self.stop.notify_one();
        let emitter = self.task.await.expect("link task");
        drain(&mut self.consumer, &mut self.records);
        (self.records, emitter)
    }
}

/// Records of one tag of one source, in order.
pub fn of_tag(records: &[TelemetryRecord], source_id: u32, tag_id: u32) -> Vec<TelemetryRecord> {
    records
        .iter()
        .filter(|r| r.source_id == source_id && r.tag_id == tag_id)
        .copied()
        .collect()
}

/// The quality of a record.
pub fn quality(r: &TelemetryRecord) -> Quality {
    Quality::from_code(
        r.quality,
        if r.kind == edgegw_ringbuf::ValueKind::Str as u8 {
            0
        } else {
            r.detail
        },
    )
    .unwrap_or_else(|| panic!("unknown quality code {:#06x}", r.quality))
}

/// Reassembles the string carried by the chunk run that ends at the last record of `records`.
pub fn last_text(records: &[TelemetryRecord]) -> String {
    let end = records
        .iter()
        .rposition(|r| r.flags & edgegw_ringbuf::flags::CONTINUED == 0)
        .expect("a final chunk");
    let mut start = end;
    while start > 0 && records[start - 1].flags & edgegw_ringbuf::flags::CONTINUED != 0 {
        start -= 1;
    }
    let total = records[end].detail as usize;
    let mut bytes: Vec<u8> = records[start..=end].iter().flat_map(|r| r.value).collect();
    bytes.truncate(total);
    String::from_utf8(bytes).expect("utf-8")
}
