//! Simulators for tests, the demo and benchmarks.
//!
//! - [`synthetic`]: a source adapter that emits counter/ramp/sine/random tags at configured
//!   rates straight into the ring (no device behind it).
//! - [`modbus_server`]: a Modbus TCP slave on tokio-modbus's server, whose registers change
//!   over time; the adapter polls it like a real PLC.

pub mod modbus_server;
pub mod synthetic;

pub use modbus_server::{ModbusSim, SimSignal, SimSpec};
pub use synthetic::{SignalKind, SyntheticConfig, SyntheticSource, SyntheticTagConfig};
