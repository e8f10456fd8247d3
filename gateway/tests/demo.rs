//! The demo is the product's first impression: it must run on a bare machine, survive a broker
//! outage and prove that nothing was lost.

use std::process::Command;

#[test]
fn demo_with_a_broker_outage_exits_zero_with_no_gaps_and_replays() {
    let out = Command::new(env!("CARGO_BIN_EXE_edge-gateway"))
        .args(["demo", "--seconds", "20", "--outage", "5"])
        .env("RUST_LOG", "warn")
        .output()
        .expect("run edge-gateway demo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "demo failed:\n{stdout}\n{stderr}");
    let summary = stdout
        .lines()
        .find(|l| l.starts_with("demo summary:"))
        .unwrap_or_else(|| panic!("no summary line:\n{stdout}"));
    let field = |name: &str| -> u64 {
        summary
            .split_whitespace()
            .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in {summary:?}"))
    };
    assert_eq!(field("gaps"), 0, "{summary}");
    assert!(field("received") > 50_000, "{summary}");
    assert!(
        field("spooled") > 0,
        "the outage must spill to the spool: {summary}"
    );
    assert_eq!(
        field("replayed"),
        field("spooled"),
        "everything spooled is replayed: {summary}"
    );
    assert!(stdout.contains("broker unreachable"), "{stdout}");
    assert!(stdout.contains("broker reachable again"), "{stdout}");
}
