//! The shipped systemd unit and sysusers file pass `systemd/check.sh`: `systemd-analyze verify`
//! with this build's binary, `systemd-analyze security --offline=true` at exposure <= 2.0, and
//! `systemd-sysusers` into an empty root. Fails (never skips) when systemd-analyze is missing.

use std::process::Command;

#[test]
fn unit_verifies_and_its_exposure_is_at_most_2_0() {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../systemd/check.sh");
    let out = Command::new("bash")
        .arg(script)
        .arg(env!("CARGO_BIN_EXE_edge-gateway"))
        .output()
        .expect("bash");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "systemd/check.sh failed:\n{text}");
    let score: f64 = text
        .lines()
        .find_map(|l| l.split("edge-gateway.service: ").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no exposure score in:\n{text}"));
    assert!(score <= 2.0, "exposure {score}:\n{text}");
}
