//! `gateway.cpu_wake_latency_us`: `edge-gateway run` holds a Linux PM QoS request on the real
//! `/dev/cpu_dma_latency` for as long as it runs, and a process that may not write the device
//! does not start (exit 78, naming the key and the device).
//!
//! Needs root, as CI runs: the device is root's, and the refusal is shown by running the binary
//! as `nobody`. Without root these tests fail; they never skip.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use edgegw::config::EX_CONFIG;
use edgegw_ringbuf::{CPU_LATENCY_DEVICE, cpu_latency_limit};

mod common;
#[path = "common/gateway.rs"]
mod gateway;
#[path = "common/mosquitto.rs"]
mod mosquitto;
use common::{Mosquitto, free_port};
use gateway::{BIN, GatewayProcess};

/// A limit no other test asks for (the ring's own test asks for 7 µs).
const LIMIT_US: u32 = 13;

fn config(dir: &Path, port: u16) -> PathBuf {
    let path = dir.join("gateway.toml");
    std::fs::write(
        &path,
        format!(
            r#"[gateway]
name = "cpu-latency-test"
state_dir = "{state}"
shutdown_timeout_ms = 4000
cpu_wake_latency_us = {LIMIT_US}

[mqtt]
host = "127.0.0.1"
port = {port}

[[synthetic]]
name = "sim"
group = "signals"
tags = [{{ name = "a", signal = "counter", rate_hz = 50.0 }}]
"#,
            state = dir.join("state").display()
        ),
    )
    .unwrap();
    path
}

fn assert_root() {
    assert!(
        // /proc/self belongs to the effective uid.
        std::fs::metadata("/proc/self").unwrap().uid() == 0,
        "these tests need root: {CPU_LATENCY_DEVICE} is writable by root only, and the refusal \
         is shown by dropping to nobody"
    );
}

/// The descriptors of `pid` open on the device, with their access mode (`fdinfo` flags).
fn device_fds(pid: i32) -> Vec<(String, u32)> {
    let mut out = Vec::new();
    for fd in std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap() {
        let fd = fd.unwrap();
        if std::fs::read_link(fd.path()).ok().as_deref() != Some(Path::new(CPU_LATENCY_DEVICE)) {
            continue;
        }
        let name = fd.file_name().to_string_lossy().into_owned();
        let info = std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{name}")).unwrap();
        let flags = info
            .lines()
            .find_map(|l| l.strip_prefix("flags:"))
            .map(|f| u32::from_str_radix(f.trim(), 8).unwrap())
            .unwrap();
        out.push((name, flags));
    }
    out
}

#[test]
fn holds_the_configured_cpu_wake_latency_request_while_it_runs() {
    assert_root();
    let dir = tempfile::tempdir().unwrap();
    let broker_dir = dir.path().join("broker");
    std::fs::create_dir(&broker_dir).unwrap();
    let broker = Mosquitto::start(&broker_dir, free_port());
    let log = dir.path().join("gateway.log");
    let mut gw = GatewayProcess::start(&config(dir.path(), broker.port), &log);

    // The request is held before anything starts, so it is in force once the adapter runs.
    let adapters = gw.wait_adapters(&["sim"], Duration::from_secs(20));
    let line = gw
        .log()
        .lines()
        .find(|l| l.contains("holding a CPU wake-up latency request"))
        .map(str::to_owned)
        .unwrap_or_else(|| panic!("no log line for the request:\n{}", gw.log()));
    assert!(line.contains(&format!("requested_us={LIMIT_US}")), "{line}");

    // One descriptor on the device, write-only: the request itself (O_ACCMODE = 3).
    let fds = device_fds(gw.pid());
    assert_eq!(fds.len(), 1, "descriptors on {CPU_LATENCY_DEVICE}: {fds:?}");
    assert_eq!(fds[0].1 & 3, nix::libc::O_WRONLY as u32, "{fds:?}");
    // The system's limit is ours or lower (another holder may ask for less).
    let limit = cpu_latency_limit().unwrap();
    assert!(
        limit <= Duration::from_micros(LIMIT_US.into()),
        "limit {limit:?} while the gateway holds {LIMIT_US} µs"
    );
    // The adapter child does not hold it (it does not inherit the descriptor).
    assert!(
        device_fds(adapters[0]).is_empty(),
        "the adapter holds the request"
    );
    gw.assert_running();

    let status = gw.sigterm_and_wait(Duration::from_secs(10));
    assert!(
        status.success(),
        "{status}:\n{}",
        std::fs::read_to_string(&log).unwrap()
    );
}

#[test]
fn a_process_that_may_not_write_the_device_does_not_start() {
    assert_root();
    let dir = tempfile::tempdir().unwrap();
    // `nobody` must read the configuration; it never gets as far as the state directory.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let cfg = config(dir.path(), free_port());
    std::fs::set_permissions(&cfg, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = Command::new(BIN)
        .args(["run", "--config"])
        .arg(&cfg)
        .uid(65534)
        .gid(65534)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(i32::from(EX_CONFIG)), "{stderr}");
    let expected = format!(
        "edge-gateway: {}: gateway.cpu_wake_latency_us = {LIMIT_US}: {CPU_LATENCY_DEVICE}: open \
         for writing: Permission denied",
        cfg.display()
    );
    assert!(
        stderr.contains(&expected),
        "expected {expected:?} in:\n{stderr}"
    );
    assert!(
        stderr.contains("udev rule"),
        "no hint at the remedy:\n{stderr}"
    );
    assert!(
        !dir.path().join("state").exists(),
        "the refused start created the state directory"
    );
}
