//! The shipped example configuration loads (also with its commented-out serial line enabled),
//! and the plan `edge-gateway check` prints from it says what a plant engineer needs.

use std::path::{Path, PathBuf};

use edgegw::config::{self, SourceKind};
use edgegw_plc::modbus::Transport;

fn example_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("config/gateway.example.toml")
}

fn example_text() -> String {
    std::fs::read_to_string(example_path()).unwrap()
}

/// The example with the block between `# BEGIN RTU` and `# END RTU` uncommented.
fn with_rtu_enabled(text: &str) -> String {
    let mut out = String::new();
    let mut inside = false;
    for line in text.lines() {
        match line {
            "# BEGIN RTU" => inside = true,
            "# END RTU" => inside = false,
            l if inside => {
                out.push_str(l.strip_prefix("# ").or(l.strip_prefix('#')).unwrap_or(l));
                out.push('\n');
            }
            l => {
                out.push_str(l);
                out.push('\n');
            }
        }
    }
    out
}

#[test]
fn example_config_loads() {
    let cfg = config::load(&example_path()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(cfg.gateway.name, "line3-gw");
    assert_eq!(
        cfg.gateway.epoch_store_path,
        Path::new("/var/lib/edge-gateway/epochs.json")
    );
    assert_eq!(cfg.spool.path, Path::new("/var/lib/edge-gateway/spool.db"));
    assert_eq!(cfg.mqtt.port, Some(8883));
    assert_eq!(cfg.mqtt.client_id.as_deref(), Some("line3-gw"));
    assert!(cfg.mqtt.tls.is_some());
    assert_eq!(
        cfg.mqtt.status_topic.as_deref(),
        Some("plant-a/edge-gateway/line3-gw/status")
    );
    let names: Vec<&str> = cfg.sources.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["filler-1", "line3-sim"]);
    let filler = &cfg.sources[0];
    assert_eq!(filler.devices[0].groups.len(), 2);
    assert_eq!(
        filler.devices[0].groups[0].topic,
        "plant-a/edge-gateway/line3-gw/filler-1/fast"
    );
}

#[test]
fn example_config_with_its_serial_line_enabled_loads() {
    let text = with_rtu_enabled(&example_text());
    assert!(text.contains("\n[[devices]]\nname = \"conveyor-drive-1\""));
    let cfg = config::parse(&text, "gateway.example.toml").unwrap_or_else(|e| panic!("{e}"));
    let line = cfg
        .source("/dev/ttyUSB0")
        .expect("the serial line is one source");
    let SourceKind::Modbus { link, .. } = &line.kind else {
        panic!("{line:?}");
    };
    assert!(matches!(&link.transport, Transport::Rtu(s) if s.baud == 19200));
    let units: Vec<(&str, u32)> = line
        .devices
        .iter()
        .map(|d| (d.name.as_str(), d.record_source_id))
        .collect();
    assert_eq!(units, [("conveyor-drive-1", 1), ("conveyor-drive-2", 2)]);
}

#[test]
fn plan_report_names_everything_but_the_password() {
    let cfg = config::load(&example_path()).unwrap();
    let report = cfg.plan_report();
    for expected in [
        "gateway line3-gw",
        "/var/lib/edge-gateway",
        "broker broker.plant.example:8883",
        "TLS               yes",
        "user              line3-gw (password read from /run/credentials/",
        "status topic      plant-a/edge-gateway/line3-gw/status",
        "spool /var/lib/edge-gateway/spool.db: at most 256.0 MiB",
        "source filler-1 (ring id 0, 11 tags)",
        "link filler-1: modbus-tcp 192.0.2.10:502",
        "group fast every 100 ms",
        "fc 0x03 holding-register 0..=2",
        "plant-a/edge-gateway/line3-gw/filler-1/counters ← filler-1/counters (4 tags, every 1000 ms)",
        "source line3-sim (ring id 1000000, 4 tags)",
    ] {
        assert!(
            report.contains(expected),
            "missing {expected:?} in:\n{report}"
        );
    }
}

#[test]
fn serde_reads_the_example_like_the_section_parser() {
    // `RawConfig` also derives Deserialize for whole documents; both readings must agree.
    let text = with_rtu_enabled(&example_text());
    let whole: config::RawConfig = toml::from_str(&text).unwrap();
    let sections = config::parse_raw(&text, "gateway.example.toml").unwrap();
    assert_eq!(whole, sections);
}
