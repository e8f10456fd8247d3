//! edge-gateway daemon library.
#![forbid(unsafe_code)]
pub mod adapter;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod demo;
pub mod epoch;
pub mod forward;
pub mod logging;
pub mod relay;
pub mod reload;
pub mod sinks;
pub mod spool;
pub mod stop;
pub mod supervise;
pub mod telemetry;
