//! End to end: an adapter process SIGKILLed inside a running `edge-gateway run --config FILE`.
//! The gateway restarts it; the new process takes over the ring and continues the same epoch
//! and sequence, so a subscriber on a real mosquitto sees zero gaps; the other source's
//! adapter, the forwarder and the broker connection notice nothing.

#[path = "common/gateway.rs"]
mod gateway;
#[path = "common/mosquitto.rs"]
mod mosquitto;

use std::time::{Duration, Instant};

use gateway::{GatewayProcess, Seen, collect_until, collect_until_quiet};
use mosquitto::{BrokerOptions, Mosquitto, Subscriber, SubscriberOptions};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

fn synthetic(name: &str) -> String {
    let tags: Vec<String> = (0..20)
        .map(|i| {
            let signal = if i % 2 == 0 { "counter" } else { "sine" };
            format!("  {{ name = \"t{i}\", signal = \"{signal}\", rate_hz = 200.0 }},")
        })
        .collect();
    format!(
        "[[synthetic]]\nname = \"{name}\"\ngroup = \"signals\"\ntags = [\n{}\n]\n",
        tags.join("\n")
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adapter_sigkilled_inside_gateway_restarts_without_gaps() {
    let broker = Mosquitto::start(&BrokerOptions::default());
    let mut sub = Subscriber::start(broker.port, "edge-gateway/#", SubscriberOptions::default());
    sub.wait_subscribed(0, Duration::from_secs(10)).await;

    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("gateway.toml");
    std::fs::write(
        &config,
        format!(
            "[gateway]\nname = \"crash\"\nstate_dir = \"state\"\n\n[mqtt]\nhost = \"127.0.0.1\"\nport = {}\n\n{}\n{}",
            broker.port,
            synthetic("victim"),
            synthetic("bystander")
        ),
    )
    .unwrap();
    let mut gw = GatewayProcess::start(&config, &dir.path().join("gateway.log"));
    let pids = gw.wait_adapters(&["victim", "bystander"], Duration::from_secs(20));
    let (victim, bystander) = (pids[0], pids[1]);

    let mut seen = Seen::default();
    collect_until(
        &mut sub.rx,
        &mut seen,
        "telemetry from both sources",
        Duration::from_secs(30),
        |s| s.distinct("victim") >= 2_000 && s.distinct("bystander") >= 2_000,
    )
    .await;

    // Kill the victim's adapter mid-stream (it writes 4,000 records/s).
    kill(Pid::from_raw(victim), Signal::SIGKILL).unwrap();
    let before = seen.distinct("victim");
    let start = Instant::now();
    let restarted = loop {
        let now = gw.adapters();
        if let Some((pid, _)) = now.iter().find(|(p, s)| s == "victim" && *p != victim) {
            break *pid;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the adapter was not restarted within 10 s ({now:?}):\n{}",
            gw.log()
        );
        seen.drain(&mut sub.rx);
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    // The restarted adapter keeps producing.
    collect_until(
        &mut sub.rx,
        &mut seen,
        "telemetry from the restarted adapter",
        Duration::from_secs(30),
        |s| s.distinct("victim") >= before + 4_000,
    )
    .await;
    gw.assert_running();
    let now = gw.adapters();
    assert!(
        now.contains(&(bystander, "bystander".into())),
        "the other adapter was not disturbed: {now:?} (was {bystander})"
    );
    assert!(
        now.contains(&(restarted, "victim".into())),
        "one restart: {now:?}"
    );

    let status = tokio::task::block_in_place(|| gw.sigterm_and_wait(Duration::from_secs(15)));
    assert!(status.success(), "gateway exit {status}:\n{}", gw.log());
    collect_until_quiet(
        &mut sub.rx,
        &mut seen,
        Duration::from_millis(500),
        Duration::from_secs(10),
    )
    .await;

    let log = gw.log();
    assert!(
        log.lines()
            .any(|l| l.contains("adapter process exited; restarting") && l.contains("victim")),
        "the crash is logged:\n{log}"
    );
    assert!(
        log.lines()
            .any(|l| l.contains("stopped") && l.contains("adapter_crashes=1")),
        "the crash is counted:\n{log}"
    );
    for source in ["victim", "bystander"] {
        let epochs = seen.epochs(source);
        assert_eq!(
            epochs.len(),
            1,
            "{source}: the restarted adapter continues the same epoch: {epochs:?}"
        );
        let missing = seen.missing(source, epochs[0]);
        assert!(
            missing.is_empty(),
            "{source}: {} seqs missing, first {:?}",
            missing.len(),
            &missing[..missing.len().min(20)]
        );
    }
    eprintln!(
        "victim: {} distinct records, bystander: {}, duplicates: {}",
        seen.distinct("victim"),
        seen.distinct("bystander"),
        seen.duplicates
    );
}
