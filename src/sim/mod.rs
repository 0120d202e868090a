//! A faithful local simulator of the 1Password Events API, for tests, `simulate`, `demo` and benchmarks.
//!
//! It serves `POST /api/v1/…` and `POST /api/v2/{auditevents,itemusages,signinattempts}` (each
//! version in its own schemas: v1 as spec 1.2.0, v2 as docs 1.4.1), the beta
//! `GET /api/v3/auditevents` in either documented revision, and `GET /api/v2/auth/introspect`
//! (plus the legacy PascalCase `GET /api/auth/introspect`), over plain HTTP/1.1 or HTTPS
//! (HTTP/2 or HTTP/1.1 by ALPN), with the request and response shapes, errors and cursor
//! semantics described in `reference/events-api.md`:
//!
//! - Items are served in insertion order; a ResetCursor's window (`start_time`, `end_time`) is on
//!   insertion time, not on the events' own `timestamp`, and about 5% of events arrive late.
//! - Cursors are opaque, reusable any number of times, and carry the reset's `limit` and window;
//!   a cursor that came with `has_more: false` serves, when posted again later, what was inserted since.
//! - Now and then a page is empty although `has_more` is true, as the spec allows.
//! - Data older than 120 days is never served, and older start times are clamped.
//! - Tokens are the configured plain ones or ES256 JWTs signed by the simulator's key
//!   (`jwt.rs`); a token without a stream's feature, expired or signed by another key gets 401.
//! - The v3 endpoint pages by token inside a window of insertion times and answers 400 to a
//!   token sent with `start_time`/`end_time`, and (a choice: the API's behaviour is not
//!   documented) to query parameters of the other revision, so a misconfigured client fails
//!   visibly instead of looping on a first page.
//! - Responses are gzipped for clients that accept it; `Content-Type` is not required.
//!
//! Items are generated deterministically from the seed, the stream, their index and their
//! insertion time, so only insertion times are stored and a page's bytes are regenerated when
//! served (see `generate.rs`).
//!
//! Test hooks, without auth: `GET /_sim/stats`, `GET /_sim/ledger`,
//! `POST /_sim/insert?stream=<stream>&count=<n>`, `GET`/`POST /_sim/faults` (the [`Faults`] as
//! JSON), `POST /_sim/tokens/revoke?token=<token>` and
//! `POST /_sim/tokens/issue?token=<token>[&features=<stream>,<stream>]`.

mod cursor;
mod faults;
mod generate;
pub mod jwt;
mod server;
mod store;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write as _};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use serde::Serialize;
use time::OffsetDateTime;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use self::faults::RateLog;
pub use self::faults::{Fault, Faults, WindowLimit};
use self::generate::World;
use self::store::StreamLog;
use crate::stream::Stream;

/// How often the live generator inserts a batch.
const LIVE_BATCH_INTERVAL: Duration = Duration::from_millis(100);

/// The most events one `POST /_sim/insert` may ask for.
const MAX_INSERT_COUNT: usize = 1_000_000;

/// How the simulator is set up; start from [`SimConfig::new`] and change fields.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Where to listen, e.g. `127.0.0.1:0` for an ephemeral port.
    pub listen: SocketAddr,
    /// Seeds every generated event; the same seed gives the same uuids and contents.
    pub seed: u64,
    /// Events generated per stream at start.
    pub initial_events: usize,
    /// Live events per stream per second; 0.0 for none.
    pub rate_per_sec: f64,
    /// The initial events' insertion times are spread evenly over this much of the past, ending at start.
    pub backfill: Duration,
    /// The bearer tokens the simulator accepts, and the features (streams) each may read.
    pub tokens: Vec<SimToken>,
    /// If set, `<stream>\t<uuid>\n` is appended to this file for every generated event, flushed per batch.
    pub ledger: Option<PathBuf>,
    /// Every this-many page requests that have events to serve, one returns an empty page with
    /// `has_more: true` first; 0 for never.
    pub empty_page_every: u32,
    /// Rate limits and injected failures; none by default.
    pub faults: Faults,
    /// The key that signs (and verifies) the simulator's JWT tokens; `None` for a fresh one.
    pub signing_key: Option<jwt::SigningKey>,
    /// Which documented revision of the v3 beta endpoint to serve.
    pub v3_revision: V3Revision,
    /// Serve HTTPS (HTTP/2 or HTTP/1.1 by ALPN) with a fresh self-signed certificate, whose PEM
    /// [`Simulator::ca_pem`] returns.
    pub tls: bool,
    /// With `tls`: offer HTTP/2 by ALPN (else HTTP/1.1 only).
    pub http2: bool,
    /// Gzip responses for clients that send `Accept-Encoding: gzip`.
    pub gzip: bool,
    /// The simulator's clock minus the real one: its events, its retention and its `Date`
    /// headers run on it, as an API would whose clock disagrees with the daemon's.
    pub clock_offset: time::Duration,
}

/// The two documented revisions of the beta `GET /api/v3/auditevents`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum V3Revision {
    /// The early beta: `page_size`, `next_page_token` in the query, a `meta` object in the
    /// response, an inclusive `start_time`.
    Early,
    /// Spec 3.0.0: `max_page_size`, `page_token`, a top-level `next_page_token`, an exclusive
    /// `start_time`.
    #[default]
    Current,
}

impl FromStr for V3Revision {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "early" => Ok(V3Revision::Early),
            "current" | "3.0.0" => Ok(V3Revision::Current),
            other => Err(format!(
                "unknown v3 revision \"{other}\" (expected early or current)"
            )),
        }
    }
}

impl SimConfig {
    /// The defaults: seed 1, 1000 events per stream over the last 24 hours, no live events, one
    /// token `sim-token` with every feature, no ledger, an empty page every 50 pages.
    pub fn new(listen: SocketAddr) -> SimConfig {
        SimConfig {
            listen,
            seed: 1,
            initial_events: 1000,
            rate_per_sec: 0.0,
            backfill: Duration::from_secs(24 * 3600),
            tokens: vec![SimToken::all("sim-token")],
            ledger: None,
            empty_page_every: 50,
            signing_key: None,
            v3_revision: V3Revision::Current,
            tls: false,
            http2: true,
            gzip: true,
            faults: Faults::default(),
            clock_offset: time::Duration::ZERO,
        }
    }
}

/// A bearer token the simulator accepts, with the features it grants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimToken {
    pub token: String,
    pub features: Vec<Stream>,
}

impl SimToken {
    /// A token with every feature.
    pub fn all(token: impl Into<String>) -> SimToken {
        SimToken {
            token: token.into(),
            features: Stream::ALL.to_vec(),
        }
    }
}

/// Why a `TOKEN` or `TOKEN=feature,feature` string does not describe a [`SimToken`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SimTokenError {
    #[error("sim token is empty")]
    EmptyToken,
    #[error("sim token has an empty feature list after '='")]
    NoFeatures,
    #[error(
        "unknown feature \"{0}\" in sim token (expected auditevents, itemusages or signinattempts)"
    )]
    UnknownFeature(String),
}

impl FromStr for SimToken {
    type Err = SimTokenError;

    /// Parses `TOKEN` (every feature) or `TOKEN=auditevents,itemusages`.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let Some((token, features)) = text.split_once('=') else {
            if text.is_empty() {
                return Err(SimTokenError::EmptyToken);
            }
            return Ok(SimToken::all(text));
        };
        if token.is_empty() {
            return Err(SimTokenError::EmptyToken);
        }
        let mut parsed = Vec::new();
        for feature in features
            .split(',')
            .map(str::trim)
            .filter(|feature| !feature.is_empty())
        {
            let stream = feature
                .parse::<Stream>()
                .map_err(|_| SimTokenError::UnknownFeature(feature.to_owned()))?;
            if !parsed.contains(&stream) {
                parsed.push(stream);
            }
        }
        if parsed.is_empty() {
            return Err(SimTokenError::NoFeatures);
        }
        Ok(SimToken {
            token: token.to_owned(),
            features: parsed,
        })
    }
}

/// One generated event.
#[derive(Debug, Clone)]
pub struct SimEvent {
    pub uuid: String,
    /// The exact bytes served as the item.
    pub json: String,
    /// When the event was inserted, which is what ResetCursor windows select on.
    pub inserted_at: OffsetDateTime,
}

/// One request to an event endpoint, as served.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestRecord {
    /// The endpoint's version: 1, 2, or 3 (the beta).
    pub version: u8,
    pub stream: Stream,
    /// The status sent; 0 if the connection was closed without a response.
    pub status: u16,
    pub body: RequestKind,
    /// The fault injected into this request, if any.
    pub fault: Option<Fault>,
}

impl RequestRecord {
    /// Whether the client cannot have received a usable page (slow responses may or may not
    /// have arrived in time, so they count as neither).
    pub fn failed(&self) -> bool {
        self.status != 200
            || matches!(
                self.fault,
                Some(Fault::Reset | Fault::Truncated | Fault::InvalidJson)
            )
    }
}

/// What an event-endpoint request body said.
#[derive(Debug, Clone, PartialEq)]
pub enum RequestKind {
    /// A ResetCursor, with its fields as sent (before validation).
    Reset {
        limit: Option<u64>,
        start_time: Option<String>,
        end_time: Option<String>,
    },
    /// A continuation with this cursor.
    Cursor(String),
    /// A v3 request, with its query string as sent.
    Query(String),
    /// Not JSON, not an object, wrong types, or the wrong method.
    Invalid,
}

/// Counters for one stream.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct StreamStats {
    /// Events generated (initial and live).
    pub generated: u64,
    /// Event-endpoint requests, whatever their outcome.
    pub requests: u64,
    /// Events served in 200 responses, counting repeats.
    pub served: u64,
    /// Requests answered with something other than 200.
    pub errors: u64,
}

/// A snapshot of the simulator's counters, also served at `GET /_sim/stats`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SimStats {
    /// Per stream, keyed by stream name.
    pub streams: BTreeMap<String, StreamStats>,
    /// Event-endpoint requests across every stream.
    pub requests: u64,
    /// Requests of any kind that arrived over HTTP/2.
    pub http2_requests: u64,
    /// Responses of any kind sent gzip-encoded.
    pub gzipped_responses: u64,
    /// Introspection requests answered 429: they count against the limits like any other.
    pub introspections_rate_limited: u64,
}

impl SimStats {
    /// The counters of one stream.
    pub fn stream(&self, stream: Stream) -> StreamStats {
        self.streams
            .get(stream.as_str())
            .copied()
            .unwrap_or_default()
    }
}

/// A running simulator; clones share it, and it shuts down when the last clone is dropped.
#[derive(Clone)]
pub struct Simulator {
    handle: Arc<Handle>,
}

/// Owns the running simulator's lifetime: dropping it stops the server and the generator.
struct Handle {
    shared: Arc<Shared>,
    addr: SocketAddr,
    /// The self-signed certificate (PEM) when serving HTTPS.
    ca_pem: Option<String>,
    /// Cancelled by [`Simulator::shutdown`] or on drop; the accept loop, every connection and the
    /// live generator select on it.
    shutdown: CancellationToken,
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

impl std::fmt::Debug for Simulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Simulator")
            .field("addr", &self.handle.addr)
            .finish_non_exhaustive()
    }
}

impl Simulator {
    /// Binds `cfg.listen`, generates the initial events, and spawns the server (and the live
    /// generator if `cfg.rate_per_sec > 0`) on the current tokio runtime.
    ///
    /// # Errors
    ///
    /// Fails if the address cannot be bound, the ledger cannot be opened or written, or
    /// `cfg.backfill` reaches before the year -9999.
    pub async fn start(cfg: SimConfig) -> io::Result<Simulator> {
        let listener = TcpListener::bind(cfg.listen).await?;
        let addr = listener.local_addr()?;
        let ledger = match &cfg.ledger {
            Some(path) => Some(Mutex::new(BufWriter::new(
                OpenOptions::new().create(true).append(true).open(path)?,
            ))),
            None => None,
        };
        let started_at = OffsetDateTime::now_utc() + cfg.clock_offset;
        let backfill = time::Duration::try_from(cfg.backfill)
            .ok()
            .filter(|backfill| started_at.checked_sub(*backfill).is_some())
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "simulator backfill is too long",
                )
            })?;
        let shared = Arc::new(Shared {
            world: World::new(cfg.seed),
            tokens: Mutex::new(cfg.tokens),
            revoked: Mutex::default(),
            signing_key: cfg.signing_key.unwrap_or_else(jwt::SigningKey::generate),
            v3_revision: cfg.v3_revision,
            gzip: cfg.gzip,
            protocol_counters: ProtocolCounters::default(),
            faults: Mutex::new(cfg.faults),
            rate_log: Mutex::new(RateLog::default()),
            introspections_rate_limited: AtomicU64::new(0),
            fault_rng: Mutex::new(fastrand::Rng::with_seed(generate::combine(
                cfg.seed, 0xFA_17,
            ))),
            empty_page_every: cfg.empty_page_every,
            cursor_key: generate::combine(cfg.seed, 0xC0_75_02),
            started_at,
            clock_offset: cfg.clock_offset,
            logs: Default::default(),
            counters: Default::default(),
            requests: Mutex::new(Vec::new()),
            ledger,
        });

        // Initial events may number millions: keep their ledger writing off the runtime's threads.
        let initial_events = cfg.initial_events;
        let backfilling = Arc::clone(&shared);
        tokio::task::spawn_blocking(move || backfilling.backfill(initial_events, backfill))
            .await
            .map_err(io::Error::other)??;

        let (tls, ca_pem) = match cfg.tls {
            true => {
                let (acceptor, pem) = server::tls_acceptor(cfg.http2)?;
                (Some(acceptor), Some(pem))
            }
            false => (None, None),
        };
        let shutdown = CancellationToken::new();
        tokio::spawn(server::serve(
            listener,
            Arc::clone(&shared),
            tls,
            shutdown.clone(),
        ));
        if cfg.rate_per_sec.is_finite() && cfg.rate_per_sec > 0.0 {
            tokio::spawn(generate_live(
                Arc::clone(&shared),
                cfg.rate_per_sec,
                shutdown.clone(),
            ));
        }
        tracing::info!(%addr, seed = cfg.seed, "Events API simulator listening.");
        Ok(Simulator {
            handle: Arc::new(Handle {
                shared,
                addr,
                ca_pem,
                shutdown,
            }),
        })
    }

    /// The address the simulator listens on.
    pub fn addr(&self) -> SocketAddr {
        self.handle.addr
    }

    /// The base URL to give an Events API client, e.g. `http://127.0.0.1:PORT` (`https://`
    /// when serving TLS).
    pub fn base_url(&self) -> String {
        let scheme = if self.handle.ca_pem.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{}", self.handle.addr)
    }

    /// The self-signed certificate (PEM) of an HTTPS simulator, for clients to trust.
    pub fn ca_pem(&self) -> Option<&str> {
        self.handle.ca_pem.as_deref()
    }

    /// The host and port a token's `aud` names for this simulator.
    pub fn audience(&self) -> String {
        self.handle.addr.to_string()
    }

    /// A JWT signed by this simulator's key, which it accepts for `claims.features`.
    pub fn mint_token(&self, claims: &jwt::MintClaims) -> String {
        self.handle.shared.signing_key.mint(claims)
    }

    /// Generates and inserts `n` new events into `stream` now, and returns their uuids.
    ///
    /// If the ledger cannot be written, nothing is inserted, the error is logged and the result is empty.
    pub fn insert(&self, stream: Stream, n: usize) -> Vec<String> {
        self.handle.shared.insert_now(stream, n)
    }

    /// Every event generated for `stream`, in insertion order, as the v2 endpoint (or, for
    /// [`Stream::AuditV3`], the v3 endpoint) serves it.
    pub fn events(&self, stream: Stream) -> Vec<SimEvent> {
        self.events_as(stream, 2)
    }

    /// [`Simulator::events`] as the endpoint of `version` (1 or 2) serves them.
    pub fn events_as(&self, stream: Stream, version: u8) -> Vec<SimEvent> {
        let schema = match version {
            1 => generate::Schema::V1,
            _ => generate::Schema::V2,
        };
        let shared = &self.handle.shared;
        let inserted = shared.log(stream).inserted().to_vec();
        inserted
            .into_iter()
            .enumerate()
            .map(|(idx, inserted_at)| {
                let mut json = String::new();
                generate::write_item_as(
                    &shared.world,
                    stream,
                    schema,
                    idx as u64,
                    inserted_at,
                    &mut json,
                );
                SimEvent {
                    uuid: generate::item_uuid(&shared.world, stream, idx as u64),
                    json,
                    inserted_at,
                }
            })
            .collect()
    }

    /// How many events were generated for `stream`.
    pub fn generated(&self, stream: Stream) -> usize {
        self.handle.shared.log(stream).len() as usize
    }

    /// Every event-endpoint request served, in the order they were answered.
    pub fn requests(&self) -> Vec<RequestRecord> {
        lock(&self.handle.shared.requests).clone()
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> SimStats {
        self.handle.shared.stats()
    }

    /// The faults in effect.
    pub fn faults(&self) -> Faults {
        lock(&self.handle.shared.faults).clone()
    }

    /// Replaces the faults in effect (the rate limiter keeps its history).
    pub fn set_faults(&self, faults: Faults) {
        *lock(&self.handle.shared.faults) = faults;
    }

    /// Stops accepting `token`; returns whether it was accepted before.
    pub fn revoke_token(&self, token: &str) -> bool {
        self.handle.shared.revoke_token(token)
    }

    /// Accepts a new token (replacing one with the same text).
    pub fn issue_token(&self, token: SimToken) {
        self.handle.shared.issue_token(token);
    }

    /// Stops accepting connections, closes idle ones, and stops the live generator.
    pub fn shutdown(&self) {
        self.handle.shutdown.cancel();
    }
}

/// State shared by the handle, the server's connections and the live generator.
struct Shared {
    world: World,
    /// The accepted tokens; revoked and issued at run time through the control endpoints.
    tokens: Mutex<Vec<SimToken>>,
    /// Tokens revoked at run time, JWTs the simulator signed among them.
    revoked: Mutex<std::collections::HashSet<String>>,
    /// The faults in effect.
    faults: Mutex<Faults>,
    /// Admitted requests of the token (events and introspection), for the sliding-window
    /// limits.
    rate_log: Mutex<RateLog>,
    /// Introspection requests refused by the limits.
    introspections_rate_limited: AtomicU64,
    /// Decides which requests get a fault; seeded, so a run can be repeated.
    fault_rng: Mutex<fastrand::Rng>,
    /// Signs and verifies the simulator's JWTs.
    signing_key: jwt::SigningKey,
    v3_revision: V3Revision,
    gzip: bool,
    /// Requests served over HTTP/2, responses gzipped.
    protocol_counters: ProtocolCounters,
    empty_page_every: u32,
    /// Keys the cursors' tags; derived from the seed, so a restarted simulator accepts old cursors.
    cursor_key: u64,
    started_at: OffsetDateTime,
    /// See [`SimConfig::clock_offset`].
    clock_offset: time::Duration,
    /// One log per stream (see [`stream_idx`]). A std mutex: it is never held across an await.
    /// Lock order: a stream's log, then the ledger.
    logs: [Mutex<StreamLog>; 3],
    /// Per-stream request counters (see [`stream_idx`]).
    counters: [Counters; 3],
    /// Every event-endpoint request, in the order answered.
    requests: Mutex<Vec<RequestRecord>>,
    /// The ledger file, if configured; written while the stream's log is locked so both agree.
    ledger: Option<Mutex<BufWriter<File>>>,
}

/// How requests were carried.
#[derive(Debug, Default)]
struct ProtocolCounters {
    http2: AtomicU64,
    gzipped: AtomicU64,
}

/// Request counters for one stream.
#[derive(Debug, Default)]
struct Counters {
    requests: AtomicU64,
    served: AtomicU64,
    errors: AtomicU64,
}

impl Shared {
    fn log(&self, stream: Stream) -> MutexGuard<'_, StreamLog> {
        lock(&self.logs[stream_idx(stream)])
    }

    /// Inserts the initial events of every stream, spread evenly over `backfill` up to the start.
    fn backfill(&self, n: usize, backfill: time::Duration) -> io::Result<()> {
        if n == 0 {
            return Ok(());
        }
        let first = self.started_at - backfill;
        let step_ns = backfill.whole_nanoseconds() / n as i128;
        let times: Vec<OffsetDateTime> = (1..=n)
            .map(|k| {
                let offset = time::Duration::nanoseconds_i128(step_ns * k as i128);
                if k == n {
                    self.started_at
                } else {
                    first + offset
                }
            })
            .collect();
        for stream in Stream::ALL {
            self.append(stream, &times)?;
        }
        Ok(())
    }

    /// Inserts `n` events into `stream` at the current time; logs and returns nothing on a ledger error.
    fn insert_now(&self, stream: Stream, n: usize) -> Vec<String> {
        let times = vec![self.now(); n];
        match self.append(stream, &times) {
            Ok(uuids) => uuids,
            Err(error) => {
                tracing::error!(%stream, %error, "Simulator could not write its ledger; no events inserted.");
                Vec::new()
            }
        }
    }

    /// Inserts events with these insertion times (moved forward if needed to keep the log sorted),
    /// records them in the ledger first, and returns their uuids.
    fn append(&self, stream: Stream, times: &[OffsetDateTime]) -> io::Result<Vec<String>> {
        let mut log = self.log(stream);
        let first_idx = log.len();
        let mut clamped = Vec::with_capacity(times.len());
        let mut last = log.inserted().last().copied();
        for t in times {
            let at = store::next_after(last, *t);
            clamped.push(at);
            last = Some(at);
        }
        let uuids: Vec<String> = (0..times.len() as u64)
            .map(|k| generate::item_uuid(&self.world, stream, first_idx + k))
            .collect();
        if let Some(ledger) = &self.ledger {
            let mut ledger = lock(ledger);
            for uuid in &uuids {
                writeln!(ledger, "{stream}\t{uuid}")?;
            }
            ledger.flush()?;
        }
        log.extend(&clamped);
        Ok(uuids)
    }

    /// Stops accepting a token: a configured one, or a JWT the simulator signed. Returns
    /// whether it was accepted until now.
    fn revoke_token(&self, token: &str) -> bool {
        let mut tokens = lock(&self.tokens);
        let before = tokens.len();
        tokens.retain(|known| known.token != token);
        let listed = tokens.len() != before;
        let signed = self.signing_key.verify(token, self.now()).is_some();
        let newly_revoked = lock(&self.revoked).insert(token.to_owned());
        listed || (signed && newly_revoked)
    }

    fn issue_token(&self, token: SimToken) {
        lock(&self.revoked).remove(&token.token);
        let mut tokens = lock(&self.tokens);
        tokens.retain(|known| known.token != token.token);
        tokens.push(token);
    }

    /// Counts and records one event-endpoint request.
    fn record(&self, version: u8, stream: Stream, status: u16, body: RequestKind, n_served: usize) {
        self.record_fault(version, stream, status, body, n_served, None);
    }

    /// Counts and records one event-endpoint request, with the fault injected into it.
    fn record_fault(
        &self,
        version: u8,
        stream: Stream,
        status: u16,
        body: RequestKind,
        n_served: usize,
        fault: Option<Fault>,
    ) {
        let counters = &self.counters[stream_idx(stream)];
        counters.requests.fetch_add(1, Ordering::Relaxed);
        counters
            .served
            .fetch_add(n_served as u64, Ordering::Relaxed);
        if status != 200 {
            counters.errors.fetch_add(1, Ordering::Relaxed);
        }
        lock(&self.requests).push(RequestRecord {
            version,
            stream,
            status,
            body,
            fault,
        });
    }

    /// Now on the simulator's clock.
    fn now(&self) -> OffsetDateTime {
        OffsetDateTime::now_utc() + self.clock_offset
    }

    fn stats(&self) -> SimStats {
        let mut streams = BTreeMap::new();
        let mut requests = 0;
        for stream in Stream::ALL {
            let counters = &self.counters[stream_idx(stream)];
            let stats = StreamStats {
                generated: self.log(stream).len(),
                requests: counters.requests.load(Ordering::Relaxed),
                served: counters.served.load(Ordering::Relaxed),
                errors: counters.errors.load(Ordering::Relaxed),
            };
            requests += stats.requests;
            streams.insert(stream.as_str().to_owned(), stats);
        }
        SimStats {
            streams,
            requests,
            http2_requests: self.protocol_counters.http2.load(Ordering::Relaxed),
            gzipped_responses: self.protocol_counters.gzipped.load(Ordering::Relaxed),
            introspections_rate_limited: self.introspections_rate_limited.load(Ordering::Relaxed),
        }
    }
}

/// The index of a stream's slot in per-stream arrays.
fn stream_idx(stream: Stream) -> usize {
    match stream {
        // The v3 endpoint serves the audit log.
        Stream::AuditEvents | Stream::AuditV3 => 0,
        Stream::ItemUsages => 1,
        Stream::SignInAttempts => 2,
    }
}

/// Locks a mutex, ignoring poisoning: every critical section leaves the state consistent.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Inserts `rate` events per second into every stream, in batches, until `shutdown` is cancelled.
async fn generate_live(shared: Arc<Shared>, rate: f64, shutdown: CancellationToken) {
    let mut ticks = tokio::time::interval(LIVE_BATCH_INTERVAL);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last = tokio::time::Instant::now();
    // Fractional events carried over, so low rates still produce events at the right pace.
    let mut owed = 0.0;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = ticks.tick() => {}
        }
        let now = tokio::time::Instant::now();
        owed += rate * now.duration_since(last).as_secs_f64();
        last = now;
        let n = owed.floor();
        owed -= n;
        // The cast saturates; a batch never exceeds what one insert may ask for.
        let n = (n as usize).min(MAX_INSERT_COUNT);
        if n == 0 {
            continue;
        }
        for stream in Stream::ALL {
            shared.insert_now(stream, n);
        }
    }
}
