//! The tag table maps every record the PLC adapters emit, `(source_id, tag_id)`, to the tag
//! that produced it: checked against the adapters' own resolution and against records they
//! really emit (the Modbus poller against the simulator, the synthetic source).

use std::time::Duration;

use edgegw::adapter::AdapterJob;
use edgegw::config::{self, ResolvedConfig, SYNTHETIC_SOURCE_ID_BASE, SourceKind, SourcePlan};
use edgegw_plc::config::AdapterConfig;
use edgegw_plc::modbus::{LinkCounters, run_link};
use edgegw_plc::sim::{ModbusSim, SimSpec, SyntheticSource};
use edgegw_plc::{Emitter, FullPolicy, Quality, UncertainReason, VecSink};
use edgegw_ringbuf::{TelemetryRecord, ValueKind};

/// A TCP device between two units of one serial line (so record source ids of the line are
/// not contiguous), arrays, a string, a register bit, and a synthetic source.
fn config_text(tcp_address: &str) -> String {
    format!(
        r#"
[gateway]
name = "gw"
state_dir = "/tmp/edge-gateway-tag-table"

[mqtt]
host = "127.0.0.1"

[[devices]]
name = "drive-1"
protocol = "modbus-rtu"
unit_id = 1
serial = {{ port = "/dev/ttyUSB7", baud = 9600 }}
[[devices.groups]]
name = "drive"
interval_ms = 500
tags = [
  {{ name = "speed", table = "holding-register", address = 0 }},
  {{ name = "fault", table = "discrete-input", address = 3 }},
]

[[devices]]
name = "press-1"
protocol = "modbus-tcp"
address = "{tcp_address}"
[[devices.groups]]
name = "fast"
interval_ms = 50
tags = [
  {{ name = "temp", table = "holding-register", address = 0, type = "f32", order = "CDAB" }},
  {{ name = "rpm", table = "holding-register", address = 4, type = "u16", count = 3 }},
  {{ name = "on", table = "coil", address = 2 }},
]
[[devices.groups]]
name = "slow"
interval_ms = 100
tags = [
  {{ name = "recipe", table = "holding-register", address = 20, type = "string", length = 6 }},
  {{ name = "ready", table = "holding-register", address = 30, type = "bool", bit = 4 }},
  {{ name = "energy", table = "input-register", address = 40, type = "u64", order = "DCBA" }},
  {{ name = "level", table = "input-register", address = 50, type = "i16", scale = 0.5, count = 2 }},
]

[[devices]]
name = "drive-2"
protocol = "modbus-rtu"
unit_id = 2
serial = {{ port = "/dev/ttyUSB7", baud = 9600 }}
[[devices.groups]]
name = "drive"
interval_ms = 500
tags = [{{ name = "speed", table = "holding-register", address = 0 }}]

[[synthetic]]
name = "sim"
group = "signals"
tags = [
  {{ name = "c", signal = "counter", rate_hz = 1000.0 }},
  {{ name = "s", signal = "sine", rate_hz = 1000.0 }},
  {{ name = "r", signal = "random", rate_hz = 1000.0 }},
]
"#
    )
}

fn resolve(text: &str) -> ResolvedConfig {
    config::parse(text, "/etc/edge-gateway/gateway.toml").unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn sources_are_one_per_link_and_synthetic_with_plc_source_ids() {
    let cfg = resolve(&config_text("127.0.0.1:502"));
    let names: Vec<(&str, u32)> = cfg
        .sources
        .iter()
        .map(|s| (s.name.as_str(), s.source_id))
        .collect();
    assert_eq!(
        names,
        [
            ("/dev/ttyUSB7", 0),
            ("press-1", 1),
            ("sim", SYNTHETIC_SOURCE_ID_BASE)
        ]
    );
    let line = &cfg.sources[0];
    let ids: Vec<(&str, u32)> = line
        .devices
        .iter()
        .map(|d| (d.name.as_str(), d.record_source_id))
        .collect();
    assert_eq!(ids, [("drive-1", 0), ("drive-2", 2)]);
    assert_eq!(
        cfg.sources[1].devices[0].groups[1].topic,
        "edge-gateway/gw/press-1/slow"
    );
    assert_eq!(
        cfg.sources[1].unknown_topic,
        "edge-gateway/gw/press-1/_unknown"
    );
    assert_eq!(line.unknown_topic, "edge-gateway/gw/drive-1/_unknown");
}

#[test]
fn tag_table_matches_the_adapters_own_resolution() {
    let text = config_text("127.0.0.1:502");
    let cfg = resolve(&text);
    // The adapters' resolution of the same devices, done their way.
    let raw = config::parse_raw(&text, "gateway.toml").unwrap();
    let plc = AdapterConfig {
        devices: raw.devices.clone(),
        ..AdapterConfig::default()
    }
    .resolve()
    .unwrap();
    assert_eq!(plc.links.len(), 2);
    for link in &plc.links {
        let source = cfg.source(&link.name).expect("a source per link");
        match &source.kind {
            SourceKind::Modbus { link: planned, .. } => assert_eq!(planned, link),
            other => panic!("{other:?}"),
        }
        assert_eq!(source.source_id, link.devices[0].source_id);
        let mut count = 0;
        for device in &link.devices {
            for group in &device.groups {
                for tag in &device.tags[group.tags.clone()] {
                    let found = source
                        .lookup(device.source_id, tag.id)
                        .unwrap_or_else(|| panic!("no entry for {}/{}", device.name, tag.name));
                    assert_eq!(found.device.name, device.name);
                    assert_eq!(found.group.name, group.name);
                    assert_eq!(found.tag.name, tag.name);
                    assert_eq!(found.tag.data_type, tag.data_type);
                    count += 1;
                }
            }
        }
        assert_eq!(source.tag_count(), count, "no extra entries");
    }
    let press = cfg.source("press-1").unwrap();
    let names: Vec<&str> = press.devices[0]
        .tags
        .iter()
        .map(|t| t.name.as_str())
        .collect();
    assert_eq!(
        names,
        [
            "temp", "rpm[0]", "rpm[1]", "rpm[2]", "on", "recipe", "ready", "energy", "level[0]",
            "level[1]"
        ]
    );
    assert!(press.lookup(1, 10).is_none());
    assert!(
        press.lookup(0, 0).is_none(),
        "source 0 is on the serial line"
    );
}

#[test]
fn the_adapter_child_resolves_its_job_to_the_planned_link() {
    let cfg = resolve(&config_text("127.0.0.1:502"));
    for source in &cfg.sources {
        match (&source.kind, source.adapter_job()) {
            (
                SourceKind::Modbus { link, .. },
                AdapterJob::Modbus {
                    devices,
                    source_ids,
                },
            ) => {
                // What `edge-gateway adapter` does with its job.
                let child = AdapterJob::modbus_link(&devices, &source_ids).unwrap();
                assert_eq!(&child, link);
            }
            (SourceKind::Synthetic(planned), AdapterJob::Synthetic { group, config }) => {
                assert_eq!(&config, planned);
                assert_eq!(group, "signals");
            }
            (kind, job) => panic!("{kind:?} vs {job:?}"),
        }
    }
}

#[test]
fn forwarder_catalog_equals_the_one_built_from_the_job() {
    let cfg = resolve(&config_text("127.0.0.1:502"));
    // The daemon's existing path builds the catalog from the adapter job; the plan's must be
    // the same (for sources named after a device; a serial line is named after its port, and
    // the plan does not put the port into topics).
    for name in ["press-1", "sim"] {
        let source = cfg.source(name).unwrap();
        let from_job = source
            .adapter_job()
            .catalog(&source.name, |d, g| format!("edge-gateway/gw/{d}/{g}"))
            .unwrap();
        assert_eq!(source.catalog(), from_job, "{name}");
    }
}

fn assert_records_map(source: &SourcePlan, records: &[TelemetryRecord]) {
    assert!(!records.is_empty());
    let mut seen = std::collections::BTreeSet::new();
    for r in records {
        let entry = source
            .lookup(r.source_id, r.tag_id)
            .unwrap_or_else(|| panic!("record {r:?} has no entry in {}", source.name));
        if matches!(entry.tag.data_type, edgegw_plc::DataType::String { .. }) {
            assert_eq!(r.value_kind(), Some(ValueKind::Str), "{r:?}");
        }
        seen.insert((r.source_id, r.tag_id));
    }
    let all: std::collections::BTreeSet<(u32, u32)> = source
        .devices
        .iter()
        .flat_map(|d| (0..d.tags.len() as u32).map(|t| (d.record_source_id, t)))
        .collect();
    assert_eq!(seen, all, "every tag reported at least once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_polled_from_a_device_map_to_their_tags() {
    let sim = ModbusSim::start("127.0.0.1:0".parse().unwrap(), SimSpec::default())
        .await
        .unwrap();
    let cfg = resolve(&config_text(&sim.local_addr().to_string()));
    let source = cfg.source("press-1").unwrap();
    let SourceKind::Modbus { link, .. } = &source.kind else {
        panic!("press-1 is a Modbus source");
    };
    let mut emitter = Emitter::new(VecSink::default(), FullPolicy::default());
    let counters = LinkCounters::default();
    run_link(
        link,
        &mut emitter,
        &counters,
        tokio::time::sleep(Duration::from_millis(600)),
    )
    .await;
    let records = emitter.into_sink().records;
    // Every read is answered: each record is Good, or Uncertain(Overrun) when a cycle took
    // longer than its interval (it does under qemu-user on a loaded host; this test is about
    // which tag a record maps to, not about timing). Never Bad.
    let answered = |r: &TelemetryRecord| {
        matches!(
            Quality::from_code(r.quality, 0),
            Some(Quality::Good | Quality::Uncertain(UncertainReason::Overrun))
        )
    };
    assert!(
        records.iter().all(answered),
        "the simulator answers every read: {:?}",
        records.iter().find(|r| !answered(r))
    );
    assert_records_map(source, &records);
    sim.stop().await;
}

#[test]
fn records_of_a_synthetic_source_map_to_their_tags() {
    let cfg = resolve(&config_text("127.0.0.1:502"));
    let source = cfg.source("sim").unwrap();
    let SourceKind::Synthetic(config) = &source.kind else {
        panic!("sim is synthetic");
    };
    let mut emitter = Emitter::new(VecSink::default(), FullPolicy::default());
    let mut sim = SyntheticSource::new(config);
    assert!(sim.emit_due(10_000_000, 100, &mut emitter) > 0);
    let records = emitter.into_sink().records;
    assert!(records.iter().all(|r| r.source_id == source.source_id));
    assert_records_map(source, &records);
    let kinds: Vec<_> = (0..3)
        .map(|t| records.iter().find(|r| r.tag_id == t).unwrap().value_kind())
        .collect();
    assert_eq!(
        kinds,
        [
            Some(ValueKind::U64),
            Some(ValueKind::F64),
            Some(ValueKind::F64)
        ],
        "data types in the table: counter u64, others f64"
    );
}
