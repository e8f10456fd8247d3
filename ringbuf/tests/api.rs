//! The ring's contract at its edges: attach checks, claims, crash recovery of the sequence,
//! corrupt indices, full rings and wake-ups. In-process, on real memfd segments.

use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::time::{Duration, Instant};

use bytemuck::{Pod, Zeroable};
use edgegw_ringbuf::{
    Full, PeerStatus, RingAttachError, RingClaimError, RingOptions, Sequenced, SharedRing,
    TelemetryRecord, Value,
};

const OPTS: RingOptions = RingOptions {
    capacity: 8,
    epoch: 5,
    source_id: 2,
};

fn rec(v: u64) -> TelemetryRecord {
    TelemetryRecord::new(2, 1, v, Value::U64(v), 0)
}

fn dup_fds(ring: &SharedRing<TelemetryRecord>) -> [OwnedFd; 3] {
    ring.raw_fds().unwrap().map(|fd| {
        // SAFETY: the ring keeps `fd` open for the duration of this borrow.
        let fd = unsafe { BorrowedFd::borrow_raw(fd) };
        fd.try_clone_to_owned().unwrap()
    })
}

/// A mapping of the ring's memfd, for tests that play a broken peer.
fn raw_map(ring: &SharedRing<TelemetryRecord>) -> memmap2::MmapRaw {
    let [m, ..] = dup_fds(ring);
    memmap2::MmapRaw::map_raw(&m).unwrap()
}

/// Offsets from `layout.rs`: head at 128, tail at 256, seq_floor at 384.
const HEAD: usize = 128;
const SEQ_FLOOR: usize = 384;

fn poke_u64(map: &memmap2::MmapRaw, offset: usize, v: u64) {
    // SAFETY: `offset` is an 8-aligned in-bounds field of the control block; the test plays a
    // peer process that writes it (with the same instruction width as the atomics).
    unsafe { map.as_mut_ptr().add(offset).cast::<u64>().write_volatile(v) };
}

#[test]
fn attach_from_fds_sees_the_creators_records() {
    let ring = SharedRing::<TelemetryRecord>::create(&OPTS).unwrap();
    let [m, d, s] = dup_fds(&ring);
    let other = SharedRing::<TelemetryRecord>::from_fds(m, d, s).unwrap();
    assert_eq!(
        (other.capacity(), other.epoch(), other.source_id()),
        (8, 5, 2)
    );
    let mut p = ring.producer().unwrap();
    p.try_push(rec(42)).unwrap();
    let mut c = other.consumer().unwrap();
    let batch = c.read().unwrap();
    assert_eq!(batch.iter().next().unwrap().value(), Some(Value::U64(42)));
}

#[derive(Clone, Copy, Pod, Zeroable)]
#[repr(C)]
struct OtherRecord {
    seq: u64,
    payload: [u8; 40],
}

impl Sequenced for OtherRecord {
    const LAYOUT_ID: u32 = 0x4f54_0001;
    fn stamp(&mut self, _epoch: u64, seq: u64) {
        self.seq = seq;
    }
    fn seq(&self) -> u64 {
        self.seq
    }
}

#[test]
fn attach_rejects_a_ring_of_another_record_type() {
    let ring = SharedRing::<TelemetryRecord>::create(&OPTS).unwrap();
    let [m, d, s] = dup_fds(&ring);
    let err = SharedRing::<OtherRecord>::from_fds(m, d, s).unwrap_err();
    assert!(
        matches!(err, RingAttachError::RecordType { found_size: 48, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("layout id"), "{err}");
}

#[test]
fn attach_rejects_a_segment_without_the_magic_and_an_unsealed_memfd() {
    use nix::fcntl::{FcntlArg, SealFlag, fcntl};
    use nix::sys::memfd::{MFdFlags, memfd_create};
    let ring = SharedRing::<TelemetryRecord>::create(&OPTS).unwrap();
    let [_, d, s] = dup_fds(&ring);

    let unsealed = memfd_create("t", MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING).unwrap();
    nix::unistd::ftruncate(&unsealed, 4096).unwrap();
    let err = SharedRing::<TelemetryRecord>::from_fds(
        unsealed,
        d.try_clone().unwrap(),
        s.try_clone().unwrap(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("not sealed"), "{err}");

    let garbage = memfd_create("t", MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING).unwrap();
    nix::unistd::write(&garbage, &[0xAB; 4096]).unwrap();
    fcntl(&garbage, FcntlArg::F_ADD_SEALS(SealFlag::F_SEAL_SHRINK)).unwrap();
    let err = SharedRing::<TelemetryRecord>::from_fds(garbage, d, s).unwrap_err();
    assert!(matches!(err, RingAttachError::BadMagic { .. }), "{err}");
}

#[test]
fn a_ring_has_one_producer_and_one_consumer_at_a_time() {
    let ring = SharedRing::<TelemetryRecord>::create(&OPTS).unwrap();
    assert_eq!(ring.producer_status(), PeerStatus::Vacant);
    let p = ring.producer().unwrap();
    assert_eq!(
        ring.producer_status(),
        PeerStatus::Alive {
            pid: std::process::id()
        }
    );
    let err = ring.producer().unwrap_err();
    assert!(
        matches!(
            err,
            RingClaimError::Busy {
                side: "producer",
                ..
            }
        ),
        "{err}"
    );
    let c = ring.consumer().unwrap();
    assert!(ring.consumer().is_err());
    drop((p, c));
    assert_eq!(ring.producer_status(), PeerStatus::Vacant);
    ring.producer().unwrap();
    ring.consumer().unwrap();
}

#[test]
fn a_new_producer_continues_from_the_last_published_record_above_a_lagging_floor() {
    let ring = SharedRing::<TelemetryRecord>::create(&OPTS).unwrap();
    let mut p = ring.producer().unwrap();
    for v in 0..5 {
        assert_eq!(p.try_push(rec(v)).unwrap(), v);
    }
    drop(p);
    // Pushes do not raise the floor; make it lag further, as after a crash.
    poke_u64(&raw_map(&ring), SEQ_FLOOR, 3);
    let mut p = ring.producer().unwrap();
    assert_eq!(p.next_seq(), 5);
    assert_eq!(p.try_push(rec(5)).unwrap(), 5);
    assert_eq!(ring.stats().producer_attaches, 2);
}

#[test]
fn dropped_records_are_counted_and_leave_a_gap_in_seq() {
    let ring = SharedRing::<TelemetryRecord>::create(&OPTS).unwrap();
    let mut p = ring.producer().unwrap();
    let mut c = ring.consumer().unwrap();
    p.try_push(rec(0)).unwrap();
    p.count_dropped(3);
    p.try_push(rec(1)).unwrap();
    let seqs: Vec<u64> = c.read().unwrap().iter().map(|r| r.seq).collect();
    assert_eq!(seqs, [0, 4]);
    assert_eq!(ring.stats().dropped_full, 3);
}

#[test]
fn a_full_ring_hands_the_record_back_and_push_timeout_gives_up() {
    let ring = SharedRing::<TelemetryRecord>::create(&OPTS).unwrap();
    let mut p = ring.producer().unwrap();
    assert_eq!(p.try_push_slice(&[rec(0); 8]), 8);
    assert_eq!(p.try_push(rec(9)), Err(Full(rec(9))));
    let start = Instant::now();
    assert_eq!(
        p.push_timeout(rec(9), Duration::from_millis(30)),
        Err(Full(rec(9)))
    );
    assert!(start.elapsed() >= Duration::from_millis(30));
}

#[test]
fn a_producer_waiting_for_space_is_woken_by_a_release() {
    let ring = SharedRing::<TelemetryRecord>::create(&OPTS).unwrap();
    let mut p = ring.producer().unwrap();
    assert_eq!(p.try_push_slice(&[rec(0); 8]), 8);
    let consumer_ring = ring.clone();
    let t = std::thread::spawn(move || {
        let mut c = consumer_ring.consumer().unwrap();
        std::thread::sleep(Duration::from_millis(20));
        c.read().unwrap().release(1);
    });
    assert_eq!(p.push_timeout(rec(9), Duration::from_secs(30)), Ok(8));
    t.join().unwrap();
}

#[test]
fn corrupt_indices_are_reported_not_followed() {
    let ring = SharedRing::<TelemetryRecord>::create(&OPTS).unwrap();
    let mut c = ring.consumer().unwrap();
    poke_u64(&raw_map(&ring), HEAD, 1_000);
    let err = c.read().unwrap_err();
    assert_eq!((err.head, err.tail, err.capacity), (1_000, 0, 8));
    let err = ring.producer().unwrap_err();
    assert!(matches!(err, RingClaimError::Corrupt(_)), "{err}");
}

#[test]
fn a_parked_consumer_wakes_on_push_and_a_busy_one_costs_no_wakeups() {
    let ring = SharedRing::<TelemetryRecord>::create(&RingOptions {
        capacity: 1024,
        ..OPTS
    })
    .unwrap();
    let mut c = ring.consumer().unwrap();
    assert!(
        !c.wait(Some(Duration::from_millis(5))).unwrap(),
        "nothing was pushed"
    );

    let producer_ring = ring.clone();
    let t = std::thread::spawn(move || {
        let mut p = producer_ring.producer().unwrap();
        std::thread::sleep(Duration::from_millis(20));
        p.try_push(rec(1)).unwrap();
        p
    });
    assert!(c.wait(Some(Duration::from_secs(30))).unwrap());
    let mut p = t.join().unwrap();
    assert_eq!(ring.stats().wakeups_sent, 1);
    c.read().unwrap().release_all();

    // The consumer is not parked: a thousand pushes send no wake-up.
    for v in 0..1000 {
        p.try_push(rec(v)).unwrap();
    }
    assert_eq!(ring.stats().wakeups_sent, 1);
}

#[test]
fn a_consumer_spinning_within_its_limit_takes_records_without_a_wake_up() {
    let ring = SharedRing::<TelemetryRecord>::create(&OPTS).unwrap();
    let mut c = ring.consumer().unwrap();
    // Far longer than the producer's delay: the wait must end in the spin, not in a park.
    c.set_spin_limit(Duration::from_secs(20));
    let producer_ring = ring.clone();
    let t = std::thread::spawn(move || {
        let mut p = producer_ring.producer().unwrap();
        std::thread::sleep(Duration::from_millis(20));
        p.try_push(rec(1)).unwrap();
        p
    });
    assert!(c.wait(Some(Duration::from_secs(30))).unwrap());
    let _p = t.join().unwrap();
    assert_eq!(c.read().unwrap().len(), 1);
    assert_eq!(
        ring.stats().wakeups_sent,
        0,
        "a spinning consumer never parks"
    );
}

#[test]
fn a_consumer_with_no_spin_limit_parks_at_once_and_is_woken() {
    let ring = SharedRing::<TelemetryRecord>::create(&OPTS).unwrap();
    let mut p = ring.producer().unwrap();
    let consumer_ring = ring.clone();
    let (tid_tx, tid_rx) = std::sync::mpsc::channel();
    let t = std::thread::spawn(move || {
        let mut c = consumer_ring.consumer().unwrap();
        c.set_spin_limit(Duration::ZERO);
        assert_eq!(c.spin_limit(), Duration::ZERO);
        tid_tx.send(nix::unistd::gettid()).unwrap();
        c.wait(Some(Duration::from_secs(30))).unwrap()
    });
    // Push only once the consumer thread is blocked in poll (parked, not spinning). Sleeping
    // (state S) alone is not enough: under qemu-user a thread also sleeps on the emulator's
    // own locks, before it has parked. /proc/<tid>/syscall names the host's syscall: poll (7)
    // or ppoll (271) on an x86_64 host (also for an aarch64 guest's ppoll under qemu), ppoll
    // (73) on an aarch64 host.
    let tid = tid_rx.recv().unwrap();
    let syscall = format!("/proc/self/task/{tid}/syscall");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !std::fs::read_to_string(&syscall)
        .unwrap()
        .split_whitespace()
        .next()
        .is_some_and(|nr| matches!(nr, "7" | "271" | "73"))
    {
        assert!(
            Instant::now() < deadline,
            "the consumer never went to sleep"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    p.try_push(rec(1)).unwrap();
    assert!(t.join().unwrap(), "woken with a record");
    assert_eq!(ring.stats().wakeups_sent, 1);
}

#[test]
fn counted_drops_survive_a_new_producer_whether_or_not_records_followed_them() {
    let ring = SharedRing::<TelemetryRecord>::create(&OPTS).unwrap();
    let mut c = ring.consumer().unwrap();
    let mut p = ring.producer().unwrap();
    p.try_push(rec(0)).unwrap();
    p.count_dropped(3);
    assert_eq!(p.try_push(rec(1)).unwrap(), 4, "seq 1-3 skipped");
    drop(p);
    // The last published record (seq 4) is above the floor the drop left (4).
    let mut p = ring.producer().unwrap();
    assert_eq!(p.next_seq(), 5);
    p.count_dropped(2);
    drop(p);
    // Now the floor (7) is above the last published record.
    let mut p = ring.producer().unwrap();
    assert_eq!(p.try_push(rec(2)).unwrap(), 7);
    let seqs: Vec<_> = c.read().unwrap().iter().map(|r| r.seq).collect();
    assert_eq!(seqs, [0, 4, 7]);
    assert_eq!(ring.stats().dropped_full, 5);
}

#[test]
fn push_from_iter_builds_records_in_place_and_takes_only_what_fits() {
    let ring = SharedRing::<TelemetryRecord>::create(&OPTS).unwrap();
    let mut p = ring.producer().unwrap();
    let mut c = ring.consumer().unwrap();
    let mut values = (0..12).map(rec);
    assert_eq!(p.try_push_from_iter(values.by_ref()), 8, "capacity 8");
    assert_eq!(values.clone().count(), 4, "the rest stays in the iterator");
    assert_eq!(p.try_push_from_iter(values.by_ref()), 0, "full");
    let b = c.read().unwrap();
    let got: Vec<_> = b.iter().map(|r| (r.epoch, r.seq, r.value())).collect();
    let want: Vec<_> = (0..8).map(|v| (5, v, Some(Value::U64(v)))).collect();
    assert_eq!(got, want);
    b.release(3);
    assert_eq!(p.try_push_from_iter(values.by_ref()), 3);
    assert_eq!(p.try_push_from_iter(std::iter::empty()), 0);
    assert_eq!(p.next_seq(), 11);
}

#[tokio::test(flavor = "current_thread")]
async fn an_async_consumer_wakes_on_push_from_another_thread() {
    let ring = SharedRing::<TelemetryRecord>::create(&OPTS).unwrap();
    let mut c = ring.consumer().unwrap();
    let producer_ring = ring.clone();
    let t = std::thread::spawn(move || {
        let mut p = producer_ring.producer().unwrap();
        for v in 0..20 {
            p.push_timeout(rec(v), Duration::from_secs(30)).unwrap();
            std::thread::sleep(Duration::from_millis(1));
        }
    });
    let mut seen = 0;
    while seen < 20 {
        tokio::time::timeout(Duration::from_secs(30), c.readable())
            .await
            .unwrap()
            .unwrap();
        let batch = c.read().unwrap();
        for r in batch.iter() {
            assert_eq!(r.seq, seen);
            seen += 1;
        }
        batch.release_all();
    }
    t.join().unwrap();
}

#[test]
fn ring_fds_are_close_on_exec_in_the_creator() {
    use nix::fcntl::{FcntlArg, FdFlag, fcntl};
    let ring = SharedRing::<TelemetryRecord>::create(&OPTS).unwrap();
    for fd in ring.raw_fds().unwrap() {
        // SAFETY: the ring keeps `fd` open for the duration of this borrow.
        let fd = unsafe { BorrowedFd::borrow_raw(fd) };
        let flags = FdFlag::from_bits_truncate(fcntl(fd, FcntlArg::F_GETFD).unwrap());
        assert!(
            flags.contains(FdFlag::FD_CLOEXEC),
            "fd {} leaks into children",
            fd.as_raw_fd()
        );
    }
}
