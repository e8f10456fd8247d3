//! `edge-gateway demo`: the whole pipeline on a built-in default, on a machine with nothing
//! installed.
//!
//! What runs: the project's Modbus TCP simulator (in this process) on loopback; two adapter
//! child processes (one polling the simulator, one synthetic source at 5,000 points/s), each
//! with its own ring; the forwarder and the spool (in a temporary directory); and an MQTT broker
//! (rumqttd) in a child process on a free loopback port. Inside the broker process a local
//! subscriber, attached before the broker accepts any connection, receives every batch and
//! streams it to this process, which checks that every `(source, epoch)` sequence is complete,
//! counts duplicates, and prints one status line per second.
//!
//! `--outage N` makes the broker unreachable for N seconds mid-run: the gateway reaches the
//! broker through a TCP relay in this process, which cuts every connection and refuses new
//! ones for that long. The gateway sees exactly what a dead broker looks like (connection lost,
//! reconnects refused), spools, and replays when the broker is back. The broker itself keeps
//! running, so the demo's subscriber never misses what the broker acknowledged: killing the
//! broker process instead could lose batches it had acknowledged but not yet delivered, which
//! would be the broker's loss, not the gateway's, and would make the summary lie. The run always ends with
//! `demo summary: received=<n> gaps=<n> duplicates=<n> spooled=<n> replayed=<n>`, and exits
//! non-zero if anything is missing.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, Write};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use edgegw_plc::config::AdapterConfig;
use edgegw_plc::sim::{ModbusSim, SignalKind, SimSpec, SyntheticConfig, SyntheticTagConfig};
use tokio::sync::watch;

use crate::adapter::AdapterJob;
use crate::daemon::{RunHandle, RunPlan, SourceSpec};
use crate::relay::Relay;
use crate::sinks::mqtt::{MqttConfig, MqttSink};
use crate::spool::SpoolConfig;

const PREFIX: &str = "edge-gateway/demo";

/// What the subscriber has seen.
#[derive(Debug, Default)]
struct Seen {
    seqs: HashMap<(String, u64), HashSet<u64>>,
    received: u64,
    duplicates: u64,
    replayed: u64,
    window_points: u64,
    window_latency_ms: Vec<f64>,
    sample: Option<String>,
}

impl Seen {
    fn take_line(&mut self, line: &str) {
        let Ok(doc) = serde_json::from_str::<serde_json::Value>(line) else {
            return; // the retained status, not a batch
        };
        let (Some(source), Some(epoch), Some(records)) = (
            doc["source"].as_str(),
            doc["epoch"].as_u64(),
            doc["records"].as_array(),
        ) else {
            return;
        };
        let replayed = doc["replayed"].as_bool().unwrap_or(false);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        let set = self.seqs.entry((source.to_owned(), epoch)).or_default();
        for r in records {
            let Some(seq) = r["seq"].as_u64() else {
                continue;
            };
            self.received += 1;
            if !set.insert(seq) {
                self.duplicates += 1;
            }
            if replayed {
                self.replayed += 1;
            } else {
                self.window_points += 1;
                if let Some(ts) = r["ts"].as_u64() {
                    self.window_latency_ms
                        .push(now.saturating_sub(ts) as f64 / 1e6);
                }
            }
        }
        if let Some(r) = records.last() {
            self.sample = Some(format!(
                "{}/{} {} = {} ({})",
                doc["device"].as_str().unwrap_or("?"),
                doc["group"].as_str().unwrap_or("?"),
                r["tag"].as_str().unwrap_or("?"),
                r["v"],
                r["q"].as_str().unwrap_or("?")
            ));
        }
    }

    /// Records missing from each `(source, epoch)`: every seq from 0 to the highest seen.
    fn gaps(&self) -> u64 {
        self.seqs
            .values()
            .map(|s| s.iter().max().map_or(0, |m| m + 1 - s.len() as u64))
            .sum()
    }
}

/// The broker child, with a thread forwarding its subscriber's lines into `seen`.
struct BrokerProcess {
    child: Child,
}

impl BrokerProcess {
    fn start(port: u16, seen: &Arc<Mutex<Seen>>) -> anyhow::Result<Self> {
        let mut child = Command::new(std::env::current_exe()?)
            .args(["demo-broker", "--port", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting the demo broker")?;
        let stdout = child.stdout.take().expect("piped");
        let seen = Arc::clone(seen);
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                seen.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .take_line(&line);
            }
        });
        Ok(Self { child })
    }

    fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn wait_for_port(port: u16, limit: Duration) -> anyhow::Result<()> {
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if start.elapsed() > limit {
            bail!("the demo broker did not listen on port {port} within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

fn topic(device: &str, group: &str) -> String {
    format!("{PREFIX}/{device}/{group}")
}

/// The built-in sources: a Modbus TCP device on the simulator, and a synthetic source.
fn sources(sim: std::net::SocketAddr) -> anyhow::Result<Vec<SourceSpec>> {
    let modbus: AdapterConfig = toml::from_str(&format!(
        r#"
[[devices]]
name = "press-1"
protocol = "modbus-tcp"
address = "{sim}"
unit_id = 1
timeout_ms = 500

[[devices.groups]]
name = "fast"
interval_ms = 100
tags = [
  {{ name = "spindle_rpm", table = "holding-register", address = 0, type = "u16", count = 10 }},
  {{ name = "oil_temp", table = "holding-register", address = 20, type = "f32", count = 10 }},
]

[[devices.groups]]
name = "slow"
interval_ms = 1000
tags = [
  {{ name = "cycle_count", table = "holding-register", address = 10, type = "u16", count = 10 }},
  {{ name = "pressure", table = "holding-register", address = 40, type = "f32", count = 10, scale = 0.1 }},
]
"#
    ))
    .context("the demo's Modbus configuration")?;
    let modbus_job = AdapterJob::Modbus {
        devices: modbus.devices,
        source_ids: vec![0],
    };
    let kinds = [
        SignalKind::Sine,
        SignalKind::Ramp,
        SignalKind::Counter,
        SignalKind::Random,
    ];
    let synthetic_job = AdapterJob::Synthetic {
        group: "sensors".into(),
        config: SyntheticConfig {
            source_id: 1,
            tags: (0..50)
                .map(|i| SyntheticTagConfig {
                    name: format!("sensor_{i:02}"),
                    signal: kinds[i % kinds.len()],
                    rate_hz: 100.0,
                    min: 0.0,
                    max: 100.0,
                    period_ms: 5_000,
                })
                .collect(),
        },
    };
    let mut out = Vec::new();
    for (i, (name, job)) in [("press-1", modbus_job), ("line-sim", synthetic_job)]
        .into_iter()
        .enumerate()
    {
        out.push(SourceSpec {
            name: name.into(),
            source_id: i as u32,
            catalog: Arc::new(job.catalog(name, topic)?),
            ring_capacity: 65_536,
            job,
        });
    }
    Ok(out)
}

/// `edge-gateway demo`.
pub fn main(seconds: Option<u64>, outage: u64) -> anyhow::Result<()> {
    if let Some(s) = seconds
        && outage > 0
        && outage + 4 > s
    {
        bail!(
            "--outage {outage} needs --seconds of at least {}",
            outage + 4
        );
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(run(seconds, outage))
}

async fn run(seconds: Option<u64>, outage: u64) -> anyhow::Result<()> {
    // First: a Ctrl-C (or SIGTERM) while the demo is still starting ends it through the same
    // clean stop and summary, and removes its state directory, as one later does.
    let stop = crate::stop::StopSignals::install().context("installing the signal handlers")?;
    let dir = tempfile::Builder::new()
        .prefix("edge-gateway-demo-")
        .tempdir()?;
    let sim = ModbusSim::start("127.0.0.1:0".parse()?, SimSpec::bench_device(20, 20)).await?;
    let port = free_port()?;
    let seen = Arc::new(Mutex::new(Seen::default()));
    let broker = BrokerProcess::start(port, &seen)?;
    wait_for_port(port, Duration::from_secs(10))?;
    let relay = Relay::start(port, false).await?;
    println!(
        "demo: Modbus simulator on {}, MQTT broker on 127.0.0.1:{port} (reached through 127.0.0.1:{}), state in {}",
        sim.local_addr(),
        relay.port,
        dir.path().display()
    );

    let plan = RunPlan {
        gateway_name: "demo".into(),
        epoch_store: dir.path().join("epochs.json"),
        spool_path: dir.path().join("spool.db"),
        spool: SpoolConfig::default(),
        shutdown_timeout: Duration::from_secs(10),
        sources: sources(sim.local_addr())?,
        max_batch: 500,
        linger: Duration::from_millis(50),
        exe: std::env::current_exe()?,
    };
    let mut mqtt = MqttConfig::new("127.0.0.1");
    mqtt.port = Some(relay.port);
    mqtt.client_id = Some("edge-gateway-demo".into());
    mqtt.status_topic = Some(format!("{PREFIX}/status"));
    // A demo should show the reconnect promptly; production keeps the 30 s cap.
    mqtt.backoff_max_ms = 2_000;
    let sink = MqttSink::new(&mqtt, "demo").context("the demo's MQTT sink")?;

    let (stop_tx, mut stop_rx) = watch::channel(false);
    let (handle_tx, handle_rx) = tokio::sync::oneshot::channel::<RunHandle>();
    let gateway = tokio::spawn(crate::daemon::run(
        plan,
        sink,
        async move {
            let _ = stop_rx.wait_for(|s| *s).await;
        },
        move |h| {
            let _ = handle_tx.send(h);
        },
    ));
    let handle = handle_rx.await.context("the gateway did not start")?;

    let started = Instant::now();
    let outage_at =
        (outage > 0).then(|| Duration::from_secs(seconds.map_or(5, |s| (s - outage) / 3).max(2)));
    let mut outage_since: Option<Instant> = None;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    let stop = stop.recv();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = &mut stop => break,
        }
        let t = started.elapsed();
        if outage_at.is_some_and(|at| t >= at) && outage_since.is_none() {
            relay.set_down(true);
            outage_since = Some(Instant::now());
            println!("demo: broker unreachable for {outage} s (connections cut and refused)");
        }
        if let Some(since) = outage_since
            && since.elapsed() >= Duration::from_secs(outage)
            && relay.is_down()
        {
            relay.set_down(false);
            println!("demo: broker reachable again");
        }
        status_line(t, &seen, &handle);
        if seconds.is_some_and(|s| t >= Duration::from_secs(s)) {
            break;
        }
    }

    let _ = stop_tx.send(true);
    let summary = gateway.await.context("gateway task")??;
    // Let the subscriber take the last batches.
    let mut last = u64::MAX;
    for _ in 0..30 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = seen.lock().unwrap_or_else(|e| e.into_inner()).received;
        if now == last {
            break;
        }
        last = now;
    }
    broker.kill();
    sim.stop().await;
    let s = seen.lock().unwrap_or_else(|e| e.into_inner());
    let gaps = s.gaps();
    if summary.spool.rows > 0 {
        println!(
            "demo: {} batches still spooled at exit (broker down at the end)",
            summary.spool.rows
        );
    }
    println!(
        "demo summary: received={} gaps={} duplicates={} spooled={} replayed={}",
        s.received,
        gaps,
        s.duplicates,
        summary.dispatch.spilled_records,
        summary.dispatch.replayed_records
    );
    std::io::stdout().flush()?;
    if gaps > 0 {
        bail!("{gaps} records missing");
    }
    Ok(())
}

fn status_line(t: Duration, seen: &Mutex<Seen>, handle: &RunHandle) {
    let mut s = seen.lock().unwrap_or_else(|e| e.into_inner());
    let mut lat = std::mem::take(&mut s.window_latency_ms);
    lat.sort_by(f64::total_cmp);
    let pct = |p: f64| {
        lat.get(((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0.0)
    };
    let d = *handle.dispatch.borrow();
    let sample = s.sample.take().unwrap_or_default();
    let depth = d.spilled_records.saturating_sub(d.replayed_records);
    println!(
        "t={:>3}s points/s={:>6} latency p50={:>6.1}ms p99={:>6.1}ms spool depth≈{:>6} spooled={} replayed={} | {}",
        t.as_secs(),
        s.window_points,
        pct(0.5),
        pct(0.99),
        depth,
        d.spilled_records,
        d.replayed_records,
        sample
    );
    s.window_points = 0;
}

/// `edge-gateway demo-broker --port N`: rumqttd on loopback, with a local subscriber attached
/// before any network client, writing every batch it receives to stdout, one per line.
pub fn broker_main(port: u16) -> anyhow::Result<()> {
    crate::supervise::die_with_parent().ok();
    let config: rumqttd::Config = toml::from_str(&format!(
        r#"
id = 0
[router]
id = 0
max_connections = 64
max_outgoing_packet_count = 1000
max_segment_size = 104857600
max_segment_count = 10

[v4.1]
name = "demo"
listen = "127.0.0.1:{port}"
next_connection_delay_ms = 1
[v4.1.connections]
connection_timeout_ms = 60000
max_payload_size = 4194304
max_inflight_count = 500
dynamic_filters = true
"#
    ))
    .context("demo broker configuration")?;
    let mut broker = rumqttd::Broker::new(config);
    let (mut link_tx, mut link_rx) = broker.link("demo-subscriber").context("subscriber link")?;
    link_tx
        .subscribe(format!("{PREFIX}/#"))
        .context("subscribing")?;
    std::thread::spawn(move || {
        if let Err(e) = broker.start() {
            eprintln!("demo broker: {e}");
            std::process::exit(1);
        }
    });
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    loop {
        if let Some(rumqttd::Notification::Forward(f)) =
            link_rx.recv().context("subscriber link")?
        {
            out.write_all(&f.publish.payload)?;
            out.write_all(b"\n")?;
            out.flush()?;
        }
    }
}
