//! Bad configurations are refused with `file:line:column: key.path: what is wrong`, pointing at
//! the line to edit, and every problem of a file is reported at once.

use edgegw::config::{self, ConfigError, EX_CONFIG};

const FILE: &str = "gateway.toml";

/// A valid configuration; tests break one or more lines of it.
const GOOD: &str = r#"[gateway]
name = "line3-gw"
state_dir = "/tmp/edge-gateway-test"

[mqtt]
host = "broker.local"
port = 1883

[payload]
topic = "{prefix}/{device}/{group}"

[[devices]]
name = "press-1"
protocol = "modbus-tcp"
address = "192.0.2.10:502"

[[devices.groups]]
name = "fast"
interval_ms = 100

[[devices.groups.tags]]
name = "temp"
table = "holding-register"
address = 0
type = "f32"
scale = 0.1

[[devices.groups]]
name = "slow"
interval_ms = 1000
tags = [{ name = "count", table = "holding-register", address = 10, type = "u32" }]

[[devices]]
name = "press-2"
protocol = "modbus-tcp"
address = "plc-2.plant.local:502"
[[devices.groups]]
name = "fast"
interval_ms = 100
tags = [{ name = "temp", table = "input-register", address = 0 }]

[[synthetic]]
name = "sim"
group = "signals"
tags = [{ name = "count", signal = "counter", rate_hz = 10.0 }]
"#;

/// 1-based line of the first line of `text` that contains `needle` (after `after`, if given).
fn line_of(text: &str, needle: &str) -> usize {
    text.lines()
        .position(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("{needle:?} not in the text"))
        + 1
}

/// `text` with the first occurrence of `from` replaced.
fn edit(from: &str, to: &str) -> String {
    assert!(GOOD.contains(from), "{from:?} not in GOOD");
    GOOD.replacen(from, to, 1)
}

fn error_of(text: &str) -> String {
    match config::parse(text, FILE) {
        Ok(_) => panic!("accepted:\n{text}"),
        Err(e) => {
            assert_eq!(e.exit_code(), EX_CONFIG);
            assert!(matches!(e, ConfigError::Invalid { .. }));
            e.to_string()
        }
    }
}

/// Asserts that some line of `err` starts with `gateway.toml:<line>:<col>: <path>: ` and then
/// contains `message`.
#[track_caller]
fn assert_problem(err: &str, line: usize, col: Option<usize>, path: &str, message: &str) {
    let found = err.lines().any(|l| {
        let Some(rest) = l.strip_prefix(&format!("{FILE}:{line}:")) else {
            return false;
        };
        let Some((c, rest)) = rest.split_once(": ") else {
            return false;
        };
        col.is_none_or(|col| c == col.to_string())
            && rest
                .strip_prefix(&format!("{path}: "))
                .is_some_and(|m| m.contains(message))
    });
    assert!(
        found,
        "expected {FILE}:{line}:{}: {path}: …{message}… in:\n{err}",
        col.map_or("*".into(), |c| c.to_string())
    );
}

#[test]
fn the_base_configuration_is_valid() {
    config::parse(GOOD, FILE).unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn unknown_key_is_named_at_its_line() {
    let text = edit("scale = 0.1", "scael = 0.1");
    let err = error_of(&text);
    assert_problem(
        &err,
        line_of(&text, "scael"),
        Some(1),
        "devices[0].groups[0].tags[0].scael",
        "unknown key, expected one of",
    );
    assert_eq!(err.lines().count(), 1, "{err}");
}

#[test]
fn unknown_top_level_table_is_named() {
    let text = format!("{GOOD}\n[mqqt]\nhost = \"x\"\n");
    let err = error_of(&text);
    assert_problem(
        &err,
        line_of(&text, "[mqqt]"),
        Some(2),
        "mqqt",
        "unknown key, expected one of gateway, mqtt",
    );
}

#[test]
fn bad_type_points_at_the_value() {
    let text = edit("interval_ms = 1000", "interval_ms = \"1s\"");
    let err = error_of(&text);
    assert_problem(
        &err,
        line_of(&text, "\"1s\""),
        Some(15),
        "devices[0].groups[1].interval_ms",
        "invalid type: string \"1s\", expected u64",
    );
}

#[test]
fn bad_enum_value_lists_the_choices() {
    let text = edit("protocol = \"modbus-tcp\"", "protocol = \"modbus-tpc\"");
    let err = error_of(&text);
    assert_problem(
        &err,
        line_of(&text, "modbus-tpc"),
        None,
        "devices[0].protocol",
        "unknown variant `modbus-tpc`, expected `modbus-tcp` or `modbus-rtu`",
    );
}

#[test]
fn missing_broker_is_a_clear_error() {
    let text = edit("[mqtt]\nhost = \"broker.local\"\nport = 1883\n", "");
    let err = error_of(&text);
    assert_problem(
        &err,
        1,
        Some(1),
        "mqtt",
        "missing broker: add an [mqtt] table",
    );

    let text = edit("host = \"broker.local\"\n", "");
    let err = error_of(&text);
    assert_problem(
        &err,
        line_of(&text, "[mqtt]"),
        Some(1),
        "mqtt.host",
        "missing required key",
    );
}

#[test]
fn missing_required_key_points_at_the_table_that_lacks_it() {
    let text = edit("protocol = \"modbus-tcp\"\n", "");
    let err = error_of(&text);
    assert_problem(
        &err,
        line_of(&text, "[[devices]]"),
        Some(1),
        "devices[0].protocol",
        "missing required key",
    );
    // A key the adapters require for TCP only: reported by their validation, same place.
    let text = edit("address = \"192.0.2.10:502\"\n", "");
    let err = error_of(&text);
    assert_problem(
        &err,
        line_of(&text, "[[devices]]"),
        Some(1),
        "devices[0].address",
        "required for modbus-tcp",
    );
}

#[test]
fn bad_addresses_are_refused_without_a_lookup() {
    for (bad, why) in [
        ("192.0.2.10", "must be host:port"),
        ("192.0.2.10:0", "port must be 1..=65535"),
        ("192.0.2.10:70000", "must be host:port"),
        ("plc two:502", "must be host:port"),
        ("fd00::1:502", "must be host:port"),
    ] {
        let text = edit("192.0.2.10:502", bad);
        let err = error_of(&text);
        assert_problem(
            &err,
            line_of(&text, "address = "),
            Some(1),
            "devices[0].address",
            why,
        );
    }
    let text = edit("host = \"broker.local\"", "host = \"broker local\"");
    let err = error_of(&text);
    assert_problem(
        &err,
        line_of(&text, "broker local"),
        Some(1),
        "mqtt.host",
        "not a valid host name",
    );
    let text = edit("port = 1883", "port = 0");
    assert_problem(
        &error_of(&text),
        line_of(&text, "port = 0"),
        Some(1),
        "mqtt.port",
        "must be 1..=65535",
    );
    let text = edit("port = 1883", "port = 65536");
    assert_problem(
        &error_of(&text),
        line_of(&text, "port = 65536"),
        Some(8),
        "mqtt.port",
        "invalid value: integer `65536`, expected u16",
    );
}

#[test]
fn a_cpu_wake_latency_beyond_a_second_is_refused_at_its_line() {
    let text = edit(
        "state_dir = \"/tmp/edge-gateway-test\"",
        "state_dir = \"/tmp/edge-gateway-test\"\ncpu_wake_latency_us = 50000000",
    );
    let err = error_of(&text);
    assert_problem(
        &err,
        line_of(&text, "cpu_wake_latency_us"),
        Some(1),
        "gateway.cpu_wake_latency_us",
        "must be at most 1000000 (µs, i.e. 1 s)",
    );
    let ok = edit(
        "state_dir = \"/tmp/edge-gateway-test\"",
        "state_dir = \"/tmp/edge-gateway-test\"\ncpu_wake_latency_us = 0",
    );
    let cfg = config::parse(&ok, FILE).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        cfg.gateway.cpu_wake_latency,
        Some(std::time::Duration::ZERO)
    );
}

#[test]
fn interval_zero_is_refused_at_its_line() {
    let text = edit("interval_ms = 1000", "interval_ms = 0");
    let err = error_of(&text);
    let line = line_of(&text, "interval_ms = 0");
    assert_problem(
        &err,
        line,
        Some(1),
        "devices[0].groups[1].interval_ms",
        "must be > 0",
    );
    assert_eq!(
        err,
        format!("{FILE}:{line}:1: devices[0].groups[1].interval_ms: must be > 0")
    );
}

#[test]
fn duplicate_names_are_refused() {
    let text = edit("name = \"press-2\"", "name = \"press-1\"");
    let err = error_of(&text);
    assert_problem(
        &err,
        line_of(&text, "address = \"plc-2") - 2,
        Some(1),
        "devices[1].name",
        "duplicate device name \"press-1\"",
    );

    let text = edit("name = \"sim\"", "name = \"press-2\"");
    let err = error_of(&text);
    assert_problem(
        &err,
        line_of(&text, "[[synthetic]]") + 1,
        Some(1),
        "synthetic[0].name",
        "duplicate source name \"press-2\" (also devices[1])",
    );

    let text = format!(
        "{GOOD}\n[[synthetic]]\nname = \"sim\"\ngroup = \"g\"\ntags = [{{ name = \"a\", signal = \"sine\", rate_hz = 1.0 }}, {{ name = \"a\", signal = \"ramp\", rate_hz = 1.0 }}]\n"
    );
    let err = error_of(&text);
    let line = text.lines().count() - 2;
    assert_problem(
        &err,
        line,
        Some(1),
        "synthetic[1].name",
        "duplicate source name \"sim\" (also synthetic[0])",
    );
    assert_problem(
        &err,
        line + 2,
        None,
        "synthetic[1].tags[1].name",
        "duplicate tag name \"a\"",
    );
}

#[test]
fn names_in_topics_must_be_topic_safe() {
    for bad in ["press/1", "press+1", "press#1"] {
        let text = edit("name = \"press-1\"", &format!("name = \"{bad}\""));
        let err = error_of(&text);
        assert_problem(
            &err,
            line_of(&text, bad),
            Some(1),
            "devices[0].name",
            "cannot be used in an MQTT topic",
        );
    }
    let text = edit("name = \"line3-gw\"", "name = \"\"");
    assert_problem(
        &error_of(&text),
        2,
        Some(1),
        "gateway.name",
        "must not be empty",
    );
    let text = edit("group = \"signals\"", "group = \"a/b\"");
    assert_problem(
        &error_of(&text),
        line_of(&text, "a/b"),
        Some(1),
        "synthetic[0].group",
        "cannot be used in an MQTT topic",
    );
}

#[test]
fn unknown_topic_placeholders_are_refused() {
    let text = edit("{prefix}/{device}/{group}", "{prefix}/{devcie}/{group}");
    let err = error_of(&text);
    assert_problem(
        &err,
        line_of(&text, "devcie"),
        Some(1),
        "payload.topic",
        "unknown placeholder {devcie}; allowed here: {prefix}, {gateway}, {device}, {group}",
    );
}

#[test]
fn every_problem_is_reported_at_once_in_file_order() {
    let text = GOOD
        .replacen("port = 1883", "port = 1883\nqos = 2", 1)
        .replacen("interval_ms = 1000", "interval_ms = 0", 1)
        .replacen("plc-2.plant.local:502", "plc-2.plant.local", 1)
        .replacen("{prefix}/{device}/{group}", "{prefix}/{device}/{grp}", 1)
        .replacen("rate_hz = 10.0", "rate_hz = 0.0", 1)
        .replacen("name = \"sim\"", "name = \"press-1\"", 1);
    let err = error_of(&text);
    let expected = [
        (line_of(&text, "qos = 2"), "mqtt.qos"),
        (line_of(&text, "{grp}"), "payload.topic"),
        (
            line_of(&text, "interval_ms = 0"),
            "devices[0].groups[1].interval_ms",
        ),
        (line_of(&text, "plc-2.plant.local"), "devices[1].address"),
        (line_of(&text, "[[synthetic]]") + 1, "synthetic[0].name"),
        (
            line_of(&text, "rate_hz = 0.0"),
            "synthetic[0].tags[0].rate_hz",
        ),
    ];
    for (line, path) in expected {
        assert_problem(&err, line, None, path, "");
    }
    assert_eq!(err.lines().count(), expected.len(), "{err}");
    let lines: Vec<usize> = err
        .lines()
        .map(|l| l.split(':').nth(1).unwrap().parse().unwrap())
        .collect();
    assert!(lines.is_sorted(), "{err}");
}

#[test]
fn shape_errors_in_several_sections_are_all_reported() {
    // serde stops at the first error of a section or list entry, but not of the file.
    let text = GOOD
        .replacen("state_dir = ", "stat_dir = ", 1)
        .replacen("scale = 0.1", "scale = \"0.1\"", 1)
        .replacen("address = \"plc-2.plant.local:502\"", "adress = \"x:1\"", 1)
        .replacen("rate_hz = 10.0", "rate_hz = 10.0, phase = 1", 1);
    let err = error_of(&text);
    assert_problem(
        &err,
        line_of(&text, "stat_dir"),
        Some(1),
        "gateway.stat_dir",
        "unknown key",
    );
    assert_problem(
        &err,
        line_of(&text, "scale = \"0.1\""),
        Some(9),
        "devices[0].groups[0].tags[0].scale",
        "invalid type: string \"0.1\", expected f64",
    );
    assert_problem(
        &err,
        line_of(&text, "adress"),
        Some(1),
        "devices[1].adress",
        "unknown key",
    );
    assert_problem(
        &err,
        line_of(&text, "phase = 1"),
        None,
        "synthetic[0].tags[0].phase",
        "unknown key",
    );
    assert_eq!(err.lines().count(), 4, "{err}");
}

#[test]
fn toml_syntax_errors_are_located() {
    let text = edit("port = 1883", "port = ");
    let err = error_of(&text);
    let line = line_of(&text, "port = ");
    assert!(
        err.starts_with(&format!("{FILE}:{line}:")) && err.contains("TOML syntax: "),
        "{err}"
    );
    // The key path is the table the error is in, or the key when the parser got that far.
    assert!(err.contains(": mqtt.port: TOML syntax"), "{err}");

    let text = edit(
        "name = \"fast\"\ninterval_ms = 100",
        "name = \"fast\"\nname = \"x\"",
    );
    let err = error_of(&text);
    assert_problem(
        &err,
        line_of(&text, "name = \"x\""),
        Some(1),
        "devices[0].groups[0]",
        "TOML syntax: duplicate key",
    );
}

#[test]
fn a_missing_file_is_a_config_error_naming_the_path() {
    let path = std::path::Path::new("/nonexistent/edge-gateway/gateway.toml");
    let err = config::load(path).unwrap_err();
    assert!(matches!(err, ConfigError::Unreadable { .. }));
    assert_eq!(err.exit_code(), 78);
    let text = err.to_string();
    assert!(
        text.starts_with("/nonexistent/edge-gateway/gateway.toml: cannot read the configuration: "),
        "{text}"
    );
}

#[test]
fn an_unreadable_file_is_a_config_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gateway.toml");
    std::fs::write(&path, b"[gateway]\nname = \"\xff\"\n").unwrap();
    let err = config::load(&path).unwrap_err();
    assert!(matches!(err, ConfigError::Unreadable { .. }), "{err}");
    assert!(
        err.to_string().contains("gateway.toml: cannot read"),
        "{err}"
    );
}

#[test]
fn errors_carry_the_file_name_as_given() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gw.toml");
    std::fs::write(&path, edit("interval_ms = 1000", "interval_ms = 0")).unwrap();
    let err = config::load(&path).unwrap_err().to_string();
    assert!(err.starts_with(&format!("{}:", path.display())), "{err}");
}

#[test]
fn an_empty_file_names_what_is_required() {
    let err = error_of("");
    assert_problem(
        &err,
        1,
        Some(1),
        "gateway",
        "missing required table [gateway]",
    );
    assert_problem(&err, 1, Some(1), "mqtt", "missing broker");
    assert_problem(&err, 1, Some(1), "devices", "no sources");
}
