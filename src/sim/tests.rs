//! End-to-end tests of the simulator over real sockets, plus checks of the generated events' shape.

use std::collections::HashSet;
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http::header::{AUTHORIZATION, HOST};
use http_body_util::{BodyExt as _, Full};
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use serde_json::Value;
use serde_json::value::RawValue;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use super::generate::{self, World};
use super::*;

const UNAUTHORIZED: &str = r#"{"Error":{"Message":"Unauthorized"}}"#;
const BAD_REQUEST: &str = r#"{"Error":{"Message":"Bad Request"}}"#;

fn config(initial_events: usize) -> SimConfig {
    let mut cfg = SimConfig::new("127.0.0.1:0".parse().unwrap());
    cfg.initial_events = initial_events;
    cfg
}

async fn start(cfg: SimConfig) -> Simulator {
    Simulator::start(cfg).await.unwrap()
}

/// One HTTP/1.1 client connection to the simulator.
struct Client {
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
}

impl Client {
    async fn connect(sim: &Simulator) -> Client {
        let socket = TcpStream::connect(sim.addr()).await.unwrap();
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(socket))
            .await
            .unwrap();
        tokio::spawn(connection);
        Client { sender }
    }

    /// Sends a request (no Content-Type, like 1Password's own clients) and returns status and body.
    async fn send(
        &mut self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: &str,
    ) -> (u16, String) {
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header(HOST, "127.0.0.1");
        if let Some(token) = token {
            request = request.header(AUTHORIZATION, format!("Bearer {token}"));
        }
        let request = request
            .body(Full::new(Bytes::from(body.to_owned())))
            .unwrap();
        let response = self.sender.send_request(request).await.unwrap();
        let status = response.status().as_u16();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8(body.to_vec()).unwrap())
    }
}

/// One request on a fresh connection.
async fn call(
    sim: &Simulator,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> (u16, String) {
    Client::connect(sim)
        .await
        .send(method, path, token, body)
        .await
}

async fn post(sim: &Simulator, stream: Stream, body: &str) -> (u16, String) {
    call(
        sim,
        "POST",
        &format!("/api/v2/{stream}"),
        Some("sim-token"),
        body,
    )
    .await
}

#[derive(Deserialize)]
struct PageBody<'a> {
    cursor: String,
    has_more: bool,
    #[serde(borrow)]
    items: Vec<&'a RawValue>,
}

fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap()
}

fn reset_from(t: OffsetDateTime, limit: u32) -> String {
    format!(r#"{{"limit":{limit},"start_time":"{}"}}"#, rfc3339(t))
}

/// Follows cursors until `has_more` is false; returns every item's bytes and the last cursor.
async fn drain(sim: &Simulator, stream: Stream, first_body: &str) -> (Vec<String>, String) {
    let mut client = Client::connect(sim).await;
    let mut body = first_body.to_owned();
    let mut items = Vec::new();
    for _ in 0..1000 {
        let (status, text) = client
            .send(
                "POST",
                &format!("/api/v2/{stream}"),
                Some("sim-token"),
                &body,
            )
            .await;
        assert_eq!(status, 200, "{text}");
        let page: PageBody<'_> = serde_json::from_str(&text).unwrap();
        items.extend(page.items.iter().map(|item| item.get().to_owned()));
        if !page.has_more {
            return (items, page.cursor);
        }
        body = format!(r#"{{"cursor":"{}"}}"#, page.cursor);
    }
    panic!("paging did not finish");
}

#[tokio::test]
async fn rejects_missing_unknown_and_unscoped_tokens() {
    let mut cfg = config(10);
    cfg.tokens = vec![
        SimToken::all("sim-token"),
        "audit-only=auditevents".parse().unwrap(),
    ];
    let sim = start(cfg).await;
    for token in [None, Some("wrong-token"), Some("")] {
        let (status, body) = call(&sim, "POST", "/api/v2/itemusages", token, "{}").await;
        assert_eq!((status, body.as_str()), (401, UNAUTHORIZED));
    }
    let mut client = Client::connect(&sim).await;
    for (header, expected) in [
        ("Basic sim-token", 401),
        ("bearer sim-token", 200),
        ("Bearer  sim-token ", 200),
    ] {
        let request = Request::builder()
            .method("POST")
            .uri("/api/v2/auditevents")
            .header(HOST, "x")
            .header(AUTHORIZATION, header)
            .body(Full::new(Bytes::from_static(b"{}")))
            .unwrap();
        let response = client.sender.send_request(request).await.unwrap();
        assert_eq!(response.status().as_u16(), expected, "{header}");
        response.into_body().collect().await.unwrap();
    }

    let (status, _) = call(
        &sim,
        "POST",
        "/api/v2/auditevents",
        Some("audit-only"),
        "{}",
    )
    .await;
    assert_eq!(status, 200);
    for stream in [Stream::ItemUsages, Stream::SignInAttempts] {
        let (status, body) = call(
            &sim,
            "POST",
            &format!("/api/v2/{stream}"),
            Some("audit-only"),
            "{}",
        )
        .await;
        assert_eq!((status, body.as_str()), (401, UNAUTHORIZED));
    }
    let (status, body) = call(
        &sim,
        "GET",
        "/api/v2/auth/introspect",
        Some("audit-only"),
        "",
    )
    .await;
    assert_eq!(status, 200);
    let introspection: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        introspection["features"],
        serde_json::json!(["auditevents"])
    );

    let records = sim.requests();
    assert_eq!(
        records[0],
        RequestRecord {
            version: 2,
            stream: Stream::ItemUsages,
            status: 401,
            body: RequestKind::Reset {
                limit: None,
                start_time: None,
                end_time: None
            },
            fault: None,
        }
    );
}

#[tokio::test]
async fn rejects_bad_requests_with_the_production_body() {
    let sim = start(config(20)).await;
    let (_, first) = post(&sim, Stream::ItemUsages, "{}").await;
    let foreign: PageBody<'_> = serde_json::from_str(&first).unwrap();
    let bad_bodies = [
        r#"{"limit":0}"#.to_owned(),
        r#"{"limit":1001}"#.to_owned(),
        r#"{"limit":-1}"#.to_owned(),
        r#"{"limit":1.5}"#.to_owned(),
        r#"{"limit":"100"}"#.to_owned(),
        r#"{"start_time":"yesterday"}"#.to_owned(),
        r#"{"end_time":"2026-01-01 00:00:00"}"#.to_owned(),
        r#"{"start_time":12}"#.to_owned(),
        r#"{"cursor":""}"#.to_owned(),
        r#"{"cursor":"aGVsbG8hIGlzIGl0IG1lIHlvdSBhcmUgbG9va2luZyBmb3IK"}"#.to_owned(),
        r#"{"cursor":"%%%"}"#.to_owned(),
        r#"{"cursor":7}"#.to_owned(),
        format!(r#"{{"cursor":"{}"}}"#, foreign.cursor),
        "not json".to_owned(),
        "[]".to_owned(),
        String::new(),
    ];
    for body in &bad_bodies {
        let (status, response) = post(&sim, Stream::AuditEvents, body).await;
        assert_eq!((status, response.as_str()), (400, BAD_REQUEST), "{body}");
    }
    // The same foreign cursor is fine on its own stream, any number of times.
    for _ in 0..2 {
        let (status, _) = post(
            &sim,
            Stream::ItemUsages,
            &format!(r#"{{"cursor":"{}"}}"#, foreign.cursor),
        )
        .await;
        assert_eq!(status, 200);
    }

    let records = sim.requests();
    let audit: Vec<&RequestRecord> = records
        .iter()
        .filter(|record| record.stream == Stream::AuditEvents)
        .collect();
    assert_eq!(audit.len(), bad_bodies.len());
    assert!(audit.iter().all(|record| record.status == 400));
    assert_eq!(
        audit[0].body,
        RequestKind::Reset {
            limit: Some(0),
            start_time: None,
            end_time: None
        }
    );
    assert_eq!(audit[3].body, RequestKind::Invalid);
    assert_eq!(audit[8].body, RequestKind::Cursor(String::new()));
    assert_eq!(audit[13].body, RequestKind::Invalid);
}

#[tokio::test]
async fn accepts_whitespace_nulls_and_unknown_fields_without_content_type() {
    let sim = start(config(10)).await;
    for body in [
        "{}",
        "  {\n  \"limit\" :  5 }\r\n",
        r#"{"limit":null,"start_time":null,"extra":[1,2]}"#,
        r#"{"limit":1000}"#,
    ] {
        let (status, text) = post(&sim, Stream::SignInAttempts, body).await;
        assert_eq!(status, 200, "{body}: {text}");
        let page: PageBody<'_> = serde_json::from_str(&text).unwrap();
        assert!(!page.cursor.is_empty());
    }

    // A raw request with nothing but the essentials, read until the server closes.
    let mut socket = TcpStream::connect(sim.addr()).await.unwrap();
    let body = "{ }";
    let request = format!(
        "POST /api/v2/signinattempts HTTP/1.1\r\nHost: sim\r\nAuthorization: Bearer sim-token\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    socket.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    socket.read_to_string(&mut response).await.unwrap();
    assert!(response.starts_with("HTTP/1.1 200 OK\r\n"), "{response}");
    assert!(
        response
            .to_ascii_lowercase()
            .contains("content-type: application/json\r\n"),
        "{response}"
    );
    assert!(response.contains("\r\n\r\n{\"cursor\":\""), "{response}");
}

#[tokio::test]
async fn pages_through_every_event_once_in_insertion_order() {
    let mut cfg = config(2500);
    cfg.empty_page_every = 0;
    let sim = start(cfg).await;
    for stream in Stream::ALL {
        let since = OffsetDateTime::now_utc() - time::Duration::days(2);
        let (items, _) = drain(&sim, stream, &reset_from(since, 1000)).await;
        let events = sim.events(stream);
        assert_eq!(events.len(), 2500);
        assert_eq!(
            items,
            events
                .iter()
                .map(|event| event.json.clone())
                .collect::<Vec<_>>()
        );
        let uuids: Vec<String> = items
            .iter()
            .map(|item| {
                serde_json::from_str::<Value>(item).unwrap()["uuid"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect();
        assert_eq!(
            uuids,
            events
                .iter()
                .map(|event| event.uuid.clone())
                .collect::<Vec<_>>()
        );
        assert_eq!(uuids.iter().collect::<HashSet<_>>().len(), 2500);
    }
    let records = sim.requests();
    // Three pages per stream: 1000, 1000, 500.
    assert_eq!(records.len(), 9);
    assert_eq!(
        sim.stats().stream(Stream::ItemUsages),
        StreamStats {
            generated: 2500,
            requests: 3,
            served: 2500,
            errors: 0
        }
    );
}

#[tokio::test]
async fn the_default_window_is_the_last_hour_and_limit_persists() {
    let sim = start(config(240)).await;
    // 240 events over 24 hours: one every 6 minutes, the last at start, so 10 or 11 in the last hour.
    let (items, _) = drain(&sim, Stream::AuditEvents, r#"{"limit":3}"#).await;
    assert!((10..=11).contains(&items.len()), "{}", items.len());
    let events = sim.events(Stream::AuditEvents);
    assert_eq!(
        items,
        events[240 - items.len()..]
            .iter()
            .map(|event| event.json.clone())
            .collect::<Vec<_>>()
    );
    let pages: Vec<_> = sim.requests();
    assert!(pages.len() >= 4);

    // end_time bounds the window, and its cursor never serves later events.
    let start_at = events[0].inserted_at;
    let end_at = events[9].inserted_at;
    let body = format!(
        r#"{{"start_time":"{}","end_time":"{}"}}"#,
        rfc3339(start_at),
        rfc3339(end_at)
    );
    let (items, cursor) = drain(&sim, Stream::AuditEvents, &body).await;
    assert_eq!(items.len(), 10);
    sim.insert(Stream::AuditEvents, 5);
    let (status, text) = post(
        &sim,
        Stream::AuditEvents,
        &format!(r#"{{"cursor":"{cursor}"}}"#),
    )
    .await;
    assert_eq!(status, 200);
    let page: PageBody<'_> = serde_json::from_str(&text).unwrap();
    assert!(page.items.is_empty() && !page.has_more);
}

#[tokio::test]
async fn a_finished_cursor_serves_events_inserted_since_and_can_be_reused() {
    let sim = start(config(50)).await;
    let (items, cursor) = drain(&sim, Stream::ItemUsages, r#"{"limit":1000}"#).await;
    assert!(!items.is_empty());
    let continuation = format!(r#"{{"cursor":"{cursor}"}}"#);
    let (status, text) = post(&sim, Stream::ItemUsages, &continuation).await;
    assert_eq!(status, 200);
    let empty: PageBody<'_> = serde_json::from_str(&text).unwrap();
    assert!(empty.items.is_empty() && !empty.has_more);

    let inserted = sim.insert(Stream::ItemUsages, 3);
    assert_eq!(inserted.len(), 3);
    for _ in 0..2 {
        let (status, text) = post(&sim, Stream::ItemUsages, &continuation).await;
        assert_eq!(status, 200);
        let page: PageBody<'_> = serde_json::from_str(&text).unwrap();
        let uuids: Vec<String> = page
            .items
            .iter()
            .map(|item| {
                serde_json::from_str::<Value>(item.get()).unwrap()["uuid"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect();
        assert_eq!(uuids, inserted);
        assert!(!page.has_more);
    }
    assert_eq!(sim.generated(Stream::ItemUsages), 53);
}

#[tokio::test]
async fn empty_pages_with_more_never_lose_or_repeat_events() {
    let mut cfg = config(100);
    cfg.empty_page_every = 1;
    let sim = start(cfg).await;
    let since = OffsetDateTime::now_utc() - time::Duration::days(2);
    let (items, _) = drain(&sim, Stream::AuditEvents, &reset_from(since, 30)).await;
    let events = sim.events(Stream::AuditEvents);
    assert_eq!(
        items,
        events
            .iter()
            .map(|event| event.json.clone())
            .collect::<Vec<_>>()
    );
    // Every page with data was preceded by an empty one: 4 empty + 4 full.
    assert_eq!(sim.requests().len(), 8);
}

#[tokio::test]
async fn introspection_describes_the_token() {
    let sim = start(config(0)).await;
    let (status, body) = call(
        &sim,
        "GET",
        "/api/v2/auth/introspect",
        Some("sim-token"),
        "",
    )
    .await;
    assert_eq!(status, 200);
    let introspection: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        introspection["features"],
        serde_json::json!(["auditevents", "itemusages", "signinattempts"])
    );
    assert_is_id(introspection["uuid"].as_str().unwrap(), true);
    assert_is_id(introspection["account_uuid"].as_str().unwrap(), true);
    OffsetDateTime::parse(introspection["issued_at"].as_str().unwrap(), &Rfc3339).unwrap();

    let (status, body) = call(&sim, "GET", "/api/auth/introspect", Some("sim-token"), "").await;
    assert_eq!(status, 200);
    let legacy: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(legacy["UUID"], introspection["uuid"]);
    assert_eq!(legacy["Features"], introspection["features"]);

    let (status, body) = call(&sim, "GET", "/api/v2/auth/introspect", None, "").await;
    assert_eq!((status, body.as_str()), (401, UNAUTHORIZED));
    let (status, _) = call(
        &sim,
        "POST",
        "/api/v2/auth/introspect",
        Some("sim-token"),
        "{}",
    )
    .await;
    assert_eq!(status, 405);
}

#[tokio::test]
async fn unknown_paths_and_methods_get_error_bodies() {
    let sim = start(config(0)).await;
    let (status, body) = call(&sim, "POST", "/api/v2/unknown", Some("sim-token"), "{}").await;
    assert_eq!(
        (status, body.as_str()),
        (404, r#"{"Error":{"Message":"Not Found"}}"#)
    );
    let (status, body) = call(&sim, "GET", "/api/v2/auditevents", Some("sim-token"), "").await;
    assert_eq!(
        (status, body.as_str()),
        (405, r#"{"Error":{"Message":"Method Not Allowed"}}"#)
    );
    assert_eq!(
        sim.requests(),
        vec![RequestRecord {
            version: 2,
            stream: Stream::AuditEvents,
            status: 405,
            body: RequestKind::Invalid,
            fault: None,
        }]
    );
}

#[tokio::test]
async fn test_hooks_insert_count_and_list() {
    let dir = tempfile::tempdir().unwrap();
    let ledger_path = dir.path().join("ledger.tsv");
    let mut cfg = config(5);
    cfg.ledger = Some(ledger_path.clone());
    let sim = start(cfg).await;

    let (status, body) = call(
        &sim,
        "POST",
        "/_sim/insert?stream=itemusages&count=4",
        None,
        "",
    )
    .await;
    assert_eq!(status, 200);
    let inserted: Vec<String> = serde_json::from_str(&body).unwrap();
    assert_eq!(inserted.len(), 4);
    for query in [
        "stream=items&count=1",
        "stream=itemusages&count=x",
        "count=1",
        "stream=itemusages&count=99999999",
    ] {
        let (status, _) = call(&sim, "POST", &format!("/_sim/insert?{query}"), None, "").await;
        assert_eq!(status, 400, "{query}");
    }
    post(&sim, Stream::ItemUsages, "{}").await;

    let (status, body) = call(&sim, "GET", "/_sim/stats", None, "").await;
    assert_eq!(status, 200);
    let stats: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(stats["streams"]["itemusages"]["generated"], 9);
    assert_eq!(stats["streams"]["itemusages"]["requests"], 1);
    assert_eq!(stats["streams"]["auditevents"]["generated"], 5);
    assert_eq!(stats["requests"], 1);

    let (status, body) = call(&sim, "GET", "/_sim/ledger", None, "").await;
    assert_eq!(status, 200);
    let ledger: Value = serde_json::from_str(&body).unwrap();
    let item_usages: Vec<String> = serde_json::from_value(ledger["itemusages"].clone()).unwrap();
    assert_eq!(item_usages[5..], inserted[..]);
    assert_eq!(ledger["signinattempts"].as_array().unwrap().len(), 5);

    let file = std::fs::read_to_string(&ledger_path).unwrap();
    let lines: Vec<&str> = file.lines().collect();
    assert_eq!(lines.len(), 19);
    assert_eq!(
        lines[15..],
        inserted
            .iter()
            .map(|uuid| format!("itemusages\t{uuid}"))
            .collect::<Vec<_>>()[..]
    );
    let (status, _) = call(&sim, "GET", "/_sim/insert", None, "").await;
    assert_eq!(status, 405);
}

#[tokio::test(start_paused = true)]
async fn live_generator_inserts_at_the_configured_rate_until_shutdown() {
    let mut cfg = config(0);
    cfg.rate_per_sec = 20.0;
    let sim = start(cfg).await;
    tokio::time::sleep(Duration::from_millis(1050)).await;
    for stream in Stream::ALL {
        let generated = sim.generated(stream);
        assert!((18..=21).contains(&generated), "{generated}");
    }
    sim.shutdown();
    let before = sim.generated(Stream::AuditEvents);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(sim.generated(Stream::AuditEvents), before);
    // The listener is gone too.
    assert!(TcpStream::connect(sim.addr()).await.is_err());
}

#[tokio::test]
async fn the_same_seed_gives_the_same_events() {
    let first = start(config(30)).await;
    let second = start(config(30)).await;
    let mut other_cfg = config(30);
    other_cfg.seed = 2;
    let other = start(other_cfg).await;
    for stream in Stream::ALL {
        let uuids = |sim: &Simulator| {
            sim.events(stream)
                .into_iter()
                .map(|event| event.uuid)
                .collect::<Vec<_>>()
        };
        assert_eq!(uuids(&first), uuids(&second));
        assert_ne!(uuids(&first), uuids(&other));
    }
    let at = time::macros::datetime!(2026-03-04 05:06:07.891011121 UTC);
    for stream in Stream::ALL {
        for index in 0..50 {
            let json = |seed| {
                let mut out = String::new();
                generate::write_item(&World::new(seed), stream, index, at, &mut out);
                out
            };
            assert_eq!(json(1), json(1));
            assert_ne!(json(1), json(2));
        }
    }
    // What a simulator serves is what the generator makes for that index and insertion time.
    let event = &first.events(Stream::SignInAttempts)[7];
    let mut regenerated = String::new();
    generate::write_item(
        &World::new(1),
        Stream::SignInAttempts,
        7,
        event.inserted_at,
        &mut regenerated,
    );
    assert_eq!(event.json, regenerated);
}

#[test]
fn sim_tokens_parse_with_optional_features() {
    assert_eq!("abc".parse(), Ok(SimToken::all("abc")));
    assert_eq!(
        "abc=auditevents, itemusages".parse(),
        Ok(SimToken {
            token: "abc".to_owned(),
            features: vec![Stream::AuditEvents, Stream::ItemUsages]
        })
    );
    assert_eq!("".parse::<SimToken>(), Err(SimTokenError::EmptyToken));
    assert_eq!(
        "=auditevents".parse::<SimToken>(),
        Err(SimTokenError::EmptyToken)
    );
    assert_eq!("abc=".parse::<SimToken>(), Err(SimTokenError::NoFeatures));
    let error = "abc=auditevents,audit".parse::<SimToken>().unwrap_err();
    assert_eq!(
        error.to_string(),
        "unknown feature \"audit\" in sim token (expected auditevents, itemusages or signinattempts)"
    );
}

fn assert_is_id(text: &str, upper: bool) {
    let alphabet = |c: char| match upper {
        true => c.is_ascii_uppercase() || ('2'..='7').contains(&c),
        false => c.is_ascii_lowercase() || ('2'..='7').contains(&c),
    };
    assert!(
        text.len() == 26 && text.chars().all(alphabet),
        "{text:?} is not a {} base32 id",
        upper
    );
}

/// Checks one parsed event against the §7 schemas; returns its `timestamp`.
fn check_event(stream: Stream, event: &Value) -> OffsetDateTime {
    assert_is_id(event["uuid"].as_str().unwrap(), true);
    let timestamp = OffsetDateTime::parse(event["timestamp"].as_str().unwrap(), &Rfc3339).unwrap();
    let user_key = match stream {
        Stream::AuditEvents => "actor_details",
        Stream::AuditV3 => "actor",
        Stream::ItemUsages => "user",
        Stream::SignInAttempts => "target_user",
    };
    let user = event[user_key].as_object().unwrap();
    if let Some(uuid) = user.get("uuid") {
        assert_is_id(uuid.as_str().unwrap(), true);
    }
    assert!(user["email"].as_str().unwrap().contains('@'));
    if let Some(location) = event.get("location") {
        assert!(location["city"].is_string());
    }
    match stream {
        Stream::AuditEvents => {
            assert!(event["action"].is_string() && event["object_type"].is_string());
            if let Some(session) = event.get("session") {
                OffsetDateTime::parse(session["login_time"].as_str().unwrap(), &Rfc3339).unwrap();
                if let Some(device) = session.get("device_uuid") {
                    assert_is_id(device.as_str().unwrap(), false);
                }
            }
        }
        Stream::ItemUsages => {
            assert_is_id(event["vault_uuid"].as_str().unwrap(), false);
            assert_is_id(event["item_uuid"].as_str().unwrap(), false);
            assert!(event["used_version"].is_u64());
            assert!(event["client"]["app_version"].is_string());
        }
        Stream::SignInAttempts => {
            assert_is_id(event["session_uuid"].as_str().unwrap(), true);
            assert!(event["category"].is_string() && event["type"].is_string());
            assert!(event["details"].is_null() || event["details"]["value"].is_string());
        }
        Stream::AuditV3 => {
            OffsetDateTime::parse(event["insert_time"].as_str().unwrap(), &Rfc3339).unwrap();
            assert!(event["action"].as_str().unwrap().contains('.'));
            assert!(event["targets"][0]["type"].is_string());
        }
    }
    timestamp
}

#[test]
fn generated_events_are_valid_varied_and_realistic() {
    let world = World::new(1);
    let inserted_at = time::macros::datetime!(2026-03-04 05:06:07.891011121 UTC);
    let mut all = String::new();
    for stream in Stream::ALL {
        let mut n_late = 0;
        let mut n_offsets = 0;
        let mut n_whole_seconds = 0;
        let mut n_nanos = 0;
        let mut n_null_details = 0;
        for index in 0..2000 {
            let mut json = String::new();
            generate::write_item(&world, stream, index, inserted_at, &mut json);
            assert!(!json.contains('\n') && !json.contains("\": "), "{json}");
            let event: Value =
                serde_json::from_str(&json).unwrap_or_else(|error| panic!("{error}: {json}"));
            assert_eq!(
                event["uuid"].as_str().unwrap(),
                generate::item_uuid(&world, stream, index)
            );
            let timestamp = check_event(stream, &event);
            assert!(timestamp <= inserted_at);
            if inserted_at - timestamp > time::Duration::minutes(30) {
                n_late += 1;
            }
            let text = event["timestamp"].as_str().unwrap();
            if !text.ends_with('Z') {
                n_offsets += 1;
            }
            match text.split_once('.') {
                None => n_whole_seconds += 1,
                Some((_, fraction))
                    if fraction.chars().take_while(char::is_ascii_digit).count() == 9 =>
                {
                    n_nanos += 1
                }
                Some(_) => {}
            }
            if event.get("details").is_some_and(Value::is_null) {
                n_null_details += 1;
            }
            all.push_str(&json);
        }
        assert!((40..=180).contains(&n_late), "{stream}: {n_late} late");
        assert!(
            n_offsets > 200 && n_whole_seconds > 50 && n_nanos > 200,
            "{n_offsets} {n_whole_seconds} {n_nanos}"
        );
        if stream == Stream::SignInAttempts {
            assert!(n_null_details > 1000);
        }
    }
    for needle in [
        "Zoë Ångström",
        "渡辺",
        "\\\"Jackie\\\"",
        "\\u0026",
        "\\\\",
        "\"details\":{\"value\"",
        "external_user",
    ] {
        assert!(all.contains(needle), "no {needle}");
    }
}

#[tokio::test]
async fn v3_rejects_a_token_with_a_window_unknown_parameters_and_missing_features() {
    let mut cfg = config(30);
    cfg.tokens = vec![
        SimToken::all("sim-token"),
        "items-only=itemusages".parse().unwrap(),
    ];
    let sim = start(cfg).await;
    let get = |query: String, token: &'static str| {
        let sim = sim.clone();
        async move {
            call(
                &sim,
                "GET",
                &format!("/api/v3/auditevents?{query}"),
                Some(token),
                "",
            )
            .await
        }
    };
    let start_time =
        rfc3339(OffsetDateTime::now_utc() - time::Duration::days(2)).replace(':', "%3A");
    let (status, body) = get(
        format!("max_page_size=10&start_time={start_time}"),
        "sim-token",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let page: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(page["audit_events"].as_array().unwrap().len(), 10);
    let token = page["next_page_token"].as_str().unwrap().to_owned();
    let encoded: String = token
        .bytes()
        .map(|b| match b {
            b'+' | b'/' | b'=' => format!("%{b:02X}"),
            _ => char::from(b).to_string(),
        })
        .collect();
    let (status, _) = get(format!("page_token={encoded}"), "sim-token").await;
    assert_eq!(status, 200);
    for bad in [
        format!("page_token={encoded}&start_time={start_time}"),
        format!("page_token={encoded}&end_time={start_time}"),
        "page_size=10".to_owned(),
        "max_page_size=1001".to_owned(),
        "page_token=garbage".to_owned(),
    ] {
        let (status, body) = get(bad.clone(), "sim-token").await;
        assert_eq!((status, body.as_str()), (400, BAD_REQUEST), "{bad}");
    }
    let (status, body) = get("max_page_size=10".to_owned(), "items-only").await;
    assert_eq!((status, body.as_str()), (401, UNAUTHORIZED));
}

#[tokio::test]
async fn v1_and_v2_serve_the_same_events_in_their_own_schemas() {
    let sim = start(config(200)).await;
    let body = reset_from(OffsetDateTime::now_utc() - time::Duration::days(2), 1000);
    let (status, v1) = call(&sim, "POST", "/api/v1/itemusages", Some("sim-token"), &body).await;
    assert_eq!(status, 200);
    let (_, v2) = post(&sim, Stream::ItemUsages, &body).await;
    let v1: Value = serde_json::from_str(&v1).unwrap();
    let v2: Value = serde_json::from_str(&v2).unwrap();
    let (v1, v2) = (
        v1["items"].as_array().unwrap(),
        v2["items"].as_array().unwrap(),
    );
    assert_eq!(v1.len(), v2.len());
    let mut msp = 0;
    for (old, new) in v1.iter().zip(v2) {
        assert_eq!(old["uuid"], new["uuid"]);
        assert_eq!(old["timestamp"], new["timestamp"]);
        assert!(old.get("account_uuid").is_none());
        assert!(old["user"].get("user_type").is_none());
        msp += usize::from(new.get("account_uuid").is_some());
    }
    assert!(msp > 0, "the v2 events carry MSP fields");
    assert_eq!(
        sim.requests().iter().map(|r| r.version).collect::<Vec<_>>(),
        [1, 2]
    );
}

/// Sends one request on a fresh connection and returns the status, headers and body, or the
/// error if the connection closed without a complete response.
async fn raw_post(
    sim: &Simulator,
    stream: Stream,
    body: &str,
) -> Result<(u16, http::HeaderMap, Vec<u8>), hyper::Error> {
    let socket = TcpStream::connect(sim.addr()).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(socket))
        .await
        .unwrap();
    tokio::spawn(connection);
    let request = Request::builder()
        .method("POST")
        .uri(format!("/api/v2/{stream}"))
        .header(HOST, "127.0.0.1")
        .header(AUTHORIZATION, "Bearer sim-token")
        .body(Full::new(Bytes::from(body.to_owned())))
        .unwrap();
    let response = sender.send_request(request).await?;
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.into_body().collect().await?.to_bytes().to_vec();
    Ok((status, headers, body))
}

#[tokio::test]
async fn strict_sliding_windows_answer_429_with_or_without_retry_after() {
    let mut cfg = config(10);
    cfg.faults.rate_limits = vec![WindowLimit {
        window_secs: 60,
        max: 2,
    }];
    cfg.faults.rate_limit_headers = true;
    let sim = start(cfg).await;
    let (status, headers, _) = raw_post(&sim, Stream::AuditEvents, "{}").await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(headers["ratelimit-limit"], "2");
    assert_eq!(headers["ratelimit-remaining"], "1");
    // The window's oldest request is this one: it leaves the window a minute from now.
    assert_eq!(headers["ratelimit-reset"], "60");
    let (status, headers, _) = raw_post(&sim, Stream::ItemUsages, "{}").await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(headers["ratelimit-remaining"], "0");
    // The limit is the account's, across streams; without retry_after, no Retry-After.
    let (status, headers, body) = raw_post(&sim, Stream::SignInAttempts, "{}").await.unwrap();
    assert_eq!(status, 429);
    assert_eq!(body, br#"{"Error":{"Message":"Too Many Requests"}}"#);
    assert!(headers.get("retry-after").is_none());
    assert_eq!(headers["ratelimit-remaining"], "0");
    let reset: u64 = headers["ratelimit-reset"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((59..=60).contains(&reset), "{reset}");

    let mut faults = sim.faults();
    faults.retry_after = true;
    sim.set_faults(faults);
    let (status, headers, _) = raw_post(&sim, Stream::SignInAttempts, "{}").await.unwrap();
    assert_eq!(status, 429);
    let retry_after: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((59..=60).contains(&retry_after), "{retry_after}");
    let statuses: Vec<(u16, Option<Fault>)> =
        sim.requests().iter().map(|r| (r.status, r.fault)).collect();
    assert_eq!(
        statuses,
        [
            (200, None),
            (200, None),
            (429, Some(Fault::RateLimited)),
            (429, Some(Fault::RateLimited))
        ]
    );
}

#[tokio::test]
async fn injected_failures_can_be_switched_at_run_time() {
    let sim = start(config(10)).await;
    let set = |json: &str| {
        let sim = sim.clone();
        let json = json.to_owned();
        async move { call(&sim, "POST", "/_sim/faults", None, &json).await }
    };
    let (status, body) = set(r#"{"error_rate":1.0,"error_statuses":[502]}"#).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(post(&sim, Stream::AuditEvents, "{}").await.0, 502);

    set(r#"{"reset_rate":1.0}"#).await;
    assert!(raw_post(&sim, Stream::AuditEvents, "{}").await.is_err());

    set(r#"{"truncate_rate":1.0}"#).await;
    let (status, _, body) = raw_post(&sim, Stream::AuditEvents, "{}").await.unwrap();
    assert_eq!(status, 200);
    assert!(serde_json::from_slice::<Value>(&body).is_err());
    assert!(body.starts_with(br#"{"cursor":"#));

    set(r#"{"invalid_json_rate":1.0}"#).await;
    let (status, _, body) = raw_post(&sim, Stream::AuditEvents, "{}").await.unwrap();
    assert_eq!(status, 200);
    assert!(body.starts_with(b"<html>"));

    set(r#"{"slow_rate":1.0,"slow_ms":300}"#).await;
    let started = std::time::Instant::now();
    let (status, _, _) = raw_post(&sim, Stream::AuditEvents, "{}").await.unwrap();
    assert_eq!(status, 200);
    assert!(started.elapsed() >= Duration::from_millis(300));

    set(r#"{"empty_page_every":1}"#).await;
    let (status, body) = post(&sim, Stream::AuditEvents, "{}").await;
    assert_eq!(status, 200);
    let page: PageBody<'_> = serde_json::from_str(&body).unwrap();
    assert!(page.has_more && page.items.is_empty(), "{body}");

    let (status, body) = set(r#"{"eror_rate":1.0}"#).await;
    assert_eq!(status, 400);
    assert!(body.contains("unknown field `eror_rate`"), "{body}");
    set("{}").await;
    assert_eq!(post(&sim, Stream::AuditEvents, "{}").await.0, 200);

    let faults: Vec<Option<Fault>> = sim.requests().iter().map(|r| r.fault).collect();
    assert_eq!(
        faults,
        [
            Some(Fault::Status),
            Some(Fault::Reset),
            Some(Fault::Truncated),
            Some(Fault::InvalidJson),
            Some(Fault::Slow),
            None,
            None
        ]
    );
    let failed: Vec<bool> = sim.requests().iter().map(RequestRecord::failed).collect();
    assert_eq!(failed, [true, true, true, true, false, false, false]);
}

#[tokio::test]
async fn tokens_can_be_revoked_and_issued_at_run_time() {
    let sim = start(config(10)).await;
    assert_eq!(post(&sim, Stream::AuditEvents, "{}").await.0, 200);
    let (status, body) = call(
        &sim,
        "POST",
        "/_sim/tokens/revoke?token=sim-token",
        None,
        "",
    )
    .await;
    assert_eq!((status, body.as_str()), (200, r#"{"revoked":true}"#));
    assert_eq!(
        post(&sim, Stream::AuditEvents, "{}").await,
        (401, UNAUTHORIZED.to_owned())
    );
    let (status, _) = call(
        &sim,
        "POST",
        "/_sim/tokens/issue?token=new-token&features=auditevents",
        None,
        "",
    )
    .await;
    assert_eq!(status, 200);
    let (status, _) = call(&sim, "POST", "/api/v2/auditevents", Some("new-token"), "{}").await;
    assert_eq!(status, 200);
    let (status, _) = call(&sim, "POST", "/api/v2/itemusages", Some("new-token"), "{}").await;
    assert_eq!(status, 401);
    assert!(sim.revoke_token("new-token"));
    assert!(!sim.revoke_token("new-token"));
    sim.issue_token(SimToken::all("sim-token"));
    assert_eq!(post(&sim, Stream::AuditEvents, "{}").await.0, 200);
}
