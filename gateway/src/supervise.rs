//! Adapter processes: one child per source, started by exec of this binary, restarted with
//! backoff after a crash.
//!
//! # Design constraints
//! - The gateway is multi-threaded, so children are started by exec (never a bare `fork`), and
//!   the ring's descriptors are made inheritable in the child only (`SharedRing::pass_to_child`).
//! - A child gets its job (its part of the configuration the parent validated, as JSON) on its
//!   stdin: a file edited on disk meanwhile cannot make parent and child disagree, and a child
//!   parses only its own devices.
//! - Children die with the gateway: the child sets `PR_SET_PDEATHSIG` and then checks that its
//!   parent is still the gateway that started it (closing the race where the parent died first).
//!   The death signal fires when the *thread* that spawned the child exits, so children are
//!   spawned from tokio worker threads (alive as long as the runtime), never from the blocking
//!   pool, whose threads exit when idle.
//! - Children never talk to systemd: `NOTIFY_SOCKET` and the watchdog variables are removed
//!   from their environment.
//! - A crash of one adapter disturbs nobody else: the ring stays with the gateway, the forwarder
//!   keeps reading it, and the restarted child claims the dead producer's side and continues
//!   its epoch and sequence (see `edgegw_ringbuf`).
//!
//! # Operation
//! `run_supervisor` loops: spawn, wait for exit or shutdown. On exit it counts and logs the
//! status and sleeps an exponential backoff with jitter (100 ms doubling to 30 s; back to 100 ms
//! once a child has stayed up for 30 s). On shutdown it sends SIGTERM, waits up to the grace
//! period, then SIGKILLs.

use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use edgegw_ringbuf::{SharedRing, TelemetryRecord};
use rand::RngExt as _;
use tokio::io::AsyncWriteExt;
use tokio::sync::watch;

/// Environment variable naming the gateway's pid, for the child's parent-death check.
pub const PARENT_PID_ENV: &str = "EDGEGW_PARENT_PID";

/// First restart delay.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
/// Largest restart delay.
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// A child that stayed up this long resets the backoff.
const STABLE_AFTER: Duration = Duration::from_secs(30);

/// Counters of one supervised adapter.
#[derive(Debug, Default)]
pub struct AdapterCounters {
    /// Children started.
    pub starts: AtomicU64,
    /// Children that exited without being asked to (crashes, kills, errors).
    pub crashes: AtomicU64,
    /// Pid of the running child; 0 when none.
    pub pid: AtomicU64,
    /// Poll counters the children report on their stdout (`crate::telemetry::report`).
    pub report: crate::telemetry::AdapterReport,
}

/// What to run for one source.
#[derive(Debug, Clone)]
pub struct AdapterSpec {
    /// Path of this binary.
    pub exe: PathBuf,
    /// Source name, passed as `adapter --source NAME`.
    pub source: String,
    /// The child's job (`crate::adapter::AdapterJob` as JSON), written to its stdin.
    pub job: Arc<str>,
    /// How long a child may take to stop after SIGTERM before it is killed.
    pub stop_grace: Duration,
}

/// Supervises one adapter child until `shutdown` turns true.
pub async fn run_supervisor(
    spec: AdapterSpec,
    ring: SharedRing<TelemetryRecord>,
    counters: Arc<AdapterCounters>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut delay = BACKOFF_MIN;
    while !*shutdown.borrow() {
        let started = Instant::now();
        let mut child = match spawn(&spec, &ring).await {
            Ok(child) => child,
            Err(e) => {
                counters.crashes.fetch_add(1, Ordering::Relaxed);
                tracing::error!(source = %spec.source, error = %e, "cannot start adapter process");
                if sleep_or_shutdown(jitter(delay), &mut shutdown).await {
                    break;
                }
                delay = (delay * 2).min(BACKOFF_MAX);
                continue;
            }
        };
        counters.starts.fetch_add(1, Ordering::Relaxed);
        counters
            .pid
            .store(u64::from(child.id().unwrap_or(0)), Ordering::Relaxed);
        tracing::info!(source = %spec.source, pid = child.id(), "adapter process started");
        if let Some(out) = child.stdout.take() {
            let (source, counters) = (spec.source.clone(), Arc::clone(&counters));
            tokio::spawn(async move {
                crate::telemetry::read_reports(source, out, &counters.report).await;
            });
        }
        let status = tokio::select! {
            status = child.wait() => status,
            () = stopped(&mut shutdown) => {
                stop_child(&spec, &mut child).await;
                counters.pid.store(0, Ordering::Relaxed);
                break;
            }
        };
        counters.pid.store(0, Ordering::Relaxed);
        counters.crashes.fetch_add(1, Ordering::Relaxed);
        if started.elapsed() >= STABLE_AFTER {
            delay = BACKOFF_MIN;
        }
        tracing::warn!(
            source = %spec.source,
            status = %describe(status),
            restart_in_ms = delay.as_millis() as u64,
            "adapter process exited; restarting"
        );
        if sleep_or_shutdown(jitter(delay), &mut shutdown).await {
            break;
        }
        delay = (delay * 2).min(BACKOFF_MAX);
    }
}

async fn spawn(
    spec: &AdapterSpec,
    ring: &SharedRing<TelemetryRecord>,
) -> std::io::Result<tokio::process::Child> {
    let mut cmd = std::process::Command::new(&spec.exe);
    cmd.arg("adapter")
        .arg("--source")
        .arg(&spec.source)
        .env(PARENT_PID_ENV, std::process::id().to_string())
        // Only the gateway talks to systemd (NotifyAccess=main): children never notify, and the
        // watchdog is the gateway's.
        .env_remove("NOTIFY_SOCKET")
        .env_remove("WATCHDOG_USEC")
        .env_remove("WATCHDOG_PID")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    ring.pass_to_child(&mut cmd)
        .map_err(std::io::Error::other)?;
    let mut cmd = tokio::process::Command::from(cmd);
    cmd.kill_on_drop(true);
    let mut child = cmd.spawn()?;
    let mut stdin = child.stdin.take().expect("stdin is piped");
    stdin.write_all(spec.job.as_bytes()).await?;
    drop(stdin);
    Ok(child)
}

async fn stop_child(spec: &AdapterSpec, child: &mut tokio::process::Child) {
    if let Some(pid) = child.id() {
        let pid = nix::unistd::Pid::from_raw(pid as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
    }
    match tokio::time::timeout(spec.stop_grace, child.wait()).await {
        Ok(status) => {
            tracing::info!(source = %spec.source, status = %describe(status), "adapter process stopped")
        }
        Err(_) => {
            tracing::warn!(source = %spec.source, "adapter process ignored SIGTERM; killing it");
            let _ = child.kill().await;
        }
    }
}

/// Sleeps `d`; returns `true` if shutdown was requested meanwhile.
async fn sleep_or_shutdown(d: Duration, shutdown: &mut watch::Receiver<bool>) -> bool {
    tokio::time::timeout(d, stopped(shutdown)).await.is_ok()
}

/// Completes when shutdown is requested (or its sender is gone). Holds no watch guard across an
/// await, so the futures using it stay `Send`.
async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

/// `d` ± 25 %.
fn jitter(d: Duration) -> Duration {
    d.mul_f64(rand::rng().random_range(0.75..1.25))
}

fn describe(status: std::io::Result<ExitStatus>) -> String {
    use std::os::unix::process::ExitStatusExt;
    match status {
        Ok(s) => match (s.code(), s.signal()) {
            (Some(code), _) => format!("exit code {code}"),
            (None, Some(sig)) => format!("killed by signal {sig}"),
            _ => s.to_string(),
        },
        Err(e) => format!("wait failed: {e}"),
    }
}

/// In the adapter child: die with the gateway. Call first thing in `adapter` mode.
pub fn die_with_parent() -> std::io::Result<()> {
    nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)?;
    let expected = std::env::var(PARENT_PID_ENV)
        .ok()
        .and_then(|p| p.parse::<i32>().ok())
        .ok_or_else(|| {
            std::io::Error::other(format!(
                "{PARENT_PID_ENV} is not set: adapters are started by the gateway"
            ))
        })?;
    if nix::unistd::getppid().as_raw() != expected {
        return Err(std::io::Error::other(
            "the gateway that started this adapter is gone",
        ));
    }
    Ok(())
}
