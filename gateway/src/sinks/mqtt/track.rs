//! Ack matching: which batch a rumqttc packet id stands for. Pure state, no I/O.
//!
//! rumqttc's `publish` returns no packet id. It emits `Outgoing::Publish(pkid)` for each
//! publish request in the order the requests were made (QoS 0: pkid 0), and later
//! `Incoming::PubAck(pkid)`. So every request pushes its batch id (or `None` for a status
//! message) on a FIFO; the `Outgoing` event pops it and files it under its pkid; the `PubAck`
//! takes it out again. `Outgoing::AwaitAck` (a packet id collision inside rumqttc) pops nothing:
//! the same request comes out later as `Outgoing::Publish`.

use std::collections::{HashMap, VecDeque};

use crate::forward::dispatch::BatchId;

/// What an `Outgoing::Publish` meant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Written {
    /// A QoS 0 batch was written: that is all the acknowledgement it gets.
    AckedAtMostOnce(BatchId),
    /// A QoS 1 publish (batch or status) now waits for its PUBACK.
    AwaitingAck,
    /// A QoS 0 status message was written.
    Status,
    /// No request was waiting for this event (a replay by rumqttc after a reconnect, which
    /// the sink prevents by clearing rumqttc's pending queue; counted and ignored).
    Unexpected,
}

/// What an `Incoming::PubAck` meant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Acked {
    /// This batch is acknowledged.
    Batch(BatchId),
    /// A status message was acknowledged.
    Status,
    /// Nothing was waiting under this packet id (an ack from before a reconnect).
    Unknown,
}

/// The ack-matching state of one sink.
#[derive(Debug, Default)]
pub(super) struct AckTracker {
    /// Requests made, whose `Outgoing::Publish` has not come yet, in request order.
    requested: VecDeque<Option<BatchId>>,
    /// Written QoS 1 publishes waiting for their PUBACK, by packet id.
    awaiting: HashMap<u16, Option<BatchId>>,
    /// Batches whose packet id was reused while they still waited (rumqttc should make that
    /// impossible); kept so that they are handed back at the next disconnect, never lost.
    orphans: Vec<BatchId>,
    /// Batches among all of the above.
    batches: usize,
}

impl AckTracker {
    /// A publish request for `batch` (`None`: a status message) went into rumqttc's channel.
    pub(super) fn requested(&mut self, batch: Option<BatchId>) {
        self.batches += usize::from(batch.is_some());
        self.requested.push_back(batch);
    }

    /// rumqttc wrote the next requested publish under `pkid`.
    pub(super) fn written(&mut self, pkid: u16) -> Written {
        let Some(batch) = self.requested.pop_front() else {
            return Written::Unexpected;
        };
        if pkid == 0 {
            return match batch {
                Some(id) => {
                    self.batches -= 1;
                    Written::AckedAtMostOnce(id)
                }
                None => Written::Status,
            };
        }
        if let Some(Some(old)) = self.awaiting.insert(pkid, batch) {
            self.orphans.push(old);
        }
        Written::AwaitingAck
    }

    /// The broker acknowledged `pkid`.
    pub(super) fn puback(&mut self, pkid: u16) -> Acked {
        match self.awaiting.remove(&pkid) {
            Some(Some(id)) => {
                self.batches -= 1;
                Acked::Batch(id)
            }
            Some(None) => Acked::Status,
            None => Acked::Unknown,
        }
    }

    /// Batches requested and not acknowledged.
    pub(super) fn in_flight(&self) -> usize {
        self.batches
    }

    /// Whether a status message is still on its way (requested, or written and not acked).
    pub(super) fn status_pending(&self) -> bool {
        self.requested.iter().any(Option::is_none) || self.awaiting.values().any(Option::is_none)
    }

    /// Forgets everything, returning every batch not acknowledged, oldest first (batch ids
    /// increase in send order).
    pub(super) fn take_unacked(&mut self) -> Vec<BatchId> {
        let mut out: Vec<BatchId> = self
            .requested
            .drain(..)
            .chain(self.awaiting.drain().map(|(_, b)| b))
            .flatten()
            .chain(self.orphans.drain(..))
            .collect();
        out.sort_unstable();
        self.batches = 0;
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acks_find_their_batches_in_request_order() {
        let mut t = AckTracker::default();
        t.requested(None);
        t.requested(Some(BatchId(1)));
        t.requested(Some(BatchId(2)));
        assert_eq!(t.in_flight(), 2);
        assert_eq!(t.written(1), Written::AwaitingAck);
        assert_eq!(t.written(2), Written::AwaitingAck);
        assert_eq!(t.written(3), Written::AwaitingAck);
        assert_eq!(t.puback(3), Acked::Batch(BatchId(2)));
        assert_eq!(t.puback(1), Acked::Status);
        assert_eq!(t.puback(3), Acked::Unknown, "an ack counts once");
        assert_eq!(t.in_flight(), 1);
        assert_eq!(t.take_unacked(), [BatchId(1)]);
        assert_eq!(t.in_flight(), 0);
        assert_eq!(t.puback(2), Acked::Unknown, "nothing survives a disconnect");
    }

    #[test]
    fn qos0_is_acked_when_written() {
        let mut t = AckTracker::default();
        t.requested(Some(BatchId(7)));
        assert_eq!(t.written(0), Written::AckedAtMostOnce(BatchId(7)));
        assert_eq!(t.in_flight(), 0);
    }

    #[test]
    fn unexpected_writes_and_reused_ids_lose_nothing() {
        let mut t = AckTracker::default();
        assert_eq!(t.written(5), Written::Unexpected);
        t.requested(Some(BatchId(1)));
        t.requested(Some(BatchId(2)));
        t.written(4);
        t.written(4);
        assert_eq!(t.in_flight(), 2);
        assert_eq!(t.puback(4), Acked::Batch(BatchId(2)));
        assert_eq!(t.take_unacked(), [BatchId(1)]);
    }

    #[test]
    fn unacked_include_requests_not_yet_written() {
        let mut t = AckTracker::default();
        for i in 1..=4 {
            t.requested(Some(BatchId(i)));
        }
        t.requested(None);
        t.written(1);
        t.written(2);
        assert!(t.status_pending());
        assert_eq!(t.puback(1), Acked::Batch(BatchId(1)));
        assert_eq!(
            t.take_unacked(),
            [BatchId(2), BatchId(3), BatchId(4)],
            "written and still queued alike"
        );
        assert!(!t.status_pending());
    }
}
