//! The gateway's configuration file (TOML): read, validated, resolved into what runs.
//!
//! # Main types and how a file becomes a plan
//! ```text
//! gateway.toml ─▶ locate::Document (span-preserving parse: every key's line and column)
//!                      │ each section deserialized on its own (deny_unknown_fields)
//!                      ▼
//!                 RawConfig  ──problems()──▶ [ConfigProblem { key path, message }]
//!                      │ (valid)                        │ key path → line:column
//!                      ▼                                 ▼
//!                 ResolvedConfig                    ConfigError: "gateway.toml:14:1:
//!                   gateway, mqtt, spool, payload, metrics,    devices[0].groups[1].interval_ms:
//!                   sources: [SourcePlan]             must be > 0" (one line per problem)
//! ```
//! - [`raw`]: stage one, the file as written; sections embed the components' own structs
//!   (`[[devices]]`: the PLC adapters' `DeviceConfig`; `[mqtt]`: the MQTT sink's
//!   `MqttConfig`; `[spool]`: the spool's `SpoolConfig`).
//!   Validation is pure and collects every problem.
//! - [`resolved`]: stage two, defaults filled in, paths absolute, topics rendered, and one
//!   [`SourcePlan`] per adapter process with the tag table that maps a record's
//!   `(source_id, tag_id)` to its device, group, topic and tag name.
//! - [`ConfigError`]: what the CLI prints; it exits with [`EX_CONFIG`] (78) on any of them.
//!
//! - [`diff`]: what a reload changes (sources added, changed, removed; the sink; keys only a
//!   restart can apply). [`watch`]: inotify on the file's directory, debounced.
//!
//! Entry points: [`load`] (a file) and [`parse`] (a text and the name to report it under).

pub mod diff;
mod error;
mod locate;
pub mod raw;
pub mod resolved;
mod topic;
pub mod watch;

use std::path::Path;

pub use error::{ConfigDiagnostic, ConfigError, EX_CONFIG};
pub use raw::{
    GatewayConfig, MetricsConfig, PayloadConfig, PayloadFormat, RawConfig,
    SYNTHETIC_SOURCE_ID_BASE, SyntheticSourceConfig,
};
pub use resolved::{
    DevicePlan, GatewaySettings, GroupPlan, PayloadSettings, ResolvedConfig, SourceKind,
    SourcePlan, SpoolSettings, TagEntry, TagRef,
};
pub use topic::{Placeholder, TopicTemplate, TopicVars};

use locate::Document;
use raw::Sections;

/// Default configuration file of `run` and `check`.
pub const DEFAULT_PATH: &str = "/etc/edge-gateway/gateway.toml";

/// Reads, validates and resolves the configuration file at `path`. Relative paths inside it
/// are taken from the file's directory (`spool.path` from the state directory).
pub fn load(path: &Path) -> Result<ResolvedConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Unreadable {
        path: path.to_owned(),
        source,
    })?;
    parse(&text, &path.to_string_lossy())
}

/// Validates and resolves a configuration text. `file_name` prefixes every error line, and
/// its directory is the base of relative paths. No I/O.
pub fn parse(text: &str, file_name: &str) -> Result<ResolvedConfig, ConfigError> {
    let doc = Document::parse(text).map_err(|d| ConfigError::invalid(file_name, d))?;
    let (sections, mut diagnostics) = Sections::read(&doc);
    let locate = |problems: Vec<edgegw_plc::ConfigProblem>| {
        problems
            .into_iter()
            .map(|p| doc.diagnostic_for_path(&p.path, &p.message))
            .collect::<Vec<_>>()
    };
    diagnostics.extend(locate(sections.problems()));
    let raw = match sections.into_raw() {
        Some(raw) if diagnostics.is_empty() => raw,
        _ => return Err(ConfigError::invalid(file_name, diagnostics)),
    };
    let dir = Path::new(file_name).parent().unwrap_or(Path::new(""));
    ResolvedConfig::build(&raw, dir).map_err(|p| ConfigError::invalid(file_name, locate(p)))
}

/// Parses a configuration text into its raw form, checking only its shape (syntax, types,
/// required and unknown keys), not its values. For tools and tests; the gateway uses [`load`].
pub fn parse_raw(text: &str, file_name: &str) -> Result<RawConfig, ConfigError> {
    let doc = Document::parse(text).map_err(|d| ConfigError::invalid(file_name, d))?;
    let (sections, diagnostics) = Sections::read(&doc);
    match sections.into_raw() {
        Some(raw) if diagnostics.is_empty() => Ok(raw),
        _ => Err(ConfigError::invalid(file_name, diagnostics)),
    }
}
