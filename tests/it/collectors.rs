//! The HTTP sink in the daemon, against in-process collectors: a Splunk HEC faithful to its
//! documented contract (busy, refused events, indexer acknowledgement, lost acks, a wrong
//! token), a `_bulk` collector with mixed item results, a collector that refuses large
//! requests, one that never answers, HTTPS with a private CA and mutual TLS, and a CONNECT
//! proxy. Loss and duplication are checked by event uuid.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use op_events_forwarder::Daemon;
use op_events_forwarder::config::{self, Config};
use op_events_forwarder::sink::http::format::default_sourcetype;
use op_events_forwarder::stats::Stats;
use op_events_forwarder::stream::Stream;

use crate::support::collector::{Collector, Hec, Proxy, Reply, Seen, ServerTls, values};
use crate::support::{ACCOUNT, Env, generated, page, wait_for};

/// The environment's config with its file sink replaced by `sinks` (or beside it, with
/// `keep_files`).
fn config_with(env: &Env, sinks: &str, keep_files: bool) -> Config {
    let toml = env.config_toml("");
    let toml = if keep_files {
        format!("{toml}\n{sinks}")
    } else {
        let head = toml.split("[[sinks]]").next().unwrap();
        format!("{head}\n{sinks}")
    };
    config::from_toml_str("it.toml", &toml, &[]).expect("the test config is valid")
}

/// True when `sink` has delivered or dead-lettered every event generated so far.
fn done(stats: &Stats, sink: &str, want: &HashMap<Stream, usize>) -> bool {
    want.iter().all(|(stream, n)| {
        stats.delivered(sink, ACCOUNT, *stream) + stats.rejected(sink, ACCOUNT, *stream)
            >= *n as u64
    })
}

async fn drain(daemon: &Daemon, env: &Env, sink: &str) {
    let want = generated(&env.sim);
    wait_for(
        daemon.stats(),
        &format!("sink {sink} to take every event"),
        |s| done(s, sink, &want),
    )
    .await;
}

/// Asserts that `got` (uuids) holds every served event but `except` exactly once.
fn assert_once_each(env: &Env, got: &[String], except: &HashSet<String>) {
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for uuid in got {
        *seen.entry(uuid).or_default() += 1;
    }
    let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "delivered more than once: {twice:?}");
    let served = env.served_by_uuid();
    for uuid in seen.keys() {
        assert!(served.contains_key(*uuid), "never served: {uuid}");
    }
    let missing: Vec<_> = served
        .keys()
        .filter(|u| !seen.contains_key(u.as_str()) && !except.contains(*u))
        .collect();
    assert!(
        missing.is_empty(),
        "{} missing, e.g. {:?}",
        missing.len(),
        missing.first()
    );
    for uuid in except {
        assert!(
            !seen.contains_key(uuid.as_str()),
            "{uuid} should not be delivered"
        );
    }
}

fn hec_sink(collector: &Collector, env: &Env, extra: &str) -> String {
    format!(
        "[[sinks]]\nname = \"hec\"\ntype = \"http\"\nurl = \"{}\"\nformat = \"splunk_hec\"\n\
         token_file = \"{}\"\n{extra}\n",
        collector.url,
        env.path("hec-token").display()
    )
}

async fn hec_collector(hec: &Arc<Hec>) -> Collector {
    let hec = Arc::clone(hec);
    Collector::start(move |seen| hec.answer(seen)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hec_indexes_every_event_once_acknowledged_with_the_apps_sourcetypes() {
    let env = Env::new(700, 301).await;
    std::fs::write(env.path("hec-token"), "hec-token-1\n").unwrap();
    let hec = Hec::new("hec-token-1", true);
    hec.state().busy = 2;
    let collector = hec_collector(&hec).await;
    let sink = hec_sink(
        &collector,
        &env,
        "host = \"loghost\"\nack = true\ncompression = \"gzip\"\nmax_events = 300\n\
         [sinks.streams.itemusages]\nindex = \"op_items\"",
    );
    let config = config_with(&env, &sink, false);
    let daemon = Daemon::start(&config).await.unwrap();
    drain(&daemon, &env, "hec").await;
    daemon.stop().await;

    let served = env.served_by_uuid();
    let indexed = hec.state().indexed.clone();
    let mut uuids = Vec::new();
    for object in &indexed {
        let uuid = object["event"]["uuid"].as_str().unwrap().to_owned();
        let (stream, json) = &served[&uuid];
        let event: serde_json::Value = serde_json::from_str(json).unwrap();
        assert_eq!(object["event"], event, "the event as served");
        assert_eq!(object["sourcetype"], default_sourcetype(*stream));
        assert_eq!(object["host"], "loghost");
        let index = (*stream == Stream::ItemUsages).then_some("op_items");
        assert_eq!(object["index"].as_str(), index);
        // `time`: the event's timestamp, in epoch seconds.
        let at = time::OffsetDateTime::parse(
            event["timestamp"].as_str().unwrap(),
            &time::format_description::well_known::Rfc3339,
        )
        .unwrap();
        let time = object["time"].as_f64().unwrap();
        assert!(
            (time - at.unix_timestamp_nanos() as f64 / 1e9).abs() < 1e-3,
            "{time} vs {at}"
        );
        uuids.push(uuid);
    }
    assert_once_each(&env, &uuids, &HashSet::new());
    let seen = collector.seen();
    assert!(
        seen.iter()
            .filter(|s| s.path == "/services/collector/event")
            .all(|s| s.header("content-encoding") == Some("gzip") && s.wire_bytes < s.body.len()),
        "gzipped requests"
    );
    assert!(seen.iter().any(|s| s.path == "/services/collector/health"));
    let channels = hec.state().channels.clone();
    assert_eq!(channels.len(), 1, "one channel per sink: {channels:?}");

    // A restart keeps the channel, so acknowledgements are asked on the same one.
    env.sim.insert(Stream::AuditEvents, 5);
    let daemon = Daemon::start(&config).await.unwrap();
    wait_for(daemon.stats(), "the 5 new events", |s| {
        s.delivered("hec", ACCOUNT, Stream::AuditEvents) >= 5
    })
    .await;
    daemon.stop().await;
    assert_eq!(hec.state().channels, channels);
    assert_eq!(hec.state().indexed.len(), served.len() + 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hec_code_6_makes_that_event_a_dead_letter_and_the_rest_arrive() {
    let env = Env::new(300, 302).await;
    std::fs::write(env.path("hec-token"), "hec-token-2\n").unwrap();
    let hec = Hec::new("hec-token-2", false);
    let bad = env.sim.events(Stream::SignInAttempts)[137].uuid.clone();
    hec.state().refuse.insert(bad.clone());
    let collector = hec_collector(&hec).await;
    let config = config_with(&env, &hec_sink(&collector, &env, ""), false);
    let daemon = Daemon::start(&config).await.unwrap();
    drain(&daemon, &env, "hec").await;
    let dead = daemon.store().dead_letters(Some("hec")).unwrap();
    daemon.stop().await;
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0].uuid.as_deref(), Some(bad.as_str()));
    assert!(dead[0].reason.contains("code 6"), "{}", dead[0].reason);
    let uuids: Vec<String> = hec
        .state()
        .indexed
        .iter()
        .map(|o| o["event"]["uuid"].as_str().unwrap().to_owned())
        .collect();
    assert_once_each(&env, &uuids, &HashSet::from([bad]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hec_acks_that_never_come_are_resent_after_the_timeout() {
    let env = Env::new(250, 303).await;
    std::fs::write(env.path("hec-token"), "hec-token-3\n").unwrap();
    let hec = Hec::new("hec-token-3", true);
    // The first two requests' ackIds are never acknowledged: indexed nowhere, as far as the
    // sink can tell.
    hec.state().lose_acks = 2;
    let collector = hec_collector(&hec).await;
    let config = config_with(
        &env,
        &hec_sink(
            &collector,
            &env,
            "ack = true\nack_timeout_secs = 1\nmax_events = 100",
        ),
        false,
    );
    let daemon = Daemon::start(&config).await.unwrap();
    drain(&daemon, &env, "hec").await;
    daemon.stop().await;
    let state = hec.state();
    // Every event acknowledged once (lost acks' events were never indexed here), and the
    // requests of the lost ones were sent again: at most those 2 × 100 events twice.
    let uuids: Vec<String> = state
        .indexed
        .iter()
        .map(|o| o["event"]["uuid"].as_str().unwrap().to_owned())
        .collect();
    assert_once_each(&env, &uuids, &HashSet::new());
    let total: usize = Stream::ALL.iter().map(|s| env.sim.generated(*s)).sum();
    let sent_events: usize = collector
        .seen()
        .iter()
        .filter(|s| s.path == "/services/collector/event")
        .map(|s| values(&s.body).len())
        .sum();
    assert!(
        sent_events > total && sent_events <= total + 200,
        "{sent_events} events sent for {total}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bulk_collector_retries_exactly_the_failed_items_and_dead_letters_the_refused() {
    let env = Env::new(120, 304).await;
    let events = env.sim.events(Stream::AuditEvents);
    let busy: HashSet<String> = events[10..15].iter().map(|e| e.uuid.clone()).collect();
    let refused: HashSet<String> = events[20..23].iter().map(|e| e.uuid.clone()).collect();
    let existing: HashSet<String> = events[30..40].iter().map(|e| e.uuid.clone()).collect();
    // The documents stored, by _id; busy ones are refused once.
    let stored: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
    let tried_busy: Arc<Mutex<HashSet<String>>> = Arc::default();
    let collector = {
        let (stored, tried_busy) = (Arc::clone(&stored), Arc::clone(&tried_busy));
        let (busy, refused, existing) = (busy.clone(), refused.clone(), existing.clone());
        Collector::start(move |seen: &Seen| {
            assert_eq!(
                (seen.method.as_str(), seen.path.as_str()),
                ("POST", "/_bulk?pipeline=onepassword")
            );
            assert_eq!(seen.header("content-type"), Some("application/x-ndjson"));
            assert_eq!(
                seen.header("authorization"),
                Some("ApiKey aWQ6a2V5LXNlY3JldA==")
            );
            let lines: Vec<serde_json::Value> = values(&seen.body);
            let mut items = Vec::new();
            let mut errors = false;
            for pair in lines.chunks(2) {
                let id = pair[0]["create"]["_id"].as_str().unwrap().to_owned();
                let (status, error) = if existing.contains(&id) {
                    (
                        409,
                        Some((
                            "version_conflict_engine_exception",
                            "document already exists",
                        )),
                    )
                } else if refused.contains(&id) {
                    (
                        400,
                        Some((
                            "mapper_parsing_exception",
                            "failed to parse field [details]",
                        )),
                    )
                } else if busy.contains(&id) && tried_busy.lock().unwrap().insert(id.clone()) {
                    (
                        429,
                        Some(("es_rejected_execution_exception", "rejected execution")),
                    )
                } else {
                    *stored.lock().unwrap().entry(id.clone()).or_default() += 1;
                    (201, None)
                };
                errors |= error.is_some();
                let mut item = serde_json::json!({"_index": "x", "_id": id, "status": status});
                if let Some((kind, reason)) = error {
                    item["error"] = serde_json::json!({"type": kind, "reason": reason});
                }
                items.push(serde_json::json!({ "create": item }));
            }
            Reply::json(
                200,
                serde_json::json!({"took": 1, "errors": errors, "items": items}).to_string(),
            )
        })
        .await
    };
    std::fs::write(env.path("es-key"), "aWQ6a2V5LXNlY3JldA==\n").unwrap();
    let sink = format!(
        "[[sinks]]\nname = \"search\"\ntype = \"http\"\nurl = \"{}\"\nformat = \"elasticsearch\"\n\
         pipeline = \"onepassword\"\napi_key_file = \"{}\"\n",
        collector.url,
        env.path("es-key").display()
    );
    let config = config_with(&env, &sink, false);
    let daemon = Daemon::start(&config).await.unwrap();
    drain(&daemon, &env, "search").await;
    let dead = daemon.store().dead_letters(Some("search")).unwrap();
    daemon.stop().await;

    let dead_uuids: HashSet<String> = dead.iter().filter_map(|d| d.uuid.clone()).collect();
    assert_eq!(dead_uuids, refused);
    assert!(
        dead.iter()
            .all(|d| d.reason.contains("mapper_parsing_exception"))
    );
    let stored = stored.lock().unwrap().clone();
    let mut got: Vec<String> = stored.keys().cloned().collect();
    got.extend(existing.iter().cloned());
    assert_once_each(&env, &got, &refused);
    assert!(stored.values().all(|n| *n == 1));
    // The request after the one with the 429s carried exactly those five, and nothing else.
    let seen = collector.seen();
    let retried = seen
        .iter()
        .find(|s| {
            values(&s.body)
                .chunks(2)
                .all(|pair| busy.contains(pair[0]["create"]["_id"].as_str().unwrap()))
        })
        .expect("a request with the busy items alone");
    assert_eq!(values(&retried.body).len(), 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_413_splits_the_request_and_a_single_event_still_too_large_is_a_dead_letter() {
    let env = Env::new(200, 305).await;
    let big = env.sim.events(Stream::ItemUsages)[77].uuid.clone();
    let taken: Arc<Mutex<Vec<String>>> = Arc::default();
    let collector = {
        let (taken, big) = (Arc::clone(&taken), big.clone());
        Collector::start(move |seen: &Seen| {
            let lines: Vec<String> = values(&seen.body)
                .iter()
                .map(|v| v["uuid"].as_str().unwrap().to_owned())
                .collect();
            // "ops:pa ss" in base64.
            assert_eq!(seen.header("authorization"), Some("Basic b3BzOnBhIHNz"));
            if lines.len() > 40 || lines.contains(&big) {
                return Reply::json(413, r#"{"error":"request entity too large"}"#);
            }
            taken.lock().unwrap().extend(lines);
            Reply::json(200, "{}")
        })
        .await
    };
    std::fs::write(env.path("password"), "pa ss\n").unwrap();
    let sink = format!(
        "[[sinks]]\nname = \"web\"\ntype = \"http\"\nurl = \"{}/ingest\"\nformat = \"ndjson\"\n\
         max_bytes = 65536\nbasic_user = \"ops\"\npassword_file = \"{}\"\n",
        collector.url,
        env.path("password").display()
    );
    let config = config_with(&env, &sink, false);
    let daemon = Daemon::start(&config).await.unwrap();
    drain(&daemon, &env, "web").await;
    let dead = daemon.store().dead_letters(Some("web")).unwrap();
    daemon.stop().await;
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0].uuid.as_deref(), Some(big.as_str()));
    assert!(dead[0].reason.contains("too large"), "{}", dead[0].reason);
    let taken = taken.lock().unwrap().clone();
    assert_once_each(&env, &taken, &HashSet::from([big]));
    // max_bytes holds for every request.
    assert!(collector.seen().iter().all(|s| s.body.len() <= 65536));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_that_never_answers_times_out_and_the_other_sinks_go_on() {
    let env = Env::new(200, 306).await;
    let collector = Collector::start(|_| Reply::Hang).await;
    let sink = format!(
        "[[sinks]]\nname = \"stuck\"\ntype = \"http\"\nurl = \"{}/in\"\nformat = \"json\"\n\
         timeout_secs = 1\n",
        collector.url
    );
    let config = config_with(&env, &sink, true);
    let daemon = Daemon::start(&config).await.unwrap();
    // The file sink takes everything while the collector hangs.
    let want = generated(&env.sim);
    wait_for(daemon.stats(), "the file sink and two timeouts", |s| {
        crate::support::delivered_all(s, &want)
            && Stream::ALL
                .iter()
                .map(|stream| s.failed_deliveries("stuck", ACCOUNT, *stream))
                .sum::<u64>()
                >= 6
    })
    .await;
    let delivered: u64 = Stream::ALL
        .iter()
        .map(|stream| daemon.stats().delivered("stuck", ACCOUNT, *stream))
        .sum();
    for stream in Stream::ALL {
        // It took the connection and the request: said as no answer, not as no connection.
        let error = daemon.stats().sink("stuck", ACCOUNT, stream).last_error;
        assert!(
            error
                .as_deref()
                .is_some_and(|e| e.contains("no answer within 1s")),
            "{error:?}"
        );
    }
    daemon.stop().await;
    assert_eq!(delivered, 0);
    for stream in Stream::ALL {
        env.assert_exactly_once(stream);
    }
    // Each stream's batch was sent again after its timeout.
    assert!(collector.seen().len() >= 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_with_a_private_ca_and_mutual_tls_through_a_connect_proxy() {
    let certs = crate::support::rsyslog::certs();
    let env = Env::new(150, 307).await;
    let collector = Collector::start_with(
        Some(ServerTls {
            cert: &certs.receiver.join("server.crt"),
            key: &certs.receiver.join("server.key"),
            client_ca: Some(&certs.ca),
        }),
        |seen: &Seen| {
            assert_eq!(seen.path, "/hook");
            Reply::json(202, "")
        },
    )
    .await;
    let proxy = Proxy::start().await;
    std::fs::write(env.path("bearer"), "s3cret-bearer\n").unwrap();
    let sink = format!(
        "[[sinks]]\nname = \"hook\"\ntype = \"http\"\nurl = \"{}/hook\"\nformat = \"ndjson\"\n\
         envelope = true\ntoken_file = \"{}\"\nca_file = \"{}\"\nclient_cert = \"{}\"\n\
         client_key = \"{}\"\nproxy_url = \"{}\"\nheaders = {{ X-Source = \"op\" }}\n",
        collector.url,
        env.path("bearer").display(),
        certs.ca.display(),
        certs.client_cert.display(),
        certs.client_key.display(),
        proxy.url
    );
    let config = config_with(&env, &sink, false);
    let daemon = Daemon::start(&config).await.unwrap();
    drain(&daemon, &env, "hook").await;
    daemon.stop().await;
    let seen = collector.seen();
    let served = env.served_by_uuid();
    let mut uuids = Vec::new();
    for request in &seen {
        assert_eq!(
            request.header("authorization"),
            Some("Bearer s3cret-bearer")
        );
        assert_eq!(request.header("x-source"), Some("op"));
        for line in request.text().lines() {
            let wrapped: serde_json::Value = serde_json::from_str(line).unwrap();
            assert_eq!(wrapped["account"], ACCOUNT);
            let uuid = wrapped["event"]["uuid"].as_str().unwrap().to_owned();
            let (stream, json) = &served[&uuid];
            assert_eq!(wrapped["stream"], stream.as_str());
            // The event embedded byte for byte.
            assert!(line.contains(json.as_str()));
            uuids.push(uuid);
        }
    }
    assert_once_each(&env, &uuids, &HashSet::new());
    let connects = proxy.connects.lock().unwrap().clone();
    assert!(!connects.is_empty());
    assert!(
        connects
            .iter()
            .all(|c| *c == format!("localhost:{}", collector.port)),
        "{connects:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_whose_certificate_is_not_trusted_gets_nothing_and_nothing_is_lost() {
    let certs = crate::support::rsyslog::certs();
    let env = Env::new(50, 308).await;
    let collector = Collector::start_with(
        Some(ServerTls {
            cert: &certs.receiver.join("server.crt"),
            key: &certs.receiver.join("server.key"),
            client_ca: None,
        }),
        |_| Reply::json(200, ""),
    )
    .await;
    let sink = format!(
        "[[sinks]]\nname = \"hook\"\ntype = \"http\"\nurl = \"{}/hook\"\nformat = \"json\"\n\
         ca_file = \"{}\"\n",
        collector.url,
        certs.other_ca.display()
    );
    let config = config_with(&env, &sink, true);
    let daemon = Daemon::start(&config).await.unwrap();
    let want = generated(&env.sim);
    wait_for(
        daemon.stats(),
        "the file sink and a refused handshake",
        |s| {
            crate::support::delivered_all(s, &want)
                && Stream::ALL
                    .iter()
                    .all(|stream| s.failed_deliveries("hook", ACCOUNT, *stream) >= 1)
        },
    )
    .await;
    // Retried slowly, never dropped: nothing is a dead letter, the pages wait.
    assert!(
        daemon
            .store()
            .dead_letters(Some("hook"))
            .unwrap()
            .is_empty()
    );
    daemon.stop().await;
    assert!(collector.seen().is_empty());
}

/// An HTTP sink built from a `[[sinks]]` table, as the daemon builds it.
fn build_sink(sink: &str, dir: &std::path::Path) -> op_events_forwarder::sink::Sink {
    let head = format!(
        "[state]\npath = \"{}/state.db\"\n\n[[accounts]]\nname = \"it\"\ntoken_env = \"T\"\n\
         base_url = \"https://events.1password.com\"\n",
        dir.display()
    );
    let config = config::from_toml_str("it.toml", &format!("{head}{sink}"), &[]).unwrap();
    let store = op_events_forwarder::store::Store::open(&dir.join("state.db")).unwrap();
    op_events_forwarder::sink::Sink::from_config(&config.sinks[0], Some(&store)).unwrap()
}

fn events(n: usize, tag: &str) -> Vec<String> {
    (0..n)
        .map(|i| {
            format!(
                r#"{{"uuid":"{tag}-{i}","timestamp":"2026-11-30T10:00:{:02}Z"}}"#,
                i % 60
            )
        })
        .collect()
}

/// A HEC sink of its own (no daemon) in front of `hec`, its token file holding `token`, with
/// `extra` keys; the sink, the token file and the collector.
async fn hec_alone(
    hec: &Arc<Hec>,
    dir: &std::path::Path,
    token: &str,
    extra: &str,
) -> (
    op_events_forwarder::sink::Sink,
    std::path::PathBuf,
    Collector,
) {
    let path = dir.join("hec-token");
    std::fs::write(&path, format!("{token}\n")).unwrap();
    let collector = hec_collector(hec).await;
    let sink = build_sink(
        &format!(
            "[[sinks]]\nname = \"hec\"\ntype = \"http\"\nurl = \"{}\"\nformat = \"splunk_hec\"\n\
             token_file = \"{}\"\n{extra}\n",
            collector.url,
            path.display()
        ),
        dir,
    );
    (sink, path, collector)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_credential_is_read_again_after_a_403() {
    let dir = tempfile::tempdir().unwrap();
    let hec = Hec::new("new-token", false);
    let (sink, token, _collector) =
        hec_alone(&hec, dir.path(), "old-token", "max_events = 10").await;
    let batch = events(30, "R");
    // Refused: the error says what to fix; the file is read again for the next try.
    let err = sink
        .deliver("it", Stream::AuditEvents, &[page(1, &batch)])
        .await
        .unwrap_err();
    assert_eq!(err.action(), op_events_forwarder::sink::Action::RetrySlowly);
    let text = err.to_string();
    assert!(
        text.contains("HTTP 403") && text.contains("token_file"),
        "{text}"
    );
    assert!(!text.contains("old-token"), "{text}");
    std::fs::write(&token, "new-token\n").unwrap();
    let delivered = sink
        .deliver("it", Stream::AuditEvents, &[page(1, &batch)])
        .await
        .unwrap();
    assert!(delivered.rejected.is_empty());
    let uuids: Vec<String> = hec
        .state()
        .indexed
        .iter()
        .map(|o| o["event"]["uuid"].as_str().unwrap().to_owned())
        .collect();
    let want: Vec<String> = (0..30).map(|i| format!("R-{i}")).collect();
    assert_eq!(uuids, want, "every event once, in order");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partly_taken_batch_is_not_sent_whole_again() {
    let dir = tempfile::tempdir().unwrap();
    // Takes the first request, then fails every second one.
    let taken: Arc<Mutex<Vec<String>>> = Arc::default();
    let collector = {
        let taken = Arc::clone(&taken);
        let n = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        Collector::start(move |seen: &Seen| {
            if n.fetch_add(1, std::sync::atomic::Ordering::SeqCst) % 2 == 1 {
                return Reply::json(503, "busy");
            }
            taken.lock().unwrap().extend(
                values(&seen.body)
                    .iter()
                    .map(|v| v["uuid"].as_str().unwrap().to_owned()),
            );
            Reply::json(200, "")
        })
        .await
    };
    let sink = build_sink(
        &format!(
            "[[sinks]]\nname = \"web\"\ntype = \"http\"\nurl = \"{}/in\"\nformat = \"ndjson\"\n\
             max_events = 7\n",
            collector.url
        ),
        dir.path(),
    );
    let pages = vec![page(1, &events(20, "A")), page(2, &events(15, "B"))];
    let mut tries = 0;
    loop {
        tries += 1;
        match sink.deliver("it", Stream::ItemUsages, &pages).await {
            Ok(delivered) => {
                assert!(delivered.rejected.is_empty());
                break;
            }
            Err(err) => assert_eq!(err.action(), op_events_forwarder::sink::Action::Retry),
        }
        assert!(tries < 20);
    }
    let want: Vec<String> = (0..20)
        .map(|i| format!("A-{i}"))
        .chain((0..15).map(|i| format!("B-{i}")))
        .collect();
    assert_eq!(*taken.lock().unwrap(), want, "each event once, in order");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_over_max_bytes_is_a_dead_letter_and_its_neighbours_go_as_they_were() {
    let dir = tempfile::tempdir().unwrap();
    let collector = Collector::start(|_| Reply::json(200, "")).await;
    let sink = build_sink(
        &format!(
            "[[sinks]]\nname = \"web\"\ntype = \"http\"\nurl = \"{}/in\"\nformat = \"ndjson\"\n\
             max_bytes = 1024\n",
            collector.url
        ),
        dir.path(),
    );
    let mut batch = events(5, "M");
    let big = format!(r#"{{"uuid":"M-big","pad":"{}"}}"#, "x".repeat(2000));
    batch.insert(2, big.clone());
    let delivered = sink
        .deliver("it", Stream::AuditEvents, &[page(1, &batch)])
        .await
        .unwrap();
    assert_eq!(delivered.rejected.len(), 1, "{:?}", delivered.rejected);
    assert_eq!(delivered.rejected[0].event, big);
    assert_eq!(delivered.rejected[0].uuid.as_deref(), Some("M-big"));
    assert!(
        delivered.rejected[0]
            .reason
            .contains("more than max_bytes (1024)"),
        "{}",
        delivered.rejected[0].reason
    );
    // The others, byte for byte, in order, within max_bytes.
    let seen = collector.seen();
    let body: Vec<u8> = seen.iter().flat_map(|s| s.body.clone()).collect();
    let want: String = batch
        .iter()
        .filter(|event| **event != big)
        .map(|event| format!("{event}\n"))
        .collect();
    assert_eq!(String::from_utf8(body).unwrap(), want);
    assert!(seen.iter().all(|s| s.body.len() <= 1024));
}

/// Waits until `done` holds, checking every 20 ms: the daemon is another process, and what
/// it sent or logged is the only signal it gives.
async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + crate::support::PATIENCE;
    while !done() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// A regression: a reload that came while a delivery was under way was taken as seen when
/// that delivery was refused, so the retry waited out the whole slow retry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_while_a_refused_delivery_is_under_way_retries_it_at_once() {
    let env = Env::new(40, 311).await;
    std::fs::write(env.path("bearer"), "old-bearer-91c2\n").unwrap();
    let (release, released) = tokio::sync::watch::channel(false);
    let collector = Collector::start(move |seen: &Seen| {
        if seen.header("authorization") == Some("Bearer new-bearer-4d0e") {
            Reply::json(200, "")
        } else {
            Reply::When(
                released.clone(),
                Box::new(Reply::json(403, r#"{"error":"token revoked"}"#)),
            )
        }
    })
    .await;
    let sink = format!(
        "[[sinks]]\nname = \"web\"\ntype = \"http\"\nurl = \"{}/in\"\nformat = \"ndjson\"\n\
         token_file = \"{}\"\n",
        collector.url,
        env.path("bearer").display()
    );
    let config = config_with(&env, &sink, false);
    let daemon = Daemon::start(&config).await.unwrap();
    // Every stream's first delivery is at the collector, unanswered, when the operator writes
    // the new token and reloads; only then are they refused.
    wait_until("a delivery of every stream under way", || {
        collector.seen().len() >= Stream::ALL.len()
    })
    .await;
    std::fs::write(env.path("bearer"), "new-bearer-4d0e\n").unwrap();
    daemon.reload();
    let refused_at = std::time::Instant::now();
    release.send_replace(true);
    drain(&daemon, &env, "web").await;
    let took = refused_at.elapsed();
    daemon.stop().await;
    assert!(
        took < op_events_forwarder::sink::SLOW_RETRY / 2,
        "delivered {took:?} after the refusal"
    );
    let seen = collector.seen();
    assert_eq!(
        seen.iter()
            .filter(|s| s.header("authorization") != Some("Bearer new-bearer-4d0e"))
            .count(),
        Stream::ALL.len(),
        "one refused request per stream"
    );
    let uuids: Vec<String> = seen
        .iter()
        .filter(|s| s.header("authorization") == Some("Bearer new-bearer-4d0e"))
        .flat_map(|s| {
            s.text()
                .lines()
                .map(crate::support::uuid_of)
                .collect::<Vec<_>>()
        })
        .collect();
    assert_once_each(&env, &uuids, &HashSet::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_never_prints_a_collectors_secret_and_a_reload_retries_at_once() {
    let env = Env::new(40, 309).await;
    let hec = Hec::new("good-hec-token-5e1f", false);
    // A collector that echoes the credential it was sent in every refusal.
    let collector = {
        let hec = Arc::clone(&hec);
        Collector::start(move |seen: &Seen| {
            let auth = seen.header("authorization").unwrap_or("").to_owned();
            if auth == "Splunk good-hec-token-5e1f" {
                hec.answer(seen)
            } else {
                Reply::json(
                    403,
                    format!(r#"{{"text":"Invalid token: you sent {auth}","code":4}}"#),
                )
            }
        })
        .await
    };
    std::fs::write(env.path("hec-token"), "bad-hec-token-77aa\n").unwrap();
    let toml = env.config_toml("");
    let toml = format!(
        "{}\n{}",
        toml.split("[[sinks]]").next().unwrap(),
        hec_sink(&collector, &env, "")
    );
    let config_path = env.path("config.toml");
    std::fs::write(&config_path, toml).unwrap();
    let log = env.path("daemon.log");
    let mut daemon = crate::support::spawn_daemon(&config_path, &log, "trace");
    let logged = || std::fs::read_to_string(&log).unwrap_or_default();
    wait_until("the refusal to be logged", || {
        let text = logged();
        text.contains("HEC health check failed") && text.contains("refuses our credential")
    })
    .await;
    // Fixed by the operator, then `systemctl reload`: delivered at once, not after the slow
    // retry's minute.
    std::fs::write(env.path("hec-token"), "good-hec-token-5e1f\n").unwrap();
    let reloaded_at = std::time::Instant::now();
    crate::support::sighup(&daemon);
    let total: usize = Stream::ALL.iter().map(|s| env.sim.generated(*s)).sum();
    wait_until("every event indexed", || hec.state().indexed.len() >= total).await;
    assert!(
        reloaded_at.elapsed() < op_events_forwarder::sink::SLOW_RETRY,
        "delivered {:?} after the reload",
        reloaded_at.elapsed()
    );
    let status = crate::support::terminate(&mut daemon);
    assert!(status.success(), "{status}");
    let text = logged();
    assert!(
        !text.contains("bad-hec-token-77aa"),
        "the old token was printed:\n{text}"
    );
    assert!(
        !text.contains("good-hec-token-5e1f"),
        "the token was printed:\n{text}"
    );
    assert!(text.contains("you sent Splunk [REDACTED]"), "{text}");
    let uuids: Vec<String> = hec
        .state()
        .indexed
        .iter()
        .map(|o| o["event"]["uuid"].as_str().unwrap().to_owned())
        .collect();
    assert_once_each(&env, &uuids, &HashSet::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_proxy_and_no_proxy_from_the_environment() {
    let env = Env::new(20, 310).await;
    let collector = Collector::start(|_| Reply::json(200, "")).await;
    let proxy = Proxy::start().await;
    let toml = env.config_toml("");
    let sink = format!(
        "[[sinks]]\nname = \"web\"\ntype = \"http\"\nurl = \"{}/in\"\nformat = \"json\"\n",
        collector.url
    );
    let toml = format!("{}\n{sink}", toml.split("[[sinks]]").next().unwrap());
    let config_path = env.path("config.toml");
    std::fs::write(&config_path, toml).unwrap();
    let total: usize = Stream::ALL.iter().map(|s| env.sim.generated(*s)).sum();
    let received = || -> usize {
        collector
            .seen()
            .iter()
            .map(|s| {
                serde_json::from_slice::<Vec<serde_json::Value>>(&s.body)
                    .unwrap()
                    .len()
            })
            .sum()
    };
    for (no_proxy, tunnelled) in [("", true), ("127.0.0.1", false)] {
        let before = received();
        let connects_before = proxy.connects.lock().unwrap().len();
        let log = env.path("daemon.log");
        let mut daemon = std::process::Command::new(crate::support::BIN)
            .args(["run", "--config"])
            .arg(&config_path)
            .env("HTTP_PROXY", &proxy.url)
            .env("NO_PROXY", no_proxy)
            .env("RUST_LOG", "info")
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        // The state is deleted each round, so everything is delivered again.
        wait_until("every event", || received() >= before + total).await;
        crate::support::terminate(&mut daemon);
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(env.path(&format!("state.db{suffix}")));
        }
        let connects = proxy.connects.lock().unwrap().len() - connects_before;
        assert_eq!(
            connects > 0,
            tunnelled,
            "NO_PROXY={no_proxy:?}: {connects} tunnels"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hec_token_with_acknowledgement_on_tells_a_sink_without_it_to_set_ack() {
    let dir = tempfile::tempdir().unwrap();
    let hec = Hec::new("ack-token", true);
    let (sink, _token, _collector) = hec_alone(&hec, dir.path(), "ack-token", "").await;
    let err = sink
        .deliver("it", Stream::AuditEvents, &[page(1, &events(3, "C"))])
        .await
        .unwrap_err();
    assert_eq!(err.action(), op_events_forwarder::sink::Action::RetrySlowly);
    let text = err.to_string();
    assert!(
        text.contains("code 10") && text.contains("set ack = true"),
        "{text}"
    );
    assert!(hec.state().indexed.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_worker_waits_as_long_as_a_collectors_retry_after_says() {
    let env = Env::new(3, 311).await;
    let arrivals: Arc<Mutex<Vec<std::time::Instant>>> = Arc::default();
    let collector = {
        let arrivals = Arc::clone(&arrivals);
        Collector::start(move |_| {
            let mut arrivals = arrivals.lock().unwrap();
            arrivals.push(std::time::Instant::now());
            if arrivals.len() == 1 {
                Reply::Answer {
                    status: 429,
                    headers: vec![("retry-after", "2".to_owned())],
                    body: b"slow down".to_vec(),
                }
            } else {
                Reply::json(200, "")
            }
        })
        .await
    };
    let toml = env.config_toml("streams = [\"auditevents\"]");
    let toml = format!(
        "{}\n[[sinks]]\nname = \"web\"\ntype = \"http\"\nurl = \"{}/in\"\nformat = \"json\"\n",
        toml.split("[[sinks]]").next().unwrap(),
        collector.url
    );
    let config = config::from_toml_str("it.toml", &toml, &[]).unwrap();
    let daemon = Daemon::start(&config).await.unwrap();
    wait_for(daemon.stats(), "the events delivered after the wait", |s| {
        s.delivered("web", ACCOUNT, Stream::AuditEvents) >= 3
    })
    .await;
    daemon.stop().await;
    let arrivals = arrivals.lock().unwrap();
    let gap = arrivals[1] - arrivals[0];
    assert!(
        gap >= std::time::Duration::from_secs(2),
        "sent again after {gap:?}, not the 2 s asked"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrency_sends_that_many_requests_of_a_stream_at_once() {
    let dir = tempfile::tempdir().unwrap();
    type Arrivals = Vec<(std::time::Instant, Vec<String>)>;
    let arrivals: Arc<Mutex<Arrivals>> = Arc::default();
    let collector = {
        let arrivals = Arc::clone(&arrivals);
        Collector::start(move |seen: &Seen| {
            let uuids = values(&seen.body)
                .iter()
                .map(|v| v["uuid"].as_str().unwrap().to_owned())
                .collect();
            arrivals
                .lock()
                .unwrap()
                .push((std::time::Instant::now(), uuids));
            Reply::After(
                std::time::Duration::from_millis(400),
                Box::new(Reply::json(200, "")),
            )
        })
        .await
    };
    let sink = build_sink(
        &format!(
            "[[sinks]]\nname = \"web\"\ntype = \"http\"\nurl = \"{}/in\"\nformat = \"ndjson\"\n\
             max_events = 10\nconcurrency = 4\n",
            collector.url
        ),
        dir.path(),
    );
    let batch = events(80, "K");
    let delivered = sink
        .deliver("it", Stream::AuditEvents, &[page(1, &batch)])
        .await
        .unwrap();
    assert!(delivered.rejected.is_empty());
    let arrivals = arrivals.lock().unwrap().clone();
    assert_eq!(arrivals.len(), 8);
    let mut got: Vec<String> = arrivals.iter().flat_map(|(_, u)| u.clone()).collect();
    got.sort();
    let mut want: Vec<String> = (0..80).map(|i| format!("K-{i}")).collect();
    want.sort();
    assert_eq!(got, want, "every event once");
    // Four requests out before the first answer (400 ms), then the next four.
    let first = arrivals[0].0;
    let early = arrivals
        .iter()
        .filter(|(at, _)| *at - first < std::time::Duration::from_millis(300))
        .count();
    assert_eq!(early, 4, "requests in flight at once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_that_takes_no_connections_costs_no_batch_until_it_returns() {
    let env = Env::new(300, 311).await;
    // A port held by a socket that is bound but not listening: connections to it are
    // refused, and the kernel hands it to nobody else until the collector takes it.
    let held = tokio::net::TcpSocket::new_v4().unwrap();
    held.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let port = held.local_addr().unwrap().port();
    let sink = format!(
        "[[sinks]]\nname = \"later\"\ntype = \"http\"\nurl = \"http://127.0.0.1:{port}/in\"\n\
         format = \"ndjson\"\n"
    );
    let config = config_with(&env, &sink, true);
    let daemon = Daemon::start(&config).await.unwrap();
    let want = generated(&env.sim);
    wait_for(
        daemon.stats(),
        "the file sink, two refused connections",
        |s| {
            crate::support::delivered_all(s, &want)
                && Stream::ALL.iter().all(|stream| {
                    s.sink("later", ACCOUNT, *stream).failed.get("unreachable") >= Some(&2)
                })
        },
    )
    .await;
    for stream in Stream::ALL {
        let stats = daemon.stats().sink("later", ACCOUNT, stream);
        // Every try stopped at the connection: no batch was read, encoded or sent.
        assert_eq!(
            stats.failed.get("retry"),
            None,
            "{stream}: {:?}",
            stats.failed
        );
        assert_eq!(stats.delivered, 0);
        let error = stats.last_error.unwrap();
        assert!(
            error.contains(&format!("http://127.0.0.1:{port}/in"))
                && error.contains("cannot connect"),
            "{error}"
        );
    }
    drop(held);
    let collector = Collector::start_on(port, None, |_| Reply::json(200, "")).await;
    drain(&daemon, &env, "later").await;
    daemon.stop().await;
    let got: Vec<String> = collector
        .seen()
        .iter()
        .flat_map(|seen| values(&seen.body))
        .map(|v| v["uuid"].as_str().unwrap().to_owned())
        .collect();
    assert_once_each(&env, &got, &HashSet::new());
    for stream in Stream::ALL {
        env.assert_exactly_once(stream);
    }
}
