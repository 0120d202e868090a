//! The config file: TOML plus `OP_EVENTS_FORWARDER__…` environment overrides, read in two phases.
//!
//! Phase one turns text into raw structs: the `toml` crate parses the text (keeping positions
//! for errors) into a tree of `toml::Value`s, the environment overrides are patched into that
//! tree as strings, and serde reads the tree into the raw structs (`deny_unknown_fields`,
//! defaults from named functions), `serde_path_to_error` giving the key path of whatever it
//! refuses. A string from an override is read as an integer, a boolean or a comma-separated
//! array when its key takes one.
//! Phase two is pure validation: ranges, URLs, names, paths, templates, duplicates. Each
//! `[[sinks]]` table's `type` and `name` are read here, and the rest of the table goes to that
//! sink type's parser, which reads it the same way.
//! Phase three, in [`load`] only, looks at the files the config names: CA files, a client
//! certificate and key are read as the daemon reads them, and the state file and the file sinks'
//! files must not be directories, so that `check-config` refuses what `run` would.
//!
//! Every error names the file, the key path (like `accounts[0].page_size`), the environment
//! variable when the value came from one, what was expected and what was found.
//! The config holds no secret: only the path of the token file or the name of its variable.

use std::collections::HashMap;
use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde::de;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::governor::Limits;
use crate::stream::{ApiVersion, Region, Stream, V3Params};

/// The validated config of the whole daemon.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Where the daemon keeps cursors and the outbox.
    pub state: StateConfig,
    /// The 1Password accounts to read, at least one, names unique.
    pub accounts: Vec<AccountConfig>,
    /// Where events go, at least one, names unique.
    pub sinks: Vec<SinkConfig>,
}

/// The `[state]` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateConfig {
    /// The SQLite database file (`state.path`).
    pub path: PathBuf,
    /// Backpressure: every poller stops fetching while the state database uses this many
    /// bytes on disk (`state.max_outbox_bytes`), so a sink down for hours holds back nobody
    /// else until then.
    pub max_outbox_bytes: u64,
}

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
    /// An extra CA certificate (PEM) to trust for this account's API host.
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

/// One `[[sinks]]` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SinkConfig {
    /// Unique name, 1 to 64 characters from `A-Za-z0-9_-`; used in logs, store keys and metrics.
    pub name: String,
    /// The kind of sink (`type`) and its settings.
    pub kind: SinkKind,
}

/// The kinds of sink, one per `type`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SinkKind {
    /// `type = "file"`: NDJSON files.
    File(FileSinkConfig),
    /// `type = "syslog"`: RFC 5424 or RFC 3164 messages over UDP, TCP or TLS.
    Syslog(Box<SyslogSinkConfig>),
}

/// The settings of a syslog sink (`type = "syslog"`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyslogSinkConfig {
    /// The receiver as written (`host:port`, `[v6]:port`), for logs and errors.
    pub address: String,
    /// The host part of `address`: a name, an IPv4 or an IPv6 address (without brackets).
    pub host: String,
    /// The port part of `address`, 1 to 65535.
    pub port: u16,
    /// `transport`: how messages travel.
    pub transport: SyslogTransport,
    /// `format`: the message format.
    pub format: SyslogFormat,
    /// `framing`: how messages are delimited on TCP and TLS (RFC 6587); unused for UDP.
    pub framing: SyslogFraming,
    /// `facility`, 0 to 23 (default 10, authpriv).
    pub facility: u8,
    /// `severity`, 0 to 7 (default 6, info).
    pub severity: u8,
    /// `stream_severity`: a severity per stream, overriding `severity`.
    pub stream_severity: Vec<(Stream, u8)>,
    /// `failed_signin_severity`: the severity of sign-in attempts whose category is not
    /// `success` (overrides `severity` and `stream_severity` for those events).
    pub failed_signin_severity: Option<u8>,
    /// `hostname`: the HOSTNAME field; `None` means the machine's name.
    pub hostname: Option<String>,
    /// `app_name`: the APP-NAME field (the TAG of RFC 3164).
    pub app_name: String,
    /// `procid`: the PROCID field; `None` means the process id.
    pub procid: Option<String>,
    /// `structured_data = true`: the SD-ID of the element with account, stream and uuid.
    pub sd_id: Option<String>,
    /// `bom`: a UTF-8 byte order mark before MSG (RFC 5424 only).
    pub bom: bool,
    /// `max_message_bytes`: the largest message sent; larger ones are rejected, never cut.
    /// Default 8192 for UDP, no limit for TCP and TLS.
    pub max_message_bytes: Option<usize>,
    /// `timeout_secs`: the limit of one connect, handshake or batch write.
    pub timeout: Duration,
    /// TLS settings; used only with `transport = "tls"`.
    pub tls: SyslogTlsConfig,
}

/// The `transport` of a syslog sink.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyslogTransport {
    /// One message per datagram.
    Udp,
    /// A persistent TCP connection.
    Tcp,
    /// A persistent TLS connection (RFC 5425).
    Tls,
    /// A persistent RELP session: every message acknowledged by the receiver.
    Relp,
}

/// The `format` of a syslog sink.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyslogFormat {
    /// RFC 5424, the structured format.
    Rfc5424,
    /// RFC 3164, the legacy BSD format.
    Rfc3164,
}

/// The `framing` of a syslog sink on TCP and TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyslogFraming {
    /// RFC 6587 octet counting: `LEN SP MSG`.
    OctetCounting,
    /// One message per line (line breaks between JSON tokens are dropped).
    Lf,
}

/// The TLS settings of a syslog sink.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyslogTlsConfig {
    /// `ca_file`: the CA certificates (PEM) to trust instead of the built-in roots.
    pub ca_file: Option<PathBuf>,
    /// `server_name`: the name to verify the certificate against instead of the address's host.
    pub server_name: Option<String>,
    /// `client_cert` and `client_key`: a certificate chain and key (PEM) for mutual TLS.
    pub client_auth: Option<(PathBuf, PathBuf)>,
    /// `tls_insecure_skip_verify`: accept any server certificate (logged loudly).
    pub insecure_skip_verify: bool,
}

/// The syslog facilities by name, in numeric order (RFC 5424 table 1, with the names rsyslog
/// and syslog(3) use).
pub const SYSLOG_FACILITIES: [&str; 24] = [
    "kern",
    "user",
    "mail",
    "daemon",
    "auth",
    "syslog",
    "lpr",
    "news",
    "uucp",
    "cron",
    "authpriv",
    "ftp",
    "ntp",
    "security",
    "console",
    "solaris-cron",
    "local0",
    "local1",
    "local2",
    "local3",
    "local4",
    "local5",
    "local6",
    "local7",
];

/// The syslog severities by name, in numeric order (RFC 5424 table 2).
pub const SYSLOG_SEVERITIES: [&str; 8] = [
    "emerg", "alert", "crit", "err", "warning", "notice", "info", "debug",
];

/// The settings of a file sink.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileSinkConfig {
    /// The path template; `{stream}` and `{account}` are its only placeholders (validated).
    pub path: String,
}

impl FileSinkConfig {
    /// The file for one account's stream: the template with its placeholders filled in.
    pub fn path_for(&self, account: &str, stream: Stream) -> PathBuf {
        PathBuf::from(
            self.path
                .replace("{stream}", stream.as_str())
                .replace("{account}", account),
        )
    }
}

/// Why the config could not be loaded: where, which key, and what was wrong with it.
///
/// Displays as `<origin>: <key path>: <problem>`, with ` (from <VARIABLE>)` after the key path
/// when the value came from an environment override, for example
/// `demo.toml: accounts[0].page_size: expected an integer from 1 to 1000, got 5000`.
// Boxed: a `Result` carrying it stays small.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError(Box<ErrorDetail>);

#[derive(Debug, Clone, PartialEq, Eq)]
struct ErrorDetail {
    origin: String,
    key: Option<String>,
    env_var: Option<String>,
    kind: ConfigErrorKind,
}

impl ConfigError {
    fn new(
        origin: &str,
        key: Option<String>,
        env_var: Option<String>,
        kind: ConfigErrorKind,
    ) -> ConfigError {
        ConfigError(Box::new(ErrorDetail {
            origin: origin.to_owned(),
            key,
            env_var,
            kind,
        }))
    }

    /// The file, as given to [`load`], or the origin given to [`from_toml_str`].
    pub fn origin(&self) -> &str {
        &self.0.origin
    }

    /// The key path, like `accounts[0].page_size`; `None` for problems of the whole file.
    pub fn key(&self) -> Option<&str> {
        self.0.key.as_deref()
    }

    /// The environment variable the offending value came from, if it came from one.
    pub fn env_var(&self) -> Option<&str> {
        self.0.env_var.as_deref()
    }

    /// What was wrong.
    pub fn kind(&self) -> &ConfigErrorKind {
        &self.0.kind
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ErrorDetail {
            origin,
            key,
            env_var,
            kind,
        } = &*self.0;
        write!(f, "{origin}: ")?;
        match (key, env_var) {
            (Some(key), Some(var)) => write!(f, "{key} (from {var}): ")?,
            (Some(key), None) => write!(f, "{key}: ")?,
            (None, Some(var)) => write!(f, "{var}: ")?,
            (None, None) => {}
        }
        write!(f, "{kind}")
    }
}

/// What was wrong with a config, without saying where (see [`ConfigError`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigErrorKind {
    /// The file could not be read.
    Unreadable(String),
    /// The file is not valid TOML; the position is 1-based when the parser gave one.
    Syntax {
        /// The line and column of the problem.
        position: Option<(usize, usize)>,
        /// The parser's description of the problem.
        message: String,
    },
    /// A key that the table does not take.
    UnknownKey {
        /// The keys the table takes.
        expected: Vec<String>,
    },
    /// A required key is absent.
    Missing {
        /// Why it is required, when that depends on another key.
        note: Option<String>,
    },
    /// A value of the wrong type, out of range or malformed.
    Invalid {
        /// What would have been accepted.
        expected: String,
        /// What was found.
        got: String,
    },
    /// A value that is not one of a closed set (streams, sink types, placeholders).
    UnknownValue {
        /// What the value names, like `stream`.
        what: String,
        /// The value found.
        value: String,
        /// The values accepted.
        expected: Vec<String>,
    },
    /// A value that must be unique appears twice.
    Duplicate {
        /// What the value names, like `account name`.
        what: String,
        /// The value found twice.
        value: String,
        /// The key path of its first occurrence.
        first: String,
    },
    /// An environment override names an array entry that the file does not have.
    NoSuchEntry {
        /// How many entries the array has.
        len: usize,
    },
    /// A file the config names cannot serve: missing, unreadable, a directory, or without what
    /// the key needs (only [`load`] looks at files).
    File {
        /// The file, as configured (a file sink's with its placeholders filled in).
        path: PathBuf,
        /// What is wrong with it.
        problem: String,
    },
    /// Any other deserialization problem.
    Other(String),
}

impl fmt::Display for ConfigErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigErrorKind::Unreadable(reason) => write!(f, "cannot read the file: {reason}"),
            ConfigErrorKind::Syntax {
                position: Some((line, column)),
                message,
            } => write!(f, "invalid TOML at line {line}, column {column}: {message}"),
            ConfigErrorKind::Syntax {
                position: None,
                message,
            } => write!(f, "invalid TOML: {message}"),
            ConfigErrorKind::UnknownKey { expected } if expected.is_empty() => {
                write!(f, "unknown key (this table takes no keys)")
            }
            ConfigErrorKind::UnknownKey { expected } => {
                write!(f, "unknown key (expected one of {})", expected.join(", "))
            }
            ConfigErrorKind::Missing { note: None } => write!(f, "missing"),
            ConfigErrorKind::Missing { note: Some(note) } => write!(f, "missing ({note})"),
            ConfigErrorKind::Invalid { expected, got } => {
                write!(f, "expected {expected}, got {got}")
            }
            ConfigErrorKind::UnknownValue {
                what,
                value,
                expected,
            } => write!(
                f,
                "unknown {what} {} (expected one of {})",
                quote(value),
                expected.join(", ")
            ),
            ConfigErrorKind::Duplicate { what, value, first } => {
                write!(f, "duplicate {what} {} (already at {first})", quote(value))
            }
            ConfigErrorKind::NoSuchEntry { len } => write!(
                f,
                "no such entry (there {}; an override can change an entry, not add one)",
                if *len == 1 {
                    "is 1".to_owned()
                } else {
                    format!("are {len}")
                }
            ),
            ConfigErrorKind::File { path, problem } => {
                write!(f, "{}: {problem}", quote(&path.to_string_lossy()))
            }
            ConfigErrorKind::Other(message) => write!(f, "{message}"),
        }
    }
}

/// The prefix of environment overrides; `__` separates the levels below it.
pub const ENV_PREFIX: &str = "OP_EVENTS_FORWARDER__";

/// Reads the config file at `path`, applies the environment's overrides, validates the result and
/// checks the files it names, as far as that is possible before the start: CA, client certificate
/// and key files are read, and the state file and file sinks' files must not be directories.
///
/// # Errors
///
/// Returns a [`ConfigError`] naming the file, the key path and the problem when the file cannot be
/// read, is not valid TOML, does not describe a valid config, or names a file that cannot serve.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let origin = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|error| {
        ConfigError::new(
            &origin,
            None,
            None,
            ConfigErrorKind::Unreadable(error.to_string()),
        )
    })?;
    // Only our own variables are looked at (a name that is not UTF-8 cannot be one of them).
    let mut env = Vec::new();
    for (name, value) in std::env::vars_os() {
        let Some(name) = name.to_str().filter(|name| name.starts_with(ENV_PREFIX)) else {
            continue;
        };
        let Some(value) = value.to_str() else {
            let kind = ConfigErrorKind::Invalid {
                expected: "a UTF-8 value".to_owned(),
                got: "bytes that are not UTF-8".to_owned(),
            };
            return Err(ConfigError::new(&origin, None, Some(name.to_owned()), kind));
        };
        env.push((name.to_owned(), value.to_owned()));
    }
    let (config, overrides) = parse_and_validate(&origin, &text, &env)?;
    check_files(&config).map_err(|problem| problem.into_error(&origin, &overrides))?;
    Ok(config)
}

/// Parses `toml`, applies the overrides found in `env` and validates the result; pure.
///
/// `origin` names the text in errors (usually the file path).
/// Of `env`, only the variables starting with [`ENV_PREFIX`] count: each sets one key, the levels
/// of the key path separated by `__` and array entries named by their index, like
/// `OP_EVENTS_FORWARDER__ACCOUNTS__0__POLL_INTERVAL_SECS=5`.
///
/// # Errors
///
/// Returns a [`ConfigError`] naming the key path and the problem for invalid TOML, a bad override,
/// or a config that does not validate.
pub fn from_toml_str(
    origin: &str,
    toml: &str,
    env: &[(String, String)],
) -> Result<Config, ConfigError> {
    parse_and_validate(origin, toml, env).map(|(config, _)| config)
}

/// [`from_toml_str`], also returning the overrides applied (to name them in later errors).
fn parse_and_validate(
    origin: &str,
    toml: &str,
    env: &[(String, String)],
) -> Result<(Config, Vec<Override>), ConfigError> {
    let error = |problem: Problem, overrides: &[Override]| problem.into_error(origin, overrides);
    let mut tree = parse_toml(toml).map_err(|problem| error(problem, &[]))?;
    let overrides = apply_env_overrides(&mut tree, env).map_err(|problem| error(problem, &[]))?;
    // An override's string is read as the type its key takes when the parse asks for one: each
    // pass retypes one override or ends, so there are at most one more passes than overrides.
    loop {
        let problem = match Config::from_tree(&tree) {
            Ok(config) => return Ok((config, overrides)),
            Err(problem) => problem,
        };
        let target = overrides
            .iter()
            .find(|o| problem.key.as_deref() == Some(o.path.as_str()));
        match (problem.wants, target) {
            (Some(wants), Some(target)) if retype(&mut tree, target, wants) => {}
            _ => return Err(error(problem, &overrides)),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Phase one: the raw config, as serde reads it.

/// The file as written, before validation.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    state: RawState,
    #[serde(default)]
    accounts: Vec<RawAccount>,
    /// Read by [`SinkKind::parse`] once `type` and `name` are taken out.
    #[serde(default)]
    sinks: Vec<toml::Table>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawState {
    path: String,
    max_outbox_bytes: Option<i64>,
}

/// Integers are read as `i64` so that `from_raw` can say which range was expected.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAccount {
    name: String,
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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSyslogSink {
    address: String,
    transport: String,
    #[serde(default = "default_syslog_format")]
    format: String,
    framing: Option<String>,
    #[serde(default = "default_syslog_facility")]
    facility: RawLevel,
    #[serde(default = "default_syslog_severity")]
    severity: RawLevel,
    #[serde(default)]
    stream_severity: std::collections::BTreeMap<String, RawLevel>,
    failed_signin_severity: Option<RawLevel>,
    hostname: Option<String>,
    app_name: Option<String>,
    procid: Option<String>,
    #[serde(default)]
    structured_data: bool,
    sd_id: Option<String>,
    #[serde(default)]
    bom: bool,
    max_message_bytes: Option<i64>,
    #[serde(default = "default_syslog_timeout_secs")]
    timeout_secs: i64,
    ca_file: Option<String>,
    server_name: Option<String>,
    client_cert: Option<String>,
    client_key: Option<String>,
    #[serde(default)]
    tls_insecure_skip_verify: bool,
}

/// A facility or severity: a name or a number (checked in phase two).
#[derive(Debug, Clone)]
enum RawLevel {
    Name(String),
    Number(i64),
}

impl<'de> Deserialize<'de> for RawLevel {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<RawLevel, D::Error> {
        struct LevelVisitor;
        impl de::Visitor<'_> for LevelVisitor {
            type Value = RawLevel;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a name or a number")
            }
            fn visit_str<E: de::Error>(self, text: &str) -> Result<RawLevel, E> {
                // Environment overrides arrive as strings, numbers included.
                Ok(match text.trim().parse::<i64>() {
                    Ok(number) => RawLevel::Number(number),
                    Err(_) => RawLevel::Name(text.to_owned()),
                })
            }
            fn visit_i64<E: de::Error>(self, number: i64) -> Result<RawLevel, E> {
                Ok(RawLevel::Number(number))
            }
            fn visit_u64<E: de::Error>(self, number: u64) -> Result<RawLevel, E> {
                Ok(RawLevel::Number(i64::try_from(number).unwrap_or(i64::MAX)))
            }
        }
        deserializer.deserialize_any(LevelVisitor)
    }
}

fn default_syslog_format() -> String {
    "rfc5424".to_owned()
}

fn default_syslog_facility() -> RawLevel {
    RawLevel::Name("authpriv".to_owned())
}

fn default_syslog_severity() -> RawLevel {
    RawLevel::Name("info".to_owned())
}

fn default_syslog_timeout_secs() -> i64 {
    30
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFileSink {
    path: String,
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

// ---------------------------------------------------------------------------------------------
// Phase two: validation.

const PAGE_SIZE_MAX: i64 = 1000;
/// A day: longer would look like a stalled daemon, and keeps durations far from overflow.
const POLL_INTERVAL_SECS_MAX: i64 = 86_400;
/// An hour: a request that takes longer is stuck.
const REQUEST_TIMEOUT_SECS_MAX: i64 = 3_600;
/// The outbox bound's range: a mebibyte to a tebibyte; a gibibyte unless configured.
const MAX_OUTBOX_BYTES_MIN: i64 = 1 << 20;
const MAX_OUTBOX_BYTES_MAX: i64 = 1 << 40;
pub const MAX_OUTBOX_BYTES_DEFAULT: u64 = 1 << 30;
/// A response bound's range: 64 KiB (an introspection answer) to 1 GiB.
const MAX_RESPONSE_BYTES_MIN: i64 = 64 << 10;
const MAX_RESPONSE_BYTES_MAX: i64 = 1 << 30;
/// The governor logs the time of every request in the longer window; this bounds that log.
const REQUESTS_PER_MINUTE_MAX: i64 = 10_000;
const REQUESTS_PER_HOUR_MAX: i64 = 100_000;
/// A day: retrying less often would look like a stalled daemon.
const RETRY_SECS_MAX: i64 = 86_400;

impl Config {
    /// Reads and validates the tree of a config; pure, no IO.
    fn from_tree(tree: &toml::Table) -> Result<Config, Problem> {
        let raw: RawConfig = deserialize("", &toml::Value::Table(tree.clone()))?;
        let state = StateConfig {
            path: state_path("state.path", raw.state.path)?,
            max_outbox_bytes: match raw.state.max_outbox_bytes {
                None => MAX_OUTBOX_BYTES_DEFAULT,
                Some(bytes) => int_in(
                    "state.max_outbox_bytes",
                    bytes,
                    MAX_OUTBOX_BYTES_MIN,
                    MAX_OUTBOX_BYTES_MAX,
                )?
                .unsigned_abs(),
            },
        };

        if raw.accounts.is_empty() {
            return Err(Problem::invalid(
                "accounts",
                "at least one [[accounts]] table",
                "none",
            ));
        }
        let mut account_names = HashMap::new();
        let mut accounts = Vec::with_capacity(raw.accounts.len());
        for (index, raw_account) in raw.accounts.into_iter().enumerate() {
            let key = format!("accounts[{index}]");
            check_name(&format!("{key}.name"), &raw_account.name)?;
            unique_name(&mut account_names, "account name", &key, &raw_account.name)?;
            accounts.push(AccountConfig::from_raw(&key, raw_account)?);
        }

        if raw.sinks.is_empty() {
            return Err(Problem::invalid(
                "sinks",
                "at least one [[sinks]] table",
                "none",
            ));
        }
        let mut sink_names = HashMap::new();
        let mut sinks = Vec::with_capacity(raw.sinks.len());
        for (index, table) in raw.sinks.into_iter().enumerate() {
            let key = format!("sinks[{index}]");
            let (kind, name, table) = sink_head(&key, table)?;
            check_name(&format!("{key}.name"), &name)?;
            unique_name(&mut sink_names, "sink name", &key, &name)?;
            sinks.push(SinkConfig {
                name,
                kind: kind(&key, table)?,
            });
        }

        Ok(Config {
            state,
            accounts,
            sinks,
        })
    }
}

/// A sink type's parser: the rest of a `[[sinks]]` table (without `type` and `name`), at its key
/// path, into its settings.
type SinkParser = fn(&str, toml::Table) -> Result<SinkKind, Problem>;

impl SinkKind {
    /// Every sink type by its `type`, in the order errors list them, with its parser.
    const TYPES: [(&'static str, SinkParser); 2] = [
        ("file", |key, table| {
            FileSinkConfig::parse(key, table).map(SinkKind::File)
        }),
        ("syslog", |key, table| {
            SyslogSinkConfig::parse(key, table).map(|syslog| SinkKind::Syslog(Box::new(syslog)))
        }),
    ];
}

/// Takes the keys every sink has, `type` and `name`, out of a `[[sinks]]` table at `key`: its
/// type's parser, its name and the rest of the table.
///
/// The parser names the keys every sink has in its errors too: `type` and `name` among the keys
/// the table takes, and a missing key said to be required by the type.
fn sink_head(
    key: &str,
    mut table: toml::Table,
) -> Result<
    (
        impl FnOnce(&str, toml::Table) -> Result<SinkKind, Problem>,
        String,
        toml::Table,
    ),
    Problem,
> {
    let types: Vec<&str> = SinkKind::TYPES.iter().map(|(name, _)| *name).collect();
    let type_key = join(key, "type");
    let type_name = match table.remove("type") {
        Some(toml::Value::String(type_name)) => type_name,
        Some(other) => return Err(Problem::invalid(&type_key, "a string", &describe(&other))),
        None => {
            return Err(Problem::new(
                Some(type_key),
                ConfigErrorKind::Missing {
                    note: Some(format!("expected one of {}", types.join(", "))),
                },
            ));
        }
    };
    let Some(&(type_name, parse)) = SinkKind::TYPES.iter().find(|(name, _)| *name == type_name)
    else {
        return Err(unknown_value(&type_key, "sink type", &type_name, &types));
    };
    let name = match table.remove("name") {
        Some(toml::Value::String(name)) => name,
        Some(other) => {
            return Err(Problem::invalid(
                &join(key, "name"),
                "a string",
                &describe(&other),
            ));
        }
        None => {
            return Err(Problem::new(
                Some(join(key, "name")),
                ConfigErrorKind::Missing { note: None },
            ));
        }
    };
    let parse = move |key: &str, table| {
        parse(key, table).map_err(|mut problem| {
            match &mut *problem.kind {
                ConfigErrorKind::UnknownKey { expected } => {
                    expected.splice(0..0, ["type".to_owned(), "name".to_owned()]);
                }
                ConfigErrorKind::Missing { note: note @ None } => {
                    *note = Some(format!("required for type \"{type_name}\""));
                }
                _ => {}
            }
            problem
        })
    };
    Ok((parse, name, table))
}

impl AccountConfig {
    fn from_raw(key: &str, raw: RawAccount) -> Result<AccountConfig, Problem> {
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

/// The most a message may be: beyond what any receiver takes, and far beyond a UDP datagram.
const SYSLOG_MAX_MESSAGE_BYTES_MAX: i64 = 16 * 1024 * 1024;
/// The largest UDP payload over IPv4 (65,535 minus the IP and UDP headers).
const UDP_MAX_PAYLOAD: i64 = 65_507;
/// The default `max_message_bytes` for UDP (receivers' defaults vary: rsyslog 8k, syslog-ng 64k).
const UDP_DEFAULT_MAX_MESSAGE_BYTES: usize = 8192;
/// Ten minutes: a connect or a batch write that takes longer is stuck.
const SYSLOG_TIMEOUT_SECS_MAX: i64 = 600;

impl SyslogSinkConfig {
    /// Reads and validates the keys of a syslog sink's `[[sinks]]` table at `key`.
    fn parse(key: &str, table: toml::Table) -> Result<SyslogSinkConfig, Problem> {
        SyslogSinkConfig::from_raw(key, deserialize(key, &toml::Value::Table(table))?)
    }

    fn from_raw(key: &str, raw: RawSyslogSink) -> Result<SyslogSinkConfig, Problem> {
        let at = |name: &str| format!("{key}.{name}");
        let (host, port) = syslog_address(&raw.address).ok_or_else(|| {
            Problem::invalid(
                &at("address"),
                "host:port (a name, an IPv4 address or a bracketed IPv6 address, and a port from 1 to 65535)",
                &quote(&raw.address),
            )
        })?;
        let transport = match raw.transport.as_str() {
            "udp" => SyslogTransport::Udp,
            "tcp" => SyslogTransport::Tcp,
            "tls" => SyslogTransport::Tls,
            "relp" => SyslogTransport::Relp,
            other => {
                return Err(unknown_value(
                    &at("transport"),
                    "transport",
                    other,
                    &["udp", "tcp", "tls", "relp"],
                ));
            }
        };
        let format = match raw.format.as_str() {
            "rfc5424" => SyslogFormat::Rfc5424,
            "rfc3164" => SyslogFormat::Rfc3164,
            other => {
                return Err(unknown_value(
                    &at("format"),
                    "format",
                    other,
                    &["rfc5424", "rfc3164"],
                ));
            }
        };
        let framing = match raw.framing.as_deref() {
            None | Some("octet-counting") => SyslogFraming::OctetCounting,
            Some("lf") => SyslogFraming::Lf,
            Some(other) => {
                return Err(unknown_value(
                    &at("framing"),
                    "framing",
                    other,
                    &["octet-counting", "lf"],
                ));
            }
        };
        if let Some(framing) = &raw.framing {
            let why = match transport {
                SyslogTransport::Udp => {
                    Some("no framing with transport = \"udp\" (one message per datagram)")
                }
                SyslogTransport::Relp => {
                    Some("no framing with transport = \"relp\" (RELP frames each message itself)")
                }
                SyslogTransport::Tcp | SyslogTransport::Tls => None,
            };
            if let Some(why) = why {
                return Err(Problem::invalid(&at("framing"), why, &quote(framing)));
            }
        }
        let facility = level(&at("facility"), &raw.facility, &SYSLOG_FACILITIES)?;
        let severity = level(&at("severity"), &raw.severity, &SYSLOG_SEVERITIES)?;
        let mut stream_severity = Vec::with_capacity(raw.stream_severity.len());
        for (name, value) in &raw.stream_severity {
            let stream_key = join(&at("stream_severity"), name);
            let stream: Stream = name.parse().map_err(|_| {
                Problem::new(
                    Some(stream_key.clone()),
                    ConfigErrorKind::UnknownValue {
                        what: "stream".to_owned(),
                        value: name.clone(),
                        expected: Stream::KNOWN
                            .iter()
                            .map(|s| s.as_str().to_owned())
                            .collect(),
                    },
                )
            })?;
            stream_severity.push((stream, level(&stream_key, value, &SYSLOG_SEVERITIES)?));
        }
        let failed_signin_severity = raw
            .failed_signin_severity
            .as_ref()
            .map(|value| level(&at("failed_signin_severity"), value, &SYSLOG_SEVERITIES))
            .transpose()?;
        let hostname = raw
            .hostname
            .map(|value| header_field(&at("hostname"), value, 255))
            .transpose()?;
        let app_name = match raw.app_name {
            Some(value) => header_field(&at("app_name"), value, 48)?,
            None => "op-events-forwarder".to_owned(),
        };
        let procid = raw
            .procid
            .map(|value| header_field(&at("procid"), value, 128))
            .transpose()?;
        let sd_id = match (raw.structured_data, raw.sd_id) {
            (true, Some(sd_id)) => Some(sd_id_value(&at("sd_id"), sd_id)?),
            (true, None) => Some(DEFAULT_SD_ID.to_owned()),
            (false, Some(sd_id)) => {
                return Err(Problem::invalid(
                    &at("sd_id"),
                    "structured_data = true alongside it (the SD-ID names the structured data element)",
                    &quote(&sd_id),
                ));
            }
            (false, None) => None,
        };
        if raw.bom && format == SyslogFormat::Rfc3164 {
            return Err(Problem::invalid(
                &at("bom"),
                "false with format = \"rfc3164\" (the byte order mark is an RFC 5424 feature)",
                "true",
            ));
        }
        let max_message_bytes = match (raw.max_message_bytes, transport) {
            (Some(bytes), SyslogTransport::Udp) => Some(
                usize::try_from(int_in(
                    &at("max_message_bytes"),
                    bytes,
                    480,
                    UDP_MAX_PAYLOAD,
                )?)
                .unwrap_or(0),
            ),
            (Some(bytes), _) => Some(
                usize::try_from(int_in(
                    &at("max_message_bytes"),
                    bytes,
                    480,
                    SYSLOG_MAX_MESSAGE_BYTES_MAX,
                )?)
                .unwrap_or(0),
            ),
            (None, SyslogTransport::Udp) => Some(UDP_DEFAULT_MAX_MESSAGE_BYTES),
            (None, _) => None,
        };
        let timeout_secs = int_in(
            &at("timeout_secs"),
            raw.timeout_secs,
            1,
            SYSLOG_TIMEOUT_SECS_MAX,
        )?;

        let tls_keys = [
            ("ca_file", raw.ca_file.is_some()),
            ("server_name", raw.server_name.is_some()),
            ("client_cert", raw.client_cert.is_some()),
            ("client_key", raw.client_key.is_some()),
            ("tls_insecure_skip_verify", raw.tls_insecure_skip_verify),
        ];
        if transport != SyslogTransport::Tls
            && let Some((name, _)) = tls_keys.iter().find(|(_, set)| *set)
        {
            return Err(Problem::invalid(
                &at(name),
                "no TLS setting unless transport = \"tls\"",
                &format!("transport = {}", quote(&raw.transport)),
            ));
        }
        let ca_file = raw
            .ca_file
            .map(|path| file_path(&at("ca_file"), path))
            .transpose()?;
        let server_name = raw
            .server_name
            .map(|name| {
                if syslog_host_valid(&name) {
                    Ok(name)
                } else {
                    Err(Problem::invalid(
                        &at("server_name"),
                        "a DNS name or an IP address",
                        &quote(&name),
                    ))
                }
            })
            .transpose()?;
        let client_auth = match (raw.client_cert, raw.client_key) {
            (Some(cert), Some(key)) => Some((
                file_path(&at("client_cert"), cert)?,
                file_path(&at("client_key"), key)?,
            )),
            (Some(_), None) => {
                return Err(Problem::new(
                    Some(at("client_key")),
                    ConfigErrorKind::Missing {
                        note: Some("required with client_cert".to_owned()),
                    },
                ));
            }
            (None, Some(_)) => {
                return Err(Problem::new(
                    Some(at("client_cert")),
                    ConfigErrorKind::Missing {
                        note: Some("required with client_key".to_owned()),
                    },
                ));
            }
            (None, None) => None,
        };
        if raw.tls_insecure_skip_verify && (ca_file.is_some() || server_name.is_some()) {
            return Err(Problem::invalid(
                &at("tls_insecure_skip_verify"),
                "false when ca_file or server_name is set (they configure the verification it turns off)",
                "true",
            ));
        }
        Ok(SyslogSinkConfig {
            address: raw.address,
            host,
            port,
            transport,
            format,
            framing,
            facility,
            severity,
            stream_severity,
            failed_signin_severity,
            hostname,
            app_name,
            procid,
            sd_id,
            bom: raw.bom,
            max_message_bytes,
            timeout: Duration::from_secs(timeout_secs.unsigned_abs()),
            tls: SyslogTlsConfig {
                ca_file,
                server_name,
                client_auth,
                insecure_skip_verify: raw.tls_insecure_skip_verify,
            },
        })
    }
}

/// The SD-ID used when `structured_data = true` and no `sd_id` is given. 32473 is the private
/// enterprise number reserved for examples (RFC 5612); set your own with `sd_id`.
pub const DEFAULT_SD_ID: &str = "op-events@32473";

fn unknown_value(key: &str, what: &str, value: &str, expected: &[&str]) -> Problem {
    Problem::new(
        Some(key.to_owned()),
        ConfigErrorKind::UnknownValue {
            what: what.to_owned(),
            value: value.to_owned(),
            expected: expected.iter().map(|&e| e.to_owned()).collect(),
        },
    )
}

/// A facility or severity by name or number; `names` are the valid names in numeric order.
fn level(key: &str, value: &RawLevel, names: &[&str]) -> Result<u8, Problem> {
    let max = names.len() - 1;
    match value {
        RawLevel::Number(number) => {
            let number = int_in(key, *number, 0, max as i64)?;
            Ok(u8::try_from(number).unwrap_or(0))
        }
        RawLevel::Name(name) => names
            .iter()
            .position(|candidate| candidate == name)
            .map(|index| u8::try_from(index).unwrap_or(0))
            .ok_or_else(|| {
                let mut expected: Vec<&str> = names.to_vec();
                let numbers = format!("a number from 0 to {max}");
                expected.push(&numbers);
                unknown_value(key, "name", name, &expected)
            }),
    }
}

/// A configured RFC 5424 header field: 1 to `max` printable US-ASCII characters, no spaces.
fn header_field(key: &str, value: String, max: usize) -> Result<String, Problem> {
    let valid = (1..=max).contains(&value.len()) && value.bytes().all(|b| (33..=126).contains(&b));
    if valid {
        Ok(value)
    } else {
        Err(Problem::invalid(
            key,
            &format!("1 to {max} printable US-ASCII characters without spaces"),
            &quote(&value),
        ))
    }
}

/// An SD-ID of our own: `name@number` (RFC 5424 §7.2.2), at most 32 characters, without `=`,
/// space, `]` or `"`.
fn sd_id_value(key: &str, sd_id: String) -> Result<String, Problem> {
    let printable = (1..=32).contains(&sd_id.len())
        && sd_id
            .bytes()
            .all(|b| (33..=126).contains(&b) && !matches!(b, b'=' | b']' | b'"'));
    let enterprise = sd_id.split_once('@').is_some_and(|(name, number)| {
        !name.is_empty()
            && !number.is_empty()
            && !number.contains('@')
            && number
                .split('.')
                .all(|part| !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit()))
    });
    if printable && enterprise {
        Ok(sd_id)
    } else {
        Err(Problem::invalid(
            key,
            "an SD-ID of the form name@<private enterprise number>, at most 32 printable US-ASCII characters \
             without =, ], \" or spaces (like op-events@32473)",
            &quote(&sd_id),
        ))
    }
}

/// Splits `host:port` or `[v6]:port`; `None` when malformed.
fn syslog_address(address: &str) -> Option<(String, u16)> {
    let (host, port) = match address.strip_prefix('[') {
        Some(bracketed) => {
            let (v6, port) = bracketed.split_once("]:")?;
            v6.parse::<Ipv6Addr>().ok()?;
            (v6, port)
        }
        None => {
            let (host, port) = address.rsplit_once(':')?;
            if host.contains(':') || !syslog_host_valid(host) {
                return None;
            }
            (host, port)
        }
    };
    if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let port = port.parse::<u16>().ok().filter(|port| *port != 0)?;
    Some((host.to_owned(), port))
}

/// A host name (letters, digits, `-`, `.`), an IPv4 address or an IPv6 address.
fn syslog_host_valid(host: &str) -> bool {
    host.parse::<Ipv6Addr>().is_ok()
        || (!host.is_empty()
            && host.len() <= 253
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-'))
}

/// The most characters of a value that an error quotes; a longer value is cut.
const QUOTE_MAX_CHARS: usize = 80;

/// A value as every error quotes it: in double quotes, with control characters escaped (`\0`,
/// `\n`, `\u{1b}`), so that nothing in a config can reach a terminal or a log raw, and cut with
/// `…` after [`QUOTE_MAX_CHARS`] characters (escapes counted as written).
fn quote(text: &str) -> String {
    let mut budget = QUOTE_MAX_CHARS;
    let cut = text.char_indices().find_map(|(index, c)| {
        // As `{:?}` of a string writes it: a single quote is not escaped.
        let width = if c == '\'' {
            1
        } else {
            c.escape_debug().count()
        };
        match budget.checked_sub(width) {
            Some(left) => {
                budget = left;
                None
            }
            None => Some(index),
        }
    });
    match cut {
        None => format!("{text:?}"),
        Some(index) => {
            let mut quoted = format!("{:?}", &text[..index]);
            quoted.insert(quoted.len() - 1, '…');
            quoted
        }
    }
}

fn int_in(key: &str, value: i64, min: i64, max: i64) -> Result<i64, Problem> {
    if (min..=max).contains(&value) {
        Ok(value)
    } else {
        Err(Problem::invalid(
            key,
            &format!("an integer from {min} to {max}"),
            &value.to_string(),
        ))
    }
}

/// The path of a file the daemon reads or writes: not empty, no control characters (a NUL
/// cannot be in a path, and the others are mistakes), and naming a file: not `/`, nor ending in
/// `/`, `.` or `..`.
fn file_path(key: &str, path: String) -> Result<PathBuf, Problem> {
    if path.is_empty() {
        return Err(Problem::invalid(key, "a non-empty path", "\"\""));
    }
    no_control_characters(key, &path)?;
    names_a_file(key, &path)?;
    Ok(PathBuf::from(path))
}

fn no_control_characters(key: &str, path: &str) -> Result<(), Problem> {
    if path.chars().any(char::is_control) {
        return Err(Problem::invalid(
            key,
            "a path without control characters",
            &quote(path),
        ));
    }
    Ok(())
}

fn names_a_file(key: &str, path: &str) -> Result<(), Problem> {
    let last = path.rsplit('/').next().unwrap_or(path);
    if matches!(last, "" | "." | "..") {
        return Err(Problem::invalid(
            key,
            "the path of a file, not of a directory",
            &quote(path),
        ));
    }
    Ok(())
}

/// `state.path`: a file on disk. SQLite would take `:memory:`, an empty name (a temporary
/// database) or a `file:` URI (which may say `mode=memory`), and every restart would then begin
/// without cursors; the store refuses them all, so a URI naming a file on disk is refused too.
fn state_path(key: &str, path: String) -> Result<PathBuf, Problem> {
    if path.is_empty() || path == ":memory:" || path.starts_with("file:") {
        return Err(Problem::invalid(
            key,
            "the path of a file on disk, so that cursors survive restarts (not an in-memory or temporary \
             SQLite database, nor an SQLite file: URI)",
            &quote(&path),
        ));
    }
    file_path(key, path)
}

fn check_name(key: &str, name: &str) -> Result<(), Problem> {
    let valid = (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || byte == b'_' || byte == b'-');
    if valid {
        Ok(())
    } else {
        Err(Problem::invalid(
            key,
            "1 to 64 characters from A-Z, a-z, 0-9, _ and -",
            &quote(name),
        ))
    }
}

/// Records `name` for the entry at `key`, failing if an earlier entry has it.
fn unique_name(
    seen: &mut HashMap<String, String>,
    what: &str,
    key: &str,
    name: &str,
) -> Result<(), Problem> {
    let name_key = format!("{key}.name");
    match seen.get(name) {
        Some(first) => Err(Problem::new(
            Some(name_key),
            ConfigErrorKind::Duplicate {
                what: what.to_owned(),
                value: name.to_owned(),
                first: first.clone(),
            },
        )),
        None => {
            seen.insert(name.to_owned(), name_key);
            Ok(())
        }
    }
}

fn env_var_name(key: &str, name: String) -> Result<String, Problem> {
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

/// The one parser of spans of time: `7d`, `24h`, `30m`, `90s` (digits, then one unit); `None`
/// for anything else, whatever its characters.
pub fn parse_span(text: &str) -> Option<Duration> {
    let unit_secs: u64 = match text.bytes().last()? {
        b'd' => 86_400,
        b'h' => 3_600,
        b'm' => 60,
        b's' => 1,
        _ => return None,
    };
    let amount = &text[..text.len() - 1];
    if amount.is_empty() || !amount.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    let secs = amount.parse::<u64>().ok()?.checked_mul(unit_secs)?;
    Some(Duration::from_secs(secs))
}

/// Checks and normalizes a base URL as `base_url` does (for one derived from a token); the
/// error says what was expected.
pub fn normalize_base_url(url: &str) -> Result<String, String> {
    base_url(url).map_err(|kind| kind.to_string())
}

/// Checks and normalizes a base URL: `https://host[:port]`, or `http://` to a loopback host.
fn base_url(url: &str) -> Result<String, ConfigErrorKind> {
    let invalid = |expected: &str| ConfigErrorKind::Invalid {
        expected: expected.to_owned(),
        got: quote(url),
    };
    let (scheme, authority) = url
        .split_once("://")
        .ok_or_else(|| invalid("an https:// URL (or http:// to a loopback host)"))?;
    let scheme = scheme.to_ascii_lowercase();
    if scheme != "https" && scheme != "http" {
        return Err(invalid("an https:// URL (or http:// to a loopback host)"));
    }
    let authority = authority.strip_suffix('/').unwrap_or(authority);
    if authority.contains(['/', '?', '#']) {
        return Err(invalid(
            "a URL without a path, query or fragment (like https://events.1password.com)",
        ));
    }
    let authority = authority.to_ascii_lowercase();
    let host = url_host(&authority)
        .ok_or_else(|| invalid("a URL of the form https://host or https://host:port"))?;
    if scheme == "http" && !is_loopback(host) {
        return Err(invalid(
            "https:// (http:// is allowed only to 127.0.0.0/8, ::1 or localhost)",
        ));
    }
    Ok(format!("{scheme}://{authority}"))
}

/// The host of a lowercased `host[:port]` or `[v6][:port]`, if it is well formed.
fn url_host(authority: &str) -> Option<&str> {
    let (host, port) = match authority.strip_prefix('[') {
        Some(bracketed) => {
            let (v6, rest) = bracketed.split_once(']')?;
            v6.parse::<Ipv6Addr>().ok()?;
            let port = match rest {
                "" => None,
                _ => Some(rest.strip_prefix(':')?),
            };
            (v6, port)
        }
        None => {
            let (host, port) = match authority.split_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (authority, None),
            };
            let valid_host = !host.is_empty()
                && host
                    .bytes()
                    .all(|byte| byte.is_ascii_alphanumeric() || byte == b'.' || byte == b'-');
            if !valid_host {
                return None;
            }
            (host, port)
        }
    };
    if let Some(port) = port {
        let valid_port = !port.is_empty()
            && port.bytes().all(|byte| byte.is_ascii_digit())
            && port.parse::<u16>().is_ok_and(|port| port != 0);
        if !valid_port {
            return None;
        }
    }
    Some(host)
}

fn is_loopback(host: &str) -> bool {
    host == "localhost"
        || host.parse::<Ipv4Addr>().is_ok_and(|ip| ip.is_loopback())
        || host.parse::<Ipv6Addr>().is_ok_and(|ip| ip.is_loopback())
}

impl FileSinkConfig {
    /// Reads and validates the keys of a file sink's `[[sinks]]` table at `key`.
    fn parse(key: &str, table: toml::Table) -> Result<FileSinkConfig, Problem> {
        let raw: RawFileSink = deserialize(key, &toml::Value::Table(table))?;
        Ok(FileSinkConfig {
            path: path_template(&join(key, "path"), raw.path)?,
        })
    }
}

/// Checks a sink path template: no control characters, `{stream}` and `{account}` its only
/// placeholders, and a file at its end.
fn path_template(key: &str, template: String) -> Result<String, Problem> {
    if template.is_empty() {
        return Err(Problem::invalid(key, "a non-empty path", "\"\""));
    }
    no_control_characters(key, &template)?;
    let malformed = || {
        Problem::invalid(
            key,
            "a path whose only braces are the placeholders {stream} and {account}",
            &quote(&template),
        )
    };
    let mut rest = template.as_str();
    while let Some(open) = rest.find(['{', '}']) {
        if rest[open..].starts_with('}') {
            return Err(malformed());
        }
        let close = rest[open..].find('}').ok_or_else(malformed)? + open;
        let placeholder = &rest[open..=close];
        if placeholder[1..].contains('{') {
            return Err(malformed());
        }
        if placeholder != "{stream}" && placeholder != "{account}" {
            return Err(Problem::new(
                Some(key.to_owned()),
                ConfigErrorKind::UnknownValue {
                    what: "placeholder".to_owned(),
                    value: placeholder.to_owned(),
                    expected: vec!["{stream}".to_owned(), "{account}".to_owned()],
                },
            ));
        }
        rest = &rest[close + 1..];
    }
    names_a_file(key, &template)?;
    Ok(template)
}

// ---------------------------------------------------------------------------------------------
// Phase three: the files the config names.

/// Checks the files a valid config names, so that what `run` would refuse at start, or retry
/// forever at the first delivery, is a config error for `check-config` too.
///
/// CA files must hold a certificate rustls can trust, a client certificate and key must load and
/// belong together (all read with the loaders the daemon uses, [`crate::pem`]), and neither the
/// state file nor a file sink's files (for every account and stream it may write) may be a
/// directory or lie below a file. Token files are not read: they may exist only where the
/// daemon runs (a systemd credential), and are read at start and after every 401.
///
/// Fails with the first file that cannot serve, at the key that names it.
fn check_files(config: &Config) -> Result<(), Problem> {
    file_location("state.path", &config.state.path)?;
    for (index, account) in config.accounts.iter().enumerate() {
        if let Some(path) = &account.ca_file {
            pem_file(
                &format!("accounts[{index}].ca_file"),
                path,
                crate::pem::read_roots,
            )?;
        }
    }
    for (index, sink) in config.sinks.iter().enumerate() {
        let at = |name: &str| format!("sinks[{index}].{name}");
        match &sink.kind {
            SinkKind::File(file) => {
                for account in &config.accounts {
                    // Streams left to the token are at most the cursor streams.
                    let streams = account.streams.as_deref().unwrap_or(&Stream::ALL);
                    for &stream in streams {
                        file_location(&at("path"), &file.path_for(&account.name, stream))?;
                    }
                }
            }
            SinkKind::Syslog(syslog) => {
                if let Some(path) = &syslog.tls.ca_file {
                    pem_file(&at("ca_file"), path, crate::pem::read_roots)?;
                }
                if let Some((cert_path, key_path)) = &syslog.tls.client_auth {
                    let certs = pem_file(&at("client_cert"), cert_path, crate::pem::read_certs)?;
                    let key = pem_file(&at("client_key"), key_path, crate::pem::read_private_key)?;
                    crate::pem::check_key_pair(&certs, &key).map_err(|error| {
                        file_problem(&at("client_key"), key_path, error.to_string())
                    })?;
                }
            }
        }
    }
    Ok(())
}

/// Reads a PEM file with `read`, the problem placed at `key`.
fn pem_file<T>(
    key: &str,
    path: &Path,
    read: impl FnOnce(&Path) -> Result<T, crate::pem::PemError>,
) -> Result<T, Problem> {
    read(path).map_err(|error| file_problem(key, path, error.to_string()))
}

/// Checks that a file can be created or opened at `path`: it is not a directory, and the nearest
/// of its ancestors that exists is one (missing ones are created at start).
fn file_location(key: &str, path: &Path) -> Result<(), Problem> {
    if std::fs::metadata(path).is_ok_and(|meta| meta.is_dir()) {
        return Err(file_problem(
            key,
            path,
            "is a directory, not a file".to_owned(),
        ));
    }
    for ancestor in path.ancestors().skip(1) {
        if ancestor.as_os_str().is_empty() {
            break;
        }
        match std::fs::metadata(ancestor) {
            Ok(meta) if meta.is_dir() => break,
            Ok(_) => {
                let ancestor = quote(&ancestor.to_string_lossy());
                return Err(file_problem(
                    key,
                    path,
                    format!("{ancestor} is a file, not a directory"),
                ));
            }
            Err(_) => {}
        }
    }
    Ok(())
}

fn file_problem(key: &str, path: &Path, problem: String) -> Problem {
    Problem::new(
        Some(key.to_owned()),
        ConfigErrorKind::File {
            path: path.to_owned(),
            problem,
        },
    )
}

// ---------------------------------------------------------------------------------------------
// Errors before the origin is known.

/// A problem at a key path, before the origin and the environment variable are attached.
#[derive(Debug)]
struct Problem {
    key: Option<String>,
    env_var: Option<String>,
    /// Boxed: a `Result` carrying a problem stays small.
    kind: Box<ConfigErrorKind>,
    /// For a value of the wrong type: the type the key takes, when a string from an environment
    /// override can be read as one (see [`retype`]).
    wants: Option<Wants>,
}

impl Problem {
    fn new(key: Option<String>, kind: ConfigErrorKind) -> Problem {
        Problem {
            key,
            env_var: None,
            kind: Box::new(kind),
            wants: None,
        }
    }

    fn invalid(key: &str, expected: &str, got: &str) -> Problem {
        Problem::new(
            Some(key.to_owned()),
            ConfigErrorKind::Invalid {
                expected: expected.to_owned(),
                got: got.to_owned(),
            },
        )
    }

    fn into_error(self, origin: &str, overrides: &[Override]) -> ConfigError {
        let env_var = self.env_var.or_else(|| {
            let key = self.key.as_deref()?;
            let unknown_key = matches!(*self.kind, ConfigErrorKind::UnknownKey { .. });
            overrides
                .iter()
                .find(|o| {
                    key == o.path
                        || is_under(key, &o.path)
                        || (unknown_key && is_under(&o.path, key))
                })
                .map(|o| o.var.clone())
        });
        ConfigError::new(origin, self.key, env_var, *self.kind)
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.key {
            Some(key) => write!(f, "{key}: {}", self.kind),
            None => write!(f, "{}", self.kind),
        }
    }
}

/// `parent.key`, or `key` at the top level; a key that is not bare (`A-Za-z0-9_-`) is quoted, as
/// TOML would write it, escaped and cut like a value.
fn join(parent: &str, key: &str) -> String {
    let bare = !key.is_empty()
        && key
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || byte == b'_' || byte == b'-');
    let key = if bare { key.to_owned() } else { quote(key) };
    if parent.is_empty() {
        key
    } else {
        format!("{parent}.{key}")
    }
}

/// Whether `path` lies strictly inside `ancestor` (`accounts[0].name` inside `accounts[0]`).
fn is_under(path: &str, ancestor: &str) -> bool {
    path.strip_prefix(ancestor)
        .is_some_and(|rest| rest.starts_with('.') || rest.starts_with('['))
}

// ---------------------------------------------------------------------------------------------
// Text to tree, and environment overrides.

/// Parses TOML into a tree of values.
///
/// The toml crate parses, keeping the position of every value, so that errors give the line and
/// column: its own, and a number TOML allows but no 64-bit type holds.
fn parse_toml(text: &str) -> Result<toml::Table, Problem> {
    let table = toml::de::DeTable::parse(text).map_err(|error| {
        let message = error
            .message()
            .lines()
            .map(str::trim)
            .filter(|line| !line.is_empty())
            .collect::<Vec<_>>()
            .join("; ");
        Problem::new(
            None,
            ConfigErrorKind::Syntax {
                position: error.span().map(|span| line_column(text, span.start)),
                message,
            },
        )
    })?;
    table_tree(text, "", table.into_inner())
}

fn table_tree(
    text: &str,
    path: &str,
    table: toml::de::DeTable<'_>,
) -> Result<toml::Table, Problem> {
    let mut tree = toml::Table::new();
    for (key, value) in table {
        let key = key.into_inner().into_owned();
        let value = value_tree(text, join(path, &key), value)?;
        tree.insert(key, value);
    }
    Ok(tree)
}

fn value_tree(
    text: &str,
    path: String,
    value: toml::Spanned<toml::de::DeValue<'_>>,
) -> Result<toml::Value, Problem> {
    use toml::de::DeValue;
    let span = value.span();
    let out_of_range = |message: String| {
        Problem::new(
            Some(path.clone()),
            ConfigErrorKind::Syntax {
                position: Some(line_column(text, span.start)),
                message,
            },
        )
    };
    Ok(match value.into_inner() {
        DeValue::String(string) => toml::Value::String(string.into_owned()),
        DeValue::Integer(integer) => match i64::from_str_radix(integer.as_str(), integer.radix()) {
            Ok(integer) => toml::Value::Integer(integer),
            Err(error) => {
                let message = match error.kind() {
                    std::num::IntErrorKind::PosOverflow | std::num::IntErrorKind::NegOverflow => {
                        format!(
                            "the integer does not fit in 64 bits (TOML integers are from {} to {})",
                            i64::MIN,
                            i64::MAX
                        )
                    }
                    _ => format!("invalid integer: {error}"),
                };
                return Err(out_of_range(message));
            }
        },
        DeValue::Float(float) => {
            let number = float
                .as_str()
                .parse::<f64>()
                .map_err(|error| out_of_range(format!("invalid float: {error}")))?;
            if number.is_infinite() && !float.as_str().contains("inf") {
                return Err(out_of_range(
                    "the number does not fit in a 64-bit float".to_owned(),
                ));
            }
            toml::Value::Float(number)
        }
        DeValue::Boolean(boolean) => toml::Value::Boolean(boolean),
        // A date-time is read as the text it was: `start_time = 2026-11-01T00:00:00Z` is a string.
        DeValue::Datetime(datetime) => toml::Value::String(datetime.to_string()),
        DeValue::Array(items) => toml::Value::Array(
            items
                .into_iter()
                .enumerate()
                .map(|(index, item)| value_tree(text, format!("{path}[{index}]"), item))
                .collect::<Result<_, _>>()?,
        ),
        DeValue::Table(table) => toml::Value::Table(table_tree(text, &path, table)?),
    })
}

/// The 1-based line and column (in characters, as the toml crate counts) of a byte offset.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = text.as_bytes().get(..offset).unwrap_or(text.as_bytes());
    let line_start = before
        .iter()
        .rposition(|&byte| byte == b'\n')
        .map_or(0, |newline| newline + 1);
    let line = before.iter().filter(|&&byte| byte == b'\n').count() + 1;
    let column = String::from_utf8_lossy(&before[line_start..])
        .chars()
        .count()
        + 1;
    (line, column)
}

/// An environment override that was applied: which variable set which key path.
#[derive(Debug)]
struct Override {
    var: String,
    /// The key path, as errors name it.
    path: String,
    /// The way to the value in the tree.
    steps: Vec<Step>,
}

#[derive(Debug)]
enum Step {
    Key(String),
    Index(usize),
}

/// Patches every `OP_EVENTS_FORWARDER__…` variable into the tree, in name order.
///
/// The values are strings: [`retype`] reads one as the type its key takes when parsing the tree
/// asks for another. Keys are not checked here: an unknown one is reported like one in the
/// file, with the variable named.
fn apply_env_overrides(
    tree: &mut toml::Table,
    env: &[(String, String)],
) -> Result<Vec<Override>, Problem> {
    let mut vars: Vec<&(String, String)> = env
        .iter()
        .filter(|(name, _)| name.starts_with(ENV_PREFIX))
        .collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    let mut overrides = Vec::with_capacity(vars.len());
    for (var, value) in vars {
        let segments: Vec<String> = var[ENV_PREFIX.len()..]
            .split("__")
            .map(str::to_ascii_lowercase)
            .collect();
        if segments.iter().any(String::is_empty) {
            return Err(Problem {
                env_var: Some(var.clone()),
                ..Problem::new(
                    None,
                    ConfigErrorKind::Invalid {
                        expected: format!(
                            "key levels separated by __ (like {ENV_PREFIX}ACCOUNTS__0__POLL_INTERVAL_SECS)"
                        ),
                        got: "an empty level".to_owned(),
                    },
                )
            });
        }
        let (path, steps) = apply_override(tree, &segments, value).map_err(|problem| Problem {
            env_var: Some(var.clone()),
            ..problem
        })?;
        overrides.push(Override {
            var: var.clone(),
            path,
            steps,
        });
    }
    Ok(overrides)
}

fn apply_override(
    tree: &mut toml::Table,
    segments: &[String],
    value: &str,
) -> Result<(String, Vec<Step>), Problem> {
    let leaf = || toml::Value::String(value.to_owned());
    let mut steps = Vec::with_capacity(segments.len());
    let mut path = String::new();
    let mut table = tree;
    let mut segments = segments.iter().peekable();
    while let Some(segment) = segments.next() {
        path = join(&path, segment);
        steps.push(Step::Key(segment.clone()));
        let Some(next) = segments.peek() else {
            table.insert(segment.clone(), leaf());
            return Ok((path, steps));
        };
        if !table.contains_key(segment.as_str()) {
            if let Some(index) = parse_index(next) {
                return Err(Problem::new(
                    Some(format!("{path}[{index}]")),
                    ConfigErrorKind::NoSuchEntry { len: 0 },
                ));
            }
            table.insert(segment.clone(), toml::Value::Table(toml::Table::new()));
        }
        let mut node = table
            .get_mut(segment.as_str())
            .expect("the table has this key");
        // Array entries, named by their index, down to the next table.
        while let toml::Value::Array(items) = node {
            let segment = segments.next().expect("peeked");
            let Some(index) = parse_index(segment) else {
                return Err(Problem::invalid(
                    &path,
                    "an array index (a number) as the next level",
                    &quote(&segment.to_ascii_uppercase()),
                ));
            };
            path = format!("{path}[{index}]");
            steps.push(Step::Index(index));
            let len = items.len();
            let Some(item) = items.get_mut(index) else {
                return Err(Problem::new(
                    Some(path),
                    ConfigErrorKind::NoSuchEntry { len },
                ));
            };
            if segments.peek().is_none() {
                *item = leaf();
                return Ok((path, steps));
            }
            node = item;
        }
        match node {
            toml::Value::Table(inner) => table = inner,
            other => {
                return Err(Problem::invalid(
                    &path,
                    "a table or an array (the variable names a key inside it)",
                    &describe(other),
                ));
            }
        }
    }
    Ok((path, steps))
}

fn parse_index(segment: &str) -> Option<usize> {
    if segment.is_empty() || !segment.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    segment.parse().ok()
}

/// A value for "got …": scalars as written, containers by their kind.
fn describe(value: &toml::Value) -> String {
    match value {
        toml::Value::Boolean(value) => value.to_string(),
        toml::Value::Integer(value) => value.to_string(),
        toml::Value::Float(value) => format!("{value:?}"),
        toml::Value::String(value) => quote(value),
        toml::Value::Datetime(value) => value.to_string(),
        toml::Value::Table(_) => "a table".to_owned(),
        toml::Value::Array(_) => "an array".to_owned(),
    }
}

/// The types a string from the environment can be read as.
#[derive(Debug, Clone, Copy)]
enum Wants {
    Integer,
    Boolean,
    /// Comma-separated strings.
    Array,
}

/// Reads the string an override put in the tree as the type its key takes; `false` if the
/// value there is not a string, or does not read as one.
fn retype(tree: &mut toml::Table, target: &Override, wants: Wants) -> bool {
    let mut steps = target.steps.iter();
    let Some(Step::Key(first)) = steps.next() else {
        return false;
    };
    let mut node = tree.get_mut(first.as_str());
    for step in steps {
        node = match (node, step) {
            (Some(toml::Value::Table(table)), Step::Key(key)) => table.get_mut(key.as_str()),
            (Some(toml::Value::Array(items)), Step::Index(index)) => items.get_mut(*index),
            _ => None,
        };
    }
    let Some(node) = node else {
        return false;
    };
    let toml::Value::String(text) = &*node else {
        return false;
    };
    let typed = match wants {
        Wants::Integer => text.trim().parse().ok().map(toml::Value::Integer),
        Wants::Boolean => match text.as_str() {
            "true" => Some(toml::Value::Boolean(true)),
            "false" => Some(toml::Value::Boolean(false)),
            _ => None,
        },
        Wants::Array => Some(toml::Value::Array(
            text.split(',')
                .map(str::trim)
                .filter(|item| !item.is_empty())
                .map(|item| toml::Value::String(item.to_owned()))
                .collect(),
        )),
    };
    match typed {
        Some(typed) => {
            *node = typed;
            true
        }
        None => false,
    }
}

// ---------------------------------------------------------------------------------------------
// The tree into raw structs.

/// Deserializes `value`, found at `key`, into a raw struct; every error names its key path.
///
/// serde_path_to_error gives the path of the value that failed; what failed is read from the
/// message serde composes for the three mistakes a config can make (a missing key, an unknown
/// key, a value of the wrong type), and the value found is described from the tree, escaped and
/// cut like every value an error quotes.
fn deserialize<T: serde::de::DeserializeOwned>(
    key: &str,
    value: &toml::Value,
) -> Result<T, Problem> {
    serde_path_to_error::deserialize(value.clone()).map_err(|error| {
        let mut path = key.to_owned();
        let mut node = Some(value);
        for segment in error.path().iter() {
            match segment {
                serde_path_to_error::Segment::Seq { index } => {
                    path = format!("{path}[{index}]");
                    node = node.and_then(|node| node.get(*index));
                }
                serde_path_to_error::Segment::Map { key } => {
                    path = join(&path, key);
                    node = node.and_then(|node| node.get(key.as_str()));
                }
                serde_path_to_error::Segment::Enum { .. }
                | serde_path_to_error::Segment::Unknown => {}
            }
        }
        serde_problem(path, node, error.inner().message())
    })
}

/// The problem a serde message describes (serde's own wording of `missing_field`,
/// `unknown_field` and `invalid_type`), at `path`, where the tree holds `found`.
fn serde_problem(path: String, found: Option<&toml::Value>, message: &str) -> Problem {
    if let Some(field) = message
        .strip_prefix("missing field `")
        .and_then(|rest| rest.strip_suffix('`'))
    {
        return Problem::new(
            Some(join(&path, field)),
            ConfigErrorKind::Missing { note: None },
        );
    }
    if message.starts_with("unknown field `") {
        // "…, expected `a`", "…, expected `a` or `b`", "…, expected one of `a`, `b`", or
        // "…, there are no fields": the names are between the backticks after the key's.
        let names = message
            .rsplit_once("`, expected ")
            .map_or("", |(_, names)| names);
        let expected = names
            .split('`')
            .skip(1)
            .step_by(2)
            .map(str::to_owned)
            .collect();
        return Problem::new(Some(path), ConfigErrorKind::UnknownKey { expected });
    }
    if let Some((_, expected)) = message
        .strip_prefix("invalid type: ")
        .and_then(|rest| rest.rsplit_once(", expected "))
    {
        let (expected, wants) = match expected {
            "i64" => ("an integer", Some(Wants::Integer)),
            "a boolean" => ("true or false", Some(Wants::Boolean)),
            "a sequence" => ("an array", Some(Wants::Array)),
            "a map" => ("a table", None),
            other if other.starts_with("struct ") => ("a table", None),
            other => (other, None),
        };
        let got = found.map_or_else(|| "nothing".to_owned(), describe);
        return Problem {
            wants,
            ..Problem::invalid(&path, expected, &got)
        };
    }
    Problem::new(Some(path), ConfigErrorKind::Other(message.to_owned()))
}

#[cfg(test)]
mod span_tests {
    use super::*;

    #[test]
    fn spans_of_time() {
        assert_eq!(parse_span("30d"), Some(Duration::from_secs(30 * 86_400)));
        assert_eq!(parse_span("90s"), Some(Duration::from_secs(90)));
        for bad in [
            "",
            "d",
            "5",
            "5é",
            "é",
            "-5d",
            "5 d",
            "1.5h",
            "99999999999999999999d",
        ] {
            assert_eq!(parse_span(bad), None, "{bad:?}");
        }
        assert!(matches!(StartTime::parse("-7d"), Some(StartTime::Ago(_))));
        assert!(matches!(
            StartTime::parse("2026-11-01T00:00:00Z"),
            Some(StartTime::At(_))
        ));
        assert_eq!(StartTime::parse("yesterday"), None);
    }
}

#[cfg(test)]
mod tests {
    use time::macros::datetime;

    use super::*;

    /// The keys of an `[[accounts]]` table, in the order errors list them.
    const ACCOUNT_KEYS: &str = "name, token_file, token_env, base_url, region, ca_file, streams, api_version, start_time, end_time, v3_page_size_param, v3_page_token_param, page_size, poll_interval_secs, request_timeout_secs, max_pending_pages, max_response_bytes, requests_per_minute, requests_per_hour, retry_max_secs, unauthorized_retry_secs, on_invalid_cursor";

    const VALID: &str = r#"
[state]
path = "/var/lib/op-events-forwarder/state.db"

[[accounts]]
name = "acme"
token_file = "/run/token"
base_url = "https://events.1password.com"

[[sinks]]
name = "archive"
type = "file"
path = "/var/log/op-events/{stream}.ndjson"
"#;

    fn parse(toml: &str) -> Result<Config, ConfigError> {
        from_toml_str("test.toml", toml, &[])
    }

    fn parse_env(toml: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(name, value)| (name.to_string(), value.to_string()))
            .collect();
        from_toml_str("test.toml", toml, &env)
    }

    /// `VALID` with `from` replaced by `to` (which must change it).
    fn edit(from: &str, to: &str) -> String {
        assert!(VALID.contains(from), "{from:?} is not in VALID");
        VALID.replacen(from, to, 1)
    }

    #[track_caller]
    fn check_err(toml: &str, expected: &str) {
        match parse(toml) {
            Ok(config) => panic!("expected the error {expected:?}, parsed {config:#?}"),
            Err(error) => assert_eq!(error.to_string(), expected),
        }
    }

    #[track_caller]
    fn check_env_err(toml: &str, env: &[(&str, &str)], expected: &str) {
        match parse_env(toml, env) {
            Ok(config) => panic!("expected the error {expected:?}, parsed {config:#?}"),
            Err(error) => assert_eq!(error.to_string(), expected),
        }
    }

    #[test]
    fn shipped_example_parses() {
        let config = from_toml_str(
            "op-events-forwarder.toml",
            include_str!("../config/op-events-forwarder.toml"),
            &[],
        )
        .unwrap();
        assert_eq!(
            config.state.path,
            PathBuf::from("/var/lib/op-events-forwarder/state.db")
        );
        let account = &config.accounts[0];
        assert_eq!(account.name, "acme");
        assert_eq!(
            account.token,
            TokenSource::File(PathBuf::from(
                "/run/credentials/op-events-forwarder.service/token"
            ))
        );
        assert_eq!(account.base_url, None);
        assert_eq!(account.region, None);
        assert_eq!(account.streams, None);
        assert_eq!(account.api_version, ApiVersion::V2);
        assert_eq!(account.start_time, None);
        assert_eq!(
            config.sinks,
            vec![SinkConfig {
                name: "archive".to_owned(),
                kind: SinkKind::File(FileSinkConfig {
                    path: "/var/log/op-events/{stream}.ndjson".to_owned()
                }),
            }]
        );
    }

    #[test]
    fn shipped_syslog_example_parses() {
        let example = include_str!("../config/op-events-forwarder.toml");
        let block = example
            .split_once("# --- A syslog sink")
            .expect("the example has a syslog sink")
            .1;
        let uncommented: String = block
            .lines()
            .filter(|line| !line.starts_with("##"))
            .filter_map(|line| line.strip_prefix("# "))
            .filter(|line| line.starts_with("[[") || line.contains(" = "))
            .map(|line| format!("{line}\n"))
            .collect();
        let head = example.split("\n[[sinks]]").next().unwrap();
        let config = from_toml_str(
            "op-events-forwarder.toml",
            &format!("{head}\n{uncommented}"),
            &[],
        )
        .unwrap();
        let SinkKind::Syslog(syslog) = &config.sinks[0].kind else {
            panic!("a syslog sink")
        };
        assert_eq!(config.sinks[0].name, "siem");
        assert_eq!(syslog.address, "siem.example.net:6514");
        assert_eq!(syslog.transport, SyslogTransport::Tls);
        assert_eq!(syslog.failed_signin_severity, Some(4));
        assert_eq!(syslog.procid.as_deref(), Some("-"));
        assert_eq!(syslog.sd_id.as_deref(), Some(DEFAULT_SD_ID));
        assert!(syslog.tls.client_auth.is_some());
    }

    #[test]
    fn shipped_demo_parses() {
        let config = from_toml_str("demo.toml", include_str!("../config/demo.toml"), &[]).unwrap();
        assert_eq!(config.state.path, PathBuf::from("./demo-state/state.db"));
        let account = &config.accounts[0];
        assert_eq!(
            account.token,
            TokenSource::Env("OP_EVENTS_FORWARDER_DEMO_TOKEN".to_owned())
        );
        assert_eq!(account.base_url.as_deref(), Some("http://127.0.0.1:8722"));
        assert_eq!(
            account.start_time,
            Some(StartTime::Ago(Duration::from_secs(2 * 86_400)))
        );
        let SinkKind::File(file) = &config.sinks[0].kind else {
            panic!("a file sink")
        };
        assert_eq!(
            file.path_for(&account.name, Stream::ItemUsages),
            PathBuf::from("./demo-output/itemusages.ndjson")
        );
    }

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
    fn loopback_http_base_urls_are_accepted() {
        for (url, normalized) in [
            ("http://127.0.0.1:8722", "http://127.0.0.1:8722"),
            ("http://127.1.2.3/", "http://127.1.2.3"),
            ("http://[::1]:8722/", "http://[::1]:8722"),
            ("HTTP://LocalHost:8722", "http://localhost:8722"),
            (
                "https://events.1password.eu/",
                "https://events.1password.eu",
            ),
        ] {
            let toml = edit("https://events.1password.com", url);
            assert_eq!(
                parse(&toml).unwrap().accounts[0].base_url.as_deref(),
                Some(normalized),
                "{url}"
            );
        }
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
    fn syntax_errors_give_the_position() {
        check_err(
            &edit("name = \"acme\"", "name = = \"acme\""),
            "test.toml: invalid TOML at line 6, column 8: extra `=`, expected nothing",
        );
        check_err(
            &edit("name = \"acme\"", "name = \"acme"),
            "test.toml: invalid TOML at line 6, column 13: invalid basic string, expected `\"`",
        );
        check_err(
            &format!("{VALID}name = \"again\"\n"),
            "test.toml: invalid TOML at line 14, column 1: duplicate key",
        );
        // Columns count characters, not bytes.
        check_err(
            &edit("name = \"acme\"", "name = \"日本\" = 1"),
            "test.toml: invalid TOML at line 6, column 13: unexpected key or value, expected newline, `#`",
        );
    }

    #[test]
    fn numbers_beyond_64_bits_give_the_key_and_the_position() {
        let integer = "the integer does not fit in 64 bits (TOML integers are from -9223372036854775808 to \
                       9223372036854775807)";
        check_err(
            &edit(
                "name = \"acme\"",
                "name = \"acme\"\npage_size = 99999999999999999999",
            ),
            &format!(
                "test.toml: accounts[0].page_size: invalid TOML at line 7, column 13: {integer}"
            ),
        );
        check_err(
            &edit(
                "name = \"acme\"",
                "name = \"acme\"\npage_size = -9223372036854775809",
            ),
            &format!(
                "test.toml: accounts[0].page_size: invalid TOML at line 7, column 13: {integer}"
            ),
        );
        check_err(
            &edit(
                "name = \"acme\"",
                "name = \"acme\"\npage_size = 0x1_0000_0000_0000_0000",
            ),
            &format!(
                "test.toml: accounts[0].page_size: invalid TOML at line 7, column 13: {integer}"
            ),
        );
        check_err(
            &with_syslog(
                "address = \"h:514\"\ntransport = \"tcp\"\nstream_severity = { itemusages = 1, \"sign in\" = 99999999999999999999 }",
            ),
            &format!(
                "test.toml: sinks[0].stream_severity.\"sign in\": invalid TOML at line 15, column 49: {integer}"
            ),
        );
        check_err(
            &edit("name = \"acme\"", "name = \"acme\"\nstreams = [1, 1e999]"),
            "test.toml: accounts[0].streams[1]: invalid TOML at line 7, column 15: the number does not fit in a \
             64-bit float",
        );
        // The largest integer is read, and judged by the key's range.
        check_err(
            &edit(
                "name = \"acme\"",
                "name = \"acme\"\npage_size = 9223372036854775807",
            ),
            "test.toml: accounts[0].page_size: expected an integer from 1 to 1000, got 9223372036854775807",
        );
    }

    #[test]
    fn unknown_keys() {
        check_err(
            &format!("logging = \"debug\"\n{VALID}"),
            "test.toml: logging: unknown key (expected one of state, accounts, sinks)",
        );
        check_err(
            &edit("[state]\n", "[state]\ndir = \"/var/lib\"\n"),
            "test.toml: state.dir: unknown key (expected one of path, max_outbox_bytes)",
        );
        check_err(
            &edit("name = \"acme\"", "name = \"acme\"\npage_sise = 10"),
            &format!(
                "test.toml: accounts[0].page_sise: unknown key (expected one of {ACCOUNT_KEYS})"
            ),
        );
        check_err(
            &format!("{VALID}format = \"ndjson\"\n"),
            "test.toml: sinks[0].format: unknown key (expected one of type, name, path)",
        );
    }

    #[test]
    fn missing_keys() {
        check_err(
            &edit(
                "[state]\npath = \"/var/lib/op-events-forwarder/state.db\"\n",
                "",
            ),
            "test.toml: state: missing",
        );
        check_err(
            &edit("path = \"/var/lib/op-events-forwarder/state.db\"\n", ""),
            "test.toml: state.path: missing",
        );
        check_err(
            &edit("name = \"acme\"\n", ""),
            "test.toml: accounts[0].name: missing",
        );
        check_err(
            &format!("{VALID}\n[[sinks]]\nname = \"other\"\ntype = \"file\"\n"),
            "test.toml: sinks[1].path: missing (required for type \"file\")",
        );
        check_err(
            &edit("name = \"archive\"\n", ""),
            "test.toml: sinks[0].name: missing",
        );
        check_err(
            &edit("type = \"file\"\n", ""),
            "test.toml: sinks[0].type: missing (expected one of file, syslog)",
        );
    }

    #[test]
    fn wrong_types() {
        check_err(
            &edit("name = \"acme\"", "name = \"acme\"\npage_size = \"10\""),
            "test.toml: accounts[0].page_size: expected an integer, got \"10\"",
        );
        check_err(
            &edit(
                "name = \"acme\"",
                "name = \"acme\"\npoll_interval_secs = 2.5",
            ),
            "test.toml: accounts[0].poll_interval_secs: expected an integer, got 2.5",
        );
        check_err(
            &edit("name = \"acme\"", "name = 7"),
            "test.toml: accounts[0].name: expected a string, got 7",
        );
        check_err(
            &edit(
                "name = \"acme\"",
                "name = \"acme\"\nstreams = \"auditevents\"",
            ),
            "test.toml: accounts[0].streams: expected an array, got \"auditevents\"",
        );
        check_err(
            &edit(
                "name = \"acme\"",
                "name = \"acme\"\nstreams = [\"auditevents\", 3]",
            ),
            "test.toml: accounts[0].streams[1]: expected a string, got 3",
        );
        check_err(
            &edit("[[accounts]]", "[accounts]"),
            "test.toml: accounts: expected an array, got a table",
        );
        check_err(
            &format!(
                "state = \"/tmp/x\"\n{}",
                VALID.replacen(
                    "[state]\npath = \"/var/lib/op-events-forwarder/state.db\"\n",
                    "",
                    1
                )
            ),
            "test.toml: state: expected a table, got \"/tmp/x\"",
        );
        check_err(
            &edit("type = \"file\"", "type = true"),
            "test.toml: sinks[0].type: expected a string, got true",
        );
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
    fn bad_base_urls() {
        let check_url = |url: &str, expected: &str| {
            check_err(
                &edit("https://events.1password.com", url),
                &format!("test.toml: accounts[0].base_url: expected {expected}, got \"{url}\""),
            );
        };
        let scheme = "an https:// URL (or http:// to a loopback host)";
        check_url("events.1password.com", scheme);
        check_url("ftp://events.1password.com", scheme);
        let loopback = "https:// (http:// is allowed only to 127.0.0.0/8, ::1 or localhost)";
        check_url("http://events.1password.com", loopback);
        check_url("http://10.0.0.1:8722", loopback);
        check_url("http://[::2]:8722", loopback);
        check_url("http://localhost.example.com", loopback);
        let no_path = "a URL without a path, query or fragment (like https://events.1password.com)";
        check_url("https://events.1password.com/api/v2", no_path);
        check_url("https://events.1password.com?region=us", no_path);
        check_url("https://events.1password.com//", no_path);
        let form = "a URL of the form https://host or https://host:port";
        check_url("https://", form);
        check_url("https://:8722", form);
        check_url("https://events.1password.com:", form);
        check_url("https://events.1password.com:99999", form);
        check_url("https://user@events.1password.com", form);
        check_url("https://[::1", form);
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
    fn bad_names() {
        check_err(
            &edit("name = \"acme\"", "name = \"acme corp\""),
            "test.toml: accounts[0].name: expected 1 to 64 characters from A-Z, a-z, 0-9, _ and -, got \"acme corp\"",
        );
        check_err(
            &edit("name = \"archive\"", "name = \"\""),
            "test.toml: sinks[0].name: expected 1 to 64 characters from A-Z, a-z, 0-9, _ and -, got \"\"",
        );
        let long = "a".repeat(65);
        check_err(
            &edit("name = \"acme\"", &format!("name = \"{long}\"")),
            &format!(
                "test.toml: accounts[0].name: expected 1 to 64 characters from A-Z, a-z, 0-9, _ and -, got \"{long}\""
            ),
        );
    }

    #[test]
    fn duplicate_names() {
        let second_account = "\n[[accounts]]\nname = \"acme\"\ntoken_env = \"T\"\nbase_url = \"https://events.1password.ca\"\n";
        check_err(
            &format!("{VALID}{second_account}"),
            "test.toml: accounts[1].name: duplicate account name \"acme\" (already at accounts[0].name)",
        );
        let sinks = "\n[[sinks]]\nname = \"other\"\ntype = \"file\"\npath = \"/a\"\n\n[[sinks]]\nname = \"archive\"\ntype = \"file\"\npath = \"/b\"\n";
        check_err(
            &format!("{VALID}{sinks}"),
            "test.toml: sinks[2].name: duplicate sink name \"archive\" (already at sinks[0].name)",
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

    #[test]
    fn paths_refuse_control_characters_and_show_them_escaped() {
        // TOML writes a NUL as \u0000; the error shows it as \0, never raw.
        for (from, to, key) in [
            ("/run/token", "/run/to\\u0000ken", "accounts[0].token_file"),
            (
                "/var/lib/op-events-forwarder/state.db",
                "/var/lib/\\u0000state.db",
                "state.path",
            ),
            (
                "/var/log/op-events/{stream}.ndjson",
                "/var/log/\\u001b[31m{stream}.ndjson",
                "sinks[0].path",
            ),
            ("/run/token", "/run/tok\\ten", "accounts[0].token_file"),
        ] {
            let shown = to.replace("\\u0000", "\\0").replace("\\u001b", "\\u{1b}");
            check_err(
                &edit(from, to),
                &format!(
                    "test.toml: {key}: expected a path without control characters, got \"{shown}\""
                ),
            );
        }
        check_err(
            &edit(
                "base_url = \"https://events.1password.com\"",
                "base_url = \"https://events.1password.com\"\nca_file = \"/etc/\\u0000ca.pem\"",
            ),
            "test.toml: accounts[0].ca_file: expected a path without control characters, got \"/etc/\\0ca.pem\"",
        );
        check_err(
            &with_syslog(
                "address = \"h:6514\"\ntransport = \"tls\"\nclient_cert = \"/c.pem\"\nclient_key = \"/c\\u0000.key\"",
            ),
            "test.toml: sinks[0].client_key: expected a path without control characters, got \"/c\\0.key\"",
        );
        // From an environment override too.
        check_env_err(
            VALID,
            &[("OP_EVENTS_FORWARDER__STATE__PATH", "/tmp/a\u{7f}.db")],
            "test.toml: state.path (from OP_EVENTS_FORWARDER__STATE__PATH): expected a path without control \
             characters, got \"/tmp/a\\u{7f}.db\"",
        );
    }

    #[test]
    fn paths_must_name_a_file() {
        let directory = |toml: &str, key: &str, path: &str| {
            check_err(
                toml,
                &format!(
                    "test.toml: {key}: expected the path of a file, not of a directory, got \"{path}\""
                ),
            );
        };
        for path in [
            "/",
            "/var/log/",
            "/var/log/{stream}/",
            "/var/log/.",
            "/var/log/{account}/..",
        ] {
            directory(
                &edit("/var/log/op-events/{stream}.ndjson", path),
                "sinks[0].path",
                path,
            );
        }
        directory(
            &edit("/var/lib/op-events-forwarder/state.db", "/var/lib/"),
            "state.path",
            "/var/lib/",
        );
        directory(
            &edit("/run/token", "/run/"),
            "accounts[0].token_file",
            "/run/",
        );
        directory(
            &with_syslog("address = \"h:6514\"\ntransport = \"tls\"\nca_file = \"/etc/ssl/\""),
            "sinks[0].ca_file",
            "/etc/ssl/",
        );
        // A dot inside a name is fine.
        parse(&edit(
            "/var/log/op-events/{stream}.ndjson",
            "./out/.{stream}",
        ))
        .unwrap();
    }

    #[test]
    fn state_must_be_a_file_on_disk() {
        for path in [
            ":memory:",
            "",
            "file::memory:",
            "file::memory:?cache=shared",
            "file:state.db?mode=memory&cache=shared",
            "file:/tmp/x.db?vfs=memdb",
            "file:",
            "file:?mode=rwc",
            "file:/var/lib/state.db?mode=rwc",
        ] {
            check_err(
                &edit("/var/lib/op-events-forwarder/state.db", path),
                &format!(
                    "test.toml: state.path: expected the path of a file on disk, so that cursors survive restarts \
                     (not an in-memory or temporary SQLite database, nor an SQLite file: URI), got \"{path}\""
                ),
            );
        }
        for path in ["./memory.db", "./file:state.db", "/tmp/:memory:"] {
            let config = parse(&edit("/var/lib/op-events-forwarder/state.db", path)).unwrap();
            assert_eq!(config.state.path, PathBuf::from(path));
        }
    }

    #[test]
    fn quoted_values_are_escaped_and_cut() {
        assert_eq!(quote("plain"), "\"plain\"");
        assert_eq!(quote("a\0b\u{1b}[31m\n'\""), r#""a\0b\u{1b}[31m\n'\"""#);
        let eighty = "x".repeat(80);
        assert_eq!(quote(&eighty), format!("\"{eighty}\""));
        assert_eq!(quote(&format!("{eighty}y")), format!("\"{eighty}…\""));
        // Escapes count as written: 40 NULs are 80 characters, a 41st is cut.
        assert_eq!(quote(&"\0".repeat(40)), format!("\"{}\"", "\\0".repeat(40)));
        assert_eq!(
            quote(&"\0".repeat(41)),
            format!("\"{}…\"", "\\0".repeat(40))
        );
        // Never in the middle of a character or an escape.
        assert_eq!(
            quote(&format!("{}é\u{1b}", "x".repeat(79))),
            format!("\"{}é…\"", "x".repeat(79))
        );

        // A megabyte value is quoted by its first 80 characters.
        let huge = "r".repeat(1 << 20);
        let toml = edit(
            "base_url = \"https://events.1password.com\"",
            &format!("region = \"{huge}\""),
        );
        check_err(
            &toml,
            &format!(
                "test.toml: accounts[0].region: unknown region \"{}…\" (expected one of us, ca, eu, ent)",
                "r".repeat(80)
            ),
        );
        check_err(
            &edit("name = \"acme\"", &format!("name = \"{huge}\"")),
            &format!(
                "test.toml: accounts[0].name: expected 1 to 64 characters from A-Z, a-z, 0-9, _ and -, got \"{}…\"",
                "r".repeat(80)
            ),
        );
        check_env_err(
            VALID,
            &[("OP_EVENTS_FORWARDER__ACCOUNTS__0__PAGE_SIZE", &huge)],
            &format!(
                "test.toml: accounts[0].page_size (from OP_EVENTS_FORWARDER__ACCOUNTS__0__PAGE_SIZE): expected an \
                 integer, got \"{}…\"",
                "r".repeat(80)
            ),
        );
        // Values named in closed sets are escaped too, and so are keys that are not bare.
        check_err(
            &edit(
                "base_url = \"https://events.1password.com\"",
                "region = \"eu\\u001b[31m\"",
            ),
            "test.toml: accounts[0].region: unknown region \"eu\\u{1b}[31m\" (expected one of us, ca, eu, ent)",
        );
        check_err(
            &edit("name = \"acme\"", "name = \"acme\"\n\"a\\u001b[2Jb\" = 1"),
            &format!(
                "test.toml: accounts[0].\"a\\u{{1b}}[2Jb\": unknown key (expected one of {ACCOUNT_KEYS})"
            ),
        );
    }

    #[test]
    fn path_templates() {
        let with = |path: &str| edit("/var/log/op-events/{stream}.ndjson", path);
        let config = parse(&with("/var/log/{account}/{stream}.ndjson")).unwrap();
        let SinkKind::File(file) = &config.sinks[0].kind else {
            panic!("a file sink")
        };
        assert_eq!(
            file.path_for("acme", Stream::AuditEvents),
            PathBuf::from("/var/log/acme/auditevents.ndjson")
        );
        parse(&with("/var/log/all.ndjson")).unwrap();
        check_err(
            &with("/var/log/{stream}-{date}.ndjson"),
            "test.toml: sinks[0].path: unknown placeholder \"{date}\" (expected one of {stream}, {account})",
        );
        check_err(
            &with("/var/log/{Stream}.ndjson"),
            "test.toml: sinks[0].path: unknown placeholder \"{Stream}\" (expected one of {stream}, {account})",
        );
        let malformed = |path: &str| {
            check_err(
                &with(path),
                &format!(
                    "test.toml: sinks[0].path: expected a path whose only braces are the placeholders {{stream}} \
                     and {{account}}, got \"{path}\""
                ),
            );
        };
        malformed("/var/log/{stream.ndjson");
        malformed("/var/log/stream}.ndjson");
        malformed("/var/log/{{stream}}.ndjson");
    }

    #[test]
    fn sink_types() {
        check_err(
            &edit("type = \"file\"", "type = \"kafka\""),
            "test.toml: sinks[0].type: unknown sink type \"kafka\" (expected one of file, syslog)",
        );
        check_err(
            &format!("{VALID}\n[[sinks]]\nname = \"x\"\ntype = \"File\"\npath = \"/x\"\n"),
            "test.toml: sinks[1].type: unknown sink type \"File\" (expected one of file, syslog)",
        );
        check_err(
            &format!("sinks = 3\n{}", VALID.split("[[sinks]]").next().unwrap()),
            "test.toml: sinks: expected an array, got 3",
        );
    }

    const SYSLOG_KEYS: &str = "type, name, address, transport, format, framing, facility, severity, \
        stream_severity, failed_signin_severity, hostname, app_name, procid, structured_data, sd_id, bom, \
        max_message_bytes, timeout_secs, ca_file, server_name, client_cert, client_key, tls_insecure_skip_verify";

    /// The test config with its sink replaced by a syslog sink made of `lines`.
    fn with_syslog(lines: &str) -> String {
        let head = VALID.split("[[sinks]]").next().unwrap();
        format!("{head}[[sinks]]\nname = \"siem\"\ntype = \"syslog\"\n{lines}\n")
    }

    fn syslog(lines: &str) -> SyslogSinkConfig {
        let config = parse(&with_syslog(lines)).unwrap();
        let SinkKind::Syslog(syslog) = &config.sinks[0].kind else {
            panic!("a syslog sink")
        };
        (**syslog).clone()
    }

    #[test]
    fn syslog_defaults() {
        let config = syslog("address = \"siem.example.net:6514\"\ntransport = \"tls\"");
        assert_eq!(
            config,
            SyslogSinkConfig {
                address: "siem.example.net:6514".into(),
                host: "siem.example.net".into(),
                port: 6514,
                transport: SyslogTransport::Tls,
                format: SyslogFormat::Rfc5424,
                framing: SyslogFraming::OctetCounting,
                facility: 10,
                severity: 6,
                stream_severity: Vec::new(),
                failed_signin_severity: None,
                hostname: None,
                app_name: "op-events-forwarder".into(),
                procid: None,
                sd_id: None,
                bom: false,
                max_message_bytes: None,
                timeout: Duration::from_secs(30),
                tls: SyslogTlsConfig::default(),
            }
        );
        let udp = syslog("address = \"[::1]:514\"\ntransport = \"udp\"");
        assert_eq!((udp.host.as_str(), udp.port), ("::1", 514));
        assert_eq!(udp.max_message_bytes, Some(8192));
        let ip = syslog("address = \"192.0.2.7:601\"\ntransport = \"tcp\"");
        assert_eq!((ip.host.as_str(), ip.port), ("192.0.2.7", 601));
        let relp = syslog("address = \"loghost:2514\"\ntransport = \"relp\"");
        assert_eq!(relp.transport, SyslogTransport::Relp);
        assert_eq!(relp.max_message_bytes, None);
    }

    #[test]
    fn syslog_every_key() {
        let config = syslog(
            r#"address = "localhost:6514"
transport = "tls"
format = "rfc3164"
framing = "lf"
facility = "local3"
severity = 5
stream_severity = { signinattempts = "notice", itemusages = 7 }
failed_signin_severity = "warning"
hostname = "forwarder-1"
app_name = "op"
procid = "-"
structured_data = true
sd_id = "opev@12345.1"
max_message_bytes = 65536
timeout_secs = 5
ca_file = "/etc/ca.pem"
server_name = "siem.internal"
client_cert = "/etc/client.pem"
client_key = "/etc/client.key"
"#,
        );
        assert_eq!(config.format, SyslogFormat::Rfc3164);
        assert_eq!(config.framing, SyslogFraming::Lf);
        assert_eq!((config.facility, config.severity), (19, 5));
        assert_eq!(
            config.stream_severity,
            [(Stream::ItemUsages, 7), (Stream::SignInAttempts, 5)]
        );
        assert_eq!(config.failed_signin_severity, Some(4));
        assert_eq!(config.hostname.as_deref(), Some("forwarder-1"));
        assert_eq!(config.app_name, "op");
        assert_eq!(config.procid.as_deref(), Some("-"));
        assert_eq!(config.sd_id.as_deref(), Some("opev@12345.1"));
        assert_eq!(config.max_message_bytes, Some(65536));
        assert_eq!(config.timeout, Duration::from_secs(5));
        assert_eq!(
            config.tls,
            SyslogTlsConfig {
                ca_file: Some("/etc/ca.pem".into()),
                server_name: Some("siem.internal".into()),
                client_auth: Some(("/etc/client.pem".into(), "/etc/client.key".into())),
                insecure_skip_verify: false,
            }
        );
        let config =
            syslog("address = \"h:1\"\ntransport = \"tcp\"\nstructured_data = true\nfacility = 0");
        assert_eq!(config.sd_id.as_deref(), Some(DEFAULT_SD_ID));
        assert_eq!(config.facility, 0);
        // Environment overrides carry numbers as strings.
        let config = parse_env(
            &with_syslog("address = \"h:1\"\ntransport = \"udp\""),
            &[
                ("OP_EVENTS_FORWARDER__SINKS__0__FACILITY", "17"),
                ("OP_EVENTS_FORWARDER__SINKS__0__SEVERITY", "err"),
                ("OP_EVENTS_FORWARDER__SINKS__0__MAX_MESSAGE_BYTES", "1200"),
                ("OP_EVENTS_FORWARDER__SINKS__0__STRUCTURED_DATA", "true"),
                // A key that takes a string keeps one, digits and all.
                ("OP_EVENTS_FORWARDER__SINKS__0__PROCID", "1234"),
            ],
        )
        .unwrap();
        let SinkKind::Syslog(config) = &config.sinks[0].kind else {
            panic!("a syslog sink")
        };
        assert_eq!((config.facility, config.severity), (17, 3));
        assert_eq!(config.max_message_bytes, Some(1200));
        assert_eq!(config.sd_id.as_deref(), Some(DEFAULT_SD_ID));
        assert_eq!(config.procid.as_deref(), Some("1234"));
        check_env_err(
            &with_syslog("address = \"h:1\"\ntransport = \"udp\""),
            &[("OP_EVENTS_FORWARDER__SINKS__0__BOM", "yes")],
            "test.toml: sinks[0].bom (from OP_EVENTS_FORWARDER__SINKS__0__BOM): expected true or false, got \"yes\"",
        );
    }

    #[test]
    fn syslog_errors() {
        let base = "address = \"h:514\"\ntransport = \"tcp\"";
        let check =
            |extra: &str, want: &str| check_err(&with_syslog(&format!("{base}\n{extra}")), want);
        check_err(
            &with_syslog("transport = \"tcp\""),
            "test.toml: sinks[0].address: missing (required for type \"syslog\")",
        );
        check_err(
            &with_syslog("address = \"h:514\""),
            "test.toml: sinks[0].transport: missing (required for type \"syslog\")",
        );
        let address = |address: &str| {
            check_err(
                &with_syslog(&format!("address = \"{address}\"\ntransport = \"tcp\"")),
                &format!(
                    "test.toml: sinks[0].address: expected host:port (a name, an IPv4 address or a bracketed IPv6 \
                     address, and a port from 1 to 65535), got \"{address}\""
                ),
            );
        };
        address("siem.example.net");
        address("siem.example.net:");
        address("siem.example.net:0");
        address("siem.example.net:65536");
        address("::1:514");
        address("[::1]");
        address("[nope]:514");
        address("tcp://siem:514");
        address(":514");
        check(
            "max_message_bytes = 100",
            "test.toml: sinks[0].max_message_bytes: expected an integer from 480 to 16777216, got 100",
        );
        check_err(
            &with_syslog("address = \"h:514\"\ntransport = \"udp\"\nmax_message_bytes = 70000"),
            "test.toml: sinks[0].max_message_bytes: expected an integer from 480 to 65507, got 70000",
        );
        check_err(
            &with_syslog("address = \"h:514\"\ntransport = \"quic\""),
            "test.toml: sinks[0].transport: unknown transport \"quic\" (expected one of udp, tcp, tls, relp)",
        );
        check(
            "format = \"json\"",
            "test.toml: sinks[0].format: unknown format \"json\" (expected one of rfc5424, rfc3164)",
        );
        check(
            "framing = \"octet\"",
            "test.toml: sinks[0].framing: unknown framing \"octet\" (expected one of octet-counting, lf)",
        );
        check_err(
            &with_syslog("address = \"h:514\"\ntransport = \"udp\"\nframing = \"lf\""),
            "test.toml: sinks[0].framing: expected no framing with transport = \"udp\" (one message per datagram), \
             got \"lf\"",
        );
        check_err(
            &with_syslog(
                "address = \"h:2514\"\ntransport = \"relp\"\nframing = \"octet-counting\"",
            ),
            "test.toml: sinks[0].framing: expected no framing with transport = \"relp\" (RELP frames each message \
             itself), got \"octet-counting\"",
        );
        check_err(
            &with_syslog("address = \"h:2514\"\ntransport = \"relp\"\nserver_name = \"h\""),
            "test.toml: sinks[0].server_name: expected no TLS setting unless transport = \"tls\", got transport = \
             \"relp\"",
        );
        check(
            "facility = \"authpriv2\"",
            "test.toml: sinks[0].facility: unknown name \"authpriv2\" (expected one of kern, user, mail, daemon, \
             auth, syslog, lpr, news, uucp, cron, authpriv, ftp, ntp, security, console, solaris-cron, local0, \
             local1, local2, local3, local4, local5, local6, local7, a number from 0 to 23)",
        );
        check(
            "facility = 24",
            "test.toml: sinks[0].facility: expected an integer from 0 to 23, got 24",
        );
        check(
            "severity = \"warn\"",
            "test.toml: sinks[0].severity: unknown name \"warn\" (expected one of emerg, alert, crit, err, \
             warning, notice, info, debug, a number from 0 to 7)",
        );
        check(
            "severity = true",
            "test.toml: sinks[0].severity: expected a name or a number, got true",
        );
        check(
            "stream_severity = { audit = \"info\" }",
            "test.toml: sinks[0].stream_severity.audit: unknown stream \"audit\" (expected one of auditevents, \
             itemusages, signinattempts, audit_v3)",
        );
        check(
            "stream_severity = { auditevents = 9 }",
            "test.toml: sinks[0].stream_severity.auditevents: expected an integer from 0 to 7, got 9",
        );
        check(
            "failed_signin_severity = -1",
            "test.toml: sinks[0].failed_signin_severity: expected an integer from 0 to 7, got -1",
        );
        check(
            "hostname = \"my host\"",
            "test.toml: sinks[0].hostname: expected 1 to 255 printable US-ASCII characters without spaces, got \
             \"my host\"",
        );
        check(
            &format!("app_name = \"{}\"", "a".repeat(49)),
            &format!(
                "test.toml: sinks[0].app_name: expected 1 to 48 printable US-ASCII characters without spaces, got \
                 \"{}\"",
                "a".repeat(49)
            ),
        );
        check(
            "procid = \"\"",
            "test.toml: sinks[0].procid: expected 1 to 128 printable US-ASCII characters without spaces, got \"\"",
        );
        check(
            "sd_id = \"op@1\"",
            "test.toml: sinks[0].sd_id: expected structured_data = true alongside it (the SD-ID names the \
             structured data element), got \"op@1\"",
        );
        for sd_id in [
            "opevents", "op ev@1", "op@", "@1", "op@x", "op=x@1", "a@1@2",
        ] {
            check(
                &format!("structured_data = true\nsd_id = \"{sd_id}\""),
                &format!(
                    "test.toml: sinks[0].sd_id: expected an SD-ID of the form name@<private enterprise number>, \
                     at most 32 printable US-ASCII characters without =, ], \" or spaces (like op-events@32473), \
                     got \"{sd_id}\""
                ),
            );
        }
        check(
            "format = \"rfc3164\"\nbom = true",
            "test.toml: sinks[0].bom: expected false with format = \"rfc3164\" (the byte order mark is an RFC 5424 \
             feature), got true",
        );
        check(
            "timeout_secs = 0",
            "test.toml: sinks[0].timeout_secs: expected an integer from 1 to 600, got 0",
        );
        check(
            "ca_file = \"/ca.pem\"",
            "test.toml: sinks[0].ca_file: expected no TLS setting unless transport = \"tls\", got transport = \"tcp\"",
        );
        check(
            "tls_insecure_skip_verify = true",
            "test.toml: sinks[0].tls_insecure_skip_verify: expected no TLS setting unless transport = \"tls\", got \
             transport = \"tcp\"",
        );
        let tls = |extra: &str, want: &str| {
            check_err(
                &with_syslog(&format!(
                    "address = \"h:6514\"\ntransport = \"tls\"\n{extra}"
                )),
                want,
            );
        };
        tls(
            "client_cert = \"/c.pem\"",
            "test.toml: sinks[0].client_key: missing (required with client_cert)",
        );
        tls(
            "client_key = \"/c.key\"",
            "test.toml: sinks[0].client_cert: missing (required with client_key)",
        );
        tls(
            "ca_file = \"\"",
            "test.toml: sinks[0].ca_file: expected a non-empty path, got \"\"",
        );
        tls(
            "server_name = \"a b\"",
            "test.toml: sinks[0].server_name: expected a DNS name or an IP address, got \"a b\"",
        );
        tls(
            "tls_insecure_skip_verify = true\nca_file = \"/ca.pem\"",
            "test.toml: sinks[0].tls_insecure_skip_verify: expected false when ca_file or server_name is set (they \
             configure the verification it turns off), got true",
        );
        check(
            "path = \"/x\"",
            &format!("test.toml: sinks[0].path: unknown key (expected one of {SYSLOG_KEYS})"),
        );
    }

    #[test]
    fn no_accounts_or_sinks() {
        check_err(
            "[state]\npath = \"/x.db\"\n",
            "test.toml: accounts: expected at least one [[accounts]] table, got none",
        );
        let no_sinks = VALID.split("[[sinks]]").next().unwrap();
        check_err(
            no_sinks,
            "test.toml: sinks: expected at least one [[sinks]] table, got none",
        );
        check_err("", "test.toml: state: missing");
    }

    #[test]
    fn env_overrides_scalars() {
        let config = parse_env(
            VALID,
            &[
                ("OP_EVENTS_FORWARDER__STATE__PATH", "/tmp/x.db"),
                ("OP_EVENTS_FORWARDER__ACCOUNTS__0__POLL_INTERVAL_SECS", "5"),
                ("OP_EVENTS_FORWARDER__ACCOUNTS__0__PAGE_SIZE", " 250 "),
                (
                    "OP_EVENTS_FORWARDER__ACCOUNTS__0__STREAMS",
                    "itemusages, auditevents",
                ),
                ("OP_EVENTS_FORWARDER__ACCOUNTS__0__START_TIME", "-7d"),
                (
                    "OP_EVENTS_FORWARDER__SINKS__0__PATH",
                    "/srv/{account}-{stream}.ndjson",
                ),
                // Not overrides: no double underscore after the prefix, or another prefix.
                ("OP_EVENTS_FORWARDER_DEMO_TOKEN", "sim-token"),
                ("OP_EVENTS_FORWARDERX__STATE__PATH", "/nope"),
                ("PATH", "/usr/bin"),
            ],
        )
        .unwrap();
        assert_eq!(config.state.path, PathBuf::from("/tmp/x.db"));
        let account = &config.accounts[0];
        assert_eq!(account.poll_interval, Duration::from_secs(5));
        assert_eq!(account.page_size, 250);
        assert_eq!(
            account.streams,
            Some(vec![Stream::ItemUsages, Stream::AuditEvents])
        );
        assert_eq!(
            account.start_time,
            Some(StartTime::Ago(Duration::from_secs(7 * 86_400)))
        );
        assert_eq!(
            config.sinks[0].kind,
            SinkKind::File(FileSinkConfig {
                path: "/srv/{account}-{stream}.ndjson".to_owned()
            })
        );
    }

    #[test]
    fn env_overrides_fill_in_and_replace() {
        // An override can supply a key the file leaves out, even a whole table's worth.
        let without_state = VALID.replacen(
            "[state]\npath = \"/var/lib/op-events-forwarder/state.db\"\n",
            "",
            1,
        );
        let config = parse_env(
            &without_state,
            &[("OP_EVENTS_FORWARDER__STATE__PATH", "/tmp/y.db")],
        )
        .unwrap();
        assert_eq!(config.state.path, PathBuf::from("/tmp/y.db"));
        // Switching the token source to the environment needs the file's token_file gone.
        check_env_err(
            VALID,
            &[("OP_EVENTS_FORWARDER__ACCOUNTS__0__TOKEN_ENV", "OP_TOKEN")],
            "test.toml: accounts[0]: expected exactly one of token_file or token_env, got both",
        );
    }

    #[test]
    fn env_override_errors() {
        check_env_err(
            VALID,
            &[("OP_EVENTS_FORWARDER__ACCOUNTS__0__POLL_INTERVAL", "5")],
            &format!(
                "test.toml: accounts[0].poll_interval (from OP_EVENTS_FORWARDER__ACCOUNTS__0__POLL_INTERVAL): \
                 unknown key (expected one of {ACCOUNT_KEYS})"
            ),
        );
        check_env_err(
            VALID,
            &[("OP_EVENTS_FORWARDER__LOGGING__LEVEL", "debug")],
            "test.toml: logging (from OP_EVENTS_FORWARDER__LOGGING__LEVEL): unknown key (expected one of state, \
             accounts, sinks)",
        );
        check_env_err(
            VALID,
            &[("OP_EVENTS_FORWARDER__SINKS__0__FORMAT", "json")],
            "test.toml: sinks[0].format (from OP_EVENTS_FORWARDER__SINKS__0__FORMAT): unknown key (expected one of \
             type, name, path)",
        );
        check_env_err(
            VALID,
            &[("OP_EVENTS_FORWARDER__ACCOUNTS__0__PAGE_SIZE", "ten")],
            "test.toml: accounts[0].page_size (from OP_EVENTS_FORWARDER__ACCOUNTS__0__PAGE_SIZE): expected an \
             integer, got \"ten\"",
        );
        check_env_err(
            VALID,
            &[("OP_EVENTS_FORWARDER__ACCOUNTS__0__PAGE_SIZE", "5000")],
            "test.toml: accounts[0].page_size (from OP_EVENTS_FORWARDER__ACCOUNTS__0__PAGE_SIZE): expected an \
             integer from 1 to 1000, got 5000",
        );
        check_env_err(
            VALID,
            &[(
                "OP_EVENTS_FORWARDER__ACCOUNTS__0__STREAMS",
                "auditevents,audit",
            )],
            "test.toml: accounts[0].streams[1] (from OP_EVENTS_FORWARDER__ACCOUNTS__0__STREAMS): unknown stream \
             \"audit\" (expected one of auditevents, itemusages, signinattempts, audit_v3)",
        );
        check_env_err(
            VALID,
            &[("OP_EVENTS_FORWARDER__ACCOUNTS__1__POLL_INTERVAL_SECS", "5")],
            "test.toml: accounts[1] (from OP_EVENTS_FORWARDER__ACCOUNTS__1__POLL_INTERVAL_SECS): no such entry \
             (there is 1; an override can change an entry, not add one)",
        );
        check_env_err(
            "[state]\npath = \"/x.db\"\n",
            &[("OP_EVENTS_FORWARDER__ACCOUNTS__0__NAME", "acme")],
            "test.toml: accounts[0] (from OP_EVENTS_FORWARDER__ACCOUNTS__0__NAME): no such entry (there are 0; an \
             override can change an entry, not add one)",
        );
        check_env_err(
            VALID,
            &[("OP_EVENTS_FORWARDER__ACCOUNTS__NAME", "acme")],
            "test.toml: accounts (from OP_EVENTS_FORWARDER__ACCOUNTS__NAME): expected an array index (a number) as \
             the next level, got \"NAME\"",
        );
        check_env_err(
            VALID,
            &[("OP_EVENTS_FORWARDER__STATE__PATH__DIR", "/tmp")],
            "test.toml: state.path (from OP_EVENTS_FORWARDER__STATE__PATH__DIR): expected a table or an array (the \
             variable names a key inside it), got \"/var/lib/op-events-forwarder/state.db\"",
        );
        check_env_err(
            VALID,
            &[("OP_EVENTS_FORWARDER__STATE", "/tmp/x.db")],
            "test.toml: state (from OP_EVENTS_FORWARDER__STATE): expected a table, got \"/tmp/x.db\"",
        );
        check_env_err(
            VALID,
            &[("OP_EVENTS_FORWARDER__STATE____PATH", "/tmp/x.db")],
            "test.toml: OP_EVENTS_FORWARDER__STATE____PATH: expected key levels separated by __ (like \
             OP_EVENTS_FORWARDER__ACCOUNTS__0__POLL_INTERVAL_SECS), got an empty level",
        );
    }

    #[test]
    fn load_reads_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("forwarder.toml");
        std::fs::write(&path, VALID).unwrap();
        assert_eq!(load(&path).unwrap().accounts[0].name, "acme");

        let missing = dir.path().join("missing.toml");
        assert_eq!(
            load(&missing).unwrap_err().to_string(),
            format!(
                "{}: cannot read the file: No such file or directory (os error 2)",
                missing.display()
            )
        );

        std::fs::write(
            &path,
            edit("name = \"acme\"", "name = \"acme\"\npage_size = 5000"),
        )
        .unwrap();
        let error = load(&path).unwrap_err();
        assert_eq!(error.origin(), path.display().to_string());
        assert_eq!(error.key(), Some("accounts[0].page_size"));
        assert_eq!(error.env_var(), None);
        assert_eq!(
            error.kind(),
            &ConfigErrorKind::Invalid {
                expected: "an integer from 1 to 1000".to_owned(),
                got: "5000".to_owned()
            }
        );
        assert_eq!(
            error.to_string(),
            format!(
                "{}: accounts[0].page_size: expected an integer from 1 to 1000, got 5000",
                path.display()
            )
        );
    }

    /// A directory for [`load`], with a self-signed certificate and its key, and another key.
    struct Files {
        dir: tempfile::TempDir,
    }

    impl Files {
        fn new() -> Files {
            let dir = tempfile::tempdir().unwrap();
            let certified =
                rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
            let other = rcgen::KeyPair::generate().unwrap();
            for (name, contents) in [
                ("ca.pem", certified.cert.pem()),
                ("key.pem", certified.signing_key.serialize_pem()),
                ("other-key.pem", other.serialize_pem()),
                ("not-pem.pem", "hello\n".to_owned()),
                ("plain-file", String::new()),
            ] {
                std::fs::write(dir.path().join(name), contents).unwrap();
            }
            std::fs::create_dir(dir.path().join("a-dir")).unwrap();
            Files { dir }
        }

        fn path(&self, name: &str) -> String {
            self.dir.path().join(name).display().to_string()
        }

        /// Loads `toml`, with `@` standing for the directory.
        fn load(&self, toml: &str) -> Result<Config, ConfigError> {
            let path = self.dir.path().join("forwarder.toml");
            std::fs::write(&path, toml.replace('@', &self.path(""))).unwrap();
            load(&path)
        }

        #[track_caller]
        fn check_err(&self, toml: &str, expected: &str) {
            match self.load(toml) {
                Ok(config) => panic!("expected the error {expected:?}, loaded {config:#?}"),
                Err(error) => assert_eq!(
                    error.to_string(),
                    format!(
                        "{}forwarder.toml: {}",
                        self.path(""),
                        expected.replace('@', &self.path(""))
                    )
                ),
            }
        }
    }

    /// `VALID` with its state and output in `@`, and `extra` added to the account.
    fn valid_in_dir(extra: &str) -> String {
        edit("/var/lib/op-events-forwarder/state.db", "@state/state.db")
            .replace("/var/log/op-events/", "@out/")
            .replace(
                "base_url = \"https://events.1password.com\"",
                &format!("base_url = \"https://events.1password.com\"\n{extra}"),
            )
    }

    #[test]
    fn load_reads_the_ca_files_as_the_daemon_does() {
        let files = Files::new();
        let account = files.load(&valid_in_dir("ca_file = \"@ca.pem\"")).unwrap();
        assert_eq!(
            account.accounts[0].ca_file,
            Some(PathBuf::from(files.path("ca.pem")))
        );
        files.check_err(
            &valid_in_dir("ca_file = \"@missing.pem\""),
            "accounts[0].ca_file: \"@missing.pem\": cannot read the file: No such file or directory (os error 2)",
        );
        files.check_err(
            &valid_in_dir("ca_file = \"@not-pem.pem\""),
            "accounts[0].ca_file: \"@not-pem.pem\": no PEM certificate in the file",
        );
        files.check_err(
            &valid_in_dir("ca_file = \"@key.pem\""),
            "accounts[0].ca_file: \"@key.pem\": no PEM certificate in the file",
        );
        files.check_err(
            &valid_in_dir("ca_file = \"@a-dir\""),
            "accounts[0].ca_file: \"@a-dir\": cannot read the file: Is a directory (os error 21)",
        );
        // Parsing alone does not look at files.
        parse(&valid_in_dir("ca_file = \"/nonexistent/ca.pem\"")).unwrap();
    }

    #[test]
    fn load_reads_the_syslog_tls_files_as_the_daemon_does() {
        let files = Files::new();
        let syslog = |lines: &str| {
            let head = valid_in_dir("")
                .split("[[sinks]]")
                .next()
                .unwrap()
                .to_owned();
            format!(
                "{head}[[sinks]]\nname = \"siem\"\ntype = \"syslog\"\naddress = \"h:6514\"\ntransport = \"tls\"\n{lines}\n"
            )
        };
        files
            .load(&syslog(
                "ca_file = \"@ca.pem\"\nclient_cert = \"@ca.pem\"\nclient_key = \"@key.pem\"",
            ))
            .unwrap();
        files.check_err(
            &syslog("ca_file = \"@not-pem.pem\""),
            "sinks[0].ca_file: \"@not-pem.pem\": no PEM certificate in the file",
        );
        files.check_err(
            &syslog("client_cert = \"@missing.pem\"\nclient_key = \"@key.pem\""),
            "sinks[0].client_cert: \"@missing.pem\": cannot read the file: No such file or directory (os error 2)",
        );
        files.check_err(
            &syslog("client_cert = \"@key.pem\"\nclient_key = \"@key.pem\""),
            "sinks[0].client_cert: \"@key.pem\": no PEM certificate in the file",
        );
        files.check_err(
            &syslog("client_cert = \"@ca.pem\"\nclient_key = \"@ca.pem\""),
            "sinks[0].client_key: \"@ca.pem\": no PEM private key in the file",
        );
        files.check_err(
            &syslog("client_cert = \"@ca.pem\"\nclient_key = \"@other-key.pem\""),
            "sinks[0].client_key: \"@other-key.pem\": the private key does not belong to the certificate (the \
             first of client_cert)",
        );
    }

    #[test]
    fn load_refuses_directories_where_files_go() {
        let files = Files::new();
        std::fs::create_dir_all(files.dir.path().join("out/itemusages")).unwrap();
        let sink_path = |toml: String, path: &str| toml.replace("@out/{stream}.ndjson", path);
        // Every stream the account may read: those of the token when it names none.
        files.check_err(
            &sink_path(valid_in_dir(""), "@out/{stream}"),
            "sinks[0].path: \"@out/itemusages\": is a directory, not a file",
        );
        files
            .load(&sink_path(
                valid_in_dir("streams = [\"signinattempts\", \"audit_v3\"]"),
                "@out/{stream}",
            ))
            .unwrap();
        files.check_err(
            &sink_path(valid_in_dir(""), "@plain-file/{account}/{stream}.ndjson"),
            "sinks[0].path: \"@plain-file/acme/auditevents.ndjson\": \"@plain-file\" is a file, not a directory",
        );
        files.check_err(
            &valid_in_dir("").replace("@state/state.db", "@a-dir"),
            "state.path: \"@a-dir\": is a directory, not a file",
        );
        files.check_err(
            &valid_in_dir("").replace("@state/state.db", "@plain-file/state.db"),
            "state.path: \"@plain-file/state.db\": \"@plain-file\" is a file, not a directory",
        );
        // Missing directories are fine: the daemon creates them.
        files.load(&valid_in_dir("")).unwrap();
        assert!(
            !files.dir.path().join("state").exists(),
            "load creates nothing"
        );
    }

    #[test]
    fn errors_are_deterministic() {
        // Several unknown keys in one table: the first in key order is reported, every time.
        let toml = edit(
            "name = \"acme\"",
            "name = \"acme\"\nzeta = 1\nalpha = 2\nmid = 3",
        );
        for _ in 0..20 {
            check_err(
                &toml,
                &format!(
                    "test.toml: accounts[0].alpha: unknown key (expected one of {ACCOUNT_KEYS})"
                ),
            );
        }
    }
}
