//! The running gateway: rings, adapter processes, forwarder, sink and spool, wired together,
//! until shutdown.
//!
//! # Operation
//! Start: open the epoch store and the spool (a corrupt spool is moved aside, never fatal),
//! then for every source advance its epoch, create its ring, claim the consumer side, start the
//! adapter child (`supervise.rs`) and a drain task; the dispatch loop owns the sink and the
//! spool. The gateway is ready once the spool is open and the adapters are started; it does not
//! wait for the broker. Under systemd it then says `READY=1`, keeps `STATUS=` fresh and pings
//! the watchdog while the forwarder and the adapters make progress (`telemetry::notify`).
//!
//! Reload ([`run_reloadable`]; SIGHUP or a changed file, see `config::watch`): `RELOADING=1`,
//! then the caller's loader validates the file and diffs it against the running one
//! (`config::diff`). A rejected file (invalid, or changing what only a restart can apply) leaves
//! everything running, is logged and counted, and shows in `STATUS=`. An accepted one is applied
//! per source, by name:
//! - unchanged: untouched (same adapter process, same ring, no gap, no reconnect);
//! - only names, topics or batching changed: the drain task reads the ring one last time under
//!   the old catalog, and a new one continues on the same ring under the new catalog (the
//!   adapter keeps running, the sequence continues);
//! - its adapter's job changed (tags, intervals, addresses): the adapter is stopped first, the
//!   ring drained under the old catalog, then a new adapter continues the same ring, epoch and
//!   sequence under the new catalog;
//! - its ring's id or size changed, or it is new: a new ring with the next epoch (a source
//!   that keeps its name keeps its counters: adapter totals, and ring drops carried over);
//! - removed: its adapter is stopped and its ring drained, then dropped (its ring drops stay
//!   in the process totals).
//!
//! The sink is replaced only if its settings changed: the old one is closed (what it had in
//! flight is spooled and replayed through the new one), then the new one connects. The spool
//! and the dispatch loop live on throughout. Then `READY=1`.
//!
//! Stop (SIGTERM/SIGINT, or the caller's future): within `shutdown_timeout`, stop the adapters
//! (SIGTERM, then SIGKILL after a grace period), read every ring one last time, close all open
//! batches, wait for outstanding acknowledgements, spool what is still unacknowledged, close the
//! sink (status `offline`), and return. Under systemd: `STOPPING=1` first, then
//! `EXTEND_TIMEOUT_USEC=` every second until done.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use anyhow::Context;
use edgegw_ringbuf::{RingOptions, SharedRing, TelemetryRecord};
use tokio::sync::{mpsc, watch};

use crate::config::watch::ReloadTrigger;
use crate::epoch::EpochStore;
use crate::forward::batch::Batcher;
use crate::forward::catalog::SourceCatalog;
use crate::forward::dispatch::DispatchStats;
use crate::forward::dispatch::{BatchId, BatchSink, SendRefused, SinkEvent};
use crate::forward::encode::json_string;
use crate::forward::run::{
    DISPATCH_QUEUE, DrainControl, DrainStats, EventSink, run_dispatch_reloadable, run_drain,
};
use crate::forward::spooling::{LiveRender, SpoolBridge, SpoolLoss};
use crate::spool::{Spool, SpoolConfig, SpoolStats};
use crate::supervise::{AdapterCounters, AdapterSpec, run_supervisor};
use crate::telemetry::notify::{Monitor, Notifier, Probes, STOP_MARGIN, SourceProbe};

/// One source: an adapter child process writing one ring.
#[derive(Debug, Clone)]
pub struct SourceSpec {
    /// Name (passed to the child as `adapter --source NAME`; key of the epoch store).
    pub name: String,
    /// The ring's source id.
    pub source_id: u32,
    /// Routing and names of its records.
    pub catalog: Arc<SourceCatalog>,
    /// Ring capacity in records (a power of two).
    pub ring_capacity: usize,
    /// The adapter child's job.
    pub job: crate::adapter::AdapterJob,
}

/// Everything `run` needs, resolved from the configuration.
#[derive(Debug, Clone)]
pub struct RunPlan {
    /// Gateway name.
    pub gateway_name: String,
    /// Epoch store file.
    pub epoch_store: PathBuf,
    /// Spool file.
    pub spool_path: PathBuf,
    /// Spool settings.
    pub spool: SpoolConfig,
    /// Bound on a clean stop.
    pub shutdown_timeout: Duration,
    /// Sources.
    pub sources: Vec<SourceSpec>,
    /// Close a batch at this many records.
    pub max_batch: usize,
    /// Close a batch after this long.
    pub linger: Duration,
    /// This binary, for the adapter children.
    pub exe: PathBuf,
}

/// What a run did, for the demo's summary and the tests.
#[derive(Debug, Clone, Default)]
pub struct RunSummary {
    /// Dispatcher counters.
    pub dispatch: DispatchStats,
    /// Records the spool could not keep.
    pub spool_loss: SpoolLoss,
    /// Spool depth at exit.
    pub spool: SpoolStats,
    /// Adapter restarts (crashes) per source.
    pub adapter_crashes: Vec<(String, u64)>,
    /// Records dropped by adapters because their ring was full, per source.
    pub ring_drops: Vec<(String, u64)>,
}

/// Live view of a running gateway (the demo prints it, the metrics endpoint reads it). It
/// follows reloads: [`RunHandle::sources`] lists the sources running now.
#[derive(Debug, Clone)]
pub struct RunHandle {
    /// Latest dispatcher counters.
    pub dispatch: watch::Receiver<DispatchStats>,
    /// What the working parts update: running sources, broker state, reloads.
    pub probes: Arc<Probes>,
}

impl RunHandle {
    /// The sources running now (the running configuration's, minus any that failed to start),
    /// in configuration order: ring, adapter counters.
    pub fn sources(&self) -> Vec<SourceProbe> {
        self.probes.sources.lock().expect("probe lock").clone()
    }
}

/// A reload the caller prepared from the new file: validated, diffed, and judged applicable.
#[derive(Debug)]
pub struct Reload<S> {
    /// The new plan. Sources are matched to the running ones by name.
    pub plan: RunPlan,
    /// A new sink, only if its settings changed.
    pub sink: Option<S>,
    /// What changed, for the log (`config::diff::ConfigDiff`'s one line).
    pub summary: String,
}

/// Where reloads come from.
pub struct Reloads<S> {
    /// One message per reload asked for (SIGHUP, the file changed, inotify overflow).
    pub triggers: mpsc::Receiver<ReloadTrigger>,
    /// Reads and checks the file; `Err` is the reason it is rejected (for the log and
    /// `STATUS=`: one line per problem, `file:line:column: key: message`).
    #[allow(clippy::type_complexity)]
    pub load: Box<dyn FnMut() -> Result<Reload<S>, String> + Send>,
}

impl<S> std::fmt::Debug for Reloads<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reloads").finish_non_exhaustive()
    }
}

/// Runs the gateway until `shutdown` completes. `on_ready` is called once the rings, the spool
/// and the adapters are up (and `READY=1` sent when systemd listens).
pub async fn run<S: EventSink + Send + 'static>(
    plan: RunPlan,
    sink: S,
    shutdown: impl Future<Output = ()>,
    on_ready: impl FnOnce(RunHandle),
) -> anyhow::Result<RunSummary> {
    run_reloadable(plan, sink, shutdown, None, on_ready).await
}

/// [`run`], applying reloads from `reloads` while it runs. The [`RunHandle`] follows them.
pub async fn run_reloadable<S: EventSink + Send + 'static>(
    plan: RunPlan,
    sink: S,
    shutdown: impl Future<Output = ()>,
    mut reloads: Option<Reloads<S>>,
    on_ready: impl FnOnce(RunHandle),
) -> anyhow::Result<RunSummary> {
    let notifier = Notifier::from_env();
    let probes = Arc::new(Probes::default());
    let (sink_tx, sink_rx) = mpsc::unbounded_channel();
    let mut sink = ProbedSink {
        inner: sink,
        probes: Arc::clone(&probes),
        swaps: sink_rx,
        closing: None,
        announce: false,
        grace: plan.shutdown_timeout / 4,
    };
    let (epochs, report) = EpochStore::open(&plan.epoch_store)?;
    if let Some(aside) = report.moved_aside {
        tracing::error!(moved_to = %aside.display(), "epoch store was unreadable; moved aside (epochs continue from the clock)");
    }
    let (spool, report) =
        tokio::task::block_in_place(|| Spool::open(&plan.spool_path, &plan.spool))
            .with_context(|| format!("opening spool {}", plan.spool_path.display()))?;
    if let Some((aside, why)) = report.moved_aside {
        tracing::error!(moved_to = %aside.display(), reason = %why, "spool was corrupt; moved aside");
    }
    let initial_depth = {
        let st = spool.stats();
        (st.rows, st.records)
    };
    let mut render = LiveRender {
        gateway_json: json_string(&plan.gateway_name),
        catalogs: Vec::new(),
    };
    let mut bridge = SpoolBridge::new(spool, render.clone());
    let (catalog_tx, catalog_rx) = mpsc::unbounded_channel();
    let (tx, rx) = mpsc::channel(DISPATCH_QUEUE);
    let mut g = Gateway {
        plan,
        epochs,
        running: Vec::new(),
        tx,
        catalog_tx,
        next_index: 0,
        retired_drops: 0,
        probes: Arc::clone(&probes),
    };
    for source in g.plan.sources.clone() {
        let r = g.add_source(&source, Carried::default())?;
        g.running.push(r);
    }
    g.publish_probes();

    let (deadline_tx, deadline_rx) = watch::channel(None::<Instant>);
    let (stats_tx, stats_rx) = watch::channel(DispatchStats::default());
    let handle = RunHandle {
        dispatch: stats_rx,
        probes: Arc::clone(&probes),
    };
    probes.spool_rows.store(initial_depth.0, Relaxed);
    probes.spool_records.store(initial_depth.1, Relaxed);
    let depth_out = Arc::clone(&probes);
    let dispatch = tokio::spawn(async move {
        let stats = run_dispatch_reloadable(
            &mut sink,
            &mut bridge,
            &mut render,
            rx,
            deadline_rx,
            &stats_tx,
            catalog_rx,
            move |bridge| {
                let (rows, records) = bridge.spool().depth();
                depth_out.spool_rows.store(rows, Relaxed);
                depth_out.spool_records.store(records, Relaxed);
            },
        )
        .await;
        (sink, bridge, stats)
    });
    notifier.ready(&probes.status_line(Some(initial_depth)));
    let depth_in = Arc::clone(&probes);
    let monitor = Monitor::start(notifier, Arc::clone(&probes), move || {
        Some(depth_in.spool_depth())
    });
    on_ready(handle);

    tokio::pin!(shutdown);
    loop {
        let trigger = async {
            match reloads.as_mut() {
                Some(r) => r.triggers.recv().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = &mut shutdown => break,
            t = trigger => match t {
                Some(t) => {
                    let reloads = reloads.as_mut().expect("a trigger came from reloads");
                    notifier.reloading();
                    tracing::info!(trigger = %t, "reloading the configuration");
                    match (reloads.load)() {
                        Ok(r) => {
                            if let Err(e) = g.apply(r, &sink_tx).await {
                                // Parts that failed to start keep their old state or retry; the
                                // gateway keeps running.
                                tracing::error!(error = %format!("{e:#}"), "reload partly failed");
                            }
                            probes.reloads_applied.fetch_add(1, Relaxed);
                            *probes.last_reload_error.lock().expect("probe lock") = None;
                        }
                        Err(why) => {
                            let n = probes.reloads_rejected.fetch_add(1, Relaxed) + 1;
                            crate::telemetry::events::reload_rejected(n, &why);
                            *probes.last_reload_error.lock().expect("probe lock") = Some(why);
                        }
                    }
                    notifier.ready(&probes.status_line(Some(probes.spool_depth())));
                }
                // The caller dropped its reload source: run on without reloads.
                None => reloads = None,
            },
        }
    }

    let deadline = Instant::now() + g.plan.shutdown_timeout;
    tracing::info!(
        timeout_ms = g.plan.shutdown_timeout.as_millis() as u64,
        "stopping"
    );
    notifier.stopping(g.plan.shutdown_timeout);
    let extend = tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_secs(1));
        every.tick().await;
        loop {
            every.tick().await;
            notifier
                .extend_timeout(deadline.saturating_duration_since(Instant::now()) + STOP_MARGIN);
        }
    });
    let _ = deadline_tx.send(Some(deadline));
    let Gateway { running, tx, .. } = g;
    // The dispatch loop ends once every drain task is gone and no sender is left.
    drop(tx);
    for r in &running {
        r.stop_adapter();
    }
    let mut summary_sources = Vec::new();
    for r in running {
        summary_sources.push(r.stop().await);
    }
    let (sink, bridge, stats) = dispatch.await.context("dispatch loop panicked")?;
    let grace = deadline
        .saturating_duration_since(Instant::now())
        .max(Duration::from_millis(200));
    sink.close(grace).await;
    extend.abort();
    drop(monitor);

    Ok(RunSummary {
        dispatch: stats,
        spool_loss: bridge.loss(),
        spool: bridge.spool().stats(),
        adapter_crashes: summary_sources
            .iter()
            .map(|(n, crashes, _)| (n.clone(), *crashes))
            .collect(),
        ring_drops: summary_sources
            .iter()
            .map(|(n, _, drops)| (n.clone(), *drops))
            .collect(),
    })
}

/// The running sources and what starting or changing one needs.
struct Gateway {
    plan: RunPlan,
    epochs: EpochStore,
    running: Vec<RunningSource>,
    tx: mpsc::Sender<crate::forward::batch::Batch>,
    catalog_tx: mpsc::UnboundedSender<Arc<SourceCatalog>>,
    /// The catalog slot the next started drain task gets (slots are never reused).
    next_index: u32,
    /// Ring drops of sources stopped for good since the probes were last published.
    retired_drops: u64,
    probes: Arc<Probes>,
}

impl Gateway {
    /// Hands `catalog` to the dispatch loop; returns its slot.
    fn add_catalog(&mut self, catalog: &Arc<SourceCatalog>) -> u32 {
        let index = self.next_index;
        self.next_index += 1;
        // The dispatch loop outlives every drain task, so it is there to receive.
        let _ = self.catalog_tx.send(Arc::clone(catalog));
        index
    }

    /// A new ring with the source's next epoch, and its adapter and drain task; `carried`:
    /// the counters of the source of that name before (a reload gave it a new ring).
    fn add_source(
        &mut self,
        source: &SourceSpec,
        carried: Carried,
    ) -> anyhow::Result<RunningSource> {
        let epoch = self.epochs.advance(&source.name)?;
        let ring = SharedRing::<TelemetryRecord>::create(&RingOptions {
            capacity: source.ring_capacity,
            epoch,
            source_id: source.source_id,
        })
        .with_context(|| format!("creating the ring of source {}", source.name))?;
        tracing::info!(source = %source.name, epoch, capacity = source.ring_capacity, "source ring created");
        let index = self.add_catalog(&source.catalog);
        RunningSource::start(&self.plan, source, index, ring, carried, &self.tx)
    }

    /// Keeps the ring drops of a source that is gone (or could not start again) in the
    /// process totals, from the next [`Gateway::publish_probes`] on (until then the source is
    /// still listed, and its drops counted there).
    fn retire(&mut self, carried: &Carried) {
        self.retired_drops += carried.ring_dropped;
    }

    /// Lists the running sources for the metrics, the watchdog and `STATUS=`. The drops of
    /// sources retired meanwhile move to the removed total under the same lock, so a reader
    /// (`Probes::sources_and_removed_drops`) never counts them twice or not at all.
    fn publish_probes(&mut self) {
        let mut sources = self.probes.sources.lock().expect("probe lock");
        *sources = self.running.iter().map(RunningSource::probe).collect();
        self.probes
            .ring_dropped_removed
            .fetch_add(std::mem::take(&mut self.retired_drops), Relaxed);
    }

    /// Applies an accepted reload (see the module docs). Sources end up in the new plan's order.
    async fn apply<S>(
        &mut self,
        reload: Reload<S>,
        sink_tx: &mpsc::UnboundedSender<S>,
    ) -> anyhow::Result<()> {
        let Reload {
            plan: new,
            sink,
            summary,
        } = reload;
        crate::telemetry::events::reload_applied(&summary);
        let batching_changed =
            new.max_batch != self.plan.max_batch || new.linger != self.plan.linger;
        let mut old: Vec<Option<RunningSource>> = std::mem::take(&mut self.running)
            .into_iter()
            .map(Some)
            .collect();
        // Removed sources first: their adapters stop, their rings are drained.
        for slot in &mut old {
            if slot
                .as_ref()
                .is_some_and(|r| !new.sources.iter().any(|s| s.name == r.spec.name))
            {
                let r = slot.take().expect("checked");
                let name = r.spec.name.clone();
                let carried = r.stop_and_carry().await;
                self.retire(&carried);
                tracing::info!(source = %name, "source removed");
            }
        }
        let mut first_error = None;
        let mut not_started = Vec::new();
        // The plan the new parts are started with: new timeouts and batching.
        let previous = std::mem::replace(&mut self.plan, new.clone());
        for spec in &new.sources {
            let existing = old
                .iter_mut()
                .find(|r| r.as_ref().is_some_and(|r| r.spec.name == spec.name))
                .and_then(Option::take);
            let result = match existing {
                None => self.add_source(spec, Carried::default()).inspect(|_| {
                    tracing::info!(source = %spec.name, "source added");
                }),
                Some(r) => self.change(r, spec, batching_changed).await,
            };
            match result {
                Ok(r) => self.running.push(r),
                Err(e) => {
                    tracing::error!(source = %spec.name, error = %format!("{e:#}"), "source not started");
                    not_started.push(spec.name.clone());
                    first_error.get_or_insert(e);
                }
            }
        }
        if self.running.is_empty() && !new.sources.is_empty() && first_error.is_some() {
            self.plan = previous;
        }
        *self.probes.not_started.lock().expect("probe lock") = not_started;
        self.publish_probes();
        if let Some(s) = sink {
            tracing::info!("sink settings changed: replacing the sink");
            let _ = sink_tx.send(s);
        }
        first_error.map_or(Ok(()), Err)
    }

    /// One source present before and after a reload.
    async fn change(
        &mut self,
        mut r: RunningSource,
        spec: &SourceSpec,
        batching_changed: bool,
    ) -> anyhow::Result<RunningSource> {
        let same_ring =
            r.spec.source_id == spec.source_id && r.spec.ring_capacity == spec.ring_capacity;
        let same_job = r.spec.job == spec.job;
        let same_catalog = *r.spec.catalog == *spec.catalog && !batching_changed;
        if same_ring && same_job && same_catalog {
            return Ok(r);
        }
        if !same_ring {
            let carried = r.stop_and_carry().await;
            tracing::info!(source = %spec.name, "source changed: new ring and epoch");
            return self.add_source(spec, carried.clone()).inspect_err(|_| {
                self.retire(&carried);
            });
        }
        if !same_job {
            // Stop the producer first, so that everything it wrote under the old tag numbering
            // is read under the old catalog.
            r.halt_adapter().await;
        }
        r.halt_drain().await;
        let index = self.add_catalog(&spec.catalog);
        r.start_drain(&self.plan, &spec.catalog, index, &self.tx)?;
        if !same_job {
            r.start_adapter(&self.plan, spec)?;
            tracing::info!(source = %spec.name, "source changed: adapter restarted on the same ring");
        } else {
            tracing::info!(source = %spec.name, "source changed: names or batching only, adapter untouched");
        }
        r.spec = spec.clone();
        Ok(r)
    }
}

/// What a source hands to its successor of the same name when a reload gives it a new ring:
/// the metrics of a source are counters, and must not restart from 0.
#[derive(Debug, Clone, Default)]
struct Carried {
    /// Adapter counters (polls, errors, restarts): the supervisor of the old ring has ended.
    counters: Arc<AdapterCounters>,
    /// Records dropped (ring full) in its rings so far.
    ring_dropped: u64,
}

/// One running source: its ring, its adapter's supervisor and its drain task, each stoppable
/// on its own (a reload restarts one source and leaves the others alone).
struct RunningSource {
    spec: SourceSpec,
    ring: SharedRing<TelemetryRecord>,
    counters: Arc<AdapterCounters>,
    /// Ring drops of the source's earlier rings (see [`Carried`]).
    ring_dropped_before: u64,
    stop_adapter: watch::Sender<bool>,
    supervisor: Option<tokio::task::JoinHandle<()>>,
    drain_control: DrainControl,
    drain: Option<tokio::task::JoinHandle<()>>,
}

impl RunningSource {
    /// Claims the consumer side of `ring`, starts the drain task (batches carry `index`, the
    /// source's catalog slot in the dispatcher) and the adapter's supervisor.
    fn start(
        plan: &RunPlan,
        source: &SourceSpec,
        index: u32,
        ring: SharedRing<TelemetryRecord>,
        carried: Carried,
        tx: &mpsc::Sender<crate::forward::batch::Batch>,
    ) -> anyhow::Result<Self> {
        let mut r = Self {
            spec: source.clone(),
            ring,
            counters: carried.counters,
            ring_dropped_before: carried.ring_dropped,
            stop_adapter: watch::channel(true).0,
            supervisor: None,
            drain_control: DrainControl::new().0,
            drain: None,
        };
        r.start_drain(plan, &source.catalog, index, tx)?;
        r.start_adapter(plan, source)?;
        Ok(r)
    }

    /// Starts the adapter's supervisor with `source`'s job.
    fn start_adapter(&mut self, plan: &RunPlan, source: &SourceSpec) -> anyhow::Result<()> {
        let spec = AdapterSpec {
            exe: plan.exe.clone(),
            source: source.name.clone(),
            job: serde_json::to_string(&source.job)?.into(),
            stop_grace: plan.shutdown_timeout / 4,
        };
        let (stop_adapter, adapter_rx) = watch::channel(false);
        self.stop_adapter = stop_adapter;
        self.supervisor = Some(tokio::spawn(run_supervisor(
            spec,
            self.ring.clone(),
            Arc::clone(&self.counters),
            adapter_rx,
        )));
        Ok(())
    }

    /// Claims the ring's consumer side and starts a drain task batching under `catalog`.
    fn start_drain(
        &mut self,
        plan: &RunPlan,
        catalog: &Arc<SourceCatalog>,
        index: u32,
        tx: &mpsc::Sender<crate::forward::batch::Batch>,
    ) -> anyhow::Result<()> {
        let consumer = self
            .ring
            .consumer()
            .context("claiming the ring's consumer side")?;
        let batcher = Batcher::new(index, Arc::clone(catalog), plan.max_batch, plan.linger);
        let (drain_control, drain_rx) = DrainControl::new();
        self.drain_control = drain_control;
        self.drain = Some(tokio::spawn(run_drain(
            consumer,
            batcher,
            tx.clone(),
            drain_rx,
            Arc::new(DrainStats::default()),
        )));
        Ok(())
    }

    fn probe(&self) -> SourceProbe {
        SourceProbe {
            name: self.spec.name.clone(),
            ring: self.ring.clone(),
            adapter: Arc::clone(&self.counters),
            ring_dropped_before: self.ring_dropped_before,
        }
    }

    /// Asks the adapter to stop (SIGTERM, then SIGKILL after the grace period).
    fn stop_adapter(&self) {
        let _ = self.stop_adapter.send(true);
    }

    /// Stops the adapter and waits until it is gone.
    async fn halt_adapter(&mut self) {
        self.stop_adapter();
        if let Some(s) = self.supervisor.take() {
            let _ = s.await;
        }
    }

    /// Lets the drain task read the ring one last time, close every open batch and hand them
    /// to the dispatch loop; waits until it is gone (its consumer claim released).
    async fn halt_drain(&mut self) {
        self.drain_control.stop();
        if let Some(d) = self.drain.take() {
            let _ = d.await;
        }
    }

    /// Stops the adapter, then the drain task; returns what a successor of the same name
    /// continues from.
    async fn stop_and_carry(mut self) -> Carried {
        self.halt_adapter().await;
        self.halt_drain().await;
        Carried {
            ring_dropped: self.ring_dropped_before + self.ring.stats().dropped_full,
            counters: self.counters,
        }
    }

    /// Stops the adapter, then the drain task. Returns the name, adapter crashes and ring
    /// drops.
    async fn stop(mut self) -> (String, u64, u64) {
        self.halt_adapter().await;
        self.halt_drain().await;
        (
            self.spec.name,
            self.counters.crashes.load(Relaxed),
            self.ring_dropped_before + self.ring.stats().dropped_full,
        )
    }
}

/// The sink as the dispatch loop sees it, with the probes the watchdog and `STATUS=` read:
/// every call of `next_event` is one turn of the dispatch loop (it is called once per turn),
/// and connection events set the broker state.
///
/// It also replaces the sink after a reload: a new sink arriving on `swaps` is swapped in at the
/// start of a turn; the loop is told `Disconnected` with nothing listed, so the dispatcher spools
/// everything in flight (replayed through the new sink: duplicates possible, never a loss); the
/// old sink is closed in the background, and the new one is polled only once that is done, so
/// the broker sees the old `offline` before the new `online`. Meanwhile it refuses sends.
struct ProbedSink<S> {
    inner: S,
    probes: Arc<Probes>,
    swaps: mpsc::UnboundedReceiver<S>,
    closing: Option<tokio::task::JoinHandle<()>>,
    announce: bool,
    grace: Duration,
}

impl<S: BatchSink> BatchSink for ProbedSink<S> {
    fn ready(&self) -> bool {
        self.closing.is_none() && !self.announce && self.inner.ready()
    }
    fn send(&mut self, id: BatchId, topic: &str, payload: Vec<u8>) -> Result<(), SendRefused> {
        if self.closing.is_some() || self.announce {
            return Err(SendRefused);
        }
        self.inner.send(id, topic, payload)
    }
    fn in_flight(&self) -> usize {
        self.inner.in_flight()
    }
    fn window(&self) -> usize {
        self.inner.window()
    }
}

impl<S: EventSink + Send + 'static> EventSink for ProbedSink<S> {
    fn next_event(&mut self) -> impl Future<Output = SinkEvent> + Send {
        self.probes.dispatch_turns.fetch_add(1, Relaxed);
        if self.closing.is_none()
            && let Ok(new) = self.swaps.try_recv()
        {
            let old = std::mem::replace(&mut self.inner, new);
            self.closing = Some(tokio::spawn(old.close(self.grace)));
            self.announce = true;
        }
        let Self {
            inner,
            probes,
            closing,
            announce,
            ..
        } = self;
        async move {
            if std::mem::take(announce) {
                probes.broker_connected.store(false, Relaxed);
                return SinkEvent::Disconnected {
                    unacked: Vec::new(),
                };
            }
            if let Some(h) = closing.as_mut() {
                // Cancel-safe: a JoinHandle can be polled again after a cancelled wait.
                let _ = h.await;
                *closing = None;
            }
            let ev = inner.next_event().await;
            match &ev {
                SinkEvent::Connected => {
                    probes.broker_connected.store(true, Relaxed);
                    probes.broker_connects.fetch_add(1, Relaxed);
                }
                SinkEvent::Disconnected { .. } => probes.broker_connected.store(false, Relaxed),
                SinkEvent::Acked(_) => {}
            }
            ev
        }
    }

    fn close(self, grace: Duration) -> impl Future<Output = ()> + Send {
        let Self { inner, closing, .. } = self;
        async move {
            if let Some(h) = closing {
                let _ = h.await;
            }
            inner.close(grace).await;
        }
    }
}
