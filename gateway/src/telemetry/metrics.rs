//! The Prometheus exposition: every metric is read at scrape time from the live counters
//! (no second bookkeeping that could drift), through a `prometheus-client` [`Collector`].
//!
//! Names (`edgegw_` prefix; counters end in `_total`), labels in braces:
//! - adapters, per `source` (one adapter process: a Modbus TCP device, a serial line with its
//!   units, or a synthetic source): `adapter_polls`, `adapter_requests`,
//!   `adapter_errors{kind=timeout|exception|disconnected|protocol|decode}`, `adapter_overruns`,
//!   `adapter_connects`, `adapter_last_good_poll_age_seconds` (absent before the first good
//!   read), `adapter_report_age_seconds`, `adapter_restarts`, `adapter_up`;
//! - rings, per `source`: `ring_occupancy_records`, `ring_capacity_records`,
//!   `ring_dropped_records` (ring full);
//! - forwarder: `forwarder_published_batches`, `forwarder_acknowledged_batches`,
//!   `forwarder_in_flight_batches`, `forwarder_reconnects`, `forwarder_connect_failures`,
//!   `forwarder_resent_batches`, `broker_connected`;
//! - spool: `spool_rows`, `spool_records`, `spool_bytes`, `spool_file_bytes`,
//!   `spool_oldest_record_age_seconds` (0 when empty), `spool_spilled_batches`,
//!   `spool_spilled_records`, `spool_replayed_batches`, `spool_replayed_records`,
//!   `spool_dropped_records{reason=bound|write_failed|undecodable}`;
//! - gaps: `gap_records{cause=ring_full|spool_bound|spool_write_failed|spool_undecodable}`
//!   (records missing from the sequence because they were dropped), `gaps{cause=spool_bound|
//!   spool_undecodable}` (sequence gaps: one per dropped batch);
//! - the process: `up_seconds`, `ready`, `events{event}` (named internal events),
//!   `log_lines{level}` (every log line written), `build_info{version}`.

use std::fmt::Error as FmtError;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{SystemTime, UNIX_EPOCH};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use super::Telemetry;
use super::events::{self, Event, LEVELS};
use super::report::ErrorCounts;

/// The registry of a gateway's metrics.
pub fn registry(telemetry: Arc<Telemetry>) -> Registry {
    let mut r = Registry::with_prefix("edgegw");
    r.register_collector(Box::new(GatewayCollector(telemetry)));
    r
}

/// Renders the registry as OpenMetrics text, with the spool depth last read by
/// [`Telemetry::refresh_spool`].
pub fn render(registry: &Registry) -> String {
    let mut out = String::with_capacity(8 * 1024);
    // Writing into a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut out, registry);
    out
}

#[derive(Debug)]
struct GatewayCollector(Arc<Telemetry>);

type Labels<'a> = Vec<(&'static str, &'a str)>;

/// Writes one metric family.
struct Family<'e, 'r> {
    enc: &'e mut DescriptorEncoder<'r>,
}

impl Family<'_, '_> {
    fn counter<'l>(
        &mut self,
        name: &str,
        help: &str,
        samples: impl IntoIterator<Item = (Labels<'l>, u64)>,
    ) -> Result<(), FmtError> {
        let mut m = self
            .enc
            .encode_descriptor(name, help, None, MetricType::Counter)?;
        for (labels, v) in samples {
            ConstCounter::new(v).encode(m.encode_family(&labels.as_slice())?)?;
        }
        Ok(())
    }

    fn gauge<'l>(
        &mut self,
        name: &str,
        help: &str,
        samples: impl IntoIterator<Item = (Labels<'l>, f64)>,
    ) -> Result<(), FmtError> {
        let mut m = self
            .enc
            .encode_descriptor(name, help, None, MetricType::Gauge)?;
        for (labels, v) in samples {
            ConstGauge::new(v).encode(m.encode_family(&labels.as_slice())?)?;
        }
        Ok(())
    }

    fn counter1(&mut self, name: &str, help: &str, v: u64) -> Result<(), FmtError> {
        let m = self
            .enc
            .encode_descriptor(name, help, None, MetricType::Counter)?;
        ConstCounter::new(v).encode(m)
    }

    fn gauge1(&mut self, name: &str, help: &str, v: f64) -> Result<(), FmtError> {
        let m = self
            .enc
            .encode_descriptor(name, help, None, MetricType::Gauge)?;
        ConstGauge::new(v).encode(m)
    }
}

fn unix_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

fn age_s(now_ns: u64, then_ns: u64) -> f64 {
    now_ns.saturating_sub(then_ns) as f64 / 1e9
}

impl Collector for GatewayCollector {
    fn encode(&self, mut enc: DescriptorEncoder<'_>) -> Result<(), FmtError> {
        let t = &self.0;
        let mut f = Family { enc: &mut enc };
        let now_ns = unix_ns();
        let ev = events::snapshot();

        f.gauge(
            "build_info",
            "Version of this gateway (value 1).",
            [(vec![("version", env!("CARGO_PKG_VERSION"))], 1.0)],
        )?;
        f.gauge1(
            "up_seconds",
            "Seconds since the gateway started.",
            t.started.elapsed().as_secs_f64(),
        )?;
        f.gauge1(
            "ready",
            "1 when /readyz answers 200 (configuration loaded, spool open, adapters started; the broker does not count).",
            if t.is_ready() { 1.0 } else { 0.0 },
        )?;
        f.counter(
            "events",
            "Internal events, each counted where it is logged.",
            Event::ALL
                .iter()
                .map(|e| (vec![("event", e.name())], ev.events[*e as usize])),
        )?;
        f.counter(
            "log_lines",
            "Log lines written, by level.",
            LEVELS
                .iter()
                .zip(ev.log_lines)
                .map(|(l, v)| (vec![("level", *l)], v)),
        )?;

        if let Some(run) = t.run.get() {
            // The sources running now: series of a source a reload removed are gone.
            let (sources, removed_drops) = run.probes.sources_and_removed_drops();
            let reports: Vec<_> = sources
                .iter()
                .map(|s| (s.name.as_str(), s.adapter.report.snapshot(), &s.adapter))
                .collect();
            let per = |get: fn(&super::report::PollCounts) -> u64| {
                reports
                    .iter()
                    .map(move |(n, r, _)| (vec![("source", *n)], get(&r.totals)))
            };
            f.counter(
                "adapter_polls",
                "Group poll cycles completed, per adapter.",
                per(|c| c.polls),
            )?;
            f.counter(
                "adapter_requests",
                "Read requests sent to devices.",
                per(|c| c.requests),
            )?;
            f.counter(
                "adapter_errors",
                "Device errors by kind: timeout, exception (Modbus exception answer), disconnected (connection lost or connect failed), protocol (malformed answer), decode (value did not decode).",
                reports.iter().flat_map(|(n, r, _)| {
                    ErrorCounts::KINDS
                        .iter()
                        .zip(r.totals.errors.by_kind())
                        .map(move |(k, v)| (vec![("source", *n), ("kind", *k)], v))
                }),
            )?;
            f.counter(
                "adapter_overruns",
                "Poll ticks skipped because a cycle took longer than its interval.",
                per(|c| c.overruns),
            )?;
            f.counter(
                "adapter_connects",
                "Device connections established.",
                per(|c| c.connects),
            )?;
            f.gauge(
                "adapter_last_good_poll_age_seconds",
                "Seconds since a device last answered a read with data (absent before the first).",
                reports
                    .iter()
                    .filter(|(_, r, _)| r.totals.last_good_unix_ns != 0)
                    .map(|(n, r, _)| {
                        (
                            vec![("source", *n)],
                            age_s(now_ns, r.totals.last_good_unix_ns),
                        )
                    }),
            )?;
            f.gauge(
                "adapter_report_age_seconds",
                "Seconds since the adapter process last reported its counters (every second).",
                reports.iter().filter_map(|(n, r, _)| {
                    r.last_report
                        .map(|l| (vec![("source", *n)], l.elapsed().as_secs_f64()))
                }),
            )?;
            f.counter(
                "adapter_report_lines_skipped",
                "Report lines an adapter could not write because the gateway did not read its pipe.",
                reports
                    .iter()
                    .map(|(n, r, _)| (vec![("source", *n)], r.skipped_lines)),
            )?;
            f.counter(
                "adapter_restarts",
                "Adapter processes that exited unasked and were restarted.",
                reports
                    .iter()
                    .map(|(n, _, c)| (vec![("source", *n)], c.crashes.load(Ordering::Relaxed))),
            )?;
            f.gauge(
                "adapter_up",
                "1 while the adapter process runs.",
                reports.iter().map(|(n, _, c)| {
                    let up = c.pid.load(Ordering::Relaxed) != 0;
                    (vec![("source", *n)], if up { 1.0 } else { 0.0 })
                }),
            )?;

            let rings: Vec<_> = sources
                .iter()
                .map(|s| (s.name.as_str(), s.ring.stats(), s.ring_dropped()))
                .collect();
            f.gauge(
                "ring_occupancy_records",
                "Records in the ring, written and not yet read.",
                rings
                    .iter()
                    .map(|(n, s, _)| (vec![("source", *n)], s.occupancy as f64)),
            )?;
            f.gauge(
                "ring_capacity_records",
                "Slots of the ring.",
                rings
                    .iter()
                    .map(|(n, s, _)| (vec![("source", *n)], s.capacity as f64)),
            )?;
            f.counter(
                "ring_dropped_records",
                "Records the adapter dropped because the ring stayed full (each run of drops is a gap).",
                rings.iter().map(|(n, _, d)| (vec![("source", *n)], *d)),
            )?;
            // Drops of removed sources stay in the process total, which only ever grows.
            let ring_dropped: u64 = rings.iter().map(|(_, _, d)| d).sum::<u64>() + removed_drops;

            let d = *run.dispatch.borrow();
            if let Some(sink) = &t.sink {
                let s = sink.snapshot();
                f.counter1(
                    "forwarder_published_batches",
                    "Batches handed to the broker connection (live and replayed).",
                    s.published,
                )?;
                f.counter1(
                    "forwarder_acknowledged_batches",
                    "Batches the broker acknowledged.",
                    s.acked,
                )?;
                f.gauge1(
                    "forwarder_in_flight_batches",
                    "Batches sent and not yet acknowledged.",
                    s.in_flight as f64,
                )?;
                f.counter1(
                    "forwarder_reconnects",
                    "Broker connections established after the first (the first connection of a sink a reload reconfigured counts too).",
                    s.reconnects(),
                )?;
                f.counter1(
                    "forwarder_connect_failures",
                    "Broker connection attempts that failed.",
                    s.connect_failures,
                )?;
                // The running sink's state (a sink being replaced is not connected).
                let connected = run.probes.broker_connected.load(Ordering::Relaxed);
                f.gauge1(
                    "broker_connected",
                    "1 while connected to the broker.",
                    if connected { 1.0 } else { 0.0 },
                )?;
            }
            f.counter1(
                "forwarder_resent_batches",
                "Batches sent again after a disconnect (each may arrive twice).",
                d.resent,
            )?;
            f.counter1(
                "forwarder_live_batches",
                "Batches sent live (not from the spool).",
                d.sent_live,
            )?;
            f.counter1(
                "spool_spilled_batches",
                "Batches written to the spool.",
                d.spilled_batches,
            )?;
            f.counter1(
                "spool_spilled_records",
                "Records written to the spool.",
                d.spilled_records,
            )?;
            f.counter1(
                "spool_replayed_batches",
                "Batches sent from the spool.",
                d.replayed_batches,
            )?;
            f.counter1(
                "spool_replayed_records",
                "Records sent from the spool.",
                d.replayed_records,
            )?;
            f.counter(
                "spool_dropped_records",
                "Records the spool could not keep, by reason: bound (max_bytes reached, oldest or newest dropped), write_failed (disk full, I/O error), undecodable (a stored batch no longer decoded).",
                [
                    (vec![("reason", "bound")], ev.spool_dropped_records),
                    (vec![("reason", "write_failed")], ev.spool_failed_records),
                    (vec![("reason", "undecodable")], ev.spool_undecodable_records),
                ],
            )?;
            f.counter(
                "gap_records",
                "Records missing from their source's sequence because they were dropped, by cause.",
                [
                    (vec![("cause", "ring_full")], ring_dropped),
                    (vec![("cause", "spool_bound")], ev.spool_dropped_records),
                    (
                        vec![("cause", "spool_write_failed")],
                        ev.spool_failed_records,
                    ),
                    (
                        vec![("cause", "spool_undecodable")],
                        ev.spool_undecodable_records,
                    ),
                ],
            )?;
            f.counter(
                "gaps",
                "Sequence gaps made by dropping stored batches (one per batch).",
                [
                    (vec![("cause", "spool_bound")], ev.spool_dropped_gaps),
                    (
                        vec![("cause", "spool_undecodable")],
                        ev.spool_undecodable_gaps,
                    ),
                ],
            )?;
        }

        if let Some(s) = t.spool_stats() {
            f.gauge1("spool_rows", "Batches stored in the spool.", s.rows as f64)?;
            f.gauge1(
                "spool_records",
                "Records stored in the spool.",
                s.records as f64,
            )?;
            f.gauge1(
                "spool_bytes",
                "Logical bytes stored, counted against spool.max_bytes.",
                s.bytes as f64,
            )?;
            f.gauge1(
                "spool_file_bytes",
                "Bytes of the spool database and its WAL on disk.",
                s.file_bytes as f64,
            )?;
            f.gauge1(
                "spool_oldest_record_age_seconds",
                "Age of the oldest spooled record (0 when the spool is empty).",
                s.oldest_ts.map_or(0.0, |ts| age_s(now_ns, ts)),
            )?;
        }
        Ok(())
    }
}
