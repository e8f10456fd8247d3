//! Noticing that the configuration file changed: inotify on its directory.
//!
//! # Design constraints
//! - Watch the directory, not the file: editors and configuration tools replace a file by
//!   writing a temporary one and renaming it over the original. A watch on the file itself
//!   would follow the old inode and die with it (`IN_IGNORED`).
//! - Filter by name: the configuration file, and the files of `[mqtt]` (password, TLS) that
//!   sit in the same directory ([`WatchedNames`], updated after each accepted reload). Other
//!   files (an editor's temporary file) trigger nothing. Files of `[mqtt]` in other
//!   directories are not watched: SIGHUP re-reads them.
//! - Events: `IN_CLOSE_WRITE` (written in place), `IN_MOVED_TO` (renamed over), `IN_CREATE`
//!   (created, e.g. by a hard link). A burst (create, write, close, rename) is debounced into
//!   one reload: [`DEBOUNCE`] of quiet after the last event.
//! - `IN_Q_OVERFLOW`: the kernel dropped events, so whether the file changed is unknown:
//!   reload (a reload of an unchanged file changes nothing).
//!
//! SIGHUP goes through the same path: [`ReloadTrigger`] names what asked.

use std::ffi::{OsStr, OsString};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use inotify::{EventMask, Inotify, WatchMask};
use tokio::sync::mpsc;

/// Quiet time after the last event before a reload starts.
pub const DEBOUNCE: Duration = Duration::from_millis(250);

/// How often the reader thread looks whether its watch was dropped.
const POLL: Duration = Duration::from_millis(200);

/// Why a reload was asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReloadTrigger {
    /// SIGHUP (`systemctl reload`).
    Signal,
    /// The file, or a watched file beside it, was written, renamed over or created.
    FileChanged,
    /// The inotify queue overflowed: events were lost, so reload to be sure.
    Overflow,
}

impl std::fmt::Display for ReloadTrigger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Signal => "SIGHUP",
            Self::FileChanged => "file changed",
            Self::Overflow => "inotify queue overflow",
        })
    }
}

/// Names, in the configuration file's directory, of the other files whose change asks for a
/// reload (the password and TLS files of `[mqtt]` that sit there). Shared between the watch's
/// reader thread and the reload loader, which replaces them after each accepted reload.
#[derive(Debug, Clone, Default)]
pub struct WatchedNames(Arc<Mutex<Vec<OsString>>>);

impl WatchedNames {
    /// Watches the names of those of `files` that are in the directory of `config`.
    pub fn set_beside(&self, config: &Path, files: &[&Path]) {
        let dir = canonical_dir(config);
        let names = files
            .iter()
            .filter(|f| canonical_dir(f) == dir)
            .filter_map(|f| f.file_name().map(OsStr::to_owned))
            .collect();
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = names;
    }

    /// The names watched now.
    pub fn get(&self) -> Vec<OsString> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn contains(&self, name: &OsStr) -> bool {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .any(|n| n == name)
    }
}

/// The directory of `file`, canonical when it exists (`.` for a bare name).
fn canonical_dir(file: &Path) -> PathBuf {
    let dir = match file.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
        _ => PathBuf::from("."),
    };
    std::fs::canonicalize(&dir).unwrap_or(dir)
}

/// What one inotify event means: a reload trigger, or nothing. Pure, so the state machine is
/// testable with synthetic events (a real `IN_Q_OVERFLOW` needs a full kernel queue).
fn classify(
    mask: EventMask,
    name: Option<&OsStr>,
    file: &OsStr,
    beside: &WatchedNames,
) -> Option<ReloadTrigger> {
    if mask.contains(EventMask::Q_OVERFLOW) {
        return Some(ReloadTrigger::Overflow);
    }
    if mask.contains(EventMask::ISDIR) {
        return None;
    }
    let name = name?;
    (name == file || beside.contains(name)).then_some(ReloadTrigger::FileChanged)
}

/// An inotify watch on the directory of one configuration file. A reader thread polls the
/// inotify descriptor (no raw-fd registration with the runtime needed) and forwards the
/// relevant events; it ends within [`POLL`] once the watch is dropped.
#[derive(Debug)]
pub struct ConfigWatch {
    events: mpsc::UnboundedReceiver<std::io::Result<ReloadTrigger>>,
    path: PathBuf,
}

impl ConfigWatch {
    /// Watches the directory of `file` for changes of `file` and of the files `beside` names.
    pub fn new(file: &Path, beside: WatchedNames) -> std::io::Result<Self> {
        let name = file
            .file_name()
            .ok_or_else(|| std::io::Error::other(format!("{} names no file", file.display())))?
            .to_owned();
        let dir = match file.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
            _ => PathBuf::from("."),
        };
        let inotify = Inotify::init()?;
        inotify
            .watches()
            .add(
                &dir,
                WatchMask::CLOSE_WRITE | WatchMask::MOVED_TO | WatchMask::CREATE,
            )
            .map_err(|e| {
                std::io::Error::new(e.kind(), format!("watching {}: {e}", dir.display()))
            })?;
        let (tx, events) = mpsc::unbounded_channel();
        std::thread::Builder::new()
            .name("config-watch".into())
            .spawn(move || read_events(inotify, &name, &beside, &tx))?;
        Ok(Self {
            events,
            path: file.to_owned(),
        })
    }

    /// The watched file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Waits for the next change of the file, then for [`DEBOUNCE`] of quiet: a burst of
    /// events is one change. Cancel-safe.
    pub async fn changed(&mut self) -> std::io::Result<ReloadTrigger> {
        let mut trigger = self.next().await?;
        loop {
            match tokio::time::timeout(DEBOUNCE, self.next()).await {
                Err(_) => return Ok(trigger),
                Ok(Err(e)) => return Err(e),
                Ok(Ok(t)) => {
                    if t == ReloadTrigger::Overflow {
                        trigger = t;
                    }
                }
            }
        }
    }

    async fn next(&mut self) -> std::io::Result<ReloadTrigger> {
        match self.events.recv().await {
            Some(r) => r,
            None => Err(std::io::Error::other("the inotify reader stopped")),
        }
    }
}

/// The reader thread: until the receiver is gone.
fn read_events(
    mut inotify: Inotify,
    name: &OsString,
    beside: &WatchedNames,
    tx: &mpsc::UnboundedSender<std::io::Result<ReloadTrigger>>,
) {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    // The event buffer must have room for at least one event with its name.
    let mut buf = vec![0u8; 16 * 1024];
    while !tx.is_closed() {
        let ready = {
            let fd = inotify.as_fd();
            let mut fds = [PollFd::new(fd, PollFlags::POLLIN)];
            match poll(&mut fds, PollTimeout::from(POLL.as_millis() as u16)) {
                Ok(n) => n > 0,
                Err(nix::errno::Errno::EINTR) => false,
                Err(e) => {
                    let _ = tx.send(Err(std::io::Error::from(e)));
                    return;
                }
            }
        };
        if !ready {
            continue;
        }
        let events = match inotify.read_events(&mut buf) {
            Ok(events) => events,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) => {
                let _ = tx.send(Err(e));
                return;
            }
        };
        for e in events {
            let Some(trigger) = classify(e.mask, e.name, name, beside) else {
                continue;
            };
            if tx.send(Ok(trigger)).is_err() {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn expect_change(w: &mut ConfigWatch) -> ReloadTrigger {
        tokio::time::timeout(Duration::from_secs(5), w.changed())
            .await
            .expect("a change within 5 s")
            .unwrap()
    }

    async fn expect_quiet(w: &mut ConfigWatch) {
        assert!(
            tokio::time::timeout(DEBOUNCE * 3, w.changed())
                .await
                .is_err(),
            "no change expected"
        );
    }

    #[tokio::test]
    async fn rename_over_and_write_in_place_trigger_other_files_do_not() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("gateway.toml");
        std::fs::write(&file, "a").unwrap();
        let mut w = ConfigWatch::new(&file, WatchedNames::default()).unwrap();

        // An editor's save: temporary file, then rename over. One debounced change.
        let tmp = dir.path().join(".gateway.toml.swp");
        std::fs::write(&tmp, "b").unwrap();
        std::fs::rename(&tmp, &file).unwrap();
        assert_eq!(expect_change(&mut w).await, ReloadTrigger::FileChanged);
        expect_quiet(&mut w).await;

        // Written in place (still watched: the directory watch survived the rename).
        std::fs::write(&file, "c").unwrap();
        assert_eq!(expect_change(&mut w).await, ReloadTrigger::FileChanged);

        // Another file in the same directory: nothing.
        std::fs::write(dir.path().join("mqtt-password"), "x").unwrap();
        expect_quiet(&mut w).await;
    }

    #[tokio::test]
    async fn a_password_file_beside_the_configuration_triggers_once_it_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("gateway.toml");
        let password = dir.path().join("mqtt-password");
        let elsewhere = tempfile::tempdir().unwrap();
        std::fs::write(&file, "a").unwrap();
        let beside = WatchedNames::default();
        let mut w = ConfigWatch::new(&file, beside.clone()).unwrap();
        std::fs::write(&password, "old").unwrap();
        expect_quiet(&mut w).await;

        beside.set_beside(&file, &[&password, &elsewhere.path().join("ca.pem")]);
        assert_eq!(
            beside.get(),
            [OsString::from("mqtt-password")],
            "only files beside it"
        );
        let tmp = dir.path().join(".mqtt-password.new");
        std::fs::write(&tmp, "new").unwrap();
        std::fs::rename(&tmp, &password).unwrap();
        assert_eq!(expect_change(&mut w).await, ReloadTrigger::FileChanged);
    }

    #[test]
    fn an_overflow_event_is_a_reload_whatever_else_it_carries() {
        let beside = WatchedNames::default();
        let file = OsStr::new("gateway.toml");
        // The kernel's overflow event has no watch, no name, and only IN_Q_OVERFLOW set.
        assert_eq!(
            classify(EventMask::Q_OVERFLOW, None, file, &beside),
            Some(ReloadTrigger::Overflow)
        );
        assert_eq!(
            classify(
                EventMask::Q_OVERFLOW | EventMask::ISDIR,
                None,
                file,
                &beside
            ),
            Some(ReloadTrigger::Overflow)
        );
        assert_eq!(
            classify(EventMask::MOVED_TO, Some(file), file, &beside),
            Some(ReloadTrigger::FileChanged)
        );
        assert_eq!(
            classify(
                EventMask::CREATE | EventMask::ISDIR,
                Some(file),
                file,
                &beside
            ),
            None,
            "a directory of that name is not the file"
        );
        assert_eq!(
            classify(
                EventMask::CLOSE_WRITE,
                Some(OsStr::new("x.swp")),
                file,
                &beside
            ),
            None
        );
        assert_eq!(classify(EventMask::CLOSE_WRITE, None, file, &beside), None);
    }

    /// A watch fed by hand: the reader thread's channel without inotify.
    fn fed() -> (
        mpsc::UnboundedSender<std::io::Result<ReloadTrigger>>,
        ConfigWatch,
    ) {
        let (tx, events) = mpsc::unbounded_channel();
        let w = ConfigWatch {
            events,
            path: PathBuf::from("gateway.toml"),
        };
        (tx, w)
    }

    #[tokio::test]
    async fn an_overflow_alone_or_inside_a_burst_asks_for_one_full_reload() {
        let (tx, mut w) = fed();
        tx.send(Ok(ReloadTrigger::Overflow)).unwrap();
        assert_eq!(expect_change(&mut w).await, ReloadTrigger::Overflow);
        expect_quiet(&mut w).await;

        // Debounced: a burst is one reload, and an overflow anywhere in it names the reload
        // (a reload re-reads everything anyway).
        for t in [
            ReloadTrigger::FileChanged,
            ReloadTrigger::Overflow,
            ReloadTrigger::FileChanged,
        ] {
            tx.send(Ok(t)).unwrap();
        }
        assert_eq!(expect_change(&mut w).await, ReloadTrigger::Overflow);
        expect_quiet(&mut w).await;

        tx.send(Ok(ReloadTrigger::FileChanged)).unwrap();
        assert_eq!(expect_change(&mut w).await, ReloadTrigger::FileChanged);
    }
}
