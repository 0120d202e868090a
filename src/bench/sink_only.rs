//! What the sink-only benchmarks share: realistic pages, an outbox filled with them in
//! advance, and one sink worker over it, so a benchmark times the sink and nothing upstream.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;
use tokio::sync::{Notify, watch};

use crate::config;
use crate::sim::{SimConfig, SimToken, Simulator};
use crate::sink::{Sink, SinkWorker};
use crate::stats::Stats;
use crate::store::Store;
use crate::stream::Stream;

/// The account and the sink every prepared outbox uses.
pub const ACCOUNT: &str = "bench";
pub const SINK: &str = "bench";

/// A sink worker ready to deliver an outbox of audit events, and what watches it.
pub struct PreparedSink {
    pub worker: SinkWorker,
    /// Counts what the worker delivers, fails and refuses (account and sink `bench`).
    pub stats: Arc<Stats>,
    /// Keep it until the worker is stopped: dropped, it tells the worker its poller is gone.
    pub appended: watch::Sender<u64>,
}

/// `n_events` realistic audit events from the simulator's generator, as JSON arrays of 1,000.
///
/// # Errors
///
/// The simulator cannot start.
pub async fn audit_pages(n_events: usize) -> anyhow::Result<Vec<String>> {
    let mut sim_config = SimConfig::new("127.0.0.1:0".parse().expect("a valid address"));
    sim_config.initial_events = n_events;
    sim_config.tokens = vec![SimToken::all(ACCOUNT)];
    let sim = Simulator::start(sim_config)
        .await
        .context("cannot start the simulator")?;
    let events = sim.events(Stream::AuditEvents);
    Ok(events
        .chunks(1000)
        .map(|chunk| {
            let jsons: Vec<&str> = chunk.iter().map(|e| e.json.as_str()).collect();
            format!("[{}]", jsons.join(","))
        })
        .collect())
}

/// A fresh state at `state` holding `pages` (JSON arrays of events) of the audit stream, and
/// a worker of the sink `sink_toml` describes (one `[[sinks]]` table named `bench`) over it.
///
/// # Errors
///
/// The sink's config is not valid, or the state cannot be made.
pub fn prepared_sink(
    state: &Path,
    sink_toml: &str,
    pages: &[String],
) -> anyhow::Result<PreparedSink> {
    let toml = format!(
        "[state]\npath = \"{}\"\n\n[[accounts]]\nname = \"{ACCOUNT}\"\ntoken_env = \"T\"\n\
         base_url = \"https://events.1password.com\"\n\n{sink_toml}",
        state.display()
    );
    let config = config::from_toml_str("bench.toml", &toml, &[])?;
    let store = Store::open(&config.state.path)?;
    store.register_sinks(&[SINK])?;
    for (index, page) in pages.iter().enumerate() {
        let n = serde_json::from_str::<Vec<&serde_json::value::RawValue>>(page)
            .context("a page is not a JSON array")?
            .len();
        store.append_page(
            ACCOUNT,
            Stream::AuditEvents,
            page,
            n as u64,
            &format!("cursor-{index}"),
        )?;
    }
    let stats = Arc::new(Stats::default());
    let (appended, _) = watch::channel(0u64);
    let sink = config.sinks.first().context("no [[sinks]] table")?;
    let worker = SinkWorker {
        sink: Arc::new(Sink::from_config(sink, Some(&store))?),
        account: ACCOUNT.to_owned(),
        stream: Stream::AuditEvents,
        store: store.clone(),
        appended: appended.subscribe(),
        acked: Arc::new(Notify::new()),
        stats: Arc::clone(&stats),
        liveness: Arc::default(),
        reloaded: watch::channel(0u64).1,
    };
    Ok(PreparedSink {
        worker,
        stats,
        appended,
    })
}
