//! Ring segments: creating one in a sealed memfd, attaching to one handed over by a parent,
//! and claiming its producer or consumer side.
//!
//! # Design constraints
//! - Anonymous and `MAP_SHARED`: a memfd (no path in the filesystem) mapped with
//!   [`memmap2::MmapRaw`], so writes made by a forked or exec'd child are the parent's writes.
//!   (`memmap2`'s `map_anon` is `MAP_PRIVATE`, copy-on-write after `fork`: never used here.)
//! - The memfd is sealed against shrinking and growing before anyone attaches, so a broken
//!   producer cannot truncate it under the consumer (which would turn reads into `SIGBUS`).
//! - Handing a ring to an exec'd child never clears close-on-exec in the parent (a
//!   multi-threaded parent would leak the fds into every other child it spawns at that
//!   moment); the flag is cleared in the child, between `fork` and `exec`.
//! - One producer and one consumer per ring. Each side is claimed with an open-file-description
//!   lock on one byte of the memfd (`F_OFD_SETLK`): the kernel releases it the instant the holder
//!   dies, so a dead holder is detected at once and a recycled pid is never mistaken for it. The
//!   claim word in shared memory only records the holder's pid, for status reports.

use std::marker::PhantomData;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::ptr::NonNull;
use std::sync::Arc;

use crate::error::{RingAttachError, RingClaimError, RingCreateError};
use crate::layout::{CONTROL_OFFSET, ControlBlock, DATA_OFFSET, Geometry, Header, LINE};
use crate::sync::AtomicU64;
use crate::sync::Ordering::{AcqRel, Acquire, Relaxed};
use crate::wake::Notifier;
use crate::{Consumer, Producer, Sequenced};

/// Environment variable through which [`SharedRing::pass_to_child`] tells the child which
/// inherited descriptors hold its ring: `"<memfd>,<data-ready eventfd>,<space-ready eventfd>"`.
pub const RING_FDS_ENV: &str = "EDGEGW_RING_FDS";

/// How to make a ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RingOptions {
    /// Record slots; a power of two ≥ 2.
    pub capacity: usize,
    /// Epoch stamped into every record pushed into this ring.
    pub epoch: u64,
    /// Source id of the producer that will write this ring.
    pub source_id: u32,
}

/// A handle to one ring segment. Cheap to clone; the segment lives while any handle, producer
/// or consumer does.
pub struct SharedRing<T> {
    pub(crate) inner: Arc<Inner>,
    _record: PhantomData<fn() -> T>,
}

impl<T> Clone for SharedRing<T> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
            _record: PhantomData,
        }
    }
}

impl<T> std::fmt::Debug for SharedRing<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedRing")
            .field("geometry", &self.inner.geometry)
            .field(
                "shared",
                &matches!(self.inner.region, Region::Shared { .. }),
            )
            .finish()
    }
}

/// Where a ring's bytes live.
enum Region {
    /// A sealed memfd mapped `MAP_SHARED`.
    Shared {
        map: memmap2::MmapRaw,
        memfd: OwnedFd,
    },
    /// Zeroed heap memory, for in-process rings (tests, miri). Never shared across processes.
    Heap {
        base: NonNull<u8>,
        layout: std::alloc::Layout,
    },
}

impl Drop for Region {
    fn drop(&mut self) {
        if let Region::Heap { base, layout } = *self {
            // SAFETY: `base` came from `alloc_zeroed(layout)` in `Region::heap` and is freed only
            // here, once, when the last handle to the ring is gone.
            unsafe { std::alloc::dealloc(base.as_ptr(), layout) };
        }
    }
}

impl Region {
    fn heap(len: usize) -> Result<Self, RingCreateError> {
        let layout = std::alloc::Layout::from_size_align(len, LINE)
            .map_err(|e| RingCreateError::Options(e.to_string()))?;
        // SAFETY: `layout` has non-zero size (it always holds the header and control block).
        let ptr = unsafe { std::alloc::alloc_zeroed(layout) };
        let base = NonNull::new(ptr).ok_or(RingCreateError::Io {
            op: "allocating heap ring",
            source: std::io::ErrorKind::OutOfMemory.into(),
        })?;
        Ok(Region::Heap { base, layout })
    }

    /// Faults every page of a shared region into this process's page tables, writable, and so
    /// allocates the memfd's pages if nobody has yet (`MADV_POPULATE_WRITE`, Linux 5.14). Called
    /// before each side is claimed. Without it the first pass through a fresh ring pays a page
    /// fault every 85 records on each side, inside `try_push` and the consumer's read (10-20 µs
    /// each on the VM it was measured on, where they were most of the wake-up p99), and a
    /// failed allocation would show up later as SIGBUS in the middle of a push instead of as an
    /// error here. A kernel without the advice (`EINVAL`) leaves the pages to fault in on first
    /// use, as before; a call interrupted by a signal (`EINTR`) is made again (pages already
    /// in are skipped); heap rings are left alone.
    fn populate(&self) -> std::io::Result<()> {
        let Region::Shared { map, .. } = self else {
            return Ok(());
        };
        loop {
            match map.advise(memmap2::Advice::PopulateWrite) {
                Err(e) if e.raw_os_error() == Some(nix::libc::EINTR) => continue,
                Err(e) if e.raw_os_error() == Some(nix::libc::EINVAL) => return Ok(()),
                other => return other,
            }
        }
    }

    fn base(&self) -> *mut u8 {
        match self {
            Region::Shared { map, .. } => map.as_mut_ptr(),
            Region::Heap { base, .. } => base.as_ptr(),
        }
    }
}

pub(crate) struct Inner {
    region: Region,
    pub(crate) geometry: Geometry,
    /// Producer → consumer: records were published. `None` for heap rings.
    pub(crate) data_ready: Option<Notifier>,
    /// Consumer → producer: slots were released. `None` for heap rings.
    pub(crate) space_ready: Option<Notifier>,
}

// SAFETY: the region is plain memory valid for the lifetime of `Inner`; every concurrent access to
// it goes through the atomics of the control block or through slots the index protocol hands to
// exactly one side at a time (see `protocol.rs`). `Notifier` wraps an fd.
unsafe impl Send for Inner {}
// SAFETY: as for `Send`: shared access is mediated by atomics and the SPSC slot protocol.
unsafe impl Sync for Inner {}

impl Inner {
    /// The control block at [`CONTROL_OFFSET`].
    pub(crate) fn control(&self) -> &ControlBlock {
        // SAFETY: the region is at least `DATA_OFFSET` bytes long (checked when it was created or
        // attached) and line-aligned (page-aligned mapping or a `LINE`-aligned allocation), so the
        // control block is in bounds and aligned. It consists only of std atomics, for which every
        // bit pattern is valid and which are meant to be accessed concurrently, also from other
        // processes. The reference lives no longer than `self`, which keeps the region mapped.
        unsafe {
            &*self
                .region
                .base()
                .add(CONTROL_OFFSET)
                .cast::<ControlBlock>()
        }
    }

    /// Pointer to slot 0.
    pub(crate) fn slots<T>(&self) -> NonNull<T> {
        // SAFETY: `DATA_OFFSET` is within the region (see `control`), so the pointer is in bounds
        // and non-null; `Geometry` checked that `T`'s alignment divides `LINE`.
        unsafe { NonNull::new_unchecked(self.region.base().add(DATA_OFFSET).cast::<T>()) }
    }

    /// Whether the ring lives in a shared memfd (not on the heap).
    pub(crate) fn is_shared(&self) -> bool {
        self.memfd().is_some()
    }

    fn memfd(&self) -> Option<&OwnedFd> {
        match &self.region {
            Region::Shared { memfd, .. } => Some(memfd),
            Region::Heap { .. } => None,
        }
    }
}

impl<T: Sequenced> SharedRing<T> {
    /// Creates a ring in a new sealed memfd, with one eventfd per wake-up direction.
    pub fn create(opts: &RingOptions) -> Result<Self, RingCreateError> {
        use nix::fcntl::{FcntlArg, SealFlag, fcntl};
        use nix::sys::memfd::{MFdFlags, memfd_create};

        let geometry = Geometry::for_new::<T>(opts.capacity, opts.epoch, opts.source_id)
            .map_err(RingCreateError::Options)?;
        let io = |op| {
            move |e: nix::Error| RingCreateError::Io {
                op,
                source: e.into(),
            }
        };
        let name = format!("edgegw-ring-{}", opts.source_id);
        let memfd = memfd_create(
            name.as_str(),
            MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING,
        )
        .map_err(io("memfd_create"))?;
        nix::unistd::ftruncate(&memfd, geometry.total_len as i64).map_err(io("ftruncate"))?;
        fcntl(
            &memfd,
            FcntlArg::F_ADD_SEALS(
                SealFlag::F_SEAL_SHRINK | SealFlag::F_SEAL_GROW | SealFlag::F_SEAL_SEAL,
            ),
        )
        .map_err(io("sealing memfd"))?;
        let map = memmap2::MmapOptions::new()
            .len(geometry.total_len)
            .map_raw(&memfd)
            .map_err(|source| RingCreateError::Io { op: "mmap", source })?;
        let region = Region::Shared { map, memfd };
        let notifier = || {
            Notifier::new().map_err(|source| RingCreateError::Io {
                op: "eventfd",
                source,
            })
        };
        let (data_ready, space_ready) = (Some(notifier()?), Some(notifier()?));
        Ok(Self::init(region, geometry, data_ready, space_ready))
    }

    /// Creates a ring in private heap memory: same protocol, but it cannot be shared with
    /// another process and waits poll with short sleeps instead of eventfds. For tests and
    /// for miri, which has no `memfd`.
    pub fn create_in_heap(opts: &RingOptions) -> Result<Self, RingCreateError> {
        let geometry = Geometry::for_new::<T>(opts.capacity, opts.epoch, opts.source_id)
            .map_err(RingCreateError::Options)?;
        let region = Region::heap(geometry.total_len)?;
        Ok(Self::init(region, geometry, None, None))
    }

    fn init(
        region: Region,
        geometry: Geometry,
        data_ready: Option<Notifier>,
        space_ready: Option<Notifier>,
    ) -> Self {
        let header = geometry.header::<T>();
        // SAFETY: the region is fresh, zeroed, at least `total_len ≥ size_of::<Header>()` bytes and
        // line-aligned; nobody else can see it yet, so this plain write races with nothing.
        unsafe { region.base().cast::<Header>().write(header) };
        Self {
            inner: Arc::new(Inner {
                region,
                geometry,
                data_ready,
                space_ready,
            }),
            _record: PhantomData,
        }
    }

    /// Attaches to a ring from its memfd and its two eventfds (data-ready, space-ready), as
    /// created by [`SharedRing::create`] in another process. Checks the header against `T`.
    pub fn from_fds(
        memfd: OwnedFd,
        data_ready: OwnedFd,
        space_ready: OwnedFd,
    ) -> Result<Self, RingAttachError> {
        use nix::fcntl::{FcntlArg, SealFlag, fcntl};
        let io = |op| {
            move |e: nix::Error| RingAttachError::Io {
                op,
                source: e.into(),
            }
        };
        let seals = fcntl(&memfd, FcntlArg::F_GET_SEALS).map_err(io("reading memfd seals"))?;
        if !SealFlag::from_bits_truncate(seals).contains(SealFlag::F_SEAL_SHRINK) {
            return Err(RingAttachError::Handover(
                "memfd is not sealed against shrinking".into(),
            ));
        }
        let len = nix::sys::stat::fstat(&memfd)
            .map_err(io("fstat memfd"))?
            .st_size;
        let len = usize::try_from(len).unwrap_or(0);
        if len < DATA_OFFSET {
            return Err(RingAttachError::Geometry(format!(
                "segment of {len} bytes is smaller than a ring header"
            )));
        }
        let map = memmap2::MmapOptions::new()
            .len(len)
            .map_raw(&memfd)
            .map_err(|source| RingAttachError::Io { op: "mmap", source })?;
        // SAFETY: the mapping is at least `DATA_OFFSET > size_of::<Header>()` bytes and
        // page-aligned; `Header` is `Pod`, so any bytes are a valid value. The creator wrote it
        // before handing the fds over, and nobody writes it afterwards.
        let header = unsafe { map.as_ptr().cast::<Header>().read() };
        let geometry = Geometry::from_header::<T>(&header, map.len())?;
        let region = Region::Shared { map, memfd };
        Ok(Self {
            inner: Arc::new(Inner {
                region,
                geometry,
                data_ready: Some(Notifier::from_owned(data_ready)),
                space_ready: Some(Notifier::from_owned(space_ready)),
            }),
            _record: PhantomData,
        })
    }

    /// Arranges for `cmd`'s child to inherit this ring: sets [`RING_FDS_ENV`] and clears
    /// close-on-exec on the ring's three descriptors in the child only. The child calls
    /// [`SharedRing::from_inherited`]. Keep this handle alive until the command is spawned.
    pub fn pass_to_child(&self, cmd: &mut std::process::Command) -> Result<(), RingAttachError> {
        use std::os::unix::process::CommandExt;
        let [m, d, s] = self.raw_fds().ok_or_else(|| {
            RingAttachError::Handover("a heap ring cannot be passed to another process".into())
        })?;
        cmd.env(RING_FDS_ENV, format!("{m},{d},{s}"));
        let inherit = move || -> std::io::Result<()> {
            for fd in [m, d, s] {
                // SAFETY: the parent keeps these fds open until spawn (documented contract); in
                // the child they are the same numbers, open until exec. The borrow does not
                // outlive this call.
                let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
                nix::fcntl::fcntl(
                    fd,
                    nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty()),
                )?;
            }
            Ok(())
        };
        // SAFETY: the closure runs in the child between fork and exec. It only calls fcntl(2),
        // which is async-signal-safe; it allocates nothing and takes no lock.
        unsafe { cmd.pre_exec(inherit) };
        Ok(())
    }

    /// Attaches to the ring this process inherited through [`SharedRing::pass_to_child`].
    ///
    /// Takes ownership of the descriptors named in [`RING_FDS_ENV`] after checking that each is
    /// open and of the right kind (a memfd, then two eventfds); each descriptor can be adopted
    /// once per process. They are made close-on-exec again so they do not leak further.
    pub fn from_inherited() -> Result<Self, RingAttachError> {
        let spec = std::env::var(RING_FDS_ENV).map_err(|_| {
            RingAttachError::Handover(format!("{RING_FDS_ENV} is not set: no ring was inherited"))
        })?;
        let fds = parse_fd_spec(&spec)?;
        let [m, d, s] = adopt_fds(fds)?;
        Self::from_fds(m, d, s)
    }

    /// Claims the producer side. Fails if a live process (or another handle here) holds it.
    /// A claim left by a dead producer is taken over, and the new producer continues its
    /// sequence: records it pushed are never renumbered, records it was writing when it died
    /// were never published. First faults the whole ring into this process (see
    /// [`RingClaimError::Memory`]), so no push waits for a page fault.
    pub fn producer(&self) -> Result<Producer<T>, RingClaimError> {
        // Register for membarrier before the claim, not while holding it: the first
        // registration of a multi-threaded process waits for an RCU grace period (about 13 ms
        // measured here), time in which a claimed ring would publish nothing. Heap rings and
        // miri never register.
        let registered = self.inner.is_shared() && crate::membarrier::register_process();
        self.populate()?;
        let claim = self.claim_side(Side::Producer)?;
        Producer::attach(self.clone(), claim, registered)
    }

    /// Claims the consumer side, after faulting the whole ring into this process as
    /// [`SharedRing::producer`] does.
    pub fn consumer(&self) -> Result<Consumer<T>, RingClaimError> {
        self.populate()?;
        let claim = self.claim_side(Side::Consumer)?;
        Ok(Consumer::attach(self.clone(), claim))
    }
}

impl<T> SharedRing<T> {
    /// [`Region::populate`], before a claim (not while holding it: a large ring takes a while).
    fn populate(&self) -> Result<(), RingClaimError> {
        self.inner
            .region
            .populate()
            .map_err(|source| RingClaimError::Memory {
                len: self.inner.geometry.total_len,
                source,
            })
    }

    /// Slots in the ring.
    pub fn capacity(&self) -> usize {
        self.inner.geometry.capacity as usize
    }

    /// Epoch stamped into this ring's records.
    pub fn epoch(&self) -> u64 {
        self.inner.geometry.epoch
    }

    /// Source id of this ring's producer.
    pub fn source_id(&self) -> u32 {
        self.inner.geometry.source_id
    }

    /// The memfd and eventfds (data-ready, space-ready); `None` for heap rings.
    pub fn raw_fds(&self) -> Option<[RawFd; 3]> {
        let memfd = self.inner.memfd()?;
        Some([
            memfd.as_raw_fd(),
            self.inner.data_ready.as_ref()?.as_raw_fd(),
            self.inner.space_ready.as_ref()?.as_raw_fd(),
        ])
    }

    /// Counters kept in shared memory, readable from either side at any time.
    pub fn stats(&self) -> RingStats {
        let c = self.inner.control();
        // Relaxed everywhere: a metrics snapshot, not a synchronisation point.
        let pushed = c.producer.head.load(Relaxed);
        let released = c.consumer.tail.load(Relaxed);
        let park_word = c.consumer_state.consumer_parked.load(Relaxed);
        RingStats {
            capacity: self.inner.geometry.capacity,
            pushed,
            released,
            occupancy: pushed.saturating_sub(released),
            dropped_full: c.producer_state.dropped_full.load(Relaxed),
            wakeups_sent: c.producer_state.wakeups_sent.load(Relaxed),
            space_wakeups_sent: c.consumer_state.wakeups_sent.load(Relaxed),
            producer_attaches: c.producer_state.producer_attaches.load(Relaxed),
            membarrier_denied: park_word & crate::protocol::NO_MEMBARRIER != 0,
            producer_fenced: park_word & crate::protocol::FENCED != 0,
        }
    }

    /// Whether a process holds the producer side, and whether it is still alive.
    pub fn producer_status(&self) -> PeerStatus {
        self.side_status(Side::Producer)
    }

    /// Whether a process holds the consumer side, and whether it is still alive.
    pub fn consumer_status(&self) -> PeerStatus {
        self.side_status(Side::Consumer)
    }
}

/// Counters of one ring (see [`SharedRing::stats`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RingStats {
    /// Slots.
    pub capacity: u64,
    /// Records ever published (the head index).
    pub pushed: u64,
    /// Records ever released by the consumer (the tail index).
    pub released: u64,
    /// Records published and not yet released.
    pub occupancy: u64,
    /// Records the producer dropped because the ring was full.
    pub dropped_full: u64,
    /// Wake-ups the producer sent to a parked consumer (its only syscalls on the push path).
    pub wakeups_sent: u64,
    /// Wake-ups the consumer sent to a producer waiting for space.
    pub space_wakeups_sent: u64,
    /// How many times a producer claimed the ring (restarts show as > 1).
    pub producer_attaches: u64,
    /// A consumer of this ring could not call `membarrier` (e.g. a seccomp filter denies it):
    /// producers publish with a real fence, one locked instruction per publish.
    pub membarrier_denied: bool,
    /// The current producer publishes with a real fence (its membarrier registration failed,
    /// or `membarrier_denied`), not the compiler fence of the fast path.
    pub producer_fenced: bool,
}

/// Whether a ring side is held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerStatus {
    /// Nobody holds it (never claimed, or released cleanly).
    Vacant,
    /// Held by this live process.
    Alive {
        /// The holder's pid.
        pid: u32,
    },
    /// Held by a process that has died without releasing it.
    Dead {
        /// The dead holder's pid.
        pid: u32,
    },
}

// ---- claims ----------------------------------------------------------------------------

/// The two sides of a ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Side {
    Producer,
    Consumer,
}

impl Side {
    fn name(self) -> &'static str {
        match self {
            Side::Producer => "producer",
            Side::Consumer => "consumer",
        }
    }

    /// The byte of the memfd whose lock marks this side as held.
    fn lock_byte(self) -> i64 {
        match self {
            Side::Producer => 0,
            Side::Consumer => 1,
        }
    }

    pub(crate) fn cell(self, c: &ControlBlock) -> &AtomicU64 {
        match self {
            Side::Producer => &c.producer_state.producer_claim,
            Side::Consumer => &c.consumer_state.consumer_claim,
        }
    }
}

/// A held side: its claim word names this process, and (for shared rings) an open file
/// description of the memfd holds a lock on the side's byte. The kernel drops that lock the
/// instant the holder dies, however it dies, so liveness never depends on pids (which are reused)
/// or on `/proc` (which qemu-user fakes for the emulated process).
#[derive(Debug)]
pub(crate) struct SideClaim {
    side: Side,
    me: u64,
    /// Dropped after the claim word is cleared (field order), releasing the lock.
    _lock: Option<OwnedFd>,
}

impl SideClaim {
    pub(crate) fn release(&self, c: &ControlBlock) {
        // AcqRel: Release publishes everything this side wrote before letting go. Only our own
        // claim is cleared.
        let _ = self
            .side
            .cell(c)
            .compare_exchange(self.me, 0, AcqRel, Relaxed);
    }
}

/// This process's claim word: its pid in the high half.
fn current_identity() -> u64 {
    #[cfg(miri)]
    {
        1 << 32
    }
    #[cfg(not(miri))]
    {
        u64::from(std::process::id()) << 32
    }
}

/// The `F_OFD_*` lock request for one byte.
#[cfg(not(miri))]
fn byte_lock(kind: i32, byte: i64) -> nix::libc::flock {
    // SAFETY: `flock` is a plain C struct for which all-zero bytes are a valid value.
    let mut fl: nix::libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = kind as i16;
    fl.l_whence = nix::libc::SEEK_SET as i16;
    fl.l_start = byte;
    fl.l_len = 1;
    fl
}

/// Takes the side's lock on a new open file description of `memfd`; `Ok(None)` if another
/// holder has it.
#[cfg(not(miri))]
fn lock_side(memfd: &OwnedFd, side: Side) -> Result<Option<OwnedFd>, std::io::Error> {
    use nix::fcntl::{FcntlArg, OFlag, fcntl, open};
    // A new open file description: locks taken through it belong to this claim alone.
    let path = format!("/proc/self/fd/{}", memfd.as_raw_fd());
    let fd = open(
        path.as_str(),
        OFlag::O_RDWR | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )?;
    let fl = byte_lock(nix::libc::F_WRLCK, side.lock_byte());
    match fcntl(&fd, FcntlArg::F_OFD_SETLK(&fl)) {
        Ok(_) => Ok(Some(fd)),
        Err(nix::errno::Errno::EAGAIN | nix::errno::Errno::EACCES) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Whether some open file description holds the side's lock.
#[cfg(not(miri))]
fn side_locked(memfd: &OwnedFd, side: Side) -> bool {
    use nix::fcntl::{FcntlArg, fcntl};
    let mut fl = byte_lock(nix::libc::F_WRLCK, side.lock_byte());
    match fcntl(memfd, FcntlArg::F_OFD_GETLK(&mut fl)) {
        Ok(_) => fl.l_type != nix::libc::F_UNLCK as i16,
        // Cannot tell: say held, so nobody concludes a live peer is dead.
        Err(_) => true,
    }
}

impl<T> SharedRing<T> {
    pub(crate) fn claim_side(&self, side: Side) -> Result<SideClaim, RingClaimError> {
        let cell = side.cell(self.inner.control());
        let me = current_identity();
        // Acquire (all loads here): see the previous holder's claim before judging it.
        let busy = |cell: &AtomicU64| RingClaimError::Busy {
            side: side.name(),
            pid: (cell.load(Acquire) >> 32) as u32,
        };
        #[cfg(not(miri))]
        if let Some(memfd) = self.inner.memfd() {
            let lock = lock_side(memfd, side)
                .map_err(|e| RingClaimError::Lock(e.to_string()))?
                .ok_or_else(|| busy(cell))?;
            // AcqRel: Acquire makes a dead holder's writes (indices, seq) visible to us; Release
            // publishes the claim to status readers. The lock already excludes everyone else.
            cell.swap(me, AcqRel);
            return Ok(SideClaim {
                side,
                me,
                _lock: Some(lock),
            });
        }
        // Heap rings live in one process: the claim word alone decides.
        cell.compare_exchange(0, me, AcqRel, Acquire)
            .map_err(|_| busy(cell))?;
        Ok(SideClaim {
            side,
            me,
            _lock: None,
        })
    }

    fn side_status(&self, side: Side) -> PeerStatus {
        // Acquire: pairs with the AcqRel claim, so a pid read belongs to a completed claim.
        let pid = (side.cell(self.inner.control()).load(Acquire) >> 32) as u32;
        #[cfg(not(miri))]
        let held = match self.inner.memfd() {
            Some(memfd) => side_locked(memfd, side),
            None => pid != 0,
        };
        #[cfg(miri)]
        let held = pid != 0;
        match (held, pid) {
            (true, pid) => PeerStatus::Alive { pid },
            (false, 0) => PeerStatus::Vacant,
            (false, pid) => PeerStatus::Dead { pid },
        }
    }
}

// ---- handover ------------------------------------------------------------------------------

fn parse_fd_spec(spec: &str) -> Result<[RawFd; 3], RingAttachError> {
    let bad = || {
        RingAttachError::Handover(format!(
            "{RING_FDS_ENV}={spec:?}: expected three fd numbers"
        ))
    };
    let mut it = spec.split(',').map(|s| s.trim().parse::<RawFd>());
    let mut next = || match it.next() {
        Some(Ok(fd)) if fd > 2 => Ok(fd),
        _ => Err(bad()),
    };
    let fds = [next()?, next()?, next()?];
    if it.next().is_some() || fds[0] == fds[1] || fds[1] == fds[2] || fds[0] == fds[2] {
        return Err(bad());
    }
    Ok(fds)
}

/// Descriptors this process has adopted, so that none is owned twice.
static ADOPTED: std::sync::Mutex<Vec<RawFd>> = std::sync::Mutex::new(Vec::new());

fn adopt_fds(fds: [RawFd; 3]) -> Result<[OwnedFd; 3], RingAttachError> {
    use std::os::fd::FromRawFd;
    let mut adopted = ADOPTED.lock().unwrap_or_else(|e| e.into_inner());
    for (fd, want) in
        fds.into_iter()
            .zip(["/memfd:", "anon_inode:[eventfd]", "anon_inode:[eventfd]"])
    {
        if adopted.contains(&fd) {
            return Err(RingAttachError::Handover(format!(
                "fd {fd} was already adopted"
            )));
        }
        let target = std::fs::read_link(format!("/proc/self/fd/{fd}")).map_err(|e| {
            RingAttachError::Handover(format!(
                "fd {fd} is not open ({e}): was the ring passed to this process?"
            ))
        })?;
        let target = target.to_string_lossy();
        if !target.starts_with(want) {
            return Err(RingAttachError::Handover(format!(
                "fd {fd} is {target}, expected {want}…"
            )));
        }
    }
    adopted.extend(fds);
    let owned = fds.map(|fd| {
        // SAFETY: the fd is open (readlink above), of the kind a ring hands over, was inherited
        // across exec under the `pass_to_child` contract, and is recorded in `ADOPTED` so this
        // process never wraps it in a second `OwnedFd`.
        unsafe { OwnedFd::from_raw_fd(fd) }
    });
    for fd in &owned {
        nix::fcntl::fcntl(
            fd,
            nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
        )
        .map_err(|e| RingAttachError::Io {
            op: "setting close-on-exec",
            source: e.into(),
        })?;
    }
    Ok(owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fd_spec_accepts_three_distinct_fds_only() {
        assert_eq!(parse_fd_spec("3,4,5").unwrap(), [3, 4, 5]);
        for bad in ["", "3,4", "3,4,5,6", "3,3,5", "1,4,5", "a,b,c"] {
            assert!(parse_fd_spec(bad).is_err(), "{bad:?}");
        }
    }
}
