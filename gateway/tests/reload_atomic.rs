//! Hot reload of the real `edge-gateway run` while data flows to a real mosquitto: three Modbus
//! TCP devices on the project's simulator and one synthetic source. Each change is written the
//! way editors and configuration tools do it, to a temporary file renamed over the original,
//! and picked up by inotify (one by SIGHUP):
//! 1. add a tag to `plc-a`;
//! 2. change the poll interval of `plc-b` (200 ms to 40 ms);
//! 3. remove `plc-c` (the last device, so no other device's record id shifts);
//! 4. write an invalid file: rejected, the running configuration stays.
//!
//! After each: the change is visible in what arrives, only the changed source's adapter was
//! restarted (the others keep their process), nothing reconnected to the broker (one retained
//! `online`), and no source has a gap in its sequence, changed or not: a changed source keeps
//! its ring, epoch and sequence. `NOTIFY_SOCKET` shows `RELOADING=1` + `MONOTONIC_USEC=` in one
//! datagram, then `READY=1`, for each reload, and the rejected file in `STATUS=`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use edgegw_plc::sim::{ModbusSim, SimSpec};
use rumqttc::{Client, Event, MqttOptions, Packet, QoS};

mod common;
use common::{Mosquitto, free_port};
#[path = "common/notify.rs"]
mod notify;
#[path = "common/reload.rs"]
mod reload;
use notify::NotifySocket;
use reload::{replace_atomically, wait_until};

const BIN: &str = env!("CARGO_BIN_EXE_edge-gateway");

#[derive(Debug, Clone)]
struct Rec {
    source: String,
    epoch: u64,
    seq: u64,
    tag: String,
    at: Instant,
}

#[derive(Default)]
struct Seen {
    records: Vec<Rec>,
    status: Vec<String>,
}

fn config(dir: &Path, broker: u16, plcs: &[u16; 3], step: u32) -> String {
    let plc_a_tags = if step >= 1 {
        "  { name = \"t0\", table = \"holding-register\", address = 0, type = \"u16\" },\n  { name = \"t1\", table = \"holding-register\", address = 1, type = \"u16\" },\n"
    } else {
        "  { name = \"t0\", table = \"holding-register\", address = 0, type = \"u16\" },\n"
    };
    let plc_b_interval = if step >= 2 { 40 } else { 200 };
    let plc_c = if step >= 3 {
        String::new()
    } else {
        format!(
            "[[devices]]\nname = \"plc-c\"\nprotocol = \"modbus-tcp\"\naddress = \"127.0.0.1:{}\"\n\n[[devices.groups]]\nname = \"g\"\ninterval_ms = 100\ntags = [\n  {{ name = \"t0\", table = \"holding-register\", address = 0, type = \"u16\" }},\n]\n\n",
            plcs[2]
        )
    };
    format!(
        r#"[gateway]
name = "reload-test"
state_dir = "{state}"
shutdown_timeout_ms = 4000

[mqtt]
host = "127.0.0.1"
port = {broker}

[payload]
linger_ms = 20

[[devices]]
name = "plc-a"
protocol = "modbus-tcp"
address = "127.0.0.1:{a}"

[[devices.groups]]
name = "fast"
interval_ms = 100
tags = [
{plc_a_tags}]

[[devices]]
name = "plc-b"
protocol = "modbus-tcp"
address = "127.0.0.1:{b}"

[[devices.groups]]
name = "slow"
interval_ms = {plc_b_interval}
tags = [
  {{ name = "t0", table = "holding-register", address = 0, type = "u16" }},
]

{plc_c}[[synthetic]]
name = "sim"
group = "signals"
tags = [
  {{ name = "n", signal = "counter", rate_hz = 100.0 }},
]
"#,
        state = dir.join("state").display(),
        a = plcs[0],
        b = plcs[1],
    )
}

/// Pid of the adapter child of `gateway` for `source`.
fn adapter_pids(gateway: u32) -> BTreeMap<String, u32> {
    let mut out = BTreeMap::new();
    for task in std::fs::read_dir(format!("/proc/{gateway}/task")).unwrap() {
        let Ok(kids) = std::fs::read_to_string(task.unwrap().path().join("children")) else {
            continue;
        };
        for pid in kids.split_whitespace() {
            let Ok(cmd) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
                continue;
            };
            let args: Vec<String> = cmd
                .split(|b| *b == 0)
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            if let Some(i) = args.iter().position(|a| a == "--source") {
                out.insert(args[i + 1].clone(), pid.parse().unwrap());
            }
        }
    }
    out
}

/// Records of `source` that arrived after `since`.
fn after(seen: &Mutex<Seen>, source: &str, since: Instant) -> Vec<Rec> {
    seen.lock()
        .unwrap()
        .records
        .iter()
        .filter(|r| r.source == source && r.at > since)
        .cloned()
        .collect()
}

fn assert_no_gaps(seen: &Mutex<Seen>) -> BTreeMap<String, BTreeSet<u64>> {
    let mut by: BTreeMap<(String, u64), BTreeSet<u64>> = BTreeMap::new();
    for r in &seen.lock().unwrap().records {
        by.entry((r.source.clone(), r.epoch))
            .or_default()
            .insert(r.seq);
    }
    let mut epochs: BTreeMap<String, BTreeSet<u64>> = BTreeMap::new();
    for ((source, epoch), seqs) in &by {
        let (min, max) = (*seqs.first().unwrap(), *seqs.last().unwrap());
        assert_eq!(
            max - min + 1,
            seqs.len() as u64,
            "{source} epoch {epoch}: a gap in seq {min}..={max}"
        );
        epochs.entry(source.clone()).or_default().insert(*epoch);
    }
    epochs
}

#[test]
fn reload_by_atomic_rename_changes_only_what_changed_and_nothing_gaps() {
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let spec = || SimSpec {
        update_interval: Duration::from_millis(10),
        ..SimSpec::bench_device(4, 0)
    };
    let sims: Vec<ModbusSim> = (0..3)
        .map(|_| {
            rt.block_on(ModbusSim::start("127.0.0.1:0".parse().unwrap(), spec()))
                .unwrap()
        })
        .collect();
    let plcs = [0, 1, 2].map(|i| sims[i].local_addr().port());
    let port = free_port();
    let _broker = Mosquitto::start(dir.path(), port);
    let conf_dir = dir.path().join("etc");
    std::fs::create_dir_all(&conf_dir).unwrap();
    let path: PathBuf = conf_dir.join("gateway.toml");
    std::fs::write(&path, config(dir.path(), port, &plcs, 0)).unwrap();

    let seen: Arc<Mutex<Seen>> = Arc::default();
    let mut opts = MqttOptions::new("reload-checker", "127.0.0.1", port);
    opts.set_max_packet_size(8 << 20, 8 << 20);
    let (client, mut connection) = Client::new(opts, 100);
    client
        .subscribe("edge-gateway/#", QoS::AtLeastOnce)
        .unwrap();
    let w = Arc::clone(&seen);
    std::thread::spawn(move || {
        for event in connection.iter() {
            let Ok(Event::Incoming(Packet::Publish(p))) = event else {
                continue;
            };
            let mut seen = w.lock().unwrap();
            if p.topic.ends_with("/status") {
                seen.status
                    .push(String::from_utf8_lossy(&p.payload).into_owned());
                continue;
            }
            let doc: serde_json::Value = serde_json::from_slice(&p.payload).unwrap();
            let now = Instant::now();
            for r in doc["records"].as_array().unwrap() {
                seen.records.push(Rec {
                    source: doc["source"].as_str().unwrap().to_owned(),
                    epoch: doc["epoch"].as_u64().unwrap(),
                    seq: r["seq"].as_u64().unwrap(),
                    tag: r["tag"].as_str().unwrap_or("?").to_owned(),
                    at: now,
                });
            }
        }
    });

    let notify = NotifySocket::listen(&dir.path().join("notify.sock"));
    let log_path = dir.path().join("gateway.log");
    let mut gateway: Child = Command::new(BIN)
        .args(["run", "--config"])
        .arg(&path)
        .env("NOTIFY_SOCKET", dir.path().join("notify.sock"))
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log_path).unwrap())
        .spawn()
        .unwrap();
    let gw = gateway.id();
    let all = ["plc-a", "plc-b", "plc-c", "sim"];
    wait_until("data from every source", Duration::from_secs(30), || {
        let s = seen.lock().unwrap();
        all.iter()
            .all(|src| s.records.iter().filter(|r| r.source == *src).count() >= 10)
    });
    let pids0 = adapter_pids(gw);
    assert_eq!(pids0.len(), 4, "{pids0:?}");
    let reloaded = |n: usize| {
        wait_until(&format!("reload {n} done"), Duration::from_secs(20), || {
            notify.count("RELOADING=1") >= n && notify.count("READY=1") > n
        })
    };

    // 1. Add a tag to plc-a: plc-a's adapter restarts, t1 arrives; nobody else restarts.
    let t1 = Instant::now();
    replace_atomically(&path, &config(dir.path(), port, &plcs, 1));
    reloaded(1);
    wait_until(
        "plc-a reports its new tag t1",
        Duration::from_secs(20),
        || after(&seen, "plc-a", t1).iter().any(|r| r.tag == "t1"),
    );
    let pids1 = adapter_pids(gw);
    assert_ne!(pids1["plc-a"], pids0["plc-a"], "plc-a's adapter restarted");
    for s in ["plc-b", "plc-c", "sim"] {
        assert_eq!(pids1[s], pids0[s], "{s} untouched by plc-a's change");
    }

    // 2. Change plc-b's poll interval by SIGHUP-free inotify again: it reports faster.
    std::thread::sleep(Duration::from_secs(2));
    let before = after(&seen, "plc-b", Instant::now() - Duration::from_secs(2)).len();
    let t2 = Instant::now();
    replace_atomically(&path, &config(dir.path(), port, &plcs, 2));
    reloaded(2);
    // READY=1 follows the reload's decisions; the new adapter process may start a moment
    // later (the old one is stopped first), so wait for it, bounded.
    wait_until("plc-b's new adapter runs", Duration::from_secs(20), || {
        adapter_pids(gw)
            .get("plc-b")
            .is_some_and(|pid| *pid != pids1["plc-b"])
    });
    let pids2 = adapter_pids(gw);
    assert_ne!(pids2["plc-b"], pids1["plc-b"], "plc-b's adapter restarted");
    for s in ["plc-a", "plc-c", "sim"] {
        assert_eq!(pids2[s], pids1[s], "{s} untouched by plc-b's change");
    }
    std::thread::sleep(Duration::from_secs(3));
    let window: Vec<Rec> = after(&seen, "plc-b", t2 + Duration::from_secs(1));
    assert!(
        window.len() > before * 2,
        "plc-b polls every 40 ms instead of 200 ms: {} records in the 2 s after vs {before} in the 2 s before",
        window.len()
    );

    // 3. Remove plc-c, this time by SIGHUP after the rename: its adapter stops, its data ends.
    let t3 = Instant::now();
    replace_atomically(&path, &config(dir.path(), port, &plcs, 3));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(gw as i32),
        nix::sys::signal::Signal::SIGHUP,
    )
    .unwrap();
    reloaded(3);
    wait_until("plc-c's adapter gone", Duration::from_secs(10), || {
        !adapter_pids(gw).contains_key("plc-c")
    });
    let pids3 = adapter_pids(gw);
    for s in ["plc-a", "plc-b", "sim"] {
        assert_eq!(pids3[s], pids2[s], "{s} untouched by plc-c's removal");
    }
    std::thread::sleep(Duration::from_secs(2));
    let late = after(&seen, "plc-c", t3 + Duration::from_secs(1));
    assert!(late.is_empty(), "plc-c still reports: {late:?}");

    // 4. An invalid file: rejected with file, line and key; everything keeps running.
    let n_before = notify.count("RELOADING=1");
    let mut bad = config(dir.path(), port, &plcs, 3);
    bad = bad.replace("linger_ms = 20", "linger_ms = 20\nlinger_mss = 5");
    let t4 = Instant::now();
    replace_atomically(&path, &bad);
    reloaded(n_before + 1);
    wait_until(
        "STATUS= shows the rejected reload",
        Duration::from_secs(10),
        || {
            notify.texts().iter().any(|m| {
                m.contains("STATUS=")
                    && m.contains("reload rejected (1 so far)")
                    && m.contains("payload.linger_mss")
            })
        },
    );
    let log = std::fs::read_to_string(&log_path).unwrap();
    let line = log
        .lines()
        .find(|l| l.contains("configuration rejected") && l.contains("linger_mss"))
        .unwrap_or_else(|| panic!("no rejection logged: {log}"));
    assert!(
        line.contains(&format!("{}:", path.display())) && line.contains("payload.linger_mss"),
        "file, line and key in the log: {line}"
    );
    assert_eq!(adapter_pids(gw), pids3, "an invalid file restarts nothing");
    std::thread::sleep(Duration::from_secs(2));
    for s in ["plc-a", "plc-b", "sim"] {
        assert!(
            !after(&seen, s, t4 + Duration::from_secs(1)).is_empty(),
            "{s} still flows after the rejected file"
        );
    }

    // RELOADING=1 and MONOTONIC_USEC= always in one datagram.
    for m in &notify.texts() {
        if m.lines().any(|l| l == "RELOADING=1") {
            assert!(m.contains("MONOTONIC_USEC="), "{m:?}");
        }
    }

    signal_term_and_wait(&mut gateway);
    std::thread::sleep(Duration::from_millis(500));
    // Nothing gapped, and nobody got a new epoch: changed sources kept their rings.
    let epochs = assert_no_gaps(&seen);
    for s in all {
        assert_eq!(epochs[s].len(), 1, "{s} kept one epoch: {:?}", epochs[s]);
    }
    let status = seen.lock().unwrap().status.clone();
    assert_eq!(
        status.iter().filter(|s| *s == "online").count(),
        1,
        "the sink never reconnected: {status:?}"
    );
    drop(sims);
}

fn signal_term_and_wait(gateway: &mut Child) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(gateway.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = common::wait_exit(gateway, Duration::from_secs(20), "no exit after SIGTERM");
    assert!(status.success(), "{status}");
}
