//! One task per (account, stream): fetch pages, make each durable with its cursor, repeat.
//!
//! Invariant: the cursor moves only through [`Store::append_page`], after a successful
//! response, in the transaction that stores the page's events. A failed request, a shutdown
//! in the middle of a request, or a store error leaves the saved cursor where it was.
//! Invariant: the poller knows nothing of sinks or their formats; it only tells them that a
//! page arrived, and waits for them when the outbox is full (backpressure).
//!
//! Errors (see [`ErrorClass`]): transient ones are retried forever with capped, fully jittered
//! exponential backoff; a 429 pauses the whole account through the governor; a 401 marks the
//! stream unhealthy and retries slowly, re-reading the token first; a 400 on a saved cursor
//! either keeps the cursor and waits for an operator (`on_invalid_cursor = "stop"`) or restarts
//! from the newest event fetched (`"reset"`).

use std::sync::Arc;
use std::time::Duration;

use time::OffsetDateTime;
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;

use crate::account::config::{AccountConfig, OnInvalidCursor, TokenSource};
use crate::api::v3::V3State;
use crate::api::{self, ApiError, ErrorClass, PageRequest};
use crate::event::EventArray;
use crate::governor::{AccountGovernor, RateBudget};
use crate::retry::Backoff;
use crate::stats::Stats;
use crate::store::Store;
use crate::stream::Stream;

/// How far back the Events API keeps events.
pub const RETENTION: Duration = Duration::from_secs(120 * 24 * 3600);
/// Kept off the retention edge, so the API's clock and ours need not agree to the second.
const RETENTION_MARGIN: Duration = Duration::from_secs(3600);
/// The first retry waits up to this long; each further one up to twice as long as the last.
const MIN_BACKOFF: Duration = Duration::from_secs(1);
/// The longest wait for the store (not the API) to recover.
const STORE_MAX_BACKOFF: Duration = Duration::from_secs(300);
/// How often a full outbox is re-checked even without news from the sinks.
const BACKPRESSURE_RECHECK: Duration = Duration::from_secs(1);

/// A fetched page, ready to be made durable.
struct Fetched {
    /// The events (shared with the store's thread, not copied).
    items: Arc<EventArray>,
    /// The latest readable `timestamp` among them.
    newest: Option<OffsetDateTime>,
    n_events: u64,
    /// What to continue from: the API's cursor, or the `audit_v3` state as JSON.
    cursor: String,
    /// More events may be waiting right away.
    has_more: bool,
    /// What the answer's `RateLimit-*` headers said, for the governor.
    budget: Option<RateBudget>,
}

/// How long the account's requests are used up, if the headers say they are.
fn exhausted(budget: Option<RateBudget>) -> Option<Duration> {
    budget
        .filter(|budget| budget.remaining == 0)
        .map(|budget| budget.reset)
}

/// What a successful answer means for the stream.
enum Progress {
    /// A page to keep.
    New(Fetched),
    /// The API answered with the cursor it was sent and `has_more: true`, and a page that is
    /// already kept (or empty): nothing to keep; ask again after this long.
    Repeated(Duration),
}

/// A cursor the API keeps answering with itself and `has_more: true`.
struct Stuck {
    /// The events kept at this cursor (a hash of their bytes), so they are kept only once.
    kept: Option<u64>,
    since: tokio::time::Instant,
    repeats: u64,
}

impl Stuck {
    fn reason(&self) -> String {
        "the API answers has_more: true without moving the cursor".to_owned()
    }
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
    /// The account's config: page size, poll interval, start and end, retry settings.
    pub config: Arc<AccountConfig>,
    /// Backpressure: no fetch while the state database uses this many bytes on disk
    /// (`state.max_outbox_bytes`).
    pub max_outbox_bytes: u64,
    /// Where the watchdog sees this task busy.
    pub liveness: Arc<crate::systemd::Liveness>,
    /// Bumped after each page appended to the outbox; the stream's sink workers watch it.
    pub appended: watch::Sender<u64>,
    /// Notified by the stream's sink workers after each acknowledgement; wakes a poller that
    /// waits for room in the outbox.
    pub acked: Arc<Notify>,
    pub stats: Arc<Stats>,
    /// Where the account's token comes from; read again after a 401.
    pub token_source: TokenSource,
}

/// What the loop does after a failed request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Next {
    /// Wait this long, then send the same request again.
    Retry(Duration),
    /// Wait this long, re-read the token, then send the same request again.
    RetryWithFreshToken(Duration),
    /// Restart the stream at this time (or at `start_time` if we never fetched an event).
    Restart(Option<OffsetDateTime>),
}

impl StreamPoller {
    /// Polls until `shutdown` is cancelled. Never returns early: every failure is retried.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut backoff = self.new_backoff();
        let mut cursor = self.saved_cursor(&shutdown).await;
        // Relative start and end times are taken from when the daemon started, on the API's
        // clock once an answer has told it (see `clock_checked` below).
        let mut started = self.client.server_now();
        let mut clock_checked = self.client.clock_skew().is_some();
        let mut end_time = self
            .config
            .end_time
            .as_ref()
            .map(|end| end.resolve(started));
        // The most a page may hold: what the last reset asked for. A cursor saved by an
        // earlier run may come from a reset with another page size: the API's largest then.
        let mut asked = api::MAX_PAGE_ITEMS;
        // Set while the API answers `has_more: true` with the cursor it was sent.
        let mut stuck: Option<Stuck> = None;
        // Set when the API rejected the cursor and the stream restarts from a time, or when
        // `cursor reset` asked for it.
        let mut restart_at: Option<Option<OffsetDateTime>> = None;
        if cursor.is_none() {
            let (account, stream) = (self.account.clone(), self.stream);
            if let Ok(Some(at)) = self
                .store
                .run(move |s| s.restart_from(&account, stream))
                .await
            {
                tracing::info!(
                    account = %self.account, stream = %self.stream, start_time = %api::rfc3339(at),
                    "starting again from the time `cursor reset` set"
                );
                restart_at = Some(Some(at));
            }
        }
        // A reset request is resolved once and sent again unchanged until it succeeds: a
        // relative start_time resolved again at each retry would move the window forward and
        // skip the events at its start.
        let mut reset: Option<PageRequest> = None;
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
            let request = match (&restart_at, &cursor) {
                (None, Some(cursor)) => PageRequest::Cursor(cursor.clone()),
                _ => reset
                    .get_or_insert_with(|| PageRequest::Reset {
                        limit: self.config.page_size,
                        start_time: match restart_at {
                            Some(Some(at)) => Some(at),
                            _ => self.start_time(started),
                        },
                        end_time,
                    })
                    .clone(),
            };
            // The token this request goes out with: after a 401, a newer one (another stream
            // read the rewritten file meanwhile) is worth a retry at once.
            let sent_with = self.client.token_generation();
            let max_items = match &request {
                PageRequest::Reset { limit, .. } => *limit,
                PageRequest::Cursor(_) => asked,
            };
            let fetched = tokio::select! {
                _ = shutdown.cancelled() => break,
                fetched = async {
                    let waiting = tokio::time::Instant::now();
                    let permit = self.governor.acquire().await;
                    let waited = waiting.elapsed();
                    if waited > Duration::ZERO {
                        self.stats.update_stream(&self.account, self.stream, |s| {
                            s.governor_wait += waited;
                        });
                    }
                    let _busy = self.liveness.busy(&self.task_name(), "a request to the API");
                    let fetched = self.fetch_next(&request, end_time, max_items).await;
                    if let Ok(page) = &fetched {
                        permit.observe(page.budget);
                    }
                    fetched
                } => fetched,
            };
            // The first answer tells how the API's clock compares with ours. A first reset
            // resolved against a clock that is off by more than the tolerance is resolved
            // again on the API's clock and sent again, its page not kept: a clock a year
            // ahead would otherwise skip the whole backlog for good.
            if !clock_checked && let Some(skew) = self.client.clock_skew() {
                clock_checked = true;
                if skew != time::Duration::ZERO {
                    started += skew;
                    end_time = self
                        .config
                        .end_time
                        .as_ref()
                        .map(|end| end.resolve(started));
                    if matches!(request, PageRequest::Reset { .. }) && restart_at.is_none() {
                        reset = None;
                        if fetched.is_ok() {
                            tracing::warn!(
                                account = %self.account, stream = %self.stream,
                                skew_secs = skew.whole_seconds(),
                                "the first request's times were resolved on a wrong local clock; \
                                 asking again with times on the API's clock"
                            );
                            continue;
                        }
                    }
                }
            }
            let fetched = match fetched {
                Ok(page) => Ok(self
                    .check_progress(&request, page, &mut stuck, &mut backoff)
                    .await),
                Err(err) => Err(err),
            };
            let pause = match fetched {
                Ok(Progress::Repeated(delay)) => delay,
                Ok(Progress::New(page)) => match self.keep(&page).await {
                    Ok(()) => {
                        backoff = self.new_backoff();
                        self.governor.succeeded();
                        if let Some(exhausted_for) = exhausted(page.budget) {
                            // The governor paused the account when the answer arrived.
                            tracing::info!(
                                account = %self.account, stream = %self.stream,
                                pause_secs = exhausted_for.as_secs(),
                                "the API says the account's requests are used up; pausing the account"
                            );
                        }
                        if let PageRequest::Reset { limit, .. } = request {
                            asked = limit;
                        }
                        restart_at = None;
                        reset = None;
                        cursor = Some(page.cursor);
                        if let Some(stuck) = &stuck {
                            // Kept once; the same cursor is asked again after a backoff.
                            self.set_unhealthy("stuck_cursor", stuck.reason());
                            continue;
                        }
                        if page.has_more {
                            continue;
                        }
                        if let Some(end) = end_time
                            && end <= self.client.server_now()
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
                        self.config.poll_interval
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
                Err(FetchError::Api(err)) => {
                    match self.failed(&err, &request, &mut backoff).await {
                        Next::Retry(delay) => delay,
                        // A token already replaced (rotated before the old one was revoked, or
                        // read by another stream of the account since this request left) is
                        // used at once; otherwise the file is read again after the slow wait.
                        Next::RetryWithFreshToken(_)
                            // Read first: another stream may be swapping the same new
                            // token in right now, and then the count below shows it.
                            if self.reload_token()
                                || self.client.token_generation() != sent_with =>
                        {
                            Duration::ZERO
                        }
                        Next::RetryWithFreshToken(delay) => {
                            tokio::select! {
                                _ = shutdown.cancelled() => break,
                                _ = tokio::time::sleep(delay) => {}
                            }
                            self.reload_token();
                            Duration::ZERO
                        }
                        Next::Restart(at) => {
                            restart_at = Some(at);
                            reset = None;
                            Duration::ZERO
                        }
                    }
                }
                Err(err @ FetchError::State(_)) => {
                    tracing::error!(
                        account = %self.account, stream = %self.stream, error = %err,
                        retry_in_secs = self.config.unauthorized_retry.as_secs(),
                        "cannot continue the stream"
                    );
                    self.stats.update_stream(&self.account, self.stream, |s| {
                        s.last_error = Some(err.to_string());
                    });
                    self.config.unauthorized_retry
                }
            };
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(pause) => {}
            }
        }
        tracing::info!(account = %self.account, stream = %self.stream, "poller stopped");
    }

    /// Tells a page that moves the stream on from the same cursor served again with
    /// `has_more: true` (a server that is stuck, or lies): that one is kept at most once,
    /// warned about once per episode with the cursor's age, and asked for again only after
    /// a growing backoff, so neither the outbox nor the request budget fills with copies.
    async fn check_progress(
        &self,
        request: &PageRequest,
        page: Fetched,
        stuck: &mut Option<Stuck>,
        backoff: &mut Backoff,
    ) -> Progress {
        let repeated =
            page.has_more && matches!(request, PageRequest::Cursor(sent) if *sent == page.cursor);
        if !repeated {
            if let Some(was) = stuck.take() {
                tracing::info!(
                    account = %self.account, stream = %self.stream, repeats = was.repeats,
                    stuck_secs = was.since.elapsed().as_secs(),
                    "the API's cursor moves again"
                );
            }
            return Progress::New(page);
        }
        let items = {
            use std::hash::{Hash as _, Hasher as _};
            let mut hasher = std::hash::DefaultHasher::new();
            page.items.hash(&mut hasher);
            hasher.finish()
        };
        let state = match stuck {
            Some(state) => {
                state.repeats += 1;
                state
            }
            None => {
                let (_, cursor_age_secs) = self.saved_state().await;
                tracing::warn!(
                    account = %self.account, stream = %self.stream, cursor_age_secs,
                    events = page.n_events,
                    "the API answered has_more: true with the very cursor it was sent; its events \
                     are kept once and the same cursor is asked for again with a growing backoff"
                );
                stuck.insert(Stuck {
                    kept: None,
                    since: tokio::time::Instant::now(),
                    repeats: 0,
                })
            }
        };
        if page.n_events > 0 && state.kept != Some(items) {
            state.kept = Some(items);
            return Progress::New(page);
        }
        self.stats.update_stream(&self.account, self.stream, |s| {
            s.requests += 1;
            *s.responses.entry("2xx").or_default() += 1;
            s.unhealthy = Some(state.reason());
            s.unhealthy_code = Some("stuck_cursor");
        });
        Progress::Repeated(backoff.next_delay())
    }

    /// The cursor saved by an earlier run; retries while the store fails.
    async fn saved_cursor(&self, shutdown: &CancellationToken) -> Option<String> {
        let mut backoff = Backoff::new(MIN_BACKOFF, STORE_MAX_BACKOFF);
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

    /// Fetches the page `request` asks for; for `audit_v3`, the request's cursor is our saved
    /// v3 state and a reset starts a new window.
    ///
    /// `max_items` is the most the page may hold: what the request (or, for a cursor, the
    /// reset that started it) asked for.
    async fn fetch_next(
        &self,
        request: &PageRequest,
        end_time: Option<OffsetDateTime>,
        max_items: u16,
    ) -> Result<Fetched, FetchError> {
        if self.stream == Stream::AuditV3 {
            let state = match request {
                PageRequest::Cursor(saved) => V3State::parse(saved).map_err(FetchError::State)?,
                PageRequest::Reset { start_time, .. } => {
                    V3State::initial(start_time.map(api::rfc3339))
                }
            };
            let end = end_time.map(api::rfc3339);
            let request = state.request(self.config.page_size, end.as_deref());
            let page = self
                .client
                .fetch_v3(&self.config.v3_params, &request, self.config.page_size)
                .await?;
            let step = state
                .advance(&page)
                .map_err(|detail| ApiError::InvalidResponse {
                    url: format!("{}/api/v3/auditevents", self.client.base_url()),
                    detail,
                    body: String::new(),
                })?;
            return Ok(Fetched {
                newest: api::newest_event_time(step.items.iter()),
                items: Arc::new(step.items),
                n_events: step.n_events,
                cursor: step.next.to_json(),
                has_more: step.has_more,
                budget: page.budget,
            });
        }
        let page = self
            .client
            .fetch(self.config.api_version, self.stream, request, max_items)
            .await?;
        Ok(Fetched {
            items: Arc::new(page.items),
            newest: page.newest,
            n_events: page.n_events,
            cursor: page.cursor,
            has_more: page.has_more,
            budget: page.budget,
        })
    }

    /// Where a stream with no cursor starts: the configured start time, clamped to the API's
    /// retention; `None` lets the API choose.
    fn start_time(&self, now: OffsetDateTime) -> Option<OffsetDateTime> {
        let requested = self.config.start_time.as_ref().map(|at| at.resolve(now));
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

    /// Waits while the outbox is full: the state database uses `max_outbox_bytes` on disk.
    /// Logged once per episode. Returns false on shutdown.
    async fn wait_for_room(&self, shutdown: &CancellationToken) -> bool {
        let mut warned = false;
        loop {
            let used = self.store.run(|s| s.used_bytes()).await.unwrap_or(u64::MAX);
            if used < self.max_outbox_bytes {
                if warned {
                    tracing::info!(
                        account = %self.account, stream = %self.stream, used_bytes = used,
                        "the outbox has room again; fetching"
                    );
                }
                return true;
            }
            if !warned {
                tracing::warn!(
                    account = %self.account, stream = %self.stream, used_bytes = used,
                    max_outbox_bytes = self.max_outbox_bytes,
                    "outbox full (state.max_outbox_bytes): a sink is behind; waiting for the \
                     sinks before fetching more (the API keeps events for 120 days)"
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

    /// How the watchdog names this task.
    fn task_name(&self) -> String {
        format!("poller {}/{}", self.account, self.stream)
    }

    /// Makes a page durable with its cursor, then tells the sinks.
    async fn keep(&self, page: &Fetched) -> Result<(), crate::store::StoreError> {
        let _busy = self.liveness.busy(&self.task_name(), "storing a page");
        let (account, stream) = (self.account.clone(), self.stream);
        let (items, cursor) = (Arc::clone(&page.items), page.cursor.clone());
        let newest = page.newest;
        let seq = self
            .store
            .run(move |s| s.append_page_at(&account, stream, &items, &cursor, newest))
            .await?;
        if let Some(seq) = seq {
            self.appended.send_replace(seq);
        }
        let mut recovered = None;
        self.stats.update_stream(&self.account, self.stream, |s| {
            s.requests += 1;
            *s.responses.entry("2xx").or_default() += 1;
            s.fetched_events += page.n_events;
            s.fetched_pages += 1;
            s.caught_up = !page.has_more;
            s.last_error = None;
            s.last_success = Some(OffsetDateTime::now_utc());
            s.newest_event = s.newest_event.max(newest);
            s.unhealthy_code = None;
            recovered = s.unhealthy.take();
        });
        if let Some(reason) = recovered {
            tracing::info!(account = %self.account, stream = %self.stream, was = %reason, "stream healthy again");
        }
        tracing::debug!(
            account = %self.account, stream = %self.stream, events = page.n_events,
            has_more = page.has_more, "page stored"
        );
        Ok(())
    }

    /// Logs a failed request (once per try) and says what to do next. Never moves the cursor.
    async fn failed(&self, err: &ApiError, request: &PageRequest, backoff: &mut Backoff) -> Next {
        let mut attempts = 0;
        self.stats.update_stream(&self.account, self.stream, |s| {
            s.requests += 1;
            s.failed_requests += 1;
            *s.responses
                .entry(crate::stats::response_class(err.status()))
                .or_default() += 1;
            s.last_error = Some(err.to_string());
            attempts = s.failed_requests;
        });
        let (account, stream) = (&self.account, self.stream);
        let status = err.status().unwrap_or(0);
        match err.class() {
            ErrorClass::Retry => {
                let delay = retry_delay(err, backoff.next_delay());
                tracing::warn!(
                    %account, %stream, status, error = %err, failed_requests = attempts,
                    retry_in_secs = delay.as_secs_f32(), "request failed; retrying"
                );
                Next::Retry(delay)
            }
            ErrorClass::RateLimited { retry_after } => {
                let pause = self.governor.rate_limited(retry_after);
                tracing::warn!(
                    %account, %stream, status, error = %err, pause_secs = pause.as_secs_f32(),
                    retry_after_given = retry_after.is_some(),
                    "rate limited by the API (another integration may share the account); pausing every stream of the account"
                );
                Next::Retry(Duration::ZERO)
            }
            ErrorClass::Unauthorized => {
                let delay = self.config.unauthorized_retry;
                self.set_unhealthy(
                    "unauthorized",
                    format!("the API refused the token (HTTP {status})"),
                );
                tracing::error!(
                    %account, %stream, status, error = %err, retry_in_secs = delay.as_secs(),
                    "the API refused the token: it is invalid, expired, revoked, or lacks the {stream} feature; \
                     issue a token with this stream enabled and write it to the account's token_file \
                     (or token_env); it is read again before each retry, no restart needed",
                );
                Next::RetryWithFreshToken(delay)
            }
            ErrorClass::BadRequest if matches!(request, PageRequest::Cursor(_)) => {
                self.invalid_cursor(err).await
            }
            ErrorClass::BadRequest | ErrorClass::Fatal => {
                let delay = self.config.unauthorized_retry;
                self.set_unhealthy(
                    "rejected_request",
                    format!("the API rejected the request (HTTP {status})"),
                );
                tracing::error!(
                    %account, %stream, status, error = %err, request = %request.body(),
                    retry_in_secs = delay.as_secs(),
                    "the API rejected the request; check start_time and page_size; retrying slowly"
                );
                Next::Retry(delay)
            }
        }
    }

    /// A 400 in answer to a saved cursor: logs its age and the body, then keeps it (stop) or
    /// restarts from the newest event fetched (reset).
    async fn invalid_cursor(&self, err: &ApiError) -> Next {
        let (saved, cursor_age_secs) = self.saved_state().await;
        let newest = saved.and_then(|state| state.last_event_time);
        let (account, stream) = (&self.account, self.stream);
        match self.config.on_invalid_cursor {
            OnInvalidCursor::Stop => {
                let delay = self.config.unauthorized_retry;
                self.set_unhealthy(
                    "invalid_cursor",
                    "the API rejected the saved cursor (HTTP 400)".to_owned(),
                );
                tracing::error!(
                    %account, %stream, cursor_age_secs, error = %err, retry_in_secs = delay.as_secs(),
                    "the API rejected the saved cursor; the stream stops advancing and keeps it \
                     (on_invalid_cursor = \"stop\"); set on_invalid_cursor = \"reset\" to restart \
                     from the newest event fetched"
                );
                Next::Retry(delay)
            }
            OnInvalidCursor::Reset => {
                tracing::warn!(
                    %account, %stream, cursor_age_secs, error = %err,
                    restart_at = %newest.map(api::rfc3339).unwrap_or_else(|| "start_time".to_owned()),
                    "the API rejected the saved cursor; restarting from the newest event fetched \
                     (on_invalid_cursor = \"reset\"); events at that time may arrive twice"
                );
                Next::Restart(newest)
            }
        }
    }

    /// The stream's saved state, and how old its cursor is in seconds (0 if unknown).
    async fn saved_state(&self) -> (Option<crate::store::StreamState>, i64) {
        let (account, stream) = (self.account.clone(), self.stream);
        let saved = self
            .store
            .run(move |s| s.stream_state(&account, stream))
            .await
            .ok()
            .flatten();
        let age = saved
            .as_ref()
            .map(|state| (OffsetDateTime::now_utc() - state.saved_at).whole_seconds())
            .unwrap_or(0);
        (saved, age)
    }

    fn set_unhealthy(&self, code: &'static str, reason: String) {
        self.stats.update_stream(&self.account, self.stream, |s| {
            s.unhealthy = Some(reason);
            s.unhealthy_code = Some(code);
        });
    }

    /// Reads the token again, so a replaced one takes effect for every stream of the account.
    /// Returns whether it changed.
    fn reload_token(&self) -> bool {
        match crate::token::read(&self.account, &self.token_source) {
            Ok(token) => {
                let changed = self.client.replace_token(token);
                if changed {
                    tracing::info!(account = %self.account, stream = %self.stream, "read a new token; retrying with it");
                }
                changed
            }
            Err(err) => {
                tracing::error!(account = %self.account, stream = %self.stream, error = %err, "cannot read the token again; retrying with the one in use");
                false
            }
        }
    }

    fn new_backoff(&self) -> Backoff {
        Backoff::new(MIN_BACKOFF, self.config.retry_max.max(MIN_BACKOFF))
    }
}

/// The wait before retrying a transient failure: the jittered backoff, or longer if the
/// response said when to come back (`Retry-After` on a 503).
pub fn retry_delay(err: &ApiError, jittered: Duration) -> Duration {
    match err {
        ApiError::Status {
            retry_after: Some(after),
            ..
        } => jittered.max(*after),
        _ => jittered,
    }
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
    fn the_newest_event_time_is_the_latest_readable_timestamp() {
        use crate::api::newest_event_time;
        let items = EventArray::parse(
            r#"[{"uuid":"A","timestamp":"2026-11-21T10:00:00.5-03:00"},
                {"uuid":"B","timestamp":"2026-11-21T12:00:00Z"},
                {"uuid":"C","timestamp":"not a time"},{"uuid":"D"}]"#,
        )
        .unwrap();
        assert_eq!(
            newest_event_time(items.iter()),
            Some(datetime!(2026-11-21 13:00:00.5 UTC))
        );
        assert_eq!(newest_event_time(std::iter::empty()), None);
    }

    #[test]
    fn a_retry_after_on_a_5xx_is_honoured() {
        let status = |retry_after| ApiError::Status {
            url: "u".into(),
            status: 503,
            message: None,
            body: String::new(),
            retry_after,
        };
        let jittered = Duration::from_millis(700);
        assert_eq!(retry_delay(&status(None), jittered), jittered);
        assert_eq!(
            retry_delay(&status(Some(Duration::from_secs(20))), jittered),
            Duration::from_secs(20)
        );
        assert_eq!(
            retry_delay(&status(Some(Duration::from_millis(100))), jittered),
            jittered
        );
        let timeout = ApiError::Timeout {
            url: "u".into(),
            after: Duration::from_secs(30),
        };
        assert_eq!(retry_delay(&timeout, jittered), jittered);
    }

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
