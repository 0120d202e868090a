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

use crate::api::v3::V3State;
use crate::api::{self, ApiError, ApiVersion, ErrorClass, PageRequest};
use crate::config::{StartTime, V3Params};
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
    /// A bounded backfill: the stream stops once it has read everything up to here.
    pub end_time: Option<StartTime>,
    /// Which cursor endpoints to read (the `audit_v3` stream has its own).
    pub api_version: ApiVersion,
    /// The query parameter names of the v3 endpoint.
    pub v3_params: V3Params,
    pub max_pending_pages: u32,
}

/// A fetched page, ready to be made durable.
struct Fetched {
    /// The events as a JSON array of raw events.
    items: String,
    n_events: u64,
    /// What to continue from: the API's cursor, or the `audit_v3` state as JSON.
    cursor: String,
    /// More events may be waiting right away.
    has_more: bool,
}

/// Why a page could not be fetched.
#[derive(Debug, thiserror::Error)]
enum FetchError {
    #[error(transparent)]
    Api(#[from] ApiError),
    /// The saved position cannot be read; fetching would have to guess where to resume.
    #[error("the saved position of the stream is unreadable ({0}); it is kept as is")]
    State(String),
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
        // Relative start and end times are taken from when the daemon started.
        let started = OffsetDateTime::now_utc();
        let end_time = self
            .settings
            .end_time
            .as_ref()
            .map(|end| end.resolve(started));
        tracing::info!(
            account = %self.account,
            stream = %self.stream,
            resume = cursor.is_some(),
            end_time = %end_time.map_or_else(|| "none".to_owned(), api::rfc3339),
            "polling stream"
        );
        while !shutdown.is_cancelled() {
            if !self.wait_for_room(&shutdown).await {
                break;
            }
            let fetched = tokio::select! {
                _ = shutdown.cancelled() => break,
                fetched = async {
                    self.governor.acquire().await;
                    self.fetch_next(cursor.as_deref(), started, end_time).await
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
                        if let Some(end) = end_time
                            && end <= OffsetDateTime::now_utc()
                        {
                            tracing::info!(
                                account = %self.account, stream = %self.stream,
                                end_time = %api::rfc3339(end),
                                "backfill complete: every event up to end_time is stored; the stream stops"
                            );
                            self.stats.update_stream(&self.account, self.stream, |s| {
                                s.finished = true;
                            });
                            return;
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
                Err(FetchError::Api(err)) => self.failed(&err, &mut backoff),
                Err(err @ FetchError::State(_)) => {
                    tracing::error!(
                        account = %self.account, stream = %self.stream, error = %err,
                        retry_in_secs = SLOW_RETRY.as_secs(),
                        "cannot continue the stream"
                    );
                    self.stats.update_stream(&self.account, self.stream, |s| {
                        s.last_error = Some(err.to_string());
                    });
                    SLOW_RETRY
                }
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

    /// Fetches the page after `cursor` (the first page when there is none).
    async fn fetch_next(
        &self,
        cursor: Option<&str>,
        started: OffsetDateTime,
        end_time: Option<OffsetDateTime>,
    ) -> Result<Fetched, FetchError> {
        if self.stream == Stream::AuditV3 {
            let state = match cursor {
                Some(saved) => V3State::parse(saved).map_err(FetchError::State)?,
                None => V3State::initial(self.start_time(started).map(api::rfc3339)),
            };
            let end = end_time.map(api::rfc3339);
            let request = state.request(self.settings.page_size, end.as_deref());
            let page = self
                .client
                .fetch_v3(&self.settings.v3_params, &request)
                .await?;
            let step = state
                .advance(&page)
                .map_err(|detail| ApiError::InvalidResponse {
                    url: format!("{}/api/v3/auditevents", self.client.base_url()),
                    detail,
                    body: String::new(),
                })?;
            return Ok(Fetched {
                items: step.items,
                n_events: step.n_events,
                cursor: step.next.to_json(),
                has_more: step.has_more,
            });
        }
        let request = match cursor {
            Some(cursor) => PageRequest::Cursor(cursor.to_owned()),
            None => PageRequest::Reset {
                limit: self.settings.page_size,
                start_time: self.start_time(started),
                end_time,
            },
        };
        let page = self
            .client
            .fetch(self.settings.api_version, self.stream, &request)
            .await?;
        Ok(Fetched {
            items: page.items.get().to_owned(),
            n_events: page.n_events,
            cursor: page.cursor,
            has_more: page.has_more,
        })
    }

    /// Where a stream with no cursor starts: the configured start time, clamped to the API's
    /// retention; `None` lets the API choose.
    fn start_time(&self, now: OffsetDateTime) -> Option<OffsetDateTime> {
        let requested = self.settings.start_time.as_ref().map(|at| at.resolve(now));
        requested.map(|at| {
            let (start, clamped) = clamp_to_retention(at, now);
            if clamped {
                tracing::warn!(
                    account = %self.account, stream = %self.stream,
                    start_time = %api::rfc3339(at), using = %api::rfc3339(start),
                    "start_time is older than the API's 120-day retention; starting at the oldest events kept"
                );
            }
            start
        })
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
    async fn keep(&self, page: &Fetched) -> Result<(), crate::store::StoreError> {
        let (account, stream) = (self.account.clone(), self.stream);
        let (items, n_events, cursor) = (page.items.clone(), page.n_events, page.cursor.clone());
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
