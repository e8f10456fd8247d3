//! Rate limiting of repeated log lines: the first occurrence at once, then at most one summary
//! per interval with the count of what was held back, and a last word when the repeats stop.
//!
//! Pure state machine: the caller passes the time, so the behaviour is unit-tested without
//! sleeping. Counting is unaffected: metrics always see every occurrence; only log lines are
//! held back.

use std::time::{Duration, Instant};

/// What the caller should log for an occurrence (or for the passing of time).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// First occurrence after a quiet period: log it in full.
    First,
    /// Held back; counted for the next summary.
    Suppressed,
    /// Log a summary: `count` occurrences (this one included) in the last `over`.
    Summary {
        /// Occurrences since the last line logged.
        count: u64,
        /// Time since the last line logged.
        over: Duration,
    },
}

/// What [`RepeatLimiter::quiet`] reports once occurrences have stopped for a whole interval.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settled {
    /// Occurrences held back since the last line logged (not yet summarised).
    pub unreported: u64,
}

/// One stream of repeated events (one device's errors, one log call site).
#[derive(Debug, Clone)]
pub struct RepeatLimiter {
    interval: Duration,
    /// When the last line was logged, and occurrences held back since; `None` when quiet.
    window: Option<(Instant, u64)>,
    /// Last occurrence.
    last: Option<Instant>,
}

impl RepeatLimiter {
    /// A limiter that logs at most one line per `interval` while occurrences continue.
    pub const fn new(interval: Duration) -> Self {
        Self {
            interval,
            window: None,
            last: None,
        }
    }

    /// `n` (≥ 1) occurrences at `now`.
    pub fn occur(&mut self, now: Instant, n: u64) -> Verdict {
        self.last = Some(now);
        match &mut self.window {
            None => {
                // The first occurrence is logged; any others in the same report wait.
                self.window = Some((now, n.saturating_sub(1)));
                Verdict::First
            }
            Some((logged_at, held)) => {
                *held += n;
                let over = now.saturating_duration_since(*logged_at);
                if over >= self.interval {
                    let count = std::mem::take(held);
                    *logged_at = now;
                    Verdict::Summary { count, over }
                } else {
                    Verdict::Suppressed
                }
            }
        }
    }

    /// Called when time passes without occurrences: once the last occurrence is a whole
    /// interval old, the stream is quiet again; returns what is left to report (the next
    /// occurrence will be logged in full).
    pub fn quiet(&mut self, now: Instant) -> Option<Settled> {
        let last = self.last?;
        if self.window.is_none() || now.saturating_duration_since(last) < self.interval {
            return None;
        }
        let (_, held) = self.window.take()?;
        Some(Settled { unreported: held })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn logs_the_first_occurrence_then_one_summary_per_interval_with_the_count() {
        let t0 = Instant::now();
        let mut l = RepeatLimiter::new(30 * S);
        assert_eq!(l.occur(t0, 1), Verdict::First);
        for i in 1..30 {
            assert_eq!(l.occur(t0 + i * S, 1), Verdict::Suppressed, "second {i}");
        }
        assert_eq!(
            l.occur(t0 + 30 * S, 1),
            Verdict::Summary {
                count: 30,
                over: 30 * S
            }
        );
        // The next window starts at the summary.
        assert_eq!(l.occur(t0 + 31 * S, 5), Verdict::Suppressed);
        assert_eq!(
            l.occur(t0 + 60 * S, 2),
            Verdict::Summary {
                count: 7,
                over: 30 * S
            }
        );
    }

    #[test]
    fn a_burst_in_one_report_logs_once_and_keeps_the_rest_for_the_summary() {
        let t0 = Instant::now();
        let mut l = RepeatLimiter::new(10 * S);
        assert_eq!(l.occur(t0, 4), Verdict::First);
        assert_eq!(
            l.occur(t0 + 10 * S, 1),
            Verdict::Summary {
                count: 4,
                over: 10 * S
            }
        );
    }

    #[test]
    fn after_a_quiet_interval_the_next_occurrence_is_logged_in_full_again() {
        let t0 = Instant::now();
        let mut l = RepeatLimiter::new(10 * S);
        assert_eq!(l.quiet(t0), None, "nothing happened yet");
        assert_eq!(l.occur(t0, 1), Verdict::First);
        assert_eq!(l.occur(t0 + S, 1), Verdict::Suppressed);
        assert_eq!(l.occur(t0 + 2 * S, 1), Verdict::Suppressed);
        assert_eq!(
            l.quiet(t0 + 5 * S),
            None,
            "not quiet for a whole interval yet"
        );
        assert_eq!(l.quiet(t0 + 12 * S), Some(Settled { unreported: 2 }));
        assert_eq!(l.quiet(t0 + 13 * S), None, "reported once");
        assert_eq!(l.occur(t0 + 14 * S, 1), Verdict::First);
    }

    #[test]
    fn settling_right_after_a_summary_has_nothing_left_to_report() {
        let t0 = Instant::now();
        let mut l = RepeatLimiter::new(10 * S);
        l.occur(t0, 1);
        l.occur(t0 + 10 * S, 1);
        assert_eq!(l.quiet(t0 + 20 * S), Some(Settled { unreported: 0 }));
    }
}
