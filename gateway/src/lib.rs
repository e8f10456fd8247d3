//! edge-gateway daemon library.
#![forbid(unsafe_code)]
pub mod daemon;
pub mod epoch;
pub mod forward;
pub mod spool;
pub mod supervise;
