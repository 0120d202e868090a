//! `bench pipeline`: the whole daemon, end to end, as a separate process, so that its CPU
//! time and memory are its own.
//!
//! The simulator starts in this process over HTTPS with a backlog on the three cursor
//! streams (and, with a live load, new events arriving at a steady rate). The daemon is this
//! very binary run again (`run --config <file>`) with one sink: the file sink, an HTTP sink
//! into a receiver in this process, or an HTTP sink to a port where nothing listens, so that
//! every event stays in the outbox. Its admin endpoint's `/metrics`, polled every 100 ms
//! (`--poll-ms`), says
//! when every event is delivered (or, for the sink that is down, fetched); then its CPU time
//! and peak RSS are read from `/proc` while it still runs, and it is stopped with SIGTERM.
//!
//! With a live load the daemon then runs on for a window, and its CPU over that window is
//! reported as a share of one core. `/metrics` is not polled during that window, since each
//! scrape builds a report from the state database and would be counted as the daemon's work.
//!
//! With the sink that is down, a backlog and no live load, the daemon is then started again
//! on the outbox it filled, its sink still down, and its peak RSS over a window
//! (`--hold-secs`) says what holding the backlog costs, apart from fetching it. It is scraped
//! once there, when it first answers, as Prometheus would.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::str::FromStr;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

use super::governor::toml_path;
use super::procfs::{self, CpuTime};
use super::receiver::Receiver;
use crate::account::config::{REQUESTS_PER_HOUR_MAX, REQUESTS_PER_MINUTE_MAX};
use crate::governor::Limits;
use crate::sim::{Faults, SimConfig, Simulator};
use crate::stream::Stream;

const ACCOUNT: &str = "bench";
const SINK: &str = "bench";
/// The most the API serves in one page.
const PAGE_SIZE: u16 = 1000;
/// How often `/metrics` is read while the backlog drains, unless told otherwise.
pub const POLL_EVERY_DEFAULT: Duration = Duration::from_millis(100);
/// How long one scrape of `/metrics` may take.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(5);
/// The benchmark gives up when the count has not moved for this long.
const STALL_LIMIT: Duration = Duration::from_secs(60);
/// How long the daemon has to exit after SIGTERM before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(30);
/// The outbox bound: far above any backlog the benchmark generates, so it never holds
/// the pollers back.
const MAX_OUTBOX_BYTES: u64 = 1 << 36;
/// How long the daemon started again on a full outbox (sink down) is watched, unless told
/// otherwise.
pub const HOLD_WINDOW_DEFAULT: Duration = Duration::from_secs(10);
/// Lines of the daemon's log quoted in an error.
const LOG_TAIL_LINES: usize = 20;

/// Where the daemon delivers in `bench pipeline`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PipelineSink {
    /// The file sink, into the scratch directory (it fsyncs before each acknowledgement).
    File,
    /// An NDJSON HTTP sink into a receiver in the bench process that answers 200.
    Http,
    /// An HTTP sink to a loopback port where nothing listens: every event stays pending in
    /// the outbox, and the run ends when every event is fetched.
    Down,
}

impl PipelineSink {
    /// The name on the command line and in the report.
    pub fn as_str(self) -> &'static str {
        match self {
            PipelineSink::File => "file",
            PipelineSink::Http => "http",
            PipelineSink::Down => "down",
        }
    }

    /// What the run counts: events delivered, or for a sink that is down, fetched.
    fn counted(self) -> &'static str {
        match self {
            PipelineSink::Down => "fetched",
            PipelineSink::File | PipelineSink::Http => "delivered",
        }
    }
}

impl FromStr for PipelineSink {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "file" => Ok(PipelineSink::File),
            "http" => Ok(PipelineSink::Http),
            "down" => Ok(PipelineSink::Down),
            other => Err(format!(
                "unknown sink \"{other}\" (expected file, http or down)"
            )),
        }
    }
}

/// New events arriving while the daemon runs, and the window measured after the backlog.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LiveLoad {
    /// Events per second over the three streams together (a third each).
    pub events_per_sec: f64,
    /// How long the daemon runs, measured, once the backlog is done.
    pub window: Duration,
}

/// What `bench pipeline` was asked to do.
#[derive(Debug, Clone)]
pub struct PipelineBenchOptions {
    /// The backlog, in total over the three streams.
    pub events: usize,
    pub sink: PipelineSink,
    /// The simulator enforces the documented limits and the daemon keeps to them; otherwise
    /// the simulator has no limits and the daemon's are the most its config allows.
    pub governed: bool,
    pub live: Option<LiveLoad>,
    /// How often `/metrics` is read while the backlog drains. Each scrape costs the daemon a
    /// pass over its outbox, and the figure of seconds is only as fine as this.
    pub poll_every: Duration,
    /// [`PipelineSink::Down`] without a live load: how long the daemon started again on the
    /// outbox is watched.
    pub hold: Duration,
    /// The daemon's binary, run as `<daemon> run --config <file>`.
    pub daemon: PathBuf,
}

/// What `bench pipeline` measured.
#[derive(Debug, Clone, PartialEq)]
pub struct PipelineBenchReport {
    pub sink: PipelineSink,
    pub governed: bool,
    /// The daemon's request limits.
    pub limits: Limits,
    /// Events in the backlog.
    pub events: u64,
    /// Events delivered (fetched, for [`PipelineSink::Down`]) when the backlog was done.
    pub counted: u64,
    /// From the daemon's spawn to the scrape that found the backlog done.
    pub elapsed: Duration,
    /// How often `/metrics` was read until then.
    pub poll_every: Duration,
    /// The daemon's CPU time from its start until then.
    pub daemon_cpu: CpuTime,
    /// The daemon's peak RSS (VmHWM) until then, in bytes.
    pub daemon_peak_rss: u64,
    /// The bench process's CPU time (the simulator, the receiver, the polling) over the same span.
    pub bench_cpu: CpuTime,
    /// [`PipelineSink::Http`]: the lines the receiver counted.
    pub received: Option<u64>,
    /// [`PipelineSink::File`] without a live load: the output files read back and checked.
    pub files_checked: Option<usize>,
    pub steady: Option<SteadyReport>,
    /// [`PipelineSink::Down`] without a live load: the daemon started again on the outbox.
    pub held: Option<HeldReport>,
}

/// The daemon started again on the outbox the first run filled, its sink still down.
#[derive(Debug, Clone, PartialEq)]
pub struct HeldReport {
    /// The outbox when the daemon first answered `/metrics`.
    pub pending_pages: u64,
    pub pending_bytes: u64,
    /// From the daemon's spawn to the end of the window.
    pub elapsed: Duration,
    pub daemon_cpu: CpuTime,
    /// The daemon's peak RSS (VmHWM) over its whole second run, in bytes.
    pub daemon_peak_rss: u64,
}

/// The window after the backlog, with a live load.
#[derive(Debug, Clone, PartialEq)]
pub struct SteadyReport {
    pub load: LiveLoad,
    /// The window as measured.
    pub elapsed: Duration,
    /// Events the simulator generated during the window.
    pub generated: u64,
    /// Events delivered (or fetched) during the window.
    pub counted: u64,
    /// Events generated but not yet delivered (or fetched) at the end of the window.
    pub behind: u64,
    pub daemon_cpu: CpuTime,
    /// The daemon's peak RSS over its whole run, in bytes.
    pub daemon_peak_rss: u64,
    pub bench_cpu: CpuTime,
}

impl PipelineBenchReport {
    pub fn events_per_sec(&self) -> f64 {
        self.counted as f64 / self.elapsed.as_secs_f64()
    }
}

impl std::fmt::Display for PipelineBenchReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let regime = if self.governed {
            "governed"
        } else {
            "ungoverned"
        };
        writeln!(
            f,
            "bench pipeline: {} sink, {} events over 3 streams, page size {PAGE_SIZE}, \
             {regime} (daemon limits {}/min and {}/h), simulator over HTTPS",
            self.sink.as_str(),
            self.events,
            self.limits.per_minute,
            self.limits.per_hour
        )?;
        writeln!(
            f,
            "events {}: {} of {}",
            self.sink.counted(),
            self.counted,
            self.events
        )?;
        writeln!(
            f,
            "seconds: {:.3} (daemon spawn to the last one {}, /metrics read every {} ms)",
            self.elapsed.as_secs_f64(),
            self.sink.counted(),
            self.poll_every.as_millis()
        )?;
        writeln!(f, "events/s: {:.0}", self.events_per_sec())?;
        writeln!(
            f,
            "daemon CPU µs/event: {}",
            micros_per_event(self.daemon_cpu, self.counted)
        )?;
        writeln!(f, "daemon peak RSS: {}", mib(self.daemon_peak_rss))?;
        write!(
            f,
            "bench process CPU µs/event: {} (simulator{})",
            micros_per_event(self.bench_cpu, self.counted),
            if self.sink == PipelineSink::Http {
                " and receiver"
            } else {
                ""
            }
        )?;
        if let Some(received) = self.received {
            write!(f, "\nreceiver lines: {received}")?;
        }
        if let Some(files) = self.files_checked {
            write!(
                f,
                "\noutput check: every generated uuid exactly once, byte-identical ({files} files)"
            )?;
        }
        if let Some(steady) = &self.steady {
            write!(f, "\n{steady}")?;
        }
        if let Some(held) = &self.held {
            write!(f, "\n{held}")?;
        }
        Ok(())
    }
}

impl std::fmt::Display for SteadyReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let secs = self.elapsed.as_secs_f64();
        writeln!(
            f,
            "steady window: {secs:.1} s at {} events/s in total ({:.1} per stream)",
            self.load.events_per_sec,
            self.load.events_per_sec / Stream::ALL.len() as f64
        )?;
        writeln!(
            f,
            "steady events: {} generated, {} delivered or fetched ({:.0}/s), {} behind at the end",
            self.generated,
            self.counted,
            self.counted as f64 / secs,
            self.behind
        )?;
        writeln!(
            f,
            "steady daemon CPU % of one core: {}",
            percent_of_core(self.daemon_cpu, self.elapsed)
        )?;
        writeln!(f, "steady daemon peak RSS: {}", mib(self.daemon_peak_rss))?;
        write!(
            f,
            "steady bench process CPU % of one core: {}",
            percent_of_core(self.bench_cpu, self.elapsed)
        )
    }
}

impl std::fmt::Display for HeldReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "held: the daemon started again on the outbox, sink still down, for {:.1} s",
            self.elapsed.as_secs_f64()
        )?;
        writeln!(
            f,
            "held outbox: {} pages, {} of events",
            self.pending_pages,
            mib(self.pending_bytes)
        )?;
        writeln!(
            f,
            "held daemon CPU % of one core: {}",
            percent_of_core(self.daemon_cpu, self.elapsed)
        )?;
        write!(f, "held daemon peak RSS: {}", mib(self.daemon_peak_rss))
    }
}

/// `1.23 total, 1.00 user, 0.23 system`; with no events, the times themselves in ms.
fn micros_per_event(cpu: CpuTime, events: u64) -> String {
    if events == 0 {
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        return format!(
            "none counted; {:.0} ms total, {:.0} ms user, {:.0} ms system",
            ms(cpu.total()),
            ms(cpu.user),
            ms(cpu.system)
        );
    }
    let per = |d: Duration| d.as_secs_f64() * 1e6 / events as f64;
    format!(
        "{:.2} total, {:.2} user, {:.2} system",
        per(cpu.total()),
        per(cpu.user),
        per(cpu.system)
    )
}

/// `1.23 total, 1.00 user, 0.23 system`.
fn percent_of_core(cpu: CpuTime, window: Duration) -> String {
    let share = |d: Duration| d.as_secs_f64() * 100.0 / window.as_secs_f64();
    format!(
        "{:.2} total, {:.2} user, {:.2} system",
        share(cpu.total()),
        share(cpu.user),
        share(cpu.system)
    )
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / f64::from(1 << 20))
}

/// Runs the benchmark in a scratch directory, removed afterwards.
///
/// # Errors
///
/// Fails if the simulator, the scratch directory or the daemon cannot be set up, if the
/// daemon exits or stops making progress, if its figures cannot be read, or if the output
/// files do not hold every generated event exactly once.
pub async fn pipeline(options: &PipelineBenchOptions) -> anyhow::Result<PipelineBenchReport> {
    let dir = std::env::temp_dir().join(format!(
        "op-events-forwarder-bench-pipeline-{}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let result = run_pipeline(options, &dir).await;
    let _ = std::fs::remove_dir_all(&dir);
    result
}

/// Where the daemon's sink delivers, and what keeps it there.
enum Target {
    File,
    /// Kept alive for the run; it counts the lines.
    Http(Receiver),
    /// A loopback address nothing listens on.
    Down(SocketAddr),
}

async fn run_pipeline(
    options: &PipelineBenchOptions,
    dir: &Path,
) -> anyhow::Result<PipelineBenchReport> {
    let (sim, backlog) = start_simulator(options).await?;
    let limits = daemon_limits(options.governed);
    let target = match options.sink {
        PipelineSink::File => Target::File,
        PipelineSink::Http => Target::Http(
            Receiver::start()
                .await
                .context("cannot start the HTTP receiver")?,
        ),
        PipelineSink::Down => Target::Down(free_loopback_port().context("no free port")?),
    };
    // A port the kernel handed out a moment ago may come back at once: the sink that is down
    // must not be the daemon's own admin endpoint (seen once: its 404s made dead letters).
    let admin = loop {
        let admin = free_loopback_port().context("no free port for the admin endpoint")?;
        if !matches!(&target, Target::Down(down) if *down == admin) {
            break admin;
        }
    };
    let config_path = write_files(dir, &sim, &target, admin, limits)?;
    eprintln!(
        "bench pipeline: {} events at {} ({} sink); daemon {}",
        backlog.iter().sum::<u64>(),
        sim.base_url(),
        options.sink.as_str(),
        options.daemon.display()
    );

    let bench_start = procfs::own_cpu_time()?;
    let started = Instant::now();
    let mut daemon = DaemonProcess::spawn(&options.daemon, &config_path, &dir.join("daemon.log"))?;
    let start = Start {
        admin,
        limits,
        started,
        bench_cpu: bench_start,
    };
    let measured = measure(options, &sim, &mut daemon, &start, &backlog).await;
    let stopped = daemon.stop().await;
    let held = match (&measured, &stopped) {
        (Ok(_), Ok(_))
            if options.sink == PipelineSink::Down
                && options.live.is_none()
                && backlog.iter().sum::<u64>() > 0 =>
        {
            Some(hold(options, &config_path, dir, admin).await)
        }
        _ => None,
    };
    sim.shutdown();
    let mut report = measured?;
    stopped?;
    report.held = held.transpose()?;

    if let Target::Http(receiver) = &target {
        let received = receiver.lines();
        report.received = Some(received);
        if received < report.counted {
            bail!(
                "the receiver counted {received} lines, fewer than the {} events the daemon delivered",
                report.counted
            );
        }
    }
    if options.sink == PipelineSink::File && options.live.is_none() {
        report.files_checked = Some(check_files(&sim, dir)?);
    }
    Ok(report)
}

/// The simulator over HTTPS with the backlog, split over the three streams as evenly as the
/// total allows; also returns each stream's share of it.
async fn start_simulator(options: &PipelineBenchOptions) -> anyhow::Result<(Simulator, [u64; 3])> {
    let n_streams = Stream::ALL.len();
    let per_stream = options.events / n_streams;
    let mut config = SimConfig::new("127.0.0.1:0".parse().expect("a valid address"));
    config.tls = true;
    config.initial_events = per_stream;
    config.rate_per_sec = options
        .live
        .map_or(0.0, |live| live.events_per_sec / n_streams as f64);
    config.faults = if options.governed {
        Faults::documented_limits()
    } else {
        Faults::default()
    };
    let sim = Simulator::start(config)
        .await
        .context("cannot start the simulator")?;
    let mut backlog = [per_stream as u64; 3];
    for (idx, stream) in Stream::ALL.into_iter().enumerate() {
        if idx < options.events % n_streams {
            sim.insert(stream, 1);
            backlog[idx] += 1;
        }
    }
    Ok((sim, backlog))
}

fn daemon_limits(governed: bool) -> Limits {
    if governed {
        return Limits::DOCUMENTED;
    }
    let count = |n: i64| {
        std::num::NonZeroU32::new(u32::try_from(n).unwrap_or(u32::MAX))
            .unwrap_or(std::num::NonZeroU32::MAX)
    };
    Limits {
        per_minute: count(REQUESTS_PER_MINUTE_MAX),
        per_hour: count(REQUESTS_PER_HOUR_MAX),
    }
}

/// A loopback address free when asked (its listener is closed again at once).
fn free_loopback_port() -> std::io::Result<SocketAddr> {
    std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()
}

/// Writes the token, the simulator's certificate and the config into `dir`; checks the
/// config as the daemon will, and returns its path.
fn write_files(
    dir: &Path,
    sim: &Simulator,
    target: &Target,
    admin: SocketAddr,
    limits: Limits,
) -> anyhow::Result<PathBuf> {
    let now = time::OffsetDateTime::now_utc();
    let token = sim.mint_token(&crate::sim::jwt::MintClaims {
        audience: sim.audience(),
        features: Stream::ALL.to_vec(),
        issued_at: now,
        expires_at: Some(now + time::Duration::days(30)),
    });
    let ca = sim
        .ca_pem()
        .context("the simulator serves HTTPS but has no certificate")?;
    let sink = match target {
        Target::File => format!(
            "type = \"file\"\npath = \"{}/{{stream}}.ndjson\"",
            toml_path(dir)
        ),
        Target::Http(receiver) => {
            format!(
                "type = \"http\"\nformat = \"ndjson\"\nurl = \"{}\"",
                receiver.url()
            )
        }
        Target::Down(addr) => {
            format!("type = \"http\"\nformat = \"ndjson\"\nurl = \"http://{addr}/events\"")
        }
    };
    let text = pipeline_config(dir, &sim.base_url(), admin, limits, &sink);
    crate::config::from_toml_str("bench pipeline", &text, &[])?;
    for (name, content) in [
        ("token", token.as_str()),
        ("ca.pem", ca),
        ("config.toml", &text),
    ] {
        let path = dir.join(name);
        std::fs::write(&path, content)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(dir.join("config.toml"))
}

/// The daemon's config, written as a user would write it; `sink` is the keys of the sink's
/// table besides its name.
fn pipeline_config(
    dir: &Path,
    base_url: &str,
    admin: SocketAddr,
    limits: Limits,
    sink: &str,
) -> String {
    let dir = toml_path(dir);
    format!(
        r#"
[state]
path = "{dir}/state.db"
max_outbox_bytes = {MAX_OUTBOX_BYTES}

[admin]
listen = "{admin}"

[[accounts]]
name = "{ACCOUNT}"
token_file = "{dir}/token"
base_url = "{base_url}"
ca_file = "{dir}/ca.pem"
start_time = "-2d"
page_size = {PAGE_SIZE}
requests_per_minute = {per_minute}
requests_per_hour = {per_hour}

[[sinks]]
name = "{SINK}"
{sink}
"#,
        per_minute = limits.per_minute,
        per_hour = limits.per_hour,
    )
}

/// What the run started with, taken just before the daemon's spawn.
struct Start {
    /// The daemon's admin endpoint.
    admin: SocketAddr,
    limits: Limits,
    started: Instant,
    /// The bench process's CPU time so far.
    bench_cpu: CpuTime,
}

/// Waits for the backlog, reads the figures, and with a live load measures the window.
async fn measure(
    options: &PipelineBenchOptions,
    sim: &Simulator,
    daemon: &mut DaemonProcess,
    start: &Start,
    backlog: &[u64; 3],
) -> anyhow::Result<PipelineBenchReport> {
    let progress = wait_for_backlog(
        options.sink,
        daemon,
        start.admin,
        backlog,
        options.poll_every,
    )
    .await?;
    let elapsed = start.started.elapsed();
    let daemon_cpu = procfs::cpu_time_of(daemon.pid)?;
    let bench_cpu = procfs::own_cpu_time()? - start.bench_cpu;
    let daemon_peak_rss = procfs::peak_rss_of(daemon.pid)?;
    let steady = match options.live {
        Some(load) => Some(
            measure_window(
                options.sink,
                sim,
                daemon,
                start.admin,
                load,
                progress.total(),
            )
            .await?,
        ),
        None => None,
    };
    Ok(PipelineBenchReport {
        sink: options.sink,
        governed: options.governed,
        limits: start.limits,
        events: backlog.iter().sum(),
        counted: progress.total(),
        elapsed,
        poll_every: options.poll_every,
        daemon_cpu,
        daemon_peak_rss,
        bench_cpu,
        received: None,
        files_checked: None,
        steady,
        held: None,
    })
}

/// Starts the daemon again on the outbox the first run filled, its sink still down, and
/// watches it for `options.hold`: it polls the API (which has nothing new), retries its
/// sink, and answers `/metrics` once, when it is up.
async fn hold(
    options: &PipelineBenchOptions,
    config: &Path,
    dir: &Path,
    admin: SocketAddr,
) -> anyhow::Result<HeldReport> {
    let started = Instant::now();
    let mut daemon = DaemonProcess::spawn(&options.daemon, config, &dir.join("daemon-held.log"))?;
    let watched = async {
        let text = loop {
            daemon.check_running()?;
            if let Ok((200, text)) = crate::admin::get(admin, "/metrics", SCRAPE_TIMEOUT).await {
                break text;
            }
            if started.elapsed() > STALL_LIMIT {
                bail!(
                    "the daemon started again did not answer /metrics within {} s\n{}",
                    STALL_LIMIT.as_secs(),
                    daemon.log_tail()
                );
            }
            tokio::time::sleep(POLL_EVERY_DEFAULT).await;
        };
        let pending_pages = counter(&text, "opef_outbox_pages", &[]);
        let pending_bytes = counter(&text, "opef_outbox_bytes", &[]);
        if pending_pages == 0 {
            bail!(
                "the daemon started again found its outbox empty\n{}",
                daemon.log_tail()
            );
        }
        tokio::time::sleep(options.hold.saturating_sub(started.elapsed())).await;
        daemon.check_running()?;
        Ok(HeldReport {
            pending_pages,
            pending_bytes,
            elapsed: started.elapsed(),
            daemon_cpu: procfs::cpu_time_of(daemon.pid)?,
            daemon_peak_rss: procfs::peak_rss_of(daemon.pid)?,
        })
    }
    .await;
    let stopped = daemon.stop().await;
    let report = watched?;
    stopped?;
    Ok(report)
}

/// Lets the daemon run for the window without scraping it, then reads its figures.
async fn measure_window(
    sink: PipelineSink,
    sim: &Simulator,
    daemon: &mut DaemonProcess,
    admin: SocketAddr,
    load: LiveLoad,
    counted_before: u64,
) -> anyhow::Result<SteadyReport> {
    let generated = || -> u64 { Stream::ALL.iter().map(|s| sim.generated(*s) as u64).sum() };
    let daemon_before = procfs::cpu_time_of(daemon.pid)?;
    let bench_before = procfs::own_cpu_time()?;
    let generated_before = generated();
    let started = Instant::now();
    eprintln!(
        "bench pipeline: backlog done; measuring {} s of {} events/s",
        load.window.as_secs(),
        load.events_per_sec
    );
    tokio::time::sleep(load.window).await;
    let daemon_cpu = procfs::cpu_time_of(daemon.pid)? - daemon_before;
    let bench_cpu = procfs::own_cpu_time()? - bench_before;
    let elapsed = started.elapsed();
    let generated_after = generated();
    let daemon_peak_rss = procfs::peak_rss_of(daemon.pid)?;
    daemon.check_running()?;
    let progress = scrape(sink, admin).await?;
    Ok(SteadyReport {
        load,
        elapsed,
        generated: generated_after - generated_before,
        counted: progress.total().saturating_sub(counted_before),
        behind: generated_after.saturating_sub(progress.total()),
        daemon_cpu,
        daemon_peak_rss,
        bench_cpu,
    })
}

/// Per stream (in [`Stream::ALL`]'s order), from one scrape of `/metrics`: events counted
/// (delivered or fetched) and requests answered 2xx.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Progress {
    counted: [u64; 3],
    answered: [u64; 3],
}

impl Progress {
    fn total(&self) -> u64 {
        self.counted.iter().sum()
    }

    /// Every stream has its backlog and has been answered at least once (so that with no
    /// backlog, the daemon is known to be polling).
    fn done(&self, backlog: &[u64; 3]) -> bool {
        (0..3).all(|idx| self.counted[idx] >= backlog[idx] && self.answered[idx] > 0)
    }
}

/// Polls `/metrics` until the backlog is done.
async fn wait_for_backlog(
    sink: PipelineSink,
    daemon: &mut DaemonProcess,
    admin: SocketAddr,
    backlog: &[u64; 3],
    poll_every: Duration,
) -> anyhow::Result<Progress> {
    let mut last = Progress::default();
    let mut moved_at = Instant::now();
    let mut last_error = None;
    loop {
        daemon.check_running()?;
        match scrape(sink, admin).await {
            Ok(progress) if progress.done(backlog) => return Ok(progress),
            Ok(progress) => {
                if progress != last {
                    moved_at = Instant::now();
                    last = progress;
                }
            }
            // The endpoint does not answer until the daemon has started.
            Err(err) => last_error = Some(err),
        }
        if moved_at.elapsed() > STALL_LIMIT {
            let why = last_error.map_or(String::new(), |err| format!(" (last scrape: {err:#})"));
            bail!(
                "no progress for {} s: {} of {} events {}{why}\n{}",
                STALL_LIMIT.as_secs(),
                last.total(),
                backlog.iter().sum::<u64>(),
                sink.counted(),
                daemon.log_tail()
            );
        }
        tokio::time::sleep(poll_every).await;
    }
}

/// One scrape of the daemon's `/metrics`.
async fn scrape(sink: PipelineSink, admin: SocketAddr) -> anyhow::Result<Progress> {
    let (status, text) = crate::admin::get(admin, "/metrics", SCRAPE_TIMEOUT)
        .await
        .map_err(anyhow::Error::msg)?;
    if status != 200 {
        bail!("{admin}/metrics answered {status}: {}", text.trim());
    }
    Ok(parse_progress(sink, &text))
}

fn parse_progress(sink: PipelineSink, text: &str) -> Progress {
    let mut progress = Progress::default();
    for (idx, stream) in Stream::ALL.into_iter().enumerate() {
        let stream = stream.as_str();
        progress.counted[idx] = match sink {
            PipelineSink::Down => counter(
                text,
                "opef_events_fetched_total",
                &[("account", ACCOUNT), ("stream", stream)],
            ),
            PipelineSink::File | PipelineSink::Http => counter(
                text,
                "opef_sink_events_delivered_total",
                &[("sink", SINK), ("account", ACCOUNT), ("stream", stream)],
            ),
        };
        progress.answered[idx] = counter(
            text,
            "opef_api_requests_total",
            &[("account", ACCOUNT), ("stream", stream), ("class", "2xx")],
        );
    }
    progress
}

/// The sum of the samples of metric `name` whose labels include every one of `labels`
/// (OpenMetrics text: `name{key="value",...} 123`); 0 if none.
fn counter(text: &str, name: &str, labels: &[(&str, &str)]) -> u64 {
    text.lines()
        .filter_map(|line| {
            let rest = line.strip_prefix(name)?.strip_prefix('{')?;
            let (label_text, value) = rest.rsplit_once("} ")?;
            let wanted = labels.iter().all(|(key, want)| {
                label_text
                    .split(',')
                    .any(|pair| pair == format!("{key}=\"{want}\""))
            });
            wanted.then(|| value.trim().parse::<f64>().ok()).flatten()
        })
        .map(|value| value as u64)
        .sum()
}

/// Reads each stream's output file back; every generated event must be there once, as
/// served. Returns the number of files checked.
fn check_files(sim: &Simulator, dir: &Path) -> anyhow::Result<usize> {
    let mut problems = Vec::new();
    for stream in Stream::ALL {
        let path = dir.join(format!("{stream}.ndjson"));
        let summary = crate::demo::check_output(sim, stream, &path)?;
        if !summary.complete() {
            problems.push(format!(
                "{stream}: {} generated, {} lines, {} missing, {} duplicated, {} altered",
                summary.generated,
                summary.delivered,
                summary.missing,
                summary.duplicated,
                summary.altered
            ));
        }
    }
    if !problems.is_empty() {
        bail!(
            "the output files do not hold every event exactly once: {}",
            problems.join("; ")
        );
    }
    Ok(Stream::ALL.len())
}

/// The daemon, run as a child process with its output in a log file.
struct DaemonProcess {
    child: tokio::process::Child,
    pid: u32,
    log: PathBuf,
}

impl DaemonProcess {
    /// Starts `<exe> run --config <config>`, stdout and stderr into `log`.
    fn spawn(exe: &Path, config: &Path, log: &Path) -> anyhow::Result<DaemonProcess> {
        let log_file = std::fs::File::create(log)
            .with_context(|| format!("cannot create {}", log.display()))?;
        let log_err = log_file
            .try_clone()
            .with_context(|| format!("cannot reopen {}", log.display()))?;
        let child = tokio::process::Command::new(exe)
            .arg("run")
            .arg("--config")
            .arg(config)
            .stdin(Stdio::null())
            .stdout(log_file)
            .stderr(log_err)
            // Should the benchmark fail before stopping it, it does not outlive the benchmark.
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start the daemon {}", exe.display()))?;
        let pid = child
            .id()
            .context("the daemon exited before its pid was read")?;
        Ok(DaemonProcess {
            child,
            pid,
            log: log.to_owned(),
        })
    }

    /// Fails, quoting the log, if the daemon has exited.
    fn check_running(&mut self) -> anyhow::Result<()> {
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => bail!("the daemon exited ({status})\n{}", self.log_tail()),
            Err(err) => Err(err).context("cannot wait for the daemon"),
        }
    }

    /// SIGTERM, then waits; kills it if it has not exited within [`STOP_GRACE`].
    ///
    /// # Errors
    ///
    /// The daemon did not exit in time, or exited with a failure.
    async fn stop(&mut self) -> anyhow::Result<ExitStatus> {
        if let Some(status) = self
            .child
            .try_wait()
            .context("cannot wait for the daemon")?
        {
            return Ok(status);
        }
        let pid = libc::pid_t::try_from(self.pid).context("the daemon's pid is out of range")?;
        // SAFETY: kill only sends a signal, to the child this process started and has not reaped.
        if unsafe { libc::kill(pid, libc::SIGTERM) } != 0 {
            return Err(std::io::Error::last_os_error())
                .context("cannot send SIGTERM to the daemon");
        }
        let status = match tokio::time::timeout(STOP_GRACE, self.child.wait()).await {
            Ok(waited) => waited.context("cannot wait for the daemon")?,
            Err(_) => {
                let _ = self.child.kill().await;
                bail!(
                    "the daemon did not exit within {} s of SIGTERM\n{}",
                    STOP_GRACE.as_secs(),
                    self.log_tail()
                );
            }
        };
        if !status.success() {
            bail!(
                "the daemon exited with {status} after SIGTERM\n{}",
                self.log_tail()
            );
        }
        Ok(status)
    }

    /// The last lines of the daemon's log, for an error message.
    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let tail = &lines[lines.len().saturating_sub(LOG_TAIL_LINES)..];
        format!("daemon log ({}):\n{}", self.log.display(), tail.join("\n"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const METRICS: &str = "\
# TYPE opef_sink_events_delivered counter
opef_sink_events_delivered_total{sink=\"bench\",account=\"bench\",stream=\"auditevents\"} 1000
opef_sink_events_delivered_total{sink=\"bench\",account=\"bench\",stream=\"itemusages\"} 2000
opef_sink_events_delivered_total{sink=\"other\",account=\"bench\",stream=\"itemusages\"} 7
opef_events_fetched_total{account=\"bench\",stream=\"signinattempts\"} 3000
opef_api_requests_total{account=\"bench\",stream=\"auditevents\",class=\"2xx\"} 2
opef_api_requests_total{account=\"bench\",stream=\"auditevents\",class=\"5xx\"} 9
# EOF
";

    #[test]
    fn counters_are_summed_over_the_samples_with_every_label_asked() {
        let delivered = "opef_sink_events_delivered_total";
        assert_eq!(counter(METRICS, delivered, &[("sink", "bench")]), 3000);
        assert_eq!(
            counter(METRICS, delivered, &[("stream", "itemusages")]),
            2007
        );
        assert_eq!(
            counter(
                METRICS,
                delivered,
                &[("sink", "bench"), ("stream", "signinattempts")]
            ),
            0
        );
        assert_eq!(counter(METRICS, "opef_sink_events", &[]), 0);
    }

    #[test]
    fn progress_counts_deliveries_or_for_a_sink_that_is_down_fetches() {
        let delivered = parse_progress(PipelineSink::File, METRICS);
        assert_eq!(delivered.counted, [1000, 2000, 0]);
        assert_eq!(delivered.answered, [2, 0, 0]);
        let fetched = parse_progress(PipelineSink::Down, METRICS);
        assert_eq!(fetched.counted, [0, 0, 3000]);
        assert!(!fetched.done(&[0, 0, 3000]), "two streams never answered");
        let all = Progress {
            counted: [1, 2, 3],
            answered: [1, 1, 1],
        };
        assert!(all.done(&[1, 2, 3]));
        assert!(!all.done(&[1, 2, 4]));
    }

    #[test]
    fn each_sink_gives_a_valid_config() {
        let dir = Path::new("/tmp/b");
        let admin: SocketAddr = "127.0.0.1:9999".parse().unwrap();
        for sink in [
            "type = \"file\"\npath = \"/tmp/b/{stream}.ndjson\"",
            "type = \"http\"\nformat = \"ndjson\"\nurl = \"http://127.0.0.1:1/events\"",
        ] {
            for limits in [daemon_limits(false), daemon_limits(true)] {
                let toml = pipeline_config(dir, "https://127.0.0.1:1", admin, limits, sink);
                let config = crate::config::from_toml_str("bench", &toml, &[]).unwrap();
                assert_eq!(config.accounts[0].limits, limits);
                assert_eq!(config.accounts[0].page_size, PAGE_SIZE);
                assert_eq!(config.admin.listen, Some(admin));
            }
        }
        assert_eq!(daemon_limits(false).per_minute.get(), 10_000);
    }

    #[test]
    fn sinks_are_named_as_on_the_command_line() {
        for sink in [PipelineSink::File, PipelineSink::Http, PipelineSink::Down] {
            assert_eq!(sink.as_str().parse::<PipelineSink>(), Ok(sink));
        }
        assert!("syslog".parse::<PipelineSink>().is_err());
    }
}
