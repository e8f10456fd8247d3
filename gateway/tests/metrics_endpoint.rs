//! The metrics endpoint of a real `edge-gateway run`: the numbers move as the data does, and
//! `/healthz` and `/readyz` mean what the README says.
//!
//! Peers: mosquitto on a free loopback port (`tests/install-peers.sh`), the PLC adapters' Modbus
//! simulator in-process, and a TCP listener that accepts and never answers (a hung device).

use std::time::Duration;

#[path = "common/metrics_scrape.rs"]
mod metrics_scrape;
#[path = "common/mosquitto.rs"]
mod mosquitto;

use metrics_scrape::Gateway;
use mosquitto::{BrokerOptions, Mosquitto};

const LONG: Duration = Duration::from_secs(30);

fn write_config(dir: &std::path::Path, broker_port: u16, extra: &str) -> std::path::PathBuf {
    let path = dir.join("gateway.toml");
    std::fs::write(
        &path,
        format!(
            r#"[gateway]
name = "metrics-test"
state_dir = "{state}"
shutdown_timeout_ms = 5000

[mqtt]
host = "127.0.0.1"
port = {broker_port}
backoff_min_ms = 50
backoff_max_ms = 200

[metrics]
port = 0

[[synthetic]]
name = "sim"
group = "signals"
tags = [
  {{ name = "a", signal = "counter", rate_hz = 100.0 }},
  {{ name = "b", signal = "sine", rate_hz = 100.0, min = 0.0, max = 10.0, period_ms = 1000 }},
]
{extra}"#,
            state = dir.join("state").display()
        ),
    )
    .unwrap();
    path
}

const PUBLISHED: &str = "edgegw_forwarder_published_batches_total";
const ACKED: &str = "edgegw_forwarder_acknowledged_batches_total";

#[test]
fn records_flow_then_a_broker_outage_grows_the_spool_and_reconnects_replay_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut broker = Mosquitto::start(&BrokerOptions::default());
    let mut gw = Gateway::start(&write_config(dir.path(), broker.port, ""));

    assert_eq!(gw.get("/readyz").0, 200);
    let first = gw.scrape_until("batches acknowledged", LONG, |m| m.n(ACKED) > 0.0);
    let later = gw.scrape_until("more batches acknowledged", LONG, |m| {
        m.n(ACKED) > first.value(ACKED) + 5.0
    });
    assert!(later.value(PUBLISHED) >= later.value(ACKED));
    assert_eq!(later.value("edgegw_broker_connected"), 1.0);
    assert_eq!(later.value("edgegw_ready"), 1.0);
    assert_eq!(later.value("edgegw_spool_records"), 0.0);
    assert_eq!(later.value(r#"edgegw_adapter_up{source="sim"}"#), 1.0);
    assert_eq!(
        later.value(r#"edgegw_ring_capacity_records{source="sim"}"#),
        16384.0
    );
    assert!(
        later
            .get(r#"edgegw_adapter_report_age_seconds{source="sim"}"#)
            .is_some()
    );

    broker.kill();
    let down = gw.scrape_until("records spooled while the broker is down", LONG, |m| {
        m.n("edgegw_broker_connected") == 0.0
            && m.n("edgegw_spool_records") > 0.0
            && m.n("edgegw_spool_spilled_records_total") > 0.0
    });
    assert!(down.value("edgegw_spool_rows") > 0.0);
    assert!(down.value("edgegw_spool_bytes") > 0.0);
    assert!(down.value("edgegw_spool_oldest_record_age_seconds") > 0.0);
    assert!(down.value("edgegw_forwarder_connect_failures_total") > 0.0);
    // Readiness does not follow the broker: the gateway is doing its job (spooling).
    assert_eq!(gw.get("/readyz").0, 200);
    assert_eq!(gw.get("/healthz").0, 200);
    let deeper = gw.scrape_until("the spool keeps growing", LONG, |m| {
        m.n("edgegw_spool_records") > down.value("edgegw_spool_records")
    });
    assert_eq!(deeper.value("edgegw_forwarder_reconnects_total"), 0.0);

    broker.restart();
    let back = gw.scrape_until("reconnected and replayed the spool", LONG, |m| {
        m.n("edgegw_forwarder_reconnects_total") >= 1.0
            && m.n("edgegw_spool_replayed_records_total") > 0.0
            && m.n("edgegw_spool_records") == 0.0
    });
    assert_eq!(back.value("edgegw_broker_connected"), 1.0);
    assert!(back.value(ACKED) > deeper.value(ACKED));
    for reason in ["bound", "write_failed", "undecodable"] {
        let s = format!("edgegw_spool_dropped_records_total{{reason=\"{reason}\"}}");
        assert_eq!(back.value(&s), 0.0, "{reason}: nothing was lost");
    }
    assert_eq!(
        back.value(r#"edgegw_gap_records_total{cause="ring_full"}"#),
        0.0
    );
    gw.stop();
}

/// A TCP listener that accepts connections and never answers: a hung Modbus device.
fn silent_device() -> (std::net::SocketAddr, std::thread::JoinHandle<()>) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let h = std::thread::spawn(move || {
        let mut held = Vec::new();
        // Bounded: the test is over well before this many connections.
        for s in l.incoming().take(10_000) {
            match s {
                Ok(s) => held.push(s),
                Err(_) => break,
            }
        }
    });
    (addr, h)
}

#[test]
fn device_polls_and_errors_by_kind_come_from_the_adapter_processes() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    // A good device: 10 holding registers. A read at 100 gets an exception (illegal address).
    let sim = rt
        .block_on(edgegw_plc::sim::ModbusSim::start(
            "127.0.0.1:0".parse().unwrap(),
            edgegw_plc::sim::SimSpec {
                holding_registers: 10,
                ..Default::default()
            },
        ))
        .unwrap();
    let (hung, _hung_thread) = silent_device();
    let dir = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start(&BrokerOptions::default());
    let devices = format!(
        r#"
[[devices]]
name = "good"
protocol = "modbus-tcp"
address = "{good}"

[[devices.groups]]
name = "fast"
interval_ms = 100
tags = [{{ name = "t", table = "holding-register", address = 0, type = "u16" }}]

[[devices.groups]]
name = "missing"
interval_ms = 100
tags = [{{ name = "beyond", table = "holding-register", address = 100, type = "u16" }}]

[[devices]]
name = "hung"
protocol = "modbus-tcp"
address = "{hung}"
timeout_ms = 50

[[devices.groups]]
name = "fast"
interval_ms = 100
tags = [{{ name = "t", table = "holding-register", address = 0, type = "u16" }}]
"#,
        good = sim.local_addr()
    );
    let mut gw = Gateway::start(&write_config(dir.path(), broker.port, &devices));
    let m = gw.scrape_until("polls, exceptions and timeouts counted", LONG, |m| {
        m.n(r#"edgegw_adapter_polls_total{source="good"}"#) >= 10.0
            && m.n(r#"edgegw_adapter_errors_total{source="good",kind="exception"}"#) >= 3.0
            && m.n(r#"edgegw_adapter_errors_total{source="hung",kind="timeout"}"#) >= 3.0
    });
    assert!(m.value(r#"edgegw_adapter_requests_total{source="good"}"#) >= 10.0);
    assert_eq!(
        m.value(r#"edgegw_adapter_errors_total{source="good",kind="timeout"}"#),
        0.0
    );
    assert_eq!(
        m.value(r#"edgegw_adapter_errors_total{source="hung",kind="exception"}"#),
        0.0
    );
    assert!(m.value(r#"edgegw_adapter_connects_total{source="good"}"#) >= 1.0);
    let age = m.value(r#"edgegw_adapter_last_good_poll_age_seconds{source="good"}"#);
    assert!((0.0..5.0).contains(&age), "last good poll {age} s ago");
    assert!(
        m.get(r#"edgegw_adapter_last_good_poll_age_seconds{source="hung"}"#)
            .is_none(),
        "a device that never answered has no last good poll"
    );
    // A hung device is the device's problem, not the gateway's.
    assert_eq!(gw.get("/healthz").0, 200);
    assert_eq!(gw.get("/readyz").0, 200);
    gw.stop();
    rt.block_on(sim.stop());
}

#[test]
fn healthz_fails_while_an_adapter_is_stuck_and_recovers_when_it_turns_again() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start(&BrokerOptions::default());
    let mut gw = Gateway::start(&write_config(dir.path(), broker.port, ""));
    let (status, body) = gw.get("/healthz");
    assert_eq!(status, 200, "{body}");
    assert_eq!(gw.get("/readyz").0, 200);
    assert_eq!(gw.get("/nowhere").0, 404);

    let line = gw.wait_for_line("adapter process started", LONG);
    let pid: i32 = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("pid="))
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no pid in {line:?}"));
    let child = nix::unistd::Pid::from_raw(pid);
    nix::sys::signal::kill(child, nix::sys::signal::Signal::SIGSTOP).unwrap();
    let start = std::time::Instant::now();
    let body = loop {
        let (status, body) = gw.get("/healthz");
        if status == 503 {
            break body;
        }
        assert!(start.elapsed() < LONG, "healthz stayed {status}: {body}");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(body.contains("adapter sim: no report for"), "{body}");
    // Liveness failed, readiness did not: the gateway still holds its data.
    assert_eq!(gw.get("/readyz").0, 200);

    nix::sys::signal::kill(child, nix::sys::signal::Signal::SIGCONT).unwrap();
    let start = std::time::Instant::now();
    while gw.get("/healthz").0 != 200 {
        assert!(start.elapsed() < LONG, "healthz did not recover");
        std::thread::sleep(Duration::from_millis(200));
    }
    gw.stop();
}
