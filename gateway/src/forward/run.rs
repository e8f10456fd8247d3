//! The forwarder's tasks: one drain task per ring, one dispatch loop that owns the sink and the
//! spool.
//!
//! # Operation
//! - A drain task waits on its ring (eventfd through tokio, no polling), reads everything
//!   published in place, appends each record to its group's open batch, releases the slots, and
//!   sends closed batches to the dispatch loop over a bounded channel. When that channel is
//!   full the drain task waits: the ring then fills, and the adapter applies its own policy
//!   (bounded wait, then drop and count, which shows upstream as a gap).
//! - The dispatch loop takes live batches (several at a time), sink events, and a replay tick,
//!   and drives the [`Dispatcher`]. Spool calls are blocking SQLite calls: they run under
//!   `block_in_place`, so the runtime must be multi-threaded.
//! - Shutdown, in order: the caller stops the adapters; [`DrainControl::stop`] makes each drain
//!   task read its ring one last time and close every open batch; the dispatch loop, once all
//!   drain tasks are gone, waits for outstanding acknowledgements until the deadline, then spools
//!   every live batch still unacknowledged.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use edgegw_ringbuf::{Consumer, TelemetryRecord};
use tokio::sync::{mpsc, watch};

use super::batch::{Batch, Batcher};
use super::catalog::SourceCatalog;
use super::dispatch::{BatchSink, BatchSpool, DispatchStats, Dispatcher, SinkEvent};
use super::spooling::{LiveRender, SpoolBridge};

/// Capacity of the channel from drain tasks to the dispatch loop, in batches.
pub const DISPATCH_QUEUE: usize = 256;
/// Live batches handed to the dispatcher at once (one spool transaction when spilling).
const LIVE_CHUNK: usize = 256;
/// How often replay is attempted when nothing else wakes the loop.
const REPLAY_TICK: Duration = Duration::from_millis(5);

/// A sink that also reports events (see [`SinkEvent`]).
pub trait EventSink: BatchSink {
    /// The next event. Must be cancel-safe: the loop selects it against other inputs.
    fn next_event(&mut self) -> impl Future<Output = SinkEvent> + Send;
    /// Clean shutdown after the dispatch loop ended (nothing is in flight any more): tell the
    /// broker we are going (status `offline`), disconnect, within `grace`.
    fn close(self, grace: Duration) -> impl Future<Output = ()> + Send;
}

/// Counters of one drain task.
#[derive(Debug, Default)]
pub struct DrainStats {
    /// Records read from the ring.
    pub records: AtomicU64,
    /// Batches closed.
    pub batches: AtomicU64,
    /// Whether the ring was found corrupt (the task stopped reading it).
    pub corrupt: AtomicU64,
}

/// Stops the drain tasks.
#[derive(Debug, Clone)]
pub struct DrainControl(watch::Sender<bool>);

impl DrainControl {
    /// A control and the receiver drain tasks watch.
    pub fn new() -> (Self, watch::Receiver<bool>) {
        let (tx, rx) = watch::channel(false);
        (Self(tx), rx)
    }

    /// Asks every drain task for a last read and a final flush.
    pub fn stop(&self) {
        let _ = self.0.send(true);
    }
}

/// Drains one ring until stopped.
pub async fn run_drain(
    mut consumer: Consumer<TelemetryRecord>,
    mut batcher: Batcher,
    tx: mpsc::Sender<Batch>,
    mut stop: watch::Receiver<bool>,
    stats: Arc<DrainStats>,
) {
    let mut closed = Vec::new();
    loop {
        let stopping = *stop.borrow();
        if !stopping {
            let deadline = batcher.next_deadline();
            tokio::select! {
                r = consumer.readable() => {
                    if let Err(e) = r {
                        tracing::error!(source = %batcher.catalog().name, error = %e, "ring wait failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
                () = sleep_until(deadline) => {}
                _ = stop.changed() => {}
            }
        }
        let now = Instant::now();
        match consumer.read() {
            Ok(batch) => {
                let n = batch.len();
                for r in batch.iter() {
                    closed.extend(batcher.push(r, now));
                }
                batch.release_all();
                stats.records.fetch_add(n as u64, Ordering::Relaxed);
            }
            Err(e) => {
                stats.corrupt.store(1, Ordering::Relaxed);
                tracing::error!(source = %batcher.catalog().name, error = %e, "ring corrupt: no longer read");
                batcher.close_due(now, true, &mut closed);
                send_all(&tx, &mut closed, &stats).await;
                return;
            }
        }
        batcher.close_due(now, stopping, &mut closed);
        if !send_all(&tx, &mut closed, &stats).await || stopping {
            return;
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d.into()).await,
        None => std::future::pending().await,
    }
}

/// Sends closed batches; `false` if the dispatch loop is gone.
async fn send_all(tx: &mpsc::Sender<Batch>, closed: &mut Vec<Batch>, stats: &DrainStats) -> bool {
    for b in closed.drain(..) {
        stats.batches.fetch_add(1, Ordering::Relaxed);
        if tx.send(b).await.is_err() {
            return false;
        }
    }
    true
}

/// Runs the dispatch loop until every drain task has finished (the channel closed) and either
/// everything in flight is acknowledged or `drain_deadline` (set once stopping starts) passes.
pub async fn run_dispatch<S: EventSink>(
    sink: &mut S,
    bridge: &mut SpoolBridge,
    render: &LiveRender,
    rx: mpsc::Receiver<Batch>,
    drain_deadline: watch::Receiver<Option<Instant>>,
    stats_out: &watch::Sender<DispatchStats>,
) -> DispatchStats {
    let (_, no_catalogs) = mpsc::unbounded_channel();
    let mut render = render.clone();
    run_dispatch_reloadable(
        sink,
        bridge,
        &mut render,
        rx,
        drain_deadline,
        stats_out,
        no_catalogs,
        |_| {},
    )
    .await
}

/// [`run_dispatch`] for a gateway that reloads: catalogs of sources added or changed while it
/// runs arrive on `catalogs`, each taking the next source index (batches name their catalog by
/// index). Catalogs are only ever appended: a batch still in flight keeps the names it was read
/// under. A catalog is sent before the drain task whose batches use it starts, and every
/// catalog that arrived is taken before live batches are rendered, so a batch never comes
/// before its catalog. `on_tick` sees the spool at every replay tick (every few ms; keep it
/// cheap), e.g. to publish its depth.
#[allow(clippy::too_many_arguments)]
pub async fn run_dispatch_reloadable<S: EventSink>(
    sink: &mut S,
    bridge: &mut SpoolBridge,
    render: &mut LiveRender,
    mut rx: mpsc::Receiver<Batch>,
    mut drain_deadline: watch::Receiver<Option<Instant>>,
    stats_out: &watch::Sender<DispatchStats>,
    mut catalogs: mpsc::UnboundedReceiver<Arc<SourceCatalog>>,
    mut on_tick: impl FnMut(&SpoolBridge),
) -> DispatchStats {
    let mut d = Dispatcher::new(50);
    let mut rx_open = true;
    let mut watch_deadline = true;
    let mut tick = tokio::time::interval(REPLAY_TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        let deadline = *drain_deadline.borrow();
        if !rx_open {
            let expired = deadline.is_some_and(|d| Instant::now() >= d);
            if d.in_flight() == 0 || expired {
                break;
            }
        }
        tokio::select! {
            // Sink events first: acknowledgements free the window and writes empty rumqttc's
            // queue. Picked at random against a live chunk (whose spill can take milliseconds),
            // the sink got one packet per loop turn, the window stayed full and everything
            // spilled: under load the gateway collapsed to a few batches per second.
            biased;
            ev = sink.next_event() => {
                let replay = ev == SinkEvent::Connected || rx_open;
                // Most events are acks of live batches, with nothing to replay: no SQLite call,
                // so no need to hand the worker thread's other tasks away.
                let blocking = d.event_touches_spool(&ev) || !bridge.is_empty();
                let work = || {
                    d.on_event(ev, bridge);
                    if replay {
                        d.pump_replay(sink, bridge);
                    }
                };
                if blocking {
                    tokio::task::block_in_place(work);
                } else {
                    work();
                }
            }
            first = rx.recv(), if rx_open => match first {
                Some(first) => {
                    let mut live = vec![first];
                    while live.len() < LIVE_CHUNK {
                        match rx.try_recv() {
                            Ok(b) => live.push(b),
                            Err(_) => break,
                        }
                    }
                    while let Ok(catalog) = catalogs.try_recv() {
                        bridge.add_catalog(Arc::clone(&catalog));
                        render.catalogs.push(catalog);
                    }
                    // Spilling (window full, or disconnected) writes to SQLite. A batch the sink
                    // refuses although it fits (oversized) spills inline: rare and short.
                    let fits = sink.ready() && sink.in_flight() + live.len() <= sink.window();
                    if fits {
                        d.on_live(live, sink, bridge, &*render);
                    } else {
                        tokio::task::block_in_place(|| d.on_live(live, sink, bridge, &*render));
                    }
                }
                None => rx_open = false,
            },
            _ = tick.tick(), if rx_open => {
                if !bridge.is_empty() {
                    tokio::task::block_in_place(|| d.pump_replay(sink, bridge));
                }
                stats_out.send_replace(d.stats());
                on_tick(bridge);
            }
            () = sleep_until(deadline), if !rx_open => {}
            changed = drain_deadline.changed(), if watch_deadline => {
                // Once the deadline is set (or its sender gone) there is nothing more to watch.
                watch_deadline = changed.is_ok() && drain_deadline.borrow().is_none();
            }
        }
    }
    let spooled = tokio::task::block_in_place(|| d.spool_in_flight(bridge));
    if spooled > 0 {
        tracing::info!(
            batches = spooled,
            "unacknowledged batches spooled at shutdown"
        );
    }
    let stats = d.stats();
    stats_out.send_replace(stats);
    on_tick(bridge);
    stats
}
