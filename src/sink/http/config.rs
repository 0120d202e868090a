//! An HTTP collector's config (`type = "http"`): the keys of its `[[sinks]]` table besides
//! `type` and `name`, read and validated: the URL and format, the format's own keys
//! (HEC's fields and indexer acknowledgement, the bulk index and document shape), the
//! credentials, the request sizes, timeouts and concurrency, TLS and a proxy.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use crate::account::config::{TokenSource, env_var_name};
use crate::config::{
    ConfigErrorKind, Problem, deserialize, file_path, int_in, join, quote, unknown_value,
};
use crate::sink::http::format::{Document, default_sourcetype, integration_data_stream};
use crate::sink::tls::{RawTls, SinkTlsConfig};
use crate::stream::Stream;

/// The settings of an HTTP collector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpSinkConfig {
    /// `url`: for `ndjson` and `json` the endpoint itself; for `splunk_hec` and
    /// `elasticsearch` the collector's base URL, to which `/services/collector/...` or
    /// `/_bulk` is added. No trailing `/`.
    pub url: String,
    /// `format` and the keys only it takes.
    pub format: HttpFormat,
    /// The credential sent with every request.
    pub auth: Auth,
    /// `headers`: sent with every request (after the sink's own, so they may not replace
    /// `Authorization`, `Content-Type`, `Content-Encoding` or `Content-Length`).
    pub headers: Vec<(String, String)>,
    /// `compression = "gzip"`: request bodies gzipped (`Content-Encoding: gzip`).
    pub gzip: bool,
    /// `max_events`: the most events in one request.
    pub max_events: usize,
    /// `max_bytes`: the largest request body (before compression); a batch is split to fit,
    /// and an event larger than this alone is a dead letter.
    pub max_bytes: usize,
    /// `timeout_secs`: the limit of one request, from connecting to the answer's last byte.
    pub timeout: Duration,
    /// `concurrency`: requests in flight at once for one stream. 1 (the default) keeps the
    /// stream's order at the collector.
    pub concurrency: usize,
    /// `retry_on_status`: statuses retried besides 408, 429 and 5xx.
    pub retry_on_status: Vec<u16>,
    /// `proxy_url`: an HTTP proxy to tunnel through (CONNECT); without it, `HTTPS_PROXY`,
    /// `HTTP_PROXY`, `ALL_PROXY` and `NO_PROXY` from the environment decide.
    pub proxy_url: Option<String>,
    /// TLS settings, for an https:// `url`.
    pub tls: SinkTlsConfig,
}

/// What the requests carry, and the keys of each format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HttpFormat {
    /// One event per line; with `envelope`, each wrapped with its account and stream.
    Ndjson { envelope: bool },
    /// A JSON array of events.
    Json,
    /// Splunk HEC's `/services/collector/event`.
    SplunkHec(HecConfig),
    /// Elasticsearch or OpenSearch `_bulk`.
    Elasticsearch(BulkConfig),
}

/// The keys of `format = "splunk_hec"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HecConfig {
    /// `host`, `source`, `sourcetype`, `index`, and per stream in `[sinks.streams.<stream>]`.
    pub fields: Vec<(Stream, HecStreamFields)>,
    /// `ack = true`: indexer acknowledgement; a batch counts as delivered only when Splunk
    /// says it is indexed.
    pub ack: bool,
    /// `ack_timeout_secs`: how long to wait for an acknowledgement before sending again.
    pub ack_timeout: Duration,
}

/// What a HEC event says besides the event, for one stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HecStreamFields {
    pub host: Option<String>,
    pub source: Option<String>,
    pub sourcetype: String,
    pub index: Option<String>,
}

impl HecConfig {
    pub fn fields(&self, stream: Stream) -> &HecStreamFields {
        &self
            .fields
            .iter()
            .find(|(s, _)| *s == stream)
            .unwrap_or(&self.fields[0])
            .1
    }
}

/// The keys of `format = "elasticsearch"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BulkConfig {
    /// `document`: the shape of each document.
    pub document: Document,
    /// The index or data stream of each stream: from `namespace` for the integration's data
    /// streams, from `index` (with `{stream}`) otherwise; `[sinks.streams.<stream>] index`
    /// overrides either.
    pub indices: Vec<(Stream, String)>,
    /// `pipeline`: the ingest pipeline, as the `pipeline` query parameter.
    pub pipeline: Option<String>,
}

impl BulkConfig {
    pub fn index_of(&self, stream: Stream) -> &str {
        self.indices
            .iter()
            .find(|(s, _)| *s == stream)
            .map_or("", |(_, index)| index)
    }
}

/// The credential of an HTTP collector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Auth {
    None,
    /// `token_file`/`token_env`: `Authorization: Splunk <token>` for HEC, `Bearer <token>`
    /// otherwise.
    Token(TokenSource),
    /// `basic_user` with `password_file`/`password_env`.
    Basic {
        user: String,
        password: TokenSource,
    },
    /// `api_key_file`/`api_key_env`: `Authorization: ApiKey <key>` (Elasticsearch; the key as
    /// Elasticsearch prints it, base64 of `id:key`).
    ApiKey(TokenSource),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHttpSink {
    url: String,
    format: String,
    envelope: Option<bool>,
    token_file: Option<String>,
    token_env: Option<String>,
    basic_user: Option<String>,
    password_file: Option<String>,
    password_env: Option<String>,
    api_key_file: Option<String>,
    api_key_env: Option<String>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    compression: Option<String>,
    max_events: Option<i64>,
    max_bytes: Option<i64>,
    #[serde(default = "default_timeout_secs")]
    timeout_secs: i64,
    concurrency: Option<i64>,
    #[serde(default)]
    retry_on_status: Vec<i64>,
    proxy_url: Option<String>,
    ca_file: Option<String>,
    server_name: Option<String>,
    client_cert: Option<String>,
    client_key: Option<String>,
    #[serde(default)]
    tls_insecure_skip_verify: bool,
    // splunk_hec
    host: Option<String>,
    source: Option<String>,
    sourcetype: Option<String>,
    ack: Option<bool>,
    ack_timeout_secs: Option<i64>,
    // splunk_hec and elasticsearch
    index: Option<String>,
    // elasticsearch
    document: Option<String>,
    namespace: Option<String>,
    pipeline: Option<String>,
    #[serde(default)]
    streams: BTreeMap<String, RawStreamFields>,
}

/// `[sinks.streams.<stream>]`: what one stream's events say differently.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStreamFields {
    host: Option<String>,
    source: Option<String>,
    sourcetype: Option<String>,
    index: Option<String>,
}

fn default_timeout_secs() -> i64 {
    30
}

/// The default `max_events`: one outbox page.
const DEFAULT_MAX_EVENTS: i64 = 1000;
/// The default `max_bytes`: 4 MiB, below every collector's default limit (Splunk's
/// `max_content_length` and Elasticsearch's `http.max_content_length` are far larger).
const DEFAULT_MAX_BYTES: i64 = 4 * 1024 * 1024;
/// The default `ack_timeout_secs`.
const DEFAULT_ACK_TIMEOUT_SECS: i64 = 120;
const FORMATS: [&str; 4] = ["ndjson", "json", "splunk_hec", "elasticsearch"];
/// Headers the sink sets itself.
const OWN_HEADERS: [&str; 6] = [
    "authorization",
    "content-type",
    "content-encoding",
    "content-length",
    "host",
    "x-splunk-request-channel",
];

impl HttpSinkConfig {
    /// Reads and validates the keys of an HTTP sink's `[[sinks]]` table at `key`.
    pub(crate) fn parse(key: &str, table: toml::Table) -> Result<HttpSinkConfig, Problem> {
        HttpSinkConfig::from_raw(key, deserialize(key, &toml::Value::Table(table))?)
    }

    fn from_raw(key: &str, raw: RawHttpSink) -> Result<HttpSinkConfig, Problem> {
        let at = |name: &str| join(key, name);
        let format_name = raw.format.as_str();
        if !FORMATS.contains(&format_name) {
            return Err(unknown_value(
                &at("format"),
                "format",
                format_name,
                &FORMATS,
            ));
        }
        let only_for = |name: &str, set: bool, formats: &[&str]| -> Result<(), Problem> {
            if set && !formats.contains(&format_name) {
                let which: Vec<String> = formats.iter().map(|f| format!("\"{f}\"")).collect();
                return Err(Problem::invalid(
                    &at(name),
                    &format!("no {name} unless format = {}", which.join(" or ")),
                    &format!("format = {}", quote(format_name)),
                ));
            }
            Ok(())
        };
        only_for("envelope", raw.envelope.is_some(), &["ndjson"])?;
        for (name, set) in [
            ("host", raw.host.is_some()),
            ("source", raw.source.is_some()),
            ("sourcetype", raw.sourcetype.is_some()),
            ("ack", raw.ack.is_some()),
            ("ack_timeout_secs", raw.ack_timeout_secs.is_some()),
        ] {
            only_for(name, set, &["splunk_hec"])?;
        }
        for (name, set) in [
            ("document", raw.document.is_some()),
            ("namespace", raw.namespace.is_some()),
            ("pipeline", raw.pipeline.is_some()),
            ("api_key_file", raw.api_key_file.is_some()),
            ("api_key_env", raw.api_key_env.is_some()),
        ] {
            only_for(name, set, &["elasticsearch"])?;
        }
        only_for(
            "index",
            raw.index.is_some(),
            &["splunk_hec", "elasticsearch"],
        )?;
        only_for(
            "streams",
            !raw.streams.is_empty(),
            &["splunk_hec", "elasticsearch"],
        )?;

        let url = collector_url(&at("url"), &raw.url, format_name)?;
        let mut streams = Vec::new();
        for (name, fields) in raw.streams {
            let stream_key = join(&at("streams"), &name);
            let stream: Stream = name.parse().map_err(|_| {
                let known: Vec<&str> = Stream::KNOWN.iter().map(|s| s.as_str()).collect();
                unknown_value(&stream_key, "stream", &name, &known)
            })?;
            if format_name == "elasticsearch" {
                for (field, set) in [
                    ("host", fields.host.is_some()),
                    ("source", fields.source.is_some()),
                    ("sourcetype", fields.sourcetype.is_some()),
                ] {
                    if set {
                        return Err(Problem::invalid(
                            &join(&stream_key, field),
                            "only index for format = \"elasticsearch\"",
                            field,
                        ));
                    }
                }
            }
            streams.push((stream, fields));
        }
        let stream_fields = |stream: Stream| {
            streams
                .iter()
                .find(|(s, _)| *s == stream)
                .map(|(_, fields)| fields)
        };

        let format = match format_name {
            "ndjson" => HttpFormat::Ndjson {
                envelope: raw.envelope.unwrap_or(false),
            },
            "json" => HttpFormat::Json,
            "splunk_hec" => {
                let mut fields = Vec::new();
                for stream in Stream::KNOWN {
                    let own = stream_fields(stream);
                    let pick = |own: Option<&String>, all: &Option<String>, name: &str| {
                        let value = own.or(all.as_ref()).cloned();
                        value.map(|value| hec_field(&at(name), value)).transpose()
                    };
                    fields.push((
                        stream,
                        HecStreamFields {
                            host: pick(own.and_then(|f| f.host.as_ref()), &raw.host, "host")?,
                            source: pick(
                                own.and_then(|f| f.source.as_ref()),
                                &raw.source,
                                "source",
                            )?,
                            sourcetype: pick(
                                own.and_then(|f| f.sourcetype.as_ref()),
                                &raw.sourcetype,
                                "sourcetype",
                            )?
                            .unwrap_or_else(|| default_sourcetype(stream).to_owned()),
                            index: pick(own.and_then(|f| f.index.as_ref()), &raw.index, "index")?,
                        },
                    ));
                }
                let ack_timeout = int_in(
                    &at("ack_timeout_secs"),
                    raw.ack_timeout_secs.unwrap_or(DEFAULT_ACK_TIMEOUT_SECS),
                    1,
                    3600,
                )?;
                HttpFormat::SplunkHec(HecConfig {
                    fields,
                    ack: raw.ack.unwrap_or(false),
                    ack_timeout: Duration::from_secs(ack_timeout.unsigned_abs()),
                })
            }
            _ => {
                let document = match raw.document.as_deref() {
                    None | Some("integration") => Document::Integration,
                    Some("event") => Document::Event,
                    Some(other) => {
                        return Err(unknown_value(
                            &at("document"),
                            "document",
                            other,
                            &["integration", "event"],
                        ));
                    }
                };
                if document == Document::Integration && raw.index.is_some() {
                    return Err(Problem::invalid(
                        &at("index"),
                        "no index with document = \"integration\" (its data streams are \
                         logs-1password.<dataset>-<namespace>; set namespace)",
                        &quote(raw.index.as_deref().unwrap_or_default()),
                    ));
                }
                if document == Document::Event && raw.namespace.is_some() {
                    return Err(Problem::invalid(
                        &at("namespace"),
                        "no namespace with document = \"event\" (set index)",
                        &quote(raw.namespace.as_deref().unwrap_or_default()),
                    ));
                }
                let namespace = raw.namespace.unwrap_or_else(|| "default".to_owned());
                index_name(&at("namespace"), &namespace)?;
                let template = raw.index.unwrap_or_else(|| "1password-{stream}".to_owned());
                let mut indices = Vec::new();
                for stream in Stream::KNOWN {
                    let index = match stream_fields(stream).and_then(|f| f.index.clone()) {
                        Some(own) => {
                            let own_key = join(&join(&at("streams"), stream.as_str()), "index");
                            index_name(&own_key, &own)?;
                            own
                        }
                        None => match document {
                            Document::Integration => integration_data_stream(stream, &namespace),
                            Document::Event => {
                                let index = template.replace("{stream}", stream.as_str());
                                index_name(&at("index"), &index)?;
                                index
                            }
                        },
                    };
                    indices.push((stream, index));
                }
                let pipeline = raw
                    .pipeline
                    .map(|pipeline| {
                        if pipeline.is_empty()
                            || !pipeline.bytes().all(|b| b.is_ascii_graphic() && b != b'&')
                        {
                            Err(Problem::invalid(
                                &at("pipeline"),
                                "a pipeline name (printable, no spaces or &)",
                                &quote(&pipeline),
                            ))
                        } else {
                            Ok(pipeline)
                        }
                    })
                    .transpose()?;
                HttpFormat::Elasticsearch(BulkConfig {
                    document,
                    indices,
                    pipeline,
                })
            }
        };

        let secret = |file: Option<String>,
                      env: Option<String>,
                      file_key: &str,
                      env_key: &str|
         -> Result<Option<TokenSource>, Problem> {
            match (file, env) {
                (Some(file), None) => Ok(Some(TokenSource::File(file_path(&at(file_key), file)?))),
                (None, Some(var)) => Ok(Some(TokenSource::Env(env_var_name(&at(env_key), var)?))),
                (Some(_), Some(_)) => Err(Problem::invalid(
                    &at(env_key),
                    &format!("only one of {file_key} or {env_key}"),
                    "both",
                )),
                (None, None) => Ok(None),
            }
        };
        let token = secret(raw.token_file, raw.token_env, "token_file", "token_env")?;
        let password = secret(
            raw.password_file,
            raw.password_env,
            "password_file",
            "password_env",
        )?;
        let api_key = secret(
            raw.api_key_file,
            raw.api_key_env,
            "api_key_file",
            "api_key_env",
        )?;
        let auth = match (token, raw.basic_user, password, api_key) {
            (None, None, None, None) => Auth::None,
            (Some(token), None, None, None) => Auth::Token(token),
            (None, Some(user), Some(password), None) => {
                if user.is_empty() || user.contains(':') || user.chars().any(char::is_control) {
                    return Err(Problem::invalid(
                        &at("basic_user"),
                        "a user name without ':' or control characters",
                        &quote(&user),
                    ));
                }
                Auth::Basic { user, password }
            }
            (None, None, None, Some(key)) => Auth::ApiKey(key),
            (None, Some(_), None, None) => {
                return Err(Problem::new(
                    Some(at("password_file")),
                    ConfigErrorKind::Missing {
                        note: Some(
                            "password_file or password_env is required with basic_user".to_owned(),
                        ),
                    },
                ));
            }
            (None, None, Some(_), None) => {
                return Err(Problem::new(
                    Some(at("basic_user")),
                    ConfigErrorKind::Missing {
                        note: Some("required with a password".to_owned()),
                    },
                ));
            }
            _ => {
                return Err(Problem::invalid(
                    key,
                    "one credential: a token (token_file/token_env), basic_user with a \
                     password, or an API key (api_key_file/api_key_env)",
                    "more than one",
                ));
            }
        };

        let mut headers = Vec::new();
        for (name, value) in raw.headers {
            let header_key = join(&at("headers"), &name);
            if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
                return Err(Problem::invalid(
                    &header_key,
                    "a header name (letters, digits and -)",
                    &quote(&name),
                ));
            }
            if OWN_HEADERS.contains(&name.to_ascii_lowercase().as_str()) {
                return Err(Problem::invalid(
                    &header_key,
                    "a header the sink does not set itself (the credential keys set \
                     Authorization)",
                    &quote(&name),
                ));
            }
            if http::HeaderValue::from_str(&value).is_err() {
                return Err(Problem::invalid(
                    &header_key,
                    "a header value of visible ASCII characters and spaces",
                    &quote(&value),
                ));
            }
            headers.push((name, value));
        }

        let gzip = match raw.compression.as_deref() {
            None | Some("none") => false,
            Some("gzip") => true,
            Some(other) => {
                return Err(unknown_value(
                    &at("compression"),
                    "compression",
                    other,
                    &["gzip", "none"],
                ));
            }
        };
        let max_events = int_in(
            &at("max_events"),
            raw.max_events.unwrap_or(DEFAULT_MAX_EVENTS),
            1,
            100_000,
        )?;
        let max_bytes = int_in(
            &at("max_bytes"),
            raw.max_bytes.unwrap_or(DEFAULT_MAX_BYTES),
            1024,
            1 << 30,
        )?;
        let timeout_secs = int_in(&at("timeout_secs"), raw.timeout_secs, 1, 600)?;
        let concurrency = int_in(&at("concurrency"), raw.concurrency.unwrap_or(1), 1, 64)?;
        let mut retry_on_status = Vec::new();
        for (index, status) in raw.retry_on_status.iter().enumerate() {
            let status = int_in(
                &format!("{}[{index}]", at("retry_on_status")),
                *status,
                400,
                499,
            )?;
            retry_on_status.push(u16::try_from(status).unwrap_or(0));
        }
        let proxy_url = raw
            .proxy_url
            .map(|proxy| proxy_url(&at("proxy_url"), proxy))
            .transpose()?;

        let raw_tls = RawTls {
            ca_file: raw.ca_file,
            server_name: raw.server_name,
            client_cert: raw.client_cert,
            client_key: raw.client_key,
            insecure_skip_verify: raw.tls_insecure_skip_verify,
        };
        if !url.starts_with("https://")
            && let Some(name) = raw_tls.first_set()
        {
            return Err(Problem::invalid(
                &at(name),
                "no TLS setting unless url is https://",
                &quote(&url),
            ));
        }
        let tls = SinkTlsConfig::from_raw(key, raw_tls)?;
        Ok(HttpSinkConfig {
            url,
            format,
            auth,
            headers,
            gzip,
            max_events: usize::try_from(max_events).unwrap_or(1),
            max_bytes: usize::try_from(max_bytes).unwrap_or(1024),
            timeout: Duration::from_secs(timeout_secs.unsigned_abs()),
            concurrency: usize::try_from(concurrency).unwrap_or(1),
            retry_on_status,
            proxy_url,
            tls,
        })
    }

    /// The longest one delivery may take: a request and one retry of a part of it, and the
    /// wait for HEC's acknowledgements.
    pub fn longest_delivery(&self) -> Duration {
        let ack = match &self.format {
            HttpFormat::SplunkHec(hec) if hec.ack => hec.ack_timeout,
            _ => Duration::ZERO,
        };
        self.timeout * 2 + ack
    }

    /// Reads the TLS files as the sink will at start (for `config::load` only).
    pub(crate) fn check_files(&self, key: &str) -> Result<(), Problem> {
        self.tls.check_files(key)
    }
}

/// Checks a collector's `url`: http:// or https://, a host, an optional port and (for the
/// webhooks, or a collector behind a path prefix) a path; no user info (credentials have
/// their own keys) and no fragment. Returned without a trailing `/`.
fn collector_url(key: &str, url: &str, format: &str) -> Result<String, Problem> {
    let invalid = |expected: &str| Problem::invalid(key, expected, &quote(url));
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err(invalid("an http:// or https:// URL"));
    };
    if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
        return Err(invalid("an http:// or https:// URL"));
    }
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    if authority.contains('@') {
        return Err(invalid(
            "a URL without user info (set basic_user and password_file, or token_file)",
        ));
    }
    if rest.contains('#') {
        return Err(invalid("a URL without a fragment"));
    }
    if crate::config::url_host(&authority.to_ascii_lowercase()).is_none() {
        return Err(invalid(
            "a URL of the form http(s)://host[:port][/path] with a port from 1 to 65535",
        ));
    }
    let path = &rest[authority_end..];
    if path.chars().any(|c| c.is_control() || c == ' ') {
        return Err(invalid("a URL without spaces or control characters"));
    }
    if matches!(format, "splunk_hec" | "elasticsearch") && path.contains('?') {
        return Err(invalid(
            "a base URL without a query (the sink adds the collector's paths)",
        ));
    }
    if http::Uri::try_from(url).is_err() {
        return Err(invalid("a valid URL"));
    }
    let url = format!("{}://{}{}", scheme.to_ascii_lowercase(), authority, path);
    Ok(url.trim_end_matches('/').to_owned())
}

/// Checks `proxy_url`: `http://host:port`, optionally with `user:password@` for the proxy.
fn proxy_url(key: &str, proxy: String) -> Result<String, Problem> {
    // Never quoted whole: it may carry the proxy's password.
    let shown = match (proxy.split_once("://"), proxy.rsplit_once('@')) {
        (Some((scheme, _)), Some((_, host))) => format!("{scheme}://[credentials]@{host}"),
        _ => proxy.clone(),
    };
    let invalid = || Problem::invalid(key, "http://host:port (an HTTP proxy)", &quote(&shown));
    let rest = proxy.strip_prefix("http://").ok_or_else(invalid)?;
    let host = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
    let host = host.strip_suffix('/').unwrap_or(host);
    if host.contains(['/', '?', '#'])
        || crate::config::url_host(&host.to_ascii_lowercase()).is_none()
    {
        return Err(invalid());
    }
    if http::Uri::try_from(proxy.as_str()).is_err() {
        return Err(invalid());
    }
    Ok(proxy)
}

/// A HEC field value: not empty, no control characters.
fn hec_field(key: &str, value: String) -> Result<String, Problem> {
    if value.is_empty() || value.chars().any(char::is_control) {
        return Err(Problem::invalid(
            key,
            "a non-empty value without control characters",
            &quote(&value),
        ));
    }
    Ok(value)
}

/// An Elasticsearch index or data stream name: lowercase, none of `\ / * ? " < > | , #`,
/// spaces or `:`, not starting with `-`, `_` or `+`, at most 255 bytes.
fn index_name(key: &str, name: &str) -> Result<(), Problem> {
    let valid = !name.is_empty()
        && name.len() <= 255
        && !name.starts_with(['-', '_', '+'])
        && name != "."
        && name != ".."
        && name
            .chars()
            .all(|c| !c.is_uppercase() && !c.is_control() && !"\\/*?\"<>|,# :".contains(c));
    if valid {
        Ok(())
    } else {
        Err(Problem::invalid(
            key,
            "an index name (lowercase, no spaces or any of \\ / * ? \" < > | , # :, not starting \
             with - _ +)",
            &quote(name),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SinkKind;
    use crate::config::testing::*;

    fn with_http(lines: &str) -> String {
        format!("{VALID}\n[[sinks]]\nname = \"web\"\ntype = \"http\"\n{lines}\n")
    }

    fn http(lines: &str) -> HttpSinkConfig {
        let config = parse(&with_http(lines)).unwrap();
        let SinkKind::Http(http) = &config.sinks.last().unwrap().kind else {
            panic!("an http sink")
        };
        (**http).clone()
    }

    #[test]
    fn shipped_http_example_parses() {
        let config = shipped_example_with("# --- An HTTP collector");
        let SinkKind::Http(http) = &config.sinks[0].kind else {
            panic!("an http sink")
        };
        assert_eq!(config.sinks[0].name, "splunk");
        let HttpFormat::SplunkHec(hec) = &http.format else {
            panic!("splunk_hec")
        };
        assert!(hec.ack && http.gzip);
        assert_eq!(
            hec.fields(Stream::ItemUsages).index.as_deref(),
            Some("onepassword")
        );
    }

    #[test]
    fn the_defaults() {
        let sink = http("url = \"https://collector.example/in/\"\nformat = \"ndjson\"");
        assert_eq!(sink.url, "https://collector.example/in");
        assert_eq!(sink.format, HttpFormat::Ndjson { envelope: false });
        assert_eq!(sink.auth, Auth::None);
        assert_eq!(
            (sink.max_events, sink.max_bytes, sink.concurrency, sink.gzip),
            (1000, 4 << 20, 1, false)
        );
        assert_eq!(sink.timeout, Duration::from_secs(30));
    }

    #[test]
    fn hec_fields_default_to_the_splunk_apps_and_are_set_per_stream() {
        let sink = http(
            "url = \"https://splunk:8088\"\nformat = \"splunk_hec\"\ntoken_env = \"HEC\"\n\
             index = \"onepassword\"\nack = true\n\
             [sinks.streams.signinattempts]\nindex = \"auth\"\nsourcetype = \"custom\"",
        );
        let HttpFormat::SplunkHec(hec) = &sink.format else {
            panic!()
        };
        assert!(hec.ack);
        assert_eq!(hec.ack_timeout, Duration::from_secs(120));
        let audit = hec.fields(Stream::AuditEvents);
        assert_eq!(audit.sourcetype, "1password:insights:audit_events");
        assert_eq!(audit.index.as_deref(), Some("onepassword"));
        let signin = hec.fields(Stream::SignInAttempts);
        assert_eq!(
            (signin.sourcetype.as_str(), signin.index.as_deref()),
            ("custom", Some("auth"))
        );
        assert_eq!(sink.auth, Auth::Token(TokenSource::Env("HEC".into())));
    }

    #[test]
    fn bulk_indices_from_the_namespace_or_the_index_template() {
        let sink = http(
            "url = \"http://127.0.0.1:9200\"\nformat = \"elasticsearch\"\nnamespace = \"prod\"",
        );
        let HttpFormat::Elasticsearch(bulk) = &sink.format else {
            panic!()
        };
        assert_eq!(bulk.document, Document::Integration);
        assert_eq!(
            bulk.index_of(Stream::ItemUsages),
            "logs-1password.item_usages-prod"
        );
        let sink = http(
            "url = \"http://127.0.0.1:9200\"\nformat = \"elasticsearch\"\ndocument = \"event\"\n\
             index = \"op-{stream}\"\npipeline = \"onepassword\"\n\
             [sinks.streams.auditevents]\nindex = \"audit\"",
        );
        let HttpFormat::Elasticsearch(bulk) = &sink.format else {
            panic!()
        };
        assert_eq!(bulk.index_of(Stream::ItemUsages), "op-itemusages");
        assert_eq!(bulk.index_of(Stream::AuditEvents), "audit");
        assert_eq!(bulk.pipeline.as_deref(), Some("onepassword"));
    }

    #[test]
    fn errors_name_the_key() {
        let err = |lines: &str, expected: &str| check_err(&with_http(lines), expected);
        err(
            "url = \"https://c\"\nformat = \"xml\"",
            "test.toml: sinks[1].format: unknown format \"xml\" (expected one of ndjson, json, splunk_hec, elasticsearch)",
        );
        err(
            "url = \"ftp://c\"\nformat = \"json\"",
            "test.toml: sinks[1].url: expected an http:// or https:// URL, got \"ftp://c\"",
        );
        err(
            "url = \"https://user:pw@c\"\nformat = \"json\"",
            "test.toml: sinks[1].url: expected a URL without user info (set basic_user and password_file, or token_file), got \"https://user:pw@c\"",
        );
        err(
            "url = \"https://c\"\nformat = \"json\"\nack = true",
            "test.toml: sinks[1].ack: expected no ack unless format = \"splunk_hec\", got format = \"json\"",
        );
        err(
            "url = \"https://c\"\nformat = \"elasticsearch\"\nindex = \"x\"",
            "test.toml: sinks[1].index: expected no index with document = \"integration\" (its data streams are logs-1password.<dataset>-<namespace>; set namespace), got \"x\"",
        );
        err(
            "url = \"https://c\"\nformat = \"elasticsearch\"\ndocument = \"event\"\nindex = \"Op\"",
            "test.toml: sinks[1].index: expected an index name (lowercase, no spaces or any of \\ / * ? \" < > | , # :, not starting with - _ +), got \"Op\"",
        );
        err(
            "url = \"https://c\"\nformat = \"json\"\nbasic_user = \"u\"",
            "test.toml: sinks[1].password_file: missing (password_file or password_env is required with basic_user)",
        );
        err(
            "url = \"https://c\"\nformat = \"json\"\ntoken_env = \"T\"\napi_key_env = \"K\"",
            "test.toml: sinks[1].api_key_env: expected no api_key_env unless format = \"elasticsearch\", got format = \"json\"",
        );
        err(
            "url = \"https://c\"\nformat = \"json\"\nheaders = { Authorization = \"x\" }",
            "test.toml: sinks[1].headers.Authorization: expected a header the sink does not set itself (the credential keys set Authorization), got \"Authorization\"",
        );
        err(
            "url = \"http://c:9200\"\nformat = \"json\"\nca_file = \"/ca.pem\"",
            "test.toml: sinks[1].ca_file: expected no TLS setting unless url is https://, got \"http://c:9200\"",
        );
        err(
            "url = \"https://c\"\nformat = \"json\"\nproxy_url = \"socks5://u:secret@proxy:1080\"\n",
            "test.toml: sinks[1].proxy_url: expected http://host:port (an HTTP proxy), got \"socks5://[credentials]@proxy:1080\"",
        );
        err(
            "url = \"https://c\"\nformat = \"json\"\nretry_on_status = [200]",
            "test.toml: sinks[1].retry_on_status[0]: expected an integer from 400 to 499, got 200",
        );
        err(
            "url = \"https://c\"\nformat = \"splunk_hec\"\n[sinks.streams.logins]\nindex = \"x\"",
            "test.toml: sinks[1].streams.logins: unknown stream \"logins\" (expected one of auditevents, itemusages, signinattempts, audit_v3)",
        );
    }

    #[test]
    fn proxy_credentials_are_kept_but_never_quoted() {
        let sink = http(
            "url = \"https://c\"\nformat = \"json\"\nproxy_url = \"http://u:secret@proxy:3128\"",
        );
        assert_eq!(
            sink.proxy_url.as_deref(),
            Some("http://u:secret@proxy:3128")
        );
    }
}
