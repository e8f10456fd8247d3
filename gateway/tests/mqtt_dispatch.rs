//! The dispatcher and the MQTT sink together, in the loop the gateway runs
//! (`forward::run::run_dispatch`: a `select!` over sink events, live batches and a replay tick),
//! with the real SQLite spool and a real mosquitto that is stopped and restarted mid-stream.
//! A persistent subscriber must end up with every record.

#[path = "common/mosquitto.rs"]
mod mosquitto;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use edgegw::forward::batch::Batch;
use edgegw::forward::catalog::CatalogBuilder;
use edgegw::forward::dispatch::DispatchStats;
use edgegw::forward::encode::json_string;
use edgegw::forward::run::run_dispatch;
use edgegw::forward::spooling::{LiveRender, SpoolBridge};
use edgegw::sinks::mqtt::{MqttConfig, MqttSink};
use edgegw::spool::{Spool, SpoolConfig};
use edgegw_ringbuf::{TelemetryRecord, Value};
use mosquitto::{BrokerOptions, Mosquitto, Subscriber, SubscriberOptions};
use tokio::sync::{mpsc, watch};

const BATCHES: u64 = 600;
const PER_BATCH: u64 = 5;

fn batch(first_seq: u64) -> Batch {
    Batch {
        source: 0,
        group: 0,
        epoch: 7,
        records: (first_seq..first_seq + PER_BATCH)
            .map(|seq| {
                let mut r = TelemetryRecord::new(0, 0, seq, Value::U64(seq), 0);
                r.seq = seq;
                r
            })
            .collect(),
    }
}

fn seqs(payload: &[u8]) -> Vec<u64> {
    let doc: serde_json::Value = serde_json::from_slice(payload).unwrap();
    doc["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["seq"].as_u64().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dispatcher_with_the_mqtt_sink_delivers_every_record_through_a_broker_restart() {
    let mut broker = Mosquitto::start(&BrokerOptions {
        persistence: true,
        ..BrokerOptions::default()
    });
    let mut sub = Subscriber::start(
        broker.port,
        "plant/#",
        SubscriberOptions {
            persistent_id: Some(format!("dispatch-test-{}", std::process::id())),
            ..SubscriberOptions::default()
        },
    );
    sub.wait_subscribed(0, Duration::from_secs(10)).await;

    let mut builder = CatalogBuilder::new("sim", "plant/sim/_unknown".into());
    let group = builder.group("press", "fast", "plant/press/fast".into());
    builder.tag(0, 0, group, "counter");
    let render = LiveRender {
        gateway_json: json_string("test"),
        catalogs: vec![Arc::new(builder.build())],
    };
    let dir = tempfile::tempdir().unwrap();
    let (spool, _) = Spool::open(&dir.path().join("spool.db"), &SpoolConfig::default()).unwrap();
    let mut bridge = SpoolBridge::new(spool, render.clone());

    let mut cfg = MqttConfig::new("127.0.0.1");
    cfg.port = Some(broker.port);
    cfg.inflight = 16;
    cfg.keepalive_s = 5;
    cfg.backoff_min_ms = 50;
    cfg.backoff_max_ms = 300;
    let mut sink = MqttSink::new(&cfg, "test").unwrap();
    let counters = sink.counters();

    let (tx, rx) = mpsc::channel(256);
    let (deadline_tx, deadline_rx) = watch::channel(None::<Instant>);
    let (stats_tx, _stats_rx) = watch::channel(DispatchStats::default());
    let dispatch = tokio::spawn(async move {
        let stats = run_dispatch(&mut sink, &mut bridge, &render, rx, deadline_rx, &stats_tx).await;
        edgegw::forward::run::EventSink::close(sink, Duration::from_secs(2)).await;
        (stats, bridge.spool().stats())
    });

    // Live batches every 5 ms; the broker goes away (SIGTERM: it keeps the subscriber's
    // session) after 1 s and comes back 1 s later.
    let producer = tokio::spawn(async move {
        for i in 0..BATCHES {
            tx.send(batch(i * PER_BATCH)).await.unwrap();
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        tx
    });
    tokio::time::sleep(Duration::from_secs(1)).await;
    tokio::task::block_in_place(|| broker.stop());
    tokio::time::sleep(Duration::from_secs(1)).await;
    tokio::task::block_in_place(|| broker.restart());
    let tx = producer.await.unwrap();

    let total = BATCHES * PER_BATCH;
    let mut seen = BTreeSet::new();
    let mut records = 0u64;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while (seen.len() as u64) < total {
        match tokio::time::timeout_at(deadline, sub.rx.recv()).await {
            Ok(Some(m)) => {
                for s in seqs(&m.payload) {
                    records += 1;
                    seen.insert(s);
                }
            }
            _ => break,
        }
    }
    // The drain bound first, then the end of input: with nothing in flight the loop ends as
    // soon as the input closes, dropping its end of the deadline channel (a send after the
    // drop failed under qemu: SendError).
    deadline_tx
        .send(Some(Instant::now() + Duration::from_secs(5)))
        .unwrap();
    drop(tx);
    let (stats, spool) = tokio::time::timeout(Duration::from_secs(15), dispatch)
        .await
        .expect("the dispatch loop ends within its bound")
        .unwrap();

    let missing: Vec<u64> = (0..total).filter(|s| !seen.contains(s)).collect();
    assert!(
        missing.is_empty(),
        "{} of {total} records missing, first {:?}; {stats:?}",
        missing.len(),
        &missing[..missing.len().min(10)]
    );
    let c = counters.snapshot();
    eprintln!(
        "records={total} received={records} duplicates={} spilled_batches={} replayed_batches={} \
         handed_back={} reconnects={}",
        records - total,
        stats.spilled_batches,
        stats.replayed_batches,
        c.handed_back,
        c.reconnects()
    );
    assert!(stats.spilled_batches > 0, "the outage spilled to the spool");
    assert!(stats.replayed_batches > 0, "and the spool was replayed");
    assert_eq!(spool.rows, 0, "nothing left in the spool");
    assert!(c.reconnects() >= 1, "the sink came back after the outage");
    assert_eq!(c.in_flight, 0);
}
