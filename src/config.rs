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
//! sink type's parser (`sink/<type>/config.rs`), which reads it the same way; an account's raw
//! struct and validation are in `account/config.rs`. What they share is here: the error types,
//! and the checks of names, paths, integer ranges, base URLs and quoting.
//! Phase three, in [`load`] only, looks at the files the config names, each account and sink
//! checking its own: CA files, a client certificate and key are read as the daemon reads them,
//! and the state file and the file sinks' files must not be directories, so that `check-config`
//! refuses what `run` would.
//!
//! Every error names the file, the key path (like `accounts[0].page_size`), the environment
//! variable when the value came from one, what was expected and what was found.
//! The config holds no secret: only the path of the token file or the name of its variable.

use std::collections::HashMap;
use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::account::config::{AccountConfig, RawAccount};
use crate::sink::file::config::FileSinkConfig;
use crate::sink::http::config::HttpSinkConfig;
use crate::sink::syslog::config::SyslogSinkConfig;

/// The validated config of the whole daemon.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Where the daemon keeps cursors and the outbox.
    pub state: StateConfig,
    /// The 1Password accounts to read, at least one, names unique.
    pub accounts: Vec<AccountConfig>,
    /// Where events go, at least one, names unique.
    pub sinks: Vec<SinkConfig>,
    /// The admin endpoint (`[admin]`).
    pub admin: AdminConfig,
}

/// The `[admin]` table: the HTTP endpoint with `/metrics`, `/healthz`, `/readyz`, `/status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminConfig {
    /// `listen`: the address to serve on; `None` (`listen = ""`) turns the endpoint off.
    pub listen: Option<std::net::SocketAddr>,
    /// `sink_stall_secs`: how long a sink may fail before `/readyz` says not ready.
    pub sink_stall: std::time::Duration,
}

/// The admin endpoint's default address: loopback only, the port Prometheus' registry of
/// default ports lists for nothing else in this space.
pub const ADMIN_LISTEN_DEFAULT: &str = "127.0.0.1:9464";

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            listen: ADMIN_LISTEN_DEFAULT.parse().ok(),
            sink_stall: std::time::Duration::from_secs(300),
        }
    }
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
    /// `type = "http"`: Splunk HEC, Elasticsearch/OpenSearch `_bulk`, NDJSON or JSON webhooks.
    Http(Box<HttpSinkConfig>),
}

impl SinkConfig {
    /// The longest one delivery may take, for sinks that bound it (`timeout_secs`).
    pub fn timeout(&self) -> Option<std::time::Duration> {
        match &self.kind {
            SinkKind::File(_) => None,
            SinkKind::Syslog(syslog) => Some(syslog.timeout),
            SinkKind::Http(http) => Some(http.longest_delivery()),
        }
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
    load_all(path).map_err(first)
}

/// [`load`], with every problem found (`check-config` lists them all): each table is
/// validated on its own, and each file of a valid config checked.
///
/// # Errors
///
/// Every problem, in the order of the file's tables.
pub fn load_all(path: &Path) -> Result<Config, Vec<ConfigError>> {
    let origin = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|error| {
        vec![ConfigError::new(
            &origin,
            None,
            None,
            ConfigErrorKind::Unreadable(error.to_string()),
        )]
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
            return Err(vec![ConfigError::new(
                &origin,
                None,
                Some(name.to_owned()),
                kind,
            )]);
        };
        env.push((name.to_owned(), value.to_owned()));
    }
    let (config, overrides) = parse_and_validate(&origin, &text, &env)?;
    let problems = check_files(&config);
    if problems.is_empty() {
        Ok(config)
    } else {
        Err(problems
            .into_iter()
            .map(|problem| problem.into_error(&origin, &overrides))
            .collect())
    }
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
    parse_and_validate(origin, toml, env)
        .map(|(config, _)| config)
        .map_err(first)
}

/// The first of the problems found (there is at least one).
fn first(mut errors: Vec<ConfigError>) -> ConfigError {
    errors.swap_remove(0)
}

/// [`from_toml_str`], also returning the overrides applied (to name them in later errors);
/// every problem found, in the order of the file's tables.
fn parse_and_validate(
    origin: &str,
    toml: &str,
    env: &[(String, String)],
) -> Result<(Config, Vec<Override>), Vec<ConfigError>> {
    let error = |problem: Problem, overrides: &[Override]| problem.into_error(origin, overrides);
    let mut tree = parse_toml(toml).map_err(|problem| vec![error(problem, &[])])?;
    let overrides =
        apply_env_overrides(&mut tree, env).map_err(|problem| vec![error(problem, &[])])?;
    // An override's string is read as the type its key takes when the parse asks for one: each
    // pass retypes one override or ends, so there are at most one more passes than overrides.
    loop {
        let problems = match Config::from_tree(&tree) {
            Ok(config) => return Ok((config, overrides)),
            Err(problems) => problems,
        };
        let retyped = problems.iter().any(|problem| {
            let target = overrides
                .iter()
                .find(|o| problem.key.as_deref() == Some(o.path.as_str()));
            match (problem.wants, target) {
                (Some(wants), Some(target)) => retype(&mut tree, target, wants),
                _ => false,
            }
        });
        if !retyped {
            return Err(problems
                .into_iter()
                .map(|problem| error(problem, &overrides))
                .collect());
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Phase one: the raw config, as serde reads it.

/// The file as written, before validation.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    /// Each table read on its own, so that the problems of every one are found.
    state: toml::Value,
    #[serde(default)]
    accounts: Vec<toml::Value>,
    /// Read by [`SinkHead`] and the parser of each sink's type.
    #[serde(default)]
    sinks: Vec<toml::Table>,
    admin: Option<toml::Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAdmin {
    listen: Option<String>,
    sink_stall_secs: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawState {
    path: String,
    max_outbox_bytes: Option<i64>,
}

// ---------------------------------------------------------------------------------------------
// Phase two: validation.

/// The outbox bound's range: a mebibyte to a tebibyte; a gibibyte unless configured.
const MAX_OUTBOX_BYTES_MIN: i64 = 1 << 20;
const MAX_OUTBOX_BYTES_MAX: i64 = 1 << 40;
pub const MAX_OUTBOX_BYTES_DEFAULT: u64 = 1 << 30;
impl Config {
    /// Reads and validates the tree of a config; pure, no IO.
    fn from_tree(tree: &toml::Table) -> Result<Config, Vec<Problem>> {
        let raw: RawConfig =
            deserialize("", &toml::Value::Table(tree.clone())).map_err(|problem| vec![problem])?;
        let mut problems = Vec::new();
        /// The value, or `None` with its problem kept.
        fn keep<T>(problems: &mut Vec<Problem>, result: Result<T, Problem>) -> Option<T> {
            result.map_err(|problem| problems.push(problem)).ok()
        }
        let state = keep(&mut problems, state_config(&raw.state));

        if raw.accounts.is_empty() {
            keep(
                &mut problems,
                Err::<(), _>(Problem::invalid(
                    "accounts",
                    "at least one [[accounts]] table",
                    "none",
                )),
            );
        }
        let mut account_names = HashMap::new();
        let mut accounts = Vec::with_capacity(raw.accounts.len());
        for (index, value) in raw.accounts.iter().enumerate() {
            let key = format!("accounts[{index}]");
            let account = (|| {
                let raw_account: RawAccount = deserialize(&key, value)?;
                check_name(&format!("{key}.name"), &raw_account.name)?;
                unique_name(&mut account_names, "account name", &key, &raw_account.name)?;
                AccountConfig::from_raw(&key, raw_account)
            })();
            accounts.extend(keep(&mut problems, account));
        }

        if raw.sinks.is_empty() {
            keep(
                &mut problems,
                Err::<(), _>(Problem::invalid(
                    "sinks",
                    "at least one [[sinks]] table",
                    "none",
                )),
            );
        }
        let mut sink_names = HashMap::new();
        let mut sinks = Vec::with_capacity(raw.sinks.len());
        for (index, table) in raw.sinks.into_iter().enumerate() {
            let key = format!("sinks[{index}]");
            let sink = (|| {
                let head = SinkHead::read(&key, table)?;
                check_name(&format!("{key}.name"), &head.name)?;
                unique_name(&mut sink_names, "sink name", &key, &head.name)?;
                let name = head.name.clone();
                let kind = head.into_kind(&key)?;
                Ok(SinkConfig { name, kind })
            })();
            sinks.extend(keep(&mut problems, sink));
        }

        let admin = keep(
            &mut problems,
            match &raw.admin {
                None => Ok(AdminConfig::default()),
                Some(value) => admin_config(value),
            },
        );

        match (state, admin) {
            (Some(state), Some(admin)) if problems.is_empty() => Ok(Config {
                state,
                accounts,
                sinks,
                admin,
            }),
            _ => Err(problems),
        }
    }
}

/// The `[state]` table.
fn state_config(value: &toml::Value) -> Result<StateConfig, Problem> {
    let raw: RawState = deserialize("state", value)?;
    Ok(StateConfig {
        path: state_path("state.path", raw.path)?,
        max_outbox_bytes: match raw.max_outbox_bytes {
            None => MAX_OUTBOX_BYTES_DEFAULT,
            Some(bytes) => int_in(
                "state.max_outbox_bytes",
                bytes,
                MAX_OUTBOX_BYTES_MIN,
                MAX_OUTBOX_BYTES_MAX,
            )?
            .unsigned_abs(),
        },
    })
}

/// The `[admin]` table.
fn admin_config(value: &toml::Value) -> Result<AdminConfig, Problem> {
    let raw: RawAdmin = deserialize("admin", value)?;
    Ok(AdminConfig {
        listen: match raw.listen.as_deref() {
            None => AdminConfig::default().listen,
            Some("") => None,
            Some(text) => Some(text.parse().map_err(|_| {
                Problem::invalid(
                    "admin.listen",
                    "an IP address and port like 127.0.0.1:9464 or [::1]:9464, or \"\" for none",
                    &quote(text),
                )
            })?),
        },
        sink_stall: std::time::Duration::from_secs(
            int_in(
                "admin.sink_stall_secs",
                raw.sink_stall_secs.unwrap_or(300),
                1,
                86_400,
            )?
            .unsigned_abs(),
        ),
    })
}

/// A sink type's parser: the rest of a `[[sinks]]` table (without `type` and `name`), at its key
/// path, into its settings.
type SinkParser = fn(&str, toml::Table) -> Result<SinkKind, Problem>;

impl SinkKind {
    /// Every sink type by its `type`, in the order errors list them, with its parser.
    const TYPES: [(&'static str, SinkParser); 3] = [
        ("file", |key, table| {
            FileSinkConfig::parse(key, table).map(SinkKind::File)
        }),
        ("syslog", |key, table| {
            SyslogSinkConfig::parse(key, table).map(|syslog| SinkKind::Syslog(Box::new(syslog)))
        }),
        ("http", |key, table| {
            HttpSinkConfig::parse(key, table).map(|http| SinkKind::Http(Box::new(http)))
        }),
    ];
}

/// A `[[sinks]]` table with the keys every sink has, `type` and `name`, taken out.
struct SinkHead {
    type_name: &'static str,
    parse: SinkParser,
    name: String,
    /// The keys of the sink's own type.
    rest: toml::Table,
}

impl SinkHead {
    /// Takes `type` and `name` out of the `[[sinks]]` table at `key`; `type` must name a sink type.
    fn read(key: &str, mut table: toml::Table) -> Result<SinkHead, Problem> {
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
        let name_key = join(key, "name");
        let name = match table.remove("name") {
            Some(toml::Value::String(name)) => name,
            Some(other) => return Err(Problem::invalid(&name_key, "a string", &describe(&other))),
            None => {
                return Err(Problem::new(
                    Some(name_key),
                    ConfigErrorKind::Missing { note: None },
                ));
            }
        };
        Ok(SinkHead {
            type_name,
            parse,
            name,
            rest: table,
        })
    }

    /// The sink's own keys, read by its type's parser. Its errors name the keys every sink has
    /// too: `type` and `name` among the keys the table takes, and a missing key is said to be
    /// required by the type.
    fn into_kind(self, key: &str) -> Result<SinkKind, Problem> {
        (self.parse)(key, self.rest).map_err(|mut problem| {
            match &mut *problem.kind {
                ConfigErrorKind::UnknownKey { expected } => {
                    expected.splice(0..0, ["type".to_owned(), "name".to_owned()]);
                }
                ConfigErrorKind::Missing { note: note @ None } => {
                    *note = Some(format!("required for type \"{}\"", self.type_name));
                }
                _ => {}
            }
            problem
        })
    }
}

pub(crate) fn unknown_value(key: &str, what: &str, value: &str, expected: &[&str]) -> Problem {
    Problem::new(
        Some(key.to_owned()),
        ConfigErrorKind::UnknownValue {
            what: what.to_owned(),
            value: value.to_owned(),
            expected: expected.iter().map(|&e| e.to_owned()).collect(),
        },
    )
}

/// The most characters of a value that an error quotes; a longer value is cut.
const QUOTE_MAX_CHARS: usize = 80;

/// A value as every error quotes it: in double quotes, with control characters escaped (`\0`,
/// `\n`, `\u{1b}`), so that nothing in a config can reach a terminal or a log raw, and cut with
/// `…` after [`QUOTE_MAX_CHARS`] characters (escapes counted as written).
pub(crate) fn quote(text: &str) -> String {
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

pub(crate) fn int_in(key: &str, value: i64, min: i64, max: i64) -> Result<i64, Problem> {
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
pub(crate) fn file_path(key: &str, path: String) -> Result<PathBuf, Problem> {
    if path.is_empty() {
        return Err(Problem::invalid(key, "a non-empty path", "\"\""));
    }
    no_control_characters(key, &path)?;
    names_a_file(key, &path)?;
    Ok(PathBuf::from(path))
}

pub(crate) fn no_control_characters(key: &str, path: &str) -> Result<(), Problem> {
    if path.chars().any(char::is_control) {
        return Err(Problem::invalid(
            key,
            "a path without control characters",
            &quote(path),
        ));
    }
    Ok(())
}

pub(crate) fn names_a_file(key: &str, path: &str) -> Result<(), Problem> {
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
///
/// By hand rather than with `http::Uri`, which drops a fragment and an out-of-range or empty
/// port without a word and takes user info and any host: it would need every check here anyway.
pub(crate) fn base_url(url: &str) -> Result<String, ConfigErrorKind> {
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
pub(crate) fn url_host(authority: &str) -> Option<&str> {
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
fn check_files(config: &Config) -> Vec<Problem> {
    let mut problems = Vec::new();
    problems.extend(file_location("state.path", &config.state.path).err());
    for (index, account) in config.accounts.iter().enumerate() {
        problems.extend(account.check_files(&format!("accounts[{index}]")).err());
    }
    for (index, sink) in config.sinks.iter().enumerate() {
        let key = format!("sinks[{index}]");
        let checked = match &sink.kind {
            SinkKind::File(file) => file.check_files(&key, &config.accounts),
            SinkKind::Syslog(syslog) => syslog.check_files(&key),
            SinkKind::Http(http) => http.check_files(&key),
        };
        problems.extend(checked.err());
    }
    problems
}

/// Reads a PEM file with `read`, the problem placed at `key`.
pub(crate) fn pem_file<T>(
    key: &str,
    path: &Path,
    read: impl FnOnce(&Path) -> Result<T, crate::pem::PemError>,
) -> Result<T, Problem> {
    read(path).map_err(|error| file_problem(key, path, error.to_string()))
}

/// Checks that a file can be created or opened at `path`: it is not a directory, and the nearest
/// of its ancestors that exists is one (missing ones are created at start).
pub(crate) fn file_location(key: &str, path: &Path) -> Result<(), Problem> {
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

pub(crate) fn file_problem(key: &str, path: &Path, problem: String) -> Problem {
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
pub(crate) struct Problem {
    key: Option<String>,
    env_var: Option<String>,
    /// Boxed: a `Result` carrying a problem stays small.
    kind: Box<ConfigErrorKind>,
    /// For a value of the wrong type: the type the key takes, when a string from an environment
    /// override can be read as one (see [`retype`]).
    wants: Option<Wants>,
}

impl Problem {
    pub(crate) fn new(key: Option<String>, kind: ConfigErrorKind) -> Problem {
        Problem {
            key,
            env_var: None,
            kind: Box::new(kind),
            wants: None,
        }
    }

    pub(crate) fn invalid(key: &str, expected: &str, got: &str) -> Problem {
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
pub(crate) fn join(parent: &str, key: &str) -> String {
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
pub(crate) fn deserialize<T: serde::de::DeserializeOwned>(
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
    use crate::account::config::StartTime;

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

/// The helpers of the config tests here and beside each sink and account.
#[cfg(test)]
pub(crate) mod testing {
    use super::{Config, ConfigError, from_toml_str};

    /// The keys of an `[[accounts]]` table, in the order errors list them.
    pub(crate) const ACCOUNT_KEYS: &str = "name, token_file, token_env, base_url, region, ca_file, streams, api_version, start_time, end_time, v3_page_size_param, v3_page_token_param, page_size, poll_interval_secs, request_timeout_secs, max_pending_pages, max_response_bytes, requests_per_minute, requests_per_hour, retry_max_secs, unauthorized_retry_secs, on_invalid_cursor";

    pub(crate) const VALID: &str = r#"
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

    pub(crate) fn parse(toml: &str) -> Result<Config, ConfigError> {
        from_toml_str("test.toml", toml, &[])
    }

    pub(crate) fn parse_env(toml: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(name, value)| (name.to_string(), value.to_string()))
            .collect();
        from_toml_str("test.toml", toml, &env)
    }

    /// `VALID` with `from` replaced by `to` (which must change it).
    pub(crate) fn edit(from: &str, to: &str) -> String {
        assert!(VALID.contains(from), "{from:?} is not in VALID");
        VALID.replacen(from, to, 1)
    }

    #[track_caller]
    pub(crate) fn check_err(toml: &str, expected: &str) {
        match parse(toml) {
            Ok(config) => panic!("expected the error {expected:?}, parsed {config:#?}"),
            Err(error) => assert_eq!(error.to_string(), expected),
        }
    }

    #[track_caller]
    pub(crate) fn check_env_err(toml: &str, env: &[(&str, &str)], expected: &str) {
        match parse_env(toml, env) {
            Ok(config) => panic!("expected the error {expected:?}, parsed {config:#?}"),
            Err(error) => assert_eq!(error.to_string(), expected),
        }
    }

    /// The shipped example config with the sink block that follows `marker` uncommented in
    /// place of its own sinks (lines `# key = value` are taken, `## ...` are prose).
    pub(crate) fn shipped_example_with(marker: &str) -> Config {
        let example = include_str!("../config/op-events-forwarder.toml");
        let block = example
            .split_once(marker)
            .unwrap_or_else(|| panic!("the example has {marker:?}"))
            .1;
        let uncommented: String = block
            .lines()
            .filter(|line| !line.starts_with("##"))
            .filter_map(|line| line.strip_prefix("# "))
            .filter(|line| line.starts_with("[[") || line.contains(" = "))
            .map(|line| format!("{line}\n"))
            .collect();
        let head = example.split("\n[[sinks]]").next().unwrap();
        from_toml_str(
            "op-events-forwarder.toml",
            &format!("{head}\n{uncommented}"),
            &[],
        )
        .unwrap()
    }

    /// The test config with its sink replaced by a syslog sink made of `lines`.
    pub(crate) fn with_syslog(lines: &str) -> String {
        let head = VALID.split("[[sinks]]").next().unwrap();
        format!("{head}[[sinks]]\nname = \"siem\"\ntype = \"syslog\"\n{lines}\n")
    }
}

#[cfg(test)]
mod tests {
    use super::testing::*;
    use super::*;
    use crate::account::config::{StartTime, TokenSource};
    use crate::stream::{ApiVersion, Stream};

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
            "test.toml: logging: unknown key (expected one of state, accounts, sinks, admin)",
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
            "test.toml: sinks[0].type: missing (expected one of file, syslog, http)",
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

    /// The configuration reference names every key each table takes (the keys listed by an
    /// unknown key's error, so a key added to a table without a line there fails here).
    #[test]
    fn the_configuration_reference_has_every_key() {
        let reference = include_str!("../docs/configuration.md");
        let sinks = |lines: &str| {
            let head = VALID.split("[[sinks]]").next().unwrap();
            format!("{head}[[sinks]]\nname = \"s\"\n{lines}\nzzz = 1\n")
        };
        let tables = [
            edit("[state]", "[state]\nzzz = 1"),
            format!("{VALID}\n[admin]\nzzz = 1\n"),
            edit("name = \"acme\"", "name = \"acme\"\nzzz = 1"),
            sinks("type = \"file\"\npath = \"/x\""),
            sinks("type = \"syslog\"\naddress = \"h:514\"\ntransport = \"udp\""),
            sinks("type = \"http\"\nurl = \"https://h\"\nformat = \"json\""),
        ];
        for toml in tables {
            let err = parse(&toml).unwrap_err();
            let ConfigErrorKind::UnknownKey { expected } = err.kind() else {
                panic!("{err}")
            };
            assert!(expected.len() > 1, "{err}");
            for key in expected {
                assert!(
                    reference.contains(&format!("`{key}`")),
                    "docs/configuration.md does not describe `{key}` ({err})"
                );
            }
        }
    }

    #[test]
    fn the_admin_table() {
        let config = parse(VALID).unwrap();
        assert_eq!(config.admin, AdminConfig::default());
        assert_eq!(config.admin.listen, Some("127.0.0.1:9464".parse().unwrap()));
        let config = parse(&format!(
            "{VALID}\n[admin]\nlisten = \"[::]:9100\"\nsink_stall_secs = 60\n"
        ))
        .unwrap();
        assert_eq!(config.admin.listen, Some("[::]:9100".parse().unwrap()));
        assert_eq!(config.admin.sink_stall, std::time::Duration::from_secs(60));
        // Turned off from the environment, as a container would.
        let config = parse_env(VALID, &[("OP_EVENTS_FORWARDER__ADMIN__LISTEN", "")]).unwrap();
        assert_eq!(config.admin.listen, None);
        check_err(
            &format!("{VALID}\n[admin]\nlisten = \"localhost:9464\"\n"),
            "test.toml: admin.listen: expected an IP address and port like 127.0.0.1:9464 or \
             [::1]:9464, or \"\" for none, got \"localhost:9464\"",
        );
        check_err(
            &format!("{VALID}\n[admin]\nport = 1\n"),
            "test.toml: admin.port: unknown key (expected one of listen, sink_stall_secs)",
        );
    }

    #[test]
    fn sink_types() {
        check_err(
            &edit("type = \"file\"", "type = \"kafka\""),
            "test.toml: sinks[0].type: unknown sink type \"kafka\" (expected one of file, syslog, http)",
        );
        check_err(
            &format!("{VALID}\n[[sinks]]\nname = \"x\"\ntype = \"File\"\npath = \"/x\"\n"),
            "test.toml: sinks[1].type: unknown sink type \"File\" (expected one of file, syslog, http)",
        );
        check_err(
            &format!("sinks = 3\n{}", VALID.split("[[sinks]]").next().unwrap()),
            "test.toml: sinks: expected an array, got 3",
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
             accounts, sinks, admin)",
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
