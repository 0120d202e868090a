//! The built binary: config errors and exit codes, SIGTERM, and SIGKILL at any moment.

use std::collections::HashMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use op_events_forwarder::stream::Stream;

use crate::support::{Env, PATIENCE, uuid_of};

use crate::support::BIN;

fn run_with_config(path: &Path) -> std::process::Output {
    Command::new(BIN)
        .args(["run", "--config"])
        .arg(path)
        .env_remove("RUST_LOG")
        .output()
        .expect("the binary runs")
}

#[test]
fn a_bad_config_exits_78_naming_the_key_and_starts_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    let state = dir.path().join("state.db");
    std::fs::write(
        &path,
        format!(
            r#"
[state]
path = "{}"

[[accounts]]
name = "acme"
token_env = "SOME_TOKEN"
base_url = "https://events.1password.com"
page_size = 5000

[[sinks]]
name = "archive"
type = "file"
path = "/tmp/x/{{stream}}.ndjson"
"#,
            state.display()
        ),
    )
    .unwrap();
    let out = run_with_config(&path);
    assert_eq!(out.status.code(), Some(78));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("accounts[0].page_size: expected an integer from 1 to 1000, got 5000"),
        "{stderr}"
    );
    assert!(!state.exists(), "nothing was started");
}

#[test]
fn a_missing_config_file_exits_78_naming_it() {
    let out = run_with_config(Path::new("/nonexistent/op-events-forwarder.toml"));
    assert_eq!(out.status.code(), Some(78));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("/nonexistent/op-events-forwarder.toml"),
        "{stderr}"
    );
}

#[test]
fn the_shipped_configs_pass_check_config() {
    for file in ["config/op-events-forwarder.toml", "config/demo.toml"] {
        let out = Command::new(BIN)
            .args(["check-config", "--config", file])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{file}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// A config in `dir` for `check-config` and `run`: `@` stands for the directory, `account` is
/// added to the account and `sink` replaces the file sink.
fn config_in(dir: &Path, state: &str, account: &str, sink: Option<&str>) -> std::path::PathBuf {
    let file_sink =
        "[[sinks]]\nname = \"archive\"\ntype = \"file\"\npath = \"@out/{stream}.ndjson\"";
    let toml = format!(
        "[state]\npath = \"{state}\"\n\n[[accounts]]\nname = \"acme\"\ntoken_env = \"SOME_TOKEN\"\n\
         base_url = \"https://events.1password.com\"\n{account}\n\n{}\n",
        sink.unwrap_or(file_sink)
    );
    let path = dir.join("forwarder.toml");
    std::fs::write(&path, toml.replace('@', &format!("{}/", dir.display()))).unwrap();
    path
}

fn check_config(path: &Path) -> std::process::Output {
    Command::new(BIN)
        .args(["check-config", "--config"])
        .arg(path)
        .env_remove("RUST_LOG")
        .output()
        .expect("the binary runs")
}

#[test]
fn check_config_and_run_refuse_the_files_run_could_not_use() {
    let dir = tempfile::tempdir().unwrap();
    let at = |text: &str| text.replace('@', &format!("{}/", dir.path().display()));
    std::fs::write(dir.path().join("not-pem.pem"), "hello\n").unwrap();
    std::fs::create_dir_all(dir.path().join("out/itemusages")).unwrap();
    let tls_sink = |lines: &str| {
        format!(
            "[[sinks]]\nname = \"siem\"\ntype = \"syslog\"\naddress = \"127.0.0.1:6514\"\n\
             transport = \"tls\"\n{lines}"
        )
    };
    let with_client_key = tls_sink("client_cert = \"@not-pem.pem\"\nclient_key = \"@missing.key\"");
    let with_ca = tls_sink("ca_file = \"@not-pem.pem\"");
    let cases: [(&str, &str, Option<&str>, &str); 8] = [
        (
            "@state.db",
            "ca_file = \"@missing.pem\"",
            None,
            "accounts[0].ca_file: \"@missing.pem\": cannot read the file: No such file or directory (os error 2)",
        ),
        (
            "@state.db",
            "ca_file = \"@not-pem.pem\"",
            None,
            "accounts[0].ca_file: \"@not-pem.pem\": no PEM certificate in the file",
        ),
        (
            "@state.db",
            "",
            Some(&with_ca),
            "sinks[0].ca_file: \"@not-pem.pem\": no PEM certificate in the file",
        ),
        (
            "@state.db",
            "",
            Some(&with_client_key),
            "sinks[0].client_cert: \"@not-pem.pem\": no PEM certificate in the file",
        ),
        (
            "@state.db",
            "",
            Some("[[sinks]]\nname = \"archive\"\ntype = \"file\"\npath = \"@out/{stream}\""),
            "sinks[0].path: \"@out/itemusages\": is a directory, not a file",
        ),
        (
            "@state.db",
            "",
            Some("[[sinks]]\nname = \"archive\"\ntype = \"file\"\npath = \"/\""),
            "sinks[0].path: expected the path of a file, not of a directory, got \"/\"",
        ),
        (
            ":memory:",
            "",
            None,
            "state.path: expected the path of a file on disk, so that cursors survive restarts (not an \
             in-memory or temporary SQLite database, nor an SQLite file: URI), got \":memory:\"",
        ),
        (
            "@state.db",
            "ca_file = \"@ca\\u0000.pem\"",
            None,
            "accounts[0].ca_file: expected a path without control characters, got \"@ca\\0.pem\"",
        ),
    ];
    for (state, account, sink, expected) in cases {
        let config = config_in(dir.path(), state, account, sink);
        let expected = format!("error: {}: {}\n", config.display(), at(expected));
        for out in [check_config(&config), run_with_config(&config)] {
            assert_eq!(out.status.code(), Some(78), "{expected}");
            assert_eq!(String::from_utf8_lossy(&out.stderr), expected);
            assert!(!out.stderr.contains(&0), "no raw NUL in {expected}");
        }
        assert!(!dir.path().join("state.db").exists(), "nothing was started");
    }
}

#[test]
fn an_integer_beyond_64_bits_exits_78_naming_the_key_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_in(
        dir.path(),
        "@state.db",
        "page_size = 99999999999999999999",
        None,
    );
    let out = check_config(&config);
    assert_eq!(out.status.code(), Some(78));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        format!(
            "error: {}: accounts[0].page_size: invalid TOML at line 8, column 13: the integer does not fit in \
             64 bits (TOML integers are from -9223372036854775808 to 9223372036854775807)\n",
            config.display()
        )
    );
}

#[test]
fn logs_to_a_pipe_carry_no_colour_codes() {
    let dir = tempfile::tempdir().unwrap();
    // Valid, so `run` starts logging, then fails: the token's variable is not set.
    let config = config_in(dir.path(), "@state.db", "streams = [\"auditevents\"]", None);
    for no_color in [None, Some("")] {
        let mut command = Command::new(BIN);
        command
            .args(["run", "--config"])
            .arg(&config)
            .env_remove("RUST_LOG")
            .env_remove("SOME_TOKEN")
            .env_remove("NO_COLOR");
        if let Some(value) = no_color {
            command.env("NO_COLOR", value);
        }
        let out = command.output().expect("the binary runs");
        // 66: a token that cannot be read is not cured by restarting.
        assert_eq!(out.status.code(), Some(66));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("ERROR") && stderr.contains("SOME_TOKEN"),
            "{stderr}"
        );
        assert!(!stderr.contains("\x1b["), "{stderr:?}");
    }
}

/// A running daemon process.
struct Daemon(Child);

impl Daemon {
    fn start(config: &Path) -> Daemon {
        let child = Command::new(BIN)
            .args(["run", "--config"])
            .arg(config)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("the binary starts");
        Daemon(child)
    }

    fn kill9(mut self) {
        self.0.kill().unwrap();
        self.0.wait().unwrap();
    }

    fn terminate(mut self) -> std::process::ExitStatus {
        crate::support::terminate(&mut self.0)
    }
}

fn output_lines(env: &Env) -> HashMap<Stream, Vec<String>> {
    Stream::ALL
        .into_iter()
        .map(|stream| (stream, env.lines(stream)))
        .collect()
}

/// Waits until the output files hold at least `n` lines in all, checking them as they grow.
async fn wait_for_lines(env: &Env, n: usize) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let total: usize = output_lines(env).values().map(Vec::len).sum();
        if total >= n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {n} lines, have {total}"
        );
        // The daemon is another process: its files are the only signal it gives.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_any_moment_loses_nothing_and_sigterm_exits_cleanly() {
    let env = Env::new(5_000, 21).await;
    let config = env.path("config.toml");
    std::fs::write(&config, env.config_toml("page_size = 250")).unwrap();
    let total: usize = Stream::ALL.iter().map(|s| env.sim.generated(*s)).sum();

    // Kill the daemon three times while it works, each time further along.
    let mut kills = 0;
    for fraction in [10, 35, 60] {
        let daemon = Daemon::start(&config);
        wait_for_lines(&env, total * fraction / 100).await;
        daemon.kill9();
        kills += 1;
    }

    // Then let it finish, and stop it the way systemd does.
    let daemon = Daemon::start(&config);
    let deadline = Instant::now() + PATIENCE;
    loop {
        let lines = output_lines(&env);
        let distinct: usize = lines
            .values()
            .map(|l| {
                l.iter()
                    .map(|line| uuid_of(line))
                    .collect::<std::collections::HashSet<_>>()
                    .len()
            })
            .sum();
        if distinct == total {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "timed out: {distinct} of {total} events delivered"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let status = daemon.terminate();
    assert_eq!(
        status.code(),
        Some(0),
        "SIGTERM stops the daemon with exit 0"
    );

    // Nothing lost, nothing altered; duplicates only from the batches in flight at a kill
    // (a batch is at most 8 pages of 250 events, per stream).
    for (stream, lines) in output_lines(&env) {
        let served: HashMap<String, String> = env
            .sim
            .events(stream)
            .into_iter()
            .map(|e| (e.uuid, e.json))
            .collect();
        let mut seen: HashMap<String, usize> = HashMap::new();
        for line in &lines {
            let uuid = uuid_of(line);
            assert_eq!(Some(line), served.get(&uuid), "{stream}: {uuid} intact");
            *seen.entry(uuid).or_default() += 1;
        }
        assert_eq!(seen.len(), served.len(), "{stream}: every event arrived");
        let extra = lines.len() - seen.len();
        assert!(
            extra <= kills * 8 * 250,
            "{stream}: {extra} duplicates, more than the batches in flight at {kills} kills"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removed_accounts_stop_the_start_until_forgotten() {
    let env = Env::new(50, 22).await;
    let state = env.path("state.db");
    let store = op_events_forwarder::store::Store::open(&state).unwrap();
    store
        .append_page(
            "gone",
            Stream::AuditEvents,
            r#"[{"uuid":"G"}]"#,
            1,
            "c-gone",
        )
        .unwrap();
    drop(store);
    let config = env.path("config.toml");
    std::fs::write(&config, env.config_toml("")).unwrap();

    let out = run_with_config(&config);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("holds cursors of accounts no longer configured: gone;")
            && stderr.contains("--forget-removed-accounts"),
        "{stderr}"
    );
    assert!(
        env.lines(Stream::AuditEvents).is_empty(),
        "nothing was fetched"
    );

    let child = Command::new(BIN)
        .args([
            "--log-format",
            "json",
            "run",
            "--forget-removed-accounts",
            "--config",
        ])
        .arg(&config)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary starts");
    let daemon = Daemon(child);
    wait_for_lines(&env, 150).await;
    let child = daemon.0;
    crate::support::sigterm(&child);
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(
            "account no longer configured; its cursors and undelivered pages were deleted"
        ) && stderr.contains(r#""account":"gone""#)
            && stderr.contains(r#""pending_pages":1"#),
        "{stderr}"
    );
    let store = op_events_forwarder::store::Store::open(&state).unwrap();
    assert_eq!(store.accounts().unwrap(), ["it"]);
}

/// Runs `run --config` to its end with a deadline, returning its output.
fn run_to_end(config: &Path) -> std::process::Output {
    let child = Command::new(BIN)
        .args(["run", "--config"])
        .arg(config)
        .env("RUST_LOG", "warn")
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.wait_with_output().unwrap()
}

/// Waits until the daemon's lock file names a process, and returns that pid.
fn locked_by(state: &Path) -> u32 {
    let lock = op_events_forwarder::store::lock_path(state);
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(pid) = std::fs::read_to_string(&lock)
            .ok()
            .and_then(|text| text.trim().parse().ok())
        {
            return pid;
        }
        assert!(Instant::now() < deadline, "no daemon took the lock");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_daemon_on_the_same_state_is_refused_naming_the_first() {
    let env = Env::new(200, 31).await;
    let config = env.path("config.toml");
    std::fs::write(&config, env.config_toml("")).unwrap();
    let state = env.path("state.db");
    let first = Daemon::start(&config);
    let pid = locked_by(&state);
    assert_eq!(pid, first.0.id());
    let out = tokio::task::spawn_blocking({
        let config = config.clone();
        move || run_to_end(&config)
    })
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(65), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "in use by another op-events-forwarder (pid {pid}) (lock file {}.lock)",
            state.display()
        )),
        "{stderr}"
    );
    assert!(first.terminate().success());
}

/// The harness itself: a test that fails while its daemon runs must not leave it running.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_a_failed_test_started_is_killed_with_it() {
    let env = Env::new(10, 90).await;
    let config = env.path("config.toml");
    std::fs::write(&config, env.config_toml("")).unwrap();
    let daemon = crate::support::spawn_daemon(&config, &env.path("stderr"), "info");
    let pid = daemon.id();
    let failed = std::thread::spawn(move || {
        let _daemon = daemon;
        panic!("a test fails half-way");
    })
    .join();
    assert!(failed.is_err());
    // Reaped by the guard, so no zombie holds the pid either.
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "daemon {pid} still runs"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_daemons_started_together_on_a_new_state_one_runs_one_is_refused() {
    for round in 0..5 {
        let env = Env::new(100, 40 + round).await;
        let config = env.path("config.toml");
        std::fs::write(&config, env.config_toml("")).unwrap();
        let a = Daemon::start(&config);
        let b = Daemon::start(&config);
        let winner = locked_by(&env.path("state.db"));
        let (winner, loser) = if winner == a.0.id() { (a, b) } else { (b, a) };
        let lost = tokio::task::spawn_blocking(move || loser.0.wait_with_output().unwrap())
            .await
            .unwrap();
        assert_eq!(lost.status.code(), Some(65), "round {round}");
        // The winner made a whole state and delivers from it.
        let want: usize = Stream::ALL.iter().map(|s| env.sim.generated(*s)).sum();
        let deadline = Instant::now() + PATIENCE;
        while Stream::ALL
            .iter()
            .map(|s| env.lines(*s).len())
            .sum::<usize>()
            < want
        {
            assert!(
                Instant::now() < deadline,
                "round {round}: the winner delivered"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(winner.terminate().success());
        for stream in Stream::ALL {
            env.assert_exactly_once(stream);
        }
    }
}

#[test]
fn an_unusable_state_file_exits_65_and_is_left_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.db");
    let config = dir.path().join("config.toml");
    std::fs::write(dir.path().join("token"), "tok\n").unwrap();
    std::fs::write(
        &config,
        format!(
            r#"
[state]
path = "{state}"

[[accounts]]
name = "acme"
token_file = "{dir}/token"
base_url = "http://127.0.0.1:9"
streams = ["auditevents"]

[[sinks]]
name = "archive"
type = "file"
path = "{dir}/out/{{stream}}.ndjson"
"#,
            state = state.display(),
            dir = dir.path().display()
        ),
    )
    .unwrap();
    for (contents, says) in [
        (&b""[..], "the file exists but is empty (0 bytes)"),
        (
            b"PK\x03\x04 a zip file, not a database",
            "it is not a SQLite database",
        ),
    ] {
        std::fs::write(&state, contents).unwrap();
        let out = run_to_end(&config);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(65), "{stderr}");
        assert!(stderr.contains(says), "{stderr}");
        assert_eq!(std::fs::read(&state).unwrap(), contents, "untouched");
        assert!(!dir.path().join("state.db-wal").exists());
    }
}

#[test]
fn demo_progress_to_a_pipe_is_plain_lines() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args(["demo", "--events", "200", "--out"])
        .arg(dir.path().join("demo"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(!stderr.contains('\r'), "{stderr:?}");
    let last = stderr
        .lines()
        .filter(|line| line.contains("auditevents 200/200"))
        .count();
    assert_eq!(last, 1, "the final progress line once: {stderr}");
}

/// No Docker engine runs here: the image's promises are read off the Dockerfile (and
/// hadolint, in the test script, lints it).
#[test]
fn the_dockerfile_builds_as_the_tests_do_and_runs_unprivileged() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dockerfile = std::fs::read_to_string(root.join("Dockerfile")).unwrap();
    let instructions: Vec<&str> = dockerfile
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .collect();
    let test_script = std::fs::read_to_string(root.join("scripts/test")).unwrap();
    // Both build from Cargo.lock as it is.
    assert!(test_script.contains("cargo test --locked"));
    assert!(
        instructions
            .iter()
            .any(|line| line.starts_with("RUN cargo build --locked --release")),
        "the release build of the tests"
    );
    let final_stage = &instructions[instructions
        .iter()
        .rposition(|line| line.starts_with("FROM "))
        .unwrap()..];
    let user = final_stage
        .iter()
        .rfind(|line| line.starts_with("USER "))
        .expect("a USER in the final stage");
    let uid = user["USER ".len()..].split(':').next().unwrap();
    assert!(
        uid.parse::<u32>().is_ok_and(|uid| uid != 0),
        "runs as a numeric non-root user: {user}"
    );
    assert!(final_stage.contains(&"STOPSIGNAL SIGTERM"));
    let health = final_stage
        .iter()
        .position(|line| line.starts_with("HEALTHCHECK"))
        .expect("a HEALTHCHECK");
    assert!(
        final_stage[health..=health + 1]
            .join(" ")
            .contains(r#"CMD ["/usr/local/bin/op-events-forwarder", "health", "--config""#),
        "the binary asks its own admin endpoint"
    );
    assert!(final_stage.contains(&"ENV OP_EVENTS_FORWARDER__ADMIN__LISTEN=0.0.0.0:9464"));
    assert!(
        final_stage
            .iter()
            .any(|line| line.starts_with("VOLUME") && line.contains("/var/lib/op-events-forwarder")),
        "the state is a volume"
    );
    let ignore = std::fs::read_to_string(root.join(".dockerignore")).unwrap();
    for kept_out in ["target/", ".git/", "*.db"] {
        assert!(ignore.lines().any(|line| line == kept_out), "{kept_out}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn systemd_hears_ready_status_watchdog_reloading_and_stopping() {
    use std::os::unix::net::UnixDatagram;
    let env = Env::new(100, 33).await;
    let config = env.path("config.toml");
    std::fs::write(&config, env.config_toml("")).unwrap();
    let socket_path = env.path("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket.set_read_timeout(Some(PATIENCE)).unwrap();
    let child = Command::new(BIN)
        .args(["run", "--config"])
        .arg(&config)
        .env("NOTIFY_SOCKET", &socket_path)
        .env("WATCHDOG_USEC", "400000")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut daemon = Daemon(child);
    let next = |socket: &UnixDatagram| -> String {
        let mut buf = [0u8; 4096];
        let n = socket.recv(&mut buf).expect("a notification in time");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    let ready = tokio::task::block_in_place(|| next(&socket));
    assert!(ready.starts_with("READY=1\nSTATUS=started; "), "{ready:?}");
    // The watchdog pings (at half the interval) while every task is alive.
    let pings = tokio::task::block_in_place(|| {
        (0..20)
            .map(|_| next(&socket))
            .filter(|m| m.trim_end() == "WATCHDOG=1")
            .count()
    });
    assert!(pings >= 3, "{pings} pings");
    // A reload says so, and that it is over.
    // SAFETY: kill(2) with a pid we own and a valid signal number has no memory effects.
    assert_eq!(unsafe { kill(daemon.0.id() as i32, 1) }, 0);
    let heard: Vec<String> = tokio::task::block_in_place(|| {
        let mut heard = Vec::new();
        while !heard.iter().any(|m: &String| m.starts_with("READY=1")) {
            heard.push(next(&socket));
        }
        heard
    });
    assert!(
        heard
            .iter()
            .any(|m| m.starts_with("RELOADING=1\nMONOTONIC_USEC=")),
        "{heard:?}"
    );
    crate::support::sigterm(&daemon.0);
    let stopping = tokio::task::block_in_place(|| {
        loop {
            let message = next(&socket);
            if message.starts_with("STOPPING=1") {
                break message;
            }
        }
    });
    assert!(stopping.contains("STATUS=stopping"), "{stopping:?}");
    assert!(daemon.0.wait().unwrap().success());
}

unsafe extern "C" {
    fn kill(pid: i32, sig: i32) -> i32;
}

/// The Kubernetes example: one replica that never overlaps another, its state on the
/// claim, the token from a Secret, the probes on the admin endpoint's paths, a config that
/// loads and agrees with the mounts.
#[test]
fn the_kubernetes_example_holds_together() {
    use yaml_rust2::{Yaml, YamlLoader};
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(root.join("deploy/kubernetes.yaml")).unwrap();
    let docs = YamlLoader::load_from_str(&text).unwrap();
    let kind = |kind: &str| -> &Yaml {
        docs.iter()
            .find(|doc| doc["kind"].as_str() == Some(kind))
            .unwrap_or_else(|| panic!("a {kind}"))
    };
    let deployment = kind("Deployment");
    assert_eq!(deployment["spec"]["replicas"].as_i64(), Some(1));
    assert_eq!(
        deployment["spec"]["strategy"]["type"].as_str(),
        Some("Recreate")
    );
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsUser"].as_i64(), Some(10001));
    let container = &pod["containers"][0];
    assert_eq!(
        container["livenessProbe"]["httpGet"]["path"].as_str(),
        Some("/healthz")
    );
    assert_eq!(
        container["readinessProbe"]["httpGet"]["path"].as_str(),
        Some("/readyz")
    );
    assert_eq!(container["ports"][0]["containerPort"].as_i64(), Some(9464));
    let mounts: Vec<(&str, &str)> = container["volumeMounts"]
        .as_vec()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["name"].as_str().unwrap(),
                m["mountPath"].as_str().unwrap(),
            )
        })
        .collect();
    let volume = |name: &str| -> &Yaml {
        pod["volumes"]
            .as_vec()
            .unwrap()
            .iter()
            .find(|v| v["name"].as_str() == Some(name))
            .unwrap()
    };
    let mount_of = |name: &str| mounts.iter().find(|(n, _)| *n == name).unwrap().1;
    assert_eq!(
        volume("state")["persistentVolumeClaim"]["claimName"].as_str(),
        kind("PersistentVolumeClaim")["metadata"]["name"].as_str()
    );
    assert_eq!(
        volume("token")["secret"]["secretName"].as_str(),
        Some("op-events-token")
    );

    let toml = kind("ConfigMap")["data"]["op-events-forwarder.toml"]
        .as_str()
        .unwrap();
    let config = op_events_forwarder::config::from_toml_str("kubernetes.yaml", toml, &[]).unwrap();
    assert!(config.state.path.starts_with(mount_of("state")));
    let op_events_forwarder::account::config::TokenSource::File(token) = &config.accounts[0].token
    else {
        panic!("a token file")
    };
    assert!(token.starts_with(mount_of("token")), "{}", token.display());
    assert_eq!(config.admin.listen, Some("0.0.0.0:9464".parse().unwrap()));
    assert!(
        container["args"]
            .as_vec()
            .unwrap()
            .iter()
            .any(|a| a.as_str()
                == Some(format!("{}/op-events-forwarder.toml", mount_of("config")).as_str()))
    );
    let monitor = kind("ServiceMonitor");
    assert_eq!(
        monitor["spec"]["endpoints"][0]["path"].as_str(),
        Some("/metrics")
    );
}

/// The simulator ships in the binary (`simulate`, `demo`), but the daemon's own modules never
/// use it: only `sim/` itself, `demo.rs`, `bench/` and `main.rs` may name it, so what the
/// daemon does cannot come to lean on its own twin.
#[test]
fn nothing_of_the_daemon_depends_on_the_simulator() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let allowed = ["sim", "demo.rs", "bench", "main.rs"];
    let mut stack = vec![src.clone()];
    let mut checked = 0;
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            let relative = path.strip_prefix(&src).unwrap();
            let top = relative.components().next().unwrap().as_os_str();
            if allowed.iter().any(|a| top == *a) {
                continue;
            }
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            for (n, line) in text.lines().enumerate() {
                let code = line.split("//").next().unwrap_or_default();
                let uses = code.contains("crate::sim") || code.contains("sim::");
                // lib.rs declares the module, nothing more.
                let declares = relative == Path::new("lib.rs") && code.trim() == "pub mod sim;";
                assert!(
                    !uses || declares,
                    "{}:{}: the daemon uses the simulator: {line}",
                    relative.display(),
                    n + 1
                );
            }
            checked += 1;
        }
    }
    assert!(checked > 20, "{checked} files checked");
}
