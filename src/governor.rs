//! The per-account request limiter: every stream of an account asks it before each request.
//!
//! The Events API allows 600 requests per minute and 30,000 per hour per account, and the
//! simulator enforces both as strict sliding windows (any 60 s, any 3,600 s). Three parts
//! work together:
//!
//! - A **sliding log** of the last requests, the proof: a request is granted only if the
//!   response to the `n`-th request before it arrived at least one window (plus
//!   [`WINDOW_MARGIN`]) ago, for both windows. The API counts a request somewhere between our
//!   sending it and our receiving its answer, so anchoring on the answer makes the bound hold
//!   whatever the network or the server delay: no window of either length, on the API's
//!   clock, ever holds more than its limit, whatever the pacers below do. A request still in
//!   flight holds the slot until it is answered (or abandoned: [`Permit`] records it when
//!   dropped).
//! - A **minute pacer** (GCRA, crate governor): one request every `60 s / per_minute`, with a
//!   burst of a second's worth, so a backlog is fetched evenly instead of 600 requests at once.
//! - An **hour pacer** (GCRA) with burst `B = per_hour / 120` and a period chosen so that
//!   `B + (3600 s + margin) / T = per_hour`: it lets the account run at the per-minute ceiling
//!   for a few minutes, then settles smoothly at just under the hourly ceiling (99.2 % of it with
//!   the documented limits) instead of running at 600/min for 50 minutes and then stopping for
//!   10. A single GCRA cannot do both: one that respects 30,000/h sustains at most 500/min.
//!
//! Permits are handed out first come, first served (a FIFO ticket lock), so a backlog on one
//! stream cannot starve the polls of the others: each waits behind at most one request per
//! other stream. A 429 pauses every stream of the account ([`AccountGovernor::pause`]), and
//! the API's own `RateLimit-Remaining`, where it sends it, caps what is granted until the
//! next answer ([`Schedule::observe`]).
//!
//! Time comes from a [`Clock`]: [`TokioClock`] in the daemon (so tests may pause tokio's time),
//! `governor::clock::FakeRelativeClock` in the unit tests.

use std::collections::VecDeque;
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::Duration;

use governor::clock::{Clock, Reference};
use governor::middleware::NoOpMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};

/// Added to both windows, against a difference in how the API's clock and ours measure a
/// window (the delays of the network are covered by anchoring on answers). Half a second
/// costs under 1 % of the per-minute ceiling.
pub const WINDOW_MARGIN: Duration = Duration::from_millis(500);
const MINUTE: Duration = Duration::from_secs(60);
const HOUR: Duration = Duration::from_secs(3600);
/// The shortest wait reported, so that a caller advancing a clock always makes progress.
const MIN_WAIT: Duration = Duration::from_micros(1);
/// How often to look again while the request that holds the next slot is still in flight.
const IN_FLIGHT_RECHECK: Duration = Duration::from_millis(20);

/// What a response's `RateLimit-Remaining` and `RateLimit-Reset` headers said of the
/// account's budget: `remaining` more requests, or none until `reset` has passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateBudget {
    pub remaining: u32,
    pub reset: Duration,
}

/// A granted request in the sliding log.
#[derive(Debug, Clone, Copy)]
struct Sent<I> {
    id: u64,
    /// When its answer arrived (or it was abandoned); `None` while in flight.
    done: Option<I>,
    /// How many requests had been answered when it was granted: the API admitted those
    /// before it, and perhaps any other after it.
    answered_before: u64,
}

/// How many requests an account may make.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// At most this many requests in any 60 seconds (`requests_per_minute`).
    pub per_minute: NonZeroU32,
    /// At most this many requests in any 3,600 seconds (`requests_per_hour`).
    pub per_hour: NonZeroU32,
}

impl Limits {
    /// The documented limits of the Events API.
    pub const DOCUMENTED: Limits = Limits {
        per_minute: NonZeroU32::new(600).expect("not zero"),
        per_hour: NonZeroU32::new(30_000).expect("not zero"),
    };

    /// The most requests these limits admit in `duration` when every window is full, the
    /// figure a benchmark compares its throughput against.
    pub fn ceiling(&self, duration: Duration) -> f64 {
        let secs = duration.as_secs_f64();
        let by_minute = f64::from(self.per_minute.get()) * secs / MINUTE.as_secs_f64();
        // Within the first hour, the hourly limit allows its whole count at once.
        let by_hour = f64::from(self.per_hour.get()) * (secs / HOUR.as_secs_f64()).max(1.0);
        by_minute.min(by_hour)
    }

    /// The minute pacer: even spacing at the per-minute rate, a second's worth of burst.
    fn minute_quota(&self) -> Quota {
        let per_minute = self.per_minute.get();
        let period = MINUTE / per_minute;
        let burst = (per_minute / 60).max(1);
        Quota::with_period(period.max(Duration::from_nanos(1)))
            .expect("the period is not zero")
            .allow_burst(NonZeroU32::new(burst).expect("the burst is at least one"))
    }

    /// The hour pacer: `burst + (hour + margin) / period = per_hour`.
    fn hour_quota(&self) -> Quota {
        let per_hour = self.per_hour.get();
        let burst = (per_hour / 120).max(1);
        let period = (HOUR + WINDOW_MARGIN) / (per_hour - burst).max(1);
        Quota::with_period(period)
            .expect("the period is not zero")
            .allow_burst(NonZeroU32::new(burst).expect("the burst is at least one"))
    }
}

/// tokio's clock, as time since the governor was made: the daemon's clock, and a paused one in
/// tests that use `tokio::time::pause`.
#[derive(Debug, Clone, Copy)]
pub struct TokioClock {
    origin: tokio::time::Instant,
}

impl TokioClock {
    pub fn new() -> TokioClock {
        TokioClock {
            origin: tokio::time::Instant::now(),
        }
    }
}

impl Default for TokioClock {
    fn default() -> Self {
        TokioClock::new()
    }
}

impl Clock for TokioClock {
    type Instant = Duration;

    fn now(&self) -> Duration {
        tokio::time::Instant::now().duration_since(self.origin)
    }
}

type Pacer<C> = RateLimiter<NotKeyed, InMemoryState, C, NoOpMiddleware<<C as Clock>::Instant>>;

/// The decisions, without waiting: grants a permit now or says how long to wait. Pure apart
/// from the clock it reads.
pub struct Schedule<C: Clock + Clone> {
    clock: C,
    limits: Limits,
    minute_pacer: Pacer<C>,
    hour_pacer: Pacer<C>,
    /// The last `max(per_minute, per_hour)` granted requests, oldest first.
    log: VecDeque<Sent<C::Instant>>,
    /// The id of the next permit.
    next_id: u64,
    /// No permit before this time (after a 429).
    paused_until: Option<C::Instant>,
    /// The minute pacer granted a cell that the hour pacer has not matched yet; it is kept for
    /// the next attempt rather than asked for again.
    minute_cell_held: bool,
    /// What the API's `RateLimit-Remaining` leaves to grant, less what was granted since
    /// (`None` while its answers do not say). At `Some(0)` nothing more is granted until an
    /// answer says otherwise, or, with nothing in flight and no pause, one request probes.
    header_budget: Option<u32>,
    /// Requests granted and not yet answered.
    in_flight: usize,
    /// Requests answered (or abandoned) so far.
    answered: u64,
}

impl<C: Clock + Clone> Schedule<C> {
    pub fn new(limits: Limits, clock: C) -> Schedule<C> {
        Schedule {
            minute_pacer: RateLimiter::direct_with_clock(limits.minute_quota(), clock.clone()),
            hour_pacer: RateLimiter::direct_with_clock(limits.hour_quota(), clock.clone()),
            clock,
            limits,
            log: VecDeque::new(),
            next_id: 0,
            paused_until: None,
            minute_cell_held: false,
            header_budget: None,
            in_flight: 0,
            answered: 0,
        }
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Takes a permit if one is available now and returns its id, for [`Schedule::complete`]
    /// when the request is answered; otherwise returns how long to wait before asking again.
    pub fn try_acquire(&mut self) -> Result<u64, Duration> {
        let now = self.clock.now();
        if let Some(until) = self.paused_until {
            if until > now {
                return Err(Duration::from(until.duration_since(now)).max(MIN_WAIT));
            }
            self.paused_until = None;
        }
        if self.header_budget == Some(0) {
            if self.in_flight > 0 {
                // An answer under way will say what is left.
                return Err(IN_FLIGHT_RECHECK);
            }
            // Nothing will say: one request at a time finds out.
            self.header_budget = Some(1);
        }
        if let Some(wait) = self.log_wait(now) {
            return Err(wait.max(MIN_WAIT));
        }
        if !self.minute_cell_held {
            match self.minute_pacer.check() {
                Ok(()) => self.minute_cell_held = true,
                Err(not_until) => return Err(not_until.wait_time_from(now).max(MIN_WAIT)),
            }
        }
        if let Err(not_until) = self.hour_pacer.check() {
            return Err(not_until.wait_time_from(now).max(MIN_WAIT));
        }
        self.minute_cell_held = false;
        if let Some(budget) = &mut self.header_budget {
            *budget -= 1;
        }
        self.in_flight += 1;
        let id = self.next_id;
        self.next_id += 1;
        self.log.push_back(Sent {
            id,
            done: None,
            answered_before: self.answered,
        });
        let keep = self.limits.per_minute.max(self.limits.per_hour).get() as usize;
        while self.log.len() > keep {
            if self.log.pop_front().is_some_and(|sent| sent.done.is_none()) {
                self.in_flight -= 1;
                self.answered += 1;
            }
        }
        Ok(id)
    }

    /// The request of permit `id` was answered (or given up): its slot counts from now.
    pub fn complete(&mut self, id: u64) {
        let now = self.clock.now();
        if let Some(sent) = self.log.iter_mut().rev().find(|sent| sent.id == id)
            && sent.done.is_none()
        {
            sent.done = Some(now);
            self.in_flight -= 1;
            self.answered += 1;
        }
    }

    /// The answer to permit `id` (still in flight) said what the account has left, or said
    /// nothing (`None`). The API counted it when it admitted that request, and it may have
    /// admitted any request of ours after it except those answered before it was granted:
    /// those are taken off, so what is left is never overstated, whatever order requests
    /// and answers cross in. `remaining: 0` pauses everyone until `reset`; then one request
    /// at a time until an answer says more.
    pub fn observe(&mut self, id: u64, budget: Option<RateBudget>) {
        let Some(budget) = budget else {
            self.header_budget = None;
            return;
        };
        if budget.remaining == 0 {
            self.pause(budget.reset);
            self.header_budget = Some(0);
            return;
        }
        let Some(sent) = self.log.iter().rev().find(|sent| sent.id == id) else {
            return;
        };
        // Every other grant, less those surely admitted before this one.
        let maybe_after = self.next_id.saturating_sub(1) - sent.answered_before;
        let left = u64::from(budget.remaining).saturating_sub(maybe_after);
        self.header_budget = Some(u32::try_from(left).unwrap_or(u32::MAX));
    }

    /// A 429: the window is full, so once the pause is over one request at a time finds out
    /// how much room there is.
    fn refused(&mut self) {
        self.header_budget = Some(0);
    }

    /// How much of a pause is left, if the account is paused.
    pub fn paused_for(&self) -> Option<Duration> {
        let now = self.clock.now();
        self.paused_until
            .filter(|until| *until > now)
            .map(|until| Duration::from(until.duration_since(now)))
    }

    /// No permit for `duration` from now (a pause never shortens an earlier one).
    pub fn pause(&mut self, duration: Duration) {
        let until = self.clock.now() + duration.into();
        if self.paused_until.is_none_or(|earlier| until > earlier) {
            self.paused_until = Some(until);
        }
    }

    /// The requests still allowed in the minute and the hour from now: each limit minus the
    /// requests in flight or answered within its window.
    pub fn left(&self) -> (u32, u32) {
        let now = self.clock.now();
        let left = |limit: std::num::NonZeroU32, window: Duration| {
            let used = self
                .log
                .iter()
                .filter(|sent| match sent.done {
                    None => true,
                    Some(answered) => Duration::from(now.duration_since(answered)) < window,
                })
                .count();
            limit
                .get()
                .saturating_sub(u32::try_from(used).unwrap_or(u32::MAX))
        };
        (
            left(self.limits.per_minute, MINUTE + WINDOW_MARGIN),
            left(self.limits.per_hour, HOUR + WINDOW_MARGIN),
        )
    }

    /// How long until the sliding log admits one more request, if it does not now.
    fn log_wait(&self, now: C::Instant) -> Option<Duration> {
        let mut wait = None;
        for (limit, window) in [
            (self.limits.per_minute, MINUTE + WINDOW_MARGIN),
            (self.limits.per_hour, HOUR + WINDOW_MARGIN),
        ] {
            let limit = limit.get() as usize;
            if self.log.len() < limit {
                continue;
            }
            let Some(answered) = self.log[self.log.len() - limit].done else {
                wait = wait.max(Some(IN_FLIGHT_RECHECK));
                continue;
            };
            let elapsed = Duration::from(now.duration_since(answered));
            if elapsed < window {
                wait = wait.max(Some(window - elapsed));
            }
        }
        wait
    }
}

/// Shared by all the streams of one account.
pub struct AccountGovernor<C: Clock + Clone = TokioClock> {
    /// The queue: held by the stream whose turn it is while it waits for its permit; tokio's
    /// mutex hands it out in the order it was asked for.
    turn: tokio::sync::Mutex<()>,
    /// The decisions; a std mutex, never held across an await.
    schedule: Mutex<Schedule<C>>,
    /// Consecutive 429s that did not say how long to wait; reset by a success.
    unexplained_429s: Mutex<u32>,
}

impl AccountGovernor<TokioClock> {
    pub fn new(limits: Limits) -> AccountGovernor<TokioClock> {
        AccountGovernor::with_clock(limits, TokioClock::new())
    }
}

impl<C: Clock + Clone> AccountGovernor<C> {
    pub fn with_clock(limits: Limits, clock: C) -> AccountGovernor<C> {
        AccountGovernor {
            turn: tokio::sync::Mutex::new(()),
            schedule: Mutex::new(Schedule::new(limits, clock)),
            unexplained_429s: Mutex::new(0),
        }
    }

    /// The requests still allowed in the minute and the hour (see [`Schedule::left`]).
    pub fn requests_left(&self) -> (u32, u32) {
        self.schedule
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .left()
    }

    /// Waits for this caller's turn, then until one more request fits within the account's
    /// limits, and takes it. Hold the permit until the request is answered: dropping it
    /// records the answer's time, which the limits count from. Cancel-safe: dropping the
    /// future gives the turn to the next.
    pub async fn acquire(&self) -> Permit<'_, C> {
        let _turn = self.turn.lock().await;
        loop {
            let decision = self
                .schedule
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .try_acquire();
            match decision {
                Ok(id) => {
                    return Permit { governor: self, id };
                }
                Err(wait) => tokio::time::sleep(wait).await,
            }
        }
    }

    /// Pauses every stream of the account after a 429, for as long as the API said, or
    /// else for the window the limit implies, and returns the pause. The first unexplained
    /// 429 waits for the per-minute window; each further one in a row doubles it, up to the
    /// per-hour window (the one that must be exhausted if a minute was not enough). A 429
    /// that arrives while the account is already paused (a request that was under way when
    /// the pause began) joins that pause and does not count as another one.
    pub fn rate_limited(&self, retry_after: Option<Duration>) -> Duration {
        self.schedule
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .refused();
        let pause = match retry_after {
            Some(after) => after,
            None => {
                let paused_for = self
                    .schedule
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .paused_for();
                if let Some(remaining) = paused_for {
                    return remaining;
                }
                let mut count = self
                    .unexplained_429s
                    .lock()
                    .unwrap_or_else(|p| p.into_inner());
                let pause = unexplained_429_pause(*count);
                *count = count.saturating_add(1);
                pause
            }
        };
        self.pause(pause);
        pause
    }

    /// No permit for anyone for `duration` (for example `RateLimit-Remaining: 0`).
    pub fn pause(&self, duration: Duration) {
        self.schedule
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pause(duration);
    }

    /// A request went through: the next unexplained 429 starts again at a minute.
    pub fn succeeded(&self) {
        *self
            .unexplained_429s
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = 0;
    }
}

/// One granted request; dropped when its answer has arrived (or the request is abandoned).
#[must_use = "hold the permit until the request is answered"]
pub struct Permit<'a, C: Clock + Clone = TokioClock> {
    governor: &'a AccountGovernor<C>,
    id: u64,
}

impl<C: Clock + Clone> Permit<'_, C> {
    /// What the answer to this request said of the account's budget (see
    /// [`Schedule::observe`]); call it before dropping the permit.
    pub fn observe(&self, budget: Option<RateBudget>) {
        self.governor
            .schedule
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .observe(self.id, budget);
    }
}

impl<C: Clock + Clone> Drop for Permit<'_, C> {
    fn drop(&mut self) {
        self.governor
            .schedule
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .complete(self.id);
    }
}

/// The pause after the `n`-th (from 0) consecutive 429 without `Retry-After`: the minute
/// window, doubling, at most the hour window.
pub fn unexplained_429_pause(n: u32) -> Duration {
    MINUTE.saturating_mul(1 << n.min(6)).min(HOUR)
}

#[cfg(test)]
mod tests {
    use super::*;
    use governor::clock::FakeRelativeClock;
    use governor::nanos::Nanos;

    fn limits(per_minute: u32, per_hour: u32) -> Limits {
        Limits {
            per_minute: NonZeroU32::new(per_minute).unwrap(),
            per_hour: NonZeroU32::new(per_hour).unwrap(),
        }
    }

    /// Grants permits to `n_streams` streams that always want one, first come first served,
    /// for `duration` of fake time; returns the grant times and the stream of each.
    fn drain_backlog(limits: Limits, n_streams: usize, duration: Duration) -> Vec<(Nanos, usize)> {
        let clock = FakeRelativeClock::default();
        let mut schedule = Schedule::new(limits, clock.clone());
        let mut queue: VecDeque<usize> = (0..n_streams).collect();
        let mut grants = Vec::new();
        let end = Nanos::from(duration);
        while clock.now() < end {
            match schedule.try_acquire() {
                Ok(id) => {
                    schedule.complete(id);
                    let stream = queue.pop_front().unwrap();
                    grants.push((clock.now(), stream));
                    queue.push_back(stream);
                }
                Err(wait) => clock.advance(wait),
            }
        }
        // A grant exactly at the end belongs to the next period.
        grants.retain(|(at, _)| *at < end);
        grants
    }

    /// The most grants in any half-open window `(t - window, t]`.
    fn max_in_window(grants: &[(Nanos, usize)], window: Duration) -> usize {
        let window = Nanos::from(window);
        let mut best = 0;
        let mut start = 0;
        for end in 0..grants.len() {
            while grants[end].0.saturating_sub(grants[start].0) >= window {
                start += 1;
            }
            best = best.max(end - start + 1);
        }
        best
    }

    #[test]
    fn two_hours_of_backlog_on_three_streams_never_exceed_a_window_and_reach_the_ceiling() {
        let limits = Limits::DOCUMENTED;
        let duration = Duration::from_secs(2 * 3600);
        let grants = drain_backlog(limits, 3, duration);
        assert!(
            max_in_window(&grants, MINUTE) <= 600,
            "a minute held too many"
        );
        assert!(
            max_in_window(&grants, HOUR) <= 30_000,
            "an hour held too many"
        );
        // The margin holds too, so the API's clock may lag ours by half a second.
        assert!(max_in_window(&grants, MINUTE + WINDOW_MARGIN) <= 600);
        assert!(max_in_window(&grants, HOUR + WINDOW_MARGIN) <= 30_000);
        let ceiling = limits.ceiling(duration);
        assert_eq!(ceiling, 60_000.0);
        let efficiency = grants.len() as f64 / ceiling;
        assert!(
            (0.99..=1.0).contains(&efficiency),
            "{} grants in 2 h: {efficiency:.4} of the ceiling",
            grants.len()
        );
        // First come, first served: the streams take turns.
        for stream in 0..3 {
            let n = grants.iter().filter(|(_, s)| *s == stream).count();
            assert!(n.abs_diff(grants.len() / 3) <= 1, "stream {stream}: {n}");
        }
        // Smooth: no gap longer than the one where the first minute's burst meets the
        // sliding log (1.5 s), nothing like 10 minutes of silence at the end of an hour.
        let longest_gap = grants
            .windows(2)
            .map(|pair| Duration::from(pair[1].0.saturating_sub(pair[0].0)))
            .max()
            .unwrap();
        assert!(
            longest_gap <= Duration::from_millis(1500),
            "longest gap {longest_gap:?}"
        );
    }

    #[test]
    fn the_first_minutes_run_at_the_per_minute_ceiling() {
        let limits = Limits::DOCUMENTED;
        let duration = Duration::from_secs(120);
        let grants = drain_backlog(limits, 3, duration);
        assert!(max_in_window(&grants, MINUTE + WINDOW_MARGIN) <= 600);
        let efficiency = grants.len() as f64 / limits.ceiling(duration);
        assert!(
            efficiency >= 0.99,
            "{} grants: {efficiency:.4}",
            grants.len()
        );
    }

    #[test]
    fn small_and_odd_limits_are_never_exceeded() {
        for (per_minute, per_hour) in [(60, 3000), (1, 1), (7, 100), (600, 500), (1000, 30_000)] {
            let limits = limits(per_minute, per_hour);
            let grants = drain_backlog(limits, 2, Duration::from_secs(3 * 3600));
            let per_minute_seen = max_in_window(&grants, MINUTE + WINDOW_MARGIN);
            let per_hour_seen = max_in_window(&grants, HOUR + WINDOW_MARGIN);
            assert!(
                per_minute_seen <= per_minute as usize && per_hour_seen <= per_hour as usize,
                "{per_minute}/min {per_hour}/h: saw {per_minute_seen}/min {per_hour_seen}/h"
            );
            // The binding ceiling is reached within 1 % (or one request) over 3 hours.
            let ceiling = limits.ceiling(Duration::from_secs(3 * 3600));
            assert!(
                grants.len() as f64 >= (ceiling * 0.99).min(ceiling - 1.0),
                "{per_minute}/min {per_hour}/h: {} of {ceiling}",
                grants.len()
            );
        }
    }

    /// Whatever the delay between sending and answering, the API (which counts a request at
    /// some instant in between) never sees more than the limit in a window: each request is
    /// sent at least a window after the answer to the `n`-th request before it.
    #[test]
    fn slow_answers_hold_their_slot_until_they_arrive() {
        let limits = limits(120, 30_000);
        let clock = FakeRelativeClock::default();
        let mut schedule = Schedule::new(limits, clock.clone());
        // Three streams; answers take 0.2 s to 7 s, varying.
        let mut in_flight: Vec<(u64, Nanos)> = Vec::new();
        let mut sent: Vec<(u64, Nanos)> = Vec::new();
        let mut answered: std::collections::HashMap<u64, Nanos> = Default::default();
        let end = Nanos::from(Duration::from_secs(900));
        let mut latency_ms = 200u64;
        while clock.now() < end {
            in_flight.retain(|(id, done)| {
                if *done <= clock.now() {
                    schedule.complete(*id);
                    answered.insert(*id, *done);
                    false
                } else {
                    true
                }
            });
            if in_flight.len() < 3 {
                match schedule.try_acquire() {
                    Ok(id) => {
                        latency_ms = (latency_ms * 7 + 1300) % 7000 + 200;
                        let done = clock.now() + Nanos::from(Duration::from_millis(latency_ms));
                        sent.push((id, clock.now()));
                        in_flight.push((id, done));
                        continue;
                    }
                    Err(wait) => {
                        let next_answer = in_flight.iter().map(|(_, done)| *done).min();
                        let step = next_answer.map_or(Nanos::from(wait), |at| {
                            at.saturating_sub(clock.now()).min(Nanos::from(wait))
                        });
                        clock.advance(Duration::from(step).max(MIN_WAIT));
                    }
                }
            } else {
                let next_answer = in_flight.iter().map(|(_, done)| *done).min().unwrap();
                clock
                    .advance(Duration::from(next_answer.saturating_sub(clock.now())).max(MIN_WAIT));
            }
        }
        let n = limits.per_minute.get() as usize;
        assert!(sent.len() > 3 * n, "{} requests in 15 min", sent.len());
        for pair in sent.windows(n + 1) {
            let (first, _) = pair[0];
            let (_, at) = pair[n];
            let Some(first_answered) = answered.get(&first) else {
                continue;
            };
            assert!(
                at.saturating_sub(*first_answered) >= Nanos::from(MINUTE),
                "request sent {:?} after the answer to the {n}th before it",
                Duration::from(at.saturating_sub(*first_answered))
            );
        }
    }

    #[test]
    fn the_requests_left_count_what_is_in_flight_and_answered_within_each_window() {
        let clock = FakeRelativeClock::default();
        let mut schedule = Schedule::new(limits(10, 100), clock.clone());
        assert_eq!(schedule.left(), (10, 100));
        let first = schedule.try_acquire().unwrap();
        assert_eq!(schedule.left(), (9, 99), "in flight counts");
        schedule.complete(first);
        // Past the hour pacer's spacing (36 s at 100 an hour).
        clock.advance(Duration::from_secs(40));
        let second = schedule.try_acquire().unwrap();
        schedule.complete(second);
        assert_eq!(schedule.left(), (8, 98));
        // The first leaves the minute (with its margin) 61 s after its answer, not the hour.
        clock.advance(Duration::from_secs(21));
        assert_eq!(schedule.left(), (9, 98));
        clock.advance(Duration::from_secs(3600));
        assert_eq!(schedule.left(), (10, 100));
    }

    #[test]
    fn a_pause_holds_every_permit_back() {
        let clock = FakeRelativeClock::default();
        let mut schedule = Schedule::new(Limits::DOCUMENTED, clock.clone());
        assert!(schedule.try_acquire().is_ok());
        schedule.pause(Duration::from_secs(30));
        assert_eq!(schedule.try_acquire(), Err(Duration::from_secs(30)));
        // A shorter pause does not shorten it.
        schedule.pause(Duration::from_secs(5));
        clock.advance(Duration::from_secs(10));
        assert_eq!(schedule.try_acquire(), Err(Duration::from_secs(20)));
        clock.advance(Duration::from_secs(20));
        assert!(schedule.try_acquire().is_ok());
    }

    fn budget(remaining: u32, reset_secs: u64) -> Option<RateBudget> {
        Some(RateBudget {
            remaining,
            reset: Duration::from_secs(reset_secs),
        })
    }

    #[test]
    fn what_the_headers_leave_is_granted_and_no_more() {
        let clock = FakeRelativeClock::default();
        let mut schedule = Schedule::new(Limits::DOCUMENTED, clock.clone());
        let first = schedule.try_acquire().unwrap();
        schedule.observe(first, budget(2, 10));
        schedule.complete(first);
        let a = schedule.try_acquire().unwrap();
        let b = schedule.try_acquire().unwrap();
        assert_eq!(
            schedule.try_acquire(),
            Err(IN_FLIGHT_RECHECK),
            "two were left"
        );
        // B's answer came first: A, sent before it and still in flight, may have used one.
        schedule.observe(b, budget(1, 10));
        schedule.complete(b);
        assert_eq!(schedule.try_acquire(), Err(IN_FLIGHT_RECHECK));
        // A's answer is older news: B was granted after it.
        schedule.observe(a, budget(2, 10));
        schedule.complete(a);
        let c = schedule.try_acquire().unwrap();
        assert_eq!(schedule.try_acquire(), Err(IN_FLIGHT_RECHECK));
        // An answer without headers lifts the budget: the pacers alone decide again.
        schedule.observe(c, None);
        schedule.complete(c);
        for _ in 0..5 {
            assert!(schedule.try_acquire().is_ok());
        }
    }

    #[test]
    fn nothing_left_pauses_until_the_reset_then_one_request_finds_out() {
        let clock = FakeRelativeClock::default();
        let mut schedule = Schedule::new(Limits::DOCUMENTED, clock.clone());
        let a = schedule.try_acquire().unwrap();
        let b = schedule.try_acquire().unwrap();
        schedule.observe(a, budget(0, 3));
        schedule.complete(a);
        assert_eq!(schedule.try_acquire(), Err(Duration::from_secs(3)));
        // An answer to a request sent before the pause does not end it.
        schedule.observe(b, budget(4, 3));
        schedule.complete(b);
        clock.advance(Duration::from_secs(3));
        let probe = schedule.try_acquire().unwrap();
        schedule.observe(probe, budget(0, 1));
        schedule.complete(probe);
        assert_eq!(schedule.try_acquire(), Err(Duration::from_secs(1)));
        clock.advance(Duration::from_secs(1));
        let probe = schedule.try_acquire().unwrap();
        assert_eq!(
            schedule.try_acquire(),
            Err(IN_FLIGHT_RECHECK),
            "one probe at a time"
        );
        schedule.observe(probe, budget(3, 2));
        schedule.complete(probe);
        for _ in 0..3 {
            assert!(schedule.try_acquire().is_ok());
        }
        assert_eq!(schedule.try_acquire(), Err(IN_FLIGHT_RECHECK));
    }

    #[test]
    fn a_spent_budget_with_nothing_in_flight_probes_with_one_request() {
        // The request that was to say what is left timed out: its answer never came.
        let clock = FakeRelativeClock::default();
        let mut schedule = Schedule::new(Limits::DOCUMENTED, clock.clone());
        let a = schedule.try_acquire().unwrap();
        schedule.observe(a, budget(1, 10));
        schedule.complete(a);
        let lost = schedule.try_acquire().unwrap();
        assert_eq!(schedule.try_acquire(), Err(IN_FLIGHT_RECHECK));
        schedule.complete(lost);
        let probe = schedule.try_acquire().unwrap();
        assert_eq!(schedule.try_acquire(), Err(IN_FLIGHT_RECHECK));
        schedule.complete(probe);
        assert!(schedule.try_acquire().is_ok());
    }

    /// Four streams against a server with a strict sliding window that reports it only in
    /// `RateLimit-*` headers, whole seconds rounded up as HTTP sends them. Each request takes
    /// 5 to 200 ms to reach it and as long again to come back, so requests are admitted, and
    /// answers arrive, in other orders than they were granted: the headers alone keep every
    /// request admitted.
    #[test]
    fn the_headers_alone_keep_four_streams_inside_a_window_they_were_not_told() {
        let window = Nanos::from(Duration::from_secs(2));
        let max = 5;
        let clock = FakeRelativeClock::default();
        let mut schedule = Schedule::new(Limits::DOCUMENTED, clock.clone());
        let mut admitted_at: VecDeque<Nanos> = VecDeque::new();
        // (arrival at the server, permit, latency back), for requests on their way there.
        let mut arriving: Vec<(Nanos, u64, Nanos)> = Vec::new();
        // (answer time, permit, what the answer says), for answers on their way back.
        let mut answering: Vec<(Nanos, u64, Option<RateBudget>)> = Vec::new();
        let mut waiting_streams = 4;
        let (mut admitted, mut refused) = (0, 0);
        let mut seed: u64 = 7;
        let mut latency = || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            Nanos::from(Duration::from_millis(5 + (seed >> 33) % 195))
        };
        let end = Nanos::from(Duration::from_secs(600));
        while clock.now() < end {
            let now = clock.now();
            arriving.sort_by_key(|(at, ..)| *at);
            while arriving.first().is_some_and(|(at, ..)| *at <= now) {
                let (at, id, back) = arriving.remove(0);
                while admitted_at
                    .front()
                    .is_some_and(|t| at.saturating_sub(*t) >= window)
                {
                    admitted_at.pop_front();
                }
                let said = if admitted_at.len() < max {
                    admitted_at.push_back(at);
                    admitted += 1;
                    let reset = Duration::from((admitted_at[0] + window).saturating_sub(at));
                    budget(
                        (max - admitted_at.len()) as u32,
                        reset.as_secs_f64().ceil() as u64,
                    )
                } else {
                    refused += 1;
                    None
                };
                answering.push((at + back, id, said));
            }
            answering.sort_by_key(|(at, ..)| *at);
            while answering.first().is_some_and(|(at, ..)| *at <= now) {
                let (_, id, said) = answering.remove(0);
                schedule.observe(id, said);
                schedule.complete(id);
                waiting_streams += 1;
            }
            while waiting_streams > 0 {
                let Ok(id) = schedule.try_acquire() else {
                    break;
                };
                waiting_streams -= 1;
                let there = latency();
                arriving.push((now + there, id, latency()));
            }
            clock.advance(Duration::from_millis(1));
        }
        assert_eq!(refused, 0, "{refused} refused of {}", admitted + refused);
        // Most of the windows' capacity is used: 600 s of 5 per 2 s is 1,500.
        assert!(admitted > 1_000, "only {admitted} admitted");
    }

    #[test]
    fn unexplained_429s_wait_a_minute_doubling_up_to_an_hour() {
        let pauses: Vec<u64> = (0..9).map(|n| unexplained_429_pause(n).as_secs()).collect();
        assert_eq!(pauses, [60, 120, 240, 480, 960, 1920, 3600, 3600, 3600]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_429_pauses_every_stream_and_a_success_resets_the_escalation() {
        let governor = AccountGovernor::new(Limits::DOCUMENTED);
        drop(governor.acquire().await);
        assert_eq!(governor.rate_limited(None), Duration::from_secs(60));
        // Another stream's request was under way: its 429 joins the pause.
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(governor.rate_limited(None), Duration::from_secs(59));
        let started = tokio::time::Instant::now();
        drop(governor.acquire().await);
        assert_eq!(started.elapsed(), Duration::from_secs(59));
        // The first request after the pause is refused again: the hour may be used up.
        assert_eq!(governor.rate_limited(None), Duration::from_secs(120));
        drop(governor.acquire().await);
        governor.succeeded();
        assert_eq!(governor.rate_limited(None), Duration::from_secs(60));
        assert_eq!(
            governor.rate_limited(Some(Duration::from_secs(7))),
            Duration::from_secs(7)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_backlog_on_one_stream_does_not_starve_the_others() {
        let governor = std::sync::Arc::new(AccountGovernor::new(limits(60, 3600)));
        // Stream A has a backlog: it asks again the moment it gets a permit.
        let hog = {
            let governor = std::sync::Arc::clone(&governor);
            tokio::spawn(async move {
                loop {
                    drop(governor.acquire().await);
                }
            })
        };
        // Stream B polls every 10 s and must get its permit within about one period of A's.
        for _ in 0..20 {
            tokio::time::sleep(Duration::from_secs(10)).await;
            let asked = tokio::time::Instant::now();
            drop(governor.acquire().await);
            let waited = asked.elapsed();
            assert!(waited <= Duration::from_secs(2), "waited {waited:?}");
        }
        hog.abort();
    }
}
