//! Reloading the configuration while the gateway runs: what asks for a reload (SIGHUP, the file
//! changing on disk), and the loader that turns the file into a [`Reload`] for the daemon.
//!
//! Both triggers go through one channel and one path: read the file, validate it, diff it
//! against the running configuration (`config::diff`), and build the new plan, plus a new sink
//! only if `[mqtt]` changed. A file that does not validate, or that changes what only a restart
//! applies, is rejected with its problems (`file:line:column: key: message`); the daemon logs,
//! counts and shows them in `STATUS=`, and keeps running the old configuration.

use std::path::{Path, PathBuf};

use tokio::sync::mpsc;

use crate::config::diff::ConfigDiff;
use crate::config::watch::{ConfigWatch, ReloadTrigger};
use crate::config::{self, ResolvedConfig};
use crate::daemon::{Reload, Reloads};

/// Triggers waiting at most: a reload reads the newest file anyway, so a trigger that finds the
/// channel full is dropped (coalesced into the pending one).
const PENDING: usize = 1;

/// Reloads of the file at `path`, running as `current`. `make_sink` builds a sink from a new
/// configuration whose `[mqtt]` changed. Installs the SIGHUP handler (call it before the
/// gateway says it is ready: SIGHUP's default action would end the process) and the inotify
/// watch; needs a tokio runtime.
pub fn reloads<S: Send + 'static>(
    path: &Path,
    current: ResolvedConfig,
    make_sink: impl Fn(&ResolvedConfig) -> anyhow::Result<S> + Send + 'static,
) -> anyhow::Result<Reloads<S>> {
    Ok(Reloads {
        triggers: triggers(path)?,
        load: loader(path.to_owned(), current, make_sink),
    })
}

/// SIGHUP and inotify, merged. Without inotify (error logged) SIGHUP still works.
fn triggers(path: &Path) -> anyhow::Result<mpsc::Receiver<ReloadTrigger>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hup = signal(SignalKind::hangup())?;
    let mut watch = match ConfigWatch::new(path) {
        Ok(w) => Some(w),
        Err(e) => {
            tracing::error!(file = %path.display(), error = %e, "cannot watch the configuration; reload with SIGHUP only");
            None
        }
    };
    let (tx, rx) = mpsc::channel(PENDING);
    tokio::spawn(async move {
        loop {
            let changed = async {
                match watch.as_mut() {
                    Some(w) => Some(w.changed().await),
                    None => std::future::pending().await,
                }
            };
            let trigger = tokio::select! {
                got = hup.recv() => match got {
                    Some(()) => ReloadTrigger::Signal,
                    None => return,
                },
                Some(changed) = changed => match changed {
                    Ok(t) => t,
                    Err(e) => {
                        tracing::error!(error = %e, "configuration watch failed; reload with SIGHUP only");
                        watch = None;
                        continue;
                    }
                },
            };
            match tx.try_send(trigger) {
                Ok(()) | Err(mpsc::error::TrySendError::Full(_)) => {}
                Err(mpsc::error::TrySendError::Closed(_)) => return,
            }
        }
    });
    Ok(rx)
}

/// The loader: keeps the running configuration and replaces it with each accepted file.
#[allow(clippy::type_complexity)]
fn loader<S>(
    path: PathBuf,
    mut current: ResolvedConfig,
    make_sink: impl Fn(&ResolvedConfig) -> anyhow::Result<S> + Send + 'static,
) -> Box<dyn FnMut() -> Result<Reload<S>, String> + Send> {
    Box::new(move || {
        let new = config::load(&path).map_err(|e| e.to_string())?;
        let diff = ConfigDiff::between(&current, &new);
        if !diff.needs_restart.is_empty() {
            return Err(format!(
                "{}: {} changed; only a restart applies that (systemctl restart edge-gateway)",
                path.display(),
                diff.needs_restart.join(", ")
            ));
        }
        let plan = crate::cli::run_plan(&new).map_err(|e| format!("{e:#}"))?;
        let sink = if diff.sink_changed {
            Some(make_sink(&new).map_err(|e| format!("{}: [mqtt]: {e:#}", path.display()))?)
        } else {
            None
        };
        current = new;
        Ok(Reload {
            plan,
            sink,
            summary: diff.to_string(),
        })
    })
}
