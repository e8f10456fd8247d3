//! A gateway stopped while its broker is down keeps what it could not deliver: it is spooled
//! on SIGTERM, survives the restart of the gateway, and arrives once the broker is back, with
//! zero gaps in either epoch.
//!
//! "Down" is a relay in front of mosquitto that cuts the gateway off and refuses it, while
//! the subscriber stays connected to mosquitto directly. Stopping and restarting mosquitto
//! instead made the result depend on mosquitto restoring the subscriber's persistent session:
//! about one run in ten, mosquitto 2.0.11 answered the subscriber's reconnect with
//! `session_present: false`, so everything the gateway replayed before the subscriber
//! subscribed again had no subscriber, a loss that was the broker's, not the gateway's.

use std::collections::{HashMap, HashSet};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rumqttc::{Client, Event, MqttOptions, Packet, QoS};

mod common;
use common::{Mosquitto, free_port};

const BIN: &str = env!("CARGO_BIN_EXE_edge-gateway");

/// Seqs received per `(source, epoch)`.
type SeenSeqs = Arc<Mutex<HashMap<(String, u64), HashSet<u64>>>>;

/// Starts the gateway; its log goes to `gateway.log` beside the configuration (appended), for
/// the failure messages.
fn start_gateway(config: &std::path::Path) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(config.with_file_name("gateway.log"))
        .unwrap();
    Command::new(BIN)
        .args(["run", "--config"])
        .arg(config)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap()
}

fn sigterm_and_wait(mut gateway: Child) {
    let pid = nix::unistd::Pid::from_raw(gateway.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let start = Instant::now();
    loop {
        if let Some(status) = gateway.try_wait().unwrap() {
            assert!(status.success(), "gateway exit: {status}");
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "no exit after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A subscriber with a persistent session that survives broker restarts.
fn subscribe(port: u16, seen: SeenSeqs) {
    let mut opts = MqttOptions::new("restart-checker", "127.0.0.1", port);
    opts.set_clean_session(false)
        .set_max_packet_size(8 << 20, 8 << 20);
    let (client, mut connection) = Client::new(opts, 100);
    std::thread::spawn(move || {
        for event in connection.iter() {
            match event {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    let _ = client.try_subscribe("edge-gateway/#", QoS::AtLeastOnce);
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let Ok(doc) = serde_json::from_slice::<serde_json::Value>(&p.payload) else {
                        continue;
                    };
                    let (Some(source), Some(epoch), Some(records)) = (
                        doc["source"].as_str(),
                        doc["epoch"].as_u64(),
                        doc["records"].as_array(),
                    ) else {
                        continue;
                    };
                    let mut seen = seen.lock().unwrap();
                    let set = seen.entry((source.to_owned(), epoch)).or_default();
                    for r in records {
                        set.insert(r["seq"].as_u64().unwrap());
                    }
                }
                Ok(_) => {}
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    });
}

fn total(seen: &SeenSeqs) -> usize {
    seen.lock().unwrap().values().map(HashSet::len).sum()
}

#[test]
fn sigterm_while_the_broker_is_down_spools_and_everything_arrives_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _broker = Mosquitto::start(dir.path(), port);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let relay = rt
        .block_on(edgegw::relay::Relay::start(port, false))
        .expect("relay");
    let config = dir.path().join("gateway.toml");
    std::fs::write(
        &config,
        format!(
            "[gateway]\nname = \"restart-test\"\nstate_dir = \"{}\"\n\n[mqtt]\nhost = \"127.0.0.1\"\nport = {}\n\
             backoff_max_ms = 500\n\n[[synthetic]]\nname = \"sim\"\ngroup = \"signals\"\n\
             tags = [{{ name = \"a\", signal = \"counter\", rate_hz = 500.0 }}, {{ name = \"b\", signal = \"ramp\", rate_hz = 500.0 }}]\n",
            dir.path().join("state").display(),
            relay.port
        ),
    )
    .unwrap();
    let seen: SeenSeqs = Arc::default();
    subscribe(port, Arc::clone(&seen));
    std::thread::sleep(Duration::from_millis(1500)); // the persistent subscription is saved

    let gateway = start_gateway(&config);
    let start = Instant::now();
    while total(&seen) < 1_000 {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "no telemetry arrived"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    relay.set_down(true); // the broker is unreachable for the gateway
    std::thread::sleep(Duration::from_secs(2)); // ~2,000 records spool
    sigterm_and_wait(gateway);

    let gateway = start_gateway(&config); // a new epoch; the old one waits in the spool
    std::thread::sleep(Duration::from_secs(2));
    relay.set_down(false); // reachable again
    std::thread::sleep(Duration::from_secs(4));
    sigterm_and_wait(gateway);
    std::thread::sleep(Duration::from_millis(500));

    let seen = seen.lock().unwrap();
    assert_eq!(
        seen.len(),
        2,
        "two epochs of one source: {:?}",
        seen.keys().collect::<Vec<_>>()
    );
    let log = std::fs::read_to_string(dir.path().join("gateway.log")).unwrap_or_default();
    for ((source, epoch), set) in seen.iter() {
        let max = *set.iter().max().unwrap();
        let missing: Vec<u64> = (0..=max).filter(|s| !set.contains(s)).take(20).collect();
        assert_eq!(
            max + 1,
            set.len() as u64,
            "{source} epoch {epoch}: {} records missing (first {missing:?} of 0..={max})\ngateway log:\n{log}",
            max + 1 - set.len() as u64
        );
        assert!(
            set.len() > 1_000,
            "{source} epoch {epoch}: only {} records",
            set.len()
        );
    }
}
