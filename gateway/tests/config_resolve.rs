//! Stage two: defaults, paths, topics, and resolved configurations that compare per source
//! (hot reload diffs them).

use std::path::Path;
use std::time::Duration;

use edgegw::config::{self, ResolvedConfig, SYNTHETIC_SOURCE_ID_BASE};

const MINIMAL: &str = r#"
[gateway]
name = "gw-1"

[mqtt]
host = "10.0.0.5"

[[synthetic]]
name = "sim"
group = "g"
tags = [{ name = "t", signal = "sine", rate_hz = 1.0 }]
"#;

fn parse(text: &str) -> ResolvedConfig {
    config::parse(text, "/etc/edge-gateway/gateway.toml").unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn defaults_fill_in_everything_but_name_broker_and_sources() {
    let cfg = parse(MINIMAL);
    assert_eq!(cfg.gateway.state_dir, Path::new("/var/lib/edge-gateway"));
    assert_eq!(cfg.gateway.shutdown_timeout, Duration::from_secs(10));
    assert_eq!(cfg.gateway.ring_capacity, 16_384);
    assert_eq!(cfg.mqtt.port, Some(1883));
    assert_eq!(cfg.mqtt.client_id.as_deref(), Some("gw-1"));
    assert_eq!(cfg.mqtt.qos, 1);
    assert_eq!(cfg.spool.path, Path::new("/var/lib/edge-gateway/spool.db"));
    assert_eq!(
        cfg.spool.config.path.as_deref(),
        Some(cfg.spool.path.as_path())
    );
    assert_eq!(cfg.spool.config.max_bytes, 256 * 1024 * 1024);
    assert_eq!(cfg.payload.prefix, "edge-gateway/gw-1");
    assert_eq!(
        cfg.mqtt.status_topic.as_deref(),
        Some("edge-gateway/gw-1/status")
    );
    assert_eq!(cfg.payload.max_batch, 500);
    assert_eq!(cfg.payload.linger, Duration::from_millis(50));
    assert_eq!(
        cfg.sources[0].devices[0].groups[0].topic,
        "edge-gateway/gw-1/sim/g"
    );
    assert_eq!(cfg.sources[0].source_id, SYNTHETIC_SOURCE_ID_BASE);
}

#[test]
fn tls_changes_the_default_port() {
    let cfg = parse(&MINIMAL.replace("host = \"10.0.0.5\"", "host = \"b\"\ntls = {}"));
    assert_eq!(cfg.mqtt.port, Some(8883));
}

#[test]
fn relative_paths_are_taken_from_the_config_directory() {
    let text = MINIMAL.replace("name = \"gw-1\"", "name = \"gw-1\"\nstate_dir = \"state\"")
        + "[spool]\npath = \"q/spool.sqlite\"\n";
    let text = text.replace(
        "host = \"10.0.0.5\"",
        "host = \"10.0.0.5\"\nusername = \"u\"\npassword_file = \"secret/pw\"\ntls = { ca_file = \"ca.pem\", cert_file = \"/abs/c.pem\", key_file = \"k.pem\" }",
    );
    let cfg = parse(&text);
    assert_eq!(cfg.gateway.state_dir, Path::new("/etc/edge-gateway/state"));
    assert_eq!(
        cfg.gateway.epoch_store_path,
        Path::new("/etc/edge-gateway/state/epochs.json")
    );
    // The spool is relative to the state directory.
    assert_eq!(
        cfg.spool.path,
        Path::new("/etc/edge-gateway/state/q/spool.sqlite")
    );
    assert_eq!(
        cfg.mqtt.password_file.as_deref(),
        Some(Path::new("/etc/edge-gateway/secret/pw"))
    );
    let tls = cfg.mqtt.tls.as_ref().unwrap();
    assert_eq!(
        tls.ca_file.as_deref(),
        Some(Path::new("/etc/edge-gateway/ca.pem"))
    );
    assert_eq!(tls.cert_file.as_deref(), Some(Path::new("/abs/c.pem")));
    assert_eq!(
        tls.key_file.as_deref(),
        Some(Path::new("/etc/edge-gateway/k.pem"))
    );
}

#[test]
fn topic_templates_render_every_placeholder() {
    let text = MINIMAL.replace(
        "[[synthetic]]",
        "[payload]\nprefix = \"site/{gateway}\"\ntopic = \"{prefix}/data/{gateway}/{group}/{device}\"\n\n[[synthetic]]",
    );
    let cfg = parse(&text);
    assert_eq!(cfg.payload.prefix, "site/gw-1");
    assert_eq!(
        cfg.sources[0].devices[0].groups[0].topic,
        "site/gw-1/data/gw-1/g/sim"
    );
    // The status topic follows the prefix unless [mqtt] names one.
    assert_eq!(cfg.mqtt.status_topic.as_deref(), Some("site/gw-1/status"));
    assert_eq!(cfg.status_topic(), "site/gw-1/status");
    let cfg = parse(&text.replace(
        "host = \"10.0.0.5\"",
        "host = \"10.0.0.5\"\nstatus_topic = \"status/gw-1\"",
    ));
    assert_eq!(cfg.mqtt.status_topic.as_deref(), Some("status/gw-1"));
    let err = config::parse(
        &MINIMAL.replace(
            "[[synthetic]]",
            "[payload]\nprefix = \"{prefix}/x\"\n[[synthetic]]",
        ),
        "gw.toml",
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("payload.prefix: unknown placeholder {prefix}; allowed here: {gateway}"),
        "{err}"
    );
}

const TWO_DEVICES: &str = r#"
[gateway]
name = "gw"
[mqtt]
host = "broker"
[[devices]]
name = "a"
protocol = "modbus-tcp"
address = "10.0.0.1:502"
[[devices.groups]]
name = "g"
interval_ms = 100
tags = [{ name = "x", table = "coil", address = 0 }]
[[devices]]
name = "b"
protocol = "modbus-tcp"
address = "10.0.0.2:502"
[[devices.groups]]
name = "g"
interval_ms = 100
tags = [{ name = "x", table = "coil", address = 0 }]
[[synthetic]]
name = "sim"
group = "g"
tags = [{ name = "t", signal = "sine", rate_hz = 1.0 }]
"#;

#[test]
fn an_unchanged_file_resolves_equal() {
    assert_eq!(parse(TWO_DEVICES), parse(TWO_DEVICES));
}

#[test]
fn a_changed_interval_changes_only_its_source() {
    let old = parse(TWO_DEVICES);
    let new = parse(&TWO_DEVICES.replacen("interval_ms = 100\ntags = [{ name = \"x\", table = \"coil\", address = 0 }]\n[[synthetic]]", "interval_ms = 250\ntags = [{ name = \"x\", table = \"coil\", address = 0 }]\n[[synthetic]]", 1));
    let changed: Vec<&str> = new
        .sources
        .iter()
        .filter(|s| old.source(&s.name) != Some(s))
        .map(|s| s.name.as_str())
        .collect();
    assert_eq!(changed, ["b"]);
    assert_eq!(old.gateway, new.gateway);
    assert_eq!(old.mqtt, new.mqtt);
}

#[test]
fn adding_a_device_at_the_end_renumbers_nothing() {
    let old = parse(TWO_DEVICES);
    let added = TWO_DEVICES.replace(
        "[[synthetic]]",
        "[[devices]]\nname = \"c\"\nprotocol = \"modbus-tcp\"\naddress = \"10.0.0.3:502\"\n[[devices.groups]]\nname = \"g\"\ninterval_ms = 100\ntags = [{ name = \"x\", table = \"coil\", address = 0 }]\n[[synthetic]]",
    );
    let new = parse(&added);
    for s in &old.sources {
        assert_eq!(new.source(&s.name), Some(s), "{} changed", s.name);
    }
    assert_eq!(new.source("c").unwrap().source_id, 2);
}

#[test]
fn removing_a_device_renumbers_the_devices_after_it() {
    // Device record ids are indices in [[devices]] (the adapters' rule): a reload that
    // removes a device must restart the sources after it (they compare unequal).
    let old = parse(TWO_DEVICES);
    let start = TWO_DEVICES.find("[[devices]]\nname = \"a\"").unwrap();
    let end = TWO_DEVICES.find("[[devices]]\nname = \"b\"").unwrap();
    let new = parse(&(TWO_DEVICES[..start].to_owned() + &TWO_DEVICES[end..]));
    let b_old = old.source("b").unwrap();
    let b_new = new.source("b").unwrap();
    assert_eq!((b_old.source_id, b_new.source_id), (1, 0));
    assert_ne!(b_old, b_new);
    assert_eq!(old.source("sim"), new.source("sim"));
}

#[test]
fn a_serial_port_named_like_a_device_is_refused() {
    let text = TWO_DEVICES.replace(
        "[[synthetic]]",
        "[[devices]]\nname = \"rtu\"\nprotocol = \"modbus-rtu\"\nserial = { port = \"a\" }\n[[devices.groups]]\nname = \"g\"\ninterval_ms = 100\ntags = [{ name = \"x\", table = \"coil\", address = 0 }]\n[[synthetic]]",
    );
    let err = config::parse(&text, "gw.toml").unwrap_err().to_string();
    let line = text
        .lines()
        .position(|l| l.starts_with("serial = "))
        .unwrap()
        + 1;
    assert!(
        err.starts_with(&format!("gw.toml:{line}:12: devices[2].serial.port: the serial line is named after its port, \"a\", which is also the name of source a")),
        "{err}"
    );
}
