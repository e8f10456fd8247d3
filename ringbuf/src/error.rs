//! Errors, one enum per operation.

use std::io;

/// Creating a ring failed.
#[derive(Debug, thiserror::Error)]
pub enum RingCreateError {
    /// The options cannot describe a ring.
    #[error("invalid ring options: {0}")]
    Options(String),
    /// A system call failed.
    #[error("creating ring: {op}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

/// Attaching to an existing ring segment failed: it is not a ring of this record type and
/// layout, or it was not handed over correctly.
#[derive(Debug, thiserror::Error)]
pub enum RingAttachError {
    /// The segment does not start with the ring magic.
    #[error("not a ring segment: magic {found:02x?}")]
    BadMagic {
        /// First 8 bytes found.
        found: [u8; 8],
    },
    /// The segment was laid out by another version of this crate.
    #[error("ring layout version {found}, this build reads {expected}")]
    LayoutVersion {
        /// Version in the header.
        found: u32,
        /// Version of this build.
        expected: u32,
    },
    /// The ring carries another record type.
    #[error(
        "ring records are {found_size} bytes with layout id {found_layout_id:#x}; \
         expected {expected_size} bytes with layout id {expected_layout_id:#x}"
    )]
    RecordType {
        /// Record size in the header.
        found_size: u32,
        /// Layout id in the header.
        found_layout_id: u32,
        /// Size of the record type asked for.
        expected_size: u32,
        /// Layout id of the record type asked for.
        expected_layout_id: u32,
    },
    /// The geometry in the header is impossible or does not fit the segment.
    #[error("ring geometry: {0}")]
    Geometry(String),
    /// The file descriptors handed over are not what a ring needs.
    #[error("ring handover: {0}")]
    Handover(String),
    /// A system call failed.
    #[error("attaching ring: {op}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

/// The ring's indices are impossible: the other side wrote garbage into the control block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("ring indices corrupt: head {head}, tail {tail}, capacity {capacity}")]
pub struct RingCorruptError {
    /// Head read from the segment.
    pub head: u64,
    /// Tail read from the segment.
    pub tail: u64,
    /// Ring capacity.
    pub capacity: u64,
}

/// Claiming the producer or consumer side of a ring failed.
#[derive(Debug, thiserror::Error)]
pub enum RingClaimError {
    /// Another live process (or another handle in this process) holds that side.
    #[error("ring {side} side is held by live pid {pid}")]
    Busy {
        /// "producer" or "consumer".
        side: &'static str,
        /// The holder.
        pid: u32,
    },
    /// The indices left behind are impossible.
    #[error(transparent)]
    Corrupt(#[from] RingCorruptError),
    /// The side's lock could not be taken (not because another holder has it).
    #[error("locking the ring side: {0}")]
    Lock(String),
    /// The ring's memory could not be faulted in (out of memory, a memory cgroup limit): the
    /// same failure would otherwise kill the process with SIGBUS at its first touch of the page.
    #[error("faulting in the ring's {len} bytes of shared memory: {source}")]
    Memory {
        /// Bytes of the mapping.
        len: usize,
        /// The error of `madvise(MADV_POPULATE_WRITE)`.
        #[source]
        source: io::Error,
    },
}

/// Waiting on a ring failed (not a timeout: the eventfd itself failed).
#[derive(Debug, thiserror::Error)]
#[error("waiting on ring: {0}")]
pub struct RingWaitError(#[from] pub io::Error);

/// The ring had no room; the record is handed back so the caller can wait, spool or drop it.
#[derive(Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("ring full")]
pub struct Full<T>(pub T);

impl<T> Full<T> {
    /// The record that did not fit.
    pub fn into_inner(self) -> T {
        self.0
    }
}

impl<T> std::fmt::Debug for Full<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Full(..)")
    }
}
