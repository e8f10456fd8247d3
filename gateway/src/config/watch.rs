//! Noticing that the configuration file changed: inotify on its directory.
//!
//! # Design constraints
//! - Watch the directory, not the file: editors and configuration tools replace a file by
//!   writing a temporary one and renaming it over the original. A watch on the file itself
//!   would follow the old inode and die with it (`IN_IGNORED`).
//! - Filter by name: other files in the directory (the editor's temporary file, a password
//!   file, certificates) do not trigger anything.
//! - Events: `IN_CLOSE_WRITE` (written in place), `IN_MOVED_TO` (renamed over), `IN_CREATE`
//!   (created, e.g. by a hard link). A burst (create, write, close, rename) is debounced into
//!   one reload: [`DEBOUNCE`] of quiet after the last event.
//! - `IN_Q_OVERFLOW`: the kernel dropped events, so whether the file changed is unknown:
//!   reload (a reload of an unchanged file changes nothing).
//!
//! SIGHUP goes through the same path: [`ReloadTrigger`] names what asked.

use std::ffi::OsString;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
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
    /// The file was written, renamed over or created.
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

/// An inotify watch on the directory of one configuration file. A reader thread polls the
/// inotify descriptor (no raw-fd registration with the runtime needed) and forwards the
/// relevant events; it ends within [`POLL`] once the watch is dropped.
#[derive(Debug)]
pub struct ConfigWatch {
    events: mpsc::UnboundedReceiver<std::io::Result<ReloadTrigger>>,
    path: PathBuf,
}

impl ConfigWatch {
    /// Watches the directory of `file` for changes of `file`.
    pub fn new(file: &Path) -> std::io::Result<Self> {
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
            .spawn(move || read_events(inotify, &name, &tx))?;
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
            let trigger = if e.mask.contains(EventMask::Q_OVERFLOW) {
                ReloadTrigger::Overflow
            } else if !e.mask.contains(EventMask::ISDIR) && e.name == Some(name.as_os_str()) {
                ReloadTrigger::FileChanged
            } else {
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
        let mut w = ConfigWatch::new(&file).unwrap();

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
}
