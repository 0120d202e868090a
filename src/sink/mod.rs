//! Sinks and the delivery loop that feeds them from the outbox.
//!
//! One worker per (sink, account, stream) reads the pages that sink has not yet delivered, in
//! order, delivers them, and only then acknowledges them in the store. A crash at any point
//! either loses nothing (the pages are still in the outbox) or repeats one batch to one sink.
//! Invariant: sinks know nothing of the Events API; they get raw event bytes and names.
//!
//! # The delivery contract
//!
//! [`Sink::deliver`] returns `Ok` only when the batch is durable at the destination (for
//! files: written and fsynced; for syslog: flushed, or acknowledged over RELP): the worker
//! then acknowledges it, and it is never sent again. Events of the batch the destination
//! will never take go in [`Delivered::rejected`]: they become dead letters (the store's
//! `dead_letters` table, in the transaction of the acknowledgement), logged at ERROR with
//! their uuid, and `dead-letters replay` sends them again. Anything else is a [`SinkError`]
//! whose [`SinkError::action`] tells the worker what to do with the whole batch: retry it
//! with backoff, retry it after the delay the receiver asked for, retry it slowly while an
//! operator fixes a credential or certificate, or reject it whole (dead letters, every event).

pub mod file;
pub mod http;
pub mod syslog;
pub mod tls;

pub use crate::store::DeadLetter;

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
/// The most bytes of events a delivery reads from the outbox (always one page, whatever its
/// size): each stream's worker holds its batch and the batch's encoding while it tries, three
/// streams at a time, and pages of 1,000 events are ~650 KB (a receiver that takes no
/// connections costs no batch at all: see [`Sink::ready`]). Before that check, when each
/// retry against a sink that was down read its batch, the peak RSS with 1,000,000 events
/// pending was 26.0 MiB at 2 MiB, 22.3 at 1 MiB (16.0 with 1,000 pending); draining into the
/// file sink cost the same CPU per event within the noise (`bench pipeline`).
const BATCH_BYTES: u64 = 1 << 20;
/// The longest wait between retries of a failing delivery: well below the API's, so a sink
/// resumes within half a minute of its receiver's return.
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// The wait between tries while an operator has to act (a credential, a certificate).
pub const SLOW_RETRY: Duration = Duration::from_secs(60);
/// The longest `Retry-After` honoured; a receiver asking for more is asked again then.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);
/// How often an idle worker looks for dead letters queued for delivery again.
const REPLAY_RECHECK: Duration = Duration::from_secs(5);
/// Dead letters delivered again in one batch, at most.
const REPLAY_BATCH: u32 = 1000;
/// Dead letters of one batch logged one by one; the rest in one line.
const LOGGED_DEAD_LETTERS: usize = 10;

/// A configured destination.
pub enum Sink {
    File(file::FileSink),
    Syslog(syslog::SyslogSink),
    Http(Box<http::HttpSink>),
}

/// What a delivery did besides delivering.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Delivered {
    /// Events the sink refused for good (a syslog message over `max_message_bytes`): they go
    /// to the dead letters, so they cannot block their stream and are never lost.
    pub rejected: Vec<DeadLetter>,
}

/// Why a delivery failed, and through [`SinkError::action`] what the worker does about it.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// A file could not be written: retried with backoff.
    #[error("sink {sink}: {path}: {source}")]
    Io {
        sink: String,
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// A syslog receiver could not be reached or broke the connection: retried with backoff.
    #[error("sink {sink}: {address}: {detail}")]
    Syslog {
        sink: String,
        address: String,
        detail: String,
    },
    /// An HTTP collector could not be reached, broke the connection, did not answer in time,
    /// or asked for the batch (or some of its events) again: retried with backoff.
    #[error("sink {sink}: {url}: {detail}")]
    Http {
        sink: String,
        url: String,
        detail: String,
    },
    /// The receiver said when to come back (`Retry-After`).
    #[error("sink {sink}: {target}: {detail} (the receiver asks to wait {}s)", after.as_secs())]
    RetryAfter {
        sink: String,
        target: String,
        detail: String,
        after: Duration,
    },
    /// An operator has to act (a refused credential, an untrusted certificate): retried every
    /// [`SLOW_RETRY`], never dropped.
    #[error("sink {sink}: {target}: {detail}")]
    Blocked {
        sink: String,
        target: String,
        detail: String,
    },
    /// The destination will never take this batch as it is: every event of it goes to the
    /// dead letters with `reason`.
    #[error("sink {sink}: {target}: refused for good: {reason}")]
    Rejected {
        sink: String,
        target: String,
        reason: String,
    },
}

/// What the worker does with a batch that failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Send it again after the worker's backoff.
    Retry,
    /// Send it again after this long (or the backoff, if longer).
    RetryAfter(Duration),
    /// Send it again every [`SLOW_RETRY`], reporting the sink unhealthy meanwhile.
    RetrySlowly,
    /// Never again: its events become dead letters with this reason.
    Reject(String),
}

impl SinkError {
    /// The one place a failure's kind becomes the worker's action.
    pub fn action(&self) -> Action {
        match self {
            SinkError::Io { .. } | SinkError::Syslog { .. } | SinkError::Http { .. } => {
                Action::Retry
            }
            SinkError::RetryAfter { after, .. } => Action::RetryAfter(*after),
            SinkError::Blocked { .. } => Action::RetrySlowly,
            SinkError::Rejected { reason, .. } => Action::Reject(reason.clone()),
        }
    }
}

/// How long the worker waits before sending a failed batch again; `None` for a batch
/// rejected for good.
fn wait_after(action: &Action, backoff: &mut Backoff) -> Option<Duration> {
    match action {
        Action::Retry => Some(backoff.next_delay()),
        Action::RetryAfter(after) => Some(backoff.next_delay().max((*after).min(MAX_RETRY_AFTER))),
        Action::RetrySlowly => Some(SLOW_RETRY),
        Action::Reject(_) => None,
    }
}

impl Sink {
    /// Builds a sink from its configuration. Opens nothing yet: files and connections are
    /// opened when there is something to deliver, so a missing directory or a receiver that
    /// is down does not stop the daemon from starting.
    ///
    /// # Errors
    ///
    /// Certificates and keys (syslog over TLS) are read here, so an unreadable or invalid one
    /// stops the daemon at start, naming the key and the file.
    ///
    /// `store` keeps what a sink must find again after a restart (HEC's request channel);
    /// without one (a check that delivers nothing), a channel of its own is made.
    pub fn from_config(config: &SinkConfig, store: Option<&Store>) -> Result<Sink, SinkError> {
        Ok(match &config.kind {
            SinkKind::File(file) => Sink::File(file::FileSink::new(&config.name, file)),
            SinkKind::Syslog(syslog) => {
                Sink::Syslog(syslog::SyslogSink::new(&config.name, syslog)?)
            }
            SinkKind::Http(settings) => {
                let channel = match &settings.format {
                    http::config::HttpFormat::SplunkHec(hec) if hec.ack => Some(match store {
                        Some(store) => store
                            .sink_setting(&config.name, http::CHANNEL_SETTING, http::new_channel)
                            .map_err(|err| SinkError::Blocked {
                                sink: config.name.clone(),
                                target: settings.url.clone(),
                                detail: format!("cannot keep the HEC request channel: {err}"),
                            })?,
                        None => http::new_channel(),
                    }),
                    _ => None,
                };
                Sink::Http(Box::new(http::HttpSink::new(
                    &config.name,
                    settings,
                    channel,
                )?))
            }
        })
    }

    pub fn name(&self) -> &str {
        match self {
            Sink::File(sink) => sink.name(),
            Sink::Syslog(sink) => sink.name(),
            Sink::Http(sink) => sink.name(),
        }
    }

    /// Closes what a reload should open again by its name: the file sink's files (after a
    /// rotation); reads an HTTP collector's credential again. Connections are kept: a
    /// receiver's restart is noticed on its own.
    pub fn reopen(&self) {
        match self {
            Sink::File(sink) => sink.reopen(),
            Sink::Syslog(_) => {}
            Sink::Http(sink) => sink.reload(),
        }
    }

    /// Opens what a delivery would and closes it again, delivering nothing (`check
    /// --online`): what worked, or what did not and why. For files, each directory they go
    /// in is tried with a file made and removed at once.
    pub async fn probe(&self, config: &SinkConfig, accounts: &[&str]) -> Result<String, String> {
        match (self, &config.kind) {
            (Sink::File(_), SinkKind::File(file)) => {
                let mut dirs: Vec<std::path::PathBuf> = Vec::new();
                for account in accounts {
                    for stream in Stream::ALL {
                        let path = file.path_for(account, stream);
                        let dir = path
                            .parent()
                            .map(std::path::Path::to_path_buf)
                            .unwrap_or_default();
                        if !dirs.contains(&dir) {
                            dirs.push(dir);
                        }
                    }
                }
                for dir in &dirs {
                    let shown = dir.display();
                    std::fs::create_dir_all(dir).map_err(|err| format!("{shown}: {err}"))?;
                    let probe =
                        dir.join(format!(".op-events-forwarder-check-{}", std::process::id()));
                    std::fs::write(&probe, b"")
                        .map_err(|err| format!("{shown}: cannot write: {err}"))?;
                    let _ = std::fs::remove_file(&probe);
                }
                Ok(format!(
                    "{} writable",
                    if dirs.len() == 1 {
                        "the directory is"
                    } else {
                        "the directories are"
                    }
                ))
            }
            (Sink::Syslog(sink), _) => sink.probe().await,
            (Sink::Http(sink), _) => sink.probe().await,
            _ => Err("the sink does not match its config".to_owned()),
        }
    }

    /// Ends what the sink holds open for one stream, politely (for TLS: a close_notify).
    pub async fn close(&self, account: &str, stream: Stream) {
        match self {
            Sink::File(_) | Sink::Http(_) => {}
            Sink::Syslog(sink) => sink.close(account, stream).await,
        }
    }

    /// Whether a delivery could start now, sending no event: the syslog sink opens the
    /// stream's connection (TCP; TLS with its handshake; RELP with its session's `open`),
    /// which the delivery then uses; the HTTP sink opens a TCP connection to its collector
    /// (or a tunnel through its proxy) and closes it again; files and syslog over UDP are
    /// always ready. The worker asks before reading a batch whenever it is in doubt (at
    /// start, after a failure that is not an answer), so a receiver that is down costs
    /// neither a read of the outbox nor an encoding per retry, and the memory it takes does
    /// not grow with the batch that waits.
    pub async fn ready(&self, account: &str, stream: Stream) -> Result<(), SinkError> {
        match self {
            Sink::File(_) => Ok(()),
            Sink::Syslog(sink) => sink.ready(account, stream).await,
            Sink::Http(sink) => sink.ready().await,
        }
    }

    /// Delivers pages of one stream, in order, keeping the contract in the module's doc:
    /// `Ok` only once they are durable at the destination, with the events refused for good.
    /// The pages are borrowed: the worker still has them if the batch is rejected whole.
    pub async fn deliver(
        &self,
        account: &str,
        stream: Stream,
        pages: &[OutboxPage],
    ) -> Result<Delivered, SinkError> {
        match self {
            Sink::File(sink) => sink
                .deliver(account, stream, pages)
                .await
                .map(|()| Delivered::default()),
            Sink::Syslog(sink) => sink.deliver(account, stream, pages).await,
            Sink::Http(sink) => sink.deliver(account, stream, pages).await,
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
    /// Where the watchdog sees this task busy.
    pub liveness: Arc<crate::systemd::Liveness>,
    /// Changes on each reload (SIGHUP): a batch waiting out a slow retry for an operator's
    /// fix is tried again at once.
    pub reloaded: watch::Receiver<u64>,
}

impl SinkWorker {
    /// Delivers until `shutdown` is cancelled. A batch in hand is finished first: what is
    /// still in the outbox afterwards is safe on disk for the next start.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let sink_name = self.sink.name().to_owned();
        let mut backoff = new_backoff();
        let mut poller_gone = false;
        // Until a delivery succeeds, the sink is asked whether it is ready before a batch is
        // read (see [`Sink::ready`]).
        let mut in_doubt = true;
        while !shutdown.is_cancelled() {
            // Dead letters an operator queued for delivery again go first, as their own batch.
            match self.replay(&sink_name, &mut backoff).await {
                Replay::Nothing => {}
                Replay::Done => continue,
                Replay::Failed(delay) => {
                    if !sleep_or_shutdown(delay, &shutdown).await {
                        break;
                    }
                    continue;
                }
            }
            // Mark the current version seen before looking, so a page appended after the
            // look wakes the wait below.
            self.appended.borrow_and_update();
            let gate = if in_doubt {
                self.gate(&sink_name).await
            } else {
                Gate::Open
            };
            let pages = match gate {
                Gate::Idle => Vec::new(),
                Gate::Closed(err) => {
                    if !self
                        .wait_out(&sink_name, &err, false, &mut backoff, &shutdown)
                        .await
                    {
                        break;
                    }
                    continue;
                }
                Gate::Open => {
                    let (name, account, stream) =
                        (sink_name.clone(), self.account.clone(), self.stream);
                    let pages = self
                        .store
                        .run(move |s| {
                            s.pages_within(&name, &account, stream, BATCH_PAGES, BATCH_BYTES)
                        })
                        .await;
                    match pages {
                        Ok(pages) => pages,
                        Err(err) => {
                            let delay = backoff.next_delay();
                            tracing::error!(sink = %sink_name, account = %self.account, stream = %self.stream, error = %err, "cannot read the outbox");
                            if !sleep_or_shutdown(delay, &shutdown).await {
                                break;
                            }
                            continue;
                        }
                    }
                }
            };
            let Some(last_seq) = pages.last().map(|page| page.seq) else {
                // Idle: woken by the next page, or after a while to look for replays.
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    changed = self.appended.changed(), if !poller_gone => {
                        // The poller is gone (a finished backfill) and everything it appended
                        // is delivered: only replays are left to look for.
                        poller_gone = changed.is_err();
                    }
                    _ = tokio::time::sleep(REPLAY_RECHECK) => {}
                }
                continue;
            };
            let n_events: u64 = pages.iter().map(|page| page.n_events).sum();
            let busy = self
                .liveness
                .busy(&self.task_name(&sink_name), "a delivery");
            // A reload from now on (say, a rotated secret written while this delivery is
            // refused) must wake the slow retry below, so mark the current one seen first.
            self.reloaded.borrow_and_update();
            let delivered = self.sink.deliver(&self.account, self.stream, &pages).await;
            drop(busy);
            let rejected = match delivered {
                Ok(delivered) => delivered.rejected,
                Err(err) => match err.action() {
                    Action::Reject(reason) => whole_batch(&pages, &reason),
                    action => {
                        // Read again after the wait: not held through it.
                        drop(pages);
                        // A receiver that answered (asking to wait, refusing a credential)
                        // was reached: only a plain failure (a broken connection, a timeout,
                        // a 5xx) leaves it in doubt.
                        in_doubt = action == Action::Retry;
                        if !self
                            .wait_out(&sink_name, &err, true, &mut backoff, &shutdown)
                            .await
                        {
                            break;
                        }
                        continue;
                    }
                },
            };
            in_doubt = false;
            // Delivered: record it. While the store cannot (a full disk, say), this batch is
            // out already and the following ones are not sent: the same acknowledgement is
            // tried again until it is written, instead of the batch being delivered again
            // and again.
            if !self
                .record(&sink_name, last_seq, &rejected, &shutdown)
                .await
            {
                break;
            }
            backoff = new_backoff();
            let n_rejected = rejected.len() as u64;
            self.stats.add_delivered(
                &sink_name,
                &self.account,
                self.stream,
                n_events.saturating_sub(n_rejected),
            );
            self.acked.notify_one();
        }
        self.sink.close(&self.account, self.stream).await;
        tracing::debug!(sink = %sink_name, account = %self.account, stream = %self.stream, "sink worker stopped");
    }

    /// Asks the sink whether a delivery could get through, if the outbox holds anything for
    /// it.
    async fn gate(&mut self, sink_name: &str) -> Gate {
        let (name, account, stream) = (sink_name.to_owned(), self.account.clone(), self.stream);
        let pending = self
            .store
            .run(move |s| s.has_pending(&name, &account, stream))
            .await;
        match pending {
            Ok(true) => {}
            Ok(false) => return Gate::Idle,
            Err(err) => {
                // The read that follows says it too, as an error.
                tracing::debug!(sink = %sink_name, account = %self.account, stream = %self.stream, error = %err, "cannot tell whether anything is pending");
                return Gate::Open;
            }
        }
        let busy = self
            .liveness
            .busy(&self.task_name(sink_name), "a connection to the sink");
        self.reloaded.borrow_and_update();
        let ready = self.sink.ready(&self.account, self.stream).await;
        drop(busy);
        match ready {
            Ok(()) => Gate::Open,
            Err(err) => Gate::Closed(err),
        }
    }

    /// Counts and logs a failure, then waits before the next try: the backoff, the
    /// receiver's `Retry-After`, or the slow retry (cut short by a reload). `false` once
    /// shutdown is asked for.
    async fn wait_out(
        &mut self,
        sink_name: &str,
        err: &SinkError,
        batch_read: bool,
        backoff: &mut Backoff,
        shutdown: &CancellationToken,
    ) -> bool {
        let action = err.action();
        let delay = wait_after(&action, backoff).unwrap_or_else(|| backoff.next_delay());
        self.failed(sink_name, err, &action, delay, batch_read);
        if action != Action::RetrySlowly {
            return sleep_or_shutdown(delay, shutdown).await;
        }
        tokio::select! {
            go_on = sleep_or_shutdown(delay, shutdown) => go_on,
            changed = self.reloaded.changed() => {
                if changed.is_ok() {
                    tracing::info!(sink = %sink_name, account = %self.account, stream = %self.stream, "reloaded: trying the delivery again now");
                    true
                } else {
                    // No reloads can come: wait the whole delay.
                    sleep_or_shutdown(delay, shutdown).await
                }
            }
        }
    }

    /// How the watchdog names this task.
    fn task_name(&self, sink_name: &str) -> String {
        format!("sink {sink_name}/{}/{}", self.account, self.stream)
    }

    /// Counts and logs a failed delivery that will be tried again after `delay`.
    fn failed(
        &self,
        sink_name: &str,
        err: &SinkError,
        action: &Action,
        delay: Duration,
        batch_read: bool,
    ) {
        let class = match action {
            Action::Retry | Action::Reject(_) if !batch_read => "unreachable",
            Action::Retry | Action::Reject(_) => "retry",
            Action::RetryAfter(_) => "retry_after",
            Action::RetrySlowly => "slow",
        };
        self.stats.add_failed_delivery(
            sink_name,
            &self.account,
            self.stream,
            class,
            err.to_string(),
            delay,
        );
        let (account, stream) = (&self.account, self.stream);
        match action {
            Action::RetrySlowly => tracing::error!(
                sink = %sink_name, %account, %stream, error = %err,
                retry_in_secs = delay.as_secs(),
                "delivery refused until an operator fixes the sink's credentials or certificates; \
                 retrying slowly, nothing is dropped"
            ),
            _ if batch_read => tracing::warn!(
                sink = %sink_name, %account, %stream, error = %err,
                retry_in_secs = delay.as_secs_f32(),
                "delivery failed; retrying the same batch"
            ),
            _ => tracing::warn!(
                sink = %sink_name, %account, %stream, error = %err,
                retry_in_secs = delay.as_secs_f32(),
                "the sink cannot be reached; its events wait in the outbox"
            ),
        }
    }

    /// Delivers the dead letters of this stream queued for delivery again, as a batch of
    /// their own: delivered ones are deleted, refused ones kept with their new reason.
    async fn replay(&self, sink_name: &str, backoff: &mut Backoff) -> Replay {
        let (name, account, stream) = (sink_name.to_owned(), self.account.clone(), self.stream);
        let queued = match self
            .store
            .run(move |s| s.queued_dead_letters(&name, &account, stream, REPLAY_BATCH))
            .await
        {
            Ok(queued) if queued.is_empty() => return Replay::Nothing,
            Ok(queued) => queued,
            Err(err) => {
                tracing::error!(sink = %sink_name, error = %err, "cannot read the dead letters queued for delivery");
                return Replay::Nothing;
            }
        };
        // No offsets: the page is parsed as a whole, so a dead letter that is not one JSON
        // value (an outbox page that did not parse) fails as it did the first time.
        let page = OutboxPage {
            seq: 0,
            events: format!(
                "[{}]",
                queued
                    .iter()
                    .map(|letter| letter.event.as_str())
                    .collect::<Vec<_>>()
                    .join(",")
            ),
            event_ends: Vec::new(),
            n_events: queued.len() as u64,
            fetched_at: queued[0].first_seen,
        };
        let refused: Vec<(i64, String)> = match self
            .sink
            .deliver(&self.account, self.stream, std::slice::from_ref(&page))
            .await
        {
            Ok(delivered) => {
                // Each refused event is matched to one queued letter with its bytes.
                let mut left: Vec<&crate::store::StoredDeadLetter> = queued.iter().collect();
                delivered
                    .rejected
                    .iter()
                    .filter_map(|dead| {
                        let at = left.iter().position(|letter| letter.event == dead.event)?;
                        Some((left.remove(at).id, dead.reason.clone()))
                    })
                    .collect()
            }
            Err(err) => {
                let action = err.action();
                match wait_after(&action, backoff) {
                    Some(delay) => {
                        self.failed(sink_name, &err, &action, delay, true);
                        return Replay::Failed(delay);
                    }
                    None => {
                        let Action::Reject(reason) = action else {
                            unreachable!("only a rejection has no wait")
                        };
                        queued.iter().map(|l| (l.id, reason.clone())).collect()
                    }
                }
            }
        };
        let delivered: Vec<i64> = queued
            .iter()
            .map(|letter| letter.id)
            .filter(|id| !refused.iter().any(|(refused, _)| refused == id))
            .collect();
        let n_delivered = delivered.len() as u64;
        let n_refused = refused.len();
        match self
            .store
            .run(move |s| s.replayed(&delivered, &refused))
            .await
        {
            Ok(()) => {
                tracing::info!(
                    sink = %sink_name, account = %self.account, stream = %self.stream,
                    delivered = n_delivered, refused_again = n_refused,
                    "dead letters delivered again"
                );
                self.stats
                    .add_delivered(sink_name, &self.account, self.stream, n_delivered);
                Replay::Done
            }
            Err(err) => {
                // Delivered but not recorded: they are sent again (at least once).
                let delay = backoff.next_delay();
                tracing::error!(sink = %sink_name, error = %err, "cannot record the dead letters delivered again");
                Replay::Failed(delay)
            }
        }
    }
}

/// What [`SinkWorker::gate`] found.
enum Gate {
    /// Nothing is pending: wait for the next page.
    Idle,
    /// Read the batch and deliver it.
    Open,
    /// The sink cannot take a delivery now: wait, read nothing.
    Closed(SinkError),
}

/// What [`SinkWorker::replay`] did.
enum Replay {
    /// No dead letters were queued.
    Nothing,
    /// A batch of them was delivered (or refused again) and recorded.
    Done,
    /// Their delivery failed; try again after this long.
    Failed(Duration),
}

/// Every event of a batch refused for good, each with its uuid, as dead letters with
/// `reason`. Built only once a delivery ends so: copying and parsing every event of every
/// batch in advance cost a fifth of a sink's CPU.
fn whole_batch(pages: &[OutboxPage], reason: &str) -> Vec<DeadLetter> {
    let dead_letter = |event: String, uuid: Option<String>| DeadLetter {
        event,
        uuid,
        reason: reason.to_owned(),
    };
    pages
        .iter()
        .flat_map(|page| match page.events() {
            Ok(events) => events
                .into_iter()
                .map(|event| dead_letter(event.to_owned(), crate::event::uuid(event)))
                .collect::<Vec<_>>(),
            // An outbox page that does not parse is kept whole, as one dead letter.
            Err(_) => vec![dead_letter(page.events.clone(), None)],
        })
        .collect()
}

impl SinkWorker {
    /// Records that the sink has delivered up to `seq`, retrying until the store takes it;
    /// logs an ERROR once per episode, not per try. Returns false if shutdown came first (the
    /// batch is then delivered again at the next start: at least once).
    ///
    /// `dead` (events refused for good) go to the dead letters in the same transaction, each
    /// logged at ERROR with its uuid and counted.
    async fn record(
        &self,
        sink_name: &str,
        seq: u64,
        dead: &[DeadLetter],
        shutdown: &CancellationToken,
    ) -> bool {
        let mut backoff = new_backoff();
        let mut failing_since: Option<tokio::time::Instant> = None;
        loop {
            let (name, account, stream) = (sink_name.to_owned(), self.account.clone(), self.stream);
            let letters = dead.to_vec();
            let busy = self
                .liveness
                .busy(&self.task_name(sink_name), "recording a delivery");
            let recorded = self
                .store
                .run(move |s| s.ack_with(&name, &account, stream, seq, &letters))
                .await;
            drop(busy);
            match recorded {
                Ok(_) => {
                    self.log_dead_letters(sink_name, dead);
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

impl SinkWorker {
    fn log_dead_letters(&self, sink_name: &str, dead: &[DeadLetter]) {
        if dead.is_empty() {
            return;
        }
        let (account, stream) = (&self.account, self.stream);
        for letter in dead.iter().take(LOGGED_DEAD_LETTERS) {
            tracing::error!(
                sink = %sink_name, %account, %stream,
                uuid = letter.uuid.as_deref().unwrap_or("-"), reason = %letter.reason,
                "event refused for good by the sink; kept in the dead letters \
                 (op-events-forwarder dead-letters list / replay)"
            );
        }
        if dead.len() > LOGGED_DEAD_LETTERS {
            tracing::error!(
                sink = %sink_name, %account, %stream,
                more = dead.len() - LOGGED_DEAD_LETTERS, reason = %dead[LOGGED_DEAD_LETTERS].reason,
                "more events of the batch refused for good; kept in the dead letters"
            );
        }
        self.stats
            .add_rejected(sink_name, account, stream, dead.len() as u64);
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
    // Bytes, not chars: a line break is one ASCII byte, and the scan needs no UTF-8 decoding.
    // memchr's vector search: a loop over the bytes was 5 % of the daemon's CPU (perf).
    if memchr::memchr2(b'\n', b'\r', event.as_bytes()).is_none() {
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
    fn each_failure_tells_the_worker_what_to_do() {
        let at = |target: &str| (String::from("s"), target.to_owned());
        let (sink, target) = at("https://hec:8088");
        let after = SinkError::RetryAfter {
            sink: sink.clone(),
            target: target.clone(),
            detail: "HTTP 503".into(),
            after: Duration::from_secs(45),
        };
        assert_eq!(after.action(), Action::RetryAfter(Duration::from_secs(45)));
        assert_eq!(
            after.to_string(),
            "sink s: https://hec:8088: HTTP 503 (the receiver asks to wait 45s)"
        );
        let blocked = SinkError::Blocked {
            sink: sink.clone(),
            target: target.clone(),
            detail: "HTTP 403: invalid token".into(),
        };
        assert_eq!(blocked.action(), Action::RetrySlowly);
        let rejected = SinkError::Rejected {
            sink,
            target,
            reason: "HTTP 400: bad event".into(),
        };
        assert_eq!(
            rejected.action(),
            Action::Reject("HTTP 400: bad event".into())
        );
        let io = SinkError::Io {
            sink: "f".into(),
            path: "/x".into(),
            source: std::io::Error::other("disk"),
        };
        assert_eq!(io.action(), Action::Retry);
    }

    #[test]
    fn a_receivers_retry_after_is_honoured_and_bounded() {
        let mut backoff = Backoff::new(Duration::from_millis(200), MAX_BACKOFF);
        // Longer than the backoff: the receiver's word.
        assert_eq!(
            wait_after(&Action::RetryAfter(Duration::from_secs(45)), &mut backoff),
            Some(Duration::from_secs(45))
        );
        // Absurdly long: asked again after the cap.
        assert_eq!(
            wait_after(
                &Action::RetryAfter(Duration::from_secs(86_400 * 30)),
                &mut backoff
            ),
            Some(MAX_RETRY_AFTER)
        );
        // Shorter than the backoff: the backoff, so a flapping receiver is not stormed.
        let mut grown = Backoff::new(Duration::from_secs(20), MAX_BACKOFF);
        let _ = grown.next_delay();
        let waited = wait_after(&Action::RetryAfter(Duration::ZERO), &mut grown).unwrap();
        assert!(waited <= MAX_BACKOFF);
        assert_eq!(
            wait_after(&Action::RetrySlowly, &mut backoff),
            Some(SLOW_RETRY)
        );
        assert_eq!(wait_after(&Action::Reject("x".into()), &mut backoff), None);
        assert!(wait_after(&Action::Retry, &mut backoff).unwrap() <= MAX_BACKOFF);
    }

    #[test]
    fn a_batch_refused_whole_keeps_every_event_with_its_uuid() {
        let pages = [
            OutboxPage {
                seq: 1,
                events: r#"[{"uuid":"A"},{"n":1}]"#.into(),
                event_ends: Vec::new(),
                n_events: 2,
                fetched_at: 0,
            },
            OutboxPage {
                seq: 2,
                events: r#"[{"uuid":"C"}]"#.into(),
                event_ends: Vec::new(),
                n_events: 1,
                fetched_at: 0,
            },
        ];
        let dead = whole_batch(&pages, "refused");
        let got: Vec<(&str, Option<&str>)> = dead
            .iter()
            .map(|d| (d.event.as_str(), d.uuid.as_deref()))
            .collect();
        assert_eq!(
            got,
            [
                (r#"{"uuid":"A"}"#, Some("A")),
                (r#"{"n":1}"#, None),
                (r#"{"uuid":"C"}"#, Some("C"))
            ]
        );
        assert!(dead.iter().all(|d| d.reason == "refused"));
    }

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
        // Either line break alone is found.
        assert_eq!(
            one_line("{\"uuid\":\"A\",\r\"n\":1}"),
            r#"{"uuid":"A","n":1}"#
        );
        assert_eq!(
            one_line("{\"uuid\":\"A\",\n\"n\":1}"),
            r#"{"uuid":"A","n":1}"#
        );
    }
}
