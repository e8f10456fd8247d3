//! Cross-process stress: producers in other processes (forked, or exec'd with the ring handed
//! over), killed with SIGKILL at random moments and restarted, while this process consumes.
//! Every record is checked: epoch, `seq` strictly +1 across every restart (no gap, no
//! duplicate), and a checksum of its contents (no torn record).
//!
//! `RINGBUF_STRESS_RECORDS` sets the number of records per scenario (default 10 million; the
//! ARM64 run under qemu uses fewer). Under qemu-user, exec'd children need the emulator in front:
//! `EDGEGW_TEST_EXEC_WRAPPER="qemu-aarch64 -L /usr/aarch64-linux-gnu"`.

use std::process::{Child, Command};
use std::time::{Duration, Instant};

use edgegw_ringbuf::{PeerStatus, Producer, RingOptions, SharedRing, TelemetryRecord, Value};
use nix::sys::signal::{Signal, kill};
use nix::sys::wait::waitpid;
use nix::unistd::{ForkResult, Pid, fork};

const ROLE_ENV: &str = "RINGBUF_STRESS_ROLE";
const EPOCH: u64 = 0xE90C;
/// The whole scenario must finish within this, or the test fails instead of hanging CI.
const WATCHDOG: Duration = Duration::from_secs(300);

fn records_wanted() -> u64 {
    std::env::var("RINGBUF_STRESS_RECORDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000_000)
}

/// The payload a record with this `seq` must carry.
fn mix(seq: u64) -> u64 {
    let mut x = seq.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

fn record_for(seq: u64) -> TelemetryRecord {
    let mut r = TelemetryRecord::new(
        7,
        seq as u32,
        seq ^ 0x5555,
        Value::U64(mix(seq)),
        (seq % 3) as u16,
    );
    r.detail = (mix(seq) >> 32) as u32;
    r
}

fn check(r: &TelemetryRecord, expect_seq: u64) {
    assert_eq!(r.epoch, EPOCH, "record {expect_seq}: wrong epoch");
    assert_eq!(r.seq, expect_seq, "gap or duplicate in seq");
    let want = {
        let mut w = record_for(expect_seq);
        w.epoch = EPOCH;
        w.seq = expect_seq;
        w
    };
    assert_eq!(*r, want, "torn or corrupt record at seq {expect_seq}");
}

/// Pushes forever (until killed): odd-numbered children in batches, even ones one by one.
fn produce_forever(mut p: Producer<TelemetryRecord>, batched: bool) -> ! {
    let mut batch = Vec::with_capacity(64);
    loop {
        if batched {
            let next = p.next_seq();
            batch.clear();
            batch.extend((next..next + 64).map(record_for));
            let mut done = 0;
            while done < batch.len() {
                done += p.try_push_slice(&batch[done..]);
                if done < batch.len() {
                    p.wait_for_space(1, Duration::from_millis(50));
                }
            }
        } else {
            let r = record_for(p.next_seq());
            if p.try_push(r).is_err() {
                p.wait_for_space(1, Duration::from_millis(50));
            }
        }
    }
}

/// A command running this test binary again (behind `EDGEGW_TEST_EXEC_WRAPPER`, if set).
fn self_command() -> Command {
    let exe = std::env::current_exe().expect("current_exe");
    match std::env::var("EDGEGW_TEST_EXEC_WRAPPER") {
        Ok(w) if !w.trim().is_empty() => {
            let mut parts = w.split_whitespace();
            let mut c = Command::new(parts.next().expect("wrapper"));
            c.args(parts).arg(exe);
            c
        }
        _ => Command::new(exe),
    }
}

enum Spawn {
    Fork,
    Exec,
}

struct Kid {
    pid: Pid,
    child: Option<Child>,
}

fn spawn(ring: &SharedRing<TelemetryRecord>, how: &Spawn, n: u64) -> Kid {
    let batched = n % 2 == 1;
    match how {
        Spawn::Fork => {
            // SAFETY: the child only claims the producer (reads /proc, no lock another thread of the
            // test harness could hold across fork except malloc's, which glibc resets in the child)
            // and then pushes records until it is killed; it never returns into the harness.
            match unsafe { fork() }.expect("fork") {
                ForkResult::Child => {
                    let code = match ring.producer() {
                        Ok(p) => produce_forever(p, batched),
                        Err(_) => 3,
                    };
                    // SAFETY: `_exit` is async-signal-safe and skips the harness's atexit state.
                    unsafe { nix::libc::_exit(code) }
                }
                ForkResult::Parent { child } => Kid {
                    pid: child,
                    child: None,
                },
            }
        }
        Spawn::Exec => {
            let mut cmd = self_command();
            cmd.args([
                "--exact",
                "exec_child_entry",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(ROLE_ENV, if batched { "batched" } else { "single" });
            ring.pass_to_child(&mut cmd).expect("pass ring");
            let child = cmd.spawn().expect("spawn exec child");
            Kid {
                pid: Pid::from_raw(child.id() as i32),
                child: Some(child),
            }
        }
    }
}

/// Entry point of the exec'd children; a no-op in a normal test run.
#[test]
fn exec_child_entry() {
    let Ok(role) = std::env::var(ROLE_ENV) else {
        return;
    };
    let ring = SharedRing::<TelemetryRecord>::from_inherited().expect("inherited ring");
    let p = ring.producer().expect("producer claim");
    produce_forever(p, role == "batched");
}

fn reap(kid: Kid) {
    match kid.child {
        Some(mut c) => {
            c.wait().expect("wait child");
        }
        None => {
            waitpid(kid.pid, None).expect("waitpid");
        }
    }
}

fn scenario(how: Spawn) {
    let ring = SharedRing::<TelemetryRecord>::create(&RingOptions {
        capacity: 4096,
        epoch: EPOCH,
        source_id: 7,
    })
    .unwrap();
    let mut consumer = ring.consumer().unwrap();
    let want = records_wanted();
    let start = Instant::now();
    let mut rng_state = 0x1234_5678_u64;
    let mut next_kill = |n: u64| {
        rng_state = mix(rng_state ^ n);
        // Kill after 0.1 ms to 5 ms of producing: mid-batch, mid-record, or while parked.
        Duration::from_micros(100 + rng_state % 5_000)
    };

    let (mut expect, mut spawned, mut seen_alive) = (0u64, 0u64, 0u64);
    let mut consume = |expect: &mut u64| {
        consumer.wait(Some(Duration::from_millis(5))).unwrap();
        let batch = consumer.read().unwrap();
        for r in batch.iter() {
            check(r, *expect);
            *expect += 1;
        }
        batch.release_all();
    };
    while expect < want {
        assert!(
            start.elapsed() < WATCHDOG,
            "stress scenario exceeded {WATCHDOG:?} at seq {expect}"
        );
        let attaches = ring.stats().producer_attaches;
        let kid = spawn(&ring, &how, spawned);
        spawned += 1;
        let pid = kid.pid.as_raw() as u32;
        // Its life starts once it holds the producer side (an exec under qemu takes a while).
        let claim_deadline = Instant::now() + Duration::from_secs(60);
        while ring.stats().producer_attaches == attaches {
            assert!(
                Instant::now() < claim_deadline,
                "child {pid} never claimed the producer side"
            );
            consume(&mut expect);
        }
        if ring.producer_status() == (PeerStatus::Alive { pid }) {
            seen_alive += 1;
        }
        let life = next_kill(spawned);
        let born = Instant::now();
        while born.elapsed() < life && expect < want {
            consume(&mut expect);
        }
        kill(kid.pid, Signal::SIGKILL).expect("SIGKILL");
        reap(kid);
        let status = ring.producer_status();
        assert_eq!(
            status,
            PeerStatus::Dead { pid },
            "after SIGKILL the producer must read as dead"
        );
        // What the dead child published is still in the ring: read it before the next one starts.
        consume(&mut expect);
    }
    assert!(
        seen_alive * 2 >= spawned,
        "a running producer read as alive only {seen_alive} of {spawned} times"
    );
    let stats = ring.stats();
    assert!(
        spawned >= 3,
        "the scenario must restart producers (spawned {spawned})"
    );
    assert_eq!(
        stats.producer_attaches, spawned,
        "every child claimed the producer side once"
    );
    eprintln!(
        "stress: {expect} records checked, {spawned} producers killed, {:.2?}, {} wake-ups",
        start.elapsed(),
        stats.wakeups_sent
    );
}

#[test]
fn forked_producers_killed_at_random_never_tear_gap_or_repeat() {
    scenario(Spawn::Fork);
}

#[test]
fn execed_producers_killed_at_random_never_tear_gap_or_repeat() {
    if std::env::var(ROLE_ENV).is_ok() {
        return;
    }
    scenario(Spawn::Exec);
}

#[test]
fn a_write_by_a_forked_child_is_seen_by_the_parent() {
    if std::env::var(ROLE_ENV).is_ok() {
        return;
    }
    let ring = SharedRing::<TelemetryRecord>::create(&RingOptions {
        capacity: 8,
        epoch: 1,
        source_id: 1,
    })
    .unwrap();
    // SAFETY: the child pushes one record and `_exit`s; see `spawn`.
    match unsafe { fork() }.unwrap() {
        ForkResult::Child => {
            let ok = ring
                .producer()
                .map(|mut p| p.try_push(record_for(0)).is_ok())
                .unwrap_or(false);
            // SAFETY: async-signal-safe exit without running the harness's state.
            unsafe { nix::libc::_exit(if ok { 0 } else { 1 }) }
        }
        ForkResult::Parent { child } => {
            let status = waitpid(child, None).unwrap();
            assert_eq!(status, nix::sys::wait::WaitStatus::Exited(child, 0));
        }
    }
    let mut c = ring.consumer().unwrap();
    let batch = c.read().unwrap();
    assert_eq!(
        batch.len(),
        1,
        "MAP_SHARED: the child's write is visible here"
    );
    assert_eq!(
        batch.iter().next().unwrap().value(),
        Some(Value::U64(mix(0)))
    );
}

#[test]
fn from_inherited_refuses_what_is_not_a_ring() {
    if std::env::var(ROLE_ENV).is_ok() {
        return;
    }
    // Run in a child process: the environment variable is process-wide.
    let out = self_command()
        .args([
            "--exact",
            "inherited_refusals_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("RINGBUF_REFUSAL_CHILD", "1")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn inherited_refusals_child() {
    if std::env::var("RINGBUF_REFUSAL_CHILD").is_err() {
        return;
    }
    // SAFETY: this process is the dedicated child of the test above and runs only this test,
    // single-threaded, so nothing reads the environment concurrently.
    unsafe { std::env::remove_var(edgegw_ringbuf::RING_FDS_ENV) };
    let e = SharedRing::<TelemetryRecord>::from_inherited().unwrap_err();
    assert!(e.to_string().contains("no ring was inherited"), "{e}");
    // SAFETY: as above.
    unsafe { std::env::set_var(edgegw_ringbuf::RING_FDS_ENV, "0,1,2") };
    let e = SharedRing::<TelemetryRecord>::from_inherited().unwrap_err();
    assert!(e.to_string().contains("expected three fd numbers"), "{e}");
    let f = std::fs::File::open("/dev/null").unwrap();
    use std::os::fd::AsRawFd;
    let fd = f.as_raw_fd();
    // SAFETY: as above.
    unsafe {
        std::env::set_var(
            edgegw_ringbuf::RING_FDS_ENV,
            format!("{fd},{},{}", fd + 100, fd + 101),
        )
    };
    let e = SharedRing::<TelemetryRecord>::from_inherited().unwrap_err();
    assert!(e.to_string().contains("expected /memfd:"), "{e}");
}
