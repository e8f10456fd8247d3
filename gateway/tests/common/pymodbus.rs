//! The pymodbus server playing the PLC (`tests/peers/pymodbus_peer.py` at the workspace root;
//! see its header for the spec format). Values are encoded by pymodbus, not by this project.
//!
//! A missing python3 or pymodbus fails the test with what to install; nothing is skipped.
//!
//! Include with `#[path = "common/pymodbus.rs"] mod pymodbus;`.
// Each test binary uses part of this module.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// What to install when the peer is missing.
pub const INSTALL: &str =
    "pip install pymodbus==3.16.1 pyserial==3.5 (tests/install-peers.sh does it)";

/// A pymodbus TCP server on a free loopback port; killed when dropped.
pub struct PyModbus {
    child: Child,
    _dir: tempfile::TempDir,
    /// The port it listens on.
    pub port: u16,
}

impl PyModbus {
    /// Starts a server for `spec` on a port of its own choosing and waits for its `READY`.
    pub fn tcp(spec: &serde_json::Value) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let spec_path = dir.path().join("spec.json");
        std::fs::write(&spec_path, serde_json::to_vec(spec).unwrap()).unwrap();
        let script =
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/peers/pymodbus_peer.py");
        let mut child = Command::new("python3")
            .arg(&script)
            .arg("--spec")
            .arg(&spec_path)
            .args(["--host", "127.0.0.1", "--port", "0"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start python3 ({e}): {INSTALL}"));
        let (tx, rx) = mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = child.stderr.take().unwrap();
        let (etx, erx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut all = String::new();
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                all += &line;
                all.push('\n');
            }
            let _ = etx.send(all);
        });
        let port = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(line) => line
                .strip_prefix("READY ")
                .and_then(|p| p.trim().parse().ok())
                .unwrap_or_else(|| panic!("pymodbus peer said {line:?}, expected READY <port>")),
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                let stderr = erx.recv_timeout(Duration::from_secs(5)).unwrap_or_default();
                panic!("the pymodbus peer did not start within 30 s ({INSTALL}):\n{stderr}");
            }
        };
        Self {
            child,
            _dir: dir,
            port,
        }
    }
}

impl Drop for PyModbus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
