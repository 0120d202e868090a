//! The `op-events-forwarder` command: parse arguments, set up logging, hand over to the library.

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use op_events_forwarder::governor::Limits;
use op_events_forwarder::sim::{Faults, SimConfig, SimToken, Simulator};
use op_events_forwarder::{bench, config, demo, shutdown};
use tracing_subscriber::EnvFilter;

/// EX_CONFIG from sysexits.h: the configuration is wrong; restarting will not help.
const EXIT_CONFIG: u8 = 78;

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
enum Command {
    /// Run the daemon.
    Run {
        /// The TOML config file.
        #[arg(long, short, env = "OP_EVENTS_FORWARDER_CONFIG")]
        config: PathBuf,
    },
    /// Check a config file and exit (0 if valid, 78 if not).
    CheckConfig {
        #[arg(long, short, env = "OP_EVENTS_FORWARDER_CONFIG")]
        config: PathBuf,
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
}

fn main() -> ExitCode {
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
        Command::Run { config } => {
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
            match op_events_forwarder::run(config, stop.cancelled_owned()).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(err) => fail(err),
            }
        }
        Command::CheckConfig { config } => match config::load(&config) {
            Ok(_) => {
                println!("{}: ok", config.display());
                ExitCode::SUCCESS
            }
            Err(err) => config_error(&err),
        },
        Command::Simulate {
            listen,
            events,
            rate,
            seed,
            tokens,
            ledger,
            faults,
        } => {
            let mut sim_config = SimConfig::new(listen);
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

/// `--faults`: the simulator's faults as JSON.
fn parse_faults(text: &str) -> Result<Faults, String> {
    serde_json::from_str(text).map_err(|err| format!("invalid faults JSON: {err}"))
}

fn signal_error(err: std::io::Error) -> anyhow::Error {
    anyhow::Error::from(err).context("cannot install signal handlers")
}

fn config_error(err: &config::ConfigError) -> ExitCode {
    eprintln!("error: {err}");
    ExitCode::from(EXIT_CONFIG)
}

fn fail(err: anyhow::Error) -> ExitCode {
    tracing::error!("{err:#}");
    eprintln!("error: {err:#}");
    ExitCode::FAILURE
}

fn init_logging(format: LogFormat, default_level: &str) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}
