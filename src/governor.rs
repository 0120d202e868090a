//! The per-account request limiter: every stream of an account asks it before each request.
//!
//! The Events API allows 600 requests per minute and 30,000 per hour per account. A GCRA
//! limiter with burst `B` and period `T` admits `B + W/T` requests in any window `W`, so
//! one period of 125 ms with a burst of 50 stays under both: at most 530 in any minute and
//! 28,850 in any hour.

use std::num::NonZeroU32;
use std::time::Duration;

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

/// The period between requests once the burst is spent.
const PERIOD: Duration = Duration::from_millis(125);
/// How many requests may go out back to back after a quiet spell.
const BURST: u32 = 50;

/// Shared by all the streams of one account.
pub struct AccountGovernor {
    limiter: DefaultDirectRateLimiter,
}

impl AccountGovernor {
    pub fn new() -> AccountGovernor {
        let quota = Quota::with_period(PERIOD)
            .expect("the period is not zero")
            .allow_burst(NonZeroU32::new(BURST).expect("the burst is not zero"));
        AccountGovernor {
            limiter: RateLimiter::direct(quota),
        }
    }

    /// Waits until one more request fits within the account's limits.
    pub async fn acquire(&self) {
        self.limiter.until_ready().await;
    }
}

impl Default for AccountGovernor {
    fn default() -> Self {
        AccountGovernor::new()
    }
}
