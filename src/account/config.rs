//! An account's config: one `[[accounts]]` table, read and validated.
//!
//! `config::Config` reads the array and checks each entry's `name` (unique across accounts);
//! [`AccountConfig::from_raw`] validates the rest, every error at its key path. The keys take
//! the shared checks of [`crate::config`] (paths, integer ranges, the base URL, quoting).

use std::num::NonZeroU32;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::config::{
    ConfigErrorKind, Problem, base_url, file_path, int_in, join, parse_span, pem_file, quote,
};
use crate::governor::Limits;
use crate::stream::{ApiVersion, Region, Stream, V3Params};

/// One `[[accounts]]` entry: a bearer token and what to read with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountConfig {
    /// Unique name, 1 to 64 characters from `A-Za-z0-9_-`; used in logs, store keys and paths.
    pub name: String,
    /// Where the bearer token is read from (the token itself is never part of the config).
    pub token: TokenSource,
    /// The Events API base URL without a trailing slash, like `https://events.1password.com`;
    /// `None` to take it from `region` or, failing that, from the token's `aud` claim at start.
    pub base_url: Option<String>,
    /// `region`: one of the four documented hosts; never set together with `base_url`.
    pub region: Option<Region>,
    /// The CA certificates (PEM) to trust for this account's API host instead of the public
    /// roots ([`crate::net::tls`]).
    pub ca_file: Option<PathBuf>,
    /// The streams to read, non-empty, no duplicates, in the order configured; `None` to read
    /// the cursor streams the token's features allow (resolved at start).
    pub streams: Option<Vec<Stream>>,
    /// `api_version`: which cursor endpoints to read, `v2` (default) or `v1`.
    pub api_version: ApiVersion,
    /// Where a stream with no saved cursor starts; `None` lets the API choose.
    pub start_time: Option<StartTime>,
    /// `end_time`: where a bounded backfill ends; a stream that reaches it stops.
    pub end_time: Option<StartTime>,
    /// The query parameter names of the v3 beta endpoint (`audit_v3`).
    pub v3_params: V3Params,
    /// Events per page asked of the API, 1 to 1000.
    pub page_size: u16,
    /// How long a stream sleeps after a page without more events (`poll_interval_secs`).
    pub poll_interval: Duration,
    /// The timeout of one API request (`request_timeout_secs`).
    pub request_timeout: Duration,
    /// The largest API response accepted (`max_response_bytes`); `None`: derived from the
    /// page size asked for.
    pub max_response_bytes: Option<u64>,
    /// The account's request budget (`requests_per_minute`, `requests_per_hour`), lower than
    /// the documented one when other integrations share the account.
    pub limits: Limits,
    /// The longest wait between retries of a failing request (`retry_max_secs`).
    pub retry_max: Duration,
    /// How often a stream whose token the API refuses tries again (`unauthorized_retry_secs`).
    pub unauthorized_retry: Duration,
    /// What a stream does when the API rejects its saved cursor (`on_invalid_cursor`).
    pub on_invalid_cursor: OnInvalidCursor,
}

/// What to do when the API answers 400 to a saved cursor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnInvalidCursor {
    /// Keep the cursor, report the stream unhealthy, and retry it slowly: an operator decides.
    Stop,
    /// Restart the stream from the time of the newest event already fetched, with a warning:
    /// events at that time may arrive twice.
    Reset,
}

/// Where an account's bearer token comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenSource {
    /// Read the token from this file (for example a systemd credential), `token_file`.
    File(PathBuf),
    /// Read the token from the environment variable of this name, `token_env`.
    Env(String),
}

/// The `start_time` of an account: absolute, or relative to the moment the daemon starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartTime {
    /// An RFC 3339 time, like `2026-11-01T00:00:00Z`.
    At(OffsetDateTime),
    /// A time ago, like `-7d`, `-24h`, `-30m` or `-90s`.
    Ago(Duration),
}

impl StartTime {
    /// The absolute start time, taking `now` as the reference for [`StartTime::Ago`].
    ///
    /// A time ago too large to represent resolves to the earliest representable time.
    pub fn resolve(&self, now: OffsetDateTime) -> OffsetDateTime {
        match *self {
            StartTime::At(at) => at,
            StartTime::Ago(ago) => time::Duration::try_from(ago)
                .ok()
                .and_then(|ago| now.checked_sub(ago))
                .unwrap_or_else(|| time::PrimitiveDateTime::MIN.assume_offset(now.offset())),
        }
    }
}

/// Integers are read as `i64` so that `from_raw` can say which range was expected.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAccount {
    pub(crate) name: String,
    token_file: Option<String>,
    token_env: Option<String>,
    base_url: Option<String>,
    region: Option<String>,
    ca_file: Option<String>,
    streams: Option<Vec<String>>,
    api_version: Option<String>,
    start_time: Option<String>,
    end_time: Option<String>,
    v3_page_size_param: Option<String>,
    v3_page_token_param: Option<String>,
    #[serde(default = "default_page_size")]
    page_size: i64,
    #[serde(default = "default_poll_interval_secs")]
    poll_interval_secs: i64,
    #[serde(default = "default_request_timeout_secs")]
    request_timeout_secs: i64,
    /// No longer used: refused with a message saying what replaced it.
    max_pending_pages: Option<i64>,
    max_response_bytes: Option<i64>,
    #[serde(default = "default_requests_per_minute")]
    requests_per_minute: i64,
    #[serde(default = "default_requests_per_hour")]
    requests_per_hour: i64,
    #[serde(default = "default_retry_max_secs")]
    retry_max_secs: i64,
    #[serde(default = "default_unauthorized_retry_secs")]
    unauthorized_retry_secs: i64,
    #[serde(default = "default_on_invalid_cursor")]
    on_invalid_cursor: String,
}

fn default_page_size() -> i64 {
    1000
}

fn default_poll_interval_secs() -> i64 {
    10
}

fn default_request_timeout_secs() -> i64 {
    30
}

fn default_requests_per_minute() -> i64 {
    i64::from(Limits::DOCUMENTED.per_minute.get())
}

fn default_requests_per_hour() -> i64 {
    i64::from(Limits::DOCUMENTED.per_hour.get())
}

fn default_retry_max_secs() -> i64 {
    300
}

fn default_unauthorized_retry_secs() -> i64 {
    300
}

fn default_on_invalid_cursor() -> String {
    "stop".to_owned()
}

const PAGE_SIZE_MAX: i64 = 1000;
/// A day: longer would look like a stalled daemon, and keeps durations far from overflow.
const POLL_INTERVAL_SECS_MAX: i64 = 86_400;
/// An hour: a request that takes longer is stuck.
const REQUEST_TIMEOUT_SECS_MAX: i64 = 3_600;
/// A response bound's range: 64 KiB (an introspection answer) to 1 GiB.
const MAX_RESPONSE_BYTES_MIN: i64 = 64 << 10;
const MAX_RESPONSE_BYTES_MAX: i64 = 1 << 30;
/// The governor logs the time of every request in the longer window; this bounds that log.
pub(crate) const REQUESTS_PER_MINUTE_MAX: i64 = 10_000;
pub(crate) const REQUESTS_PER_HOUR_MAX: i64 = 100_000;
/// A day: retrying less often would look like a stalled daemon.
const RETRY_SECS_MAX: i64 = 86_400;

impl AccountConfig {
    pub(crate) fn from_raw(key: &str, raw: RawAccount) -> Result<AccountConfig, Problem> {
        let at = |name: &str| format!("{key}.{name}");
        let token = match (raw.token_file, raw.token_env) {
            (Some(file), None) => TokenSource::File(file_path(&at("token_file"), file)?),
            (None, Some(var)) => TokenSource::Env(env_var_name(&at("token_env"), var)?),
            (Some(_), Some(_)) => {
                return Err(Problem::invalid(
                    key,
                    "exactly one of token_file or token_env",
                    "both",
                ));
            }
            (None, None) => {
                return Err(Problem::invalid(
                    key,
                    "exactly one of token_file or token_env",
                    "neither",
                ));
            }
        };
        let base_url = raw
            .base_url
            .map(|url| base_url(&url).map_err(|kind| Problem::new(Some(at("base_url")), kind)))
            .transpose()?;
        let region = raw
            .region
            .map(|name| {
                Region::ALL
                    .into_iter()
                    .find(|region| region.as_str() == name)
                    .ok_or_else(|| {
                        Problem::new(
                            Some(at("region")),
                            ConfigErrorKind::UnknownValue {
                                what: "region".to_owned(),
                                value: name.clone(),
                                expected: Region::ALL
                                    .iter()
                                    .map(|region| region.as_str().to_owned())
                                    .collect(),
                            },
                        )
                    })
            })
            .transpose()?;
        if base_url.is_some() && region.is_some() {
            return Err(Problem::invalid(
                key,
                "at most one of base_url or region",
                "both",
            ));
        }
        let ca_file = raw
            .ca_file
            .map(|path| file_path(&at("ca_file"), path))
            .transpose()?;
        let streams = raw
            .streams
            .map(|names| streams(&at("streams"), &names))
            .transpose()?;
        let api_version = match raw.api_version.as_deref() {
            None | Some("v2") => ApiVersion::V2,
            Some("v1") => ApiVersion::V1,
            Some(other) => {
                return Err(Problem::new(
                    Some(at("api_version")),
                    ConfigErrorKind::UnknownValue {
                        what: "api_version".to_owned(),
                        value: other.to_owned(),
                        expected: vec!["v1".to_owned(), "v2".to_owned()],
                    },
                ));
            }
        };
        let point_in_time = |name: &str, text: Option<String>| {
            text.map(|text| {
                start_time(&text).ok_or_else(|| {
                    Problem::invalid(
                        &at(name),
                        "an RFC 3339 time (like 2026-11-01T00:00:00Z) or a time ago (like -7d, -24h, -30m or -90s)",
                        &quote(&text),
                    )
                })
            })
            .transpose()
        };
        let start_time = point_in_time("start_time", raw.start_time)?;
        let end_time = point_in_time("end_time", raw.end_time)?;
        if let (Some(start), Some(end)) = (&start_time, &end_time) {
            // Resolved against one instant, so relative and absolute times compare fairly.
            let now = OffsetDateTime::now_utc();
            if end.resolve(now) <= start.resolve(now) {
                return Err(Problem::invalid(
                    &at("end_time"),
                    "a time after start_time",
                    &quote(&describe_point(end)),
                ));
            }
        }
        let mut v3_params = V3Params::default();
        for (name, value, slot) in [
            (
                "v3_page_size_param",
                raw.v3_page_size_param,
                &mut v3_params.page_size,
            ),
            (
                "v3_page_token_param",
                raw.v3_page_token_param,
                &mut v3_params.page_token,
            ),
        ] {
            if let Some(value) = value {
                *slot = query_param_name(&at(name), value)?;
            }
        }
        let page_size = int_in(&at("page_size"), raw.page_size, 1, PAGE_SIZE_MAX)?;
        let poll_interval_secs = int_in(
            &at("poll_interval_secs"),
            raw.poll_interval_secs,
            1,
            POLL_INTERVAL_SECS_MAX,
        )?;
        let request_timeout_secs = int_in(
            &at("request_timeout_secs"),
            raw.request_timeout_secs,
            1,
            REQUEST_TIMEOUT_SECS_MAX,
        )?;
        if raw.max_pending_pages.is_some() {
            return Err(Problem::new(
                Some(at("max_pending_pages")),
                ConfigErrorKind::Other(
                    "no longer used: the outbox is bounded by its bytes on disk, \
                     state.max_outbox_bytes (default 1 GiB); remove this key"
                        .to_owned(),
                ),
            ));
        }
        let max_response_bytes = raw
            .max_response_bytes
            .map(|bytes| {
                int_in(
                    &at("max_response_bytes"),
                    bytes,
                    MAX_RESPONSE_BYTES_MIN,
                    MAX_RESPONSE_BYTES_MAX,
                )
            })
            .transpose()?
            .map(i64::unsigned_abs);
        let requests_per_minute = int_in(
            &at("requests_per_minute"),
            raw.requests_per_minute,
            1,
            REQUESTS_PER_MINUTE_MAX,
        )?;
        let requests_per_hour = int_in(
            &at("requests_per_hour"),
            raw.requests_per_hour,
            1,
            REQUESTS_PER_HOUR_MAX,
        )?;
        let retry_max_secs = int_in(&at("retry_max_secs"), raw.retry_max_secs, 1, RETRY_SECS_MAX)?;
        let unauthorized_retry_secs = int_in(
            &at("unauthorized_retry_secs"),
            raw.unauthorized_retry_secs,
            1,
            RETRY_SECS_MAX,
        )?;
        let on_invalid_cursor = match raw.on_invalid_cursor.as_str() {
            "stop" => OnInvalidCursor::Stop,
            "reset" => OnInvalidCursor::Reset,
            other => {
                return Err(Problem::invalid(
                    &at("on_invalid_cursor"),
                    "\"stop\" or \"reset\"",
                    &quote(other),
                ));
            }
        };
        let count = |n: i64| {
            NonZeroU32::new(u32::try_from(n).unwrap_or(0)).expect("checked to be at least 1")
        };
        Ok(AccountConfig {
            name: raw.name,
            token,
            base_url,
            region,
            ca_file,
            streams,
            api_version,
            start_time,
            end_time,
            v3_params,
            page_size: u16::try_from(page_size).expect("page_size was checked to be at most 1000"),
            poll_interval: Duration::from_secs(poll_interval_secs.unsigned_abs()),
            request_timeout: Duration::from_secs(request_timeout_secs.unsigned_abs()),
            max_response_bytes,
            limits: Limits {
                per_minute: count(requests_per_minute),
                per_hour: count(requests_per_hour),
            },
            retry_max: Duration::from_secs(retry_max_secs.unsigned_abs()),
            unauthorized_retry: Duration::from_secs(unauthorized_retry_secs.unsigned_abs()),
            on_invalid_cursor,
        })
    }
}

impl AccountConfig {
    /// Reads the CA file the account names, as the client will (for `config::load` only).
    pub(crate) fn check_files(&self, key: &str) -> Result<(), Problem> {
        if let Some(path) = &self.ca_file {
            pem_file(&join(key, "ca_file"), path, crate::pem::read_roots)?;
        }
        Ok(())
    }
}

/// A start or end time as the user could have written it, for error messages.
fn describe_point(point: &StartTime) -> String {
    match point {
        StartTime::At(at) => at.format(&Rfc3339).unwrap_or_default(),
        StartTime::Ago(ago) => format!("-{}s", ago.as_secs()),
    }
}

/// A query parameter name: 1 to 64 characters from `A-Za-z0-9_.-`.
fn query_param_name(key: &str, name: String) -> Result<String, Problem> {
    let valid = (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'_' | b'-' | b'.'));
    if valid {
        Ok(name)
    } else {
        Err(Problem::invalid(
            key,
            "a query parameter name (1 to 64 characters from A-Z, a-z, 0-9, _, - and .)",
            &quote(&name),
        ))
    }
}

pub(crate) fn env_var_name(key: &str, name: String) -> Result<String, Problem> {
    let valid = name
        .bytes()
        .next()
        .is_some_and(|first| first.is_ascii_alphabetic() || first == b'_')
        && name
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || byte == b'_');
    if valid {
        Ok(name)
    } else {
        Err(Problem::invalid(
            key,
            "an environment variable name (A-Z, a-z, 0-9 and _, not starting with a digit)",
            &quote(&name),
        ))
    }
}

fn streams(key: &str, names: &[String]) -> Result<Vec<Stream>, Problem> {
    if names.is_empty() {
        return Err(Problem::invalid(
            key,
            "at least one stream",
            "an empty array",
        ));
    }
    let mut streams: Vec<Stream> = Vec::with_capacity(names.len());
    for (index, name) in names.iter().enumerate() {
        let element_key = format!("{key}[{index}]");
        let stream: Stream = name.parse().map_err(|_| {
            Problem::new(
                Some(element_key.clone()),
                ConfigErrorKind::UnknownValue {
                    what: "stream".to_owned(),
                    value: name.clone(),
                    expected: Stream::KNOWN
                        .iter()
                        .map(|stream| stream.as_str().to_owned())
                        .collect(),
                },
            )
        })?;
        if let Some(first) = streams.iter().position(|seen| *seen == stream) {
            return Err(Problem::new(
                Some(element_key),
                ConfigErrorKind::Duplicate {
                    what: "stream".to_owned(),
                    value: name.clone(),
                    first: format!("{key}[{first}]"),
                },
            ));
        }
        streams.push(stream);
    }
    Ok(streams)
}

/// Parses `2026-11-01T00:00:00Z` (RFC 3339) or `-7d`, `-24h`, `-30m`, `-90s` (a time ago).
fn start_time(text: &str) -> Option<StartTime> {
    match text.strip_prefix('-') {
        Some(ago) => parse_span(ago).map(StartTime::Ago),
        None => OffsetDateTime::parse(text, &Rfc3339)
            .ok()
            .map(StartTime::At),
    }
}

impl StartTime {
    /// `2026-11-01T00:00:00Z` (RFC 3339) or `-7d`, `-24h`, `-30m`, `-90s` (a time ago), as
    /// `start_time` takes it; `None` for anything else.
    pub fn parse(text: &str) -> Option<StartTime> {
        start_time(text)
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::time::Duration;

    use time::macros::datetime;

    use super::*;
    use crate::config::testing::*;

    #[test]
    fn defaults() {
        let config = parse(VALID).unwrap();
        assert_eq!(
            config.accounts,
            vec![AccountConfig {
                name: "acme".to_owned(),
                token: TokenSource::File(PathBuf::from("/run/token")),
                base_url: Some("https://events.1password.com".to_owned()),
                region: None,
                ca_file: None,
                streams: None,
                api_version: ApiVersion::V2,
                start_time: None,
                end_time: None,
                v3_params: V3Params::default(),
                page_size: 1000,
                poll_interval: Duration::from_secs(10),
                request_timeout: Duration::from_secs(30),
                max_response_bytes: None,
                limits: Limits::DOCUMENTED,
                retry_max: Duration::from_secs(300),
                unauthorized_retry: Duration::from_secs(300),
                on_invalid_cursor: OnInvalidCursor::Stop,
            }]
        );
    }

    #[test]
    fn every_account_key() {
        let toml = edit(
            "token_file = \"/run/token\"\nbase_url = \"https://events.1password.com\"",
            r#"token_env = "OP_TOKEN"
base_url = "https://events.ent.1password.com:8443/"
ca_file = "/etc/ssl/ca.pem"
streams = ["signinattempts", "audit_v3"]
api_version = "v1"
start_time = 2026-11-01T00:00:00Z
end_time = "2026-11-02T00:00:00+01:00"
v3_page_size_param = "page_size"
v3_page_token_param = "next_page_token"
page_size = 1
poll_interval_secs = 86400
request_timeout_secs = 3600
max_response_bytes = 100000"#,
        );
        let account = parse(&toml).unwrap().accounts.remove(0);
        assert_eq!(account.token, TokenSource::Env("OP_TOKEN".to_owned()));
        assert_eq!(
            account.base_url.as_deref(),
            Some("https://events.ent.1password.com:8443")
        );
        assert_eq!(account.ca_file, Some(PathBuf::from("/etc/ssl/ca.pem")));
        assert_eq!(
            account.streams,
            Some(vec![Stream::SignInAttempts, Stream::AuditV3])
        );
        assert_eq!(
            account.start_time,
            Some(StartTime::At(datetime!(2026-11-01 00:00 UTC)))
        );
        assert_eq!(account.api_version, ApiVersion::V1);
        assert_eq!(
            account.end_time,
            Some(StartTime::At(datetime!(2026-11-01 23:00 UTC)))
        );
        assert_eq!(
            account.v3_params,
            V3Params {
                page_size: "page_size".to_owned(),
                page_token: "next_page_token".to_owned()
            }
        );
        assert_eq!(account.page_size, 1);
        assert_eq!(account.poll_interval, Duration::from_secs(86_400));
        assert_eq!(account.request_timeout, Duration::from_secs(3_600));
        assert_eq!(account.max_response_bytes, Some(100_000));
    }

    #[test]
    fn start_time_resolution() {
        let now = datetime!(2026-11-03 12:00 UTC);
        for (text, expected) in [
            ("-2d", datetime!(2026-11-01 12:00 UTC)),
            ("-24h", datetime!(2026-11-02 12:00 UTC)),
            ("-30m", datetime!(2026-11-03 11:30 UTC)),
            ("-90s", datetime!(2026-11-03 11:58:30 UTC)),
            ("-0s", now),
            ("2026-11-01T00:00:00Z", datetime!(2026-11-01 00:00 UTC)),
            ("2026-11-01T02:00:00+02:00", datetime!(2026-11-01 00:00 UTC)),
            // 0 to 9 fractional digits, any offset, lowercase separators.
            (
                "2026-11-01T00:00:00.5Z",
                datetime!(2026-11-01 00:00:00.5 UTC),
            ),
            (
                "2026-10-31T20:30:00.123456789-03:30",
                datetime!(2026-11-01 00:00:00.123456789 UTC),
            ),
            (
                "2026-11-01T05:45:00.000+05:45",
                datetime!(2026-11-01 00:00 UTC),
            ),
            (
                "2026-11-01t00:00:00.1234z",
                datetime!(2026-11-01 00:00:00.1234 UTC),
            ),
        ] {
            let start = start_time(text).unwrap_or_else(|| panic!("{text} does not parse"));
            assert_eq!(start.resolve(now), expected, "{text}");
        }
        // Too far back to represent: the earliest time, not a panic.
        let far = start_time("-99999999999999d").unwrap();
        assert_eq!(far.resolve(now), time::PrimitiveDateTime::MIN.assume_utc());
        for bad in [
            "7d",
            "-7w",
            "-d",
            "--7d",
            "-7.5h",
            "-1e3s",
            "yesterday",
            "2026-11-01",
            "-99999999999999999d",
        ] {
            assert_eq!(start_time(bad), None, "{bad}");
        }
    }

    #[test]
    fn resilience_keys_default_to_the_documented_limits_and_stop() {
        let config = parse(VALID).unwrap();
        let account = &config.accounts[0];
        assert_eq!(account.limits, Limits::DOCUMENTED);
        assert_eq!(account.retry_max, Duration::from_secs(300));
        assert_eq!(account.unauthorized_retry, Duration::from_secs(300));
        assert_eq!(account.on_invalid_cursor, OnInvalidCursor::Stop);

        let config = parse(&edit(
            "name = \"acme\"",
            "name = \"acme\"\nrequests_per_minute = 60\nrequests_per_hour = 3000\n\
             retry_max_secs = 30\nunauthorized_retry_secs = 5\non_invalid_cursor = \"reset\"",
        ))
        .unwrap();
        let account = &config.accounts[0];
        assert_eq!(account.limits.per_minute.get(), 60);
        assert_eq!(account.limits.per_hour.get(), 3000);
        assert_eq!(account.retry_max, Duration::from_secs(30));
        assert_eq!(account.unauthorized_retry, Duration::from_secs(5));
        assert_eq!(account.on_invalid_cursor, OnInvalidCursor::Reset);
    }

    #[test]
    fn invalid_resilience_keys() {
        let with = |line: &str| edit("name = \"acme\"", &format!("name = \"acme\"\n{line}"));
        check_err(
            &with("requests_per_minute = 0"),
            "test.toml: accounts[0].requests_per_minute: expected an integer from 1 to 10000, got 0",
        );
        check_err(
            &with("requests_per_hour = 200000"),
            "test.toml: accounts[0].requests_per_hour: expected an integer from 1 to 100000, got 200000",
        );
        check_err(
            &with("retry_max_secs = 0"),
            "test.toml: accounts[0].retry_max_secs: expected an integer from 1 to 86400, got 0",
        );
        check_err(
            &with("unauthorized_retry_secs = -5"),
            "test.toml: accounts[0].unauthorized_retry_secs: expected an integer from 1 to 86400, got -5",
        );
        check_err(
            &with("on_invalid_cursor = \"skip\""),
            "test.toml: accounts[0].on_invalid_cursor: expected \"stop\" or \"reset\", got \"skip\"",
        );
        check_err(
            &with("on_invalid_cursor = true"),
            "test.toml: accounts[0].on_invalid_cursor: expected a string, got true",
        );
    }

    #[test]
    fn out_of_range_numbers() {
        let with = |line: &str| edit("name = \"acme\"", &format!("name = \"acme\"\n{line}"));
        check_err(
            &with("page_size = 5000"),
            "test.toml: accounts[0].page_size: expected an integer from 1 to 1000, got 5000",
        );
        check_err(
            &with("page_size = 0"),
            "test.toml: accounts[0].page_size: expected an integer from 1 to 1000, got 0",
        );
        check_err(
            &with("poll_interval_secs = 0"),
            "test.toml: accounts[0].poll_interval_secs: expected an integer from 1 to 86400, got 0",
        );
        check_err(
            &with("request_timeout_secs = -5"),
            "test.toml: accounts[0].request_timeout_secs: expected an integer from 1 to 3600, got -5",
        );
        check_err(
            &with("max_pending_pages = 100"),
            "test.toml: accounts[0].max_pending_pages: no longer used: the outbox is bounded by its \
             bytes on disk, state.max_outbox_bytes (default 1 GiB); remove this key",
        );
        check_err(
            &with("max_response_bytes = 1000"),
            "test.toml: accounts[0].max_response_bytes: expected an integer from 65536 to 1073741824, got 1000",
        );
    }

    #[test]
    fn base_url_is_optional_and_region_names_a_host() {
        let without = edit("base_url = \"https://events.1password.com\"\n", "");
        let account = parse(&without).unwrap().accounts.remove(0);
        assert_eq!((account.base_url, account.region), (None, None));
        for region in Region::ALL {
            let toml = edit(
                "base_url = \"https://events.1password.com\"",
                &format!("region = \"{}\"", region.as_str()),
            );
            assert_eq!(parse(&toml).unwrap().accounts[0].region, Some(region));
        }
        check_err(
            &edit(
                "base_url = \"https://events.1password.com\"",
                "region = \"uk\"",
            ),
            "test.toml: accounts[0].region: unknown region \"uk\" (expected one of us, ca, eu, ent)",
        );
        check_err(
            &edit("name = \"acme\"", "name = \"acme\"\nregion = \"eu\""),
            "test.toml: accounts[0]: expected at most one of base_url or region, got both",
        );
    }

    #[test]
    fn api_versions_and_v3_parameter_names() {
        let with = |line: &str| edit("name = \"acme\"", &format!("name = \"acme\"\n{line}"));
        assert_eq!(
            parse(&with("api_version = \"v2\"")).unwrap().accounts[0].api_version,
            ApiVersion::V2
        );
        check_err(
            &with("api_version = \"v3\""),
            "test.toml: accounts[0].api_version: unknown api_version \"v3\" (expected one of v1, v2)",
        );
        check_err(
            &with("v3_page_token_param = \"page token\""),
            "test.toml: accounts[0].v3_page_token_param: expected a query parameter name (1 to 64 characters \
             from A-Z, a-z, 0-9, _, - and .), got \"page token\"",
        );
    }

    #[test]
    fn end_time_must_follow_start_time() {
        let with = |lines: &str| edit("name = \"acme\"", &format!("name = \"acme\"\n{lines}"));
        let account = parse(&with("start_time = \"-7d\"\nend_time = \"-1d\""))
            .unwrap()
            .accounts
            .remove(0);
        assert_eq!(
            account.end_time,
            Some(StartTime::Ago(Duration::from_secs(86_400)))
        );
        check_err(
            &with("start_time = \"-1d\"\nend_time = \"-7d\""),
            "test.toml: accounts[0].end_time: expected a time after start_time, got \"-604800s\"",
        );
        check_err(
            &with("start_time = 2026-11-02T00:00:00Z\nend_time = 2026-11-01T00:00:00Z"),
            "test.toml: accounts[0].end_time: expected a time after start_time, got \"2026-11-01T00:00:00Z\"",
        );
        check_err(
            &with("end_time = \"soon\""),
            "test.toml: accounts[0].end_time: expected an RFC 3339 time (like 2026-11-01T00:00:00Z) or a time \
             ago (like -7d, -24h, -30m or -90s), got \"soon\"",
        );
    }

    #[test]
    fn bad_start_time() {
        check_err(
            &edit("name = \"acme\"", "name = \"acme\"\nstart_time = \"7d\""),
            "test.toml: accounts[0].start_time: expected an RFC 3339 time (like 2026-11-01T00:00:00Z) or a time \
             ago (like -7d, -24h, -30m or -90s), got \"7d\"",
        );
        // A TOML local date-time has no offset, so it is not RFC 3339.
        check_err(
            &edit(
                "name = \"acme\"",
                "name = \"acme\"\nstart_time = 2026-11-01T00:00:00",
            ),
            "test.toml: accounts[0].start_time: expected an RFC 3339 time (like 2026-11-01T00:00:00Z) or a time \
             ago (like -7d, -24h, -30m or -90s), got \"2026-11-01T00:00:00\"",
        );
    }

    #[test]
    fn bad_streams() {
        let with = |streams: &str| {
            edit(
                "name = \"acme\"",
                &format!("name = \"acme\"\nstreams = {streams}"),
            )
        };
        check_err(
            &with("[\"auditevents\", \"audit\"]"),
            "test.toml: accounts[0].streams[1]: unknown stream \"audit\" (expected one of auditevents, itemusages, \
             signinattempts, audit_v3)",
        );
        check_err(
            &with("[\"itemusages\", \"auditevents\", \"itemusages\"]"),
            "test.toml: accounts[0].streams[2]: duplicate stream \"itemusages\" (already at accounts[0].streams[0])",
        );
        check_err(
            &with("[]"),
            "test.toml: accounts[0].streams: expected at least one stream, got an empty array",
        );
    }

    #[test]
    fn token_sources() {
        check_err(
            &edit(
                "token_file = \"/run/token\"",
                "token_file = \"/run/token\"\ntoken_env = \"OP_TOKEN\"",
            ),
            "test.toml: accounts[0]: expected exactly one of token_file or token_env, got both",
        );
        check_err(
            &edit("token_file = \"/run/token\"\n", ""),
            "test.toml: accounts[0]: expected exactly one of token_file or token_env, got neither",
        );
        check_err(
            &edit("token_file = \"/run/token\"", "token_env = \"OP-TOKEN\""),
            "test.toml: accounts[0].token_env: expected an environment variable name (A-Z, a-z, 0-9 and _, not \
             starting with a digit), got \"OP-TOKEN\"",
        );
        check_err(
            &edit("token_file = \"/run/token\"", "token_file = \"\""),
            "test.toml: accounts[0].token_file: expected a non-empty path, got \"\"",
        );
    }
}
