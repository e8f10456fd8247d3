//! The epoch store: one epoch per source, advanced every time the gateway creates a ring for
//! that source, persisted before the first record of the new epoch can exist.
//!
//! # Design constraints
//! - `(source, epoch, seq)` must never repeat: a subscriber that saw `epoch 7, seq 0..1000`
//!   must not later see a different `epoch 7, seq 0`. A new ring restarts `seq` at 0, so each
//!   ring gets an epoch no earlier ring of that source had.
//! - The store can be lost (fresh SD card, deleted state dir) or corrupt. Epochs are therefore
//!   at least the current Unix time in seconds: a lost store still yields an epoch larger than
//!   any handed out before, unless the clock went backwards across the loss.
//!
//! # Format
//! `<state_dir>/epochs.json`: `{"<source name>": <last epoch>, ...}`, replaced atomically
//! (write a temporary file, fsync, rename, fsync the directory).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// Reading or writing the epoch store failed.
#[derive(Debug, thiserror::Error)]
#[error("epoch store {path}: {what}: {source}")]
pub struct EpochStoreError {
    path: PathBuf,
    what: &'static str,
    #[source]
    source: std::io::Error,
}

/// The persisted last epoch of every source.
#[derive(Debug)]
pub struct EpochStore {
    path: PathBuf,
    epochs: BTreeMap<String, u64>,
}

/// What opening the store found besides the epochs.
#[derive(Debug, Default)]
pub struct EpochStoreOpenReport {
    /// Where an unreadable store was moved aside.
    pub moved_aside: Option<PathBuf>,
}

impl EpochStore {
    /// Opens the store at `path`; a missing file is an empty store, an unparsable one is moved
    /// aside (`<path>.corrupt-<unix seconds>`) and reported, never fatal.
    pub fn open(path: &Path) -> Result<(Self, EpochStoreOpenReport), EpochStoreError> {
        let err = |what, source| EpochStoreError {
            path: path.to_owned(),
            what,
            source,
        };
        let mut report = EpochStoreOpenReport::default();
        let epochs = match std::fs::read(path) {
            Ok(bytes) => match serde_json::from_slice(&bytes) {
                Ok(epochs) => epochs,
                Err(_) => {
                    let aside = path.with_extension(format!("json.corrupt-{}", unix_seconds()));
                    std::fs::rename(path, &aside)
                        .map_err(|e| err("moving corrupt store aside", e))?;
                    report.moved_aside = Some(aside);
                    BTreeMap::new()
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => return Err(err("reading", e)),
        };
        Ok((
            Self {
                path: path.to_owned(),
                epochs,
            },
            report,
        ))
    }

    /// The next epoch for `source`, persisted before it is returned.
    pub fn advance(&mut self, source: &str) -> Result<u64, EpochStoreError> {
        let last = self.epochs.get(source).copied().unwrap_or(0);
        let next = (last + 1).max(unix_seconds());
        self.epochs.insert(source.to_owned(), next);
        if let Err(e) = self.persist() {
            self.epochs.insert(source.to_owned(), last);
            return Err(e);
        }
        Ok(next)
    }

    /// The last epoch handed out for `source`, if any.
    pub fn last(&self, source: &str) -> Option<u64> {
        self.epochs.get(source).copied()
    }

    fn persist(&self) -> Result<(), EpochStoreError> {
        let err = |what, source| EpochStoreError {
            path: self.path.clone(),
            what,
            source,
        };
        let dir = self.path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(|e| err("creating its directory", e))?;
        let tmp = self.path.with_extension("json.tmp");
        let body =
            serde_json::to_vec_pretty(&self.epochs).map_err(|e| err("encoding", e.into()))?;
        let mut f = std::fs::File::create(&tmp).map_err(|e| err("creating temporary file", e))?;
        f.write_all(&body).map_err(|e| err("writing", e))?;
        f.sync_all().map_err(|e| err("syncing", e))?;
        std::fs::rename(&tmp, &self.path).map_err(|e| err("renaming into place", e))?;
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| err("syncing its directory", e))?;
        Ok(())
    }
}

fn unix_seconds() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epochs_only_grow_across_reopen_loss_and_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("epochs.json");
        let (mut store, _) = EpochStore::open(&path).unwrap();
        let a1 = store.advance("plc-a").unwrap();
        let a2 = store.advance("plc-a").unwrap();
        let b1 = store.advance("plc-b").unwrap();
        assert!(a2 > a1 && b1 >= a1);

        let (mut reopened, report) = EpochStore::open(&path).unwrap();
        assert!(report.moved_aside.is_none());
        assert_eq!(reopened.last("plc-a"), Some(a2));
        assert!(reopened.advance("plc-a").unwrap() > a2);

        std::fs::write(&path, b"{not json").unwrap();
        let (mut after_corruption, report) = EpochStore::open(&path).unwrap();
        let aside = report.moved_aside.expect("corrupt store moved aside");
        assert!(aside.exists());
        // The clock floor keeps the new epoch ahead of anything seen within this second or before.
        assert!(after_corruption.advance("plc-a").unwrap() >= unix_seconds());
    }
}
