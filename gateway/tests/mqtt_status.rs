//! The retained status topic against a real mosquitto: `online` on every connect, `offline` on
//! a clean shutdown, and `offline` as the last will when the gateway process dies.

#[path = "common/mosquitto.rs"]
mod mosquitto;

use std::time::Duration;

use edgegw::forward::dispatch::{BatchId, BatchSink, SinkEvent};
use edgegw::sinks::mqtt::{MqttConfig, MqttSink, STATUS_OFFLINE, STATUS_ONLINE};
use mosquitto::{BrokerOptions, Mosquitto, Subscriber, SubscriberOptions};
use tokio::io::AsyncBufReadExt as _;
use tokio::time::timeout;

const STATUS: &str = "edge-gateway/test/status";

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

/// Keeps the sink's connection serviced (keepalive, acks) while `f` runs.
async fn with_sink_polled<T>(sink: &mut MqttSink, f: impl Future<Output = T>) -> T {
    tokio::pin!(f);
    loop {
        tokio::select! {
            out = &mut f => return out,
            _ = sink.next_event() => {}
        }
    }
}

/// The status as a new subscriber sees it: the retained message. (A subscriber that subscribes
/// just before a status is published gets it live, without the retain flag: then it asks again.)
async fn retained_status(port: u16) -> String {
    for _ in 0..20 {
        let mut sub = Subscriber::start(port, STATUS, SubscriberOptions::default());
        let m = sub.next_on(STATUS, Duration::from_secs(10)).await;
        if m.retain {
            return String::from_utf8(m.payload).unwrap();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no retained status");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn online_is_retained_on_connect_and_offline_published_on_clean_shutdown() {
    let broker = Mosquitto::start(&BrokerOptions::default());
    let mut sink = MqttSink::new(&config(broker.port), "test").unwrap();
    assert_eq!(sink.status_topic(), STATUS, "default <prefix>/status");
    until_connected(&mut sink).await;
    let mut live = Subscriber::start(broker.port, STATUS, SubscriberOptions::default());
    let first = with_sink_polled(&mut sink, live.next_on(STATUS, Duration::from_secs(10))).await;
    assert_eq!(first.payload, STATUS_ONLINE.as_bytes());
    let port = broker.port;
    assert_eq!(
        with_sink_polled(&mut sink, retained_status(port)).await,
        STATUS_ONLINE,
        "online is retained"
    );

    // Outstanding batches are waited for and reported.
    for i in 1..=5 {
        sink.send(BatchId(i), "t/x", vec![b'x'; 10]).unwrap();
    }
    let report = sink.shutdown(Duration::from_secs(5)).await;
    assert_eq!(
        report.acked,
        (1..=5).map(BatchId).collect::<Vec<_>>(),
        "acks that came during shutdown are reported"
    );
    assert!(report.unacked.is_empty());
    assert!(report.offline_published);

    let m = live.next_on(STATUS, Duration::from_secs(10)).await;
    assert_eq!(m.payload, STATUS_OFFLINE.as_bytes());
    assert_eq!(retained_status(broker.port).await, STATUS_OFFLINE);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_while_the_broker_is_down_hands_everything_back() {
    let mut broker = Mosquitto::start(&BrokerOptions::default());
    let mut sink = MqttSink::new(&config(broker.port), "test").unwrap();
    until_connected(&mut sink).await;
    broker.kill();
    for i in 1..=3 {
        sink.send(BatchId(i), "t/x", vec![b'x'; 10]).unwrap();
    }
    let start = tokio::time::Instant::now();
    let report = sink.shutdown(Duration::from_secs(2)).await;
    assert!(start.elapsed() < Duration::from_secs(5), "bounded");
    assert_eq!(report.unacked, [BatchId(1), BatchId(2), BatchId(3)]);
    assert!(report.acked.is_empty());
    assert!(!report.offline_published);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn online_is_published_again_after_every_reconnect() {
    let mut broker = Mosquitto::start(&BrokerOptions::default());
    let mut sink = MqttSink::new(&config(broker.port), "test").unwrap();
    until_connected(&mut sink).await;
    let port = broker.port;
    assert_eq!(
        with_sink_polled(&mut sink, retained_status(port)).await,
        STATUS_ONLINE
    );
    // A broker without persistence forgets retained messages when it dies.
    broker.kill();
    broker.restart();
    timeout(Duration::from_secs(10), async {
        loop {
            if let SinkEvent::Disconnected { unacked } = sink.next_event().await {
                assert!(unacked.is_empty());
                break;
            }
        }
    })
    .await
    .expect("the loss is noticed");
    until_connected(&mut sink).await;
    assert_eq!(
        with_sink_polled(&mut sink, retained_status(port)).await,
        STATUS_ONLINE
    );
    assert_eq!(sink.counters().snapshot().reconnects(), 1);
}

const CHILD_PORT: &str = "EDGEGW_TEST_WILL_CHILD_PORT";
const CHILD_CONNECTED: &str = "will-child: connected";

/// The gateway process is SIGKILLed: its socket is closed by the kernel without DISCONNECT, so
/// the broker publishes the last will, `offline`, retained. The gateway runs in a child process
/// (this test binary again, running only this test with `EDGEGW_TEST_WILL_CHILD_PORT` set).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_will_is_published_when_the_gateway_process_is_killed() {
    if let Ok(port) = std::env::var(CHILD_PORT) {
        // Child: connect, say so, keep the connection alive until killed (or 60 s).
        let mut sink = MqttSink::new(&config(port.parse().unwrap()), "test").unwrap();
        until_connected(&mut sink).await;
        println!("{CHILD_CONNECTED}");
        let _ = timeout(Duration::from_secs(60), async {
            loop {
                sink.next_event().await;
            }
        })
        .await;
        return;
    }

    let broker = Mosquitto::start(&BrokerOptions::default());
    let mut live = Subscriber::start(broker.port, STATUS, SubscriberOptions::default());
    live.wait_subscribed(0, Duration::from_secs(10)).await;
    let mut child = tokio::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "offline_will_is_published_when_the_gateway_process_is_killed",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_PORT, broker.port.to_string())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    timeout(Duration::from_secs(20), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            // libtest prints "test NAME ... " on the same line first.
            if line.ends_with(CHILD_CONNECTED) {
                return;
            }
        }
        panic!("child ended before connecting");
    })
    .await
    .expect("child connected within 20 s");
    let m = live.next_on(STATUS, Duration::from_secs(10)).await;
    assert_eq!(m.payload, STATUS_ONLINE.as_bytes());

    child.start_kill().unwrap();
    let status = timeout(Duration::from_secs(10), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(9),
        "SIGKILLed"
    );
    let m = live.next_on(STATUS, Duration::from_secs(10)).await;
    assert_eq!(m.payload, STATUS_OFFLINE.as_bytes(), "the last will");
    assert_eq!(retained_status(broker.port).await, STATUS_OFFLINE);
}
