//! The daemon against a simulator that rate-limits, fails, revokes tokens and rejects cursors:
//! it keeps running, never trips a limit it knows, and delivers every event exactly once.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use op_events_forwarder::Daemon;
use op_events_forwarder::api::{self, PageRequest};
use op_events_forwarder::sim::{Fault, Faults, RequestRecord, SimToken, Simulator, WindowLimit};
use op_events_forwarder::store::Store;
use op_events_forwarder::stream::{ApiVersion, Stream};
use secrecy::SecretString;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::support::{ACCOUNT, Env, SINK, TOKEN, delivered_all, generated, wait_for};

/// Asserts that whenever the simulator knows a request failed, the next request of the same
/// stream asks for the same thing: a failed request never moves the cursor. Slow responses
/// are left out (the client may or may not have received them in time).
fn assert_cursor_held_on_failures(sim: &Simulator, streams: &[Stream]) {
    let records = sim.requests();
    for stream in streams {
        let mine: Vec<&RequestRecord> = records
            .iter()
            .filter(|r| r.stream == *stream && r.fault != Some(Fault::Slow))
            .collect();
        for pair in mine.windows(2) {
            if pair[0].failed() {
                assert_eq!(
                    pair[1].body, pair[0].body,
                    "{stream}: the request after a failed one ({:?}) asked for something else",
                    pair[0]
                );
            }
        }
    }
}

fn count_faults(sim: &Simulator, fault: Fault) -> usize {
    sim.requests()
        .iter()
        .filter(|r| r.fault == Some(fault))
        .count()
}

/// Runs the daemon against a simulator with `faults` until every event arrived, then inserts
/// more and waits for those too (the daemon is still running), and checks the output.
///
/// Regression: a failed first request (no cursor yet) used to be retried with its relative
/// `start_time` resolved again, moving the window forward by the retry delay; the cursor
/// check below caught it.
async fn survive(seed: u64, extra: &str, adjust: impl FnOnce(&mut Faults)) -> Env {
    let env = Env::with_sim(150, seed, |cfg| adjust(&mut cfg.faults)).await;
    let config = env.config(&format!(
        "page_size = 10\npoll_interval_secs = 1\nretry_max_secs = 1\n{extra}"
    ));
    let daemon = Daemon::start(&config).await.unwrap();
    let want = generated(&env.sim);
    wait_for(
        daemon.stats(),
        "every event delivered despite the faults",
        |s| delivered_all(s, &want),
    )
    .await;
    for stream in Stream::ALL {
        env.sim.insert(stream, 15);
    }
    let want = generated(&env.sim);
    wait_for(daemon.stats(), "events inserted later delivered too", |s| {
        delivered_all(s, &want)
    })
    .await;
    let failed: u64 = Stream::ALL
        .iter()
        .map(|stream| daemon.stats().stream(ACCOUNT, *stream).failed_requests)
        .sum();
    daemon.stop().await;
    for stream in Stream::ALL {
        env.assert_exactly_once(stream);
    }
    assert_cursor_held_on_failures(&env.sim, &Stream::ALL);
    assert!(failed > 0, "the daemon saw failures");
    env
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_errors_are_retried() {
    let env = survive(41, "", |faults| faults.error_rate = 0.3).await;
    let statuses: HashSet<u16> = env
        .sim
        .requests()
        .iter()
        .filter(|r| r.fault == Some(Fault::Status))
        .map(|r| r.status)
        .collect();
    assert!(!statuses.is_empty());
    assert!(statuses.is_subset(&HashSet::from([500, 502, 503])));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_resets_are_retried() {
    let env = survive(42, "", |faults| faults.reset_rate = 0.3).await;
    assert!(count_faults(&env.sim, Fault::Reset) > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_bodies_are_retried() {
    let env = survive(43, "", |faults| faults.truncate_rate = 0.3).await;
    assert!(count_faults(&env.sim, Fault::Truncated) > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_json_is_retried() {
    let env = survive(44, "", |faults| faults.invalid_json_rate = 0.3).await;
    assert!(count_faults(&env.sim, Fault::InvalidJson) > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_slower_than_the_timeout_are_retried() {
    let env = survive(45, "request_timeout_secs = 1", |faults| {
        faults.slow_rate = 0.2;
        faults.slow_ms = 1_500;
    })
    .await;
    // The simulator records a slow response only if the client waited for it; the ones that
    // timed out show as the daemon's failed requests (asserted by `survive`).
    assert!(env.sim.requests().len() > 3 * 17);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_pages_with_more_to_come_lose_nothing() {
    let env = Env::new(150, 46).await;
    // Switched on at run time, as `POST /_sim/faults` does.
    env.sim.set_faults(Faults {
        empty_page_every: Some(2),
        ..Faults::default()
    });
    let daemon = Daemon::start(&env.config("page_size = 10")).await.unwrap();
    env.drain_and_check(daemon, "every event delivered").await;
    let want = generated(&env.sim);
    let empty_with_more = env.sim.stats().requests as usize
        - Stream::ALL
            .iter()
            .map(|s| want[s].div_ceil(10))
            .sum::<usize>();
    assert!(empty_with_more > 10, "empty pages were served");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_drains_under_small_limits_without_a_429() {
    // 60 requests a minute, enforced as a strict sliding window: the backlog needs more than
    // 60 requests, so the governor must hold back at the end of the first minute.
    let env = Env::with_sim(210, 47, |cfg| {
        cfg.empty_page_every = 0;
        cfg.faults.rate_limits = vec![WindowLimit {
            window_secs: 60,
            max: 60,
        }];
        cfg.faults.retry_after = true;
    })
    .await;
    let daemon = Daemon::start(
        &env.config("page_size = 10\nrequests_per_minute = 60\nrequests_per_hour = 3000"),
    )
    .await
    .unwrap();
    env.drain_and_check(daemon, "the backlog delivered").await;
    let requests = env.sim.requests();
    assert!(requests.len() > 60, "{} requests", requests.len());
    let rate_limited = requests.iter().filter(|r| r.status == 429).count();
    assert_eq!(rate_limited, 0, "the governor tripped the limit");
    // The simulator counts the token's introspection against the same limits, as the API may.
    assert_eq!(env.sim.stats().introspections_rate_limited, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_client_on_the_account_causes_429s_that_are_absorbed() {
    let env = Env::with_sim(100, 48, |cfg| {
        cfg.empty_page_every = 0;
        cfg.faults.rate_limits = vec![WindowLimit {
            window_secs: 1,
            max: 6,
        }];
        cfg.faults.retry_after = true;
    })
    .await;
    // Another integration with the same token reads sign-in attempts four times a second,
    // ignoring the limits; the daemon reads the other two streams.
    let other = api::Client::new(
        &api::ClientOptions {
            base_url: env.sim.base_url(),
            ca_file: None,
            timeout: Duration::from_secs(5),
            max_response_bytes: None,
        },
        SecretString::from(TOKEN.to_owned()),
    )
    .unwrap();
    let neighbour = tokio::spawn(async move {
        let mut ticks = tokio::time::interval(Duration::from_millis(250));
        loop {
            ticks.tick().await;
            let request = PageRequest::Reset {
                limit: 1,
                start_time: None,
                end_time: None,
            };
            let _ = other
                .fetch(ApiVersion::V2, Stream::SignInAttempts, &request, 1)
                .await;
        }
    });
    let streams = [Stream::AuditEvents, Stream::ItemUsages];
    let daemon =
        Daemon::start(&env.config("page_size = 10\nstreams = [\"auditevents\", \"itemusages\"]"))
            .await
            .unwrap();
    let want: HashMap<Stream, usize> = streams
        .iter()
        .map(|stream| (*stream, env.sim.generated(*stream)))
        .collect();
    wait_for(daemon.stats(), "both streams delivered", |s| {
        delivered_all(s, &want)
    })
    .await;
    daemon.stop().await;
    neighbour.abort();
    for stream in streams {
        env.assert_exactly_once(stream);
    }
    assert_cursor_held_on_failures(&env.sim, &streams);
    let daemon_429s = env
        .sim
        .requests()
        .iter()
        .filter(|r| streams.contains(&r.stream) && r.status == 429)
        .count();
    assert!(daemon_429s > 0, "the daemon met the other client's 429s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_token_replaced_in_the_token_file_resumes_without_a_restart() {
    let env = Env::new(50, 49).await;
    let daemon = Daemon::start(
        &env.config("page_size = 10\npoll_interval_secs = 1\nunauthorized_retry_secs = 1"),
    )
    .await
    .unwrap();
    let want = generated(&env.sim);
    wait_for(daemon.stats(), "the backlog delivered", |s| {
        delivered_all(s, &want)
    })
    .await;

    assert!(env.sim.revoke_token(&env.token));
    env.sim.issue_token(SimToken::all("it-token-2"));
    wait_for(daemon.stats(), "every stream unhealthy", |s| {
        Stream::ALL
            .iter()
            .all(|stream| s.stream(ACCOUNT, *stream).unhealthy.is_some())
    })
    .await;
    let stats = daemon.stats().stream(ACCOUNT, Stream::ItemUsages);
    assert_eq!(
        stats.unhealthy.as_deref(),
        Some("the API refused the token (HTTP 401)")
    );
    assert!(
        stats
            .last_error
            .unwrap()
            .contains("HTTP 401 (Unauthorized)")
    );
    // What `systemctl status` shows: none current, each behind by its newest event's age, why.
    let line = daemon.status_line();
    assert!(line.starts_with("0 of 3 streams current; "), "{line}");
    assert!(
        line.contains("it/itemusages behind by ")
            && line.contains(": the API refused the token (HTTP 401)"),
        "{line}"
    );
    for stream in Stream::ALL {
        env.sim.insert(stream, 20);
    }

    std::fs::write(env.path("token"), "it-token-2\n").unwrap();
    let want = generated(&env.sim);
    wait_for(
        daemon.stats(),
        "the new events delivered, healthy again",
        |s| {
            delivered_all(s, &want)
                && Stream::ALL
                    .iter()
                    .all(|stream| s.stream(ACCOUNT, *stream).unhealthy.is_none())
        },
    )
    .await;
    daemon.stop().await;
    for stream in Stream::ALL {
        env.assert_exactly_once(stream);
    }
    assert_cursor_held_on_failures(&env.sim, &Stream::ALL);
}

/// The newest `timestamp` among events, as the daemon saves it.
fn timestamp_of(json: &str) -> OffsetDateTime {
    let event: serde_json::Value = serde_json::from_str(json).unwrap();
    OffsetDateTime::parse(event["timestamp"].as_str().unwrap(), &Rfc3339).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_cursor_stops_the_stream_or_resets_it_as_configured() {
    let env = Env::new(100, 50).await;
    let stream = Stream::AuditEvents;
    let daemon = Daemon::start(&env.config("page_size = 50")).await.unwrap();
    let want = generated(&env.sim);
    wait_for(daemon.stats(), "the backlog delivered", |s| {
        delivered_all(s, &want)
    })
    .await;
    daemon.stop().await;

    // The saved cursor goes bad (as if the API stopped accepting it); new events arrive.
    let store = Store::open(&env.path("state.db")).unwrap();
    let newest = store
        .stream_state(ACCOUNT, stream)
        .unwrap()
        .unwrap()
        .last_event_time
        .expect("the newest event time was saved");
    let latest_served = env
        .sim
        .events(stream)
        .iter()
        .map(|event| timestamp_of(&event.json))
        .max()
        .unwrap();
    assert_eq!(newest, latest_served);
    store
        .append_page(ACCOUNT, stream, "[]", 0, "not-a-cursor")
        .unwrap();
    drop(store);
    let inserted = env.sim.insert(stream, 10);

    // stop (the default): the stream reports unhealthy and keeps the cursor.
    let daemon = Daemon::start(&env.config("page_size = 50\nunauthorized_retry_secs = 1"))
        .await
        .unwrap();
    wait_for(daemon.stats(), "the stream unhealthy", |s| {
        s.stream(ACCOUNT, stream).unhealthy.is_some()
            && s.stream(ACCOUNT, stream).failed_requests >= 2
    })
    .await;
    assert_eq!(
        daemon.stats().stream(ACCOUNT, stream).unhealthy.as_deref(),
        Some("the API rejected the saved cursor (HTTP 400)")
    );
    daemon.stop().await;
    let store = Store::open(&env.path("state.db")).unwrap();
    assert_eq!(
        store.cursor(ACCOUNT, stream).unwrap().as_deref(),
        Some("not-a-cursor")
    );
    drop(store);
    let lines = env.lines(stream);
    assert_eq!(lines.len(), want[&stream], "nothing new was written");

    // reset: the stream restarts from the newest event fetched and gets the new events.
    let daemon = Daemon::start(&env.config("page_size = 50\non_invalid_cursor = \"reset\""))
        .await
        .unwrap();
    wait_for(daemon.stats(), "the stream caught up again", |s| {
        let stats = s.stream(ACCOUNT, stream);
        stats.caught_up
            && stats.unhealthy.is_none()
            && stats.fetched_events > 0
            && s.delivered(SINK, ACCOUNT, stream) == stats.fetched_events
    })
    .await;
    daemon.stop().await;

    let lines = env.lines(stream);
    let mut seen: HashMap<String, usize> = HashMap::new();
    for line in &lines {
        *seen.entry(crate::support::uuid_of(line)).or_default() += 1;
    }
    for uuid in &inserted {
        assert_eq!(seen.get(uuid), Some(&1), "{uuid} arrived once");
    }
    // Only events the restart window selects again may arrive twice: the simulator, like
    // the API, selects on insertion time.
    let inserted_at: HashMap<String, OffsetDateTime> = env
        .sim
        .events(stream)
        .iter()
        .map(|event| (event.uuid.clone(), event.inserted_at))
        .collect();
    assert_eq!(seen.len(), inserted_at.len(), "every event arrived");
    for (uuid, n) in &seen {
        if *n > 1 {
            assert!(
                inserted_at[uuid] >= newest,
                "{uuid} arrived {n} times but is older than the restart point"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_headers_keep_the_daemon_under_limits_it_was_not_told() {
    // The simulator allows 5 requests in any 2 s and says so in RateLimit-* headers, without
    // Retry-After; the daemon is configured with the documented (far higher) limits.
    let env = Env::with_sim(150, 51, |cfg| {
        cfg.empty_page_every = 0;
        cfg.faults.rate_limits = vec![WindowLimit {
            window_secs: 2,
            max: 5,
        }];
        cfg.faults.rate_limit_headers = true;
    })
    .await;
    let daemon = Daemon::start(&env.config("page_size = 10")).await.unwrap();
    env.drain_and_check(daemon, "every event delivered").await;
    assert_cursor_held_on_failures(&env.sim, &Stream::ALL);
    // Each answer says how many requests remain; the daemon grants no more than that, less
    // what it sent since, and after a pause probes with one request: no request meets a 429,
    // however the four streams' requests interleave.
    let requests = env.sim.requests();
    let rate_limited = requests.iter().filter(|r| r.status == 429).count();
    let admitted = requests.len() - rate_limited;
    assert_eq!(
        rate_limited, 0,
        "{rate_limited} 429s for {admitted} admitted requests"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_rotated_before_the_old_one_is_revoked_is_used_at_once() {
    let env = Env::new(30, 52).await;
    // An hour between slow retries: only reading the file on the first 401 can resume.
    let daemon = Daemon::start(
        &env.config("page_size = 10\npoll_interval_secs = 1\nunauthorized_retry_secs = 3600"),
    )
    .await
    .unwrap();
    let want = generated(&env.sim);
    wait_for(daemon.stats(), "the backlog delivered", |s| {
        delivered_all(s, &want)
    })
    .await;

    // The operator issues a new token and writes it, then revokes the old one.
    env.sim.issue_token(SimToken::all("it-token-rotated"));
    std::fs::write(env.path("token"), "it-token-rotated\n").unwrap();
    assert!(env.sim.revoke_token(&env.token));
    for stream in Stream::ALL {
        env.sim.insert(stream, 10);
    }
    env.drain_and_check(daemon, "the new events delivered")
        .await;
    assert_cursor_held_on_failures(&env.sim, &Stream::ALL);
    assert!(
        env.sim.requests().iter().any(|r| r.status == 401),
        "the old token was refused first"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_that_cannot_be_recorded_is_not_sent_again_and_again() {
    // The state cannot be written for a while (here another process holds its write lock;
    // a full disk does the same): the batch delivered meanwhile is recorded once the state
    // takes it, and neither it nor the next ones are delivered again in the meantime.
    let env = Env::with_sim(400, 91, |cfg| cfg.empty_page_every = 0).await;
    let stream = Stream::AuditEvents;
    // A directory where the output file belongs holds every delivery back at first.
    let blocker = env.output(stream);
    std::fs::create_dir_all(&blocker).unwrap();
    let daemon = Daemon::start(&env.config("page_size = 50")).await.unwrap();
    wait_for(daemon.stats(), "the stream fetched", |s| {
        s.stream(ACCOUNT, stream).fetched_events >= 400
            && s.failed_deliveries(SINK, ACCOUNT, stream) >= 1
    })
    .await;
    let holder = rusqlite::Connection::open(env.path("state.db")).unwrap();
    holder.execute_batch("BEGIN EXCLUSIVE").unwrap();
    std::fs::remove_dir(&blocker).unwrap();
    wait_for(daemon.stats(), "two failed records", |s| {
        s.failed_records(SINK, ACCOUNT, stream) >= 2
    })
    .await;
    let written_while_stuck = env.lines(stream).len();
    holder.execute_batch("ROLLBACK").unwrap();
    drop(holder);
    assert!(written_while_stuck > 0, "a batch went out");
    assert!(
        written_while_stuck <= 8 * 50,
        "only the batch in hand went out"
    );
    env.drain_and_check(daemon, "everything once the state takes writes again")
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_outbox_holds_fetching_back_until_the_sinks_catch_up() {
    let env = Env::with_sim(3_000, 92, |cfg| cfg.empty_page_every = 0).await;
    // A file where the output directory belongs: every delivery fails, the outbox fills.
    let blocker = env.path("out");
    std::fs::write(&blocker, "not a directory").unwrap();
    let toml = env
        .config_toml("page_size = 1000")
        .replace("[state]\n", "[state]\nmax_outbox_bytes = 1048576\n");
    let config = op_events_forwarder::config::from_toml_str("it.toml", &toml, &[]).unwrap();
    let daemon = Daemon::start(&config).await.unwrap();
    let fetched = |s: &op_events_forwarder::stats::Stats| -> u64 {
        Stream::ALL
            .iter()
            .map(|stream| s.stream(ACCOUNT, *stream).fetched_events)
            .sum()
    };
    let used = || -> u64 {
        let conn = rusqlite::Connection::open_with_flags(
            env.path("state.db"),
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )
        .unwrap();
        conn.query_row(
            "SELECT (SELECT page_count FROM pragma_page_count()) - (SELECT freelist_count FROM \
             pragma_freelist_count()), (SELECT page_size FROM pragma_page_size())",
            [],
            |row| Ok(row.get::<_, u64>(0)? * row.get::<_, u64>(1)?),
        )
        .unwrap()
    };
    wait_for(daemon.stats(), "the outbox at its bound", |_| {
        used() >= 1 << 20
    })
    .await;
    let at_bound = fetched(daemon.stats());
    // Time passes (the blocked sink retries a few times more); at most the fetches that were
    // under way when the bound was reached complete, one page per stream.
    let failed = |s: &op_events_forwarder::stats::Stats| -> u64 {
        Stream::ALL
            .iter()
            .map(|stream| s.failed_deliveries(SINK, ACCOUNT, *stream))
            .sum()
    };
    let failed_at_bound = failed(daemon.stats());
    wait_for(daemon.stats(), "more failed deliveries", |s| {
        failed(s) >= failed_at_bound + 9
    })
    .await;
    let later = fetched(daemon.stats());
    assert!(later <= at_bound + 3 * 1000, "{at_bound} then {later}");
    assert!(later < 9_000, "fetching stopped before the end: {later}");
    std::fs::remove_file(&blocker).unwrap();
    env.drain_and_check(daemon, "everything once the sink works")
        .await;
}
