//! Benchmark of the HTTP collector sink into an in-process receiver: events per second for
//! NDJSON, a JSON array, Splunk HEC and Elasticsearch `_bulk`, each with gzip off and on, and
//! the CPU time of the sink and of the receiver per 1,000 events.
//!
//! Run: `cargo run --release --example bench_http -- [EVENTS]` (default 200,000 per row).
//!
//! What is measured is the daemon's delivery path, in this process: realistic events (from
//! the simulator's generator) are put into a fresh SQLite outbox in pages of 1,000, then one
//! sink worker reads them from the outbox, builds the format's request bodies (gzipped when
//! `compression = "gzip"`), POSTs them over one pooled HTTP/1.1 connection, reads the answers
//! and acknowledges the events in the store. The sink's settings are the defaults: requests of
//! up to 1,000 events (`max_events`), one in flight (`concurrency`), HEC without indexer
//! acknowledgement. The clock runs from the worker's start until every event is acknowledged.
//!
//! The receiver answers as the real collector would: any 200 for NDJSON and JSON; HEC's
//! `{"text":"Success","code":0}` after checking the `Splunk` token; `_bulk`'s
//! `{"took":..,"errors":false,"items":[..]}` with one item per action line. It decodes gzip
//! bodies, parses every event, and counts them; the benchmark asserts that it counted every
//! event put in. It runs in this process on its own OS thread with a current-thread tokio
//! runtime, so its CPU is part of the process's: the process's CPU time (user + system, from
//! `/proc/self/stat`) and the receiver thread's (from `/proc/self/task/<tid>/stat`) are read
//! over the same span, and the sink's CPU is the difference. The generator is left out.
//! Both are counted in clock ticks (10 ms), which is close enough over runs of seconds.

use std::convert::Infallible;
use std::io::Read as _;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use op_events_forwarder::bench::{audit_pages, own_cpu_time, prepared_sink, thread_cpu_time};
use op_events_forwarder::stream::Stream;
use serde::Deserialize;
use serde::de::IgnoredAny;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

/// The HEC token, in the variable the sink's `token_env` names.
const HEC_TOKEN_ENV: &str = "BENCH_HEC_TOKEN";
const HEC_TOKEN: &str = "8a3c2f4e-bench-hec-token";
/// How long one row may take before the benchmark gives up.
const ROW_LIMIT: Duration = Duration::from_secs(600);

fn main() {
    let n_events: usize = std::env::args()
        .nth(1)
        .map(|arg| arg.parse().expect("EVENTS is a number"))
        .unwrap_or(200_000);
    // SAFETY: no other thread runs yet.
    unsafe { std::env::set_var(HEC_TOKEN_ENV, HEC_TOKEN) };
    // The sink's warnings and errors (a failed delivery says why), on stderr.
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("warn"))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let receiver = Receiver::start();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(bench(n_events, &receiver));
    drop(runtime);
    receiver.stop();
}

async fn bench(n_events: usize, receiver: &Receiver) {
    let dir = tempfile::tempdir().unwrap();
    let pages = audit_pages(n_events).await.expect("the simulator's events");
    let event_bytes: usize = pages.iter().map(String::len).sum();
    println!(
        "{n_events} audit events in pages of 1,000, {:.0} bytes each on average; requests of \
         1,000 events, one in flight, one HTTP/1.1 connection",
        event_bytes as f64 / n_events as f64
    );
    println!(
        "{:<14} {:>5} {:>8} {:>8} {:>10} {:>14} {:>14} {:>10} {:>10}",
        "format",
        "gzip",
        "events",
        "seconds",
        "events/s",
        "sink CPU ms/1k",
        "recv CPU ms/1k",
        "body B/ev",
        "wire B/ev"
    );
    let port = receiver.port;
    for (format, url, extra) in [
        ("ndjson", format!("http://127.0.0.1:{port}/ndjson"), ""),
        ("json", format!("http://127.0.0.1:{port}/json"), ""),
        (
            "splunk_hec",
            format!("http://127.0.0.1:{port}"),
            "token_env = \"BENCH_HEC_TOKEN\"\n",
        ),
        ("elasticsearch", format!("http://127.0.0.1:{port}"), ""),
    ] {
        for gzip in [false, true] {
            let compression = if gzip { "gzip" } else { "none" };
            let sink_toml = format!(
                "[[sinks]]\nname = \"bench\"\ntype = \"http\"\nurl = \"{url}\"\n\
                 format = \"{format}\"\ncompression = \"{compression}\"\n{extra}"
            );
            let label = format!("{format}-{compression}");
            receiver.counts.reset();
            let run = run_once(dir.path(), &label, &sink_toml, &pages, n_events, receiver).await;
            let counts = &receiver.counts;
            let refused = counts.refused.load(Ordering::Relaxed);
            let received = counts.events.load(Ordering::Relaxed);
            assert_eq!(
                refused, 0,
                "{label}: the receiver refused {refused} requests"
            );
            assert_eq!(
                received, n_events as u64,
                "{label}: the receiver counted {received} of {n_events} events"
            );
            let per_1k = |cpu: Duration| cpu.as_secs_f64() * 1000.0 / (n_events as f64 / 1000.0);
            let per_event =
                |bytes: &AtomicU64| bytes.load(Ordering::Relaxed) as f64 / n_events as f64;
            println!(
                "{format:<14} {:>5} {n_events:>8} {:>8.2} {:>10.0} {:>14.1} {:>14.1} {:>10.0} {:>10.0}",
                if gzip { "on" } else { "off" },
                run.wall.as_secs_f64(),
                n_events as f64 / run.wall.as_secs_f64(),
                per_1k(run.process_cpu.saturating_sub(run.receiver_cpu)),
                per_1k(run.receiver_cpu),
                per_event(&counts.body_bytes),
                per_event(&counts.wire_bytes),
            );
        }
    }
}

struct Run {
    wall: Duration,
    process_cpu: Duration,
    receiver_cpu: Duration,
}

async fn run_once(
    dir: &Path,
    label: &str,
    sink_toml: &str,
    pages: &[String],
    n_events: usize,
    receiver: &Receiver,
) -> Run {
    let prepared = prepared_sink(&dir.join(format!("{label}.db")), sink_toml, pages)
        .expect("the benchmark's sink and state");
    let stats = Arc::clone(&prepared.stats);
    let shutdown = CancellationToken::new();
    let mut changes = stats.subscribe();
    let cpu_before = process_cpu();
    let receiver_before = receiver.cpu();
    let started = Instant::now();
    let task = tokio::spawn(prepared.worker.run(shutdown.clone()));
    while stats.delivered("bench", "bench", Stream::AuditEvents) < n_events as u64 {
        let failed = stats.failed_deliveries("bench", "bench", Stream::AuditEvents);
        let rejected = stats.rejected("bench", "bench", Stream::AuditEvents);
        assert!(
            failed == 0 && rejected == 0,
            "{label}: {failed} failed deliveries, {rejected} events refused (the sink's WARN or \
             ERROR above says why)"
        );
        tokio::time::timeout(
            ROW_LIMIT.saturating_sub(started.elapsed()),
            changes.changed(),
        )
        .await
        .unwrap_or_else(|_| {
            panic!(
                "{label}: {} of {n_events} events delivered after {}s",
                stats.delivered("bench", "bench", Stream::AuditEvents),
                ROW_LIMIT.as_secs()
            )
        })
        .unwrap();
    }
    let wall = started.elapsed();
    let process_cpu = process_cpu() - cpu_before;
    let receiver_cpu = receiver.cpu() - receiver_before;
    shutdown.cancel();
    task.await.unwrap();
    drop(prepared.appended);
    Run {
        wall,
        process_cpu,
        receiver_cpu,
    }
}

/// User plus system CPU time of this process.
fn process_cpu() -> Duration {
    own_cpu_time().expect("getrusage").total()
}

/// The collector: an HTTP/1.1 server on 127.0.0.1 on a thread of its own, which serves
/// `/ndjson`, `/json`, `/services/collector/event` and `/_bulk`.
struct Receiver {
    port: u16,
    /// The thread's id, for its CPU time in /proc.
    tid: u32,
    counts: Arc<Counts>,
    stop: oneshot::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

/// What the receiver took since the last reset.
#[derive(Default)]
struct Counts {
    /// Events parsed out of the requests answered with success.
    events: AtomicU64,
    /// Request bodies as they came (gzipped or not) and once decoded.
    wire_bytes: AtomicU64,
    body_bytes: AtomicU64,
    /// Requests answered with an error (bad token, bad body).
    refused: AtomicU64,
}

impl Counts {
    fn reset(&self) {
        for counter in [
            &self.events,
            &self.wire_bytes,
            &self.body_bytes,
            &self.refused,
        ] {
            counter.store(0, Ordering::Relaxed);
        }
    }
}

impl Receiver {
    fn start() -> Receiver {
        let counts = Arc::new(Counts::default());
        let (ready, started) = std::sync::mpsc::channel();
        let (stop, stopped) = oneshot::channel::<()>();
        let thread_counts = Arc::clone(&counts);
        let thread = std::thread::Builder::new()
            .name("receiver".to_owned())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                runtime.block_on(serve(thread_counts, ready, stopped));
            })
            .unwrap();
        let (port, tid) = started.recv().unwrap();
        Receiver {
            port,
            tid,
            counts,
            stop,
            thread,
        }
    }

    /// User plus system CPU time of the receiver's thread.
    fn cpu(&self) -> Duration {
        thread_cpu_time(self.tid)
            .expect("the receiver thread's /proc stat")
            .total()
    }

    fn stop(self) {
        let _ = self.stop.send(());
        self.thread.join().unwrap();
    }
}

async fn serve(
    counts: Arc<Counts>,
    ready: std::sync::mpsc::Sender<(u16, u32)>,
    mut stopped: oneshot::Receiver<()>,
) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    // This thread's id: the first field of its own stat.
    let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap();
    let tid = stat.split(' ').next().unwrap().parse().unwrap();
    ready
        .send((listener.local_addr().unwrap().port(), tid))
        .unwrap();
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => accepted.unwrap().0,
            _ = &mut stopped => return,
        };
        stream.set_nodelay(true).unwrap();
        let counts = Arc::clone(&counts);
        tokio::spawn(async move {
            let service = service_fn(move |request| {
                let counts = Arc::clone(&counts);
                async move { Ok::<_, Infallible>(answer(&counts, request).await) }
            });
            // A connection the sink closes (its client dropped after a row) ends here.
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// Reads one request and answers it as the collector its path names would.
async fn answer(counts: &Counts, request: Request<Incoming>) -> Response<Full<Bytes>> {
    let path = request.uri().path().to_owned();
    let header = |name: http::header::HeaderName| {
        request
            .headers()
            .get(name)
            .and_then(|value| value.to_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    let gzip = header(http::header::CONTENT_ENCODING) == "gzip";
    let authorization = header(http::header::AUTHORIZATION);
    let wire = match request.into_body().collect().await {
        Ok(body) => body.to_bytes(),
        Err(err) => return refuse(counts, 400, format!("cannot read the body: {err}")),
    };
    let body = if gzip {
        let mut decoded = Vec::with_capacity(wire.len() * 6);
        if let Err(err) = flate2::read::GzDecoder::new(&wire[..]).read_to_end(&mut decoded) {
            return refuse(counts, 400, format!("not gzip: {err}"));
        }
        Bytes::from(decoded)
    } else {
        wire.clone()
    };
    let taken = match path.as_str() {
        "/ndjson" => ndjson(&body).map(|n| (n, Bytes::new())),
        "/json" => serde_json::from_slice::<Vec<IgnoredAny>>(&body)
            .map(|events| (events.len(), Bytes::new()))
            .map_err(|err| err.to_string()),
        "/services/collector/event" => {
            if authorization != format!("Splunk {HEC_TOKEN}") {
                return refuse(
                    counts,
                    401,
                    r#"{"text":"Invalid authorization","code":3}"#.to_owned(),
                );
            }
            hec(&body)
        }
        "/_bulk" => bulk(&body),
        _ => Err(format!("no such path: {path}")),
    };
    match taken {
        Ok((n, answer)) => {
            counts.events.fetch_add(n as u64, Ordering::Relaxed);
            counts
                .wire_bytes
                .fetch_add(wire.len() as u64, Ordering::Relaxed);
            counts
                .body_bytes
                .fetch_add(body.len() as u64, Ordering::Relaxed);
            Response::builder()
                .header(http::header::CONTENT_TYPE, "application/json")
                .body(Full::new(answer))
                .unwrap()
        }
        Err(why) => refuse(counts, 400, why),
    }
}

fn refuse(counts: &Counts, status: u16, why: String) -> Response<Full<Bytes>> {
    counts.refused.fetch_add(1, Ordering::Relaxed);
    eprintln!("receiver: HTTP {status}: {why}");
    Response::builder()
        .status(status)
        .body(Full::new(Bytes::from(why)))
        .unwrap()
}

/// One JSON value per line.
fn ndjson(body: &[u8]) -> Result<usize, String> {
    if !body.ends_with(b"\n") {
        return Err("the last line has no line break".to_owned());
    }
    let mut n = 0;
    for line in body.split(|&b| b == b'\n').filter(|line| !line.is_empty()) {
        serde_json::from_slice::<IgnoredAny>(line).map_err(|err| format!("line {n}: {err}"))?;
        n += 1;
    }
    Ok(n)
}

/// HEC events, one JSON object after another, each with an `event`; HEC's answer.
fn hec(body: &[u8]) -> Result<(usize, Bytes), String> {
    #[derive(Deserialize)]
    struct HecEvent {
        #[serde(rename = "event")]
        _event: IgnoredAny,
    }
    let mut n = 0;
    for event in serde_json::Deserializer::from_slice(body).into_iter::<HecEvent>() {
        event.map_err(|_| {
            format!(r#"{{"text":"Invalid data format","code":6,"invalid-event-number":{n}}}"#)
        })?;
        n += 1;
    }
    if n == 0 {
        return Err(r#"{"text":"No data","code":5}"#.to_owned());
    }
    Ok((n, Bytes::from_static(br#"{"text":"Success","code":0}"#)))
}

/// `_bulk` creates: an action line and a document line each; the answer has an item for each
/// action, as Elasticsearch 8 writes them.
fn bulk(body: &[u8]) -> Result<(usize, Bytes), String> {
    #[derive(Deserialize)]
    struct Action {
        create: Meta,
    }
    #[derive(Deserialize)]
    struct Meta {
        #[serde(rename = "_index")]
        index: String,
        #[serde(rename = "_id")]
        id: Option<String>,
    }
    let mut lines = body.split(|&b| b == b'\n').filter(|line| !line.is_empty());
    let mut answer = Vec::with_capacity(body.len() / 4);
    answer.extend_from_slice(br#"{"took":1,"errors":false,"items":["#);
    let mut n = 0;
    while let Some(action) = lines.next() {
        let action: Action =
            serde_json::from_slice(action).map_err(|err| format!("action {n}: {err}"))?;
        let document = lines
            .next()
            .ok_or_else(|| format!("action {n} has no document"))?;
        serde_json::from_slice::<IgnoredAny>(document)
            .map_err(|err| format!("document {n}: {err}"))?;
        if n > 0 {
            answer.push(b',');
        }
        answer.extend_from_slice(br#"{"create":{"_index":"#);
        serde_json::to_writer(&mut answer, &action.create.index).unwrap();
        answer.extend_from_slice(br#","_id":"#);
        serde_json::to_writer(&mut answer, &action.create.id.unwrap_or_default()).unwrap();
        answer.extend_from_slice(
            format!(
                r#","_version":1,"result":"created","_shards":{{"total":2,"successful":1,"failed":0}},"_seq_no":{n},"_primary_term":1,"status":201}}}}"#
            )
            .as_bytes(),
        );
        n += 1;
    }
    answer.extend_from_slice(b"]}");
    Ok((n, Bytes::from(answer)))
}
