//! op-events-forwarder reads a 1Password account's activity from the Events API (audit
//! events, item usages, sign-in attempts) and forwards it to files, syslog and HTTP
//! collectors, losing nothing.
//!
//! # Layout
//!
//! - [`config`]: the TOML file, parsed then validated into [`config::Config`] (no IO), then
//!   the files it names checked (`config::load` only).
//! - [`account`]: an account's config completed from its token's claims; the token watch.
//! - [`api`]: the Events API client; the only code that speaks HTTP to 1Password.
//! - [`governor`]: one request limiter per account, shared by its streams.
//! - [`pem`]: the PEM files the config names (CA certificates, client certificates and keys).
//! - [`net`]: every TLS client config (the API client's, the syslog sink's): trust, pinning,
//!   and what a refused handshake means.
//! - [`poller`]: one task per (account, stream): fetch a page, store it with its cursor.
//! - [`store`]: SQLite: cursors, the outbox of fetched pages, per-sink offsets.
//! - [`sink`]: one worker per (sink, account, stream): deliver from the outbox, then ack.
//! - [`sim`]: the Events API simulator behind `simulate`, `demo` and the tests.
//! - [`event`]: the few fields sinks read from raw event bytes (uuid, timestamp, category).
//! - [`demo`]: the simulator and the daemon together, with a summary.
//! - [`bench`]: benchmarks that print numbers (`bench governor`, `bench pipeline`).
//! - [`shutdown`]: signal handling.
//! - [`systemd`]: readiness, status, reload and stop notifications, the watchdog.
//! - [`token`]: reading bearer tokens (at start, and again after a 401).
//!
//! [`Daemon::start`] wires them; [`run`] is the daemon until a shutdown future resolves.

pub mod account;
pub mod admin;
pub mod api;
pub mod base64;
pub mod bench;
pub mod check;
pub mod config;
pub mod demo;
pub mod event;
pub mod governor;
pub mod net;
pub mod pem;
pub mod poller;
pub mod retry;
pub mod shutdown;
pub mod sim;
pub mod sink;
pub mod stats;
pub mod status;
pub mod store;
pub mod stream;
pub mod systemd;
pub mod token;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use secrecy::{ExposeSecret as _, SecretString};
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::account::config::{AccountConfig, TokenSource};
use crate::config::Config;
use crate::governor::AccountGovernor;
use crate::poller::StreamPoller;
use crate::sink::{Sink, SinkWorker};
use crate::stats::Stats;
use crate::store::Store;

/// How long a shutdown waits for tasks to finish their batch before giving up on them.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// Runs the daemon until `shutdown` resolves, then stops it in order.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    run_with(config, &StartOptions::default(), shutdown).await
}

/// [`run`], with the command line's start options.
pub async fn run_with(
    config: Config,
    options: &StartOptions,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let daemon = Daemon::start_with(&config, options).await?;
    shutdown.await;
    daemon.stop().await;
    Ok(())
}

/// Choices made on the command line rather than in the config.
#[derive(Debug, Clone, Default)]
pub struct StartOptions {
    /// `--forget-removed-accounts`: delete the state (cursors, pending pages, offsets) of
    /// accounts that are no longer configured, instead of refusing to start.
    pub forget_removed_accounts: bool,
}

/// The running daemon: pollers and sink workers over one store.
pub struct Daemon {
    /// Cancelled to stop every task; each loop selects on it.
    shutdown: CancellationToken,
    /// Every task the daemon spawned; waited on at stop.
    tasks: TaskTracker,
    stats: Arc<Stats>,
    store: Store,
    /// What a reload reaches: the sinks, and each account's token source and client.
    sinks: Vec<Arc<Sink>>,
    tokens: Vec<(String, TokenSource, api::Client)>,
    /// `state.max_outbox_bytes`, for the pollers.
    max_outbox_bytes: u64,
    /// Which tasks are busy in one operation, for the watchdog.
    liveness: Arc<systemd::Liveness>,
    /// The longest one operation may take before its task counts as wedged.
    wedged_after: Duration,
    /// Counts reloads, for the sink workers.
    reloads: tokio::sync::watch::Sender<u64>,
    /// Where the admin endpoint listens, once bound.
    admin_addr: Option<std::net::SocketAddr>,
}

impl Daemon {
    /// Opens the store, reads the tokens and starts every task. Fails before starting
    /// anything if the state file or a token cannot be read.
    pub async fn start(config: &Config) -> anyhow::Result<Daemon> {
        Daemon::start_with(config, &StartOptions::default()).await
    }

    /// [`Daemon::start`], with the command line's start options. Fails before starting
    /// anything if the state file or a token cannot be read, a token cannot serve its
    /// account's config, or the state holds accounts no longer configured (unless
    /// `options.forget_removed_accounts`).
    pub async fn start_with(config: &Config, options: &StartOptions) -> anyhow::Result<Daemon> {
        let mut accounts = Vec::new();
        let now = time::OffsetDateTime::now_utc();
        for account in &config.accounts {
            let (token, origin) = read_token(account)?;
            let claims = api::jwt::decode_claims(token.expose_secret());
            let resolved = account::resolve(account, &origin, claims, now)?;
            if let Some(warning) = &resolved.warning {
                tracing::warn!(account = %account.name, "{warning}");
            }
            let client_options = api::ClientOptions {
                base_url: resolved.base_url.clone(),
                ca_file: account.ca_file.clone(),
                timeout: account.request_timeout,
                max_response_bytes: account.max_response_bytes,
            };
            let client = api::Client::new(&client_options, token)
                .with_context(|| format!("account \"{}\"", account.name))?;
            tracing::info!(
                account = %account.name,
                base_url = %resolved.base_url,
                base_url_from = resolved.base_url_from,
                streams = %resolved.streams.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(","),
                api_version = account.api_version.as_str(),
                token_expires_at = %resolved
                    .claims
                    .as_ref()
                    .and_then(|c| c.expires_at)
                    .map_or_else(|| "never".to_owned(), api::rfc3339),
                "account configured"
            );
            accounts.push((account, resolved, client));
        }

        let path = config.state.path.clone();
        let store = tokio::task::spawn_blocking(move || Store::open(&path)).await??;
        let configured: Vec<&str> = config.accounts.iter().map(|a| a.name.as_str()).collect();
        check_removed_accounts(&store, &configured, options.forget_removed_accounts)?;
        let sink_names: Vec<&str> = config.sinks.iter().map(|s| s.name.as_str()).collect();
        let released = store.register_sinks(&sink_names)?;
        for name in released {
            tracing::warn!(sink = %name, "sink no longer configured; its delivery offsets were removed");
        }

        let sinks: Vec<Arc<Sink>> = config
            .sinks
            .iter()
            .map(|s| Sink::from_config(s, Some(&store)).map(Arc::new))
            .collect::<Result<_, _>>()?;
        let mut daemon = Daemon {
            shutdown: CancellationToken::new(),
            tasks: TaskTracker::new(),
            stats: Arc::new(Stats::default()),
            store,
            sinks,
            tokens: Vec::new(),
            max_outbox_bytes: config.state.max_outbox_bytes,
            liveness: Arc::default(),
            wedged_after: wedged_after(config),
            reloads: tokio::sync::watch::Sender::new(0),
            admin_addr: None,
        };
        // HEC's health at start: a clear word when it is unreachable, disabled or refuses the
        // token. Nothing waits for it: events stay in the outbox until HEC takes them.
        for sink in daemon
            .sinks
            .iter()
            .filter(|s| matches!(***s, Sink::Http(_)))
        {
            let sink = Arc::clone(sink);
            daemon.tasks.spawn(async move {
                let Sink::Http(http) = &*sink else { return };
                match http.check_health().await {
                    Some(Ok(said)) => tracing::info!(sink = %http.name(), %said, "HEC health check passed"),
                    Some(Err(problem)) => tracing::error!(sink = %http.name(), %problem, "HEC health check failed; events wait in the outbox until HEC takes them"),
                    None => {}
                }
            });
        }
        let mut token_expiry = Vec::new();
        let mut polled = Vec::new();
        let mut governors = Vec::new();
        for (account, resolved, client) in accounts {
            let governor = daemon.start_account(account, &resolved, client.clone(), &daemon.sinks);
            governors.push((account.name.clone(), governor));
            daemon
                .tokens
                .push((account.name.clone(), account.token.clone(), client));
            token_expiry.push((
                account.name.clone(),
                resolved.claims.as_ref().and_then(|c| c.expires_at),
            ));
            for &stream in &resolved.streams {
                polled.push((account.name.clone(), stream, account.poll_interval));
            }
        }
        if let Some(listen) = config.admin.listen {
            let admin = Arc::new(admin::Admin {
                config: Arc::new(config.clone()),
                stats: Arc::clone(&daemon.stats),
                store: daemon.store.clone(),
                started_at: time::OffsetDateTime::now_utc(),
                token_expiry,
                streams: polled,
                governors,
            });
            match admin::serve(admin, listen, daemon.shutdown.clone()).await {
                Ok((bound, serving)) => {
                    tracing::info!(address = %bound, "admin endpoint listening: /metrics /healthz /readyz /status");
                    daemon.admin_addr = Some(bound);
                    daemon.tasks.spawn(serving);
                }
                Err(err) => {
                    // Forwarding matters more than being watched: go on without it, loudly.
                    tracing::error!(address = %listen, error = %err, "cannot serve the admin endpoint; running without /metrics, /healthz, /readyz and /status (set [admin] listen to a free address, or \"\" for none)");
                }
            }
        }
        tracing::info!(
            state = %config.state.path.display(),
            accounts = config.accounts.len(),
            sinks = config.sinks.len(),
            "op-events-forwarder started"
        );
        Ok(daemon)
    }

    /// Starts the account's token watch, pollers and sink workers; returns its governor.
    fn start_account(
        &self,
        account: &AccountConfig,
        resolved: &account::ResolvedAccount,
        client: api::Client,
        sinks: &[Arc<Sink>],
    ) -> Arc<AccountGovernor> {
        let name: Arc<str> = account.name.as_str().into();
        let shared_config = Arc::new(account.clone());
        let watched = client.clone();
        let expires_at = resolved.claims.as_ref().and_then(|c| c.expires_at);
        // Every request to the API counts against the account's limits, introspection too.
        let governor = Arc::new(AccountGovernor::new(account.limits));
        let introspect_governor = Arc::clone(&governor);
        self.tasks.spawn(account::watch_token(
            move || {
                let client = watched.clone();
                let governor = Arc::clone(&introspect_governor);
                async move {
                    let permit = governor.acquire().await;
                    let answer = client.introspect().await;
                    // Its answer tells of the account's budget like any other.
                    if let Ok(answer) = &answer {
                        permit.observe(answer.budget);
                    }
                    answer
                }
            },
            expires_at,
            time::OffsetDateTime::now_utc,
            move |report| account::log_token_report(&name, report),
            self.shutdown.clone(),
        ));
        for &stream in &resolved.streams {
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
                    liveness: Arc::clone(&self.liveness),
                    reloaded: self.reloads.subscribe(),
                };
                self.tasks.spawn(worker.run(self.shutdown.clone()));
            }
            let poller = StreamPoller {
                account: account.name.clone(),
                stream,
                client: client.clone(),
                governor: Arc::clone(&governor),
                store: self.store.clone(),
                config: Arc::clone(&shared_config),
                max_outbox_bytes: self.max_outbox_bytes,
                liveness: Arc::clone(&self.liveness),
                token_source: account.token.clone(),
                appended,
                acked,
                stats: Arc::clone(&self.stats),
            };
            self.tasks.spawn(poller.run(self.shutdown.clone()));
        }
        governor
    }

    /// SIGHUP: closes the file sinks' files, so the next batch opens each path afresh (after
    /// logrotate), and reads every account's token again. Config changes need a restart.
    pub fn reload(&self) {
        for sink in &self.sinks {
            sink.reopen();
        }
        for (account, source, client) in &self.tokens {
            match token::read(account, source) {
                Ok(token) => {
                    let changed = client.replace_token(token);
                    tracing::info!(%account, changed, "read the token again");
                }
                Err(err) => {
                    tracing::error!(%account, error = %err, "cannot read the token again; keeping the one in use");
                }
            }
        }
        self.reloads.send_modify(|n| *n += 1);
        tracing::info!(
            "reloaded: files reopened, tokens and sink credentials read again, refused deliveries \
             tried again (config changes need a restart)"
        );
    }

    /// Pings systemd's watchdog every `every` while no task is wedged (see [`systemd`]).
    pub fn start_watchdog(&self, every: Duration) {
        self.tasks.spawn(systemd::watchdog(
            Arc::clone(&self.liveness),
            every,
            self.wedged_after,
            systemd::ping,
            self.shutdown.clone(),
        ));
    }

    /// A line for `systemctl status`: how many streams are current, which are behind (by how
    /// much: now minus their newest event) and which cannot progress, and why:
    /// `2 of 3 streams current; acme/signinattempts behind by 2h 5m: the API refused the
    /// token (HTTP 401)`.
    pub fn status_line(&self) -> String {
        let streams = self.stats.streams();
        let now = time::OffsetDateTime::now_utc();
        let current = streams
            .iter()
            .filter(|(_, s)| s.caught_up && s.unhealthy.is_none())
            .count();
        let mut line = format!("{current} of {} streams current", streams.len());
        let others: Vec<String> = streams
            .iter()
            .filter(|(_, s)| !(s.finished || s.caught_up && s.unhealthy.is_none()))
            .map(|((account, stream), s)| {
                let mut about = format!("{account}/{stream}");
                if let Some(newest) = s.newest_event {
                    about.push_str(&format!(
                        " behind by {}",
                        status::duration((now - newest).whole_seconds())
                    ));
                }
                if let Some(why) = &s.unhealthy {
                    about.push_str(&format!(": {why}"));
                }
                about
            })
            .collect();
        if !others.is_empty() {
            line.push_str("; ");
            line.push_str(&others.join("; "));
        }
        line
    }

    /// Where the admin endpoint listens, if it does.
    pub fn admin_addr(&self) -> Option<std::net::SocketAddr> {
        self.admin_addr
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

/// How long one operation (a request, a store call, a delivery) may take before its task
/// counts as wedged: twice the longest configured timeout, and never under five minutes (a
/// slow disk or a large batch is not a hang).
fn wedged_after(config: &Config) -> Duration {
    let longest = config
        .accounts
        .iter()
        .map(|account| account.request_timeout)
        .chain(config.sinks.iter().filter_map(|sink| sink.timeout()))
        .max()
        .unwrap_or_default();
    (longest * 2).max(Duration::from_secs(300))
}

/// Refuses to start while the state holds cursors or pages of accounts that are no longer
/// configured (a rename or a removal must not silently drop them), unless `forget` says to
/// delete them; then logs what was dropped.
fn check_removed_accounts(store: &Store, configured: &[&str], forget: bool) -> anyhow::Result<()> {
    let removed: Vec<String> = store
        .accounts()?
        .into_iter()
        .filter(|name| !configured.contains(&name.as_str()))
        .collect();
    if removed.is_empty() {
        return Ok(());
    }
    if !forget {
        anyhow::bail!(
            "state database {}: holds cursors of accounts no longer configured: {}; configure them again under \
             the same name to resume them, or start with --forget-removed-accounts to delete their state",
            store.path().display(),
            removed.join(", ")
        );
    }
    for name in removed {
        let dropped = store.forget_account(&name)?;
        tracing::warn!(
            account = %name,
            streams = %dropped.streams.join(","),
            pending_pages = dropped.pending_pages,
            pending_events = dropped.pending_events,
            "account no longer configured; its cursors and undelivered pages were deleted (--forget-removed-accounts)"
        );
    }
    Ok(())
}

/// Reads an account's bearer token from its file or environment variable; also returns where
/// it came from (`token_file PATH` or `token_env NAME`), for messages.
fn read_token(account: &AccountConfig) -> anyhow::Result<(SecretString, String)> {
    let origin = match &account.token {
        TokenSource::File(path) => format!("token_file {}", path.display()),
        TokenSource::Env(var) => format!("token_env {var}"),
    };
    Ok((token::read(&account.name, &account.token)?, origin))
}
