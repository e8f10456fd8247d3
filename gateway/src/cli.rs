//! The `run`, `check` and `spool stats` commands.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use edgegw_ringbuf::{CPU_LATENCY_DEVICE, CpuLatencyError, CpuLatencyRequest, cpu_latency_limit};

use crate::config::{self, ResolvedConfig};
use crate::daemon::{RunPlan, SourceSpec};
use crate::sinks::mqtt::{MqttSetupError, MqttSink};
use crate::spool::Spool;

/// `edge-gateway check`: validate and print the resolved plan.
pub fn check(path: &Path) -> anyhow::Result<()> {
    let cfg = config::load(path)?;
    print!("{}", cfg.plan_report());
    println!("configuration OK: {}", path.display());
    Ok(())
}

/// `edge-gateway spool stats`: depth, oldest record age and size on disk, read-only.
pub fn spool_stats(path: &Path) -> anyhow::Result<()> {
    let cfg = config::load(path)?;
    let spool = &cfg.spool.path;
    if !spool.exists() {
        println!(
            "spool {}: no file yet (nothing was ever spooled)",
            spool.display()
        );
        return Ok(());
    }
    let s = Spool::inspect(spool)?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let age = s.oldest_ts.map_or("-".to_owned(), |ts| {
        format!("{:.1} s", now.saturating_sub(ts) as f64 / 1e9)
    });
    println!("spool {}", spool.display());
    println!("  batches          {}", s.rows);
    println!("  records          {}", s.records);
    println!("  oldest record    {age} old");
    println!(
        "  logical bytes    {} (bound {})",
        s.bytes, cfg.spool.config.max_bytes
    );
    println!("  on disk          {} bytes (database + WAL)", s.file_bytes);
    Ok(())
}

/// `edge-gateway run`: the daemon, until SIGTERM or SIGINT; SIGHUP or a changed file reloads.
pub fn run(path: &Path) -> anyhow::Result<()> {
    let cfg = config::load(path)?;
    // Before anything starts: an unusable TLS or password file stops the command here, and so
    // does a CPU latency request the process may not make.
    let sink = mqtt_sink(path, &cfg)?;
    // Held until this function returns (the process's exit withdraws it in any case).
    let _cpu_latency = cpu_latency_request(path, &cfg)?;
    let telemetry = crate::telemetry::Telemetry::new(cfg.spool.path.clone(), Some(sink.counters()));
    let plan = run_plan(&cfg)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        // Before anything starts (an adapter, READY=1 to systemd): from here on SIGTERM and
        // SIGINT are a clean stop, never the default action.
        let stop = crate::stop::StopSignals::install()?;
        // Then SIGHUP, whose default action would end the process, and the metrics endpoint,
        // which the reloads move or turn off.
        let config_path = path.to_owned();
        // A sink built by a reload continues the counters of the first one (and of every
        // sink since): the metrics' totals are the process's.
        let counters = sink.counters();
        let reloads = crate::reload::reloads(
            path,
            cfg,
            move |cfg| Ok(mqtt_sink(&config_path, cfg)?.continuing(Arc::clone(&counters))),
            Arc::clone(&telemetry),
        )?;
        let on_stop = Arc::clone(&telemetry);
        let shutdown = async move {
            tracing::info!("{}", stop.recv().await.name());
            on_stop.stopping();
        };
        let summary =
            crate::daemon::run_reloadable(plan, sink, shutdown, Some(reloads), |handle| {
                tracing::info!(sources = handle.sources().len(), "ready");
                telemetry.attach(handle);
            })
            .await?;
        tracing::info!(
            sent = summary.dispatch.sent_live,
            acked = summary.dispatch.acked,
            spooled_records = summary.dispatch.spilled_records,
            replayed_records = summary.dispatch.replayed_records,
            spool_rows_left = summary.spool.rows,
            spool_dropped_records = summary.spool_loss.dropped_by_bound,
            spool_failed_records = summary.spool_loss.failed_writes,
            spool_undecodable_rows = summary.spool_loss.undecodable_rows,
            adapter_crashes = summary.adapter_crashes.iter().map(|(_, n)| n).sum::<u64>(),
            "stopped"
        );
        anyhow::Ok(())
    })
}

/// The MQTT sink, built from the resolved `[mqtt]` section: reads the password file and the
/// TLS files. A file that cannot be used is a [`SinkSetupError`] naming the configuration
/// file, the key and the file at fault; the command exits with status 78.
pub fn mqtt_sink(path: &Path, cfg: &ResolvedConfig) -> Result<MqttSink, SinkSetupError> {
    MqttSink::new(&cfg.mqtt, &cfg.gateway.name).map_err(|error| SinkSetupError {
        config: path.to_owned(),
        error,
    })
}

/// A file the configuration names (TLS CA, client certificate or key, password file) cannot be
/// used, or the sink refused its settings. A configuration-class error: restarting cannot fix
/// it, so the command exits with [`config::EX_CONFIG`] (78), like an invalid file.
#[derive(Debug, thiserror::Error)]
#[error("{}: {error}", config.display())]
pub struct SinkSetupError {
    /// The configuration file.
    pub config: PathBuf,
    /// What went wrong, with the key and the file.
    #[source]
    pub error: MqttSetupError,
}

impl SinkSetupError {
    /// The process exit status: always [`config::EX_CONFIG`] (78).
    pub const fn exit_code(&self) -> u8 {
        config::EX_CONFIG
    }
}

/// `gateway.cpu_wake_latency_us`: the request, if configured, held by the caller while it runs.
pub fn cpu_latency_request(
    path: &Path,
    cfg: &ResolvedConfig,
) -> Result<Option<CpuLatencyRequest>, CpuLatencySetupError> {
    let Some(limit) = cfg.gateway.cpu_wake_latency else {
        return Ok(None);
    };
    let request = CpuLatencyRequest::hold(limit).map_err(|error| CpuLatencySetupError {
        config: path.to_owned(),
        limit,
        error,
    })?;
    // What is in force can be lower: another process may hold a smaller request.
    let in_force = cpu_latency_limit().ok();
    tracing::info!(
        requested_us = limit.as_micros() as u64,
        in_force_us = in_force.map(|l| l.as_micros() as u64),
        device = CPU_LATENCY_DEVICE,
        "holding a CPU wake-up latency request: idle CPUs stay in states they leave within it"
    );
    Ok(Some(request))
}

/// The configured CPU latency request could not be held (most often: the process may not
/// write the device). A configuration-class error like [`SinkSetupError`]: exit status 78.
#[derive(Debug, thiserror::Error)]
#[error(
    "{}: gateway.cpu_wake_latency_us = {}: {error}{}",
    config.display(),
    limit.as_micros(),
    permission_hint(error)
)]
pub struct CpuLatencySetupError {
    /// The configuration file.
    pub config: PathBuf,
    /// The limit asked for.
    pub limit: Duration,
    /// What the device said.
    #[source]
    pub error: CpuLatencyError,
}

fn permission_hint(error: &CpuLatencyError) -> &'static str {
    match error {
        CpuLatencyError::Io { source, .. }
            if source.kind() == std::io::ErrorKind::PermissionDenied =>
        {
            "; the service user needs write access to the device (the package's udev rule gives \
             it to group edge-gateway: systemd/README.md, \"CPU wake-up latency\")"
        }
        _ => "",
    }
}

impl CpuLatencySetupError {
    /// The process exit status: always [`config::EX_CONFIG`] (78).
    pub const fn exit_code(&self) -> u8 {
        config::EX_CONFIG
    }
}

/// A setup error of `run` ([`SinkSetupError`], [`CpuLatencySetupError`]) behind `e`, with its
/// exit status; `None` for any other error.
pub fn setup_error(e: &anyhow::Error) -> Option<(&dyn std::fmt::Display, u8)> {
    if let Some(s) = e.downcast_ref::<SinkSetupError>() {
        Some((s, s.exit_code()))
    } else {
        e.downcast_ref::<CpuLatencySetupError>()
            .map(|s| (s as &dyn std::fmt::Display, s.exit_code()))
    }
}

/// What `daemon::run` needs, from the resolved configuration.
pub fn run_plan(cfg: &ResolvedConfig) -> anyhow::Result<RunPlan> {
    Ok(RunPlan {
        gateway_name: cfg.gateway.name.clone(),
        epoch_store: cfg.gateway.epoch_store_path.clone(),
        spool_path: cfg.spool.path.clone(),
        spool: cfg.spool.config.clone(),
        shutdown_timeout: cfg.gateway.shutdown_timeout,
        sources: cfg
            .sources
            .iter()
            .map(|s| SourceSpec {
                name: s.name.clone(),
                source_id: s.source_id,
                catalog: Arc::new(s.catalog()),
                ring_capacity: cfg.gateway.ring_capacity,
                job: s.adapter_job(),
            })
            .collect(),
        max_batch: cfg.payload.max_batch,
        linger: cfg.payload.linger,
        exe: std::env::current_exe().context("locating this binary")?,
    })
}
