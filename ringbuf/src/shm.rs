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
//! - One producer and one consumer per ring, each side claimed in shared memory by
//!   `(pid, start time)`, so a dead holder is detected and a recycled pid is not mistaken for it.

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
    /// were never published.
    pub fn producer(&self) -> Result<Producer<T>, RingClaimError> {
        let state = &self.inner.control().producer_state;
        claim(&state.producer_claim, "producer")?;
        Producer::attach(self.clone()).inspect_err(|_| release_claim(&state.producer_claim))
    }

    /// Claims the consumer side.
    pub fn consumer(&self) -> Result<Consumer<T>, RingClaimError> {
        let state = &self.inner.control().consumer_state;
        claim(&state.consumer_claim, "consumer")?;
        Consumer::attach(self.clone()).inspect_err(|_| release_claim(&state.consumer_claim))
    }
}

impl<T> SharedRing<T> {
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
        RingStats {
            capacity: self.inner.geometry.capacity,
            pushed,
            released,
            occupancy: pushed.saturating_sub(released),
            next_seq: c.producer_state.next_seq.load(Relaxed),
            dropped_full: c.producer_state.dropped_full.load(Relaxed),
            wakeups_sent: c.producer_state.wakeups_sent.load(Relaxed),
            space_wakeups_sent: c.consumer_state.wakeups_sent.load(Relaxed),
            producer_attaches: c.producer_state.producer_attaches.load(Relaxed),
        }
    }

    /// Whether a process holds the producer side, and whether it is still alive.
    pub fn producer_status(&self) -> PeerStatus {
        // Acquire: pairs with the AcqRel claim, so a pid read belongs to a completed claim.
        let id = self
            .inner
            .control()
            .producer_state
            .producer_claim
            .load(Acquire);
        PeerStatus::of(id)
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
    /// Sequence number the next record will get.
    pub next_seq: u64,
    /// Records the producer dropped because the ring was full.
    pub dropped_full: u64,
    /// Wake-ups the producer sent to a parked consumer (its only syscalls on the push path).
    pub wakeups_sent: u64,
    /// Wake-ups the consumer sent to a producer waiting for space.
    pub space_wakeups_sent: u64,
    /// How many times a producer claimed the ring (restarts show as > 1).
    pub producer_attaches: u64,
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

impl PeerStatus {
    fn of(identity: u64) -> Self {
        let pid = (identity >> 32) as u32;
        match identity {
            0 => PeerStatus::Vacant,
            id if identity_alive(id) => PeerStatus::Alive { pid },
            _ => PeerStatus::Dead { pid },
        }
    }
}

// ---- claims --------------------------------------------------------------------------------

/// This process as `pid << 32 | low 32 bits of its start time`.
fn current_identity() -> u64 {
    #[cfg(miri)]
    {
        1 << 32
    }
    #[cfg(not(miri))]
    {
        let pid = std::process::id();
        (u64::from(pid) << 32) | (start_ticks(pid).unwrap_or(0) & 0xffff_ffff)
    }
}

/// Whether the process an identity names is still running (not merely its pid reused).
fn identity_alive(identity: u64) -> bool {
    #[cfg(miri)]
    {
        identity == current_identity()
    }
    #[cfg(not(miri))]
    {
        let pid = (identity >> 32) as u32;
        let Ok(raw) = i32::try_from(pid) else {
            return false;
        };
        match nix::sys::signal::kill(nix::unistd::Pid::from_raw(raw), None) {
            Ok(()) | Err(nix::errno::Errno::EPERM) => {}
            Err(_) => return false,
        }
        // A zombie still answers kill(0) but is dead for our purposes.
        match proc_stat(pid) {
            Some((state, start)) => {
                state != 'Z' && (start & 0xffff_ffff) == (identity & 0xffff_ffff)
            }
            None => false,
        }
    }
}

#[cfg(not(miri))]
fn start_ticks(pid: u32) -> Option<u64> {
    proc_stat(pid).map(|(_, start)| start)
}

/// `(state, starttime)` from `/proc/<pid>/stat`.
#[cfg(not(miri))]
fn proc_stat(pid: u32) -> Option<(char, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces and parentheses: fields start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_ascii_whitespace();
    let state = fields.next()?.chars().next()?;
    // starttime is field 22 of the whole line, the 20th after the name.
    let start = fields.nth(18)?.parse().ok()?;
    Some((state, start))
}

fn claim(cell: &AtomicU64, side: &'static str) -> Result<(), RingClaimError> {
    let me = current_identity();
    // Acquire: see the holder's claim before judging it.
    let mut current = cell.load(Acquire);
    loop {
        if current != 0 && (current == me || identity_alive(current)) {
            return Err(RingClaimError::Busy {
                side,
                pid: (current >> 32) as u32,
            });
        }
        // AcqRel: Acquire makes the dead holder's writes (indices, seq) visible to the new one;
        // Release publishes the claim to `producer_status` readers.
        match cell.compare_exchange(current, me, AcqRel, Acquire) {
            Ok(_) => return Ok(()),
            Err(actual) => current = actual,
        }
    }
}

pub(crate) fn release_claim(cell: &AtomicU64) {
    let me = current_identity();
    // AcqRel: Release publishes everything this side wrote before letting go; only our own
    // claim is cleared (a holder that took over after we were judged dead keeps its claim).
    let _ = cell.compare_exchange(me, 0, AcqRel, Relaxed);
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

    #[cfg(not(miri))]
    #[test]
    fn this_process_is_alive_and_a_made_up_start_time_is_not() {
        let me = current_identity();
        assert!(identity_alive(me));
        assert!(!identity_alive(me ^ 1));
        assert!(!identity_alive(u64::from(u32::MAX - 7) << 32));
    }
}
