//! Poller behaviour against the project's own Modbus simulator: changing values, overruns,
//! independence of links, the plan as printed.

mod support;

use std::time::Duration;

use edgegw_plc::modbus::ModbusLink;
use edgegw_plc::sim::{ModbusSim, SimSpec};
use edgegw_plc::{AdapterConfig, BadReason, Quality, UncertainReason};
use edgegw_ringbuf::Value;
use support::{Running, of_tag, quality};

fn link(port: u16, extra_device: &str, interval_ms: u64, tags: &str) -> ModbusLink {
    let text = format!(
        "[[devices]]\nname = \"d\"\nprotocol = \"modbus-tcp\"\naddress = \"127.0.0.1:{port}\"\n{extra_device}\n\
         [[devices.groups]]\nname = \"g\"\ninterval_ms = {interval_ms}\ntags = [{tags}]\n"
    );
    let cfg: AdapterConfig = toml::from_str(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    cfg.resolve().unwrap().links.remove(0)
}

async fn sim(spec: SimSpec) -> ModbusSim {
    ModbusSim::start("127.0.0.1:0".parse().unwrap(), spec)
        .await
        .expect("start simulator")
}

#[tokio::test]
async fn values_that_change_on_the_simulator_are_reported_as_they_change() {
    let sim = sim(SimSpec {
        update_interval: Duration::from_millis(20),
        ..SimSpec::bench_device(4, 4)
    })
    .await;
    let tags = r#"{ name = "c0", table = "holding-register", address = 0, type = "u16" },
                  { name = "s0", table = "holding-register", address = 4, type = "f32" }"#;
    let mut run = Running::start(link(sim.local_addr().port(), "", 20, tags));
    run.until(
        "several distinct counter values",
        Duration::from_secs(10),
        |r| of_tag(r, 0, 0).len() >= 5,
    )
    .await;
    let (records, _) = run.stop().await;
    let counts: Vec<u64> = of_tag(&records, 0, 0)
        .iter()
        .map(|r| match r.value() {
            Some(Value::U64(v)) => v,
            other => panic!("{other:?}"),
        })
        .collect();
    assert!(
        counts.windows(2).all(|w| w[1] > w[0]),
        "counter only rises and each report is a change: {counts:?}"
    );
    for r in of_tag(&records, 0, 1) {
        let Some(Value::F64(v)) = r.value() else {
            panic!("{r:?}")
        };
        assert!((-100.0..=100.0).contains(&v), "sine within its bounds: {v}");
    }
}

#[tokio::test]
async fn a_cycle_longer_than_its_interval_is_counted_skipped_and_marked_uncertain() {
    // Every answer takes 60 ms; the group wants a poll every 20 ms.
    let sim = sim(SimSpec {
        response_delay: Duration::from_millis(60),
        ..SimSpec::default()
    })
    .await;
    let tags = r#"{ name = "a", table = "holding-register", address = 0 }"#;
    let mut run = Running::start(link(sim.local_addr().port(), "", 20, tags));
    run.until("the first reading", Duration::from_secs(10), |r| {
        !r.is_empty()
    })
    .await;
    let started = std::time::Instant::now();
    run.collect_for(Duration::from_millis(600)).await;
    let elapsed = started.elapsed();
    let stats = run.counters.snapshot();
    let (records, _) = run.stop().await;
    // Polls never pile up: at most one request in flight and one per answer time, however many
    // ticks were missed.
    let max_polls = elapsed.as_millis() as u64 / 60 + 3;
    assert!(
        stats.requests <= max_polls,
        "{} requests in {elapsed:?} with 60 ms answers",
        stats.requests
    );
    assert!(
        stats.overruns >= stats.polls.saturating_sub(1),
        "every slow cycle skipped ticks: {stats:?}"
    );
    let q: Vec<Quality> = of_tag(&records, 0, 0).iter().map(quality).collect();
    assert_eq!(
        q,
        vec![Quality::Uncertain(UncertainReason::Overrun)],
        "reported once, as uncertain"
    );
}

#[tokio::test]
async fn a_silent_device_does_not_delay_another_devices_polls() {
    // The silent simulator serves unit 9 only; the adapter asks unit 1, which never answers.
    let silent = sim(SimSpec {
        unit_ids: vec![9],
        ..SimSpec::default()
    })
    .await;
    let healthy = sim(SimSpec::bench_device(2, 0)).await;
    let tags = r#"{ name = "a", table = "holding-register", address = 0 }"#;
    let mut stuck = Running::start(link(
        silent.local_addr().port(),
        "timeout_ms = 5000",
        10,
        tags,
    ));
    let mut fine = Running::start(link(healthy.local_addr().port(), "", 10, tags));
    fine.collect_for(Duration::from_millis(500)).await;
    let stuck_stats = stuck.counters.snapshot();
    let fine_stats = fine.counters.snapshot();
    assert_eq!(
        stuck_stats.polls, 0,
        "the silent device is still waiting for its first answer: {stuck_stats:?}"
    );
    assert!(
        fine_stats.polls >= 10,
        "the healthy device kept polling meanwhile: {fine_stats:?}"
    );
    let (records, _) = fine.stop().await;
    assert_eq!(quality(&of_tag(&records, 0, 0)[0]), Quality::Good);
    stuck.collect_for(Duration::ZERO).await;
    let _ = stuck.stop().await;
}

#[tokio::test]
async fn a_timeout_on_tcp_reports_bad_timeout_and_reconnects() {
    let silent = sim(SimSpec {
        unit_ids: vec![9],
        ..SimSpec::default()
    })
    .await;
    let tags = r#"{ name = "a", table = "holding-register", address = 0 }"#;
    let mut run = Running::start(link(
        silent.local_addr().port(),
        "timeout_ms = 50",
        20,
        tags,
    ));
    run.until("bad quality", Duration::from_secs(10), |r| {
        !of_tag(r, 0, 0).is_empty()
    })
    .await;
    run.collect_for(Duration::from_millis(300)).await;
    let stats = run.counters.snapshot();
    let (records, _) = run.stop().await;
    let q: Vec<Quality> = of_tag(&records, 0, 0).iter().map(quality).collect();
    assert_eq!(q, vec![Quality::Bad(BadReason::Timeout)], "reported once");
    assert!(
        stats.timeouts >= 2 && stats.connects >= 2,
        "each timeout drops the stream and reconnects: {stats:?}"
    );
}

#[test]
fn the_plan_for_the_benchmark_device_uses_few_full_reads() {
    let tags: Vec<String> = (0..500)
        .map(|i| {
            format!(
                r#"{{ name = "u{i}", table = "holding-register", address = {i}, type = "u16" }}"#
            )
        })
        .chain((0..500).map(|i| {
            format!(
                r#"{{ name = "f{i}", table = "holding-register", address = {}, type = "f32" }}"#,
                500 + 2 * i
            )
        }))
        .collect();
    let l = link(502, "", 100, &tags.join(",\n"));
    let g = &l.devices[0].groups[0];
    assert_eq!(g.reads.len(), 13, "1500 registers in reads of at most 125");
    assert!(g.reads.iter().all(|r| r.quantity <= 125));
    let printed = l.to_string();
    assert!(
        printed.contains("group g every 100 ms: 1000 tags in 13 reads (1500 registers, 0 bits)"),
        "{printed}"
    );
}
