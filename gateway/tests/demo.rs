//! The demo is the product's first impression: it must run on a bare machine, survive a broker
//! outage and prove that nothing was lost.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

mod common;

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

/// Ctrl-C while the demo is still starting (its first line printed, the gateway not yet
/// ready): the same clean stop as later, with the summary, and the state directory removed.
#[test]
fn ctrl_c_while_the_demo_starts_ends_it_cleanly() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_edge-gateway"))
        .arg("demo")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run edge-gateway demo");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next().expect("a first line").unwrap();
    let state = first
        .rsplit_once("state in ")
        .map(|(_, d)| std::path::PathBuf::from(d))
        .unwrap_or_else(|| panic!("no state directory in {first:?}"));
    kill(Pid::from_raw(child.id() as i32), Signal::SIGINT).unwrap();
    let rest: Vec<String> = lines.map(Result::unwrap).collect();
    let status = common::wait_exit(&mut child, Duration::from_secs(30), "no exit after SIGINT");
    let stderr = std::io::read_to_string(child.stderr.take().unwrap()).unwrap();
    let stdout = rest.join("\n");
    assert!(status.success(), "{status}:\n{first}\n{stdout}\n{stderr}");
    let summary = rest
        .iter()
        .find(|l| l.starts_with("demo summary:"))
        .unwrap_or_else(|| panic!("no summary line:\n{stdout}"));
    assert!(summary.contains(" gaps=0 "), "{summary}");
    assert!(!state.exists(), "{} left behind", state.display());
}
