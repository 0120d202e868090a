//! The daemon in-process against the simulator, with the file sink.

use std::collections::HashMap;

use op_events_forwarder::Daemon;
use op_events_forwarder::sim::RequestKind;
use op_events_forwarder::sim::jwt::{MintClaims, SigningKey};
use op_events_forwarder::store::Store;
use op_events_forwarder::stream::Stream;

use crate::support::{ACCOUNT, Env, delivered_all, generated, wait_for};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_arrives_exactly_once_and_byte_identical() {
    let env = Env::new(3_000, 11).await;
    let daemon = Daemon::start(&env.config("page_size = 1000"))
        .await
        .unwrap();
    assert_eq!(generated(&env.sim).values().sum::<usize>(), 9_000);
    env.drain_and_check(daemon, "every event delivered").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_resumes_from_the_saved_cursor_without_duplicates() {
    let env = Env::new(4_000, 12).await;
    let config = env.config("page_size = 100");
    let want = generated(&env.sim);

    // First run: stop as soon as the first events are delivered, with most still to come.
    let daemon = Daemon::start(&config).await.unwrap();
    wait_for(daemon.stats(), "a first delivery", |s| {
        Stream::ALL
            .iter()
            .any(|stream| s.delivered(crate::support::SINK, ACCOUNT, *stream) > 0)
    })
    .await;
    daemon.stop().await;
    let first_run: HashMap<Stream, usize> = Stream::ALL
        .into_iter()
        .map(|stream| (stream, env.lines(stream).len()))
        .collect();
    assert!(
        first_run.values().sum::<usize>() < want.values().sum::<usize>(),
        "the first run was stopped midway: {first_run:?}"
    );

    // The cursors the first run saved, and where the request log stands.
    let store = Store::open(&env.path("state.db")).unwrap();
    let saved: HashMap<Stream, Option<String>> = Stream::ALL
        .into_iter()
        .map(|stream| (stream, store.cursor(ACCOUNT, stream).unwrap()))
        .collect();
    drop(store);
    let requests_before = env.sim.requests().len();

    // Second run on the same state file.
    let daemon = Daemon::start(&config).await.unwrap();
    let rest: HashMap<Stream, usize> = Stream::ALL
        .into_iter()
        .map(|stream| (stream, want[&stream] - first_run[&stream]))
        .collect();
    wait_for(daemon.stats(), "the rest delivered", |s| {
        delivered_all(s, &rest)
    })
    .await;
    daemon.stop().await;

    for stream in Stream::ALL {
        env.assert_exactly_once(stream);
        let first_request = env.sim.requests()[requests_before..]
            .iter()
            .find(|r| r.stream == stream)
            .map(|r| r.body.clone())
            .expect("the second run asked for this stream");
        match &saved[&stream] {
            Some(cursor) => assert_eq!(
                first_request,
                RequestKind::Cursor(cursor.clone()),
                "{stream}: the first request after the restart carries the saved cursor"
            ),
            None => assert!(matches!(first_request, RequestKind::Reset { .. })),
        }
    }
    assert!(
        saved.values().any(Option::is_some),
        "the first run saved at least one cursor"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_inserted_after_catching_up_arrive_on_the_next_poll() {
    let env = Env::new(200, 13).await;
    let daemon = Daemon::start(&env.config("poll_interval_secs = 1"))
        .await
        .unwrap();
    let want = generated(&env.sim);
    wait_for(daemon.stats(), "the backlog delivered", |s| {
        delivered_all(s, &want)
            && Stream::ALL
                .iter()
                .all(|stream| s.stream(ACCOUNT, *stream).caught_up)
    })
    .await;

    let mut inserted = Vec::new();
    for stream in Stream::ALL {
        inserted.extend(env.sim.insert(stream, 25));
    }
    let want = generated(&env.sim);
    assert!(want.values().all(|n| *n == 225));
    wait_for(daemon.stats(), "the new events delivered", |s| {
        delivered_all(s, &want)
    })
    .await;
    daemon.stop().await;

    for stream in Stream::ALL {
        env.assert_exactly_once(stream);
    }
    let all_lines: String = Stream::ALL
        .iter()
        .map(|s| env.lines(*s).join("\n"))
        .collect();
    for uuid in inserted {
        assert!(all_lines.contains(&uuid), "{uuid} was forwarded");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_token_moves_no_cursor_and_writes_nothing() {
    let env = Env::new(100, 14).await;
    // A well-formed token with every feature, signed by a key the API does not know.
    let foreign = SigningKey::generate().mint(&MintClaims {
        audience: env.sim.audience(),
        features: Stream::ALL.to_vec(),
        issued_at: time::OffsetDateTime::now_utc(),
        expires_at: None,
    });
    std::fs::write(env.path("token"), foreign).unwrap();
    let daemon = Daemon::start(&env.config("")).await.unwrap();
    wait_for(daemon.stats(), "a refused request on every stream", |s| {
        Stream::ALL
            .iter()
            .all(|stream| s.stream(ACCOUNT, *stream).failed_requests > 0)
    })
    .await;
    let stats = daemon.stats().stream(ACCOUNT, Stream::AuditEvents);
    assert!(
        stats
            .last_error
            .unwrap()
            .contains("HTTP 401 (Unauthorized)")
    );
    daemon.stop().await;

    let store = Store::open(&env.path("state.db")).unwrap();
    for stream in Stream::ALL {
        assert_eq!(store.cursor(ACCOUNT, stream).unwrap(), None);
        assert!(env.lines(stream).is_empty());
    }
}
