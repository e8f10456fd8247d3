//! Cross-process tests of the real shared mapping: producers in other processes (forked, or
//! exec'd with the ring handed over), SIGKILLed at random moments and restarted, while this
//! process consumes.
//!
//! Every record is checked: epoch, `seq` exactly +1 across every restart (no gap, no duplicate)
//! and its contents against a checksum derived from `seq` (no torn record). After a kill the
//! producer must read as `Dead`, while it runs as `Alive`; a new producer must continue exactly
//! after the last record the dead one published; `producer_attaches` must count every claim.
//!
//! Each scenario runs in a process of its own (see `xproc`), under a watchdog. Knobs:
//! - `RINGBUF_STRESS_RECORDS`: records per stress scenario (default 10 million);
//! - `RINGBUF_STRESS_WATCHDOG_SECS`: time limit per scenario (default 120);
//! - `RINGBUF_STRESS_SEED`: replay the random choices of a run (each run prints its seed);
//! - `EDGEGW_TEST_EXEC_WRAPPER`: prefix for re-executing this binary, e.g.
//!   `qemu-aarch64 -L /usr/aarch64-linux-gnu` under qemu-user.

mod xproc;

use std::os::fd::{AsRawFd, IntoRawFd, OwnedFd};
use std::time::{Duration, Instant};

use edgegw_ringbuf::{
    Consumer, PeerStatus, Producer, RING_FDS_ENV, RingOptions, SharedRing, TelemetryRecord, Value,
};
use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{ForkResult, Pid, fork};
use xproc::{Rng, assert_safe_to_fork, check, mix, record_for, run_isolated, watchdog};

const EPOCH: u64 = 0xE90C_0001;
const CAPACITY: usize = 4096;
/// Every stress scenario kills at least this many producers, however few records it moves.
const MIN_KILLS: u64 = 20;

// ---- the tests -------------------------------------------------------------------------------

#[test]
fn forked_producers_killed_at_random_never_tear_gap_or_repeat_blocking_consumer() {
    run_isolated("stress:fork:blocking", outer_limit());
}

#[test]
fn forked_producers_killed_at_random_never_tear_gap_or_repeat_async_consumer() {
    run_isolated("stress:fork:async", outer_limit());
}

#[test]
fn execed_producers_killed_at_random_never_tear_gap_or_repeat_blocking_consumer() {
    run_isolated("stress:exec:blocking", outer_limit());
}

#[test]
fn execed_producers_killed_at_random_never_tear_gap_or_repeat_async_consumer() {
    run_isolated("stress:exec:async", outer_limit());
}

#[test]
fn a_record_pushed_by_a_forked_child_is_read_by_the_parent() {
    run_isolated("map-shared", outer_limit());
}

#[test]
fn the_same_proof_fails_for_a_private_anonymous_mapping() {
    run_isolated("map-private-control", outer_limit());
}

#[test]
fn from_inherited_rejects_a_missing_or_malformed_env_var_and_fds_of_the_wrong_kind() {
    run_isolated("refusals", outer_limit());
}

#[test]
fn a_consumer_denied_membarrier_by_seccomp_is_woken_for_every_record() {
    run_isolated("seccomp:before-attach", outer_limit());
}

#[test]
fn a_consumer_that_loses_membarrier_after_attaching_is_woken_for_every_record() {
    run_isolated("seccomp:after-attach", outer_limit());
}

#[test]
fn a_consumer_parked_without_a_timeout_is_woken_for_every_single_record() {
    run_isolated("ping-pong", outer_limit());
}

#[test]
fn claiming_either_side_maps_the_whole_ring_into_that_process() {
    run_isolated("populate", outer_limit());
}

/// The entry point of every child process these tests start; a no-op in a normal test run.
#[test]
fn child_entry() {
    let Some(role) = xproc::role() else {
        return;
    };
    let parts: Vec<&str> = role.split(':').collect();
    match parts.as_slice() {
        ["stress", spawn, wait] => stress(Spawn::parse(spawn), WaitKind::parse(wait)),
        ["producer", mode] => exec_producer(PushMode::parse(mode)),
        ["map-shared"] => forked_write_is_read_by_parent(),
        ["map-private-control"] => forked_write_is_not_seen_in_a_private_mapping(),
        ["refusals"] => from_inherited_refusals(),
        ["ping-pong"] => ping_pong(),
        ["populate"] => claims_populate(),
        ["seccomp", when] => seccomp_consumer(*when == "after-attach"),
        _ => panic!("unknown role {role:?}"),
    }
}

/// The scenario's own watchdog fails it with a message; this one kills it if it hangs in a
/// syscall.
fn outer_limit() -> Duration {
    watchdog() + Duration::from_secs(15)
}

// ---- producers -------------------------------------------------------------------------------

/// How a producer child pushes; children cycle through all of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PushMode {
    /// `try_push`, waiting for space when full.
    One,
    /// `try_push_slice` with 64 records.
    Slice64,
    /// `try_push_slice` with 1 to 512 records.
    SliceRandom,
    /// `push_timeout`.
    Timeout,
}

impl PushMode {
    const ALL: [PushMode; 4] = [Self::One, Self::Slice64, Self::SliceRandom, Self::Timeout];

    fn name(self) -> &'static str {
        match self {
            Self::One => "one",
            Self::Slice64 => "slice64",
            Self::SliceRandom => "slice-random",
            Self::Timeout => "timeout",
        }
    }

    fn parse(s: &str) -> Self {
        *Self::ALL
            .iter()
            .find(|m| m.name() == s)
            .unwrap_or_else(|| panic!("push mode {s:?}"))
    }
}

/// Pushes records derived from the seq the ring will stamp, until killed.
fn produce_forever(mut p: Producer<TelemetryRecord>, mode: PushMode) -> ! {
    let mut rng = Rng::new(mix(u64::from(std::process::id())));
    let mut batch = Vec::with_capacity(512);
    let nap = Duration::from_millis(50);
    loop {
        match mode {
            PushMode::One => {
                if p.try_push(record_for(p.next_seq())).is_err() {
                    p.wait_for_space(1, nap);
                }
            }
            PushMode::Timeout => {
                let _ = p.push_timeout(record_for(p.next_seq()), nap);
            }
            PushMode::Slice64 | PushMode::SliceRandom => {
                let len = if mode == PushMode::Slice64 {
                    64
                } else {
                    1 + rng.below(512)
                };
                let next = p.next_seq();
                batch.clear();
                batch.extend((next..next + len).map(record_for));
                let mut done = 0;
                while done < batch.len() {
                    done += p.try_push_slice(&batch[done..]);
                    if done < batch.len() {
                        p.wait_for_space((batch.len() - done) as u64, nap);
                    }
                }
            }
        }
    }
}

/// An exec'd producer: adopts the inherited ring and claims its producer side.
fn exec_producer(mode: PushMode) -> ! {
    let ring = SharedRing::<TelemetryRecord>::from_inherited().expect("adopting the ring");
    let p = ring.producer().expect("claiming the producer side");
    produce_forever(p, mode)
}

#[derive(Debug, Clone, Copy)]
enum Spawn {
    Fork,
    Exec,
}

impl Spawn {
    fn parse(s: &str) -> Self {
        match s {
            "fork" => Self::Fork,
            "exec" => Self::Exec,
            _ => panic!("spawn {s:?}"),
        }
    }
}

/// Starts a producer process; returns its pid.
fn spawn_producer(ring: &SharedRing<TelemetryRecord>, how: Spawn, mode: PushMode) -> Pid {
    match how {
        Spawn::Fork => {
            assert_safe_to_fork();
            let parent = nix::unistd::getpid();
            // SAFETY: this process runs only this scenario (`assert_safe_to_fork`: libtest's main
            // thread is blocked waiting for the test and holds no lock). The child touches only
            // the ring (its mapping, and open/fcntl on its memfd to claim the producer side) and
            // glibc's malloc, which is reset in the child; it never returns into libtest: it
            // pushes until it is killed, or `_exit`s.
            match unsafe { fork() }.expect("fork") {
                ForkResult::Child => {
                    xproc::die_with_parent(parent);
                    match ring.producer() {
                        Ok(p) => produce_forever(p, mode),
                        // SAFETY: `_exit` is async-signal-safe and skips libtest's exit path.
                        Err(_) => unsafe { nix::libc::_exit(3) },
                    }
                }
                ForkResult::Parent { child } => child,
            }
        }
        Spawn::Exec => {
            let mut cmd = xproc::self_command(&format!("producer:{}", mode.name()));
            cmd.stdout(std::process::Stdio::null());
            ring.pass_to_child(&mut cmd).expect("handing the ring over");
            xproc::die_with_parent_on_exec(&mut cmd);
            #[expect(
                clippy::zombie_processes,
                reason = "reaped by pid with waitpid, like the forked producers (kill_and_reap)"
            )]
            let child = cmd.spawn().expect("spawning an exec'd producer");
            Pid::from_raw(child.id() as i32)
        }
    }
}

/// Kills `pid` with SIGKILL and reaps it; it must not have died any other way.
fn kill_and_reap(pid: Pid) {
    kill(pid, Signal::SIGKILL).expect("SIGKILL");
    match waitpid(pid, None).expect("waitpid") {
        WaitStatus::Signaled(_, Signal::SIGKILL, _) => {}
        other => panic!("producer {pid} ended by itself before the kill: {other:?}"),
    }
}

// ---- the consumer ----------------------------------------------------------------------------

#[derive(Debug, Clone, Copy)]
enum WaitKind {
    /// `Consumer::wait` (parks on the eventfd with poll).
    Blocking,
    /// `Consumer::readable` in a tokio current-thread runtime.
    Async,
}

impl WaitKind {
    fn parse(s: &str) -> Self {
        match s {
            "blocking" => Self::Blocking,
            "async" => Self::Async,
            _ => panic!("wait kind {s:?}"),
        }
    }
}

/// The parent's consumer: reads, checks every record, releases (sometimes only a prefix).
struct Reader {
    consumer: Consumer<TelemetryRecord>,
    /// `None`: blocking waits.
    runtime: Option<tokio::runtime::Runtime>,
    /// Seq of the next record to release; every record below it was checked.
    expect: u64,
}

impl Reader {
    fn new(consumer: Consumer<TelemetryRecord>, wait: WaitKind) -> Self {
        let runtime = match wait {
            WaitKind::Blocking => None,
            WaitKind::Async => Some(
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("tokio runtime"),
            ),
        };
        Self {
            consumer,
            runtime,
            expect: 0,
        }
    }

    /// Waits up to 2 ms for records, then reads, checks and releases some.
    fn step(&mut self, rng: &mut Rng) {
        let patience = Duration::from_millis(2);
        match &self.runtime {
            None => {
                self.consumer.wait(Some(patience)).expect("wait");
            }
            Some(rt) => {
                let c = &mut self.consumer;
                let woke =
                    rt.block_on(async { tokio::time::timeout(patience, c.readable()).await });
                if let Ok(result) = woke {
                    result.expect("readable");
                }
            }
        }
        let max = if rng.one_in(4) {
            1 + rng.below(300) as usize
        } else {
            usize::MAX
        };
        let release = if rng.one_in(8) {
            Some(rng.next())
        } else {
            None
        };
        self.read_some(max, release);
    }

    /// Reads at most `max` records, checks all of them and releases all or (with `release`) a
    /// random prefix. Returns how many were read.
    fn read_some(&mut self, max: usize, release: Option<u64>) -> usize {
        let batch = self.consumer.read_at_most(max).expect("ring indices");
        let (first, second) = batch.as_slices();
        if !second.is_empty() {
            assert_eq!(
                (self.expect + first.len() as u64) % CAPACITY as u64,
                0,
                "a second slice only at the wrap"
            );
        }
        for (i, r) in first.iter().chain(second).enumerate() {
            check(r, EPOCH, self.expect + i as u64);
        }
        let n = batch.len();
        let k = release.map_or(n, |r| (r % (n as u64 + 1)) as usize);
        batch.release(k);
        self.expect += k as u64;
        n
    }

    /// Reads until the ring is empty (its producer must be dead or absent).
    fn drain(&mut self) {
        while self.read_some(usize::MAX, None) > 0 {}
    }
}

// ---- the stress scenario ---------------------------------------------------------------------

/// How long a producer lives after it claimed the ring: often less than one batch, sometimes
/// long enough to fill the ring and park waiting for space.
fn pick_life(rng: &mut Rng) -> Duration {
    Duration::from_micros(match rng.below(10) {
        0..=3 => rng.below(1_000),
        4..=7 => 1_000 + rng.below(4_000),
        _ => 5_000 + rng.below(15_000),
    })
}

/// The parent takes the producer side over from a dead producer and checks that it would
/// continue right after the last published record (records carry seq = index, as nothing was
/// dropped), then lets go of it cleanly.
fn parent_takes_over(ring: &SharedRing<TelemetryRecord>) {
    let pushed = ring.stats().pushed;
    let p = ring
        .producer()
        .expect("a dead producer's claim is taken over");
    assert_eq!(
        p.next_seq(),
        pushed,
        "a new producer continues after the last published record"
    );
    assert_eq!(
        ring.producer_status(),
        PeerStatus::Alive {
            pid: std::process::id()
        }
    );
    drop(p);
    assert_eq!(ring.producer_status(), PeerStatus::Vacant);
}

fn stress(how: Spawn, wait: WaitKind) {
    let seed = xproc::seed();
    println!("stress {how:?}/{wait:?}: RINGBUF_STRESS_SEED={seed}");
    let mut rng = Rng::new(seed);
    let (want, limit, start) = (xproc::records_wanted(), watchdog(), Instant::now());
    let ring = SharedRing::<TelemetryRecord>::create(&RingOptions {
        capacity: CAPACITY,
        epoch: EPOCH,
        source_id: xproc::SOURCE_ID,
    })
    .expect("creating the ring");
    let mut reader = Reader::new(ring.consumer().expect("consumer"), wait);
    let (mut children, mut kills, mut takeovers) = (0u64, 0u64, 0u64);
    let (mut quiet_lives, mut modes_seen) = (0u64, [0u64; 4]);
    let overdue = |what: &str, expect: u64, children: u64| {
        assert!(
            start.elapsed() < limit,
            "watchdog: {what} after {limit:?} (seq {expect} of {want}, {children} producers)"
        );
    };

    while reader.expect < want || kills < MIN_KILLS {
        let before = ring.stats().producer_attaches;
        let mode_index = children as usize % PushMode::ALL.len();
        let mode = PushMode::ALL[mode_index];
        let pid = spawn_producer(&ring, how, mode);
        children += 1;
        let upid = pid.as_raw() as u32;

        // It lives from the moment it holds the producer side (an exec under qemu takes long).
        while ring.stats().producer_attaches == before {
            overdue(
                "waiting for a producer to claim the ring",
                reader.expect,
                children,
            );
            if let WaitStatus::Exited(..) | WaitStatus::Signaled(..) =
                waitpid(pid, Some(WaitPidFlag::WNOHANG)).expect("waitpid")
            {
                panic!("producer {pid} ({mode:?}) died before it claimed the ring");
            }
            reader.step(&mut rng);
        }
        assert_eq!(ring.stats().producer_attaches, before + 1);
        assert_eq!(
            ring.producer_status(),
            PeerStatus::Alive { pid: upid },
            "a producer that claimed the ring reads as alive"
        );

        let life = pick_life(&mut rng);
        let (born, seq_at_birth) = (Instant::now(), ring.stats().pushed);
        let mut checked_midway = false;
        while born.elapsed() < life {
            overdue("consuming", reader.expect, children);
            reader.step(&mut rng);
            if !checked_midway && born.elapsed() >= life / 2 {
                assert_eq!(ring.producer_status(), PeerStatus::Alive { pid: upid });
                checked_midway = true;
            }
        }
        kill_and_reap(pid);
        kills += 1;
        modes_seen[mode_index] += 1;
        if ring.stats().pushed == seq_at_birth {
            quiet_lives += 1;
        }
        assert_eq!(
            ring.producer_status(),
            PeerStatus::Dead { pid: upid },
            "a SIGKILLed producer reads as dead"
        );

        // What the dead producer published stays readable; the next one starts after it,
        // whether it was read already or not.
        match rng.below(4) {
            0 => {
                parent_takes_over(&ring);
                takeovers += 1;
            }
            1 => reader.drain(),
            _ => {}
        }
    }
    reader.drain();
    parent_takes_over(&ring);
    takeovers += 1;

    let s = ring.stats();
    assert_eq!(s.pushed, reader.expect, "every published record was read");
    assert_eq!(s.released, reader.expect);
    assert_eq!(s.dropped_full, 0);
    assert_eq!(
        s.producer_attaches,
        children + takeovers,
        "producer_attaches counts every claim: {children} children, {takeovers} by the parent"
    );
    assert!(
        s.wakeups_sent > 0,
        "the consumer parked and was woken at least once"
    );
    println!(
        "stress {how:?}/{wait:?}: {} records checked in {:.2?}; {kills} producers SIGKILLed and \
         restarted ({quiet_lives} before publishing anything; per push mode {modes_seen:?}), \
         {takeovers} parent take-overs; {} wake-ups to the consumer, {} to waiting producers; \
         membarrier denied: {}, last producer on the real fence: {}",
        reader.expect,
        start.elapsed(),
        s.wakeups_sent,
        s.space_wakeups_sent,
        s.membarrier_denied,
        s.producer_fenced,
    );
}

// ---- the memory is shared --------------------------------------------------------------------

fn now_nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// Forks a child that runs `write(nonce)` with a value drawn after the fork (so the parent
/// cannot know it except through memory they share), sends the nonce through a pipe and exits 0;
/// returns the nonce.
fn nonce_from_forked_child(write: impl FnOnce(u64) -> bool) -> u64 {
    assert_safe_to_fork();
    let (rd, wr) = nix::unistd::pipe().expect("pipe");
    let parent = nix::unistd::getpid();
    // SAFETY: as in `spawn_producer`: a single-test process; the child writes to memory and a
    // pipe and `_exit`s without returning into libtest.
    match unsafe { fork() }.expect("fork") {
        ForkResult::Child => {
            xproc::die_with_parent(parent);
            let nonce = mix(u64::from(std::process::id()) ^ now_nanos()) | 1;
            let ok = write(nonce) && nix::unistd::write(&wr, &nonce.to_ne_bytes()) == Ok(8);
            // SAFETY: `_exit` is async-signal-safe and skips libtest's exit path.
            unsafe { nix::libc::_exit(if ok { 0 } else { 1 }) }
        }
        ForkResult::Parent { child } => {
            drop(wr);
            assert_eq!(
                waitpid(child, None).expect("waitpid"),
                WaitStatus::Exited(child, 0)
            );
            let mut buf = [0u8; 8];
            assert_eq!(nix::unistd::read(&rd, &mut buf), Ok(8), "nonce from child");
            u64::from_ne_bytes(buf)
        }
    }
}

fn forked_write_is_read_by_parent() {
    let ring = SharedRing::<TelemetryRecord>::create(&RingOptions {
        capacity: 8,
        epoch: 3,
        source_id: 1,
    })
    .expect("ring");
    let nonce = nonce_from_forked_child(|nonce| {
        ring.producer()
            .map(|mut p| {
                p.try_push(TelemetryRecord::new(1, 2, 0, Value::U64(nonce), 0))
                    .is_ok()
            })
            .unwrap_or(false)
    });
    let mut c = ring.consumer().expect("consumer");
    let batch = c.read().expect("read");
    let got: Vec<_> = batch.iter().map(|r| (r.epoch, r.seq, r.value())).collect();
    assert_eq!(
        got,
        [(3, 0, Some(Value::U64(nonce)))],
        "the child's record, written after the fork, is in the parent's mapping"
    );
    batch.release_all();
    assert_eq!(ring.stats().pushed, 1);
}

/// Size and resident bytes of this process's one mapping of the ring whose memfd is named
/// `edgegw-ring-{source_id}`, from /proc/self/smaps ("Rss": pages in this process's page
/// tables).
fn ring_mapping(source_id: u32) -> (u64, u64) {
    let smaps = std::fs::read_to_string("/proc/self/smaps").expect("/proc/self/smaps");
    let name = format!("/memfd:edgegw-ring-{source_id} ");
    let mut found = None;
    let mut lines = smaps.lines();
    while let Some(line) = lines.next() {
        if !line.contains(&name) {
            continue;
        }
        assert!(found.is_none(), "two mappings of {name:?} in\n{smaps}");
        let mut field = |key: &str| -> u64 {
            let l = lines
                .by_ref()
                .find(|l| l.starts_with(key))
                .unwrap_or_else(|| panic!("no {key} for {name:?} in\n{smaps}"));
            let kb: u64 = l[key.len()..]
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse()
                .expect("kB");
            kb * 1024
        };
        // smaps lists Size before Rss.
        found = Some((field("Size:"), field("Rss:")));
    }
    found.unwrap_or_else(|| panic!("no mapping of {name:?} in\n{smaps}"))
}

/// Each claim faults the whole ring in: the consumer's in this process, and a forked
/// producer's in the child, whose copy of the shared mapping starts with no pages (fork does
/// not copy page tables of shared mappings). Without it each side takes a page fault every 85
/// records during the ring's first pass, inside a push or a read.
fn claims_populate() {
    const SOURCE: u32 = 4242;
    let ring = SharedRing::<TelemetryRecord>::create(&RingOptions {
        capacity: 4096,
        epoch: 1,
        source_id: SOURCE,
    })
    .expect("ring");
    let (size, before) = ring_mapping(SOURCE);
    assert!(
        before < size / 2,
        "a fresh ring has only its header pages resident ({before} of {size} bytes)"
    );
    let _c = ring.consumer().expect("consumer");
    let (_, after) = ring_mapping(SOURCE);
    assert_eq!(
        after, size,
        "after the consumer's claim every page of the ring is mapped here"
    );
    // The child's verdict is its exit status, which `nonce_from_forked_child` asserts.
    nonce_from_forked_child(|_| {
        let (_, inherited) = ring_mapping(SOURCE);
        let claimed = ring.producer().map(|_p| ring_mapping(SOURCE).1);
        let ok = inherited < size / 2 && claimed.as_ref().is_ok_and(|&rss| rss == size);
        if !ok {
            eprintln!(
                "forked producer: {inherited} bytes resident before its claim, {claimed:?} \
                 after, of {size}"
            );
        }
        ok
    });
}

/// The control experiment: the same procedure with memmap2's `map_anon` (`MAP_PRIVATE`) does
/// not carry the child's write, so the proof above can fail.
fn forked_write_is_not_seen_in_a_private_mapping() {
    let mut map = memmap2::MmapMut::map_anon(4096).expect("map_anon");
    let ptr = map.as_mut_ptr();
    let nonce = nonce_from_forked_child(|nonce| {
        // SAFETY: the child owns its copy of the mapping, 4096 bytes, page-aligned; nothing else
        // in the child touches it.
        unsafe { ptr.cast::<u64>().write(nonce) };
        true
    });
    assert_ne!(nonce, 0);
    assert_eq!(
        u64::from_ne_bytes(map[..8].try_into().unwrap()),
        0,
        "a MAP_PRIVATE page is copied on write: the parent still sees zeros"
    );
}

// ---- handing a ring over by exec -------------------------------------------------------------

/// Sets the handover variable to `spec` (`None`: unset) and returns `from_inherited`'s error.
fn refusal(spec: Option<&str>) -> String {
    // SAFETY: this process runs only this test (see `assert_safe_to_fork`); libtest's main
    // thread is blocked waiting for it and reads no environment, so nothing reads the
    // environment concurrently.
    unsafe {
        match spec {
            Some(s) => std::env::set_var(RING_FDS_ENV, s),
            None => std::env::remove_var(RING_FDS_ENV),
        }
    }
    match SharedRing::<TelemetryRecord>::from_inherited() {
        Ok(_) => panic!("{RING_FDS_ENV}={spec:?} was accepted"),
        Err(e) => e.to_string(),
    }
}

/// Leaks `fd` as a number, as an inherited descriptor would be.
fn inherited(fd: impl Into<OwnedFd>) -> i32 {
    fd.into().into_raw_fd()
}

fn from_inherited_refusals() {
    assert_safe_to_fork();
    let expect = |spec: Option<&str>, wanted: &str| {
        let e = refusal(spec);
        for part in wanted.split('|') {
            assert!(
                e.contains(part),
                "{RING_FDS_ENV}={spec:?}: error {e:?} should say {part:?}"
            );
        }
    };
    expect(None, "EDGEGW_RING_FDS is not set: no ring was inherited");
    for bad in ["", "a,b,c", "7,8", "7,8,9,10", "7,7,9", "0,1,2", "-5,8,9"] {
        expect(Some(bad), "expected three fd numbers");
    }
    expect(Some("900,901,902"), "fd 900 is not open");

    // Descriptors of the wrong kind in each position.
    let ring = SharedRing::<TelemetryRecord>::create(&RingOptions {
        capacity: 8,
        epoch: 9,
        source_id: 1,
    })
    .expect("ring");
    let [m, d, s] = ring.raw_fds().expect("a shared ring has fds");
    let dup = |fd: i32| {
        // SAFETY: `fd` is one of the ring's descriptors, open while `ring` lives.
        let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
        inherited(fd.try_clone_to_owned().expect("dup"))
    };
    let devnull = || inherited(std::fs::File::open("/dev/null").expect("/dev/null"));
    let (pipe_r, _pipe_w) = nix::unistd::pipe().expect("pipe");
    let pipe_r = inherited(pipe_r);
    let efd = || inherited(nix::sys::eventfd::EventFd::new().expect("eventfd"));
    let spec = |a: i32, b: i32, c: i32| format!("{a},{b},{c}");

    let n = devnull();
    expect(
        Some(&spec(n, dup(d), dup(s))),
        &format!("fd {n} is /dev/null, expected /memfd:"),
    );
    expect(
        Some(&spec(dup(m), pipe_r, dup(s))),
        &format!("fd {pipe_r} is pipe:|expected anon_inode:[eventfd]"),
    );
    let n = devnull();
    expect(
        Some(&spec(dup(m), efd(), n)),
        &format!("fd {n} is /dev/null, expected anon_inode:[eventfd]"),
    );
    // The real thing is accepted once, and the adopted descriptors are close-on-exec again.
    let fds = [dup(m), dup(d), dup(s)];
    let good = spec(fds[0], fds[1], fds[2]);
    // SAFETY: as in `refusal`.
    unsafe { std::env::set_var(RING_FDS_ENV, &good) };
    let adopted = SharedRing::<TelemetryRecord>::from_inherited().expect("a real handover");
    assert_eq!((adopted.capacity(), adopted.epoch()), (8, 9));
    for fd in fds {
        // SAFETY: `fd` is owned by `adopted`, which is alive.
        let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
        let flags = nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_GETFD).expect("F_GETFD");
        assert_ne!(
            flags & nix::libc::FD_CLOEXEC,
            0,
            "fd {} is close-on-exec",
            fd.as_raw_fd()
        );
    }
    adopted
        .producer()
        .expect("producer through the adopted fds")
        .try_push(record_for(0))
        .expect("push");
    assert_eq!(ring.stats().pushed, 1, "both handles map the same segment");
    expect(Some(&good), &format!("fd {} was already adopted", fds[0]));

    // A memfd that is not a sealed ring segment. Last: these descriptors pass the kind check,
    // are adopted and closed when the attach fails, and their numbers stay marked as adopted,
    // so a later descriptor that reuses a number would be refused.
    let plain = nix::sys::memfd::memfd_create("not-a-ring", nix::sys::memfd::MFdFlags::empty())
        .expect("memfd");
    nix::unistd::ftruncate(&plain, 4096).expect("ftruncate");
    expect(
        Some(&spec(inherited(plain), efd(), efd())),
        "memfd is not sealed against shrinking",
    );
    drop(adopted);
}

// ---- a consumer that may not call membarrier -----------------------------------------------

/// Installs a seccomp filter on the calling thread only (no `TSYNC`) that fails `membarrier`
/// with EPERM, as systemd's `SystemCallFilter=` with `SystemCallErrorNumber=EPERM` would. The
/// filter checks only the syscall number: this test runs on the host architecture.
fn deny_membarrier_in_this_thread() {
    use nix::libc as c;
    let stmt = |code: u32, k: u32| c::sock_filter {
        code: code as u16,
        jt: 0,
        jf: 0,
        k,
    };
    let filter = [
        // A = seccomp_data.nr (offset 0).
        stmt(c::BPF_LD | c::BPF_W | c::BPF_ABS, 0),
        // if A == SYS_membarrier fall through, else skip one.
        c::sock_filter {
            code: (c::BPF_JMP | c::BPF_JEQ | c::BPF_K) as u16,
            jt: 0,
            jf: 1,
            k: c::SYS_membarrier as u32,
        },
        stmt(
            c::BPF_RET | c::BPF_K,
            c::SECCOMP_RET_ERRNO | c::EPERM as u32,
        ),
        stmt(c::BPF_RET | c::BPF_K, c::SECCOMP_RET_ALLOW),
    ];
    let prog = c::sock_fprog {
        len: filter.len() as u16,
        filter: filter.as_ptr().cast_mut(),
    };
    // SAFETY: prctl with integer arguments; PR_SET_NO_NEW_PRIVS only restricts this thread.
    let rc = unsafe { c::prctl(c::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
    assert_eq!(
        rc,
        0,
        "PR_SET_NO_NEW_PRIVS: {}",
        std::io::Error::last_os_error()
    );
    // SAFETY: `prog` points at `filter`, both alive for the call; the kernel copies the program.
    let rc = unsafe {
        c::prctl(
            c::PR_SET_SECCOMP,
            c::SECCOMP_MODE_FILTER as c::c_ulong,
            &prog as *const c::sock_fprog,
        )
    };
    assert_eq!(rc, 0, "PR_SET_SECCOMP: {}", std::io::Error::last_os_error());
    // SAFETY: membarrier(MEMBARRIER_CMD_QUERY) takes integers and touches no memory.
    let rc = unsafe { c::syscall(c::SYS_membarrier, 0, 0, 0) };
    let err = std::io::Error::last_os_error();
    assert!(
        rc == -1 && err.raw_os_error() == Some(c::EPERM),
        "the filter denies membarrier: rc {rc}, {err}"
    );
}

/// The consumer runs in a thread whose seccomp filter denies membarrier (from before it
/// attaches, or only after it attached and probed successfully); the producer is an exec'd
/// process without the filter, so it registers and starts on the fast path. The consumer
/// waits without a timeout: a lost wake-up hangs it until the watchdog fails the test.
fn seccomp_consumer(after_attach: bool) {
    let (limit, start) = (watchdog(), Instant::now());
    let want = xproc::records_wanted().min(2_000_000);
    let ring = SharedRing::<TelemetryRecord>::create(&RingOptions {
        capacity: CAPACITY,
        epoch: EPOCH,
        source_id: xproc::SOURCE_ID,
    })
    .expect("creating the ring");
    let consumer_ring = ring.clone();
    let consumer = std::thread::spawn(move || {
        if !after_attach {
            deny_membarrier_in_this_thread();
        }
        let consumer = consumer_ring.consumer().expect("consumer");
        if after_attach {
            assert!(
                !consumer_ring.stats().membarrier_denied,
                "the consumer's probe succeeded before the filter"
            );
            deny_membarrier_in_this_thread();
        }
        let mut reader = Reader::new(consumer, WaitKind::Blocking);
        let mut rng = Rng::new(xproc::seed());
        // Until every record is read and the producer has switched to its real fence (it does
        // so at the first publish that reads the flag), so the fallback is what ran.
        while reader.expect < want || !consumer_ring.stats().producer_fenced {
            assert!(
                start.elapsed() < limit,
                "watchdog: seq {} of {want} after {limit:?}",
                reader.expect
            );
            reader.consumer.wait(None).expect("wait");
            let max = if rng.one_in(4) {
                1 + rng.below(300) as usize
            } else {
                usize::MAX
            };
            reader.read_some(max, None);
        }
        reader.expect
    });
    // Spawned from this thread, which has no filter: the producer registers for membarrier.
    let mut cmd = xproc::self_command("producer:one");
    cmd.stdout(std::process::Stdio::null());
    ring.pass_to_child(&mut cmd).expect("handing the ring over");
    xproc::die_with_parent_on_exec(&mut cmd);
    let mut child = cmd.spawn().expect("spawning an exec'd producer");
    let read = consumer.join().expect("the consumer thread");
    child.kill().expect("SIGKILL");
    child.wait().expect("reaping the producer");
    let s = ring.stats();
    assert!(
        s.membarrier_denied,
        "the consumer reported membarrier denied"
    );
    assert!(s.producer_fenced, "the producer switched to a real fence");
    assert!(s.wakeups_sent > 0, "the consumer parked and was woken");
    println!(
        "seccomp (after attach: {after_attach}): {read} records checked in {:.2?}, {} wake-ups",
        start.elapsed(),
        s.wakeups_sent
    );
}

// ---- one record at a time --------------------------------------------------------------------

/// A forked producer pushes one record, then waits for the consumer's acknowledgement on a pipe
/// before the next; the consumer parks on the fast path (the producer's compiler fence against
/// the consumer's membarrier) with no timeout before each. Every record therefore needs its
/// own wake-up, and a lost one hangs the consumer until the watchdog fails the test.
fn ping_pong() {
    use std::io::{Read, Write};
    let rounds = xproc::records_wanted().min(5_000);
    let ring = SharedRing::<TelemetryRecord>::create(&RingOptions {
        capacity: 64,
        epoch: EPOCH,
        source_id: xproc::SOURCE_ID,
    })
    .expect("creating the ring");
    let mut consumer = ring.consumer().expect("consumer");
    let (ack_r, ack_w) = nix::unistd::pipe().expect("pipe");
    let (mut ack_r, mut ack_w) = (std::fs::File::from(ack_r), std::fs::File::from(ack_w));
    assert_safe_to_fork();
    let parent = nix::unistd::getpid();
    // SAFETY: as in `spawn_producer`: this process runs only this scenario, the child touches
    // the ring, a pipe and a sleep, and `_exit`s without returning into libtest.
    let child = match unsafe { fork() }.expect("fork") {
        ForkResult::Child => {
            xproc::die_with_parent(parent);
            let mut p = ring.producer().expect("producer");
            let mut byte = [0u8];
            for seq in 0..rounds {
                // Give the consumer time to park (a record that finds it awake needs no wake-up).
                std::thread::sleep(Duration::from_micros(20));
                p.try_push(record_for(seq)).expect("room");
                if ack_r.read_exact(&mut byte).is_err() {
                    break;
                }
            }
            // SAFETY: `_exit` is async-signal-safe and skips libtest's exit path.
            unsafe { nix::libc::_exit(0) }
        }
        ForkResult::Parent { child } => child,
    };
    let start = Instant::now();
    for seq in 0..rounds {
        assert!(
            start.elapsed() < watchdog(),
            "watchdog: round {seq} of {rounds}"
        );
        let batch = loop {
            consumer.wait(None).expect("wait");
            let batch = consumer.read().expect("ring indices");
            if !batch.is_empty() {
                break batch;
            }
        };
        assert_eq!(batch.len(), 1, "one record per round");
        check(batch.iter().next().expect("one"), EPOCH, seq);
        batch.release_all();
        ack_w.write_all(b"a").expect("ack");
    }
    match waitpid(child, None).expect("waitpid") {
        WaitStatus::Exited(_, 0) => {}
        other => panic!("producer ended with {other:?}"),
    }
    let s = ring.stats();
    assert_eq!(s.pushed, rounds);
    println!(
        "ping-pong: {rounds} records, {} wake-ups, in {:.2?}; membarrier denied: {}, producer \
         on the real fence: {}",
        s.wakeups_sent,
        start.elapsed(),
        s.membarrier_denied,
        s.producer_fenced
    );
}
