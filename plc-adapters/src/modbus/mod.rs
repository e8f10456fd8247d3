//! Modbus TCP and RTU: configuration, request planning, decoding and the poller.
//!
//! Data path: [`config`] resolves devices into [`ModbusLink`]s with a [`plan`] of reads per
//! poll group → [`poll`] runs one task per link, issuing the reads through tokio-modbus →
//! [`decode`] turns registers into readings → report-by-exception
//! ([`ReportFilter`](crate::tag::ReportFilter)) → [`Emitter`](crate::emit::Emitter) → ring.

pub mod config;
pub mod decode;
pub mod plan;
pub mod poll;

pub use config::{Backoff, ModbusDevice, ModbusLink, ResolvedConfig, SerialSettings, Transport};
pub use decode::{DecodeError, RegisterCodec, decode_bit, decode_registers, encode_number};
pub use plan::{PlanLimits, PlannedRead, PollGroup, TagSlot, plan_group};
pub use poll::{LinkCounters, LinkStats, run_link};
