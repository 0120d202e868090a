//! `bench governor`: how close the governor runs to the API's rate limits without tripping them.
//!
//! The simulator starts in-process and enforces the limits as strict sliding windows (429 with
//! `Retry-After` beyond them); the real daemon (config parser, store, pollers, file sink) drains
//! a backlog on all three streams for the given time. The figures: requests admitted per minute,
//! as a fraction of the most the limits allow in that time, and the number of 429s.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context as _;

use crate::Daemon;
use crate::governor::Limits;
use crate::sim::{Faults, SimConfig, SimToken, Simulator, WindowLimit};
use crate::stream::Stream;

const TOKEN: &str = "bench-token";
/// Small pages: the benchmark measures requests, not bytes.
const PAGE_SIZE: u16 = 10;

/// What `bench governor` was asked to do.
#[derive(Debug, Clone)]
pub struct GovernorBenchOptions {
    pub duration: Duration,
    /// The limits the simulator enforces and the daemon is configured with.
    pub limits: Limits,
}

/// What `bench governor` measured.
#[derive(Debug, Clone, PartialEq)]
pub struct GovernorBenchReport {
    pub duration: Duration,
    pub limits: Limits,
    /// Requests the simulator admitted (any answer but 429) while the benchmark ran.
    pub admitted: u64,
    /// Requests answered 429.
    pub rate_limited: u64,
    /// The most requests the limits admit in `duration`.
    pub ceiling: f64,
}

impl GovernorBenchReport {
    pub fn per_minute(&self) -> f64 {
        self.admitted as f64 * 60.0 / self.duration.as_secs_f64()
    }

    pub fn fraction_of_ceiling(&self) -> f64 {
        self.admitted as f64 / self.ceiling
    }
}

impl std::fmt::Display for GovernorBenchReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "bench governor: {:.0} s, simulator limits {}/min and {}/h (strict sliding windows)",
            self.duration.as_secs_f64(),
            self.limits.per_minute,
            self.limits.per_hour
        )?;
        writeln!(
            f,
            "requests admitted: {} ({:.1}/min); ceiling {:.0} ({:.1}/min)",
            self.admitted,
            self.per_minute(),
            self.ceiling,
            self.ceiling * 60.0 / self.duration.as_secs_f64()
        )?;
        writeln!(
            f,
            "fraction of the ceiling: {:.4}",
            self.fraction_of_ceiling()
        )?;
        write!(f, "429 responses: {}", self.rate_limited)
    }
}

/// Runs the benchmark; the working directory (state and output) is removed afterwards.
///
/// # Errors
///
/// Fails if the simulator, the scratch directory or the daemon cannot be set up.
pub async fn governor(options: &GovernorBenchOptions) -> anyhow::Result<GovernorBenchReport> {
    let dir = std::env::temp_dir().join(format!(
        "op-events-forwarder-bench-governor-{}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let result = run_governor(options, &dir).await;
    let _ = std::fs::remove_dir_all(&dir);
    result
}

async fn run_governor(
    options: &GovernorBenchOptions,
    dir: &Path,
) -> anyhow::Result<GovernorBenchReport> {
    let ceiling = options.limits.ceiling(options.duration);
    // A backlog the daemon cannot finish: a tenth more pages than the ceiling allows.
    let pages_per_stream = (ceiling * 1.1 / Stream::ALL.len() as f64).ceil() as usize + 10;

    let mut sim_config = SimConfig::new("127.0.0.1:0".parse().expect("a valid address"));
    sim_config.initial_events = pages_per_stream * usize::from(PAGE_SIZE);
    sim_config.tokens = vec![SimToken::all(TOKEN)];
    sim_config.faults = Faults {
        rate_limits: vec![
            WindowLimit {
                window_secs: 60,
                max: options.limits.per_minute.get(),
            },
            WindowLimit {
                window_secs: 3600,
                max: options.limits.per_hour.get(),
            },
        ],
        retry_after: true,
        ..Faults::default()
    };
    let sim = Simulator::start(sim_config)
        .await
        .context("cannot start the simulator")?;
    let token_path = dir.join("token");
    std::fs::write(&token_path, TOKEN)
        .with_context(|| format!("cannot write {}", token_path.display()))?;
    let config = crate::config::from_toml_str(
        "bench",
        &bench_config(dir, &sim.base_url(), options.limits),
        &[],
    )?;
    eprintln!(
        "bench governor: draining a backlog for {} s against {}",
        options.duration.as_secs(),
        sim.base_url()
    );
    let daemon = Daemon::start(&config).await?;
    let started = Instant::now();
    tokio::time::sleep(options.duration).await;
    let records = sim.requests();
    let duration = started.elapsed();
    daemon.stop().await;
    sim.shutdown();

    let rate_limited = records.iter().filter(|r| r.status == 429).count() as u64;
    Ok(GovernorBenchReport {
        duration,
        limits: options.limits,
        admitted: records.len() as u64 - rate_limited,
        rate_limited,
        ceiling: options.limits.ceiling(duration),
    })
}

fn bench_config(dir: &Path, base_url: &str, limits: Limits) -> String {
    let dir = toml_path(dir);
    format!(
        r#"
[state]
path = "{dir}/state.db"

[[accounts]]
name = "bench"
token_file = "{dir}/token"
base_url = "{base_url}"
streams = ["auditevents", "itemusages", "signinattempts"]
start_time = "-2d"
page_size = {PAGE_SIZE}
requests_per_minute = {per_minute}
requests_per_hour = {per_hour}

[[sinks]]
name = "bench-files"
type = "file"
path = "{dir}/out/{{stream}}.ndjson"
"#,
        per_minute = limits.per_minute,
        per_hour = limits.per_hour,
    )
}

/// `path` as the inside of a TOML basic string.
pub(super) fn toml_path(path: &Path) -> String {
    PathBuf::from(path)
        .display()
        .to_string()
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_config_names_its_streams_since_its_token_is_not_a_jwt() {
        let toml = bench_config(
            Path::new("/tmp/b"),
            "http://127.0.0.1:1",
            Limits::DOCUMENTED,
        );
        let config = crate::config::from_toml_str("bench", &toml, &[]).unwrap();
        let resolved = crate::account::resolve(
            &config.accounts[0],
            "token_file",
            crate::api::jwt::decode_claims(TOKEN),
            time::OffsetDateTime::now_utc(),
        )
        .unwrap();
        assert_eq!(resolved.streams, Stream::ALL);
    }
}
