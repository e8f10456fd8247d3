//! Adapter configuration, stage one: the raw form as written in TOML, and its validation.
//!
//! The raw structs mirror the gateway's configuration file (they are meant to be embedded in
//! it) and refuse unknown keys. [`AdapterConfig::resolve`] validates everything at once, with
//! no I/O (no name resolution, no port opening), and either returns every problem, each named
//! by its key path (`devices[0].groups[1].interval_ms: must be > 0`), or the resolved form
//! ([`crate::modbus::ModbusLink`]s) that builds the running parts.
//!
//! ```toml
//! [[devices]]
//! name = "press-1"
//! protocol = "modbus-tcp"          # or "modbus-rtu"
//! address = "192.0.2.10:502"       # modbus-tcp: host:port
//! unit_id = 1
//! timeout_ms = 1000                # per request
//!
//! [[devices.groups]]
//! name = "fast"
//! interval_ms = 100
//!
//! [[devices.groups.tags]]
//! name = "oil_temp"
//! table = "holding-register"       # coil | discrete-input | holding-register | input-register
//! address = 100                    # zero-based protocol address
//! type = "f32"                     # bool i16 u16 i32 u32 i64 u64 f32 f64 string
//! order = "CDAB"                   # ABCD (default) | BADC | CDAB | DCBA
//! scale = 0.1
//! deadband = 0.5                   # or deadband_percent = 1.0
//! max_interval_ms = 60000          # heartbeat
//! ```
//!
//! `count = n` on a tag makes an array: `n` tags named `name[0]` … at consecutive addresses,
//! as long configurations of identical points are usually written.
//!
//! A `modbus-rtu` device has a `[devices.serial]` table instead of `address`; devices that name
//! the same serial `port` share one line and must agree on its settings.

use std::fmt;

use serde::Deserialize;

use crate::tag::{ByteOrder, Table};

/// The `[[devices]]` of a configuration file.
#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize, Default)]
#[serde(deny_unknown_fields)]
pub struct AdapterConfig {
    /// Devices to poll.
    #[serde(default)]
    pub devices: Vec<DeviceConfig>,
    /// Synthetic sources (demo, load tests).
    #[serde(default)]
    pub synthetic: Vec<crate::sim::SyntheticConfig>,
}

/// Wire protocol of a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
pub enum Protocol {
    /// Modbus TCP (MBAP framing).
    #[serde(rename = "modbus-tcp")]
    ModbusTcp,
    /// Modbus RTU over a serial line.
    #[serde(rename = "modbus-rtu")]
    ModbusRtu,
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::ModbusTcp => "modbus-tcp",
            Self::ModbusRtu => "modbus-rtu",
        })
    }
}

/// One `[[devices]]` entry.
#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceConfig {
    /// Unique device name.
    pub name: String,
    /// Wire protocol.
    pub protocol: Protocol,
    /// `host:port` (modbus-tcp only).
    pub address: Option<String>,
    /// Serial line settings (modbus-rtu only).
    pub serial: Option<SerialConfig>,
    /// Modbus unit (slave) id; default 1. RTU: 1..=247.
    pub unit_id: Option<u8>,
    /// Per-request timeout in ms; default 1000.
    pub timeout_ms: Option<u64>,
    /// TCP connect timeout in ms; default 3000.
    pub connect_timeout_ms: Option<u64>,
    /// First reconnect delay in ms; default 100. Doubles per failure, with jitter.
    pub backoff_min_ms: Option<u64>,
    /// Largest reconnect delay in ms; default 30000.
    pub backoff_max_ms: Option<u64>,
    /// Largest run of unused registers (or bits) a merged read may span; default 16.
    pub max_gap: Option<u16>,
    /// Most registers per read; default and maximum 125 (some devices accept fewer).
    pub max_registers: Option<u16>,
    /// Most bits per read; default and maximum 2000.
    pub max_bits: Option<u16>,
    /// Poll groups.
    #[serde(default)]
    pub groups: Vec<GroupConfig>,
}

/// Parity of a serial line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, serde::Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Parity {
    /// No parity bit (Modbus then requires 2 stop bits, though many devices use 1).
    #[default]
    None,
    /// Even parity (the Modbus RTU default).
    Even,
    /// Odd parity.
    Odd,
}

/// `[devices.serial]`: a serial line for Modbus RTU.
#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct SerialConfig {
    /// Device path, e.g. `/dev/ttyUSB0`.
    pub port: String,
    /// Baud rate; default 19200.
    pub baud: Option<u32>,
    /// Parity; default none.
    pub parity: Option<Parity>,
    /// Data bits, 7 or 8; default 8.
    pub data_bits: Option<u8>,
    /// Stop bits, 1 or 2; default 1.
    pub stop_bits: Option<u8>,
    /// Silence before each request in µs; default 3.5 character times (at least 1750 µs, as the
    /// spec fixes for rates above 19200 baud).
    pub frame_gap_us: Option<u64>,
}

/// One `[[devices.groups]]` entry: tags polled together at one interval.
#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct GroupConfig {
    /// Name, unique within the device.
    pub name: String,
    /// Poll interval in ms; > 0.
    pub interval_ms: u64,
    /// Tags.
    #[serde(default)]
    pub tags: Vec<TagConfig>,
}

/// Configured data type name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
#[allow(missing_docs)]
pub enum TypeName {
    Bool,
    I16,
    U16,
    I32,
    U32,
    I64,
    U64,
    F32,
    F64,
    String,
}

/// One `[[devices.groups.tags]]` entry.
#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct TagConfig {
    /// Name, unique within the device.
    pub name: String,
    /// Table.
    pub table: Table,
    /// Zero-based protocol address (0..=65535).
    pub address: u32,
    /// Data type; default `bool` on bit tables, `u16` on register tables.
    #[serde(rename = "type")]
    pub data_type: Option<TypeName>,
    /// For `string`: number of registers (1..=125).
    pub length: Option<u16>,
    /// Word/byte order; default ABCD.
    pub order: Option<ByteOrder>,
    /// For `bool` on a register table: the bit (0..=15).
    pub bit: Option<u8>,
    /// Multiplier to engineering units.
    pub scale: Option<f64>,
    /// Offset added after scaling.
    pub offset: Option<f64>,
    /// Absolute deadband in engineering units.
    pub deadband: Option<f64>,
    /// Deadband in percent of the last reported value.
    pub deadband_percent: Option<f64>,
    /// Heartbeat in ms: report at least this often.
    pub max_interval_ms: Option<u64>,
    /// An array of `count` tags of this type at consecutive addresses, named `name[0]`,
    /// `name[1]`, …; default 1 (a single tag named `name`).
    pub count: Option<u32>,
}

/// One configuration problem, named by its key path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    /// Key path, e.g. `devices[0].groups[1].interval_ms`.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Every problem found in a configuration (never empty).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigInvalidError {
    /// The problems, in configuration order.
    pub problems: Vec<ConfigProblem>,
}

impl fmt::Display for ConfigInvalidError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

/// Collects problems while walking a configuration.
#[derive(Debug, Default)]
pub(crate) struct Problems(pub(crate) Vec<ConfigProblem>);

impl Problems {
    pub(crate) fn add(&mut self, path: impl fmt::Display, message: impl fmt::Display) {
        self.0.push(ConfigProblem {
            path: path.to_string(),
            message: message.to_string(),
        });
    }

    pub(crate) fn into_result<T>(self, ok: T) -> Result<T, ConfigInvalidError> {
        if self.0.is_empty() {
            Ok(ok)
        } else {
            Err(ConfigInvalidError { problems: self.0 })
        }
    }
}

impl AdapterConfig {
    /// Validates the configuration without building anything; see [`AdapterConfig::resolve`].
    pub fn validate(&self) -> Result<(), ConfigInvalidError> {
        self.resolve().map(drop)
    }

    /// Validates and resolves: one [`crate::modbus::ModbusLink`] per TCP device and per serial
    /// line, each with its request plan. No I/O.
    pub fn resolve(&self) -> Result<crate::modbus::ResolvedConfig, ConfigInvalidError> {
        crate::modbus::config::resolve(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> AdapterConfig {
        toml::from_str(s).unwrap()
    }

    const GOOD: &str = r#"
        [[devices]]
        name = "press-1"
        protocol = "modbus-tcp"
        address = "127.0.0.1:502"
        [[devices.groups]]
        name = "fast"
        interval_ms = 100
        [[devices.groups.tags]]
        name = "temp"
        table = "holding-register"
        address = 0
        type = "f32"
        order = "CDAB"
        scale = 0.1
        deadband = 0.5
        [[devices.groups.tags]]
        name = "run"
        table = "coil"
        address = 3
    "#;

    #[test]
    fn valid_config_resolves() {
        let cfg = parse(GOOD);
        let resolved = cfg.resolve().unwrap();
        assert_eq!(resolved.links.len(), 1);
        assert_eq!(resolved.links[0].devices[0].tags.len(), 2);
    }

    #[test]
    fn unknown_keys_are_refused_at_parse_time() {
        let err = toml::from_str::<AdapterConfig>(&GOOD.replace("scale = 0.1", "scael = 0.1"))
            .unwrap_err();
        assert!(err.to_string().contains("scael"), "{err}");
    }

    #[test]
    fn errors_name_the_key_path_and_all_are_reported() {
        let cfg = parse(
            r#"
            [[devices]]
            name = "a"
            protocol = "modbus-tcp"
            address = "nohostport"
            [[devices.groups]]
            name = "g0"
            interval_ms = 10
            [[devices.groups.tags]]
            name = "x"
            table = "holding-register"
            address = 65535
            type = "u32"
            [[devices.groups]]
            name = "g1"
            interval_ms = 0
            [[devices.groups.tags]]
            name = "x"
            table = "coil"
            address = 1
            type = "f32"
        "#,
        );
        let err = cfg.resolve().unwrap_err();
        let text = err.to_string();
        for expected in [
            "devices[0].address: must be host:port",
            "devices[0].groups[0].tags[0].address: u32 at 65535 ends past the last address 65535",
            "devices[0].groups[1].interval_ms: must be > 0",
            "devices[0].groups[1].tags[0].name: duplicate tag name \"x\"",
            "devices[0].groups[1].tags[0].type: coil holds bits: only bool is allowed",
        ] {
            assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
        }
    }

    #[test]
    fn rtu_devices_on_one_port_must_agree_and_have_distinct_units() {
        let cfg = parse(
            r#"
            [[devices]]
            name = "a"
            protocol = "modbus-rtu"
            unit_id = 1
            serial = { port = "/dev/ttyS0", baud = 9600 }
            [[devices]]
            name = "b"
            protocol = "modbus-rtu"
            unit_id = 1
            serial = { port = "/dev/ttyS0", baud = 19200 }
        "#,
        );
        let text = cfg.resolve().unwrap_err().to_string();
        assert!(
            text.contains("devices[1].serial: settings differ from devices[0] on the same port"),
            "{text}"
        );
        assert!(
            text.contains("devices[1].unit_id: unit 1 is already used on /dev/ttyS0 by devices[0]"),
            "{text}"
        );
    }

    #[test]
    fn count_makes_an_array_of_tags_at_consecutive_addresses() {
        let cfg = parse(&GOOD.replace("scale = 0.1", "scale = 0.1\ncount = 3"));
        let resolved = cfg.resolve().unwrap();
        let tags = &resolved.links[0].devices[0].tags;
        let names: Vec<(&str, u16, u32)> = tags
            .iter()
            .map(|t| (t.name.as_str(), t.address, t.id))
            .collect();
        assert_eq!(
            names,
            vec![
                ("temp[0]", 0, 0),
                ("temp[1]", 2, 1),
                ("temp[2]", 4, 2),
                ("run", 3, 3)
            ]
        );
        let err = parse(&GOOD.replace("scale = 0.1", "count = 40000"))
            .resolve()
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("devices[0].groups[0].tags[0].count: 40000 × f32 from 0 ends past"),
            "{err}"
        );
    }

    #[test]
    fn synthetic_sources_are_validated_alongside_devices() {
        let text = format!(
            "{GOOD}\n[[synthetic]]\nsource_id = 0\ntags = [{{ name = \"s\", signal = \"sine\", rate_hz = 0.0 }}]\n"
        );
        let err = parse(&text).resolve().unwrap_err().to_string();
        assert!(
            err.contains("synthetic[0].source_id: 0 is already used by devices[0]"),
            "{err}"
        );
        assert!(
            err.contains("synthetic[0].tags[0].rate_hz: must be > 0"),
            "{err}"
        );
        let ok = parse(
            &text
                .replace("source_id = 0", "source_id = 100")
                .replace("rate_hz = 0.0", "rate_hz = 10.0"),
        );
        assert_eq!(ok.resolve().unwrap().synthetic.len(), 1);
    }

    #[test]
    fn protocol_specific_keys_are_checked() {
        let cfg = parse(
            r#"
            [[devices]]
            name = "a"
            protocol = "modbus-rtu"
            address = "127.0.0.1:502"
        "#,
        );
        let text = cfg.resolve().unwrap_err().to_string();
        assert!(
            text.contains("devices[0].serial: required for modbus-rtu"),
            "{text}"
        );
        assert!(
            text.contains("devices[0].address: only for modbus-tcp"),
            "{text}"
        );
    }
}
