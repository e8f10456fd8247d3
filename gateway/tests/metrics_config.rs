//! `[metrics]` as an operator meets it: defaults, validation with exit 78 and the location,
//! and a port that cannot be bound.

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_edge-gateway");

fn config(metrics: &str) -> String {
    format!(
        r#"[gateway]
name = "g"
state_dir = "state"

[mqtt]
host = "127.0.0.1"
port = 1

[[synthetic]]
name = "s"
group = "x"
tags = [{{ name = "a", signal = "counter", rate_hz = 1.0 }}]
{metrics}"#
    )
}

fn check(dir: &std::path::Path, text: &str) -> (Option<i32>, String) {
    let path = dir.join("gateway.toml");
    std::fs::write(&path, text).unwrap();
    let out = Command::new(BIN)
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), text)
}

#[test]
fn the_plan_says_where_metrics_are_served_and_bad_keys_exit_78_with_their_location() {
    let dir = tempfile::tempdir().unwrap();
    let (code, out) = check(dir.path(), &config(""));
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("metrics endpoint off"), "{out}");

    let (code, out) = check(dir.path(), &config("[metrics]\n"));
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("metrics on http://127.0.0.1:9464"), "{out}");

    let (code, out) = check(
        dir.path(),
        &config("[metrics]\naddress = \"::1\"\nport = 0\n"),
    );
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("metrics on http://[::1]:0"), "{out}");

    let (code, out) = check(dir.path(), &config("[metrics]\nenabled = false\n"));
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("metrics endpoint off"), "{out}");

    for (text, key, line) in [
        (
            "[metrics]\naddress = \"localhost\"\n",
            "metrics.address",
            14,
        ),
        ("[metrics]\nport = 70000\n", "metrics.port", 14),
        ("[metrics]\nbind = \"127.0.0.1:1\"\n", "metrics.bind", 14),
    ] {
        let (code, out) = check(dir.path(), &config(text));
        assert_eq!(code, Some(78), "{text}: {out}");
        let l = out
            .lines()
            .find(|l| l.contains(key))
            .unwrap_or_else(|| panic!("{text}: no line names {key}: {out}"));
        assert!(l.contains(&format!("gateway.toml:{line}:")), "{l}");
    }
}

#[test]
fn a_port_that_cannot_be_bound_stops_the_start_naming_the_address() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let path = dir.path().join("gateway.toml");
    std::fs::write(&path, config(&format!("[metrics]\nport = {port}\n"))).unwrap();
    let out = Command::new(BIN)
        .args(["run", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "metrics endpoint: cannot listen on 127.0.0.1:{port}"
        )),
        "{stderr}"
    );
}
