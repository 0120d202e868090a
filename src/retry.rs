//! Retry delays: capped exponential backoff with full jitter, never giving up.
//!
//! backon computes the exponential schedule; the jitter is "full" (a uniform draw between
//! zero and the scheduled delay), which spreads many clients' retries out best. backon's own
//! jitter only adds up to one more delay on top, which keeps retries bunched.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};

/// An endless sequence of retry delays for one failing operation. Start a new one after a
/// success.
pub struct Backoff {
    schedule: ExponentialBackoff,
    max: Duration,
}

impl Backoff {
    /// Delays that start around `min` and double up to `max`.
    pub fn new(min: Duration, max: Duration) -> Backoff {
        Backoff {
            schedule: ExponentialBuilder::default()
                .with_min_delay(min)
                .with_max_delay(max)
                .without_max_times()
                .build(),
            max,
        }
    }

    /// The scheduled delay before jitter; grows with each call.
    pub fn next_ceiling(&mut self) -> Duration {
        self.schedule.next().unwrap_or(self.max)
    }

    /// The delay before the next try: uniform between zero and the scheduled delay.
    pub fn next_delay(&mut self) -> Duration {
        self.next_ceiling().mul_f64(fastrand::f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ceilings_double_up_to_the_cap_and_never_end() {
        let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(300));
        let ceilings: Vec<u64> = (0..12).map(|_| backoff.next_ceiling().as_secs()).collect();
        assert_eq!(ceilings, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300]);
        for _ in 0..10_000 {
            assert_eq!(backoff.next_ceiling(), Duration::from_secs(300));
        }
    }

    #[test]
    fn delays_are_jittered_within_the_ceiling() {
        let mut backoff = Backoff::new(Duration::from_secs(300), Duration::from_secs(300));
        let delays: Vec<Duration> = (0..200).map(|_| backoff.next_delay()).collect();
        assert!(delays.iter().all(|d| *d <= Duration::from_secs(300)));
        let distinct: std::collections::BTreeSet<_> = delays.iter().collect();
        assert!(distinct.len() > 150, "full jitter spreads the delays");
    }
}
