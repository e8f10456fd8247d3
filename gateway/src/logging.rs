//! Logs: journald with structured fields when systemd started us with the journal as stderr,
//! readable lines on stderr otherwise; level from `RUST_LOG` (default given by the caller).
//!
//! - **Where**: systemd sets `JOURNAL_STREAM=<dev>:<inode>` of the stream it connected to
//!   stderr. When that matches our stderr and journald's socket answers, events go to journald
//!   natively (fields such as `F_SOURCE=`, `F_ERROR=`, priority from the level,
//!   `SYSLOG_IDENTIFIER=edge-gateway`); otherwise, or when journald fails, to stderr (with a
//!   warning that is itself counted, `events{event="journald_unavailable"}`). Adapter children
//!   inherit stderr, so they follow the same rule.
//! - **Counted**: every line written is counted by level (`edgegw_log_lines_total{level}`),
//!   by a layer behind the level filter, so the count is exactly what was written. Named
//!   events log and count in one call (`crate::telemetry::events`).
//! - **Rate-limited**: in the gateway, repeated device errors are logged once, then summarised
//!   every 30 s from the adapters' counters (`telemetry::events::device_errors`). In an adapter
//!   child, where one warning call site means one device link, a warning or error repeats at
//!   most once per 30 s per call site ([`RepeatFilter`]); the parent's summary carries the
//!   counts of what was held back.
//! - **No secrets**: nothing logs configuration values wholesale; the MQTT password is held in
//!   a redacting type and never formatted.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tracing::callsite::Identifier;
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt as _};
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Registry};

use crate::telemetry::events;
use crate::telemetry::ratelimit::{RepeatLimiter, Verdict};

/// Repeats of one warning call site in an adapter child are logged at most this often.
pub const ADAPTER_REPEAT_INTERVAL: Duration = Duration::from_secs(30);

/// Installs the subscriber of the gateway and its tools; call once at start.
pub fn init(default_level: &str) {
    install(default_level, None);
}

/// Installs the subscriber of an adapter child: like [`init`], with repeated warnings of one
/// call site limited to one per [`ADAPTER_REPEAT_INTERVAL`].
pub fn init_adapter(default_level: &str) {
    install(
        default_level,
        Some(RepeatFilter::new(ADAPTER_REPEAT_INTERVAL)),
    );
}

fn install(default_level: &str, repeats: Option<RepeatFilter>) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level));
    let (journald, journald_error) = if started_with_journal_stderr() {
        match tracing_journald::layer() {
            Ok(l) => (
                Some(l.with_syslog_identifier("edge-gateway".to_owned())),
                None,
            ),
            Err(e) => (None, Some(e)),
        }
    } else {
        (None, None)
    };
    let stderr = journald.is_none().then(|| {
        tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .with_target(false)
    });
    let installed = Registry::default()
        .with(filter)
        .with(repeats)
        .with(journald)
        .with(stderr)
        .with(CountLines)
        .try_init()
        .is_ok();
    if let (true, Some(e)) = (installed, journald_error) {
        events::journald_unavailable(&e);
    }
}

/// Whether stderr is the journal stream systemd named in `JOURNAL_STREAM` (`dev:inode`).
fn started_with_journal_stderr() -> bool {
    let Some(value) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = value.to_str().and_then(|v| v.split_once(':')) else {
        return false;
    };
    let (Ok(dev), Ok(ino)) = (dev.parse::<u64>(), ino.parse::<u64>()) else {
        return false;
    };
    match nix::sys::stat::fstat(std::io::stderr()) {
        // The stat field types differ between targets (u64 here, narrower elsewhere).
        #[allow(clippy::unnecessary_cast)]
        Ok(st) => st.st_dev as u64 == dev && st.st_ino as u64 == ino,
        Err(_) => false,
    }
}

/// Counts every event that reaches the writers (it sits behind the level filter).
struct CountLines;

impl<S: Subscriber> Layer<S> for CountLines {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        events::log_line(event.metadata().level());
    }
}

/// Holds back repeats of one warning or error call site: the first is written, then at most
/// one per interval. Info and below pass untouched.
#[derive(Debug)]
pub struct RepeatFilter {
    interval: Duration,
    sites: Mutex<HashMap<Identifier, RepeatLimiter>>,
}

impl RepeatFilter {
    /// A filter writing each warning call site at most once per `interval`.
    pub fn new(interval: Duration) -> Self {
        Self {
            interval,
            sites: Mutex::new(HashMap::new()),
        }
    }

    /// Whether an event of `level` from call site `site` at `now` is written.
    pub fn admit(&self, site: Identifier, level: Level, now: Instant) -> bool {
        if level > Level::WARN {
            return true;
        }
        let mut sites = self.sites.lock().unwrap_or_else(|e| e.into_inner());
        let limiter = sites
            .entry(site)
            .or_insert_with(|| RepeatLimiter::new(self.interval));
        limiter.quiet(now);
        !matches!(limiter.occur(now, 1), Verdict::Suppressed)
    }
}

impl<S: Subscriber> Layer<S> for RepeatFilter {
    fn event_enabled(&self, event: &Event<'_>, _ctx: Context<'_, S>) -> bool {
        let m = event.metadata();
        self.admit(m.callsite(), *m.level(), Instant::now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn site_a() -> Identifier {
        struct Probe;
        impl tracing::Callsite for Probe {
            fn set_interest(&self, _: tracing::subscriber::Interest) {}
            fn metadata(&self) -> &tracing::Metadata<'_> {
                unreachable!()
            }
        }
        static A: Probe = Probe;
        Identifier(&A)
    }

    fn site_b() -> Identifier {
        struct Probe;
        impl tracing::Callsite for Probe {
            fn set_interest(&self, _: tracing::subscriber::Interest) {}
            fn metadata(&self) -> &tracing::Metadata<'_> {
                unreachable!()
            }
        }
        static B: Probe = Probe;
        Identifier(&B)
    }

    #[test]
    fn a_repeated_warning_is_written_once_per_interval_per_call_site() {
        let f = RepeatFilter::new(Duration::from_secs(30));
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let written: Vec<u64> = (0..100)
            .filter(|&i| f.admit(site_a(), Level::WARN, t0 + s * i as u32))
            .collect();
        assert_eq!(written, vec![0, 30, 60, 90]);
        // Another call site has its own budget; info lines are never held back.
        assert!(f.admit(site_b(), Level::ERROR, t0 + s));
        assert!(!f.admit(site_b(), Level::ERROR, t0 + 2 * s));
        assert!((0..10).all(|i| f.admit(site_a(), Level::INFO, t0 + s * i)));
    }

    #[test]
    fn after_a_quiet_interval_the_next_warning_is_written_at_once() {
        let f = RepeatFilter::new(Duration::from_secs(30));
        let t0 = Instant::now();
        assert!(f.admit(site_a(), Level::WARN, t0));
        assert!(!f.admit(site_a(), Level::WARN, t0 + Duration::from_secs(5)));
        assert!(f.admit(site_a(), Level::WARN, t0 + Duration::from_secs(40)));
        assert!(!f.admit(site_a(), Level::WARN, t0 + Duration::from_secs(41)));
    }
}
