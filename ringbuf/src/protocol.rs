//! The index and park protocol, separated from memory and syscalls so that loom explores it.
//!
//! # Operation
//! Records move by two ever-increasing 64-bit indices: the producer writes slots at `head` and
//! then publishes a new `head`; the consumer reads `[tail, head)` in place and then publishes a
//! new `tail`. A slot is never written while it is in `[tail, head)`, and never read outside it.
//!
//! ## Waking a consumer: an asymmetric fence
//! The consumer's park word (`ConsumerState::consumer_parked`) holds three bits: [`PARKED`]
//! (the consumer sleeps or is about to), [`NO_MEMBARRIER`] (some consumer of this ring could not
//! call `membarrier`; sticky) and [`FENCED`] (the current producer publishes with a real fence).
//! Every write to the word is an RMW, so each one continues the release sequence of the ones
//! before it.
//!
//! ```text
//! consumer (wants records)                  producer (publishes)
//! w = word.fetch_or(PARKED)        (A)      head.store(h')                        (C)
//! membarrier(GLOBAL_EXPEDITED)     (B)      compiler fence (Light) | fence (Full) (F)
//!   or fence(SeqCst) if it fails            w = word.load()                       (D)
//! if head != tail: unpark, go read          if w & PARKED: word.fetch_and(!PARKED),
//! else sleep on the eventfd                     and if it was set, write the eventfd
//! ```
//!
//! The fast path (`Light`): the publish costs a plain store and a plain load, no locked
//! instruction. (B) is a full barrier on the producer's CPU at some point of its instruction
//! stream, so it splits the producer's execution: either (C) is before that point and the
//! consumer's load of `head` after (B) sees h', or (D) is after it and reads (A)'s `PARKED`.
//! The compiler fence only keeps the compiler from moving (D) above (C). loom models (B) and
//! the compiler fence as two `fence(SeqCst)`, which is the same argument: the two fences are
//! ordered in the SeqCst order, and whichever comes second sees the other side's write.
//!
//! ## Fallbacks, in every combination
//! - The producer's registration failed (it would not receive the barrier): it publishes with
//!   `Full`, a real `fence(SeqCst)` at (F). A consumer's successful membarrier is also a full
//!   fence of its own thread, so the pair is the plain Dekker pattern of two SeqCst fences.
//! - The consumer cannot call membarrier (ENOSYS, EPERM from seccomp, EINVAL): it finds out at
//!   attach (a probe call) and sets `NO_MEMBARRIER`; at each park it uses `fence(SeqCst)` at
//!   (B) and sets `NO_MEMBARRIER` again in (A). A `Light` producer that reads `NO_MEMBARRIER` at
//!   (D) switches to `Full` for good and then sets `FENCED` (an RMW, Release: every publish it
//!   made before is carried with it). A producer that is `Full` from its attach sets `FENCED`
//!   in its attach RMW, and a `Light` one clears it there (so a `FENCED` left by a dead
//!   producer is never taken for the new one's). The consumer sleeps without a bound only if
//!   its (A) read `FENCED`: then (A) synchronises with the producer's `FENCED` write, so every
//!   publish before it is visible to the consumer's `head` load, and every publish after it
//!   uses a real fence, which pairs with the consumer's. A later producer's attach RMW comes
//!   after (A) in the word's modification order and so reads `NO_MEMBARRIER`: it starts `Full`.
//!   Without `FENCED` the consumer sleeps at most [`UNACKED_PARK_LIMIT`] and looks again: a
//!   `Light` publish that raced with (A) may have missed `PARKED`, and then only the timeout
//!   finds its records. The producer reads `NO_MEMBARRIER` on its next publish at the latest,
//!   so bounded parks end as soon as it publishes again.
//! - The consumer loses the ability later (its membarrier fails at a park although the probe
//!   succeeded, e.g. a seccomp filter installed since): a producer may have read "fast path
//!   allowed" and be publishing `Light` right now. That park therefore fences, sets
//!   `NO_MEMBARRIER` and sleeps bounded whatever `FENCED` says; later parks follow the rule
//!   above. The order in which the flags become visible does not matter for safety: until the
//!   consumer has *read* `FENCED` in its own (A), it never sleeps without a bound.
//! - Heap rings (one process; miri) never register and publish `Full`; their consumer never
//!   parks on the word.
//!
//! The unpark clears `PARKED` with an RMW, not a plain store: a plain store would end the
//! release sequence of the producer's RMWs on the word (the loom model found the lost wake-up
//! this causes in the first design).
//!
//! ## Waking a producer that waits for space
//! The mirror image with a read-modify-write handshake on `ConsumerLine::producer_parked`:
//!
//! ```text
//! producer (wants space)                    consumer (releases)
//! parked.swap(1)            (A')            tail.store(t')            (C')
//! if space: unpark, go push                 if parked.swap(0) == 1:   (D')
//! else sleep on the eventfd                     write the eventfd
//! ```
//!
//! Both swaps are RMWs on the same word, so one comes first in its modification order. If (D')
//! comes after (A'), it reads 1 and sends the wake-up. If (D') comes before (A'), then (A') reads
//! from (D'), acquires it, and so sees the `tail` stored at (C'). This costs one locked RMW per
//! release (per batch read, not per record).

use crate::layout::ControlBlock;
use crate::sync::Ordering::{AcqRel, Acquire, Relaxed, Release, SeqCst};
use crate::sync::fence;

/// Park word bit: the consumer sleeps, or is about to, waiting for records.
pub(crate) const PARKED: u32 = 1;
/// Park word bit: a consumer of this ring could not call membarrier. Set by consumers, never
/// cleared.
pub(crate) const NO_MEMBARRIER: u32 = 2;
/// Park word bit: the current producer publishes with a real fence. Set by that producer
/// (at attach, or when it reads [`NO_MEMBARRIER`]); cleared by a `Light` producer's attach.
pub(crate) const FENCED: u32 = 4;

/// Longest sleep of a consumer parked without the [`FENCED`] acknowledgement it needs when it
/// cannot call membarrier.
pub(crate) const UNACKED_PARK_LIMIT: std::time::Duration = std::time::Duration::from_millis(1);

/// How the producer orders its `head` store before its load of the park word.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PublishFence {
    /// A compiler fence only; the consumer's membarrier supplies the CPU barrier.
    Light,
    /// A real `fence(SeqCst)`.
    Full,
}

/// What a consumer that announced its park may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Park {
    /// Records arrived meanwhile: do not sleep (already unparked).
    Ready,
    /// Sleep until woken: no publish can miss the flag.
    Sleep,
    /// Sleep at most [`UNACKED_PARK_LIMIT`], then look again: a `Light` publish may miss it.
    SleepBounded,
}

impl ControlBlock {
    // ---- producer side ---------------------------------------------------------------------

    /// The consumer's `tail`, for the producer to compute free slots.
    #[inline]
    pub(crate) fn tail_for_producer(&self) -> u64 {
        // Acquire: pairs with the Release store in `release`, so the consumer's reads of the
        // released slots happen before the producer overwrites them.
        self.consumer.tail.load(Acquire)
    }

    /// A producer's claim on the park word: returns the fence it must publish with. `want` is
    /// `Light` only if its process is registered for membarrier.
    pub(crate) fn producer_attach_fence(&self, want: PublishFence) -> PublishFence {
        let word = &self.consumer_state.consumer_parked;
        // Acquire (load and CAS): pairs with the consumers' AcqRel RMWs that set NO_MEMBARRIER.
        let mut w = word.load(Acquire);
        loop {
            let fence = if w & NO_MEMBARRIER != 0 {
                PublishFence::Full
            } else {
                want
            };
            let new = match fence {
                PublishFence::Full => w | FENCED,
                PublishFence::Light => w & !FENCED,
            };
            // AcqRel RMW (module docs, "Fallbacks"): Release makes this producer's FENCED (and
            // everything before it) visible to a consumer's (A) that reads it; as an RMW it keeps
            // the word's release sequence intact.
            match word.compare_exchange_weak(w, new, AcqRel, Acquire) {
                Ok(_) => return fence,
                Err(now) => w = now,
            }
        }
    }

    /// Publishes every slot below `new_head`. Returns `true` if the consumer is parked and must
    /// be woken (the flag has already been cleared; the caller writes the eventfd). May switch
    /// `fence` from `Light` to `Full` (for good) when the consumer cannot call membarrier.
    #[inline]
    pub(crate) fn publish(&self, new_head: u64, fence: &mut PublishFence) -> bool {
        // Release: pairs with the Acquire loads in `head_for_consumer` and
        // `consumer_prepare_park`; the slot writes before it become visible with the index.
        self.producer.head.store(new_head, Release);
        self.producer_fence(*fence);
        let word = &self.consumer_state.consumer_parked;
        // Relaxed (step D): ordered after the head store by the fence just above and the
        // consumer's membarrier (or its fence(SeqCst)); it needs no synchronisation of its own,
        // the RMW below carries the Release to the consumer.
        let w = word.load(Relaxed);
        if w & NO_MEMBARRIER != 0 && *fence == PublishFence::Light {
            *fence = PublishFence::Full;
            // AcqRel RMW: the acknowledgement of "Fallbacks". Release carries this and every
            // earlier publish to the consumer's (A) that reads FENCED; from the next publish on
            // this producer uses a real fence.
            word.fetch_or(FENCED, AcqRel);
        }
        if w & PARKED == 0 {
            return false;
        }
        // AcqRel RMW: clears PARKED for the one wake-up; Release carries the head store to the
        // consumer's next (A). The wake-up is ours only if the flag was still set.
        word.fetch_and(!PARKED, AcqRel) & PARKED != 0
    }

    /// Step F.
    #[inline(always)]
    fn producer_fence(&self, fence_kind: PublishFence) {
        match fence_kind {
            // SeqCst fence: pairs with the consumer's membarrier or fence(SeqCst) at (B).
            PublishFence::Full => fence(SeqCst),
            PublishFence::Light => {
                // Compiler-only SeqCst fence: the CPU barrier comes from the consumer's
                // membarrier at (B), which interrupts this thread.
                #[cfg(not(loom))]
                crate::sync::compiler_fence(SeqCst);
                // loom's stand-in for membarrier: a SeqCst fence here when the model's
                // membarrier works, nothing when it is denied.
                #[cfg(loom)]
                if self.model_membarrier {
                    fence(SeqCst);
                }
            }
        }
    }

    /// Announces that the producer is about to sleep until space frees up. Returns `true` if it
    /// may sleep: fewer than `needed` slots are free at `head`. Returns `false` (and unparks) if
    /// the consumer released enough meanwhile.
    pub(crate) fn producer_prepare_park(&self, head: u64, capacity: u64, needed: u64) -> bool {
        // AcqRel RMW: step A', against the consumer's swap in `release`.
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
        // AcqRel RMW: step D', against `producer_prepare_park`.
        self.consumer.producer_parked.swap(0, AcqRel) != 0
    }

    /// A consumer's claim: records on the park word whether it can call membarrier.
    pub(crate) fn consumer_attach_fence(&self, membarrier: bool) {
        if !membarrier {
            // AcqRel RMW: Release makes NO_MEMBARRIER visible to a producer's attach CAS or
            // publish load that reads it; an RMW keeps the release sequence intact.
            self.consumer_state
                .consumer_parked
                .fetch_or(NO_MEMBARRIER, AcqRel);
        }
    }

    /// Announces that the consumer is about to sleep until records arrive, issuing the heavy
    /// barrier (membarrier if `*membarrier`, which is cleared if the call fails). Says whether
    /// and how long it may sleep; `Ready` (already unparked) if records are there.
    pub(crate) fn consumer_prepare_park(&self, tail: u64, membarrier: &mut bool) -> Park {
        let word = &self.consumer_state.consumer_parked;
        let set = if *membarrier {
            PARKED
        } else {
            PARKED | NO_MEMBARRIER
        };
        // AcqRel RMW (step A): Acquire synchronises with a producer's FENCED write or PARKED
        // clear that it reads from; Release (and being an RMW) keeps their release sequences.
        let w = word.fetch_or(set, AcqRel);
        let park = if self.consumer_barrier(*membarrier) {
            Park::Sleep
        } else if *membarrier {
            // Lost the ability since the probe: a Light publish may be under way.
            *membarrier = false;
            // AcqRel RMW: as in `consumer_attach_fence`.
            word.fetch_or(NO_MEMBARRIER, AcqRel);
            Park::SleepBounded
        } else if w & FENCED != 0 {
            Park::Sleep
        } else {
            Park::SleepBounded
        };
        // Acquire: see `head_for_consumer`. Ordered after (A) by the barrier (B).
        if self.producer.head.load(Acquire) != tail {
            self.consumer_unpark();
            return Park::Ready;
        }
        park
    }

    /// Step B: membarrier if `try_membarrier`; a real `fence(SeqCst)` if it is not tried or
    /// fails. Returns whether membarrier succeeded.
    fn consumer_barrier(&self, try_membarrier: bool) -> bool {
        #[cfg(not(loom))]
        {
            if try_membarrier && crate::membarrier::global_expedited() {
                return true;
            }
            // SeqCst fence: pairs with a Full producer's fence at (F).
            fence(SeqCst);
            false
        }
        #[cfg(loom)]
        {
            // SeqCst fence: membarrier in the model (see `producer_fence`), or the real fence.
            fence(SeqCst);
            try_membarrier && self.model_membarrier
        }
    }

    /// Clears the consumer's parked flag after it slept or decided not to.
    pub(crate) fn consumer_unpark(&self) {
        // AcqRel RMW, not a plain store. A plain store would end the release sequence of the
        // producer's RMWs on the word: the consumer's next (A) could read this store instead of
        // the producer's, fail to synchronise with it (losing a FENCED acknowledgement's
        // guarantee), and sleep through a publish (lost wake-up, found by `loom_model` in the
        // first design). As an RMW it extends that release sequence instead.
        self.consumer_state
            .consumer_parked
            .fetch_and(!PARKED, AcqRel);
    }
}
