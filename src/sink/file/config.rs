//! A file sink's config: the keys of its `[[sinks]]` table besides `type` and `name`.

use std::path::PathBuf;

use serde::Deserialize;

use crate::account::config::AccountConfig;
use crate::config::{
    ConfigErrorKind, Problem, deserialize, file_location, join, names_a_file,
    no_control_characters, quote,
};
use crate::stream::Stream;

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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFileSink {
    path: String,
}

impl FileSinkConfig {
    /// Reads and validates the keys of a file sink's `[[sinks]]` table at `key`.
    pub(crate) fn parse(key: &str, table: toml::Table) -> Result<FileSinkConfig, Problem> {
        let raw: RawFileSink = deserialize(key, &toml::Value::Table(table))?;
        Ok(FileSinkConfig {
            path: path_template(&join(key, "path"), raw.path)?,
        })
    }
}

impl FileSinkConfig {
    /// Checks that every file the sink may write, for every account and stream, can be a file
    /// (for `config::load` only).
    pub(crate) fn check_files(&self, key: &str, accounts: &[AccountConfig]) -> Result<(), Problem> {
        for account in accounts {
            // Streams left to the token are at most the cursor streams.
            let streams = account.streams.as_deref().unwrap_or(&Stream::ALL);
            for &stream in streams {
                file_location(&join(key, "path"), &self.path_for(&account.name, stream))?;
            }
        }
        Ok(())
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

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use crate::config::SinkKind;
    use crate::config::testing::*;
    use crate::stream::Stream;

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
}
