//! The index and park protocol, separated from memory and syscalls so that loom explores it.
//!
//! # Operation
//! Records move by two ever-increasing 64-bit indices: the producer writes slots at `head` and
//! then publishes a new `head`; the consumer reads `[tail, head)` in place and then publishes a
//! new `tail`. A slot is never written while it is in `[tail, head)`, and never read outside it.
//!
//! Sleeping uses one flag per direction and a read-modify-write handshake on it:
//!
//! ```text
//! consumer (wants records)                 producer (publishes)
//! parked.swap(1)            (A)            head.store(h')            (C)
//! if head != tail: unpark, go read         if parked.swap(0) == 1:   (D)
//! else sleep on the eventfd                    write the eventfd
//! ```
//!
//! Both swaps are RMWs on the same word, so one of them comes first in its modification order.
//! If (D) comes after (A), it reads 1 and sends the wake-up. If (D) comes before (A), then (A)
//! reads from (D), acquires it, and so sees the `head` stored at (C): the consumer does not sleep.
//! No wake-up is lost in either order, and the argument needs only acquire/release (no SeqCst),
//! which is also exactly what loom models. Every write to a parked flag is an RMW, including the
//! waiter clearing its own flag: a plain store there would break the release sequence that
//! (A) relies on (see `consumer_unpark`). The producer's swap stays on its own cache line (the
//! flag lives beside `head`), so while the consumer is busy a publish costs no syscall and no
//! extra cache miss. The same handshake, mirrored, wakes a producer that waits for space.

use crate::layout::ControlBlock;
use crate::sync::Ordering::{AcqRel, Acquire, Release};

impl ControlBlock {
    // ---- producer side ---------------------------------------------------------------------

    /// The consumer's `tail`, for the producer to compute free slots.
    #[inline]
    pub(crate) fn tail_for_producer(&self) -> u64 {
        // Acquire: pairs with the Release store in `release`, so the consumer's reads of the
        // released slots happen before the producer overwrites them.
        self.consumer.tail.load(Acquire)
    }

    /// Publishes every slot below `new_head`. Returns `true` if the consumer is parked and must
    /// be woken (the flag has already been cleared; the caller writes the eventfd).
    #[inline]
    pub(crate) fn publish(&self, new_head: u64) -> bool {
        // Release: pairs with the Acquire loads in `head_for_consumer` and
        // `consumer_prepare_park`; the slot writes before it become visible with the index.
        self.producer.head.store(new_head, Release);
        // AcqRel RMW: the handshake with `consumer_prepare_park` (module docs, step D). Its
        // Release half carries the head store above to a consumer whose swap reads from it.
        self.producer.consumer_parked.swap(0, AcqRel) != 0
    }

    /// Announces that the producer is about to sleep until space frees up. Returns `true` if it
    /// may sleep: fewer than `needed` slots are free at `head`. Returns `false` (and unparks) if
    /// the consumer released enough meanwhile.
    pub(crate) fn producer_prepare_park(&self, head: u64, capacity: u64, needed: u64) -> bool {
        // AcqRel RMW: mirror of step A, against the consumer's swap in `release`.
        self.consumer.producer_parked.swap(1, AcqRel);
        // Acquire: see `tail_for_producer`.
        let tail = self.consumer.tail.load(Acquire);
        if capacity - head.wrapping_sub(tail).min(capacity) >= needed {
            self.producer_unpark();
            return false;
        }
        true
    }

    /// Clears the producer's parked flag after it slept or decided not to.
    pub(crate) fn producer_unpark(&self) {
        // AcqRel RMW, not a store: see `consumer_unpark`.
        self.consumer.producer_parked.swap(0, AcqRel);
    }

    // ---- consumer side ---------------------------------------------------------------------

    /// The producer's `head`, for the consumer to find published slots.
    #[inline]
    pub(crate) fn head_for_consumer(&self) -> u64 {
        // Acquire: pairs with the Release store in `publish`; slot contents below the loaded
        // head are visible after it.
        self.producer.head.load(Acquire)
    }

    /// Releases every slot below `new_tail` to the producer. Returns `true` if the producer is
    /// parked waiting for space and must be woken.
    #[inline]
    pub(crate) fn release(&self, new_tail: u64) -> bool {
        // Release: pairs with the Acquire in `tail_for_producer`; our reads of the released
        // slots happen before the producer reuses them.
        self.consumer.tail.store(new_tail, Release);
        // AcqRel RMW: mirror of step D, against `producer_prepare_park`.
        self.consumer.producer_parked.swap(0, AcqRel) != 0
    }

    /// Announces that the consumer is about to sleep until records arrive. Returns `true` if it
    /// may sleep (nothing is published beyond `tail`); `false` (and unparks) otherwise.
    pub(crate) fn consumer_prepare_park(&self, tail: u64) -> bool {
        // AcqRel RMW: step A of the handshake with `publish`.
        self.producer.consumer_parked.swap(1, AcqRel);
        // Acquire: see `head_for_consumer`.
        if self.producer.head.load(Acquire) != tail {
            self.consumer_unpark();
            return false;
        }
        true
    }

    /// Clears the consumer's parked flag after it slept or decided not to.
    pub(crate) fn consumer_unpark(&self) {
        // AcqRel RMW, not a plain store. A plain store would end the release sequence of the
        // producer's swap in `publish`: the consumer's next swap in `consumer_prepare_park` could
        // read this store instead of the producer's, fail to synchronise with the publish, see a
        // stale `head`, and sleep through it while the producer saw the flag clear (lost wake-up,
        // found by `loom_model`). As an RMW it extends that release sequence instead.
        self.producer.consumer_parked.swap(0, AcqRel);
    }
}
