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

/// Everything counted so far.
#[derive(Debug)]
pub struct Stats {
    streams: Mutex<BTreeMap<StreamKey, StreamStats>>,
    /// Events delivered per (sink, account, stream).
    delivered: Mutex<BTreeMap<(String, String, Stream), u64>>,
    /// Events a sink refused for good (logged at ERROR), per (sink, account, stream).
    rejected: Mutex<BTreeMap<(String, String, Stream), u64>>,
    /// Failed deliveries (each retried), per (sink, account, stream).
    failed_deliveries: Mutex<BTreeMap<(String, String, Stream), u64>>,
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
        let mut delivered = self.delivered.lock().unwrap_or_else(|p| p.into_inner());
        *delivered
            .entry((sink.to_owned(), account.to_owned(), stream))
            .or_default() += n_events;
        drop(delivered);
        self.changed();
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
        let mut rejected = self.rejected.lock().unwrap_or_else(|p| p.into_inner());
        *rejected
            .entry((sink.to_owned(), account.to_owned(), stream))
            .or_default() += n_events;
        drop(rejected);
        self.changed();
    }

    /// Counts a failed delivery of a batch (it is retried).
    pub fn add_failed_delivery(&self, sink: &str, account: &str, stream: Stream) {
        let mut failed = self
            .failed_deliveries
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        *failed
            .entry((sink.to_owned(), account.to_owned(), stream))
            .or_default() += 1;
        drop(failed);
        self.changed();
    }

    /// Failed deliveries of a sink since the daemon started.
    pub fn failed_deliveries(&self, sink: &str, account: &str, stream: Stream) -> u64 {
        let failed = self
            .failed_deliveries
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        failed
            .get(&(sink.to_owned(), account.to_owned(), stream))
            .copied()
            .unwrap_or(0)
    }

    /// Events a sink refused for good since the daemon started.
    pub fn rejected(&self, sink: &str, account: &str, stream: Stream) -> u64 {
        let rejected = self.rejected.lock().unwrap_or_else(|p| p.into_inner());
        rejected
            .get(&(sink.to_owned(), account.to_owned(), stream))
            .copied()
            .unwrap_or(0)
    }

    /// Events delivered by a sink since the daemon started.
    pub fn delivered(&self, sink: &str, account: &str, stream: Stream) -> u64 {
        let delivered = self.delivered.lock().unwrap_or_else(|p| p.into_inner());
        delivered
            .get(&(sink.to_owned(), account.to_owned(), stream))
            .copied()
            .unwrap_or(0)
    }
}
