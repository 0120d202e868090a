//! Live counters of what the daemon has fetched and delivered, per stream and per sink.
//!
//! Shared by pollers and sink workers (writers) and by `demo`'s progress display, the admin
//! endpoint's `/metrics`, `/readyz` and `/status` (readers).

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use time::OffsetDateTime;
use tokio::sync::watch;

use crate::stream::Stream;

/// A stream of one account.
pub type StreamKey = (String, Stream);

/// A stream of one account as one sink delivers it.
pub type SinkKey = (String, String, Stream);

/// Counters of one stream's poller.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamStats {
    pub requests: u64,
    pub failed_requests: u64,
    /// Answers by class: `2xx`, `4xx`, `429`, `5xx`, or `error` (no answer: network, timeout,
    /// a body cut short).
    pub responses: BTreeMap<&'static str, u64>,
    pub fetched_events: u64,
    pub fetched_pages: u64,
    /// The last page said `has_more: false`.
    pub caught_up: bool,
    pub last_error: Option<String>,
    /// When a page was last fetched and stored.
    pub last_success: Option<OffsetDateTime>,
    /// The time of the newest event fetched since the start.
    pub newest_event: Option<OffsetDateTime>,
    /// Time spent waiting for the account's governor.
    pub governor_wait: Duration,
    /// A bounded backfill (`end_time`) is complete and the stream's poller has stopped.
    pub finished: bool,
    /// Why the stream cannot make progress until an operator acts (a refused token, a
    /// rejected cursor); `None` while it is healthy.
    pub unhealthy: Option<String>,
    /// The same, as a short label for metrics: `unauthorized`, `invalid_cursor`,
    /// `rejected_request` or `stuck_cursor`.
    pub unhealthy_code: Option<&'static str>,
}

/// Counters of one sink's worker for one stream.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SinkStats {
    /// Events delivered.
    pub delivered: u64,
    /// Events the sink refused for good (dead letters).
    pub rejected: u64,
    /// Failed deliveries (each retried), by what the worker did: `retry`, `retry_after`,
    /// `slow` (an operator must act).
    pub failed: BTreeMap<&'static str, u64>,
    /// Failed attempts to record a delivery in the state (each retried).
    pub failed_records: u64,
    /// Since when deliveries fail, while they do.
    pub failing_since: Option<OffsetDateTime>,
    /// The wait before the next try, while deliveries fail.
    pub backoff: Duration,
    pub last_error: Option<String>,
    /// When a batch was last delivered.
    pub last_delivery: Option<OffsetDateTime>,
}

/// Everything counted so far.
#[derive(Debug)]
pub struct Stats {
    streams: Mutex<BTreeMap<StreamKey, StreamStats>>,
    sinks: Mutex<BTreeMap<SinkKey, SinkStats>>,
    /// Bumped after every change, for readers that wait for progress instead of polling.
    changes: watch::Sender<u64>,
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            streams: Mutex::default(),
            sinks: Mutex::default(),
            changes: watch::channel(0).0,
        }
    }
}

impl Stats {
    /// A receiver that sees a change after every update.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    fn changed(&self) {
        self.changes.send_modify(|n| *n += 1);
    }

    pub fn update_stream(&self, account: &str, stream: Stream, f: impl FnOnce(&mut StreamStats)) {
        let mut streams = self.streams.lock().unwrap_or_else(|p| p.into_inner());
        f(streams.entry((account.to_owned(), stream)).or_default());
        drop(streams);
        self.changed();
    }

    pub fn update_sink(
        &self,
        sink: &str,
        account: &str,
        stream: Stream,
        f: impl FnOnce(&mut SinkStats),
    ) {
        let mut sinks = self.sinks.lock().unwrap_or_else(|p| p.into_inner());
        f(sinks
            .entry((sink.to_owned(), account.to_owned(), stream))
            .or_default());
        drop(sinks);
        self.changed();
    }

    /// Every stream's counters, by (account, stream).
    pub fn streams(&self) -> Vec<(StreamKey, StreamStats)> {
        let streams = self.streams.lock().unwrap_or_else(|p| p.into_inner());
        streams
            .iter()
            .map(|(key, stats)| (key.clone(), stats.clone()))
            .collect()
    }

    pub fn stream(&self, account: &str, stream: Stream) -> StreamStats {
        let streams = self.streams.lock().unwrap_or_else(|p| p.into_inner());
        streams
            .get(&(account.to_owned(), stream))
            .cloned()
            .unwrap_or_default()
    }

    /// Every sink worker's counters, by (sink, account, stream).
    pub fn sinks(&self) -> Vec<(SinkKey, SinkStats)> {
        let sinks = self.sinks.lock().unwrap_or_else(|p| p.into_inner());
        sinks
            .iter()
            .map(|(key, stats)| (key.clone(), stats.clone()))
            .collect()
    }

    pub fn sink(&self, sink: &str, account: &str, stream: Stream) -> SinkStats {
        let sinks = self.sinks.lock().unwrap_or_else(|p| p.into_inner());
        sinks
            .get(&(sink.to_owned(), account.to_owned(), stream))
            .cloned()
            .unwrap_or_default()
    }

    /// Counts a delivered batch of `n_events`; the sink is no longer failing.
    pub fn add_delivered(&self, sink: &str, account: &str, stream: Stream, n_events: u64) {
        self.update_sink(sink, account, stream, |s| {
            s.delivered += n_events;
            s.failing_since = None;
            s.backoff = Duration::ZERO;
            s.last_delivery = Some(OffsetDateTime::now_utc());
        });
    }

    /// Counts events a sink refused for good (not delivered, not retried).
    pub fn add_rejected(&self, sink: &str, account: &str, stream: Stream, n_events: u64) {
        self.update_sink(sink, account, stream, |s| s.rejected += n_events);
    }

    /// Counts a failed delivery of a batch, tried again after `backoff`; `class` says how
    /// (`retry`, `retry_after`, `slow`).
    pub fn add_failed_delivery(
        &self,
        sink: &str,
        account: &str,
        stream: Stream,
        class: &'static str,
        error: String,
        backoff: Duration,
    ) {
        self.update_sink(sink, account, stream, |s| {
            *s.failed.entry(class).or_default() += 1;
            s.failing_since.get_or_insert_with(OffsetDateTime::now_utc);
            s.backoff = backoff;
            s.last_error = Some(error);
        });
    }

    /// Counts a failed attempt to record a delivery in the state (it is retried).
    pub fn add_failed_record(&self, sink: &str, account: &str, stream: Stream) {
        self.update_sink(sink, account, stream, |s| s.failed_records += 1);
    }

    /// Failed deliveries of a sink since the daemon started.
    pub fn failed_deliveries(&self, sink: &str, account: &str, stream: Stream) -> u64 {
        self.sink(sink, account, stream).failed.values().sum()
    }

    /// Failed attempts to record a delivery since the daemon started.
    pub fn failed_records(&self, sink: &str, account: &str, stream: Stream) -> u64 {
        self.sink(sink, account, stream).failed_records
    }

    /// Events a sink refused for good since the daemon started.
    pub fn rejected(&self, sink: &str, account: &str, stream: Stream) -> u64 {
        self.sink(sink, account, stream).rejected
    }

    /// Events delivered by a sink since the daemon started.
    pub fn delivered(&self, sink: &str, account: &str, stream: Stream) -> u64 {
        self.sink(sink, account, stream).delivered
    }
}

/// The class of an API answer for [`StreamStats::responses`]: its status, or `error` for none.
pub fn response_class(status: Option<u16>) -> &'static str {
    match status {
        Some(429) => "429",
        Some(200..=299) => "2xx",
        Some(400..=499) => "4xx",
        Some(500..=599) => "5xx",
        Some(_) => "other",
        None => "error",
    }
}
