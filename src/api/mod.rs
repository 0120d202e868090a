//! The Events API client: request bodies, response envelopes, error classification.
//!
//! Invariant: this is the only module that speaks HTTP to 1Password. Events are kept as raw
//! JSON from the moment they are read: the client never parses them into structs, so their
//! bytes (unknown fields, number formats, key order) reach the sinks unchanged.

mod error;
pub mod jwt;
mod page;
pub mod v3;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::value::RawValue;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

pub use error::{ApiError, ErrorClass, classify_status, error_message, excerpt, redact};

use crate::event::EventArray;
use crate::governor::RateBudget;
use crate::net::tls::{self, TlsOptions};
use crate::stream::{ApiVersion, Stream, V3Params};

/// How much of a response body goes into an error message.
const BODY_EXCERPT_CHARS: usize = 300;
/// The most a page may hold: the API's largest `limit`.
pub const MAX_PAGE_ITEMS: u16 = 1000;
/// What a response may take per event asked for, when `max_response_bytes` is not set: some
/// thirty times a typical event, so only a server that lies reaches it.
pub const RESPONSE_BYTES_PER_EVENT: u64 = 32 * 1024;
/// Room for the envelope around the events, and the whole of an introspection answer.
const RESPONSE_OVERHEAD_BYTES: u64 = 64 * 1024;
/// Beyond this difference between the API's clock (its `Date` header) and ours, relative
/// times are resolved against the API's clock, and a warning says so.
pub const CLOCK_SKEW_TOLERANCE: time::Duration = time::Duration::minutes(5);

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
    /// The `items`, each exactly as received (none when the API sent none).
    pub items: EventArray,
    /// How many events `items` holds.
    pub n_events: u64,
    /// The latest readable `timestamp` among the events, read as they were checked.
    pub newest: Option<OffsetDateTime>,
    /// What the response's `RateLimit-*` headers said of the account's budget.
    pub budget: Option<RateBudget>,
}

/// The answer of `GET /api/v2/auth/introspect`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Introspection {
    pub uuid: Option<String>,
    pub issued_at: Option<String>,
    #[serde(default)]
    pub features: Vec<String>,
    pub account_uuid: Option<String>,
    /// What the answer's `RateLimit-*` headers said of the account's budget; not part of
    /// the body.
    #[serde(skip)]
    pub budget: Option<RateBudget>,
}

/// Where and how to reach the Events API.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// `https://events.1password.com`, or `http://127.0.0.1:PORT` for the simulator.
    pub base_url: String,
    /// The only CA certificates (PEM) to trust instead of the public roots, for a
    /// TLS-inspecting proxy and the simulator over TLS ([`crate::net::tls`]).
    pub ca_file: Option<std::path::PathBuf>,
    /// The whole request, from connecting to the last byte of the body.
    pub timeout: Duration,
    /// The largest response body accepted (decoded), whatever the page size; `None`: derived
    /// from the page size asked for ([`RESPONSE_BYTES_PER_EVENT`] per event).
    pub max_response_bytes: Option<u64>,
}

/// A client for one account: one base URL, one bearer token. Cheap to clone.
#[derive(Clone)]
pub struct Client {
    http: HyperClient<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>,
    base_url: Arc<str>,
    /// Shared by every clone, so a token re-read after a 401 serves every stream of the
    /// account. A std lock: held only to format a header or swap the token.
    token: Arc<std::sync::RwLock<Tokens>>,
    /// Counts token changes, so a stream whose request was refused can tell that another
    /// stream has already replaced the token it used.
    token_generation: Arc<std::sync::atomic::AtomicU64>,
    timeout: Duration,
    max_response_bytes: Option<u64>,
    /// How far the API's clock is ahead of ours, from the `Date` of its latest answer.
    clock: Arc<std::sync::Mutex<ClockCheck>>,
    /// `ca_file`, for what a refused handshake says.
    ca_file: Option<Arc<Path>>,
}

/// The token in use, and those it replaced: a request sent with an older one may be answered
/// after the change, and whatever its answer echoes must be cleaned of it too.
struct Tokens {
    current: SecretString,
    /// The latest [`RETIRED_TOKENS_KEPT`] replaced tokens, oldest first.
    retired: Vec<SecretString>,
}

/// How many replaced tokens are still cleaned from answers (rotations are rare; this bounds
/// what a daemon that reloads every minute for a year keeps).
const RETIRED_TOKENS_KEPT: usize = 8;

impl Tokens {
    /// Every token to clean from a text, the current one first.
    fn secrets(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.current.expose_secret())
            .chain(self.retired.iter().rev().map(|token| token.expose_secret()))
    }

    /// `text` with every token replaced by `[REDACTED]`.
    fn clean(&self, text: &str) -> String {
        self.secrets()
            .fold(text.to_owned(), |text, secret| redact(&text, secret))
    }
}

/// What the API's `Date` headers said about our clock.
#[derive(Debug, Default)]
struct ClockCheck {
    /// The API's time minus ours, at the latest answer with a `Date`.
    skew: Option<time::Duration>,
    /// A warning about a skewed clock was logged (once, until the clock is right again).
    warned: bool,
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
        let tls = tls::client_config(&TlsOptions {
            ca_file: options.ca_file.clone(),
            client_auth: None,
            insecure_skip_verify: false,
            // hyper-rustls offers h2 and http/1.1 itself (below).
            alpn_protocols: Vec::new(),
        })
        .map_err(|err| ApiError::Setup(err.to_string()))?;
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
            token: Arc::new(std::sync::RwLock::new(Tokens {
                current: token,
                retired: Vec::new(),
            })),
            token_generation: Arc::default(),
            timeout: options.timeout,
            max_response_bytes: options.max_response_bytes,
            clock: Arc::default(),
            ca_file: options.ca_file.as_deref().map(Arc::from),
        })
    }

    /// How far the API's clock is ahead of ours (negative: behind), once an answer has said,
    /// and only when it is beyond [`CLOCK_SKEW_TOLERANCE`]; `Some(ZERO)` when it was within.
    pub fn clock_skew(&self) -> Option<time::Duration> {
        let check = self.clock.lock().unwrap_or_else(|p| p.into_inner());
        check.skew.map(|skew| {
            if skew.abs() > CLOCK_SKEW_TOLERANCE {
                skew
            } else {
                time::Duration::ZERO
            }
        })
    }

    /// Now on the API's clock as far as we know it: ours, corrected by a skew beyond the
    /// tolerance.
    pub fn server_now(&self) -> OffsetDateTime {
        OffsetDateTime::now_utc() + self.clock_skew().unwrap_or(time::Duration::ZERO)
    }

    /// Notes the `Date` of an answer; warns once when our clock is off by more than the
    /// tolerance, and says when it is right again.
    fn check_clock(&self, headers: &http::HeaderMap) {
        let Some(date) = headers
            .get(http::header::DATE)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| httpdate::parse_http_date(value).ok())
        else {
            return;
        };
        let server = OffsetDateTime::from(date);
        let local = OffsetDateTime::now_utc();
        // Date has whole seconds: a difference under one is no difference.
        let skew = server - local;
        let mut check = self.clock.lock().unwrap_or_else(|p| p.into_inner());
        check.skew = Some(skew);
        let off = skew.abs() > CLOCK_SKEW_TOLERANCE;
        if off && !check.warned {
            check.warned = true;
            tracing::warn!(
                api = %self.base_url,
                local_time = %rfc3339(local),
                api_time = %rfc3339(server),
                skew_secs = skew.whole_seconds(),
                "the local clock differs from the API's by more than {} minutes; relative start \
                 and end times are resolved against the API's clock; fix the clock (NTP)",
                CLOCK_SKEW_TOLERANCE.whole_minutes()
            );
        } else if !off && check.warned {
            check.warned = false;
            tracing::info!(api = %self.base_url, "the local clock agrees with the API's again");
        }
    }

    /// The largest body accepted for a request of up to `items` events.
    fn body_limit(&self, items: u16) -> u64 {
        self.max_response_bytes
            .unwrap_or(u64::from(items.max(1)) * RESPONSE_BYTES_PER_EVENT + RESPONSE_OVERHEAD_BYTES)
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
        let mut tokens = self.token.write().unwrap_or_else(|p| p.into_inner());
        let changed = tokens.current.expose_secret() != token.expose_secret();
        if changed {
            let old = std::mem::replace(&mut tokens.current, token);
            tokens.retired.push(old);
            let excess = tokens.retired.len().saturating_sub(RETIRED_TOKENS_KEPT);
            tokens.retired.drain(..excess);
            self.token_generation
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
        changed
    }

    /// Fetches one page of a cursor stream from the v1 or v2 endpoint. A page with more than
    /// `max_items` events (what was asked for), or with an item that is not an event object,
    /// is an error: nothing of it is kept, the same request is sent again later.
    pub async fn fetch(
        &self,
        version: ApiVersion,
        stream: Stream,
        request: &PageRequest,
        max_items: u16,
    ) -> Result<Page, ApiError> {
        let url = format!(
            "{}/api/{}/{}",
            self.base_url,
            version.as_str(),
            stream.as_str()
        );
        let result = async {
            let (headers, body) = self
                .send(
                    http::Method::POST,
                    &url,
                    Some(request.body()),
                    self.body_limit(max_items),
                )
                .await?;
            let mut page = parse_page(&body, max_items).map_err(self.invalid(&url, &body))?;
            page.budget = rate_budget(&headers);
            Ok(page)
        }
        .await;
        result.map_err(|err| self.redact(err))
    }

    /// Fetches one page of the beta `GET /api/v3/auditevents`.
    pub async fn fetch_v3(
        &self,
        params: &V3Params,
        request: &v3::V3Request,
        max_items: u16,
    ) -> Result<v3::V3Page, ApiError> {
        let url = format!(
            "{}/api/v3/auditevents?{}",
            self.base_url,
            request.query(params)
        );
        let result = async {
            let (headers, body) = self
                .send(http::Method::GET, &url, None, self.body_limit(max_items))
                .await?;
            let mut page =
                v3::parse_v3_page(&body, max_items).map_err(self.invalid(&url, &body))?;
            page.budget = rate_budget(&headers);
            Ok(page)
        }
        .await;
        result.map_err(|err| self.redact(err))
    }

    /// Asks the API what the token is (`GET /api/v2/auth/introspect`). Every text in the
    /// answer is redacted, like every error.
    pub async fn introspect(&self) -> Result<Introspection, ApiError> {
        let url = format!("{}/api/v2/auth/introspect", self.base_url);
        let result: Result<Introspection, ApiError> = async {
            let (headers, body) = self
                .send(http::Method::GET, &url, None, RESPONSE_OVERHEAD_BYTES)
                .await?;
            let mut answer = serde_json::from_slice::<Introspection>(&body)
                .map_err(|err| self.invalid(&url, &body)(err.to_string()))?;
            answer.budget = rate_budget(&headers);
            Ok(answer)
        }
        .await;
        let tokens = self.token.read().unwrap_or_else(|p| p.into_inner());
        let clean = |text: String| tokens.clean(&text);
        match result {
            Ok(answer) => Ok(Introspection {
                uuid: answer.uuid.map(clean),
                issued_at: answer.issued_at.map(clean),
                features: answer.features.into_iter().map(clean).collect(),
                account_uuid: answer.account_uuid.map(clean),
                budget: answer.budget,
            }),
            Err(err) => Err(tokens.secrets().fold(err, ApiError::redact)),
        }
    }

    /// Makes what is wrong with the answer from `url` into the error that quotes its body.
    fn invalid<'a>(&'a self, url: &'a str, body: &'a [u8]) -> impl FnOnce(String) -> ApiError + 'a {
        move |detail| ApiError::InvalidResponse {
            url: url.to_owned(),
            detail,
            body: self.excerpt(body),
        }
    }

    /// `err` with the token (and each it replaced) taken out of every text.
    fn redact(&self, err: ApiError) -> ApiError {
        let tokens = self.token.read().unwrap_or_else(|p| p.into_inner());
        tokens.secrets().fold(err, ApiError::redact)
    }

    /// Sends a request and returns the headers and body of a 200 response; every other
    /// outcome is an [`ApiError`]. The whole exchange is bounded by the request timeout.
    ///
    /// The body, as sent and as decoded, may be at most `max_body` bytes: a larger one is an
    /// error as soon as the limit is passed, so memory never follows what a server sends.
    async fn send(
        &self,
        method: http::Method,
        url: &str,
        json: Option<String>,
        max_body: u64,
    ) -> Result<(http::HeaderMap, Bytes), ApiError> {
        let authorization = format!(
            "Bearer {}",
            self.token
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .current
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
                .map_err(|err| transport(url, self.ca_file.as_deref(), &err))?;
            let (parts, body) = response.into_parts();
            let too_large = || ApiError::InvalidResponse {
                url: url.to_owned(),
                detail: format!(
                    "the response body is larger than {max_body} bytes, more than {} events \
                     can take (max_response_bytes)",
                    max_body.saturating_sub(RESPONSE_OVERHEAD_BYTES) / RESPONSE_BYTES_PER_EVENT
                ),
                body: String::new(),
            };
            let limit = usize::try_from(max_body).unwrap_or(usize::MAX);
            let body = match http_body_util::Limited::new(body, limit).collect().await {
                Ok(body) => body.to_bytes(),
                Err(err) if err.is::<http_body_util::LengthLimitError>() => return Err(too_large()),
                Err(err) => return Err(transport(url, self.ca_file.as_deref(), &*err)),
            };
            Ok::<_, ApiError>((parts, body))
        };
        let (parts, body) = tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| ApiError::Timeout {
                url: url.to_owned(),
                after: self.timeout,
            })??;
        self.check_clock(&parts.headers);
        let body = decode_body(&parts.headers, body, max_body).map_err(|detail| {
            ApiError::InvalidResponse {
                url: url.to_owned(),
                detail,
                body: String::new(),
            }
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
        let tokens = self.token.read().unwrap_or_else(|p| p.into_inner());
        let cleaned = tokens.clean(&String::from_utf8_lossy(body));
        excerpt(cleaned.as_bytes(), BODY_EXCERPT_CHARS, "")
    }
}

const USER_AGENT: &str = concat!("op-events-forwarder/", env!("CARGO_PKG_VERSION"));

/// The error for a failure below HTTP, with the chain of causes (hyper's top-level message
/// alone is rarely useful); a refused TLS handshake ends it, explained ([`tls::explain`]).
fn transport(
    url: &str,
    ca_file: Option<&Path>,
    err: &(dyn std::error::Error + 'static),
) -> ApiError {
    let mut detail = String::new();
    let mut next = Some(err);
    while let Some(cause) = next {
        if !detail.is_empty() {
            detail.push_str(": ");
        }
        if let Some(refusal) = tls::rustls_error_of(cause) {
            // hyper-rustls checks the host of the URL (without an IPv6 address's brackets).
            let host = url.parse::<http::Uri>().ok();
            let host = host.as_ref().and_then(http::Uri::host).unwrap_or(url);
            let host = host.trim_start_matches('[').trim_end_matches(']');
            let checked = tls::Checked {
                server_name: host,
                name_from: tls::NameFrom::BaseUrl,
                ca_file,
                client_cert: None,
            };
            detail.push_str(&format!(
                "TLS handshake failed (verifying the server as \"{host}\"): {}",
                tls::explain(refusal, &checked)
            ));
            break;
        }
        detail.push_str(&cause.to_string());
        next = cause.source();
    }
    ApiError::Transport {
        url: url.to_owned(),
        detail,
    }
}

/// The body as sent, decoded according to `Content-Encoding` (`gzip` or none), at most
/// `max_decoded` bytes once decoded.
pub(crate) fn decode_body(
    headers: &http::HeaderMap,
    body: Bytes,
    max_decoded: u64,
) -> Result<Bytes, String> {
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
            // The gzip trailer's last four bytes are the decoded size (mod 2^32) of the last
            // member, exact for the single member servers send: one allocation, no growth.
            // Believed up to 64 times the body, whatever a server writes there.
            let trailer = body
                .len()
                .checked_sub(4)
                .and_then(|at| body[at..].try_into().ok())
                .map_or(0, u32::from_le_bytes);
            let compressed = body.len() as u64;
            let capacity = match u64::from(trailer) {
                0 => compressed * 4,
                size => size.min(compressed * 64),
            };
            // The usual case, a single member whose trailer tells its size: libdeflate
            // inflates it whole into a buffer of that size, twice as fast as the streaming
            // decoder (a 680 KB page: 0.54–0.63 ms against 1.08–1.45). A body it refuses
            // (more than one member, a trailer that lies, bad data) goes the streaming way,
            // which says what is wrong. libdeflate checks the data's CRC-32 and size but not
            // a header's optional CRC-16, which the streaming decoder would refuse if wrong.
            let size = u64::from(trailer);
            if size > 0 && size <= compressed * 64 && size <= max_decoded {
                let mut decoded = vec![0; usize::try_from(size).unwrap_or(0)];
                if inflate_one_member(&body, &mut decoded) {
                    return Ok(Bytes::from(decoded));
                }
            }
            let capacity = capacity.min(max_decoded).saturating_add(1);
            let mut decoded = Vec::with_capacity(usize::try_from(capacity).unwrap_or(0));
            // The bufread decoder reads the body in place (the read one copies it through a
            // buffer of its own first).
            flate2::bufread::MultiGzDecoder::new(&body[..])
                .take(max_decoded + 1)
                .read_to_end(&mut decoded)
                .map_err(|err| format!("cannot decode the gzip body: {err}"))?;
            if decoded.len() as u64 > max_decoded {
                return Err(format!(
                    "the gzip body expands beyond {max_decoded} bytes (max_response_bytes)"
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

/// Inflates `body`, which must be exactly one gzip member, into `out`, which it must fill
/// exactly; libdeflate checks the member's CRC and size. False for anything else: trailing
/// bytes or more members, a size other than `out`'s, bad data, no memory for the state.
fn inflate_one_member(body: &[u8], out: &mut [u8]) -> bool {
    // SAFETY: the decompressor is checked for null, used only here and freed once; the
    // input and output pointers and lengths come from live slices that outlive the call, and
    // libdeflate writes at most `out.len()` bytes into `out`.
    unsafe {
        let inflater = libdeflate_sys::libdeflate_alloc_decompressor();
        if inflater.is_null() {
            return false;
        }
        let (mut read, mut written) = (0usize, 0usize);
        let result = libdeflate_sys::libdeflate_gzip_decompress_ex(
            inflater,
            body.as_ptr().cast(),
            body.len(),
            out.as_mut_ptr().cast(),
            out.len(),
            &mut read,
            &mut written,
        );
        libdeflate_sys::libdeflate_free_decompressor(inflater);
        result == libdeflate_sys::libdeflate_result_LIBDEFLATE_SUCCESS
            && read == body.len()
            && written == out.len()
    }
}

/// Parses the `{cursor, has_more, items}` envelope, keeping the items as raw JSON. Refuses a
/// page of more than `max_items` items, or with an item that is not an event (a JSON object
/// with a string `uuid`), naming the item. A well-formed page is read the quick way
/// ([`page`]); anything else the thorough way, which says what is wrong.
pub(crate) fn parse_page(body: &[u8], max_items: u16) -> Result<Page, String> {
    // serde_json checks the UTF-8 of the strings it reads, not of those it skips: the whole
    // body is checked here, so no byte of a page goes on unchecked.
    let text = std::str::from_utf8(body)
        .map_err(|err| format!("the response is not UTF-8 (at byte {})", err.valid_up_to()))?;
    match page::read(text, max_items) {
        Some(read) => Ok(Page {
            cursor: read.cursor,
            has_more: read.has_more,
            items: EventArray::new(read.events.iter().copied()),
            n_events: read.events.len() as u64,
            newest: read.newest,
            budget: None,
        }),
        None => parse_page_thoroughly(body, max_items),
    }
}

/// [`parse_page`] the thorough way: the events taken whole, then each one's top level walked.
pub(crate) fn parse_page_thoroughly(body: &[u8], max_items: u16) -> Result<Page, String> {
    // The derived envelope would read a JSON array as its fields in order, too.
    let first = body
        .iter()
        .find(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r'));
    if first.is_some_and(|b| *b == b'[') {
        return Err("the response is a JSON array, not an object".to_owned());
    }
    #[derive(Deserialize)]
    struct Envelope<'a> {
        cursor: Option<String>,
        has_more: Option<bool>,
        #[serde(borrow, default)]
        items: Option<Items<'a>>,
    }
    let envelope: Envelope<'_> = serde_json::from_slice(body).map_err(|err| err.to_string())?;
    let cursor = envelope.cursor.ok_or("no \"cursor\" in the response")?;
    let has_more = envelope.has_more.ok_or("no \"has_more\" in the response")?;
    let events = envelope.items.map(|items| items.0).unwrap_or_default();
    let newest = check_items(&events, max_items, "items", true)?;
    Ok(Page {
        cursor,
        has_more,
        items: EventArray::new(events.iter().map(|event| event.get())),
        n_events: events.len() as u64,
        newest,
        budget: None,
    })
}

/// An array of raw events, read in the same pass as the envelope around it.
struct Items<'a>(Vec<&'a RawValue>);

impl<'de: 'a, 'a> Deserialize<'de> for Items<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = Items<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an array of events")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Self::Value, A::Error> {
                let mut events = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1000));
                while let Some(event) = seq.next_element::<&'de RawValue>()? {
                    events.push(event);
                }
                Ok(Items(events))
            }
        }
        deserializer.deserialize_seq(Visit)
    }
}

/// Checks the events of a page: at most `max_items` of them, each a JSON object, and (where
/// the schema promises one) with a string `uuid`. Returns the latest readable RFC 3339
/// `timestamp` among them, read in the same pass where the uuid is (`None` without
/// `need_uuid`: see [`newest_event_time`]).
pub(crate) fn check_items(
    events: &[&RawValue],
    max_items: u16,
    key: &str,
    need_uuid: bool,
) -> Result<Option<OffsetDateTime>, String> {
    if events.len() > usize::from(max_items) {
        return Err(format!(
            "\"{key}\" holds {} events, more than the {max_items} asked for",
            events.len()
        ));
    }
    let mut newest = None;
    for (idx, event) in events.iter().enumerate() {
        let text = event.get();
        let refused = |why: &str| {
            format!(
                "{key}[{idx}] is not an event ({why}): {}",
                excerpt(text.as_bytes(), 60, "")
            )
        };
        if !text.starts_with('{') {
            return Err(refused("not a JSON object"));
        }
        if need_uuid {
            let [uuid, timestamp] = crate::event::top_level(text, ["uuid", "timestamp"])
                .map_err(|why| refused(&why))?;
            match uuid {
                Some(uuid) if uuid.starts_with('"') => {}
                Some(_) => return Err(refused("its \"uuid\" is not a string")),
                None => return Err(refused("it has no \"uuid\"")),
            }
            newest = newest.max(timestamp.and_then(timestamp_of));
        }
    }
    Ok(newest)
}

/// A raw JSON value as an RFC 3339 time, if it is a string that holds one.
fn timestamp_of(raw: &str) -> Option<OffsetDateTime> {
    let text: std::borrow::Cow<'_, str> = serde_json::from_str(raw).ok()?;
    OffsetDateTime::parse(&text, &Rfc3339).ok()
}

/// The latest `timestamp` among a page's events, if any is a readable RFC 3339 time: for
/// pages whose events [`check_items`] did not read (the v3 beta's).
pub fn newest_event_time<'a>(events: impl Iterator<Item = &'a str>) -> Option<OffsetDateTime> {
    #[derive(Deserialize)]
    struct Stamped<'a> {
        #[serde(borrow)]
        timestamp: Option<&'a RawValue>,
    }
    events
        .filter_map(|event| serde_json::from_str::<Stamped<'_>>(event).ok())
        .filter_map(|event| event.timestamp.map(RawValue::get).and_then(timestamp_of))
        .max()
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

/// What a response's `RateLimit-Remaining` and `RateLimit-Reset` (seconds; a minute if it is
/// missing) say of the account's budget; `None` without a readable `RateLimit-Remaining`.
pub fn rate_budget(headers: &http::HeaderMap) -> Option<RateBudget> {
    let header = |name: &str| headers.get(name).and_then(|value| value.to_str().ok());
    let remaining: u64 = header("ratelimit-remaining")?.trim().parse().ok()?;
    let reset = header("ratelimit-reset")
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or(60);
    Some(RateBudget {
        remaining: u32::try_from(remaining).unwrap_or(u32::MAX),
        reset: Duration::from_secs(reset),
    })
}

/// `Retry-After` as seconds or an HTTP date (any of the three forms HTTP allows), relative
/// to `now`.
pub fn parse_retry_after(value: &str, now: OffsetDateTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = OffsetDateTime::from(httpdate::parse_http_date(value).ok()?);
    Some((at - now).try_into().unwrap_or(Duration::ZERO))
}

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

    const MIB64: u64 = 64 * 1024 * 1024;

    #[test]
    fn pages_of_anything_but_events_are_refused_naming_the_item() {
        let page = |items: &str| {
            parse_page(
                format!(r#"{{"cursor":"c","has_more":true,"items":{items}}}"#).as_bytes(),
                3,
            )
        };
        assert!(page(r#"[{"uuid":"A"},{"uuid":"B","x":[1]}]"#).is_ok());
        for (items, want) in [
            (
                r#"[{"uuid":"A"},1]"#,
                "items[1] is not an event (not a JSON object): 1",
            ),
            (
                r#"["a string"]"#,
                r#"items[0] is not an event (not a JSON object): "a string""#,
            ),
            (
                "[null]",
                "items[0] is not an event (not a JSON object): null",
            ),
            (
                "[[1,2]]",
                "items[0] is not an event (not a JSON object): [1,2]",
            ),
            (
                "[true]",
                "items[0] is not an event (not a JSON object): true",
            ),
            (
                r#"[{"id":"A"}]"#,
                r#"items[0] is not an event (it has no "uuid"): {"id":"A"}"#,
            ),
            (
                r#"[{"uuid":7}]"#,
                r#"items[0] is not an event (its "uuid" is not a string): {"uuid":7}"#,
            ),
            (
                r#"[{"uuid":"A"},{"uuid":"B"},{"uuid":"C"},{"uuid":"D"}]"#,
                r#""items" holds 4 events, more than the 3 asked for"#,
            ),
        ] {
            assert_eq!(page(items).unwrap_err(), want, "{items}");
        }
    }

    #[test]
    fn a_page_says_its_newest_event_time_read_while_its_events_are_checked() {
        let body = br#"{"cursor":"c","has_more":false,"items":[
            {"uuid":"A","timestamp":"2026-11-21T10:00:00.5-03:00"},
            {"uuid":"B","timestamp":"2026-11-21T12:00:00Z"},
            {"uuid":"C","timestamp":"not a time"},{"uuid":"D","timestamp":7},{"uuid":"E"}]}"#;
        let page = parse_page(body, 10).unwrap();
        assert_eq!(page.n_events, 5);
        assert_eq!(page.newest, Some(datetime!(2026-11-21 13:00:00.5 UTC)));
        let none = parse_page(
            br#"{"cursor":"c","has_more":false,"items":[{"uuid":"A"}]}"#,
            10,
        );
        assert_eq!(none.unwrap().newest, None);
    }

    /// A client's options for an address where nothing answers.
    fn unreachable_api() -> ClientOptions {
        ClientOptions {
            base_url: "http://127.0.0.1:9".into(),
            ca_file: None,
            timeout: Duration::from_secs(1),
            max_response_bytes: None,
        }
    }

    #[test]
    fn token_changes_are_counted_across_clones() {
        let options = unreachable_api();
        let client = Client::new(&options, SecretString::from("old")).unwrap();
        let other_stream = client.clone();
        let sent_with = client.token_generation();
        assert!(!other_stream.replace_token(SecretString::from("old")));
        assert_eq!(client.token_generation(), sent_with);
        assert!(other_stream.replace_token(SecretString::from("new")));
        assert_ne!(client.token_generation(), sent_with, "seen by every clone");
        assert!(!client.replace_token(SecretString::from("new")));
    }

    /// A regression: an answer to a request sent with the token a reload replaced was quoted
    /// with that token in it.
    #[test]
    fn replaced_tokens_are_still_cleaned_from_what_answers_quote() {
        let options = unreachable_api();
        let client = Client::new(&options, SecretString::from("tok-first")).unwrap();
        for n in 0..=RETIRED_TOKENS_KEPT {
            assert!(client.replace_token(SecretString::from(format!("tok-{n}"))));
        }
        let echoed = format!("unknown token tok-first, tok-0, tok-{RETIRED_TOKENS_KEPT}");
        let err = client.redact(ApiError::Status {
            url: options.base_url.clone(),
            status: 401,
            message: Some(echoed.clone()),
            body: echoed.clone(),
            retry_after: None,
        });
        let text = err.to_string();
        // The oldest fell out of the bounded list; the rest are cleaned.
        assert!(!text.contains("tok-0"), "{text}");
        assert!(
            !text.contains(&format!("tok-{RETIRED_TOKENS_KEPT}")),
            "{text}"
        );
        assert_eq!(
            client.excerpt(echoed.as_bytes()),
            "unknown token tok-first, [REDACTED], [REDACTED]"
        );
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
        let page = parse_page(body, 1000).unwrap();
        assert_eq!(page.cursor, "abc");
        assert!(page.has_more);
        assert_eq!(page.n_events, 2);
        // Each event byte for byte; the array's own whitespace is not kept.
        assert_eq!(
            page.items.iter().collect::<Vec<_>>(),
            [r#"{"uuid":"A","n":1.50,"x":"\u00e9"}"#, r#"{"uuid":"B"}"#]
        );
        assert_eq!(
            page.items.text(),
            r#"[{"uuid":"A","n":1.50,"x":"\u00e9"},{"uuid":"B"}]"#
        );
    }

    #[test]
    fn empty_and_null_items_are_empty_pages() {
        for body in [
            &br#"{"cursor":"c","has_more":false,"items":[]}"#[..],
            br#"{"cursor":"c","has_more":false,"items":null}"#,
            br#"{"cursor":"c","has_more":false}"#,
        ] {
            let page = parse_page(body, 1000).unwrap();
            assert_eq!((page.n_events, page.items.text()), (0, "[]"));
        }
    }

    #[test]
    fn broken_envelopes_are_errors() {
        assert_eq!(
            parse_page(br#"{"has_more":false,"items":[]}"#, 1000).unwrap_err(),
            "no \"cursor\" in the response"
        );
        assert!(
            parse_page(br#"{"cursor":"c","has_more":true,"items":{}}"#, 1000)
                .unwrap_err()
                .starts_with("invalid type: map, expected an array of events at line 1")
        );
        assert!(parse_page(br#"{"cursor":"c","has_more":true,"items":[{"uuid":"#, 1000).is_err());
        assert_eq!(
            parse_page(br#" ["c",true,[{"uuid":"A"}]]"#, 1000).unwrap_err(),
            "the response is a JSON array, not an object"
        );
        // Bytes no field is read from are checked too.
        assert_eq!(
            parse_page(b"{\"cursor\":\"c\",\"has_more\":true,\"x\":\"\xff\"}", 1000).unwrap_err(),
            "the response is not UTF-8 (at byte 35)"
        );
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
            decode_body(&headers("gzip"), gzipped.clone(), MIB64).unwrap(),
            &json[..]
        );
        assert_eq!(
            decode_body(&headers("identity, GZIP"), gzipped.clone(), MIB64).unwrap(),
            &json[..]
        );
        let plain = Bytes::from_static(json);
        assert_eq!(
            decode_body(&http::HeaderMap::new(), plain.clone(), MIB64).unwrap(),
            plain
        );
        assert_eq!(
            decode_body(&headers("br"), plain.clone(), MIB64).unwrap_err(),
            "unsupported Content-Encoding br (only gzip is asked for)"
        );
        assert!(
            decode_body(&headers("gzip"), plain, MIB64)
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
            decode_body(&headers("gzip"), bomb, MIB64).unwrap_err(),
            "the gzip body expands beyond 67108864 bytes (max_response_bytes)"
        );
    }

    #[test]
    fn gzip_bodies_libdeflate_refuses_go_the_streaming_way() {
        use std::io::Write as _;
        let gzip = |data: &[u8]| {
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            gz.write_all(data).unwrap();
            gz.finish().unwrap()
        };
        let mut headers = http::HeaderMap::new();
        headers.insert(http::header::CONTENT_ENCODING, "gzip".parse().unwrap());
        let decode = |body: Vec<u8>| decode_body(&headers, Bytes::from(body), MIB64);
        let page: Vec<u8> = (0..20_000)
            .flat_map(|n| format!(r#"{{"uuid":"{n}","n":{}}},"#, n * 7).into_bytes())
            .collect();
        // One member, its size in the trailer: inflated whole.
        assert_eq!(decode(gzip(&page)).unwrap(), page);
        // Two members: all of both.
        let mut two = gzip(b"first ");
        two.extend(gzip(b"second"));
        assert_eq!(decode(two).unwrap(), &b"first second"[..]);
        // A trailer that lies about the size, either way, or a wrong CRC: refused.
        for (at, change) in [(4, -1i16), (4, 1), (8, 1)] {
            let mut body = gzip(&page);
            let i = body.len() - at;
            body[i] = (i16::from(body[i]) + change).rem_euclid(256) as u8;
            let err = decode(body).unwrap_err();
            assert!(err.starts_with("cannot decode the gzip body"), "{err}");
        }
        // Garbage after the member is not a second member, even when it reads as the
        // member's size.
        let mut trailing = gzip(&page);
        trailing.extend_from_slice(b"junk");
        assert!(decode(trailing).is_err());
        let mut trailing = gzip(&page);
        trailing.extend_from_slice(&u32::try_from(page.len()).unwrap().to_le_bytes());
        assert!(decode(trailing).is_err());
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

        let budget = |remaining, reset| {
            Some(RateBudget {
                remaining,
                reset: Duration::from_secs(reset),
            })
        };
        let used_up = headers(&[("RateLimit-Remaining", "0"), ("RateLimit-Reset", "12")]);
        assert_eq!(rate_budget(&used_up), budget(0, 12));
        let no_reset = headers(&[("Ratelimit-Remaining", "0")]);
        assert_eq!(rate_budget(&no_reset), budget(0, 60));
        let left = headers(&[("RateLimit-Remaining", "5"), ("RateLimit-Reset", "12")]);
        assert_eq!(rate_budget(&left), budget(5, 12));
        let garbage = headers(&[("RateLimit-Remaining", "-1"), ("RateLimit-Reset", "12")]);
        assert_eq!(rate_budget(&garbage), None);
        assert_eq!(rate_budget(&headers(&[])), None);
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
