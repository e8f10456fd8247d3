//! The MQTT sink (MQTT 3.1.1 through rumqttc): batches out, acknowledgements back, and
//! at-least-once delivery owned by the gateway.
//!
//! # Design constraints
//! - rumqttc's `publish` returns no packet id, and with a clean session it silently clears
//!   what it had not delivered when it reconnects (see FIELD_NOTES). So the sink matches acks
//!   itself: every publish request pushes its batch id on a FIFO; `Outgoing::Publish(pkid)`
//!   events come in request order and pop it; `PubAck(pkid)` then names the batch.
//! - On any connection error every batch sent or queued and not acknowledged is handed back
//!   (`SinkEvent::Disconnected`), and the client and its event loop are thrown away and
//!   rebuilt: requests still queued in the old channel can never be sent late and confuse the
//!   FIFO, and the new connection starts with nothing of rumqttc's own to retransmit.
//! - rumqttc reconnects immediately; the sink waits an exponential backoff with jitter between
//!   attempts (100 ms doubling to 30 s by default, reset on CONNACK).
//! - The event loop runs in its own task and reports raw events over a channel, so
//!   [`MqttSink::next_event`] is cancel-safe. That channel is unbounded but carries at most two
//!   events per publish in flight, and the window bounds those.
//! - Status topic, retained: `online` after every CONNACK, `offline` as the last will and on a
//!   clean shutdown.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use rand::RngExt as _;
use rumqttc::{AsyncClient, Event, EventLoop, LastWill, MqttOptions, Outgoing, Packet, QoS};
use tokio::sync::mpsc;

use crate::forward::dispatch::{BatchId, BatchSink, SendRefused, SinkEvent};
use crate::forward::run::EventSink;

/// Settings of the MQTT sink.
#[derive(Debug, Clone, PartialEq)]
pub struct MqttSettings {
    /// Broker host.
    pub host: String,
    /// Broker port.
    pub port: u16,
    /// Client id.
    pub client_id: String,
    /// Username and password, if the broker wants them. The password never appears in logs.
    pub credentials: Option<(String, Secret)>,
    /// Keepalive.
    pub keepalive: Duration,
    /// QoS of batches (0 or 1).
    pub qos: u8,
    /// Batches in flight at most.
    pub window: usize,
    /// Retained status topic (`online` / `offline`).
    pub status_topic: String,
    /// First reconnect delay.
    pub backoff_min: Duration,
    /// Largest reconnect delay.
    pub backoff_max: Duration,
    /// Largest packet in either direction, bytes.
    pub max_packet: usize,
}

/// A string that never prints.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl MqttSettings {
    /// Plain-TCP settings with the defaults.
    pub fn new(host: &str, port: u16, client_id: &str, status_topic: &str) -> Self {
        Self {
            host: host.to_owned(),
            port,
            client_id: client_id.to_owned(),
            credentials: None,
            keepalive: Duration::from_secs(15),
            qos: 1,
            window: 64,
            status_topic: status_topic.to_owned(),
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(30),
            max_packet: 4 * 1024 * 1024,
        }
    }
}

/// Counters of the sink.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct MqttCounters {
    /// Batches published.
    pub published: u64,
    /// Batches acknowledged.
    pub acked: u64,
    /// Connections lost.
    pub disconnects: u64,
    /// Batches handed back unacknowledged (to be resent or spooled).
    pub handed_back: u64,
}

enum Raw {
    ConnAck,
    Outgoing(u16),
    PubAck(u16),
    Error(String),
}

/// The MQTT sink.
pub struct MqttSink {
    settings: MqttSettings,
    client: AsyncClient,
    raw: mpsc::UnboundedReceiver<Raw>,
    task: tokio::task::JoinHandle<()>,
    connected: bool,
    /// Publish requests whose `Outgoing` event has not come yet; `None` for the status.
    requested: VecDeque<Option<BatchId>>,
    /// Packet id → batch, between `Outgoing` and `PubAck`.
    outgoing: HashMap<u16, Option<BatchId>>,
    in_flight: usize,
    backoff: Duration,
    counters: MqttCounters,
}

impl std::fmt::Debug for MqttSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MqttSink")
            .field(
                "broker",
                &format_args!("{}:{}", self.settings.host, self.settings.port),
            )
            .field("connected", &self.connected)
            .field("in_flight", &self.in_flight)
            .finish()
    }
}

impl MqttSink {
    /// Starts connecting (in the background) to the broker.
    pub fn start(settings: MqttSettings) -> Self {
        let (client, raw, task) = connect(&settings, Duration::ZERO);
        Self {
            backoff: settings.backoff_min,
            settings,
            client,
            raw,
            task,
            connected: false,
            requested: VecDeque::new(),
            outgoing: HashMap::new(),
            in_flight: 0,
            counters: MqttCounters::default(),
        }
    }

    /// Counters so far.
    pub fn counters(&self) -> MqttCounters {
        self.counters
    }

    /// Whether the broker connection is up.
    pub fn is_connected(&self) -> bool {
        self.connected
    }

    fn qos(&self) -> QoS {
        if self.settings.qos == 0 {
            QoS::AtMostOnce
        } else {
            QoS::AtLeastOnce
        }
    }

    fn ack(&mut self, id: BatchId) -> SinkEvent {
        self.in_flight = self.in_flight.saturating_sub(1);
        self.counters.acked += 1;
        SinkEvent::Acked(id)
    }
}

fn connect(
    s: &MqttSettings,
    delay: Duration,
) -> (
    AsyncClient,
    mpsc::UnboundedReceiver<Raw>,
    tokio::task::JoinHandle<()>,
) {
    let mut opts = MqttOptions::new(&s.client_id, &s.host, s.port);
    opts.set_keep_alive(s.keepalive)
        .set_clean_session(true)
        .set_inflight(s.window.clamp(1, u16::MAX as usize) as u16)
        .set_max_packet_size(s.max_packet, s.max_packet)
        .set_last_will(LastWill::new(
            &s.status_topic,
            "offline",
            QoS::AtLeastOnce,
            true,
        ));
    if let Some((user, password)) = &s.credentials {
        opts.set_credentials(user, &password.0);
    }
    // Room for the window plus the status messages.
    let (client, eventloop) = AsyncClient::new(opts, s.window + 8);
    let (tx, rx) = mpsc::unbounded_channel();
    let task = tokio::spawn(drive(eventloop, tx, delay));
    (client, rx, task)
}

async fn drive(mut eventloop: EventLoop, tx: mpsc::UnboundedSender<Raw>, delay: Duration) {
    tokio::time::sleep(delay).await;
    loop {
        let raw = match eventloop.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(_))) => Raw::ConnAck,
            Ok(Event::Incoming(Packet::PubAck(ack))) => Raw::PubAck(ack.pkid),
            Ok(Event::Outgoing(Outgoing::Publish(pkid))) => Raw::Outgoing(pkid),
            Ok(_) => continue,
            Err(e) => {
                let _ = tx.send(Raw::Error(e.to_string()));
                return;
            }
        };
        if tx.send(raw).is_err() {
            return;
        }
    }
}

impl BatchSink for MqttSink {
    fn ready(&self) -> bool {
        self.connected && self.in_flight < self.settings.window
    }

    fn send(&mut self, id: BatchId, topic: &str, payload: Vec<u8>) -> Result<(), SendRefused> {
        if !self.ready() {
            return Err(SendRefused);
        }
        self.client
            .try_publish(topic, self.qos(), false, payload)
            .map_err(|_| SendRefused)?;
        self.requested.push_back(Some(id));
        self.in_flight += 1;
        self.counters.published += 1;
        Ok(())
    }

    fn in_flight(&self) -> usize {
        self.in_flight
    }

    fn window(&self) -> usize {
        self.settings.window
    }
}

impl EventSink for MqttSink {
    async fn next_event(&mut self) -> SinkEvent {
        loop {
            let raw = self
                .raw
                .recv()
                .await
                .unwrap_or(Raw::Error("event loop ended".into()));
            match raw {
                Raw::ConnAck => {
                    self.connected = true;
                    self.backoff = self.settings.backoff_min;
                    tracing::info!(broker = %format_args!("{}:{}", self.settings.host, self.settings.port), "connected to the broker");
                    if self
                        .client
                        .try_publish(
                            &self.settings.status_topic,
                            QoS::AtLeastOnce,
                            true,
                            "online",
                        )
                        .is_ok()
                    {
                        self.requested.push_back(None);
                    }
                    return SinkEvent::Connected;
                }
                Raw::Outgoing(pkid) => {
                    let id = self.requested.pop_front().flatten();
                    if pkid == 0 {
                        // QoS 0: written is all the acknowledgement there will be.
                        if let Some(id) = id {
                            return self.ack(id);
                        }
                    } else {
                        self.outgoing.insert(pkid, id);
                    }
                }
                Raw::PubAck(pkid) => {
                    if let Some(Some(id)) = self.outgoing.remove(&pkid) {
                        return self.ack(id);
                    }
                }
                Raw::Error(e) => {
                    let unacked: Vec<BatchId> = self
                        .requested
                        .drain(..)
                        .chain(self.outgoing.drain().map(|(_, id)| id))
                        .flatten()
                        .collect();
                    self.in_flight = 0;
                    self.counters.disconnects += u64::from(self.connected);
                    self.counters.handed_back += unacked.len() as u64;
                    let delay = self.backoff.mul_f64(rand::rng().random_range(0.75..1.25));
                    if self.connected {
                        tracing::warn!(error = %e, unacked = unacked.len(), "broker connection lost; reconnecting");
                    } else {
                        tracing::debug!(error = %e, retry_in_ms = delay.as_millis() as u64, "broker not reachable");
                    }
                    self.connected = false;
                    self.backoff = (self.backoff * 2).min(self.settings.backoff_max);
                    self.task.abort();
                    (self.client, self.raw, self.task) = connect(&self.settings, delay);
                    return SinkEvent::Disconnected { unacked };
                }
            }
        }
    }

    async fn close(mut self, grace: Duration) {
        if self.connected {
            let _ = self.client.try_publish(
                &self.settings.status_topic,
                QoS::AtLeastOnce,
                true,
                "offline",
            );
            self.requested.push_back(None);
            // Wait for the offline status to be acknowledged, then say goodbye.
            let _ = tokio::time::timeout(grace, async {
                while !self.requested.is_empty() || !self.outgoing.is_empty() {
                    match self.raw.recv().await {
                        Some(Raw::Outgoing(pkid)) => {
                            let id = self.requested.pop_front().flatten();
                            self.outgoing.insert(pkid, id);
                        }
                        Some(Raw::PubAck(pkid)) => {
                            self.outgoing.remove(&pkid);
                        }
                        Some(Raw::ConnAck) => {}
                        Some(Raw::Error(_)) | None => break,
                    }
                }
            })
            .await;
            let _ = self.client.try_disconnect();
            let _ = tokio::time::timeout(Duration::from_millis(500), &mut self.task).await;
        }
        self.task.abort();
    }
}
