//! Logging under systemd: with `JOURNAL_STREAM` naming our stderr, lines go to journald if its
//! socket answers; if it does not, they fall back to stderr with a warning.

use std::os::unix::fs::MetadataExt;
use std::process::{Command, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_edge-gateway");
const JOURNAL_SOCKET: &str = "/run/systemd/journal/socket";

/// Runs `check` with stderr on a file and `JOURNAL_STREAM` set to `stream(file)`.
fn check_with_journal_stream(stream: impl Fn(&std::fs::Metadata) -> String) -> String {
    let dir = tempfile::tempdir().unwrap();
    let err_path = dir.path().join("stderr");
    let err = std::fs::File::create(&err_path).unwrap();
    let value = stream(&err.metadata().unwrap());
    let status = Command::new(BIN)
        .args([
            "check",
            "--config",
            concat!(env!("CARGO_MANIFEST_DIR"), "/config/gateway.example.toml"),
        ])
        .env("JOURNAL_STREAM", value)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(err)
        .status()
        .unwrap();
    assert!(status.success());
    std::fs::read_to_string(err_path).unwrap()
}

#[test]
fn journald_when_it_is_our_stderr_and_answers_otherwise_stderr_with_a_warning() {
    let ours = check_with_journal_stream(|m| format!("{}:{}", m.dev(), m.ino()));
    if std::path::Path::new(JOURNAL_SOCKET).exists() {
        assert!(
            !ours.contains("journald is unreachable"),
            "journald answers, so nothing falls back: {ours}"
        );
    } else {
        assert!(
            ours.contains("JOURNAL_STREAM is set but journald is unreachable: logging to stderr"),
            "no journald here ({JOURNAL_SOCKET} missing): the fallback must say so: {ours}"
        );
    }
    // A JOURNAL_STREAM inherited from elsewhere (stderr redirected since) is not ours: plain
    // stderr, no attempt at journald, no warning.
    let other = check_with_journal_stream(|m| format!("{}:{}", m.dev(), m.ino() + 1));
    assert!(!other.contains("journald"), "{other}");
}
