//! The MQTT sink: MQTT 3.1.1 through rumqttc, with TLS and mutual TLS (rustls with `ring`),
//! and at-least-once delivery owned by the gateway.
//!
//! # Design constraints
//! - **Acks are matched by the sink.** rumqttc's `publish` returns no packet id (rumqtt #349).
//!   Every publish request pushes its [`BatchId`] on a FIFO; `Outgoing::Publish(pkid)` events
//!   come in request order and file it under its packet id; `Incoming::PubAck(pkid)` then
//!   names the batch ([`SinkEvent::Acked`]). At QoS 0 a batch counts as acknowledged when it is
//!   written to the socket.
//! - **Nothing unacknowledged is kept by rumqttc.** On every connection error the sink hands
//!   back every batch sent and not acknowledged, including those still queued in rumqttc's
//!   request channel ([`SinkEvent::Disconnected`]), and then empties rumqttc's `pending` queue
//!   and replaces its protocol state. Sessions are clean, so the broker keeps none either. No
//!   old publish, packet id or buffered ack can surface in a later connection (rumqttc clears
//!   `pending` itself only when the broker has no session, and never its collision slot or
//!   event buffer). Retransmission is the dispatcher's job: duplicates are possible, losses
//!   are not.
//! - **Backoff.** rumqttc reconnects at once; the sink waits between attempts: `backoff_min_ms`
//!   doubling to `backoff_max_ms`, each delay drawn from `[d/2, d]`, reset on CONNACK.
//! - **A bounded window.** [`BatchSink::ready`] is false once `inflight` batches are
//!   unacknowledged. rumqttc's own in-flight limit is the window plus the two status messages,
//!   its request channel the window plus four, so neither ever blocks a batch the window
//!   admitted. When full, the policy is the caller's: the dispatcher spools.
//! - **Status topic**, retained: `online` after every CONNACK (queued before any batch),
//!   `offline` as the last will and on a clean [`MqttSink::shutdown`].
//! - **No task, no runtime.** The sink owns rumqttc's event loop and polls it inside
//!   [`MqttSink::next_event`]; rumqttc's `poll()` is not cancel-safe (see [`MqttSink`]'s
//!   `Link`), so an unfinished poll is kept in the sink and resumed, never dropped.
//!
//! # Operation
//! One task owns the sink and loops over a `select!`: [`MqttSink::next_event`] in one branch,
//! its other inputs (live batches, a replay tick, a shutdown signal) in others, calling
//! [`BatchSink::send`] from any branch. That is what `crate::forward::run::run_dispatch` does
//! through the [`EventSink`](crate::forward::run::EventSink) trait, which the sink implements:
//!
//! ```no_run
//! # use edgegw::forward::dispatch::{BatchId, BatchSink, SinkEvent};
//! # use edgegw::sinks::mqtt::{MqttConfig, MqttSink};
//! # async fn run(mut batches: tokio::sync::mpsc::Receiver<Vec<u8>>) -> Result<(), Box<dyn std::error::Error>> {
//! let mut sink = MqttSink::new(&MqttConfig::new("broker.local"), "line3-gw")?;
//! let mut next_id = 0;
//! loop {
//!     tokio::select! {
//!         event = sink.next_event() => match event {
//!             SinkEvent::Connected => { /* send the backlog */ }
//!             SinkEvent::Acked(id) => { /* done with id */ }
//!             SinkEvent::Disconnected { unacked } => { /* resend or spool these */ }
//!         },
//!         Some(payload) = batches.recv() => {
//!             next_id += 1;
//!             if !sink.ready() || sink.send(BatchId(next_id), "t", payload).is_err() {
//!                 /* spool it */
//!             }
//!         }
//!         else => break,
//!     }
//! }
//! let report = sink.shutdown(std::time::Duration::from_secs(5)).await;
//! # let _ = report; Ok(()) }
//! ```
//!
//! [`BatchId`]: crate::forward::dispatch::BatchId
//! [`SinkEvent::Acked`]: crate::forward::dispatch::SinkEvent::Acked
//! [`SinkEvent::Disconnected`]: crate::forward::dispatch::SinkEvent::Disconnected
//! [`BatchSink::ready`]: crate::forward::dispatch::BatchSink::ready
//! [`BatchSink::send`]: crate::forward::dispatch::BatchSink::send

mod backoff;
mod config;
mod error;
mod sink;
mod tls;
mod track;

pub use config::{
    MAX_INFLIGHT, MAX_PACKET_SIZE, MqttConfig, MqttTlsConfig, default_backoff_max_ms,
    default_backoff_min_ms, default_inflight, default_keepalive_s, default_max_packet_size,
    default_port, default_qos, default_tls_port,
};
pub use error::{BrokerConnectionError, MqttSetupError};
pub use sink::{
    CLOSE_TIMEOUT, MqttCounters, MqttCountersSnapshot, MqttSink, STATUS_OFFLINE, STATUS_ONLINE,
    ShutdownReport,
};
