//! A stand-in for systemd's notify socket: a Unix datagram socket the test binds and names in
//! `NOTIFY_SOCKET`, and every datagram the gateway sent to it.
//!
//! Include with `#[path = "common/notify.rs"] mod notify;`.
#![allow(dead_code)]

use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Datagrams received, in arrival order, with their arrival time.
#[derive(Clone, Default)]
pub struct NotifySocket(Arc<Mutex<Vec<(Instant, String)>>>);

impl NotifySocket {
    /// Binds `path` and collects datagrams until the test process ends (each read is
    /// bounded by a timeout).
    pub fn listen(path: &Path) -> Self {
        let socket = UnixDatagram::bind(path).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let heard = Self::default();
        let h = heard.clone();
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                match socket.recv(&mut buf) {
                    Ok(n) => h.0.lock().unwrap().push((
                        Instant::now(),
                        String::from_utf8_lossy(&buf[..n]).into_owned(),
                    )),
                    Err(e)
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                        ) => {}
                    Err(e) => panic!("notify socket: {e}"),
                }
            }
        });
        heard
    }

    /// Runs `f` over the datagrams so far, under the lock (no copy).
    fn with<R>(&self, f: impl FnOnce(&[(Instant, String)]) -> R) -> R {
        f(&self.0.lock().unwrap())
    }

    /// Every datagram so far.
    pub fn texts(&self) -> Vec<String> {
        self.with(|all| all.iter().map(|(_, m)| m.clone()).collect())
    }

    /// Number of datagrams so far.
    pub fn len(&self) -> usize {
        self.with(<[_]>::len)
    }

    /// Arrival times of `WATCHDOG=1` pings.
    pub fn pings(&self) -> Vec<Instant> {
        self.with(|all| {
            all.iter()
                .filter(|(_, m)| m.lines().any(|l| l == "WATCHDOG=1"))
                .map(|(t, _)| *t)
                .collect()
        })
    }

    /// Waits (at most `within`) until a datagram satisfies `pred`; returns its index.
    pub fn wait_for(&self, what: &str, within: Duration, pred: impl Fn(&str) -> bool) -> usize {
        self.wait_for_from(0, what, within, pred)
    }

    /// Datagrams that have `line` as one of their lines (`READY=1`, `RELOADING=1`).
    pub fn count(&self, line: &str) -> usize {
        self.with(|all| {
            all.iter()
                .filter(|(_, m)| m.lines().any(|l| l == line))
                .count()
        })
    }

    /// Waits (at most `within`) until a datagram from index `from` on satisfies `pred`;
    /// returns its index.
    pub fn wait_for_from(
        &self,
        from: usize,
        what: &str,
        within: Duration,
        pred: impl Fn(&str) -> bool,
    ) -> usize {
        let start = Instant::now();
        loop {
            let found = self.with(|all| all.iter().skip(from).position(|(_, m)| pred(m)));
            if let Some(i) = found {
                return from + i;
            }
            assert!(
                start.elapsed() < within,
                "no {what} within {within:?}; heard: {:#?}",
                self.texts()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}
