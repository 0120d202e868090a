//! Live counters of what the daemon has fetched and delivered, per stream and per sink.
//!
//! Shared by pollers and sink workers (writers) and by `demo`'s progress display (reader);
//! `/metrics` and `status` will read them too.

use std::collections::BTreeMap;
use std::sync::Mutex;

use tokio::sync::watch;

use crate::stream::Stream;

/// A stream of one account.
pub type StreamKey = (String, Stream);

/// Counters of one stream's poller.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamStats {
    pub requests: u64,
    pub failed_requests: u64,
    pub fetched_events: u64,
    /// The last page said `has_more: false`.
    pub caught_up: bool,
    pub last_error: Option<String>,
    /// A bounded backfill (`end_time`) is complete and the stream's poller has stopped.
    pub finished: bool,
    /// Why the stream cannot make progress until an operator acts (a refused token, a
    /// rejected cursor); `None` while it is healthy.
    pub unhealthy: Option<String>,
}

/// A counter per (sink, account, stream).
type SinkCounters = Mutex<BTreeMap<(String, String, Stream), u64>>;

/// Everything counted so far.
#[derive(Debug)]
pub struct Stats {
    streams: Mutex<BTreeMap<StreamKey, StreamStats>>,
    /// Events delivered per (sink, account, stream).
    delivered: SinkCounters,
    /// Events a sink refused for good (logged at ERROR), per (sink, account, stream).
    rejected: SinkCounters,
    /// Failed deliveries (each retried), per (sink, account, stream).
    failed_deliveries: SinkCounters,
    /// Failed attempts to record a delivery in the state (each retried).
    failed_records: SinkCounters,
    /// Bumped after every change, for readers that wait for progress instead of polling.
    changes: watch::Sender<u64>,
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            streams: Mutex::default(),
            delivered: Mutex::default(),
            rejected: Mutex::default(),
            failed_deliveries: Mutex::default(),
            failed_records: Mutex::default(),
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

    pub fn add_delivered(&self, sink: &str, account: &str, stream: Stream, n_events: u64) {
        self.add(&self.delivered, sink, account, stream, n_events);
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

    /// Counts events a sink refused for good (not delivered, not retried).
    pub fn add_rejected(&self, sink: &str, account: &str, stream: Stream, n_events: u64) {
        self.add(&self.rejected, sink, account, stream, n_events);
    }

    /// Counts a failed delivery of a batch (it is retried).
    pub fn add_failed_delivery(&self, sink: &str, account: &str, stream: Stream) {
        self.add(&self.failed_deliveries, sink, account, stream, 1);
    }

    /// Counts a failed attempt to record a delivery in the state (it is retried).
    pub fn add_failed_record(&self, sink: &str, account: &str, stream: Stream) {
        self.add(&self.failed_records, sink, account, stream, 1);
    }

    /// Failed deliveries of a sink since the daemon started.
    pub fn failed_deliveries(&self, sink: &str, account: &str, stream: Stream) -> u64 {
        Stats::get(&self.failed_deliveries, sink, account, stream)
    }

    /// Failed attempts to record a delivery since the daemon started.
    pub fn failed_records(&self, sink: &str, account: &str, stream: Stream) -> u64 {
        Stats::get(&self.failed_records, sink, account, stream)
    }

    /// Events a sink refused for good since the daemon started.
    pub fn rejected(&self, sink: &str, account: &str, stream: Stream) -> u64 {
        Stats::get(&self.rejected, sink, account, stream)
    }

    /// Events delivered by a sink since the daemon started.
    pub fn delivered(&self, sink: &str, account: &str, stream: Stream) -> u64 {
        Stats::get(&self.delivered, sink, account, stream)
    }

    fn add(&self, counters: &SinkCounters, sink: &str, account: &str, stream: Stream, n: u64) {
        let mut counters = counters.lock().unwrap_or_else(|p| p.into_inner());
        *counters
            .entry((sink.to_owned(), account.to_owned(), stream))
            .or_default() += n;
        drop(counters);
        self.changed();
    }

    fn get(counters: &SinkCounters, sink: &str, account: &str, stream: Stream) -> u64 {
        let counters = counters.lock().unwrap_or_else(|p| p.into_inner());
        counters
            .get(&(sink.to_owned(), account.to_owned(), stream))
            .copied()
            .unwrap_or(0)
    }
}
