//! Logs of a real `edge-gateway run`: a device that keeps failing is logged once (then
//! summarised every 30 s) while every error is counted, and no secret reaches the log even at
//! debug level.

use std::time::Duration;

#[path = "common/metrics_scrape.rs"]
mod metrics_scrape;
#[path = "common/mosquitto.rs"]
mod mosquitto;

use metrics_scrape::Gateway;
use mosquitto::{BrokerOptions, Mosquitto};

const PASSWORD: &str = "pa55-never-logged-7f3a";

#[test]
fn a_hung_device_is_logged_once_but_every_timeout_is_counted_and_no_secret_is_logged() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start(&BrokerOptions {
        users: vec![("gw".into(), PASSWORD.into())],
        ..BrokerOptions::default()
    });
    // A device that accepts connections and never answers.
    let hung = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let hung_addr = hung.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in hung.incoming().take(10_000).flatten() {
            held.push(s);
        }
    });
    let password_file = dir.path().join("mqtt.password");
    std::fs::write(&password_file, format!("{PASSWORD}\n")).unwrap();
    let config = dir.path().join("gateway.toml");
    std::fs::write(
        &config,
        format!(
            r#"[gateway]
name = "logs-test"
state_dir = "{state}"

[mqtt]
host = "127.0.0.1"
port = {port}
username = "gw"
password_file = "{password_file}"

[metrics]
port = 0

[[devices]]
name = "hung"
protocol = "modbus-tcp"
address = "{hung_addr}"
timeout_ms = 50

[[devices.groups]]
name = "fast"
interval_ms = 100
tags = [{{ name = "t", table = "holding-register", address = 0, type = "u16" }}]
"#,
            state = dir.path().join("state").display(),
            port = broker.port,
            password_file = password_file.display(),
        ),
    )
    .unwrap();
    let mut gw = Gateway::start_with_env(&config, &[("RUST_LOG", "debug")]);
    gw.wait_for_line("connected to the MQTT broker", Duration::from_secs(20));
    let m = gw.scrape_until("many timeouts", Duration::from_secs(30), |m| {
        m.n(r#"edgegw_adapter_errors_total{source="hung",kind="timeout"}"#) >= 20.0
    });
    assert_eq!(
        m.value(r#"edgegw_events_total{event="device_errors"}"#),
        1.0,
        "one episode"
    );
    assert_eq!(
        m.value(r#"edgegw_events_total{event="device_errors_continue"}"#),
        0.0,
        "no summary before 30 s"
    );
    assert!(m.value(r#"edgegw_log_lines_total{level="warn"}"#) >= 1.0);
    gw.stop();

    let log = gw.log();
    let first: Vec<_> = log
        .iter()
        .filter(|l| l.contains("device errors (repeats are summarised every 30 s)"))
        .collect();
    assert_eq!(first.len(), 1, "{first:#?}");
    assert!(first[0].contains("source=hung"), "{}", first[0]);
    // The adapter child logs each lost connection; repeats of that call site are held back.
    let dropped = log
        .iter()
        .filter(|l| l.contains("connection dropped"))
        .count();
    assert!(dropped <= 1, "{dropped} 'connection dropped' lines in 30 s");
    for l in &log {
        assert!(!l.contains(PASSWORD), "secret in the log: {l}");
    }
}
