//! Hand-off benchmark: the cross-process ring against in-process queues and a pipe, with the
//! same record type (48-byte `TelemetryRecord`) and capacity (4096).
//!
//! Run: `cargo bench -p edgegw-ringbuf --bench handoff`. Prints a table and the ratios the ring
//! issue asks for. Each throughput figure is the best of three runs (the machine is shared).

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use edgegw_ringbuf::{RingOptions, SharedRing, TelemetryRecord, Value};
use hdrhistogram::Histogram;
use nix::sys::wait::waitpid;
use nix::unistd::{ForkResult, fork};

const CAP: usize = 4096;
const RUNS: usize = 5;

/// Every consumer reads each record (sums `seq`), as the forwarder does; the sum is printed so
/// the work cannot be optimised away.
static TOUCHED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

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

/// Runs `child` in a forked process (which `_exit`s), returns its pid.
fn in_child(child: impl FnOnce()) -> nix::unistd::Pid {
    // SAFETY: the benchmark is single-threaded when it forks; the child runs `child` and exits
    // without returning into main.
    match unsafe { fork() }.expect("fork") {
        ForkResult::Child => {
            child();
            // SAFETY: async-signal-safe exit.
            unsafe { nix::libc::_exit(0) }
        }
        ForkResult::Parent { child } => child,
    }
}

fn best(f: impl Fn() -> f64) -> f64 {
    (0..RUNS).map(|_| f()).fold(0.0, f64::max)
}

/// Cross-process ring, consumer spinning: records/s and producer syscalls per record.
fn ring_xproc(n: u64, batch: usize) -> (f64, f64) {
    let ring = SharedRing::<TelemetryRecord>::create(&RingOptions {
        capacity: CAP,
        epoch: 1,
        source_id: 1,
    })
    .unwrap();
    let mut c = ring.consumer().unwrap();
    let pid = in_child(|| {
        let mut p = ring.producer().unwrap();
        let buf: Vec<_> = (0..batch as u64).map(rec).collect();
        let mut sent = 0u64;
        while sent < n {
            if batch == 1 {
                if p.try_push(rec(sent)).is_ok() {
                    sent += 1;
                } else {
                    std::hint::spin_loop();
                }
            } else {
                let want = (n - sent).min(batch as u64) as usize;
                let k = p.try_push_slice(&buf[..want]);
                if k == 0 {
                    std::hint::spin_loop();
                }
                sent += k as u64;
            }
        }
    });
    let (mut got, mut first) = (0u64, None);
    while got < n {
        let b = c.read().unwrap();
        if b.is_empty() {
            std::hint::spin_loop();
            continue;
        }
        first.get_or_insert_with(Instant::now);
        got += b.len() as u64;
        touch(b.iter().map(|r| u64::from(r.tag_id)).sum());
        b.release_all();
    }
    let secs = first.unwrap().elapsed().as_secs_f64();
    waitpid(pid, None).unwrap();
    (n as f64 / secs, ring.stats().wakeups_sent as f64 / n as f64)
}

fn rtrb(n: u64, batch: usize) -> f64 {
    let (mut p, mut c) = rtrb::RingBuffer::<TelemetryRecord>::new(CAP);
    let t = std::thread::spawn(move || {
        let mut sent = 0u64;
        while sent < n {
            if batch == 1 {
                if p.push(rec(sent)).is_ok() {
                    sent += 1;
                }
            } else {
                let want = (n - sent).min(batch as u64) as usize;
                if let Ok(chunk) = p.write_chunk_uninit(want) {
                    sent += chunk.fill_from_iter((sent..).map(rec)) as u64;
                }
            }
        }
    });
    let start = Instant::now();
    let mut got = 0u64;
    while got < n {
        let k = c.slots();
        if k == 0 {
            std::hint::spin_loop();
            continue;
        }
        let chunk = c.read_chunk(k).unwrap();
        got += chunk.len() as u64;
        let (a, b) = chunk.as_slices();
        touch(a.iter().chain(b).map(|r| u64::from(r.tag_id)).sum());
        chunk.commit_all();
    }
    t.join().unwrap();
    n as f64 / start.elapsed().as_secs_f64()
}

fn array_queue(n: u64) -> f64 {
    let q = std::sync::Arc::new(crossbeam_queue::ArrayQueue::<TelemetryRecord>::new(CAP));
    let qp = std::sync::Arc::clone(&q);
    let t = std::thread::spawn(move || {
        let mut sent = 0;
        while sent < n {
            if qp.push(rec(sent)).is_ok() {
                sent += 1;
            }
        }
    });
    let start = Instant::now();
    let mut got = 0;
    while got < n {
        if let Some(r) = q.pop() {
            touch(u64::from(r.tag_id));
            got += 1;
        }
    }
    t.join().unwrap();
    n as f64 / start.elapsed().as_secs_f64()
}

fn sync_channel(n: u64) -> f64 {
    let (tx, rx) = std::sync::mpsc::sync_channel::<TelemetryRecord>(CAP);
    let t = std::thread::spawn(move || (0..n).for_each(|i| tx.send(rec(i)).unwrap()));
    let start = Instant::now();
    for _ in 0..n {
        touch(u64::from(rx.recv().unwrap().tag_id));
    }
    t.join().unwrap();
    n as f64 / start.elapsed().as_secs_f64()
}

fn tokio_mpsc(n: u64) -> f64 {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<TelemetryRecord>(CAP);
    let t = std::thread::spawn(move || (0..n).for_each(|i| tx.blocking_send(rec(i)).unwrap()));
    let start = Instant::now();
    let mut buf = Vec::with_capacity(256);
    let mut got = 0;
    while got < n {
        buf.clear();
        got += rx.blocking_recv_many(&mut buf, 256) as u64;
        touch(buf.iter().map(|r| u64::from(r.tag_id)).sum());
    }
    t.join().unwrap();
    n as f64 / start.elapsed().as_secs_f64()
}

/// A pipe between two processes, copying every record through the kernel.
fn pipe(n: u64, batch: usize) -> f64 {
    let (r, w) = nix::unistd::pipe().unwrap();
    let (mut r, w) = (std::fs::File::from(r), std::fs::File::from(w));
    let pid = in_child(|| {
        let mut w = &w;
        let size = size_of::<TelemetryRecord>();
        let mut buf = vec![0u8; size * batch];
        let mut sent = 0u64;
        while sent < n {
            let k = (n - sent).min(batch as u64) as usize;
            for i in 0..k {
                buf[i * size..(i + 1) * size]
                    .copy_from_slice(bytemuck::bytes_of(&rec(sent + i as u64)));
            }
            w.write_all(&buf[..k * size]).unwrap();
            sent += k as u64;
        }
    });
    drop(w);
    let mut buf = vec![0u8; 1 << 16];
    let (mut bytes, mut first) = (0u64, None);
    let total = n * size_of::<TelemetryRecord>() as u64;
    while bytes < total {
        let k = r.read(&mut buf).unwrap();
        assert!(k > 0, "pipe closed early");
        touch(buf[..k].iter().map(|&b| u64::from(b)).sum());
        first.get_or_insert_with(Instant::now);
        bytes += k as u64;
    }
    let secs = first.unwrap().elapsed().as_secs_f64();
    waitpid(pid, None).unwrap();
    n as f64 / secs
}

/// Wake-up latency with a parked (blocking) consumer, producer paced at `rate` records/s.
fn wakeup_latency(rate: u64, duration: Duration) -> (u64, u64, f64) {
    let ring = SharedRing::<TelemetryRecord>::create(&RingOptions {
        capacity: CAP,
        epoch: 1,
        source_id: 1,
    })
    .unwrap();
    let mut c = ring.consumer().unwrap();
    let n = rate * duration.as_secs().max(1);
    let pid = in_child(|| {
        let mut p = ring.producer().unwrap();
        let interval = 1_000_000_000 / rate;
        let start = monotonic_ns();
        for i in 0..n {
            let due = start + i * interval;
            loop {
                let now = monotonic_ns();
                if now >= due {
                    break;
                }
                if due - now > 200_000 {
                    std::thread::sleep(Duration::from_nanos(due - now - 100_000));
                } else {
                    std::hint::spin_loop();
                }
            }
            let mut r = rec(i);
            r.timestamp_ns = monotonic_ns();
            while p.try_push(r).is_err() {}
        }
    });
    let mut hist = Histogram::<u64>::new(3).unwrap();
    let mut got = 0;
    while got < n {
        c.wait(Some(Duration::from_secs(5))).unwrap();
        let now = monotonic_ns();
        let b = c.read().unwrap();
        for r in b.iter() {
            hist.record(now.saturating_sub(r.timestamp_ns).max(1))
                .unwrap();
        }
        got += b.len() as u64;
        b.release_all();
    }
    waitpid(pid, None).unwrap();
    let wakeups = ring.stats().wakeups_sent as f64 / n as f64;
    (
        hist.value_at_quantile(0.5),
        hist.value_at_quantile(0.99),
        wakeups,
    )
}

fn main() {
    // `cargo bench` passes `--bench`; any other argument is a filter we do not support.
    const N: u64 = 5_000_000;
    const N_SLOW: u64 = 1_000_000;
    println!("edgegw-ringbuf hand-off benchmark: 48-byte records, capacity {CAP}, best of {RUNS}");
    println!("{:<44} {:>16}", "", "records/s");

    let (mut ring1, mut sys1) = (0.0f64, 0.0f64);
    let (mut ring64, mut sys64) = (0.0f64, 0.0f64);
    for _ in 0..RUNS {
        let (r, s) = ring_xproc(N, 1);
        if r > ring1 {
            (ring1, sys1) = (r, s);
        }
        let (r, s) = ring_xproc(N, 64);
        if r > ring64 {
            (ring64, sys64) = (r, s);
        }
    }
    let rtrb1 = best(|| rtrb(N, 1));
    let rtrb64 = best(|| rtrb(N, 64));
    let aq = best(|| array_queue(N));
    let sc = best(|| sync_channel(N_SLOW));
    let tk = best(|| tokio_mpsc(N_SLOW));
    let pipe1 = best(|| pipe(N_SLOW, 1));
    let pipe64 = best(|| pipe(N, 64));
    let row = |name: &str, v: f64| println!("{name:<44} {v:>16.0}");
    row("ring, 2 processes, batch 1 (consumer busy)", ring1);
    row("ring, 2 processes, batch 64 (consumer busy)", ring64);
    row("rtrb, 2 threads, batch 1", rtrb1);
    row("rtrb, 2 threads, batch 64 (chunks)", rtrb64);
    row("crossbeam ArrayQueue, 2 threads", aq);
    row("std::sync::mpsc::sync_channel, 2 threads", sc);
    row("tokio::sync::mpsc, 2 threads", tk);
    row("pipe, 2 processes, batch 1 (write per record)", pipe1);
    row("pipe, 2 processes, batch 64", pipe64);
    println!("producer syscalls per record, consumer busy: batch 1 {sys1:.6}, batch 64 {sys64:.6}");

    for rate in [1_000u64, 100_000] {
        let (p50, p99, w) = wakeup_latency(rate, Duration::from_secs(2));
        println!(
            "parked consumer at {rate:>6} records/s: wake-up latency p50 {:.1} µs, p99 {:.1} µs; wake-ups per record {w:.3}",
            p50 as f64 / 1000.0,
            p99 as f64 / 1000.0
        );
    }
    println!(
        "(checksum of records read: {})",
        TOUCHED.load(std::sync::atomic::Ordering::Relaxed)
    );
    println!("summary:");
    println!(
        "  ring/rtrb at batch 64: {:.2} (target >= 1.0)",
        ring64 / rtrb64
    );
    println!("  ring/rtrb at batch 1:  {:.2}", ring1 / rtrb1);
    println!(
        "  ring/pipe at batch 1:  {:.1} (target >= 20)",
        ring1 / pipe1
    );
    println!("  ring/pipe at batch 64: {:.1}", ring64 / pipe64);
}
