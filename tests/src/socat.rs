//! A linked pair of pseudo-terminals made by socat: a serial line on which a Modbus RTU master
//! and a server can talk, without hardware.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// What to install when socat is missing.
pub const INSTALL: &str = "apt-get install -y socat (tests/install-peers.sh does it)";

/// Panics with what to install unless socat runs.
pub fn require() {
    let ok = Command::new("socat")
        .arg("-V")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    assert!(
        matches!(ok, Ok(s) if s.success()),
        "socat is not installed: {INSTALL}; this test fails rather than skips"
    );
}

/// Two ptys linked by `socat -d -d pty,raw,echo=0 pty,raw,echo=0`; socat is killed when this is
/// dropped.
#[derive(Debug)]
pub struct PtyPair {
    child: Child,
    /// The path of one end.
    pub a: String,
    /// The path of the other end.
    pub b: String,
}

impl PtyPair {
    /// Starts socat and waits (at most 10 s) until it has reported both ptys.
    pub fn start() -> Self {
        require();
        let mut child = Command::new("socat")
            .args(["-d", "-d", "pty,raw,echo=0", "pty,raw,echo=0"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start socat ({e}): {INSTALL}"));
        let lines = crate::lines_of(child.stderr.take().expect("piped stderr"));
        let mut ptys = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(10);
        while ptys.len() < 2 {
            let line = lines
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .expect("socat did not report its two ptys within 10 s");
            if let Some(i) = line.find("PTY is ") {
                ptys.push(line[i + 7..].trim().to_owned());
            }
        }
        // Keep draining socat's log so that it never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        let b = ptys.pop().expect("two ptys");
        let a = ptys.pop().expect("two ptys");
        Self { child, a, b }
    }
}

impl Drop for PtyPair {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
