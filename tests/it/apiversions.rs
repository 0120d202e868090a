//! Every version of the Events API end to end against the simulator: the v1 endpoints with
//! their schemas, the v3 beta stream in both documented revisions, bounded backfills and
//! relative start times. (v2 of the three streams: `daemon.rs`.)

use std::collections::HashMap;

use op_events_forwarder::Daemon;
use op_events_forwarder::sim::{RequestKind, Simulator, V3Revision};
use op_events_forwarder::stream::Stream;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::support::{ACCOUNT, Env, SINK, uuid_of, wait_for};

/// Asserts that `lines` hold exactly the events the simulator serves for `stream` in `version`
/// whose uuids are in `want` (all of them when `None`), once each and byte for byte.
fn assert_exactly(
    sim: &Simulator,
    stream: Stream,
    version: u8,
    lines: &[String],
    want: Option<&[String]>,
) {
    let served: HashMap<String, String> = sim
        .events_as(stream, version)
        .into_iter()
        .map(|e| (e.uuid, e.json))
        .collect();
    let mut seen = HashMap::new();
    for line in lines {
        let uuid = uuid_of(line);
        assert_eq!(
            Some(line),
            served.get(&uuid),
            "{stream}: event {uuid} as served"
        );
        *seen.entry(uuid).or_insert(0) += 1;
    }
    let duplicated: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(duplicated.is_empty(), "{stream}: duplicated {duplicated:?}");
    let mut got: Vec<&String> = seen.keys().collect();
    got.sort();
    let mut expected: Vec<&String> = match want {
        Some(want) => want.iter().collect(),
        None => served.keys().collect(),
    };
    expected.sort();
    assert_eq!(
        got.len(),
        expected.len(),
        "{stream}: how many events arrived"
    );
    assert_eq!(got, expected, "{stream}: which events arrived");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v1_endpoints_serve_the_v1_schemas_end_to_end() {
    let env = Env::new(1_500, 31).await;
    let daemon = Daemon::start(&env.config("api_version = \"v1\"\npage_size = 500"))
        .await
        .unwrap();
    wait_for(daemon.stats(), "every v1 event delivered", |s| {
        Stream::ALL
            .iter()
            .all(|stream| s.delivered(SINK, ACCOUNT, *stream) >= 1_500)
    })
    .await;
    daemon.stop().await;

    for stream in Stream::ALL {
        let lines = env.lines(stream);
        assert_exactly(&env.sim, stream, 1, &lines, None);
        // The v1 schemas have no MSP fields; the same events served by v2 often do.
        for line in &lines {
            for v2_only in ["actor_type", "account_uuid", "user_type", "\"federated\""] {
                assert!(
                    !line.contains(v2_only),
                    "{stream}: v1 event with {v2_only}: {line}"
                );
            }
        }
        let v2: String = env
            .sim
            .events_as(stream, 2)
            .into_iter()
            .map(|e| e.json)
            .collect();
        assert!(
            v2.contains("account_uuid"),
            "{stream}: the v2 events differ"
        );
    }
    let requests = env.sim.requests();
    assert!(!requests.is_empty());
    assert!(
        requests.iter().all(|r| r.version == 1 && r.status == 200),
        "only v1 requests, all answered: {requests:?}"
    );
}

/// Runs `audit_v3` against a simulator serving `revision`, with the daemon configured by
/// `extra`: the backlog, then events inserted after catching up.
async fn v3_end_to_end(revision: V3Revision, extra: &str) -> Env {
    let env = Env::with_sim(700, 32, |sim| sim.v3_revision = revision).await;
    let config = env.config(&format!(
        "streams = [\"audit_v3\"]\npage_size = 100\npoll_interval_secs = 1\n{extra}"
    ));
    let daemon = Daemon::start(&config).await.unwrap();
    wait_for(
        daemon.stats(),
        "the v3 backlog delivered and caught up",
        |s| {
            s.delivered(SINK, ACCOUNT, Stream::AuditV3) >= 700
                && s.stream(ACCOUNT, Stream::AuditV3).caught_up
        },
    )
    .await;
    // Inserted after catching up: the next window starts at the last event's insert_time.
    env.sim.insert(Stream::AuditEvents, 30);
    wait_for(daemon.stats(), "the new v3 events delivered", |s| {
        s.delivered(SINK, ACCOUNT, Stream::AuditV3) >= 730
    })
    .await;
    daemon.stop().await;
    assert_exactly(
        &env.sim,
        Stream::AuditV3,
        3,
        &env.lines(Stream::AuditV3),
        None,
    );
    assert!(
        env.lines(Stream::AuditEvents).is_empty(),
        "only audit_v3 was configured"
    );

    let queries: Vec<String> = env
        .sim
        .requests()
        .into_iter()
        .map(|r| match r.body {
            RequestKind::Query(query) => {
                assert_eq!((r.version, r.status), (3, 200), "{query}");
                query
            }
            other => panic!("a v3 stream sent {other:?}"),
        })
        .collect();
    assert!(queries.len() >= 8, "paged: {queries:?}");
    for query in &queries {
        let token = query.contains("page_token=");
        let window = query.contains("start_time=") || query.contains("end_time=");
        assert!(!(token && window), "a page token with a window: {query}");
    }
    env
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_v3_pages_and_follows_insert_time_in_the_3_0_0_revision() {
    let env = v3_end_to_end(V3Revision::Current, "").await;
    let queries: Vec<String> = env
        .sim
        .requests()
        .into_iter()
        .filter_map(|r| match r.body {
            RequestKind::Query(query) => Some(query),
            _ => None,
        })
        .collect();
    assert!(
        queries[0].starts_with("max_page_size=100&start_time="),
        "{}",
        queries[0]
    );
    assert!(
        queries[1].starts_with("max_page_size=100&page_token="),
        "{}",
        queries[1]
    );
    // Some later window starts exactly at an event's insert_time, nanoseconds and all.
    let inserted: Vec<String> = env
        .sim
        .events(Stream::AuditV3)
        .iter()
        .map(|e| {
            let event: serde_json::Value = serde_json::from_str(&e.json).unwrap();
            event["insert_time"].as_str().unwrap().replace(':', "%3A")
        })
        .collect();
    assert!(
        queries.iter().skip(1).any(|q| q.contains("start_time=")
            && inserted
                .iter()
                .any(|t| q.contains(&format!("start_time={t}")))),
        "a window started at an insert_time: {queries:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_v3_works_with_the_early_beta_names_and_inclusive_start() {
    let env = v3_end_to_end(
        V3Revision::Early,
        "v3_page_size_param = \"page_size\"\nv3_page_token_param = \"next_page_token\"",
    )
    .await;
    let first = env
        .sim
        .requests()
        .into_iter()
        .find_map(|r| match r.body {
            RequestKind::Query(query) => Some(query),
            _ => None,
        })
        .unwrap();
    assert!(first.starts_with("page_size=100&start_time="), "{first}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bounded_backfill_stops_at_end_time_and_relative_starts_resolve() {
    let env = Env::new(2_000, 33).await;
    // The simulator's events span the last 24 hours; read from 18 hours ago to 6 hours ago.
    let before = OffsetDateTime::now_utc();
    let end = before - time::Duration::hours(6);
    let end_text = end.format(&Rfc3339).unwrap();
    let config = env
        .config_toml(&format!("end_time = \"{end_text}\"\npage_size = 250"))
        .replace("start_time = \"-2d\"", "start_time = \"-18h\"");
    let config = op_events_forwarder::config::from_toml_str("it.toml", &config, &[]).unwrap();
    let daemon = Daemon::start(&config).await.unwrap();
    wait_for(
        daemon.stats(),
        "every stream's backfill finished and delivered",
        |s| {
            Stream::ALL.iter().all(|stream| {
                let stats = s.stream(ACCOUNT, *stream);
                stats.finished && s.delivered(SINK, ACCOUNT, *stream) == stats.fetched_events
            })
        },
    )
    .await;
    daemon.stop().await;
    let after = OffsetDateTime::now_utc();

    for stream in Stream::ALL {
        let first = env
            .sim
            .requests()
            .into_iter()
            .find(|r| r.stream == stream)
            .unwrap();
        let RequestKind::Reset {
            start_time: Some(start),
            end_time: Some(sent_end),
            ..
        } = first.body
        else {
            panic!("{stream}: the first request is a window: {:?}", first.body);
        };
        // "-18h" resolved when the daemon started.
        let start = OffsetDateTime::parse(&start, &Rfc3339).unwrap();
        assert!(
            start >= before - time::Duration::hours(18) - time::Duration::seconds(1)
                && start <= after - time::Duration::hours(18),
            "{stream}: start_time {start}"
        );
        assert_eq!(OffsetDateTime::parse(&sent_end, &Rfc3339).unwrap(), end);
        let want: Vec<String> = env
            .sim
            .events(stream)
            .into_iter()
            .filter(|e| e.inserted_at >= start && e.inserted_at <= end)
            .map(|e| e.uuid)
            .collect();
        assert!(
            (990..1_010).contains(&want.len()),
            "{stream}: about half the events are in the window: {}",
            want.len()
        );
        assert_exactly(&env.sim, stream, 2, &env.lines(stream), Some(&want));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_audit_v3_backfill_stops_at_end_time() {
    let env = Env::new(1_000, 34).await;
    let now = OffsetDateTime::now_utc();
    let (start, end) = (
        now - time::Duration::hours(18),
        now - time::Duration::hours(6),
    );
    let extra = format!(
        "streams = [\"audit_v3\"]\npage_size = 100\nend_time = \"{}\"",
        end.format(&Rfc3339).unwrap()
    );
    let config = env.config_toml(&extra).replace(
        "start_time = \"-2d\"",
        &format!("start_time = \"{}\"", start.format(&Rfc3339).unwrap()),
    );
    let config = op_events_forwarder::config::from_toml_str("it.toml", &config, &[]).unwrap();
    let daemon = Daemon::start(&config).await.unwrap();
    wait_for(
        daemon.stats(),
        "the v3 backfill finished and delivered",
        |s| {
            let stats = s.stream(ACCOUNT, Stream::AuditV3);
            stats.finished && s.delivered(SINK, ACCOUNT, Stream::AuditV3) == stats.fetched_events
        },
    )
    .await;
    daemon.stop().await;
    // 3.0.0: start and end exclusive, on insertion time.
    let want: Vec<String> = env
        .sim
        .events(Stream::AuditV3)
        .into_iter()
        .filter(|e| e.inserted_at > start && e.inserted_at < end)
        .map(|e| e.uuid)
        .collect();
    assert!((490..510).contains(&want.len()), "{}", want.len());
    assert_exactly(
        &env.sim,
        Stream::AuditV3,
        3,
        &env.lines(Stream::AuditV3),
        Some(&want),
    );
    let queries: Vec<String> = env
        .sim
        .requests()
        .into_iter()
        .filter_map(|r| match r.body {
            RequestKind::Query(query) => Some(query),
            _ => None,
        })
        .collect();
    assert!(queries[0].contains("&end_time="), "{}", queries[0]);
    assert!(
        queries[1..].iter().all(|q| q.contains("page_token=")),
        "one window, then its pages: {queries:?}"
    );
}
