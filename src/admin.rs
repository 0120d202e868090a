//! The admin endpoint (`[admin] listen`, 127.0.0.1:9464 by default): `/metrics` in the
//! OpenMetrics text format (prometheus-client's registry and encoder, filled at each scrape
//! from the daemon's own counters and the state's report), `/healthz` (the process answers),
//! `/readyz` (every stream fetched recently, no sink stalled), `/status` (JSON, what the
//! `status` command prints). Never a secret, never an event's content.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};
use serde::Serialize;
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::stats::Stats;
use crate::status::{Live, Status};
use crate::store::{Store, StoreReport};
use crate::stream::Stream;

/// What the endpoint reads.
pub struct Admin {
    pub config: Arc<Config>,
    pub stats: Arc<Stats>,
    pub store: Store,
    pub started_at: OffsetDateTime,
    /// Each account's token expiry, from its claims.
    pub token_expiry: Vec<(String, Option<OffsetDateTime>)>,
    /// Each (account, stream) polled, with its poll interval.
    pub streams: Vec<(String, Stream, Duration)>,
    /// Each account's request governor.
    pub governors: Vec<(String, Arc<crate::governor::AccountGovernor>)>,
}

/// Binds `addr` and serves until `shutdown`; returns the address bound (port 0 picks one).
///
/// # Errors
///
/// The address cannot be bound (in use, not ours).
pub async fn serve(
    admin: Arc<Admin>,
    addr: SocketAddr,
    shutdown: CancellationToken,
) -> std::io::Result<(SocketAddr, impl std::future::Future<Output = ()>)> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let serving = async move {
        loop {
            let socket = tokio::select! {
                _ = shutdown.cancelled() => break,
                accepted = listener.accept() => match accepted {
                    Ok((socket, _)) => socket,
                    Err(err) => {
                        tracing::warn!(error = %err, "admin endpoint: accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            let admin = Arc::clone(&admin);
            tokio::spawn(async move {
                let service = service_fn(move |request: hyper::Request<Incoming>| {
                    let admin = Arc::clone(&admin);
                    async move { Ok::<_, Infallible>(admin.answer(request.uri().path()).await) }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(
                    hyper_util::rt::TokioExecutor::new(),
                )
                .serve_connection(TokioIo::new(socket), service)
                .await;
            });
        }
    };
    Ok((bound, serving))
}

fn response(status: u16, content_type: &str, body: String) -> hyper::Response<Full<Bytes>> {
    hyper::Response::builder()
        .status(status)
        .header("content-type", content_type)
        .header("cache-control", "no-store")
        .body(Full::new(Bytes::from(body)))
        .unwrap_or_default()
}

fn json(status: u16, value: &impl Serialize) -> hyper::Response<Full<Bytes>> {
    let body = serde_json::to_string_pretty(value).unwrap_or_default() + "\n";
    response(status, "application/json", body)
}

/// Why `/readyz` says no.
#[derive(Debug, Serialize)]
struct Readiness {
    ready: bool,
    reasons: Vec<String>,
}

impl Admin {
    async fn answer(&self, path: &str) -> hyper::Response<Full<Bytes>> {
        match path {
            "/healthz" => response(200, "text/plain; charset=utf-8", "ok\n".to_owned()),
            "/readyz" => {
                let reasons = self.not_ready(OffsetDateTime::now_utc());
                let status = if reasons.is_empty() { 200 } else { 503 };
                json(
                    status,
                    &Readiness {
                        ready: reasons.is_empty(),
                        reasons,
                    },
                )
            }
            "/status" => match self.report().await {
                Ok(report) => json(200, &self.status(&report)),
                Err(err) => response(500, "text/plain; charset=utf-8", format!("{err}\n")),
            },
            "/metrics" => match self.report().await {
                Ok(report) => response(
                    200,
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    self.metrics(&report),
                ),
                Err(err) => response(500, "text/plain; charset=utf-8", format!("{err}\n")),
            },
            _ => response(
                404,
                "text/plain; charset=utf-8",
                "not found: /metrics, /healthz, /readyz, /status\n".to_owned(),
            ),
        }
    }

    async fn report(&self) -> Result<StoreReport, crate::store::StoreError> {
        self.store.run(|store| store.report()).await
    }

    pub fn status(&self, report: &StoreReport) -> Status {
        Status::build(
            &self.config,
            report,
            Some(&Live {
                stats: &self.stats,
                started_at: self.started_at,
                token_expiry: &self.token_expiry,
            }),
            OffsetDateTime::now_utc(),
        )
    }

    /// Why the daemon is not ready, if it is not: a stream without a successful fetch within
    /// three poll intervals (a minute at least; since the start, for the first), or a sink
    /// failing for longer than `sink_stall_secs`.
    pub fn not_ready(&self, now: OffsetDateTime) -> Vec<String> {
        let mut reasons = Vec::new();
        for (account, stream, interval) in &self.streams {
            let stats = self.stats.stream(account, *stream);
            if stats.finished {
                continue;
            }
            let allowed = (*interval * 3).max(Duration::from_secs(60));
            let since = stats.last_success.unwrap_or(self.started_at);
            let quiet = now - since;
            if quiet > allowed {
                let why = stats
                    .unhealthy
                    .or(stats.last_error)
                    .unwrap_or_else(|| "no answer yet".to_owned());
                reasons.push(format!(
                    "{account}/{stream}: no page fetched for {}s: {why}",
                    quiet.whole_seconds()
                ));
            }
        }
        let stall = self.config.admin.sink_stall;
        for ((sink, account, stream), stats) in self.stats.sinks() {
            if let Some(since) = stats.failing_since {
                let failing = now - since;
                if failing > stall {
                    reasons.push(format!(
                        "sink {sink} ({account}/{stream}): failing for {}s: {}",
                        failing.whole_seconds(),
                        stats.last_error.unwrap_or_default()
                    ));
                }
            }
        }
        reasons
    }

    /// The metrics, in the OpenMetrics text format.
    pub fn metrics(&self, report: &StoreReport) -> String {
        let now = OffsetDateTime::now_utc();
        let seconds = |t: OffsetDateTime| t.unix_timestamp_nanos() as f64 / 1e9;
        let mut registry = Registry::with_prefix("opef");
        type Labels = Vec<(&'static str, String)>;
        let stream_labels = |account: &str, stream: &str| -> Labels {
            vec![
                ("account", account.to_owned()),
                ("stream", stream.to_owned()),
            ]
        };
        let sink_labels = |sink: &str, account: &str, stream: &str| -> Labels {
            vec![
                ("sink", sink.to_owned()),
                ("account", account.to_owned()),
                ("stream", stream.to_owned()),
            ]
        };

        let build = Family::<Labels, Gauge>::default();
        build
            .get_or_create(&vec![("version", env!("CARGO_PKG_VERSION").to_owned())])
            .set(1);
        registry.register("build_info", "The running version", build);
        let start = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
        start.set(seconds(self.started_at));
        registry.register_with_unit(
            "start_time",
            "When the daemon started (Unix time)",
            Unit::Seconds,
            start,
        );
        if let Some(rss) = resident_bytes() {
            let gauge = Gauge::<i64>::default();
            gauge.set(rss);
            registry.register_with_unit(
                "process_resident_memory",
                "Resident memory of the daemon",
                Unit::Bytes,
                gauge,
            );
        }
        if let Some(fds) = open_fds() {
            let gauge = Gauge::<i64>::default();
            gauge.set(fds);
            registry.register("process_open_fds", "Open file descriptors", gauge);
        }

        let requests = Family::<Labels, Counter>::default();
        let events = Family::<Labels, Counter>::default();
        let pages = Family::<Labels, Counter>::default();
        let wait = Family::<Labels, Counter<f64, std::sync::atomic::AtomicU64>>::default();
        let last_fetch = Family::<Labels, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
        let unhealthy = Family::<Labels, Gauge>::default();
        for ((account, stream), stats) in self.stats.streams() {
            let labels = stream_labels(&account, stream.as_str());
            // Every class from zero, so that rate() and alerts see a series before the first.
            for class in ["2xx", "4xx", "429", "5xx", "other", "error"] {
                let mut with_class = labels.clone();
                with_class.push(("class", class.to_owned()));
                requests
                    .get_or_create(&with_class)
                    .inc_by(stats.responses.get(class).copied().unwrap_or(0));
            }
            events.get_or_create(&labels).inc_by(stats.fetched_events);
            pages.get_or_create(&labels).inc_by(stats.fetched_pages);
            wait.get_or_create(&labels)
                .inc_by(stats.governor_wait.as_secs_f64());
            if let Some(at) = stats.last_success {
                last_fetch.get_or_create(&labels).set(seconds(at));
            }
            let mut with_reason = labels.clone();
            with_reason.push(("reason", stats.unhealthy_code.unwrap_or("").to_owned()));
            unhealthy
                .get_or_create(&with_reason)
                .set(i64::from(stats.unhealthy.is_some()));
        }
        registry.register(
            "api_requests",
            "Requests to the Events API by answer class (2xx, 4xx, 429, 5xx, error: none)",
            requests,
        );
        registry.register("events_fetched", "Events fetched and stored", events);
        registry.register("pages_fetched", "Pages fetched and stored", pages);
        registry.register_with_unit(
            "governor_wait",
            "Time streams waited for the account's request budget",
            Unit::Seconds,
            wait,
        );
        registry.register_with_unit(
            "last_fetch_timestamp",
            "When a page was last fetched and stored (Unix time)",
            Unit::Seconds,
            last_fetch,
        );
        registry.register(
            "stream_unhealthy",
            "1 while a stream cannot progress until an operator acts, with the reason",
            unhealthy,
        );

        let newest = Family::<Labels, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
        let lag = Family::<Labels, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
        let outbox_pages = Family::<Labels, Gauge>::default();
        let outbox_bytes = Family::<Labels, Gauge>::default();
        for stream in &report.streams {
            let labels = stream_labels(&stream.account, &stream.stream);
            if let Some(at) = stream
                .last_event_ns
                .and_then(|ns| OffsetDateTime::from_unix_timestamp_nanos(ns.into()).ok())
            {
                newest.get_or_create(&labels).set(seconds(at));
                lag.get_or_create(&labels).set((now - at).as_seconds_f64());
            }
            outbox_pages
                .get_or_create(&labels)
                .set(i64::try_from(stream.pending_pages).unwrap_or(i64::MAX));
            outbox_bytes
                .get_or_create(&labels)
                .set(i64::try_from(stream.pending_bytes).unwrap_or(i64::MAX));
        }
        registry.register_with_unit(
            "newest_event_timestamp",
            "The time of the newest event fetched (Unix time)",
            Unit::Seconds,
            newest,
        );
        registry.register_with_unit(
            "lag",
            "Now minus the time of the newest event fetched",
            Unit::Seconds,
            lag,
        );
        registry.register(
            "outbox_pages",
            "Pages in the outbox not yet delivered by every sink",
            outbox_pages,
        );
        registry.register_with_unit(
            "outbox",
            "Bytes of events in the outbox not yet delivered by every sink",
            Unit::Bytes,
            outbox_bytes,
        );
        let used = Gauge::<i64>::default();
        used.set(i64::try_from(report.used_bytes).unwrap_or(i64::MAX));
        registry.register_with_unit(
            "state_database",
            "Bytes the state database uses on disk",
            Unit::Bytes,
            used,
        );

        let delivered = Family::<Labels, Counter>::default();
        let failed = Family::<Labels, Counter>::default();
        let rejected = Family::<Labels, Counter>::default();
        let backoff = Family::<Labels, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
        let up = Family::<Labels, Gauge>::default();
        for ((sink, account, stream), stats) in self.stats.sinks() {
            let labels = sink_labels(&sink, &account, stream.as_str());
            delivered.get_or_create(&labels).inc_by(stats.delivered);
            rejected.get_or_create(&labels).inc_by(stats.rejected);
            for class in ["unreachable", "retry", "retry_after", "slow"] {
                let mut with_class = labels.clone();
                with_class.push(("class", class.to_owned()));
                failed
                    .get_or_create(&with_class)
                    .inc_by(stats.failed.get(class).copied().unwrap_or(0));
            }
            backoff
                .get_or_create(&labels)
                .set(stats.backoff.as_secs_f64());
            up.get_or_create(&labels)
                .set(i64::from(stats.failing_since.is_none()));
        }
        registry.register(
            "sink_events_delivered",
            "Events delivered by a sink",
            delivered,
        );
        registry.register(
            "sink_batches_failed",
            "Failed deliveries, each retried, by what follows (unreachable: no delivery could start, nothing read or sent; retry, retry_after, slow: an operator must act)",
            failed,
        );
        registry.register(
            "sink_events_rejected",
            "Events a sink refused for good (dead letters) since the start",
            rejected,
        );
        registry.register_with_unit(
            "sink_backoff",
            "The wait before a failing sink's next try",
            Unit::Seconds,
            backoff,
        );
        registry.register(
            "sink_up",
            "1 while a sink's last delivery succeeded (0 while it fails)",
            up,
        );
        let sink_lag = Family::<Labels, Gauge>::default();
        for sink in &self.config.sinks {
            for stream in &report.streams {
                sink_lag
                    .get_or_create(&sink_labels(&sink.name, &stream.account, &stream.stream))
                    .set(
                        i64::try_from(report.sink_lag(&sink.name, &stream.account, &stream.stream))
                            .unwrap_or(i64::MAX),
                    );
            }
        }
        registry.register(
            "sink_lag_pages",
            "Pages fetched that a sink has not delivered yet",
            sink_lag,
        );
        let dead = Family::<Labels, Gauge>::default();
        for sink in &self.config.sinks {
            for stream in &report.streams {
                let n = report.dead_letters_of(&sink.name, &stream.account, &stream.stream);
                dead.get_or_create(&sink_labels(&sink.name, &stream.account, &stream.stream))
                    .set(i64::try_from(n).unwrap_or(i64::MAX));
            }
        }
        registry.register(
            "dead_letters",
            "Dead letters kept in the state (list them with dead-letters list)",
            dead,
        );

        let expiry = Family::<Labels, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
        for (account, at) in &self.token_expiry {
            if let Some(at) = at {
                expiry
                    .get_or_create(&vec![("account", account.clone())])
                    .set(seconds(*at));
            }
        }
        registry.register_with_unit(
            "token_expiry_timestamp",
            "When the account's bearer token expires (Unix time)",
            Unit::Seconds,
            expiry,
        );

        let left = Family::<Labels, Gauge>::default();
        for (account, governor) in &self.governors {
            let (minute, hour) = governor.requests_left();
            for (window, n) in [("minute", minute), ("hour", hour)] {
                left.get_or_create(&vec![
                    ("account", account.clone()),
                    ("window", window.to_owned()),
                ])
                .set(i64::from(n));
            }
        }
        registry.register(
            "governor_requests_left",
            "Requests the account may still make in the sliding minute and hour",
            left,
        );

        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut text, &registry);
        text
    }
}

/// The daemon's resident memory, from /proc.
fn resident_bytes() -> Option<i64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: i64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// How many file descriptors the daemon has open, from /proc.
fn open_fds() -> Option<i64> {
    Some(std::fs::read_dir("/proc/self/fd").ok()?.count() as i64)
}

/// GETs `path` from an admin endpoint at `addr` (for `status` and `health`): the status and
/// the body, within `timeout`.
///
/// # Errors
///
/// Nothing answers there, or not in time.
pub async fn get(addr: SocketAddr, path: &str, timeout: Duration) -> Result<(u16, String), String> {
    use http_body_util::BodyExt as _;
    let exchange = async {
        let stream = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|err| format!("nothing answers at {addr}: {err}"))?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|err| format!("{addr}: {err}"))?;
        tokio::spawn(connection);
        let request = hyper::Request::get(path)
            .header("host", addr.to_string())
            .body(http_body_util::Empty::<Bytes>::new())
            .map_err(|err| err.to_string())?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|err| format!("{addr}{path}: {err}"))?;
        let status = response.status().as_u16();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|err| format!("{addr}{path}: {err}"))?
            .to_bytes();
        Ok((status, String::from_utf8_lossy(&body).into_owned()))
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| format!("{addr}{path}: no answer within {}s", timeout.as_secs()))?
}
