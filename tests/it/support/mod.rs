//! Shared harness: a simulator, a temporary directory, configs written as a user would, and
//! waits on the daemon's own progress signal rather than on the clock.

pub mod collector;
pub mod hostile;
pub mod opensearch;
pub mod rsyslog;

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use op_events_forwarder::config::{self, Config};
use op_events_forwarder::sim::jwt::MintClaims;
use op_events_forwarder::sim::{SimConfig, SimToken, Simulator};
use op_events_forwarder::stats::Stats;
use op_events_forwarder::stream::Stream;

/// A plain (non-JWT) token the simulator also accepts; configs using it must name base_url
/// and streams.
pub const TOKEN: &str = "it-token";
pub const ACCOUNT: &str = "it";
pub const SINK: &str = "files";

/// The built binary.
pub const BIN: &str = env!("CARGO_BIN_EXE_op-events-forwarder");

/// A daemon process a test started: killed (SIGKILL) and reaped when dropped, so a test that
/// fails half-way leaves no daemon behind (a regression: a failed rotation test left one
/// running after the whole suite). A test ends it on purpose with [`terminate`] or a kill.
pub struct DaemonProcess(std::process::Child);

impl std::ops::Deref for DaemonProcess {
    type Target = std::process::Child;

    fn deref(&self) -> &std::process::Child {
        &self.0
    }
}

impl std::ops::DerefMut for DaemonProcess {
    fn deref_mut(&mut self) -> &mut std::process::Child {
        &mut self.0
    }
}

impl Drop for DaemonProcess {
    fn drop(&mut self) {
        // Already exited (the usual case) or not: either way nothing is left running.
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Starts `run --config config` at log level `rust_log`, its stdout and stderr appended to
/// `stderr` (so the runs of one test add up in one file, and a test can read all it said).
pub fn spawn_daemon(
    config: &std::path::Path,
    stderr: &std::path::Path,
    rust_log: &str,
) -> DaemonProcess {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(stderr)
        .unwrap();
    std::process::Command::new(BIN)
        .args(["run", "--config"])
        .arg(config)
        .env("RUST_LOG", rust_log)
        .env("NO_COLOR", "1")
        .stdout(std::process::Stdio::from(log.try_clone().unwrap()))
        .stderr(std::process::Stdio::from(log))
        .spawn()
        .map(DaemonProcess)
        .expect("the binary starts")
}

/// Sends SIGHUP, as `systemctl reload` does.
pub fn sighup(child: &std::process::Child) {
    // SAFETY: kill(2) with a pid we own and a valid signal number has no memory effects.
    let rc = unsafe { kill(child.id() as i32, 1) };
    assert_eq!(rc, 0, "kill -HUP {}", child.id());
}

/// Sends SIGTERM, as systemd does to stop a service.
pub fn sigterm(child: &std::process::Child) {
    // SAFETY: kill(2) with a pid we own and a valid signal number has no memory effects.
    let rc = unsafe { kill(child.id() as i32, 15) };
    assert_eq!(rc, 0, "kill -TERM {}", child.id());
}

/// Sends SIGTERM and waits for the process to exit.
pub fn terminate(child: &mut std::process::Child) -> std::process::ExitStatus {
    sigterm(child);
    child.wait().unwrap()
}

unsafe extern "C" {
    fn kill(pid: i32, sig: i32) -> i32;
}

/// How long any wait for progress may take before the test fails.
pub const PATIENCE: Duration = Duration::from_secs(120);

/// A simulator and a scratch directory for one test.
pub struct Env {
    pub dir: tempfile::TempDir,
    pub sim: Simulator,
    /// The JWT in the `token` file: signed by the simulator, every feature, `aud` naming it,
    /// valid for 30 days.
    pub token: String,
}

impl Env {
    pub async fn new(events_per_stream: usize, seed: u64) -> Env {
        Env::with_sim(events_per_stream, seed, |_| {}).await
    }

    /// [`Env::new`], with `configure` changing the simulator's config before it starts.
    pub async fn with_sim(
        events_per_stream: usize,
        seed: u64,
        configure: impl FnOnce(&mut SimConfig),
    ) -> Env {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let mut sim_config = SimConfig::new("127.0.0.1:0".parse().unwrap());
        sim_config.seed = seed;
        sim_config.initial_events = events_per_stream;
        sim_config.tokens = vec![SimToken::all(TOKEN)];
        configure(&mut sim_config);
        let sim = Simulator::start(sim_config)
            .await
            .expect("the simulator starts");
        let token = mint(&sim, &Stream::ALL, Some(time::Duration::days(30)));
        std::fs::write(dir.path().join("token"), format!("{token}\n")).unwrap();
        Env { dir, sim, token }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The output file of a stream.
    pub fn output(&self, stream: Stream) -> PathBuf {
        self.path(&format!("out/{stream}.ndjson"))
    }

    /// A config for this environment; `account_extra` lines go into the account table.
    pub fn config_toml(&self, account_extra: &str) -> String {
        let dir = self.dir.path().display();
        format!(
            r#"
[state]
path = "{dir}/state.db"

[[accounts]]
name = "{ACCOUNT}"
token_file = "{dir}/token"
base_url = "{base}"
start_time = "-2d"
{account_extra}

[admin]
listen = "127.0.0.1:0"

[[sinks]]
name = "{SINK}"
type = "file"
path = "{dir}/out/{{stream}}.ndjson"
"#,
            base = self.sim.base_url()
        )
    }

    pub fn config(&self, account_extra: &str) -> Config {
        config::from_toml_str("it.toml", &self.config_toml(account_extra), &[])
            .expect("the test config is valid")
    }

    /// Every event the simulator has served so far, by stream and uuid.
    pub fn served(&self) -> Vec<(Stream, String)> {
        Stream::ALL
            .into_iter()
            .flat_map(|stream| {
                self.sim
                    .events(stream)
                    .into_iter()
                    .map(move |event| (stream, event.uuid))
            })
            .collect()
    }

    /// Every event served so far by uuid, with its stream and its bytes as served.
    pub fn served_by_uuid(&self) -> HashMap<String, (Stream, String)> {
        Stream::ALL
            .into_iter()
            .flat_map(|stream| {
                self.sim
                    .events(stream)
                    .into_iter()
                    .map(move |event| (event.uuid, (stream, event.json)))
            })
            .collect()
    }

    /// Every line of a stream's output file.
    pub fn lines(&self, stream: Stream) -> Vec<String> {
        match std::fs::read_to_string(self.output(stream)) {
            Ok(text) => text.lines().map(str::to_owned).collect(),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(err) => panic!("cannot read output: {err}"),
        }
    }

    /// Waits until the daemon has delivered every event the simulator has generated so far
    /// (`what` names that moment in a timeout), stops it, and asserts that each stream's
    /// output holds every event exactly once, byte-identical.
    pub async fn drain_and_check(&self, daemon: op_events_forwarder::Daemon, what: &str) {
        let want = generated(&self.sim);
        wait_for(daemon.stats(), what, |s| delivered_all(s, &want)).await;
        daemon.stop().await;
        for stream in Stream::ALL {
            self.assert_exactly_once(stream);
        }
    }

    /// Asserts that the output of a stream holds every event the simulator generated exactly
    /// once, each line byte-identical to the event as served.
    pub fn assert_exactly_once(&self, stream: Stream) {
        let lines = self.lines(stream);
        assert_exactly_once(&self.sim, stream, &lines);
    }
}

pub fn assert_exactly_once(sim: &Simulator, stream: Stream, lines: &[String]) {
    let served: HashMap<String, String> = sim
        .events(stream)
        .into_iter()
        .map(|event| (event.uuid, event.json))
        .collect();
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for line in lines {
        let uuid = uuid_of(line);
        let served_json = served
            .get(&uuid)
            .unwrap_or_else(|| panic!("{stream}: a line the simulator never served: {line}"));
        assert_eq!(line, served_json, "{stream}: event {uuid} was altered");
        *seen
            .entry(served.get_key_value(&uuid).unwrap().0)
            .or_default() += 1;
    }
    let duplicated: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        duplicated.is_empty(),
        "{stream}: delivered more than once: {duplicated:?}"
    );
    let missing: Vec<_> = served
        .keys()
        .filter(|u| !seen.contains_key(u.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "{stream}: {} events missing, e.g. {:?}",
        missing.len(),
        missing.first()
    );
}

pub fn uuid_of(line: &str) -> String {
    let event: serde_json::Value =
        serde_json::from_str(line).unwrap_or_else(|err| panic!("not JSON ({err}): {line}"));
    event["uuid"]
        .as_str()
        .unwrap_or_else(|| panic!("no uuid: {line}"))
        .to_owned()
}

/// Waits until `done` holds for the daemon's stats, woken by each change they report.
pub async fn wait_for(stats: &Stats, what: &str, mut done: impl FnMut(&Stats) -> bool) {
    let mut changes = stats.subscribe();
    let waited = tokio::time::timeout(PATIENCE, async {
        loop {
            changes.borrow_and_update();
            if done(stats) {
                return;
            }
            changes.changed().await.expect("the stats outlive the wait");
        }
    })
    .await;
    assert!(waited.is_ok(), "timed out waiting for {what}");
}

/// True when the sink has delivered at least `n` events of every stream.
pub fn delivered_all(stats: &Stats, n: &HashMap<Stream, usize>) -> bool {
    n.iter()
        .all(|(stream, n)| stats.delivered(SINK, ACCOUNT, *stream) >= *n as u64)
}

pub fn generated(sim: &Simulator) -> HashMap<Stream, usize> {
    Stream::ALL
        .into_iter()
        .map(|stream| (stream, sim.generated(stream)))
        .collect()
}

/// A JWT from `sim` with these features, `aud` naming it, valid for `valid_for` (or forever).
pub fn mint(sim: &Simulator, features: &[Stream], valid_for: Option<time::Duration>) -> String {
    let now = time::OffsetDateTime::now_utc();
    sim.mint_token(&MintClaims {
        audience: sim.audience(),
        features: features.to_vec(),
        issued_at: now,
        expires_at: valid_for.map(|valid_for| now + valid_for),
    })
}

/// An outbox page of these events, as a sink worker hands it to a sink.
pub fn page(seq: u64, events: &[String]) -> op_events_forwarder::store::OutboxPage {
    let array = op_events_forwarder::event::EventArray::new(events.iter().map(String::as_str));
    op_events_forwarder::store::OutboxPage {
        seq,
        events: array.text().to_owned(),
        event_ends: array.ends_blob(),
        n_events: events.len() as u64,
        fetched_at: 1_700_000_000,
    }
}
