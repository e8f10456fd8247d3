//! Process plumbing for the cross-process tests: re-running this test binary in a role, under a
//! watchdog, and the records whose contents prove they arrived whole.
//!
//! Every scenario that forks runs in a process of its own: the outer test re-executes this
//! binary with `--exact child_entry --test-threads=1` and [`ROLE_ENV`] naming the scenario, so
//! the process that forks has no thread but libtest's main thread, which only waits for the
//! test's result. The outer test kills the scenario's whole process group if it outlives the
//! watchdog, so a hang fails the test instead of CI.

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use edgegw_ringbuf::{TelemetryRecord, Value};
use nix::sys::signal::{Signal, killpg};
use nix::sys::wait::{Id, WaitPidFlag, WaitStatus, waitid};
use nix::unistd::Pid;

/// Tells a run of `child_entry` what to be; unset, `child_entry` does nothing.
pub const ROLE_ENV: &str = "RINGBUF_XPROC_ROLE";
/// Prefix for re-executing this binary, e.g. `qemu-aarch64 -L /usr/aarch64-linux-gnu` when the
/// tests run under qemu-user without binfmt_misc.
pub const WRAPPER_ENV: &str = "EDGEGW_TEST_EXEC_WRAPPER";

/// This process's role, if it was started as a child of these tests.
pub fn role() -> Option<String> {
    std::env::var(ROLE_ENV).ok().filter(|r| !r.is_empty())
}

/// Records per stress scenario: `RINGBUF_STRESS_RECORDS`, default 10 million.
pub fn records_wanted() -> u64 {
    env_u64("RINGBUF_STRESS_RECORDS").unwrap_or(10_000_000)
}

/// How long a scenario may run before it fails: `RINGBUF_STRESS_WATCHDOG_SECS`, default 120.
pub fn watchdog() -> Duration {
    Duration::from_secs(env_u64("RINGBUF_STRESS_WATCHDOG_SECS").unwrap_or(120))
}

/// Seed of the scenario's random choices: `RINGBUF_STRESS_SEED` to replay one, else the clock.
pub fn seed() -> u64 {
    env_u64("RINGBUF_STRESS_SEED").unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
    })
}

fn env_u64(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    Some(
        v.trim()
            .replace('_', "")
            .parse()
            .unwrap_or_else(|e| panic!("{name}={v:?}: {e}")),
    )
}

/// A command that runs this test binary again as `child_entry` in `role`, behind
/// [`WRAPPER_ENV`] if set.
pub fn self_command(role: &str) -> Command {
    let exe = std::env::current_exe().expect("current_exe");
    let mut cmd = match std::env::var(WRAPPER_ENV) {
        Ok(w) if !w.trim().is_empty() => {
            let mut parts = w.split_whitespace();
            let mut c = Command::new(parts.next().expect("wrapper program"));
            c.args(parts).arg(exe);
            c
        }
        _ => Command::new(exe),
    };
    cmd.args(["--exact", "child_entry", "--nocapture", "--test-threads=1"])
        .env(ROLE_ENV, role);
    cmd
}

/// Runs `role` in a new process (and process group) and fails the calling test if it fails or
/// outlives `limit`. Its output is shown either way (libtest keeps it unless the test fails or
/// runs with `--nocapture`).
pub fn run_isolated(role: &str, limit: Duration) {
    let mut cmd = self_command(role);
    cmd.process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let started = Instant::now();
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("spawning {cmd:?}: {e}"));
    let pid = Pid::from_raw(child.id() as i32);
    let collect = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut s = Vec::new();
            let _ = pipe.read_to_end(&mut s);
            String::from_utf8_lossy(&s).into_owned()
        })
    };
    let out = collect(Box::new(child.stdout.take().expect("stdout")));
    let err = collect(Box::new(child.stderr.take().expect("stderr")));

    // Poll without reaping (WNOWAIT), so the group id cannot be recycled before the sweep below.
    let timed_out = loop {
        let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT;
        match waitid(Id::Pid(pid), flags).expect("waitid") {
            WaitStatus::StillAlive => {}
            _ => break false,
        }
        if started.elapsed() > limit {
            break true;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    // Whatever the outcome, nothing of the scenario may outlive it: producers of a failed
    // scenario would otherwise spin forever. (They also die with their parent: PDEATHSIG.)
    let _ = killpg(pid, Signal::SIGKILL);
    let status = child.wait().expect("reaping the scenario process");
    let (out, err) = (out.join().unwrap(), err.join().unwrap());
    let shown = format!("--- stdout of {role}:\n{out}--- stderr of {role}:\n{err}");
    eprint!("{shown}");
    assert!(
        !timed_out,
        "{role} still ran after {limit:?} (watchdog): killed its process group\n{shown}"
    );
    assert!(status.success(), "{role} failed: {status}\n{shown}");
}

/// Asserts what makes `fork` sound in a test process: it runs only this test, so the only other
/// threads are libtest's main thread, blocked until the test reports and holding no lock, and,
/// under qemu-user, the emulator's own RCU thread, which qemu quiesces around every fork.
pub fn assert_safe_to_fork() {
    assert!(
        role().is_some(),
        "fork only in a process started by run_isolated"
    );
    let (pid, me) = (std::process::id(), nix::unistd::gettid().as_raw() as u32);
    for task in std::fs::read_dir("/proc/self/task").expect("/proc/self/task") {
        let task = task.expect("task entry");
        let tid: u32 = task.file_name().to_string_lossy().parse().expect("tid");
        if tid == pid || tid == me {
            continue;
        }
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        assert!(
            comm.starts_with("qemu-"),
            "thread {tid} ({}) runs beside the test: fork only from a single-test process",
            comm.trim()
        );
    }
}

/// In a forked child: get SIGKILL when the parent dies, so no producer outlives a failed
/// scenario. `parent` is the pid the child expects as its parent.
pub fn die_with_parent(parent: Pid) {
    let _ = nix::sys::prctl::set_pdeathsig(Signal::SIGKILL);
    if nix::unistd::getppid() != parent {
        // The parent died before the request took effect.
        // SAFETY: `_exit` is async-signal-safe and runs no destructors or atexit handlers.
        unsafe { nix::libc::_exit(9) }
    }
}

/// For an exec'd child: the same as [`die_with_parent`], set up between fork and exec.
pub fn die_with_parent_on_exec(cmd: &mut Command) {
    let parent = nix::unistd::getpid().as_raw();
    let hook = move || -> std::io::Result<()> {
        // SAFETY: plain syscalls with integer arguments; prctl(PR_SET_PDEATHSIG) is preserved
        // across exec for a program that is not set-user-id.
        unsafe {
            if nix::libc::prctl(
                nix::libc::PR_SET_PDEATHSIG,
                nix::libc::SIGKILL as nix::libc::c_ulong,
            ) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            if nix::libc::getppid() != parent {
                nix::libc::_exit(9);
            }
        }
        Ok(())
    };
    // SAFETY: the hook runs in the child between fork and exec and only makes the async-signal-
    // safe syscalls prctl, getppid and _exit: no allocation, no lock.
    unsafe { cmd.pre_exec(hook) };
}

/// splitmix64: a small, good mixer; the payload checksum and the scenarios' random choices.
pub fn mix(x: u64) -> u64 {
    let mut x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// A seeded random sequence.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        mix(self.0)
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// True with probability `1/n`.
    pub fn one_in(&mut self, n: u64) -> bool {
        self.below(n) == 0
    }
}

pub const SOURCE_ID: u32 = 7;

/// The record a producer pushes when the ring is about to give it `seq`. Every field but
/// `epoch` and `seq` (stamped by the ring) is derived from `seq`, and `detail` is a checksum of
/// the others, so a record torn between two writes, or stamped with another `seq`, cannot pass
/// [`check`].
pub fn record_for(seq: u64) -> TelemetryRecord {
    let h = mix(seq);
    let mut r = TelemetryRecord::new(
        SOURCE_ID,
        (h >> 40) as u32,
        seq.wrapping_mul(1_000_003) ^ 0x5555,
        Value::U64(h),
        (seq % 3) as u16,
    );
    r.detail = (mix(h ^ u64::from(r.tag_id) ^ r.timestamp_ns) >> 32) as u32;
    r
}

/// Checks a record read at position `expect_seq` of a ring with `epoch`.
pub fn check(r: &TelemetryRecord, epoch: u64, expect_seq: u64) {
    // One read of the slot, so every message below shows the bytes that were judged.
    let r = *r;
    assert_eq!(r.epoch, epoch, "record at seq {expect_seq}: wrong epoch");
    assert!(
        r.seq <= expect_seq,
        "gap: expected seq {expect_seq}, read {}",
        r.seq
    );
    assert!(
        r.seq >= expect_seq,
        "duplicate: expected seq {expect_seq}, read {} again",
        r.seq
    );
    let mut want = record_for(expect_seq);
    want.epoch = epoch;
    want.seq = expect_seq;
    assert_eq!(r, want, "torn or corrupt record at seq {expect_seq}");
}
