//! `demo`: the simulator and the real daemon together, then proof that everything arrived.
//!
//! The simulator starts in-process on a free loopback port with a backlog of events; the
//! daemon runs with its usual config parser, store, pollers and a file sink into the output
//! directory. When every generated event is delivered (or on Ctrl-C with `--follow`), the
//! output files are read back and checked event by event against what the simulator served.

use std::collections::HashMap;
use std::io::{IsTerminal as _, Write as _};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use tokio_util::sync::CancellationToken;

use crate::Daemon;
use crate::sim::{SimConfig, SimToken, Simulator};
use crate::stream::Stream;

const ACCOUNT: &str = "demo";
const SINK: &str = "demo-files";
const TOKEN: &str = "demo-token";
const STATE_FILE: &str = "state.db";
const TOKEN_FILE: &str = "token";
/// How often the progress line is printed when stderr is not a terminal.
const PLAIN_PROGRESS_EVERY: Duration = Duration::from_secs(5);

/// What `demo` was asked to do.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Events per stream the simulator starts with.
    pub events: usize,
    /// Where the NDJSON files (and the demo's state) go.
    pub out: PathBuf,
    /// Keep running with live events until Ctrl-C.
    pub follow: bool,
    /// Live events per stream per second with `follow`.
    pub rate: f64,
    pub seed: u64,
}

/// The outcome for one stream, from the output file read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamSummary {
    pub stream: Stream,
    pub generated: usize,
    /// Lines in the output file.
    pub delivered: usize,
    /// Generated events not in the file.
    pub missing: usize,
    /// Events found more than once.
    pub duplicated: usize,
    /// Lines that differ from the bytes the simulator served (or are not events it made).
    pub altered: usize,
}

impl StreamSummary {
    pub fn complete(&self) -> bool {
        self.missing == 0 && self.duplicated == 0 && self.altered == 0
    }
}

/// Runs the demo until every generated event is delivered (or `stop` with `follow`), then
/// checks the output. Returns one summary per stream.
pub async fn run(
    options: &DemoOptions,
    stop: CancellationToken,
) -> anyhow::Result<Vec<StreamSummary>> {
    prepare_out_dir(&options.out)?;

    let mut sim_config = SimConfig::new("127.0.0.1:0".parse().expect("a valid address"));
    sim_config.seed = options.seed;
    sim_config.initial_events = options.events;
    sim_config.rate_per_sec = if options.follow { options.rate } else { 0.0 };
    sim_config.tokens = vec![SimToken::all(TOKEN)];
    let sim = Simulator::start(sim_config)
        .await
        .context("cannot start the simulator")?;
    // A JWT like a real one: the daemon reads the streams from its features.
    let token = sim.mint_token(&crate::sim::jwt::MintClaims {
        audience: sim.audience(),
        features: Stream::ALL.to_vec(),
        issued_at: time::OffsetDateTime::now_utc(),
        expires_at: Some(time::OffsetDateTime::now_utc() + time::Duration::days(30)),
    });
    let token_path = options.out.join(TOKEN_FILE);
    std::fs::write(&token_path, token)
        .with_context(|| format!("cannot write {}", token_path.display()))?;

    let config =
        crate::config::from_toml_str("demo", &demo_config(&options.out, &sim.base_url()), &[])?;
    eprintln!(
        "demo: simulator at {} with {} events per stream; forwarding into {}",
        sim.base_url(),
        options.events,
        options.out.display()
    );
    let started = std::time::Instant::now();
    let daemon = Daemon::start(&config).await?;

    // A live line on a terminal; elsewhere (a pipe, a file, CI) a plain line every 5 s, so
    // carriage returns never run together into one line.
    let terminal = std::io::stderr().is_terminal();
    let mut ticker = tokio::time::interval(Duration::from_millis(500));
    let mut last_plain: Option<std::time::Instant> = None;
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = ticker.tick() => {}
        }
        let mut done = true;
        let mut line = format!("{:>6.1}s", started.elapsed().as_secs_f64());
        for stream in Stream::ALL {
            let generated = sim.generated(stream) as u64;
            let delivered = daemon.stats().delivered(SINK, ACCOUNT, stream);
            done &= delivered >= generated;
            line.push_str(&format!("  {stream} {delivered}/{generated}"));
            if let Some(err) = daemon.stats().stream(ACCOUNT, stream).last_error {
                line.push_str(&format!(" (last error: {err})"));
            }
        }
        if terminal {
            eprint!("\r{line}");
            let _ = std::io::stderr().flush();
        } else if done || last_plain.is_none_or(|at| at.elapsed() >= PLAIN_PROGRESS_EVERY) {
            eprintln!("{line}");
            last_plain = Some(std::time::Instant::now());
        }
        if done && !options.follow {
            break;
        }
    }
    if terminal {
        eprintln!();
    }
    let elapsed = started.elapsed();
    daemon.stop().await;
    sim.shutdown();

    let summaries = Stream::ALL
        .into_iter()
        .map(|stream| {
            let path = options.out.join(format!("{stream}.ndjson"));
            check_output(&sim, stream, &path)
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    print_summary(&summaries, elapsed);
    Ok(summaries)
}

/// The daemon's config for the demo, written as a user would write it.
fn demo_config(out: &Path, base_url: &str) -> String {
    let out = out
        .display()
        .to_string()
        .replace('\\', "\\\\")
        .replace('"', "\\\"");
    format!(
        r#"
[state]
path = "{out}/{STATE_FILE}"

[[accounts]]
name = "{ACCOUNT}"
token_file = "{out}/{TOKEN_FILE}"
base_url = "{base_url}"
start_time = "-2d"
page_size = 1000
poll_interval_secs = 1

[[sinks]]
name = "{SINK}"
type = "file"
path = "{out}/{{stream}}.ndjson"
"#
    )
}

/// Creates the output directory and removes what an earlier demo left there (only the files
/// the demo itself writes), since a new simulator starts a new history.
fn prepare_out_dir(out: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let mut names: Vec<String> = Stream::ALL.iter().map(|s| format!("{s}.ndjson")).collect();
    for suffix in ["", "-wal", "-shm"] {
        names.push(format!("{STATE_FILE}{suffix}"));
    }
    names.push(TOKEN_FILE.to_owned());
    for name in names {
        let path = out.join(name);
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
            Err(err) => {
                return Err(err).with_context(|| format!("cannot remove {}", path.display()));
            }
        }
    }
    Ok(())
}

/// Reads a stream's output file back and compares it, event by event, with the simulator.
pub fn check_output(sim: &Simulator, stream: Stream, path: &Path) -> anyhow::Result<StreamSummary> {
    let served: HashMap<String, String> = sim
        .events(stream)
        .into_iter()
        .map(|event| (event.uuid, event.json))
        .collect();
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(err) => return Err(err).with_context(|| format!("cannot read {}", path.display())),
    };
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut altered = 0;
    for line in text.lines() {
        let uuid = serde_json::from_str::<serde_json::Value>(line)
            .ok()
            .and_then(|event| {
                event
                    .get("uuid")
                    .and_then(|u| u.as_str())
                    .map(str::to_owned)
            });
        match uuid {
            Some(uuid) if served.get(&uuid).is_some_and(|json| json == line) => {
                *seen.entry(uuid).or_default() += 1;
            }
            _ => altered += 1,
        }
    }
    Ok(StreamSummary {
        stream,
        generated: served.len(),
        delivered: text.lines().count(),
        missing: served
            .keys()
            .filter(|uuid| !seen.contains_key(*uuid))
            .count(),
        duplicated: seen.values().filter(|n| **n > 1).count(),
        altered,
    })
}

fn print_summary(summaries: &[StreamSummary], elapsed: Duration) {
    println!(
        "{:<16} {:>10} {:>10} {:>8} {:>11} {:>8}",
        "stream", "generated", "delivered", "missing", "duplicated", "altered"
    );
    for s in summaries {
        println!(
            "{:<16} {:>10} {:>10} {:>8} {:>11} {:>8}",
            s.stream.as_str(),
            s.generated,
            s.delivered,
            s.missing,
            s.duplicated,
            s.altered
        );
    }
    let total: usize = summaries.iter().map(|s| s.delivered).sum();
    let verdict = if summaries.iter().all(StreamSummary::complete) {
        "every generated event delivered exactly once, byte-identical"
    } else {
        "INCOMPLETE: see the table above"
    };
    println!("{total} events in {:.1}s: {verdict}", elapsed.as_secs_f64());
}
