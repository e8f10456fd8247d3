//! Hand-off benchmark: the cross-process ring against in-process queues and a pipe between two
//! processes, all carrying the same 48-byte `TelemetryRecord` with the same capacity (4096).
//!
//! Run: `cargo bench -p edgegw-ringbuf --bench ring` (2 to 5 minutes on the shared 2-vCPU
//! machine it was written on). It prints the machine and its load, a throughput table, producer
//! syscalls per record, wake-up latencies and a summary against the ring issue's targets.
//! Append `-- throughput`, `-- syscalls` or `-- latency` to run one part, `-- versus` for the
//! ring and rtrb throughput alone.
//!
//! - Throughput: records/s with a busy (spinning) consumer that reads every record, at batch 1
//!   (one push per record) and batch 64 (up to 64 records per push, each built in its slot:
//!   `try_push_from_iter` for the ring, `write_chunk_uninit` + `fill_from_iter` for rtrb). The
//!   ring and the pipe run as two processes (fork), the other queues as two threads. Every
//!   producer builds each record it sends. Runs are interleaved and repeated; the table shows
//!   the median and the range.
//! - Syscalls: the ring's own count of wake-ups sent (its only syscall on the push path) per
//!   record, checked against the kernel's count of the producer process's syscalls over the
//!   push window: `perf stat -e raw_syscalls:sys_enter` attached to it (if perf works here) and
//!   the read/write counters of `/proc/<pid>/io` (always).
//! - Wake-up latency: the producer paces itself at 1k and 100k records/s by sleeping (timer
//!   slack 1 ns) and stamps each record with CLOCK_MONOTONIC just before the push; the consumer
//!   waits in `Consumer::wait` whenever the ring is empty, once as shipped (parks every time)
//!   and once with an adaptive spin of up to 50 µs before it parks; latency = time the consumer read the
//!   record − stamp. The same is measured for a reader parked on a pipe, which is the cost of a
//!   kernel wake-up on this machine without any ring. Each configuration runs 3 times. In each
//!   round the ring and the pipe also run while this process holds a CPU latency request of 0 µs
//!   (`CpuLatencyRequest`, Linux PM QoS; needs write access to /dev/cpu_dma_latency): idle
//!   CPUs then poll instead of halting, so the wake-up needs no halted vCPU to be rescheduled
//!   by the host, which on a VM is most of a cross-CPU wake-up's cost. That is the gateway's
//!   opt-in `gateway.cpu_wake_latency_us = 0`; the runs without it are the default.

use std::fs::File;
use std::io::{Read, Write};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use edgegw_ringbuf::{RingOptions, SharedRing, TelemetryRecord, Value};
use hdrhistogram::Histogram;
use nix::sys::wait::waitpid;
use nix::unistd::{ForkResult, Pid, fork};

const CAP: usize = 4096;
const BATCH: usize = 64;
/// Records per throughput run for the fast queues, and for the slow ones (per-record syscalls).
const N: u64 = 2_000_000;
const N_SLOW: u64 = 500_000;
/// Interleaved rounds of the throughput runs.
const ROUNDS: usize = 5;

/// Every consumer reads each record (sums a field), as the forwarder does; the sum is printed so
/// the reads cannot be optimised away.
static TOUCHED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Set if any ring run's producer published with a real fence instead of the fast path's
/// compiler fence (membarrier unavailable to one side; see the crate's `protocol.rs`).
static FENCED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

fn touch(sum: u64) {
    TOUCHED.fetch_add(sum, std::sync::atomic::Ordering::Relaxed);
}

fn rec(i: u64) -> TelemetryRecord {
    TelemetryRecord::new(1, i as u32, i, Value::U64(i), 0)
}

fn monotonic_ns() -> u64 {
    let t = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).expect("clock");
    t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64
}

// ---- a producer in another process -----------------------------------------------------------

/// A forked child that sets up, reports ready, waits for "go", works, reports done and waits to
/// be told to exit, so the parent can read the child's syscall counters around the work alone.
struct Peer {
    pid: Pid,
    go: File,
    done: File,
    exit: File,
}

fn pipe_files() -> (File, File) {
    let (r, w) = nix::unistd::pipe().expect("pipe");
    (File::from(r), File::from(w))
}

/// Forks a child that runs `setup`, then the closure it returns as the work. What the work
/// returns (the producer) is kept until the process exits, so that dropping it (which releases
/// the claim: a `close`) does not count as a syscall of the push window.
fn spawn_peer<S, W, R>(setup: S) -> Peer
where
    S: FnOnce() -> W,
    W: FnOnce() -> R,
{
    assert_eq!(
        threads_in_this_process(),
        1,
        "fork only from a single-threaded benchmark"
    );
    let (go_r, go_w) = pipe_files();
    let (done_r, done_w) = pipe_files();
    let (exit_r, exit_w) = pipe_files();
    // SAFETY: the benchmark process is single-threaded here (asserted above: every thread of the
    // in-process queues was joined), so no lock can be held across the fork. The child runs the
    // closures and `_exit`s without returning into main.
    match unsafe { fork() }.expect("fork") {
        ForkResult::Child => {
            let byte = |mut f: &File| {
                let mut b = [0u8; 1];
                let _ = f.read_exact(&mut b);
            };
            let work = setup();
            (&done_w).write_all(b"r").expect("ready");
            byte(&go_r);
            let _kept = work();
            (&done_w).write_all(b"d").expect("done");
            byte(&exit_r);
            // SAFETY: async-signal-safe exit that skips main's destructors and atexit handlers.
            unsafe { nix::libc::_exit(0) }
        }
        ForkResult::Parent { child } => {
            let mut peer = Peer {
                pid: child,
                go: go_w,
                done: done_r,
                exit: exit_w,
            };
            peer.expect(b'r');
            peer
        }
    }
}

impl Peer {
    fn expect(&mut self, what: u8) {
        let mut b = [0u8; 1];
        self.done.read_exact(&mut b).expect("peer signal");
        assert_eq!(b[0], what, "peer protocol");
    }

    fn go(&mut self) {
        self.go.write_all(b"g").expect("go");
    }

    fn wait_done(&mut self) {
        self.expect(b'd');
    }

    fn finish(mut self) {
        self.exit.write_all(b"x").expect("exit");
        waitpid(self.pid, None).expect("waitpid");
    }
}

fn threads_in_this_process() -> usize {
    std::fs::read_to_string("/proc/self/status")
        .expect("/proc/self/status")
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|n| n.trim().parse().ok())
        .expect("Threads:")
}

// ---- counting a process's syscalls -----------------------------------------------------------

/// `syscr`/`syscw` of `/proc/<pid>/io`: the kernel's count of read- and write-family syscalls
/// (an eventfd write is a write).
fn proc_io(pid: Pid) -> (u64, u64) {
    let s = std::fs::read_to_string(format!("/proc/{pid}/io")).expect("/proc/<pid>/io");
    let field = |name: &str| {
        s.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse().ok())
            .expect("/proc/<pid>/io field")
    };
    (field("syscr:"), field("syscw:"))
}

/// `perf stat` attached to one process, counting its syscalls (all, and writes).
struct PerfCount {
    child: std::process::Child,
    out: std::path::PathBuf,
}

impl PerfCount {
    /// Attaches, or `None` if perf is missing or cannot count syscall tracepoints here. The
    /// peer must be waiting for "go": counting starts once it sleeps in that read, so the
    /// window holds nothing but the work and the handshake after it.
    fn attach(pid: Pid) -> Option<Self> {
        let in_read = format!("{} ", nix::libc::SYS_read);
        let deadline = Instant::now() + Duration::from_secs(5);
        while !std::fs::read_to_string(format!("/proc/{pid}/syscall"))
            .is_ok_and(|s| s.starts_with(&in_read))
        {
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        let out = std::env::temp_dir().join(format!("ring-bench-perf-{pid}.csv"));
        let child = std::process::Command::new("perf")
            .args(["stat", "-x,", "-e"])
            .arg("raw_syscalls:sys_enter,syscalls:sys_enter_write,syscalls:sys_enter_clock_nanosleep")
            .args(["-p", &pid.to_string(), "-o"])
            .arg(&out)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .ok()?;
        let perf = Self { child, out };
        // Attached once perf holds its counters, plus a margin for enabling them.
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            let fds = std::fs::read_dir(format!("/proc/{}/fd", perf.child.id()));
            let counting = fds.into_iter().flatten().flatten().any(|e| {
                std::fs::read_link(e.path())
                    .is_ok_and(|l| l.to_string_lossy().contains("perf_event"))
            });
            if counting {
                std::thread::sleep(Duration::from_millis(100));
                return Some(perf);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        perf.stop();
        None
    }

    /// Detaches; returns (all syscalls, write syscalls, sleeps).
    fn stop(mut self) -> Option<(u64, u64, u64)> {
        let pid = Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT);
        let _ = self.child.wait();
        let text = std::fs::read_to_string(&self.out).ok()?;
        let _ = std::fs::remove_file(&self.out);
        let count = |event: &str| {
            text.lines().find(|l| l.contains(event)).and_then(|l| {
                let v = l.split(',').next()?;
                // Never scheduled during the window: it made no syscall.
                if v == "<not counted>" {
                    Some(0)
                } else {
                    v.parse().ok()
                }
            })
        };
        Some((
            count("raw_syscalls:sys_enter")?,
            count("sys_enter_write")?,
            count("sys_enter_clock_nanosleep")?,
        ))
    }
}

/// What the kernel saw the producer process do during the push window.
#[derive(Debug, Clone, Copy, Default)]
struct Syscalls {
    /// The ring's own count of wake-ups (eventfd writes) sent.
    ring_wakeups: u64,
    /// perf: all syscalls, write syscalls and sleeps (the pacing's), minus the benchmark's
    /// own handshake.
    perf: Option<(u64, u64, u64)>,
    /// /proc/<pid>/io: read and write syscalls, minus the handshake.
    proc_rw: (u64, u64),
}

// ---- throughput ------------------------------------------------------------------------------

/// Cross-process ring, consumer spinning. Returns records/s and, if `count` is set, what the
/// producer's kernel counters saw.
fn ring_xproc(n: u64, batch: usize, count: bool) -> (f64, Syscalls) {
    let ring = SharedRing::<TelemetryRecord>::create(&RingOptions {
        capacity: CAP,
        epoch: 1,
        source_id: 1,
    })
    .expect("ring");
    let mut c = ring.consumer().expect("consumer");
    let mut peer = spawn_peer(|| {
        let mut p = ring.producer().expect("producer");
        move || {
            let mut sent = 0u64;
            while sent < n {
                if batch == 1 {
                    if p.try_push(rec(sent)).is_ok() {
                        sent += 1;
                    } else {
                        std::hint::spin_loop();
                    }
                } else {
                    // Up to `batch` records, as many as fit, each built in its slot.
                    let end = n.min(sent + batch as u64);
                    let k = p.try_push_from_iter((sent..end).map(rec));
                    if k == 0 {
                        std::hint::spin_loop();
                    }
                    sent += k as u64;
                }
            }
            p
        }
    });
    let io0 = proc_io(peer.pid);
    let perf = if count {
        PerfCount::attach(peer.pid)
    } else {
        None
    };
    let start = Instant::now();
    peer.go();
    let mut got = 0u64;
    while got < n {
        let b = c.read().expect("read");
        if b.is_empty() {
            std::hint::spin_loop();
            continue;
        }
        got += b.len() as u64;
        touch(b.iter().map(|r| u64::from(r.tag_id)).sum());
        b.release_all();
    }
    let secs = start.elapsed().as_secs_f64();
    peer.wait_done();
    let stats = ring.stats();
    let syscalls = window_syscalls(&peer, io0, perf, stats.wakeups_sent);
    if stats.producer_fenced {
        FENCED.store(true, std::sync::atomic::Ordering::Relaxed);
    }
    peer.finish();
    (n as f64 / secs, syscalls)
}

/// The producer's syscalls between "go" and "done": the handshake costs one completed read (go)
/// and one write (done); perf also sees the entry of the read that waits for "exit".
fn window_syscalls(
    peer: &Peer,
    io0: (u64, u64),
    perf: Option<PerfCount>,
    ring_wakeups: u64,
) -> Syscalls {
    let io1 = proc_io(peer.pid);
    // The peer is now blocked in its read of "exit"; give perf a moment to see that entry.
    std::thread::sleep(Duration::from_millis(20));
    let perf = perf
        .and_then(PerfCount::stop)
        .map(|(all, writes, sleeps)| (all.saturating_sub(2), writes.saturating_sub(1), sleeps));
    Syscalls {
        ring_wakeups,
        perf,
        proc_rw: (
            (io1.0 - io0.0).saturating_sub(1),
            (io1.1 - io0.1).saturating_sub(1),
        ),
    }
}

/// Runs `producer` on a thread and `consumer` here, both released by one barrier; records/s.
fn threads(n: u64, producer: impl FnOnce() + Send + 'static, consumer: impl FnOnce()) -> f64 {
    let gate = Arc::new(Barrier::new(2));
    let g = Arc::clone(&gate);
    let t = std::thread::spawn(move || {
        g.wait();
        producer();
    });
    gate.wait();
    let start = Instant::now();
    consumer();
    let secs = start.elapsed().as_secs_f64();
    t.join().expect("producer thread");
    n as f64 / secs
}

fn rtrb(n: u64, batch: usize) -> f64 {
    let (mut p, mut c) = rtrb::RingBuffer::<TelemetryRecord>::new(CAP);
    threads(
        n,
        move || {
            let mut sent = 0u64;
            while sent < n {
                if batch == 1 {
                    if p.push(rec(sent)).is_ok() {
                        sent += 1;
                    } else {
                        std::hint::spin_loop();
                    }
                } else {
                    // Up to `batch` records, as many as fit (like `try_push_slice`).
                    let mut want = (n - sent).min(batch as u64) as usize;
                    if p.write_chunk_uninit(want).is_err() {
                        want = want.min(p.slots());
                    }
                    match p.write_chunk_uninit(want) {
                        Ok(chunk) if want > 0 => {
                            sent += chunk.fill_from_iter((sent..).map(rec)) as u64;
                        }
                        _ => std::hint::spin_loop(),
                    }
                }
            }
        },
        || {
            let mut got = 0u64;
            while got < n {
                let k = c.slots();
                if k == 0 {
                    std::hint::spin_loop();
                    continue;
                }
                let chunk = c.read_chunk(k).expect("read_chunk");
                got += chunk.len() as u64;
                let (a, b) = chunk.as_slices();
                touch(a.iter().chain(b).map(|r| u64::from(r.tag_id)).sum());
                chunk.commit_all();
            }
        },
    )
}

fn array_queue(n: u64) -> f64 {
    let q = Arc::new(crossbeam_queue::ArrayQueue::<TelemetryRecord>::new(CAP));
    let qp = Arc::clone(&q);
    threads(
        n,
        move || {
            let mut sent = 0;
            while sent < n {
                if qp.push(rec(sent)).is_ok() {
                    sent += 1;
                } else {
                    std::hint::spin_loop();
                }
            }
        },
        || {
            let mut got = 0;
            while got < n {
                match q.pop() {
                    Some(r) => {
                        touch(u64::from(r.tag_id));
                        got += 1;
                    }
                    None => std::hint::spin_loop(),
                }
            }
        },
    )
}

fn sync_channel(n: u64) -> f64 {
    let (tx, rx) = std::sync::mpsc::sync_channel::<TelemetryRecord>(CAP);
    threads(
        n,
        move || (0..n).for_each(|i| tx.send(rec(i)).expect("send")),
        || {
            let mut got = 0;
            while got < n {
                match rx.try_recv() {
                    Ok(r) => {
                        touch(u64::from(r.tag_id));
                        got += 1;
                    }
                    Err(_) => std::hint::spin_loop(),
                }
            }
        },
    )
}

fn tokio_mpsc(n: u64) -> f64 {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<TelemetryRecord>(CAP);
    threads(
        n,
        move || (0..n).for_each(|i| tx.blocking_send(rec(i)).expect("send")),
        || {
            let mut got = 0;
            while got < n {
                match rx.try_recv() {
                    Ok(r) => {
                        touch(u64::from(r.tag_id));
                        got += 1;
                    }
                    Err(_) => std::hint::spin_loop(),
                }
            }
        },
    )
}

/// A pipe between two processes, copying every record through the kernel; `batch` records per
/// write.
fn pipe(n: u64, batch: usize) -> f64 {
    let (mut r, w) = pipe_files();
    let size = size_of::<TelemetryRecord>();
    let mut peer = spawn_peer(|| {
        move || {
            let mut w = &w;
            let mut buf = vec![0u8; size * batch];
            let mut sent = 0u64;
            while sent < n {
                let k = (n - sent).min(batch as u64) as usize;
                for i in 0..k {
                    buf[i * size..(i + 1) * size]
                        .copy_from_slice(bytemuck::bytes_of(&rec(sent + i as u64)));
                }
                w.write_all(&buf[..k * size]).expect("pipe write");
                sent += k as u64;
            }
        }
    });
    let start = Instant::now();
    peer.go();
    // Reads whole records (the pipe may split them) and reads each one, like the others.
    let mut buf = vec![0u8; 1 << 16];
    let (mut have, mut got) = (0usize, 0u64);
    while got < n {
        let k = r.read(&mut buf[have..]).expect("pipe read");
        assert!(k > 0, "pipe closed early");
        have += k;
        let whole = have / size;
        let recs: &[TelemetryRecord] = bytemuck::cast_slice(&buf[..whole * size]);
        touch(recs.iter().map(|r| u64::from(r.tag_id)).sum());
        got += whole as u64;
        buf.copy_within(whole * size..have, 0);
        have -= whole * size;
    }
    let secs = start.elapsed().as_secs_f64();
    peer.wait_done();
    peer.finish();
    n as f64 / secs
}

// ---- wake-up latency -------------------------------------------------------------------------

/// Waits until `due` (CLOCK_MONOTONIC ns) by sleeping, so the producer does not hold a CPU
/// (as a PLC adapter would not); returns at once when late. When a sleep overshoots, the
/// records due meanwhile go out back to back, each stamped when it is pushed.
fn pace(due: u64) {
    let now = monotonic_ns();
    if due > now {
        std::thread::sleep(Duration::from_nanos(due - now));
    }
}

/// Timer slack of the calling thread to 1 ns, so a pacing sleep ends when due instead of up
/// to 50 µs later (the default slack).
fn precise_sleeps() {
    nix::sys::prctl::set_timerslack(1).expect("PR_SET_TIMERSLACK");
}

#[derive(Debug, Clone, Copy)]
struct Latency {
    p50: u64,
    p99: u64,
    p999: u64,
    max: u64,
    samples: u64,
    /// p99 over reads of the oldest record each read found: the latency of each wake-up rather
    /// than of each record.
    p99_read: u64,
    /// Reads that found a record more than 1 ms old: each is one stall of the consumer (or of
    /// its vCPU), which delays every record that arrives meanwhile.
    stalls: u64,
}

/// Latencies of records as the consumer reads them, batch by batch.
struct Recorder {
    hist: Histogram<u64>,
    per_read: Histogram<u64>,
    stalls: u64,
}

impl Recorder {
    fn new() -> Self {
        Self {
            hist: Histogram::new(3).expect("histogram"),
            per_read: Histogram::new(3).expect("histogram"),
            stalls: 0,
        }
    }

    /// Records one read, made at `now`, of records stamped at `stamps`.
    fn read(&mut self, now: u64, stamps: impl Iterator<Item = u64>) {
        let mut worst = 0;
        for t in stamps {
            let l = now.saturating_sub(t).max(1);
            worst = worst.max(l);
            self.hist.record(l).expect("record");
        }
        if worst > 0 {
            self.per_read.record(worst).expect("record");
        }
        if worst > 1_000_000 {
            self.stalls += 1;
        }
    }

    fn latency(&self) -> Latency {
        let h = &self.hist;
        Latency {
            p50: h.value_at_quantile(0.5),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
            samples: h.len(),
            p99_read: self.per_read.value_at_quantile(0.99),
            stalls: self.stalls,
        }
    }
}

/// Ring with a consumer in `Consumer::wait` (spin limit `spin`, `None`: the default), producer
/// paced at `rate` records/s for `secs`; with `count`, perf counts the producer's syscalls (its
/// tracepoint slows each syscall, so the latency figures come from runs without it).
fn ring_latency(rate: u64, secs: u64, spin: Option<Duration>, count: bool) -> (Latency, Syscalls) {
    let ring = SharedRing::<TelemetryRecord>::create(&RingOptions {
        capacity: CAP,
        epoch: 1,
        source_id: 1,
    })
    .expect("ring");
    let mut c = ring.consumer().expect("consumer");
    if let Some(limit) = spin {
        c.set_spin_limit(limit);
    }
    let n = rate * secs;
    let mut peer = spawn_peer(|| {
        let mut p = ring.producer().expect("producer");
        precise_sleeps();
        move || {
            let interval = 1_000_000_000 / rate;
            let start = monotonic_ns();
            for i in 0..n {
                pace(start + i * interval);
                let mut r = rec(i);
                r.timestamp_ns = monotonic_ns();
                while p.try_push(r).is_err() {
                    std::hint::spin_loop();
                }
            }
            p
        }
    });
    let io0 = proc_io(peer.pid);
    let perf = if count {
        PerfCount::attach(peer.pid)
    } else {
        None
    };
    let mut rec = Recorder::new();
    peer.go();
    let mut got = 0;
    while got < n {
        c.wait(Some(Duration::from_secs(5))).expect("wait");
        let b = c.read().expect("read");
        rec.read(monotonic_ns(), b.iter().map(|r| r.timestamp_ns));
        got += b.len() as u64;
        b.release_all();
    }
    peer.wait_done();
    let syscalls = window_syscalls(&peer, io0, perf, ring.stats().wakeups_sent);
    peer.finish();
    (rec.latency(), syscalls)
}

/// The same pacing with a reader parked in `read` on a pipe: one kernel wake-up per record.
fn pipe_latency(rate: u64, secs: u64) -> Latency {
    let (mut r, w) = pipe_files();
    let n = rate * secs;
    let mut peer = spawn_peer(|| {
        precise_sleeps();
        move || {
            let mut w = &w;
            let interval = 1_000_000_000 / rate;
            let start = monotonic_ns();
            for i in 0..n {
                pace(start + i * interval);
                w.write_all(&monotonic_ns().to_ne_bytes()).expect("write");
            }
        }
    });
    let mut rec = Recorder::new();
    peer.go();
    let mut buf = [0u8; 8 * 512];
    let (mut have, mut got) = (0usize, 0u64);
    while got < n {
        let k = r.read(&mut buf[have..]).expect("read");
        let now = monotonic_ns();
        have += k;
        let stamps = buf[..have / 8 * 8]
            .chunks_exact(8)
            .map(|b| u64::from_ne_bytes(b.try_into().expect("8 bytes")));
        rec.read(now, stamps);
        got += (have / 8) as u64;
        buf.copy_within(have / 8 * 8..have, 0);
        have %= 8;
    }
    peer.wait_done();
    peer.finish();
    rec.latency()
}

// ---- report ----------------------------------------------------------------------------------

#[derive(Debug, Default, Clone)]
struct Samples(Vec<f64>);

impl Samples {
    fn push(&mut self, v: f64) {
        self.0.push(v);
    }

    fn median(&self) -> f64 {
        let mut v = self.0.clone();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    }

    fn min(&self) -> f64 {
        self.0.iter().copied().fold(f64::INFINITY, f64::min)
    }

    fn max(&self) -> f64 {
        self.0.iter().copied().fold(0.0, f64::max)
    }
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("model name")
                    .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
            })
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!("{cpu}, {cpus} CPUs, Linux {}", kernel.trim())
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "?".into())
}

fn m(v: f64) -> String {
    format!("{:.1} M", v / 1e6)
}

fn us(ns: u64) -> String {
    format!("{:.1}", ns as f64 / 1000.0)
}

fn per_record(count: u64, n: u64) -> String {
    format!("{count} ({:.6}/record)", count as f64 / n as f64)
}

fn describe(s: &Syscalls, n: u64) -> String {
    let perf = match s.perf {
        Some((all, writes, sleeps)) => format!(
            "perf: {} syscalls = {writes} writes + {sleeps} sleeps (pacing) + {} other",
            per_record(all, n),
            all - writes - sleeps
        ),
        None => "perf: unavailable".into(),
    };
    format!(
        "ring wake-ups sent {}; kernel, /proc/<pid>/io: {} reads, {} writes; {perf}",
        per_record(s.ring_wakeups, n),
        s.proc_rw.0,
        s.proc_rw.1
    )
}

fn verdict(ok: bool) -> &'static str {
    if ok { "met" } else { "MISSED" }
}

/// Parts of the benchmark; `cargo bench -p edgegw-ringbuf --bench ring -- latency` runs one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Part {
    /// Throughput of every queue.
    Throughput,
    /// Throughput of the ring and rtrb only (to compare builds of the ring quickly).
    Versus,
    /// Producer syscalls with a busy consumer.
    Syscalls,
    /// Wake-up latency with a parked consumer.
    Latency,
}

fn parts() -> Vec<Part> {
    let chosen: Vec<Part> = std::env::args()
        .skip(1)
        .filter_map(|a| match a.as_str() {
            "throughput" => Some(Part::Throughput),
            "versus" => Some(Part::Versus),
            "syscalls" => Some(Part::Syscalls),
            "latency" => Some(Part::Latency),
            _ => None,
        })
        .collect();
    if chosen.is_empty() {
        vec![Part::Throughput, Part::Syscalls, Part::Latency]
    } else {
        chosen
    }
}

#[derive(Debug, Default)]
struct Throughput {
    ring1: Samples,
    ring64: Samples,
    rtrb1: Samples,
    rtrb64: Samples,
    aq: Samples,
    sc: Samples,
    tk: Samples,
    pipe1: Samples,
    pipe64: Samples,
}

fn throughput(all: bool) -> Throughput {
    let mut t = Throughput::default();
    for _ in 0..ROUNDS {
        t.ring1.push(ring_xproc(N, 1, false).0);
        t.rtrb1.push(rtrb(N, 1));
        t.ring64.push(ring_xproc(N, BATCH, false).0);
        t.rtrb64.push(rtrb(N, BATCH));
        if all {
            t.aq.push(array_queue(N));
            t.sc.push(sync_channel(N_SLOW));
            t.tk.push(tokio_mpsc(N_SLOW));
            t.pipe1.push(pipe(N_SLOW, 1));
            t.pipe64.push(pipe(N, BATCH));
        }
    }
    println!(
        "{:<52} {:>9} {:>19}",
        "throughput, records/s (consumer busy)", "median", "range"
    );
    let row = |name: &str, s: &Samples| {
        if !s.0.is_empty() {
            let range = format!("{:.1} – {:.1} M", s.min() / 1e6, s.max() / 1e6);
            println!("{name:<52} {:>9} {range:>19}", m(s.median()));
        }
    };
    row("ring, 2 processes, batch 1 (try_push)", &t.ring1);
    row(
        "ring, 2 processes, batch 64 (try_push_from_iter)",
        &t.ring64,
    );
    row("rtrb, 2 threads, batch 1 (push)", &t.rtrb1);
    row("rtrb, 2 threads, batch 64 (write_chunk_uninit)", &t.rtrb64);
    row("crossbeam ArrayQueue, 2 threads, batch 1", &t.aq);
    row("std::sync::mpsc::sync_channel, 2 threads, batch 1", &t.sc);
    row("tokio::sync::mpsc, 2 threads, batch 1", &t.tk);
    row("pipe, 2 processes, batch 1 (write per record)", &t.pipe1);
    row("pipe, 2 processes, batch 64 (write per 64)", &t.pipe64);
    println!();
    t
}

fn syscalls() -> [Syscalls; 2] {
    println!("producer syscalls while the consumer is busy (one more run each, perf attached):");
    let (_, sys1) = ring_xproc(N, 1, true);
    let (_, sys64) = ring_xproc(N, BATCH, true);
    println!("  batch 1:  {}", describe(&sys1, N));
    println!("  batch 64: {}\n", describe(&sys64, N));
    [sys1, sys64]
}

/// What disturbed a run: CPU time the hypervisor stole from this VM's vCPUs (ms, all vCPUs),
/// how often the consumer was preempted while runnable, and the CPU time the consumer (this
/// process) used (µs).
fn disturbance() -> (u64, i64, i64) {
    // USER_HZ is 100 on every Linux ABI: a tick is 10 ms.
    let steal = std::fs::read_to_string("/proc/stat")
        .ok()
        .and_then(|s| s.lines().next()?.split_whitespace().nth(8)?.parse().ok())
        .map_or(0, |ticks: u64| ticks * 10);
    let usage = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_SELF);
    let preempted = usage
        .as_ref()
        .map_or(0, |u| u.involuntary_context_switches());
    let cpu_us = usage.map_or(0, |u| {
        let us = |t: nix::sys::time::TimeVal| t.tv_sec() * 1_000_000 + t.tv_usec();
        us(u.user_time()) + us(u.system_time())
    });
    (steal, preempted, cpu_us)
}

/// The opt-in spin limit measured beside the default.
const SPIN: Duration = Duration::from_micros(50);

/// Latency runs per configuration (each one a fresh ring or pipe and producer process).
const LATENCY_ROUNDS: usize = 3;

/// The wake-up latency runs at one rate: medians and ranges over the rounds.
#[derive(Debug, Default)]
struct LatencyAt {
    rate: u64,
    /// `Consumer::wait` as shipped (no spin: parks whenever the ring is empty).
    ring: Vec<Latency>,
    /// `Consumer::wait` with an adaptive spin of up to [`SPIN`] before it parks.
    ring_spin: Vec<Latency>,
    pipe: Vec<Latency>,
    /// `Consumer::wait` as shipped, a CPU latency request of 0 µs held ([`held_latency`]).
    ring_polling: Vec<Latency>,
    /// The pipe, the same request held.
    pipe_polling: Vec<Latency>,
}

/// Runs `f` while this process holds a CPU latency request of 0 µs (idle CPUs poll), as the
/// gateway does with `gateway.cpu_wake_latency_us = 0`; `None` (and why, printed once) if the
/// request cannot be held here.
fn held_latency<R>(f: impl FnOnce() -> R) -> Option<R> {
    match edgegw_ringbuf::CpuLatencyRequest::hold(Duration::ZERO) {
        Ok(request) => {
            let out = f();
            drop(request);
            Some(out)
        }
        Err(e) => {
            static SAID: std::sync::Once = std::sync::Once::new();
            SAID.call_once(|| println!("  (no runs with a CPU latency request: {e})"));
            None
        }
    }
}

fn p99s(runs: &[Latency]) -> Samples {
    Samples(runs.iter().map(|l| l.p99 as f64).collect())
}

fn latency() -> Vec<LatencyAt> {
    println!("wake-up latency, consumer waiting in Consumer::wait (µs, push stamp to read):");
    println!(
        "  default (spin limit {} µs): parks whenever empty; spin {} µs: adaptive spin up to \
         that, then park; pipe: a reader parked in read(2). Producer paced by sleeping, timer \
         slack 1 ns.",
        edgegw_ringbuf::DEFAULT_SPIN_LIMIT.as_micros(),
        SPIN.as_micros()
    );
    println!(
        "  per record, and p99/read: of the oldest record of each read (one per wake-up); \
         stalls: reads that found a record > 1 ms old; steal: vCPU time the host took; \
         preempted: the consumer's involuntary context switches; cpu: the consumer's CPU time \
         over the run's wall time; wake-ups: eventfd writes by the producer per record"
    );
    println!(
        "{:<30} {:>6} {:>7} {:>7} {:>7} {:>7} {:>8} {:>6} {:>6} {:>5} {:>5} {:>8}",
        "",
        "p50",
        "p99",
        "p99.9",
        "max",
        "samples",
        "p99/read",
        "stalls",
        "steal",
        "prmt",
        "cpu",
        "wake-ups"
    );
    let measure = |name: &str, run: &mut dyn FnMut() -> (Latency, Option<Syscalls>)| {
        let before = disturbance();
        let t0 = Instant::now();
        let (l, s) = run();
        let wall_us = t0.elapsed().as_micros() as f64;
        let after = disturbance();
        let wakeups = s.map_or("-".to_owned(), |s| {
            format!("{:.3}", s.ring_wakeups as f64 / l.samples as f64)
        });
        println!(
            "{name:<30} {:>6} {:>7} {:>7} {:>7} {:>7} {:>8} {:>6} {:>3}ms {:>5} {:>4}% {wakeups:>8}",
            us(l.p50),
            us(l.p99),
            us(l.p999),
            us(l.max),
            l.samples,
            us(l.p99_read),
            l.stalls,
            after.0 - before.0,
            after.1 - before.1,
            ((after.2 - before.2) as f64 / wall_us * 100.0).round()
        );
        l
    };
    let mut out = Vec::new();
    for (rate, secs) in [(1_000u64, 3u64), (100_000, 2)] {
        let mut at = LatencyAt {
            rate,
            ..LatencyAt::default()
        };
        for _ in 0..LATENCY_ROUNDS {
            at.ring.push(measure(&format!("ring at {rate}/s"), &mut || {
                let (l, s) = ring_latency(rate, secs, None, false);
                (l, Some(s))
            }));
            at.ring_spin.push(measure(
                &format!("ring at {rate}/s, spin 50 µs"),
                &mut || {
                    let (l, s) = ring_latency(rate, secs, Some(SPIN), false);
                    (l, Some(s))
                },
            ));
            at.pipe.push(measure(&format!("pipe at {rate}/s"), &mut || {
                (pipe_latency(rate, secs), None)
            }));
            let polling = "CPU latency 0 µs";
            if let Some(l) = held_latency(|| {
                measure(&format!("ring at {rate}/s, {polling}"), &mut || {
                    let (l, s) = ring_latency(rate, secs, None, false);
                    (l, Some(s))
                })
            }) {
                at.ring_polling.push(l);
            }
            if let Some(l) = held_latency(|| {
                measure(&format!("pipe at {rate}/s, {polling}"), &mut || {
                    (pipe_latency(rate, secs), None)
                })
            }) {
                at.pipe_polling.push(l);
            }
        }
        let (_, s) = ring_latency(rate, 1, None, true);
        println!(
            "  ring at {rate}/s again for 1 s, perf attached: {}",
            describe(&s, rate)
        );
        out.push(at);
    }
    println!();
    out
}

fn main() {
    let started = Instant::now();
    let parts = parts();
    println!("edgegw-ringbuf hand-off benchmark");
    println!("machine: {}", machine());
    println!(
        "load average (1 min) at start: {} (other work on the machine skews every figure)",
        load_average()
    );
    println!(
        "48-byte TelemetryRecord, capacity {CAP}; {N} records per run ({N_SLOW} for channels \
         with a syscall per record); {ROUNDS} interleaved rounds\n"
    );
    let t = (parts.contains(&Part::Throughput) || parts.contains(&Part::Versus))
        .then(|| throughput(parts.contains(&Part::Throughput)));
    let sys = parts.contains(&Part::Syscalls).then(syscalls);
    let lat = parts.contains(&Part::Latency).then(latency);

    println!(
        "(checksum of records read: {})",
        TOUCHED.load(std::sync::atomic::Ordering::Relaxed)
    );
    println!("\nsummary (medians) against the ring issue's targets:");
    if let Some(t) = &t {
        println!(
            "  ring publish fence: {}",
            if FENCED.load(std::sync::atomic::Ordering::Relaxed) {
                "real fence(SeqCst) (membarrier unavailable: the fallback)"
            } else {
                "compiler fence + consumer's membarrier (the fast path)"
            }
        );
        let r64 = t.ring64.median() / t.rtrb64.median();
        let r1 = t.ring1.median() / t.rtrb1.median();
        println!(
            "  ring/rtrb at batch 64: {r64:.2}   target >= 1.0: {}",
            verdict(r64 >= 1.0)
        );
        println!("  ring/rtrb at batch 1:  {r1:.2}");
        if !t.pipe1.0.is_empty() {
            let p1 = t.ring1.median() / t.pipe1.median();
            let p64 = t.ring64.median() / t.pipe64.median();
            println!(
                "  ring/pipe at batch 1:  {p1:.1}   target >= 20: {}",
                verdict(p1 >= 20.0)
            );
            println!("  ring/pipe at batch 64: {p64:.1}");
        }
    }
    if let Some(lat) = &lat {
        for at in lat {
            let (ring, spin, pipe) = (p99s(&at.ring), p99s(&at.ring_spin), p99s(&at.pipe));
            let range = |s: &Samples| format!("{}–{}", us(s.min() as u64), us(s.max() as u64));
            println!(
                "  wake-up p99 at {}/s: {} µs ({}); spin 50 µs: {} µs ({}); pipe {} µs ({})   \
                 target <= 50 µs: {}",
                at.rate,
                us(ring.median() as u64),
                range(&ring),
                us(spin.median() as u64),
                range(&spin),
                us(pipe.median() as u64),
                range(&pipe),
                verdict(ring.median() <= 50_000.0)
            );
            let (ring0, pipe0) = (p99s(&at.ring_polling), p99s(&at.pipe_polling));
            if ring0.0.is_empty() {
                println!("    with a CPU latency request of 0 µs: not measured (see above)");
            } else {
                println!(
                    "    with a CPU latency request of 0 µs (opt-in: idle CPUs poll): ring {} µs \
                     ({}); pipe {} µs ({})   target <= 50 µs: {}",
                    us(ring0.median() as u64),
                    range(&ring0),
                    us(pipe0.median() as u64),
                    range(&pipe0),
                    verdict(ring0.median() <= 50_000.0)
                );
            }
        }
    }
    if let Some(sys) = &sys {
        // The largest of the ring's own count and the kernel's counts, over both batch sizes.
        let worst = sys
            .iter()
            .map(|s| {
                s.ring_wakeups
                    .max(s.perf.map_or(0, |p| p.0))
                    .max(s.proc_rw.0 + s.proc_rw.1)
            })
            .max()
            .unwrap_or(0);
        println!(
            "  producer syscalls per record, consumer busy: {}   target 0: {}",
            worst as f64 / N as f64,
            verdict(worst == 0)
        );
    }
    println!("\nbenchmark took {:.0?}", started.elapsed());
    let _ = std::io::stdout().flush();
}
