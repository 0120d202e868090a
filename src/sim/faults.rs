//! Fault injection for the simulator: strict sliding-window rate limits and the failures a
//! client must survive (5xx, slow responses, connection resets, truncated and invalid bodies).
//!
//! Selected by [`SimConfig::faults`](super::SimConfig) at start and replaced at run time with
//! `POST /_sim/faults` (the same JSON, read back with `GET /_sim/faults`). Faults apply to the
//! event endpoints only, after authentication; the control endpoints never fail.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// Which faults are on. Rates are probabilities per event request, from 0.0 to 1.0.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Faults {
    /// Strict sliding windows over the event requests of every token (the account): in any
    /// `window_secs`, at most `max` requests are admitted; the rest get 429. Requests answered
    /// 429 do not count.
    pub rate_limits: Vec<WindowLimit>,
    /// Whether a 429 carries `Retry-After` (whole seconds until a request would be admitted).
    pub retry_after: bool,
    /// Whether responses carry `RateLimit-Limit`, `RateLimit-Remaining` and `RateLimit-Reset`
    /// (as the v3 reference documents) for the tightest window.
    pub rate_limit_headers: bool,
    /// The share of event requests answered with one of `error_statuses`.
    pub error_rate: f64,
    /// The statuses of injected errors, picked at random; 500, 502 and 503 by default.
    pub error_statuses: Vec<u16>,
    /// The share of event requests answered only after `slow_ms`.
    pub slow_rate: f64,
    pub slow_ms: u64,
    /// The share of event requests whose connection is closed without a response.
    pub reset_rate: f64,
    /// The share of event requests answered 200 with only the first half of the body.
    pub truncate_rate: f64,
    /// The share of event requests answered 200 with a body that is not JSON.
    pub invalid_json_rate: f64,
    /// When set, overrides `SimConfig::empty_page_every`: every this-many page requests that
    /// have events to serve, one returns an empty page with `has_more: true`; 0 for never.
    pub empty_page_every: Option<u32>,
}

impl Default for Faults {
    /// No faults, no limits.
    fn default() -> Self {
        Faults {
            rate_limits: Vec::new(),
            retry_after: false,
            rate_limit_headers: false,
            error_rate: 0.0,
            error_statuses: vec![500, 502, 503],
            slow_rate: 0.0,
            slow_ms: 0,
            reset_rate: 0.0,
            truncate_rate: 0.0,
            invalid_json_rate: 0.0,
            empty_page_every: None,
        }
    }
}

impl Faults {
    /// The Events API's documented limits (600 a minute, 30,000 an hour), nothing else.
    pub fn documented_limits() -> Faults {
        Faults {
            rate_limits: vec![
                WindowLimit {
                    window_secs: 60,
                    max: 600,
                },
                WindowLimit {
                    window_secs: 3600,
                    max: 30_000,
                },
            ],
            ..Faults::default()
        }
    }
}

/// At most `max` requests in any `window_secs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WindowLimit {
    pub window_secs: u64,
    pub max: u32,
}

/// What was done to a request instead of (or on top of) serving it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Fault {
    /// Answered 429 by the sliding-window limits.
    RateLimited,
    /// Answered with an injected error status.
    Status,
    /// Served after a delay (the client may have given up before).
    Slow,
    /// The connection was closed without a response.
    Reset,
    /// Answered 200 with half of the body.
    Truncated,
    /// Answered 200 with a body that is not JSON.
    InvalidJson,
}

/// The outcome of the rate limiter for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateDecision {
    pub admitted: bool,
    /// How long until a request would be admitted (zero if one would be now).
    pub retry_after: Duration,
    /// The tightest window's limit, what remains of it, and when its oldest request leaves it.
    pub limit: u32,
    pub remaining: u32,
    pub reset: Duration,
}

/// The times of admitted requests, oldest first, as many as the largest limit.
#[derive(Debug, Default)]
pub struct RateLog {
    admitted: VecDeque<Instant>,
}

impl RateLog {
    /// Admits a request at `now` if every window has room, and records it.
    pub fn check(&mut self, limits: &[WindowLimit], now: Instant) -> RateDecision {
        let mut retry_after = Duration::ZERO;
        let mut tightest: Option<(u32, u32, Duration)> = None;
        for limit in limits {
            let window = Duration::from_secs(limit.window_secs);
            let max = limit.max as usize;
            if max == 0 {
                retry_after = retry_after.max(window);
                tightest = Some((0, 0, window));
                continue;
            }
            // Requests still inside the window (now - window, now].
            let first_inside = self
                .admitted
                .partition_point(|at| now.duration_since(*at) >= window);
            let inside = self.admitted.len() - first_inside;
            // An empty window's oldest request is the one being admitted now.
            let reset = self
                .admitted
                .get(first_inside)
                .map_or(window, |oldest| window - now.duration_since(*oldest));
            if inside >= max {
                // The request `max` before the next one must leave the window first.
                let blocking = self.admitted[self.admitted.len() - max];
                retry_after = retry_after.max(window - now.duration_since(blocking));
            }
            let remaining = u32::try_from(max.saturating_sub(inside)).unwrap_or(u32::MAX);
            if tightest.is_none_or(|(_, least, _)| remaining < least) {
                tightest = Some((limit.max, remaining, reset));
            }
        }
        let admitted = retry_after.is_zero();
        if admitted {
            self.admitted.push_back(now);
            let keep = limits.iter().map(|l| l.max as usize).max().unwrap_or(0);
            while self.admitted.len() > keep {
                self.admitted.pop_front();
            }
        }
        let (limit, remaining, reset) = tightest.unwrap_or((0, 0, Duration::ZERO));
        RateDecision {
            admitted,
            retry_after,
            limit,
            remaining: if admitted {
                remaining.saturating_sub(1)
            } else {
                remaining
            },
            reset,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_are_strict_and_sliding() {
        let limits = [WindowLimit {
            window_secs: 10,
            max: 3,
        }];
        let mut log = RateLog::default();
        let t0 = Instant::now();
        let at = |secs: f64| t0 + Duration::from_secs_f64(secs);
        assert!(log.check(&limits, at(0.0)).admitted);
        assert!(log.check(&limits, at(4.0)).admitted);
        let third = log.check(&limits, at(9.0));
        assert!(third.admitted);
        assert_eq!(third.remaining, 0);
        let refused = log.check(&limits, at(9.5));
        assert!(!refused.admitted);
        assert_eq!(refused.retry_after, Duration::from_millis(500));
        // At 10.0 the first request has left (t - 10, t]; the refusal did not count.
        assert!(log.check(&limits, at(10.0)).admitted);
        assert!(!log.check(&limits, at(13.9)).admitted);
        assert!(log.check(&limits, at(14.0)).admitted);
    }

    #[test]
    fn both_windows_apply_together() {
        let limits = [
            WindowLimit {
                window_secs: 1,
                max: 2,
            },
            WindowLimit {
                window_secs: 10,
                max: 3,
            },
        ];
        let mut log = RateLog::default();
        let t0 = Instant::now();
        let at = |secs: f64| t0 + Duration::from_secs_f64(secs);
        assert!(log.check(&limits, at(0.0)).admitted);
        assert!(log.check(&limits, at(0.1)).admitted);
        assert!(!log.check(&limits, at(0.2)).admitted);
        assert!(log.check(&limits, at(1.5)).admitted);
        let refused = log.check(&limits, at(3.0));
        assert!(!refused.admitted);
        assert_eq!(refused.retry_after, Duration::from_secs(7));
    }

    #[test]
    fn faults_read_from_json_with_defaults() {
        let faults: Faults = serde_json::from_str(
            r#"{"error_rate":0.5,"rate_limits":[{"window_secs":60,"max":60}]}"#,
        )
        .unwrap();
        assert_eq!(faults.error_rate, 0.5);
        assert_eq!(faults.error_statuses, [500, 502, 503]);
        assert_eq!(faults.rate_limits[0].max, 60);
        assert!(serde_json::from_str::<Faults>(r#"{"eror_rate":0.5}"#).is_err());
    }
}
