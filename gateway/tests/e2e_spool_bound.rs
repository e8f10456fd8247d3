//! End to end: the spool at its bound. The broker is unreachable while `edge-gateway run`
//! produces far more than `spool.max_bytes` holds, so the spool drops its oldest batches.
//! Each drop is logged with its source, epoch and seq range, and counted; `spool stats` shows
//! the spool at its bound. Once the broker is reachable again, a subscriber sees gaps in seq
//! exactly where the log said, and every other record.
//!
//! The gateway reaches mosquitto through a relay that cuts it off; the subscriber stays
//! connected to mosquitto directly the whole time. A stopped and restarted broker would make
//! the result depend on mosquitto's offline queue for a persistent subscriber, which is the
//! broker's business, not the gateway's.

#[path = "common/gateway.rs"]
mod gateway;
#[path = "common/mosquitto.rs"]
mod mosquitto;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use edgegw::relay::Relay;
use gateway::{BIN, GatewayProcess, Seen, collect_until_quiet};
use mosquitto::{BrokerOptions, Mosquitto, Subscriber, SubscriberOptions};

/// The bound: the smallest the configuration accepts.
const MAX_BYTES: u64 = 1024 * 1024;

/// `(source, epoch, first seq, last seq)` of every "spool full: batch dropped" log line.
fn dropped_ranges(log: &str) -> Vec<(String, u64, u64, u64)> {
    let field = |line: &str, key: &str| -> Option<String> {
        let start = line.find(&format!(" {key}="))? + key.len() + 2;
        let rest = &line[start..];
        Some(
            rest[..rest.find(' ').unwrap_or(rest.len())]
                .trim_matches('"')
                .to_owned(),
        )
    };
    log.lines()
        .filter(|l| l.contains("spool full: batch dropped"))
        .map(|l| {
            let num = |k| {
                field(l, k)
                    .and_then(|v| v.parse().ok())
                    .unwrap_or_else(|| panic!("no {k} in {l}"))
            };
            (
                field(l, "source").unwrap_or_else(|| panic!("no source in {l}")),
                num("epoch"),
                num("first_seq"),
                num("last_seq"),
            )
        })
        .collect()
}

/// `edge-gateway spool stats`: `(batches, logical bytes)`.
fn spool_stats(config: &Path) -> (u64, u64) {
    let out = Command::new(BIN)
        .args(["spool", "stats", "--config"])
        .arg(config)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "spool stats: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let value = |key: &str| -> u64 {
        text.lines()
            .find_map(|l| l.trim_start().strip_prefix(key))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {key} in {text}"))
    };
    (value("batches"), value("logical bytes"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spool_at_its_bound_drops_oldest_counts_and_logs_them_and_loses_nothing_else() {
    let broker = Mosquitto::start(&BrokerOptions::default());
    let mut sub = Subscriber::start(broker.port, "edge-gateway/#", SubscriberOptions::default());
    sub.wait_subscribed(0, Duration::from_secs(10)).await;
    // The gateway's way to the broker, cut from the start.
    let relay = Relay::start(broker.port, true).await.expect("relay");

    // 100 tags at 100 Hz: 10,000 records/s, more than 100 kB/s of spool.
    let tags: Vec<String> = (0..100)
        .map(|i| {
            let signal = ["sine", "random", "ramp", "counter"][i % 4];
            format!("  {{ name = \"t{i}\", signal = \"{signal}\", rate_hz = 100.0, min = 0.0, max = 1000.0, period_ms = 700 }},")
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("gateway.toml");
    std::fs::write(
        &config,
        format!(
            r#"[gateway]
name = "bound"
state_dir = "state"

[mqtt]
host = "127.0.0.1"
port = {port}
backoff_min_ms = 50
backoff_max_ms = 500

[spool]
max_bytes = {MAX_BYTES}
when_full = "drop-oldest"

[[synthetic]]
name = "sim"
group = "signals"
tags = [
{tags}
]
"#,
            port = relay.port,
            tags = tags.join("\n")
        ),
    )
    .unwrap();
    let mut gw = GatewayProcess::start(&config, &dir.path().join("gateway.log"));
    let mut seen = Seen::default();

    // Broker unreachable: the spool fills to its bound, then drops its oldest batches.
    let start = Instant::now();
    while dropped_ranges(&gw.log()).len() < 20 {
        gw.assert_running();
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the spool did not reach its bound within 60 s:\n{}",
            gw.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (batches, bytes) = tokio::task::block_in_place(|| spool_stats(&config));
    assert!(batches > 0, "spooled batches while the broker is down");
    assert!(
        bytes <= MAX_BYTES && bytes > MAX_BYTES / 2,
        "spool stats shows the spool at its bound: {bytes} logical bytes of {MAX_BYTES}"
    );

    // The broker is reachable again: the spool drains while live data keeps flowing.
    relay.set_down(false);
    let start = Instant::now();
    loop {
        gw.assert_running();
        seen.drain(&mut sub.rx);
        let (batches, _) = tokio::task::block_in_place(|| spool_stats(&config));
        if batches == 0 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the spool did not drain within 60 s ({batches} batches left):\n{}",
            gw.log()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let status = tokio::task::block_in_place(|| gw.sigterm_and_wait(Duration::from_secs(15)));
    assert!(status.success(), "gateway exit {status}:\n{}", gw.log());

    collect_until_quiet(
        &mut sub.rx,
        &mut seen,
        Duration::from_secs(1),
        Duration::from_secs(30),
    )
    .await;

    let log = gw.log();
    let ranges = dropped_ranges(&log);
    let epochs = seen.epochs("sim");
    assert_eq!(epochs.len(), 1, "one epoch: {epochs:?}");
    let epoch = epochs[0];
    let mut dropped = BTreeSet::new();
    for (source, e, first, last) in &ranges {
        assert_eq!(
            (source.as_str(), *e),
            ("sim", epoch),
            "drop logged for {source} {e}"
        );
        assert!(first <= last);
        for s in *first..=*last {
            assert!(dropped.insert(s), "seq {s} dropped twice");
        }
    }
    // Drops are counted where they are logged.
    let counted: u64 = log
        .lines()
        .find(|l| l.contains("spool_dropped_records="))
        .and_then(|l| {
            l.split_whitespace()
                .find_map(|w| w.strip_prefix("spool_dropped_records="))
        })
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no drop count at exit:\n{log}"));
    assert_eq!(counted, dropped.len() as u64, "counted = logged");

    // Exactly the logged seqs are missing: nothing else was lost.
    let missing: BTreeSet<u64> = seen.missing("sim", epoch).into_iter().collect();
    assert_eq!(
        missing.len(),
        dropped.len(),
        "missing {} seqs, {} logged as dropped",
        missing.len(),
        dropped.len()
    );
    assert!(missing == dropped, "the gaps are exactly the logged drops");
    // Oldest first: the very first batch went, and every dropped record is older than the
    // newest one the spool kept and replayed.
    assert_eq!(
        dropped.first(),
        Some(&0),
        "the oldest batch was dropped first"
    );
    let (oldest_replayed, newest_replayed) = *seen
        .replayed_seqs
        .get("sim")
        .expect("batches were replayed from the spool");
    let newest_dropped = *dropped.last().unwrap();
    assert!(
        newest_dropped < newest_replayed,
        "dropped up to seq {newest_dropped}, but the spool kept only up to {newest_replayed}"
    );
    assert_eq!(
        spool_stats(&config).0,
        0,
        "nothing left in the spool after the stop"
    );
    eprintln!(
        "dropped {} records in {} batches (seq {}..={newest_dropped}); received {} distinct, {} duplicates; replayed {} (seq {oldest_replayed}..={newest_replayed})",
        dropped.len(),
        ranges.len(),
        dropped.first().unwrap(),
        seen.distinct("sim"),
        seen.duplicates,
        seen.replayed
    );
}
