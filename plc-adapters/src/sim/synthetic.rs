//! A synthetic source adapter: tags that follow a counter, ramp, sine or random signal at a
//! configured rate, for the demo and for load tests of the gateway.
//!
//! # Design constraints
//! - Fast enough to saturate the ring: no allocation and no locking per record, one clock read
//!   per tick, signals computed from the sample time (so rates and timestamps are exact and a
//!   late tick catches up with correctly-timestamped samples).
//! - Every sample is emitted (no report-by-exception): this is a load generator. Records get
//!   quality good and `tag_id` = index of the tag.
//!
//! ```toml
//! [[synthetic]]
//! source_id = 100
//! tags = [
//!   { name = "count", signal = "counter", rate_hz = 10.0 },
//!   { name = "temp", signal = "sine", rate_hz = 1000.0, min = 20.0, max = 80.0, period_ms = 60000 },
//! ]
//! ```

use std::future::Future;
use std::time::{Duration, Instant, SystemTime};

use edgegw_ringbuf::Value;
use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};
use serde::Deserialize;

use crate::config::{ConfigInvalidError, Problems};
use crate::emit::{Emitter, RecordSink};
use crate::quality::Quality;
use crate::tag::Reading;

/// The shape of a synthetic signal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SignalKind {
    /// 0, 1, 2, … (u64), one step per sample.
    Counter,
    /// Sawtooth from `min` to `max` over `period_ms`.
    Ramp,
    /// Sine between `min` and `max` with period `period_ms`.
    Sine,
    /// Uniform random in `[min, max)`.
    Random,
}

/// One synthetic tag as configured.
#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct SyntheticTagConfig {
    /// Tag name.
    pub name: String,
    /// Signal shape.
    pub signal: SignalKind,
    /// Samples per second (> 0).
    pub rate_hz: f64,
    /// Lower bound (ramp, sine, random); default 0.
    #[serde(default)]
    pub min: f64,
    /// Upper bound (ramp, sine, random); default 100.
    #[serde(default = "default_max")]
    pub max: f64,
    /// Period of ramp and sine in ms; default 10000.
    #[serde(default = "default_period_ms")]
    pub period_ms: u64,
}

const fn default_max() -> f64 {
    100.0
}
const fn default_period_ms() -> u64 {
    10_000
}

/// A `[[synthetic]]` source.
#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct SyntheticConfig {
    /// `source_id` of its records.
    pub source_id: u32,
    /// Tags.
    pub tags: Vec<SyntheticTagConfig>,
}

impl SyntheticConfig {
    /// `n` sine tags at `rate_hz` each: `n * rate_hz` records/s.
    pub fn uniform(source_id: u32, n: usize, rate_hz: f64) -> Self {
        let kinds = [
            SignalKind::Sine,
            SignalKind::Counter,
            SignalKind::Ramp,
            SignalKind::Random,
        ];
        Self {
            source_id,
            tags: (0..n)
                .map(|i| SyntheticTagConfig {
                    name: format!("tag{i}"),
                    signal: kinds[i % kinds.len()],
                    rate_hz,
                    min: 0.0,
                    max: 100.0,
                    period_ms: 10_000,
                })
                .collect(),
        }
    }

    /// Validates (`synthetic.tags[3].rate_hz: must be > 0`); `path` prefixes the key paths.
    pub fn validate(&self, path: &str) -> Result<(), ConfigInvalidError> {
        let mut p = Problems::default();
        for (i, t) in self.tags.iter().enumerate() {
            let tp = format!("{path}.tags[{i}]");
            if !(t.rate_hz.is_finite() && t.rate_hz > 0.0 && t.rate_hz <= 1e9) {
                p.add(format_args!("{tp}.rate_hz"), "must be > 0 and at most 1e9");
            }
            if !(t.min.is_finite() && t.max.is_finite() && t.min <= t.max) {
                p.add(
                    format_args!("{tp}.max"),
                    "min and max must be finite with min <= max",
                );
            }
            if t.period_ms == 0 {
                p.add(format_args!("{tp}.period_ms"), "must be > 0");
            }
        }
        p.into_result(())
    }
}

struct TagState {
    kind: SignalKind,
    period_ns: u64,
    min: f64,
    span: f64,
    step_ns: u64,
    /// Time of the next sample, ns since the source started.
    next_ns: u64,
    count: u64,
}

/// A running synthetic source.
pub struct SyntheticSource {
    source_id: u32,
    tags: Vec<TagState>,
    rng: SmallRng,
    /// Unix ns at which the source started (sample timestamps are offsets from it).
    unix_start_ns: u64,
    /// Virtual clock of [`SyntheticSource::run_flat_out`], ns since start.
    flat_out_ns: u64,
}

impl std::fmt::Debug for SyntheticSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyntheticSource")
            .field("source_id", &self.source_id)
            .field("tags", &self.tags.len())
            .finish()
    }
}

impl SyntheticSource {
    /// A source for a validated configuration.
    pub fn new(cfg: &SyntheticConfig) -> Self {
        let tags = cfg
            .tags
            .iter()
            .map(|t| TagState {
                kind: t.signal,
                period_ns: t.period_ms.max(1) * 1_000_000,
                min: t.min,
                span: t.max - t.min,
                step_ns: ((1e9 / t.rate_hz).round() as u64).max(1),
                next_ns: 0,
                count: 0,
            })
            .collect();
        let unix_start_ns = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(0));
        Self {
            source_id: cfg.source_id,
            tags,
            rng: SmallRng::seed_from_u64(0x5eed),
            unix_start_ns,
            flat_out_ns: 0,
        }
    }

    /// Emits every sample due up to `now_ns` (ns since start), at most `max_per_tag` per tag
    /// (the rest of a long stall is skipped, not replayed). Returns how many records were
    /// emitted (pushed into the ring).
    pub fn emit_due<S: RecordSink>(
        &mut self,
        now_ns: u64,
        max_per_tag: u64,
        emitter: &mut Emitter<S>,
    ) -> u64 {
        let mut n = 0;
        for (id, t) in self.tags.iter_mut().enumerate() {
            let mut k = 0;
            while t.next_ns <= now_ns && k < max_per_tag {
                let at = t.next_ns;
                let value = match t.kind {
                    SignalKind::Counter => Value::U64(t.count),
                    SignalKind::Ramp => Value::F64(
                        t.min + t.span * ((at % t.period_ns) as f64 / t.period_ns as f64),
                    ),
                    SignalKind::Sine => {
                        let phase =
                            (at % t.period_ns) as f64 / t.period_ns as f64 * std::f64::consts::TAU;
                        Value::F64(t.min + t.span * 0.5 * (1.0 + phase.sin()))
                    }
                    SignalKind::Random => Value::F64(t.min + t.span * self.rng.random::<f64>()),
                };
                let ts = self.unix_start_ns + at;
                if emitter.emit(
                    self.source_id,
                    id as u32,
                    ts,
                    Quality::Good,
                    Some(Reading::Scalar(value)),
                ) {
                    n += 1;
                }
                t.count += 1;
                t.next_ns += t.step_ns;
                k += 1;
            }
            if t.next_ns <= now_ns {
                // Skip what a stall left behind instead of bursting it out later.
                let behind = (now_ns - t.next_ns) / t.step_ns + 1;
                t.next_ns += behind * t.step_ns;
            }
        }
        n
    }

    /// Emits samples in real time, one batch per `tick`, until `shutdown`. Returns the number
    /// of records emitted.
    pub async fn run<S: RecordSink>(
        &mut self,
        emitter: &mut Emitter<S>,
        tick: Duration,
        shutdown: impl Future<Output = ()>,
    ) -> u64 {
        let started = Instant::now();
        let mut interval = tokio::time::interval(tick);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        // A tick may be late by up to this many samples per tag before samples are skipped.
        let max_per_tag = 1
            + (4 * tick.as_nanos()
                / self
                    .tags
                    .iter()
                    .map(|t| u128::from(t.step_ns))
                    .min()
                    .unwrap_or(1)
                    .max(1)) as u64;
        let mut total = 0;
        let work = async {
            loop {
                interval.tick().await;
                emitter.begin_batch();
                let now = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
                total += self.emit_due(now, max_per_tag, emitter);
            }
        };
        tokio::select! {
            () = shutdown => {}
            () = work => {}
        }
        total
    }

    /// Emits `samples` samples of every tag as fast as possible, timestamps advancing at the
    /// configured rates (for throughput measurement). Returns the records emitted.
    pub fn run_flat_out<S: RecordSink>(&mut self, samples: u64, emitter: &mut Emitter<S>) -> u64 {
        let slowest = self.tags.iter().map(|t| t.step_ns).max().unwrap_or(1);
        let mut total = 0;
        for _ in 0..samples {
            emitter.begin_batch();
            total += self.emit_due(self.flat_out_ns, 1, emitter);
            self.flat_out_ns += slowest;
        }
        total
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::emit::{FullPolicy, VecSink};

    fn cfg(signal: SignalKind, rate_hz: f64) -> SyntheticConfig {
        SyntheticConfig {
            source_id: 9,
            tags: vec![SyntheticTagConfig {
                name: "x".into(),
                signal,
                rate_hz,
                min: 0.0,
                max: 10.0,
                period_ms: 1000,
            }],
        }
    }

    fn values(signal: SignalKind, rate_hz: f64, until_ns: u64) -> Vec<Value> {
        let mut src = SyntheticSource::new(&cfg(signal, rate_hz));
        let mut e = Emitter::new(VecSink::default(), FullPolicy::default());
        src.emit_due(until_ns, u64::MAX, &mut e);
        e.sink()
            .records
            .iter()
            .map(|r| r.value().unwrap())
            .collect()
    }

    #[test]
    fn rate_sets_how_many_samples_are_due() {
        // 100 Hz for 1 s: samples at 0, 10, …, 1000 ms.
        assert_eq!(values(SignalKind::Counter, 100.0, 1_000_000_000).len(), 101);
    }

    #[test]
    fn counter_counts_and_ramp_rises_within_bounds() {
        assert_eq!(
            values(SignalKind::Counter, 10.0, 300_000_000),
            vec![Value::U64(0), Value::U64(1), Value::U64(2), Value::U64(3)]
        );
        let ramp = values(SignalKind::Ramp, 10.0, 900_000_000);
        assert_eq!(ramp[0], Value::F64(0.0));
        assert_eq!(ramp[5], Value::F64(5.0));
    }

    #[test]
    fn sine_and_random_stay_between_min_and_max() {
        for kind in [SignalKind::Sine, SignalKind::Random] {
            for v in values(kind, 1000.0, 2_000_000_000) {
                let Value::F64(x) = v else { panic!() };
                assert!((0.0..=10.0).contains(&x), "{kind:?} gave {x}");
            }
        }
    }

    #[test]
    fn a_stall_is_skipped_not_burst_out() {
        let mut src = SyntheticSource::new(&cfg(SignalKind::Counter, 1000.0));
        let mut e = Emitter::new(VecSink::default(), FullPolicy::default());
        assert_eq!(src.emit_due(1_000_000_000, 5, &mut e), 5);
        assert_eq!(
            src.emit_due(1_000_000_000, 5, &mut e),
            0,
            "the rest of the stall was dropped"
        );
    }

    #[test]
    fn flat_out_runs_keep_emitting_across_calls() {
        let mut src = SyntheticSource::new(&SyntheticConfig::uniform(1, 10, 1000.0));
        let mut e = Emitter::new(VecSink::default(), FullPolicy::default());
        assert_eq!(src.run_flat_out(5, &mut e), 50);
        assert_eq!(src.run_flat_out(5, &mut e), 50);
    }

    #[test]
    fn bad_rates_are_reported_with_key_paths() {
        let err = cfg(SignalKind::Sine, 0.0)
            .validate("synthetic[0]")
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "synthetic[0].tags[0].rate_hz: must be > 0 and at most 1e9"
        );
    }
}
