//! The MQTT sink against a real mosquitto: acknowledgements, the in-flight window, and a broker
//! SIGKILLed mid-stream.

#[path = "common/mosquitto.rs"]
mod mosquitto;

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::time::Duration;

use edgegw::forward::dispatch::{BatchId, BatchSink, SendRefused, SinkEvent};
use edgegw::sinks::mqtt::{MqttConfig, MqttSink};
use mosquitto::{BrokerOptions, Mosquitto, Received, Subscriber, SubscriberOptions};
use tokio::time::{Instant, timeout};

fn config(port: u16) -> MqttConfig {
    let mut c = MqttConfig::new("127.0.0.1");
    c.port = Some(port);
    c.keepalive_s = 5;
    c.backoff_min_ms = 50;
    c.backoff_max_ms = 500;
    c
}

async fn until_connected(sink: &mut MqttSink) {
    timeout(Duration::from_secs(10), async {
        while sink.next_event().await != SinkEvent::Connected {}
    })
    .await
    .unwrap_or_else(|_| panic!("not connected within 10 s: {:?}", sink.last_error()));
}

fn payload(id: BatchId) -> Vec<u8> {
    id.0.to_string().into_bytes()
}

fn id_of(payload: &[u8]) -> u64 {
    std::str::from_utf8(payload).unwrap().parse().unwrap()
}

/// Collects the ids the subscriber has seen until all of `1..=n` are there, within `within`.
/// Returns (distinct ids, messages received).
async fn received_all(sub: &mut Subscriber, n: u64, within: Duration) -> (BTreeSet<u64>, u64) {
    let mut seen = Seen::default();
    seen.until_all(sub, n, within).await;
    (seen.ids, seen.messages)
}

/// What the subscriber has received so far: distinct ids and the number of messages.
#[derive(Default)]
struct Seen {
    ids: BTreeSet<u64>,
    messages: u64,
}

impl Seen {
    fn take(&mut self, m: &Received) {
        self.messages += 1;
        self.ids.insert(id_of(&m.payload));
    }

    /// Takes in whatever has arrived, without waiting.
    fn drain(&mut self, sub: &mut Subscriber) {
        while let Ok(m) = sub.rx.try_recv() {
            self.take(&m);
        }
    }

    /// Receives until all of `1..=n` are there, or `within` has passed.
    async fn until_all(&mut self, sub: &mut Subscriber, n: u64, within: Duration) {
        let deadline = Instant::now() + within;
        while self.ids.len() < n as usize {
            match tokio::time::timeout_at(deadline, sub.rx.recv()).await {
                Ok(Some(m)) => self.take(&m),
                _ => break,
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qos1_batches_are_each_acked_exactly_once() {
    let broker = Mosquitto::start(&BrokerOptions::default());
    let mut sub = Subscriber::start(broker.port, "t/#", SubscriberOptions::default());
    sub.wait_subscribed(0, Duration::from_secs(10)).await;
    let mut cfg = config(broker.port);
    cfg.inflight = 16;
    let mut sink = MqttSink::new(&cfg, "test").unwrap();
    assert!(!sink.ready(), "not ready before the first CONNACK");
    assert_eq!(
        sink.send(BatchId(0), "t/x", vec![]),
        Err(SendRefused),
        "refused while disconnected"
    );
    until_connected(&mut sink).await;

    const N: u64 = 2000;
    let mut next = 1;
    let mut acks: HashMap<BatchId, u32> = HashMap::new();
    timeout(Duration::from_secs(30), async {
        while acks.len() < N as usize {
            while sink.ready() && next <= N {
                let id = BatchId(next);
                sink.send(id, &format!("t/{}", next % 7), payload(id))
                    .expect("ready, so taken");
                next += 1;
            }
            assert!(sink.in_flight() <= sink.window());
            match sink.next_event().await {
                SinkEvent::Acked(id) => *acks.entry(id).or_default() += 1,
                other => panic!("unexpected {other:?}"),
            }
        }
    })
    .await
    .expect("all acked within 30 s");
    assert!(
        acks.values().all(|&n| n == 1),
        "every batch acked exactly once"
    );
    assert_eq!(
        acks.keys().map(|b| b.0).collect::<BTreeSet<_>>(),
        (1..=N).collect()
    );
    assert_eq!(sink.in_flight(), 0);
    let c = sink.counters().snapshot();
    assert_eq!((c.published, c.acked, c.in_flight), (N, N, 0));
    assert_eq!((c.connects, c.disconnects, c.handed_back), (1, 0, 0));

    let (seen, messages) = received_all(&mut sub, N, Duration::from_secs(10)).await;
    assert_eq!(seen, (1..=N).collect(), "subscriber got every batch");
    assert_eq!(messages, N, "and each once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qos0_batches_are_acked_when_written() {
    let broker = Mosquitto::start(&BrokerOptions::default());
    let mut sub = Subscriber::start(broker.port, "t/#", SubscriberOptions::default());
    sub.wait_subscribed(0, Duration::from_secs(10)).await;
    let mut cfg = config(broker.port);
    cfg.qos = 0;
    let mut sink = MqttSink::new(&cfg, "test").unwrap();
    until_connected(&mut sink).await;
    for i in 1..=10 {
        sink.send(BatchId(i), "t/q0", payload(BatchId(i))).unwrap();
    }
    let mut acked = Vec::new();
    timeout(Duration::from_secs(10), async {
        while acked.len() < 10 {
            if let SinkEvent::Acked(id) = sink.next_event().await {
                acked.push(id.0);
            }
        }
    })
    .await
    .expect("QoS 0 batches acked once written");
    assert_eq!(acked, (1..=10).collect::<Vec<_>>(), "in send order");
    let (seen, _) = received_all(&mut sub, 10, Duration::from_secs(5)).await;
    assert_eq!(seen.len(), 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_window_makes_the_sink_unready_and_refuse() {
    let broker = Mosquitto::start(&BrokerOptions::default());
    let mut cfg = config(broker.port);
    cfg.inflight = 4;
    let mut sink = MqttSink::new(&cfg, "test").unwrap();
    until_connected(&mut sink).await;
    assert_eq!(sink.window(), 4);
    for i in 1..=4 {
        assert!(sink.ready());
        sink.send(BatchId(i), "t/w", payload(BatchId(i))).unwrap();
    }
    // Nothing is acknowledged while nobody polls: the window is full.
    assert_eq!(sink.in_flight(), 4);
    assert!(!sink.ready(), "window full");
    assert_eq!(
        sink.send(BatchId(5), "t/w", payload(BatchId(5))),
        Err(SendRefused)
    );
    let mut acked = 0;
    timeout(Duration::from_secs(10), async {
        while acked < 4 {
            if let SinkEvent::Acked(_) = sink.next_event().await {
                acked += 1;
            }
        }
    })
    .await
    .expect("acks within 10 s");
    assert!(sink.ready(), "room again");
    sink.send(BatchId(5), "t/w", payload(BatchId(5))).unwrap();
    assert_eq!(sink.counters().snapshot().published, 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_batches_are_refused_without_hurting_the_connection() {
    let broker = Mosquitto::start(&BrokerOptions::default());
    let mut cfg = config(broker.port);
    cfg.max_packet_size = 4096;
    let mut sink = MqttSink::new(&cfg, "test").unwrap();
    until_connected(&mut sink).await;
    assert_eq!(
        sink.send(BatchId(1), "t/big", vec![b'x'; 5000]),
        Err(SendRefused)
    );
    assert_eq!(sink.counters().snapshot().refused, 1);
    sink.send(BatchId(2), "t/small", payload(BatchId(2)))
        .unwrap();
    let ev = timeout(Duration::from_secs(10), async {
        loop {
            match sink.next_event().await {
                SinkEvent::Acked(id) => return id,
                SinkEvent::Connected => {}
                other => panic!("unexpected {other:?}"),
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(ev, BatchId(2));
    assert_eq!(sink.counters().snapshot().disconnects, 0);
}

/// The broker dies (SIGKILL) with a full window, the newest batch still queued in rumqttc's
/// channel, and comes back on the same port. Every batch not acknowledged comes back in
/// `Disconnected`; the test resends them as the dispatcher would; the subscriber ends up with
/// every batch.
///
/// What the subscriber may miss: a SIGKILLed broker can lose batches it has already
/// acknowledged. mosquitto queues a message to its subscribers before it sends the PUBACK
/// (`handle__publish`), but what it has not yet written to the subscriber's socket, or what
/// the kernel discards with the socket when the process dies, never arrives (seen once in CI,
/// 2026-12-02: five batches acknowledged just before the second kill). No client can prevent
/// that, so the test allows it only where it can happen: a missing batch must have been
/// acknowledged by the broker that was killed (before the `Disconnected` that ended its
/// connection) and not yet delivered to the subscriber when the kill was sent. Anything else
/// missing fails the test: an acknowledgement the sink credited to the wrong batch would show
/// there. What the broker had not acknowledged is the sink's to hand back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_killed_mid_stream_every_unacked_batch_is_handed_back() {
    let mut broker = Mosquitto::start(&BrokerOptions::default());
    let mut sub = Subscriber::start(broker.port, "t/#", SubscriberOptions::default());
    sub.wait_subscribed(0, Duration::from_secs(10)).await;
    let mut cfg = config(broker.port);
    cfg.inflight = 16;
    let mut sink = MqttSink::new(&cfg, "test").unwrap();
    until_connected(&mut sink).await;

    const N: u64 = 3000;
    const KILLS: usize = 2;
    let mut next = 1;
    let mut resend: VecDeque<BatchId> = VecDeque::new();
    let mut acked: BTreeSet<BatchId> = BTreeSet::new();
    let mut sends: HashMap<BatchId, u32> = HashMap::new();
    let mut handed_back = 0;
    let mut disconnects = 0;
    let mut kills = 0;
    // While the broker is away, and until the subscriber has its subscription on the new
    // broker process, nothing is sent (a batch published before that would be acknowledged by
    // the broker and dropped for lack of a subscriber: not the sink's doing).
    let mut hold_until_subscribed: Option<u64> = None;
    let mut killed_at = None;
    // What the subscriber has received (taken in as the test goes); at each kill, the ids it
    // had received when the kill was sent; then the ids acknowledged by the killed broker that
    // were not among them: what that broker may have taken with it.
    let mut seen = Seen::default();
    let mut seen_at_kill: Option<BTreeSet<u64>> = None;
    let mut broker_may_have_lost: BTreeSet<u64> = BTreeSet::new();

    timeout(Duration::from_secs(30), async {
        while acked.len() < N as usize {
            seen.drain(&mut sub);
            if let Some(generation) = hold_until_subscribed
                && *sub.subscribed.borrow() > generation
            {
                hold_until_subscribed = None;
            }
            let mut sent_now = 0;
            if hold_until_subscribed.is_none() {
                while sink.ready() {
                    let id = match resend.pop_front() {
                        Some(id) => id,
                        None if next <= N => {
                            next += 1;
                            BatchId(next - 1)
                        }
                        None => break,
                    };
                    sink.send(id, &format!("t/{}", id.0 % 5), payload(id))
                        .expect("ready, so taken");
                    *sends.entry(id).or_default() += 1;
                    sent_now += 1;
                }
            }
            // Kill with a full window, the newest batch still in rumqttc's request channel.
            if kills < KILLS
                && acked.len() as u64 >= N * (kills as u64 + 1) / (KILLS as u64 + 2)
                && sent_now > 0
                && sink.in_flight() == sink.window()
            {
                seen.drain(&mut sub);
                seen_at_kill = Some(seen.ids.clone());
                broker.kill();
                kills += 1;
                hold_until_subscribed = Some(*sub.subscribed.borrow());
                killed_at = Some(Instant::now());
            }
            if let Some(at) = killed_at
                && at.elapsed() > Duration::from_millis(300)
            {
                broker.restart();
                killed_at = None;
            }
            let event = tokio::select! {
                e = sink.next_event() => e,
                () = tokio::time::sleep(Duration::from_millis(20)) => continue,
            };
            match event {
                SinkEvent::Acked(id) => {
                    assert!(sends.contains_key(&id), "ack for a batch never sent");
                    acked.insert(id);
                }
                SinkEvent::Disconnected { unacked } => {
                    disconnects += 1;
                    if let Some(delivered) = seen_at_kill.take() {
                        let undelivered =
                            acked.iter().map(|b| b.0).filter(|i| !delivered.contains(i));
                        broker_may_have_lost.extend(undelivered);
                    }
                    handed_back += unacked.len();
                    for id in &unacked {
                        assert!(
                            !acked.contains(id),
                            "{id:?} handed back after its acknowledgement"
                        );
                    }
                    // As the dispatcher does: everything handed back goes out again.
                    resend.extend(unacked);
                    assert_eq!(sink.in_flight(), 0, "nothing in flight after a disconnect");
                    assert!(!sink.ready());
                }
                SinkEvent::Connected => {}
            }
        }
    })
    .await
    .unwrap_or_else(|_| {
        let lost: Vec<u64> = (1..=N)
            .filter(|&i| !acked.contains(&BatchId(i)) && !resend.contains(&BatchId(i)))
            .take(20)
            .collect();
        panic!(
            "not all acked within 30 s: {} of {N} ({kills} kills, {disconnects} disconnects, \
             {} in flight); neither acked nor handed back: {lost:?}",
            acked.len(),
            sink.in_flight(),
        )
    });

    assert_eq!(kills, KILLS);
    assert_eq!(disconnects, KILLS, "one Disconnected per lost connection");
    assert!(
        handed_back >= KILLS,
        "at least the batch still queued in rumqttc came back each time ({handed_back})"
    );
    let c = sink.counters().snapshot();
    assert_eq!(c.handed_back, handed_back as u64);
    assert_eq!(c.reconnects(), KILLS as u64);
    assert_eq!(c.acked, N, "each send acknowledged at most once");
    assert_eq!(c.published, N + handed_back as u64);

    seen.until_all(&mut sub, N, Duration::from_secs(15)).await;
    let missing: Vec<u64> = (1..=N).filter(|i| !seen.ids.contains(i)).collect();
    let unexplained: Vec<u64> = missing
        .iter()
        .copied()
        .filter(|i| !broker_may_have_lost.contains(i))
        .collect();
    assert!(
        unexplained.is_empty(),
        "{} batches missing at the subscriber that no dying broker explains (not both \
         acknowledged by it and undelivered when it was killed): {:?} (all missing: {:?})",
        unexplained.len(),
        &unexplained[..unexplained.len().min(20)],
        &missing[..missing.len().min(20)]
    );
    let messages = seen.messages;
    eprintln!(
        "sent={N} handed_back={handed_back} received={messages} duplicates={} \
         acknowledged_then_lost_by_the_killed_broker={} (of {} undelivered at the kills)",
        messages + missing.len() as u64 - N,
        missing.len(),
        broker_may_have_lost.len()
    );
}
