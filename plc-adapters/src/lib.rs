//! PLC adapters for edge-gateway: read plant devices, emit telemetry records into the ring.
//!
//! # Main types and how data moves
//! ```text
//! TOML ─▶ config::AdapterConfig ──resolve()──▶ modbus::ResolvedConfig { links: [ModbusLink] }
//!                (raw, validated)                     │ each device: tags + plan (PollGroup → PlannedRead)
//!                                                     ▼
//! PLC ◀─ tokio-modbus ─▶ modbus::run_link (one task per link) ─▶ modbus::decode ─▶ Reading
//!                                                     │                           │
//!                                  Quality (good / uncertain / bad + reason) ◀────┘
//!                                                     ▼
//!                         tag::ReportFilter (deadband, heartbeat, quality change)
//!                                                     ▼
//!                         emit::Emitter ─▶ edgegw_ringbuf::Producer ─▶ ring ─▶ gateway forwarder
//! ```
//! - [`tag`]: the tag model shared by all adapters — [`Tag`], [`DataType`], [`ByteOrder`],
//!   scaling, [`Deadband`], and the per-tag report-by-exception state [`ReportFilter`].
//! - [`quality`]: [`Quality`] and its `(u16, u32)` encoding in a record.
//! - [`emit`]: [`Emitter`], which builds records and applies the ring-full policy (bounded wait,
//!   then drop and count).
//! - [`config`]: raw configuration and validation with key paths; [`modbus::config`] resolves it.
//! - [`modbus`]: planning, decoding and the poller ([`modbus::run_link`], the entry point the
//!   gateway calls in its adapter child process).
//! - [`sim`]: a synthetic source (counter/ramp/sine/random at ≥ 1 M records/s) and a Modbus TCP
//!   slave simulator for tests, the demo and benchmarks.
#![forbid(unsafe_code)]

pub mod config;
pub mod emit;
pub mod modbus;
pub mod quality;
pub mod sim;
pub mod tag;

pub use config::{AdapterConfig, ConfigInvalidError, ConfigProblem};
pub use emit::{EmitStats, Emitter, FullPolicy, RecordSink, VecSink};
pub use quality::{BadReason, Quality, UncertainReason};
pub use tag::{ByteOrder, DataType, Deadband, Reading, ReportFilter, Scaling, Table, Tag};
