//! `check --online`: what a start would find, without starting. Each account's token is read
//! and introspected (one request, counted by the API like any other), the local clock is
//! compared with the API's `Date`, and each sink opens what a delivery would (a TCP or TLS
//! session, a RELP session, HEC's health, a cluster's root, a file in each directory) and
//! delivers nothing. Every check runs, whatever the others found.

use secrecy::ExposeSecret as _;
use time::OffsetDateTime;

use crate::account;
use crate::api;
use crate::config::Config;
use crate::sink::Sink;

/// One line of the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    /// `account acme`, `sink siem`.
    pub subject: String,
    /// What was checked.
    pub check: &'static str,
    pub ok: bool,
    pub detail: String,
}

fn row(subject: &str, check: &'static str, result: Result<String, String>) -> Row {
    let ok = result.is_ok();
    Row {
        subject: subject.to_owned(),
        check,
        ok,
        detail: result.unwrap_or_else(|err| err),
    }
}

/// Runs every check.
pub async fn online(config: &Config) -> Vec<Row> {
    let mut rows = Vec::new();
    for account in &config.accounts {
        let subject = format!("account {}", account.name);
        let token = match crate::token::read(&account.name, &account.token) {
            Ok(token) => token,
            Err(err) => {
                rows.push(row(&subject, "token", Err(err.to_string())));
                continue;
            }
        };
        let origin = match &account.token {
            account::config::TokenSource::File(path) => format!("token_file {}", path.display()),
            account::config::TokenSource::Env(var) => format!("token_env {var}"),
        };
        let claims = api::jwt::decode_claims(token.expose_secret());
        let resolved = match account::resolve(account, &origin, claims, OffsetDateTime::now_utc()) {
            Ok(resolved) => resolved,
            Err(err) => {
                rows.push(row(&subject, "token", Err(err.to_string())));
                continue;
            }
        };
        let expires = resolved
            .claims
            .as_ref()
            .and_then(|c| c.expires_at)
            .map_or_else(
                || "never expires".to_owned(),
                |at| format!("expires {}", api::rfc3339(at)),
            );
        rows.push(row(
            &subject,
            "token",
            Ok(format!(
                "{} ({}), streams {}, {expires}",
                resolved.base_url,
                resolved.base_url_from,
                resolved
                    .streams
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(",")
            )),
        ));
        let options = api::ClientOptions {
            base_url: resolved.base_url.clone(),
            ca_file: account.ca_file.clone(),
            timeout: account.request_timeout,
            max_response_bytes: account.max_response_bytes,
        };
        let client = match api::Client::new(&options, token) {
            Ok(client) => client,
            Err(err) => {
                rows.push(row(&subject, "introspection", Err(err.to_string())));
                continue;
            }
        };
        match client.introspect().await {
            Ok(answer) => {
                let missing: Vec<&str> = resolved
                    .streams
                    .iter()
                    .filter(|s| !answer.features.iter().any(|f| f == s.feature()))
                    .map(|s| s.as_str())
                    .collect();
                let said = format!(
                    "token {} of account {}, features {}",
                    answer.uuid.as_deref().unwrap_or("?"),
                    answer.account_uuid.as_deref().unwrap_or("?"),
                    answer.features.join(",")
                );
                rows.push(row(
                    &subject,
                    "introspection",
                    if missing.is_empty() {
                        Ok(said)
                    } else {
                        Err(format!(
                            "{said}: lacks the feature of {}",
                            missing.join(", ")
                        ))
                    },
                ));
            }
            Err(err) => rows.push(row(&subject, "introspection", Err(err.to_string()))),
        }
        let answered = rows.last().is_some_and(|r| r.ok) || client.clock_skew().is_some();
        if !answered {
            // Nothing came back to compare the clock with.
            continue;
        }
        rows.push(row(
            &subject,
            "clock",
            match client.clock_skew() {
                None => Ok("the API sent no Date to compare with".to_owned()),
                Some(skew) if skew == time::Duration::ZERO => {
                    Ok("agrees with the API's (within 5 minutes)".to_owned())
                }
                Some(skew) => Err(format!(
                    "differs from the API's by {}s; fix the clock (NTP): relative start times \
                     are resolved on the API's clock meanwhile",
                    skew.whole_seconds()
                )),
            },
        ));
    }
    let accounts: Vec<&str> = config.accounts.iter().map(|a| a.name.as_str()).collect();
    for sink_config in &config.sinks {
        let subject = format!("sink {}", sink_config.name);
        let sink = match Sink::from_config(sink_config, None) {
            Ok(sink) => sink,
            Err(err) => {
                rows.push(row(&subject, "setup", Err(err.to_string())));
                continue;
            }
        };
        let result = sink.probe(sink_config, &accounts).await;
        rows.push(row(&subject, "connection", result));
    }
    rows
}

/// The report as a table; failed checks marked.
pub fn render(rows: &[Row]) -> String {
    let width = |f: fn(&Row) -> usize| rows.iter().map(f).max().unwrap_or(0);
    let subject = width(|r| r.subject.len());
    let check = width(|r| r.check.len());
    rows.iter()
        .map(|r| {
            format!(
                "{:<subject$}  {:<check$}  {:<6}  {}\n",
                r.subject,
                r.check,
                if r.ok { "ok" } else { "FAILED" },
                r.detail
            )
        })
        .collect()
}
