//! Telemetry: what the gateway tells the outside about itself: its own metrics, health,
//! internal events, and systemd notifications.
//!
//! # Main types and how numbers reach a scrape
//! ```text
//! adapter child ──report line/s (stdout pipe)──▶ report::AdapterReport ─┐
//! ring shared counters (SharedRing::stats) ──────────────────────────────┤
//! dispatcher (DispatchStats watch), sink (MqttCounters) ─────────────────┼─▶ Telemetry ─▶ metrics::Collector
//! spool file (read-only inspect, cached 1 s) ─────────────────────────────┤        │          ▼
//! events:: (log line + counter, one call) ────────────────────────────────┘        │     http: /metrics
//!                                                                                  └──▶ http: /healthz, /readyz
//! ```
//! - [`Telemetry`]: what a scrape reads. Created before the gateway starts (so `/healthz`
//!   answers while it starts), given the [`RunHandle`] once the gateway is ready. The handle
//!   follows reloads: a scrape lists the sources running now (a removed source's series are
//!   gone, an added one's appear), and the sink counters are shared by every sink the process
//!   runs (a reconfigured sink continues the totals of the one it replaced).
//! - [`events`]: one function per kind of logged event, which logs and counts it.
//! - [`report`]: the adapter children's poll counters, over a pipe.
//! - [`http`]: the endpoint (hyper, HTTP/1.1 only), bound to `127.0.0.1` by default.
//! - [`notify`]: systemd's `sd_notify` (ready, reloading, stopping, status, watchdog) and the
//!   watchdog's notion of progress.
//!
//! # Health and readiness
//! - `/healthz` (liveness): 200 while the process answers and its loops turn; 503 once the
//!   dispatch loop has not turned for [`STALL_AFTER`], or a running adapter child has not
//!   reported for [`STALL_AFTER`]. A crashed adapter being restarted is not unhealthy (it is
//!   counted in `edgegw_adapter_restarts_total`); a stuck one is.
//! - `/readyz` (readiness): 200 once the configuration is loaded, the spool is open and the
//!   adapters of the running configuration are started; 503 before, once stopping begins, and
//!   while a source of the running configuration failed to start (a reload that partly
//!   failed). The body names the running sources and the last rejected reload. **Broker connectivity does not
//!   count**: the gateway is doing its job while the broker is away (it spools), and readiness
//!   that flapped with the broker would make orchestrators restart a gateway that is fine.
//!   Broker state is the metric `edgegw_broker_connected`.

pub mod events;
pub mod http;
pub mod metrics;
pub mod notify;
pub mod ratelimit;
pub mod report;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::daemon::RunHandle;
use crate::sinks::mqtt::MqttCounters;
use crate::spool::{Spool, SpoolStats};

pub use report::{AdapterReport, read_reports};

/// A loop that has not turned for this long makes `/healthz` fail.
pub const STALL_AFTER: Duration = Duration::from_secs(10);
/// Spool depth is read from the file at most this often.
const SPOOL_CACHE: Duration = Duration::from_secs(1);

/// What the metrics endpoint reads.
#[derive(Debug)]
pub struct Telemetry {
    started: Instant,
    spool_path: PathBuf,
    sink: Option<Arc<MqttCounters>>,
    run: OnceLock<RunHandle>,
    ready_at: OnceLock<Instant>,
    stopping: AtomicBool,
    /// ms after `started` of the dispatch loop's last turn.
    dispatch_beat_ms: AtomicU64,
    spool_cache: Mutex<Option<(Instant, Option<SpoolStats>)>>,
}

/// Whether the gateway is healthy, and why not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Health {
    /// Healthy.
    pub ok: bool,
    /// One line per check.
    pub detail: String,
}

impl Telemetry {
    /// Telemetry of a gateway whose spool is `spool_path` and whose sink counts in `sink`.
    pub fn new(spool_path: PathBuf, sink: Option<Arc<MqttCounters>>) -> Arc<Self> {
        Arc::new(Self {
            started: Instant::now(),
            spool_path,
            sink,
            run: OnceLock::new(),
            ready_at: OnceLock::new(),
            stopping: AtomicBool::new(false),
            dispatch_beat_ms: AtomicU64::new(0),
            spool_cache: Mutex::new(None),
        })
    }

    /// The gateway is up (`daemon::run`'s `on_ready`): from now on `/readyz` says ready.
    /// Spawns the task that watches the dispatch loop turn; call inside the runtime.
    pub fn attach(self: &Arc<Self>, handle: RunHandle) {
        let mut dispatch = handle.dispatch.clone();
        if self.run.set(handle).is_err() {
            return;
        }
        let _ = self.ready_at.set(Instant::now());
        self.beat();
        let me = Arc::downgrade(self);
        tokio::spawn(async move {
            // The dispatch loop publishes its counters on every turn (replay tick), changed or
            // not: each publication is a heartbeat.
            while dispatch.changed().await.is_ok() {
                let Some(t) = me.upgrade() else { return };
                t.beat();
            }
        });
    }

    fn beat(&self) {
        let ms = self.started.elapsed().as_millis() as u64;
        self.dispatch_beat_ms.store(ms, Ordering::Relaxed);
    }

    /// Stopping has begun: `/readyz` says not ready from now on.
    pub fn stopping(&self) {
        self.stopping.store(true, Ordering::Relaxed);
    }

    /// Whether `/readyz` answers 200.
    pub fn is_ready(&self) -> bool {
        self.readiness().0
    }

    /// `/readyz`: whether ready, and the body (the running configuration's sources, reloads).
    pub fn readiness(&self) -> (bool, String) {
        let Some(run) = self.run.get() else {
            return (false, "not ready: starting\n".into());
        };
        if self.stopping.load(Ordering::Relaxed) {
            return (false, "not ready: stopping\n".into());
        }
        let p = &run.probes;
        let not_started = p.not_started.lock().expect("probe lock").clone();
        let sources: Vec<String> = run.sources().into_iter().map(|s| s.name).collect();
        let mut body = if not_started.is_empty() {
            "ready\n".to_owned()
        } else {
            format!("not ready: not started: {}\n", not_started.join(", "))
        };
        body += &format!("sources: {}\n", sources.join(", "));
        body += &format!(
            "reloads: {} applied, {} rejected\n",
            p.reloads_applied.load(Ordering::Relaxed),
            p.reloads_rejected.load(Ordering::Relaxed)
        );
        if let Some(e) = &*p.last_reload_error.lock().expect("probe lock") {
            body += &format!(
                "last reload rejected: {}\n",
                e.lines().next().unwrap_or_default()
            );
        }
        (not_started.is_empty(), body)
    }

    /// The `/healthz` verdict.
    pub fn health(&self) -> Health {
        let mut detail = String::new();
        let mut ok = true;
        let (Some(run), Some(ready_at)) = (self.run.get(), self.ready_at.get()) else {
            return Health {
                ok: true,
                detail: "starting\n".into(),
            };
        };
        let now = self.started.elapsed();
        let beat = Duration::from_millis(self.dispatch_beat_ms.load(Ordering::Relaxed));
        let idle = now.saturating_sub(beat);
        let stopping = self.stopping.load(Ordering::Relaxed);
        if idle > STALL_AFTER && !stopping {
            ok = false;
            detail += &format!("dispatch loop: stalled for {:.1} s\n", idle.as_secs_f64());
        } else {
            detail += &format!("dispatch loop: turned {:.1} s ago\n", idle.as_secs_f64());
        }
        for source in run.sources() {
            let (name, counters) = (&source.name, &source.adapter);
            let running = counters.pid.load(Ordering::Relaxed) != 0;
            let last = counters.report.snapshot().last_report;
            let since = last.map_or(*ready_at, |l| l.max(*ready_at)).elapsed();
            if !running {
                detail += &format!("adapter {name}: not running (restarting)\n");
            } else if since > STALL_AFTER && !stopping {
                ok = false;
                detail += &format!(
                    "adapter {name}: no report for {:.1} s\n",
                    since.as_secs_f64()
                );
            } else {
                detail += &format!(
                    "adapter {name}: reported {:.1} s ago\n",
                    since.as_secs_f64()
                );
            }
        }
        Health { ok, detail }
    }

    /// Whether the spool depth was read more than a second ago (or never).
    pub fn spool_stale(&self) -> bool {
        let cache = self.spool_cache.lock().unwrap_or_else(|e| e.into_inner());
        cache
            .as_ref()
            .is_none_or(|(at, _)| at.elapsed() >= SPOOL_CACHE)
    }

    /// Reads the spool's depth from its file unless read less than a second ago. Blocking:
    /// call from a blocking thread.
    pub fn refresh_spool(&self) {
        let mut cache = self.spool_cache.lock().unwrap_or_else(|e| e.into_inner());
        if cache
            .as_ref()
            .is_some_and(|(at, _)| at.elapsed() < SPOOL_CACHE)
        {
            return;
        }
        let stats = match Spool::inspect(&self.spool_path) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::debug!(error = %e, "metrics: cannot read the spool's depth");
                None
            }
        };
        *cache = Some((Instant::now(), stats));
    }

    fn spool_stats(&self) -> Option<SpoolStats> {
        let cache = self.spool_cache.lock().unwrap_or_else(|e| e.into_inner());
        cache.as_ref().and_then(|(_, s)| *s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::watch;

    fn empty_handle() -> (
        watch::Sender<crate::forward::dispatch::DispatchStats>,
        RunHandle,
    ) {
        let (tx, rx) = watch::channel(Default::default());
        (
            tx,
            RunHandle {
                dispatch: rx,
                probes: Arc::default(),
            },
        )
    }

    #[tokio::test]
    async fn ready_only_between_start_and_stop_and_healthy_while_starting() {
        let t = Telemetry::new(PathBuf::from("/nonexistent/spool.db"), None);
        assert!(!t.is_ready(), "not ready before the gateway is up");
        assert!(t.health().ok, "alive while starting");
        let (_tx, handle) = empty_handle();
        t.attach(handle);
        assert!(t.is_ready());
        assert_eq!(
            t.readiness().1,
            "ready\nsources: \nreloads: 0 applied, 0 rejected\n"
        );
        let h = t.health();
        assert!(h.ok, "{}", h.detail);
        assert!(h.detail.contains("dispatch loop: turned"), "{}", h.detail);
        t.stopping();
        assert!(!t.is_ready(), "not ready once stopping");
    }

    #[tokio::test]
    async fn a_source_that_did_not_start_after_a_reload_makes_readyz_fail_and_says_which() {
        let t = Telemetry::new(PathBuf::from("/nonexistent/spool.db"), None);
        let (_tx, handle) = empty_handle();
        let probes = Arc::clone(&handle.probes);
        t.attach(handle);
        *probes.not_started.lock().unwrap() = vec!["plc-x".into()];
        probes.reloads_applied.store(1, Ordering::Relaxed);
        probes.reloads_rejected.store(2, Ordering::Relaxed);
        *probes.last_reload_error.lock().unwrap() = Some("gw.toml:1:1: a: b\nmore".into());
        let (ready, body) = t.readiness();
        assert!(!ready);
        assert_eq!(
            body,
            "not ready: not started: plc-x\nsources: \nreloads: 1 applied, 2 rejected\nlast reload rejected: gw.toml:1:1: a: b\n"
        );
        probes.not_started.lock().unwrap().clear();
        assert!(t.is_ready(), "the next reload started it");
    }

    #[tokio::test]
    async fn ring_drops_of_removed_sources_stay_in_the_gap_total() {
        let t = Telemetry::new(PathBuf::from("/nonexistent/spool.db"), None);
        let (_tx, handle) = empty_handle();
        handle
            .probes
            .ring_dropped_removed
            .store(7, Ordering::Relaxed);
        t.attach(handle);
        let text = metrics::render(&metrics::registry(Arc::clone(&t)));
        assert!(
            text.contains("edgegw_gap_records_total{cause=\"ring_full\"} 7"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn the_registry_renders_without_a_spool_file_or_a_sink() {
        let t = Telemetry::new(PathBuf::from("/nonexistent/spool.db"), None);
        let (_tx, handle) = empty_handle();
        t.attach(handle);
        let r = metrics::registry(Arc::clone(&t));
        let text = tokio::task::spawn_blocking(move || {
            t.refresh_spool();
            metrics::render(&r)
        })
        .await
        .unwrap();
        assert!(text.contains("edgegw_ready 1"), "{text}");
        assert!(text.contains("edgegw_spool_dropped_records_total{reason=\"bound\"} 0"));
        assert!(
            !text.contains("edgegw_spool_rows"),
            "no spool file, no depth: {text}"
        );
        assert!(text.ends_with("# EOF\n"));
    }
}
