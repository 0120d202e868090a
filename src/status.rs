//! Where each stream and each sink stands, as a person or a script reads it: built from the
//! state database alone (the `status` command beside a stopped daemon), or with the running
//! daemon's live figures (`/status`, and `status` when the admin endpoint answers).
//!
//! Never a secret and never an event's content: names, times, counts and error texts that
//! have been cleaned of tokens where they were made.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::api::rfc3339;
use crate::config::Config;
use crate::stats::Stats;
use crate::store::StoreReport;

/// The whole picture.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Status {
    pub generated_at: String,
    /// Built by the running daemon (with its live figures), or from the state alone.
    pub live: bool,
    pub daemon: Option<DaemonInfo>,
    pub state: StateInfo,
    pub streams: Vec<StreamStatus>,
    pub sinks: Vec<SinkStatus>,
    pub accounts: Vec<AccountStatus>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DaemonInfo {
    pub pid: u32,
    pub version: String,
    pub started_at: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateInfo {
    pub path: String,
    pub used_bytes: u64,
    pub max_outbox_bytes: u64,
}

/// One stream of one account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamStatus {
    pub account: String,
    pub stream: String,
    /// When the cursor was last saved (a page fetched and stored).
    pub cursor_saved_at: Option<String>,
    pub cursor_age_secs: Option<i64>,
    /// The newest event fetched, and how long ago that is.
    pub newest_event: Option<String>,
    pub lag_secs: Option<i64>,
    pub pages_pending: u64,
    pub events_pending: u64,
    pub bytes_pending: u64,
    /// `ok`, `unhealthy`, `starting` (no page yet since the start), `finished` (a bounded
    /// backfill done), or `unknown` (from the state alone).
    pub health: String,
    pub reason: Option<String>,
    /// Live only.
    pub caught_up: Option<bool>,
    pub last_fetch: Option<String>,
    pub requests: Option<u64>,
    pub failed_requests: Option<u64>,
    pub events_fetched: Option<u64>,
    pub last_error: Option<String>,
}

/// One sink's delivery of one stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SinkStatus {
    pub sink: String,
    pub account: String,
    pub stream: String,
    /// Pages fetched that this sink has not delivered yet.
    pub lag_pages: u64,
    pub dead_letters: u64,
    pub last_delivery: Option<String>,
    /// Live only.
    pub delivered: Option<u64>,
    pub failing_since: Option<String>,
    pub last_error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountStatus {
    pub account: String,
    pub token_expires_at: Option<String>,
}

/// What only the running daemon knows.
pub struct Live<'a> {
    pub stats: &'a Stats,
    pub started_at: OffsetDateTime,
    /// Each account's token expiry, from its claims.
    pub token_expiry: &'a [(String, Option<OffsetDateTime>)],
}

fn at(seconds: i64) -> Option<OffsetDateTime> {
    OffsetDateTime::from_unix_timestamp(seconds).ok()
}

impl Status {
    /// The picture from the state's `report`, with `live` figures when the daemon builds it.
    /// Streams and sinks are those the state knows, for the accounts and sinks configured.
    pub fn build(
        config: &Config,
        report: &StoreReport,
        live: Option<&Live<'_>>,
        now: OffsetDateTime,
    ) -> Status {
        let configured_account =
            |name: &str| config.accounts.iter().any(|account| account.name == name);
        let streams = report
            .streams
            .iter()
            .filter(|s| configured_account(&s.account))
            .map(|s| {
                let saved = s.has_cursor.then(|| at(s.saved_at)).flatten();
                let newest = s
                    .last_event_ns
                    .and_then(|ns| OffsetDateTime::from_unix_timestamp_nanos(ns.into()).ok());
                let stats = live.map(|live| {
                    let stream = s
                        .stream
                        .parse()
                        .unwrap_or(crate::stream::Stream::AuditEvents);
                    live.stats.stream(&s.account, stream)
                });
                let (health, reason) = match &stats {
                    None => ("unknown", None),
                    Some(stats) if stats.unhealthy.is_some() => {
                        ("unhealthy", stats.unhealthy.clone())
                    }
                    Some(stats) if stats.finished => ("finished", None),
                    Some(stats) if stats.last_success.is_none() => ("starting", None),
                    Some(_) => ("ok", None),
                };
                StreamStatus {
                    account: s.account.clone(),
                    stream: s.stream.clone(),
                    cursor_saved_at: saved.map(rfc3339),
                    cursor_age_secs: saved.map(|t| (now - t).whole_seconds()),
                    newest_event: newest.map(rfc3339),
                    lag_secs: newest.map(|t| (now - t).whole_seconds()),
                    pages_pending: s.pending_pages,
                    events_pending: s.pending_events,
                    bytes_pending: s.pending_bytes,
                    health: health.to_owned(),
                    reason,
                    caught_up: stats.as_ref().map(|s| s.caught_up),
                    last_fetch: stats.as_ref().and_then(|s| s.last_success).map(rfc3339),
                    requests: stats.as_ref().map(|s| s.requests),
                    failed_requests: stats.as_ref().map(|s| s.failed_requests),
                    events_fetched: stats.as_ref().map(|s| s.fetched_events),
                    last_error: stats.as_ref().and_then(|s| s.last_error.clone()),
                }
            })
            .collect();
        let mut sinks = Vec::new();
        for sink in &config.sinks {
            for s in report
                .streams
                .iter()
                .filter(|s| configured_account(&s.account))
            {
                let stats = live.map(|live| {
                    let stream = s
                        .stream
                        .parse()
                        .unwrap_or(crate::stream::Stream::AuditEvents);
                    live.stats.sink(&sink.name, &s.account, stream)
                });
                let offset = report.offset_of(&sink.name, &s.account, &s.stream);
                sinks.push(SinkStatus {
                    sink: sink.name.clone(),
                    account: s.account.clone(),
                    stream: s.stream.clone(),
                    lag_pages: report.sink_lag(&sink.name, &s.account, &s.stream),
                    dead_letters: report.dead_letters_of(&sink.name, &s.account, &s.stream),
                    last_delivery: match stats.as_ref().and_then(|s| s.last_delivery) {
                        Some(last) => Some(rfc3339(last)),
                        None => offset
                            .filter(|o| o.acked_seq > 0)
                            .and_then(|o| at(o.updated_at))
                            .map(rfc3339),
                    },
                    delivered: stats.as_ref().map(|s| s.delivered),
                    failing_since: stats.as_ref().and_then(|s| s.failing_since).map(rfc3339),
                    last_error: stats
                        .as_ref()
                        .filter(|s| s.failing_since.is_some())
                        .and_then(|s| s.last_error.clone()),
                });
            }
        }
        let accounts = config
            .accounts
            .iter()
            .map(|account| AccountStatus {
                account: account.name.clone(),
                token_expires_at: live
                    .and_then(|live| {
                        live.token_expiry
                            .iter()
                            .find(|(name, _)| *name == account.name)
                            .and_then(|(_, at)| *at)
                    })
                    .map(rfc3339),
            })
            .collect();
        Status {
            generated_at: rfc3339(now),
            live: live.is_some(),
            daemon: live.map(|live| DaemonInfo {
                pid: std::process::id(),
                version: env!("CARGO_PKG_VERSION").to_owned(),
                started_at: rfc3339(live.started_at),
            }),
            state: StateInfo {
                path: config.state.path.display().to_string(),
                used_bytes: report.used_bytes,
                max_outbox_bytes: config.state.max_outbox_bytes,
            },
            streams,
            sinks,
            accounts,
        }
    }

    /// Two tables, streams and sinks, for a terminal; `color` marks health in colour.
    pub fn render(&self, color: bool) -> String {
        let paint = |text: &str, good: bool| {
            if color {
                let code = if good { "32" } else { "31" };
                format!("\u{1b}[{code}m{text}\u{1b}[0m")
            } else {
                text.to_owned()
            }
        };
        let mut out = String::new();
        match &self.daemon {
            Some(daemon) => out.push_str(&format!(
                "op-events-forwarder {} running (pid {}, since {}); state {} ({})\n\n",
                daemon.version,
                daemon.pid,
                daemon.started_at,
                self.state.path,
                bytes(self.state.used_bytes)
            )),
            None => out.push_str(&format!(
                "daemon not answering: from the state {} alone ({})\n\n",
                self.state.path,
                bytes(self.state.used_bytes)
            )),
        }
        let mut rows = vec![
            [
                "ACCOUNT",
                "STREAM",
                "CURSOR AGE",
                "NEWEST EVENT",
                "LAG",
                "PENDING",
                "HEALTH",
            ]
            .map(str::to_owned)
            .to_vec(),
        ];
        let mut health_cells = Vec::new();
        for s in &self.streams {
            let health = match &s.reason {
                Some(reason) => format!("{}: {reason}", s.health),
                None => s.health.clone(),
            };
            health_cells.push(s.health == "ok" || s.health == "finished");
            rows.push(vec![
                s.account.clone(),
                s.stream.clone(),
                s.cursor_age_secs.map_or("-".into(), duration),
                s.newest_event.clone().unwrap_or_else(|| "-".into()),
                s.lag_secs.map_or("-".into(), duration),
                format!("{} pages", s.pages_pending),
                health,
            ]);
        }
        out.push_str(&table(&rows, |row, cell, text| {
            if row > 0 && cell == 6 {
                paint(text, health_cells[row - 1])
            } else {
                text.to_owned()
            }
        }));
        out.push('\n');
        let mut rows = vec![
            [
                "SINK",
                "ACCOUNT",
                "STREAM",
                "LAG",
                "DEAD LETTERS",
                "LAST DELIVERY",
                "LAST ERROR",
            ]
            .map(str::to_owned)
            .to_vec(),
        ];
        let mut good = Vec::new();
        for s in &self.sinks {
            good.push(s.failing_since.is_none());
            rows.push(vec![
                s.sink.clone(),
                s.account.clone(),
                s.stream.clone(),
                format!("{} pages", s.lag_pages),
                s.dead_letters.to_string(),
                s.last_delivery.clone().unwrap_or_else(|| "-".into()),
                s.last_error.clone().unwrap_or_else(|| "-".into()),
            ]);
        }
        out.push_str(&table(&rows, |row, cell, text| {
            if row > 0 && cell == 6 && !good[row - 1] {
                paint(text, false)
            } else {
                text.to_owned()
            }
        }));
        out
    }
}

/// Columns padded to their widest cell; `style` may colour a cell after padding.
fn table(rows: &[Vec<String>], style: impl Fn(usize, usize, &str) -> String) -> String {
    let columns = rows.first().map_or(0, Vec::len);
    let widths: Vec<usize> = (0..columns)
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for (r, row) in rows.iter().enumerate() {
        let cells: Vec<String> = row
            .iter()
            .enumerate()
            .map(|(c, text)| {
                let padded = if c + 1 == columns {
                    text.clone()
                } else {
                    format!("{text:<width$}", width = widths[c])
                };
                style(r, c, &padded)
            })
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

/// Seconds as a person says them: 45s, 12m, 3h 5m, 2d 4h.
pub fn duration(secs: i64) -> String {
    let secs = secs.max(0);
    match secs {
        0..60 => format!("{secs}s"),
        60..3600 => format!("{}m", secs / 60),
        3600..86_400 => format!("{}h {}m", secs / 3600, secs % 3600 / 60),
        _ => format!("{}d {}h", secs / 86_400, secs % 86_400 / 3600),
    }
}

fn bytes(n: u64) -> String {
    match n {
        0..1024 => format!("{n} B"),
        1024..1_048_576 => format!("{:.1} KiB", n as f64 / 1024.0),
        _ => format!("{:.1} MiB", n as f64 / 1_048_576.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_people_say_them() {
        assert_eq!(duration(-3), "0s");
        assert_eq!(duration(45), "45s");
        assert_eq!(duration(720), "12m");
        assert_eq!(duration(3 * 3600 + 5 * 60), "3h 5m");
        assert_eq!(duration(2 * 86_400 + 4 * 3600), "2d 4h");
        assert_eq!(bytes(2_621_440), "2.5 MiB");
    }

    #[test]
    fn tables_pad_columns() {
        let rows = vec![
            vec!["A".to_owned(), "BB".to_owned(), "C".to_owned()],
            vec!["long".to_owned(), "x".to_owned(), "end".to_owned()],
        ];
        assert_eq!(
            table(&rows, |_, _, t| t.to_owned()),
            "A     BB  C\nlong  x   end\n"
        );
    }
}
