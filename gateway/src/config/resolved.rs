//! Stage two: the resolved configuration, which builds the running parts.
//!
//! Defaults are filled in, paths made absolute, templates rendered, and the sources planned:
//! a **source** is one adapter child process writing one ring, either one Modbus link (a TCP
//! device, or a serial line with all its units) or one synthetic source.
//!
//! # Record ids and the tag table
//! Records in a ring carry `(source_id, tag_id)`; the tables here are built from the very
//! resolution the adapter child runs ([`AdapterConfig::resolve`]), so both agree:
//! - a Modbus device's records carry `source_id` = the device's index in `[[devices]]` (the
//!   PLC adapters' rule), and `tag_id` = the tag's index in that device's resolved tag list:
//!   tags numbered in file order across the device's groups, a `count = n` array taking `n`
//!   consecutive ids. A serial line's ring therefore carries several `source_id`s, one per unit.
//! - the n-th `[[synthetic]]` source's records carry `source_id` =
//!   [`SYNTHETIC_SOURCE_ID_BASE`](super::raw::SYNTHETIC_SOURCE_ID_BASE)` + n` and `tag_id` = the tag's index in its `tags`.
//! - [`SourcePlan::source_id`] (the ring's id) is the `source_id` of its first device.
//!
//! [`SourcePlan::devices`] holds one [`DevicePlan`] per record `source_id` of the source, each
//! with its tags indexed by `tag_id` and its groups with their topics, rendered here once.
//!
//! Everything is `PartialEq`, so a reload can compare an old and a new source by name.

use std::collections::HashMap;
use std::fmt::{self, Write as _};
use std::path::{Path, PathBuf};
use std::time::Duration;

use edgegw_plc::config::{AdapterConfig, DeviceConfig};
use edgegw_plc::modbus::{ModbusLink, Transport};
use edgegw_plc::sim::{SignalKind, SyntheticConfig};
use edgegw_plc::{ConfigProblem, DataType};

use super::raw::{PREFIX_VARS, PayloadFormat, RawConfig, TOPIC_VARS};
use super::topic::{TopicTemplate, TopicVars};
use crate::adapter::AdapterJob;
use crate::forward::catalog::{CatalogBuilder, SourceCatalog};
use crate::sinks::mqtt::MqttConfig;
use crate::spool::{Durability, SpoolConfig, WhenFull};

/// Group name of the topic that collects records of tags the configuration does not know.
pub const UNKNOWN_GROUP: &str = "_unknown";

/// File name of the epoch store in the state directory.
pub const EPOCH_STORE_FILE: &str = "epochs.json";

/// File name of the spool in the state directory, unless `spool.path` says otherwise.
pub const SPOOL_FILE: &str = "spool.db";

/// The configuration, ready to run.
#[derive(Debug, Clone, PartialEq)]
pub struct ResolvedConfig {
    /// Identity and local state.
    pub gateway: GatewaySettings,
    /// The broker: `[mqtt]` with its defaults filled in (`port`, `client_id`, and
    /// `status_topic`, which defaults to `<payload prefix>/status`) and its file paths
    /// absolute.
    pub mqtt: MqttConfig,
    /// The spool.
    pub spool: SpoolSettings,
    /// Topics and batching.
    pub payload: PayloadSettings,
    /// Sources in file order: Modbus links first, then synthetic sources.
    pub sources: Vec<SourcePlan>,
    /// Where the metrics endpoint listens (`[metrics]`); `None`: no endpoint.
    pub metrics: Option<std::net::SocketAddr>,
}

/// `[gateway]`, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewaySettings {
    /// Gateway name.
    pub name: String,
    /// State directory (absolute if the configuration file's path was).
    pub state_dir: PathBuf,
    /// Bound on a clean stop.
    pub shutdown_timeout: Duration,
    /// Epoch store: `<state_dir>/epochs.json`.
    pub epoch_store_path: PathBuf,
    /// Records per source ring.
    pub ring_capacity: usize,
    /// The CPU wake-up latency request held while running (`gateway.cpu_wake_latency_us`).
    pub cpu_wake_latency: Option<Duration>,
}

/// `[spool]`, resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct SpoolSettings {
    /// Database file: `spool.path` (relative to the state directory), or
    /// `<state_dir>/spool.db`.
    pub path: PathBuf,
    /// The spool's settings, `path` set to the same file.
    pub config: SpoolConfig,
}

/// `[payload]`, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PayloadSettings {
    /// Encoding.
    pub format: PayloadFormat,
    /// `{prefix}`, rendered.
    pub prefix: String,
    /// The topic template (already rendered into every [`GroupPlan::topic`]).
    pub topic: TopicTemplate,
    /// Records per batch at most.
    pub max_batch: usize,
    /// Longest a batch stays open.
    pub linger: Duration,
}

/// One source: one adapter child process, one ring.
#[derive(Debug, Clone, PartialEq)]
pub struct SourcePlan {
    /// Stable name: the device name (Modbus TCP), the serial port (Modbus RTU), or the
    /// synthetic source's name. Key of the epoch store; `adapter --source NAME`.
    pub name: String,
    /// The ring's source id: the record `source_id` of the source's first device. Unique.
    pub source_id: u32,
    /// What the adapter runs.
    pub kind: SourceKind,
    /// The tag table: one entry per record `source_id` this source emits, in link order.
    pub devices: Vec<DevicePlan>,
    /// Topic for records whose `(source_id, tag_id)` the table does not know (none should).
    pub unknown_topic: String,
}

/// What a source's adapter runs.
#[derive(Debug, Clone, PartialEq)]
pub enum SourceKind {
    /// A Modbus link with its devices and request plans.
    Modbus {
        /// The resolved link (what the poller walks).
        link: ModbusLink,
        /// The `[[devices]]` entries of the link, as written (the adapter child's job).
        config: Vec<DeviceConfig>,
    },
    /// A synthetic source, its `source_id` assigned.
    Synthetic(SyntheticConfig),
}

/// The records of one record `source_id`: a Modbus device, or a synthetic source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DevicePlan {
    /// Device name (the `{device}` of its topics).
    pub name: String,
    /// `TelemetryRecord::source_id` of its records.
    pub record_source_id: u32,
    /// Groups, in file order.
    pub groups: Vec<GroupPlan>,
    /// Tags indexed by `TelemetryRecord::tag_id`.
    pub tags: Vec<TagEntry>,
}

/// A poll group (or a synthetic source's one group) and its topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupPlan {
    /// Group name.
    pub name: String,
    /// Poll interval (`None` for a synthetic group: each tag has its own rate).
    pub interval: Option<Duration>,
    /// The topic its batches go to, rendered.
    pub topic: String,
}

/// One tag as the forwarder sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagEntry {
    /// Tag name (`name[i]` for an element of an array).
    pub name: String,
    /// Index of its group in [`DevicePlan::groups`].
    pub group: u32,
    /// Data type of its values.
    pub data_type: DataType,
}

/// What [`SourcePlan::lookup`] finds for a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TagRef<'a> {
    /// The device.
    pub device: &'a DevicePlan,
    /// The tag's group (its topic inside).
    pub group: &'a GroupPlan,
    /// The tag.
    pub tag: &'a TagEntry,
}

impl SourcePlan {
    /// The table entry of a record of this source: `(record.source_id, record.tag_id)`. A
    /// linear scan over the source's devices (one, except on a serial line) and an index.
    #[inline]
    pub fn lookup(&self, source_id: u32, tag_id: u32) -> Option<TagRef<'_>> {
        let device = self
            .devices
            .iter()
            .find(|d| d.record_source_id == source_id)?;
        let tag = device.tags.get(tag_id as usize)?;
        Some(TagRef {
            device,
            group: &device.groups[tag.group as usize],
            tag,
        })
    }

    /// Tags of all devices of the source.
    pub fn tag_count(&self) -> usize {
        self.devices.iter().map(|d| d.tags.len()).sum()
    }

    /// Kind of source, for people: `modbus-tcp 192.0.2.10:502`, `modbus-rtu /dev/ttyUSB0`,
    /// `synthetic`.
    pub fn kind_label(&self) -> String {
        match &self.kind {
            SourceKind::Modbus { link, .. } => match &link.transport {
                Transport::Tcp { address, .. } => format!("modbus-tcp {address}"),
                Transport::Rtu(s) => format!("modbus-rtu {}", s.port),
            },
            SourceKind::Synthetic(_) => "synthetic".to_owned(),
        }
    }

    /// The adapter child's job (sent to it as JSON on stdin).
    pub fn adapter_job(&self) -> AdapterJob {
        match &self.kind {
            SourceKind::Modbus { link, config } => AdapterJob::Modbus {
                devices: config.clone(),
                source_ids: link.devices.iter().map(|d| d.source_id).collect(),
            },
            SourceKind::Synthetic(config) => AdapterJob::Synthetic {
                group: self.devices[0].groups[0].name.clone(),
                config: config.clone(),
            },
        }
    }

    /// The forwarder's routing catalog of this source, from the tag table.
    pub fn catalog(&self) -> SourceCatalog {
        let mut b = CatalogBuilder::new(&self.name, self.unknown_topic.clone());
        for d in &self.devices {
            let groups: Vec<u32> = d
                .groups
                .iter()
                .map(|g| b.group(&d.name, &g.name, g.topic.clone()))
                .collect();
            for (tag_id, t) in d.tags.iter().enumerate() {
                b.tag(
                    d.record_source_id,
                    tag_id as u32,
                    groups[t.group as usize],
                    &t.name,
                );
            }
        }
        b.build()
    }
}

fn absolute(base: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_owned()
    } else {
        base.join(p)
    }
}

impl ResolvedConfig {
    /// Validates `raw` and resolves it. Relative paths are taken from `config_dir` (the
    /// directory of the configuration file), except `spool.path`, which is relative to the
    /// state directory. No I/O.
    pub fn from_raw(raw: &RawConfig, config_dir: &Path) -> Result<Self, Vec<ConfigProblem>> {
        let problems = raw.problems();
        if !problems.is_empty() {
            return Err(problems);
        }
        Self::build(raw, config_dir)
    }

    /// Resolves a configuration that [`RawConfig::problems`] found valid.
    pub(super) fn build(raw: &RawConfig, config_dir: &Path) -> Result<Self, Vec<ConfigProblem>> {
        let g = &raw.gateway;
        let state_dir = absolute(config_dir, &g.state_dir);
        let gateway = GatewaySettings {
            name: g.name.clone(),
            epoch_store_path: state_dir.join(EPOCH_STORE_FILE),
            shutdown_timeout: Duration::from_millis(g.shutdown_timeout_ms),
            ring_capacity: g.ring_capacity,
            cpu_wake_latency: g
                .cpu_wake_latency_us
                .map(|us| Duration::from_micros(u64::from(us))),
            state_dir,
        };

        let payload = resolve_payload(raw).map_err(|p| vec![p])?;
        let Some(raw_mqtt) = &raw.mqtt else {
            return Err(vec![ConfigProblem {
                path: "mqtt".into(),
                message: "missing broker".into(),
            }]);
        };
        let mut mqtt = raw_mqtt.clone();
        mqtt.port = Some(raw_mqtt.effective_port());
        mqtt.client_id.get_or_insert_with(|| g.name.clone());
        // The status topic belongs to the sink; its default follows the topic prefix.
        mqtt.status_topic
            .get_or_insert_with(|| format!("{}/status", payload.prefix));
        if let Some(f) = &mut mqtt.password_file {
            *f = absolute(config_dir, f);
        }
        if let Some(tls) = &mut mqtt.tls {
            for f in [&mut tls.ca_file, &mut tls.cert_file, &mut tls.key_file]
                .into_iter()
                .flatten()
            {
                *f = absolute(config_dir, f);
            }
        }

        let spool_path = raw.spool.path.as_deref().map_or_else(
            || gateway.state_dir.join(SPOOL_FILE),
            |p| absolute(&gateway.state_dir, p),
        );
        let spool = SpoolSettings {
            config: SpoolConfig {
                path: Some(spool_path.clone()),
                ..raw.spool.clone()
            },
            path: spool_path,
        };

        let sources = plan_sources(raw, &payload, &gateway.name)?;
        let metrics = match &raw.metrics {
            Some(m) if m.enabled => {
                let ip = m.address.parse().map_err(|_| {
                    vec![ConfigProblem {
                        path: "metrics.address".into(),
                        message: "not an IP address".into(),
                    }]
                })?;
                Some(std::net::SocketAddr::new(ip, m.port))
            }
            _ => None,
        };
        Ok(Self {
            gateway,
            mqtt,
            spool,
            payload,
            sources,
            metrics,
        })
    }

    /// The retained status topic: `mqtt.status_topic`, which stage two always fills in
    /// (default `<payload prefix>/status`).
    pub fn status_topic(&self) -> &str {
        self.mqtt.status_topic.as_deref().unwrap_or_default()
    }

    /// The source with this name.
    pub fn source(&self, name: &str) -> Option<&SourcePlan> {
        self.sources.iter().find(|s| s.name == name)
    }

    /// What `edge-gateway check` prints: the plan, for a plant engineer. Never shows the
    /// password (only the file it comes from).
    pub fn plan_report(&self) -> String {
        self.to_string()
    }
}

fn resolve_payload(raw: &RawConfig) -> Result<PayloadSettings, ConfigProblem> {
    let pl = &raw.payload;
    let template = |key: &str, text: &str, vars| {
        TopicTemplate::parse(text, vars).map_err(|message| ConfigProblem {
            path: format!("payload.{key}"),
            message,
        })
    };
    let gateway = raw.gateway.name.as_str();
    let prefix = template("prefix", &pl.prefix, PREFIX_VARS)?.render(&TopicVars {
        gateway,
        ..TopicVars::default()
    });
    Ok(PayloadSettings {
        format: pl.format,
        topic: template("topic", &pl.topic, TOPIC_VARS)?,
        prefix,
        max_batch: pl.max_batch,
        linger: Duration::from_millis(pl.linger_ms),
    })
}

fn plan_sources(
    raw: &RawConfig,
    payload: &PayloadSettings,
    gateway: &str,
) -> Result<Vec<SourcePlan>, Vec<ConfigProblem>> {
    let adapters: AdapterConfig = raw.adapter_config();
    let resolved = adapters.resolve().map_err(|e| e.problems)?;
    let topic = |device: &str, group: &str| {
        payload.topic.render(&TopicVars {
            prefix: &payload.prefix,
            gateway,
            device,
            group,
        })
    };
    let mut sources = Vec::new();
    for link in resolved.links {
        let devices = link
            .devices
            .iter()
            .map(|d| DevicePlan {
                name: d.name.clone(),
                record_source_id: d.source_id,
                groups: d
                    .groups
                    .iter()
                    .map(|g| GroupPlan {
                        name: g.name.clone(),
                        interval: Some(g.interval),
                        topic: topic(&d.name, &g.name),
                    })
                    .collect(),
                tags: d
                    .groups
                    .iter()
                    .enumerate()
                    .flat_map(|(gi, g)| {
                        d.tags[g.tags.clone()].iter().map(move |t| TagEntry {
                            name: t.name.clone(),
                            group: gi as u32,
                            data_type: t.data_type,
                        })
                    })
                    .collect(),
            })
            .collect::<Vec<_>>();
        // Device names are unique, and a link keeps its devices in file order.
        let config = raw
            .devices
            .iter()
            .filter(|d| link.devices.iter().any(|ld| ld.name == d.name))
            .cloned()
            .collect();
        sources.push(SourcePlan {
            name: link.name.clone(),
            source_id: link.devices[0].source_id,
            unknown_topic: topic(&link.devices[0].name, UNKNOWN_GROUP),
            devices,
            kind: SourceKind::Modbus { link, config },
        });
    }
    for (s, config) in raw.synthetic.iter().zip(resolved.synthetic) {
        let tags = s
            .tags
            .iter()
            .map(|t| TagEntry {
                name: t.name.clone(),
                group: 0,
                data_type: match t.signal {
                    SignalKind::Counter => DataType::U64,
                    SignalKind::Ramp | SignalKind::Sine | SignalKind::Random => DataType::F64,
                },
            })
            .collect();
        sources.push(SourcePlan {
            name: s.name.clone(),
            source_id: config.source_id,
            unknown_topic: topic(&s.name, UNKNOWN_GROUP),
            devices: vec![DevicePlan {
                name: s.name.clone(),
                record_source_id: config.source_id,
                groups: vec![GroupPlan {
                    name: s.group.clone(),
                    interval: None,
                    topic: topic(&s.name, &s.group),
                }],
                tags,
            }],
            kind: SourceKind::Synthetic(config),
        });
    }
    check_source_names(&sources)?;
    Ok(sources)
}

/// A serial line is named after its port, which could equal a device or synthetic name.
fn check_source_names(sources: &[SourcePlan]) -> Result<(), Vec<ConfigProblem>> {
    let mut seen: HashMap<&str, &SourcePlan> = HashMap::new();
    let mut problems = Vec::new();
    for s in sources {
        if let Some(first) = seen.insert(&s.name, s) {
            let (rtu, other) = if matches!(&s.kind, SourceKind::Modbus { link, .. } if matches!(link.transport, Transport::Rtu(_)))
            {
                (s, first)
            } else {
                (first, s)
            };
            let di = rtu.devices[0].record_source_id as usize;
            problems.push(ConfigProblem {
                path: format!("devices[{di}].serial.port"),
                message: format!(
                    "the serial line is named after its port, {:?}, which is also the name of source {} ({}); source names must be unique",
                    rtu.name,
                    other.name,
                    other.kind_label()
                ),
            });
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems)
    }
}

fn ms(d: Duration) -> u128 {
    d.as_millis()
}

impl fmt::Display for ResolvedConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let g = &self.gateway;
        writeln!(f, "gateway {}", g.name)?;
        writeln!(f, "  state directory   {}", g.state_dir.display())?;
        writeln!(f, "  epoch store       {}", g.epoch_store_path.display())?;
        writeln!(
            f,
            "  shutdown timeout  {} ms; ring {} records per source",
            ms(g.shutdown_timeout),
            g.ring_capacity
        )?;
        if let Some(l) = g.cpu_wake_latency {
            writeln!(
                f,
                "  CPU wake-up latency request {} µs (held while running)",
                l.as_micros()
            )?;
        }

        let m = &self.mqtt;
        writeln!(
            f,
            "broker {}:{}",
            m.host,
            m.port.unwrap_or_else(|| m.effective_port())
        )?;
        match &m.tls {
            None => writeln!(f, "  TLS               no")?,
            Some(tls) => {
                let ca = tls
                    .ca_file
                    .as_ref()
                    .map_or_else(|| "system roots".to_owned(), |p| p.display().to_string());
                let client = match &tls.cert_file {
                    Some(c) => format!("client certificate {}", c.display()),
                    None => "no client certificate".to_owned(),
                };
                writeln!(f, "  TLS               yes (CA: {ca}; {client})")?;
            }
        }
        match (&m.username, &m.password_file) {
            (None, _) => writeln!(f, "  user              none")?,
            (Some(u), None) => writeln!(f, "  user              {u} (no password)")?,
            (Some(u), Some(p)) => writeln!(
                f,
                "  user              {u} (password read from {})",
                p.display()
            )?,
        }
        writeln!(
            f,
            "  client id         {}; QoS {}; keepalive {} s; at most {} batches in flight",
            m.client_id.as_deref().unwrap_or(&g.name),
            m.qos,
            m.keepalive_s,
            m.inflight
        )?;
        writeln!(
            f,
            "  reconnect         backoff {} ms doubling to {} ms, with jitter",
            m.backoff_min_ms, m.backoff_max_ms
        )?;
        if let Some(topic) = &m.status_topic {
            writeln!(f, "  status topic      {topic} (retained online/offline)")?;
        }
        let p = &self.payload;
        writeln!(
            f,
            "payload {}: topic {} with prefix {}; batches of at most {} records or {} ms",
            match p.format {
                PayloadFormat::Json => "json",
            },
            p.topic,
            p.prefix,
            p.max_batch,
            ms(p.linger)
        )?;
        let s = &self.spool;
        writeln!(
            f,
            "spool {}: at most {:.1} MiB ({} bytes), durability {}, when full {}",
            s.path.display(),
            s.config.max_bytes as f64 / (1024.0 * 1024.0),
            s.config.max_bytes,
            match s.config.durability {
                Durability::Normal => "normal (survives crashes)",
                Durability::Full => "full (survives power loss)",
            },
            match s.config.when_full {
                WhenFull::DropOldest => "drop-oldest",
                WhenFull::DropNewest => "drop-newest",
            }
        )?;

        match self.metrics {
            Some(addr) => writeln!(f, "metrics on http://{addr} (/metrics, /healthz, /readyz)")?,
            None => writeln!(f, "metrics endpoint off (no [metrics] table)")?,
        }
        let tags: usize = self.sources.iter().map(SourcePlan::tag_count).sum();
        writeln!(
            f,
            "{} sources (one adapter process each), {tags} tags",
            self.sources.len()
        )?;
        for source in &self.sources {
            write!(f, "{source}")?;
        }
        Ok(())
    }
}

impl fmt::Display for SourcePlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "source {} (ring id {}, {} tags)",
            self.name,
            self.source_id,
            self.tag_count()
        )?;
        match &self.kind {
            SourceKind::Modbus { link, .. } => {
                // The adapters' own plan: the link, its devices, groups and every read.
                let mut plan = String::new();
                write!(plan, "{link}")?;
                for line in plan.lines() {
                    writeln!(f, "  {line}")?;
                }
            }
            SourceKind::Synthetic(config) => {
                let rate: f64 = config.tags.iter().map(|t| t.rate_hz).sum();
                writeln!(
                    f,
                    "  synthetic, record source {}: {rate} records/s in total",
                    config.source_id
                )?;
                const SHOWN: usize = 8;
                for t in config.tags.iter().take(SHOWN) {
                    let signal = match t.signal {
                        SignalKind::Counter => "counter",
                        SignalKind::Ramp => "ramp",
                        SignalKind::Sine => "sine",
                        SignalKind::Random => "random",
                    };
                    writeln!(f, "    {} {signal} at {} Hz", t.name, t.rate_hz)?;
                }
                if config.tags.len() > SHOWN {
                    writeln!(f, "    … and {} more", config.tags.len() - SHOWN)?;
                }
            }
        }
        writeln!(f, "  topics:")?;
        for d in &self.devices {
            for (gi, g) in d.groups.iter().enumerate() {
                let n = d.tags.iter().filter(|t| t.group as usize == gi).count();
                let every = g
                    .interval
                    .map_or_else(String::new, |i| format!(", every {} ms", ms(i)));
                writeln!(
                    f,
                    "    {} ← {}/{} ({n} tags{every})",
                    g.topic, d.name, g.name
                )?;
            }
        }
        Ok(())
    }
}
