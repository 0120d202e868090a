//! The hot paths of a page's way through the daemon, one call each, for the criterion
//! micro-benchmarks in `micro-benches/` (a package of its own, so criterion is built only
//! when they run). Each function does what the daemon does with a page of 1,000 events, on
//! the simulator's events, and returns something derived from its work so that none of it
//! can be optimised away.

use std::path::Path;

use anyhow::Context as _;
use bytes::Bytes;
use time::OffsetDateTime;

use crate::api;
use crate::event::EventArray;
use crate::sink::http::format::{self, Document, HecFields};
use crate::sink::syslog::config::SyslogFormat;
use crate::sink::syslog::format::MessageSettings;
use crate::store::{OutboxPage, Store};
use crate::stream::Stream;

/// A page of the audit stream in every form the hot paths take it.
pub struct HotPage {
    /// The body of the API's answer, decoded: `{"cursor":..,"has_more":..,"items":[..]}`.
    pub body: Vec<u8>,
    /// The same body as the simulator sends it, gzip-encoded.
    pub body_gzip: Vec<u8>,
    /// The events as the poller hands them to the store.
    pub events: EventArray,
    /// The page as a sink worker hands it to a sink.
    pub outbox: OutboxPage,
}

impl HotPage {
    /// The events, each as the API sent it.
    pub fn event_slices(&self) -> Vec<&str> {
        self.events.iter().collect()
    }
}

/// A page of `n_events` audit events made by the simulator's generator.
///
/// # Errors
///
/// The simulator cannot start.
pub fn hot_page(n_events: usize) -> anyhow::Result<HotPage> {
    let pages = block_on(super::audit_pages(n_events))?;
    let items = pages.into_iter().next().unwrap_or_else(|| "[]".to_owned());
    let body =
        format!(r#"{{"cursor":"bench-cursor","has_more":true,"items":{items}}}"#).into_bytes();
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut encoder, &body).context("gzip")?;
    let body_gzip = encoder.finish().context("gzip")?;
    let events = EventArray::parse(&items).context("the simulator's page is an array")?;
    let outbox = OutboxPage {
        seq: 1,
        events: events.text().to_owned(),
        event_ends: events.ends_blob(),
        n_events: events.len() as u64,
        fetched_at: 1_764_547_200,
    };
    Ok(HotPage {
        body,
        body_gzip,
        events,
        outbox,
    })
}

/// `n_events` events of each stream from the simulator's generator, as it serves them.
///
/// # Errors
///
/// The simulator cannot start.
pub fn sample_events(n_events: usize) -> anyhow::Result<Vec<(Stream, String)>> {
    use crate::sim::{SimConfig, SimToken, Simulator};
    block_on(async {
        let mut config = SimConfig::new("127.0.0.1:0".parse().expect("a valid address"));
        config.initial_events = n_events;
        config.tokens = vec![SimToken::all("bench")];
        let sim = Simulator::start(config)
            .await
            .context("cannot start the simulator")?;
        Ok(Stream::ALL
            .into_iter()
            .flat_map(|stream| {
                sim.events(stream)
                    .into_iter()
                    .map(move |e| (stream, e.json))
            })
            .collect())
    })
}

/// Runs `future` (the simulator's set-up) to its end on a runtime of its own: the
/// micro-benchmarks and the unit tests that call these have none.
fn block_on<T>(future: impl Future<Output = anyhow::Result<T>>) -> anyhow::Result<T> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start a runtime")?
        .block_on(future)
}

/// Inflates a gzip-encoded answer, as the API client does: the decoded length.
///
/// # Errors
///
/// The body is not gzip.
pub fn gunzip(body_gzip: &[u8]) -> Result<usize, String> {
    let mut headers = http::HeaderMap::new();
    headers.insert(
        http::header::CONTENT_ENCODING,
        http::HeaderValue::from_static("gzip"),
    );
    let decoded = api::decode_body(&headers, Bytes::copy_from_slice(body_gzip), 64 << 20)?;
    Ok(decoded.len())
}

/// Parses a page's body and checks its events, as the API client does: the events read and
/// the array the poller stores.
///
/// # Errors
///
/// The body is not a page of events.
pub fn parse_page(body: &[u8]) -> Result<EventArray, String> {
    api::parse_page(body, 1000).map(|page| page.items)
}

/// The file sink's bytes for a page: one event per line.
///
/// # Errors
///
/// The page's events do not parse.
pub fn file_lines(page: &OutboxPage) -> Result<Vec<u8>, String> {
    crate::sink::file::lines(std::slice::from_ref(page)).map_err(|(_, err)| err.to_string())
}

/// Syslog messages (unframed) of a page's events in `format`, into `out`.
pub fn syslog_messages(out: &mut Vec<u8>, events: &[&str], format: SyslogFormat) {
    let settings = MessageSettings {
        format,
        facility: 10,
        severity: 6,
        stream_severity: Vec::new(),
        failed_signin_severity: None,
        hostname: "loghost".to_owned(),
        app_name: "op-events-forwarder".to_owned(),
        procid: "4242".to_owned(),
        sd_id: (format == SyslogFormat::Rfc5424).then(|| "opef@32473".to_owned()),
        bom: false,
    };
    let received = OffsetDateTime::UNIX_EPOCH;
    for event in events {
        settings.write_message(out, "bench", Stream::AuditEvents, event, received);
        out.push(b'\n');
    }
}

/// The HTTP sink's formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpFormat {
    Ndjson,
    NdjsonEnvelope,
    Json,
    SplunkHec,
    ElasticsearchIntegration,
    ElasticsearchEvent,
}

impl HttpFormat {
    pub const ALL: [HttpFormat; 6] = [
        HttpFormat::Ndjson,
        HttpFormat::NdjsonEnvelope,
        HttpFormat::Json,
        HttpFormat::SplunkHec,
        HttpFormat::ElasticsearchIntegration,
        HttpFormat::ElasticsearchEvent,
    ];

    /// The name the benchmarks print.
    pub fn name(self) -> &'static str {
        match self {
            HttpFormat::Ndjson => "ndjson",
            HttpFormat::NdjsonEnvelope => "ndjson_envelope",
            HttpFormat::Json => "json",
            HttpFormat::SplunkHec => "splunk_hec",
            HttpFormat::ElasticsearchIntegration => "elasticsearch_integration",
            HttpFormat::ElasticsearchEvent => "elasticsearch_event",
        }
    }
}

/// A request body of a page's events in `format`, into `out`.
pub fn http_body(out: &mut Vec<u8>, events: &[&str], format: HttpFormat) {
    let stream = Stream::AuditEvents;
    match format {
        HttpFormat::Ndjson => format::ndjson(out, events, "bench", stream, false),
        HttpFormat::NdjsonEnvelope => format::ndjson(out, events, "bench", stream, true),
        HttpFormat::Json => format::json_array(out, events),
        HttpFormat::SplunkHec => {
            let fields = HecFields {
                host: Some("loghost"),
                source: Some("op-events-forwarder"),
                sourcetype: format::default_sourcetype(stream),
                index: Some("security"),
            };
            for event in events {
                format::hec_event(out, event, &fields);
            }
        }
        HttpFormat::ElasticsearchIntegration | HttpFormat::ElasticsearchEvent => {
            let document = if format == HttpFormat::ElasticsearchEvent {
                Document::Event
            } else {
                Document::Integration
            };
            let index = format::integration_data_stream(stream, "default");
            for event in events {
                format::bulk_create(out, event, &index, document);
            }
        }
    }
}

/// A state database at `path` with one sink, `bench`, for the outbox benchmarks.
///
/// # Errors
///
/// The state cannot be made.
pub fn outbox(path: &Path) -> anyhow::Result<Store> {
    let store = Store::open(path)?;
    store.register_sinks(&["bench"])?;
    Ok(store)
}

/// The poller's part of a page's turn through the outbox: appends it with its cursor (one
/// transaction, synced). Returns its seq.
///
/// # Errors
///
/// The store fails.
pub fn outbox_append(store: &Store, events: &EventArray) -> anyhow::Result<u64> {
    store
        .append_page_at("bench", Stream::AuditEvents, events, "bench-cursor", None)?
        .context("a page of events gets a seq")
}

/// The sink worker's read of the next page: the events it holds.
///
/// # Errors
///
/// The store fails, or the page's events do not read.
pub fn outbox_read(store: &Store) -> anyhow::Result<usize> {
    let pages = store.pages_for("bench", "bench", Stream::AuditEvents, 1)?;
    let mut read = 0;
    for page in &pages {
        read += page.events()?.len();
    }
    Ok(read)
}

/// The sink worker's acknowledgement of the page `seq` (one transaction, synced), which
/// deletes it.
///
/// # Errors
///
/// The store fails.
pub fn outbox_ack(store: &Store, seq: u64) -> anyhow::Result<()> {
    store.ack("bench", "bench", Stream::AuditEvents, seq)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The micro-benchmarks are built only when they run: this keeps what they call working.
    #[test]
    fn every_hot_path_runs_on_a_page() {
        let page = hot_page(10).unwrap();
        assert_eq!(gunzip(&page.body_gzip).unwrap(), page.body.len());
        assert_eq!(parse_page(&page.body).unwrap(), page.events);
        let events = page.event_slices();
        assert_eq!(events.len(), 10);
        let lines = file_lines(&page.outbox).unwrap();
        assert_eq!(lines.iter().filter(|b| **b == b'\n').count(), 10);
        for format in [SyslogFormat::Rfc5424, SyslogFormat::Rfc3164] {
            let mut out = Vec::new();
            syslog_messages(&mut out, &events, format);
            assert_eq!(
                out.iter().filter(|b| **b == b'\n').count(),
                10,
                "{format:?}"
            );
        }
        for format in HttpFormat::ALL {
            let mut out = Vec::new();
            http_body(&mut out, &events, format);
            let text = String::from_utf8(out).unwrap();
            let uuid = crate::event::uuid(events[9]).unwrap();
            assert!(text.contains(&uuid), "{}", format.name());
        }
        let dir = tempfile::tempdir().unwrap();
        let store = outbox(&dir.path().join("state.db")).unwrap();
        for _ in 0..2 {
            let seq = outbox_append(&store, &page.events).unwrap();
            assert_eq!(outbox_read(&store).unwrap(), 10);
            outbox_ack(&store, seq).unwrap();
            assert_eq!(outbox_read(&store).unwrap(), 0);
        }
    }
}
