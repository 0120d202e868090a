//! The HTTP collectors' request bodies and answers against real peers: `_bulk` into the
//! OpenSearch emulator (every event once, idempotent by uuid, both document shapes).

use op_events_forwarder::sink::http::classify::{ItemVerdict, bulk_items};
use op_events_forwarder::sink::http::format::{Document, bulk_create, integration_data_stream};
use op_events_forwarder::stream::Stream;

use crate::support::Env;
use crate::support::opensearch::{OpenSearch, request};

async fn count(search: &OpenSearch, index: &str) -> u64 {
    let (status, body) = request(
        "GET",
        &format!("{}/{index}/_count", search.url),
        "application/json",
        Vec::new(),
    )
    .await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
    body["count"].as_u64().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_creates_index_each_event_once_and_a_second_delivery_is_409s() {
    let env = Env::new(120, 101).await;
    let search = OpenSearch::start();
    for (document, index_of) in [
        (Document::Integration, None),
        (Document::Event, Some("onepassword-events")),
    ] {
        for stream in Stream::ALL {
            let index =
                index_of.map_or_else(|| integration_data_stream(stream, "default"), str::to_owned);
            let events = env.sim.events(stream);
            let mut body = Vec::new();
            for event in &events {
                bulk_create(&mut body, &event.json, &index, document);
            }
            let url = format!("{}/_bulk?refresh=true", search.url);
            let (status, answer) =
                request("POST", &url, "application/x-ndjson", body.clone()).await;
            assert_eq!(status, 200, "{}", String::from_utf8_lossy(&answer));
            let items = bulk_items(&answer, events.len()).expect("a bulk answer");
            assert!(
                items.iter().all(|i| *i == ItemVerdict::Delivered),
                "{document:?} {stream}"
            );
            // The same batch again (a crash before the acknowledgement, a replay): every item
            // 409, counted as delivered, and no document twice.
            let (status, again) = request("POST", &url, "application/x-ndjson", body).await;
            assert_eq!(status, 200);
            let text = String::from_utf8_lossy(&again);
            assert!(text.contains("\"status\":409"), "{text}");
            let items = bulk_items(&again, events.len()).unwrap();
            assert!(items.iter().all(|i| *i == ItemVerdict::Delivered));
            if index_of.is_none() {
                assert_eq!(
                    count(&search, &index).await,
                    events.len() as u64,
                    "{stream}"
                );
            }
        }
        if let Some(index) = index_of {
            let total: usize = Stream::ALL.iter().map(|s| env.sim.events(*s).len()).sum();
            assert_eq!(count(&search, index).await, total as u64);
        }
    }
    // An integration document holds the event as received, as its message.
    let stream = Stream::SignInAttempts;
    let event = &env.sim.events(stream)[0];
    let url = format!(
        "{}/{}/_doc/{}",
        search.url,
        integration_data_stream(stream, "default"),
        event.uuid
    );
    let (status, doc) = request("GET", &url, "application/json", Vec::new()).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&doc));
    let doc: serde_json::Value = serde_json::from_slice(&doc).unwrap();
    assert_eq!(doc["_source"]["message"], event.json.as_str());
}

/// The daemon's HTTP sinks into the emulator, both document shapes at once (one gzipped):
/// every event indexed exactly once; with the state deleted, everything is delivered again
/// and the counts do not move (each create a 409, counted as delivered).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_indexes_every_event_once_and_a_full_redelivery_changes_nothing() {
    use op_events_forwarder::Daemon;
    let env = Env::new(300, 102).await;
    let search = OpenSearch::start();
    let sinks = format!(
        "[[sinks]]\nname = \"integration\"\ntype = \"http\"\nurl = \"{url}\"\nformat = \"elasticsearch\"\n\
         compression = \"gzip\"\n\n\
         [[sinks]]\nname = \"events\"\ntype = \"http\"\nurl = \"{url}\"\nformat = \"elasticsearch\"\n\
         document = \"event\"\nindex = \"op-{{stream}}\"\nmax_events = 250\n",
        url = search.url
    );
    let toml = env.config_toml("");
    let toml = format!("{}\n{sinks}", toml.split("[[sinks]]").next().unwrap());
    let config = op_events_forwarder::config::from_toml_str("it.toml", &toml, &[]).unwrap();
    let want = crate::support::generated(&env.sim);
    let drained = |stats: &op_events_forwarder::stats::Stats| {
        ["integration", "events"].iter().all(|sink| {
            want.iter().all(|(stream, n)| {
                stats.delivered(sink, crate::support::ACCOUNT, *stream) >= *n as u64
            })
        })
    };
    let counts = async || {
        let (status, _) = request(
            "POST",
            &format!("{}/_refresh", search.url),
            "application/json",
            Vec::new(),
        )
        .await;
        assert_eq!(status, 200);
        let mut counts = Vec::new();
        for stream in Stream::ALL {
            counts.push(count(&search, &integration_data_stream(stream, "default")).await);
            counts.push(count(&search, &format!("op-{stream}")).await);
        }
        counts
    };
    let expected: Vec<u64> = Stream::ALL
        .iter()
        .flat_map(|stream| [want[stream] as u64; 2])
        .collect();
    for round in 0..2 {
        if round == 1 {
            // A lost state: every event is fetched and delivered again.
            for suffix in ["", "-wal", "-shm"] {
                let _ = std::fs::remove_file(env.path(&format!("state.db{suffix}")));
            }
        }
        let daemon = Daemon::start(&config).await.unwrap();
        crate::support::wait_for(daemon.stats(), "both sinks to take every event", drained).await;
        let dead = daemon.store().dead_letters(None).unwrap();
        daemon.stop().await;
        assert!(dead.is_empty(), "{dead:?}");
        assert_eq!(counts().await, expected, "round {round}");
    }
    // An event-shaped document is the event's own fields, with @timestamp.
    let event = &env.sim.events(Stream::ItemUsages)[5];
    let url = format!("{}/op-itemusages/_doc/{}", search.url, event.uuid);
    let (status, doc) = request("GET", &url, "application/json", Vec::new()).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&doc));
    let doc: serde_json::Value = serde_json::from_slice(&doc).unwrap();
    let served: serde_json::Value = serde_json::from_str(&event.json).unwrap();
    assert_eq!(doc["_source"]["uuid"], served["uuid"]);
    assert_eq!(doc["_source"]["timestamp"], served["timestamp"]);
    assert!(doc["_source"]["@timestamp"].is_string());
}
