//! op-events-forwarder reads a 1Password account's activity from the Events API (audit
//! events, item usages, sign-in attempts) and forwards it to files, syslog and HTTP
//! collectors, losing nothing.
//!
//! # Layout
//!
//! - [`config`]: the TOML file, parsed then validated into [`config::Config`] (no IO).
//! - [`api`]: the Events API client; the only code that speaks HTTP to 1Password.
//! - [`governor`]: one request limiter per account, shared by its streams.
//! - [`poller`]: one task per (account, stream): fetch a page, store it with its cursor.
//! - [`store`]: SQLite: cursors, the outbox of fetched pages, per-sink offsets.
//! - [`sink`]: one worker per (sink, account, stream): deliver from the outbox, then ack.
//! - [`sim`]: the Events API simulator behind `simulate`, `demo` and the tests.
//! - [`demo`]: the simulator and the daemon together, with a summary.
//! - [`shutdown`]: signal handling.
//!
//! [`Daemon::start`] wires them; [`run`] is the daemon until a shutdown future resolves.

pub mod api;
pub mod config;
pub mod demo;
pub mod governor;
pub mod poller;
pub mod retry;
pub mod shutdown;
pub mod sim;
pub mod sink;
pub mod stats;
pub mod store;
pub mod stream;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use secrecy::SecretString;
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{AccountConfig, Config, TokenSource};
use crate::governor::AccountGovernor;
use crate::poller::{PollSettings, StreamPoller};
use crate::sink::{Sink, SinkWorker};
use crate::stats::Stats;
use crate::store::Store;

/// How long a shutdown waits for tasks to finish their batch before giving up on them.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// Runs the daemon until `shutdown` resolves, then stops it in order.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let daemon = Daemon::start(&config).await?;
    shutdown.await;
    daemon.stop().await;
    Ok(())
}

/// The running daemon: pollers and sink workers over one store.
pub struct Daemon {
    /// Cancelled to stop every task; each loop selects on it.
    shutdown: CancellationToken,
    /// Every task the daemon spawned; waited on at stop.
    tasks: TaskTracker,
    stats: Arc<Stats>,
    store: Store,
}

impl Daemon {
    /// Opens the store, reads the tokens and starts every task. Fails before starting
    /// anything if the state file or a token cannot be read.
    pub async fn start(config: &Config) -> anyhow::Result<Daemon> {
        let path = config.state.path.clone();
        let store = tokio::task::spawn_blocking(move || Store::open(&path)).await??;
        let sink_names: Vec<&str> = config.sinks.iter().map(|s| s.name.as_str()).collect();
        let released = store.register_sinks(&sink_names)?;
        for name in released {
            tracing::warn!(sink = %name, "sink no longer configured; its delivery offsets were removed");
        }

        let mut clients = Vec::new();
        for account in &config.accounts {
            let token = read_token(account)?;
            let options = api::ClientOptions {
                base_url: account.base_url.clone(),
                ca_file: account.ca_file.clone(),
                timeout: account.request_timeout,
            };
            let client = api::Client::new(&options, token)
                .with_context(|| format!("account \"{}\"", account.name))?;
            clients.push(client);
        }

        let daemon = Daemon {
            shutdown: CancellationToken::new(),
            tasks: TaskTracker::new(),
            stats: Arc::new(Stats::default()),
            store,
        };
        let sinks: Vec<Arc<Sink>> = config
            .sinks
            .iter()
            .map(|s| Sink::from_config(s).map(Arc::new))
            .collect::<Result<_, _>>()?;
        for (account, client) in config.accounts.iter().zip(clients) {
            daemon.start_account(account, client, &sinks);
        }
        tracing::info!(
            state = %config.state.path.display(),
            accounts = config.accounts.len(),
            sinks = config.sinks.len(),
            "op-events-forwarder started"
        );
        Ok(daemon)
    }

    fn start_account(&self, account: &AccountConfig, client: api::Client, sinks: &[Arc<Sink>]) {
        let governor = Arc::new(AccountGovernor::new());
        for &stream in &account.streams {
            let (appended, _) = watch::channel(0);
            let acked = Arc::new(Notify::new());
            for sink in sinks {
                let worker = SinkWorker {
                    sink: Arc::clone(sink),
                    account: account.name.clone(),
                    stream,
                    store: self.store.clone(),
                    appended: appended.subscribe(),
                    acked: Arc::clone(&acked),
                    stats: Arc::clone(&self.stats),
                };
                self.tasks.spawn(worker.run(self.shutdown.clone()));
            }
            let poller = StreamPoller {
                account: account.name.clone(),
                stream,
                client: client.clone(),
                governor: Arc::clone(&governor),
                store: self.store.clone(),
                settings: PollSettings {
                    page_size: account.page_size,
                    poll_interval: account.poll_interval,
                    start_time: account.start_time.clone(),
                    max_pending_pages: account.max_pending_pages,
                },
                appended,
                acked,
                stats: Arc::clone(&self.stats),
            };
            self.tasks.spawn(poller.run(self.shutdown.clone()));
        }
    }

    /// What has been fetched and delivered so far.
    pub fn stats(&self) -> &Arc<Stats> {
        &self.stats
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Stops fetching, lets each sink worker finish the batch in hand, and waits for every
    /// task (at most [`SHUTDOWN_GRACE`]). What is left in the outbox is safe on disk.
    pub async fn stop(self) {
        self.shutdown.cancel();
        self.tasks.close();
        if tokio::time::timeout(SHUTDOWN_GRACE, self.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                still_running = self.tasks.len(),
                "tasks did not stop within {}s; exiting anyway (their batches will be delivered again)",
                SHUTDOWN_GRACE.as_secs()
            );
        }
        tracing::info!("op-events-forwarder stopped");
    }
}

/// Reads an account's bearer token from its file or environment variable.
fn read_token(account: &AccountConfig) -> anyhow::Result<SecretString> {
    let (raw, origin) = match &account.token {
        TokenSource::File(path) => (
            std::fs::read_to_string(path).with_context(|| {
                format!(
                    "account \"{}\": cannot read token_file {}",
                    account.name,
                    path.display()
                )
            })?,
            format!("token_file {}", path.display()),
        ),
        TokenSource::Env(var) => (
            std::env::var(var).with_context(|| {
                format!(
                    "account \"{}\": token_env {var}: the variable is not set or not UTF-8",
                    account.name
                )
            })?,
            format!("token_env {var}"),
        ),
    };
    let token = raw.trim();
    if token.is_empty() {
        anyhow::bail!("account \"{}\": {origin} is empty", account.name);
    }
    if !token.bytes().all(|b| b.is_ascii_graphic()) {
        anyhow::bail!(
            "account \"{}\": {origin} holds characters a bearer token cannot have (spaces or non-ASCII)",
            account.name
        );
    }
    Ok(SecretString::from(token.to_owned()))
}
