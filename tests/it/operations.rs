//! What an operator looks at: the admin endpoint (`/metrics` parsed by the Prometheus
//! project's own OpenMetrics parser, `/healthz`, `/readyz`, `/status`), the `status`,
//! `health` and `cursor` commands against the built binary, and the token absent from all
//! of it.

use std::collections::HashMap;
use std::process::Command;
use std::time::Duration;

use op_events_forwarder::Daemon;
use op_events_forwarder::admin::get;
use op_events_forwarder::stream::Stream;

use crate::support::collector::{Collector, Reply};
use crate::support::{ACCOUNT, BIN, Env, SINK, generated, terminate, wait_for};

/// One sample of a parsed metric: its labels and value.
#[derive(Debug, Clone)]
struct Sample {
    name: String,
    labels: HashMap<String, String>,
    value: f64,
}

/// The metrics text parsed by `prometheus_client.openmetrics.parser` (the Prometheus project's
/// Python client, which `scripts/test` installs beside the OpenSearch emulator): a text it
/// refuses fails the test with its complaint.
fn parse_openmetrics(text: &str) -> Vec<Sample> {
    let python = concat!(env!("CARGO_MANIFEST_DIR"), "/target/osmem-venv/bin/python");
    let script = r#"
import json, sys
from prometheus_client.openmetrics.parser import text_string_to_metric_families
out = []
for family in text_string_to_metric_families(sys.stdin.read()):
    for s in family.samples:
        out.append({"name": s.name, "labels": s.labels, "value": s.value, "type": family.type})
print(json.dumps(out))
"#;
    let mut child = Command::new(python)
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|err| panic!("{python}: {err} (scripts/test installs prometheus-client)"));
    use std::io::Write as _;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the OpenMetrics parser refused the text: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    let samples: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    samples
        .into_iter()
        .map(|s| Sample {
            name: s["name"].as_str().unwrap().to_owned(),
            labels: serde_json::from_value(s["labels"].clone()).unwrap(),
            value: s["value"].as_f64().unwrap(),
        })
        .collect()
}

fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .find(|s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|s| s.value)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_endpoint_tells_how_far_behind_and_why_without_a_secret() {
    let env = Env::new(400, 401).await;
    let config = env.config("");
    let daemon = Daemon::start(&config).await.unwrap();
    let addr = daemon.admin_addr().expect("the admin endpoint listens");
    let want = generated(&env.sim);
    wait_for(daemon.stats(), "every event delivered", |s| {
        crate::support::delivered_all(s, &want)
    })
    .await;
    let timeout = Duration::from_secs(5);

    let (status, body) = get(addr, "/healthz", timeout).await.unwrap();
    assert_eq!((status, body.as_str()), (200, "ok\n"));
    let (status, body) = get(addr, "/readyz", timeout).await.unwrap();
    assert_eq!(status, 200, "{body}");

    let (status, text) = get(addr, "/metrics", timeout).await.unwrap();
    assert_eq!(status, 200);
    let samples = parse_openmetrics(&text);
    for stream in Stream::ALL {
        let labels = [("account", ACCOUNT), ("stream", stream.as_str())];
        assert_eq!(
            value(&samples, "opef_events_fetched_total", &labels),
            Some(want[&stream] as f64),
            "{stream}"
        );
        let mut sink_labels = labels.to_vec();
        sink_labels.push(("sink", SINK));
        assert_eq!(
            value(&samples, "opef_sink_events_delivered_total", &sink_labels),
            Some(want[&stream] as f64)
        );
        assert_eq!(value(&samples, "opef_sink_up", &sink_labels), Some(1.0));
        assert_eq!(
            value(&samples, "opef_sink_lag_pages", &sink_labels),
            Some(0.0)
        );
        let mut ok = labels.to_vec();
        ok.push(("class", "2xx"));
        assert!(value(&samples, "opef_api_requests_total", &ok).unwrap() >= 1.0);
        assert!(value(&samples, "opef_lag_seconds", &labels).unwrap() >= 0.0);
        assert!(value(&samples, "opef_newest_event_timestamp_seconds", &labels).is_some());
        assert!(value(&samples, "opef_last_fetch_timestamp_seconds", &labels).is_some());
        assert_eq!(value(&samples, "opef_stream_unhealthy", &labels), Some(0.0));
        assert!(value(&samples, "opef_outbox_pages", &labels).is_some());
    }
    let expiry = value(
        &samples,
        "opef_token_expiry_timestamp_seconds",
        &[("account", ACCOUNT)],
    )
    .unwrap();
    let in_days = (expiry - time::OffsetDateTime::now_utc().unix_timestamp() as f64) / 86_400.0;
    assert!((29.0..=30.0).contains(&in_days), "{in_days}");
    // The budget left: every request of this run is within the last minute or hour.
    let requests: f64 = samples
        .iter()
        .filter(|s| s.name == "opef_api_requests_total")
        .map(|s| s.value)
        .sum();
    let left = |window| {
        value(
            &samples,
            "opef_governor_requests_left",
            &[("account", ACCOUNT), ("window", window)],
        )
        .unwrap()
    };
    assert!(left("minute") <= 600.0 - requests && left("minute") >= 0.0);
    assert!(left("hour") <= 30_000.0 - requests && left("hour") > 29_000.0);
    assert!(value(&samples, "opef_build_info", &[]).is_some());
    assert!(value(&samples, "opef_process_resident_memory_bytes", &[]).unwrap() > 1e6);
    assert!(value(&samples, "opef_process_open_fds", &[]).unwrap() > 3.0);

    // Every metric the shipped Grafana dashboard queries is one the daemon exposes.
    // (A family without samples yet has its TYPE line alone; a counter's samples end _total.)
    let exposed: std::collections::HashSet<String> = text
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(
            |line| match line.split_whitespace().collect::<Vec<_>>()[..] {
                [name, "counter"] => Some(format!("{name}_total")),
                [name, _] => Some(name.to_owned()),
                _ => None,
            },
        )
        .chain(samples.iter().map(|s| s.name.clone()))
        .collect();
    let dashboard: serde_json::Value = serde_json::from_str(include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/grafana-dashboard.json"
    )))
    .unwrap();
    let mut queried = 0;
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            let names: Vec<&str> = expr
                .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .filter(|word| word.starts_with("opef_"))
                .collect();
            assert!(!names.is_empty(), "{expr}");
            for name in names {
                assert!(
                    exposed.contains(name),
                    "the dashboard queries {name}, not exposed: {expr}"
                );
                queried += 1;
            }
        }
    }
    assert!(queried >= 12);

    let (status, body) = get(addr, "/status", timeout).await.unwrap();
    assert_eq!(status, 200);
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["live"], true);
    assert_eq!(json["streams"].as_array().unwrap().len(), 3);
    for stream in json["streams"].as_array().unwrap() {
        assert_eq!(stream["health"], "ok", "{stream}");
        assert_eq!(stream["pages_pending"], 0);
    }
    let (status, _) = get(addr, "/nothing", timeout).await.unwrap();
    assert_eq!(status, 404);
    daemon.stop().await;
    for output in [&text, &body] {
        assert!(!output.contains(&env.token), "the token in an output");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_fails_with_the_reasons_while_a_sink_is_stalled() {
    let env = Env::new(30, 402).await;
    let collector = Collector::start(|_| Reply::json(503, "down for maintenance")).await;
    let toml = env.config_toml("");
    let toml = toml.replace(
        "listen = \"127.0.0.1:0\"",
        "listen = \"127.0.0.1:0\"\nsink_stall_secs = 1",
    );
    let toml = format!(
        "{toml}\n[[sinks]]\nname = \"collector\"\ntype = \"http\"\nurl = \"{}/in\"\nformat = \"json\"\n",
        collector.url
    );
    let config = op_events_forwarder::config::from_toml_str("it.toml", &toml, &[]).unwrap();
    let daemon = Daemon::start(&config).await.unwrap();
    let addr = daemon.admin_addr().unwrap();
    wait_for(daemon.stats(), "two failed deliveries per stream", |s| {
        Stream::ALL
            .iter()
            .all(|stream| s.failed_deliveries("collector", ACCOUNT, *stream) >= 2)
    })
    .await;
    // Failing since the first failure: more than a second by now, past sink_stall_secs.
    let since = Stream::ALL
        .iter()
        .filter_map(|stream| {
            daemon
                .stats()
                .sink("collector", ACCOUNT, *stream)
                .failing_since
        })
        .min()
        .unwrap();
    let left = Duration::from_millis(1100)
        .saturating_sub((time::OffsetDateTime::now_utc() - since).unsigned_abs());
    tokio::time::sleep(left).await;
    let (status, body) = get(addr, "/readyz", Duration::from_secs(5)).await.unwrap();
    assert_eq!(status, 503, "{body}");
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["ready"], false);
    let reasons = json["reasons"].as_array().unwrap();
    assert!(
        reasons.iter().any(|r| r
            .as_str()
            .unwrap()
            .contains("sink collector (it/auditevents): failing for")
            && r.as_str()
                .unwrap()
                .contains("HTTP 503: down for maintenance")),
        "{reasons:?}"
    );
    let (_, text) = get(addr, "/metrics", Duration::from_secs(5)).await.unwrap();
    let samples = parse_openmetrics(&text);
    let labels = [
        ("sink", "collector"),
        ("account", ACCOUNT),
        ("stream", "auditevents"),
    ];
    assert_eq!(value(&samples, "opef_sink_up", &labels), Some(0.0));
    let mut retry = labels.to_vec();
    retry.push(("class", "retry"));
    assert!(value(&samples, "opef_sink_batches_failed_total", &retry).unwrap() >= 2.0);
    assert!(value(&samples, "opef_sink_lag_pages", &labels).unwrap() >= 1.0);
    daemon.stop().await;
}

/// Runs the binary with `args`, returning its exit code, stdout and stderr.
fn run(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(BIN)
        .args(args)
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_health_and_cursor_reset_beside_the_daemon_and_after_it() {
    let env = Env::new(60, 403).await;
    // A fixed admin port for the binary and the commands that ask it: one the kernel chose.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let toml = env.config_toml("").replace(
        "listen = \"127.0.0.1:0\"",
        &format!("listen = \"127.0.0.1:{port}\""),
    );
    let config_path = env.path("config.toml");
    std::fs::write(&config_path, &toml).unwrap();
    let config = config_path.to_str().unwrap();
    let total: usize = Stream::ALL.iter().map(|s| env.sim.generated(*s)).sum();
    let lines = |env: &Env| -> usize { Stream::ALL.iter().map(|s| env.lines(*s).len()).sum() };

    let log = env.path("daemon.log");
    let mut daemon = crate::support::spawn_daemon(&config_path, &log, "info");
    let deadline = std::time::Instant::now() + crate::support::PATIENCE;
    while lines(&env) < total || run(&["health", "--config", config, "--ready"]).0 != 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the daemon never got ready"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (code, out, _) = run(&["health", "--config", config]);
    assert_eq!((code, out.as_str()), (0, "ok\n"));

    // While it runs: the live figures.
    let (code, out, err) = run(&["status", "--config", config, "--json"]);
    assert_eq!(code, 0, "{err}");
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(json["live"], true);
    assert_eq!(json["daemon"]["pid"], daemon.id());
    let (code, table, _) = run(&["status", "--config", config]);
    assert_eq!(code, 0);
    assert!(table.contains("running (pid"), "{table}");
    for stream in Stream::ALL {
        assert!(
            table.lines().any(|l| l.starts_with(ACCOUNT)
                && l.contains(stream.as_str())
                && l.contains(" ok")),
            "{table}"
        );
    }
    assert!(!table.contains('\u{1b}'), "no colour when not a terminal");

    // A reset is refused while the daemon holds the state, naming it.
    let reset = [
        "cursor",
        "reset",
        "--config",
        config,
        "--account",
        ACCOUNT,
        "--stream",
        "itemusages",
        "--start-time",
        "-3d",
    ];
    let (code, _, err) = run(&reset);
    assert_ne!(code, 0);
    assert!(
        err.contains(&format!("pid {}", daemon.id())) && err.contains("stop the daemon first"),
        "{err}"
    );
    assert!(terminate(&mut daemon).success());

    // Stopped: from the state alone; health fails.
    let (code, out, _) = run(&["status", "--config", config, "--json"]);
    assert_eq!(code, 0);
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(json["live"], false);
    assert!(
        json["streams"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["health"] == "unknown")
    );
    let (code, _, err) = run(&["health", "--config", config]);
    assert_eq!(code, 1, "{err}");

    // The config before or after the action, and times ago as values (both were refused).
    let (code, out, err) = run(&["dead-letters", "list", "--config", config]);
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("    id  sink"), "{out}");
    let (code, _, err) = run(&[
        "dead-letters",
        "--config",
        config,
        "purge",
        "--sink",
        SINK,
        "--before",
        "-30d",
    ]);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = run(&["dead-letters", "list"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--config FILE"), "{err}");

    // Reset, then resume: the stream is read again from the time set, the others go on.
    let (code, out, err) = run(&reset);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("itemusages: cursor forgotten"), "{out}");
    let (_, show, _) = run(&["cursor", "show", "--config", config]);
    let row = show.lines().find(|l| l.contains("itemusages")).unwrap();
    assert!(
        row.contains(" no ") && !row.trim_end().ends_with('-'),
        "{show}"
    );
    let before = env.lines(Stream::ItemUsages).len();
    let mut daemon = crate::support::spawn_daemon(&config_path, &log, "info");
    let deadline = std::time::Instant::now() + crate::support::PATIENCE;
    while env.lines(Stream::ItemUsages).len() < before * 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "the reset stream was not read again"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(terminate(&mut daemon).success());
    assert_eq!(
        env.lines(Stream::ItemUsages).len(),
        before * 2,
        "read once more, whole"
    );
    for stream in [Stream::AuditEvents, Stream::SignInAttempts] {
        env.assert_exactly_once(stream);
    }
    let (_, show, _) = run(&["cursor", "show", "--config", config]);
    let row = show.lines().find(|l| l.contains("itemusages")).unwrap();
    assert!(
        row.contains(" yes ") && row.trim_end().ends_with('-'),
        "{show}"
    );
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(logged.contains("starting again from the time `cursor reset` set"));
    assert!(!logged.contains(&env.token));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_lists_every_problem_and_online_finds_what_a_start_would() {
    let env = Env::new(5, 404).await;
    // Offline: three problems in three tables, all listed.
    let bad = env
        .config_toml("page_size = 5000")
        .replace("listen = \"127.0.0.1:0\"", "listen = \"nowhere\"")
        .replace("type = \"file\"", "type = \"file\"\ncolor = \"red\"");
    let bad_path = env.path("bad.toml");
    std::fs::write(&bad_path, bad).unwrap();
    let (code, _, err) = run(&["check-config", "--config", bad_path.to_str().unwrap()]);
    assert_eq!(code, 78, "{err}");
    for problem in [
        "accounts[0].page_size",
        "sinks[0].color",
        "admin.listen",
        "3 problems",
    ] {
        assert!(err.contains(problem), "{problem} not in:\n{err}");
    }

    // Online, good: the simulator's token, a real rsyslog over TCP and RELP, a file sink.
    let dir = tempfile::tempdir().unwrap();
    let rsyslog = crate::support::rsyslog::Rsyslog::start(dir.path(), 0, None);
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let good = format!(
        "{}\n[[sinks]]\nname = \"siem\"\ntype = \"syslog\"\naddress = \"127.0.0.1:{}\"\ntransport = \"tcp\"\n\n\
         [[sinks]]\nname = \"relp\"\ntype = \"syslog\"\naddress = \"127.0.0.1:{}\"\ntransport = \"relp\"\n",
        env.config_toml(""),
        rsyslog.tcp_port,
        rsyslog.relp_port
    );
    let good_path = env.path("good.toml");
    std::fs::write(&good_path, &good).unwrap();
    let (code, out, err) = run(&["check", "--online", "--config", good_path.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    for line in [
        "account it  token",
        "account it  introspection",
        "account it  clock",
        "sink files",
        "sink siem",
        "sink relp",
    ] {
        let row = out.lines().find(|l| {
            l.starts_with(line.split("  ").next().unwrap())
                && l.contains(line.split("  ").last().unwrap())
        });
        assert!(row.is_some_and(|r| r.contains(" ok ")), "{line}:\n{out}");
    }
    assert!(
        out.contains("TCP connection accepted") && out.contains("RELP session open"),
        "{out}"
    );
    assert!(
        out.contains("features auditevents,itemusages,signinattempts"),
        "{out}"
    );

    // Online, bad: a revoked token, a receiver that is not there. Every check still runs.
    env.sim.revoke_token(&env.token);
    let bad = good.replace(
        &format!("127.0.0.1:{}\"\ntransport = \"tcp\"", rsyslog.tcp_port),
        &format!("127.0.0.1:{closed}\"\ntransport = \"tcp\""),
    );
    std::fs::write(&good_path, bad).unwrap();
    let (code, out, _) = run(&["check", "--online", "--config", good_path.to_str().unwrap()]);
    assert_eq!(code, 1, "{out}");
    let failed: Vec<&str> = out.lines().filter(|l| l.contains("FAILED")).collect();
    assert!(
        failed.iter().any(|l| l.starts_with("account it")
            && l.contains("introspection")
            && l.contains("401")),
        "{out}"
    );
    assert!(
        failed
            .iter()
            .any(|l| l.starts_with("sink siem") && l.contains("cannot connect")),
        "{out}"
    );
    assert!(
        out.lines()
            .any(|l| l.starts_with("sink relp") && l.contains(" ok ")),
        "{out}"
    );
    assert!(!out.contains(&env.token));
}
