//! A server that lies: the token echoed back, pages larger than asked, items that are not
//! events, bodies without end, the same cursor forever, a clock a year off. Nothing leaks,
//! nothing is kept that should not be, and the cursor moves only with a good page.

use op_events_forwarder::Daemon;
use op_events_forwarder::config;
use op_events_forwarder::store::Store;
use op_events_forwarder::stream::Stream;

use crate::support::hostile::{Hostile, Reply, ReplyBody};
use crate::support::{ACCOUNT, Env, spawn_daemon, terminate, uuid_of};

const TOKEN: &str = "ops_hostile-test-token.Zm9vYmFyYmF6cXV4";

/// A scratch directory with the token and a config for the daemon against `server` (with
/// `account_extra` in the account table); returns it and the config's path.
fn setup(server: &Hostile, account_extra: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("token"), format!("{TOKEN}\n")).unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(&config, server.config_toml(dir.path(), account_extra)).unwrap();
    (dir, config)
}

fn page(cursor: &str, has_more: bool, uuids: &[&str]) -> Reply {
    let items: Vec<String> = uuids
        .iter()
        .map(|uuid| format!(r#"{{"uuid":"{uuid}","timestamp":"2026-11-30T10:00:00Z"}}"#))
        .collect();
    Reply::json(
        200,
        format!(
            r#"{{"cursor":"{cursor}","has_more":{has_more},"items":[{}]}}"#,
            items.join(",")
        ),
    )
}

fn output_uuids(dir: &std::path::Path) -> Vec<String> {
    match std::fs::read_to_string(dir.join("out/auditevents.ndjson")) {
        Ok(text) => text.lines().map(uuid_of).collect(),
        Err(_) => Vec::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_is_never_printed_whatever_the_server_echoes() {
    // Every answer quotes the Authorization header back: as the error message of a 400, a
    // 401 and a 500, in an introspection answer, and as values a parser complains about.
    let server = Hostile::start(|asked| {
        let echo = format!("you sent {}", asked.authorization);
        let quoted = serde_json::to_string(&echo).unwrap();
        if asked.path.contains("introspect") {
            return Reply::json(401, format!(r#"{{"Error":{{"Message":{quoted}}}}}"#));
        }
        match asked.n % 5 {
            0 => Reply::json(400, format!(r#"{{"Error":{{"Message":{quoted}}}}}"#)),
            1 => Reply::json(401, format!(r#"{{"status":401,"message":{quoted}}}"#)),
            2 => Reply::json(500, format!(r#"{{"Error":{{"Message":{quoted}}}}}"#)),
            3 => Reply::json(
                200,
                format!(r#"{{"cursor":"c","has_more":{quoted},"items":[]}}"#),
            ),
            _ => Reply::json(
                200,
                format!(r#"{{"cursor":"c","has_more":false,"items":[{quoted}]}}"#),
            ),
        }
    })
    .await;
    let (dir, config) = setup(&server, "retry_max_secs = 1\nunauthorized_retry_secs = 1");
    let stderr_path = dir.path().join("stderr");
    let mut child = spawn_daemon(&config, &stderr_path, "trace");
    server.wait_for_requests(11).await;
    assert!(terminate(&mut child).success());
    let logs = std::fs::read_to_string(&stderr_path).unwrap();
    let secret = TOKEN.split('.').next_back().unwrap();
    assert!(!logs.contains(secret), "the token was printed:\n{logs}");
    for status in ["HTTP 400", "HTTP 401", "HTTP 500", "invalid response"] {
        assert!(logs.contains(status), "{status} was logged:\n{logs}");
    }
    assert!(logs.contains("you sent Bearer [REDACTED]"), "{logs}");
    // Nothing of those answers was kept.
    assert!(output_uuids(dir.path()).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_that_are_not_what_was_asked_for_are_refused_and_the_cursor_stays() {
    // page_size = 2; each lie is answered to a reset, then the truth.
    let lies: Vec<&'static str> = vec![
        r#"[{"uuid":"L1"},{"uuid":"L2"},{"uuid":"L3"}]"#,
        "[1]",
        r#"["a string"]"#,
        "[null]",
        "[[1,2]]",
        "[true]",
        r#"[{"id":"no uuid"}]"#,
    ];
    let n_lies = lies.len();
    let served = std::sync::atomic::AtomicUsize::new(0);
    let server = Hostile::start(move |asked| {
        if !asked.path.contains("auditevents") {
            return Reply::json(404, "{}");
        }
        let n = served.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        match lies.get(n) {
            Some(items) => Reply::json(
                200,
                format!(r#"{{"cursor":"lie{n}","has_more":false,"items":{items}}}"#),
            ),
            None => page("truth", false, &["GOOD"]),
        }
    })
    .await;
    let (dir, path) = setup(
        &server,
        "page_size = 2\nretry_max_secs = 1\npoll_interval_secs = 3600",
    );
    let config = config::load(&path).unwrap();
    let daemon = Daemon::start(&config).await.unwrap();
    crate::support::wait_for(daemon.stats(), "the good page delivered", |s| {
        s.delivered(crate::support::SINK, ACCOUNT, Stream::AuditEvents) >= 1
    })
    .await;
    daemon.stop().await;

    assert_eq!(output_uuids(dir.path()), ["GOOD"]);
    let asked = server.asked();
    let events: Vec<_> = asked
        .iter()
        .filter(|a| a.path.contains("auditevents"))
        .collect();
    assert_eq!(events.len(), n_lies + 1, "{events:?}");
    // Each lie was refused without moving the cursor: the same reset was sent again.
    assert!(
        events
            .iter()
            .all(|a| a.body == events[0].body && a.body.contains("\"limit\":2"))
    );
    let store = Store::open(&dir.path().join("state.db")).unwrap();
    assert_eq!(
        store
            .cursor(ACCOUNT, Stream::AuditEvents)
            .unwrap()
            .as_deref(),
        Some("truth")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_without_end_is_cut_off_and_memory_stays_small() {
    // 400 MB of well-formed events that never end; page_size 100 allows about 3 MiB.
    let server = Hostile::start(|_| Reply {
        status: 200,
        headers: vec![("content-type", "application/json".into())],
        body: ReplyBody::Endless(400 * 1024 * 1024),
    })
    .await;
    let (dir, config) = setup(&server, "page_size = 100\nretry_max_secs = 1");
    let stderr_path = dir.path().join("stderr");
    let mut child = spawn_daemon(&config, &stderr_path, "warn");
    // Introspection and three pages.
    server.wait_for_requests(4).await;
    let status = std::fs::read_to_string(format!("/proc/{}/status", child.id())).unwrap();
    let peak_kib: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    assert!(terminate(&mut child).success());
    let logs = std::fs::read_to_string(&stderr_path).unwrap();
    assert!(
        logs.contains("the response body is larger than 3342336 bytes"),
        "{logs}"
    );
    assert!(peak_kib < 64 * 1024, "peak RSS {peak_kib} KiB");
    assert!(output_uuids(dir.path()).is_empty());
    let store = Store::open(&dir.path().join("state.db")).unwrap();
    assert_eq!(store.cursor(ACCOUNT, Stream::AuditEvents).unwrap(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_cursor_forever_is_kept_once_and_backed_off() {
    // The reset gives A and cursor c1; c1 answers B, c1 and has_more: true, forever.
    let server = Hostile::start(|asked| {
        if asked.body.contains("\"cursor\"") {
            page("c1", true, &["B"])
        } else {
            page("c1", true, &["A"])
        }
    })
    .await;
    let (dir, path) = setup(&server, "retry_max_secs = 1");
    let config = config::load(&path).unwrap();
    let daemon = Daemon::start(&config).await.unwrap();
    server.wait_for_requests(7).await;
    let unhealthy = daemon
        .stats()
        .stream(ACCOUNT, Stream::AuditEvents)
        .unhealthy;
    daemon.stop().await;
    assert_eq!(
        unhealthy.as_deref(),
        Some("the API answers has_more: true without moving the cursor")
    );
    assert_eq!(output_uuids(dir.path()), ["A", "B"], "each page kept once");
    // Backed off: nothing like the whole budget in a burst.
    assert!(
        server.asked().len() <= 10,
        "{} requests",
        server.asked().len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clock_a_year_ahead_still_fetches_the_backlog() {
    // The API's clock is a year behind ours (ours is wrong: before NTP, say); start_time
    // "-2d" must mean two days before the API's now, not ours.
    let env = Env::with_sim(300, 63, |cfg| {
        cfg.clock_offset = -time::Duration::days(365);
        cfg.empty_page_every = 0;
    })
    .await;
    let daemon = Daemon::start(&env.config("page_size = 100")).await.unwrap();
    env.drain_and_check(daemon, "the backlog delivered on the API's clock")
        .await;
    let resets = env
        .sim
        .requests()
        .iter()
        .filter(|r| matches!(r.body, op_events_forwarder::sim::RequestKind::Reset { .. }))
        .count();
    // One reset per stream, and one more for each stream whose first reset went out before
    // any answer had told the API's clock (resolved on the wrong one, its page not kept).
    assert!(
        (Stream::ALL.len()..=2 * Stream::ALL.len()).contains(&resets),
        "{resets} resets"
    );
}
