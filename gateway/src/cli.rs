//! The `run`, `check` and `spool stats` commands.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};

use crate::config::{self, ResolvedConfig};
use crate::daemon::{RunPlan, SourceSpec};
use crate::mqtt::{MqttSettings, Secret};
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

/// `edge-gateway run`: the daemon, until SIGTERM or SIGINT.
pub fn run(path: &Path) -> anyhow::Result<()> {
    let cfg = config::load(path)?;
    let sink = crate::sinks::MqttSink::new(&cfg.mqtt, &cfg.gateway.name)?;
    let telemetry = crate::telemetry::Telemetry::new(cfg.spool.path.clone(), Some(sink.counters()));
    let plan = run_plan(&cfg)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let _metrics = match cfg.metrics {
            Some(addr) => Some(
                crate::telemetry::http::MetricsServer::start(addr, Arc::clone(&telemetry))
                    .await
                    .with_context(|| format!("metrics endpoint: cannot listen on {addr}"))?,
            ),
            None => None,
        };
        let on_stop = Arc::clone(&telemetry);
        let shutdown = async move {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    .expect("SIGTERM handler");
            tokio::select! {
                _ = term.recv() => tracing::info!("SIGTERM"),
                _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT"),
            }
            on_stop.stopping();
        };
        let summary = crate::daemon::run(plan, sink, shutdown, |handle| {
            tracing::info!(sources = handle.rings.len(), "ready");
            telemetry.attach(handle);
        })
        .await?;
        tracing::info!(
            sent = summary.dispatch.sent_live,
            acked = summary.dispatch.acked,
            spooled_records = summary.dispatch.spilled_records,
            replayed_records = summary.dispatch.replayed_records,
            spool_rows_left = summary.spool.rows,
            "stopped"
        );
        anyhow::Ok(())
    })
}

/// The MQTT sink's settings from `[mqtt]` and `[payload]`; reads the password file.
pub fn mqtt_settings(cfg: &ResolvedConfig) -> anyhow::Result<MqttSettings> {
    let m = &cfg.mqtt;
    if m.tls.is_some() {
        bail!("[mqtt.tls] is not implemented yet: remove it, or terminate TLS in a local proxy");
    }
    let client_id = m
        .client_id
        .clone()
        .unwrap_or_else(|| cfg.gateway.name.clone());
    let status_topic = m
        .status_topic
        .clone()
        .unwrap_or_else(|| format!("{}/status", cfg.payload.prefix));
    let mut s = MqttSettings::new(&m.host, m.effective_port(), &client_id, &status_topic);
    s.qos = m.qos;
    s.keepalive = Duration::from_secs(m.keepalive_s);
    s.window = usize::from(m.inflight.max(1));
    s.backoff_min = Duration::from_millis(m.backoff_min_ms);
    s.backoff_max = Duration::from_millis(m.backoff_max_ms.max(m.backoff_min_ms));
    s.max_packet = m.max_packet_size;
    if let Some(user) = &m.username {
        let password = match &m.password_file {
            Some(file) => {
                let text = std::fs::read_to_string(file).with_context(|| {
                    format!("reading the MQTT password file {}", file.display())
                })?;
                text.trim_end_matches(['\n', '\r']).to_owned()
            }
            None => String::new(),
        };
        s.credentials = Some((user.clone(), Secret(password)));
    }
    Ok(s)
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
