//! Adapter jobs: what one adapter child process runs, and the child's entry point.
//!
//! The gateway hands each child its job as JSON on stdin: the raw configuration of the devices
//! of one Modbus link (with their record source ids), or one synthetic source. The child
//! resolves it with the adapters' own code, attaches the ring it inherited, claims the producer
//! side and polls until SIGTERM, or until the gateway dies (parent-death signal).
//! Tag ids are indices into each device's resolved tag list, and the forwarder's catalog
//! ([`AdapterJob::catalog`]) is built from the same resolution, so both sides agree.
//!
//! Every second the child writes its poll counters as one report line to its stdout, a pipe
//! the gateway reads (format and what happens when the gateway stops reading:
//! [`crate::telemetry::report`]); a last line follows when it stops.

use anyhow::{Context, bail};
use edgegw_plc::config::{AdapterConfig, DeviceConfig};
use edgegw_plc::modbus::{LinkCounters, ModbusLink, run_link};
use edgegw_plc::sim::{SyntheticConfig, SyntheticSource};
use edgegw_plc::{Emitter, FullPolicy};
use edgegw_ringbuf::{SharedRing, TelemetryRecord};
use serde::{Deserialize, Serialize};

use crate::forward::catalog::{CatalogBuilder, SourceCatalog};
use crate::telemetry::report::{PollCounts, REPORT_INTERVAL};

/// What one adapter process runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum AdapterJob {
    /// The devices of one Modbus link (one TCP device, or every device on one serial line),
    /// with the record `source_id` of each.
    Modbus {
        /// Raw device configurations.
        devices: Vec<DeviceConfig>,
        /// `source_id` of each device's records.
        source_ids: Vec<u32>,
    },
    /// A synthetic source (`source_id` inside).
    Synthetic {
        /// The group its tags are published under.
        group: String,
        /// Its configuration.
        config: SyntheticConfig,
    },
}

impl AdapterJob {
    /// Resolves a Modbus job into its link.
    pub fn modbus_link(devices: &[DeviceConfig], source_ids: &[u32]) -> anyhow::Result<ModbusLink> {
        let resolved = AdapterConfig {
            devices: devices.to_vec(),
            ..AdapterConfig::default()
        }
        .resolve()
        .map_err(|e| anyhow::anyhow!("{e}"))?;
        let mut links = resolved.links.into_iter();
        let (Some(mut link), None) = (links.next(), links.next()) else {
            bail!("an adapter job must hold exactly one link");
        };
        for (device, id) in link.devices.iter_mut().zip(source_ids) {
            device.source_id = *id;
        }
        Ok(link)
    }

    /// The forwarder's catalog of this job's records, topics from `topic(device, group)`.
    pub fn catalog(
        &self,
        source: &str,
        topic: impl Fn(&str, &str) -> String,
    ) -> anyhow::Result<SourceCatalog> {
        let mut b = CatalogBuilder::new(source, topic(source, "_unknown"));
        match self {
            AdapterJob::Modbus {
                devices,
                source_ids,
            } => {
                let link = Self::modbus_link(devices, source_ids)?;
                for device in &link.devices {
                    for group in &device.groups {
                        let g =
                            b.group(&device.name, &group.name, topic(&device.name, &group.name));
                        for t in group.tags.clone() {
                            b.tag(device.source_id, t as u32, g, &device.tags[t].name);
                        }
                    }
                }
            }
            AdapterJob::Synthetic { group, config } => {
                let g = b.group(source, group, topic(source, group));
                for (i, t) in config.tags.iter().enumerate() {
                    b.tag(config.source_id, i as u32, g, &t.name);
                }
            }
        }
        Ok(b.build())
    }
}

/// `edge-gateway adapter --source NAME`: the child's entry point.
pub fn main(source: &str) -> anyhow::Result<()> {
    crate::supervise::die_with_parent().context("adapter process")?;
    let mut text = String::new();
    std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)
        .context("reading the adapter job")?;
    let job: AdapterJob = serde_json::from_str(&text).context("parsing the adapter job")?;
    let ring = SharedRing::<TelemetryRecord>::from_inherited().context("attaching the ring")?;
    let producer = ring
        .producer()
        .context("claiming the ring's producer side")?;
    let mut emitter = Emitter::new(producer, FullPolicy::default());
    let mut reporter = Reporter::new().context("preparing the report pipe (stdout)")?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        // Installed before the first poll: the supervisor's SIGTERM is a clean stop however
        // early it comes.
        let stop = crate::stop::StopSignals::install().context("installing the SIGTERM handler")?;
        let shutdown = async {
            stop.recv().await;
        };
        tracing::info!(source, pid = std::process::id(), "adapter running");
        match job {
            AdapterJob::Modbus {
                devices,
                source_ids,
            } => {
                let link = AdapterJob::modbus_link(&devices, &source_ids)?;
                let counters = LinkCounters::default();
                let counts = || PollCounts::from_link(&counters.snapshot());
                tokio::select! {
                    () = run_link(&link, &mut emitter, &counters, shutdown) => {}
                    () = reporter.run(counts) => {}
                }
                reporter.write(&counts());
            }
            AdapterJob::Synthetic { config, .. } => {
                // No device behind it: the reports only say the process is alive.
                let mut synthetic = SyntheticSource::new(&config);
                tokio::select! {
                    _ = synthetic.run(&mut emitter, std::time::Duration::from_millis(10), shutdown) => {}
                    () = reporter.run(PollCounts::default) => {}
                }
            }
        }
        anyhow::Ok(())
    })?;
    tracing::info!(source, "adapter stopped");
    Ok(())
}

/// Writes report lines to stdout without ever blocking the poller.
#[derive(Debug)]
struct Reporter {
    skipped: u64,
}

impl Reporter {
    /// Switches stdout to non-blocking.
    fn new() -> std::io::Result<Self> {
        use nix::fcntl::{FcntlArg, OFlag, fcntl};
        let flags = fcntl(std::io::stdout(), FcntlArg::F_GETFL)?;
        let flags = OFlag::from_bits_truncate(flags) | OFlag::O_NONBLOCK;
        fcntl(std::io::stdout(), FcntlArg::F_SETFL(flags))?;
        Ok(Self { skipped: 0 })
    }

    /// Reports `counts()` every [`REPORT_INTERVAL`], forever.
    async fn run(&mut self, counts: impl Fn() -> PollCounts) {
        let mut tick = tokio::time::interval(REPORT_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            self.write(&counts());
        }
    }

    /// One line in one `write(2)` (shorter than `PIPE_BUF`, so all or nothing). A full pipe
    /// (the gateway is not reading) or a closed one skips the line; the next carries the
    /// count. Counters are cumulative, so nothing but freshness is lost.
    fn write(&mut self, counts: &PollCounts) {
        let line = PollCounts {
            skipped: self.skipped,
            ..*counts
        }
        .to_line();
        match nix::unistd::write(std::io::stdout(), line.as_bytes()) {
            Ok(n) if n == line.len() => {}
            _ => self.skipped += 1,
        }
    }
}
