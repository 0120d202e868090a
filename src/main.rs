//! The `op-events-forwarder` command: parse arguments, set up logging, hand over to the library.

use std::io::IsTerminal as _;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use op_events_forwarder::account::config::StartTime;
use op_events_forwarder::governor::Limits;
use op_events_forwarder::sim::jwt::{MintClaims, SigningKey};
use op_events_forwarder::sim::{Faults, SimConfig, SimToken, Simulator, V3Revision};
use op_events_forwarder::stream::Stream;
use op_events_forwarder::{bench, config, demo, shutdown};
use tracing_subscriber::EnvFilter;

/// How often the line `systemctl status` shows is brought up to date.
const STATUS_EVERY: std::time::Duration = std::time::Duration::from_secs(10);
/// The malloc arenas glibc may make, unless `MALLOC_ARENA_MAX` says otherwise.
const MALLOC_ARENAS: i32 = 1;
/// Allocations from this size up are mappings of their own, given back when freed, unless
/// `MALLOC_MMAP_THRESHOLD_` says otherwise: above a page's buffers (~650 KB), below a batch's.
const MALLOC_MMAP_THRESHOLD: i32 = 1 << 20;
/// Free memory at the top of an arena is given back to the kernel only beyond this, unless
/// `MALLOC_TRIM_THRESHOLD_` says otherwise.
const MALLOC_TRIM_THRESHOLD: i32 = 4 << 20;

/// glibc gives threads that allocate at once arenas of their own, up to eight per core, and
/// each keeps what it once held: the store's blocking threads and tokio's workers then hold
/// far more than the daemon uses: with two arenas the peak RSS draining 300,000 events fell
/// from 45 to 28 MiB, and fetching 1,000,000 into a sink that is down from 98 to 60 MiB
/// (`bench pipeline`, BENCHMARKS.md). The daemon's threads take turns more than they run
/// together, and its user time did not grow. One arena rather than two, once the trim
/// threshold below let an arena keep a page's freed buffers for the next: what one thread
/// freed, another reuses, and the peak fell again (fetching 1,000,000 into a sink that is
/// down 22.0–22.3 → 18.1–18.2 MiB, draining into the file sink 21.6–23.2 → 19.3–20.4) at the
/// same CPU per event.
///
/// glibc also raises its mmap threshold to the size of the largest block freed, so after the
/// first batch of a few MB every buffer comes from the arenas, which fragment and keep what
/// they held: with a sink down and 1,000,000 events pending, 60 MiB of peak RSS against 19 with
/// 1,000 (heaptrack: the live heap levelled off at ~20 MB). The threshold is fixed at 1 MiB:
/// a batch's larger buffers are mapped and given back, a page's buffers are not. At
/// 128 KiB the peak fell further (24.0 MiB against 29.3) but every page buffer was then mapped
/// and faulted in afresh: the daemon's system time per event doubled (`bench pipeline`,
/// BENCHMARKS.md).
///
/// A fixed mmap threshold also leaves the trim threshold at its 128 KiB default (glibc
/// otherwise keeps it at twice the mmap threshold): each page's buffers, freed, were given
/// back with `brk` and `madvise` and faulted in again for the next page, with a TLB shootdown
/// to the other core each time. Draining 300,000 events took 124,480 page faults, 662 `brk`
/// and 379 `madvise` calls (in `perf`, 6.8 % of the daemon's samples in those shootdowns and
/// 3.5 % more in faults and page clearing); with the trim threshold at 4 MiB, 6,170, 24 and
/// 13 (`perf stat` on `bench pipeline`), ~1 µs less system time per event. The peak rose 1–2
/// MiB (each arena may keep 4 MiB free), which one arena instead of two took back.
///
/// Called first in `main`, before any thread starts; `MALLOC_ARENA_MAX`,
/// `MALLOC_MMAP_THRESHOLD_` and `MALLOC_TRIM_THRESHOLD_` in the environment still decide.
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
            // SAFETY: mallopt only sets a parameter of the allocator; no other thread exists.
            unsafe {
                libc::mallopt(libc::M_ARENA_MAX, MALLOC_ARENAS);
            }
        }
        if std::env::var_os("MALLOC_MMAP_THRESHOLD_").is_none() {
            // SAFETY: as above.
            unsafe {
                libc::mallopt(libc::M_MMAP_THRESHOLD, MALLOC_MMAP_THRESHOLD);
            }
        }
        if std::env::var_os("MALLOC_TRIM_THRESHOLD_").is_none() {
            // SAFETY: as above.
            unsafe {
                libc::mallopt(libc::M_TRIM_THRESHOLD, MALLOC_TRIM_THRESHOLD);
            }
        }
    }
}

/// EX_CONFIG from sysexits.h: the configuration is wrong; restarting will not help.
const EXIT_CONFIG: u8 = 78;
/// A command line without what it needs (EX_USAGE, as clap exits for the others).
const EXIT_USAGE: u8 = 2;
/// EX_DATAERR: the state file cannot be used as it is (another program's file, empty, of a
/// newer schema, not on disk, or in use by another daemon); restarting will not help.
const EXIT_STATE: u8 = 65;
/// EX_NOINPUT: a file the config names (a token, a certificate, a key) cannot be read or
/// used; restarting will not help until someone fixes it.
const EXIT_NO_INPUT: u8 = 66;

/// Forwards 1Password Events API activity to syslog, HTTP collectors and files.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log line format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "OP_EVENTS_FORWARDER_LOG_FORMAT")]
    log_format: LogFormat,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum DeadLettersAction {
    /// One line per dead letter: id, sink, account/stream, uuid, when first refused, reason.
    List {
        /// Only this sink's.
        #[arg(long)]
        sink: Option<String>,
    },
    /// Queue a sink's dead letters for delivery again; the running daemon sends them within
    /// seconds (or the next one at its start), and those delivered leave the list.
    Replay {
        #[arg(long)]
        sink: String,
    },
    /// Delete a sink's dead letters first refused before a time (RFC 3339, or -7d, -24h...).
    Purge {
        #[arg(long)]
        sink: String,
        #[arg(long, allow_hyphen_values = true)]
        before: String,
    },
}

#[derive(Subcommand)]
enum CursorAction {
    /// One line per stream: whether it has a cursor, when it was saved, the newest event, the
    /// pages pending, and a restart time set by `cursor reset`.
    Show,
    /// Forget a stream's cursor so that the daemon starts it again from --start-time at its
    /// next start (pages already fetched are still delivered; events after the time are
    /// fetched again, so sinks see them twice). Refused while a daemon holds the state.
    Reset {
        #[arg(long)]
        account: String,
        #[arg(long)]
        stream: String,
        /// RFC 3339, or a time ago like -7d, -24h, -30m.
        #[arg(long, allow_hyphen_values = true)]
        start_time: String,
        /// Write it even though a daemon holds the state; that daemon must be restarted at
        /// once, and overwrites the reset if it stores a page of the stream first.
        #[arg(long)]
        force: bool,
    },
}

#[derive(Subcommand)]
// Parsed once at start; the size of the largest variant costs nothing.
#[allow(clippy::large_enum_variant)]
enum Command {
    /// Run the daemon.
    Run {
        /// The TOML config file.
        #[arg(long, short, env = "OP_EVENTS_FORWARDER_CONFIG")]
        config: PathBuf,
        /// Delete the saved state (cursors, undelivered pages) of accounts no longer in the
        /// config, instead of refusing to start.
        #[arg(long)]
        forget_removed_accounts: bool,
    },
    /// Check a config file and exit (0 if valid, 78 listing every problem if not); with
    /// --online, also what a start would find (1 if a check fails).
    #[command(alias = "check-config")]
    Check {
        #[arg(long, short, env = "OP_EVENTS_FORWARDER_CONFIG")]
        config: PathBuf,
        /// Also read and introspect each token, compare the clock with the API's, and open
        /// each sink's connection (delivering nothing).
        #[arg(long)]
        online: bool,
    },
    /// Events a sink refused for good: list them, deliver them again, or delete them. Safe
    /// beside the running daemon.
    DeadLetters {
        /// The TOML config file (before or after the action).
        #[arg(long, short, env = "OP_EVENTS_FORWARDER_CONFIG", global = true)]
        config: Option<PathBuf>,
        #[command(subcommand)]
        action: DeadLettersAction,
    },
    /// Where each stream and sink stands: cursor age, newest event, lag, pages pending,
    /// health, dead letters, last errors. Safe beside the running daemon, whose live figures
    /// it adds when its admin endpoint answers.
    Status {
        #[arg(long, short, env = "OP_EVENTS_FORWARDER_CONFIG")]
        config: PathBuf,
        /// JSON instead of tables.
        #[arg(long)]
        json: bool,
    },
    /// Ask the running daemon's admin endpoint whether it is alive (exit 0) or not (1); for
    /// container health checks.
    Health {
        #[arg(long, short, env = "OP_EVENTS_FORWARDER_CONFIG")]
        config: PathBuf,
        /// Ask /readyz (every stream fetching, no sink stalled) instead of /healthz.
        #[arg(long)]
        ready: bool,
    },
    /// Show the saved cursors, or make a stream start again from a time.
    Cursor {
        /// The TOML config file (before or after the action).
        #[arg(long, short, env = "OP_EVENTS_FORWARDER_CONFIG", global = true)]
        config: Option<PathBuf>,
        #[command(subcommand)]
        action: CursorAction,
    },
    /// Serve a simulated Events API (for trying the daemon out, and for tests).
    Simulate {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:8722")]
        listen: SocketAddr,
        /// Events per stream to start with.
        #[arg(long, default_value_t = 1000)]
        events: usize,
        /// Live events per stream per second.
        #[arg(long, default_value_t = 0.0)]
        rate: f64,
        /// Seed of the event generator.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// A bearer token to accept, as TOKEN or TOKEN=feature,feature (repeatable).
        #[arg(long = "token", default_value = "sim-token")]
        tokens: Vec<SimToken>,
        /// Append "<stream>\t<uuid>" for every generated event to this file.
        #[arg(long)]
        ledger: Option<PathBuf>,
        /// The ES256 key (PKCS#8) that signs and verifies the simulator's JWT tokens; created
        /// if missing. Without it, a fresh key is used for this run only.
        #[arg(long)]
        signing_key: Option<PathBuf>,
        /// Print a JWT signed with --signing-key and exit, instead of serving.
        #[arg(long, requires = "signing_key")]
        mint_token: bool,
        /// With --mint-token: the token's features (streams it may read).
        #[arg(
            long,
            value_delimiter = ',',
            default_value = "auditevents,itemusages,signinattempts"
        )]
        features: Vec<String>,
        /// With --mint-token: the token's audience, the HOST:PORT clients will call.
        #[arg(long, default_value = "127.0.0.1:8722")]
        aud: String,
        /// With --mint-token: how long the token is valid, like 30d, 12h or 90m; never by default.
        #[arg(long)]
        expires_in: Option<String>,
        /// Which revision of the v3 beta endpoint to serve: current (3.0.0) or early.
        #[arg(long, default_value = "current")]
        v3_revision: V3Revision,
        /// Serve HTTPS (HTTP/2 and HTTP/1.1) with a fresh self-signed certificate.
        #[arg(long)]
        tls: bool,
        /// With --tls: write the certificate (PEM) here, for clients to trust (the daemon's
        /// ca_file).
        #[arg(long, requires = "tls")]
        ca_out: Option<PathBuf>,
        /// Rate limits and injected failures as JSON (see `POST /_sim/faults`); by default the
        /// documented limits, 600 a minute and 30,000 an hour. `{}` turns them off.
        #[arg(long, value_parser = parse_faults)]
        faults: Option<Faults>,
    },
    /// Measure the daemon against the simulator and print the figures.
    Bench {
        #[command(subcommand)]
        which: BenchCommand,
    },
    /// Run the simulator and the daemon together into ./demo-output/ and check the result.
    Demo {
        /// Events per stream.
        #[arg(long, default_value_t = 10_000)]
        events: usize,
        /// Output directory.
        #[arg(long, default_value = "demo-output")]
        out: PathBuf,
        /// Keep running with live events until Ctrl-C.
        #[arg(long)]
        follow: bool,
        /// Live events per stream per second with --follow.
        #[arg(long, default_value_t = 5.0)]
        rate: f64,
        /// Seed of the event generator.
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
}

#[derive(Subcommand)]
enum BenchCommand {
    /// Drain a backlog against the simulator's strict rate limits; print requests per minute
    /// as a fraction of the ceiling and the number of 429s.
    Governor {
        /// How long to run.
        #[arg(long, default_value_t = 120)]
        secs: u64,
        /// The per-minute limit of the simulator and the daemon.
        #[arg(long, default_value_t = 600)]
        requests_per_minute: u32,
        /// The per-hour limit of the simulator and the daemon.
        #[arg(long, default_value_t = 30_000)]
        requests_per_hour: u32,
    },
    /// Run this binary as the daemon, a separate process, against the simulator over HTTPS;
    /// print events/s, the daemon's CPU per event and its peak RSS (and with --live-rate, its
    /// CPU as a share of one core at a steady rate).
    Pipeline {
        /// The backlog, in total over the three streams.
        #[arg(long, default_value_t = 300_000)]
        events: usize,
        /// file (fsynced before each ack), http (NDJSON into a receiver in this process) or
        /// down (an HTTP sink nothing answers: every event stays in the outbox, the run ends
        /// when all are fetched).
        #[arg(long, default_value = "file")]
        sink: bench::PipelineSink,
        /// The simulator enforces the documented limits (600/min, 30,000/h) and the daemon
        /// keeps to them; by default neither has limits (the daemon's the most its config
        /// allows).
        #[arg(long)]
        governed: bool,
        /// Live events per second, in total over the three streams (a third each); with
        /// --secs, measured for that long once the backlog is done.
        #[arg(long, requires = "secs")]
        live_rate: Option<f64>,
        /// With --live-rate: the length of the measured window.
        #[arg(long, requires = "live_rate")]
        secs: Option<u64>,
        /// How often the daemon's /metrics is read while the backlog drains (each read
        /// costs the daemon a pass over its outbox).
        #[arg(long, default_value_t = bench::POLL_EVERY_DEFAULT.as_millis() as u64, value_parser = clap::value_parser!(u64).range(10..=60_000))]
        poll_ms: u64,
        /// With --sink down and no live load: how long the daemon started again on the
        /// outbox it filled (its sink still down) is watched for its peak RSS.
        #[arg(long, default_value_t = bench::HOLD_WINDOW_DEFAULT.as_secs(), value_parser = clap::value_parser!(u64).range(1..=3600))]
        hold_secs: u64,
    },
}

fn main() -> ExitCode {
    limit_malloc_arenas();
    let cli = Cli::parse();
    // One TLS provider for the whole process, chosen before anything builds a TLS config.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let default_level = match cli.command {
        Command::Demo { .. } | Command::Bench { .. } => "warn",
        _ => "info",
    };
    init_logging(cli.log_format, default_level);

    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async_main(cli.command))
}

async fn async_main(command: Command) -> ExitCode {
    match command {
        Command::Run {
            config,
            forget_removed_accounts,
        } => {
            let config = match config::load(&config) {
                Ok(config) => config,
                Err(err) => return config_error(&err),
            };
            let stop = match shutdown::install() {
                Ok(stop) => stop,
                Err(err) => {
                    return fail(signal_error(err));
                }
            };
            let mut reloads = match shutdown::reloads() {
                Ok(reloads) => reloads,
                Err(err) => return fail(signal_error(err)),
            };
            let options = op_events_forwarder::StartOptions {
                forget_removed_accounts,
            };
            let daemon = tokio::select! {
                started = op_events_forwarder::Daemon::start_with(&config, &options) => match started {
                    Ok(daemon) => daemon,
                    Err(err) => return fail(err),
                },
                () = stop.cancelled() => return ExitCode::SUCCESS,
            };
            use op_events_forwarder::systemd;
            systemd::ready(&format!("started; {}", daemon.status_line()));
            if let Some(interval) = systemd::watchdog_interval() {
                daemon.start_watchdog(interval / 2);
            }
            // STATUS= for `systemctl status`, when it changes.
            let mut status = tokio::time::interval(STATUS_EVERY);
            let mut said = String::new();
            loop {
                tokio::select! {
                    () = stop.cancelled() => break,
                    Some(()) = reloads.recv() => {
                        tracing::info!(signal = "SIGHUP", "reloading");
                        systemd::reloading();
                        daemon.reload();
                        systemd::reloaded();
                    }
                    _ = status.tick() => {
                        let line = daemon.status_line();
                        if line != said {
                            systemd::status(&line);
                            said = line;
                        }
                    }
                }
            }
            systemd::stopping();
            daemon.stop().await;
            ExitCode::SUCCESS
        }
        Command::DeadLetters { config, action } => {
            let Some(config) = config else {
                return missing_config();
            };
            let config = match config::load(&config) {
                Ok(config) => config,
                Err(err) => return config_error(&err),
            };
            match dead_letters(&config, action) {
                Ok(()) => ExitCode::SUCCESS,
                Err(err) => fail(err),
            }
        }
        Command::Status { config, json } => {
            let config = match config::load(&config) {
                Ok(config) => config,
                Err(err) => return config_error(&err),
            };
            match status(&config, json).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(err) => fail(err),
            }
        }
        Command::Health { config, ready } => {
            let config = match config::load(&config) {
                Ok(config) => config,
                Err(err) => return config_error(&err),
            };
            let Some(addr) = config.admin.listen else {
                eprintln!(
                    "error: the admin endpoint is off ([admin] listen = \"\"): nothing to ask"
                );
                return ExitCode::FAILURE;
            };
            let path = if ready { "/readyz" } else { "/healthz" };
            match op_events_forwarder::admin::get(admin_target(addr), path, Duration::from_secs(5))
                .await
            {
                Ok((200, body)) => {
                    print!("{body}");
                    ExitCode::SUCCESS
                }
                Ok((status, body)) => {
                    eprintln!("not ready (HTTP {status}): {body}");
                    ExitCode::FAILURE
                }
                Err(err) => {
                    eprintln!("error: {err}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Cursor { config, action } => {
            let Some(config) = config else {
                return missing_config();
            };
            let config = match config::load(&config) {
                Ok(config) => config,
                Err(err) => return config_error(&err),
            };
            match cursor(&config, action) {
                Ok(()) => ExitCode::SUCCESS,
                Err(err) => fail(err),
            }
        }
        Command::Check { config, online } => {
            let loaded = match config::load_all(&config) {
                Ok(loaded) => loaded,
                Err(errors) => {
                    for err in &errors {
                        eprintln!("error: {err}");
                    }
                    if errors.len() > 1 {
                        eprintln!("{} problems", errors.len());
                    }
                    return ExitCode::from(EXIT_CONFIG);
                }
            };
            println!("{}: ok", config.display());
            if !online {
                return ExitCode::SUCCESS;
            }
            let rows = op_events_forwarder::check::online(&loaded).await;
            print!("{}", op_events_forwarder::check::render(&rows));
            if rows.iter().all(|row| row.ok) {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Command::Simulate {
            listen,
            events,
            rate,
            seed,
            tokens,
            ledger,
            signing_key,
            mint_token,
            features,
            aud,
            expires_in,
            v3_revision,
            tls,
            ca_out,
            faults,
        } => {
            let signing_key = match signing_key.as_deref().map(SigningKey::load_or_create) {
                None => None,
                Some(Ok(key)) => Some(key),
                Some(Err(err)) => {
                    return fail(anyhow::Error::from(err).context("cannot use --signing-key"));
                }
            };
            if mint_token {
                let Some(key) = signing_key else {
                    return fail(anyhow::anyhow!("--mint-token needs --signing-key"));
                };
                return match mint(&key, &features, aud, expires_in.as_deref()) {
                    Ok(token) => {
                        println!("{token}");
                        ExitCode::SUCCESS
                    }
                    Err(err) => fail(err),
                };
            }
            let mut sim_config = SimConfig::new(listen);
            sim_config.signing_key = signing_key;
            sim_config.v3_revision = v3_revision;
            sim_config.tls = tls;
            sim_config.initial_events = events;
            sim_config.rate_per_sec = rate;
            sim_config.seed = seed;
            sim_config.tokens = tokens;
            sim_config.ledger = ledger;
            sim_config.faults = faults.unwrap_or_else(Faults::documented_limits);
            let sim = match Simulator::start(sim_config).await {
                Ok(sim) => sim,
                Err(err) => {
                    return fail(
                        anyhow::Error::from(err).context(format!("cannot listen on {listen}")),
                    );
                }
            };
            if let (Some(path), Some(pem)) = (&ca_out, sim.ca_pem())
                && let Err(err) = std::fs::write(path, pem)
            {
                return fail(anyhow::Error::from(err).context(format!(
                    "cannot write the certificate to {}",
                    path.display()
                )));
            }
            println!("simulated Events API at {}", sim.base_url());
            let stop = match shutdown::install() {
                Ok(stop) => stop,
                Err(err) => return fail(signal_error(err)),
            };
            stop.cancelled().await;
            sim.shutdown();
            ExitCode::SUCCESS
        }
        Command::Bench {
            which:
                BenchCommand::Governor {
                    secs,
                    requests_per_minute,
                    requests_per_hour,
                },
        } => {
            let (Some(per_minute), Some(per_hour)) = (
                NonZeroU32::new(requests_per_minute),
                NonZeroU32::new(requests_per_hour),
            ) else {
                eprintln!("error: the limits must be at least 1");
                return ExitCode::from(2);
            };
            let options = bench::GovernorBenchOptions {
                duration: Duration::from_secs(secs),
                limits: Limits {
                    per_minute,
                    per_hour,
                },
            };
            match bench::governor(&options).await {
                Ok(report) => {
                    println!("{report}");
                    ExitCode::SUCCESS
                }
                Err(err) => fail(err),
            }
        }
        Command::Bench {
            which:
                BenchCommand::Pipeline {
                    events,
                    sink,
                    governed,
                    live_rate,
                    secs,
                    poll_ms,
                    hold_secs,
                },
        } => {
            let live = match (live_rate, secs) {
                (Some(rate), Some(secs)) if rate.is_finite() && rate > 0.0 => {
                    Some(bench::LiveLoad {
                        events_per_sec: rate,
                        window: Duration::from_secs(secs),
                    })
                }
                (Some(_), _) => {
                    eprintln!("error: --live-rate must be a positive number of events per second");
                    return ExitCode::from(EXIT_USAGE);
                }
                _ => None,
            };
            let daemon = match std::env::current_exe() {
                Ok(path) => path,
                Err(err) => {
                    return fail(
                        anyhow::Error::from(err).context("cannot find this binary's path"),
                    );
                }
            };
            let options = bench::PipelineBenchOptions {
                events,
                sink,
                governed,
                live,
                poll_every: Duration::from_millis(poll_ms),
                hold: Duration::from_secs(hold_secs),
                daemon,
            };
            match bench::pipeline(&options).await {
                Ok(report) => {
                    println!("{report}");
                    ExitCode::SUCCESS
                }
                Err(err) => fail(err),
            }
        }
        Command::Demo {
            events,
            out,
            follow,
            rate,
            seed,
        } => {
            let stop = match shutdown::install() {
                Ok(stop) => stop,
                Err(err) => return fail(signal_error(err)),
            };
            let options = demo::DemoOptions {
                events,
                out,
                follow,
                rate,
                seed,
            };
            match demo::run(&options, stop).await {
                Ok(summaries) if summaries.iter().all(|s| s.complete() || options.follow) => {
                    ExitCode::SUCCESS
                }
                Ok(_) => ExitCode::FAILURE,
                Err(err) => fail(err),
            }
        }
    }
}

/// A token for `simulate --mint-token`.
fn mint(
    key: &SigningKey,
    features: &[String],
    audience: String,
    expires_in: Option<&str>,
) -> anyhow::Result<String> {
    let features = features
        .iter()
        .map(|name| {
            Stream::from_feature(name.trim()).ok_or_else(|| {
                anyhow::anyhow!(
                    "--features: unknown feature \"{name}\" (expected auditevents, itemusages or signinattempts)"
                )
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let issued_at = time::OffsetDateTime::now_utc();
    let expires_at = match expires_in {
        None => None,
        Some(text) => Some(
            issued_at + config::parse_span(text).and_then(|span| time::Duration::try_from(span).ok()).ok_or_else(|| {
                anyhow::anyhow!(
                    "--expires-in: expected a duration like 30d, 12h, 90m or 45s, got \"{text}\""
                )
            })?,
        ),
    };
    Ok(key.mint(&MintClaims {
        audience,
        features,
        issued_at,
        expires_at,
    }))
}

/// `--faults`: the simulator's faults as JSON.
fn parse_faults(text: &str) -> Result<Faults, String> {
    serde_json::from_str(text).map_err(|err| format!("invalid faults JSON: {err}"))
}

/// `dead-letters list|replay|purge` on the state the config names.
/// `--config` left out of a command that takes it before or after its action.
fn missing_config() -> ExitCode {
    eprintln!("error: --config FILE (or OP_EVENTS_FORWARDER_CONFIG) is required");
    ExitCode::from(EXIT_USAGE)
}

/// Where to ask an admin endpoint that listens on `addr`: an unspecified address
/// (0.0.0.0, ::) is asked on loopback.
fn admin_target(addr: SocketAddr) -> SocketAddr {
    let mut target = addr;
    if addr.ip().is_unspecified() {
        target.set_ip(match addr {
            SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    target
}

/// `status`: the running daemon's `/status` when it answers, else the state read alone.
async fn status(config: &config::Config, json: bool) -> anyhow::Result<()> {
    use op_events_forwarder::status::Status;
    let live = match config.admin.listen {
        Some(addr) => {
            match op_events_forwarder::admin::get(
                admin_target(addr),
                "/status",
                Duration::from_secs(3),
            )
            .await
            {
                Ok((200, body)) => serde_json::from_str::<Status>(&body).ok(),
                _ => None,
            }
        }
        None => None,
    };
    let status = match live {
        Some(status) => status,
        None => {
            let store = op_events_forwarder::store::Store::open_existing(&config.state.path)?;
            let report = store.report()?;
            Status::build(config, &report, None, time::OffsetDateTime::now_utc())
        }
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&status)?);
    } else {
        use std::io::IsTerminal as _;
        let color = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
        print!("{}", status.render(color));
    }
    Ok(())
}

/// `cursor show` and `cursor reset`.
fn cursor(config: &config::Config, action: CursorAction) -> anyhow::Result<()> {
    use op_events_forwarder::store::Store;
    use op_events_forwarder::stream::Stream;
    match action {
        CursorAction::Show => {
            let store = Store::open_existing(&config.state.path)?;
            let report = store.report()?;
            println!(
                "{:<20} {:<16} {:<7} {:<22} {:<32} {:>8}  restart from",
                "account", "stream", "cursor", "saved", "newest event", "pending"
            );
            for s in &report.streams {
                let stream: Option<Stream> = s.stream.parse().ok();
                let restart = stream
                    .and_then(|stream| store.restart_from(&s.account, stream).ok().flatten())
                    .map_or_else(|| "-".to_owned(), op_events_forwarder::api::rfc3339);
                let saved = time::OffsetDateTime::from_unix_timestamp(s.saved_at)
                    .map(op_events_forwarder::api::rfc3339)
                    .unwrap_or_default();
                let newest = s
                    .last_event_ns
                    .and_then(|ns| time::OffsetDateTime::from_unix_timestamp_nanos(ns.into()).ok())
                    .map_or_else(|| "-".to_owned(), op_events_forwarder::api::rfc3339);
                println!(
                    "{:<20} {:<16} {:<7} {:<22} {:<32} {:>8}  {restart}",
                    s.account,
                    s.stream,
                    if s.has_cursor { "yes" } else { "no" },
                    saved,
                    newest,
                    s.pending_pages
                );
            }
            Ok(())
        }
        CursorAction::Reset {
            account,
            stream,
            start_time,
            force,
        } => {
            if !config.accounts.iter().any(|a| a.name == account) {
                anyhow::bail!(
                    "no account \"{account}\" in the config (accounts: {})",
                    config
                        .accounts
                        .iter()
                        .map(|a| a.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            }
            let stream: Stream = stream.parse().map_err(|_| {
                anyhow::anyhow!(
                    "unknown stream \"{stream}\" (expected one of {})",
                    Stream::KNOWN
                        .iter()
                        .map(|s| s.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            })?;
            let at = op_events_forwarder::account::config::StartTime::parse(&start_time)
                .ok_or_else(|| {
                    anyhow::anyhow!(
                        "--start-time {start_time:?}: expected an RFC 3339 time like 2026-11-01T00:00:00Z or a time ago like -7d, -24h, -30m"
                    )
                })?
                .resolve(time::OffsetDateTime::now_utc());
            // The daemon's own open takes the lock: a running daemon refuses it, naming its pid.
            let store = if force {
                eprintln!(
                    "warning: --force: restart the running daemon at once; it overwrites this reset if it stores a page of {account}/{stream} first"
                );
                Store::open_existing(&config.state.path)?
            } else {
                Store::open(&config.state.path).map_err(|err| {
                    anyhow::anyhow!("{err}; stop the daemon first (or pass --force)")
                })?
            };
            let old = store.reset_cursor(&account, stream, at)?;
            println!(
                "{account}/{stream}: {}; starts again from {} at the daemon's next start",
                if old.is_some() {
                    "cursor forgotten"
                } else {
                    "had no cursor"
                },
                op_events_forwarder::api::rfc3339(at)
            );
            Ok(())
        }
    }
}

fn dead_letters(config: &config::Config, action: DeadLettersAction) -> anyhow::Result<()> {
    use op_events_forwarder::store::Store;
    let store = Store::open_existing(&config.state.path)?;
    let known = |sink: &str| -> anyhow::Result<()> {
        if config.sinks.iter().any(|s| s.name == sink) {
            Ok(())
        } else {
            anyhow::bail!(
                "no sink \"{sink}\" in the config (sinks: {})",
                config
                    .sinks
                    .iter()
                    .map(|s| s.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        }
    };
    match action {
        DeadLettersAction::List { sink } => {
            let letters = store.dead_letters(sink.as_deref())?;
            println!(
                "{:>6}  {:<16} {:<28} {:<38} {:<20} reason",
                "id", "sink", "account/stream", "uuid", "first refused"
            );
            for letter in &letters {
                let first_seen = time::OffsetDateTime::from_unix_timestamp(letter.first_seen)
                    .map(op_events_forwarder::api::rfc3339)
                    .unwrap_or_default();
                println!(
                    "{:>6}  {:<16} {:<28} {:<38} {:<20} {}{}",
                    letter.id,
                    letter.sink,
                    format!("{}/{}", letter.account, letter.stream),
                    letter.uuid.as_deref().unwrap_or("-"),
                    first_seen,
                    if letter.queued {
                        "[queued for replay] "
                    } else {
                        ""
                    },
                    letter.reason
                );
            }
            println!("{} dead letters", letters.len());
        }
        DeadLettersAction::Replay { sink } => {
            known(&sink)?;
            let queued = store.queue_dead_letters(&sink)?;
            println!(
                "{queued} dead letters of sink {sink} queued for delivery again; the daemon \
                 sends them within seconds, or at its next start"
            );
        }
        DeadLettersAction::Purge { sink, before } => {
            known(&sink)?;
            let at = StartTime::parse(&before)
                .ok_or_else(|| {
                    anyhow::anyhow!(
                        "--before {before:?}: expected an RFC 3339 time or a time ago like -7d, -24h, -30m, -90s"
                    )
                })?
                .resolve(time::OffsetDateTime::now_utc());
            let purged = store.purge_dead_letters(&sink, at.unix_timestamp())?;
            println!(
                "{purged} dead letters of sink {sink} first refused before {} deleted",
                op_events_forwarder::api::rfc3339(at)
            );
        }
    }
    Ok(())
}

fn signal_error(err: std::io::Error) -> anyhow::Error {
    anyhow::Error::from(err).context("cannot install signal handlers")
}

fn config_error(err: &config::ConfigError) -> ExitCode {
    eprintln!("error: {err}");
    ExitCode::from(EXIT_CONFIG)
}

fn fail(err: anyhow::Error) -> ExitCode {
    let text = causes(&err);
    tracing::error!("{text}");
    eprintln!("error: {text}");
    ExitCode::from(exit_code(&err))
}

/// The exit status of a failed start: a documented one for the faults a restart cannot cure
/// (the systemd unit lists them in `RestartPreventExitStatus`), 1 for the rest.
fn exit_code(err: &anyhow::Error) -> u8 {
    use op_events_forwarder::store::StoreError;
    for cause in err.chain() {
        if cause
            .downcast_ref::<StoreError>()
            .is_some_and(StoreError::is_permanent)
        {
            return EXIT_STATE;
        }
        if cause.is::<op_events_forwarder::token::TokenError>()
            || cause.is::<op_events_forwarder::sink::SinkError>()
            || matches!(
                cause.downcast_ref::<op_events_forwarder::api::ApiError>(),
                Some(op_events_forwarder::api::ApiError::Setup(_))
            )
        {
            return EXIT_NO_INPUT;
        }
    }
    1
}

/// An error and its causes on one line, each cause said once: many errors (SQLite's among
/// them) repeat their source in their own message, or give it again with a code in front.
fn causes(err: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in err.chain() {
        let said = cause.to_string();
        let plain = said
            .strip_prefix("Error code ")
            .and_then(|rest| rest.split_once(": "))
            .filter(|(code, _)| code.chars().all(|c| c.is_ascii_digit()))
            .map_or(said.as_str(), |(_, rest)| rest);
        if text.contains(plain) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&said);
    }
    text
}

fn init_logging(format: LogFormat, default_level: &str) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level));
    // Colours are for a person at a terminal: a file or the journal would keep the escape codes
    // as text. NO_COLOR (no-color.org) turns them off there too.
    let ansi = std::io::stderr().is_terminal()
        && std::env::var_os("NO_COLOR").is_none_or(|value| value.is_empty());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_cause_is_said_once() {
        let sqlite = rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(26),
            Some("file is not a database".to_owned()),
        );
        let err = anyhow::Error::from(op_events_forwarder::store::StoreError::Sqlite {
            path: "/var/lib/x/state.db".into(),
            source: sqlite,
        });
        assert_eq!(
            causes(&err),
            "state database /var/lib/x/state.db: file is not a database"
        );
        let err = anyhow::anyhow!("inner").context("middle").context("outer");
        assert_eq!(causes(&err), "outer: middle: inner");
    }
}
