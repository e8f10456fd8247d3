//! The `edge-gateway` binary as an operator runs it (`run --config FILE`, stopped with
//! SIGTERM), its adapter children as `ps` shows them, and a checker for what a subscriber
//! received: every `(source, epoch)` sequence, duplicates, and each record as published.
//!
//! Include with `#[path = "common/gateway.rs"] mod gateway;` (it needs
//! `common/mosquitto.rs` included as `mosquitto` beside it).
// Each test binary uses part of this module.
#![allow(dead_code)]

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::mosquitto::Received;

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_edge-gateway");

/// `edge-gateway run --config FILE`, its log (stderr) in a file; killed when dropped.
pub struct GatewayProcess {
    child: Option<Child>,
    log: PathBuf,
}

impl GatewayProcess {
    /// Starts the gateway; its stderr goes to `log` (appended, so restarts keep one log).
    pub fn start(config: &Path, log: &Path) -> Self {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap();
        let child = Command::new(BIN)
            .args(["run", "--config"])
            .arg(config)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .unwrap();
        Self {
            child: Some(child),
            log: log.to_owned(),
        }
    }

    /// The gateway's process id.
    pub fn pid(&self) -> i32 {
        self.child.as_ref().expect("running").id() as i32
    }

    /// The log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Panics (with the log) if the gateway has exited.
    pub fn assert_running(&mut self) {
        if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
            panic!("the gateway exited ({status}):\n{}", self.log());
        }
    }

    /// SIGTERM, then waits at most `within` for the exit; returns the exit status.
    pub fn sigterm_and_wait(&mut self, within: Duration) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).unwrap();
        let start = Instant::now();
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            if start.elapsed() > within {
                let _ = child.kill();
                let _ = child.wait();
                panic!("no exit within {within:?} of SIGTERM:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The gateway's adapter children: `(pid, source name)`.
    pub fn adapters(&self) -> Vec<(i32, String)> {
        adapter_children(self.pid())
    }

    /// Waits (at most `within`) until every source in `names` has a running adapter, and
    /// returns their pids in that order.
    pub fn wait_adapters(&self, names: &[&str], within: Duration) -> Vec<i32> {
        let start = Instant::now();
        loop {
            let now = self.adapters();
            let pids: Vec<Option<i32>> = names
                .iter()
                .map(|n| now.iter().find(|(_, s)| s == n).map(|(p, _)| *p))
                .collect();
            if pids.iter().all(Option::is_some) {
                return pids.into_iter().flatten().collect();
            }
            assert!(
                start.elapsed() < within,
                "adapters {names:?} not all running within {within:?} (found {now:?}):\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Children of `parent` started as `edge-gateway adapter --source NAME`.
pub fn adapter_children(parent: i32) -> Vec<(i32, String)> {
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for entry in dir.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // `pid (comm) state ppid …`; comm may hold spaces and parentheses.
        let Some(after) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
            continue;
        };
        let mut fields = after.split_whitespace();
        let (state, ppid) = (fields.next(), fields.next().and_then(|p| p.parse().ok()));
        if ppid != Some(parent) || state == Some("Z") {
            continue;
        }
        let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let args: Vec<String> = cmdline
            .split(|&b| b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        if args.iter().any(|a| a == "adapter")
            && let Some(i) = args.iter().position(|a| a == "--source")
            && let Some(name) = args.get(i + 1)
        {
            out.push((pid, name.clone()));
        }
    }
    out
}

/// One record of a published batch.
#[derive(Debug, Clone)]
pub struct Record {
    /// Topic it came on.
    pub topic: String,
    /// Source, epoch and seq.
    pub source: String,
    pub epoch: u64,
    pub seq: u64,
    /// Device and group of its batch.
    pub device: String,
    pub group: String,
    /// The record as JSON (`tag`, `ts`, `v`, `q`, …).
    pub json: serde_json::Value,
    /// Whether its batch was replayed from the spool.
    pub replayed: bool,
}

/// What the subscriber got, checked as any subscriber could check it.
#[derive(Debug, Default)]
pub struct Seen {
    /// Distinct seqs per `(source, epoch)`.
    pub seqs: HashMap<(String, u64), BTreeSet<u64>>,
    /// Records received, duplicates included.
    pub received: u64,
    /// Records received again.
    pub duplicates: u64,
    /// Every record, in arrival order, if `keep_records` (a long run would hold too many).
    pub records: Vec<Record>,
    /// Whether to keep every record in `records`.
    pub keep_records: bool,
    /// Records received in replayed batches.
    pub replayed: u64,
    /// Lowest and highest seq received in a replayed batch, per source.
    pub replayed_seqs: HashMap<String, (u64, u64)>,
    /// Messages on the status topic, in arrival order.
    pub status: Vec<(String, bool)>,
}

impl Seen {
    /// A checker that keeps every record.
    pub fn keeping_records() -> Self {
        Self {
            keep_records: true,
            ..Self::default()
        }
    }

    /// Takes one message: a batch (every record), or a status payload on a `…/status` topic.
    pub fn take(&mut self, m: &Received) {
        if m.topic.ends_with("/status") {
            self.status
                .push((String::from_utf8_lossy(&m.payload).into_owned(), m.retain));
            return;
        }
        let doc: serde_json::Value = serde_json::from_slice(&m.payload)
            .unwrap_or_else(|e| panic!("{}: not JSON ({e})", m.topic));
        let source = doc["source"].as_str().expect("source").to_owned();
        let epoch = doc["epoch"].as_u64().expect("epoch");
        let replayed = doc["replayed"].as_bool().expect("replayed");
        let set = self.seqs.entry((source.clone(), epoch)).or_default();
        for r in doc["records"].as_array().expect("records") {
            let seq = r["seq"].as_u64().expect("seq");
            // A string of several chunks covers `seq..=seq_last`.
            let last = r
                .get("seq_last")
                .map_or(seq, |l| l.as_u64().expect("seq_last"));
            assert!(last >= seq, "{}: seq_last {last} < seq {seq}", m.topic);
            self.received += 1;
            if !set.insert(seq) {
                self.duplicates += 1;
            }
            set.extend(seq + 1..=last);
            if replayed {
                self.replayed += 1;
                let e = self
                    .replayed_seqs
                    .entry(source.clone())
                    .or_insert((seq, seq));
                *e = (e.0.min(seq), e.1.max(seq));
            }
            if !self.keep_records {
                continue;
            }
            self.records.push(Record {
                topic: m.topic.clone(),
                source: source.clone(),
                epoch,
                seq,
                device: doc["device"].as_str().expect("device").to_owned(),
                group: doc["group"].as_str().expect("group").to_owned(),
                json: r.clone(),
                replayed,
            });
        }
    }

    /// Takes every message waiting in `rx` now.
    pub fn drain(&mut self, rx: &mut tokio::sync::mpsc::UnboundedReceiver<Received>) {
        while let Ok(m) = rx.try_recv() {
            self.take(&m);
        }
    }

    /// Seqs missing from `(source, epoch)` between 0 and the highest seen.
    pub fn missing(&self, source: &str, epoch: u64) -> Vec<u64> {
        let Some(set) = self.seqs.get(&(source.to_owned(), epoch)) else {
            return Vec::new();
        };
        let max = set.last().copied().unwrap_or(0);
        (0..=max).filter(|s| !set.contains(s)).collect()
    }

    /// Epochs seen for `source`, ascending.
    pub fn epochs(&self, source: &str) -> Vec<u64> {
        let mut e: Vec<u64> = self
            .seqs
            .keys()
            .filter(|(s, _)| s == source)
            .map(|(_, e)| *e)
            .collect();
        e.sort_unstable();
        e
    }

    /// Distinct records of `source`.
    pub fn distinct(&self, source: &str) -> usize {
        self.seqs
            .iter()
            .filter(|((s, _), _)| s == source)
            .map(|(_, set)| set.len())
            .sum()
    }
}

/// Collects from `rx` into `seen` until `done(seen)` holds, at most `within`; panics with
/// `what` on timeout.
pub async fn collect_until(
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<Received>,
    seen: &mut Seen,
    what: &str,
    within: Duration,
    mut done: impl FnMut(&Seen) -> bool,
) {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        seen.drain(rx);
        if done(seen) {
            return;
        }
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(m)) => seen.take(&m),
            Ok(None) => panic!("{what}: the subscriber stopped"),
            Err(_) => panic!(
                "{what}: not within {within:?} (received {} records, {:?} distinct per source/epoch)",
                seen.received,
                seen.seqs
                    .iter()
                    .map(|(k, v)| (k.clone(), v.len()))
                    .collect::<Vec<_>>()
            ),
        }
    }
}

/// Collects until nothing new has arrived for `quiet`, at most `within`.
pub async fn collect_until_quiet(
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<Received>,
    seen: &mut Seen,
    quiet: Duration,
    within: Duration,
) {
    let deadline = tokio::time::Instant::now() + within;
    while tokio::time::Instant::now() < deadline {
        match tokio::time::timeout(quiet, rx.recv()).await {
            Ok(Some(m)) => seen.take(&m),
            Ok(None) | Err(_) => return,
        }
    }
}
