//! A real `edge-gateway run` with its metrics endpoint, scraped over HTTP.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_edge-gateway");

/// A running gateway: its stderr lines are collected (and echoed for failing tests).
pub struct Gateway {
    child: Option<Child>,
    lines: Arc<Mutex<Vec<String>>>,
    /// Where its metrics endpoint listens.
    pub addr: SocketAddr,
}

impl Gateway {
    /// Starts `edge-gateway run --config <config>` and waits for the endpoint's address in
    /// its log (the configuration should say `[metrics] port = 0`).
    pub fn start(config: &Path) -> Self {
        Self::start_with_env(config, &[])
    }

    /// [`Gateway::start`] with extra environment variables.
    pub fn start_with_env(config: &Path, env: &[(&str, &str)]) -> Self {
        let mut child = Command::new(BIN)
            .arg("run")
            .arg("--config")
            .arg(config)
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .env_remove("JOURNAL_STREAM")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting edge-gateway");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let err = child.stderr.take().unwrap();
        let sink = Arc::clone(&lines);
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines() {
                let Ok(line) = line else { break };
                eprintln!("gateway: {line}");
                sink.lock().unwrap().push(line);
            }
        });
        let mut g = Self {
            child: Some(child),
            lines,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        };
        let line = g.wait_for_line("metrics endpoint listening", Duration::from_secs(20));
        g.addr = Self::listening_address(&line);
        g.wait_ready();
        g
    }

    /// Waits (bounded) until `/readyz` answers 200; until then it must answer 503.
    pub fn wait_ready(&mut self) {
        let start = Instant::now();
        loop {
            match self.get("/readyz") {
                (200, _) => return,
                (503, _) => {}
                (status, body) => panic!("/readyz answered {status} while starting: {body}"),
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("gateway exited ({status}) before it was ready");
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "not ready within 20 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Every stderr line so far.
    pub fn log(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    /// Waits for a stderr line containing `needle`; returns it.
    pub fn wait_for_line(&mut self, needle: &str, within: Duration) -> String {
        let start = Instant::now();
        loop {
            if let Some(l) = self.log().into_iter().find(|l| l.contains(needle)) {
                return l;
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("gateway exited ({status}) before logging {needle:?}");
            }
            assert!(
                start.elapsed() < within,
                "no log line with {needle:?} within {within:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits for the `n`-th stderr line (1-based) containing `needle`; returns it.
    pub fn wait_for_nth_line(&mut self, needle: &str, n: usize, within: Duration) -> String {
        let start = Instant::now();
        loop {
            if let Some(l) = self
                .log()
                .into_iter()
                .filter(|l| l.contains(needle))
                .nth(n - 1)
            {
                return l;
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("gateway exited ({status}) before logging {needle:?} {n} times");
            }
            assert!(
                start.elapsed() < within,
                "no {n}th log line with {needle:?} within {within:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The address in a `metrics endpoint listening address=…` line.
    pub fn listening_address(line: &str) -> SocketAddr {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix("address="))
            .unwrap_or_else(|| panic!("no address in {line:?}"))
            .parse()
            .unwrap()
    }

    /// The gateway's pid.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// SIGTERM, then waits (bounded) for a clean exit.
    pub fn stop(&mut self) {
        let mut child = self.child.take().unwrap();
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
        let start = Instant::now();
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break s;
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "gateway did not stop"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        assert!(status.success(), "gateway exited with {status}");
    }

    /// `GET path`: status and body.
    pub fn get(&self, path: &str) -> (u16, String) {
        get(self.addr, path)
    }

    /// Scrapes `/metrics`.
    pub fn scrape(&self) -> Metrics {
        let (status, body) = self.get("/metrics");
        assert_eq!(status, 200, "{body}");
        Metrics::parse(&body)
    }

    /// Scrapes until `cond` holds (bounded); returns that scrape.
    pub fn scrape_until(
        &self,
        what: &str,
        within: Duration,
        cond: impl Fn(&Metrics) -> bool,
    ) -> Metrics {
        let start = Instant::now();
        loop {
            let m = self.scrape();
            if cond(&m) {
                return m;
            }
            assert!(
                start.elapsed() < within,
                "{what}: not reached within {within:?}; last scrape:\n{}",
                m.text
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// One HTTP/1.1 GET with `Connection: close`, bounded by timeouts.
pub fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").expect("an HTTP response");
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status code");
    (status, body.to_owned())
}

/// A scrape: sample (`name{labels}` as written) → value.
pub struct Metrics {
    pub text: String,
    samples: HashMap<String, f64>,
}

impl Metrics {
    pub fn parse(text: &str) -> Self {
        let samples = text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .filter_map(|l| {
                let (k, v) = l.rsplit_once(' ')?;
                Some((k.to_owned(), v.parse().ok()?))
            })
            .collect();
        Self {
            text: text.to_owned(),
            samples,
        }
    }

    /// The value of `sample` (e.g. `edgegw_spool_records` or
    /// `edgegw_adapter_errors_total{source="plc",kind="timeout"}`), if present.
    pub fn get(&self, sample: &str) -> Option<f64> {
        self.samples.get(sample).copied()
    }

    /// The value of `sample`, 0 while it is absent (for conditions to wait on).
    pub fn n(&self, sample: &str) -> f64 {
        self.get(sample).unwrap_or(0.0)
    }

    /// The value of `sample`, which must be present.
    pub fn value(&self, sample: &str) -> f64 {
        self.get(sample)
            .unwrap_or_else(|| panic!("no sample {sample} in:\n{}", self.text))
    }
}
