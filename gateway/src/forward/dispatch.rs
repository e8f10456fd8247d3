//! The dispatcher: decides, batch by batch, between the sink and the spool, and owns
//! at-least-once delivery.
//!
//! # Design constraints
//! - Nothing committed is lost: a batch leaves the gateway's hands only when the sink reports
//!   it acknowledged (PUBACK), or when the spool has it. Whatever the sink hands back after a
//!   disconnect goes to the spool (live batches) or back to "not yet sent" (spooled rows).
//! - Live data keeps flowing during replay: live batches go straight to the sink whenever it is
//!   connected and has room; replay takes at most `replay_share` of the in-flight window, so
//!   live latency stays bounded while the backlog drains in FIFO order.
//! - Slow broker: a live batch that finds the window full spills to the spool instead of
//!   waiting, so the rings keep draining.
//! - The sink and spool sit behind the [`BatchSink`] and [`BatchSpool`] traits: this state
//!   machine is tested with fakes, and driven for real by `crate::run`.
//!
//! # Operation
//! [`Dispatcher::on_live`], [`Dispatcher::on_event`] and [`Dispatcher::pump_replay`] are called
//! by the loop that owns the sink; each returns after doing what the state allows, never
//! blocking on the network.

use std::collections::HashMap;

use super::batch::Batch;

/// Forwarder-assigned identity of one send.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BatchId(pub u64);

/// Spool row identity.
pub type RowId = i64;

/// What the sink reports.
#[derive(Debug, Clone, PartialEq)]
pub enum SinkEvent {
    /// Connected (again); sending may start.
    Connected,
    /// The broker acknowledged this batch.
    Acked(BatchId),
    /// The connection is gone; these batches were sent or queued but not acknowledged.
    Disconnected {
        /// The batches handed back.
        unacked: Vec<BatchId>,
    },
}

/// The sink did not take a batch (window full or disconnected after all).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("sink refused the batch")]
pub struct SendRefused;

/// The sink as the dispatcher needs it.
pub trait BatchSink {
    /// Whether a send can be accepted now (connected and the in-flight window has room).
    fn ready(&self) -> bool;
    /// Sends a rendered batch. Only called when [`BatchSink::ready`]; an `Err` means it was not
    /// taken after all (the caller spools it).
    fn send(&mut self, id: BatchId, topic: &str, payload: Vec<u8>) -> Result<(), SendRefused>;
    /// Batches sent and not yet acknowledged.
    fn in_flight(&self) -> usize;
    /// Size of the in-flight window.
    fn window(&self) -> usize;
}

/// The spool as the dispatcher needs it. Errors are reported and counted by the implementation;
/// the dispatcher only learns what did not get stored.
pub trait BatchSpool {
    /// Stores batches; returns how many records could not be stored (full disk, I/O error).
    fn append(&mut self, batches: &[Batch]) -> u64;
    /// Up to `n` of the oldest rows not handed out yet, rendered for sending (marked
    /// `replayed`), marking them handed out.
    fn take_oldest(&mut self, n: usize) -> Vec<(RowId, Rendered)>;
    /// A row was acknowledged: delete it.
    fn ack(&mut self, row: RowId);
    /// Rows handed out and not acknowledged become available again (after a disconnect).
    fn reset_handed_out(&mut self);
    /// One row handed out but not sent becomes available again.
    fn give_back(&mut self, row: RowId);
    /// Whether rows are waiting.
    fn is_empty(&self) -> bool;
}

/// A batch ready for the sink.
#[derive(Debug, Clone, PartialEq)]
pub struct Rendered {
    /// Topic.
    pub topic: Box<str>,
    /// Payload.
    pub payload: Vec<u8>,
    /// Records in it.
    pub records: u64,
}

/// Turns a live batch into `(topic, payload)`.
pub trait Render {
    /// Renders `batch`.
    fn render(&self, batch: &Batch) -> (&str, Vec<u8>);
}

enum Origin {
    Live(Batch),
    Spooled(RowId),
}

/// Counters of the dispatcher.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct DispatchStats {
    /// Batches sent live.
    pub sent_live: u64,
    /// Batches sent from the spool.
    pub replayed_batches: u64,
    /// Records sent from the spool.
    pub replayed_records: u64,
    /// Batches acknowledged.
    pub acked: u64,
    /// Batches sent again after a disconnect (each may arrive twice).
    pub resent: u64,
    /// Batches written to the spool.
    pub spilled_batches: u64,
    /// Records written to the spool.
    pub spilled_records: u64,
    /// Records the spool could not store.
    pub spool_lost_records: u64,
}

/// The dispatcher state.
pub struct Dispatcher {
    next_id: u64,
    in_flight: HashMap<BatchId, Origin>,
    replay_in_flight: usize,
    /// Share of the window replay may use, in percent.
    replay_share: usize,
    stats: DispatchStats,
}

impl std::fmt::Debug for Dispatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dispatcher")
            .field("in_flight", &self.in_flight.len())
            .field("stats", &self.stats)
            .finish()
    }
}

impl Dispatcher {
    /// A dispatcher letting replay use `replay_share` percent of the window (at least one slot).
    pub fn new(replay_share: usize) -> Self {
        Self {
            next_id: 0,
            in_flight: HashMap::new(),
            replay_in_flight: 0,
            replay_share: replay_share.clamp(1, 100),
            stats: DispatchStats::default(),
        }
    }

    /// Counters so far.
    pub fn stats(&self) -> DispatchStats {
        self.stats
    }

    /// Batches sent and not yet acknowledged.
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    fn id(&mut self) -> BatchId {
        self.next_id += 1;
        BatchId(self.next_id)
    }

    /// New live batches: straight to the sink while it has room, the rest to the spool.
    pub fn on_live(
        &mut self,
        batches: Vec<Batch>,
        sink: &mut impl BatchSink,
        spool: &mut impl BatchSpool,
        render: &impl Render,
    ) {
        let mut spill = Vec::new();
        for batch in batches {
            if sink.ready() {
                let id = self.id();
                let (topic, payload) = render.render(&batch);
                if sink.send(id, topic, payload).is_ok() {
                    self.stats.sent_live += 1;
                    self.in_flight.insert(id, Origin::Live(batch));
                    continue;
                }
            }
            spill.push(batch);
        }
        self.spill(spill, spool);
    }

    fn spill(&mut self, batches: Vec<Batch>, spool: &mut impl BatchSpool) {
        if batches.is_empty() {
            return;
        }
        self.stats.spilled_batches += batches.len() as u64;
        self.stats.spilled_records += batches.iter().map(|b| b.records.len() as u64).sum::<u64>();
        self.stats.spool_lost_records += spool.append(&batches);
    }

    /// Whether [`Dispatcher::on_event`] would touch the spool for `event` (an ack of a
    /// spooled row, a disconnect): the caller then runs it where blocking is allowed.
    pub fn event_touches_spool(&self, event: &SinkEvent) -> bool {
        match event {
            SinkEvent::Connected => false,
            SinkEvent::Acked(id) => matches!(self.in_flight.get(id), Some(Origin::Spooled(_))),
            SinkEvent::Disconnected { .. } => true,
        }
    }

    /// An event from the sink.
    pub fn on_event(&mut self, event: SinkEvent, spool: &mut impl BatchSpool) {
        match event {
            SinkEvent::Connected => {}
            SinkEvent::Acked(id) => match self.in_flight.remove(&id) {
                Some(Origin::Live(_)) => self.stats.acked += 1,
                Some(Origin::Spooled(row)) => {
                    self.stats.acked += 1;
                    self.replay_in_flight -= 1;
                    spool.ack(row);
                }
                // An ack for a batch already handed back: a duplicate on the wire, harmless.
                None => {}
            },
            SinkEvent::Disconnected { unacked } => {
                let mut back = Vec::new();
                for id in unacked {
                    if let Some(Origin::Live(batch)) = self.in_flight.remove(&id) {
                        back.push(batch);
                    }
                }
                // Everything else in flight was handed back too, whatever the sink listed.
                for (_, origin) in self.in_flight.drain() {
                    if let Origin::Live(batch) = origin {
                        back.push(batch);
                    }
                }
                back.sort_by_key(|b| (b.source, b.records.first().map(|r| r.seq)));
                self.stats.resent += back.len() as u64;
                self.replay_in_flight = 0;
                spool.reset_handed_out();
                self.spill(back, spool);
            }
        }
    }

    /// Sends spooled rows, oldest first, while the sink is ready and replay is within its share.
    pub fn pump_replay(&mut self, sink: &mut impl BatchSink, spool: &mut impl BatchSpool) {
        let share = (sink.window() * self.replay_share / 100).max(1);
        while sink.ready() && self.replay_in_flight < share && !spool.is_empty() {
            let rows = spool.take_oldest(share - self.replay_in_flight);
            // `ready()` was true, but the window may have fewer free slots than replay's share.
            if rows.is_empty() {
                break;
            }
            let mut refused = false;
            for (row, rendered) in rows {
                if refused {
                    spool.give_back(row);
                    continue;
                }
                let id = self.id();
                if sink.send(id, &rendered.topic, rendered.payload).is_err() {
                    refused = true;
                    spool.give_back(row);
                    continue;
                }
                self.stats.replayed_batches += 1;
                self.stats.replayed_records += rendered.records;
                self.replay_in_flight += 1;
                self.in_flight.insert(id, Origin::Spooled(row));
            }
            if refused {
                break;
            }
        }
    }

    /// Shutdown: every live batch still in flight goes to the spool (spooled rows stay where
    /// they are). Returns how many batches were spooled.
    pub fn spool_in_flight(&mut self, spool: &mut impl BatchSpool) -> usize {
        let back: Vec<Batch> = self
            .in_flight
            .drain()
            .filter_map(|(_, o)| match o {
                Origin::Live(b) => Some(b),
                Origin::Spooled(_) => None,
            })
            .collect();
        let n = back.len();
        self.replay_in_flight = 0;
        spool.reset_handed_out();
        self.spill(back, spool);
        n
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use edgegw_ringbuf::{TelemetryRecord, Value};
    use proptest::prelude::*;

    use super::*;

    /// A broker link: a window, a connection flag, and what it has delivered.
    #[derive(Default)]
    struct FakeSink {
        connected: bool,
        window: usize,
        sent: Vec<(BatchId, Vec<u8>)>,
        delivered: Vec<Vec<u8>>,
    }

    impl BatchSink for FakeSink {
        fn ready(&self) -> bool {
            self.connected && self.sent.len() < self.window
        }
        fn send(&mut self, id: BatchId, _topic: &str, payload: Vec<u8>) -> Result<(), SendRefused> {
            if !self.ready() {
                return Err(SendRefused);
            }
            self.sent.push((id, payload));
            Ok(())
        }
        fn in_flight(&self) -> usize {
            self.sent.len()
        }
        fn window(&self) -> usize {
            self.window
        }
    }

    #[derive(Default)]
    struct FakeSpool {
        rows: BTreeMap<RowId, (Batch, bool)>,
        next: RowId,
    }

    impl BatchSpool for FakeSpool {
        fn append(&mut self, batches: &[Batch]) -> u64 {
            for b in batches {
                self.next += 1;
                self.rows.insert(self.next, (b.clone(), false));
            }
            0
        }
        fn take_oldest(&mut self, n: usize) -> Vec<(RowId, Rendered)> {
            let mut out = Vec::new();
            for (id, (b, out_now)) in self.rows.iter_mut() {
                if out.len() == n {
                    break;
                }
                if !*out_now {
                    *out_now = true;
                    let (topic, payload) = SeqRender.render(b);
                    out.push((
                        *id,
                        Rendered {
                            topic: topic.into(),
                            payload,
                            records: b.records.len() as u64,
                        },
                    ));
                }
            }
            out
        }
        fn ack(&mut self, row: RowId) {
            self.rows.remove(&row);
        }
        fn reset_handed_out(&mut self) {
            self.rows.values_mut().for_each(|(_, o)| *o = false);
        }
        fn give_back(&mut self, row: RowId) {
            if let Some((_, o)) = self.rows.get_mut(&row) {
                *o = false;
            }
        }
        fn is_empty(&self) -> bool {
            !self.rows.values().any(|(_, o)| !*o)
        }
    }

    /// Payload = the batch's seqs as little-endian u64s.
    struct SeqRender;
    impl Render for SeqRender {
        fn render(&self, batch: &Batch) -> (&str, Vec<u8>) {
            (
                "t",
                batch
                    .records
                    .iter()
                    .flat_map(|r| r.seq.to_le_bytes())
                    .collect(),
            )
        }
    }

    fn batch(first: u64, n: u64) -> Batch {
        Batch {
            source: 0,
            group: 0,
            epoch: 1,
            records: (first..first + n)
                .map(|s| {
                    let mut r = TelemetryRecord::new(0, 0, s, Value::U64(s), 0);
                    r.seq = s;
                    r
                })
                .collect(),
        }
    }

    #[derive(Debug, Clone)]
    enum Op {
        Live(u8),
        AckOldest(u8),
        Disconnect,
        Connect,
        Replay,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (1u8..4).prop_map(Op::Live),
            4 => (1u8..4).prop_map(Op::AckOldest),
            1 => Just(Op::Disconnect),
            2 => Just(Op::Connect),
            3 => Just(Op::Replay),
        ]
    }

    proptest! {
        /// Whatever the broker does, every record is delivered at least once in the end, and
        /// the spool holds nothing once everything is acknowledged.
        #[test]
        fn every_record_is_delivered_at_least_once(ops in prop::collection::vec(op(), 1..80), window in 1usize..6) {
            let (mut sink, mut spool, mut d) = (FakeSink { window, ..FakeSink::default() }, FakeSpool::default(), Dispatcher::new(50));
            let mut next_seq = 0;
            let ack = |d: &mut Dispatcher, sink: &mut FakeSink, spool: &mut FakeSpool, n: usize| {
                for _ in 0..n.min(sink.sent.len()) {
                    let (id, payload) = sink.sent.remove(0);
                    sink.delivered.push(payload);
                    d.on_event(SinkEvent::Acked(id), spool);
                }
            };
            for op in ops {
                match op {
                    Op::Live(n) => {
                        let batches = (0..n).map(|_| { next_seq += 3; batch(next_seq - 3, 3) }).collect();
                        d.on_live(batches, &mut sink, &mut spool, &SeqRender);
                    }
                    Op::AckOldest(n) => ack(&mut d, &mut sink, &mut spool, usize::from(n)),
                    Op::Disconnect => {
                        sink.connected = false;
                        let unacked = sink.sent.drain(..).map(|(id, _)| id).collect();
                        d.on_event(SinkEvent::Disconnected { unacked }, &mut spool);
                    }
                    Op::Connect => {
                        sink.connected = true;
                        d.on_event(SinkEvent::Connected, &mut spool);
                    }
                    Op::Replay => d.pump_replay(&mut sink, &mut spool),
                }
                prop_assert!(sink.sent.len() <= window);
            }
            // The link recovers for good.
            sink.connected = true;
            for _ in 0..10_000 {
                d.pump_replay(&mut sink, &mut spool);
                if sink.sent.is_empty() && spool.rows.is_empty() { break; }
                ack(&mut d, &mut sink, &mut spool, usize::MAX);
            }
            prop_assert!(spool.rows.is_empty());
            prop_assert_eq!(d.in_flight(), 0);
            let seen: BTreeSet<u64> = sink.delivered.iter()
                .flat_map(|p| p.chunks(8).map(|c| u64::from_le_bytes(c.try_into().unwrap())))
                .collect();
            prop_assert_eq!(seen, (0..next_seq).collect::<BTreeSet<u64>>());
        }
    }

    #[test]
    fn replay_leaves_room_for_live_batches() {
        let (mut sink, mut spool, mut d) = (
            FakeSink {
                window: 4,
                ..FakeSink::default()
            },
            FakeSpool::default(),
            Dispatcher::new(50),
        );
        d.on_live(
            (0..10).map(|i| batch(i * 2, 2)).collect(),
            &mut sink,
            &mut spool,
            &SeqRender,
        );
        assert_eq!(
            d.stats().spilled_batches,
            10,
            "disconnected: everything spills"
        );
        sink.connected = true;
        d.pump_replay(&mut sink, &mut spool);
        assert_eq!(sink.sent.len(), 2, "replay uses half of the window");
        d.on_live(vec![batch(100, 1)], &mut sink, &mut spool, &SeqRender);
        assert_eq!(
            d.stats().sent_live,
            1,
            "live goes straight out during replay"
        );
        // Replay rows go out oldest first.
        assert_eq!(sink.sent[0].1[..8], 0u64.to_le_bytes());
        assert_eq!(sink.sent[1].1[..8], 2u64.to_le_bytes());
    }
}
