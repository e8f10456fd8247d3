//! The spool's batch encoding: a batch of telemetry records, column by column, in a few bytes
//! per record.
//!
//! # Format (version 1)
//! All integers are LEB128 varints; signed deltas are zigzag-encoded first.
//! ```text
//! u8 version = 1
//! varint count                     records in the batch
//! names:    varint n, then n × (varint source_id, varint tag_id, varint len, len bytes)
//!           the tag names of this batch (as JSON string literals), so a replay names tags
//!           correctly even after the configuration changed
//! source_id: runs of (varint length, varint value)
//! tag_id:    zigzag delta from the previous record's tag_id
//! epoch:     runs
//! seq:       first value, then runs of (length, zigzag delta)   usually one run of +1
//! timestamp: zigzag delta from the previous record              0 within one poll
//! quality, kind, flags, detail: runs
//! values:    by kind: F64 as 1 byte n + the n high bytes of its bits (f32-derived and
//!            scaled integer values end in zero bytes); I64 zigzag; U64 varint; Bool 1 byte;
//!            Str 8 raw bytes; Empty nothing
//! ```
//! Decoding checks every length and count, and reports where it stopped; it never panics on
//! malformed input.

use edgegw_ringbuf::{TelemetryRecord, ValueKind};

/// Current format version (the first byte of every blob).
pub const VERSION: u8 = 1;

/// A blob did not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("spool batch blob: {what} at byte {offset}")]
pub struct BlobDecodeError {
    /// What was wrong.
    pub what: &'static str,
    /// Where decoding stopped.
    pub offset: usize,
}

/// Tag names carried in a blob: `(record source_id, tag_id, JSON string literal)`.
pub type NameTable = Vec<(u32, u32, Box<str>)>;

fn put(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

/// Run-length encodes `values`.
fn put_runs(out: &mut Vec<u8>, values: impl Iterator<Item = u64>) {
    let mut run: Option<(u64, u64)> = None;
    for v in values {
        match &mut run {
            Some((len, cur)) if *cur == v => *len += 1,
            _ => {
                if let Some((len, cur)) = run {
                    put(out, len);
                    put(out, cur);
                }
                run = Some((1, v));
            }
        }
    }
    if let Some((len, cur)) = run {
        put(out, len);
        put(out, cur);
    }
}

/// Encodes records (given as the two slices a ring read hands out, or any slices) with the
/// tag names `name` returns.
pub fn encode<'a>(
    records: &[&[TelemetryRecord]],
    name: impl Fn(&TelemetryRecord) -> Option<&'a str>,
) -> Vec<u8> {
    let all = || records.iter().flat_map(|s| s.iter());
    let count: usize = records.iter().map(|s| s.len()).sum();
    let mut out = Vec::with_capacity(16 + count * 8);
    out.push(VERSION);
    put(&mut out, count as u64);

    let mut names: Vec<(u32, u32, &str)> = Vec::new();
    for r in all() {
        let known = names
            .iter()
            .any(|(s, t, _)| *s == r.source_id && *t == r.tag_id);
        if !known && let Some(n) = name(r) {
            names.push((r.source_id, r.tag_id, n));
        }
    }
    put(&mut out, names.len() as u64);
    for (s, t, n) in &names {
        put(&mut out, u64::from(*s));
        put(&mut out, u64::from(*t));
        put(&mut out, n.len() as u64);
        out.extend_from_slice(n.as_bytes());
    }

    put_runs(&mut out, all().map(|r| u64::from(r.source_id)));
    let mut prev = 0i64;
    for r in all() {
        put(&mut out, zigzag(i64::from(r.tag_id) - prev));
        prev = i64::from(r.tag_id);
    }
    put_runs(&mut out, all().map(|r| r.epoch));
    if let Some(first) = all().next() {
        put(&mut out, first.seq);
        let deltas = all()
            .zip(all().skip(1))
            .map(|(a, b)| zigzag(b.seq.wrapping_sub(a.seq) as i64));
        put_runs(&mut out, deltas);
    }
    let mut prev = 0u64;
    for r in all() {
        put(&mut out, zigzag(r.timestamp_ns.wrapping_sub(prev) as i64));
        prev = r.timestamp_ns;
    }
    put_runs(&mut out, all().map(|r| u64::from(r.quality)));
    put_runs(&mut out, all().map(|r| u64::from(r.kind)));
    put_runs(&mut out, all().map(|r| u64::from(r.flags)));
    put_runs(&mut out, all().map(|r| u64::from(r.detail)));
    for r in all() {
        match r.value_kind() {
            Some(ValueKind::F64) => {
                let bits = u64::from_le_bytes(r.value);
                let n = 8 - (bits.trailing_zeros() / 8).min(8) as usize;
                out.push(n as u8);
                out.extend_from_slice(&bits.to_be_bytes()[..n]);
            }
            Some(ValueKind::I64) => put(&mut out, zigzag(i64::from_le_bytes(r.value))),
            Some(ValueKind::U64) => put(&mut out, u64::from_le_bytes(r.value)),
            Some(ValueKind::Bool) => out.push(r.value[0]),
            Some(ValueKind::Empty) => {}
            Some(ValueKind::Str) | None => out.extend_from_slice(&r.value),
        }
    }
    out
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn fail<T>(&self, what: &'static str) -> Result<T, BlobDecodeError> {
        Err(BlobDecodeError {
            what,
            offset: self.pos,
        })
    }

    fn byte(&mut self) -> Result<u8, BlobDecodeError> {
        let Some(&b) = self.buf.get(self.pos) else {
            return self.fail("unexpected end");
        };
        self.pos += 1;
        Ok(b)
    }

    fn bytes(&mut self, n: usize) -> Result<&'a [u8], BlobDecodeError> {
        if self.buf.len() - self.pos < n {
            return self.fail("unexpected end");
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn varint(&mut self) -> Result<u64, BlobDecodeError> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        self.fail("varint too long")
    }

    fn small<T: TryFrom<u64>>(&mut self, what: &'static str) -> Result<T, BlobDecodeError> {
        let v = self.varint()?;
        T::try_from(v).or_else(|_| self.fail(what))
    }

    /// Reads runs covering exactly `count` values, calling `set(index, value)`.
    fn runs(
        &mut self,
        count: usize,
        mut set: impl FnMut(usize, u64) -> bool,
    ) -> Result<(), BlobDecodeError> {
        let mut i = 0;
        while i < count {
            let len = self.varint()?;
            let v = self.varint()?;
            if len == 0 || len > (count - i) as u64 {
                return self.fail("run length out of range");
            }
            for _ in 0..len {
                if !set(i, v) {
                    return self.fail("value out of range");
                }
                i += 1;
            }
        }
        Ok(())
    }
}

/// Decodes a blob into its records and tag names.
pub fn decode(blob: &[u8]) -> Result<(Vec<TelemetryRecord>, NameTable), BlobDecodeError> {
    let mut r = Reader { buf: blob, pos: 0 };
    if r.byte()? != VERSION {
        return r.fail("unknown format version");
    }
    let count: usize = r.small("record count too large")?;
    // Every record takes at least one byte (its tag delta): a larger count is a lie.
    if count > blob.len() {
        return r.fail("record count exceeds blob size");
    }
    let n_names: usize = r.small("name count too large")?;
    if n_names > blob.len() {
        return r.fail("name count exceeds blob size");
    }
    let mut names = Vec::with_capacity(n_names);
    for _ in 0..n_names {
        let s: u32 = r.small("source id out of range")?;
        let t: u32 = r.small("tag id out of range")?;
        let len: usize = r.small("name length out of range")?;
        let bytes = r.bytes(len)?;
        let Ok(name) = std::str::from_utf8(bytes) else {
            return r.fail("tag name is not UTF-8");
        };
        names.push((s, t, name.into()));
    }

    let mut recs = vec![TelemetryRecord::new(0, 0, 0, edgegw_ringbuf::Value::Empty, 0); count];
    r.runs(count, |i, v| {
        u32::try_from(v).map(|v| recs[i].source_id = v).is_ok()
    })?;
    let mut prev = 0i64;
    for rec in recs.iter_mut() {
        let t = prev + unzigzag(r.varint()?);
        rec.tag_id = u32::try_from(t).or_else(|_| r.fail("tag id out of range"))?;
        prev = t;
    }
    r.runs(count, |i, v| {
        recs[i].epoch = v;
        true
    })?;
    if count > 0 {
        recs[0].seq = r.varint()?;
        let mut deltas = vec![0u64; count - 1];
        r.runs(count - 1, |i, v| {
            deltas[i] = unzigzag(v) as u64;
            true
        })?;
        for i in 1..count {
            recs[i].seq = recs[i - 1].seq.wrapping_add(deltas[i - 1]);
        }
    }
    let mut prev = 0u64;
    for rec in recs.iter_mut() {
        rec.timestamp_ns = prev.wrapping_add(unzigzag(r.varint()?) as u64);
        prev = rec.timestamp_ns;
    }
    r.runs(count, |i, v| {
        u16::try_from(v).map(|v| recs[i].quality = v).is_ok()
    })?;
    r.runs(count, |i, v| {
        u8::try_from(v).map(|v| recs[i].kind = v).is_ok()
    })?;
    r.runs(count, |i, v| {
        u8::try_from(v).map(|v| recs[i].flags = v).is_ok()
    })?;
    r.runs(count, |i, v| {
        u32::try_from(v).map(|v| recs[i].detail = v).is_ok()
    })?;
    for rec in recs.iter_mut() {
        rec.value = match rec.value_kind() {
            Some(ValueKind::F64) => {
                let n = r.byte()? as usize;
                if n > 8 {
                    return r.fail("float length out of range");
                }
                let mut be = [0u8; 8];
                be[..n].copy_from_slice(r.bytes(n)?);
                u64::from_be_bytes(be).to_le_bytes()
            }
            Some(ValueKind::I64) => unzigzag(r.varint()?).to_le_bytes(),
            Some(ValueKind::U64) => r.varint()?.to_le_bytes(),
            Some(ValueKind::Bool) => [r.byte()?, 0, 0, 0, 0, 0, 0, 0],
            Some(ValueKind::Empty) => [0; 8],
            Some(ValueKind::Str) | None => r.bytes(8)?.try_into().expect("8 bytes"),
        };
    }
    if r.pos != blob.len() {
        return r.fail("trailing bytes");
    }
    Ok((recs, names))
}

#[cfg(test)]
mod tests {
    use super::*;
    use edgegw_ringbuf::Value;
    use proptest::prelude::*;

    fn arb_record() -> impl Strategy<Value = TelemetryRecord> {
        (
            (0u32..3, 0u32..50, 0u64..3, any::<u64>(), any::<u64>()),
            (
                0u8..7,
                any::<[u8; 8]>(),
                any::<u16>(),
                any::<u8>(),
                any::<u32>(),
            ),
        )
            .prop_map(
                |((source_id, tag_id, epoch, seq, ts), (kind, value, quality, flags, detail))| {
                    let mut r = TelemetryRecord::new(source_id, tag_id, ts, Value::Empty, quality);
                    r.epoch = epoch;
                    r.seq = seq;
                    r.kind = kind;
                    // Bool keeps one byte, Empty none: normalise what the codec does not keep.
                    r.value = match ValueKind::from_u8(kind) {
                        Some(ValueKind::Bool) => [value[0], 0, 0, 0, 0, 0, 0, 0],
                        Some(ValueKind::Empty) => [0; 8],
                        _ => value,
                    };
                    r.flags = flags;
                    r.detail = detail;
                    r
                },
            )
    }

    proptest! {
        #[test]
        fn any_records_round_trip_bit_exactly(recs in prop::collection::vec(arb_record(), 0..200), split in 0usize..200) {
            let split = split.min(recs.len());
            let blob = encode(&[&recs[..split], &recs[split..]], |r| (r.tag_id.is_multiple_of(2)).then_some("\"even\""));
            let (back, names) = decode(&blob).unwrap();
            prop_assert_eq!(back, recs.clone());
            prop_assert!(names.iter().all(|(_, t, n)| t.is_multiple_of(2) && &**n == "\"even\""));
        }

        #[test]
        fn random_bytes_never_panic(mut bytes in prop::collection::vec(any::<u8>(), 0..300)) {
            if let Some(b) = bytes.first_mut() { *b = VERSION; }
            let _ = decode(&bytes);
        }
    }

    #[test]
    fn a_realistic_poll_batch_takes_few_bytes_per_record() {
        // 100 tags polled every 100 ms: f32 values and scaled u16s, consecutive seqs.
        let mut recs = Vec::new();
        let mut seq = 1000;
        for poll in 0..10u64 {
            for tag in 0..100u32 {
                let v = if tag.is_multiple_of(2) {
                    f64::from((tag as f32) * 1.37 + poll as f32 * 0.25)
                } else {
                    f64::from(1200 + tag as u16 + poll as u16) * 0.1
                };
                let mut r = TelemetryRecord::new(
                    3,
                    tag,
                    1_795_000_000_000_000_000 + poll * 100_000_000,
                    Value::F64(v),
                    0,
                );
                r.seq = seq;
                r.epoch = 7;
                seq += 1;
                recs.push(r);
            }
        }
        let blob = encode(&[&recs], |_| Some("\"tag_name_x\""));
        let per_record = blob.len() as f64 / recs.len() as f64;
        // The spool's target is ≤ 16 bytes per record on disk, SQLite overhead included.
        assert!(per_record < 12.0, "{per_record} bytes per record");
        assert_eq!(decode(&blob).unwrap().0, recs);
    }

    #[test]
    fn corrupt_blobs_say_where() {
        assert_eq!(decode(&[]).unwrap_err().what, "unexpected end");
        assert_eq!(decode(&[9]).unwrap_err().what, "unknown format version");
        let recs = [TelemetryRecord::new(1, 2, 3, Value::F64(1.5), 0)];
        let mut blob = encode(&[&recs], |_| None);
        blob.push(0);
        assert_eq!(decode(&blob).unwrap_err().what, "trailing bytes");
        blob.truncate(blob.len() - 3);
        assert_eq!(decode(&blob).unwrap_err().what, "unexpected end");
    }
}
