//! Placeholder; the ring lands shortly. See record.rs for the record type.
pub mod record;
pub use record::{Sequenced, TelemetryRecord, Value, ValueKind, flags};
