//! The Events API client: request bodies, response envelopes, error classification.
//!
//! Invariant: this is the only module that speaks HTTP to 1Password. Events are kept as raw
//! JSON from the moment they are read: the client never parses them into structs, so their
//! bytes (unknown fields, number formats, key order) reach the sinks unchanged.

mod error;
pub mod jwt;
pub mod v3;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::value::RawValue;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

pub use error::{ApiError, ErrorClass, classify_status, error_message, excerpt};

use crate::stream::Stream;

/// How much of a response body goes into an error message.
const BODY_EXCERPT_CHARS: usize = 300;

/// Which generation of the cursor endpoints an account reads: `POST /api/v1/<stream>` or
/// `POST /api/v2/<stream>`. Both take the same requests; the v2 events carry the MSP fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ApiVersion {
    V1,
    #[default]
    V2,
}

impl ApiVersion {
    /// The path segment and config value: `v1` or `v2`.
    pub fn as_str(self) -> &'static str {
        match self {
            ApiVersion::V1 => "v1",
            ApiVersion::V2 => "v2",
        }
    }
}

/// The four documented Events API hosts, by where the account lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Region {
    /// 1password.com (Business).
    Us,
    /// 1password.ca.
    Ca,
    /// 1password.eu.
    Eu,
    /// ent.1password.com (Enterprise).
    Ent,
}

impl Region {
    /// The config values, in the order error messages list them.
    pub const ALL: [Region; 4] = [Region::Us, Region::Ca, Region::Eu, Region::Ent];

    /// The config value: `us`, `ca`, `eu` or `ent`.
    pub fn as_str(self) -> &'static str {
        match self {
            Region::Us => "us",
            Region::Ca => "ca",
            Region::Eu => "eu",
            Region::Ent => "ent",
        }
    }

    /// The region's Events API base URL.
    pub fn base_url(self) -> &'static str {
        match self {
            Region::Us => "https://events.1password.com",
            Region::Ca => "https://events.1password.ca",
            Region::Eu => "https://events.1password.eu",
            Region::Ent => "https://events.ent.1password.com",
        }
    }
}

/// What to ask an event endpoint for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PageRequest {
    /// Start (or restart) a stream at a point in time: the API's ResetCursor.
    Reset {
        limit: u16,
        start_time: Option<OffsetDateTime>,
        end_time: Option<OffsetDateTime>,
    },
    /// Continue from a cursor the API returned earlier.
    Cursor(String),
}

impl PageRequest {
    /// The JSON body of the request.
    pub fn body(&self) -> String {
        let mut body = serde_json::Map::new();
        match self {
            PageRequest::Reset {
                limit,
                start_time,
                end_time,
            } => {
                body.insert("limit".into(), (*limit).into());
                for (key, at) in [("start_time", start_time), ("end_time", end_time)] {
                    if let Some(at) = at {
                        body.insert(key.into(), rfc3339(*at).into());
                    }
                }
            }
            PageRequest::Cursor(cursor) => {
                body.insert("cursor".into(), cursor.clone().into());
            }
        }
        serde_json::Value::Object(body).to_string()
    }
}

/// One page of events, as the API returned it.
#[derive(Debug)]
pub struct Page {
    /// Where to continue: durable, reusable, and the only checkpoint we keep.
    pub cursor: String,
    /// Whether more events may be available right away (the next page may still be empty).
    pub has_more: bool,
    /// The `items` array exactly as received (`[]` when the API sent none).
    pub items: Box<RawValue>,
    /// How many events `items` holds.
    pub n_events: u64,
    /// The response said the account's requests are used up (`RateLimit-Remaining: 0`) for
    /// this long (`RateLimit-Reset`).
    pub exhausted_for: Option<Duration>,
}

/// The answer of `GET /api/v2/auth/introspect`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Introspection {
    pub uuid: Option<String>,
    pub issued_at: Option<String>,
    #[serde(default)]
    pub features: Vec<String>,
    pub account_uuid: Option<String>,
}

/// Where and how to reach the Events API.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// `https://events.1password.com`, or `http://127.0.0.1:PORT` for the simulator.
    pub base_url: String,
    /// Extra trust anchors (PEM), for private deployments and the simulator over TLS.
    pub ca_file: Option<std::path::PathBuf>,
    /// The whole request, from connecting to the last byte of the body.
    pub timeout: Duration,
}

/// A client for one account: one base URL, one bearer token. Cheap to clone.
#[derive(Clone)]
pub struct Client {
    http: HyperClient<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>,
    base_url: Arc<str>,
    /// Shared by every clone, so a token re-read after a 401 serves every stream of the
    /// account. A std lock: held only to format a header or swap the token.
    token: Arc<std::sync::RwLock<SecretString>>,
    /// Counts token changes, so a stream whose request was refused can tell that another
    /// stream has already replaced the token it used.
    token_generation: Arc<std::sync::atomic::AtomicU64>,
    timeout: Duration,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("base_url", &self.base_url)
            .field("token", &"[REDACTED]")
            .finish()
    }
}

impl Client {
    pub fn new(options: &ClientOptions, token: SecretString) -> Result<Client, ApiError> {
        let mut roots = rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        if let Some(ca_file) = &options.ca_file {
            add_ca_file(&mut roots, ca_file)?;
        }
        let tls = rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(options.timeout));
        http.set_nodelay(true);
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            // The config only admits http:// to loopback addresses (the simulator).
            .https_or_http()
            // ALPN offers h2 and http/1.1 over TLS; the server picks.
            .enable_http1()
            .enable_http2()
            .wrap_connector(http);
        let http = HyperClient::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(50))
            .build(connector);
        Ok(Client {
            http,
            base_url: options.base_url.trim_end_matches('/').into(),
            token: Arc::new(std::sync::RwLock::new(token)),
            token_generation: Arc::default(),
            timeout: options.timeout,
        })
    }

    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// How many times the token has changed; compare before and after a request to know
    /// whether it was sent with the token in use now.
    pub fn token_generation(&self) -> u64 {
        self.token_generation
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Uses `token` from now on, in every clone of this client. Returns whether it differs
    /// from the token in use.
    pub fn replace_token(&self, token: SecretString) -> bool {
        let mut current = self.token.write().unwrap_or_else(|p| p.into_inner());
        let changed = current.expose_secret() != token.expose_secret();
        *current = token;
        if changed {
            self.token_generation
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
        changed
    }

    /// Fetches one page of a cursor stream from the v1 or v2 endpoint.
    pub async fn fetch(
        &self,
        version: ApiVersion,
        stream: Stream,
        request: &PageRequest,
    ) -> Result<Page, ApiError> {
        let url = format!(
            "{}/api/{}/{}",
            self.base_url,
            version.as_str(),
            stream.as_str()
        );
        let (headers, body) = self
            .send(http::Method::POST, &url, Some(request.body()))
            .await?;
        let mut page = parse_page(&body).map_err(|detail| ApiError::InvalidResponse {
            url,
            detail,
            body: self.excerpt(&body),
        })?;
        page.exhausted_for = rate_limit_exhausted(&headers);
        Ok(page)
    }

    /// Fetches one page of the beta `GET /api/v3/auditevents`.
    pub async fn fetch_v3(
        &self,
        params: &crate::config::V3Params,
        request: &v3::V3Request,
    ) -> Result<v3::V3Page, ApiError> {
        let url = format!(
            "{}/api/v3/auditevents?{}",
            self.base_url,
            request.query(params)
        );
        let (_, body) = self.send(http::Method::GET, &url, None).await?;
        v3::parse_v3_page(&body).map_err(|detail| ApiError::InvalidResponse {
            url,
            detail,
            body: self.excerpt(&body),
        })
    }

    /// Asks the API what the token is (`GET /api/v2/auth/introspect`).
    pub async fn introspect(&self) -> Result<Introspection, ApiError> {
        let url = format!("{}/api/v2/auth/introspect", self.base_url);
        let (_, body) = self.send(http::Method::GET, &url, None).await?;
        serde_json::from_slice(&body).map_err(|err| ApiError::InvalidResponse {
            url,
            detail: err.to_string(),
            body: self.excerpt(&body),
        })
    }

    /// Sends a request and returns the headers and body of a 200 response; every other
    /// outcome is an [`ApiError`]. The whole exchange is bounded by the request timeout.
    async fn send(
        &self,
        method: http::Method,
        url: &str,
        json: Option<String>,
    ) -> Result<(http::HeaderMap, Bytes), ApiError> {
        let authorization = format!(
            "Bearer {}",
            self.token
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .expose_secret()
        );
        let mut builder = http::Request::builder()
            .method(method)
            .uri(url)
            .header(http::header::AUTHORIZATION, authorization)
            .header(http::header::USER_AGENT, USER_AGENT)
            .header(http::header::ACCEPT, "application/json")
            .header(http::header::ACCEPT_ENCODING, "gzip");
        if json.is_some() {
            builder = builder.header(http::header::CONTENT_TYPE, "application/json");
        }
        let request = builder
            .body(Full::new(Bytes::from(json.unwrap_or_default())))
            .map_err(|err| ApiError::Setup(format!("{url}: cannot build request: {err}")))?;

        let exchange = async {
            let response = self
                .http
                .request(request)
                .await
                .map_err(|err| transport(url, &err))?;
            let (parts, body) = response.into_parts();
            let body = body
                .collect()
                .await
                .map_err(|err| transport(url, &err))?
                .to_bytes();
            Ok::<_, ApiError>((parts, body))
        };
        let (parts, body) = tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| ApiError::Timeout {
                url: url.to_owned(),
                after: self.timeout,
            })??;
        let body =
            decode_body(&parts.headers, body).map_err(|detail| ApiError::InvalidResponse {
                url: url.to_owned(),
                detail,
                body: String::new(),
            })?;
        if parts.status == http::StatusCode::OK {
            return Ok((parts.headers, body));
        }
        Err(ApiError::Status {
            url: url.to_owned(),
            status: parts.status.as_u16(),
            message: error_message(&body),
            body: self.excerpt(&body),
            retry_after: retry_after(
                parts.status.as_u16(),
                &parts.headers,
                OffsetDateTime::now_utc(),
            ),
        })
    }

    fn excerpt(&self, body: &[u8]) -> String {
        let token = self.token.read().unwrap_or_else(|p| p.into_inner());
        excerpt(body, BODY_EXCERPT_CHARS, token.expose_secret())
    }
}

const USER_AGENT: &str = concat!("op-events-forwarder/", env!("CARGO_PKG_VERSION"));

fn add_ca_file(roots: &mut rustls::RootCertStore, path: &Path) -> Result<(), ApiError> {
    let setup = |what: String| ApiError::Setup(format!("ca_file {}: {what}", path.display()));
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|err| setup(err.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| setup(err.to_string()))?;
    if certs.is_empty() {
        return Err(setup("no PEM certificate in the file".into()));
    }
    for cert in certs {
        roots
            .add(cert)
            .map_err(|err| setup(format!("unusable certificate: {err}")))?;
    }
    Ok(())
}

/// The error for a failure below HTTP, with the chain of causes (hyper's top-level message
/// alone is rarely useful).
fn transport(url: &str, err: &(dyn std::error::Error + 'static)) -> ApiError {
    let mut detail = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        detail.push_str(": ");
        detail.push_str(&cause.to_string());
        source = cause.source();
    }
    ApiError::Transport {
        url: url.to_owned(),
        detail,
    }
}

/// The most a gzip-encoded response may expand to: far above a page of 1,000 events, far
/// below what would strain memory.
const MAX_DECODED_BYTES: u64 = 64 * 1024 * 1024;

/// The body as sent, decoded according to `Content-Encoding` (`gzip` or none).
fn decode_body(headers: &http::HeaderMap, body: Bytes) -> Result<Bytes, String> {
    let mut codings: Vec<String> = Vec::new();
    for value in headers.get_all(http::header::CONTENT_ENCODING) {
        let value = value
            .to_str()
            .map_err(|_| "Content-Encoding is not ASCII".to_owned())?;
        codings.extend(
            value
                .split(',')
                .map(|c| c.trim().to_ascii_lowercase())
                .filter(|c| !c.is_empty() && c != "identity"),
        );
    }
    match codings.as_slice() {
        [] => Ok(body),
        [gzip] if gzip == "gzip" || gzip == "x-gzip" => {
            use std::io::Read as _;
            let mut decoded = Vec::with_capacity(body.len() * 4);
            flate2::read::MultiGzDecoder::new(&body[..])
                .take(MAX_DECODED_BYTES + 1)
                .read_to_end(&mut decoded)
                .map_err(|err| format!("cannot decode the gzip body: {err}"))?;
            if decoded.len() as u64 > MAX_DECODED_BYTES {
                return Err(format!(
                    "the gzip body expands beyond {} MiB",
                    MAX_DECODED_BYTES / 1024 / 1024
                ));
            }
            Ok(Bytes::from(decoded))
        }
        other => Err(format!(
            "unsupported Content-Encoding {} (only gzip is asked for)",
            other.join(", ")
        )),
    }
}

/// Parses the `{cursor, has_more, items}` envelope, keeping the items as raw JSON.
fn parse_page(body: &[u8]) -> Result<Page, String> {
    #[derive(Deserialize)]
    struct Envelope<'a> {
        cursor: Option<String>,
        has_more: Option<bool>,
        #[serde(borrow)]
        items: Option<&'a RawValue>,
    }
    let envelope: Envelope<'_> = serde_json::from_slice(body).map_err(|err| err.to_string())?;
    let cursor = envelope.cursor.ok_or("no \"cursor\" in the response")?;
    let has_more = envelope.has_more.ok_or("no \"has_more\" in the response")?;
    let items = match envelope.items {
        Some(raw) if raw.get() != "null" => raw,
        _ => {
            return Ok(Page {
                cursor,
                has_more,
                items: RawValue::from_string("[]".into()).map_err(|err| err.to_string())?,
                n_events: 0,
                exhausted_for: None,
            });
        }
    };
    let events: Vec<&RawValue> = serde_json::from_str(items.get())
        .map_err(|err| format!("\"items\" is not an array: {err}"))?;
    Ok(Page {
        cursor,
        has_more,
        items: items.to_owned(),
        n_events: events.len() as u64,
        exhausted_for: None,
    })
}

/// How long to wait after an error response: `Retry-After` (seconds or an HTTP date), else,
/// for a 429, `RateLimit-Reset` (seconds until the window resets, as the v3 reference
/// documents).
pub fn retry_after(
    status: u16,
    headers: &http::HeaderMap,
    now: OffsetDateTime,
) -> Option<Duration> {
    let header = |name: &str| headers.get(name).and_then(|value| value.to_str().ok());
    let reset = || {
        header("ratelimit-reset")
            .and_then(|value| value.trim().parse().ok())
            .map(Duration::from_secs)
    };
    header("retry-after")
        .and_then(|value| parse_retry_after(value, now))
        .or_else(|| if status == 429 { reset() } else { None })
}

/// How long the account's requests are used up, when a successful response says
/// `RateLimit-Remaining: 0` and when the window resets (`RateLimit-Reset`, seconds; a minute
/// if it is missing).
pub fn rate_limit_exhausted(headers: &http::HeaderMap) -> Option<Duration> {
    let header = |name: &str| headers.get(name).and_then(|value| value.to_str().ok());
    let remaining: u64 = header("ratelimit-remaining")?.trim().parse().ok()?;
    if remaining > 0 {
        return None;
    }
    let reset = header("ratelimit-reset")
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or(60);
    Some(Duration::from_secs(reset))
}

/// `Retry-After` as seconds or an HTTP date, relative to `now`.
pub fn parse_retry_after(value: &str, now: OffsetDateTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = time::PrimitiveDateTime::parse(value, HTTP_DATE)
        .ok()?
        .assume_utc();
    Some((at - now).try_into().unwrap_or(Duration::ZERO))
}

const HTTP_DATE: &[time::format_description::BorrowedFormatItem<'static>] = time::macros::format_description!(
    "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
);

/// RFC 3339 in UTC, as the API's examples write it.
pub fn rfc3339(at: OffsetDateTime) -> String {
    at.to_offset(time::UtcOffset::UTC)
        .format(&Rfc3339)
        .expect("every UTC time in the API's range formats as RFC 3339")
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn token_changes_are_counted_across_clones() {
        let options = ClientOptions {
            base_url: "http://127.0.0.1:9".into(),
            ca_file: None,
            timeout: Duration::from_secs(1),
        };
        let client = Client::new(&options, SecretString::from("old")).unwrap();
        let other_stream = client.clone();
        let sent_with = client.token_generation();
        assert!(!other_stream.replace_token(SecretString::from("old")));
        assert_eq!(client.token_generation(), sent_with);
        assert!(other_stream.replace_token(SecretString::from("new")));
        assert_ne!(client.token_generation(), sent_with, "seen by every clone");
        assert!(!client.replace_token(SecretString::from("new")));
    }

    #[test]
    fn request_bodies() {
        let reset = PageRequest::Reset {
            limit: 1000,
            start_time: Some(datetime!(2026-11-01 00:00:00 -03:00)),
            end_time: None,
        };
        assert_eq!(
            reset.body(),
            r#"{"limit":1000,"start_time":"2026-11-01T03:00:00Z"}"#
        );
        let cursor = PageRequest::Cursor("c1\n".into());
        assert_eq!(cursor.body(), r#"{"cursor":"c1\n"}"#);
    }

    #[test]
    fn pages_keep_event_bytes() {
        let body = br#"{"cursor":"abc","has_more":true,"items":[{"uuid":"A","n":1.50,"x":"\u00e9"}, {"uuid":"B"}]}"#;
        let page = parse_page(body).unwrap();
        assert_eq!(page.cursor, "abc");
        assert!(page.has_more);
        assert_eq!(page.n_events, 2);
        assert_eq!(
            page.items.get(),
            r#"[{"uuid":"A","n":1.50,"x":"\u00e9"}, {"uuid":"B"}]"#
        );
    }

    #[test]
    fn empty_and_null_items_are_empty_pages() {
        for body in [
            &br#"{"cursor":"c","has_more":false,"items":[]}"#[..],
            br#"{"cursor":"c","has_more":false,"items":null}"#,
            br#"{"cursor":"c","has_more":false}"#,
        ] {
            let page = parse_page(body).unwrap();
            assert_eq!((page.n_events, page.items.get()), (0, "[]"));
        }
    }

    #[test]
    fn broken_envelopes_are_errors() {
        assert_eq!(
            parse_page(br#"{"has_more":false,"items":[]}"#).unwrap_err(),
            "no \"cursor\" in the response"
        );
        assert!(
            parse_page(br#"{"cursor":"c","has_more":true,"items":{}}"#)
                .unwrap_err()
                .starts_with("\"items\" is not an array")
        );
        assert!(parse_page(br#"{"cursor":"c","has_more":true,"items":[{"uuid":"#).is_err());
    }

    #[test]
    fn bodies_are_decoded_by_content_encoding() {
        use std::io::Write as _;
        let json = br#"{"cursor":"c","has_more":false,"items":[]}"#;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(json).unwrap();
        let gzipped = Bytes::from(gz.finish().unwrap());
        let headers = |value: &str| {
            let mut headers = http::HeaderMap::new();
            headers.insert(http::header::CONTENT_ENCODING, value.parse().unwrap());
            headers
        };
        assert_eq!(
            decode_body(&headers("gzip"), gzipped.clone()).unwrap(),
            &json[..]
        );
        assert_eq!(
            decode_body(&headers("identity, GZIP"), gzipped.clone()).unwrap(),
            &json[..]
        );
        let plain = Bytes::from_static(json);
        assert_eq!(
            decode_body(&http::HeaderMap::new(), plain.clone()).unwrap(),
            plain
        );
        assert_eq!(
            decode_body(&headers("br"), plain.clone()).unwrap_err(),
            "unsupported Content-Encoding br (only gzip is asked for)"
        );
        assert!(
            decode_body(&headers("gzip"), plain)
                .unwrap_err()
                .starts_with("cannot decode the gzip body")
        );
        // A bomb: 80 MiB of zeros in a small body.
        let mut bomb = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        for _ in 0..80 {
            bomb.write_all(&[0; 1024 * 1024]).unwrap();
        }
        let bomb = Bytes::from(bomb.finish().unwrap());
        assert!(bomb.len() < 1024 * 1024);
        assert_eq!(
            decode_body(&headers("gzip"), bomb).unwrap_err(),
            "the gzip body expands beyond 64 MiB"
        );
    }

    #[test]
    fn rate_limit_headers() {
        let now = datetime!(2026-11-21 12:00:00 UTC);
        let headers = |pairs: &[(&'static str, &'static str)]| {
            let mut map = http::HeaderMap::new();
            for (name, value) in pairs {
                map.insert(*name, http::HeaderValue::from_static(value));
            }
            map
        };
        let both = headers(&[("Retry-After", "7"), ("RateLimit-Reset", "30")]);
        assert_eq!(retry_after(429, &both, now), Some(Duration::from_secs(7)));
        assert_eq!(retry_after(503, &both, now), Some(Duration::from_secs(7)));
        let reset_only = headers(&[("RateLimit-Reset", "30")]);
        assert_eq!(
            retry_after(429, &reset_only, now),
            Some(Duration::from_secs(30))
        );
        // A window reset says nothing about when a failing server recovers.
        assert_eq!(retry_after(500, &reset_only, now), None);
        assert_eq!(retry_after(429, &headers(&[]), now), None);
        let date = headers(&[("Retry-After", "Sat, 21 Nov 2026 12:00:09 GMT")]);
        assert_eq!(retry_after(503, &date, now), Some(Duration::from_secs(9)));

        let used_up = headers(&[("RateLimit-Remaining", "0"), ("RateLimit-Reset", "12")]);
        assert_eq!(
            rate_limit_exhausted(&used_up),
            Some(Duration::from_secs(12))
        );
        let no_reset = headers(&[("Ratelimit-Remaining", "0")]);
        assert_eq!(
            rate_limit_exhausted(&no_reset),
            Some(Duration::from_secs(60))
        );
        let left = headers(&[("RateLimit-Remaining", "5"), ("RateLimit-Reset", "12")]);
        assert_eq!(rate_limit_exhausted(&left), None);
        assert_eq!(rate_limit_exhausted(&headers(&[])), None);
    }

    #[test]
    fn retry_after_in_seconds_and_as_a_date() {
        let now = datetime!(2026-11-21 12:00:00 UTC);
        assert_eq!(parse_retry_after("30", now), Some(Duration::from_secs(30)));
        assert_eq!(
            parse_retry_after("Sat, 21 Nov 2026 12:01:05 GMT", now),
            Some(Duration::from_secs(65))
        );
        assert_eq!(
            parse_retry_after("Sat, 21 Nov 2026 11:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
    }
}
