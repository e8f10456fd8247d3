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
//! Stop (SIGTERM/SIGINT, or the caller's future): within `shutdown_timeout`, stop the adapters
//! (SIGTERM, then SIGKILL after a grace period), read every ring one last time, close all open
//! batches, wait for outstanding acknowledgements, spool what is still unacknowledged, close the
//! sink (status `offline`), and return. Under systemd: `STOPPING=1` first, then
//! `EXTEND_TIMEOUT_USEC=` every second until done.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use edgegw_ringbuf::{RingOptions, SharedRing, TelemetryRecord};
use tokio::sync::{mpsc, watch};

use crate::epoch::EpochStore;
use crate::forward::batch::Batcher;
use crate::forward::catalog::SourceCatalog;
use crate::forward::dispatch::DispatchStats;
use crate::forward::dispatch::{BatchId, BatchSink, SendRefused, SinkEvent};
use crate::forward::encode::json_string;
use crate::forward::run::{
    DISPATCH_QUEUE, DrainControl, DrainStats, EventSink, run_dispatch, run_drain,
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

/// Live view of a running gateway (the demo prints it; metrics will read it).
#[derive(Debug, Clone)]
pub struct RunHandle {
    /// Latest dispatcher counters.
    pub dispatch: watch::Receiver<DispatchStats>,
    /// Rings by source name.
    pub rings: Vec<(String, SharedRing<TelemetryRecord>)>,
    /// Adapter counters by source name.
    pub adapters: Vec<(String, Arc<AdapterCounters>)>,
}

/// Runs the gateway until `shutdown` completes. `on_ready` is called once the rings, the spool
/// and the adapters are up (and `READY=1` sent when systemd listens).
pub async fn run<S: EventSink + Send + 'static>(
    plan: RunPlan,
    sink: S,
    shutdown: impl Future<Output = ()>,
    on_ready: impl FnOnce(RunHandle),
) -> anyhow::Result<RunSummary> {
    let notifier = Notifier::from_env();
    let probes = Arc::new(Probes::default());
    let mut sink = ProbedSink {
        inner: sink,
        probes: Arc::clone(&probes),
    };
    let (mut epochs, report) = EpochStore::open(&plan.epoch_store)?;
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
    let render = LiveRender {
        gateway_json: json_string(&plan.gateway_name),
        catalogs: plan
            .sources
            .iter()
            .map(|s| Arc::clone(&s.catalog))
            .collect(),
    };
    let mut bridge = SpoolBridge::new(spool, render.clone());

    let (tx, rx) = mpsc::channel(DISPATCH_QUEUE);
    let mut running = Vec::new();
    let mut handle = RunHandle {
        dispatch: watch::channel(DispatchStats::default()).1,
        rings: Vec::new(),
        adapters: Vec::new(),
    };
    for (index, source) in plan.sources.iter().enumerate() {
        let epoch = epochs.advance(&source.name)?;
        let ring = SharedRing::<TelemetryRecord>::create(&RingOptions {
            capacity: source.ring_capacity,
            epoch,
            source_id: source.source_id,
        })
        .with_context(|| format!("creating the ring of source {}", source.name))?;
        tracing::info!(source = %source.name, epoch, capacity = source.ring_capacity, "source ring created");
        let r = RunningSource::start(&plan, source, index as u32, ring, &tx)?;
        handle.rings.push((source.name.clone(), r.ring.clone()));
        handle
            .adapters
            .push((source.name.clone(), Arc::clone(&r.counters)));
        running.push(r);
    }
    drop(tx);
    *probes.sources.lock().expect("probe lock") =
        running.iter().map(RunningSource::probe).collect();

    let (deadline_tx, deadline_rx) = watch::channel(None::<Instant>);
    let (stats_tx, stats_rx) = watch::channel(DispatchStats::default());
    handle.dispatch = stats_rx;
    let dispatch = tokio::spawn(async move {
        let stats = run_dispatch(&mut sink, &mut bridge, &render, rx, deadline_rx, &stats_tx).await;
        (sink, bridge, stats)
    });
    notifier.ready(&probes.status_line(Some(initial_depth)));
    let spool_path = plan.spool_path.clone();
    let monitor = Monitor::start(notifier, Arc::clone(&probes), move || {
        Spool::peek_depth(&spool_path).ok()
    });
    on_ready(handle);

    shutdown.await;
    let deadline = Instant::now() + plan.shutdown_timeout;
    tracing::info!(
        timeout_ms = plan.shutdown_timeout.as_millis() as u64,
        "stopping"
    );
    notifier.stopping(plan.shutdown_timeout);
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

/// One running source: its ring, its adapter's supervisor and its drain task, each stoppable
/// on its own (a reload restarts one source and leaves the others alone).
struct RunningSource {
    spec: SourceSpec,
    ring: SharedRing<TelemetryRecord>,
    counters: Arc<AdapterCounters>,
    stop_adapter: watch::Sender<bool>,
    supervisor: tokio::task::JoinHandle<()>,
    drain_control: DrainControl,
    drain: tokio::task::JoinHandle<()>,
}

impl RunningSource {
    /// Claims the consumer side of `ring`, starts the drain task (batches carry `index`, the
    /// source's catalog slot in the dispatcher) and the adapter's supervisor.
    fn start(
        plan: &RunPlan,
        source: &SourceSpec,
        index: u32,
        ring: SharedRing<TelemetryRecord>,
        tx: &mpsc::Sender<crate::forward::batch::Batch>,
    ) -> anyhow::Result<Self> {
        let consumer = ring
            .consumer()
            .context("claiming the ring's consumer side")?;
        let counters = Arc::new(AdapterCounters::default());
        let spec = AdapterSpec {
            exe: plan.exe.clone(),
            source: source.name.clone(),
            job: serde_json::to_string(&source.job)?.into(),
            stop_grace: plan.shutdown_timeout / 4,
        };
        let (stop_adapter, adapter_rx) = watch::channel(false);
        let supervisor = tokio::spawn(run_supervisor(
            spec,
            ring.clone(),
            Arc::clone(&counters),
            adapter_rx,
        ));
        let batcher = Batcher::new(
            index,
            Arc::clone(&source.catalog),
            plan.max_batch,
            plan.linger,
        );
        let (drain_control, drain_rx) = DrainControl::new();
        let drain = tokio::spawn(run_drain(
            consumer,
            batcher,
            tx.clone(),
            drain_rx,
            Arc::new(DrainStats::default()),
        ));
        Ok(Self {
            spec: source.clone(),
            ring,
            counters,
            stop_adapter,
            supervisor,
            drain_control,
            drain,
        })
    }

    fn probe(&self) -> SourceProbe {
        SourceProbe {
            name: self.spec.name.clone(),
            ring: self.ring.clone(),
            adapter: Arc::clone(&self.counters),
        }
    }

    /// Asks the adapter to stop (SIGTERM, then SIGKILL after the grace period).
    fn stop_adapter(&self) {
        let _ = self.stop_adapter.send(true);
    }

    /// Stops the adapter, then lets the drain task read the ring one last time and close every
    /// open batch. Returns the name, adapter crashes and ring drops.
    async fn stop(self) -> (String, u64, u64) {
        self.stop_adapter();
        let _ = self.supervisor.await;
        self.drain_control.stop();
        let _ = self.drain.await;
        (
            self.spec.name,
            self.counters
                .crashes
                .load(std::sync::atomic::Ordering::Relaxed),
            self.ring.stats().dropped_full,
        )
    }
}

/// The sink as the dispatch loop sees it, with the probes the watchdog and `STATUS=` read:
/// every call of `next_event` is one turn of the dispatch loop (it is called once per turn),
/// and connection events set the broker state.
struct ProbedSink<S> {
    inner: S,
    probes: Arc<Probes>,
}

impl<S: BatchSink> BatchSink for ProbedSink<S> {
    fn ready(&self) -> bool {
        self.inner.ready()
    }
    fn send(&mut self, id: BatchId, topic: &str, payload: Vec<u8>) -> Result<(), SendRefused> {
        self.inner.send(id, topic, payload)
    }
    fn in_flight(&self) -> usize {
        self.inner.in_flight()
    }
    fn window(&self) -> usize {
        self.inner.window()
    }
}

impl<S: EventSink + Send> EventSink for ProbedSink<S> {
    fn next_event(&mut self) -> impl Future<Output = SinkEvent> + Send {
        use std::sync::atomic::Ordering::Relaxed;
        self.probes.dispatch_turns.fetch_add(1, Relaxed);
        let probes = &self.probes;
        let next = self.inner.next_event();
        async move {
            let ev = next.await;
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
        self.inner.close(grace)
    }
}
