//! The one place atomics come from: `std` normally, `loom` under `RUSTFLAGS="--cfg loom"`, so the
//! model checker explores the very protocol code the rings run.

#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{AtomicU32, AtomicU64, Ordering, compiler_fence, fence};

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicU32, AtomicU64, Ordering, fence};
