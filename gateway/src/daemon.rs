//! The running gateway: rings, adapter processes, forwarder, sink and spool, wired together,
//! until shutdown.
//!
//! # Operation
//! Start: open the epoch store and the spool (a corrupt spool is moved aside, never fatal),
//! then for every source advance its epoch, create its ring, claim the consumer side, start the
//! adapter child (`supervise.rs`) and a drain task; the dispatch loop owns the sink and the
//! spool. The gateway is ready once the spool is open and the adapters are started; it does not
//! wait for the broker.
//!
//! Stop (SIGTERM/SIGINT, or the caller's future): within `shutdown_timeout`, stop the adapters
//! (SIGTERM, then SIGKILL after a grace period), read every ring one last time, close all open
//! batches, wait for outstanding acknowledgements, spool what is still unacknowledged, close the
//! sink (status `offline`), and return.

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
use crate::forward::encode::json_string;
use crate::forward::run::{
    DISPATCH_QUEUE, DrainControl, DrainStats, EventSink, run_dispatch, run_drain,
};
use crate::forward::spooling::{LiveRender, SpoolBridge, SpoolLoss};
use crate::spool::{Spool, SpoolConfig, SpoolStats};
use crate::supervise::{AdapterCounters, AdapterSpec, run_supervisor};

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
/// and the adapters are up.
pub async fn run<S: EventSink + Send + 'static>(
    plan: RunPlan,
    mut sink: S,
    shutdown: impl Future<Output = ()>,
    on_ready: impl FnOnce(RunHandle),
) -> anyhow::Result<RunSummary> {
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
    let render = LiveRender {
        gateway_json: json_string(&plan.gateway_name),
        catalogs: plan
            .sources
            .iter()
            .map(|s| Arc::clone(&s.catalog))
            .collect(),
    };
    let mut bridge = SpoolBridge::new(spool, render.clone());

    let (stop_adapters, adapters_rx) = watch::channel(false);
    let (drains, drains_rx) = DrainControl::new();
    let (tx, rx) = mpsc::channel(DISPATCH_QUEUE);
    let mut supervisors = Vec::new();
    let mut drain_tasks = Vec::new();
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
        let consumer = ring.consumer().context("claiming a fresh ring")?;
        let counters = Arc::new(AdapterCounters::default());
        let spec = AdapterSpec {
            exe: plan.exe.clone(),
            source: source.name.clone(),
            job: serde_json::to_string(&source.job)?.into(),
            stop_grace: plan.shutdown_timeout / 4,
        };
        tracing::info!(source = %source.name, epoch, capacity = source.ring_capacity, "source ring created");
        supervisors.push(tokio::spawn(run_supervisor(
            spec,
            ring.clone(),
            Arc::clone(&counters),
            adapters_rx.clone(),
        )));
        let batcher = Batcher::new(
            index as u32,
            Arc::clone(&source.catalog),
            plan.max_batch,
            plan.linger,
        );
        drain_tasks.push(tokio::spawn(run_drain(
            consumer,
            batcher,
            tx.clone(),
            drains_rx.clone(),
            Arc::new(DrainStats::default()),
        )));
        handle.rings.push((source.name.clone(), ring));
        handle.adapters.push((source.name.clone(), counters));
    }
    drop(tx);

    let (deadline_tx, deadline_rx) = watch::channel(None::<Instant>);
    let (stats_tx, stats_rx) = watch::channel(DispatchStats::default());
    handle.dispatch = stats_rx;
    let ring_view = handle.rings.clone();
    let adapter_view = handle.adapters.clone();
    let dispatch = tokio::spawn(async move {
        let stats = run_dispatch(&mut sink, &mut bridge, &render, rx, deadline_rx, &stats_tx).await;
        (sink, bridge, stats)
    });
    on_ready(handle);

    shutdown.await;
    let deadline = Instant::now() + plan.shutdown_timeout;
    tracing::info!(
        timeout_ms = plan.shutdown_timeout.as_millis() as u64,
        "stopping"
    );
    let _ = deadline_tx.send(Some(deadline));
    let _ = stop_adapters.send(true);
    for s in supervisors {
        let _ = s.await;
    }
    drains.stop();
    for d in drain_tasks {
        let _ = d.await;
    }
    let (sink, bridge, stats) = dispatch.await.context("dispatch loop panicked")?;
    let grace = deadline
        .saturating_duration_since(Instant::now())
        .max(Duration::from_millis(200));
    sink.close(grace).await;

    Ok(RunSummary {
        dispatch: stats,
        spool_loss: bridge.loss(),
        spool: bridge.spool().stats(),
        adapter_crashes: adapter_view
            .iter()
            .map(|(n, c)| {
                (
                    n.clone(),
                    c.crashes.load(std::sync::atomic::Ordering::Relaxed),
                )
            })
            .collect(),
        ring_drops: ring_view
            .iter()
            .map(|(n, r)| (n.clone(), r.stats().dropped_full))
            .collect(),
    })
}
