//! Sinks and the delivery loop that feeds them from the outbox.
//!
//! One worker per (sink, account, stream) reads the pages that sink has not yet delivered, in
//! order, delivers them, and only then acknowledges them in the store. A crash at any point
//! either loses nothing (the pages are still in the outbox) or repeats one batch to one sink.
//! Invariant: sinks know nothing of the Events API; they get raw event bytes and names.

pub mod file;
pub mod syslog;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;

use crate::config::{SinkConfig, SinkKind};
use crate::retry::Backoff;
use crate::stats::Stats;
use crate::store::{OutboxPage, Store};
use crate::stream::Stream;

/// How many outbox pages one delivery carries at most (each holds up to 1,000 events).
const BATCH_PAGES: u32 = 8;
/// The longest wait between retries of a failing delivery: well below the API's, so a sink
/// resumes within half a minute of its receiver's return.
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// A configured destination.
pub enum Sink {
    File(file::FileSink),
    Syslog(syslog::SyslogSink),
}

/// What a delivery did besides delivering.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Delivered {
    /// Events the sink refused for good (a syslog message over `max_message_bytes`): logged
    /// at ERROR and counted, not retried, so they cannot block their stream.
    pub rejected: u64,
}

/// Why a delivery failed. The batch stays in the outbox and is tried again.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("sink {sink}: {path}: {source}")]
    Io {
        sink: String,
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("sink {sink}: {address}: {detail}")]
    Syslog {
        sink: String,
        address: String,
        detail: String,
    },
}

impl Sink {
    /// Builds a sink from its configuration. Opens nothing yet: files and connections are
    /// opened on first delivery, so a missing directory or a receiver that is down does not
    /// stop the daemon from starting.
    ///
    /// # Errors
    ///
    /// Certificates and keys (syslog over TLS) are read here, so an unreadable or invalid one
    /// stops the daemon at start, naming the key and the file.
    pub fn from_config(config: &SinkConfig) -> Result<Sink, SinkError> {
        Ok(match &config.kind {
            SinkKind::File(file) => Sink::File(file::FileSink::new(&config.name, file)),
            SinkKind::Syslog(syslog) => {
                Sink::Syslog(syslog::SyslogSink::new(&config.name, syslog)?)
            }
        })
    }

    pub fn name(&self) -> &str {
        match self {
            Sink::File(sink) => sink.name(),
            Sink::Syslog(sink) => sink.name(),
        }
    }

    /// Closes what a reload should open again by its name: the file sink's files (after a
    /// rotation). Connections are kept: a receiver's restart is noticed on its own.
    pub fn reopen(&self) {
        match self {
            Sink::File(sink) => sink.reopen(),
            Sink::Syslog(_) => {}
        }
    }

    /// Ends what the sink holds open for one stream, politely (for TLS: a close_notify).
    pub async fn close(&self, account: &str, stream: Stream) {
        match self {
            Sink::File(_) => {}
            Sink::Syslog(sink) => sink.close(account, stream).await,
        }
    }

    /// Delivers pages of one stream, in order. Returns only once they are durable at the
    /// destination (for files: written and fsynced; for syslog: written and flushed, or sent).
    pub async fn deliver(
        &self,
        account: &str,
        stream: Stream,
        pages: Vec<OutboxPage>,
    ) -> Result<Delivered, SinkError> {
        match self {
            Sink::File(sink) => sink
                .deliver(account, stream, pages)
                .await
                .map(|()| Delivered::default()),
            Sink::Syslog(sink) => sink.deliver(account, stream, pages).await,
        }
    }
}

/// Delivers one stream of one account to one sink, until shutdown.
pub struct SinkWorker {
    pub sink: Arc<Sink>,
    pub account: String,
    pub stream: Stream,
    pub store: Store,
    /// Changes whenever the stream's poller appends a page.
    pub appended: watch::Receiver<u64>,
    /// Told after each acknowledgement, so a poller waiting for room in the outbox wakes.
    pub acked: Arc<Notify>,
    pub stats: Arc<Stats>,
}

impl SinkWorker {
    /// Delivers until `shutdown` is cancelled. A batch in hand is finished first: what is
    /// still in the outbox afterwards is safe on disk for the next start.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let sink_name = self.sink.name().to_owned();
        let mut backoff = new_backoff();
        while !shutdown.is_cancelled() {
            // Mark the current version seen before reading, so a page appended after the
            // read wakes the wait below.
            self.appended.borrow_and_update();
            let (name, account, stream) = (sink_name.clone(), self.account.clone(), self.stream);
            let pages = self
                .store
                .run(move |s| s.pages_for(&name, &account, stream, BATCH_PAGES))
                .await;
            let pages = match pages {
                Ok(pages) => pages,
                Err(err) => {
                    let delay = backoff.next_delay();
                    tracing::error!(sink = %sink_name, account = %self.account, stream = %self.stream, error = %err, "cannot read the outbox");
                    if !sleep_or_shutdown(delay, &shutdown).await {
                        break;
                    }
                    continue;
                }
            };
            let Some(last_seq) = pages.last().map(|page| page.seq) else {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    changed = self.appended.changed() => {
                        if changed.is_err() {
                            // The poller is gone and everything it appended is delivered.
                            shutdown.cancelled().await;
                            break;
                        }
                    }
                }
                continue;
            };
            let n_events: u64 = pages.iter().map(|page| page.n_events).sum();
            let delivered = match self.sink.deliver(&self.account, self.stream, pages).await {
                Ok(delivered) => delivered,
                Err(err) => {
                    self.stats
                        .add_failed_delivery(&sink_name, &self.account, self.stream);
                    let delay = backoff.next_delay();
                    tracing::warn!(
                        sink = %sink_name, account = %self.account, stream = %self.stream,
                        error = %err, retry_in_secs = delay.as_secs_f32(),
                        "delivery failed; retrying the same batch"
                    );
                    if !sleep_or_shutdown(delay, &shutdown).await {
                        break;
                    }
                    continue;
                }
            };
            // Delivered: record it. While the store cannot (a full disk, say), this batch is
            // out already and the following ones are not sent: the same acknowledgement is
            // tried again until it is written, instead of the batch being delivered again
            // and again.
            if !self.record(&sink_name, last_seq, &shutdown).await {
                break;
            }
            backoff = new_backoff();
            self.stats.add_delivered(
                &sink_name,
                &self.account,
                self.stream,
                n_events - delivered.rejected.min(n_events),
            );
            if delivered.rejected > 0 {
                self.stats
                    .add_rejected(&sink_name, &self.account, self.stream, delivered.rejected);
            }
            self.acked.notify_one();
        }
        self.sink.close(&self.account, self.stream).await;
        tracing::debug!(sink = %sink_name, account = %self.account, stream = %self.stream, "sink worker stopped");
    }
}

impl SinkWorker {
    /// Records that the sink has delivered up to `seq`, retrying until the store takes it;
    /// logs an ERROR once per episode, not per try. Returns false if shutdown came first (the
    /// batch is then delivered again at the next start: at least once).
    async fn record(&self, sink_name: &str, seq: u64, shutdown: &CancellationToken) -> bool {
        let mut backoff = new_backoff();
        let mut failing_since: Option<tokio::time::Instant> = None;
        loop {
            let (name, account, stream) = (sink_name.to_owned(), self.account.clone(), self.stream);
            match self
                .store
                .run(move |s| s.ack(&name, &account, stream, seq))
                .await
            {
                Ok(_) => {
                    if let Some(since) = failing_since {
                        tracing::info!(
                            sink = %sink_name, account = %self.account, stream = %self.stream,
                            failed_for_secs = since.elapsed().as_secs(),
                            "recorded the delivery; delivering the next batches again"
                        );
                    }
                    return true;
                }
                Err(err) => {
                    self.stats
                        .add_failed_record(sink_name, &self.account, self.stream);
                    let delay = backoff.next_delay();
                    if failing_since.is_none() {
                        failing_since = Some(tokio::time::Instant::now());
                        tracing::error!(
                            sink = %sink_name, account = %self.account, stream = %self.stream,
                            error = %err,
                            "delivered, but cannot record the delivery; no further batch of this \
                             stream is sent until it is recorded (retrying; is the state's disk full?)"
                        );
                    } else {
                        tracing::debug!(sink = %sink_name, error = %err, retry_in_secs = delay.as_secs_f32(), "still cannot record the delivery");
                    }
                    if !sleep_or_shutdown(delay, shutdown).await {
                        return false;
                    }
                }
            }
        }
    }
}

fn new_backoff() -> Backoff {
    Backoff::new(Duration::from_millis(200), MAX_BACKOFF)
}

/// Sleeps for `delay`; returns false if shutdown came first.
async fn sleep_or_shutdown(delay: Duration, shutdown: &CancellationToken) -> bool {
    tokio::select! {
        _ = shutdown.cancelled() => false,
        _ = tokio::time::sleep(delay) => true,
    }
}

/// An event on one line: the bytes as received, unless they contain line breaks (JSON allows
/// them as whitespace between tokens), which are then dropped with the other whitespace
/// between tokens. Line breaks inside strings are always escaped in JSON, so nothing inside
/// a value changes.
pub fn one_line(event: &str) -> std::borrow::Cow<'_, str> {
    if !event.contains(['\n', '\r']) {
        return event.into();
    }
    let mut out = String::with_capacity(event.len());
    let (mut in_string, mut escaped) = (false, false);
    for ch in event.chars() {
        if in_string {
            out.push(ch);
            if escaped {
                escaped = false;
            } else if ch == '\\' {
                escaped = true;
            } else if ch == '"' {
                in_string = false;
            }
        } else if ch == '"' {
            in_string = true;
            out.push(ch);
        } else if !matches!(ch, ' ' | '\t' | '\n' | '\r') {
            out.push(ch);
        }
    }
    out.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compact_events_pass_through_untouched() {
        let event = r#"{"uuid":"A", "name":"a b", "n":1.50}"#;
        assert!(matches!(one_line(event), std::borrow::Cow::Borrowed(_)));
        assert_eq!(one_line(event), event);
    }

    #[test]
    fn pretty_events_lose_only_whitespace_between_tokens() {
        let event = "{\n  \"uuid\": \"A\",\r\n  \"text\": \"two  words \\\" \\\\\"\n}";
        assert_eq!(one_line(event), r#"{"uuid":"A","text":"two  words \" \\"}"#);
    }
}
