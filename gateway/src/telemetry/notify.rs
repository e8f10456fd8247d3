//! What systemd hears from the gateway (`sd_notify`), and the watchdog's notion of progress.
//!
//! # Messages
//! - `READY=1` (with a first `STATUS=`) once the configuration is valid, the spool is open and
//!   the adapters are started. The broker may still be unreachable: the gateway then spools.
//! - `RELOADING=1` + `MONOTONIC_USEC=` in one datagram when a reload starts (SIGHUP or a
//!   changed file), then `READY=1` when it is done, whether the new file was applied or
//!   rejected (a rejected file leaves the old configuration running; `STATUS=` says why).
//! - `STOPPING=1` when shutdown starts, and `EXTEND_TIMEOUT_USEC=` every second while the
//!   gateway drains (its own bound, `gateway.shutdown_timeout_ms`, plus a margin).
//! - `STATUS=` every [`STATUS_EVERY`]: broker state, spool depth, sources, reloads.
//! - `WATCHDOG=1` every half `WATCHDOG_USEC`, only if [`Progress::check`] finds the forwarder
//!   and the adapters making progress since the previous check.
//!
//! Adapter children never notify: the supervisor removes `NOTIFY_SOCKET`, `WATCHDOG_USEC` and
//! `WATCHDOG_PID` from their environment (and the unit says `NotifyAccess=main`).
//!
//! # Progress
//! Checked over one watchdog half-interval, from counters the working parts keep anyway:
//! - the dispatch loop must have turned: it turns at least every 5 ms (its replay tick) when
//!   healthy, whatever the broker does, so a loop that did not turn is stuck (a blocked spool
//!   write, a deadlock, a starved runtime). A broker that is down is not a stall: the loop
//!   keeps turning and spools.
//! - each ring: if records were waiting at both checks and the consumer released none in
//!   between, its drain task is stuck. An empty ring is fine: an idle source (no data, a
//!   deadband that holds values back) is not stalled.
//! - each adapter child: stalled if it is stopped (`T`/`t` in `/proc/PID/stat`: SIGSTOP, a
//!   debugger) at both checks. A child being restarted after a crash is not a stall: its
//!   supervisor counts and backs off, and restarting the gateway would not fix a dead PLC.
//!
//! Notification failures are logged once at debug level and otherwise ignored: without a
//! service manager (`NOTIFY_SOCKET` unset) every call is a no-op.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use edgegw_ringbuf::{SharedRing, TelemetryRecord};
use sd_notify::NotifyState;

use crate::supervise::AdapterCounters;

/// How often `STATUS=` is refreshed.
pub const STATUS_EVERY: Duration = Duration::from_secs(2);

/// Added to the remaining drain time in `EXTEND_TIMEOUT_USEC=`.
pub const STOP_MARGIN: Duration = Duration::from_secs(5);

/// Sends notifications to the service manager, if there is one.
#[derive(Debug, Clone, Copy)]
pub struct Notifier {
    enabled: bool,
}

impl Notifier {
    /// From `NOTIFY_SOCKET`: disabled (every call a no-op) when it is unset.
    pub fn from_env() -> Self {
        Self {
            enabled: std::env::var_os("NOTIFY_SOCKET").is_some(),
        }
    }

    /// Whether a service manager listens.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    fn send(&self, states: &[NotifyState<'_>]) {
        if !self.enabled {
            return;
        }
        if let Err(e) = sd_notify::notify(states) {
            tracing::debug!(error = %e, "sd_notify failed");
        }
    }

    /// `READY=1` with a status line.
    pub fn ready(&self, status: &str) {
        self.send(&[NotifyState::Ready, NotifyState::Status(status)]);
    }

    /// `RELOADING=1` and `MONOTONIC_USEC=` (now), in one datagram.
    pub fn reloading(&self) {
        match NotifyState::monotonic_usec_now() {
            Ok(now) => self.send(&[NotifyState::Reloading, now]),
            Err(e) => tracing::debug!(error = %e, "no monotonic clock for RELOADING=1"),
        }
    }

    /// `STOPPING=1`, with how long the drain may take.
    pub fn stopping(&self, drain: Duration) {
        let status = format!("stopping: draining for up to {} ms", drain.as_millis());
        self.send(&[
            NotifyState::Stopping,
            NotifyState::Status(&status),
            NotifyState::ExtendTimeoutUsec(usec(drain + STOP_MARGIN)),
        ]);
    }

    /// `EXTEND_TIMEOUT_USEC=`: do not time out before `d` from now.
    pub fn extend_timeout(&self, d: Duration) {
        self.send(&[NotifyState::ExtendTimeoutUsec(usec(d))]);
    }

    /// `STATUS=`.
    pub fn status(&self, status: &str) {
        self.send(&[NotifyState::Status(status)]);
    }

    /// `WATCHDOG=1`.
    pub fn watchdog(&self) {
        self.send(&[NotifyState::Watchdog]);
    }
}

fn usec(d: Duration) -> u32 {
    u32::try_from(d.as_micros()).unwrap_or(u32::MAX)
}

/// One source as the watchdog sees it.
#[derive(Debug, Clone)]
pub struct SourceProbe {
    /// Source name.
    pub name: String,
    /// Its ring (occupancy and released count live in shared memory).
    pub ring: SharedRing<TelemetryRecord>,
    /// Its adapter's counters (pid of the running child). They outlive the source's adapter
    /// processes and rings: a source that keeps its name across a reload keeps them.
    pub adapter: Arc<AdapterCounters>,
    /// Records dropped (ring full) in this source's earlier rings, before a reload gave it a
    /// new one: [`SourceProbe::ring_dropped`] stays a counter that never goes down.
    pub ring_dropped_before: u64,
}

impl SourceProbe {
    /// Records its adapters dropped because a ring was full, over every ring it had.
    pub fn ring_dropped(&self) -> u64 {
        self.ring_dropped_before + self.ring.stats().dropped_full
    }
}

/// Shared state the working parts update and the watchdog and status read.
#[derive(Debug, Default)]
pub struct Probes {
    /// Turns of the dispatch loop (each call of the sink's `next_event`).
    pub dispatch_turns: AtomicU64,
    /// Spool depth in batches (rows), as the dispatch loop last saw it.
    pub spool_rows: AtomicU64,
    /// Spool depth in records.
    pub spool_records: AtomicU64,
    /// Whether the sink is connected to its broker.
    pub broker_connected: AtomicBool,
    /// Broker (re)connections seen.
    pub broker_connects: AtomicU64,
    /// The running sources.
    pub sources: Mutex<Vec<SourceProbe>>,
    /// Records dropped (ring full) by sources a reload removed: process totals such as
    /// `gap_records_total{cause="ring_full"}` keep them.
    pub ring_dropped_removed: AtomicU64,
    /// Sources of the running configuration that failed to start (a reload that partly
    /// failed); `/readyz` names them.
    pub not_started: Mutex<Vec<String>>,
    /// Reloads applied.
    pub reloads_applied: AtomicU64,
    /// Reloads rejected (invalid file, or a change that needs a restart).
    pub reloads_rejected: AtomicU64,
    /// Why the last reload was rejected, until one is applied.
    pub last_reload_error: Mutex<Option<String>>,
}

/// A stopped adapter or a stuck loop: why `WATCHDOG=1` is withheld.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stall {
    /// The dispatch loop did not turn.
    Dispatch,
    /// Records waited in this source's ring and none were released.
    Drain(String),
    /// This source's adapter process is stopped.
    Adapter(String, u32),
}

impl std::fmt::Display for Stall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Dispatch => write!(f, "the dispatch loop did not turn"),
            Self::Drain(s) => write!(f, "source {s}: records wait in the ring, none were read"),
            Self::Adapter(s, pid) => write!(f, "source {s}: adapter process {pid} is stopped"),
        }
    }
}

/// One observation of the counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sample {
    /// Dispatch loop turns.
    pub turns: u64,
    /// Per source: name, records released by the consumer, records waiting, adapter pid
    /// (0 = none running), whether that process is stopped.
    pub sources: Vec<SourceSample>,
}

/// One source in a [`Sample`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SourceSample {
    /// Name.
    pub name: String,
    /// Records ever released by the ring's consumer.
    pub released: u64,
    /// Records waiting in the ring.
    pub waiting: u64,
    /// Running adapter child, 0 when none.
    pub pid: u32,
    /// That child is stopped (SIGSTOP, traced).
    pub stopped: bool,
}

/// Progress between two samples (see the module docs).
#[derive(Debug, Default)]
pub struct Progress {
    last: Option<Sample>,
}

impl Progress {
    /// Compares `now` with the previous sample; the first sample always passes.
    pub fn check(&mut self, now: Sample) -> Result<(), Stall> {
        let verdict = match &self.last {
            None => Ok(()),
            Some(prev) => judge(prev, &now),
        };
        self.last = Some(now);
        verdict
    }
}

fn judge(prev: &Sample, now: &Sample) -> Result<(), Stall> {
    if now.turns == prev.turns {
        return Err(Stall::Dispatch);
    }
    for s in &now.sources {
        let Some(p) = prev.sources.iter().find(|p| p.name == s.name) else {
            continue; // added since the last check
        };
        if p.waiting > 0 && s.waiting > 0 && s.released == p.released {
            return Err(Stall::Drain(s.name.clone()));
        }
        if s.pid != 0 && s.pid == p.pid && s.stopped && p.stopped {
            return Err(Stall::Adapter(s.name.clone(), s.pid));
        }
    }
    Ok(())
}

impl Probes {
    /// Reads the counters now.
    pub fn sample(&self) -> Sample {
        let sources = self.sources.lock().expect("probe lock").clone();
        Sample {
            turns: self.dispatch_turns.load(Ordering::Relaxed),
            sources: sources
                .iter()
                .map(|s| {
                    let st = s.ring.stats();
                    let pid = s.adapter.pid.load(Ordering::Relaxed) as u32;
                    SourceSample {
                        name: s.name.clone(),
                        released: st.released,
                        waiting: st.occupancy,
                        pid,
                        stopped: pid != 0 && process_stopped(pid),
                    }
                })
                .collect(),
        }
    }

    /// The running sources, and the ring drops of the sources removed before them, read
    /// together (the daemon moves a removed source's drops under the same lock).
    pub fn sources_and_removed_drops(&self) -> (Vec<SourceProbe>, u64) {
        let sources = self.sources.lock().expect("probe lock");
        (
            sources.clone(),
            self.ring_dropped_removed.load(Ordering::Relaxed),
        )
    }

    /// The spool depth the dispatch loop last published: (batches, records).
    pub fn spool_depth(&self) -> (u64, u64) {
        (
            self.spool_rows.load(Ordering::Relaxed),
            self.spool_records.load(Ordering::Relaxed),
        )
    }

    /// The `STATUS=` line: broker, spool depth (`None`: not known), sources, reloads.
    pub fn status_line(&self, spool: Option<(u64, u64)>) -> String {
        let broker = if self.broker_connected.load(Ordering::Relaxed) {
            "broker connected"
        } else if self.broker_connects.load(Ordering::Relaxed) == 0 {
            "broker not connected yet"
        } else {
            "broker disconnected"
        };
        let spool = match spool {
            Some((rows, records)) => format!("spool {rows} batches / {records} records"),
            None => "spool depth unknown".to_owned(),
        };
        let sources = self.sources.lock().expect("probe lock").len();
        let mut line = format!("{broker}; {spool}; {sources} sources");
        let rejected = self.reloads_rejected.load(Ordering::Relaxed);
        if let Some(e) = &*self.last_reload_error.lock().expect("probe lock") {
            // One line: systemctl status shows STATUS= on one line.
            let first = e.lines().next().unwrap_or_default();
            let more = e.lines().count().saturating_sub(1);
            line += &format!("; reload rejected ({rejected} so far): {first}");
            if more > 0 {
                line += &format!(" (+{more} more)");
            }
        }
        line
    }
}

/// Whether `/proc/PID/stat` says the process is stopped or traced.
fn process_stopped(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // `pid (comm) S ...`: comm may hold spaces and parentheses; the state follows the last ')'.
    stat.rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .is_some_and(|state| state == "T" || state == "t")
}

/// The watchdog and status threads; stopped when dropped.
#[derive(Debug)]
pub struct Monitor {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Monitor {
    /// Starts `STATUS=` refreshes and, if `WATCHDOG_USEC` is set for this process, the
    /// watchdog pings. Plain threads, not tasks: a stuck runtime must not take the watchdog
    /// with it, and nothing here may block the other (the spool depth is read from its own
    /// read-only connection in the status thread).
    pub fn start(
        notifier: Notifier,
        probes: Arc<Probes>,
        spool_depth: impl Fn() -> Option<(u64, u64)> + Send + 'static,
    ) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        if notifier.enabled() {
            let (stop_s, probes_s) = (Arc::clone(&stop), Arc::clone(&probes));
            threads.push(
                std::thread::Builder::new()
                    .name("sd-status".into())
                    .spawn(move || {
                        while !sleep_or_stop(&stop_s, STATUS_EVERY) {
                            notifier.status(&probes_s.status_line(spool_depth()));
                        }
                    })
                    .expect("spawning the status thread"),
            );
        }
        if let Some(interval) = sd_notify::watchdog_enabled().filter(|_| notifier.enabled()) {
            let half = interval / 2;
            let stop_w = Arc::clone(&stop);
            tracing::info!(
                interval_ms = interval.as_millis() as u64,
                "systemd watchdog on"
            );
            threads.push(
                std::thread::Builder::new()
                    .name("sd-watchdog".into())
                    .spawn(move || {
                        let mut progress = Progress::default();
                        let mut stalled = false;
                        while !sleep_or_stop(&stop_w, half) {
                            match progress.check(probes.sample()) {
                                Ok(()) => {
                                    if stalled {
                                        tracing::info!("progress again: watchdog pings resume");
                                        stalled = false;
                                    }
                                    notifier.watchdog();
                                }
                                Err(why) => {
                                    if !stalled {
                                        tracing::error!(stall = %why, "no progress: watchdog pings withheld");
                                        stalled = true;
                                    }
                                }
                            }
                        }
                    })
                    .expect("spawning the watchdog thread"),
            );
        }
        Self { stop, threads }
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            t.thread().unpark();
            let _ = t.join();
        }
    }
}

/// Sleeps `d` in short steps; `true` once `stop` is set.
fn sleep_or_stop(stop: &AtomicBool, d: Duration) -> bool {
    let step = Duration::from_millis(50);
    let mut left = d;
    while !left.is_zero() {
        if stop.load(Ordering::Relaxed) {
            return true;
        }
        let s = left.min(step);
        std::thread::park_timeout(s);
        left = left.saturating_sub(s);
    }
    stop.load(Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn src(name: &str, released: u64, waiting: u64, pid: u32, stopped: bool) -> SourceSample {
        SourceSample {
            name: name.into(),
            released,
            waiting,
            pid,
            stopped,
        }
    }

    fn sample(turns: u64, sources: Vec<SourceSample>) -> Sample {
        Sample { turns, sources }
    }

    #[test]
    fn first_sample_passes_and_a_turning_loop_with_idle_sources_progresses() {
        let mut p = Progress::default();
        assert_eq!(p.check(sample(1, vec![src("a", 0, 0, 10, false)])), Ok(()));
        // Nothing read, nothing waiting: an idle source is not stalled.
        assert_eq!(p.check(sample(9, vec![src("a", 0, 0, 10, false)])), Ok(()));
    }

    #[test]
    fn a_loop_that_did_not_turn_is_a_stall() {
        let mut p = Progress::default();
        p.check(sample(5, vec![])).unwrap();
        assert_eq!(p.check(sample(5, vec![])), Err(Stall::Dispatch));
        assert_eq!(p.check(sample(6, vec![])), Ok(()));
    }

    #[test]
    fn records_waiting_and_none_read_is_a_stalled_drain_but_reading_is_progress() {
        let mut p = Progress::default();
        p.check(sample(1, vec![src("a", 100, 5, 1, false)]))
            .unwrap();
        assert_eq!(
            p.check(sample(2, vec![src("a", 100, 7, 1, false)])),
            Err(Stall::Drain("a".into()))
        );
        assert_eq!(p.check(sample(3, vec![src("a", 107, 3, 1, false)])), Ok(()));
        // Waiting now but empty before: just arrived, not a stall.
        p.check(sample(4, vec![src("a", 110, 0, 1, false)]))
            .unwrap();
        assert_eq!(p.check(sample(5, vec![src("a", 110, 4, 1, false)])), Ok(()));
    }

    #[test]
    fn a_stopped_adapter_is_a_stall_a_restarting_one_is_not() {
        let mut p = Progress::default();
        p.check(sample(1, vec![src("a", 0, 0, 7, true)])).unwrap();
        assert_eq!(
            p.check(sample(2, vec![src("a", 0, 0, 7, true)])),
            Err(Stall::Adapter("a".into(), 7))
        );
        assert_eq!(p.check(sample(3, vec![src("a", 0, 0, 0, false)])), Ok(()));
        assert_eq!(p.check(sample(4, vec![src("a", 0, 0, 8, false)])), Ok(()));
        // A source added since the last check is judged from the next one on.
        assert_eq!(
            p.check(sample(
                5,
                vec![src("a", 0, 0, 8, false), src("b", 0, 9, 3, true)]
            )),
            Ok(())
        );
    }

    #[test]
    fn this_process_is_not_stopped_and_a_missing_one_neither() {
        assert!(!process_stopped(std::process::id()));
        assert!(!process_stopped(u32::MAX));
    }

    #[test]
    fn status_line_names_broker_spool_sources_and_a_rejected_reload() {
        let p = Probes::default();
        assert_eq!(
            p.status_line(Some((3, 120))),
            "broker not connected yet; spool 3 batches / 120 records; 0 sources"
        );
        p.broker_connects.store(1, Ordering::Relaxed);
        p.broker_connected.store(true, Ordering::Relaxed);
        p.reloads_rejected.store(2, Ordering::Relaxed);
        *p.last_reload_error.lock().unwrap() =
            Some("gw.toml:3:1: gateway.colour: unknown key\ngw.toml:9:1: x: y".into());
        assert_eq!(
            p.status_line(None),
            "broker connected; spool depth unknown; 0 sources; reload rejected (2 so far): gw.toml:3:1: gateway.colour: unknown key (+1 more)"
        );
    }
}
