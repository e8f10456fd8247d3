//! The consumer side: read published records in place, then release them.
//!
//! [`Consumer::read`] hands out everything published so far as at most two contiguous slices
//! inside the segment (two when the run wraps around the end). Nothing is copied. The slices
//! borrow the [`ReadBatch`]; releasing the batch (all of it or a prefix) gives the slots back to
//! the producer and ends the borrow, so a released record can never be read.

use std::ptr::NonNull;
use std::time::{Duration, Instant};

use crate::Sequenced;
use crate::error::{RingCorruptError, RingWaitError};
use crate::layout::ControlBlock;
use crate::protocol::{Park, UNACKED_PARK_LIMIT};
use crate::shm::{SharedRing, SideClaim};
use crate::sync::Ordering::{Acquire, Relaxed};

/// How long [`Consumer::wait`] spins at most before it parks, unless changed with
/// [`Consumer::set_spin_limit`]: not at all. On the 2-vCPU machine this was measured on, busy
/// with other work, a 50 µs spin made the 100k records/s wake-up p99 worse, not better: the
/// spinning consumer was preempted about 20 000 times a second (see the README's benchmark).
pub const DEFAULT_SPIN_LIMIT: Duration = Duration::ZERO;

/// Spin iterations between two looks at the clock.
const SPINS_PER_CLOCK_READ: u32 = 32;

/// The reading side of a ring. At most one exists per ring across all processes.
pub struct Consumer<T: Sequenced> {
    ring: SharedRing<T>,
    slots: NonNull<T>,
    capacity: u64,
    mask: u64,
    tail: u64,
    claim: SideClaim,
    /// Whether parks call membarrier (the probe at attach succeeded and no call failed since).
    membarrier: bool,
    /// Upper bound of the spin in `wait`.
    spin_limit: Duration,
    /// How long the next `wait` spins: `spin_limit` while records keep arriving within it,
    /// halved after every wait that spinning could not have shortened.
    spin_budget: Duration,
    #[cfg(feature = "tokio")]
    async_fd: Option<tokio::io::unix::AsyncFd<std::os::fd::OwnedFd>>,
}

// SAFETY: `slots` points into the segment owned by `ring` (an `Arc`); the consumer claim makes
// this the only reader wherever it moves.
unsafe impl<T: Sequenced + Send> Send for Consumer<T> {}

impl<T: Sequenced> std::fmt::Debug for Consumer<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consumer")
            .field("capacity", &self.capacity)
            .field("tail", &self.tail)
            .finish()
    }
}

impl<T: Sequenced> Consumer<T> {
    pub(crate) fn attach(ring: SharedRing<T>, claim: SideClaim) -> Self {
        let g = ring.inner.geometry;
        // Acquire: pairs with the previous consumer's release of its claim.
        let tail = ring.inner.control().consumer.tail.load(Acquire);
        // Heap rings never park on the park word; a shared ring's consumer probes membarrier
        // once and tells the producers (`protocol.rs`, "Fallbacks") if it cannot call it.
        let membarrier = ring.inner.is_shared() && {
            let ok = crate::membarrier::global_expedited();
            ring.inner.control().consumer_attach_fence(ok);
            ok
        };
        Self {
            membarrier,
            slots: ring.inner.slots::<T>(),
            capacity: g.capacity,
            mask: g.mask,
            tail,
            claim,
            spin_limit: DEFAULT_SPIN_LIMIT,
            spin_budget: DEFAULT_SPIN_LIMIT,
            #[cfg(feature = "tokio")]
            async_fd: None,
            ring,
        }
    }

    fn control(&self) -> &ControlBlock {
        self.ring.inner.control()
    }

    /// Records published and not yet released. An error means the producer wrote an impossible
    /// `head`: the ring cannot be trusted any more (the forwarder should drop it and count it).
    pub fn available(&self) -> Result<u64, RingCorruptError> {
        let head = self.control().head_for_consumer();
        let n = head.wrapping_sub(self.tail);
        if head < self.tail || n > self.capacity {
            return Err(RingCorruptError {
                head,
                tail: self.tail,
                capacity: self.capacity,
            });
        }
        Ok(n)
    }

    /// Everything published so far, in place. Empty if nothing is waiting.
    pub fn read(&mut self) -> Result<ReadBatch<'_, T>, RingCorruptError> {
        self.read_at_most(usize::MAX)
    }

    /// At most `max` of the records published so far, in place.
    pub fn read_at_most(&mut self, max: usize) -> Result<ReadBatch<'_, T>, RingCorruptError> {
        let n = (self.available()? as usize).min(max);
        let start = (self.tail & self.mask) as usize;
        let first_len = n.min(self.capacity as usize - start);
        let base = self.slots.as_ptr();
        // SAFETY: slots `[tail, tail + n)` were published by the producer (`available` acquired a
        // head at least this far), so their writes are visible and complete; the producer will not
        // write them until we release them, and the slices borrow the batch, which release
        // consumes. `start + first_len ≤ capacity` and `n - first_len ≤ start` keep both ranges in
        // the data area. `T: Pod`, so any bytes a broken producer left are still a valid `T`.
        let (first, second) = unsafe {
            (
                std::slice::from_raw_parts(base.add(start), first_len),
                std::slice::from_raw_parts(base, n - first_len),
            )
        };
        Ok(ReadBatch {
            consumer: self,
            first,
            second,
        })
    }

    fn release(&mut self, n: u64) {
        self.tail += n;
        let inner = &self.ring.inner;
        let c = inner.control();
        if c.release(self.tail) {
            if let Some(n) = &inner.space_ready {
                n.notify();
            }
            let sent = c.consumer_state.wakeups_sent.load(Relaxed);
            // Relaxed: a counter only the consumer writes.
            c.consumer_state.wakeups_sent.store(sent + 1, Relaxed);
        }
    }

    /// Blocks until records are available or `timeout` passes (`None`: no limit). Returns
    /// whether records are available. Costs no syscall if records are already there.
    ///
    /// With a spin limit set ([`Consumer::set_spin_limit`]; none by default), it first spins
    /// for at most that long, watching `head` without any syscall; then it parks on the
    /// eventfd. The spin adapts: it spins the full limit again after a wait that ended within
    /// the limit (records arrive faster than a wake-up would take), and half as long after one
    /// that did not, down to not spinning at all. So a consumer fed every few µs is never put to
    /// sleep and woken (it pays no wake-up latency and the producer no syscall), and one fed
    /// every millisecond, with a 50 µs limit, spins about 100 µs in total before it stops
    /// trying. Worth it only where the consumer has a CPU of its own.
    pub fn wait(&mut self, timeout: Option<Duration>) -> Result<bool, RingWaitError> {
        if self.available().unwrap_or(1) > 0 {
            return Ok(true);
        }
        let start = Instant::now();
        let spin = self.spin_budget.min(timeout.unwrap_or(Duration::MAX));
        if !spin.is_zero() && self.spin_until(start + spin) {
            self.spin_budget = self.spin_limit;
            return Ok(true);
        }
        let inner = &self.ring.inner;
        let c = inner.control();
        match &inner.data_ready {
            Some(n) => {
                let rest = timeout.map(|t| t.saturating_sub(start.elapsed()));
                let sleep = match c.consumer_prepare_park(self.tail, &mut self.membarrier) {
                    Park::Ready => None,
                    Park::Sleep => Some(rest),
                    // A publish may have missed the flag: look again after the bound.
                    Park::SleepBounded => Some(Some(
                        rest.map_or(UNACKED_PARK_LIMIT, |r| r.min(UNACKED_PARK_LIMIT)),
                    )),
                };
                if let Some(limit) = sleep {
                    let slept = n.wait(limit);
                    c.consumer_unpark();
                    slept?;
                }
            }
            None => std::thread::sleep(
                timeout
                    .unwrap_or(Duration::MAX)
                    .min(Duration::from_micros(100)),
            ),
        }
        let found = self.available().unwrap_or(1) > 0;
        self.spin_budget = if found && start.elapsed() <= self.spin_limit {
            self.spin_limit
        } else if self.spin_budget < Duration::from_micros(1) {
            Duration::ZERO
        } else {
            self.spin_budget / 2
        };
        Ok(found)
    }

    /// Spins until records are available (`true`) or `deadline` passes (`false`).
    fn spin_until(&self, deadline: Instant) -> bool {
        loop {
            for _ in 0..SPINS_PER_CLOCK_READ {
                if self.available().unwrap_or(1) > 0 {
                    return true;
                }
                std::hint::spin_loop();
            }
            if Instant::now() >= deadline {
                return false;
            }
        }
    }

    /// Sets how long [`Consumer::wait`] may spin before it parks. `Duration::ZERO` parks at
    /// once (no CPU spent waiting, every wait pays a wake-up and the producer a syscall).
    pub fn set_spin_limit(&mut self, limit: Duration) {
        self.spin_limit = limit;
        self.spin_budget = limit;
    }

    /// How long [`Consumer::wait`] may spin before it parks.
    pub fn spin_limit(&self) -> Duration {
        self.spin_limit
    }

    /// Waits, without blocking the thread, until records are available (or the ring turns out
    /// corrupt, which [`Consumer::read`] then reports). Cancel-safe; bound it with
    /// `tokio::time::timeout`. Must be called within a tokio runtime.
    #[cfg(feature = "tokio")]
    pub async fn readable(&mut self) -> Result<(), RingWaitError> {
        use tokio::io::Interest;
        use tokio::io::unix::AsyncFd;
        loop {
            if self.available().unwrap_or(1) > 0 {
                return Ok(());
            }
            let inner = &self.ring.inner;
            let Some(notifier) = &inner.data_ready else {
                tokio::time::sleep(Duration::from_micros(100)).await;
                continue;
            };
            if self.async_fd.is_none() {
                let fd = notifier.try_clone_fd()?;
                // SAFETY: `fd` is a freshly duplicated eventfd owned by the `AsyncFd` from here on;
                // nothing else closes or replaces it while it is registered.
                let registered = unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) };
                self.async_fd = Some(registered.map_err(std::io::Error::from)?);
            }
            let c = inner.control();
            let bounded = match c.consumer_prepare_park(self.tail, &mut self.membarrier) {
                Park::Ready => return Ok(()),
                Park::Sleep => false,
                Park::SleepBounded => true,
            };
            let afd = self.async_fd.as_ref().expect("registered above");
            // If this future is dropped here, the flag stays set: the producer's next publish
            // sends one spurious wake-up and clears it. Nothing is lost.
            if bounded {
                // A publish may have missed the flag: look again after the bound.
                if let Ok(guard) = tokio::time::timeout(UNACKED_PARK_LIMIT, afd.readable()).await {
                    notifier.drain();
                    guard?.clear_ready();
                }
            } else {
                let mut guard = afd.readable().await?;
                notifier.drain();
                guard.clear_ready();
            }
            c.consumer_unpark();
        }
    }

    /// The ring this consumer reads.
    pub fn ring(&self) -> &SharedRing<T> {
        &self.ring
    }
}

impl<T: Sequenced> Drop for Consumer<T> {
    fn drop(&mut self) {
        self.claim.release(self.ring.inner.control());
    }
}

/// Records read in place. Use them through [`ReadBatch::as_slices`], then give their slots back
/// with [`ReadBatch::release`] or [`ReadBatch::release_all`]. Dropping the batch without
/// releasing keeps the records for the next read.
pub struct ReadBatch<'a, T: Sequenced> {
    consumer: &'a mut Consumer<T>,
    first: &'a [T],
    second: &'a [T],
}

impl<T: Sequenced> std::fmt::Debug for ReadBatch<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadBatch")
            .field("first", &self.first.len())
            .field("second", &self.second.len())
            .finish()
    }
}

impl<T: Sequenced> ReadBatch<'_, T> {
    /// The records, oldest first, as two slices (the second is non-empty only at a wrap).
    pub fn as_slices(&self) -> (&[T], &[T]) {
        (self.first, self.second)
    }

    /// Number of records in the batch.
    pub fn len(&self) -> usize {
        self.first.len() + self.second.len()
    }

    /// Whether the batch is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The records in order.
    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.first.iter().chain(self.second)
    }

    /// Releases the first `n` records (clamped to the batch) to the producer.
    pub fn release(self, n: usize) {
        let n = n.min(self.len());
        self.consumer.release(n as u64);
    }

    /// Releases every record of the batch.
    pub fn release_all(self) {
        let n = self.len();
        self.release(n);
    }
}
