//! Adapter configuration, stage two: the resolved Modbus form and the defaults.
//!
//! [`resolve`] turns a validated [`AdapterConfig`] into [`ModbusLink`]s: one per TCP device,
//! one per serial line (with every RTU device on that port). Each device carries its resolved
//! [`Tag`]s and its request plan, computed here once per configuration.

use std::collections::HashMap;
use std::time::Duration;

use crate::config::{AdapterConfig, DeviceConfig, Parity, Problems, Protocol, TagConfig, TypeName};
use crate::modbus::plan::{PlanLimits, PollGroup, plan_group};
use crate::tag::{ByteOrder, DataType, Deadband, Scaling, Tag};

/// Default per-request timeout.
pub const fn default_timeout() -> Duration {
    Duration::from_millis(1000)
}
/// Default TCP connect timeout.
pub const fn default_connect_timeout() -> Duration {
    Duration::from_millis(3000)
}
/// Default first reconnect delay.
pub const fn default_backoff_min() -> Duration {
    Duration::from_millis(100)
}
/// Default largest reconnect delay.
pub const fn default_backoff_max() -> Duration {
    Duration::from_secs(30)
}
/// Default unit id.
pub const fn default_unit_id() -> u8 {
    1
}
/// Default serial baud rate.
pub const fn default_baud() -> u32 {
    19_200
}
/// Default largest gap a merged read may span.
pub const fn default_max_gap() -> u16 {
    16
}

/// Silence the RTU spec requires between frames: 3.5 character times of 11 bits, but at least
/// 1750 µs (the fixed value the spec gives for rates above 19200 baud).
pub const fn rtu_frame_gap(baud: u32) -> Duration {
    let baud = if baud == 0 { 1 } else { baud as u64 };
    let us = 35 * 11 * 1_000_000 / 10 / baud;
    Duration::from_micros(if us < 1750 { 1750 } else { us })
}

/// The whole resolved configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct ResolvedConfig {
    /// One link per TCP device and per serial line, in configuration order.
    pub links: Vec<ModbusLink>,
    /// Synthetic sources, validated.
    pub synthetic: Vec<crate::sim::SyntheticConfig>,
}

/// Reconnect policy: exponential backoff with jitter between `min` and `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// First delay.
    pub min: Duration,
    /// Cap.
    pub max: Duration,
}

/// Serial line settings.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SerialSettings {
    /// Device path.
    pub port: String,
    /// Baud rate.
    pub baud: u32,
    /// Parity.
    pub parity: Parity,
    /// Data bits (7 or 8).
    pub data_bits: u8,
    /// Stop bits (1 or 2).
    pub stop_bits: u8,
    /// Silence kept before each request.
    pub frame_gap: Duration,
}

/// How a link reaches its devices.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transport {
    /// Modbus TCP to `host:port`.
    Tcp {
        /// `host:port`, resolved when connecting.
        address: String,
        /// Connect timeout.
        connect_timeout: Duration,
    },
    /// Modbus RTU on a serial line.
    Rtu(SerialSettings),
}

/// One connection (a TCP socket or a serial line) and the devices polled over it. A link is
/// polled by one task: devices on one RTU line share the bus, TCP devices each have their own.
#[derive(Debug, Clone, PartialEq)]
pub struct ModbusLink {
    /// Device name (TCP) or port path (RTU).
    pub name: String,
    /// How to connect.
    pub transport: Transport,
    /// Reconnect policy (from the first device of the link).
    pub backoff: Backoff,
    /// Devices on the link.
    pub devices: Vec<ModbusDevice>,
}

/// One device (one unit id) and its poll groups.
#[derive(Debug, Clone, PartialEq)]
pub struct ModbusDevice {
    /// Device name.
    pub name: String,
    /// `TelemetryRecord::source_id` of its records: the device's index in the configuration.
    pub source_id: u32,
    /// Unit id.
    pub unit_id: u8,
    /// Per-request timeout.
    pub timeout: Duration,
    /// Tags, indexed by `Tag::id`.
    pub tags: Vec<Tag>,
    /// Poll groups with their planned reads.
    pub groups: Vec<PollGroup>,
    /// Limits the plan was made with.
    pub limits: PlanLimits,
}

fn ms(v: Option<u64>, default: Duration) -> Duration {
    v.map_or(default, Duration::from_millis)
}

fn check_ms(p: &mut Problems, path: &str, key: &str, v: Option<u64>) {
    if v == Some(0) {
        p.add(format_args!("{path}.{key}"), "must be > 0");
    }
}

/// Whether `s` looks like `host:port` (no I/O: the host is resolved when connecting).
fn is_host_port(s: &str) -> bool {
    if s.parse::<std::net::SocketAddr>().is_ok() {
        return true;
    }
    match s.rsplit_once(':') {
        Some((host, port)) => {
            !host.is_empty()
                && !host.contains(char::is_whitespace)
                && !host.contains(':')
                && port.parse::<u16>().is_ok()
        }
        None => false,
    }
}

/// Validates and resolves; see [`AdapterConfig::resolve`].
pub(crate) fn resolve(
    cfg: &AdapterConfig,
) -> Result<ResolvedConfig, crate::config::ConfigInvalidError> {
    let mut p = Problems::default();
    let mut links: Vec<ModbusLink> = Vec::new();
    let mut names: HashMap<&str, usize> = HashMap::new();
    // serial port -> (link index, first device index, units used: unit -> device index)
    let mut lines: HashMap<&str, (usize, usize, HashMap<u8, usize>)> = HashMap::new();

    for (di, dev) in cfg.devices.iter().enumerate() {
        let path = format!("devices[{di}]");
        if dev.name.trim().is_empty() {
            p.add(format_args!("{path}.name"), "must not be empty");
        } else if let Some(first) = names.insert(&dev.name, di) {
            p.add(
                format_args!("{path}.name"),
                format_args!(
                    "duplicate device name {:?} (also devices[{first}])",
                    dev.name
                ),
            );
        }
        for (key, v) in [
            ("timeout_ms", dev.timeout_ms),
            ("connect_timeout_ms", dev.connect_timeout_ms),
            ("backoff_min_ms", dev.backoff_min_ms),
            ("backoff_max_ms", dev.backoff_max_ms),
        ] {
            check_ms(&mut p, &path, key, v);
        }
        let backoff = Backoff {
            min: ms(dev.backoff_min_ms, default_backoff_min()),
            max: ms(dev.backoff_max_ms, default_backoff_max()),
        };
        if backoff.min > backoff.max {
            p.add(
                format_args!("{path}.backoff_max_ms"),
                "must be >= backoff_min_ms",
            );
        }
        let limits = resolve_limits(&mut p, &path, dev);
        let unit_id = dev.unit_id.unwrap_or(default_unit_id());
        let (tags, groups) = resolve_groups(&mut p, &path, dev, limits);
        let device = ModbusDevice {
            name: dev.name.clone(),
            source_id: u32::try_from(di).unwrap_or(u32::MAX),
            unit_id,
            timeout: ms(dev.timeout_ms, default_timeout()),
            tags,
            groups,
            limits,
        };

        match dev.protocol {
            Protocol::ModbusTcp => {
                if dev.serial.is_some() {
                    p.add(format_args!("{path}.serial"), "only for modbus-rtu");
                }
                let address = match &dev.address {
                    None => {
                        p.add(
                            format_args!("{path}.address"),
                            "required for modbus-tcp (host:port)",
                        );
                        String::new()
                    }
                    Some(a) if !is_host_port(a) => {
                        p.add(
                            format_args!("{path}.address"),
                            format_args!("must be host:port, got {a:?}"),
                        );
                        a.clone()
                    }
                    Some(a) => a.clone(),
                };
                links.push(ModbusLink {
                    name: dev.name.clone(),
                    transport: Transport::Tcp {
                        address,
                        connect_timeout: ms(dev.connect_timeout_ms, default_connect_timeout()),
                    },
                    backoff,
                    devices: vec![device],
                });
            }
            Protocol::ModbusRtu => {
                if dev.address.is_some() {
                    p.add(format_args!("{path}.address"), "only for modbus-tcp");
                }
                if dev.connect_timeout_ms.is_some() {
                    p.add(
                        format_args!("{path}.connect_timeout_ms"),
                        "only for modbus-tcp",
                    );
                }
                if !(1..=247).contains(&unit_id) {
                    p.add(
                        format_args!("{path}.unit_id"),
                        "must be 1..=247 on a serial line",
                    );
                }
                let Some(serial) = &dev.serial else {
                    p.add(format_args!("{path}.serial"), "required for modbus-rtu");
                    continue;
                };
                let settings = resolve_serial(&mut p, &path, serial);
                match lines.get_mut(serial.port.as_str()) {
                    Some((link, first, units)) => {
                        let l = &mut links[*link];
                        if l.transport != Transport::Rtu(settings) {
                            p.add(
                                format_args!("{path}.serial"),
                                format_args!(
                                    "settings differ from devices[{first}] on the same port"
                                ),
                            );
                        }
                        if let Some(other) = units.insert(unit_id, di) {
                            p.add(
                                format_args!("{path}.unit_id"),
                                format_args!(
                                    "unit {unit_id} is already used on {} by devices[{other}]",
                                    serial.port
                                ),
                            );
                        }
                        l.devices.push(device);
                    }
                    None => {
                        lines.insert(
                            &serial.port,
                            (links.len(), di, HashMap::from([(unit_id, di)])),
                        );
                        links.push(ModbusLink {
                            name: serial.port.clone(),
                            transport: Transport::Rtu(settings),
                            backoff,
                            devices: vec![device],
                        });
                    }
                }
            }
        }
    }
    for (si, s) in cfg.synthetic.iter().enumerate() {
        let path = format!("synthetic[{si}]");
        if let Some(di) = usize::try_from(s.source_id)
            .ok()
            .filter(|&i| i < cfg.devices.len())
        {
            p.add(
                format_args!("{path}.source_id"),
                format_args!("{} is already used by devices[{di}]", s.source_id),
            );
        } else if let Some(other) = cfg.synthetic[..si]
            .iter()
            .position(|o| o.source_id == s.source_id)
        {
            p.add(
                format_args!("{path}.source_id"),
                format_args!("{} is already used by synthetic[{other}]", s.source_id),
            );
        }
        if let Err(e) = s.validate(&path) {
            p.0.extend(e.problems);
        }
    }
    p.into_result(ResolvedConfig {
        links,
        synthetic: cfg.synthetic.clone(),
    })
}

fn resolve_limits(p: &mut Problems, path: &str, dev: &DeviceConfig) -> PlanLimits {
    let max_registers = dev.max_registers.unwrap_or(125);
    if !(1..=125).contains(&max_registers) {
        p.add(format_args!("{path}.max_registers"), "must be 1..=125");
    }
    let max_bits = dev.max_bits.unwrap_or(2000);
    if !(1..=2000).contains(&max_bits) {
        p.add(format_args!("{path}.max_bits"), "must be 1..=2000");
    }
    PlanLimits {
        max_gap: dev.max_gap.unwrap_or(default_max_gap()),
        max_registers: max_registers.clamp(1, 125),
        max_bits: max_bits.clamp(1, 2000),
    }
}

fn resolve_serial(p: &mut Problems, path: &str, s: &crate::config::SerialConfig) -> SerialSettings {
    if s.port.trim().is_empty() {
        p.add(format_args!("{path}.serial.port"), "must not be empty");
    }
    let baud = s.baud.unwrap_or(default_baud());
    if baud == 0 {
        p.add(format_args!("{path}.serial.baud"), "must be > 0");
    }
    let data_bits = s.data_bits.unwrap_or(8);
    if !(7..=8).contains(&data_bits) {
        p.add(format_args!("{path}.serial.data_bits"), "must be 7 or 8");
    }
    let stop_bits = s.stop_bits.unwrap_or(1);
    if !(1..=2).contains(&stop_bits) {
        p.add(format_args!("{path}.serial.stop_bits"), "must be 1 or 2");
    }
    SerialSettings {
        port: s.port.clone(),
        baud,
        parity: s.parity.unwrap_or_default(),
        data_bits,
        stop_bits,
        frame_gap: s
            .frame_gap_us
            .map_or(rtu_frame_gap(baud), Duration::from_micros),
    }
}

fn resolve_groups(
    p: &mut Problems,
    path: &str,
    dev: &DeviceConfig,
    limits: PlanLimits,
) -> (Vec<Tag>, Vec<PollGroup>) {
    let mut tags = Vec::new();
    let mut groups = Vec::new();
    let mut group_names: HashMap<&str, usize> = HashMap::new();
    let mut tag_names: HashMap<&str, String> = HashMap::new();
    for (gi, g) in dev.groups.iter().enumerate() {
        let gpath = format!("{path}.groups[{gi}]");
        if g.name.trim().is_empty() {
            p.add(format_args!("{gpath}.name"), "must not be empty");
        } else if let Some(first) = group_names.insert(&g.name, gi) {
            p.add(
                format_args!("{gpath}.name"),
                format_args!("duplicate group name {:?} (also groups[{first}])", g.name),
            );
        }
        if g.interval_ms == 0 {
            p.add(format_args!("{gpath}.interval_ms"), "must be > 0");
        }
        if g.tags.is_empty() {
            p.add(
                format_args!("{gpath}.tags"),
                "a group needs at least one tag",
            );
        }
        let first_tag = tags.len();
        for (ti, t) in g.tags.iter().enumerate() {
            let tpath = format!("{gpath}.tags[{ti}]");
            if t.name.trim().is_empty() {
                p.add(format_args!("{tpath}.name"), "must not be empty");
            } else if let Some(first) = tag_names.insert(&t.name, tpath.clone()) {
                p.add(
                    format_args!("{tpath}.name"),
                    format_args!("duplicate tag name {:?} (also {first})", t.name),
                );
            }
            let count = t.count.unwrap_or(1);
            let first = resolve_tag(p, &tpath, u32::try_from(tags.len()).unwrap_or(u32::MAX), t);
            if count == 0 {
                p.add(format_args!("{tpath}.count"), "must be >= 1");
            } else if count > 1 {
                if first.bit.is_some() {
                    p.add(
                        format_args!("{tpath}.count"),
                        "an array of register bits is not supported",
                    );
                }
                let end = u64::from(first.address) + u64::from(count) * u64::from(first.width());
                if end > 65536 {
                    p.add(
                        format_args!("{tpath}.count"),
                        format_args!(
                            "{count} × {} from {} ends past the last address 65535",
                            first.data_type, first.address
                        ),
                    );
                    continue;
                }
                for i in 0..count {
                    let mut tag = first.clone();
                    tag.id = u32::try_from(tags.len()).unwrap_or(u32::MAX);
                    tag.name = format!("{}[{i}]", t.name);
                    tag.address =
                        u16::try_from(u32::from(first.address) + i * u32::from(first.width()))
                            .unwrap_or(0);
                    tags.push(tag);
                }
                continue;
            }
            tags.push(first);
        }
        let interval = Duration::from_millis(g.interval_ms.max(1));
        groups.push(plan_group(
            &g.name,
            interval,
            &tags,
            first_tag..tags.len(),
            limits,
        ));
    }
    (tags, groups)
}

fn resolve_tag(p: &mut Problems, path: &str, id: u32, t: &TagConfig) -> Tag {
    let bits = t.table.is_bits();
    let type_name = t
        .data_type
        .unwrap_or(if bits { TypeName::Bool } else { TypeName::U16 });
    let data_type = match type_name {
        TypeName::Bool => DataType::Bool,
        TypeName::I16 => DataType::I16,
        TypeName::U16 => DataType::U16,
        TypeName::I32 => DataType::I32,
        TypeName::U32 => DataType::U32,
        TypeName::I64 => DataType::I64,
        TypeName::U64 => DataType::U64,
        TypeName::F32 => DataType::F32,
        TypeName::F64 => DataType::F64,
        TypeName::String => {
            let registers = t.length.unwrap_or(0);
            if !(1..=125).contains(&registers) {
                p.add(
                    format_args!("{path}.length"),
                    "string needs length = 1..=125 registers",
                );
            }
            DataType::String {
                registers: registers.clamp(1, 125),
            }
        }
    };
    if t.length.is_some() && type_name != TypeName::String {
        p.add(format_args!("{path}.length"), "only for type = \"string\"");
    }
    if bits && data_type != DataType::Bool {
        p.add(
            format_args!("{path}.type"),
            format_args!("{} holds bits: only bool is allowed", t.table),
        );
    }
    if bits && t.order.is_some() {
        p.add(
            format_args!("{path}.order"),
            format_args!("{} holds bits: order does not apply", t.table),
        );
    }
    match t.bit {
        Some(_) if bits => p.add(
            format_args!("{path}.bit"),
            format_args!("{} holds bits: bit does not apply", t.table),
        ),
        Some(_) if data_type != DataType::Bool => {
            p.add(format_args!("{path}.bit"), "only for type = \"bool\"")
        }
        Some(b) if b >= 16 => p.add(format_args!("{path}.bit"), "must be 0..=15"),
        _ => {}
    }
    let width = if bits {
        1
    } else {
        u32::from(data_type.registers())
    };
    if t.address > 65535 {
        p.add(format_args!("{path}.address"), "must be 0..=65535");
    } else if t.address + width > 65536 {
        p.add(
            format_args!("{path}.address"),
            format_args!(
                "{data_type} at {} ends past the last address 65535",
                t.address
            ),
        );
    }
    let scaling = if t.scale.is_some() || t.offset.is_some() {
        if !data_type.is_numeric() {
            p.add(
                format_args!("{path}.scale"),
                format_args!("{data_type} cannot be scaled"),
            );
        }
        let scale = t.scale.unwrap_or(1.0);
        let offset = t.offset.unwrap_or(0.0);
        if !scale.is_finite() || scale == 0.0 {
            p.add(format_args!("{path}.scale"), "must be finite and non-zero");
        }
        if !offset.is_finite() {
            p.add(format_args!("{path}.offset"), "must be finite");
        }
        Some(Scaling { scale, offset })
    } else {
        None
    };
    let deadband = match (t.deadband, t.deadband_percent) {
        (Some(_), Some(_)) => {
            p.add(
                format_args!("{path}.deadband_percent"),
                "use either deadband or deadband_percent, not both",
            );
            Deadband::None
        }
        (Some(d), None) | (None, Some(d)) if !data_type.is_numeric() => {
            let _ = d;
            let key = if t.deadband.is_some() {
                "deadband"
            } else {
                "deadband_percent"
            };
            p.add(
                format_args!("{path}.{key}"),
                format_args!("{data_type} has no numeric deadband"),
            );
            Deadband::None
        }
        (Some(d), None) if !(d.is_finite() && d >= 0.0) => {
            p.add(format_args!("{path}.deadband"), "must be finite and >= 0");
            Deadband::None
        }
        (None, Some(d)) if !(d.is_finite() && d >= 0.0) => {
            p.add(
                format_args!("{path}.deadband_percent"),
                "must be finite and >= 0",
            );
            Deadband::None
        }
        (Some(d), None) => Deadband::Absolute(d),
        (None, Some(d)) => Deadband::Percent(d),
        (None, None) => Deadband::None,
    };
    check_ms(p, path, "max_interval_ms", t.max_interval_ms);
    Tag {
        id,
        name: t.name.clone(),
        table: t.table,
        address: u16::try_from(t.address).unwrap_or(0),
        data_type,
        order: t.order.unwrap_or(ByteOrder::ABCD),
        bit: t.bit.filter(|_| !bits),
        scaling,
        deadband,
        max_interval: t
            .max_interval_ms
            .filter(|&m| m > 0)
            .map(Duration::from_millis),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rtu_frame_gap_is_three_and_a_half_characters_but_at_least_1750_us() {
        assert_eq!(rtu_frame_gap(9600), Duration::from_micros(4010));
        assert_eq!(rtu_frame_gap(115_200), Duration::from_micros(1750));
    }

    #[test]
    fn host_port_syntax_is_checked_without_resolving() {
        assert!(is_host_port("127.0.0.1:502"));
        assert!(is_host_port("[::1]:502"));
        assert!(is_host_port("plc.local:502"));
        assert!(!is_host_port("plc.local"));
        assert!(!is_host_port("plc.local:99999"));
        assert!(!is_host_port(":502"));
    }
}
