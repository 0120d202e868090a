//! The simulator's HTTP side: the accept loop, routing, auth, request parsing and responses.

use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{ALLOW, AUTHORIZATION, CONTENT_TYPE};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde::Serialize;
use serde_json::Value;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::cursor::{Cursor, CursorError};
use super::faults::{Fault, Faults, RateDecision};
use super::generate::{self, Case, Rng, Schema};
use super::{MAX_INSERT_COUNT, RequestKind, Shared, SimToken, V3Revision, lock, store};
use crate::stream::Stream;

/// The largest request body read; event requests are tiny.
const MAX_BODY_BYTES: usize = 64 * 1024;

/// How long to wait before accepting again after an accept error (e.g. out of file descriptors).
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

type Body = Full<Bytes>;

/// Accepts connections until `shutdown` is cancelled, serving each on its own task: plain
/// HTTP/1.1, or, with `tls`, HTTPS speaking HTTP/2 or HTTP/1.1 as ALPN decides.
pub(super) async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    shutdown: CancellationToken,
) {
    loop {
        let accepted = tokio::select! {
            () = shutdown.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let socket = match accepted {
            Ok((socket, _peer)) => socket,
            Err(error) => {
                tracing::warn!(%error, "Simulator failed to accept a connection, pausing.");
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(ACCEPT_ERROR_PAUSE) => continue,
                }
            }
        };
        // Small responses should not wait for Nagle.
        let _ = socket.set_nodelay(true);
        let shared = Arc::clone(&shared);
        let shutdown = shutdown.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| {
                let shared = Arc::clone(&shared);
                // An error closes the connection without a response (an injected reset).
                async move { route(&shared, request).await }
            });
            let Some(acceptor) = tls else {
                let connection = http1::Builder::new()
                    .keep_alive(true)
                    .serve_connection(TokioIo::new(socket), service);
                let mut connection = std::pin::pin!(connection);
                let result = tokio::select! {
                    result = connection.as_mut() => result,
                    () = shutdown.cancelled() => {
                        connection.as_mut().graceful_shutdown();
                        connection.await
                    }
                };
                if let Err(error) = result {
                    tracing::debug!(%error, "Simulator connection ended with an error.");
                }
                return;
            };
            let stream = tokio::select! {
                () = shutdown.cancelled() => return,
                accepted = acceptor.accept(socket) => match accepted {
                    Ok(stream) => stream,
                    Err(error) => {
                        tracing::debug!(%error, "Simulator TLS handshake failed.");
                        return;
                    }
                },
            };
            let builder =
                hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
            let connection = builder.serve_connection(TokioIo::new(stream), service);
            let mut connection = std::pin::pin!(connection);
            let result = tokio::select! {
                result = connection.as_mut() => result,
                () = shutdown.cancelled() => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(error) = result {
                tracing::debug!(%error, "Simulator connection ended with an error.");
            }
        });
    }
}

/// A TLS acceptor for a fresh self-signed certificate valid for `localhost` and `127.0.0.1`
/// (and `::1`), offering HTTP/2 (if `http2`) and HTTP/1.1 by ALPN; also returns the certificate as PEM, for clients
/// to trust.
///
/// # Errors
///
/// When the certificate cannot be generated or rustls refuses it.
pub(super) fn tls_acceptor(http2: bool) -> std::io::Result<(tokio_rustls::TlsAcceptor, String)> {
    let invalid = |what: String| std::io::Error::new(std::io::ErrorKind::InvalidData, what);
    let certified = rcgen::generate_simple_self_signed(vec![
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
        "::1".to_owned(),
    ])
    .map_err(|err| invalid(format!("cannot generate a certificate: {err}")))?;
    let cert_der = certified.cert.der().clone();
    let key_der =
        rustls::pki_types::PrivateKeyDer::Pkcs8(certified.signing_key.serialize_der().into());
    let mut config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(vec![cert_der], key_der)
        .map_err(|err| invalid(format!("rustls refused the certificate: {err}")))?;
    config.alpn_protocols = if http2 {
        vec![b"h2".to_vec(), b"http/1.1".to_vec()]
    } else {
        vec![b"http/1.1".to_vec()]
    };
    Ok((
        tokio_rustls::TlsAcceptor::from(Arc::new(config)),
        certified.cert.pem(),
    ))
}

/// Serves one request; the response is gzip-encoded when the client accepts it and the
/// simulator is set to, as a CDN in front of the API may do.
async fn route(shared: &Shared, request: Request<Incoming>) -> io::Result<Response<Body>> {
    if request.version() == http::Version::HTTP_2 {
        shared
            .protocol_counters
            .http2
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
    let gzip = shared.gzip
        && request
            .headers()
            .get_all(http::header::ACCEPT_ENCODING)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .any(|coding| {
                let mut parts = coding.split(';');
                let name = parts.next().unwrap_or("").trim();
                let refused =
                    parts.any(|p| matches!(p.trim(), "q=0" | "q=0.0" | "q=0.00" | "q=0.000"));
                name.eq_ignore_ascii_case("gzip") && !refused
            });
    let mut response = route_plain(shared, request).await?;
    // The Date of every answer, on the simulator's clock (hyper would write the real one).
    if let Ok(date) = HeaderValue::from_str(&httpdate::fmt_http_date(shared.now().into())) {
        response.headers_mut().insert(http::header::DATE, date);
    }
    if !gzip {
        return Ok(response);
    }
    let (mut parts, body) = response.into_parts();
    let Ok(collected) = body.collect().await;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    use std::io::Write as _;
    let encoded = encoder
        .write_all(&collected.to_bytes())
        .and_then(|()| encoder.finish());
    match encoded {
        Ok(bytes) => {
            shared
                .protocol_counters
                .gzipped
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            parts.headers.insert(
                http::header::CONTENT_ENCODING,
                HeaderValue::from_static("gzip"),
            );
            parts.headers.remove(http::header::CONTENT_LENGTH);
            Ok(Response::from_parts(parts, Full::new(Bytes::from(bytes))))
        }
        Err(error) => {
            tracing::warn!(%error, "Simulator cannot gzip a response.");
            Ok(error_response(StatusCode::INTERNAL_SERVER_ERROR))
        }
    }
}

async fn route_plain(shared: &Shared, request: Request<Incoming>) -> io::Result<Response<Body>> {
    let path = request.uri().path();
    for (prefix, schema) in [("/api/v1/", Schema::V1), ("/api/v2/", Schema::V2)] {
        if let Some(name) = path.strip_prefix(prefix)
            && let Ok(stream) = name.parse::<Stream>()
            && Stream::ALL.contains(&stream)
        {
            return events(shared, schema, stream, request).await;
        }
    }
    Ok(match path {
        "/api/v3/auditevents" => v3_events(shared, &request),
        "/api/v2/auth/introspect" => introspect(shared, &request, Introspection::V2),
        "/api/auth/introspect" => introspect(shared, &request, Introspection::Legacy),
        "/_sim/stats" => match *request.method() {
            Method::GET => json(
                StatusCode::OK,
                serde_json::to_string(&shared.stats()).unwrap_or_default(),
            ),
            _ => method_not_allowed("GET"),
        },
        "/_sim/ledger" => match *request.method() {
            Method::GET => ledger(shared),
            _ => method_not_allowed("GET"),
        },
        "/_sim/insert" => match *request.method() {
            Method::POST => insert(shared, request.uri().query().unwrap_or("")),
            _ => method_not_allowed("POST"),
        },
        "/_sim/faults" => match *request.method() {
            Method::GET => json(
                StatusCode::OK,
                serde_json::to_string(&*lock(&shared.faults)).unwrap_or_default(),
            ),
            Method::POST => set_faults(shared, request).await,
            _ => method_not_allowed("GET, POST"),
        },
        "/_sim/tokens/revoke" | "/_sim/tokens/issue" => match *request.method() {
            Method::POST => tokens(shared, path, request.uri().query().unwrap_or("")),
            _ => method_not_allowed("POST"),
        },
        _ => error(StatusCode::NOT_FOUND),
    })
}

/// `POST /_sim/faults`: replaces the faults with the JSON body (a [`Faults`]).
async fn set_faults(shared: &Shared, request: Request<Incoming>) -> Response<Body> {
    let Ok(body) = Limited::new(request.into_body(), MAX_BODY_BYTES)
        .collect()
        .await
    else {
        return error(StatusCode::BAD_REQUEST);
    };
    match serde_json::from_slice::<Faults>(&body.to_bytes()) {
        Ok(faults) => {
            let body = serde_json::to_string(&faults).unwrap_or_default();
            *lock(&shared.faults) = faults;
            json(StatusCode::OK, body)
        }
        Err(err) => json(
            StatusCode::BAD_REQUEST,
            serde_json::json!({"Error": {"Message": format!("invalid faults: {err}")}}).to_string(),
        ),
    }
}

/// `POST /_sim/tokens/revoke?token=T` and `POST /_sim/tokens/issue?token=T[&features=a,b]`.
fn tokens(shared: &Shared, path: &str, query: &str) -> Response<Body> {
    let mut token = None;
    let mut features = None;
    for pair in query.split('&').filter(|pair| !pair.is_empty()) {
        match pair.split_once('=') {
            Some(("token", value)) => token = Some(value.to_owned()),
            Some(("features", value)) => features = Some(value.to_owned()),
            _ => {}
        }
    }
    let Some(token) = token.filter(|token| !token.is_empty()) else {
        return error(StatusCode::BAD_REQUEST);
    };
    if path.ends_with("/revoke") {
        let revoked = shared.revoke_token(&token);
        return json(StatusCode::OK, format!("{{\"revoked\":{revoked}}}"));
    }
    let spec = match features {
        Some(features) => format!("{token}={features}"),
        None => token,
    };
    match spec.parse::<SimToken>() {
        Ok(token) => {
            shared.issue_token(token);
            json(StatusCode::OK, "{\"issued\":true}")
        }
        Err(_) => error(StatusCode::BAD_REQUEST),
    }
}

/// The version number of a schema, for the request log.
fn version(schema: Schema) -> u8 {
    match schema {
        Schema::V1 => 1,
        Schema::V2 => 2,
    }
}

/// Serves `POST /api/v1/<stream>` and `POST /api/v2/<stream>`, and records the request.
async fn events(
    shared: &Shared,
    schema: Schema,
    stream: Stream,
    request: Request<Incoming>,
) -> io::Result<Response<Body>> {
    let version = version(schema);
    if request.method() != Method::POST {
        shared.record(
            version,
            stream,
            StatusCode::METHOD_NOT_ALLOWED.as_u16(),
            RequestKind::Invalid,
            0,
        );
        return Ok(method_not_allowed("POST"));
    }
    let authorized = grants(shared, request.headers(), stream);
    let body = Limited::new(request.into_body(), MAX_BODY_BYTES)
        .collect()
        .await;
    let kind = match body {
        Ok(body) => parse_request(&body.to_bytes()),
        Err(_) => RequestKind::Invalid,
    };
    if !authorized {
        shared.record(version, stream, StatusCode::UNAUTHORIZED.as_u16(), kind, 0);
        return Ok(error(StatusCode::UNAUTHORIZED));
    }

    let faults = lock(&shared.faults).clone();
    let rate = match admit(shared, &faults) {
        Ok(rate) => rate,
        Err(refused) => {
            shared.record_fault(version, stream, 429, kind, 0, Some(Fault::RateLimited));
            return Ok(too_many_requests(&faults, &refused));
        }
    };
    let roll = |rate: f64| rate > 0.0 && lock(&shared.fault_rng).f64() < rate;
    if roll(faults.reset_rate) {
        shared.record_fault(version, stream, 0, kind, 0, Some(Fault::Reset));
        return Err(io::Error::new(
            io::ErrorKind::ConnectionReset,
            "injected connection reset",
        ));
    }
    if roll(faults.error_rate) {
        let status = match faults.error_statuses.len() {
            0 => 500,
            n => faults.error_statuses[lock(&shared.fault_rng).usize(..n)],
        };
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        shared.record_fault(
            version,
            stream,
            status.as_u16(),
            kind,
            0,
            Some(Fault::Status),
        );
        return Ok(error(status));
    }
    let slow = roll(faults.slow_rate);
    if slow {
        tokio::time::sleep(Duration::from_millis(faults.slow_ms)).await;
    }
    let empty_page_every = faults.empty_page_every.unwrap_or(shared.empty_page_every);
    let mut response = match page(
        shared,
        schema,
        stream,
        &kind,
        shared.now(),
        empty_page_every,
    ) {
        Ok((body, n_items)) => {
            if roll(faults.truncate_rate) {
                shared.record_fault(version, stream, 200, kind, 0, Some(Fault::Truncated));
                let mut body = body.into_bytes();
                body.truncate(body.len() / 2);
                return Ok(json(StatusCode::OK, body));
            }
            if roll(faults.invalid_json_rate) {
                shared.record_fault(version, stream, 200, kind, 0, Some(Fault::InvalidJson));
                return Ok(json(
                    StatusCode::OK,
                    "<html><body><h1>Service temporarily unavailable</h1></body></html>",
                ));
            }
            let fault = slow.then_some(Fault::Slow);
            shared.record_fault(
                version,
                stream,
                StatusCode::OK.as_u16(),
                kind,
                n_items,
                fault,
            );
            json(StatusCode::OK, body)
        }
        Err(reason) => {
            tracing::debug!(%stream, %reason, "Simulator rejected an event request.");
            shared.record(version, stream, StatusCode::BAD_REQUEST.as_u16(), kind, 0);
            error(StatusCode::BAD_REQUEST)
        }
    };
    if let Some(decision) = rate {
        rate_limit_headers(&mut response, &decision);
    }
    Ok(response)
}

/// `RateLimit-Limit`, `RateLimit-Remaining` and `RateLimit-Reset` (seconds) of the tightest
/// window.
/// Counts a request against the sliding-window limits, if any are set: every request of the
/// token counts, introspection included. Returns the decision for the `RateLimit-*` headers
/// of an admitted request, or the refusal.
fn admit(shared: &Shared, faults: &Faults) -> Result<Option<RateDecision>, RateDecision> {
    if faults.rate_limits.is_empty() {
        return Ok(None);
    }
    let decision = lock(&shared.rate_log).check(&faults.rate_limits, Instant::now());
    if !decision.admitted {
        return Err(decision);
    }
    Ok(faults.rate_limit_headers.then_some(decision))
}

/// The 429 for a request the limits refused.
fn too_many_requests(faults: &Faults, decision: &RateDecision) -> Response<Body> {
    let mut response = error(StatusCode::TOO_MANY_REQUESTS);
    if faults.retry_after {
        let secs = decision.retry_after.as_secs_f64().ceil() as u64;
        response
            .headers_mut()
            .insert("retry-after", HeaderValue::from(secs));
    }
    if faults.rate_limit_headers {
        rate_limit_headers(&mut response, decision);
    }
    response
}

fn rate_limit_headers(response: &mut Response<Body>, decision: &RateDecision) {
    let headers = response.headers_mut();
    headers.insert("ratelimit-limit", HeaderValue::from(decision.limit));
    headers.insert("ratelimit-remaining", HeaderValue::from(decision.remaining));
    headers.insert(
        "ratelimit-reset",
        HeaderValue::from(decision.reset.as_secs_f64().ceil() as u64),
    );
}

/// Why an event request got a 400.
#[derive(Debug, thiserror::Error)]
enum BadRequest {
    #[error("body is not a cursor or reset-cursor object")]
    Body,
    #[error("limit {0} is outside 1..=1000")]
    Limit(u64),
    #[error("{field} is not an RFC 3339 date-time")]
    Time { field: &'static str },
    #[error(transparent)]
    Cursor(#[from] CursorError),
}

/// Reads what an event request body asks for, without validating values.
///
/// Mirrors Go's `encoding/json` into a struct: unknown fields are ignored, `null` means absent,
/// a present `cursor` makes it a continuation.
fn parse_request(body: &[u8]) -> RequestKind {
    let Ok(Value::Object(fields)) = serde_json::from_slice::<Value>(body) else {
        return RequestKind::Invalid;
    };
    match fields.get("cursor") {
        None | Some(Value::Null) => {}
        Some(Value::String(cursor)) => return RequestKind::Cursor(cursor.clone()),
        Some(_) => return RequestKind::Invalid,
    }
    let limit = match fields.get("limit") {
        None | Some(Value::Null) => None,
        Some(value) => match value.as_u64() {
            Some(limit) => Some(limit),
            None => return RequestKind::Invalid,
        },
    };
    let mut times = [None, None];
    for (slot, key) in times.iter_mut().zip(["start_time", "end_time"]) {
        match fields.get(key) {
            None | Some(Value::Null) => {}
            Some(Value::String(text)) => *slot = Some(text.clone()),
            Some(_) => return RequestKind::Invalid,
        }
    }
    let [start_time, end_time] = times;
    RequestKind::Reset {
        limit,
        start_time,
        end_time,
    }
}

/// Builds the 200 body for an event request, and says how many items it holds.
fn page(
    shared: &Shared,
    schema: Schema,
    stream: Stream,
    kind: &RequestKind,
    now: OffsetDateTime,
    empty_page_every: u32,
) -> Result<(String, usize), BadRequest> {
    let cursor = match kind {
        RequestKind::Invalid | RequestKind::Query(_) => return Err(BadRequest::Body),
        RequestKind::Cursor(text) => Cursor::decode(text, shared.cursor_key, stream)?,
        RequestKind::Reset {
            limit,
            start_time,
            end_time,
        } => {
            let limit = match *limit {
                None => None,
                Some(limit @ 1..=1000) => Some(limit as u16),
                Some(limit) => return Err(BadRequest::Limit(limit)),
            };
            let start = parse_time(start_time.as_deref(), "start_time")?;
            let end = parse_time(end_time.as_deref(), "end_time")?;
            store::reset_cursor(stream, limit, start, end, now)
        }
    };
    // The lock is held only to pick the page; items are generated after it is released.
    let page = shared.log(stream).page(&cursor, now, empty_page_every)?;
    let next = page.next.encode(shared.cursor_key);

    let mut body = String::with_capacity(64 + next.len() + page.inserted.len() * 900);
    body.push_str("{\"cursor\":");
    generate::push_json_string(&mut body, &next);
    body.push_str(if page.has_more {
        ",\"has_more\":true,\"items\":["
    } else {
        ",\"has_more\":false,\"items\":["
    });
    for (index, inserted_at) in page.items.clone().zip(&page.inserted) {
        if index != page.items.start {
            body.push(',');
        }
        generate::write_item_as(
            &shared.world,
            stream,
            schema,
            index,
            *inserted_at,
            &mut body,
        );
    }
    body.push_str("]}");
    Ok((body, page.inserted.len()))
}

/// Why a v3 request got a 400.
#[derive(Debug, thiserror::Error)]
enum V3BadRequest {
    #[error("unknown query parameter {0}")]
    Unknown(String),
    #[error("{0} is not a valid page size")]
    PageSize(String),
    #[error("{0} is not an RFC 3339 date-time")]
    Time(&'static str),
    #[error("start_time and end_time are invalid with a page token")]
    WindowWithToken,
    #[error("the query is not valid percent-encoding")]
    Encoding,
    #[error(transparent)]
    Token(#[from] CursorError),
}

/// Serves `GET /api/v3/auditevents` in the configured revision, and records the request.
fn v3_events(shared: &Shared, request: &Request<Incoming>) -> Response<Body> {
    let stream = Stream::AuditV3;
    let query = request.uri().query().unwrap_or("").to_owned();
    if request.method() != Method::GET {
        shared.record(
            3,
            stream,
            StatusCode::METHOD_NOT_ALLOWED.as_u16(),
            RequestKind::Query(query),
            0,
        );
        return method_not_allowed("GET");
    }
    if !grants(shared, request.headers(), stream) {
        shared.record(
            3,
            stream,
            StatusCode::UNAUTHORIZED.as_u16(),
            RequestKind::Query(query),
            0,
        );
        return error(StatusCode::UNAUTHORIZED);
    }
    match v3_page(shared, &query, shared.now()) {
        Ok((body, n_items)) => {
            shared.record(
                3,
                stream,
                StatusCode::OK.as_u16(),
                RequestKind::Query(query),
                n_items,
            );
            json(StatusCode::OK, body)
        }
        Err(reason) => {
            tracing::debug!(%reason, "Simulator rejected a v3 request.");
            shared.record(
                3,
                stream,
                StatusCode::BAD_REQUEST.as_u16(),
                RequestKind::Query(query),
                0,
            );
            error(StatusCode::BAD_REQUEST)
        }
    }
}

/// Builds the 200 body of a v3 request.
fn v3_page(
    shared: &Shared,
    query: &str,
    now: OffsetDateTime,
) -> Result<(String, usize), V3BadRequest> {
    let (size_name, token_name, max_low) = match shared.v3_revision {
        V3Revision::Early => ("page_size", "next_page_token", 1),
        V3Revision::Current => ("max_page_size", "page_token", 0),
    };
    let mut limit = None;
    let (mut start, mut end, mut token) = (None, None, None);
    for pair in query.split('&').filter(|pair| !pair.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let value = percent_decode(value).ok_or(V3BadRequest::Encoding)?;
        match key {
            k if k == size_name => {
                let size = value
                    .parse::<u16>()
                    .ok()
                    .filter(|size| (max_low..=1000).contains(size))
                    .ok_or_else(|| V3BadRequest::PageSize(value.clone()))?;
                limit = Some(size);
            }
            k if k == token_name => token = Some(value),
            "start_time" => start = Some(parse_v3_time(&value, "start_time")?),
            "end_time" => end = Some(parse_v3_time(&value, "end_time")?),
            other => return Err(V3BadRequest::Unknown(other.to_owned())),
        }
    }
    let limit = match limit {
        None | Some(0) => store::DEFAULT_LIMIT,
        Some(limit) => limit,
    };
    let window = match token {
        Some(_) if start.is_some() || end.is_some() => return Err(V3BadRequest::WindowWithToken),
        Some(text) => {
            let cursor = Cursor::decode(&text, shared.cursor_key, Stream::AuditV3)?;
            store::V3Window {
                start: Some(cursor.start),
                inclusive_start: shared.v3_revision == V3Revision::Early,
                end: cursor.end,
                position: Some(cursor.position),
                limit,
            }
        }
        None => store::V3Window {
            start,
            inclusive_start: shared.v3_revision == V3Revision::Early,
            end,
            position: None,
            limit,
        },
    };
    let page = shared.log(Stream::AuditV3).v3_page(&window, now);
    let next = page.next.map(|position| {
        Cursor {
            stream: Stream::AuditV3,
            position,
            limit: window.limit,
            start: window.start.unwrap_or(now),
            end: window.end,
            no_empty: false,
        }
        .encode(shared.cursor_key)
    });
    let mut body = String::with_capacity(64 + page.inserted.len() * 900);
    body.push_str("{\"audit_events\":[");
    for (index, inserted_at) in page.items.clone().zip(&page.inserted) {
        if index != page.items.start {
            body.push(',');
        }
        generate::write_item(
            &shared.world,
            Stream::AuditV3,
            index,
            *inserted_at,
            &mut body,
        );
    }
    body.push(']');
    match (shared.v3_revision, &next) {
        (V3Revision::Current, Some(next)) => {
            body.push_str(",\"next_page_token\":");
            generate::push_json_string(&mut body, next);
        }
        (V3Revision::Current, None) => {}
        (V3Revision::Early, Some(next)) => {
            body.push_str(",\"meta\":{\"has_more\":true,\"next_page_token\":");
            generate::push_json_string(&mut body, next);
            body.push('}');
        }
        (V3Revision::Early, None) => body.push_str(",\"meta\":{\"has_more\":false}"),
    }
    body.push('}');
    Ok((body, page.inserted.len()))
}

fn parse_v3_time(text: &str, field: &'static str) -> Result<OffsetDateTime, V3BadRequest> {
    OffsetDateTime::parse(text, &Rfc3339).map_err(|_| V3BadRequest::Time(field))
}

/// Decodes `%XX` escapes (and `+` as a space, as forms do); `None` for a broken escape.
fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut idx = 0;
    while idx < bytes.len() {
        match bytes[idx] {
            b'%' => {
                let hex = text.get(idx + 1..idx + 3)?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                idx += 3;
            }
            b'+' => {
                out.push(b' ');
                idx += 1;
            }
            byte => {
                out.push(byte);
                idx += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

fn parse_time(
    text: Option<&str>,
    field: &'static str,
) -> Result<Option<OffsetDateTime>, BadRequest> {
    text.map(|text| OffsetDateTime::parse(text, &Rfc3339).map_err(|_| BadRequest::Time { field }))
        .transpose()
}

/// A presented bearer token the simulator accepts: one of its configured tokens, or a JWT it
/// signed that has not expired.
struct Presented {
    /// The token text, which identifies the integration in introspection.
    token: String,
    features: Vec<Stream>,
    /// A JWT's `iat`.
    issued_at: Option<OffsetDateTime>,
}

/// The presented bearer token, if the simulator accepts it.
fn token(shared: &Shared, headers: &HeaderMap) -> Option<Presented> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let token = token.trim();
    if lock(&shared.revoked).contains(token) {
        return None;
    }
    if let Some(known) = lock(&shared.tokens)
        .iter()
        .find(|known| known.token == token)
    {
        return Some(Presented {
            token: token.to_owned(),
            features: known.features.clone(),
            issued_at: None,
        });
    }
    let grant = shared.signing_key.verify(token, shared.now())?;
    Some(Presented {
        token: token.to_owned(),
        features: grant.features,
        issued_at: grant.issued_at,
    })
}

/// Whether the presented token may read `stream` (has its feature): a 401 if not.
fn grants(shared: &Shared, headers: &HeaderMap, stream: Stream) -> bool {
    token(shared, headers).is_some_and(|token| {
        token
            .features
            .iter()
            .any(|feature| feature.feature() == stream.feature())
    })
}

/// Which introspection endpoint is being served.
#[derive(Debug, Clone, Copy)]
enum Introspection {
    /// `GET /api/v2/auth/introspect`, snake_case.
    V2,
    /// The deprecated `GET /api/auth/introspect`, PascalCase.
    Legacy,
}

#[derive(Serialize)]
struct IntrospectionV2<'a> {
    uuid: String,
    issued_at: String,
    features: Vec<&'a str>,
    account_uuid: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct IntrospectionLegacy<'a> {
    #[serde(rename = "UUID")]
    uuid: String,
    issued_at: String,
    features: Vec<&'a str>,
}

fn introspect(
    shared: &Shared,
    request: &Request<Incoming>,
    version: Introspection,
) -> Response<Body> {
    if request.method() != Method::GET {
        return method_not_allowed("GET");
    }
    let Some(token) = token(shared, request.headers()) else {
        return error(StatusCode::UNAUTHORIZED);
    };
    let faults = lock(&shared.faults).clone();
    let rate = match admit(shared, &faults) {
        Ok(rate) => rate,
        Err(refused) => {
            shared
                .introspections_rate_limited
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return too_many_requests(&faults, &refused);
        }
    };
    // The integration's uuid is a function of the seed and the token, so it is stable across restarts.
    let uuid = generate::id(
        &mut Rng::new(generate::combine(
            shared.world.seed,
            generate::hash_str(&token.token),
        )),
        Case::Upper,
    );
    // A JWT says when it was issued; a plain token was issued a month before the start.
    let issued = token.issued_at.unwrap_or_else(|| {
        shared
            .started_at
            .checked_sub(time::Duration::days(30))
            .unwrap_or(shared.started_at)
    });
    let issued_at = generate::format_rfc3339(issued, time::UtcOffset::UTC, 0);
    // Features in the API's order, whatever order the token lists them in.
    let features = Stream::ALL
        .into_iter()
        .filter(|stream| token.features.contains(stream))
        .map(Stream::as_str)
        .collect();
    let body = match version {
        Introspection::V2 => serde_json::to_string(&IntrospectionV2 {
            uuid,
            issued_at,
            features,
            account_uuid: &shared.world.account_uuid,
        }),
        Introspection::Legacy => serde_json::to_string(&IntrospectionLegacy {
            uuid,
            issued_at,
            features,
        }),
    };
    let mut response = json(StatusCode::OK, body.unwrap_or_default());
    if let Some(decision) = rate {
        rate_limit_headers(&mut response, &decision);
    }
    response
}

/// `GET /_sim/ledger`: every generated uuid per stream, in insertion order.
fn ledger(shared: &Shared) -> Response<Body> {
    let mut body = String::from("{");
    for (stream_pos, stream) in Stream::ALL.into_iter().enumerate() {
        if stream_pos > 0 {
            body.push(',');
        }
        let n_items = shared.log(stream).len();
        body.push('"');
        body.push_str(stream.as_str());
        body.push_str("\":[");
        for index in 0..n_items {
            if index > 0 {
                body.push(',');
            }
            body.push('"');
            body.push_str(&generate::item_uuid(&shared.world, stream, index));
            body.push('"');
        }
        body.push(']');
    }
    body.push('}');
    json(StatusCode::OK, body)
}

/// `POST /_sim/insert?stream=<stream>&count=<n>`: inserts now and returns the uuids as a JSON array.
fn insert(shared: &Shared, query: &str) -> Response<Body> {
    let mut stream = None;
    let mut count = Some(1);
    for pair in query.split('&').filter(|pair| !pair.is_empty()) {
        match pair.split_once('=') {
            Some(("stream", value)) => stream = value.parse::<Stream>().ok(),
            Some(("count", value)) => {
                count = value
                    .parse::<usize>()
                    .ok()
                    .filter(|count| *count <= MAX_INSERT_COUNT)
            }
            _ => {}
        }
    }
    let (Some(stream), Some(count)) = (stream, count) else {
        return error(StatusCode::BAD_REQUEST);
    };
    let uuids = shared.insert_now(stream, count);
    json(
        StatusCode::OK,
        serde_json::to_string(&uuids).unwrap_or_default(),
    )
}

fn json(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

fn error_response(status: StatusCode) -> Response<Body> {
    error(status)
}

/// An error response in the shape production sends: `{"Error":{"Message":"<reason phrase>"}}`.
fn error(status: StatusCode) -> Response<Body> {
    let reason = status.canonical_reason().unwrap_or("Error");
    json(
        status,
        format!("{{\"Error\":{{\"Message\":\"{reason}\"}}}}"),
    )
}

fn method_not_allowed(allow: &'static str) -> Response<Body> {
    let mut response = error(StatusCode::METHOD_NOT_ALLOWED);
    response
        .headers_mut()
        .insert(ALLOW, HeaderValue::from_static(allow));
    response
}
