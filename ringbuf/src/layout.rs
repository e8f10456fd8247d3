//! The `#[repr(C)]` layout of a ring in its shared-memory segment.
//!
//! # Design constraints
//! - Two processes built from the same source read the segment; one of them may be a broken
//!   producer. Everything the consumer trusts (geometry) is read once, checked, and cached
//!   outside the segment; only the indices are read again, and they are range-checked.
//! - Head and tail are written by different processes and live on separate lines.
//! - The consumer's park word, which the producer loads right after every `head` store, is not
//!   on the head line: a busy consumer keeps reading that line, so the producer's store often
//!   has to ask for it back, and a load from the same line then waits for the line to arrive.
//!   That load was the largest item of the producer's profile at batch 1 (perf, cpu-clock: a
//!   third of its samples, layout version 2). It sits in [`ConsumerState`], which nobody
//!   writes while the consumer is busy, so the load finds it in the producer's own cache.
//! - The producer's parked flag stays beside the tail: the consumer's release stores the tail
//!   and then swaps the flag, both on a line it owns.
//! - Lines are 128 bytes: the prefetch pair on x86 and the line of some ARM cores.
//!
//! # Format
//! | offset | size | content |
//! |---|---|---|
//! | 0 | 128 | [`Header`]: magic, layout version, record size/alignment/type, geometry, epoch |
//! | 128 | 128 | [`ProducerLine`]: `head` |
//! | 256 | 128 | [`ConsumerLine`]: `tail`, `producer_parked` |
//! | 384 | 128 | [`ProducerState`]: `seq_floor`, drops, wake-ups, the producer's claim |
//! | 512 | 128 | [`ConsumerState`]: `consumer_parked`, wake-ups sent to the producer, the consumer's claim |
//! | 640 | capacity × record size | the records, slot `i % capacity` holds index `i` |
//!
//! All counters start at zero: a fresh memfd reads as zeros, which is a valid control block.

use bytemuck::{Pod, Zeroable};

use crate::sync::{AtomicU32, AtomicU64};

/// Bytes per line: separates data written by different processes.
pub const LINE: usize = 128;
/// `b"EDGEGWRB"`: the first 8 bytes of every ring segment.
pub const MAGIC: [u8; 8] = *b"EDGEGWRB";
/// Bumped whenever anything in this module changes meaning.
pub const LAYOUT_VERSION: u32 = 3;
/// Offset of the control block (the four atomic lines) from the start of the segment.
pub const CONTROL_OFFSET: usize = LINE;
/// Offset of the first record slot.
pub const DATA_OFFSET: usize = LINE * 5;

/// Immutable description of a ring, written once by the creator before anyone attaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Pod, Zeroable)]
#[repr(C)]
pub struct Header {
    /// [`MAGIC`].
    pub magic: [u8; 8],
    /// [`LAYOUT_VERSION`].
    pub layout_version: u32,
    /// `size_of` the record type.
    pub record_size: u32,
    /// `align_of` the record type.
    pub record_align: u32,
    /// [`crate::Sequenced::LAYOUT_ID`] of the record type.
    pub record_layout_id: u32,
    /// Number of record slots; a power of two ≥ 2.
    pub capacity: u64,
    /// Offset of the first slot ([`DATA_OFFSET`]).
    pub data_offset: u64,
    /// Bytes of the segment that belong to the ring.
    pub total_len: u64,
    /// Epoch stamped into every record.
    pub epoch: u64,
    /// Source id of the producer this ring belongs to.
    pub source_id: u32,
    /// [`LINE`], so a build with another line size refuses to attach.
    pub line_size: u32,
    /// Padding to a whole line.
    pub reserved: [u8; 64],
}

const _: () = assert!(size_of::<Header>() == LINE);

/// Written by the producer on every publish; read by the consumer.
#[derive(Debug)]
#[repr(C, align(128))]
pub struct ProducerLine {
    /// Index one past the last published record. Ever increasing; never wraps in practice.
    pub head: AtomicU64,
}

/// Written by the consumer on every release; read by the producer when the ring looks full.
#[derive(Debug)]
#[repr(C, align(128))]
pub struct ConsumerLine {
    /// Index one past the last released record.
    pub tail: AtomicU64,
    /// Non-zero while the producer sleeps (or is about to) waiting for space.
    pub producer_parked: AtomicU32,
}

/// Producer bookkeeping that must outlive a producer process. Counters are written only by the
/// producer that holds the claim, so plain load + store increments suffice.
#[derive(Debug)]
#[repr(C, align(128))]
pub struct ProducerState {
    /// Lower bound of the sequence number the next pushed record gets: stored at a producer's
    /// attach and by `count_dropped`, not per push. The next number is the larger of this and
    /// one past the `seq` of the last published record (slot `head - 1`).
    pub seq_floor: AtomicU64,
    /// Records the producer dropped because the ring was full (each skipped one `seq`).
    pub dropped_full: AtomicU64,
    /// Wake-ups (eventfd writes) the producer sent to a parked consumer.
    pub wakeups_sent: AtomicU64,
    /// The producer's claim: `pid << 32`; 0 when none. Liveness comes from the memfd lock
    /// (see `shm.rs`), not from this word.
    pub producer_claim: AtomicU64,
    /// How many times a producer has claimed this ring.
    pub producer_attaches: AtomicU64,
}

/// The consumer's park word and bookkeeping: written when the consumer parks, claims, or wakes
/// a producer, never while it is busy (see the module's design constraints).
#[derive(Debug)]
#[repr(C, align(128))]
pub struct ConsumerState {
    /// The consumer's park word (bits in `protocol.rs`): parked, "a consumer could not call
    /// membarrier", "the producer publishes with a real fence". Read by the producer on every
    /// publish. Layout version 2 held it beside `head`, version 1 as 0 or 1 only.
    pub consumer_parked: AtomicU32,
    /// Wake-ups the consumer sent to a producer waiting for space.
    pub wakeups_sent: AtomicU64,
    /// The consumer's claim, as for the producer.
    pub consumer_claim: AtomicU64,
}

/// The four atomic lines, in segment order.
#[derive(Debug)]
#[repr(C)]
pub struct ControlBlock {
    /// See [`ProducerLine`].
    pub producer: ProducerLine,
    /// See [`ConsumerLine`].
    pub consumer: ConsumerLine,
    /// See [`ProducerState`].
    pub producer_state: ProducerState,
    /// See [`ConsumerState`].
    pub consumer_state: ConsumerState,
    /// loom only: whether the modelled membarrier works (see `protocol.rs`).
    #[cfg(loom)]
    pub model_membarrier: bool,
}

#[cfg(not(loom))]
const _: () = {
    assert!(size_of::<ControlBlock>() == 4 * LINE);
    assert!(CONTROL_OFFSET + size_of::<ControlBlock>() == DATA_OFFSET);
};

#[cfg(loom)]
impl ControlBlock {
    /// A control block on the heap for the loom models; `membarrier` says whether the
    /// modelled membarrier call succeeds.
    pub fn new_for_model(membarrier: bool) -> Self {
        Self {
            producer: ProducerLine {
                head: AtomicU64::new(0),
            },
            consumer: ConsumerLine {
                tail: AtomicU64::new(0),
                producer_parked: AtomicU32::new(0),
            },
            producer_state: ProducerState {
                seq_floor: AtomicU64::new(0),
                dropped_full: AtomicU64::new(0),
                wakeups_sent: AtomicU64::new(0),
                producer_claim: AtomicU64::new(0),
                producer_attaches: AtomicU64::new(0),
            },
            consumer_state: ConsumerState {
                consumer_parked: AtomicU32::new(0),
                wakeups_sent: AtomicU64::new(0),
                consumer_claim: AtomicU64::new(0),
            },
            model_membarrier: membarrier,
        }
    }
}

/// Geometry of a ring, validated and cached by each side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    /// Slots; a power of two.
    pub capacity: u64,
    /// `capacity - 1`.
    pub mask: u64,
    /// Epoch stamped into records.
    pub epoch: u64,
    /// Source id of the ring's producer.
    pub source_id: u32,
    /// Bytes of the segment used.
    pub total_len: usize,
}

impl Geometry {
    /// Geometry of a new ring of `T`, or why the options cannot make one.
    pub fn for_new<T>(capacity: usize, epoch: u64, source_id: u32) -> Result<Self, String> {
        if capacity < 2 || !capacity.is_power_of_two() {
            return Err(format!(
                "capacity {capacity} must be a power of two and at least 2"
            ));
        }
        if align_of::<T>() > LINE {
            return Err(format!(
                "record alignment {} exceeds {LINE}",
                align_of::<T>()
            ));
        }
        let data = capacity
            .checked_mul(size_of::<T>())
            .and_then(|d| d.checked_add(DATA_OFFSET))
            .ok_or_else(|| format!("capacity {capacity} overflows the address space"))?;
        Ok(Self {
            capacity: capacity as u64,
            mask: capacity as u64 - 1,
            epoch,
            source_id,
            total_len: data,
        })
    }

    /// The header describing this geometry for records of `T`.
    pub fn header<T: crate::Sequenced>(&self) -> Header {
        Header {
            magic: MAGIC,
            layout_version: LAYOUT_VERSION,
            record_size: size_of::<T>() as u32,
            record_align: align_of::<T>() as u32,
            record_layout_id: T::LAYOUT_ID,
            capacity: self.capacity,
            data_offset: DATA_OFFSET as u64,
            total_len: self.total_len as u64,
            epoch: self.epoch,
            source_id: self.source_id,
            line_size: LINE as u32,
            reserved: [0; 64],
        }
    }

    /// Checks a header read from a segment of `segment_len` bytes against records of `T`.
    pub fn from_header<T: crate::Sequenced>(
        h: &Header,
        segment_len: usize,
    ) -> Result<Self, crate::RingAttachError> {
        use crate::RingAttachError as E;
        if h.magic != MAGIC {
            return Err(E::BadMagic { found: h.magic });
        }
        if h.layout_version != LAYOUT_VERSION {
            return Err(E::LayoutVersion {
                found: h.layout_version,
                expected: LAYOUT_VERSION,
            });
        }
        if h.line_size != LINE as u32 {
            return Err(E::Geometry(format!(
                "line size {} (this build uses {LINE})",
                h.line_size
            )));
        }
        if h.record_size != size_of::<T>() as u32
            || h.record_align != align_of::<T>() as u32
            || h.record_layout_id != T::LAYOUT_ID
        {
            return Err(E::RecordType {
                found_size: h.record_size,
                found_layout_id: h.record_layout_id,
                expected_size: size_of::<T>() as u32,
                expected_layout_id: T::LAYOUT_ID,
            });
        }
        if h.data_offset != DATA_OFFSET as u64 {
            return Err(E::Geometry(format!("data offset {}", h.data_offset)));
        }
        let capacity = usize::try_from(h.capacity)
            .map_err(|_| E::Geometry(format!("capacity {}", h.capacity)))?;
        let g = Self::for_new::<T>(capacity, h.epoch, h.source_id).map_err(E::Geometry)?;
        if g.total_len as u64 != h.total_len || g.total_len > segment_len {
            return Err(E::Geometry(format!(
                "ring needs {} bytes, header says {}, segment has {segment_len}",
                g.total_len, h.total_len
            )));
        }
        Ok(g)
    }
}
