//! Sinks: where acknowledged telemetry leaves the gateway.
//!
//! A sink implements [`BatchSink`] (take a rendered batch without waiting for the network,
//! say whether the in-flight window has room) and reports [`SinkEvent`]s (connected, a batch
//! acknowledged, disconnected with the batches it hands back) through a cancel-safe
//! `next_event`, i.e. [`EventSink`]. The dispatcher (`crate::forward::dispatch`) owns
//! at-least-once delivery on top of that: it resends or spools whatever a sink hands back.
//!
//! Every sink is a folder of the same shape: `mod.rs` (the public face), `config.rs` (serde
//! section, defaults, validation without I/O), the working part, the I/O part.
//!
//! - [`mqtt`]: MQTT 3.1.1 through rumqttc, TLS/mTLS, retained status topic.
//! - (next) `kafka`: the same two traits over a Kafka producer.
//!
//! [`BatchSink`]: crate::forward::dispatch::BatchSink
//! [`SinkEvent`]: crate::forward::dispatch::SinkEvent
//! [`EventSink`]: crate::forward::run::EventSink

pub mod mqtt;

pub use mqtt::{MqttConfig, MqttSink};
