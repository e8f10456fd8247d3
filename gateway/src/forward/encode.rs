//! The MQTT payload: one JSON document per batch, rendered straight into the outgoing buffer.
//!
//! # Format
//! ```json
//! {"gateway":"line3-gw","source":"press-1","device":"press-1","group":"fast",
//!  "epoch":1795000000,"replayed":false,
//!  "records":[
//!   {"seq":41,"tag":"oil_temp","ts":1795000000123456789,"v":21.5,"q":"good"},
//!   {"seq":42,"tag":"speed","ts":1795000000123456789,"v":null,"q":"bad","reason":"timeout"},
//!   {"seq":43,"tag":"alarm","ts":1795000000123456789,"v":null,"q":"bad","reason":"exception","code":2}]}
//! ```
//! - `epoch` and `seq` are per source (one adapter process, one ring). Within an epoch `seq`
//!   increases by one for every record the source committed, across all of its devices, groups
//!   and topics; a missing `seq` is a record that was lost, and a repeated one a duplicate
//!   (at-least-once delivery resends after reconnects). Records of one source are spread over
//!   the topics of its groups, so completeness is checked over all of them together.
//! - A string longer than 8 bytes travels as several ring records (chunks), each with its own
//!   `seq`; its one JSON record carries the first chunk's `seq` and `"seq_last"`, the last
//!   chunk's, and covers every `seq` in between. No other record has `seq_last`.
//! - `ts` is the source timestamp in nanoseconds since the Unix epoch (when the device's
//!   answer arrived).
//! - `v` is a JSON number, `true`/`false`, a string, or `null` when the quality carries no
//!   value. Non-finite floats have no JSON number: `v` is `null` and `"nonfinite"` says
//!   `"NaN"`, `"inf"` or `"-inf"`.
//! - `q` is `good`, `uncertain` or `bad`; the latter two carry `reason` (`overrun`, `timeout`,
//!   `exception` with the Modbus `code`, `disconnected`, `decode`, `protocol`, `unknown`).
//! - `replayed` is `true` for batches sent from the spool after an outage.
//!
//! Names are escaped once, when the configuration is resolved ([`json_string`]), never per
//! record.

use edgegw_plc::{BadReason, Quality, UncertainReason};
use edgegw_ringbuf::{TelemetryRecord, ValueKind, flags};

/// `s` as a JSON string literal, quotes included.
pub fn json_string(s: &str) -> Box<str> {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out.into_boxed_str()
}

/// The fixed part of a batch's payload: everything before the records.
#[derive(Debug, Clone, Copy)]
pub struct BatchHeader<'a> {
    /// Gateway name, as a JSON string literal.
    pub gateway: &'a str,
    /// Source name, as a JSON string literal.
    pub source: &'a str,
    /// Device name, as a JSON string literal.
    pub device: &'a str,
    /// Group name, as a JSON string literal.
    pub group: &'a str,
    /// The source's epoch.
    pub epoch: u64,
    /// Whether the batch comes from the spool.
    pub replayed: bool,
}

/// Renders one batch into `out` (appending). `tag_name` maps a record to its tag name as a
/// JSON string literal. String values arrive as runs of chunks (see `edgegw_ringbuf::record`);
/// a run cut short by the end of the batch is closed where it ends.
pub fn render_batch<'r, 'n>(
    out: &mut Vec<u8>,
    header: &BatchHeader<'_>,
    records: impl IntoIterator<Item = &'r TelemetryRecord>,
    tag_name: impl Fn(&TelemetryRecord) -> Option<&'n str>,
) {
    let mut ibuf = itoa::Buffer::new();
    out.extend_from_slice(b"{\"gateway\":");
    out.extend_from_slice(header.gateway.as_bytes());
    out.extend_from_slice(b",\"source\":");
    out.extend_from_slice(header.source.as_bytes());
    out.extend_from_slice(b",\"device\":");
    out.extend_from_slice(header.device.as_bytes());
    out.extend_from_slice(b",\"group\":");
    out.extend_from_slice(header.group.as_bytes());
    out.extend_from_slice(b",\"epoch\":");
    out.extend_from_slice(ibuf.format(header.epoch).as_bytes());
    out.extend_from_slice(if header.replayed {
        b",\"replayed\":true,\"records\":["
    } else {
        b",\"replayed\":false,\"records\":["
    });
    let mut first = true;
    // The seq of the last chunk of the string being rendered, if one is open.
    let mut in_string: Option<u64> = None;
    for r in records {
        let is_chunk = r.value_kind() == Some(ValueKind::Str);
        if let Some(last) = in_string {
            if is_chunk {
                push_str_chunk(out, r);
                if r.flags & flags::CONTINUED == 0 {
                    out.push(b'"');
                    push_seq_last(out, r.seq, &mut ibuf);
                    close_record(out, r, &mut ibuf);
                    in_string = None;
                } else {
                    in_string = Some(r.seq);
                }
                continue;
            }
            // The run ended early (a chunk went missing): close what we have.
            out.push(b'"');
            push_seq_last(out, last, &mut ibuf);
            out.extend_from_slice(b",\"q\":\"bad\",\"reason\":\"truncated\"}");
            in_string = None;
        }
        if !first {
            out.push(b',');
        }
        first = false;
        out.extend_from_slice(b"{\"seq\":");
        out.extend_from_slice(ibuf.format(r.seq).as_bytes());
        match tag_name(r) {
            Some(name) => {
                out.extend_from_slice(b",\"tag\":");
                out.extend_from_slice(name.as_bytes());
            }
            None => {
                out.extend_from_slice(b",\"tag\":null,\"tag_id\":");
                out.extend_from_slice(ibuf.format(r.tag_id).as_bytes());
            }
        }
        out.extend_from_slice(b",\"ts\":");
        out.extend_from_slice(ibuf.format(r.timestamp_ns).as_bytes());
        out.extend_from_slice(b",\"v\":");
        if is_chunk {
            out.push(b'"');
            push_str_chunk(out, r);
            if r.flags & flags::CONTINUED != 0 {
                in_string = Some(r.seq);
                continue;
            }
            out.push(b'"');
        } else {
            push_value(out, r, &mut ibuf);
        }
        close_record(out, r, &mut ibuf);
    }
    if let Some(last) = in_string {
        out.push(b'"');
        push_seq_last(out, last, &mut ibuf);
        out.extend_from_slice(b",\"q\":\"bad\",\"reason\":\"truncated\"}");
    }
    out.extend_from_slice(b"]}");
}

fn push_value(out: &mut Vec<u8>, r: &TelemetryRecord, ibuf: &mut itoa::Buffer) {
    match r.value_kind() {
        Some(ValueKind::Bool) => {
            out.extend_from_slice(if r.value[0] != 0 { b"true" } else { b"false" })
        }
        Some(ValueKind::I64) => {
            out.extend_from_slice(ibuf.format(i64::from_le_bytes(r.value)).as_bytes())
        }
        Some(ValueKind::U64) => {
            out.extend_from_slice(ibuf.format(u64::from_le_bytes(r.value)).as_bytes())
        }
        Some(ValueKind::F64) => {
            let v = f64::from_le_bytes(r.value);
            if v.is_finite() {
                out.extend_from_slice(ryu::Buffer::new().format_finite(v).as_bytes());
            } else {
                out.extend_from_slice(b"null,\"nonfinite\":");
                out.extend_from_slice(match v {
                    v if v.is_nan() => b"\"NaN\"".as_slice(),
                    v if v > 0.0 => b"\"inf\"",
                    _ => b"\"-inf\"",
                });
            }
        }
        Some(ValueKind::Empty) | Some(ValueKind::Str) | None => out.extend_from_slice(b"null"),
    }
}

/// Appends `,"seq_last":N`: a string of several chunks took one `seq` per chunk, and its
/// record covers `seq..=seq_last`, so a subscriber counting seqs sees no false gap.
fn push_seq_last(out: &mut Vec<u8>, last: u64, ibuf: &mut itoa::Buffer) {
    out.extend_from_slice(b",\"seq_last\":");
    out.extend_from_slice(ibuf.format(last).as_bytes());
}

/// Appends one chunk's bytes (up to the string's remaining length) escaped for a JSON string.
fn push_str_chunk(out: &mut Vec<u8>, r: &TelemetryRecord) {
    let len = r.value.iter().position(|&b| b == 0).unwrap_or(8);
    for c in String::from_utf8_lossy(&r.value[..len]).chars() {
        match c {
            '"' => out.extend_from_slice(b"\\\""),
            '\\' => out.extend_from_slice(b"\\\\"),
            c if (c as u32) < 0x20 => {
                out.extend_from_slice(format!("\\u{:04x}", c as u32).as_bytes())
            }
            c => {
                let mut buf = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            }
        }
    }
}

/// Appends `,"q":…` (with reason and code) and the closing brace.
fn close_record(out: &mut Vec<u8>, r: &TelemetryRecord, ibuf: &mut itoa::Buffer) {
    let detail = if r.value_kind() == Some(ValueKind::Str) {
        0
    } else {
        r.detail
    };
    let (q, reason): (&[u8], &[u8]) = match Quality::from_code(r.quality, detail) {
        Some(Quality::Good) => (b"good", b""),
        Some(Quality::Uncertain(UncertainReason::Overrun)) => (b"uncertain", b"overrun"),
        Some(Quality::Bad(BadReason::Timeout)) => (b"bad", b"timeout"),
        Some(Quality::Bad(BadReason::DeviceException(_))) => (b"bad", b"exception"),
        Some(Quality::Bad(BadReason::Disconnected)) => (b"bad", b"disconnected"),
        Some(Quality::Bad(BadReason::DecodeError)) => (b"bad", b"decode"),
        Some(Quality::Bad(BadReason::Protocol)) => (b"bad", b"protocol"),
        None if r.quality >> 14 == 1 => (b"uncertain", b"unknown"),
        None => (b"bad", b"unknown"),
    };
    out.extend_from_slice(b",\"q\":\"");
    out.extend_from_slice(q);
    out.push(b'"');
    if !reason.is_empty() {
        out.extend_from_slice(b",\"reason\":\"");
        out.extend_from_slice(reason);
        out.push(b'"');
    }
    if let Some(Quality::Bad(BadReason::DeviceException(code))) =
        Quality::from_code(r.quality, detail)
    {
        out.extend_from_slice(b",\"code\":");
        out.extend_from_slice(ibuf.format(code).as_bytes());
    }
    out.push(b'}');
}

#[cfg(test)]
mod tests {
    use super::*;
    use edgegw_ringbuf::Value;

    fn stamp(mut r: TelemetryRecord, seq: u64) -> TelemetryRecord {
        r.seq = seq;
        r.epoch = 9;
        r
    }

    fn render(records: &[TelemetryRecord]) -> serde_json::Value {
        let names: Vec<Box<str>> = ["a", "b\"q", "s"].iter().map(|n| json_string(n)).collect();
        let (gw, src, dev, grp) = (
            json_string("gw"),
            json_string("src"),
            json_string("dev"),
            json_string("g/1"),
        );
        let header = BatchHeader {
            gateway: &gw,
            source: &src,
            device: &dev,
            group: &grp,
            epoch: 9,
            replayed: true,
        };
        let mut out = Vec::new();
        render_batch(&mut out, &header, records, |r| {
            names.get(r.tag_id as usize).map(|n| &**n)
        });
        serde_json::from_slice(&out)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out)))
    }

    #[test]
    fn every_value_kind_and_quality_renders_as_valid_json() {
        let (bad_exc, detail) = Quality::Bad(BadReason::DeviceException(2)).to_code();
        let mut exc = TelemetryRecord::new(1, 0, 5, Value::Empty, bad_exc);
        exc.detail = detail;
        let records = [
            stamp(TelemetryRecord::new(1, 0, 5, Value::F64(21.5), 0), 0),
            stamp(TelemetryRecord::new(1, 1, 5, Value::Bool(true), 0), 1),
            stamp(TelemetryRecord::new(1, 0, 5, Value::I64(-7), 0x4001), 2),
            stamp(TelemetryRecord::new(1, 0, 5, Value::U64(u64::MAX), 0), 3),
            stamp(TelemetryRecord::new(1, 0, 5, Value::F64(f64::NAN), 0), 4),
            stamp(exc, 5),
            stamp(TelemetryRecord::new(1, 77, 5, Value::F64(1.0), 0), 6),
        ];
        let doc = render(&records);
        assert_eq!(doc["group"], "g/1");
        assert_eq!(doc["epoch"], 9);
        assert_eq!(doc["replayed"], true);
        let r = doc["records"].as_array().unwrap();
        assert_eq!(r.len(), 7);
        assert_eq!(
            (r[0]["seq"].as_u64(), r[0]["v"].as_f64(), r[0]["q"].as_str()),
            (Some(0), Some(21.5), Some("good"))
        );
        assert_eq!(r[1]["tag"], "b\"q");
        assert_eq!(r[1]["v"], true);
        assert_eq!(
            (
                r[2]["v"].as_i64(),
                r[2]["q"].as_str(),
                r[2]["reason"].as_str()
            ),
            (Some(-7), Some("uncertain"), Some("overrun"))
        );
        assert_eq!(r[3]["v"].as_u64(), Some(u64::MAX));
        assert_eq!(
            (r[4]["v"].is_null(), r[4]["nonfinite"].as_str()),
            (true, Some("NaN"))
        );
        assert_eq!(
            (r[5]["reason"].as_str(), r[5]["code"].as_u64()),
            (Some("exception"), Some(2))
        );
        assert_eq!(
            (r[6]["tag"].is_null(), r[6]["tag_id"].as_u64()),
            (true, Some(77))
        );
    }

    #[test]
    fn string_chunks_join_into_one_value() {
        let s = "pump \"A\" running hot";
        let chunks: Vec<_> = s.as_bytes().chunks(8).collect();
        let records: Vec<_> = chunks
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let more = i + 1 < chunks.len();
                stamp(
                    TelemetryRecord::str_chunk(1, 2, 5, c, s.len() as u32, more, 0),
                    i as u64,
                )
            })
            .chain([stamp(TelemetryRecord::new(1, 0, 5, Value::F64(2.0), 0), 9)])
            .collect();
        let doc = render(&records);
        let r = doc["records"].as_array().unwrap();
        assert_eq!(r.len(), 2);
        assert_eq!(
            (
                r[0]["v"].as_str(),
                r[0]["seq"].as_u64(),
                r[0]["tag"].as_str()
            ),
            (Some(s), Some(0), Some("s"))
        );
        assert_eq!(
            r[0]["seq_last"].as_u64(),
            Some(chunks.len() as u64 - 1),
            "the string covers the seqs of all its chunks"
        );
        assert_eq!(r[1]["v"], 2.0);
        assert_eq!(
            r[1].get("seq_last"),
            None,
            "only multi-chunk strings carry it"
        );

        // A run cut by the end of the batch still renders as valid JSON and says so.
        let doc = render(&records[..2]);
        assert_eq!(doc["records"][0]["reason"], "truncated");
        assert_eq!(doc["records"][0]["seq_last"], 1);
    }
}
