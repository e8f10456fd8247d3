//! Reconnect backoff: exponential, with jitter. rumqttc's `poll` reconnects at once, so a
//! broker that is down would otherwise be hammered in a tight loop (rumqtt #703, #918).

use std::time::Duration;

use rand::RngExt as _;

/// Delays between connection attempts: `min` doubling up to `max`, reset by [`Backoff::reset`]
/// (on CONNACK). Each delay is drawn uniformly from `[d/2, d]` ("equal jitter"), so gateways
/// that lost the same broker do not all come back in the same instant, yet none waits less
/// than half the nominal delay.
#[derive(Debug, Clone)]
pub(super) struct Backoff {
    min: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    pub(super) fn new(min: Duration, max: Duration) -> Self {
        let min = min.max(Duration::from_millis(1));
        Self {
            min,
            max: max.max(min),
            next: min,
        }
    }

    /// Back to the first delay.
    pub(super) fn reset(&mut self) {
        self.next = self.min;
    }

    /// The delay before the next attempt; doubles the one after.
    pub(super) fn next_delay(&mut self) -> Duration {
        let nominal = self.next;
        self.next = (self.next * 2).min(self.max);
        let half = nominal / 2;
        half + half.mul_f64(rand::rng().random_range(0.0..=1.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_to_the_cap_with_jitter_and_resets() {
        let ms = Duration::from_millis;
        let mut b = Backoff::new(ms(100), ms(1000));
        let nominal = [100, 200, 400, 800, 1000, 1000];
        for n in nominal {
            let d = b.next_delay();
            assert!(
                d >= ms(n / 2) && d <= ms(n),
                "{d:?} not in [{}, {n}] ms",
                n / 2
            );
        }
        b.reset();
        assert!(b.next_delay() <= ms(100));
    }
}
