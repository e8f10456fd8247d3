//! `[spool]` configuration.

use std::path::PathBuf;

use serde::Deserialize;

/// `synchronous` setting of the spool database.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Durability {
    /// WAL with `synchronous=NORMAL`: survives a crash of the gateway; a power loss may roll back
    /// the last commits (those since the last WAL checkpoint sync).
    #[default]
    Normal,
    /// `synchronous=FULL`: every commit is on disk before it returns; survives power loss, at
    /// the cost of an fsync per commit.
    Full,
}

impl Durability {
    pub(super) fn pragma(self) -> &'static str {
        match self {
            Durability::Normal => "NORMAL",
            Durability::Full => "FULL",
        }
    }
}

/// What to drop when the spool reaches `max_bytes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum WhenFull {
    /// Delete the oldest batches to make room (the newest data matters most).
    #[default]
    DropOldest,
    /// Refuse new batches (keep the oldest).
    DropNewest,
}

/// `[spool]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpoolConfig {
    /// Database file; default `<state_dir>/spool.db`.
    pub path: Option<PathBuf>,
    /// Bound on spooled bytes; default 256 MiB.
    #[serde(default = "default_max_bytes")]
    pub max_bytes: u64,
    /// Durability; default `normal`.
    #[serde(default)]
    pub durability: Durability,
    /// Policy at the bound; default `drop-oldest`.
    #[serde(default)]
    pub when_full: WhenFull,
}

/// 256 MiB.
pub const fn default_max_bytes() -> u64 {
    256 * 1024 * 1024
}

impl Default for SpoolConfig {
    fn default() -> Self {
        Self {
            path: None,
            max_bytes: default_max_bytes(),
            durability: Durability::default(),
            when_full: WhenFull::default(),
        }
    }
}

impl SpoolConfig {
    /// Problems as `(key path, message)`; no I/O.
    pub fn problems(&self, path: &str) -> Vec<(String, String)> {
        let mut out = Vec::new();
        if self.max_bytes < 1024 * 1024 {
            out.push((
                format!("{path}.max_bytes"),
                "must be at least 1048576 (1 MiB)".into(),
            ));
        }
        out
    }
}
