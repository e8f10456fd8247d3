//! Internal events: each function here writes the log line of one kind of event and counts it,
//! in one place, so logs and metrics never disagree (HOUSE_STYLE habit 13).
//!
//! Counters are process-wide (the gateway is one process per configuration) and only ever
//! grow; [`snapshot`] reads them for the metrics endpoint. Independently of these named events,
//! the logging layer counts every line written, by level (`crate::logging`), so even a log
//! line written elsewhere shows in `edgegw_log_lines_total`.
//!
//! Nothing here logs a secret: events carry names, counts and error texts of our own types,
//! none of which include a password (the MQTT password is a redacting `Secret`).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Instant;

use super::ratelimit::{RepeatLimiter, Verdict};
use super::report::ErrorCounts;

/// Named events, the `event` label of `edgegw_events_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// A device started failing (first error after a quiet period).
    DeviceErrors,
    /// A device keeps failing: a periodic summary.
    DeviceErrorsContinue,
    /// A device's errors stopped.
    DeviceErrorsStopped,
    /// The spool's bound dropped stored batches (a gap).
    SpoolDropped,
    /// A spool write failed (records lost).
    SpoolWriteFailed,
    /// A spooled batch no longer decoded (records lost).
    SpoolRowUndecodable,
    /// An adapter child wrote a line that is not a report.
    AdapterReportMalformed,
    /// The metrics endpoint listens.
    MetricsListening,
    /// A connection to the metrics endpoint failed.
    MetricsConnectionFailed,
    /// Started under systemd, but journald could not be reached: logging to stderr.
    JournaldUnavailable,
    /// A reload closed the metrics endpoint's listener (moved or turned off).
    MetricsStopped,
    /// A new configuration was applied.
    ReloadApplied,
    /// A new configuration was rejected; the running one stays.
    ReloadRejected,
}

impl Event {
    /// Every event, in label order.
    pub const ALL: [Event; 13] = [
        Event::DeviceErrors,
        Event::DeviceErrorsContinue,
        Event::DeviceErrorsStopped,
        Event::SpoolDropped,
        Event::SpoolWriteFailed,
        Event::SpoolRowUndecodable,
        Event::AdapterReportMalformed,
        Event::MetricsListening,
        Event::MetricsConnectionFailed,
        Event::JournaldUnavailable,
        Event::MetricsStopped,
        Event::ReloadApplied,
        Event::ReloadRejected,
    ];

    /// The `event` label.
    pub const fn name(self) -> &'static str {
        match self {
            Event::DeviceErrors => "device_errors",
            Event::DeviceErrorsContinue => "device_errors_continue",
            Event::DeviceErrorsStopped => "device_errors_stopped",
            Event::SpoolDropped => "spool_dropped",
            Event::SpoolWriteFailed => "spool_write_failed",
            Event::SpoolRowUndecodable => "spool_row_undecodable",
            Event::AdapterReportMalformed => "adapter_report_malformed",
            Event::MetricsListening => "metrics_listening",
            Event::MetricsConnectionFailed => "metrics_connection_failed",
            Event::JournaldUnavailable => "journald_unavailable",
            Event::MetricsStopped => "metrics_stopped",
            Event::ReloadApplied => "reload_applied",
            Event::ReloadRejected => "reload_rejected",
        }
    }
}

static EVENTS: [AtomicU64; Event::ALL.len()] = [const { AtomicU64::new(0) }; Event::ALL.len()];
/// Log lines written, by level: error, warn, info, debug, trace.
static LOG_LINES: [AtomicU64; 5] = [const { AtomicU64::new(0) }; 5];
static SPOOL_DROPPED_RECORDS: AtomicU64 = AtomicU64::new(0);
static SPOOL_DROPPED_GAPS: AtomicU64 = AtomicU64::new(0);
static SPOOL_FAILED_RECORDS: AtomicU64 = AtomicU64::new(0);
static SPOOL_UNDECODABLE_RECORDS: AtomicU64 = AtomicU64::new(0);
static SPOOL_UNDECODABLE_GAPS: AtomicU64 = AtomicU64::new(0);

// Statistics only: no other memory is published through these counters, so `Relaxed`.
fn count(e: Event) {
    EVENTS[e as usize].fetch_add(1, Relaxed);
}

/// Level names in [`LOG_LINES`] order, the `level` label.
pub const LEVELS: [&str; 5] = ["error", "warn", "info", "debug", "trace"];

/// Counts one log line (called by the logging layer for every line written).
pub fn log_line(level: &tracing::Level) {
    let i = match *level {
        tracing::Level::ERROR => 0,
        tracing::Level::WARN => 1,
        tracing::Level::INFO => 2,
        tracing::Level::DEBUG => 3,
        tracing::Level::TRACE => 4,
    };
    LOG_LINES[i].fetch_add(1, Relaxed);
}

/// The counters now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EventCounts {
    /// By [`Event::ALL`] order.
    pub events: [u64; Event::ALL.len()],
    /// Log lines by [`LEVELS`] order.
    pub log_lines: [u64; 5],
    /// Records dropped by the spool's bound.
    pub spool_dropped_records: u64,
    /// Sequence gaps those drops made (one per dropped batch).
    pub spool_dropped_gaps: u64,
    /// Records lost to failed spool writes.
    pub spool_failed_records: u64,
    /// Records lost in spooled batches that no longer decoded.
    pub spool_undecodable_records: u64,
    /// Gaps those made (one per row).
    pub spool_undecodable_gaps: u64,
}

/// Reads every counter.
pub fn snapshot() -> EventCounts {
    EventCounts {
        events: std::array::from_fn(|i| EVENTS[i].load(Relaxed)),
        log_lines: std::array::from_fn(|i| LOG_LINES[i].load(Relaxed)),
        spool_dropped_records: SPOOL_DROPPED_RECORDS.load(Relaxed),
        spool_dropped_gaps: SPOOL_DROPPED_GAPS.load(Relaxed),
        spool_failed_records: SPOOL_FAILED_RECORDS.load(Relaxed),
        spool_undecodable_records: SPOOL_UNDECODABLE_RECORDS.load(Relaxed),
        spool_undecodable_gaps: SPOOL_UNDECODABLE_GAPS.load(Relaxed),
    }
}

/// The spool's bound dropped stored batches holding `records` records: `(source, epoch,
/// first seq, last seq)` of each. One line (and one gap) per batch.
pub fn spool_dropped(batches: &[(Box<str>, u64, u64, u64)], records: u64) {
    SPOOL_DROPPED_RECORDS.fetch_add(records, Relaxed);
    SPOOL_DROPPED_GAPS.fetch_add(batches.len() as u64, Relaxed);
    for (source, epoch, first, last) in batches {
        count(Event::SpoolDropped);
        tracing::warn!(
            source = %source, epoch, first_seq = first, last_seq = last,
            "spool full: batch dropped (a gap upstream)"
        );
    }
}

/// A spool write of `records` records failed; they are lost.
pub fn spool_write_failed(error: &dyn std::fmt::Display, records: u64, disk_full: bool) {
    count(Event::SpoolWriteFailed);
    SPOOL_FAILED_RECORDS.fetch_add(records, Relaxed);
    tracing::error!(error = %error, records, disk_full, "spool write failed: records lost");
}

/// A spooled batch did not decode on replay; its records are lost.
pub fn spool_row_undecodable(
    row: i64,
    source: &str,
    epoch: u64,
    seqs: (u64, u64),
    records: u64,
    error: &dyn std::fmt::Display,
) {
    count(Event::SpoolRowUndecodable);
    SPOOL_UNDECODABLE_RECORDS.fetch_add(records, Relaxed);
    SPOOL_UNDECODABLE_GAPS.fetch_add(1, Relaxed);
    tracing::error!(
        row, source = %source, epoch, first_seq = seqs.0, last_seq = seqs.1, records,
        error = %error, "spooled batch does not decode: dropped (a gap upstream)"
    );
}

/// A report from `source`'s adapter brought `new` errors (`totals` since start): logged the
/// first time, then summarised at most once per limiter interval; a quiet report may close
/// the episode. Counting in the metrics is unaffected: the totals hold every error.
pub fn device_errors(
    source: &str,
    new: &ErrorCounts,
    totals: &ErrorCounts,
    limiter: &mut RepeatLimiter,
    now: Instant,
) {
    let n = new.total();
    if n == 0 {
        if let Some(settled) = limiter.quiet(now) {
            count(Event::DeviceErrorsStopped);
            tracing::info!(
                source = %source,
                unreported = settled.unreported,
                "device errors stopped"
            );
        }
        return;
    }
    match limiter.occur(now, n) {
        Verdict::First => {
            count(Event::DeviceErrors);
            tracing::warn!(
                source = %source,
                timeout = new.timeout, exception = new.exception,
                disconnected = new.disconnected, protocol = new.protocol, decode = new.decode,
                "device errors (repeats are summarised every {} s)",
                super::report::DEVICE_ERROR_LOG_INTERVAL.as_secs()
            );
        }
        Verdict::Suppressed => {}
        Verdict::Summary { count: c, over } => {
            count(Event::DeviceErrorsContinue);
            tracing::warn!(
                source = %source,
                errors = c,
                over_s = over.as_secs(),
                total_timeout = totals.timeout, total_exception = totals.exception,
                total_disconnected = totals.disconnected, total_protocol = totals.protocol,
                total_decode = totals.decode,
                "device errors continue"
            );
        }
    }
}

/// An adapter child wrote something that is not a report line.
pub fn adapter_report_malformed(source: &str, len: usize) {
    count(Event::AdapterReportMalformed);
    tracing::debug!(source = %source, bytes = len, "adapter wrote a malformed report line; ignored");
}

/// The metrics endpoint listens on `addr`.
pub fn metrics_listening(addr: std::net::SocketAddr) {
    count(Event::MetricsListening);
    tracing::info!(address = %addr, "metrics endpoint listening (/metrics, /healthz, /readyz)");
}

/// A connection to the metrics endpoint failed.
pub fn metrics_connection_failed(error: &dyn std::fmt::Display) {
    count(Event::MetricsConnectionFailed);
    tracing::debug!(error = %error, "metrics connection failed");
}

/// A reload closed the metrics listener on `addr`.
pub fn metrics_stopped(addr: std::net::SocketAddr) {
    count(Event::MetricsStopped);
    tracing::info!(address = %addr, "metrics endpoint closed");
}

/// A reload's new configuration is being applied; `changes` is the diff's one line.
pub fn reload_applied(changes: &str) {
    count(Event::ReloadApplied);
    tracing::info!(changes = %changes, "applying the new configuration");
}

/// A reload was rejected (`rejected`-th time); `why` has one problem per line, each logged as
/// its own line (file, line, column and key).
pub fn reload_rejected(rejected: u64, why: &str) {
    count(Event::ReloadRejected);
    for line in why.lines() {
        tracing::error!(rejected, problem = %line, "configuration rejected; the running one stays");
    }
}

/// Started by systemd, but journald could not be reached.
pub fn journald_unavailable(error: &dyn std::fmt::Display) {
    count(Event::JournaldUnavailable);
    tracing::warn!(error = %error, "JOURNAL_STREAM is set but journald is unreachable: logging to stderr");
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn every_event_has_a_distinct_label_in_index_order() {
        for (i, e) in Event::ALL.iter().enumerate() {
            assert_eq!(*e as usize, i);
        }
        let mut names: Vec<_> = Event::ALL.iter().map(|e| e.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), Event::ALL.len());
    }

    #[test]
    fn repeated_device_errors_are_counted_every_time_but_logged_first_then_summarised() {
        let t0 = Instant::now();
        let mut limiter = RepeatLimiter::new(Duration::from_secs(30));
        let one = ErrorCounts {
            timeout: 1,
            ..ErrorCounts::default()
        };
        let before = snapshot().events;
        let at = |e: Event, s: &EventCounts| s.events[e as usize] - before[e as usize];
        for sec in 0..61 {
            device_errors(
                "plc",
                &one,
                &one,
                &mut limiter,
                t0 + Duration::from_secs(sec),
            );
        }
        let s = snapshot();
        // Other tests in this binary may log device errors too, under other limiters, so only
        // lower bounds hold across the process.
        assert!(at(Event::DeviceErrors, &s) >= 1);
        assert!(at(Event::DeviceErrorsContinue, &s) >= 2);
        device_errors(
            "plc",
            &ErrorCounts::default(),
            &one,
            &mut limiter,
            t0 + Duration::from_secs(100),
        );
        assert!(at(Event::DeviceErrorsStopped, &snapshot()) >= 1);
    }
}
