//! The forwarder: drains every ring in place, batches per device and poll group, and hands
//! batches to the sink or the spool.

pub mod batch;
pub mod catalog;
pub mod dispatch;
pub mod encode;
