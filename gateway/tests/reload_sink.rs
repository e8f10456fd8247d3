//! Hot reload of `[mqtt]`: the sink is replaced, nothing else. The old sink closes first (its
//! retained `offline`), then the new one connects (`online`); the adapter keeps its process,
//! and every record arrives (what was in flight is spooled and replayed: duplicates allowed,
//! no gap).

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rumqttc::{Client, Event, MqttOptions, Packet, QoS};

mod common;
use common::{Mosquitto, free_port};
#[path = "common/reload.rs"]
mod reload;
use reload::wait_until;

const BIN: &str = env!("CARGO_BIN_EXE_edge-gateway");

#[derive(Default)]
struct Seen {
    seqs: BTreeMap<(String, u64), BTreeSet<u64>>,
    status: Vec<String>,
}

fn config(dir: &std::path::Path, port: u16, keepalive: u64) -> String {
    format!(
        r#"[gateway]
name = "reload-sink"
state_dir = "{state}"
shutdown_timeout_ms = 4000

[mqtt]
host = "127.0.0.1"
port = {port}
keepalive_s = {keepalive}

[[synthetic]]
name = "sim"
group = "signals"
tags = [
  {{ name = "n", signal = "counter", rate_hz = 500.0 }},
]
"#,
        state = dir.join("state").display()
    )
}

fn children(pid: u32) -> BTreeSet<u32> {
    let mut out = BTreeSet::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        if let Ok(text) = std::fs::read_to_string(task.unwrap().path().join("children")) {
            out.extend(text.split_whitespace().map(|p| p.parse::<u32>().unwrap()));
        }
    }
    out
}

#[test]
fn a_changed_mqtt_section_replaces_the_sink_only_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _broker = Mosquitto::start(dir.path(), port);
    let path = dir.path().join("gateway.toml");
    std::fs::write(&path, config(dir.path(), port, 15)).unwrap();

    let seen: Arc<Mutex<Seen>> = Arc::default();
    let mut opts = MqttOptions::new("reload-sink-checker", "127.0.0.1", port);
    opts.set_max_packet_size(8 << 20, 8 << 20);
    let (client, mut connection) = Client::new(opts, 100);
    client
        .subscribe("edge-gateway/#", QoS::AtLeastOnce)
        .unwrap();
    let w = Arc::clone(&seen);
    std::thread::spawn(move || {
        for event in connection.iter() {
            let Ok(Event::Incoming(Packet::Publish(p))) = event else {
                continue;
            };
            let mut seen = w.lock().unwrap();
            if p.topic.ends_with("/status") {
                seen.status
                    .push(String::from_utf8_lossy(&p.payload).into_owned());
                continue;
            }
            let doc: serde_json::Value = serde_json::from_slice(&p.payload).unwrap();
            let key = (
                doc["source"].as_str().unwrap().to_owned(),
                doc["epoch"].as_u64().unwrap(),
            );
            let set = seen.seqs.entry(key).or_default();
            for r in doc["records"].as_array().unwrap() {
                set.insert(r["seq"].as_u64().unwrap());
            }
        }
    });
    let count = |s: &Seen| s.seqs.values().map(BTreeSet::len).sum::<usize>();

    let mut gateway = Command::new(BIN)
        .args(["run", "--config"])
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_until("telemetry flows", Duration::from_secs(30), || {
        count(&seen.lock().unwrap()) >= 1000
    });
    let adapters = children(gateway.id());
    assert_eq!(adapters.len(), 1);

    let tmp = dir.path().join("gateway.toml.new");
    std::fs::write(&tmp, config(dir.path(), port, 5)).unwrap();
    std::fs::rename(&tmp, &path).unwrap();
    wait_until(
        "offline from the old sink, then online from the new",
        Duration::from_secs(20),
        || {
            let s = seen.lock().unwrap();
            s.status.iter().filter(|m| *m == "online").count() >= 2
        },
    );
    let at = count(&seen.lock().unwrap());
    wait_until(
        "telemetry flows through the new sink",
        Duration::from_secs(20),
        || count(&seen.lock().unwrap()) >= at + 1000,
    );
    assert_eq!(
        children(gateway.id()),
        adapters,
        "the adapter kept its process"
    );

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(gateway.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = common::wait_exit(&mut gateway, Duration::from_secs(20), "no exit");
    assert!(status.success(), "{status}");
    std::thread::sleep(Duration::from_millis(500));
    let s = seen.lock().unwrap();
    assert_eq!(
        s.status,
        ["online", "offline", "online", "offline"],
        "old sink closed before the new one connected"
    );
    assert_eq!(
        s.seqs.len(),
        1,
        "one source, one epoch: {:?}",
        s.seqs.keys()
    );
    for ((source, epoch), set) in &s.seqs {
        let (min, max) = (*set.first().unwrap(), *set.last().unwrap());
        assert_eq!(
            max - min + 1,
            set.len() as u64,
            "{source} epoch {epoch}: a gap across the sink swap"
        );
    }
}
