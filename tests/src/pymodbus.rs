//! The pymodbus server that plays the PLC (`tests/peers/pymodbus_peer.py`; its header gives the
//! spec format). Values are encoded by pymodbus, an implementation independent of ours, so a
//! test that decodes them checks our decoder against someone else's encoder.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// What to install when the peer is missing.
pub const INSTALL: &str = "pip install pymodbus==3.16.1 pyserial==3.5 \
     (tests/install-peers.sh does it); these tests fail rather than skip when a peer is missing";

/// How long a peer may take to print `READY` (python3 and pymodbus start slowly on a loaded
/// machine, slower still next to emulated tests).
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// The peer script.
pub fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("peers/pymodbus_peer.py")
}

/// Panics with what to install unless python3 can import pymodbus 3.x and pyserial.
pub fn require() {
    let out = Command::new("python3")
        .args(["-c", "import pymodbus, serial; print(pymodbus.__version__)"])
        .output()
        .unwrap_or_else(|e| panic!("python3 is not runnable ({e}): {INSTALL}"));
    assert!(
        out.status.success(),
        "pymodbus is not importable by python3: {INSTALL}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let version = String::from_utf8_lossy(&out.stdout);
    assert!(
        version.starts_with("3."),
        "pymodbus {} found, the peer script needs 3.x: {INSTALL}",
        version.trim()
    );
}

/// A pymodbus server process; killed (SIGKILL) and reaped when dropped.
#[derive(Debug)]
pub struct PyModbus {
    child: Child,
    dir: tempfile::TempDir,
    stderr: mpsc::Receiver<String>,
    /// Per served device, what its `READY` line named: the TCP port, or the serial path.
    pub ready: Vec<String>,
}

impl PyModbus {
    /// A TCP server for `spec` on loopback port `port` (0: a free port the server picks).
    pub fn tcp(spec: &Value, port: u16) -> Self {
        Self::spawn(
            spec,
            &["--host", "127.0.0.1", "--port", &port.to_string()],
            1,
        )
    }

    /// An RTU server for `spec` on the serial device `path` (for instance one end of a
    /// [`crate::socat::PtyPair`]).
    pub fn rtu(spec: &Value, path: &str) -> Self {
        Self::spawn(spec, &["--serial", path], 1)
    }

    /// `devices` TCP servers for `spec`, each on a free loopback port (the benchmark's layout).
    pub fn many(spec: &Value, devices: usize) -> Self {
        Self::spawn(spec, &["--host", "127.0.0.1", "--port", "0"], devices)
    }

    fn spawn(spec: &Value, args: &[&str], servers: usize) -> Self {
        require();
        let dir = tempfile::Builder::new()
            .prefix("edgegw-pymodbus-")
            .tempdir()
            .expect("a temporary directory for the pymodbus spec");
        let spec_path = dir.path().join("spec.json");
        std::fs::write(&spec_path, serde_json::to_vec(spec).expect("spec is JSON"))
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", spec_path.display()));
        Self::launch(dir, args, servers)
    }

    fn launch(dir: tempfile::TempDir, args: &[&str], servers: usize) -> Self {
        let mut child = Command::new("python3")
            .arg(script())
            .arg("--spec")
            .arg(dir.path().join("spec.json"))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start python3 for the pymodbus peer ({e}): {INSTALL}")
            });
        let stdout = crate::lines_of(child.stdout.take().expect("piped stdout"));
        let stderr = crate::lines_of(child.stderr.take().expect("piped stderr"));
        let mut ready = Vec::new();
        let deadline = Instant::now() + START_TIMEOUT;
        while ready.len() < servers {
            match stdout.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(line) => {
                    if let Some(rest) = line.strip_prefix("READY ") {
                        ready.push(rest.trim().to_owned());
                    }
                }
                Err(_) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    let err: Vec<String> = stderr.try_iter().collect();
                    panic!(
                        "the pymodbus peer did not print READY for {servers} server(s) within {} s: {INSTALL}\n{}",
                        START_TIMEOUT.as_secs(),
                        err.join("\n")
                    );
                }
            }
        }
        Self {
            child,
            dir,
            stderr,
            ready,
        }
    }

    /// The TCP port of the first server.
    pub fn port(&self) -> u16 {
        self.ready[0]
            .parse()
            .unwrap_or_else(|_| panic!("READY {:?} is not a TCP port", self.ready[0]))
    }

    /// Process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What the peer has written to stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.try_iter().collect::<Vec<_>>().join("\n")
    }

    /// Kills the server with SIGKILL (no goodbye on the wire) and reaps it.
    pub fn kill(&mut self) {
        self.child.kill().expect("SIGKILL the pymodbus peer");
        let status = self.child.wait().expect("reap the pymodbus peer");
        assert!(
            !status.success(),
            "the peer should have died of SIGKILL: {status:?}"
        );
    }

    /// Kills this server and starts the same spec again, on TCP port `port`.
    pub fn restart_tcp(mut self, port: u16) -> Self {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let dir = std::mem::replace(
            &mut self.dir,
            tempfile::tempdir().expect("a temporary directory"),
        );
        Self::launch(
            dir,
            &["--host", "127.0.0.1", "--port", &port.to_string()],
            1,
        )
    }
}

impl Drop for PyModbus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One numeric type as pymodbus encodes it and the adapter's config names it.
#[derive(Debug, Clone)]
pub struct NumericCase {
    /// The peer spec's `type`.
    pub pymodbus: &'static str,
    /// The tag's `type` in our config.
    pub ours: &'static str,
    /// Width in registers.
    pub width: u32,
    /// The value the peer writes (and the value a correct decoder reads back).
    pub value: Value,
}

/// Every numeric type the adapter decodes, each with a value that uses its whole range (sign
/// bit, high words): the table both the adapter's and the gateway's value tests are built on.
pub fn numeric_cases() -> Vec<NumericCase> {
    let case = |pymodbus, ours, width, value| NumericCase {
        pymodbus,
        ours,
        width,
        value,
    };
    vec![
        case("int16", "i16", 1, json!(-12345)),
        case("uint16", "u16", 1, json!(54321)),
        case("int32", "i32", 2, json!(-123_456_789)),
        case("uint32", "u32", 2, json!(3_123_456_789u32)),
        case("int64", "i64", 4, json!(-1_234_567_890_123_456_789i64)),
        case("uint64", "u64", 4, json!(12_345_678_901_234_567_890u64)),
        case("float32", "f32", 2, json!(-1234.5625)),
        case("float64", "f64", 4, json!(std::f64::consts::PI)),
    ]
}
