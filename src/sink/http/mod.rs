//! HTTP collectors: Splunk HEC, Elasticsearch/OpenSearch `_bulk`, NDJSON and JSON webhooks.
//!
//! `config.rs` reads the sink's keys, `format.rs` builds request bodies and `classify.rs`
//! reads answers (both pure), `client.rs` sends requests (TLS, proxy, timeout). This module
//! turns a batch into requests and keeps the delivery contract:
//!
//! - A batch is split into requests of at most `max_events` events and `max_bytes` bytes;
//!   an event larger than `max_bytes` alone is a dead letter, never cut.
//! - A request's answer is classified once ([`classify::classify`]); a 413 splits the
//!   request in two, down to a single event, which is then a dead letter; HEC's code 6
//!   names one event: that one is a dead letter and the others are sent again at once.
//!   `_bulk` answers are read item by item: created and 409 (already there) are delivered,
//!   429 and 5xx items are sent again alone, other items are dead letters.
//! - With `ack = true`, a HEC request counts only once `/services/collector/ack` says its
//!   `ackId` is indexed; one not acknowledged within `ack_timeout_secs` is sent again.
//! - What went through is remembered by (page, event) while the batch is retried, so a retry
//!   sends only what has not been taken: a collector sees an event twice only across a
//!   crash, or when an answer was lost.
//!
//! Secrets (token, password, API key) are read at start, again after a 401 or 403 and on
//! SIGHUP, and never appear in a log or error: a collector's answer is cleaned of them
//! before it is quoted.

pub mod classify;
mod client;
pub mod config;
pub mod format;

use std::collections::{HashMap, HashSet, VecDeque};
use std::io::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use secrecy::{ExposeSecret, SecretString};

use self::classify::{HecAnswer, ItemVerdict, Verdict, bulk_items, classify};
use self::client::{Answer, Client, Failure};
use self::config::{Auth, HttpFormat, HttpSinkConfig};
use self::format::HecFields;
use super::{DeadLetter, Delivered, SinkError};
use crate::account::config::TokenSource;
use crate::store::OutboxPage;
use crate::stream::Stream;

/// The first wait before asking HEC about acknowledgements, doubled up to [`ACK_POLL_MAX`].
const ACK_POLL_FIRST: Duration = Duration::from_millis(100);
const ACK_POLL_MAX: Duration = Duration::from_secs(2);
/// The store key of a HEC sink's request channel.
pub const CHANNEL_SETTING: &str = "hec_channel";

/// An event of a batch: where it is (page seq, index in the page) and its bytes.
type Key = (u64, u32);

/// An HTTP collector.
pub struct HttpSink {
    name: String,
    config: HttpSinkConfig,
    client: Client,
    /// Where events go, and HEC's acknowledgement and health endpoints.
    send_url: http::Uri,
    ack_url: Option<http::Uri>,
    health_url: Option<http::Uri>,
    /// `X-Splunk-Request-Channel`, with `ack = true`: the same for the sink across restarts.
    channel: Option<http::HeaderValue>,
    credential: RwLock<Credential>,
    /// What each stream's batch in hand has done so far (see the module's doc).
    progress: Mutex<HashMap<(String, Stream), Progress>>,
    /// HEC answered a request without an `ackId` although `ack = true` (said once).
    ack_missing_said: AtomicBool,
    /// The collector refused the credential: it is read again before the next try.
    refused: AtomicBool,
}

/// The `Authorization` header and the texts to clean from anything quoted.
#[derive(Default)]
struct Credential {
    header: Option<http::HeaderValue>,
    secrets: Vec<String>,
    /// The secrets of the credentials this one replaced, newest last: a request sent with
    /// one of them may be answered after the change, echoing it.
    retired: Vec<String>,
}

/// How many replaced secrets are still cleaned from answers.
const RETIRED_SECRETS_KEPT: usize = 16;

impl Credential {
    /// Puts `new` in place of this credential, whose secrets are still cleaned from answers.
    fn replace(&mut self, mut new: Credential) {
        let mut retired = std::mem::take(&mut self.retired);
        for secret in self.secrets.drain(..) {
            if !new.secrets.contains(&secret) && !retired.contains(&secret) {
                retired.push(secret);
            }
        }
        retired.retain(|secret| !new.secrets.contains(secret));
        let excess = retired.len().saturating_sub(RETIRED_SECRETS_KEPT);
        retired.drain(..excess);
        new.retired = retired;
        *self = new;
    }
}

/// What a batch being retried has done.
#[derive(Default)]
struct Progress {
    done: HashSet<Key>,
    rejected: Vec<(Key, DeadLetter)>,
}

/// What one request did.
enum Outcome {
    Delivered,
    /// HEC took it and will say under this `ackId` when it is indexed.
    AwaitingAck(u64),
    /// `_bulk`: one verdict per event.
    Items(Vec<ItemVerdict>),
    /// 413: the request is too large.
    TooLarge(String),
    /// HEC code 6: this event (by its place in the request) is refused.
    InvalidEvent {
        index: usize,
        reason: String,
    },
    /// Refused for good: every event of the request is a dead letter.
    Rejected(String),
    /// Not taken; the batch is tried again (the worker decides when).
    Failed(SinkError),
}

/// One event of the batch in hand, encoded.
struct Unit<'a> {
    key: Key,
    event: &'a str,
    /// Where its encoding is in the batch's buffer.
    span: std::ops::Range<usize>,
}

impl HttpSink {
    /// Builds the sink: its client, and its credential read from where the config says.
    /// `channel` is HEC's request channel (with `ack = true`), kept in the state.
    ///
    /// # Errors
    ///
    /// A TLS file, proxy or credential that cannot serve, naming the key and the file.
    pub fn new(
        name: &str,
        config: &HttpSinkConfig,
        channel: Option<String>,
    ) -> Result<HttpSink, SinkError> {
        let setup = |detail: String| SinkError::Blocked {
            sink: name.to_owned(),
            target: config.url.clone(),
            detail,
        };
        let client = Client::new(config).map_err(setup)?;
        let uri = |path: &str| -> Result<http::Uri, SinkError> {
            format!("{}{path}", config.url)
                .parse()
                .map_err(|err| setup(format!("url: {err}")))
        };
        let (send_url, ack_url, health_url) = match &config.format {
            HttpFormat::Ndjson { .. } | HttpFormat::Json => (uri("")?, None, None),
            HttpFormat::SplunkHec(hec) => (
                uri("/services/collector/event")?,
                hec.ack
                    .then(|| uri("/services/collector/ack"))
                    .transpose()?,
                Some(uri("/services/collector/health")?),
            ),
            HttpFormat::Elasticsearch(bulk) => (
                uri(&match &bulk.pipeline {
                    Some(pipeline) => format!("/_bulk?pipeline={pipeline}"),
                    None => "/_bulk".to_owned(),
                })?,
                None,
                None,
            ),
        };
        let channel = channel
            .map(|channel| {
                http::HeaderValue::from_str(&channel).map_err(|_| setup("a bad channel".into()))
            })
            .transpose()?;
        let credential = read_credential(name, config).map_err(setup)?;
        if config.tls.insecure_skip_verify {
            tracing::warn!(sink = %name, url = %config.url, "tls_insecure_skip_verify = true: the collector's certificate is not checked; anyone between can read the events");
        }
        Ok(HttpSink {
            name: name.to_owned(),
            config: config.clone(),
            client,
            send_url,
            ack_url,
            health_url,
            channel,
            credential: RwLock::new(credential),
            progress: Mutex::default(),
            ack_missing_said: AtomicBool::new(false),
            refused: AtomicBool::new(false),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Reads the credential again (SIGHUP); a credential that cannot be read keeps the one in
    /// use, with an ERROR.
    pub fn reload(&self) {
        if matches!(self.config.auth, Auth::None) {
            return;
        }
        match read_credential(&self.name, &self.config) {
            Ok(credential) => {
                self.credential
                    .write()
                    .unwrap_or_else(|p| p.into_inner())
                    .replace(credential);
                tracing::info!(sink = %self.name, "read the sink's credential again");
            }
            Err(err) => {
                tracing::error!(sink = %self.name, error = %err, "cannot read the sink's credential again; keeping the one in use");
            }
        }
    }

    /// Asks HEC's health endpoint whether it takes events with our token; `Ok` with what it
    /// said, `Err` with what is wrong and what to do. `None` for formats without one.
    pub async fn check_health(&self) -> Option<Result<String, String>> {
        let url = self.health_url.clone()?;
        let mut request = http::Request::get(url);
        if let Some(header) = self.credential_header() {
            request = request.header(http::header::AUTHORIZATION, header);
        }
        let request = request.body(Full::new(Bytes::new())).ok()?;
        Some(match self.client.send(request).await {
            Err(failure) => Err(format!("HEC is unreachable: {failure}")),
            Ok(answer) => {
                // Cleaned: a collector may echo the credential it was sent.
                let text = HecAnswer::parse(&answer.body)
                    .map(|a| self.clean_text(&a.text))
                    .unwrap_or_else(|| self.excerpt(&self.clean(&answer.body)));
                match answer.status {
                    200 => Ok(text),
                    401 | 403 => Err(format!(
                        "HEC refused the token (HTTP {}: {text}); check token_file/token_env",
                        answer.status
                    )),
                    400 if text.to_ascii_lowercase().contains("disabled") => Err(format!(
                        "HEC or the token is disabled (HTTP 400: {text}); enable it in Splunk"
                    )),
                    status => Err(format!("HEC is not healthy (HTTP {status}: {text})")),
                }
            }
        })
    }

    /// What a check can learn without delivering anything: HEC's health; the answer of an
    /// Elasticsearch or OpenSearch cluster's root to our credential; for a webhook, whether
    /// it answers an `OPTIONS` at all (and does not refuse the credential).
    pub async fn probe(&self) -> Result<String, String> {
        if let Some(health) = self.check_health().await {
            return health;
        }
        let (method, url) = match &self.config.format {
            HttpFormat::Elasticsearch(_) => (http::Method::GET, format!("{}/", self.config.url)),
            _ => (http::Method::OPTIONS, self.config.url.clone()),
        };
        let mut request = http::Request::builder().method(method.clone()).uri(url);
        if let Some(header) = self.credential_header() {
            request = request.header(http::header::AUTHORIZATION, header);
        }
        let request = request
            .body(Full::new(Bytes::new()))
            .map_err(|err| err.to_string())?;
        let answer = self
            .client
            .send(request)
            .await
            .map_err(|failure| self.clean_text(&failure.to_string()))?;
        let said = self.excerpt(&self.clean(&answer.body));
        match answer.status {
            401 | 403 => Err(format!(
                "the collector refuses our credential (HTTP {}: {said}); fix {}",
                answer.status,
                self.credential_keys()
            )),
            200..=299 if matches!(self.config.format, HttpFormat::Elasticsearch(_)) => {
                let info: serde_json::Value =
                    serde_json::from_slice(&answer.body).unwrap_or_default();
                Ok(format!(
                    "the cluster answers: {} {}",
                    info["version"]["distribution"]
                        .as_str()
                        .unwrap_or("elasticsearch"),
                    info["version"]["number"]
                        .as_str()
                        .unwrap_or("(version not said)")
                ))
            }
            status if matches!(self.config.format, HttpFormat::Elasticsearch(_)) => {
                Err(format!("the cluster answers HTTP {status}: {said}"))
            }
            status => Ok(format!("reachable (HTTP {status} to {method})")),
        }
    }

    /// Whether the collector takes connections, sending nothing (see [`Sink::ready`]).
    ///
    /// [`Sink::ready`]: crate::sink::Sink::ready
    pub async fn ready(&self) -> Result<(), SinkError> {
        self.client
            .reach()
            .await
            .map_err(|failure| self.failed(failure))
    }

    /// Delivers pages of one stream (see the module's doc for what is sent and when it counts).
    pub async fn deliver(
        &self,
        account: &str,
        stream: Stream,
        pages: &[OutboxPage],
    ) -> Result<Delivered, SinkError> {
        if self.refused.swap(false, Ordering::SeqCst) {
            // Perhaps rotated meanwhile: this try uses what is there now.
            match read_credential(&self.name, &self.config) {
                Ok(credential) => {
                    self.credential
                        .write()
                        .unwrap_or_else(|p| p.into_inner())
                        .replace(credential);
                }
                Err(err) => {
                    self.refused.store(true, Ordering::SeqCst);
                    return Err(SinkError::Blocked {
                        sink: self.name.clone(),
                        target: self.config.url.clone(),
                        detail: err,
                    });
                }
            }
        }
        let key = (account.to_owned(), stream);
        let mut progress = {
            let mut all = self.progress.lock().unwrap_or_else(|p| p.into_inner());
            let kept = all.remove(&key).unwrap_or_default();
            // Replayed dead letters (seq 0) are a batch of their own each time.
            if pages.first().is_some_and(|page| page.seq == 0) {
                Progress::default()
            } else {
                kept
            }
        };
        let result = self
            .deliver_pages(account, stream, pages, &mut progress)
            .await;
        match result {
            Ok(()) => {
                let rejected = progress
                    .rejected
                    .into_iter()
                    .map(|(_, dead)| dead)
                    .collect();
                Ok(Delivered { rejected })
            }
            Err(err) => {
                self.progress
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(key, progress);
                Err(err)
            }
        }
    }

    async fn deliver_pages(
        &self,
        account: &str,
        stream: Stream,
        pages: &[OutboxPage],
        progress: &mut Progress,
    ) -> Result<(), SinkError> {
        // The events not yet taken, each encoded alone (one after the other in one buffer,
        // not one allocation each); one too large is refused here.
        let n_events: u64 = pages.iter().map(|page| page.n_events).sum();
        let mut encoded = Vec::with_capacity(
            pages.iter().map(|page| page.events.len()).sum::<usize>()
                + usize::try_from(n_events).unwrap_or(0) * 128,
        );
        let mut spans = Vec::new();
        for page in pages {
            let events = match page.events() {
                Ok(events) => events,
                Err(err) => {
                    let key = (page.seq, 0);
                    if !progress.done.contains(&key)
                        && !progress.rejected.iter().any(|(k, _)| *k == key)
                    {
                        progress.rejected.push((
                            key,
                            DeadLetter {
                                event: page.events.clone(),
                                uuid: None,
                                reason: format!("the outbox page does not parse: {err}"),
                            },
                        ));
                    }
                    continue;
                }
            };
            for (index, event) in events.into_iter().enumerate() {
                let key = (page.seq, u32::try_from(index).unwrap_or(u32::MAX));
                if progress.done.contains(&key) || progress.rejected.iter().any(|(k, _)| *k == key)
                {
                    continue;
                }
                let start = encoded.len();
                self.encode(&mut encoded, account, stream, event);
                let len = encoded.len() - start;
                if len + 2 > self.config.max_bytes {
                    encoded.truncate(start);
                    progress.rejected.push((
                        key,
                        dead_letter(
                            event,
                            format!(
                                "the event is {len} bytes as sent, more than max_bytes ({})",
                                self.config.max_bytes
                            ),
                        ),
                    ));
                    continue;
                }
                spans.push((key, event, start..encoded.len()));
            }
        }
        // Shared, so that a request of consecutive events is a slice of it, not a copy.
        let encoded = Bytes::from(encoded);
        let units: Vec<Unit<'_>> = spans
            .into_iter()
            .map(|(key, event, span)| Unit { key, event, span })
            .collect();
        let mut queue: VecDeque<Vec<usize>> = self.chunks(&units).into();
        let mut awaiting: Vec<(Vec<usize>, u64, Instant)> = Vec::new();
        let mut failure: Option<SinkError> = None;
        let mut retry_items: Vec<String> = Vec::new();
        while failure.is_none() && !queue.is_empty() {
            let wave: Vec<Vec<usize>> = (0..self.config.concurrency)
                .map_while(|_| queue.pop_front())
                .collect();
            let outcomes = futures_util::future::join_all(
                wave.iter()
                    .map(|chunk| self.send(&encoded, chunk.iter().map(|&i| &units[i]))),
            )
            .await;
            for (chunk, outcome) in wave.into_iter().zip(outcomes) {
                match outcome {
                    Outcome::Delivered => {
                        progress.done.extend(chunk.iter().map(|&i| units[i].key));
                    }
                    Outcome::AwaitingAck(id) => awaiting.push((chunk, id, Instant::now())),
                    Outcome::Items(verdicts) => {
                        for (&i, verdict) in chunk.iter().zip(verdicts) {
                            match verdict {
                                ItemVerdict::Delivered => {
                                    progress.done.insert(units[i].key);
                                }
                                ItemVerdict::Retry(reason) => retry_items.push(reason),
                                ItemVerdict::Reject(reason) => progress
                                    .rejected
                                    .push((units[i].key, dead_letter(units[i].event, reason))),
                            }
                        }
                    }
                    Outcome::TooLarge(reason) => {
                        if let [i] = chunk[..] {
                            progress.rejected.push((
                                units[i].key,
                                dead_letter(
                                    units[i].event,
                                    format!("the collector refuses the event alone as too large: {reason}"),
                                ),
                            ));
                        } else {
                            let half = chunk.len() / 2;
                            tracing::info!(sink = %self.name, %account, %stream, events = chunk.len(), %reason, "the collector found the request too large; sending it in halves");
                            queue.push_front(chunk[half..].to_vec());
                            queue.push_front(chunk[..half].to_vec());
                        }
                    }
                    Outcome::InvalidEvent { index, reason } => {
                        let Some(&bad) = chunk.get(index) else {
                            failure = Some(self.error(format!(
                                "HEC refused event number {index} of a request of {}: {reason}",
                                chunk.len()
                            )));
                            continue;
                        };
                        progress
                            .rejected
                            .push((units[bad].key, dead_letter(units[bad].event, reason)));
                        let rest: Vec<usize> = chunk.into_iter().filter(|&i| i != bad).collect();
                        if !rest.is_empty() {
                            queue.push_front(rest);
                        }
                    }
                    Outcome::Rejected(reason) => {
                        for &i in &chunk {
                            progress
                                .rejected
                                .push((units[i].key, dead_letter(units[i].event, reason.clone())));
                        }
                    }
                    Outcome::Failed(err) => {
                        // The first failure stands; the rest of the batch waits for the retry.
                        failure.get_or_insert(err);
                    }
                }
            }
        }
        if !awaiting.is_empty() {
            let acked = self.await_acks(&mut awaiting).await;
            for (chunk, _, _) in acked {
                progress.done.extend(chunk.iter().map(|&i| units[i].key));
            }
            if !awaiting.is_empty() && failure.is_none() {
                let events: usize = awaiting.iter().map(|(chunk, _, _)| chunk.len()).sum();
                failure = Some(self.error(format!(
                    "HEC did not acknowledge {events} events as indexed within ack_timeout_secs ({}s); \
                     they are sent again",
                    self.ack_timeout().as_secs()
                )));
            }
        }
        if let Some(err) = failure {
            return Err(err);
        }
        if let Some(first) = retry_items.first() {
            return Err(self.error(format!(
                "{} events of the bulk request were refused for now (the first: {first}); they \
                 alone are sent again",
                retry_items.len()
            )));
        }
        Ok(())
    }

    /// Encodes one event as the format sends it.
    fn encode(&self, out: &mut Vec<u8>, account: &str, stream: Stream, event: &str) {
        match &self.config.format {
            HttpFormat::Ndjson { envelope } => {
                format::ndjson(out, &[event], account, stream, *envelope);
            }
            HttpFormat::Json => out.extend_from_slice(event.as_bytes()),
            HttpFormat::SplunkHec(hec) => {
                let fields = hec.fields(stream);
                format::hec_event(
                    out,
                    event,
                    &HecFields {
                        host: fields.host.as_deref(),
                        source: fields.source.as_deref(),
                        sourcetype: &fields.sourcetype,
                        index: fields.index.as_deref(),
                    },
                );
            }
            HttpFormat::Elasticsearch(bulk) => {
                format::bulk_create(out, event, bulk.index_of(stream), bulk.document);
            }
        }
    }

    /// The units grouped into requests of at most `max_events` and `max_bytes`.
    fn chunks(&self, units: &[Unit<'_>]) -> Vec<Vec<usize>> {
        let mut chunks = Vec::new();
        let mut chunk = Vec::new();
        // A JSON array's brackets and commas.
        let mut size = 2;
        for (i, unit) in units.iter().enumerate() {
            let extra = unit.span.len() + 1;
            if !chunk.is_empty()
                && (chunk.len() == self.config.max_events || size + extra > self.config.max_bytes)
            {
                chunks.push(std::mem::take(&mut chunk));
                size = 2;
            }
            chunk.push(i);
            size += extra;
        }
        if !chunk.is_empty() {
            chunks.push(chunk);
        }
        chunks
    }

    /// Sends the units as one request and reads what the answer means.
    /// `encoded` is the batch's buffer the units' spans are in.
    async fn send<'u>(
        &self,
        encoded: &Bytes,
        units: impl Iterator<Item = &'u Unit<'u>>,
    ) -> Outcome {
        let units: Vec<&Unit<'_>> = units.collect();
        let json = matches!(self.config.format, HttpFormat::Json);
        let consecutive = units.windows(2).all(|w| w[0].span.end == w[1].span.start);
        let body = match (units.first(), units.last()) {
            (Some(first), Some(last)) if consecutive && !json => {
                encoded.slice(first.span.start..last.span.end)
            }
            _ => {
                let mut body =
                    Vec::with_capacity(units.iter().map(|u| u.span.len() + 1).sum::<usize>() + 2);
                if json {
                    body.push(b'[');
                }
                for (n, unit) in units.iter().enumerate() {
                    if json && n > 0 {
                        body.push(b',');
                    }
                    body.extend_from_slice(&encoded[unit.span.clone()]);
                }
                if json {
                    body.push(b']');
                }
                Bytes::from(body)
            }
        };
        let request = match self.request(self.send_url.clone(), self.content_type(), body) {
            Ok(request) => request,
            Err(err) => return Outcome::Failed(err),
        };
        let answer = match self.client.send(request).await {
            Ok(answer) => answer,
            Err(failure) => return Outcome::Failed(self.failed(failure)),
        };
        self.outcome(answer, units.len())
    }

    /// What an answer means for the request of `n` events.
    fn outcome(&self, answer: Answer, n: usize) -> Outcome {
        let hec = matches!(self.config.format, HttpFormat::SplunkHec(_));
        // Answers are read as they came; only what is quoted from them is cleaned of secrets.
        let body = &answer.body;
        if hec {
            let ok = (200..300).contains(&answer.status);
            let said = HecAnswer::parse(body);
            if let Some(said) = &said {
                if answer.status == 400
                    && let Some(index) = said.invalid_event()
                {
                    return Outcome::InvalidEvent {
                        index,
                        reason: format!(
                            "HEC refused the event (HTTP 400, code 6): {}",
                            self.clean_text(&said.text)
                        ),
                    };
                }
                if answer.status == 400 && said.channel_missing() {
                    return Outcome::Failed(SinkError::Blocked {
                        sink: self.name.clone(),
                        target: self.config.url.clone(),
                        detail: format!(
                            "HEC requires a request channel (HTTP 400, code 10: {}): indexer \
                             acknowledgement is on for this token; set ack = true",
                            self.clean_text(&said.text)
                        ),
                    });
                }
            }
            if ok {
                let ack_id = said.as_ref().and_then(|said| said.ack_id);
                return match (self.ack_url.is_some(), ack_id) {
                    (true, Some(id)) => Outcome::AwaitingAck(id),
                    (true, None) => {
                        if !self.ack_missing_said.swap(true, Ordering::Relaxed) {
                            tracing::error!(sink = %self.name, url = %self.config.url, "ack = true but HEC answered without an ackId: indexer acknowledgement is off for this token; events count as delivered when HEC takes them; turn acknowledgement on in Splunk, or set ack = false");
                        }
                        Outcome::Delivered
                    }
                    (false, _) => Outcome::Delivered,
                };
            }
        }
        let verdict = classify(
            answer.status,
            &answer.headers,
            &self.clean(body),
            &self.config.retry_on_status,
        );
        match verdict {
            Verdict::Delivered => match &self.config.format {
                HttpFormat::Elasticsearch(_) => match bulk_items(body, n) {
                    Some(items) => {
                        let items = items
                            .into_iter()
                            .map(|item| match item {
                                ItemVerdict::Reject(reason) => {
                                    ItemVerdict::Reject(self.clean_text(&reason))
                                }
                                ItemVerdict::Retry(reason) => {
                                    ItemVerdict::Retry(self.clean_text(&reason))
                                }
                                delivered => delivered,
                            })
                            .collect();
                        Outcome::Items(items)
                    }
                    None => Outcome::Failed(self.error(format!(
                        "HTTP {} but not a bulk answer for {n} items: {}",
                        answer.status,
                        self.excerpt(&self.clean(body))
                    ))),
                },
                _ => Outcome::Delivered,
            },
            Verdict::Retry {
                after: Some(after),
                why,
            } => Outcome::Failed(SinkError::RetryAfter {
                sink: self.name.clone(),
                target: self.config.url.clone(),
                detail: why,
                after,
            }),
            Verdict::Retry { after: None, why } => Outcome::Failed(self.error(why)),
            Verdict::Blocked(why) => {
                self.refused.store(true, Ordering::SeqCst);
                Outcome::Failed(SinkError::Blocked {
                    sink: self.name.clone(),
                    target: self.config.url.clone(),
                    detail: format!(
                        "the collector refuses our credential ({why}); fix {} (read again before \
                         each try)",
                        self.credential_keys()
                    ),
                })
            }
            Verdict::TooLarge(why) => Outcome::TooLarge(why),
            Verdict::Reject(why) => Outcome::Rejected(why),
        }
    }

    /// Waits until HEC says the requests in `awaiting` are indexed, or their time is up.
    /// Returns those acknowledged; what is left in `awaiting` was not.
    async fn await_acks(
        &self,
        awaiting: &mut Vec<(Vec<usize>, u64, Instant)>,
    ) -> Vec<(Vec<usize>, u64, Instant)> {
        let Some(url) = self.ack_url.clone() else {
            return std::mem::take(awaiting);
        };
        let timeout = self.ack_timeout();
        let mut acked = Vec::new();
        let mut wait = ACK_POLL_FIRST;
        while !awaiting.is_empty() {
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(ACK_POLL_MAX);
            let ids: Vec<u64> = awaiting.iter().map(|(_, id, _)| *id).collect();
            let body = Bytes::from(serde_json::json!({ "acks": ids }).to_string());
            let answered = match self.request(url.clone(), "application/json", body) {
                Ok(request) => self.client.send(request).await,
                Err(_) => break,
            };
            match answered {
                Ok(answer) if answer.status == 200 => {
                    let said: Option<HashMap<String, HashMap<String, bool>>> =
                        serde_json::from_slice(&answer.body).ok();
                    let statuses = said
                        .and_then(|mut said| said.remove("acks"))
                        .unwrap_or_default();
                    let (done, left): (Vec<_>, Vec<_>) = std::mem::take(awaiting)
                        .into_iter()
                        .partition(|(_, id, _)| statuses.get(&id.to_string()) == Some(&true));
                    acked.extend(done);
                    *awaiting = left;
                }
                Ok(answer) => {
                    tracing::warn!(sink = %self.name, status = answer.status, answer = %self.excerpt(&self.clean(&answer.body)), "HEC did not answer the acknowledgement query; asking again");
                }
                Err(failure) => {
                    tracing::warn!(sink = %self.name, error = %failure, "the acknowledgement query failed; asking again");
                }
            }
            if awaiting
                .iter()
                .all(|(_, _, sent)| sent.elapsed() >= timeout)
            {
                break;
            }
        }
        acked
    }

    fn ack_timeout(&self) -> Duration {
        match &self.config.format {
            HttpFormat::SplunkHec(hec) => hec.ack_timeout,
            _ => Duration::ZERO,
        }
    }

    /// A POST to `url` with the sink's headers, the body gzipped if configured.
    fn request(
        &self,
        url: http::Uri,
        content_type: &'static str,
        body: Bytes,
    ) -> Result<http::Request<Full<Bytes>>, SinkError> {
        let mut request = http::Request::post(url)
            .header(http::header::CONTENT_TYPE, content_type)
            .header(
                http::header::USER_AGENT,
                concat!("op-events-forwarder/", env!("CARGO_PKG_VERSION")),
            );
        if let Some(header) = self.credential_header() {
            request = request.header(http::header::AUTHORIZATION, header);
        }
        if let Some(channel) = &self.channel {
            request = request.header("x-splunk-request-channel", channel.clone());
        }
        for (name, value) in &self.config.headers {
            request = request.header(name.as_str(), value.as_str());
        }
        let body = if self.config.gzip {
            request = request.header(http::header::CONTENT_ENCODING, "gzip");
            let mut encoder = flate2::write::GzEncoder::new(
                Vec::with_capacity(body.len() / 4),
                flate2::Compression::fast(),
            );
            encoder
                .write_all(&body)
                .and_then(|()| encoder.finish())
                .map(Bytes::from)
                .map_err(|err| self.error(format!("cannot gzip the request: {err}")))?
        } else {
            body
        };
        request
            .body(Full::new(body))
            .map_err(|err| self.error(format!("cannot build the request: {err}")))
    }

    fn content_type(&self) -> &'static str {
        match self.config.format {
            HttpFormat::Ndjson { .. } | HttpFormat::Elasticsearch(_) => "application/x-ndjson",
            HttpFormat::Json | HttpFormat::SplunkHec(_) => "application/json",
        }
    }

    fn credential_header(&self) -> Option<http::HeaderValue> {
        self.credential
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .header
            .clone()
    }

    /// The keys that hold the credential, for what an operator must fix.
    fn credential_keys(&self) -> String {
        match &self.config.auth {
            Auth::None => "the collector's settings (no credential is configured)".to_owned(),
            Auth::Token(source) => source_key(source, "token"),
            Auth::Basic { user, password } => {
                format!(
                    "basic_user ({user}) or {}",
                    source_key(password, "password")
                )
            }
            Auth::ApiKey(source) => source_key(source, "api_key"),
        }
    }

    /// A failure before an answer, as the worker's error.
    fn failed(&self, failure: Failure) -> SinkError {
        match failure {
            Failure::Tls(detail) => SinkError::Blocked {
                sink: self.name.clone(),
                target: self.config.url.clone(),
                detail,
            },
            other => self.error(self.clean_text(&other.to_string())),
        }
    }

    fn error(&self, detail: String) -> SinkError {
        SinkError::Http {
            sink: self.name.clone(),
            url: self.config.url.clone(),
            detail,
        }
    }

    /// `body` with every secret of the credential, and of those it replaced, replaced by
    /// `[REDACTED]`.
    fn clean(&self, body: &[u8]) -> Bytes {
        let credential = self.credential.read().unwrap_or_else(|p| p.into_inner());
        if credential.secrets.is_empty() && credential.retired.is_empty() {
            return Bytes::copy_from_slice(body);
        }
        let mut text = String::from_utf8_lossy(body).into_owned();
        for secret in credential
            .secrets
            .iter()
            .chain(credential.retired.iter().rev())
        {
            text = crate::api::redact(&text, secret);
        }
        Bytes::from(text)
    }

    fn clean_text(&self, text: &str) -> String {
        String::from_utf8_lossy(&self.clean(text.as_bytes())).into_owned()
    }

    fn excerpt(&self, body: &[u8]) -> String {
        crate::api::excerpt(body, 200, "")
    }
}

/// The key that holds a secret, as configured.
fn source_key(source: &TokenSource, what: &str) -> String {
    match source {
        TokenSource::File(path) => format!("{what}_file ({})", path.display()),
        TokenSource::Env(var) => format!("{what}_env ({var})"),
    }
}

fn dead_letter(event: &str, reason: String) -> DeadLetter {
    DeadLetter {
        event: event.to_owned(),
        uuid: crate::event::uuid(event),
        reason,
    }
}

/// Reads the credential the config names and makes its `Authorization` header.
fn read_credential(sink: &str, config: &HttpSinkConfig) -> Result<Credential, String> {
    let hec = matches!(config.format, HttpFormat::SplunkHec(_));
    let (header, secrets) = match &config.auth {
        Auth::None => return Ok(Credential::default()),
        Auth::Token(source) => {
            let token = read_secret(sink, source, "token", false)?;
            let token = token.expose_secret();
            let scheme = if hec { "Splunk" } else { "Bearer" };
            (format!("{scheme} {token}"), vec![token.to_owned()])
        }
        Auth::Basic { user, password } => {
            let password = read_secret(sink, password, "password", true)?;
            let password = password.expose_secret();
            let encoded = crate::base64::encode(
                format!("{user}:{password}").as_bytes(),
                crate::base64::Alphabet::Standard,
            );
            (
                format!("Basic {encoded}"),
                vec![password.to_owned(), encoded],
            )
        }
        Auth::ApiKey(source) => {
            let key = read_secret(sink, source, "api_key", false)?;
            let key = key.expose_secret();
            (format!("ApiKey {key}"), vec![key.to_owned()])
        }
    };
    let mut header = http::HeaderValue::from_str(&header).map_err(|_| {
        format!("sink \"{sink}\": the credential holds characters a header cannot carry")
    })?;
    header.set_sensitive(true);
    Ok(Credential {
        header: Some(header),
        secrets,
        retired: Vec::new(),
    })
}

/// Reads a secret from its file or variable, trimmed of surrounding whitespace (a password may
/// hold spaces inside, a token or key may not). Errors never hold the secret.
fn read_secret(
    sink: &str,
    source: &TokenSource,
    what: &str,
    spaces: bool,
) -> Result<SecretString, String> {
    let (raw, origin) = match source {
        TokenSource::File(path) => (
            std::fs::read_to_string(path).map_err(|err| {
                format!(
                    "sink \"{sink}\": cannot read {what}_file {}: {err}",
                    path.display()
                )
            })?,
            format!("{what}_file {}", path.display()),
        ),
        TokenSource::Env(var) => (
            std::env::var(var).map_err(|_| {
                format!("sink \"{sink}\": {what}_env {var}: the variable is not set or not UTF-8")
            })?,
            format!("{what}_env {var}"),
        ),
    };
    let secret = raw.trim();
    if secret.is_empty() {
        return Err(format!("sink \"{sink}\": {origin} is empty"));
    }
    let allowed = |c: char| c.is_ascii_graphic() || (spaces && c == ' ');
    if !secret.chars().all(allowed) {
        return Err(format!(
            "sink \"{sink}\": {origin} holds characters a header cannot carry"
        ));
    }
    Ok(SecretString::from(secret.to_owned()))
}

/// A new request channel: a random UUID (version 4).
pub fn new_channel() -> String {
    let mut bytes = [0u8; 16];
    // ring's system random fails only without an OS source of randomness.
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes);
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SinkKind;
    use crate::config::testing::{VALID, parse};

    /// A sink of `lines`, its token `token` in a file.
    fn sink(lines: &str, token: &str) -> (HttpSink, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, format!("{token}\n")).unwrap();
        let toml = format!(
            "{VALID}\n[[sinks]]\nname = \"web\"\ntype = \"http\"\ntoken_file = \"{}\"\n{lines}\n",
            path.display()
        );
        let config = parse(&toml).unwrap();
        let SinkKind::Http(http) = &config.sinks[1].kind else {
            panic!("an http sink")
        };
        let channel = Some(new_channel());
        (HttpSink::new("web", http, channel).unwrap(), dir)
    }

    fn answer(status: u16, body: &str) -> Answer {
        Answer {
            status,
            headers: http::HeaderMap::new(),
            body: Bytes::from(body.to_owned()),
        }
    }

    /// A regression: a request sent with the old token and answered after a reload quoted
    /// it, because only the new one was cleaned.
    #[test]
    fn a_replaced_credential_is_still_cleaned_from_answers() {
        let (web, dir) = sink(
            "url = \"https://collector:8443/in\"\nformat = \"ndjson\"",
            "old-token-1",
        );
        for token in ["new-token-2", "newest-token-3"] {
            std::fs::write(dir.path().join("token"), format!("{token}\n")).unwrap();
            web.reload();
        }
        let said = "you sent old-token-1, then new-token-2, now newest-token-3";
        let Outcome::Rejected(reason) = web.outcome(answer(400, said), 1) else {
            panic!("a 400 rejects the request")
        };
        assert_eq!(
            reason,
            "HTTP 400: you sent [REDACTED], then [REDACTED], now [REDACTED]"
        );
    }

    #[test]
    fn hec_answers_are_read_before_secrets_are_cleaned_from_them() {
        // A one-letter token is in "text" and "invalid-event-number": cleaning it first
        // would hide the event number (a regression: every event of the request became a
        // dead letter).
        let (hec, _dir) = sink(
            "url = \"https://splunk:8088\"\nformat = \"splunk_hec\"",
            "t",
        );
        let said = r#"{"text":"Invalid data format","code":6,"invalid-event-number":3}"#;
        let Outcome::InvalidEvent { index, reason } = hec.outcome(answer(400, said), 5) else {
            panic!("code 6 names the event")
        };
        assert_eq!(index, 3);
        assert!(reason.contains("code 6"), "{reason}");
        assert!(!reason.contains("text"), "quoted text is cleaned: {reason}");
    }

    #[test]
    fn what_each_hec_answer_means() {
        let (hec, _dir) = sink(
            "url = \"https://splunk:8088\"\nformat = \"splunk_hec\"\nack = true",
            "hec-secret-token",
        );
        assert!(matches!(
            hec.outcome(answer(200, r#"{"text":"Success","code":0,"ackId":7}"#), 1),
            Outcome::AwaitingAck(7)
        ));
        let Outcome::Failed(err) = hec.outcome(
            answer(400, r#"{"text":"Data channel is missing","code":10}"#),
            1,
        ) else {
            panic!()
        };
        assert!(err.to_string().contains("set ack = true"), "{err}");
        assert_eq!(err.action(), crate::sink::Action::RetrySlowly);
        let Outcome::Failed(err) = hec.outcome(
            answer(403, r#"{"text":"Invalid token hec-secret-token","code":4}"#),
            1,
        ) else {
            panic!()
        };
        let text = err.to_string();
        assert!(!text.contains("hec-secret-token"), "{text}");
        assert!(text.contains("Invalid token [REDACTED]"), "{text}");
        assert!(text.contains("token_file"), "says what to fix: {text}");
        assert!(matches!(
            hec.outcome(answer(503, r#"{"text":"Server is busy","code":9}"#), 1),
            Outcome::Failed(SinkError::Http { .. })
        ));
        let (plain, _dir) = sink(
            "url = \"https://splunk:8088\"\nformat = \"splunk_hec\"",
            "x-token",
        );
        assert!(matches!(
            plain.outcome(answer(200, r#"{"text":"Success","code":0}"#), 1),
            Outcome::Delivered
        ));
    }

    #[test]
    fn what_each_bulk_answer_means() {
        let (bulk, _dir) = sink(
            "url = \"https://search:9200\"\nformat = \"elasticsearch\"",
            "es-token",
        );
        let items = r#"{"errors":true,"items":[{"create":{"status":201}},{"create":{"status":400,"error":{"type":"mapper_parsing_exception","reason":"es-token in field"}}}]}"#;
        let Outcome::Items(verdicts) = bulk.outcome(answer(200, items), 2) else {
            panic!()
        };
        assert_eq!(verdicts[0], ItemVerdict::Delivered);
        assert_eq!(
            verdicts[1],
            ItemVerdict::Reject("HTTP 400 mapper_parsing_exception: [REDACTED] in field".into())
        );
        assert!(matches!(
            bulk.outcome(answer(200, "<html>proxy</html>"), 2),
            Outcome::Failed(SinkError::Http { .. })
        ));
        assert!(matches!(
            bulk.outcome(answer(413, ""), 2),
            Outcome::TooLarge(_)
        ));
        assert!(matches!(
            bulk.outcome(answer(400, "bad request"), 2),
            Outcome::Rejected(reason) if reason == "HTTP 400: bad request"
        ));
    }

    #[test]
    fn channels_are_version_4_uuids() {
        let a = new_channel();
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "4");
        assert!(matches!(&a[19..20], "8" | "9" | "a" | "b"));
        assert_ne!(a, new_channel());
    }

    /// A collector that cannot be reached is named with every cause and the proxy in use,
    /// never the proxy's credentials.
    #[tokio::test]
    async fn an_unreachable_collector_is_said_with_its_causes_and_the_proxy() {
        // Ports bound and not listening: connections to them are refused.
        let closed = || {
            let socket = tokio::net::TcpSocket::new_v4().unwrap();
            socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
            socket
        };
        let (collector, proxy) = (closed(), closed());
        let url = format!(
            "url = \"http://{}/in\"\nformat = \"ndjson\"",
            collector.local_addr().unwrap()
        );
        let (direct, _dir) = sink(&url, "tok-direct");
        let said = direct.ready().await.unwrap_err().to_string();
        assert!(said.contains("cannot connect: "), "{said}");
        assert!(said.contains("Connection refused"), "{said}");
        assert!(!said.contains("through the proxy"), "{said}");

        let proxy_port = proxy.local_addr().unwrap().port();
        let (tunnelled, _dir) = sink(
            &format!("{url}\nproxy_url = \"http://u:pass-secret@127.0.0.1:{proxy_port}\""),
            "tok-tunnel",
        );
        let said = tunnelled.ready().await.unwrap_err().to_string();
        assert!(said.contains("cannot connect: "), "{said}");
        assert!(
            said.contains(&format!(
                "(through the proxy http://127.0.0.1:{proxy_port})"
            )),
            "{said}"
        );
        assert!(!said.contains("pass-secret"), "{said}");
    }
}
