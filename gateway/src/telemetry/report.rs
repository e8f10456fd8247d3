//! Adapter reports: how the per-device poll counters, which live in the adapter child
//! processes, reach the gateway.
//!
//! # Design constraints
//! - No shared memory beyond the ring (shared memory code lives only in `ringbuf`), and polling must
//!   never wait on the gateway.
//! - Counters are cumulative, so a lost report loses freshness, never counts.
//!
//! # Format
//! The child writes one text line per [`REPORT_INTERVAL`] to its stdout, a pipe the gateway
//! reads: `report polls=12 requests=24 timeout=0 … last_good_unix_ns=…` (`key=value` pairs,
//! unknown keys ignored, missing keys 0), at most [`MAX_LINE`] bytes, well under `PIPE_BUF`, so
//! each line is one atomic `write(2)`.
//!
//! # Operation
//! - Child: stdout is switched to non-blocking; a line that finds the pipe full (the gateway
//!   stopped reading) is skipped and counted in the next line's `skipped`; polling is never
//!   delayed. The kernel pipe buffer (64 KiB, ~5 minutes of lines) is the only queue.
//! - Gateway: one reader task per child adds each line's increase over the previous line of
//!   the same child to the source's totals, so totals survive adapter restarts; over-long or
//!   malformed lines are dropped and counted. It also feeds the rate-limited device error log
//!   ([`super::events::device_errors`]).

use std::sync::Mutex;
use std::time::{Duration, Instant};

use edgegw_plc::modbus::LinkStats;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, BufReader};

use super::events;
use super::ratelimit::RepeatLimiter;

/// How often a child reports.
pub const REPORT_INTERVAL: Duration = Duration::from_secs(1);
/// Longest line accepted (and written).
pub const MAX_LINE: usize = 512;
/// Repeated device errors are summarised at most this often.
pub const DEVICE_ERROR_LOG_INTERVAL: Duration = Duration::from_secs(30);

/// Poll counters of one adapter (one source), as reported.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PollCounts {
    /// Group cycles completed.
    pub polls: u64,
    /// Read requests sent.
    pub requests: u64,
    /// Poll ticks skipped because a cycle overran.
    pub overruns: u64,
    /// Tag values read.
    pub points: u64,
    /// Connections established.
    pub connects: u64,
    /// Errors by kind.
    pub errors: ErrorCounts,
    /// Last read answered with data, ns since the Unix epoch (0: never). Not summed.
    pub last_good_unix_ns: u64,
    /// Report lines the child could not write (pipe full). Not summed.
    pub skipped: u64,
}

/// Errors by kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ErrorCounts {
    /// Requests without an answer in time.
    pub timeout: u64,
    /// Requests answered with a Modbus exception.
    pub exception: u64,
    /// Requests lost with the connection, and failed connect attempts.
    pub disconnected: u64,
    /// Malformed or mismatched answers.
    pub protocol: u64,
    /// Tag values that did not decode.
    pub decode: u64,
}

impl ErrorCounts {
    /// Kind names, as in the `kind` label.
    pub const KINDS: [&'static str; 5] =
        ["timeout", "exception", "disconnected", "protocol", "decode"];

    /// Counts in [`Self::KINDS`] order.
    pub fn by_kind(&self) -> [u64; 5] {
        [
            self.timeout,
            self.exception,
            self.disconnected,
            self.protocol,
            self.decode,
        ]
    }

    /// All errors.
    pub fn total(&self) -> u64 {
        self.by_kind().iter().sum()
    }

    fn increase_since(&self, before: &Self) -> Self {
        let d = |a: u64, b: u64| a.saturating_sub(b);
        Self {
            timeout: d(self.timeout, before.timeout),
            exception: d(self.exception, before.exception),
            disconnected: d(self.disconnected, before.disconnected),
            protocol: d(self.protocol, before.protocol),
            decode: d(self.decode, before.decode),
        }
    }

    fn add(&mut self, o: &Self) {
        self.timeout += o.timeout;
        self.exception += o.exception;
        self.disconnected += o.disconnected;
        self.protocol += o.protocol;
        self.decode += o.decode;
    }
}

impl PollCounts {
    /// The counts of a Modbus link.
    pub fn from_link(s: &LinkStats) -> Self {
        Self {
            polls: s.polls,
            requests: s.requests,
            overruns: s.overruns,
            points: s.points,
            connects: s.connects,
            errors: ErrorCounts {
                timeout: s.timeouts,
                exception: s.exceptions,
                disconnected: s.transport_errors.saturating_sub(s.protocol_errors)
                    + s.connect_failures,
                protocol: s.protocol_errors,
                decode: s.decode_errors,
            },
            last_good_unix_ns: s.last_good_unix_ns,
            skipped: 0,
        }
    }

    /// The report line, `\n`-terminated.
    pub fn to_line(&self) -> String {
        let e = &self.errors;
        let line = format!(
            "report polls={} requests={} overruns={} points={} connects={} timeout={} exception={} \
             disconnected={} protocol={} decode={} last_good_unix_ns={} skipped={}\n",
            self.polls,
            self.requests,
            self.overruns,
            self.points,
            self.connects,
            e.timeout,
            e.exception,
            e.disconnected,
            e.protocol,
            e.decode,
            self.last_good_unix_ns,
            self.skipped
        );
        debug_assert!(line.len() <= MAX_LINE);
        line
    }

    /// Parses a report line (without its `\n`); `None` if it is not one.
    pub fn parse(line: &str) -> Option<Self> {
        let mut fields = line.split(' ');
        if fields.next()? != "report" {
            return None;
        }
        let mut c = Self::default();
        for field in fields {
            let (key, value) = field.split_once('=')?;
            let v: u64 = value.parse().ok()?;
            let e = &mut c.errors;
            match key {
                "polls" => c.polls = v,
                "requests" => c.requests = v,
                "overruns" => c.overruns = v,
                "points" => c.points = v,
                "connects" => c.connects = v,
                "timeout" => e.timeout = v,
                "exception" => e.exception = v,
                "disconnected" => e.disconnected = v,
                "protocol" => e.protocol = v,
                "decode" => e.decode = v,
                "last_good_unix_ns" => c.last_good_unix_ns = v,
                "skipped" => c.skipped = v,
                _ => {} // a newer child: ignore what we do not know
            }
        }
        Some(c)
    }

    fn increase_since(&self, before: &Self) -> Self {
        let d = |a: u64, b: u64| a.saturating_sub(b);
        Self {
            polls: d(self.polls, before.polls),
            requests: d(self.requests, before.requests),
            overruns: d(self.overruns, before.overruns),
            points: d(self.points, before.points),
            connects: d(self.connects, before.connects),
            errors: self.errors.increase_since(&before.errors),
            last_good_unix_ns: self.last_good_unix_ns,
            skipped: self.skipped,
        }
    }

    fn add(&mut self, d: &Self) {
        self.polls += d.polls;
        self.requests += d.requests;
        self.overruns += d.overruns;
        self.points += d.points;
        self.connects += d.connects;
        self.errors.add(&d.errors);
        self.last_good_unix_ns = self.last_good_unix_ns.max(d.last_good_unix_ns);
    }
}

/// The gateway's view of one source's reports: totals over every child it ran.
#[derive(Debug, Default)]
pub struct AdapterReport {
    inner: Mutex<ReportState>,
}

#[derive(Debug)]
struct ReportState {
    totals: PollCounts,
    last_report: Option<Instant>,
    skipped_lines: u64,
    malformed_lines: u64,
    errors_log: RepeatLimiter,
}

impl Default for ReportState {
    fn default() -> Self {
        Self {
            totals: PollCounts::default(),
            last_report: None,
            skipped_lines: 0,
            malformed_lines: 0,
            errors_log: RepeatLimiter::new(DEVICE_ERROR_LOG_INTERVAL),
        }
    }
}

/// A reading of an [`AdapterReport`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReportSnapshot {
    /// Totals over every child of the source.
    pub totals: PollCounts,
    /// When the last report line arrived.
    pub last_report: Option<Instant>,
    /// Lines children could not write (the gateway did not read in time).
    pub skipped_lines: u64,
    /// Lines the gateway could not parse.
    pub malformed_lines: u64,
}

impl AdapterReport {
    /// The totals now.
    pub fn snapshot(&self) -> ReportSnapshot {
        let s = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        ReportSnapshot {
            totals: s.totals,
            last_report: s.last_report,
            skipped_lines: s.skipped_lines,
            malformed_lines: s.malformed_lines,
        }
    }

    /// Adds the increase `d` reported by a child at `now`; logs device errors (rate-limited).
    fn add(&self, source: &str, d: &PollCounts, skipped_lines: u64, now: Instant) {
        let mut s = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        s.totals.add(d);
        s.last_report = Some(now);
        s.skipped_lines += skipped_lines;
        let totals = s.totals.errors;
        events::device_errors(source, &d.errors, &totals, &mut s.errors_log, now);
    }

    fn malformed(&self, source: &str, line: &[u8]) {
        let mut s = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        s.malformed_lines += 1;
        events::adapter_report_malformed(source, line.len());
    }
}

/// Reads one child's report lines until it closes its stdout (it exited).
pub async fn read_reports(source: String, out: impl AsyncRead + Unpin, report: &AdapterReport) {
    let mut reader = BufReader::with_capacity(4 * MAX_LINE, out);
    let mut line = Vec::with_capacity(MAX_LINE + 1);
    let mut previous = PollCounts::default();
    loop {
        line.clear();
        let n = match (&mut reader)
            .take(MAX_LINE as u64 + 1)
            .read_until(b'\n', &mut line)
            .await
        {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if line.last() != Some(&b'\n') {
            report.malformed(&source, &line);
            if n > MAX_LINE && !skip_line(&mut reader).await {
                return;
            }
            continue;
        }
        let parsed = std::str::from_utf8(&line[..n - 1])
            .ok()
            .and_then(PollCounts::parse);
        let Some(now_counts) = parsed else {
            report.malformed(&source, &line);
            continue;
        };
        let d = now_counts.increase_since(&previous);
        let skipped = now_counts.skipped.saturating_sub(previous.skipped);
        previous = now_counts;
        report.add(&source, &d, skipped, Instant::now());
    }
}

/// Discards the rest of an over-long line; `false` at end of stream.
async fn skip_line(reader: &mut (impl AsyncBufReadExt + Unpin)) -> bool {
    loop {
        let buf = match reader.fill_buf().await {
            Ok([]) | Err(_) => return false,
            Ok(buf) => buf,
        };
        match buf.iter().position(|&b| b == b'\n') {
            Some(i) => {
                reader.consume(i + 1);
                return true;
            }
            None => {
                let n = buf.len();
                reader.consume(n);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(polls: u64, timeout: u64) -> PollCounts {
        PollCounts {
            polls,
            requests: 2 * polls,
            errors: ErrorCounts {
                timeout,
                ..ErrorCounts::default()
            },
            last_good_unix_ns: 1_700_000_000_000_000_000 + polls,
            ..PollCounts::default()
        }
    }

    #[test]
    fn a_report_line_round_trips_and_fits_in_one_atomic_pipe_write() {
        let c = PollCounts {
            polls: u64::MAX,
            requests: u64::MAX,
            overruns: u64::MAX,
            points: u64::MAX,
            connects: u64::MAX,
            errors: ErrorCounts {
                timeout: u64::MAX,
                exception: u64::MAX,
                disconnected: u64::MAX,
                protocol: u64::MAX,
                decode: u64::MAX,
            },
            last_good_unix_ns: u64::MAX,
            skipped: u64::MAX,
        };
        let line = c.to_line();
        assert!(line.len() <= MAX_LINE && MAX_LINE < 4096, "{}", line.len());
        assert_eq!(PollCounts::parse(line.trim_end()), Some(c));
        assert_eq!(
            PollCounts::parse("report future_key=3 polls=2")
                .unwrap()
                .polls,
            2
        );
        assert_eq!(PollCounts::parse("hello"), None);
        assert_eq!(PollCounts::parse("report polls=x"), None);
    }

    #[tokio::test]
    async fn totals_add_the_increase_of_each_child_and_survive_restarts() {
        let report = AdapterReport::default();
        // First child: two reports; second child (restarted) starts from zero again.
        let first = format!("{}{}", counts(5, 1).to_line(), counts(9, 2).to_line());
        read_reports("s".into(), first.as_bytes(), &report).await;
        let second = counts(3, 0).to_line();
        read_reports("s".into(), second.as_bytes(), &report).await;
        let s = report.snapshot();
        assert_eq!(s.totals.polls, 12);
        assert_eq!(s.totals.requests, 24);
        assert_eq!(s.totals.errors.timeout, 2);
        assert_eq!(s.totals.last_good_unix_ns, 1_700_000_000_000_000_009);
        assert_eq!(s.malformed_lines, 0);
        assert!(s.last_report.is_some());
    }

    #[tokio::test]
    async fn malformed_and_over_long_lines_are_dropped_and_counted() {
        let report = AdapterReport::default();
        let long = "x".repeat(3 * MAX_LINE);
        let input = format!(
            "garbage\n{long}\n{}report polls=oops\n{}",
            counts(1, 0).to_line(),
            counts(4, 0).to_line()
        );
        read_reports("s".into(), input.as_bytes(), &report).await;
        let s = report.snapshot();
        assert_eq!(s.malformed_lines, 3);
        assert_eq!(s.totals.polls, 4);
    }
}
