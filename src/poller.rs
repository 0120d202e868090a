//! One task per (account, stream): fetch pages, make each durable with its cursor, repeat.
//!
//! Invariant: the cursor moves only through [`Store::append_page`], after a successful
//! response, in the transaction that stores the page's events. A failed request, a shutdown
//! in the middle of a request, or a store error leaves the saved cursor where it was.
//! Invariant: the poller knows nothing of sinks or their formats; it only tells them that a
//! page arrived, and waits for them when the outbox is full (backpressure).

use std::sync::Arc;
use std::time::Duration;

use time::OffsetDateTime;
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;

use crate::api::{self, ApiError, ErrorClass, PageRequest};
use crate::config::StartTime;
use crate::governor::AccountGovernor;
use crate::retry::Backoff;
use crate::stats::Stats;
use crate::store::Store;
use crate::stream::Stream;

/// How far back the Events API keeps events.
pub const RETENTION: Duration = Duration::from_secs(120 * 24 * 3600);
/// Kept off the retention edge, so the API's clock and ours need not agree to the second.
const RETENTION_MARGIN: Duration = Duration::from_secs(3600);
/// The longest wait between retries of a failing request.
const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// The wait after an error that an operator has to fix (a revoked token, a rejected request).
const SLOW_RETRY: Duration = Duration::from_secs(300);
/// The wait after a 429 that did not say how long to wait: the per-minute window.
const RATE_LIMIT_PAUSE: Duration = Duration::from_secs(60);
/// How often a full outbox is re-checked even without news from the sinks.
const BACKPRESSURE_RECHECK: Duration = Duration::from_secs(1);

/// How one stream is polled.
#[derive(Debug, Clone)]
pub struct PollSettings {
    pub page_size: u16,
    pub poll_interval: Duration,
    pub start_time: Option<StartTime>,
    pub max_pending_pages: u32,
}

/// Everything one stream's poller needs.
pub struct StreamPoller {
    pub account: String,
    pub stream: Stream,
    pub client: api::Client,
    /// Shared by every stream of the account.
    pub governor: Arc<AccountGovernor>,
    pub store: Store,
    pub settings: PollSettings,
    /// Bumped after each page appended to the outbox; the stream's sink workers watch it.
    pub appended: watch::Sender<u64>,
    /// Notified by the stream's sink workers after each acknowledgement; wakes a poller that
    /// waits for room in the outbox.
    pub acked: Arc<Notify>,
    pub stats: Arc<Stats>,
}

impl StreamPoller {
    /// Polls until `shutdown` is cancelled. Never returns early: every failure is retried.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut backoff = new_backoff();
        let mut cursor = self.saved_cursor(&shutdown).await;
        tracing::info!(
            account = %self.account,
            stream = %self.stream,
            resume = cursor.is_some(),
            "polling stream"
        );
        while !shutdown.is_cancelled() {
            if !self.wait_for_room(&shutdown).await {
                break;
            }
            let request = match &cursor {
                Some(cursor) => PageRequest::Cursor(cursor.clone()),
                None => self.reset_request(OffsetDateTime::now_utc()),
            };
            let fetched = tokio::select! {
                _ = shutdown.cancelled() => break,
                fetched = async {
                    self.governor.acquire().await;
                    self.client.fetch(self.stream, &request).await
                } => fetched,
            };
            let pause = match fetched {
                Ok(page) => match self.keep(&page).await {
                    Ok(()) => {
                        backoff = new_backoff();
                        cursor = Some(page.cursor);
                        if page.has_more {
                            continue;
                        }
                        self.settings.poll_interval
                    }
                    Err(err) => {
                        let delay = backoff.next_delay();
                        tracing::error!(
                            account = %self.account, stream = %self.stream, error = %err,
                            retry_in_secs = delay.as_secs_f32(),
                            "cannot save the fetched page; fetching it again later"
                        );
                        delay
                    }
                },
                Err(err) => self.failed(&err, &mut backoff),
            };
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(pause) => {}
            }
        }
        tracing::info!(account = %self.account, stream = %self.stream, "poller stopped");
    }

    /// The cursor saved by an earlier run; retries while the store fails.
    async fn saved_cursor(&self, shutdown: &CancellationToken) -> Option<String> {
        let mut backoff = new_backoff();
        loop {
            let (account, stream) = (self.account.clone(), self.stream);
            match self.store.run(move |s| s.cursor(&account, stream)).await {
                Ok(cursor) => return cursor,
                Err(err) => {
                    let delay = backoff.next_delay();
                    tracing::error!(account = %self.account, stream = %self.stream, error = %err, "cannot read the saved cursor");
                    tokio::select! {
                        _ = shutdown.cancelled() => return None,
                        _ = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
    }

    /// The first request of a stream that has no cursor yet.
    fn reset_request(&self, now: OffsetDateTime) -> PageRequest {
        let requested = self.settings.start_time.as_ref().map(|at| at.resolve(now));
        let start_time = requested.map(|at| {
            let (start, clamped) = clamp_to_retention(at, now);
            if clamped {
                tracing::warn!(
                    account = %self.account, stream = %self.stream,
                    start_time = %api::rfc3339(at), using = %api::rfc3339(start),
                    "start_time is older than the API's 120-day retention; starting at the oldest events kept"
                );
            }
            start
        });
        PageRequest::Reset {
            limit: self.settings.page_size,
            start_time,
            end_time: None,
        }
    }

    /// Waits while the stream's outbox is full. Returns false on shutdown.
    async fn wait_for_room(&self, shutdown: &CancellationToken) -> bool {
        let mut warned = false;
        loop {
            let (account, stream) = (self.account.clone(), self.stream);
            let pending = self
                .store
                .run(move |s| s.pending_pages(&account, stream))
                .await
                .unwrap_or(u64::MAX);
            if pending < u64::from(self.settings.max_pending_pages) {
                return true;
            }
            if !warned {
                tracing::info!(
                    account = %self.account, stream = %self.stream, pending_pages = pending,
                    "outbox full; waiting for the sinks before fetching more"
                );
                warned = true;
            }
            tokio::select! {
                _ = shutdown.cancelled() => return false,
                _ = self.acked.notified() => {}
                _ = tokio::time::sleep(BACKPRESSURE_RECHECK) => {}
            }
        }
    }

    /// Makes a page durable with its cursor, then tells the sinks.
    async fn keep(&self, page: &api::Page) -> Result<(), crate::store::StoreError> {
        let (account, stream) = (self.account.clone(), self.stream);
        let (items, n_events, cursor) = (
            page.items.get().to_owned(),
            page.n_events,
            page.cursor.clone(),
        );
        let seq = self
            .store
            .run(move |s| s.append_page(&account, stream, &items, n_events, &cursor))
            .await?;
        if let Some(seq) = seq {
            self.appended.send_replace(seq);
        }
        self.stats.update_stream(&self.account, self.stream, |s| {
            s.requests += 1;
            s.fetched_events += page.n_events;
            s.caught_up = !page.has_more;
            s.last_error = None;
        });
        tracing::debug!(
            account = %self.account, stream = %self.stream, events = page.n_events,
            has_more = page.has_more, "page stored"
        );
        Ok(())
    }

    /// Logs a failed request and says how long to wait before the next one.
    fn failed(&self, err: &ApiError, backoff: &mut Backoff) -> Duration {
        self.stats.update_stream(&self.account, self.stream, |s| {
            s.requests += 1;
            s.failed_requests += 1;
            s.last_error = Some(err.to_string());
        });
        let (account, stream) = (&self.account, self.stream);
        match err.class() {
            ErrorClass::Retry => {
                let delay = backoff.next_delay();
                tracing::warn!(%account, %stream, error = %err, retry_in_secs = delay.as_secs_f32(), "request failed; retrying");
                delay
            }
            ErrorClass::RateLimited { retry_after } => {
                let delay = retry_after.unwrap_or(RATE_LIMIT_PAUSE);
                tracing::warn!(%account, %stream, error = %err, retry_in_secs = delay.as_secs_f32(), "rate limited by the API; pausing");
                delay
            }
            ErrorClass::Unauthorized => {
                tracing::error!(
                    %account, %stream, error = %err, retry_in_secs = SLOW_RETRY.as_secs(),
                    "the API refused the token: it is invalid, expired, revoked or lacks this stream's feature; \
                     issue a new token with this stream enabled and update the token file"
                );
                SLOW_RETRY
            }
            ErrorClass::BadRequest | ErrorClass::Fatal => {
                tracing::error!(%account, %stream, error = %err, retry_in_secs = SLOW_RETRY.as_secs(), "the API rejected the request; the cursor is kept, not reset");
                SLOW_RETRY
            }
        }
    }
}

fn new_backoff() -> Backoff {
    Backoff::new(Duration::from_secs(1), MAX_BACKOFF)
}

/// Moves a start time that is older than the API keeps to the oldest it keeps. Returns the
/// time to use and whether it was moved.
pub fn clamp_to_retention(at: OffsetDateTime, now: OffsetDateTime) -> (OffsetDateTime, bool) {
    let oldest = now - RETENTION + RETENTION_MARGIN;
    if at < oldest {
        (oldest, true)
    } else {
        (at, false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn start_times_older_than_retention_are_clamped() {
        let now = datetime!(2026-11-21 00:00 UTC);
        let recent = datetime!(2026-11-01 00:00 UTC);
        assert_eq!(clamp_to_retention(recent, now), (recent, false));
        let old = datetime!(2026-01-01 00:00 UTC);
        assert_eq!(
            clamp_to_retention(old, now),
            (datetime!(2026-07-24 01:00 UTC), true)
        );
    }
}
