//! The command line as an operator meets it: `check`, `run` against a real broker until SIGTERM,
//! `spool stats`, and configuration errors with exit code 78.

use std::collections::{HashMap, HashSet};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rumqttc::{Client, Event, MqttOptions, Packet, QoS};

mod common;
use common::{Mosquitto, free_port};

const BIN: &str = env!("CARGO_BIN_EXE_edge-gateway");

/// Seqs received per `(source, epoch)`.
type SeenSeqs = Arc<Mutex<HashMap<(String, u64), HashSet<u64>>>>;

fn config(dir: &std::path::Path, port: u16) -> std::path::PathBuf {
    let path = dir.join("gateway.toml");
    std::fs::write(
        &path,
        format!(
            r#"[gateway]
name = "cli-test"
state_dir = "{state}"
shutdown_timeout_ms = 5000

[mqtt]
host = "127.0.0.1"
port = {port}

[[synthetic]]
name = "sim"
group = "signals"
tags = [
  {{ name = "a", signal = "counter", rate_hz = 200.0 }},
  {{ name = "b", signal = "sine", rate_hz = 200.0, min = 0.0, max = 10.0, period_ms = 1000 }},
]
"#,
            state = dir.join("state").display()
        ),
    )
    .unwrap();
    path
}

#[test]
fn check_prints_the_plan_and_accepts_the_shipped_example() {
    let out = Command::new(BIN)
        .args([
            "check",
            "--config",
            concat!(env!("CARGO_MANIFEST_DIR"), "/config/gateway.example.toml"),
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("fc 0x03 holding-register"),
        "the planned Modbus requests: {stdout}"
    );
    assert!(stdout.contains("configuration OK"), "{stdout}");
}

#[test]
fn invalid_configurations_exit_78_naming_file_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "unknown key",
            "[gateway]\nname = \"g\"\ncolour = \"red\"\n[mqtt]\nhost = \"h\"\n",
            "gateway.colour",
        ),
        (
            "bad type",
            "[gateway]\nname = 5\n[mqtt]\nhost = \"h\"\n",
            "gateway.name",
        ),
        (
            "missing broker",
            "[gateway]\nname = \"g\"\n[[synthetic]]\nname = \"s\"\ngroup = \"x\"\ntags = [{ name = \"a\", signal = \"counter\", rate_hz = 1.0 }]\n",
            "mqtt",
        ),
        (
            "bad address",
            "[gateway]\nname = \"g\"\n[mqtt]\nhost = \"h\"\n[[devices]]\nname = \"d\"\nprotocol = \"modbus-tcp\"\naddress = \"plc:99999\"\n",
            "devices[0].address",
        ),
    ];
    for (what, text, key) in cases {
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, text).unwrap();
        for command in [&["check"][..], &["run"][..], &["spool", "stats"][..]] {
            let out = Command::new(BIN)
                .args(command)
                .arg("--config")
                .arg(&path)
                .output()
                .unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(
                out.status.code(),
                Some(78),
                "{what} ({command:?}): {stderr}"
            );
            let line = stderr
                .lines()
                .find(|l| l.contains(key))
                .unwrap_or_else(|| panic!("{what}: no line names {key}: {stderr}"));
            assert!(
                line.starts_with(&format!("{}:", path.display())),
                "{what}: {line}"
            );
            let mut parts = line[path.display().to_string().len() + 1..].splitn(3, ':');
            let (l, c) = (parts.next().unwrap(), parts.next().unwrap());
            assert!(
                l.parse::<u32>().is_ok() && c.parse::<u32>().is_ok(),
                "{what}: no line:column in {line}"
            );
        }
    }
}

#[test]
fn run_publishes_until_sigterm_then_exits_zero_and_the_spool_is_inspectable() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _broker = Mosquitto::start(dir.path(), port);
    let path = config(dir.path(), port);

    let seen: SeenSeqs = Arc::default();
    let status: Arc<Mutex<Vec<String>>> = Arc::default();
    let mut opts = MqttOptions::new("cli-checker", "127.0.0.1", port);
    opts.set_max_packet_size(8 << 20, 8 << 20);
    let (client, mut connection) = Client::new(opts, 100);
    client
        .subscribe("edge-gateway/#", QoS::AtLeastOnce)
        .unwrap();
    let (seen_w, status_w) = (Arc::clone(&seen), Arc::clone(&status));
    std::thread::spawn(move || {
        for event in connection.iter() {
            let Ok(Event::Incoming(Packet::Publish(p))) = event else {
                continue;
            };
            if p.topic.ends_with("/status") {
                status_w
                    .lock()
                    .unwrap()
                    .push(String::from_utf8_lossy(&p.payload).into_owned());
                continue;
            }
            let doc: serde_json::Value = serde_json::from_slice(&p.payload).unwrap();
            let key = (
                doc["source"].as_str().unwrap().to_owned(),
                doc["epoch"].as_u64().unwrap(),
            );
            let mut seen = seen_w.lock().unwrap();
            let set = seen.entry(key).or_default();
            for r in doc["records"].as_array().unwrap() {
                set.insert(r["seq"].as_u64().unwrap());
            }
        }
    });

    let mut gateway = Command::new(BIN)
        .args(["run", "--config"])
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while seen
        .lock()
        .unwrap()
        .values()
        .map(|s| s.len())
        .sum::<usize>()
        < 2_000
    {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "no telemetry arrived"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let pid = nix::unistd::Pid::from_raw(gateway.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let status_code = common::wait_exit(
        &mut gateway,
        Duration::from_secs(15),
        "SIGTERM: no exit within the bound",
    );
    assert!(status_code.success(), "{status_code}");
    std::thread::sleep(Duration::from_millis(500));

    for ((source, epoch), set) in seen.lock().unwrap().iter() {
        let max = *set.iter().max().unwrap();
        assert_eq!(
            max + 1,
            set.len() as u64,
            "{source} epoch {epoch}: gaps after a clean stop"
        );
    }
    let status = status.lock().unwrap();
    assert_eq!(
        status.first().map(String::as_str),
        Some("online"),
        "{status:?}"
    );
    assert_eq!(
        status.last().map(String::as_str),
        Some("offline"),
        "{status:?}"
    );

    let out = Command::new(BIN)
        .args(["spool", "stats", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("batches          0"),
        "nothing left spooled: {stdout}"
    );
}
