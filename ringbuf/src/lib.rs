//! Zero-copy single-producer rings in anonymous shared memory.
//!
//! Each PLC adapter process writes fixed-size [`TelemetryRecord`]s into its own ring; the
//! forwarder in the gateway process reads them in place. Data moves like this:
//!
//! ```text
//!  adapter process                         gateway process
//!  Producer::try_push ──► slot[head] ──► Consumer::read ──► &[T] in the mapping ──► release
//!        │ publish head                          ▲ park on eventfd when empty
//!        └─ eventfd write only if parked ────────┘
//! ```
//!
//! - [`SharedRing`] owns one segment: a sealed memfd mapped `MAP_SHARED` (see `shm.rs`), plus
//!   an eventfd per wake-up direction. It is created by the gateway and handed to an adapter
//!   by `fork` or by exec ([`SharedRing::pass_to_child`] / [`SharedRing::from_inherited`]).
//! - [`Producer`] pushes and stamps each record with the ring's epoch and the next sequence
//!   number, kept in shared memory so a restarted producer continues it. A full ring hands the
//!   record back ([`Full`]); the caller waits ([`Producer::push_timeout`]) or drops and counts
//!   ([`Producer::count_dropped`], which also skips the sequence numbers so the loss shows).
//! - [`Consumer`] reads everything published as up to two slices ([`ReadBatch`]), then
//!   releases them. It parks on the eventfd when empty, blocking ([`Consumer::wait`]) or in
//!   tokio ([`Consumer::readable`], feature `tokio`).
//! - [`RingStats`] exposes the counters kept in shared memory (pushed, dropped as full,
//!   wake-ups sent); [`SharedRing::producer_status`] tells whether the producer is alive.
//! - [`CpuLatencyRequest`] (opt-in) keeps idle CPUs in shallow sleep through Linux PM QoS, so
//!   a parked consumer is woken sooner, at the cost of power (see `cpu_latency.rs`).
//!
//! Crash semantics: a record becomes visible only when `head` moves past it, after it was
//! written in full, so a producer killed at any instruction never exposes a torn record. The
//! layout is in `layout.rs`, the index and park protocol (the part loom checks) in
//! `protocol.rs`.
#![deny(unsafe_op_in_unsafe_fn)]
#![deny(clippy::undocumented_unsafe_blocks)]
#![cfg_attr(loom, allow(dead_code, unused_imports))]

mod error;
mod layout;
mod protocol;
mod record;
mod sync;

#[cfg(not(loom))]
mod consumer;
#[cfg(not(loom))]
mod cpu_latency;
#[cfg(not(loom))]
mod membarrier;
#[cfg(not(loom))]
mod prefetch;
#[cfg(not(loom))]
mod producer;
#[cfg(not(loom))]
mod shm;
#[cfg(not(loom))]
mod wake;

#[cfg(all(test, loom))]
mod loom_model;

pub use error::{
    Full, RingAttachError, RingClaimError, RingCorruptError, RingCreateError, RingWaitError,
};
pub use layout::{Header, LAYOUT_VERSION, MAGIC};
pub use record::{Sequenced, TelemetryRecord, Value, ValueKind, flags};

#[cfg(not(loom))]
pub use consumer::{Consumer, DEFAULT_SPIN_LIMIT, ReadBatch};
#[cfg(not(loom))]
pub use cpu_latency::{CPU_LATENCY_DEVICE, CpuLatencyError, CpuLatencyRequest, cpu_latency_limit};
#[cfg(not(loom))]
pub use producer::Producer;
#[cfg(not(loom))]
pub use shm::{PeerStatus, RING_FDS_ENV, RingOptions, RingStats, SharedRing};
