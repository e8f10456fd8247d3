//! Request planning: which reads a poll group issues, computed once per configuration.
//!
//! # Design constraints
//! - Tags of one device, one poll group and one table are merged into as few reads as
//!   possible: a read spans at most `max_registers` (≤ 125) registers or `max_bits` (≤ 2000)
//!   bits, and never bridges more than `max_gap` unused addresses (reading a hole costs wire
//!   time, and a hole the device does not map makes the whole read fail with exception 2).
//! - Plans are plain data, printable for users ([`fmt::Display`], the gateway's `check`
//!   command) and fixed for the life of the configuration: the poller only walks them.
//!
//! # Operation
//! Tags are sorted by (table, address) and swept once; a tag joins the current read if it is
//! in the same table, starts at most `max_gap` past the read's end, and the read stays within
//! the quantity limit. Otherwise a new read starts at the tag.

use std::fmt;
use std::ops::Range;
use std::time::Duration;

use crate::modbus::config::{ModbusDevice, ModbusLink, ResolvedConfig, Transport};
use crate::tag::{Table, Tag};

/// Limits a plan is made with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlanLimits {
    /// Largest run of unused addresses a read may bridge.
    pub max_gap: u16,
    /// Most registers per read (1..=125).
    pub max_registers: u16,
    /// Most bits per read (1..=2000).
    pub max_bits: u16,
}

impl Default for PlanLimits {
    fn default() -> Self {
        Self {
            max_gap: crate::modbus::config::default_max_gap(),
            max_registers: 125,
            max_bits: 2000,
        }
    }
}

impl PlanLimits {
    /// The quantity limit for a table.
    pub const fn max_quantity(self, table: Table) -> u16 {
        if table.is_bits() {
            self.max_bits
        } else {
            self.max_registers
        }
    }
}

/// Where one tag's value sits in a read's response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TagSlot {
    /// Index into the device's tags (= `Tag::id`).
    pub tag: u32,
    /// Offset of the tag's first register/bit from the read's start address.
    pub offset: u16,
}

/// One read request of a poll group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedRead {
    /// Table read.
    pub table: Table,
    /// First address.
    pub address: u16,
    /// Registers or bits read.
    pub quantity: u16,
    /// Tags served by this read, in address order.
    pub slots: Vec<TagSlot>,
}

impl PlannedRead {
    /// Addresses read that no tag uses.
    pub fn unused(&self, tags: &[Tag]) -> u32 {
        let mut covered = 0u32;
        let mut end = u32::from(self.address);
        for s in &self.slots {
            let t = &tags[s.tag as usize];
            let start = u32::from(t.address).max(end);
            if t.end() > start {
                covered += t.end() - start;
                end = t.end();
            }
        }
        u32::from(self.quantity) - covered
    }
}

/// Tags polled together at one interval, with their planned reads.
#[derive(Debug, Clone, PartialEq)]
pub struct PollGroup {
    /// Group name.
    pub name: String,
    /// Poll interval.
    pub interval: Duration,
    /// Reads issued each cycle, in order.
    pub reads: Vec<PlannedRead>,
    /// Tags of the group (indices into the device's tags).
    pub tags: Range<usize>,
}

/// Plans the reads of one group: `range` selects the group's tags in `tags`.
pub fn plan_group(
    name: &str,
    interval: Duration,
    tags: &[Tag],
    range: Range<usize>,
    limits: PlanLimits,
) -> PollGroup {
    let mut order: Vec<usize> = range.clone().collect();
    order.sort_by_key(|&i| (tags[i].table, tags[i].address, tags[i].end()));
    let mut reads: Vec<PlannedRead> = Vec::new();
    for i in order {
        let t = &tags[i];
        let slot_for = |start: u16| TagSlot {
            tag: t.id,
            offset: t.address - start,
        };
        if let Some(r) = reads.last_mut()
            && r.table == t.table
        {
            let start = u32::from(r.address);
            let end = start + u32::from(r.quantity);
            let gap = u32::from(t.address).saturating_sub(end);
            let new_end = end.max(t.end());
            if gap <= u32::from(limits.max_gap)
                && new_end - start <= u32::from(limits.max_quantity(t.table))
            {
                r.quantity = u16::try_from(new_end - start).unwrap_or(u16::MAX);
                r.slots.push(slot_for(r.address));
                continue;
            }
        }
        reads.push(PlannedRead {
            table: t.table,
            address: t.address,
            quantity: t.width(),
            slots: vec![slot_for(t.address)],
        });
    }
    PollGroup {
        name: name.to_owned(),
        interval,
        reads,
        tags: range,
    }
}

impl fmt::Display for ResolvedConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for link in &self.links {
            write!(f, "{link}")?;
        }
        for s in &self.synthetic {
            let rate: f64 = s.tags.iter().map(|t| t.rate_hz).sum();
            writeln!(
                f,
                "synthetic source {}: {} tags, {rate} records/s",
                s.source_id,
                s.tags.len()
            )?;
        }
        Ok(())
    }
}

impl fmt::Display for ModbusLink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.transport {
            Transport::Tcp {
                address,
                connect_timeout,
            } => writeln!(
                f,
                "link {}: modbus-tcp {address} (connect timeout {} ms)",
                self.name,
                connect_timeout.as_millis()
            )?,
            Transport::Rtu(s) => writeln!(
                f,
                "link {}: modbus-rtu {} baud, {} data bits, parity {:?}, {} stop bits, frame gap {} µs",
                self.name,
                s.baud,
                s.data_bits,
                s.parity,
                s.stop_bits,
                s.frame_gap.as_micros()
            )?,
        }
        for d in &self.devices {
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

impl fmt::Display for ModbusDevice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "  device {} (unit {}, source {}, request timeout {} ms, max gap {})",
            self.name,
            self.unit_id,
            self.source_id,
            self.timeout.as_millis(),
            self.limits.max_gap
        )?;
        for g in &self.groups {
            let (regs, bits) = g.reads.iter().fold((0u32, 0u32), |(r, b), read| {
                if read.table.is_bits() {
                    (r, b + u32::from(read.quantity))
                } else {
                    (r + u32::from(read.quantity), b)
                }
            });
            writeln!(
                f,
                "    group {} every {} ms: {} tags in {} reads ({regs} registers, {bits} bits)",
                g.name,
                g.interval.as_millis(),
                g.tags.len(),
                g.reads.len()
            )?;
            for r in &g.reads {
                write!(
                    f,
                    "      fc {:#04x} {} {}..={} ({} {}, {} unused):",
                    r.table.read_function_code(),
                    r.table,
                    r.address,
                    u32::from(r.address) + u32::from(r.quantity) - 1,
                    r.quantity,
                    r.table.unit_name(),
                    r.unused(&self.tags)
                )?;
                const SHOWN: usize = 6;
                for s in r.slots.iter().take(SHOWN) {
                    let t = &self.tags[s.tag as usize];
                    write!(f, " {}@{} {}", t.name, t.address, t.data_type)?;
                    if !t.table.is_bits() && t.data_type.registers() > 1 {
                        write!(f, " {}", t.order)?;
                    }
                    if let Some(bit) = t.bit {
                        write!(f, " bit {bit}")?;
                    }
                }
                if r.slots.len() > SHOWN {
                    write!(f, " … and {} more", r.slots.len() - SHOWN)?;
                }
                writeln!(f)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tag::{ByteOrder, DataType, Deadband};
    use proptest::prelude::*;

    fn tag(id: u32, table: Table, address: u16, data_type: DataType) -> Tag {
        Tag {
            id,
            name: format!("t{id}"),
            table,
            address,
            data_type,
            order: ByteOrder::ABCD,
            bit: None,
            scaling: None,
            deadband: Deadband::None,
            max_interval: None,
        }
    }

    #[test]
    fn adjacent_tags_of_one_table_merge_into_one_read() {
        let tags = vec![
            tag(0, Table::HoldingRegister, 10, DataType::F32),
            tag(1, Table::HoldingRegister, 0, DataType::U16),
            tag(2, Table::HoldingRegister, 12, DataType::U64),
            tag(3, Table::Coil, 5, DataType::Bool),
            tag(4, Table::Coil, 7, DataType::Bool),
        ];
        let g = plan_group(
            "g",
            Duration::from_secs(1),
            &tags,
            0..5,
            PlanLimits::default(),
        );
        assert_eq!(g.reads.len(), 2);
        assert_eq!(
            (g.reads[0].table, g.reads[0].address, g.reads[0].quantity),
            (Table::Coil, 5, 3)
        );
        let r = &g.reads[1];
        assert_eq!(
            (r.table, r.address, r.quantity),
            (Table::HoldingRegister, 0, 16)
        );
        assert_eq!(
            r.slots,
            vec![
                TagSlot { tag: 1, offset: 0 },
                TagSlot { tag: 0, offset: 10 },
                TagSlot { tag: 2, offset: 12 }
            ]
        );
        assert_eq!(r.unused(&tags), 9);
    }

    #[test]
    fn a_gap_larger_than_max_gap_splits_the_read() {
        let tags = vec![
            tag(0, Table::InputRegister, 0, DataType::U16),
            tag(1, Table::InputRegister, 18, DataType::U16),
        ];
        let limits = PlanLimits {
            max_gap: 16,
            ..PlanLimits::default()
        };
        assert_eq!(
            plan_group("g", Duration::from_secs(1), &tags, 0..2, limits)
                .reads
                .len(),
            2
        );
        let limits = PlanLimits {
            max_gap: 17,
            ..PlanLimits::default()
        };
        assert_eq!(
            plan_group("g", Duration::from_secs(1), &tags, 0..2, limits)
                .reads
                .len(),
            1
        );
    }

    #[test]
    fn reads_never_exceed_125_registers_and_tags_are_never_split() {
        let tags: Vec<Tag> = (0..100)
            .map(|i| tag(i, Table::HoldingRegister, (i * 2) as u16, DataType::F32))
            .collect();
        let g = plan_group(
            "g",
            Duration::from_secs(1),
            &tags,
            0..100,
            PlanLimits::default(),
        );
        assert_eq!(
            g.reads.iter().map(|r| r.quantity).collect::<Vec<_>>(),
            vec![124, 76]
        );
    }

    #[test]
    fn plan_prints_reads_and_tags_for_users() {
        let cfg: crate::config::AdapterConfig = toml::from_str(
            r#"
            [[devices]]
            name = "press"
            protocol = "modbus-tcp"
            address = "127.0.0.1:502"
            [[devices.groups]]
            name = "fast"
            interval_ms = 100
            tags = [
              { name = "temp", table = "holding-register", address = 0, type = "f32", order = "CDAB" },
              { name = "alarm", table = "holding-register", address = 2, type = "bool", bit = 4 },
            ]
        "#,
        )
        .unwrap();
        let text = cfg.resolve().unwrap().to_string();
        assert!(
            text.contains("group fast every 100 ms: 2 tags in 1 reads (3 registers, 0 bits)"),
            "{text}"
        );
        assert!(
            text.contains("fc 0x03 holding-register 0..=2 (3 registers, 0 unused): temp@0 f32 CDAB alarm@2 bool bit 4"),
            "{text}"
        );
    }

    proptest! {
        #[test]
        fn every_tag_is_covered_exactly_once_within_limits(
            specs in proptest::collection::vec((0u8..4, 0u16..3000, 0u8..4), 1..200),
            max_gap in 0u16..40,
            max_registers in 4u16..=125,
        ) {
            let tags: Vec<Tag> = specs.iter().enumerate().map(|(i, &(tb, addr, ty))| {
                let table = [Table::Coil, Table::DiscreteInput, Table::HoldingRegister, Table::InputRegister][tb as usize];
                let dt = if table.is_bits() { DataType::Bool } else { [DataType::U16, DataType::F32, DataType::F64, DataType::I32][ty as usize] };
                tag(i as u32, table, addr, dt)
            }).collect();
            let limits = PlanLimits { max_gap, max_registers, max_bits: 2000 };
            let g = plan_group("g", Duration::from_secs(1), &tags, 0..tags.len(), limits);
            let mut seen = vec![0u32; tags.len()];
            for r in &g.reads {
                prop_assert!(r.quantity <= limits.max_quantity(r.table));
                for s in &r.slots {
                    let t = &tags[s.tag as usize];
                    prop_assert_eq!(t.table, r.table);
                    prop_assert_eq!(u32::from(r.address) + u32::from(s.offset), u32::from(t.address));
                    prop_assert!(t.end() <= u32::from(r.address) + u32::from(r.quantity));
                    seen[s.tag as usize] += 1;
                }
            }
            prop_assert!(seen.iter().all(|&n| n == 1));
        }
    }
}
