//! What the reload tests share: replacing a file the way editors and configuration tools do,
//! and waiting, bounded, for a condition.
//!
//! Include with `#[path = "common/reload.rs"] mod reload;`.
#![allow(dead_code)]

use std::path::Path;
use std::time::{Duration, Instant};

/// Writes `text` to a temporary file in the same directory (`.NAME.tmp`) and renames it over
/// `path`: readers, and inotify, see the old file or the whole new one, never a part.
pub fn replace_atomically(path: &Path, text: &str) {
    let name = path.file_name().expect("a file").to_string_lossy();
    let tmp = path.with_file_name(format!(".{name}.tmp"));
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// Polls `cond` every 50 ms until it holds; panics with `what` after `within`.
pub fn wait_until(what: &str, within: Duration, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < within, "{what}: not within {within:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}
