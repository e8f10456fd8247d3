//! The forwarder: drains every ring in place, batches per device and poll group, and hands
//! batches to the sink or the spool.
//!
//! ```text
//! ring ──Consumer::read (in place)──▶ Batcher (per group) ──Batch──▶ Dispatcher ──▶ sink
//!                                                                        │  ▲
//!                                                             spill/back ▼  │ replay (FIFO)
//!                                                                     SpoolBridge ─ SQLite
//! ```

pub mod batch;
pub mod catalog;
pub mod dispatch;
pub mod encode;
pub mod run;
pub mod spooling;
