//! Model-based tests: any interleaving of pushes, drops, reads, partial releases, wraps and
//! re-attaches returns exactly what a plain queue returns. Runs under miri on heap rings
//! (`cargo +nightly miri test -p edgegw-ringbuf --test model`).

use std::collections::VecDeque;

use edgegw_ringbuf::{Full, RingOptions, SharedRing, TelemetryRecord, Value};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    Push(u8),
    PushSlice(u8),
    /// `try_push_from_iter` over this many records; what does not fit stays in the iterator.
    PushIter(u8),
    CountDropped(u8),
    /// Read everything, release this share of it (0..=4 quarters).
    Read(u8),
    /// Read at most this many, release all of them.
    ReadAtMost(u8),
    ReattachProducer,
    ReattachConsumer,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (1u8..6).prop_map(Op::Push),
        2 => (0u8..20).prop_map(Op::PushSlice),
        2 => (0u8..20).prop_map(Op::PushIter),
        1 => (1u8..4).prop_map(Op::CountDropped),
        3 => (0u8..=4).prop_map(Op::Read),
        2 => (0u8..10).prop_map(Op::ReadAtMost),
        1 => Just(Op::ReattachProducer),
        1 => Just(Op::ReattachConsumer),
    ]
}

fn record(payload: u64) -> TelemetryRecord {
    TelemetryRecord::new(9, (payload % 7) as u32, payload * 3, Value::U64(payload), 0)
}

/// Runs `ops` against a ring and a `VecDeque` of `(seq, payload)` side by side.
fn check(ring: SharedRing<TelemetryRecord>, ops: &[Op]) {
    let cap = ring.capacity();
    let mut producer = ring.producer().unwrap();
    let mut consumer = ring.consumer().unwrap();
    let mut model: VecDeque<(u64, u64)> = VecDeque::new();
    let (mut next_seq, mut payload, mut dropped) = (0u64, 0u64, 0u64);

    for op in ops {
        match *op {
            Op::Push(n) => {
                for _ in 0..n {
                    payload += 1;
                    match producer.try_push(record(payload)) {
                        Ok(seq) => {
                            assert!(model.len() < cap, "push succeeded on a full ring");
                            assert_eq!(seq, next_seq);
                            model.push_back((seq, payload));
                            next_seq += 1;
                        }
                        Err(Full(back)) => {
                            assert_eq!(model.len(), cap, "push refused with room left");
                            assert_eq!(
                                back,
                                record(payload),
                                "full ring must hand the record back"
                            );
                        }
                    }
                }
            }
            Op::PushSlice(n) => {
                let batch: Vec<_> = (1..=u64::from(n)).map(|i| record(payload + i)).collect();
                let pushed = producer.try_push_slice(&batch);
                assert_eq!(pushed, usize::from(n).min(cap - model.len()));
                for i in 0..pushed as u64 {
                    model.push_back((next_seq, payload + 1 + i));
                    next_seq += 1;
                }
                payload += u64::from(n);
            }
            Op::PushIter(n) => {
                let mut values = (1..u64::from(n) + 1).map(|i| record(payload + i));
                let pushed = producer.try_push_from_iter(values.by_ref());
                assert_eq!(pushed, usize::from(n).min(cap - model.len()));
                assert_eq!(
                    values.clone().count(),
                    usize::from(n) - pushed,
                    "only the records that fit are taken"
                );
                for i in 0..pushed as u64 {
                    model.push_back((next_seq, payload + 1 + i));
                    next_seq += 1;
                }
                payload += u64::from(n);
            }
            Op::CountDropped(n) => {
                producer.count_dropped(u64::from(n));
                next_seq += u64::from(n);
                dropped += u64::from(n);
            }
            Op::Read(quarters) => {
                let batch = consumer.read().unwrap();
                let got: Vec<_> = batch.iter().map(|r| (r.seq, u64_of(r))).collect();
                assert_eq!(got, model.iter().copied().collect::<Vec<_>>());
                let (a, b) = batch.as_slices();
                assert!(b.is_empty() || a.len() + b.len() == got.len());
                let n = got.len() * usize::from(quarters) / 4;
                batch.release(n);
                model.drain(..n);
            }
            Op::ReadAtMost(max) => {
                let batch = consumer.read_at_most(usize::from(max)).unwrap();
                let n = batch.len();
                assert_eq!(n, usize::from(max).min(model.len()));
                let got: Vec<_> = batch.iter().map(|r| (r.seq, u64_of(r))).collect();
                assert_eq!(got, model.iter().take(n).copied().collect::<Vec<_>>());
                batch.release_all();
                model.drain(..n);
            }
            Op::ReattachProducer => {
                drop(producer);
                producer = ring.producer().unwrap();
                assert_eq!(
                    producer.next_seq(),
                    next_seq,
                    "a new producer continues the sequence"
                );
            }
            Op::ReattachConsumer => {
                drop(consumer);
                consumer = ring.consumer().unwrap();
            }
        }
        let stats = ring.stats();
        assert_eq!(stats.occupancy as usize, model.len());
        assert_eq!(stats.dropped_full, dropped);
        assert_eq!(producer.next_seq(), next_seq);
    }
}

fn u64_of(r: &TelemetryRecord) -> u64 {
    match r.value() {
        Some(Value::U64(v)) => v,
        other => panic!("unexpected value {other:?}"),
    }
}

fn cases() -> u32 {
    if cfg!(miri) { 8 } else { 256 }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn heap_ring_behaves_like_a_queue(cap_log in 1u32..5, ops in prop::collection::vec(op(), 1..60)) {
        let ring = SharedRing::create_in_heap(&RingOptions { capacity: 1 << cap_log, epoch: 3, source_id: 9 }).unwrap();
        check(ring, &ops);
    }
}

#[cfg(not(miri))]
proptest! {
    #![proptest_config(ProptestConfig { cases: 64, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn shared_ring_behaves_like_a_queue(cap_log in 1u32..5, ops in prop::collection::vec(op(), 1..60)) {
        let ring = SharedRing::create(&RingOptions { capacity: 1 << cap_log, epoch: 3, source_id: 9 }).unwrap();
        check(ring, &ops);
    }
}

#[test]
fn records_carry_the_ring_epoch_and_consecutive_seqs_across_wraps() {
    let ring = SharedRing::create_in_heap(&RingOptions {
        capacity: 4,
        epoch: 77,
        source_id: 9,
    })
    .unwrap();
    let mut p = ring.producer().unwrap();
    let mut c = ring.consumer().unwrap();
    let mut expect = 0;
    for round in 0..10u64 {
        assert_eq!(p.try_push_slice(&[record(round); 3]), 3);
        let batch = c.read().unwrap();
        for r in batch.iter() {
            assert_eq!((r.epoch, r.seq), (77, expect));
            expect += 1;
        }
        batch.release_all();
    }
}
