//! The poller: one task per [`ModbusLink`] walks the request plan on schedule, turns answers
//! into readings and emits what report-by-exception lets through.
//!
//! # Design constraints
//! - One task per link (a TCP device, or a serial line with its units): a device that times
//!   out or disconnects only ever delays its own link. On a serial line the units share the
//!   wire, so a silent unit costs its line one request timeout per poll — and only one: the
//!   rest of that unit's reads in the cycle are skipped and marked with the same quality.
//! - Overruns never pile up: each group keeps its own due time; a cycle that ends after the
//!   next due time skips the missed ticks (like tokio's `MissedTickBehavior::Skip`) and counts
//!   them in [`LinkCounters::overruns`]. Readings of a cycle that itself took longer than its
//!   interval (answers arriving after start + interval) are marked
//!   [`Uncertain(Overrun)`](crate::quality::UncertainReason::Overrun); a cycle that merely
//!   started late (another unit held the line) reads fresh values and stays good.
//! - Device exceptions are not transport errors: tokio-modbus answers
//!   `Result<Result<T, ExceptionCode>, Error>`; an exception marks the read's tags
//!   `Bad(DeviceException(code))` and keeps the connection, a transport error marks them
//!   `Bad(Disconnected)` (or `Bad(Timeout)`, `Bad(Protocol)`) and drops it.
//! - No allocation of our own per poll: filters, text buffers and schedules are allocated when
//!   the link starts. tokio-modbus allocates a few short-lived buffers per request (the boxed
//!   request future, the response vector); `tests/no_alloc_per_poll.rs` pins that count.
//!
//! # Operation
//! Wait for the earliest due group → (re)connect if needed, honouring the backoff → issue the
//! group's reads in plan order, each under the device's request timeout → decode, filter, emit
//! → schedule the group's next due time. While disconnected, every group that comes due emits
//! `Bad(Disconnected)` (once: the filter suppresses repeats) and connecting is retried with
//! exponential backoff and jitter.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant, SystemTime};

use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};
use tokio_modbus::client::{Context, Reader};
use tokio_modbus::prelude::SlaveContext;
use tokio_modbus::{ExceptionCode, Slave};

use crate::emit::{Emitter, RecordSink};
use crate::modbus::config::{Backoff, ModbusDevice, ModbusLink, SerialSettings, Transport};
use crate::modbus::decode::{RegisterCodec, decode_bit, decode_registers};
use crate::modbus::plan::PlannedRead;
use crate::quality::{BadReason, Quality, UncertainReason};
use crate::tag::{DataType, ReportFilter, Table};

/// Live counters of one link, readable while it runs (relaxed atomics: monotone statistics).
#[derive(Debug, Default)]
pub struct LinkCounters {
    /// Group cycles completed.
    pub polls: AtomicU64,
    /// Read requests sent.
    pub requests: AtomicU64,
    /// Poll ticks skipped because a cycle ended after the next one was due.
    pub overruns: AtomicU64,
    /// Requests that got no answer in time.
    pub timeouts: AtomicU64,
    /// Requests answered with a Modbus exception.
    pub exceptions: AtomicU64,
    /// Requests that failed in transport or protocol (connection dropped).
    pub transport_errors: AtomicU64,
    /// Of `transport_errors`, those that were protocol errors (a malformed or mismatched
    /// answer) rather than a lost connection.
    pub protocol_errors: AtomicU64,
    /// Tag values that did not decode (quality `Bad(DecodeError)`).
    pub decode_errors: AtomicU64,
    /// When the last read answered with data, in ns since the Unix epoch; 0 before the first.
    pub last_good_unix_ns: AtomicU64,
    /// Successful connects.
    pub connects: AtomicU64,
    /// Failed connect attempts.
    pub connect_failures: AtomicU64,
    /// Tag values polled (good or uncertain), whether reported or not.
    pub points: AtomicU64,
}

impl LinkCounters {
    fn bump(c: &AtomicU64) {
        c.fetch_add(1, Relaxed);
    }

    /// A plain copy of the counters.
    pub fn snapshot(&self) -> LinkStats {
        LinkStats {
            polls: self.polls.load(Relaxed),
            requests: self.requests.load(Relaxed),
            overruns: self.overruns.load(Relaxed),
            timeouts: self.timeouts.load(Relaxed),
            exceptions: self.exceptions.load(Relaxed),
            transport_errors: self.transport_errors.load(Relaxed),
            protocol_errors: self.protocol_errors.load(Relaxed),
            decode_errors: self.decode_errors.load(Relaxed),
            last_good_unix_ns: self.last_good_unix_ns.load(Relaxed),
            connects: self.connects.load(Relaxed),
            connect_failures: self.connect_failures.load(Relaxed),
            points: self.points.load(Relaxed),
        }
    }
}

/// A snapshot of [`LinkCounters`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[allow(missing_docs)]
pub struct LinkStats {
    pub polls: u64,
    pub requests: u64,
    pub overruns: u64,
    pub timeouts: u64,
    pub exceptions: u64,
    pub transport_errors: u64,
    pub protocol_errors: u64,
    pub decode_errors: u64,
    pub last_good_unix_ns: u64,
    pub connects: u64,
    pub connect_failures: u64,
    pub points: u64,
}

/// Polls every device of `link` until `shutdown` completes, emitting into `emitter`.
///
/// This is the adapter's entry point: the gateway runs it (one call per link, each in its own
/// task) in the adapter child process that owns the ring's producer.
pub async fn run_link<S: RecordSink>(
    link: &ModbusLink,
    emitter: &mut Emitter<S>,
    counters: &LinkCounters,
    shutdown: impl Future<Output = ()>,
) {
    let mut poller = LinkPoller::new(link, counters);
    tokio::select! {
        () = shutdown => {}
        () = poller.run(emitter) => {}
    }
    if let Some(mut ctx) = poller.conn.take() {
        // Best effort: the peer learns we are gone; a failure here changes nothing.
        let _ = tokio::time::timeout(
            Duration::from_millis(100),
            tokio_modbus::client::Client::disconnect(&mut ctx),
        )
        .await;
    }
}

/// Per-device poll state, allocated once.
struct DeviceState {
    filters: Vec<ReportFilter>,
    codecs: Vec<RegisterCodec>,
    text_buf: Vec<u8>,
}

struct Due {
    device: usize,
    group: usize,
    at: Instant,
}

enum ReadOutcome {
    Ok,
    /// The unit failed (timeout): skip its remaining reads this cycle, keep the link.
    UnitFailed(BadReason),
    /// The link failed: drop the connection.
    LinkFailed(BadReason),
}

struct LinkPoller<'a> {
    link: &'a ModbusLink,
    counters: &'a LinkCounters,
    devices: Vec<DeviceState>,
    schedule: Vec<Due>,
    conn: Option<Context>,
    next_connect: Instant,
    attempt: u32,
    rng: SmallRng,
    epoch: Instant,
}

impl<'a> LinkPoller<'a> {
    fn new(link: &'a ModbusLink, counters: &'a LinkCounters) -> Self {
        let now = Instant::now();
        let devices = link
            .devices
            .iter()
            .map(|d| DeviceState {
                filters: d.tags.iter().map(ReportFilter::new).collect(),
                codecs: d
                    .tags
                    .iter()
                    .map(|t| RegisterCodec {
                        data_type: t.data_type,
                        order: t.order,
                        bit: t.bit,
                        scaling: t.scaling,
                    })
                    .collect(),
                text_buf: vec![
                    0;
                    d.tags
                        .iter()
                        .map(|t| match t.data_type {
                            DataType::String { registers } => usize::from(registers) * 2,
                            _ => 0,
                        })
                        .max()
                        .unwrap_or(0)
                ],
            })
            .collect();
        let schedule = link
            .devices
            .iter()
            .enumerate()
            .flat_map(|(di, d)| {
                (0..d.groups.len()).map(move |gi| Due {
                    device: di,
                    group: gi,
                    at: now,
                })
            })
            .collect();
        Self {
            link,
            counters,
            devices,
            schedule,
            conn: None,
            next_connect: now,
            attempt: 0,
            rng: SmallRng::seed_from_u64(rand::rng().random()),
            epoch: now,
        }
    }

    async fn run<S: RecordSink>(&mut self, emitter: &mut Emitter<S>) {
        if self.schedule.is_empty() {
            return std::future::pending().await;
        }
        loop {
            let next = (0..self.schedule.len())
                .min_by_key(|&i| self.schedule[i].at)
                .unwrap_or(0);
            let due = self.schedule[next].at;
            tokio::time::sleep_until(due.into()).await;
            let (di, gi) = (self.schedule[next].device, self.schedule[next].group);
            emitter.begin_batch();
            if self.conn.is_none() && Instant::now() >= self.next_connect {
                self.connect().await;
            }
            if self.conn.is_some() {
                // Readings are uncertain if the cycle itself takes longer than its interval.
                // A cycle that merely starts late (another unit held the line, a reconnect took
                // time) reads fresh values: its skipped ticks are counted, its values are good.
                self.poll_group(di, gi, Instant::now(), emitter).await;
            } else {
                self.mark_group(di, gi, 0, Quality::Bad(BadReason::Disconnected), emitter);
            }
            LinkCounters::bump(&self.counters.polls);
            self.reschedule(next);
        }
    }

    fn reschedule(&mut self, i: usize) {
        let interval =
            self.link.devices[self.schedule[i].device].groups[self.schedule[i].group].interval;
        let now = Instant::now();
        let mut at = self.schedule[i].at + interval;
        if at <= now {
            let behind = now.duration_since(at).as_nanos() / interval.as_nanos().max(1);
            let missed = u64::try_from(behind).unwrap_or(u64::MAX).saturating_add(1);
            self.counters.overruns.fetch_add(missed, Relaxed);
            at += interval.saturating_mul(u32::try_from(missed).unwrap_or(u32::MAX));
        }
        self.schedule[i].at = at;
    }

    async fn connect(&mut self) {
        let res = match &self.link.transport {
            Transport::Tcp {
                address,
                connect_timeout,
            } => connect_tcp(address, *connect_timeout).await,
            Transport::Rtu(serial) => open_serial(serial),
        };
        match res {
            Ok(ctx) => {
                tracing::info!(link = %self.link.name, attempts = self.attempt + 1, "connected");
                LinkCounters::bump(&self.counters.connects);
                self.conn = Some(ctx);
                self.attempt = 0;
            }
            Err(e) => {
                let delay = backoff_delay(self.link.backoff, self.attempt, &mut self.rng);
                tracing::warn!(link = %self.link.name, error = %e, retry_in_ms = delay.as_millis() as u64, "connect failed");
                LinkCounters::bump(&self.counters.connect_failures);
                self.attempt = self.attempt.saturating_add(1);
                self.next_connect = Instant::now() + delay;
            }
        }
    }

    fn link_lost(&mut self, reason: BadReason) {
        tracing::warn!(link = %self.link.name, ?reason, "connection dropped");
        self.conn = None;
        // Reconnect at once on the next due poll; failures from then on back off.
        self.next_connect = Instant::now();
        self.attempt = 0;
    }

    async fn poll_group<S: RecordSink>(
        &mut self,
        di: usize,
        gi: usize,
        cycle_start: Instant,
        emitter: &mut Emitter<S>,
    ) {
        let link = self.link;
        let device = &link.devices[di];
        let group = &device.groups[gi];
        let late_at = cycle_start + group.interval;
        for (ri, read) in group.reads.iter().enumerate() {
            let Some(ctx) = self.conn.as_mut() else {
                return;
            };
            if let Transport::Rtu(s) = &link.transport {
                tokio::time::sleep(s.frame_gap).await;
            }
            ctx.set_slave(Slave(device.unit_id));
            LinkCounters::bump(&self.counters.requests);
            let env = ReadEnv {
                device,
                late_at,
                epoch: self.epoch,
                counters: self.counters,
                shared_line: matches!(link.transport, Transport::Rtu(_)),
            };
            let outcome = execute_read(ctx, read, &mut self.devices[di], &env, emitter).await;
            match outcome {
                ReadOutcome::Ok => {}
                ReadOutcome::UnitFailed(reason) => {
                    self.mark_group(di, gi, ri + 1, Quality::Bad(reason), emitter);
                    return;
                }
                ReadOutcome::LinkFailed(reason) => {
                    self.mark_group(di, gi, ri + 1, Quality::Bad(reason), emitter);
                    self.link_lost(reason);
                    return;
                }
            }
        }
    }

    /// Marks the tags of reads `from..` of a group with `quality` (no value).
    fn mark_group<S: RecordSink>(
        &mut self,
        di: usize,
        gi: usize,
        from: usize,
        quality: Quality,
        emitter: &mut Emitter<S>,
    ) {
        let device = &self.link.devices[di];
        let state = &mut self.devices[di];
        let ts = unix_ns();
        let mono = mono_ns(self.epoch);
        for read in &device.groups[gi].reads[from..] {
            mark_read(device, read, state, quality, ts, mono, emitter);
        }
    }
}

fn mark_read<S: RecordSink>(
    device: &ModbusDevice,
    read: &PlannedRead,
    state: &mut DeviceState,
    quality: Quality,
    ts: u64,
    mono: u64,
    emitter: &mut Emitter<S>,
) {
    for slot in &read.slots {
        let f = &mut state.filters[slot.tag as usize];
        if f.should_report(quality, None, mono)
            && emitter.emit(device.source_id, slot.tag, ts, quality, None)
        {
            f.reported(quality, None, mono);
        }
    }
}

/// What a read needs to know besides the read itself.
struct ReadEnv<'a> {
    device: &'a ModbusDevice,
    /// After this instant the answer is late (the group's next tick has passed).
    late_at: Instant,
    epoch: Instant,
    counters: &'a LinkCounters,
    /// The device shares a serial line: a timeout concerns this unit only. On TCP a late
    /// answer would desynchronise the stream, so a timeout drops the connection.
    shared_line: bool,
}

async fn execute_read<S: RecordSink>(
    ctx: &mut Context,
    read: &PlannedRead,
    state: &mut DeviceState,
    env: &ReadEnv<'_>,
    emitter: &mut Emitter<S>,
) -> ReadOutcome {
    let ReadEnv {
        device,
        late_at,
        epoch,
        counters,
        shared_line,
    } = *env;
    let (addr, qty) = (read.address, read.quantity);
    let answer = tokio::time::timeout(device.timeout, async {
        match read.table {
            Table::Coil => ctx.read_coils(addr, qty).await.map(|r| r.map(Answer::Bits)),
            Table::DiscreteInput => ctx
                .read_discrete_inputs(addr, qty)
                .await
                .map(|r| r.map(Answer::Bits)),
            Table::HoldingRegister => ctx
                .read_holding_registers(addr, qty)
                .await
                .map(|r| r.map(Answer::Words)),
            Table::InputRegister => ctx
                .read_input_registers(addr, qty)
                .await
                .map(|r| r.map(Answer::Words)),
        }
    })
    .await;
    let arrived = Instant::now();
    let ts = unix_ns();
    let mono = mono_ns(epoch);
    let answer = match answer {
        Err(_elapsed) => {
            LinkCounters::bump(&counters.timeouts);
            let q = Quality::Bad(BadReason::Timeout);
            mark_read(device, read, state, q, ts, mono, emitter);
            return if shared_line {
                ReadOutcome::UnitFailed(BadReason::Timeout)
            } else {
                ReadOutcome::LinkFailed(BadReason::Timeout)
            };
        }
        Ok(Err(e)) => {
            LinkCounters::bump(&counters.transport_errors);
            let reason = match e {
                tokio_modbus::Error::Protocol(_) => {
                    LinkCounters::bump(&counters.protocol_errors);
                    BadReason::Protocol
                }
                tokio_modbus::Error::Transport(_) => BadReason::Disconnected,
            };
            tracing::debug!(device = %device.name, error = %e, "read failed");
            mark_read(device, read, state, Quality::Bad(reason), ts, mono, emitter);
            return ReadOutcome::LinkFailed(reason);
        }
        Ok(Ok(Err(exception))) => {
            LinkCounters::bump(&counters.exceptions);
            let q = Quality::Bad(BadReason::DeviceException(exception_code(exception)));
            mark_read(device, read, state, q, ts, mono, emitter);
            return ReadOutcome::Ok;
        }
        Ok(Ok(Ok(answer))) => answer,
    };
    let quality = if arrived > late_at {
        Quality::Uncertain(UncertainReason::Overrun)
    } else {
        Quality::Good
    };
    counters.last_good_unix_ns.store(ts, Relaxed);
    let mut points = 0u64;
    let mut decode_errors = 0u64;
    for slot in &read.slots {
        let i = slot.tag as usize;
        let off = usize::from(slot.offset);
        let decoded = match &answer {
            Answer::Bits(bits) => decode_bit(bits, off),
            Answer::Words(words) => decode_registers(
                words.get(off..).unwrap_or(&[]),
                &state.codecs[i],
                &mut state.text_buf,
            ),
        };
        let (q, reading) = match decoded {
            Ok(r) => {
                points += 1;
                (quality, Some(r))
            }
            Err(_) => {
                decode_errors += 1;
                (Quality::Bad(BadReason::DecodeError), None)
            }
        };
        let f = &mut state.filters[i];
        if f.should_report(q, reading, mono)
            && emitter.emit(device.source_id, slot.tag, ts, q, reading)
        {
            f.reported(q, reading, mono);
        }
    }
    counters.points.fetch_add(points, Relaxed);
    if decode_errors > 0 {
        counters.decode_errors.fetch_add(decode_errors, Relaxed);
    }
    ReadOutcome::Ok
}

enum Answer {
    Words(Vec<u16>),
    Bits(Vec<bool>),
}

fn exception_code(e: ExceptionCode) -> u8 {
    u8::from(e)
}

fn unix_ns() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

fn mono_ns(epoch: Instant) -> u64 {
    u64::try_from(epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// Delay before reconnect attempt `attempt` (0-based): `min * 2^attempt`, capped at `max`,
/// with "equal jitter": uniformly in `[d/2, d]`, so a fleet of adapters does not reconnect in
/// lockstep after a shared outage.
pub fn backoff_delay(b: Backoff, attempt: u32, rng: &mut SmallRng) -> Duration {
    let d = b.min.saturating_mul(1u32 << attempt.min(20)).min(b.max);
    let half = d / 2;
    let jitter_ns = u64::try_from(half.as_nanos()).unwrap_or(u64::MAX);
    half + Duration::from_nanos(if jitter_ns == 0 {
        0
    } else {
        rng.random_range(0..=jitter_ns)
    })
}

async fn connect_tcp(address: &str, connect_timeout: Duration) -> std::io::Result<Context> {
    let stream = tokio::time::timeout(connect_timeout, tokio::net::TcpStream::connect(address))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"))??;
    stream.set_nodelay(true)?;
    Ok(tokio_modbus::client::tcp::attach(stream))
}

fn open_serial(s: &SerialSettings) -> std::io::Result<Context> {
    use tokio_serial::SerialPortBuilderExt as _;
    let parity = match s.parity {
        crate::config::Parity::None => tokio_serial::Parity::None,
        crate::config::Parity::Even => tokio_serial::Parity::Even,
        crate::config::Parity::Odd => tokio_serial::Parity::Odd,
    };
    let data_bits = if s.data_bits == 7 {
        tokio_serial::DataBits::Seven
    } else {
        tokio_serial::DataBits::Eight
    };
    let stop_bits = if s.stop_bits == 2 {
        tokio_serial::StopBits::Two
    } else {
        tokio_serial::StopBits::One
    };
    let port = tokio_serial::new(&s.port, s.baud)
        .parity(parity)
        .data_bits(data_bits)
        .stop_bits(stop_bits)
        .open_native_async()?;
    Ok(tokio_modbus::client::rtu::attach(port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_and_is_capped() {
        let b = Backoff {
            min: Duration::from_millis(100),
            max: Duration::from_secs(2),
        };
        let mut rng = SmallRng::seed_from_u64(1);
        for attempt in 0..10 {
            let full = Duration::from_millis(100)
                .saturating_mul(1 << attempt)
                .min(b.max);
            for _ in 0..50 {
                let d = backoff_delay(b, attempt, &mut rng);
                assert!(
                    d >= full / 2 && d <= full,
                    "attempt {attempt}: {d:?} not in [{:?}, {full:?}]",
                    full / 2
                );
            }
        }
    }
}
