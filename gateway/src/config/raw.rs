//! Stage one: the configuration file as written, and its validation.
//!
//! Every struct refuses unknown keys. Components own their sections: `[[devices]]` is the PLC
//! adapters' [`DeviceConfig`], `[spool]` the spool's [`SpoolConfig`], `[mqtt]` the MQTT sink's
//! [`MqttConfig`]; this module adds `[gateway]`, `[payload]` and `[[synthetic]]` and the checks
//! that span sections (names unique across devices and synthetic sources, names usable in
//! topics, addresses well formed).
//!
//! Validation is pure (no file, socket or name lookup) and collects every problem, each named
//! by its key path; `mod.rs` turns the paths into `file:line:column`.
//!
//! Sections are deserialized one by one (and `[[devices]]` / `[[synthetic]]` entry by entry),
//! so a type error in one device does not hide a typo in another: serde stops at the first
//! error of each entry, not of the file.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use edgegw_plc::ConfigProblem;
use edgegw_plc::config::{AdapterConfig, DeviceConfig, Protocol};
use edgegw_plc::sim::{SyntheticConfig, SyntheticTagConfig};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use toml::Spanned;
use toml::de::{DeValue, ValueDeserializer};

use super::error::ConfigDiagnostic;
use super::locate::Document;
use super::topic::{Placeholder, TopicTemplate, topic_level_problem};
use crate::sinks::mqtt::MqttConfig;
use crate::spool::SpoolConfig;

/// The whole file.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// `[gateway]`: identity and local state.
    pub gateway: GatewayConfig,
    /// `[mqtt]`: the broker. Optional only so that its absence is reported as a validation
    /// problem ("missing broker") alongside all others.
    pub mqtt: Option<MqttConfig>,
    /// `[spool]`: where batches wait while the broker is away.
    #[serde(default)]
    pub spool: SpoolConfig,
    /// `[payload]`: topics and batching.
    #[serde(default)]
    pub payload: PayloadConfig,
    /// `[[devices]]`: PLCs to poll.
    #[serde(default)]
    pub devices: Vec<DeviceConfig>,
    /// `[[synthetic]]`: synthetic sources.
    #[serde(default)]
    pub synthetic: Vec<SyntheticSourceConfig>,
    /// `[metrics]`: the Prometheus endpoint; absent: no endpoint.
    #[serde(default)]
    pub metrics: Option<MetricsConfig>,
}

/// `[gateway]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayConfig {
    /// Name of this gateway: the default MQTT client id, and part of every topic by default.
    pub name: String,
    /// Directory for the epoch store and, by default, the spool.
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
    /// Bound on a clean stop (drain, spool, disconnect) after SIGTERM, in ms.
    #[serde(default = "default_shutdown_timeout_ms")]
    pub shutdown_timeout_ms: u64,
    /// Records each source's ring holds (a power of two).
    #[serde(default = "default_ring_capacity")]
    pub ring_capacity: usize,
    /// While running, hold a request that no CPU takes longer than this to wake from idle
    /// (Linux PM QoS, `/dev/cpu_dma_latency`), so a parked forwarder is woken sooner; absent:
    /// no request. 0 keeps idle CPUs polling: the fastest wake-ups and the most power.
    #[serde(default)]
    pub cpu_wake_latency_us: Option<u32>,
}

/// Default `gateway.state_dir`.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/edge-gateway";

fn default_state_dir() -> PathBuf {
    PathBuf::from(DEFAULT_STATE_DIR)
}

/// Default `gateway.shutdown_timeout_ms`: 10 s.
pub const fn default_shutdown_timeout_ms() -> u64 {
    10_000
}

/// Default `gateway.ring_capacity`: 16,384 records (768 KiB of 48-byte records). The ring only
/// has to cover the drain task's pauses: the drain → dispatch channel behind it holds 256
/// batches. At 1M points/s over two sources this default saw no ring drop in the end-to-end
/// benchmark, and it keeps the gateway's memory at 100k points/s within 32 MB (each ring is
/// mapped by the gateway and by its adapter).
pub const fn default_ring_capacity() -> usize {
    16_384
}

/// Largest `gateway.cpu_wake_latency_us`: 1 s (a larger limit is no limit in practice; a value
/// this large is more likely nanoseconds typed as µs).
pub const MAX_CPU_WAKE_LATENCY_US: u32 = 1_000_000;

/// Smallest and largest `gateway.ring_capacity`.
pub const RING_CAPACITY_RANGE: (usize, usize) = (1024, 1 << 24);

/// Payload encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum PayloadFormat {
    /// One JSON document per batch (see the README, "Payload").
    #[default]
    Json,
}

/// `[payload]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PayloadConfig {
    /// Encoding of batches.
    #[serde(default)]
    pub format: PayloadFormat,
    /// `{prefix}` of the topic templates; may use `{gateway}`.
    #[serde(default = "default_prefix")]
    pub prefix: String,
    /// Topic of a `(device, group)` batch; `{prefix}`, `{gateway}`, `{device}`, `{group}`.
    #[serde(default = "default_topic")]
    pub topic: String,
    /// A batch is sent when it holds this many records …
    #[serde(default = "default_max_batch")]
    pub max_batch: usize,
    /// … or has been open this long (ms), whichever comes first.
    #[serde(default = "default_linger_ms")]
    pub linger_ms: u64,
}

/// Default `payload.prefix`.
pub const DEFAULT_PREFIX: &str = "edge-gateway/{gateway}";
/// Default `payload.topic`.
pub const DEFAULT_TOPIC: &str = "{prefix}/{device}/{group}";

fn default_prefix() -> String {
    DEFAULT_PREFIX.to_owned()
}
fn default_topic() -> String {
    DEFAULT_TOPIC.to_owned()
}

/// Default `payload.max_batch`: 500 records.
pub const fn default_max_batch() -> usize {
    500
}

/// Default `payload.linger_ms`: 50 ms.
pub const fn default_linger_ms() -> u64 {
    50
}

impl Default for PayloadConfig {
    fn default() -> Self {
        Self {
            format: PayloadFormat::default(),
            prefix: default_prefix(),
            topic: default_topic(),
            max_batch: default_max_batch(),
            linger_ms: default_linger_ms(),
        }
    }
}

/// `[metrics]`: the Prometheus text endpoint (`/metrics`, `/healthz`, `/readyz`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// Serve the endpoint (a `[metrics]` table turns it on unless this says `false`).
    #[serde(default = "default_metrics_enabled")]
    pub enabled: bool,
    /// IP address to listen on. The endpoint has no authentication: keep it on loopback
    /// unless a firewall or proxy guards it.
    #[serde(default = "default_metrics_address")]
    pub address: String,
    /// TCP port; 0 picks a free port (the bound address is logged).
    #[serde(default = "default_metrics_port")]
    pub port: u16,
}

/// Default `metrics.enabled`: on.
pub const fn default_metrics_enabled() -> bool {
    true
}

/// Default `metrics.address`: loopback only.
pub const DEFAULT_METRICS_ADDRESS: &str = "127.0.0.1";

fn default_metrics_address() -> String {
    DEFAULT_METRICS_ADDRESS.to_owned()
}

/// Default `metrics.port`: 9464 (the port OpenTelemetry's Prometheus exporter uses).
pub const fn default_metrics_port() -> u16 {
    9464
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            enabled: default_metrics_enabled(),
            address: default_metrics_address(),
            port: default_metrics_port(),
        }
    }
}

/// Placeholders allowed in `payload.prefix`.
pub(super) const PREFIX_VARS: &[Placeholder] = &[Placeholder::Gateway];
/// Placeholders allowed in `payload.topic`.
pub(super) const TOPIC_VARS: &[Placeholder] = &[
    Placeholder::Prefix,
    Placeholder::Gateway,
    Placeholder::Device,
    Placeholder::Group,
];

/// One `[[synthetic]]` source: generated tags, published as one group of one "device" named
/// after the source. The gateway assigns its record `source_id`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyntheticSourceConfig {
    /// Source name (unique among devices and synthetic sources); the `{device}` of its topic.
    pub name: String,
    /// The `{group}` of its topic.
    pub group: String,
    /// Tags (the PLC adapters' synthetic tag configuration).
    pub tags: Vec<SyntheticTagConfig>,
}

/// `source_id` of the first synthetic source; the n-th has `SYNTHETIC_SOURCE_ID_BASE + n`.
/// Devices use their index in `[[devices]]` (the PLC adapters' rule), so the two never meet,
/// and adding a device does not renumber the synthetic sources.
pub const SYNTHETIC_SOURCE_ID_BASE: u32 = 1_000_000;

impl RawConfig {
    /// Every problem in the configuration, by key path; empty if it is valid. No I/O.
    pub fn problems(&self) -> Vec<ConfigProblem> {
        validate(&View {
            gateway: Some(&self.gateway),
            mqtt: Some(self.mqtt.as_ref()),
            spool: Some(&self.spool),
            payload: Some(&self.payload),
            devices: Some(&self.devices),
            synthetic: Some(&self.synthetic),
            metrics: Some(self.metrics.as_ref()),
        })
    }

    /// The PLC adapters' configuration: the devices as written, and the synthetic sources with
    /// the record `source_id`s the gateway assigns them.
    pub fn adapter_config(&self) -> AdapterConfig {
        adapter_config(&self.devices, &self.synthetic)
    }
}

fn adapter_config(devices: &[DeviceConfig], synthetic: &[SyntheticSourceConfig]) -> AdapterConfig {
    AdapterConfig {
        devices: devices.to_vec(),
        synthetic: synthetic
            .iter()
            .zip(SYNTHETIC_SOURCE_ID_BASE..)
            .map(|(s, source_id)| SyntheticConfig {
                source_id,
                tags: s.tags.clone(),
            })
            .collect(),
    }
}

/// The sections that could be read; `None` where a section failed to deserialize (its
/// validation is then skipped, the deserialization error already names it).
#[derive(Debug, Default)]
pub(super) struct Sections {
    pub(super) gateway: Option<GatewayConfig>,
    /// `Some(None)`: no `[mqtt]` table.
    pub(super) mqtt: Option<Option<MqttConfig>>,
    pub(super) spool: Option<SpoolConfig>,
    pub(super) payload: Option<PayloadConfig>,
    pub(super) devices: Option<Vec<DeviceConfig>>,
    pub(super) synthetic: Option<Vec<SyntheticSourceConfig>>,
    /// `Some(None)`: no `[metrics]` table.
    pub(super) metrics: Option<Option<MetricsConfig>>,
}

const TOP_LEVEL: &[&str] = &[
    "gateway",
    "mqtt",
    "spool",
    "payload",
    "devices",
    "synthetic",
    "metrics",
];

impl Sections {
    /// Deserializes each section of `doc` on its own; returns what could be read and one
    /// located diagnostic per section or list entry that could not.
    pub(super) fn read(doc: &Document<'_>) -> (Self, Vec<ConfigDiagnostic>) {
        let mut errors = Vec::new();
        let mut s = Sections {
            mqtt: Some(None),
            spool: Some(SpoolConfig::default()),
            payload: Some(PayloadConfig::default()),
            devices: Some(Vec::new()),
            synthetic: Some(Vec::new()),
            metrics: Some(None),
            ..Sections::default()
        };
        let mut has_gateway = false;
        for (key, value) in doc.root().iter() {
            let name = key.get_ref().as_ref();
            match name {
                "gateway" => {
                    has_gateway = true;
                    s.gateway = section(doc, value, name, &mut errors);
                }
                "mqtt" => s.mqtt = section(doc, value, name, &mut errors).map(Some),
                "spool" => s.spool = section(doc, value, name, &mut errors),
                "payload" => s.payload = section(doc, value, name, &mut errors),
                "devices" => s.devices = list(doc, value, name, &mut errors),
                "synthetic" => s.synthetic = list(doc, value, name, &mut errors),
                "metrics" => s.metrics = section(doc, value, name, &mut errors).map(Some),
                _ => errors.push(doc.diagnostic_at(
                    key.span().start,
                    name,
                    format!("unknown key, expected one of {}", TOP_LEVEL.join(", ")),
                )),
            }
        }
        if !has_gateway {
            errors.push(doc.diagnostic_for_path(
                "gateway",
                "missing required table [gateway] (at least: name = \"...\")",
            ));
        }
        (s, errors)
    }

    /// Problems of the sections that could be read.
    pub(super) fn problems(&self) -> Vec<ConfigProblem> {
        validate(&View {
            gateway: self.gateway.as_ref(),
            mqtt: self.mqtt.as_ref().map(Option::as_ref),
            spool: self.spool.as_ref(),
            payload: self.payload.as_ref(),
            devices: self.devices.as_deref(),
            synthetic: self.synthetic.as_deref(),
            metrics: self.metrics.as_ref().map(Option::as_ref),
        })
    }

    /// The whole configuration, if every section could be read.
    pub(super) fn into_raw(self) -> Option<RawConfig> {
        Some(RawConfig {
            gateway: self.gateway?,
            mqtt: self.mqtt?,
            spool: self.spool?,
            payload: self.payload?,
            devices: self.devices?,
            synthetic: self.synthetic?,
            metrics: self.metrics?,
        })
    }
}

/// Deserializes one section; on error records a located diagnostic.
fn section<T: DeserializeOwned>(
    doc: &Document<'_>,
    value: &Spanned<DeValue<'_>>,
    path: &str,
    errors: &mut Vec<ConfigDiagnostic>,
) -> Option<T> {
    match T::deserialize(ValueDeserializer::from(value.clone())) {
        Ok(v) => Some(v),
        Err(e) => {
            errors.push(de_diagnostic(doc, &e, path, value.span()));
            None
        }
    }
}

/// Deserializes an array of tables entry by entry, so that each bad entry is reported.
fn list<T: DeserializeOwned>(
    doc: &Document<'_>,
    value: &Spanned<DeValue<'_>>,
    path: &str,
    errors: &mut Vec<ConfigDiagnostic>,
) -> Option<Vec<T>> {
    let DeValue::Array(entries) = value.get_ref() else {
        return section(doc, value, path, errors);
    };
    let before = errors.len();
    let out: Vec<T> = entries
        .iter()
        .enumerate()
        .filter_map(|(i, e)| section(doc, e, &format!("{path}[{i}]"), errors))
        .collect();
    (errors.len() == before).then_some(out)
}

/// A toml/serde error as `line:col: key.path: message`. Unknown keys point at the key, bad
/// values at the value, missing keys at the table that lacks them.
fn de_diagnostic(
    doc: &Document<'_>,
    e: &toml::de::Error,
    section: &str,
    fallback: std::ops::Range<usize>,
) -> ConfigDiagnostic {
    let span = e.span().unwrap_or(fallback);
    let mut path = doc.path_at(&span).unwrap_or(section).to_owned();
    let msg = e.message();
    let message = if let Some(field) = backticked(msg, "missing field `") {
        path = format!("{path}.{field}");
        "missing required key".to_owned()
    } else if let Some(rest) = msg
        .strip_prefix("unknown field `")
        .and_then(|r| r.split_once("`, "))
        .map(|(_, rest)| rest)
    {
        format!("unknown key, {rest}")
    } else {
        msg.to_owned()
    };
    doc.diagnostic_at(span.start, path, message)
}

/// `X` from `prefix` + "X`…".
fn backticked<'a>(msg: &'a str, prefix: &str) -> Option<&'a str> {
    msg.strip_prefix(prefix)?.split_once('`').map(|(f, _)| f)
}

/// References to the sections to validate; `None` = unreadable, skip.
struct View<'a> {
    gateway: Option<&'a GatewayConfig>,
    mqtt: Option<Option<&'a MqttConfig>>,
    spool: Option<&'a SpoolConfig>,
    payload: Option<&'a PayloadConfig>,
    devices: Option<&'a [DeviceConfig]>,
    synthetic: Option<&'a [SyntheticSourceConfig]>,
    /// `Some(None)`: no `[metrics]` table.
    metrics: Option<Option<&'a MetricsConfig>>,
}

struct Problems(Vec<ConfigProblem>);

impl Problems {
    fn add(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(ConfigProblem {
            path: path.into(),
            message: message.into(),
        });
    }
}

fn validate(v: &View<'_>) -> Vec<ConfigProblem> {
    let mut p = Problems(Vec::new());
    if let Some(g) = v.gateway {
        validate_gateway(&mut p, g);
    }
    match v.mqtt {
        Some(None) => p.add(
            "mqtt",
            "missing broker: add an [mqtt] table with the broker's host (and port)",
        ),
        Some(Some(m)) => {
            for (path, message) in m.problems("mqtt") {
                p.add(path, message);
            }
        }
        None => {}
    }
    if let Some(s) = v.spool {
        for (path, message) in s.problems("spool") {
            p.add(path, message);
        }
    }
    if let Some(pl) = v.payload {
        validate_payload(&mut p, pl);
    }
    if let Some(Some(m)) = v.metrics {
        validate_metrics(&mut p, m);
    }
    // The PLC adapters validate devices and synthetic tags (intervals, addresses, types, …).
    let devices = v.devices.unwrap_or_default();
    let synthetic = v.synthetic.unwrap_or_default();
    if let Err(e) = adapter_config(devices, synthetic).resolve() {
        p.0.extend(e.problems);
    }
    if let Some(devices) = v.devices {
        validate_devices(&mut p, devices);
    }
    if let Some(synthetic) = v.synthetic {
        validate_synthetic(&mut p, synthetic, v.devices.unwrap_or_default());
    }
    if v.devices.is_some_and(<[_]>::is_empty) && v.synthetic.is_some_and(<[_]>::is_empty) {
        p.add(
            "devices",
            "no sources: add at least one [[devices]] or [[synthetic]] entry",
        );
    }
    p.0
}

fn validate_gateway(p: &mut Problems, g: &GatewayConfig) {
    if let Some(why) = topic_level_problem(&g.name) {
        p.add("gateway.name", why);
    }
    if g.state_dir.as_os_str().is_empty() {
        p.add("gateway.state_dir", "must not be empty");
    }
    if g.shutdown_timeout_ms == 0 {
        p.add("gateway.shutdown_timeout_ms", "must be > 0");
    }
    let (lo, hi) = RING_CAPACITY_RANGE;
    if !g.ring_capacity.is_power_of_two() || !(lo..=hi).contains(&g.ring_capacity) {
        p.add(
            "gateway.ring_capacity",
            format!("must be a power of two in {lo}..={hi}"),
        );
    }
    if g.cpu_wake_latency_us
        .is_some_and(|us| us > MAX_CPU_WAKE_LATENCY_US)
    {
        p.add(
            "gateway.cpu_wake_latency_us",
            format!("must be at most {MAX_CPU_WAKE_LATENCY_US} (µs, i.e. 1 s)"),
        );
    }
}

fn validate_metrics(p: &mut Problems, m: &MetricsConfig) {
    if m.address.parse::<IpAddr>().is_err() {
        p.add(
            "metrics.address",
            format!(
                "{:?} is not an IP address (e.g. \"127.0.0.1\", \"::1\", or \"0.0.0.0\" for every interface)",
                m.address
            ),
        );
    }
}

fn validate_payload(p: &mut Problems, pl: &PayloadConfig) {
    for (key, text, vars) in [
        ("prefix", &pl.prefix, PREFIX_VARS),
        ("topic", &pl.topic, TOPIC_VARS),
    ] {
        if let Err(why) = TopicTemplate::parse(text, vars) {
            p.add(format!("payload.{key}"), why);
        }
    }
    if pl.max_batch == 0 {
        p.add("payload.max_batch", "must be > 0");
    }
    if pl.linger_ms == 0 {
        p.add("payload.linger_ms", "must be > 0");
    }
}

fn validate_devices(p: &mut Problems, devices: &[DeviceConfig]) {
    let reported: std::collections::HashSet<String> = p.0.iter().map(|q| q.path.clone()).collect();
    let mut add = |path: String, message: String| {
        // The adapters' own check may already have named this key (empty name, no port).
        if !reported.contains(&path) {
            p.add(path, message);
        }
    };
    for (di, d) in devices.iter().enumerate() {
        if let Some(why) = topic_level_problem(&d.name) {
            add(format!("devices[{di}].name"), why);
        }
        if let (Protocol::ModbusTcp, Some(address)) = (d.protocol, &d.address)
            && let Some(why) = host_port_problem(address)
        {
            add(
                format!("devices[{di}].address"),
                format!("must be host:port, got {address:?}: {why}"),
            );
        }
        for (gi, g) in d.groups.iter().enumerate() {
            if let Some(why) = topic_level_problem(&g.name) {
                add(format!("devices[{di}].groups[{gi}].name"), why);
            }
        }
    }
}

fn validate_synthetic(
    p: &mut Problems,
    synthetic: &[SyntheticSourceConfig],
    devices: &[DeviceConfig],
) {
    let mut names: HashMap<&str, String> = devices
        .iter()
        .enumerate()
        .map(|(i, d)| (d.name.as_str(), format!("devices[{i}]")))
        .collect();
    for (si, s) in synthetic.iter().enumerate() {
        let path = format!("synthetic[{si}]");
        if let Some(why) = topic_level_problem(&s.name) {
            p.add(format!("{path}.name"), why);
        } else if let Some(first) = names.insert(&s.name, path.clone()) {
            p.add(
                format!("{path}.name"),
                format!("duplicate source name {:?} (also {first})", s.name),
            );
        }
        if let Some(why) = topic_level_problem(&s.group) {
            p.add(format!("{path}.group"), why);
        }
        if s.tags.is_empty() {
            p.add(
                format!("{path}.tags"),
                "a synthetic source needs at least one tag",
            );
        }
        let mut tag_names: HashMap<&str, usize> = HashMap::new();
        for (ti, t) in s.tags.iter().enumerate() {
            if t.name.trim().is_empty() {
                p.add(format!("{path}.tags[{ti}].name"), "must not be empty");
            } else if let Some(first) = tag_names.insert(&t.name, ti) {
                p.add(
                    format!("{path}.tags[{ti}].name"),
                    format!("duplicate tag name {:?} (also tags[{first}])", t.name),
                );
            }
        }
    }
}

/// Why `host` is not a syntactically valid host name or IP address, if it is not. No lookup:
/// names are resolved when connecting.
fn host_problem(host: &str) -> Option<String> {
    if host.is_empty() {
        return Some("must not be empty".into());
    }
    if host.parse::<IpAddr>().is_ok() {
        return None;
    }
    if host.contains(':') {
        return Some(format!("{host:?} is neither an IP address nor a host name"));
    }
    let name = host.strip_suffix('.').unwrap_or(host);
    let label_ok = |l: &str| {
        (1..=63).contains(&l.len())
            && l.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if name.len() > 253 || !name.split('.').all(label_ok) {
        return Some(format!(
            "{host:?} is not a valid host name (letters, digits, '-' and '_' in dot-separated labels)"
        ));
    }
    None
}

/// Why `s` is not `host:port`, if it is not: IPv6 in brackets (`[fd00::1]:502`), port 1..=65535.
pub(super) fn host_port_problem(s: &str) -> Option<String> {
    if let Ok(a) = s.parse::<SocketAddr>() {
        return (a.port() == 0).then(|| "port must be 1..=65535".into());
    }
    let Some((host, port)) = s.rsplit_once(':') else {
        return Some("no port".into());
    };
    if host.contains(':') && !host.starts_with('[') {
        return Some("an IPv6 address needs brackets, e.g. [fd00::1]:502".into());
    }
    match port.parse::<u16>() {
        Ok(0) | Err(_) => Some("port must be 1..=65535".into()),
        Ok(_) => host_problem(host),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_port_syntax_without_lookup() {
        for ok in [
            "127.0.0.1:502",
            "[::1]:502",
            "plc-1.plant.local:502",
            "plc_1:1",
        ] {
            assert_eq!(host_port_problem(ok), None, "{ok}");
        }
        for bad in [
            "plc",
            "plc:0",
            "plc:70000",
            "::1:502",
            "pl c:502",
            "-plc:502",
            ":502",
            "a..b:502",
        ] {
            assert!(host_port_problem(bad).is_some(), "{bad}");
        }
    }

    #[test]
    fn hosts_may_be_names_or_addresses() {
        for ok in ["broker", "10.0.0.1", "::1", "mqtt.example.com."] {
            assert_eq!(host_problem(ok), None, "{ok}");
        }
        for bad in ["", "a b", "x/y", "[::1]"] {
            assert!(host_problem(bad).is_some(), "{bad}");
        }
    }
}
