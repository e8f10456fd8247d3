//! The MQTT sink itself: owns rumqttc's client and event loop, turns rumqttc events into
//! [`SinkEvent`]s, reconnects with backoff, and publishes the gateway's status.

use std::collections::VecDeque;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rumqttc::{
    AsyncClient, ConnectionError, Event, EventLoop, LastWill, MqttOptions, MqttState, Outgoing,
    Packet, QoS, TlsConfiguration, Transport,
};
use tokio::time::Instant;

use super::backoff::Backoff;
use super::config::MqttConfig;
use super::error::{BrokerConnectionError, MqttSetupError};
use super::tls;
use super::track::{AckTracker, Acked, Written};
use crate::forward::dispatch::{BatchId, BatchSink, SendRefused, SinkEvent};
use crate::forward::run::EventSink;

/// Status payload published (retained) after every CONNACK.
pub const STATUS_ONLINE: &str = "online";
/// Status payload of the last will, and published (retained) on a clean shutdown.
pub const STATUS_OFFLINE: &str = "offline";
/// How long [`MqttSink::shutdown`] gives the `offline` status and the DISCONNECT, after the
/// grace period for outstanding acknowledgements.
pub const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);
/// Status messages that may be in flight besides the batches (`online`, `offline`).
const STATUS_SLOTS: u16 = 2;
/// Room in rumqttc's request channel besides the window: the status messages and DISCONNECT.
const CHANNEL_SPARE: usize = 4;

/// Counters of the sink, shared with whoever reports metrics ([`MqttSink::counters`]). Only the
/// sink writes them, each where it also logs the event; a sink that replaces another one after
/// a reload continues them ([`MqttSink::continuing`]).
#[derive(Debug, Default)]
pub struct MqttCounters {
    published: AtomicU64,
    acked: AtomicU64,
    in_flight: AtomicU64,
    connects: AtomicU64,
    disconnects: AtomicU64,
    connect_failures: AtomicU64,
    handed_back: AtomicU64,
    refused: AtomicU64,
    unexpected: AtomicU64,
}

/// A reading of [`MqttCounters`].
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct MqttCountersSnapshot {
    /// Batches taken by `send`.
    pub published: u64,
    /// Batches acknowledged (PUBACK; at QoS 0: written to the socket).
    pub acked: u64,
    /// Batches sent and not acknowledged, now.
    pub in_flight: u64,
    /// Connections established (CONNACKs).
    pub connects: u64,
    /// Established connections lost.
    pub disconnects: u64,
    /// Connection attempts that failed (unreachable, TLS, refused).
    pub connect_failures: u64,
    /// Batches handed back unacknowledged after a disconnect, for the dispatcher to resend or
    /// spool (each may reach subscribers twice).
    pub handed_back: u64,
    /// Sends refused although `ready()`: oversized batch, invalid topic, full request channel.
    pub refused: u64,
    /// rumqttc events that matched no request (replays, stray acks); ignored.
    pub unexpected: u64,
}

impl MqttCountersSnapshot {
    /// Connections established after the first one.
    pub fn reconnects(&self) -> u64 {
        self.connects.saturating_sub(1)
    }
}

// Counters only: no other memory is published through them, so `Relaxed` suffices.
fn bump(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

impl MqttCounters {
    /// The counters now.
    pub fn snapshot(&self) -> MqttCountersSnapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        MqttCountersSnapshot {
            published: get(&self.published),
            acked: get(&self.acked),
            in_flight: get(&self.in_flight),
            connects: get(&self.connects),
            disconnects: get(&self.disconnects),
            connect_failures: get(&self.connect_failures),
            handed_back: get(&self.handed_back),
            refused: get(&self.refused),
            unexpected: get(&self.unexpected),
        }
    }
}

/// What [`MqttSink::shutdown`] leaves to the caller.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ShutdownReport {
    /// Batches acknowledged while shutting down (feed them to the dispatcher as
    /// [`SinkEvent::Acked`]).
    pub acked: Vec<BatchId>,
    /// Batches never acknowledged, oldest first: the caller spools them.
    pub unacked: Vec<BatchId>,
    /// Whether the broker acknowledged the retained `offline` status before the DISCONNECT.
    /// When it did not, no DISCONNECT is sent, so the broker publishes the last will instead.
    pub offline_published: bool,
}

type PollFuture =
    Pin<Box<dyn Future<Output = (Box<EventLoop>, Result<Event, ConnectionError>)> + Send>>;

/// rumqttc's event loop, either at rest or inside a `poll()` that has not finished yet. A
/// `poll()` is never dropped half-way (it is not cancel-safe: a cancelled connect drops a
/// half-open connection, a cancelled write drops a packet rumqttc already counts as sent);
/// cancelling [`MqttSink::next_event`] leaves the future here, and the next call resumes it.
enum Link {
    Idle(Box<EventLoop>),
    Polling(PollFuture),
    /// Only between taking the event loop out of `Idle` and putting the future in.
    Moving,
}

/// The MQTT sink. See the module documentation for how to drive it.
pub struct MqttSink {
    broker: String,
    client_id: String,
    client: AsyncClient,
    link: Link,
    /// rumqttc's in-flight limit: the window plus the status messages.
    rumqttc_inflight: u16,
    qos: QoS,
    window: usize,
    status_topic: String,
    max_packet_size: usize,
    connected: bool,
    tracker: AckTracker,
    backoff: Backoff,
    retry_at: Option<Instant>,
    /// Events decided and not yet returned by `next_event`, oldest first.
    queued: VecDeque<SinkEvent>,
    counters: Arc<MqttCounters>,
    last_error: Option<BrokerConnectionError>,
}

impl std::fmt::Debug for MqttSink {
    // By hand: rumqttc's options hold the password, and would print it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MqttSink")
            .field("broker", &self.broker)
            .field("client_id", &self.client_id)
            .field("connected", &self.connected)
            .field("in_flight", &self.tracker.in_flight())
            .field("window", &self.window)
            .field("qos", &self.qos)
            .field("status_topic", &self.status_topic)
            .field("last_error", &self.last_error)
            .finish_non_exhaustive()
    }
}

impl MqttSink {
    /// Builds the sink: validates `config`, reads the password file and the TLS files (errors
    /// name the key and the file), and prepares the client. No network I/O: the first
    /// [`MqttSink::next_event`] connects. `gateway_name` gives the default client id and
    /// status topic. Needs no runtime; `next_event` needs tokio's time driver.
    pub fn new(config: &MqttConfig, gateway_name: &str) -> Result<Self, MqttSetupError> {
        let mut problems = config.problems("mqtt");
        let client_id = config.effective_client_id(gateway_name).to_owned();
        if client_id.is_empty() {
            problems.push((
                "mqtt.client_id".into(),
                "must be set when the gateway name is empty".into(),
            ));
        }
        let status_topic = config.effective_status_topic(gateway_name);
        if config.status_topic.is_none() && status_topic.contains(['+', '#', '\0']) {
            problems.push((
                "mqtt.status_topic".into(),
                format!("the default {status_topic:?} is not a valid topic: set one"),
            ));
        }
        if !problems.is_empty() {
            return Err(MqttSetupError::Invalid(problems));
        }

        let port = config.effective_port();
        let rumqttc_inflight = config.inflight + STATUS_SLOTS;
        let mut options = MqttOptions::new(&client_id, &config.host, port);
        options
            .set_keep_alive(config.keepalive())
            // The gateway owns retransmission; nothing of an old session may come back.
            .set_clean_session(true)
            .set_inflight(rumqttc_inflight)
            .set_max_packet_size(config.max_packet_size, config.max_packet_size)
            .set_last_will(LastWill::new(
                &status_topic,
                STATUS_OFFLINE,
                QoS::AtLeastOnce,
                true,
            ));
        if let Some(user) = &config.username {
            let password = match &config.password_file {
                Some(path) => read_password(path)?,
                None => String::new(),
            };
            options.set_credentials(user, password);
        }
        if let Some(t) = &config.tls {
            let tls_config = tls::client_config(t)?;
            options.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(
                tls_config,
            )));
        }
        let window = usize::from(config.inflight);
        let (client, mut eventloop) = AsyncClient::new(options, window + CHANNEL_SPARE);
        // Small publishes and their acks must not wait for Nagle.
        eventloop.network_options.set_tcp_nodelay(true);

        Ok(Self {
            broker: format!("{}:{port}", config.host),
            client_id,
            client,
            link: Link::Idle(Box::new(eventloop)),
            rumqttc_inflight,
            qos: if config.qos == 0 {
                QoS::AtMostOnce
            } else {
                QoS::AtLeastOnce
            },
            window,
            status_topic,
            max_packet_size: config.max_packet_size,
            connected: false,
            tracker: AckTracker::default(),
            backoff: Backoff::new(
                Duration::from_millis(config.backoff_min_ms),
                Duration::from_millis(config.backoff_max_ms),
            ),
            retry_at: None,
            queued: VecDeque::new(),
            counters: Arc::new(MqttCounters::default()),
            last_error: None,
        })
    }

    /// The counters, shared: read them from any task.
    pub fn counters(&self) -> Arc<MqttCounters> {
        Arc::clone(&self.counters)
    }

    /// Counts into `counters` from now on: the counters of the sink this one replaces, so that
    /// the totals the metrics show stay cumulative for the process. Only one sink may write
    /// them at a time: the replaced one must be shut down before this one is driven (the
    /// daemon does that), and this one must have sent nothing yet.
    pub fn continuing(mut self, counters: Arc<MqttCounters>) -> Self {
        debug_assert_eq!(self.tracker.in_flight(), 0, "a sink that has sent nothing");
        self.counters = counters;
        self
    }

    /// Whether the broker connection is up (CONNACK received, no error since).
    pub fn is_connected(&self) -> bool {
        self.connected
    }

    /// Why the last connection attempt failed or the last connection was lost; cleared by the
    /// next CONNACK.
    pub fn last_error(&self) -> Option<&BrokerConnectionError> {
        self.last_error.as_ref()
    }

    /// The retained status topic.
    pub fn status_topic(&self) -> &str {
        &self.status_topic
    }

    /// `host:port` of the broker.
    pub fn broker(&self) -> &str {
        &self.broker
    }

    /// The next event. Connects, reconnects after the backoff, keeps the connection alive and
    /// matches acknowledgements while it waits; while the broker is unreachable it just keeps
    /// waiting (each failed attempt is logged and counted, and [`MqttSink::last_error`] says
    /// why).
    ///
    /// Cancel-safe: dropping the future loses nothing (the unfinished rumqttc `poll()` and the
    /// backoff deadline are kept in the sink and resumed by the next call), so it can be one
    /// branch of a `select!` whose other branches call [`BatchSink::send`].
    pub async fn next_event(&mut self) -> SinkEvent {
        loop {
            if let Some(event) = self.queued.pop_front() {
                return event;
            }
            if let Some(at) = self.retry_at {
                tokio::time::sleep_until(at).await;
                self.retry_at = None;
            }
            match self.poll_once().await {
                Ok(event) => {
                    if let Some(event) = self.on_event(event) {
                        return event;
                    }
                }
                Err(e) => self.on_error(&e),
            }
        }
    }

    /// Clean shutdown. Waits up to `grace` for outstanding acknowledgements (collecting them),
    /// then publishes the retained `offline` status, waits (at most [`CLOSE_TIMEOUT`]) for
    /// its acknowledgement, and disconnects. If the `offline` status was not acknowledged in
    /// time, it drops the connection without DISCONNECT, so that the broker publishes the last
    /// will (`offline`) instead. Returns what was acknowledged meanwhile and what never was.
    pub async fn shutdown(mut self, grace: Duration) -> ShutdownReport {
        let mut report = ShutdownReport::default();
        let deadline = Instant::now() + grace;
        self.drain_queued(&mut report);
        while self.connected && self.tracker.in_flight() > 0 {
            match tokio::time::timeout_at(deadline, self.next_event()).await {
                Ok(event) => {
                    self.queued.push_front(event);
                    self.drain_queued(&mut report);
                }
                Err(_) => break,
            }
        }
        if self.connected {
            report.offline_published = self.say_goodbye(&mut report).await;
        }
        self.drain_queued(&mut report);
        report.unacked.extend(self.tracker.take_unacked());
        report.unacked.sort_unstable();
        report.unacked.dedup();
        self.counters.in_flight.store(0, Ordering::Relaxed);
        tracing::info!(
            broker = %self.broker,
            acked = report.acked.len(),
            unacked = report.unacked.len(),
            offline_published = report.offline_published,
            "MQTT sink shut down"
        );
        report
    }

    fn drain_queued(&mut self, report: &mut ShutdownReport) {
        for event in self.queued.drain(..) {
            match event {
                SinkEvent::Acked(id) => report.acked.push(id),
                SinkEvent::Disconnected { unacked } => report.unacked.extend(unacked),
                SinkEvent::Connected => {}
            }
        }
    }

    /// `offline`, then DISCONNECT once it is acknowledged. Returns whether it was.
    async fn say_goodbye(&mut self, report: &mut ShutdownReport) -> bool {
        let deadline = Instant::now() + CLOSE_TIMEOUT;
        if let Err(e) =
            self.client
                .try_publish(&self.status_topic, QoS::AtLeastOnce, true, STATUS_OFFLINE)
        {
            tracing::warn!(error = %e, "could not queue the offline status; the last will will say it");
            return false;
        }
        self.tracker.requested(None);
        // Wait for every status message (`online` may still be on its way too).
        while self.connected && self.tracker.status_pending() {
            if !self.step_until(deadline, report).await {
                return false;
            }
        }
        if !self.connected || self.client.try_disconnect().is_err() {
            return false;
        }
        loop {
            match tokio::time::timeout_at(deadline, self.poll_once()).await {
                Ok(Ok(Event::Outgoing(Outgoing::Disconnect))) => return true,
                Ok(Ok(event)) => {
                    if let Some(event) = self.on_event(event) {
                        self.queued.push_back(event);
                        self.drain_queued(report);
                    }
                }
                // The broker closes the connection after DISCONNECT; the packet went out.
                Ok(Err(e)) => {
                    self.on_error(&e);
                    return true;
                }
                Err(_) => return false,
            }
        }
    }

    /// One rumqttc event, handled, before `deadline`; `false` on timeout or connection loss.
    async fn step_until(&mut self, deadline: Instant, report: &mut ShutdownReport) -> bool {
        match tokio::time::timeout_at(deadline, self.poll_once()).await {
            Ok(Ok(event)) => {
                if let Some(event) = self.on_event(event) {
                    self.queued.push_back(event);
                    self.drain_queued(report);
                }
                true
            }
            Ok(Err(e)) => {
                self.on_error(&e);
                self.drain_queued(report);
                false
            }
            Err(_) => false,
        }
    }

    /// One rumqttc `poll()`, resumed if an earlier call was cancelled.
    async fn poll_once(&mut self) -> Result<Event, ConnectionError> {
        if matches!(self.link, Link::Idle(_)) {
            let Link::Idle(mut eventloop) = std::mem::replace(&mut self.link, Link::Moving) else {
                unreachable!("checked just above")
            };
            self.link = Link::Polling(Box::pin(async move {
                let result = eventloop.poll().await;
                (eventloop, result)
            }));
        }
        let Link::Polling(poll) = &mut self.link else {
            unreachable!("the event loop is either idle or polling between calls")
        };
        let (eventloop, result) = poll.await;
        self.link = Link::Idle(eventloop);
        result
    }

    fn on_event(&mut self, event: Event) -> Option<SinkEvent> {
        match event {
            Event::Incoming(Packet::ConnAck(_)) => Some(self.on_connack()),
            Event::Outgoing(Outgoing::Publish(pkid)) => match self.tracker.written(pkid) {
                Written::AckedAtMostOnce(id) => Some(self.acked(id)),
                Written::AwaitingAck | Written::Status => None,
                Written::Unexpected => {
                    bump(&self.counters.unexpected, 1);
                    tracing::warn!(pkid, "rumqttc wrote a publish nobody requested; ignored");
                    None
                }
            },
            Event::Incoming(Packet::PubAck(ack)) => match self.tracker.puback(ack.pkid) {
                Acked::Batch(id) => Some(self.acked(id)),
                Acked::Status => None,
                Acked::Unknown => {
                    bump(&self.counters.unexpected, 1);
                    tracing::debug!(pkid = ack.pkid, "PUBACK for no publish in flight; ignored");
                    None
                }
            },
            _ => None,
        }
    }

    fn on_connack(&mut self) -> SinkEvent {
        self.connected = true;
        self.backoff.reset();
        self.last_error = None;
        bump(&self.counters.connects, 1);
        tracing::info!(broker = %self.broker, client_id = %self.client_id, "connected to the MQTT broker");
        // First in the request channel, so it goes out before any batch.
        match self
            .client
            .try_publish(&self.status_topic, QoS::AtLeastOnce, true, STATUS_ONLINE)
        {
            Ok(()) => self.tracker.requested(None),
            Err(e) => tracing::warn!(error = %e, "could not queue the online status"),
        }
        SinkEvent::Connected
    }

    fn acked(&mut self, id: BatchId) -> SinkEvent {
        bump(&self.counters.acked, 1);
        self.sync_in_flight();
        SinkEvent::Acked(id)
    }

    fn sync_in_flight(&self) {
        self.counters
            .in_flight
            .store(self.tracker.in_flight() as u64, Ordering::Relaxed);
    }

    /// A connection attempt failed or the connection was lost: hand back every batch not
    /// acknowledged, make sure rumqttc keeps nothing it could resend on its own, and schedule
    /// the next attempt.
    fn on_error(&mut self, e: &ConnectionError) {
        let was_connected = std::mem::replace(&mut self.connected, false);
        let error = BrokerConnectionError::classify(&self.broker, was_connected, e);
        let Link::Idle(eventloop) = &mut self.link else {
            unreachable!("errors come from a finished poll")
        };
        let buffered = std::mem::take(&mut eventloop.state.events);
        // rumqttc moved its unacked publishes and queued requests to `pending`, and would send
        // them again if the broker kept a session. The gateway resends instead: drop them (with
        // anything still in the request channel) and start from a fresh protocol state, so no
        // old packet id, collision or buffered event can leak into the next connection.
        eventloop.clean();
        eventloop.pending.clear();
        eventloop.state = MqttState::new(self.rumqttc_inflight, false);

        // PUBACKs read in the same bulk read as the failure were still buffered: honour them.
        // A buffered `Outgoing::Publish` is not honoured: its write is what failed.
        for event in buffered {
            if let Event::Incoming(Packet::PubAck(ack)) = event
                && let Acked::Batch(id) = self.tracker.puback(ack.pkid)
            {
                let acked = self.acked(id);
                self.queued.push_back(acked);
            }
        }

        let unacked = self.tracker.take_unacked();
        self.sync_in_flight();
        let delay = self.backoff.next_delay();
        self.retry_at = Some(Instant::now() + delay);
        let retry_in_ms = delay.as_millis() as u64;
        if was_connected {
            bump(&self.counters.disconnects, 1);
            bump(&self.counters.handed_back, unacked.len() as u64);
            tracing::warn!(error = %error, unacked = unacked.len(), retry_in_ms, "MQTT connection lost; unacknowledged batches handed back");
        } else {
            bump(&self.counters.connect_failures, 1);
            bump(&self.counters.handed_back, unacked.len() as u64);
            if self.last_error.as_ref() == Some(&error) {
                tracing::debug!(error = %error, retry_in_ms, "MQTT connection attempt failed again");
            } else {
                tracing::warn!(error = %error, retry_in_ms, "MQTT connection attempt failed");
            }
        }
        self.last_error = Some(error);
        if was_connected || !unacked.is_empty() {
            self.queued.push_back(SinkEvent::Disconnected { unacked });
        }
    }
}

/// The password: the file's first line without its line end.
fn read_password(path: &Path) -> Result<String, MqttSetupError> {
    let bytes = std::fs::read(path).map_err(|source| MqttSetupError::ReadFile {
        key: "mqtt.password_file",
        path: path.to_owned(),
        source,
    })?;
    let text = String::from_utf8(bytes).map_err(|_| MqttSetupError::Password {
        path: path.to_owned(),
        why: "is not UTF-8",
    })?;
    match text.lines().next() {
        Some(line) if !line.is_empty() => Ok(line.to_owned()),
        _ => Err(MqttSetupError::Password {
            path: path.to_owned(),
            why: "is empty (the password is its first line)",
        }),
    }
}

impl BatchSink for MqttSink {
    fn ready(&self) -> bool {
        self.connected && self.tracker.in_flight() < self.window
    }

    /// Queues the batch in rumqttc's request channel; never waits for the network. Refused
    /// when not [`BatchSink::ready`], when the packet would exceed `max_packet_size` (rumqttc
    /// would otherwise fail the whole connection on it), for a topic with wildcards, or when
    /// the channel is full.
    fn send(&mut self, id: BatchId, topic: &str, payload: Vec<u8>) -> Result<(), SendRefused> {
        if !self.ready() {
            return Err(SendRefused);
        }
        // Fixed header (at most 5 bytes), topic length and topic, packet id, payload.
        let size = 5 + 2 + topic.len() + 2 + payload.len();
        if size > self.max_packet_size {
            bump(&self.counters.refused, 1);
            tracing::warn!(
                topic,
                bytes = size,
                max_packet_size = self.max_packet_size,
                "batch larger than mqtt.max_packet_size refused"
            );
            return Err(SendRefused);
        }
        if let Err(e) = self.client.try_publish(topic, self.qos, false, payload) {
            bump(&self.counters.refused, 1);
            tracing::warn!(topic, error = %e, "batch refused by the MQTT client");
            return Err(SendRefused);
        }
        self.tracker.requested(Some(id));
        bump(&self.counters.published, 1);
        self.sync_in_flight();
        Ok(())
    }

    fn in_flight(&self) -> usize {
        self.tracker.in_flight()
    }

    fn window(&self) -> usize {
        self.window
    }
}

impl EventSink for MqttSink {
    async fn next_event(&mut self) -> SinkEvent {
        MqttSink::next_event(self).await
    }

    async fn close(self, grace: Duration) {
        let report = self.shutdown(grace).await;
        if !report.unacked.is_empty() {
            tracing::debug!(
                batches = report.unacked.len(),
                "batches unacknowledged at close (the dispatch loop spooled them)"
            );
        }
    }
}
