//! Reloading the configuration while the gateway runs: what asks for a reload (SIGHUP, the file
//! changing on disk), and the loader that turns the file into a [`Reload`] for the daemon.
//!
//! Both triggers go through one channel and one path: read the file, validate it, diff it
//! against the running configuration (`config::diff`), and build the new plan, plus a new sink
//! only if `[mqtt]` changed or a file it names (password, TLS) has new content, and rebind the
//! metrics endpoint only if `[metrics]` changed. A file that does not validate, that changes
//! what only a restart applies, whose sink cannot be built, or whose metrics address cannot be
//! bound, is rejected as a whole with its problems (`file:line:column: key: message`); the
//! daemon logs, counts and shows them in `STATUS=`, and keeps running the old configuration
//! (old sink, old endpoint).
//!
//! The files of `[mqtt]` are compared by a keyed hash of their content (the loader keeps no
//! copy of a password, and never logs one: the summary names the key only). Those in the
//! configuration's directory are watched too (`config::watch::WatchedNames`).

use std::hash::{BuildHasher, RandomState};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use tokio::sync::mpsc;

use crate::config::diff::ConfigDiff;
use crate::config::watch::{ConfigWatch, ReloadTrigger, WatchedNames};
use crate::config::{self, ResolvedConfig};
use crate::daemon::{Reload, Reloads};
use crate::sinks::mqtt::MqttConfig;
use crate::telemetry::Telemetry;
use crate::telemetry::http::MetricsEndpoint;

/// Triggers waiting at most: a reload reads the newest file anyway, so a trigger that finds the
/// channel full is dropped (coalesced into the pending one).
const PENDING: usize = 1;

/// Reloads of the file at `path`, running as `current`. `make_sink` builds a sink from a new
/// configuration whose `[mqtt]` (or a file it names) changed. Installs the SIGHUP handler
/// first (call this before the gateway says it is ready: SIGHUP's default action would end
/// the process) and the inotify watch, then starts the metrics endpoint `current` asks for,
/// serving `telemetry` (an address that cannot be bound is an error); needs a tokio runtime.
pub fn reloads<S: Send + 'static>(
    path: &Path,
    current: ResolvedConfig,
    make_sink: impl Fn(&ResolvedConfig) -> anyhow::Result<S> + Send + 'static,
    telemetry: Arc<Telemetry>,
) -> anyhow::Result<Reloads<S>> {
    let beside = WatchedNames::default();
    beside.set_beside(path, &sink_file_paths(&current.mqtt));
    let triggers = triggers(path, beside.clone())?;
    let metrics = MetricsEndpoint::start(current.metrics, telemetry).with_context(|| {
        format!(
            "metrics endpoint: cannot listen on {}",
            current.metrics.expect("only an address can fail")
        )
    })?;
    Ok(Reloads {
        triggers,
        load: loader(path.to_owned(), current, make_sink, metrics, beside),
    })
}

/// SIGHUP and inotify, merged. Without inotify (error logged) SIGHUP still works.
fn triggers(path: &Path, beside: WatchedNames) -> anyhow::Result<mpsc::Receiver<ReloadTrigger>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hup = signal(SignalKind::hangup())?;
    let mut watch = match ConfigWatch::new(path, beside) {
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
    mut metrics: MetricsEndpoint,
    beside: WatchedNames,
) -> Box<dyn FnMut() -> Result<Reload<S>, String> + Send> {
    let keys = RandomState::new();
    let mut files = SinkFiles::read(&current.mqtt, &keys);
    Box::new(move || {
        let new = config::load(&path).map_err(|e| e.to_string())?;
        let mut diff = ConfigDiff::between(&current, &new);
        if !diff.needs_restart.is_empty() {
            return Err(format!(
                "{}: {} changed; only a restart applies that (systemctl restart edge-gateway)",
                path.display(),
                diff.needs_restart.join(", ")
            ));
        }
        let new_files = SinkFiles::read(&new.mqtt, &keys);
        diff.note_changed_files(files.changed_in(&new_files));
        let plan = crate::cli::run_plan(&new).map_err(|e| format!("{e:#}"))?;
        // Built before anything changes, and never connected if the reload is then rejected.
        let sink = if diff.sink_changed {
            Some(make_sink(&new).map_err(|e| format!("{}: [mqtt]: {e:#}", path.display()))?)
        } else {
            None
        };
        // Last: the one step that changes something here. On error the old endpoint serves on.
        if diff.metrics_changed
            && let Err(e) = metrics.set(new.metrics)
        {
            let stays = metrics
                .local_addr()
                .map_or("off".to_owned(), |a| format!("on {a}"));
            return Err(format!(
                "{}: [metrics]: cannot listen on {}: {e}; the endpoint stays {stays}",
                path.display(),
                new.metrics.expect("only an address can fail")
            ));
        }
        beside.set_beside(&path, &sink_file_paths(&new.mqtt));
        files = new_files;
        current = new;
        Ok(Reload {
            plan,
            sink,
            summary: diff.to_string(),
        })
    })
}

/// The files `[mqtt]` names, by key.
fn sink_files(mqtt: &MqttConfig) -> Vec<(&'static str, &Path)> {
    let mut out = Vec::new();
    if let Some(p) = &mqtt.password_file {
        out.push(("mqtt.password_file", p.as_path()));
    }
    if let Some(t) = &mqtt.tls {
        for (key, file) in [
            ("mqtt.tls.ca_file", &t.ca_file),
            ("mqtt.tls.cert_file", &t.cert_file),
            ("mqtt.tls.key_file", &t.key_file),
        ] {
            if let Some(p) = file {
                out.push((key, p.as_path()));
            }
        }
    }
    out
}

fn sink_file_paths(mqtt: &MqttConfig) -> Vec<&Path> {
    sink_files(mqtt).into_iter().map(|(_, p)| p).collect()
}

/// What the files of `[mqtt]` held when last read: key, path, and a keyed hash of the content
/// (`None`: unreadable). The hash's key is random per process, and no content is kept.
#[derive(Debug, PartialEq, Eq)]
struct SinkFiles(Vec<(&'static str, PathBuf, Option<u64>)>);

impl SinkFiles {
    fn read(mqtt: &MqttConfig, keys: &RandomState) -> Self {
        Self(
            sink_files(mqtt)
                .into_iter()
                .map(|(key, path)| {
                    let digest = std::fs::read(path).ok().map(|b| keys.hash_one(&b));
                    (key, path.to_owned(), digest)
                })
                .collect(),
        )
    }

    /// Keys whose file has the same path in `new` and a different content (or became, or
    /// stopped being, readable). A changed path is a change of `[mqtt]` itself.
    fn changed_in(&self, new: &Self) -> Vec<&'static str> {
        new.0
            .iter()
            .filter(|(key, path, digest)| {
                self.0
                    .iter()
                    .any(|(k, p, d)| k == key && p == path && d != digest)
            })
            .map(|(key, _, _)| *key)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_file_with_new_content_is_a_change_and_the_same_content_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let pw = dir.path().join("mqtt-password");
        let ca = dir.path().join("ca.pem");
        std::fs::write(&pw, "first\n").unwrap();
        std::fs::write(&ca, "CA").unwrap();
        let mut mqtt = MqttConfig::new("127.0.0.1");
        mqtt.username = Some("gw".into());
        mqtt.password_file = Some(pw.clone());
        mqtt.tls = Some(crate::sinks::mqtt::MqttTlsConfig {
            ca_file: Some(ca.clone()),
            ..Default::default()
        });
        let keys = RandomState::new();
        let before = SinkFiles::read(&mqtt, &keys);
        // Rewritten with the same content (a touch, a tool that always writes): no change.
        std::fs::write(&pw, "first\n").unwrap();
        assert!(before.changed_in(&SinkFiles::read(&mqtt, &keys)).is_empty());
        std::fs::write(&pw, "second\n").unwrap();
        let after = SinkFiles::read(&mqtt, &keys);
        assert_eq!(before.changed_in(&after), ["mqtt.password_file"]);
        std::fs::remove_file(&ca).unwrap();
        assert_eq!(
            after.changed_in(&SinkFiles::read(&mqtt, &keys)),
            ["mqtt.tls.ca_file"],
            "unreadable now: the sink is rebuilt, and that fails with the file's error"
        );
        // No content is kept, and Debug shows none.
        assert!(!format!("{after:?}").contains("second"));
    }
}
