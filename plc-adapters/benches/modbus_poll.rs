//! Benchmark (not a test): one adapter process polling Modbus TCP servers — by default the
//! project's simulator — 10 devices × 1000 points (500 u16 + 500 f32 = 1500 registers, 12
//! reads) every 100 ms = 100,000 points/s, the workload of EMQX Neuron's published benchmark.
//!
//! ```text
//! cargo bench -p edgegw-plc --bench modbus_poll -- [--server sim|pymodbus] [--seconds 20]
//!     [--devices 10] [--u16 500] [--f32 500] [--interval-ms 100]
//! ```
//!
//! The parent process runs the servers and the ring's consumer; the adapter runs in a child
//! process (this binary re-executed) that attaches the ring it inherited, polls every device
//! as one task per link on a single-threaded runtime, and reports its own CPU time and peak
//! RSS (getrusage, /proc/self/status). Figures: CPU-seconds per million points polled, CPU
//! share of one core, peak RSS. Targets on the 2-core CI machine: ≤ 10 % of one core and
//! ≤ 10 MB RSS.

#[path = "../tests/support/mod.rs"]
#[allow(unused_imports)]
mod support;

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use edgegw_plc::modbus::{LinkCounters, LinkStats, run_link};
use edgegw_plc::sim::{ModbusSim, SimSpec};
use edgegw_plc::{AdapterConfig, Emitter, FullPolicy};
use edgegw_ringbuf::{RingOptions, SharedRing, TelemetryRecord};

const ROLE_ENV: &str = "EDGEGW_PLC_BENCH_ROLE";
const CONFIG_ENV: &str = "EDGEGW_PLC_BENCH_CONFIG";

#[derive(Debug, Clone)]
struct Args {
    server: String,
    seconds: u64,
    devices: usize,
    n_u16: u16,
    n_f32: u16,
    interval_ms: u64,
    ring: usize,
    flat_config: bool,
}

fn args() -> Args {
    let mut a = Args {
        server: "sim".into(),
        seconds: 20,
        devices: 10,
        n_u16: 500,
        n_f32: 500,
        interval_ms: 100,
        ring: 16384,
        flat_config: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let mut v = || it.next().unwrap_or_else(|| panic!("{k} needs a value"));
        match k.as_str() {
            "--server" => a.server = v(),
            "--seconds" => a.seconds = v().parse().unwrap(),
            "--devices" => a.devices = v().parse().unwrap(),
            "--u16" => a.n_u16 = v().parse().unwrap(),
            "--f32" => a.n_f32 = v().parse().unwrap(),
            "--interval-ms" => a.interval_ms = v().parse().unwrap(),
            "--ring" => a.ring = v().parse().unwrap(),
            "--flat-config" => a.flat_config = true,
            "--bench" => {}
            other => panic!("unknown argument {other}"),
        }
    }
    assert!(
        a.server == "sim" || a.server == "pymodbus",
        "--server sim|pymodbus"
    );
    a
}

fn config(ports: &[u16], a: &Args) -> String {
    let mut text = String::new();
    for (d, port) in ports.iter().enumerate() {
        text += &format!(
            "[[devices]]\nname = \"dev{d}\"\nprotocol = \"modbus-tcp\"\naddress = \"127.0.0.1:{port}\"\n\
             [[devices.groups]]\nname = \"all\"\ninterval_ms = {}\ntags = [\n",
            a.interval_ms
        );
        if a.flat_config {
            // Every tag spelled out: 10,000 lines of TOML for the default workload.
            for i in 0..a.n_u16 {
                text += &format!(
                    "{{ name = \"u{i}\", table = \"holding-register\", address = {i}, type = \"u16\" }},\n"
                );
            }
            for i in 0..a.n_f32 {
                let addr = u32::from(a.n_u16) + 2 * u32::from(i);
                text += &format!(
                    "{{ name = \"f{i}\", table = \"holding-register\", address = {addr}, type = \"f32\" }},\n"
                );
            }
        } else {
            text += &format!(
                "{{ name = \"u\", table = \"holding-register\", address = 0, type = \"u16\", count = {} }},\n\
                 {{ name = \"f\", table = \"holding-register\", address = {}, type = \"f32\", count = {} }},\n",
                a.n_u16, a.n_u16, a.n_f32
            );
        }
        text += "]\n";
    }
    text
}

fn main() {
    if std::env::var(ROLE_ENV).as_deref() == Ok("adapter") {
        adapter_child();
        return;
    }
    let a = args();
    let sim_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let mut _peer = None;
    let mut _sims = Vec::new();
    let ports: Vec<u16> = if a.server == "sim" {
        sim_rt.block_on(async {
            for _ in 0..a.devices {
                let spec = SimSpec::bench_device(a.n_u16, a.n_f32);
                _sims.push(
                    ModbusSim::start("127.0.0.1:0".parse().unwrap(), spec)
                        .await
                        .unwrap(),
                );
            }
        });
        _sims.iter().map(|s| s.local_addr().port()).collect()
    } else {
        let spec = serde_json::json!({"bench": {"n_u16": a.n_u16, "n_f32": a.n_f32, "devices": a.devices}});
        let peer = edgegw_tests::pymodbus::PyModbus::many(&spec, a.devices);
        let ports = peer.ready.iter().map(|p| p.parse().unwrap()).collect();
        _peer = Some(peer);
        ports
    };
    let cfg = config(&ports, &a);
    let resolved = toml::from_str::<AdapterConfig>(&cfg)
        .unwrap()
        .resolve()
        .unwrap();
    println!("plan of the first device:\n{}", resolved.links[0]);

    let ring = SharedRing::<TelemetryRecord>::create(&RingOptions {
        capacity: a.ring,
        epoch: 1,
        source_id: 1,
    })
    .unwrap();
    let mut consumer = ring.consumer().unwrap();
    let dir = support::TempDir::new("bench");
    let cfg_path = dir.0.join("adapter.toml");
    std::fs::write(&cfg_path, &cfg).unwrap();
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.env(ROLE_ENV, "adapter")
        .env(CONFIG_ENV, &cfg_path)
        .env("EDGEGW_PLC_BENCH_SECONDS", a.seconds.to_string())
        .stdout(Stdio::piped());
    ring.pass_to_child(&mut cmd).unwrap();
    let child = cmd.spawn().expect("spawn adapter child");
    let done = Arc::new(AtomicBool::new(false));
    let consumed = Arc::new(AtomicU64::new(0));
    let reader = {
        let (done, consumed) = (Arc::clone(&done), Arc::clone(&consumed));
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                let _ = consumer.wait(Some(Duration::from_millis(50)));
                let batch = consumer.read().unwrap();
                consumed.fetch_add(batch.len() as u64, Ordering::Relaxed);
                batch.release_all();
            }
        })
    };
    let server_cpu_before = _peer.as_ref().map(|p| proc_cpu_s(p.pid()));
    let out = child.wait_with_output().unwrap();
    let server_cpu = _peer
        .as_ref()
        .map(|p| proc_cpu_s(p.pid()) - server_cpu_before.unwrap_or(0.0));
    done.store(true, Ordering::Relaxed);
    reader.join().unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "adapter child failed: {report}");
    let field = |k: &str| -> f64 {
        report
            .lines()
            .find_map(|l| l.strip_prefix(k).map(|v| v.trim().parse().unwrap()))
            .unwrap_or_else(|| panic!("{k} missing in child report: {report}"))
    };
    let (cpu, wall, points, rss_kb) = (
        field("cpu_s="),
        field("wall_s="),
        field("points="),
        field("maxrss_kb="),
    );
    let requests = field("requests=");
    let overruns = field("overruns=");
    let expected =
        (a.devices as f64) * f64::from(a.n_u16 + a.n_f32) * wall * 1000.0 / a.interval_ms as f64;
    println!(
        "server: {}  devices: {}  points/device: {}  interval: {} ms  ring: {} records  config: {}",
        a.server,
        a.devices,
        a.n_u16 + a.n_f32,
        a.interval_ms,
        a.ring,
        if a.flat_config {
            "one entry per tag"
        } else {
            "tag arrays (count)"
        }
    );
    println!("adapter wall time:        {wall:.1} s");
    println!(
        "points polled:            {points:.0} ({:.0}/s, {:.1} % of the {:.0}/s asked for)",
        points / wall,
        100.0 * points / expected,
        expected / wall
    );
    println!("requests / overruns:      {requests:.0} / {overruns:.0}");
    println!(
        "records into the ring:    {} (report by exception: changed values only)",
        consumed.load(Ordering::Relaxed)
    );
    println!(
        "adapter CPU:              {cpu:.2} s = {:.2} % of one core",
        100.0 * cpu / wall
    );
    println!("CPU-seconds per 1M points: {:.3}", cpu / (points / 1e6));
    if let Some(s) = server_cpu {
        println!(
            "pymodbus server CPU:      {s:.2} s = {:.1} % of one core (one Python process, all devices)",
            100.0 * s / wall
        );
    }
    println!(
        "adapter peak RSS:         {:.1} MB ({rss_kb:.0} kB)",
        rss_kb / 1024.0
    );
    println!(
        "adapter RSS at the end:   {:.1} MB ({:.0} kB, of which {:.0} kB ring pages)",
        field("rss_end_kb=") / 1024.0,
        field("rss_end_kb="),
        field("rss_shmem_kb=")
    );
}

/// The adapter process: attach the inherited ring, poll every link until time is up, report.
fn adapter_child() {
    let seconds: u64 = std::env::var("EDGEGW_PLC_BENCH_SECONDS")
        .unwrap()
        .parse()
        .unwrap();
    let text = std::fs::read_to_string(std::env::var(CONFIG_ENV).unwrap()).unwrap();
    let cfg: AdapterConfig = toml::from_str(&text).unwrap();
    drop(text);
    let resolved = cfg.resolve().unwrap();
    drop(cfg);

    let ring = SharedRing::<TelemetryRecord>::from_inherited().expect("inherited ring");
    let producer = ring.producer().expect("producer");
    let sink = Arc::new(std::sync::Mutex::new(producer));
    let started = Instant::now();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let totals: Vec<LinkStats> = rt.block_on(async {
        let stop = Arc::new(tokio::sync::Notify::new());
        let mut tasks = Vec::new();
        for link in resolved.links {
            let (sink, stop) = (Arc::clone(&sink), Arc::clone(&stop));
            tasks.push(tokio::spawn(async move {
                let counters = LinkCounters::default();
                let mut emitter = Emitter::new(sink, FullPolicy::default());
                let stopped = stop.notified();
                run_link(&link, &mut emitter, &counters, stopped).await;
                counters.snapshot()
            }));
        }
        tokio::time::sleep(Duration::from_secs(seconds)).await;
        stop.notify_waiters();
        let mut out = Vec::new();
        for t in tasks {
            out.push(t.await.unwrap());
        }
        out
    });
    let wall = started.elapsed().as_secs_f64();
    let (rss_end_kb, rss_shmem_kb) = (status_kb("VmRSS:"), status_kb("RssShmem:"));
    let usage = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_SELF).unwrap();
    let tv = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 / 1e6;
    let cpu = tv(usage.user_time()) + tv(usage.system_time());
    let sum = |f: fn(&LinkStats) -> u64| totals.iter().map(f).sum::<u64>();
    println!("cpu_s={cpu}");
    println!("wall_s={wall}");
    println!("maxrss_kb={}", usage.max_rss());
    println!("rss_end_kb={rss_end_kb}");
    println!("rss_shmem_kb={rss_shmem_kb}");
    println!("points={}", sum(|s| s.points));
    println!("requests={}", sum(|s| s.requests));
    println!("overruns={}", sum(|s| s.overruns));
}

/// A `kB` field of /proc/self/status.
fn status_kb(key: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// CPU seconds (user + system) a process has used so far, from /proc/<pid>/stat.
fn proc_cpu_s(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // USER_HZ is 100 on Linux (sysconf(_SC_CLK_TCK)).
    ticks / 100.0
}
