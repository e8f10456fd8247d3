//! Real peers for the gateway's integration tests.
// Each test binary uses part of this module.
#![allow(dead_code)]

use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// A mosquitto broker on a loopback port, with persistence in `dir`, stopped with SIGTERM so it
/// saves what it acknowledged.
pub struct Mosquitto {
    child: Child,
    conf: std::path::PathBuf,
    /// The port it listens on.
    pub port: u16,
}

impl Mosquitto {
    pub fn start(dir: &std::path::Path, port: u16) -> Self {
        let conf = dir.join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!(
                "listener {port} 127.0.0.1\nallow_anonymous true\npersistence true\npersistence_location {}/\n\
                 autosave_interval 1\nmax_queued_messages 0\nmax_queued_bytes 0\nmax_inflight_messages 100\n\
                 log_dest none\n",
                dir.display()
            ),
        )
        .unwrap();
        let mut m = Self {
            child: spawn(&conf),
            conf,
            port,
        };
        m.wait_listening();
        m
    }

    fn wait_listening(&mut self) {
        let start = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("mosquitto exited at start: {status}");
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "mosquitto did not listen on {}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn stop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
        self.child.wait().unwrap();
    }

    pub fn restart(&mut self) {
        self.child = spawn(&self.conf);
        self.wait_listening();
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn(conf: &std::path::Path) -> Child {
    Command::new("mosquitto")
        .arg("-c")
        .arg(conf)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("mosquitto is not installed: apt-get install mosquitto (tests/install-peers.sh does it)")
}

/// A free loopback port.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits at most `within` for `child` to exit (polling every 20 ms) and returns its status;
/// panics with `what` if it is still running then.
pub fn wait_exit(child: &mut Child, within: Duration, what: &str) -> ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(start.elapsed() < within, "{what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}
