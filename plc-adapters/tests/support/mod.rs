//! Launchers for the real peers the adapter is tested against (pymodbus, socat) and ring
//! helpers. A missing peer fails the test with a message saying what to install: these tests
//! never skip.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use edgegw_plc::modbus::{LinkCounters, ModbusLink, run_link};
use edgegw_plc::{Emitter, FullPolicy, Quality};
use edgegw_ringbuf::{Consumer, Producer, RingOptions, SharedRing, TelemetryRecord};

/// Where the Python peer scripts live (`tests/peers/` at the workspace root).
pub fn peers_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/peers")
}

const PYMODBUS_HINT: &str = "install the peer with `pip install pymodbus==3.16.1 pyserial==3.5` \
     (the CI script does); these tests fail rather than skip when a peer is missing";

/// Panics with a clear message unless python3 with pymodbus (and pyserial) is available.
pub fn require_pymodbus() {
    let out = Command::new("python3")
        .args(["-c", "import pymodbus, serial; print(pymodbus.__version__)"])
        .output()
        .unwrap_or_else(|e| panic!("python3 is not runnable ({e}): {PYMODBUS_HINT}"));
    assert!(
        out.status.success(),
        "pymodbus is not importable by python3: {PYMODBUS_HINT}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let version = String::from_utf8_lossy(&out.stdout);
    assert!(
        version.starts_with("3."),
        "pymodbus {version} found, the peer script needs 3.x: {PYMODBUS_HINT}"
    );
}

/// Panics with a clear message unless socat is installed.
pub fn require_socat() {
    let ok = Command::new("socat")
        .arg("-V")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    assert!(
        matches!(ok, Ok(s) if s.success()),
        "socat is not installed: `apt-get install -y socat` (the CI script does); this test fails rather than skips"
    );
}

/// Reads a child's stream line by line on a thread; lines arrive on the channel.
fn lines_of(stream: impl std::io::Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// A pymodbus server process, killed when dropped.
pub struct PyModbus {
    child: Child,
    spec_path: PathBuf,
    _dir: TempDir,
    stderr: mpsc::Receiver<String>,
    /// TCP port (TCP peers) or serial path (RTU peers) per served device.
    pub ready: Vec<String>,
}

impl PyModbus {
    /// Starts a TCP peer on `port` (0 = any free port) serving `spec` (see
    /// tests/peers/pymodbus_peer.py).
    pub fn tcp(spec: &serde_json::Value, port: u16) -> Self {
        Self::spawn(spec, &["--port", &port.to_string()], 1)
    }

    /// Starts an RTU peer on serial device `path`.
    pub fn rtu(spec: &serde_json::Value, path: &str) -> Self {
        Self::spawn(spec, &["--serial", path], 1)
    }

    /// Starts the benchmark layout: `devices` servers on free ports.
    pub fn bench(spec: &serde_json::Value, devices: usize) -> Self {
        Self::spawn(spec, &["--port", "0"], devices)
    }

    fn spawn(spec: &serde_json::Value, args: &[&str], servers: usize) -> Self {
        require_pymodbus();
        let dir = TempDir::new("pymodbus");
        let spec_path = dir.0.join("spec.json");
        std::fs::write(&spec_path, serde_json::to_vec(spec).unwrap()).unwrap();
        Self::launch(spec_path, dir, args, servers)
    }

    fn launch(spec_path: PathBuf, dir: TempDir, args: &[&str], servers: usize) -> Self {
        let mut child = Command::new("python3")
            .arg(peers_dir().join("pymodbus_peer.py"))
            .arg("--spec")
            .arg(&spec_path)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start python3 for the pymodbus peer ({e}): {PYMODBUS_HINT}")
            });
        let stdout = lines_of(child.stdout.take().unwrap());
        let stderr = lines_of(child.stderr.take().unwrap());
        let mut ready = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        while ready.len() < servers {
            match stdout.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(line) => {
                    if let Some(rest) = line.strip_prefix("READY ") {
                        ready.push(rest.trim().to_owned());
                    }
                }
                Err(_) => {
                    let _ = child.kill();
                    let err: Vec<String> = stderr.try_iter().collect();
                    panic!(
                        "pymodbus peer did not become ready: {PYMODBUS_HINT}\n{}",
                        err.join("\n")
                    );
                }
            }
        }
        Self {
            child,
            spec_path,
            _dir: dir,
            stderr,
            ready,
        }
    }

    /// The TCP port of the first server.
    pub fn port(&self) -> u16 {
        self.ready[0].parse().expect("a TCP peer")
    }

    /// Process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kills the server with SIGKILL (no goodbye on the wire) and reaps it.
    pub fn kill(&mut self) {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGKILL,
        )
        .expect("SIGKILL the peer");
        let status = self.child.wait().expect("reap the peer");
        assert!(
            !status.success(),
            "peer should have died of SIGKILL: {status:?}"
        );
    }

    /// Starts the same spec again on TCP port `port`.
    pub fn restart_tcp(self, port: u16) -> Self {
        let mut this = self;
        let _ = this.child.kill();
        let _ = this.child.wait();
        let spec_path = this.spec_path.clone();
        let dir = std::mem::replace(&mut this._dir, TempDir(PathBuf::new()));
        Self::launch(spec_path, dir, &["--port", &port.to_string()], 1)
    }
}

impl Drop for PyModbus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A linked pair of pseudo-terminals made by socat, killed when dropped.
pub struct PtyPair {
    child: Child,
    /// One end.
    pub a: String,
    /// The other end.
    pub b: String,
}

impl PtyPair {
    /// `socat -d -d pty,raw,echo=0 pty,raw,echo=0`.
    pub fn start() -> Self {
        require_socat();
        let mut child = Command::new("socat")
            .args(["-d", "-d", "pty,raw,echo=0", "pty,raw,echo=0"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn socat");
        let lines = lines_of(child.stderr.take().unwrap());
        let mut ptys = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(10);
        while ptys.len() < 2 {
            let line = lines
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .expect("socat did not report its two ptys");
            if let Some(i) = line.find("PTY is ") {
                ptys.push(line[i + 7..].trim().to_owned());
            }
        }
        // Keep draining socat's log so it never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        let b = ptys.pop().unwrap();
        let a = ptys.pop().unwrap();
        Self { child, a, b }
    }
}

impl Drop for PtyPair {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A temporary directory removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let p = std::env::temp_dir().join(format!(
            "edgegw-plc-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&p).unwrap();
        Self(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if !self.0.as_os_str().is_empty() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// A shared-memory ring as the gateway makes it, with its producer and consumer.
pub fn ring(capacity: usize) -> (Producer<TelemetryRecord>, Consumer<TelemetryRecord>) {
    let ring = SharedRing::<TelemetryRecord>::create(&RingOptions {
        capacity,
        epoch: 1,
        source_id: 7,
    })
    .expect("create ring");
    let p = ring.producer().expect("producer");
    let c = ring.consumer().expect("consumer");
    (p, c)
}

/// Moves everything readable from the ring into `out`.
pub fn drain(c: &mut Consumer<TelemetryRecord>, out: &mut Vec<TelemetryRecord>) {
    let batch = c.read().expect("ring intact");
    let (a, b) = batch.as_slices();
    out.extend_from_slice(a);
    out.extend_from_slice(b);
    batch.release_all();
}

/// A link polled in the background into a real ring; records are collected by the caller.
pub struct Running {
    stop: Arc<tokio::sync::Notify>,
    task: tokio::task::JoinHandle<Emitter<Producer<TelemetryRecord>>>,
    pub counters: Arc<LinkCounters>,
    pub consumer: Consumer<TelemetryRecord>,
    pub records: Vec<TelemetryRecord>,
}

impl Running {
    pub fn start(link: ModbusLink) -> Self {
        let (p, consumer) = ring(1 << 16);
        let stop = Arc::new(tokio::sync::Notify::new());
        let counters = Arc::new(LinkCounters::default());
        let task = {
            let (stop, counters) = (Arc::clone(&stop), Arc::clone(&counters));
            tokio::spawn(async move {
                let mut emitter = Emitter::new(p, FullPolicy::default());
                run_link(&link, &mut emitter, &counters, stop.notified()).await;
                emitter
            })
        };
        Self {
            stop,
            task,
            counters,
            consumer,
            records: Vec::new(),
        }
    }

    /// Collects records until `done(records)` holds; panics after `timeout` with what arrived.
    pub async fn until(
        &mut self,
        what: &str,
        timeout: Duration,
        done: impl Fn(&[TelemetryRecord]) -> bool,
    ) {
        let deadline = Instant::now() + timeout;
        loop {
            drain(&mut self.consumer, &mut self.records);
            if done(&self.records) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; counters {:?}; records:\n{:#?}",
                self.counters.snapshot(),
                self.records.iter().rev().take(20).collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Keeps collecting for `d`.
    pub async fn collect_for(&mut self, d: Duration) {
        let deadline = Instant::now() + d;
        while Instant::now() < deadline {
            drain(&mut self.consumer, &mut self.records);
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        drain(&mut self.consumer, &mut self.records);
    }

    pub async fn stop(mut self) -> (Vec<TelemetryRecord>, Emitter<Producer<TelemetryRecord>>) {
        self.stop.notify_one();
        let emitter = self.task.await.expect("link task");
        drain(&mut self.consumer, &mut self.records);
        (self.records, emitter)
    }
}

/// Records of one tag of one source, in order.
pub fn of_tag(records: &[TelemetryRecord], source_id: u32, tag_id: u32) -> Vec<TelemetryRecord> {
    records
        .iter()
        .filter(|r| r.source_id == source_id && r.tag_id == tag_id)
        .copied()
        .collect()
}

/// The quality of a record.
pub fn quality(r: &TelemetryRecord) -> Quality {
    Quality::from_code(
        r.quality,
        if r.kind == edgegw_ringbuf::ValueKind::Str as u8 {
            0
        } else {
            r.detail
        },
    )
    .unwrap_or_else(|| panic!("unknown quality code {:#06x}", r.quality))
}

/// Reassembles the string carried by the chunk run that ends at the last record of `records`.
pub fn last_text(records: &[TelemetryRecord]) -> String {
    let end = records
        .iter()
        .rposition(|r| r.flags & edgegw_ringbuf::flags::CONTINUED == 0)
        .expect("a final chunk");
    let mut start = end;
    while start > 0 && records[start - 1].flags & edgegw_ringbuf::flags::CONTINUED != 0 {
        start -= 1;
    }
    let total = records[end].detail as usize;
    let mut bytes: Vec<u8> = records[start..=end].iter().flat_map(|r| r.value).collect();
    bytes.truncate(total);
    String::from_utf8(bytes).expect("utf-8")
}
