//! The producer side: push records into slots and publish them.
//!
//! A producer is the only writer of its ring's slots and of `head`. It caches `head`,
//! `next_seq` and the last `tail` it saw, so a push that finds room costs one slot write, one
//! release store of `head`, and a plain load of the consumer's park word, which sits on a line
//! nobody writes while the consumer is busy (`layout.rs`); a compiler fence between them, a real
//! fence where membarrier is unavailable (`protocol.rs`); an RMW and a syscall only when the
//! consumer sleeps. It also asks the CPU for the lines it is about to write (`prefetch.rs`):
//! `try_push` one line per record, 16 slots ahead, with no loop (the loop that batch pushes use
//! cost batch 1 about a fifth of its rate in the runs where the pair runs fastest).
//!
//! The sequence lives in shared memory without a store per push: the last published record
//! carries its `seq`, and `ProducerState::seq_floor` carries the skips of `count_dropped`. A new
//! producer continues from the larger of the two.

use std::ptr::NonNull;
use std::time::{Duration, Instant};

use crate::Sequenced;
use crate::error::{Full, RingClaimError, RingCorruptError};
use crate::layout::ControlBlock;
use crate::protocol::PublishFence;
use crate::shm::{SharedRing, SideClaim};
use crate::sync::Ordering::{Acquire, Relaxed, Release};

/// The writing side of a ring. At most one exists per ring across all processes.
pub struct Producer<T: Sequenced> {
    ring: SharedRing<T>,
    slots: NonNull<T>,
    capacity: u64,
    mask: u64,
    epoch: u64,
    head: u64,
    tail_seen: u64,
    next_seq: u64,
    /// The fence `publish` uses: `Light` while the asymmetric fence is in force.
    fence: PublishFence,
    /// Whether the CPU has a write prefetch (see `prefetch.rs`).
    prefetch: bool,
    claim: SideClaim,
}

// SAFETY: `slots` points into the ring segment owned by `ring` (an `Arc`), not into thread-local
// state; the producer claim makes this the only writer wherever it moves.
unsafe impl<T: Sequenced + Send> Send for Producer<T> {}

impl<T: Sequenced> std::fmt::Debug for Producer<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Producer")
            .field("capacity", &self.capacity)
            .field("epoch", &self.epoch)
            .field("head", &self.head)
            .field("next_seq", &self.next_seq)
            .field("fence", &self.fence)
            .finish()
    }
}

impl<T: Sequenced> Producer<T> {
    /// Takes over the producer side after the claim succeeded: recovers `head` and the sequence
    /// left by any previous producer.
    /// `registered`: this process registered for membarrier (see [`crate::membarrier`]).
    pub(crate) fn attach(
        ring: SharedRing<T>,
        claim: SideClaim,
        registered: bool,
    ) -> Result<Self, RingClaimError> {
        let g = ring.inner.geometry;
        let slots = ring.inner.slots::<T>();
        let c = ring.inner.control();
        // Acquire (all three): the claim CAS already synchronised with a clean release; after a
        // crash these read whatever the dead producer last stored, which is all we rely on.
        let head = c.producer.head.load(Acquire);
        let tail = c.consumer.tail.load(Acquire);
        if head < tail || head - tail > g.capacity {
            claim.release(c);
            return Err(RingCorruptError {
                head,
                tail,
                capacity: g.capacity,
            }
            .into());
        }
        let mut next_seq = c.producer_state.seq_floor.load(Acquire);
        if head > 0 {
            // The last published record is still in its slot: only the producer writes slots,
            // and the next one it writes is `head`, a different slot (capacity ≥ 2). Its seq is
            // above the floor unless drops were counted after it.
            // SAFETY: `(head - 1) & mask < capacity` is in bounds; the slot was fully written
            // before `head` was published, and no producer writes it now (we hold the claim).
            let last = unsafe { slots.as_ptr().add(((head - 1) & g.mask) as usize).read() };
            next_seq = next_seq.max(last.seq().wrapping_add(1));
        }
        // Release: pairs with the Acquire in a later producer's `attach`.
        c.producer_state.seq_floor.store(next_seq, Release);
        let attaches = c.producer_state.producer_attaches.load(Relaxed);
        // Relaxed: a counter only this claim holder writes.
        c.producer_state
            .producer_attaches
            .store(attaches + 1, Relaxed);
        // Light only if a consumer's membarrier reaches this process: a shared ring (heap rings and
        // miri never register) and a successful registration, made before the claim.
        // `producer_attach_fence` then falls back to Full if a consumer of this ring cannot call
        // membarrier.
        let want = if registered {
            PublishFence::Light
        } else {
            PublishFence::Full
        };
        let fence = c.producer_attach_fence(want);
        Ok(Self {
            slots,
            fence,
            prefetch: crate::prefetch::available(),
            capacity: g.capacity,
            mask: g.mask,
            epoch: g.epoch,
            head,
            tail_seen: tail,
            next_seq,
            claim,
            ring,
        })
    }

    fn control(&self) -> &ControlBlock {
        self.ring.inner.control()
    }

    /// Slots free as far as this producer knows; re-reads `tail` if fewer than `needed`.
    /// A tail beyond head (a broken consumer) reads as a full ring, never as room.
    #[inline]
    fn free(&mut self, needed: u64) -> u64 {
        let cached = self
            .capacity
            .saturating_sub(self.head.wrapping_sub(self.tail_seen));
        if cached >= needed {
            return cached;
        }
        self.tail_seen = self.control().tail_for_producer();
        self.capacity
            .saturating_sub(self.head.wrapping_sub(self.tail_seen))
    }

    /// # Safety
    /// `index` must be in `[head, tail_seen + capacity)`: a slot the consumer does not read.
    #[inline]
    unsafe fn write_slot(&mut self, index: u64, value: T) {
        // SAFETY: `index & mask < capacity` keeps the pointer inside the data area; by the
        // caller's contract the consumer is not reading this slot, and we are the only writer.
        unsafe {
            self.slots
                .as_ptr()
                .add((index & self.mask) as usize)
                .write(value)
        };
    }

    /// Asks for ownership of the lines of slots `[from, from + n)` ahead of writing them (see
    /// `prefetch.rs`), clipped to [`PREFETCH_MAX`] slots and to those this producer owns as far
    /// as it knows.
    #[inline]
    fn prefetch_slots(&self, from: u64, n: u64) {
        if !self.prefetch {
            return;
        }
        let owned_end = self.tail_seen + self.capacity;
        let n = n.min(PREFETCH_MAX).min(owned_end.saturating_sub(from));
        if n == 0 {
            return;
        }
        let (start, first) = self.run_at(from, n as usize);
        let base = self.slots.as_ptr();
        // `wrapping_add`: only addresses are formed, nothing is dereferenced; both runs stay in
        // the data area (`start + first ≤ capacity`, `n - first ≤ start`).
        prefetch_run(base.wrapping_add(start), first);
        prefetch_run(base, n as usize - first);
    }

    /// [`Producer::prefetch_slots`] for one slot, with nothing to clip or split: what
    /// `try_push` pays on every record.
    #[inline(always)]
    fn prefetch_slot(&self, index: u64) {
        if !self.prefetch || index >= self.tail_seen + self.capacity {
            return;
        }
        // `wrapping_add`: an address only, inside the data area (`index & mask < capacity`).
        let p = self
            .slots
            .as_ptr()
            .wrapping_add((index & self.mask) as usize);
        if size_of::<T>() <= CACHE_LINE {
            // Consecutive slots start less than a line apart, so every line holds the start of
            // some slot: prefetching each slot's first line covers them all.
            crate::prefetch::line_for_write(p);
        } else {
            prefetch_run(p, 1);
        }
    }

    /// Publishes `head` and wakes a parked consumer.
    #[inline]
    fn commit(&mut self) {
        let inner = &self.ring.inner;
        let c = inner.control();
        if c.publish(self.head, &mut self.fence) {
            if let Some(n) = &inner.data_ready {
                n.notify();
            }
            let sent = c.producer_state.wakeups_sent.load(Relaxed);
            // Relaxed: a counter only the producer writes.
            c.producer_state.wakeups_sent.store(sent + 1, Relaxed);
        }
        // No store of `next_seq`: the published record carries it (module docs). One store
        // fewer per push measured 10-20 % more records/s at batch 1 (ringbuf/README.md).
    }

    /// Pushes one record, stamping it with the ring's epoch and the next sequence number.
    /// Returns the sequence number, or hands the record back if the ring is full.
    #[inline]
    pub fn try_push(&mut self, mut value: T) -> Result<u64, Full<T>> {
        if self.free(1) == 0 {
            return Err(Full(value));
        }
        let seq = self.next_seq;
        value.stamp(self.epoch, seq);
        // SAFETY: `free(1) ≥ 1`, so slot `head` is below `tail_seen + capacity`.
        unsafe { self.write_slot(self.head, value) };
        self.prefetch_slot(self.head + PREFETCH_AHEAD);
        self.head += 1;
        self.next_seq = seq.wrapping_add(1);
        self.commit();
        Ok(seq)
    }

    /// Pushes as many records of `values` as fit, in order, publishing them together. Returns
    /// how many were pushed; the rest did not fit.
    pub fn try_push_slice(&mut self, values: &[T]) -> usize {
        let n = (self.free(values.len() as u64) as usize).min(values.len());
        if n == 0 {
            return 0;
        }
        self.prefetch_slots(self.head, n as u64);
        let (start, first) = self.run_at(self.head, n);
        let (epoch, seq) = (self.epoch, self.next_seq);
        let base = self.slots.as_ptr();
        // SAFETY: `run_at` splits the `n ≤ free` slots from `head` into `[start, start + first)`
        // and `[0, n - first)`, both inside the data area and outside `[tail, head)`, so the
        // consumer reads none of them and we are the only writer; `values` is caller memory,
        // which cannot overlap the mapping's slots we own. `T: Pod`, so a bytewise copy is a
        // valid `T`.
        unsafe {
            std::ptr::copy_nonoverlapping(values.as_ptr(), base.add(start), first);
            std::ptr::copy_nonoverlapping(values.as_ptr().add(first), base, n - first);
            stamp_run(base.add(start), first, epoch, seq);
            stamp_run(base, n - first, epoch, seq.wrapping_add(first as u64));
        }
        self.head += n as u64;
        self.next_seq = seq.wrapping_add(n as u64);
        self.commit();
        n
    }

    /// Splits the `n` slots from index `from` at the end of the data area: the first one's slot
    /// and how many lie before the wrap (the rest start at slot 0).
    #[inline]
    fn run_at(&self, from: u64, n: usize) -> (usize, usize) {
        let start = (from & self.mask) as usize;
        (start, n.min(self.capacity as usize - start))
    }

    /// Pushes records taken from `values`, built straight into their slots (no staging
    /// buffer), as many as fit, publishing them together. Returns how many were pushed. Takes
    /// from `values` only what fits: pass `iter.by_ref()` to keep the rest for a later call.
    ///
    /// If `values` panics, the records written so far stay unpublished; the next push
    /// overwrites them.
    pub fn try_push_from_iter<I: Iterator<Item = T>>(&mut self, values: I) -> usize {
        let wanted = values.size_hint().1.map_or(self.capacity, |n| n as u64);
        let free = self.free(wanted.clamp(1, self.capacity)) as usize;
        if free == 0 {
            return 0;
        }
        let mut values = values;
        // Ask for every line of the run at once: the stores then find them owned instead of
        // each waiting for its line in turn.
        self.prefetch_slots(self.head, wanted.min(free as u64));
        let (start, first) = self.run_at(self.head, free);
        let (epoch, seq) = (self.epoch, self.next_seq);
        let base = self.slots.as_ptr();
        // SAFETY: as in `try_push_slice`: both runs lie inside the data area, in slots from
        // `head` below `tail_seen + capacity`, which the consumer does not read.
        let mut n = unsafe { fill_run(base.add(start), first, &mut values, epoch, seq) };
        if n == first && first < free {
            // SAFETY: as above, the part of the run after the wrap.
            n += unsafe {
                fill_run(
                    base,
                    free - first,
                    &mut values,
                    epoch,
                    seq.wrapping_add(n as u64),
                )
            };
        }
        if n == 0 {
            return 0;
        }
        self.head += n as u64;
        self.next_seq = seq.wrapping_add(n as u64);
        self.commit();
        n
    }

    /// Pushes one record, waiting up to `timeout` for space. Hands the record back if the ring
    /// is still full then.
    pub fn push_timeout(&mut self, value: T, timeout: Duration) -> Result<u64, Full<T>> {
        let deadline = Instant::now() + timeout;
        let mut value = value;
        loop {
            match self.try_push(value) {
                Ok(seq) => return Ok(seq),
                Err(Full(v)) => value = v,
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(Full(value));
            }
            self.wait_for_space(1, deadline - now);
        }
    }

    /// Sleeps until `needed` slots are free or `timeout` passes (no error: the caller re-checks).
    pub fn wait_for_space(&mut self, needed: u64, timeout: Duration) {
        let needed = needed.clamp(1, self.capacity);
        if self.free(needed) >= needed {
            return;
        }
        let inner = &self.ring.inner;
        match &inner.space_ready {
            Some(n) => {
                let c = inner.control();
                if c.producer_prepare_park(self.head, self.capacity, needed) {
                    // An error of the eventfd itself degrades to the timeout; the caller re-checks.
                    let _ = n.wait(Some(timeout));
                    c.producer_unpark();
                }
            }
            // Heap rings have no eventfd: nap briefly.
            None => std::thread::sleep(timeout.min(Duration::from_micros(100))),
        }
    }

    /// Records `n` records the caller dropped because the ring was full: counts them in shared
    /// memory and skips `n` sequence numbers, so every subscriber sees the loss as a gap.
    pub fn count_dropped(&mut self, n: u64) {
        if n == 0 {
            return;
        }
        self.next_seq = self.next_seq.wrapping_add(n);
        let c = self.control();
        let dropped = c.producer_state.dropped_full.load(Relaxed);
        // Relaxed: a counter only the producer writes.
        c.producer_state.dropped_full.store(dropped + n, Relaxed);
        // Release: pairs with the Acquire in a later producer's `attach`. The skipped numbers
        // are in no record, so the floor must carry them.
        c.producer_state.seq_floor.store(self.next_seq, Release);
    }

    /// Sequence number the next pushed record gets.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// The ring's epoch.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Slots free right now.
    pub fn free_slots(&mut self) -> usize {
        self.free(self.capacity) as usize
    }

    /// The ring this producer writes.
    pub fn ring(&self) -> &SharedRing<T> {
        &self.ring
    }
}

/// How many slots ahead of the one it writes `try_push` prefetches (768 bytes for the 48-byte
/// record: the line is owned by the time the producer gets there, and no nearer line is taken
/// from a consumer still reading it).
const PREFETCH_AHEAD: u64 = 16;

/// Most slots a batch push prefetches up front: a batch of 64 (48 lines of the 48-byte record),
/// the size the benchmark measured. The CPU's own prefetcher follows a longer run.
const PREFETCH_MAX: u64 = 64;

/// The CPU's cache line: 64 bytes on x86 and on the common ARM cores (Cortex-A, Neoverse). On a
/// CPU with longer lines some prefetches ask for the same line twice, which is harmless. (The
/// ring's 128-byte lines in `layout.rs` are the adjacent-line prefetch pair.)
const CACHE_LINE: usize = 64;

/// Prefetches for writing every cache line of `len` consecutive records from `p`.
#[inline(always)]
fn prefetch_run<T>(p: *const T, len: usize) {
    if len == 0 {
        return;
    }
    // From the line the first record starts in to the one the last record ends in.
    let misalign = p.addr() % CACHE_LINE;
    let line = p.cast::<u8>().wrapping_sub(misalign);
    let end = misalign + len * size_of::<T>();
    let mut offset = 0;
    while offset < end {
        crate::prefetch::line_for_write(line.wrapping_add(offset));
        offset += CACHE_LINE;
    }
}

/// Writes up to `len` records from `values` to `dst[0..len)`, stamped with `epoch` and
/// consecutive sequence numbers from `seq`; returns how many. Takes nothing from `values` beyond
/// what it writes. One pointer walk over a contiguous run: no index masking per record.
///
/// # Safety
/// `dst[0..len)` must be slots this producer may write (outside `[tail, head)`, in the data
/// area).
#[inline(always)]
unsafe fn fill_run<T: Sequenced>(
    dst: *mut T,
    len: usize,
    values: &mut impl Iterator<Item = T>,
    epoch: u64,
    seq: u64,
) -> usize {
    let mut i = 0;
    while i < len {
        let Some(mut r) = values.next() else { break };
        r.stamp(epoch, seq.wrapping_add(i as u64));
        // SAFETY: `i < len`, inside the run the caller vouches for.
        unsafe { dst.add(i).write(r) };
        i += 1;
    }
    i
}

/// Stamps `dst[0..len)` in place with `epoch` and consecutive sequence numbers from `seq`.
///
/// # Safety
/// As for [`fill_run`]; the records must be initialised (copied in just before).
#[inline(always)]
unsafe fn stamp_run<T: Sequenced>(dst: *mut T, len: usize, epoch: u64, seq: u64) {
    for i in 0..len {
        // SAFETY: `i < len`, inside the run the caller vouches for; nobody else accesses it.
        unsafe { (*dst.add(i)).stamp(epoch, seq.wrapping_add(i as u64)) };
    }
}

impl<T: Sequenced> Drop for Producer<T> {
    fn drop(&mut self) {
        self.claim.release(self.ring.inner.control());
    }
}
