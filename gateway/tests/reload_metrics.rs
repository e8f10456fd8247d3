//! What `/metrics`, `/readyz` and the endpoint itself do across hot reloads of the real
//! `edge-gateway run`, with mosquitto (free loopback port) and the project's Modbus simulator.
//! Every change is written to a temporary file renamed over the configuration (inotify).
//!
//! - A reload that removes a device and a synthetic source, adds a synthetic source, moves a
//!   device to a new ring (its record id changed) and reconfigures the sink: the removed
//!   sources' series disappear, the added one's appear, the counters of both devices and of
//!   the forwarder never go down (scraped every 50 ms through the reload) and keep growing, the
//!   new sink's connection is counted, `/readyz` names the running sources, and the added
//!   source's data and the moved device's new epoch reach mosquitto.
//! - A changed `[metrics]`: the endpoint moves to the new port and the old one closes; a port
//!   that is taken rejects the whole reload (old endpoint serving, the other change not
//!   applied, the error in the log, in `STATUS=` and counted); `enabled = false` closes it;
//!   enabling it again opens a new one with the same counters.

use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

#[path = "common/gateway.rs"]
mod gateway;
#[path = "common/metrics_scrape.rs"]
mod metrics_scrape;
#[path = "common/mosquitto.rs"]
mod mosquitto;
#[path = "common/notify.rs"]
mod notify;
#[path = "common/reload.rs"]
mod reload;

use gateway::{Seen, collect_until};
use metrics_scrape::{Gateway, Metrics, get};
use mosquitto::{BrokerOptions, Mosquitto, Subscriber, SubscriberOptions, free_port};
use notify::NotifySocket;
use reload::{replace_atomically, wait_until};

const LONG: Duration = Duration::from_secs(30);
const PUBLISHED: &str = "edgegw_forwarder_published_batches_total";
const ACKED: &str = "edgegw_forwarder_acknowledged_batches_total";
const RECONNECTS: &str = "edgegw_forwarder_reconnects_total";
const POLLS_A: &str = r#"edgegw_adapter_polls_total{source="plc-a"}"#;
const POLLS_B: &str = r#"edgegw_adapter_polls_total{source="plc-b"}"#;
const CONNECTS_B: &str = r#"edgegw_adapter_connects_total{source="plc-b"}"#;

fn refuses_connections(addr: SocketAddr) -> bool {
    TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_err()
}

/// A gateway with the Modbus TCP `devices` (name, simulator port; one register every 50 ms),
/// the synthetic sources `synthetic` (100 Hz each), the broker at `broker` with `keepalive_s`,
/// and `metrics` as its `[metrics]` table.
fn config(
    dir: &Path,
    broker: u16,
    keepalive: u64,
    devices: &[(&str, u16)],
    synthetic: &[&str],
    metrics: &str,
) -> String {
    let mut text = format!(
        r#"[gateway]
name = "reload-metrics"
state_dir = "{state}"
shutdown_timeout_ms = 4000

[mqtt]
host = "127.0.0.1"
port = {broker}
keepalive_s = {keepalive}
backoff_min_ms = 50
backoff_max_ms = 500

[payload]
linger_ms = 20

{metrics}
"#,
        state = dir.join("state").display()
    );
    for (name, port) in devices {
        text += &format!(
            "\n[[devices]]\nname = \"{name}\"\nprotocol = \"modbus-tcp\"\naddress = \"127.0.0.1:{port}\"\n\n[[devices.groups]]\nname = \"fast\"\ninterval_ms = 50\ntags = [{{ name = \"t0\", table = \"holding-register\", address = 0, type = \"u16\" }}]\n"
        );
    }
    for name in synthetic {
        text += &format!(
            "\n[[synthetic]]\nname = \"{name}\"\ngroup = \"signals\"\ntags = [{{ name = \"n\", signal = \"counter\", rate_hz = 100.0 }}]\n"
        );
    }
    text
}

fn start_sim(rt: &tokio::runtime::Runtime) -> edgegw_plc::sim::ModbusSim {
    rt.block_on(edgegw_plc::sim::ModbusSim::start(
        "127.0.0.1:0".parse().unwrap(),
        edgegw_plc::sim::SimSpec::bench_device(4, 0),
    ))
    .unwrap()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap()
}

/// `later` has every counter of `earlier` in `names` at least as high.
fn assert_not_lower(earlier: &Metrics, later: &Metrics, names: &[&str]) {
    for n in names {
        assert!(
            later.value(n) >= earlier.value(n),
            "{n} went down from {} to {}: a counter must never reset\nbefore:\n{}\nafter:\n{}",
            earlier.value(n),
            later.value(n),
            earlier.text,
            later.text
        );
    }
}

#[test]
fn a_reload_shows_the_running_sources_and_no_counter_goes_down() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime();
    let sims = [start_sim(&rt), start_sim(&rt)];
    let (a, b) = (sims[0].local_addr().port(), sims[1].local_addr().port());
    // plc-a stays as it is. Removing plc-z gives plc-b another record id, so plc-b gets a new
    // ring and epoch, and must keep its counters.
    let before_devices = [("plc-a", a), ("plc-z", a), ("plc-b", b)];
    let after_devices = [("plc-a", a), ("plc-b", b)];
    let broker = Mosquitto::start(&BrokerOptions::default());
    let mut sub = rt.block_on(async {
        Subscriber::start(broker.port, "edge-gateway/#", SubscriberOptions::default())
    });
    rt.block_on(sub.wait_subscribed(0, LONG));
    let path = dir.path().join("gateway.toml");
    let metrics = "[metrics]\nport = 0";
    let write = |keepalive: u64, devices: &[(&str, u16)], synthetic: &[&str]| {
        replace_atomically(
            &path,
            &config(
                dir.path(),
                broker.port,
                keepalive,
                devices,
                synthetic,
                metrics,
            ),
        );
    };
    write(15, &before_devices, &["sim-x"]);
    let mut gw = Gateway::start(&path);

    let before = gw.scrape_until("devices polled, batches acknowledged", LONG, |m| {
        m.n(POLLS_A) > 0.0 && m.n(POLLS_B) > 0.0 && m.n(CONNECTS_B) > 0.0 && m.n(ACKED) > 10.0
    });
    assert_eq!(before.value(r#"edgegw_adapter_up{source="sim-x"}"#), 1.0);
    assert_eq!(before.value(RECONNECTS), 0.0);
    let (status, body) = gw.get("/readyz");
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains("sources: plc-a, plc-z, plc-b, sim-x\n"),
        "{body}"
    );

    // One reload: plc-z and sim-x removed, sim-y added, plc-b on a new ring, the sink
    // reconfigured (keepalive).
    write(10, &after_devices, &["sim-y"]);
    // Scraped all through the reload: counters never go down, not even while the old sink
    // closes and the new one connects, or while plc-b moves to its new ring.
    let counters = [PUBLISHED, ACKED, POLLS_A, POLLS_B, CONNECTS_B];
    let mut last = before;
    let start = Instant::now();
    let after = loop {
        let m = gw.scrape();
        assert_not_lower(&last, &m, &counters);
        let done = m.get(r#"edgegw_adapter_up{source="sim-y"}"#) == Some(1.0)
            && m.n(RECONNECTS) >= 1.0
            && m.n("edgegw_broker_connected") == 1.0;
        last = m;
        if done {
            break last;
        }
        assert!(
            start.elapsed() < LONG,
            "reload not applied within {LONG:?}; last scrape:\n{}",
            last.text
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    for family in [
        "edgegw_adapter_up",
        "edgegw_adapter_restarts_total",
        "edgegw_ring_capacity_records",
        "edgegw_ring_occupancy_records",
        "edgegw_ring_dropped_records_total",
    ] {
        for gone in ["sim-x", "plc-z"] {
            let sample = format!(r#"{family}{{source="{gone}"}}"#);
            assert_eq!(
                after.get(&sample),
                None,
                "{sample} is gone:\n{}",
                after.text
            );
        }
        assert!(
            after
                .get(&format!(r#"{family}{{source="sim-y"}}"#))
                .is_some(),
            "{family} of sim-y:\n{}",
            after.text
        );
    }
    assert_eq!(
        after.value(r#"edgegw_events_total{event="reload_applied"}"#),
        1.0
    );
    assert_eq!(
        after.value(r#"edgegw_events_total{event="reload_rejected"}"#),
        0.0
    );
    let (status, body) = gw.get("/readyz");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("sources: plc-a, plc-b, sim-y\n"), "{body}");
    assert!(
        !after.text.contains(r#"source="plc-z""#),
        "no series of plc-z:\n{}",
        after.text
    );
    assert!(body.contains("reloads: 1 applied, 0 rejected"), "{body}");

    // Both devices and the new sink keep counting from where they were.
    let later = gw.scrape_until("plc-a, plc-b and the new sink keep counting", LONG, |m| {
        m.n(POLLS_A) > after.value(POLLS_A) + 5.0
            && m.n(POLLS_B) > after.value(POLLS_B) + 5.0
            && m.n(ACKED) > after.value(ACKED) + 10.0
    });
    assert_not_lower(&after, &later, &counters);
    assert!(later.value(PUBLISHED) >= later.value(ACKED));

    // The added source's data reaches the broker, and plc-b's new epoch does.
    let mut seen = Seen::default();
    rt.block_on(collect_until(
        &mut sub.rx,
        &mut seen,
        "records of sim-y and of plc-b's second epoch",
        LONG,
        |s| s.distinct("sim-y") >= 50 && s.epochs("plc-b").len() == 2,
    ));
    assert_eq!(seen.epochs("plc-a").len(), 1, "plc-a kept its ring");
    gw.stop();
    drop(sims);
}

#[test]
fn a_changed_metrics_section_rebinds_the_endpoint_and_a_taken_port_keeps_the_old_one() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime();
    let sim = start_sim(&rt);
    let plc = [("plc-a", sim.local_addr().port())];
    let broker = Mosquitto::start(&BrokerOptions::default());
    let sock = dir.path().join("notify.sock");
    let notify = NotifySocket::listen(&sock);
    let path = dir.path().join("gateway.toml");
    let write = |synthetic: &[&str], metrics: &str| {
        replace_atomically(
            &path,
            &config(dir.path(), broker.port, 15, &plc, synthetic, metrics),
        );
    };
    write(&["sim"], "[metrics]\nport = 0");
    let mut gw = Gateway::start_with_env(&path, &[("NOTIFY_SOCKET", sock.to_str().unwrap())]);
    let first = gw.addr;
    let m0 = gw.scrape_until("batches acknowledged", LONG, |m| m.n(ACKED) > 5.0);
    let ready = |n: usize| {
        wait_until(&format!("reload {n} done"), LONG, || {
            notify.count("RELOADING=1") >= n && notify.count("READY=1") > n
        });
    };

    // 1. Another port: the endpoint moves, the old port closes, the counters carry on.
    let port = free_port();
    write(&["sim"], &format!("[metrics]\nport = {port}"));
    ready(1);
    let line = gw.wait_for_nth_line("metrics endpoint listening", 2, LONG);
    let moved = Gateway::listening_address(&line);
    assert_eq!(moved, SocketAddr::from(([127, 0, 0, 1], port)));
    gw.addr = moved;
    let m1 = gw.scrape();
    assert!(
        m1.value(ACKED) >= m0.value(ACKED),
        "same counters on the new listener"
    );
    assert_eq!(gw.get("/readyz").0, 200);
    wait_until("the old listener closed", LONG, || {
        refuses_connections(first)
    });

    // 2. A port that is taken, with another change in the same file: rejected as a whole.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_port = taken.local_addr().unwrap().port();
    write(
        &["sim", "sim-2"],
        &format!("[metrics]\nport = {taken_port}"),
    );
    ready(2);
    let problem = format!("[metrics]: cannot listen on 127.0.0.1:{taken_port}");
    let at = notify.wait_for_from(0, "STATUS= naming the address", LONG, |m| {
        m.contains("STATUS=") && m.contains("reload rejected (1 so far)") && m.contains(&problem)
    });
    let logged = gw.wait_for_line("configuration rejected", LONG);
    assert!(
        logged.contains(&problem) && logged.contains(&format!("stays on {moved}")),
        "{logged}"
    );
    let m2 = gw.scrape();
    assert_eq!(
        m2.value(r#"edgegw_events_total{event="reload_rejected"}"#),
        1.0
    );
    assert_eq!(
        m2.get(r#"edgegw_adapter_up{source="sim-2"}"#),
        None,
        "the rest of a rejected file is not applied either"
    );
    let (status, body) = gw.get("/readyz");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("sources: plc-a, sim\n"), "{body}");
    assert!(body.contains(&problem), "{body}");
    drop(taken);

    // 3. Turned off: the listener closes; STATUS= no longer shows the rejection.
    write(&["sim"], "[metrics]\nenabled = false");
    ready(3);
    notify.wait_for_from(at + 1, "STATUS= without the rejection", LONG, |m| {
        m.contains("READY=1") && m.contains("STATUS=") && !m.contains("reload rejected")
    });
    gw.wait_for_line("metrics endpoint closed", LONG);
    wait_until("the endpoint closed", LONG, || refuses_connections(moved));

    // 4. On again (port 0): a new listener, the same process counters.
    write(&["sim"], "[metrics]\nport = 0");
    ready(4);
    let line = gw.wait_for_nth_line("metrics endpoint listening", 3, LONG);
    gw.addr = Gateway::listening_address(&line);
    let m4 = gw.scrape();
    assert!(m4.value(ACKED) >= m2.value(ACKED));
    assert_eq!(
        m4.value(r#"edgegw_events_total{event="metrics_stopped"}"#),
        2.0
    );
    assert_eq!(
        m4.value(r#"edgegw_events_total{event="reload_applied"}"#),
        3.0
    );
    assert_eq!(get(gw.addr, "/readyz").0, 200);
    gw.stop();
    drop(sim);
}
