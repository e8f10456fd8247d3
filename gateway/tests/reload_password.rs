//! A new MQTT password in the password file, with the TOML unchanged, against a real mosquitto
//! that requires it and the real `edge-gateway run`.
//!
//! The broker is restarted with the gateway's user on a new password: the gateway's reconnects
//! are refused (counted). The new password is then written to the password file beside the
//! configuration (temporary file renamed over it): inotify sees it, the reload finds the file's
//! content changed, and replaces the sink, which connects with the new password. The spooled
//! records are replayed: the subscriber sees no gap. Writing the same password again, and a
//! SIGHUP, change nothing (no new connection). Neither password appears in the debug log.

use std::time::{Duration, Instant};

#[path = "common/gateway.rs"]
mod gateway;
#[path = "common/metrics_scrape.rs"]
mod metrics_scrape;
#[path = "common/mosquitto.rs"]
mod mosquitto;
#[path = "common/reload.rs"]
mod reload;

use gateway::{Seen, collect_until, collect_until_quiet};
use metrics_scrape::Gateway;
use mosquitto::{BrokerOptions, Mosquitto, Subscriber, SubscriberOptions};
use reload::replace_atomically;

const LONG: Duration = Duration::from_secs(30);
const FIRST: &str = "first-Secret-4711";
const SECOND: &str = "second-Secret-0815";
const CONNECTED: &str = "edgegw_broker_connected";
const FAILURES: &str = "edgegw_forwarder_connect_failures_total";
const CONNECTS_AFTER_FIRST: &str = "edgegw_forwarder_reconnects_total";

fn users(gateway_password: &str) -> Vec<(String, String)> {
    vec![
        ("gw".into(), gateway_password.into()),
        ("checker".into(), "checker-pw".into()),
    ]
}

#[test]
fn a_new_password_in_the_password_file_reconfigures_the_sink_without_a_gap() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let mut broker = Mosquitto::start(&BrokerOptions {
        users: users(FIRST),
        ..BrokerOptions::default()
    });
    let mut sub = rt.block_on(async {
        Subscriber::start(
            broker.port,
            "edge-gateway/#",
            SubscriberOptions {
                credentials: Some(("checker".into(), "checker-pw".into())),
                ..SubscriberOptions::default()
            },
        )
    });
    rt.block_on(sub.wait_subscribed(0, LONG));

    let dir = tempfile::tempdir().unwrap();
    let etc = dir.path().join("etc");
    std::fs::create_dir(&etc).unwrap();
    let password = etc.join("mqtt-password");
    std::fs::write(&password, format!("{FIRST}\n")).unwrap();
    let path = etc.join("gateway.toml");
    std::fs::write(
        &path,
        format!(
            r#"[gateway]
name = "reload-password"
state_dir = "{state}"
shutdown_timeout_ms = 4000

[mqtt]
host = "127.0.0.1"
port = {port}
username = "gw"
password_file = "mqtt-password"
backoff_min_ms = 50
backoff_max_ms = 300

[payload]
linger_ms = 20

[metrics]
port = 0

[[synthetic]]
name = "sim"
group = "signals"
tags = [{{ name = "n", signal = "counter", rate_hz = 200.0 }}]
"#,
            state = dir.path().join("state").display(),
            port = broker.port
        ),
    )
    .unwrap();
    let mut gw = Gateway::start_with_env(&path, &[("RUST_LOG", "debug")]);
    let mut seen = Seen::default();
    rt.block_on(collect_until(
        &mut sub.rx,
        &mut seen,
        "records with the first password",
        LONG,
        |s| s.distinct("sim") >= 200,
    ));

    // The broker now wants the second password; the gateway still has the first.
    broker.stop();
    broker.set_users(&users(SECOND));
    let subscribed = *sub.subscribed.borrow();
    broker.restart();
    rt.block_on(sub.wait_subscribed(subscribed, LONG));
    let refused = gw.scrape().value(FAILURES);
    let m = gw.scrape_until("reconnects refused with the old password", LONG, |m| {
        m.n(FAILURES) >= refused + 3.0
    });
    assert_eq!(m.value(CONNECTED), 0.0);
    assert!(m.value("edgegw_spool_spilled_records_total") > 0.0);

    // The new password, the TOML untouched: inotify, reload, a new sink that gets in.
    replace_atomically(&password, &format!("{SECOND}\n"));
    let line = gw.wait_for_line("applying the new configuration", LONG);
    assert!(
        line.contains("sink reconfigured (mqtt.password_file changed)"),
        "{line}"
    );
    let back = gw.scrape_until("connected with the new password", LONG, |m| {
        m.n(CONNECTED) == 1.0 && m.n("edgegw_spool_records") == 0.0
    });
    rt.block_on(collect_until(
        &mut sub.rx,
        &mut seen,
        "records after the password change",
        LONG,
        |s| s.distinct("sim") >= 1000,
    ));

    // Same content again (written in place: inotify), then SIGHUP: no change, no reconnect.
    std::fs::write(&password, format!("{SECOND}\n")).unwrap();
    gw.wait_for_nth_line("applying the new configuration", 2, LONG);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(gw.pid() as i32),
        nix::sys::signal::Signal::SIGHUP,
    )
    .unwrap();
    let last = gw.wait_for_nth_line("applying the new configuration", 3, LONG);
    assert!(last.contains("changes=no change"), "{last}");
    std::thread::sleep(Duration::from_secs(1));
    let after = gw.scrape();
    assert_eq!(after.value(CONNECTED), 1.0);
    assert_eq!(
        after.value(CONNECTS_AFTER_FIRST),
        back.value(CONNECTS_AFTER_FIRST),
        "the unchanged password did not replace the sink"
    );

    gw.stop();
    let start = Instant::now();
    rt.block_on(collect_until_quiet(
        &mut sub.rx,
        &mut seen,
        Duration::from_secs(1),
        LONG,
    ));
    assert!(start.elapsed() < LONG);
    let epochs = seen.epochs("sim");
    assert_eq!(epochs.len(), 1, "one ring, one epoch: {epochs:?}");
    let missing = seen.missing("sim", epochs[0]);
    assert!(
        missing.is_empty(),
        "{} records missing across the password change, first {:?}",
        missing.len(),
        &missing[..missing.len().min(10)]
    );
    for line in gw.log() {
        assert!(
            !line.contains(FIRST) && !line.contains(SECOND),
            "a password in the log: {line}"
        );
    }
    let status: Vec<&str> = seen.status.iter().map(|(s, _)| s.as_str()).collect();
    assert!(
        status.iter().filter(|s| **s == "online").count() >= 2,
        "online again after the password change: {status:?}"
    );
}
