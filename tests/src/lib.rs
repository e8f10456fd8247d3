//! Launchers for the real peers that the workspace's integration tests and benchmarks run
//! against: the pymodbus server that plays the PLC (`tests/peers/pymodbus_peer.py`) and the
//! socat pty pair that stands in for a serial line. The adapters' tests (plc-adapters) and the
//! gateway's end-to-end tests both use them, as a dev-dependency.
//!
//! A missing peer fails the test with what to install: nothing here skips. Every wait is
//! bounded, and every process is killed and reaped when its handle is dropped.
//!
//! This crate depends on none of the project's crates, so that each of them can depend on it
//! for its tests without a cycle.
#![forbid(unsafe_code)]

pub mod pymodbus;
pub mod socat;

use std::io::{BufRead, BufReader};
use std::sync::mpsc;

/// Reads a child's stream line by line on a thread of its own; the lines arrive on the channel.
/// The thread ends at end of stream, or when the receiver is dropped.
fn lines_of(stream: impl std::io::Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}
