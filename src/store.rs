//! The durable state: per-stream cursors, the outbox of fetched pages, per-sink offsets.
//!
//! Invariant: this is the only module that touches SQLite. Every method is synchronous and
//! short; async code calls them through [`Store::run`], which moves the work to tokio's
//! blocking pool so a slow disk never stalls the runtime.
//!
//! The two transactions that carry the daemon's guarantees:
//! - [`Store::append_page`]: the page's events and the cursor after them, together. A cursor
//!   is never saved unless the events before it are durable.
//! - [`Store::ack`]: a sink's new offset, and the deletion of every page all configured sinks
//!   have now delivered, together.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, Transaction, params};

use crate::event::{self, EventArray};
use crate::stream::Stream;

/// The SQL migrations, applied in order; the schema version is the number applied, kept in
/// `PRAGMA user_version`.
const MIGRATIONS: &[(&str, &str)] = &[
    (
        "0001_initial.sql",
        include_str!("../migrations/0001_initial.sql"),
    ),
    (
        "0002_last_event_time.sql",
        include_str!("../migrations/0002_last_event_time.sql"),
    ),
    (
        "0003_dead_letters.sql",
        include_str!("../migrations/0003_dead_letters.sql"),
    ),
    (
        "0004_sink_settings.sql",
        include_str!("../migrations/0004_sink_settings.sql"),
    ),
    (
        "0005_restart_from.sql",
        include_str!("../migrations/0005_restart_from.sql"),
    ),
    (
        "0006_outbox_bytes.sql",
        include_str!("../migrations/0006_outbox_bytes.sql"),
    ),
    (
        "0007_event_ends.sql",
        include_str!("../migrations/0007_event_ends.sql"),
    ),
];

/// Where a stream stands, as saved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamState {
    pub cursor: Option<String>,
    /// When the cursor was last saved.
    pub saved_at: time::OffsetDateTime,
    /// The time of the newest event fetched so far, if any event had a readable timestamp.
    pub last_event_time: Option<time::OffsetDateTime>,
}

/// An error from the state database, naming the file.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("state database {path}: {source}")]
    Sqlite {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("state database {path}: cannot create its directory: {source}")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "state database {path}: schema version {found} is newer than this program knows ({known}); \
         use a newer op-events-forwarder or another state file"
    )]
    TooNew {
        path: PathBuf,
        found: u32,
        known: u32,
    },
    #[error("state database {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "state database {path}: in use by another op-events-forwarder{} (lock file {}); \
         stop it first, or give this one a state file of its own ([state] path)",
        pid.map(|pid| format!(" (pid {pid})")).unwrap_or_default(),
        lock_path(path).display()
    )]
    Locked { path: PathBuf, pid: Option<u32> },
    #[error(
        "state database {path}: {what}; it is not an op-events-forwarder state file and is left \
         untouched; point [state] path at a file of its own"
    )]
    Foreign { path: PathBuf, what: String },
    #[error(
        "state database {path}: the file exists but is empty (0 bytes), so its cursors are gone \
         (truncated?); starting afresh would fetch everything again from start_time: restore it \
         from a backup, or delete it to start afresh on purpose"
    )]
    Empty { path: PathBuf },
    #[error(
        "state database {path:?}: the state must be a file on disk, so cursors and undelivered \
         events survive a restart; set [state] path to a file"
    )]
    NotAFile { path: PathBuf },
    #[error(
        "state database {path}: schema version {found}, this program's is {known}; run the \
         daemon of this version once (it migrates the file), then try again"
    )]
    OtherVersion {
        path: PathBuf,
        found: u32,
        known: u32,
    },
}

impl StoreError {
    /// Whether restarting cannot help: the file is not ours, empty, of a newer schema, not
    /// on disk, or held by another daemon (which a restart would only race with).
    pub fn is_permanent(&self) -> bool {
        matches!(
            self,
            StoreError::Foreign { .. }
                | StoreError::Empty { .. }
                | StoreError::NotAFile { .. }
                | StoreError::TooNew { .. }
                | StoreError::Locked { .. }
        )
    }
}

/// A page waiting in the outbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxPage {
    /// Position of the page in its stream; grows by one per page and is never reused.
    pub seq: u64,
    /// The events as a JSON array whose elements are byte-for-byte what the API sent.
    pub events: String,
    /// Where each event ends in `events` (see [`EventArray::ends_blob`]); empty for a page kept
    /// before they were, which is parsed instead.
    pub event_ends: Vec<u8>,
    pub n_events: u64,
    /// When the page was fetched, in seconds since the Unix epoch.
    pub fetched_at: i64,
}

impl OutboxPage {
    /// The page's events, each exactly as the API sent it: slices of the text where their
    /// offsets were kept, else read by parsing it.
    pub fn events(&self) -> Result<Vec<&str>, serde_json::Error> {
        if let Some(events) = event::split_array(&self.events, &self.event_ends) {
            return Ok(events);
        }
        let events: Vec<&serde_json::value::RawValue> = serde_json::from_str(&self.events)?;
        Ok(events.into_iter().map(|event| event.get()).collect())
    }
}

/// An event a sink refused for good, to keep in the dead letters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    /// The event exactly as the API sent it.
    pub event: String,
    pub uuid: Option<String>,
    /// Why the sink refused it, for the operator.
    pub reason: String,
}

impl StoreReport {
    /// Pages of a stream that `sink` has not delivered yet: those after its offset (no
    /// offset yet: every page in the outbox).
    pub fn sink_lag(&self, sink: &str, account: &str, stream: &str) -> u64 {
        let Some(state) = self
            .streams
            .iter()
            .find(|s| s.account == account && s.stream == stream)
        else {
            return 0;
        };
        let acked = self
            .sinks
            .iter()
            .find(|o| o.sink == sink && o.account == account && o.stream == stream)
            .map_or(0, |o| o.acked_seq);
        state
            .last_seq
            .saturating_sub(acked)
            .min(state.pending_pages)
    }

    /// Dead letters kept for one sink's stream.
    pub fn dead_letters_of(&self, sink: &str, account: &str, stream: &str) -> u64 {
        self.dead_letters
            .iter()
            .find(|((s, a, st), _)| s == sink && a == account && st == stream)
            .map_or(0, |(_, n)| *n)
    }

    /// The offset row of one sink's stream, if it has delivered anything.
    pub fn offset_of(&self, sink: &str, account: &str, stream: &str) -> Option<&OffsetReport> {
        self.sinks
            .iter()
            .find(|o| o.sink == sink && o.account == account && o.stream == stream)
    }
}

/// What [`Store::report`] read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoreReport {
    pub streams: Vec<StreamReport>,
    pub sinks: Vec<OffsetReport>,
    /// Dead letters kept, by (sink, account, stream).
    pub dead_letters: Vec<((String, String, String), u64)>,
    /// The bytes the database uses on disk.
    pub used_bytes: u64,
}

/// One stream's position and backlog.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamReport {
    pub account: String,
    pub stream: String,
    pub has_cursor: bool,
    /// The seq of the newest page appended.
    pub last_seq: u64,
    /// When the cursor was last saved (Unix seconds).
    pub saved_at: i64,
    /// The newest event fetched (Unix nanoseconds).
    pub last_event_ns: Option<i64>,
    /// Pages (events, bytes) in the outbox, not yet delivered by every sink.
    pub pending_pages: u64,
    pub pending_events: u64,
    pub pending_bytes: u64,
}

/// How far one sink has delivered one stream.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OffsetReport {
    pub sink: String,
    pub account: String,
    pub stream: String,
    pub acked_seq: u64,
    /// When it was last moved (Unix seconds).
    pub updated_at: i64,
}

/// A dead letter as kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredDeadLetter {
    pub id: i64,
    pub sink: String,
    pub account: String,
    pub stream: String,
    pub uuid: Option<String>,
    pub reason: String,
    /// When it was refused first, in seconds since the Unix epoch.
    pub first_seen: i64,
    /// Queued for delivery again (`dead-letters replay`).
    pub queued: bool,
    /// The event's bytes, when asked for ([`Store::queued_dead_letters`]).
    pub event: String,
}

/// What [`Store::forget_account`] deleted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DroppedAccount {
    /// The streams that had a cursor.
    pub streams: Vec<String>,
    /// Pages fetched but not delivered to every sink.
    pub pending_pages: u64,
    /// The events in those pages.
    pub pending_events: u64,
}

/// Handle to the state database. Cheap to clone; all clones share one connection.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    state: Mutex<State>,
    /// The open lock file; its `flock` is released when the last clone is dropped (or the
    /// process dies, however it dies). `None` for the tools beside a daemon.
    _lock: Option<std::fs::File>,
}

struct State {
    conn: Connection,
    /// The sinks configured now. A page is deleted once every one of them has acknowledged it;
    /// offsets of sinks no longer configured do not hold pages back.
    sinks: Vec<String>,
}

impl Store {
    /// Opens the state database at `path`, creating it if there is no file, and applies the
    /// migrations it has not seen.
    ///
    /// Before anything is written: takes the exclusive lock (`<path>.lock`, holding our pid),
    /// so a second daemon on the same state is refused; refuses an in-memory path, an existing
    /// but empty file (a truncated state would silently fetch everything again) and a file
    /// that is not ours (`PRAGMA application_id`), leaving them untouched. A new state file is
    /// built under a temporary name and renamed into place, so a crash during the first start
    /// never leaves an empty or half-made file behind. The file, its `-wal` and `-shm` and the
    /// lock file are readable by the owner only: they hold every event.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let raw = path.as_os_str();
        if raw.is_empty()
            || raw == ":memory:"
            || path.to_str().is_some_and(|p| p.starts_with("file:"))
        {
            return Err(StoreError::NotAFile {
                path: path.to_owned(),
            });
        }
        let io = |source| StoreError::Io {
            path: path.to_owned(),
            source,
        };
        if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| StoreError::CreateDir {
                path: path.to_owned(),
                source,
            })?;
        }
        let lock = take_lock(path)?;
        match std::fs::metadata(path) {
            Ok(meta) if !meta.is_file() => {
                return Err(StoreError::Foreign {
                    path: path.to_owned(),
                    what: "it is not a regular file".into(),
                });
            }
            Ok(meta) if meta.len() == 0 => {
                return Err(StoreError::Empty {
                    path: path.to_owned(),
                });
            }
            Ok(_) => inspect(path)?,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => create(path)?,
            Err(err) => return Err(io(err)),
        }
        restrict_permissions(path).map_err(io)?;

        let sqlite = |source| StoreError::Sqlite {
            path: path.to_owned(),
            source,
        };
        // No SQLITE_OPEN_CREATE: the file was checked or made above, and must not vanish and
        // come back empty in between.
        let flags =
            rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let mut conn = Connection::open_with_flags(path, flags).map_err(sqlite)?;
        configure(&conn).map_err(sqlite)?;
        migrate(&mut conn, path)?;
        Ok(Store::with(path, conn, Some(lock)))
    }

    fn with(path: &Path, conn: Connection, lock: Option<std::fs::File>) -> Store {
        Store {
            inner: Arc::new(Inner {
                path: path.to_owned(),
                state: Mutex::new(State {
                    conn,
                    sinks: Vec::new(),
                }),
                _lock: lock,
            }),
        }
    }

    /// Opens an existing state database beside the daemon that may be running on it, for the
    /// commands that read it or make a small change in one transaction (`dead-letters`):
    /// without the daemon's lock, without migrations; refused unless the file is ours and of
    /// this program's schema.
    pub fn open_existing(path: &Path) -> Result<Store, StoreError> {
        let io = |source| StoreError::Io {
            path: path.to_owned(),
            source,
        };
        std::fs::metadata(path).map_err(io)?;
        inspect(path)?;
        let sqlite = |source| StoreError::Sqlite {
            path: path.to_owned(),
            source,
        };
        let flags =
            rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(path, flags).map_err(sqlite)?;
        conn.busy_timeout(Duration::from_secs(5)).map_err(sqlite)?;
        let known = MIGRATIONS.len() as u32;
        let found = user_version(&conn).map_err(sqlite)?;
        if found != known {
            return Err(StoreError::OtherVersion {
                path: path.to_owned(),
                found,
                known,
            });
        }
        // No lock: the daemon may hold it, and each change here is one transaction.
        Ok(Store::with(path, conn, None))
    }

    /// Runs `f` on tokio's blocking pool, where SQLite may wait on the disk.
    pub async fn run<R, F>(&self, f: F) -> R
    where
        F: FnOnce(&Store) -> R + Send + 'static,
        R: Send + 'static,
    {
        let store = self.clone();
        match tokio::task::spawn_blocking(move || f(&store)).await {
            Ok(res) => res,
            Err(err) => std::panic::resume_unwind(err.into_panic()),
        }
    }

    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// The schema version applied to the file.
    pub fn schema_version(&self) -> Result<u32, StoreError> {
        let state = self.lock();
        user_version(&state.conn).map_err(|source| self.err(source))
    }

    /// Declares the configured sinks. Offsets of sinks that are no longer configured are
    /// removed, so they stop holding pages back; their names are returned for the log.
    pub fn register_sinks(&self, sinks: &[&str]) -> Result<Vec<String>, StoreError> {
        let mut state = self.lock();
        let names = state_sinks(sinks);
        state.sinks = names.clone();
        let tx = state.conn.transaction().map_err(|e| self.err(e))?;
        let mut removed: Vec<String> = {
            let mut stmt = tx
                .prepare("SELECT DISTINCT sink FROM sink_offsets ORDER BY sink")
                .map_err(|e| self.err(e))?;
            stmt.query_map([], |row| row.get::<_, String>(0))
                .map_err(|e| self.err(e))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| self.err(e))?
        };
        removed.retain(|name| !sinks.contains(&name.as_str()));
        for name in &removed {
            tx.execute("DELETE FROM sink_offsets WHERE sink = ?1", [name])
                .map_err(|e| self.err(e))?;
        }
        // Pages that only the removed sinks were holding back are delivered everywhere now.
        let streams = {
            let mut stmt = tx
                .prepare("SELECT account, stream FROM streams")
                .map_err(|e| self.err(e))?;
            stmt.query_map([], |row| {
                Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?))
            })
            .map_err(|e| self.err(e))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| self.err(e))?
        };
        for (account, stream) in streams {
            delete_delivered(&tx, &names, &account, &stream).map_err(|e| self.err(e))?;
        }
        tx.commit().map_err(|e| self.err(e))?;
        Ok(removed)
    }

    /// The saved cursor of a stream, or `None` if it has never fetched a page.
    /// The saved cursor, when it was saved and the newest event time, if the stream has a row.
    pub fn stream_state(
        &self,
        account: &str,
        stream: Stream,
    ) -> Result<Option<StreamState>, StoreError> {
        let state = self.lock();
        let row = state
            .conn
            .query_row(
                "SELECT cursor, updated_at, last_event_ns FROM streams
                 WHERE account = ?1 AND stream = ?2",
                params![account, stream.as_str()],
                |row| {
                    Ok((
                        row.get::<_, Option<String>>(0)?,
                        row.get::<_, i64>(1)?,
                        row.get::<_, Option<i64>>(2)?,
                    ))
                },
            )
            .optional()
            .map_err(|e| self.err(e))?;
        Ok(row.map(|(cursor, saved_at, last_event_ns)| StreamState {
            cursor,
            saved_at: time::OffsetDateTime::from_unix_timestamp(saved_at)
                .unwrap_or(time::OffsetDateTime::UNIX_EPOCH),
            last_event_time: last_event_ns
                .and_then(|ns| time::OffsetDateTime::from_unix_timestamp_nanos(ns.into()).ok()),
        }))
    }

    pub fn cursor(&self, account: &str, stream: Stream) -> Result<Option<String>, StoreError> {
        let state = self.lock();
        state
            .conn
            .query_row(
                "SELECT cursor FROM streams WHERE account = ?1 AND stream = ?2",
                params![account, stream.as_str()],
                |row| row.get::<_, Option<String>>(0),
            )
            .optional()
            .map(Option::flatten)
            .map_err(|e| self.err(e))
    }

    /// The accounts that have state in this file (a cursor or pages).
    pub fn accounts(&self) -> Result<Vec<String>, StoreError> {
        let state = self.lock();
        let mut stmt = state
            .conn
            .prepare("SELECT DISTINCT account FROM streams ORDER BY account")
            .map_err(|e| self.err(e))?;
        stmt.query_map([], |row| row.get(0))
            .map_err(|e| self.err(e))?
            .collect::<Result<Vec<String>, _>>()
            .map_err(|e| self.err(e))
    }

    /// Deletes everything kept for an account: its cursors, its undelivered pages and the
    /// sinks' offsets in its streams, in one transaction. Returns what was dropped, for the log.
    pub fn forget_account(&self, account: &str) -> Result<DroppedAccount, StoreError> {
        let mut state = self.lock();
        let tx = state.conn.transaction().map_err(|e| self.err(e))?;
        let streams = {
            let mut stmt = tx
                .prepare("SELECT stream FROM streams WHERE account = ?1 ORDER BY stream")
                .map_err(|e| self.err(e))?;
            stmt.query_map([account], |row| row.get::<_, String>(0))
                .map_err(|e| self.err(e))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| self.err(e))?
        };
        let (pending_pages, pending_events): (u64, u64) = tx
            .query_row(
                "SELECT count(*), coalesce(sum(n_events), 0) FROM outbox WHERE account = ?1",
                [account],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .map_err(|e| self.err(e))?;
        for table in ["outbox", "sink_offsets", "streams"] {
            tx.execute(
                &format!("DELETE FROM {table} WHERE account = ?1"),
                [account],
            )
            .map_err(|e| self.err(e))?;
        }
        tx.commit().map_err(|e| self.err(e))?;
        Ok(DroppedAccount {
            streams,
            pending_pages,
            pending_events,
        })
    }

    /// Makes a fetched page durable: appends its events to the outbox (when there are any) and
    /// saves the cursor that follows them, in one transaction. `events` is a JSON array of the
    /// events as received. Returns the page's sequence number, or `None` for an empty page.
    pub fn append_page(
        &self,
        account: &str,
        stream: Stream,
        events: &str,
        n_events: u64,
        cursor: &str,
    ) -> Result<Option<u64>, StoreError> {
        match EventArray::parse(events) {
            Ok(array) if array.len() as u64 == n_events => {
                self.append_page_at(account, stream, &array, cursor, None)
            }
            // Text that is not an array of `n_events` events is kept as given, without
            // offsets: what a sink then makes of it is what a test of a damaged page looks at.
            _ => self.append_raw(account, stream, events, &[], n_events, cursor, None),
        }
    }

    /// [`Store::append_page`], also keeping `newest_event` as the stream's last event time if
    /// it is later than the one saved.
    pub fn append_page_at(
        &self,
        account: &str,
        stream: Stream,
        events: &EventArray,
        cursor: &str,
        newest_event: Option<time::OffsetDateTime>,
    ) -> Result<Option<u64>, StoreError> {
        let (text, ends) = (events.text(), events.ends_blob());
        let n_events = events.len() as u64;
        self.append_raw(account, stream, text, &ends, n_events, cursor, newest_event)
    }

    #[allow(clippy::too_many_arguments)]
    fn append_raw(
        &self,
        account: &str,
        stream: Stream,
        events: &str,
        event_ends: &[u8],
        n_events: u64,
        cursor: &str,
        newest_event: Option<time::OffsetDateTime>,
    ) -> Result<Option<u64>, StoreError> {
        // Nanoseconds fit an i64 until the year 2262; later times are not stored.
        let newest_ns = newest_event.and_then(|at| i64::try_from(at.unix_timestamp_nanos()).ok());
        let mut state = self.lock();
        let now = unix_now();
        let tx = state.conn.transaction().map_err(|e| self.err(e))?;
        // The statements of every page (here, in `ack_with` and `delete_delivered`) are
        // prepared once: parsing them each time was ~1 % of the daemon's CPU (perf).
        let last_seq: u64 = tx
            .prepare_cached("SELECT last_seq FROM streams WHERE account = ?1 AND stream = ?2")
            .and_then(|mut stmt| {
                stmt.query_row(params![account, stream.as_str()], |row| row.get(0))
                    .optional()
            })
            .map_err(|e| self.err(e))?
            .unwrap_or(0);
        let seq = (n_events > 0).then_some(last_seq + 1);
        if let Some(seq) = seq {
            execute_cached(
                &tx,
                "INSERT INTO outbox
                     (account, stream, seq, n_events, events, fetched_at, n_bytes, event_ends)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![
                    account,
                    stream.as_str(),
                    seq,
                    n_events,
                    events,
                    now,
                    events.len(),
                    event_ends
                ],
            )
            .map_err(|e| self.err(e))?;
        }
        execute_cached(
            &tx,
            "INSERT INTO streams (account, stream, cursor, last_seq, updated_at, last_event_ns)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT (account, stream) DO UPDATE SET
                 cursor = excluded.cursor, last_seq = excluded.last_seq,
                 updated_at = excluded.updated_at, restart_ns = NULL,
                 last_event_ns = CASE
                     WHEN excluded.last_event_ns IS NULL THEN streams.last_event_ns
                     WHEN streams.last_event_ns IS NULL THEN excluded.last_event_ns
                     ELSE max(streams.last_event_ns, excluded.last_event_ns) END",
            params![
                account,
                stream.as_str(),
                cursor,
                seq.unwrap_or(last_seq),
                now,
                newest_ns
            ],
        )
        .map_err(|e| self.err(e))?;
        tx.commit().map_err(|e| self.err(e))?;
        Ok(seq)
    }

    /// A sink's setting `key`, made by `make` and kept the first time it is asked for, the
    /// same ever after (a HEC sink's request channel).
    pub fn sink_setting(
        &self,
        sink: &str,
        key: &str,
        make: impl FnOnce() -> String,
    ) -> Result<String, StoreError> {
        let state = self.lock();
        let found: Option<String> = state
            .conn
            .query_row(
                "SELECT value FROM sink_settings WHERE sink = ?1 AND key = ?2",
                [sink, key],
                |row| row.get(0),
            )
            .optional()
            .map_err(|e| self.err(e))?;
        if let Some(value) = found {
            return Ok(value);
        }
        let value = make();
        state
            .conn
            .execute(
                "INSERT INTO sink_settings (sink, key, value) VALUES (?1, ?2, ?3)",
                [sink, key, value.as_str()],
            )
            .map_err(|e| self.err(e))?;
        Ok(value)
    }

    /// The bytes the database uses on disk (pages in use, free pages left out): what
    /// `max_outbox_bytes` bounds. Read from SQLite's header counters, so it costs nothing.
    pub fn used_bytes(&self) -> Result<u64, StoreError> {
        let state = self.lock();
        state
            .conn
            .query_row(
                "SELECT (SELECT page_count FROM pragma_page_count())
                      - (SELECT freelist_count FROM pragma_freelist_count()),
                        (SELECT page_size FROM pragma_page_size())",
                [],
                |row| Ok(row.get::<_, u64>(0)? * row.get::<_, u64>(1)?),
            )
            .map_err(|e| self.err(e))
    }

    /// `cursor reset`: forgets a stream's cursor so that it starts again from `at` (its
    /// pages waiting in the outbox are still delivered). Returns the cursor it had.
    pub fn reset_cursor(
        &self,
        account: &str,
        stream: Stream,
        at: time::OffsetDateTime,
    ) -> Result<Option<String>, StoreError> {
        let at_ns = i64::try_from(at.unix_timestamp_nanos()).unwrap_or(i64::MAX);
        let mut state = self.lock();
        let tx = state.conn.transaction().map_err(|e| self.err(e))?;
        let old: Option<String> = tx
            .query_row(
                "SELECT cursor FROM streams WHERE account = ?1 AND stream = ?2",
                params![account, stream.as_str()],
                |row| row.get(0),
            )
            .optional()
            .map_err(|e| self.err(e))?
            .flatten();
        tx.execute(
            "INSERT INTO streams (account, stream, cursor, last_seq, updated_at, restart_ns)
             VALUES (?1, ?2, NULL, 0, ?3, ?4)
             ON CONFLICT (account, stream) DO UPDATE SET
                 cursor = NULL, updated_at = excluded.updated_at, restart_ns = excluded.restart_ns",
            params![account, stream.as_str(), unix_now(), at_ns],
        )
        .map_err(|e| self.err(e))?;
        tx.commit().map_err(|e| self.err(e))?;
        Ok(old)
    }

    /// The time a `cursor reset` asked the stream to start again from, until a page is stored.
    pub fn restart_from(
        &self,
        account: &str,
        stream: Stream,
    ) -> Result<Option<time::OffsetDateTime>, StoreError> {
        let state = self.lock();
        let ns: Option<i64> = state
            .conn
            .query_row(
                "SELECT restart_ns FROM streams WHERE account = ?1 AND stream = ?2",
                params![account, stream.as_str()],
                |row| row.get(0),
            )
            .optional()
            .map_err(|e| self.err(e))?
            .flatten();
        Ok(ns.and_then(|ns| time::OffsetDateTime::from_unix_timestamp_nanos(ns.into()).ok()))
    }

    /// What an operator looks at, read in one transaction: each stream's position and
    /// backlog, each sink's offset in it, and the dead letters kept.
    pub fn report(&self) -> Result<StoreReport, StoreError> {
        let mut state = self.lock();
        let tx = state.conn.transaction().map_err(|e| self.err(e))?;
        let mut streams = Vec::new();
        {
            let mut stmt = tx
                .prepare(
                    "SELECT s.account, s.stream, s.cursor IS NOT NULL, s.last_seq, s.updated_at,
                            s.last_event_ns,
                            (SELECT count(*) FROM outbox o
                              WHERE o.account = s.account AND o.stream = s.stream),
                            (SELECT coalesce(sum(n_events), 0) FROM outbox o
                              WHERE o.account = s.account AND o.stream = s.stream),
                            (SELECT coalesce(sum(n_bytes), 0) FROM outbox o
                              WHERE o.account = s.account AND o.stream = s.stream)
                     FROM streams s ORDER BY s.account, s.stream",
                )
                .map_err(|e| self.err(e))?;
            let rows = stmt
                .query_map([], |row| {
                    Ok(StreamReport {
                        account: row.get(0)?,
                        stream: row.get(1)?,
                        has_cursor: row.get(2)?,
                        last_seq: row.get(3)?,
                        saved_at: row.get(4)?,
                        last_event_ns: row.get(5)?,
                        pending_pages: row.get(6)?,
                        pending_events: row.get(7)?,
                        pending_bytes: row.get(8)?,
                    })
                })
                .map_err(|e| self.err(e))?;
            for row in rows {
                streams.push(row.map_err(|e| self.err(e))?);
            }
        }
        let mut sinks = Vec::new();
        {
            let mut stmt = tx
                .prepare(
                    "SELECT sink, account, stream, acked_seq, updated_at FROM sink_offsets
                     ORDER BY sink, account, stream",
                )
                .map_err(|e| self.err(e))?;
            let rows = stmt
                .query_map([], |row| {
                    Ok(OffsetReport {
                        sink: row.get(0)?,
                        account: row.get(1)?,
                        stream: row.get(2)?,
                        acked_seq: row.get(3)?,
                        updated_at: row.get(4)?,
                    })
                })
                .map_err(|e| self.err(e))?;
            for row in rows {
                sinks.push(row.map_err(|e| self.err(e))?);
            }
        }
        let mut dead_letters = Vec::new();
        {
            let mut stmt = tx
                .prepare(
                    "SELECT sink, account, stream, count(*), max(reason) FROM dead_letters
                     GROUP BY sink, account, stream ORDER BY sink, account, stream",
                )
                .map_err(|e| self.err(e))?;
            let rows = stmt
                .query_map([], |row| {
                    Ok((
                        (row.get(0)?, row.get(1)?, row.get(2)?),
                        row.get::<_, u64>(3)?,
                    ))
                })
                .map_err(|e| self.err(e))?;
            for row in rows {
                dead_letters.push(row.map_err(|e| self.err(e))?);
            }
        }
        drop(tx);
        drop(state);
        Ok(StoreReport {
            streams,
            sinks,
            dead_letters,
            used_bytes: self.used_bytes()?,
        })
    }

    /// How many pages of a stream are in the outbox, not yet delivered by every sink.
    pub fn pending_pages(&self, account: &str, stream: Stream) -> Result<u64, StoreError> {
        let state = self.lock();
        state
            .conn
            .query_row(
                "SELECT count(*) FROM outbox WHERE account = ?1 AND stream = ?2",
                params![account, stream.as_str()],
                |row| row.get(0),
            )
            .map_err(|e| self.err(e))
    }

    /// The offset of a sink in a stream: every page up to it is delivered there.
    pub fn offset(&self, sink: &str, account: &str, stream: Stream) -> Result<u64, StoreError> {
        let state = self.lock();
        offset(&state.conn, sink, account, stream.as_str()).map_err(|e| self.err(e))
    }

    /// Whether the outbox holds a page of the stream `sink` has not yet delivered (without
    /// reading any page's events).
    pub fn has_pending(
        &self,
        sink: &str,
        account: &str,
        stream: Stream,
    ) -> Result<bool, StoreError> {
        let state = self.lock();
        let after = offset(&state.conn, sink, account, stream.as_str()).map_err(|e| self.err(e))?;
        state
            .conn
            .prepare_cached(
                "SELECT EXISTS (SELECT 1 FROM outbox WHERE account = ?1 AND stream = ?2 AND seq > ?3)",
            )
            .and_then(|mut stmt| {
                stmt.query_row(params![account, stream.as_str(), after], |row| row.get(0))
            })
            .map_err(|e| self.err(e))
    }

    /// Up to `max_pages` pages a sink has not yet delivered, oldest first.
    pub fn pages_for(
        &self,
        sink: &str,
        account: &str,
        stream: Stream,
        max_pages: u32,
    ) -> Result<Vec<OutboxPage>, StoreError> {
        self.pages_within(sink, account, stream, max_pages, u64::MAX)
    }

    /// [`Store::pages_for`], also no more pages than fit `max_bytes` of events (always the
    /// first, whatever its size). Read again from the same offset, it gives the same pages or
    /// more, never fewer: a retry sees the batch it retries.
    pub fn pages_within(
        &self,
        sink: &str,
        account: &str,
        stream: Stream,
        max_pages: u32,
        max_bytes: u64,
    ) -> Result<Vec<OutboxPage>, StoreError> {
        let state = self.lock();
        let after = offset(&state.conn, sink, account, stream.as_str()).map_err(|e| self.err(e))?;
        // The sizes first (small columns, read without touching a page's events), to know
        // where the batch ends.
        let mut sizes = state
            .conn
            .prepare_cached(
                "SELECT seq, n_bytes FROM outbox
                 WHERE account = ?1 AND stream = ?2 AND seq > ?3
                 ORDER BY seq LIMIT ?4",
            )
            .map_err(|e| self.err(e))?;
        let mut rows = sizes
            .query(params![account, stream.as_str(), after, max_pages])
            .map_err(|e| self.err(e))?;
        let (mut last, mut bytes) = (None::<u64>, 0u64);
        while let Some(row) = rows.next().map_err(|e| self.err(e))? {
            let (seq, n_bytes): (u64, u64) = (
                row.get(0).map_err(|e| self.err(e))?,
                row.get(1).map_err(|e| self.err(e))?,
            );
            bytes = bytes.saturating_add(n_bytes);
            if last.is_some() && bytes > max_bytes {
                break;
            }
            last = Some(seq);
        }
        drop(rows);
        let Some(last) = last else {
            return Ok(Vec::new());
        };
        let mut stmt = state
            .conn
            .prepare_cached(
                "SELECT seq, events, n_events, fetched_at, event_ends FROM outbox
                 WHERE account = ?1 AND stream = ?2 AND seq > ?3 AND seq <= ?4
                 ORDER BY seq",
            )
            .map_err(|e| self.err(e))?;
        stmt.query_map(params![account, stream.as_str(), after, last], |row| {
            Ok(OutboxPage {
                seq: row.get(0)?,
                events: row.get(1)?,
                n_events: row.get(2)?,
                fetched_at: row.get(3)?,
                event_ends: row.get(4)?,
            })
        })
        .map_err(|e| self.err(e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| self.err(e))
    }

    /// Records that `sink` has delivered every page of the stream up to `seq`, and deletes the
    /// pages every configured sink has now delivered, in one transaction. Returns how many pages
    /// were deleted.
    pub fn ack(
        &self,
        sink: &str,
        account: &str,
        stream: Stream,
        seq: u64,
    ) -> Result<u64, StoreError> {
        self.ack_with(sink, account, stream, seq, &[])
    }

    /// [`Store::ack`], keeping `dead` (events of the batch the sink refused for good) in the
    /// dead letters, in the same transaction.
    pub fn ack_with(
        &self,
        sink: &str,
        account: &str,
        stream: Stream,
        seq: u64,
        dead: &[DeadLetter],
    ) -> Result<u64, StoreError> {
        let mut state = self.lock();
        let sinks = state.sinks.clone();
        let tx = state.conn.transaction().map_err(|e| self.err(e))?;
        insert_dead_letters(&tx, sink, account, stream, dead).map_err(|e| self.err(e))?;
        execute_cached(
            &tx,
            "INSERT INTO sink_offsets (sink, account, stream, acked_seq, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (sink, account, stream) DO UPDATE SET
                 acked_seq = max(acked_seq, excluded.acked_seq), updated_at = excluded.updated_at",
            params![sink, account, stream.as_str(), seq, unix_now()],
        )
        .map_err(|e| self.err(e))?;
        let deleted =
            delete_delivered(&tx, &sinks, account, stream.as_str()).map_err(|e| self.err(e))?;
        tx.commit().map_err(|e| self.err(e))?;
        Ok(deleted)
    }

    /// The dead letters, of one sink or of all, oldest first, without their event bytes.
    pub fn dead_letters(&self, sink: Option<&str>) -> Result<Vec<StoredDeadLetter>, StoreError> {
        let state = self.lock();
        let mut stmt = state
            .conn
            .prepare(
                "SELECT id, sink, account, stream, uuid, reason, first_seen, queued, '' FROM dead_letters
                 WHERE ?1 IS NULL OR sink = ?1 ORDER BY id",
            )
            .map_err(|e| self.err(e))?;
        stmt.query_map([sink], stored_dead_letter)
            .map_err(|e| self.err(e))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| self.err(e))
    }

    /// Queues every dead letter of `sink` for delivery again; returns how many.
    pub fn queue_dead_letters(&self, sink: &str) -> Result<u64, StoreError> {
        let state = self.lock();
        state
            .conn
            .execute(
                "UPDATE dead_letters SET queued = 1 WHERE sink = ?1 AND queued = 0",
                [sink],
            )
            .map(|n| n as u64)
            .map_err(|e| self.err(e))
    }

    /// Up to `max` dead letters of a stream queued for delivery again to `sink`, oldest first,
    /// with their event bytes.
    pub fn queued_dead_letters(
        &self,
        sink: &str,
        account: &str,
        stream: Stream,
        max: u32,
    ) -> Result<Vec<StoredDeadLetter>, StoreError> {
        let state = self.lock();
        let mut stmt = state
            .conn
            .prepare_cached(
                "SELECT id, sink, account, stream, uuid, reason, first_seen, queued, event
                 FROM dead_letters
                 WHERE sink = ?1 AND account = ?2 AND stream = ?3 AND queued = 1
                 ORDER BY id LIMIT ?4",
            )
            .map_err(|e| self.err(e))?;
        stmt.query_map(
            params![sink, account, stream.as_str(), max],
            stored_dead_letter,
        )
        .map_err(|e| self.err(e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| self.err(e))
    }

    /// After a replay: deletes the dead letters `delivered`, and keeps `refused` (refused
    /// again, with their new reason) un-queued, in one transaction.
    pub fn replayed(&self, delivered: &[i64], refused: &[(i64, String)]) -> Result<(), StoreError> {
        let mut state = self.lock();
        let tx = state.conn.transaction().map_err(|e| self.err(e))?;
        for id in delivered {
            tx.execute("DELETE FROM dead_letters WHERE id = ?1", [id])
                .map_err(|e| self.err(e))?;
        }
        for (id, reason) in refused {
            tx.execute(
                "UPDATE dead_letters SET queued = 0, reason = ?2 WHERE id = ?1",
                params![id, reason],
            )
            .map_err(|e| self.err(e))?;
        }
        tx.commit().map_err(|e| self.err(e))
    }

    /// Deletes the dead letters of `sink` first seen before `before` (seconds since the Unix
    /// epoch); returns how many.
    pub fn purge_dead_letters(&self, sink: &str, before: i64) -> Result<u64, StoreError> {
        let state = self.lock();
        state
            .conn
            .execute(
                "DELETE FROM dead_letters WHERE sink = ?1 AND first_seen < ?2",
                params![sink, before],
            )
            .map(|n| n as u64)
            .map_err(|e| self.err(e))
    }

    /// What a killed process leaves: the connection is never closed (no checkpoint, no
    /// cleanup), only the kernel's release of the lock happens.
    #[cfg(test)]
    fn die(self) {
        let inner = Arc::try_unwrap(self.inner).unwrap_or_else(|_| panic!("other clones alive"));
        drop(inner._lock);
        std::mem::forget(inner.state);
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave SQLite half-written (transactions roll
        // back on drop), so a poisoned lock is still safe to use.
        self.inner.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn err(&self, source: rusqlite::Error) -> StoreError {
        StoreError::Sqlite {
            path: self.inner.path.clone(),
            source,
        }
    }
}

fn insert_dead_letters(
    tx: &Transaction<'_>,
    sink: &str,
    account: &str,
    stream: Stream,
    dead: &[DeadLetter],
) -> rusqlite::Result<()> {
    if dead.is_empty() {
        return Ok(());
    }
    let mut stmt = tx.prepare_cached(
        "INSERT INTO dead_letters (sink, account, stream, uuid, event, reason, first_seen)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?;
    let now = unix_now();
    for letter in dead {
        stmt.execute(params![
            sink,
            account,
            stream.as_str(),
            letter.uuid,
            letter.event,
            letter.reason,
            now
        ])?;
    }
    Ok(())
}

fn stored_dead_letter(row: &rusqlite::Row<'_>) -> rusqlite::Result<StoredDeadLetter> {
    Ok(StoredDeadLetter {
        id: row.get(0)?,
        sink: row.get(1)?,
        account: row.get(2)?,
        stream: row.get(3)?,
        uuid: row.get(4)?,
        reason: row.get(5)?,
        first_seen: row.get(6)?,
        queued: row.get::<_, i64>(7)? != 0,
        event: row.get(8)?,
    })
}

fn state_sinks(sinks: &[&str]) -> Vec<String> {
    sinks.iter().map(|s| (*s).to_owned()).collect()
}

/// Deletes the pages of a stream that every sink in `sinks` has acknowledged.
fn delete_delivered(
    tx: &Transaction<'_>,
    sinks: &[String],
    account: &str,
    stream: &str,
) -> rusqlite::Result<u64> {
    if sinks.is_empty() {
        return Ok(0);
    }
    let mut min_acked = u64::MAX;
    for sink in sinks {
        min_acked = min_acked.min(offset(tx, sink, account, stream)?);
    }
    let deleted = execute_cached(
        tx,
        "DELETE FROM outbox WHERE account = ?1 AND stream = ?2 AND seq <= ?3",
        params![account, stream, min_acked],
    )?;
    Ok(deleted as u64)
}

fn offset(conn: &Connection, sink: &str, account: &str, stream: &str) -> rusqlite::Result<u64> {
    conn.prepare_cached(
        "SELECT acked_seq FROM sink_offsets WHERE sink = ?1 AND account = ?2 AND stream = ?3",
    )?
    .query_row(params![sink, account, stream], |row| row.get(0))
    .optional()
    .map(|seq| seq.unwrap_or(0))
}

/// `conn.execute`, with the statement kept prepared in the connection's cache.
fn execute_cached(
    conn: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
) -> rusqlite::Result<usize> {
    conn.prepare_cached(sql)?.execute(params)
}

/// The page size of a new state file. A page of 1,000 events is ~650 KB of overflow pages:
/// with SQLite's default 4 KiB each append walked ~160 of them, with 16 KiB ~40. Appending
/// such a page took 2.04 ms at 4 KiB, 1.12–1.30 at 16, 1.37 at 32 and 1.54 at 64 (criterion,
/// `outbox/append` in micro-benches: larger pages make each small update of `streams` and
/// `sink_offsets` write more to the WAL). A file made before keeps its page size.
const PAGE_SIZE: u32 = 16384;

/// SQLite's page cache, in KiB (`PRAGMA cache_size` takes it negative). The default, 2,000
/// KiB, fills up once the outbox is larger than that, so that the daemon holding 1,000,000
/// pending events used ~2 MiB more than one holding 1,000. The outbox's pages are written
/// once and read once, straight after or much later; the cache earns nothing on them, and
/// the b-trees' interior pages of a state this size fit many times over.
const CACHE_KIB: i64 = 512;

/// `PRAGMA application_id` of op-events-forwarder state files: "OPEF" in ASCII.
pub const APPLICATION_ID: i32 = 0x4F50_4546;
/// How long a state held by another process is waited for before it is refused.
const LOCK_PATIENCE: Duration = Duration::from_secs(2);
/// Mode of the state file, its `-wal` and `-shm`, and the lock file.
const STATE_MODE: u32 = 0o600;
/// The tables every version of the schema has; a file with them and no application id is a
/// state file written before the id was set.
const OUR_TABLES: [&str; 3] = ["outbox", "sink_offsets", "streams"];

/// The lock file of a state database: `<path>.lock`.
pub fn lock_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".lock");
    PathBuf::from(name)
}

/// Takes the exclusive lock on `<path>.lock` and writes our pid into it, or says which
/// process holds it.
fn take_lock(path: &Path) -> Result<std::fs::File, StoreError> {
    use std::io::{Read as _, Seek as _, Write as _};
    use std::os::unix::fs::OpenOptionsExt as _;
    let io = |source| StoreError::Io {
        path: path.to_owned(),
        source,
    };
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(STATE_MODE)
        .open(lock_path(path))
        .map_err(io)?;
    // A holder that is going away (a daemon just stopped, or a child process in the moment
    // between fork and exec, which holds copies of its parent's descriptors) releases the
    // lock within moments: look again for a little while before refusing.
    let deadline = std::time::Instant::now() + LOCK_PATIENCE;
    loop {
        match file.try_lock() {
            Ok(()) => break,
            Err(std::fs::TryLockError::WouldBlock) if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(std::fs::TryLockError::WouldBlock) => {
                let mut text = String::new();
                let _ = file.read_to_string(&mut text);
                return Err(StoreError::Locked {
                    path: path.to_owned(),
                    pid: text.trim().parse().ok(),
                });
            }
            Err(std::fs::TryLockError::Error(err)) => return Err(io(err)),
        }
    }
    file.set_len(0).map_err(io)?;
    file.rewind().map_err(io)?;
    writeln!(file, "{}", std::process::id()).map_err(io)?;
    Ok(file)
}

/// Checks, without writing anything, that an existing file is a state database of ours (or
/// one written before the application id was set).
fn inspect(path: &Path) -> Result<(), StoreError> {
    use std::io::Read as _;
    let foreign = |what: String| StoreError::Foreign {
        path: path.to_owned(),
        what,
    };
    let mut header = [0u8; 16];
    let mut file = std::fs::File::open(path).map_err(|source| StoreError::Io {
        path: path.to_owned(),
        source,
    })?;
    if file.read_exact(&mut header).is_err() || &header != b"SQLite format 3\0" {
        return Err(foreign("it is not a SQLite database".into()));
    }
    drop(file);
    let sqlite = |source| StoreError::Sqlite {
        path: path.to_owned(),
        source,
    };
    let conn = Connection::open_with_flags(
        path,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(sqlite)?;
    let application_id: i32 = conn
        .query_row("PRAGMA application_id", [], |row| row.get(0))
        .map_err(sqlite)?;
    if application_id == APPLICATION_ID {
        return Ok(());
    }
    if application_id != 0 {
        return Err(foreign(format!(
            "it belongs to another program (application_id {application_id:#010x})"
        )));
    }
    let mut stmt = conn
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
        .map_err(sqlite)?;
    let tables = stmt
        .query_map([], |row| row.get::<_, String>(0))
        .map_err(sqlite)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(sqlite)?;
    if OUR_TABLES
        .iter()
        .all(|t| tables.iter().any(|have| have == t))
    {
        return Ok(());
    }
    Err(foreign(if tables.is_empty() {
        "it is a SQLite database without tables, not one this program made".into()
    } else {
        format!(
            "it is a SQLite database of another program (tables: {}{})",
            tables
                .iter()
                .take(5)
                .cloned()
                .collect::<Vec<_>>()
                .join(", "),
            if tables.len() > 5 { ", …" } else { "" }
        )
    }))
}

/// Makes a new state database: built as `<path>.new` (mode 0600), migrated, marked as ours,
/// checkpointed and closed, then renamed into place and the directory synced.
fn create(path: &Path) -> Result<(), StoreError> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let io = |source| StoreError::Io {
        path: path.to_owned(),
        source,
    };
    let mut temp = path.as_os_str().to_owned();
    temp.push(".new");
    let temp = PathBuf::from(temp);
    // A leftover of a first start that died midway (we hold the lock, nobody else uses it).
    for leftover in [sidecar(&temp, "-wal"), sidecar(&temp, "-shm"), temp.clone()] {
        match std::fs::remove_file(&leftover) {
            Err(err) if err.kind() != std::io::ErrorKind::NotFound => return Err(io(err)),
            _ => {}
        }
    }
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(STATE_MODE)
        .open(&temp)
        .map_err(io)?;
    let sqlite = |source| StoreError::Sqlite {
        path: path.to_owned(),
        source,
    };
    let mut conn = Connection::open(&temp).map_err(sqlite)?;
    conn.pragma_update(None, "page_size", PAGE_SIZE)
        .map_err(sqlite)?;
    conn.pragma_update(None, "application_id", APPLICATION_ID)
        .map_err(sqlite)?;
    configure(&conn).map_err(sqlite)?;
    migrate(&mut conn, path)?;
    conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
        .map_err(sqlite)?;
    conn.close().map_err(|(_, source)| sqlite(source))?;
    std::fs::rename(&temp, path).map_err(io)?;
    if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
        std::fs::File::open(dir)
            .and_then(|dir| dir.sync_all())
            .map_err(io)?;
    }
    tracing::info!(path = %path.display(), "created the state database");
    Ok(())
}

/// WAL, and `synchronous=FULL`: a committed cursor or acknowledgement survives a power cut
/// too, not just a crash.
fn configure(conn: &Connection) -> rusqlite::Result<()> {
    conn.busy_timeout(Duration::from_secs(5))?;
    let mode: String =
        conn.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))?;
    tracing::debug!(journal_mode = %mode, "state database journal mode");
    conn.pragma_update(None, "cache_size", -CACHE_KIB)?;
    conn.pragma_update(None, "synchronous", "FULL")
}

/// `<path><suffix>`, for SQLite's `-wal` and `-shm` files.
fn sidecar(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// Takes group and other access away from the state files (a state made under umask 022 by
/// an earlier version, or copied in).
fn restrict_permissions(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    for file in [
        path.to_owned(),
        sidecar(path, "-wal"),
        sidecar(path, "-shm"),
        lock_path(path),
    ] {
        match std::fs::metadata(&file) {
            Ok(meta) if meta.permissions().mode() & 0o077 != 0 => {
                std::fs::set_permissions(&file, std::fs::Permissions::from_mode(STATE_MODE))?;
                tracing::warn!(path = %file.display(), "state file was readable by others; made it 0600");
            }
            Ok(_) => {}
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
            Err(err) => return Err(err),
        }
    }
    Ok(())
}

fn user_version(conn: &Connection) -> rusqlite::Result<u32> {
    conn.query_row("PRAGMA user_version", [], |row| row.get(0))
}

fn migrate(conn: &mut Connection, path: &Path) -> Result<(), StoreError> {
    let sqlite = |source| StoreError::Sqlite {
        path: path.to_owned(),
        source,
    };
    let known = MIGRATIONS.len() as u32;
    let found = user_version(conn).map_err(sqlite)?;
    if found > known {
        return Err(StoreError::TooNew {
            path: path.to_owned(),
            found,
            known,
        });
    }
    for (idx, (name, sql)) in MIGRATIONS.iter().enumerate().skip(found as usize) {
        let version = idx as u32 + 1;
        let tx = conn.transaction().map_err(sqlite)?;
        tx.execute_batch(sql).map_err(sqlite)?;
        tx.pragma_update(None, "user_version", version)
            .map_err(sqlite)?;
        tx.commit().map_err(sqlite)?;
        tracing::info!(path = %path.display(), migration = name, version, "applied state migration");
    }
    let application_id: i32 = conn
        .query_row("PRAGMA application_id", [], |row| row.get(0))
        .map_err(sqlite)?;
    if application_id != APPLICATION_ID {
        conn.pragma_update(None, "application_id", APPLICATION_ID)
            .map_err(sqlite)?;
        tracing::info!(path = %path.display(), "marked the state database as op-events-forwarder's (application_id)");
    }
    Ok(())
}

fn unix_now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

#[cfg(test)]
mod tests {
    use super::*;

    const ACME: &str = "acme";
    const AUDIT: Stream = Stream::AuditEvents;

    fn temp_store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("state/state.db")).unwrap();
        (dir, store)
    }

    #[test]
    fn migrates_an_empty_file_and_reopens_an_already_migrated_one() {
        let (dir, store) = temp_store();
        assert_eq!(store.schema_version().unwrap(), MIGRATIONS.len() as u32);
        store
            .append_page(ACME, AUDIT, r#"[{"uuid":"A"}]"#, 1, "c1")
            .unwrap();
        drop(store);

        let again = Store::open(&dir.path().join("state/state.db")).unwrap();
        assert_eq!(again.schema_version().unwrap(), MIGRATIONS.len() as u32);
        assert_eq!(again.cursor(ACME, AUDIT).unwrap().as_deref(), Some("c1"));
    }

    /// A regression: the backlog's size was `length()` of the TEXT pages, which reads every
    /// pending byte (1.9 s a scrape with 600 MB pending) and counts characters, not bytes.
    #[test]
    fn the_backlog_is_counted_in_bytes_kept_with_each_page() {
        let (_dir, store) = temp_store();
        let page = r#"[{"uuid":"A","name":"Zoë Ångström"}]"#;
        store.append_page(ACME, AUDIT, page, 1, "c1").unwrap();
        store.append_page(ACME, AUDIT, page, 1, "c2").unwrap();
        let report = store.report().unwrap();
        let audit = report
            .streams
            .iter()
            .find(|s| s.stream == AUDIT.as_str())
            .unwrap();
        assert_eq!(audit.pending_bytes, 2 * page.len() as u64);
        assert!(page.len() > page.chars().count(), "bytes, not characters");
    }

    #[test]
    fn pages_stored_before_the_byte_count_existed_are_counted_after_the_migration() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let page = r#"[{"uuid":"A","name":"Zoë"}]"#;
        {
            let mut conn = Connection::open(&path).unwrap();
            conn.pragma_update(None, "application_id", APPLICATION_ID)
                .unwrap();
            let tx = conn.transaction().unwrap();
            for (_, sql) in &MIGRATIONS[..5] {
                tx.execute_batch(sql).unwrap();
            }
            tx.execute(
                "INSERT INTO streams (account, stream, cursor, last_seq, updated_at)
                 VALUES (?1, ?2, 'c1', 1, 0)",
                params![ACME, AUDIT.as_str()],
            )
            .unwrap();
            tx.execute(
                "INSERT INTO outbox (account, stream, seq, n_events, events, fetched_at)
                 VALUES (?1, ?2, 1, 1, ?3, 0)",
                params![ACME, AUDIT.as_str(), page],
            )
            .unwrap();
            tx.pragma_update(None, "user_version", 5).unwrap();
            tx.commit().unwrap();
        }
        let store = Store::open(&path).unwrap();
        assert_eq!(store.schema_version().unwrap(), MIGRATIONS.len() as u32);
        let report = store.report().unwrap();
        assert_eq!(report.streams[0].pending_bytes, page.len() as u64);
        // Kept before event offsets were: read by parsing, byte for byte.
        store.register_sinks(&["file"]).unwrap();
        let pages = store.pages_for("file", ACME, AUDIT, 10).unwrap();
        assert!(pages[0].event_ends.is_empty());
        assert_eq!(pages[0].events().unwrap(), [r#"{"uuid":"A","name":"Zoë"}"#]);
    }

    #[test]
    fn a_new_state_file_has_pages_of_16_kib() {
        let (dir, store) = temp_store();
        drop(store);
        let conn = Connection::open(dir.path().join("state/state.db")).unwrap();
        let size: u32 = conn
            .query_row("PRAGMA page_size", [], |row| row.get(0))
            .unwrap();
        assert_eq!(size, PAGE_SIZE);
    }

    #[test]
    fn the_page_cache_is_bounded_below_sqlites_default() {
        let (_dir, store) = temp_store();
        let state = store.lock();
        let cache: i64 = state
            .conn
            .query_row("PRAGMA cache_size", [], |row| row.get(0))
            .unwrap();
        assert_eq!(cache, -CACHE_KIB);
    }

    #[test]
    fn a_batch_is_bounded_by_bytes_but_always_holds_a_page() {
        let (_dir, store) = temp_store();
        store.register_sinks(&["file"]).unwrap();
        let big = format!(r#"[{{"uuid":"A","pad":"{}"}}]"#, "x".repeat(1000));
        for cursor in ["c1", "c2", "c3"] {
            store.append_page(ACME, AUDIT, &big, 1, cursor).unwrap();
        }
        let seqs = |max_bytes| -> Vec<u64> {
            let pages = store
                .pages_within("file", ACME, AUDIT, 8, max_bytes)
                .unwrap();
            pages.iter().map(|page| page.seq).collect()
        };
        let one = big.len() as u64;
        assert_eq!(
            seqs(10),
            [1],
            "the first page, though larger than the bound"
        );
        assert_eq!(seqs(2 * one), [1, 2]);
        assert_eq!(seqs(2 * one + 1), [1, 2]);
        assert_eq!(seqs(u64::MAX), [1, 2, 3]);
        assert!(store.has_pending("file", ACME, AUDIT).unwrap());
        assert!(
            !store.has_pending("file", ACME, Stream::ItemUsages).unwrap(),
            "another stream's pages are not this one's"
        );
        store.ack("file", ACME, AUDIT, 2).unwrap();
        assert_eq!(seqs(10), [3]);
        assert!(store.has_pending("file", ACME, AUDIT).unwrap());
        store.ack("file", ACME, AUDIT, 3).unwrap();
        assert_eq!(seqs(10), Vec::<u64>::new());
        assert!(!store.has_pending("file", ACME, AUDIT).unwrap());
    }

    #[test]
    fn a_page_is_kept_with_where_each_event_ends_and_read_back_from_it() {
        let (_dir, store) = temp_store();
        store.register_sinks(&["file"]).unwrap();
        // The array's own whitespace goes; each event's bytes stay as they were.
        let events = [r#"{"uuid":"A", "n": [1, 2]}"#, r#"{"uuid":"B,]"}"#];
        let page = format!("[ {} ,\n {} ]", events[0], events[1]);
        store.append_page(ACME, AUDIT, &page, 2, "c1").unwrap();
        let pages = store.pages_for("file", ACME, AUDIT, 10).unwrap();
        assert_eq!(pages[0].events, format!("[{}]", events.join(",")));
        assert_eq!(pages[0].event_ends.len(), 8);
        assert_eq!(
            event::split_array(&pages[0].events, &pages[0].event_ends).unwrap(),
            events
        );
        assert_eq!(pages[0].events().unwrap(), events);
    }

    #[test]
    fn refuses_a_schema_newer_than_it_knows() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let conn = Connection::open(&path).unwrap();
        conn.pragma_update(None, "application_id", APPLICATION_ID)
            .unwrap();
        conn.pragma_update(None, "user_version", 99).unwrap();
        drop(conn);
        let err = Store::open(&path).err().unwrap();
        assert_eq!(
            err.to_string(),
            format!(
                "state database {}: schema version 99 is newer than this program knows ({}); \
                 use a newer op-events-forwarder or another state file",
                path.display(),
                MIGRATIONS.len()
            )
        );
    }

    #[test]
    fn a_second_open_is_refused_naming_the_holder() {
        let (dir, store) = temp_store();
        let path = dir.path().join("state/state.db");
        let err = Store::open(&path).err().unwrap();
        assert_eq!(
            err.to_string(),
            format!(
                "state database {}: in use by another op-events-forwarder (pid {}) (lock file {}.lock); \
                 stop it first, or give this one a state file of its own ([state] path)",
                path.display(),
                std::process::id(),
                path.display()
            )
        );
        drop(store);
        Store::open(&path).expect("the lock is released with the store");
    }

    /// Asserts that opening `path` fails with `want` and leaves the file's bytes as they were
    /// and no `-wal` beside it.
    fn refused_untouched(path: &Path, want: &str) {
        let before = std::fs::read(path).unwrap();
        let err = Store::open(path).err().unwrap();
        assert_eq!(
            err.to_string(),
            format!("state database {}: {want}", path.display())
        );
        assert_eq!(
            std::fs::read(path).unwrap(),
            before,
            "the file is untouched"
        );
        assert!(!sidecar(path, "-wal").exists());
    }

    #[test]
    fn foreign_empty_and_in_memory_states_are_refused_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let hint = "; it is not an op-events-forwarder state file and is left untouched; \
                    point [state] path at a file of its own";

        std::fs::write(&path, "").unwrap();
        refused_untouched(
            &path,
            "the file exists but is empty (0 bytes), so its cursors are gone (truncated?); starting \
             afresh would fetch everything again from start_time: restore it from a backup, or \
             delete it to start afresh on purpose",
        );

        std::fs::write(&path, "not a database at all, just text").unwrap();
        refused_untouched(&path, &format!("it is not a SQLite database{hint}"));

        std::fs::remove_file(&path).unwrap();
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch("CREATE TABLE users (id INTEGER); CREATE TABLE orders (id INTEGER);")
            .unwrap();
        drop(conn);
        refused_untouched(
            &path,
            &format!("it is a SQLite database of another program (tables: orders, users){hint}"),
        );

        std::fs::remove_file(&path).unwrap();
        let conn = Connection::open(&path).unwrap();
        conn.pragma_update(None, "application_id", 0x1234_5678)
            .unwrap();
        conn.execute_batch(MIGRATIONS[0].1).unwrap();
        drop(conn);
        refused_untouched(
            &path,
            &format!("it belongs to another program (application_id 0x12345678){hint}"),
        );

        for memory in [":memory:", "", "file::memory:?cache=shared"] {
            let err = Store::open(Path::new(memory)).err().unwrap();
            assert_eq!(
                err.to_string(),
                format!(
                    "state database {memory:?}: the state must be a file on disk, so cursors and \
                     undelivered events survive a restart; set [state] path to a file"
                )
            );
        }
    }

    #[test]
    fn state_files_are_owner_only_whatever_the_umask() {
        use std::os::unix::fs::PermissionsExt as _;
        let (dir, store) = temp_store();
        store
            .append_page(ACME, AUDIT, r#"[{"uuid":"A"}]"#, 1, "c1")
            .unwrap();
        let path = dir.path().join("state/state.db");
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        for file in [
            path.clone(),
            sidecar(&path, "-wal"),
            sidecar(&path, "-shm"),
            lock_path(&path),
        ] {
            assert_eq!(mode(&file), 0o600, "{}", file.display());
        }
        drop(store);
        // A state made readable by others (an earlier version under umask 022) is tightened.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        drop(Store::open(&path).unwrap());
        assert_eq!(mode(&path), 0o600);
        assert!(!dir.path().join("state/state.db.new").exists());
    }

    #[test]
    fn dead_letters_are_kept_with_the_ack_listed_replayed_and_purged() {
        let (dir, store) = temp_store();
        store.register_sinks(&["siem", "file"]).unwrap();
        let seq = store
            .append_page(ACME, AUDIT, r#"[{"uuid":"A"},{"uuid":"B"}]"#, 2, "c1")
            .unwrap()
            .unwrap();
        let dead = DeadLetter {
            event: r#"{"uuid":"B"}"#.into(),
            uuid: Some("B".into()),
            reason: "too large".into(),
        };
        store.ack_with("siem", ACME, AUDIT, seq, &[dead]).unwrap();
        let listed = store.dead_letters(None).unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(
            (
                listed[0].sink.as_str(),
                listed[0].uuid.as_deref(),
                listed[0].reason.as_str()
            ),
            ("siem", Some("B"), "too large")
        );
        assert!(!listed[0].queued);
        assert!(store.dead_letters(Some("file")).unwrap().is_empty());
        assert!(
            store
                .queued_dead_letters("siem", ACME, AUDIT, 10)
                .unwrap()
                .is_empty()
        );

        // Another process (the dead-letters command) queues them while the daemon runs.
        let tool = Store::open_existing(&dir.path().join("state/state.db")).unwrap();
        assert_eq!(tool.queue_dead_letters("siem").unwrap(), 1);
        drop(tool);
        let queued = store.queued_dead_letters("siem", ACME, AUDIT, 10).unwrap();
        assert_eq!(queued.len(), 1);
        assert_eq!(queued[0].event, r#"{"uuid":"B"}"#);
        // Refused again: kept, with the new reason, no longer queued.
        store
            .replayed(&[], &[(queued[0].id, "still too large".into())])
            .unwrap();
        let listed = store.dead_letters(Some("siem")).unwrap();
        assert_eq!(
            (listed[0].reason.as_str(), listed[0].queued),
            ("still too large", false)
        );
        store.queue_dead_letters("siem").unwrap();
        store.replayed(&[queued[0].id], &[]).unwrap();
        assert!(store.dead_letters(None).unwrap().is_empty());

        store
            .ack_with(
                "file",
                ACME,
                AUDIT,
                seq,
                &[DeadLetter {
                    event: "{}".into(),
                    uuid: None,
                    reason: "r".into(),
                }],
            )
            .unwrap();
        assert_eq!(store.purge_dead_letters("file", 0).unwrap(), 0);
        assert_eq!(store.purge_dead_letters("file", unix_now() + 1).unwrap(), 1);
    }

    #[test]
    fn tools_refuse_a_missing_or_foreign_state() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        assert!(matches!(
            Store::open_existing(&path).err().unwrap(),
            StoreError::Io { .. }
        ));
        std::fs::write(&path, "text").unwrap();
        assert!(matches!(
            Store::open_existing(&path).err().unwrap(),
            StoreError::Foreign { .. }
        ));
        assert!(
            !path.with_extension("db.lock").exists(),
            "no lock file made"
        );
    }

    #[test]
    fn a_version_1_database_is_migrated_and_keeps_its_cursors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch(MIGRATIONS[0].1).unwrap();
        conn.execute(
            "INSERT INTO streams (account, stream, cursor, last_seq, updated_at)
             VALUES ('acme', 'auditevents', 'old', 3, 1000)",
            [],
        )
        .unwrap();
        conn.pragma_update(None, "user_version", 1).unwrap();
        drop(conn);
        let store = Store::open(&path).unwrap();
        assert_eq!(store.schema_version().unwrap(), MIGRATIONS.len() as u32);
        let application_id: i32 = store
            .lock()
            .conn
            .query_row("PRAGMA application_id", [], |row| row.get(0))
            .unwrap();
        assert_eq!(
            application_id, APPLICATION_ID,
            "a state of ours without the id is adopted"
        );
        let state = store.stream_state(ACME, AUDIT).unwrap().unwrap();
        assert_eq!(state.cursor.as_deref(), Some("old"));
        assert_eq!(state.saved_at.unix_timestamp(), 1000);
        assert_eq!(state.last_event_time, None);
    }

    #[test]
    fn the_newest_event_time_only_moves_forward() {
        use time::macros::datetime;
        let (_dir, store) = temp_store();
        assert_eq!(store.stream_state(ACME, AUDIT).unwrap(), None);
        let later = datetime!(2026-11-21 12:00:00.123456789 UTC);
        let earlier = datetime!(2026-11-20 00:00 UTC);
        store
            .append_page_at(
                ACME,
                AUDIT,
                &EventArray::parse("[1]").unwrap(),
                "c1",
                Some(later),
            )
            .unwrap();
        store
            .append_page_at(
                ACME,
                AUDIT,
                &EventArray::parse("[2]").unwrap(),
                "c2",
                Some(earlier),
            )
            .unwrap();
        store.append_page(ACME, AUDIT, "[]", 0, "c3").unwrap();
        let state = store.stream_state(ACME, AUDIT).unwrap().unwrap();
        assert_eq!(state.cursor.as_deref(), Some("c3"));
        assert_eq!(state.last_event_time, Some(later));
    }

    #[test]
    fn empty_pages_save_the_cursor_without_an_outbox_row() {
        let (_dir, store) = temp_store();
        assert_eq!(store.cursor(ACME, AUDIT).unwrap(), None);
        assert_eq!(store.append_page(ACME, AUDIT, "[]", 0, "c0").unwrap(), None);
        assert_eq!(store.cursor(ACME, AUDIT).unwrap().as_deref(), Some("c0"));
        assert_eq!(store.pending_pages(ACME, AUDIT).unwrap(), 0);
        assert_eq!(
            store.append_page(ACME, AUDIT, "[1]", 1, "c1").unwrap(),
            Some(1)
        );
    }

    #[test]
    fn cursors_with_whitespace_come_back_exactly() {
        // One official client stores "c1\n"; whatever the API hands out is kept byte for byte.
        let (_dir, store) = temp_store();
        for cursor in ["c1\n", " c2 ", "c\t3\r\n"] {
            store.append_page(ACME, AUDIT, "[]", 0, cursor).unwrap();
            assert_eq!(store.cursor(ACME, AUDIT).unwrap().as_deref(), Some(cursor));
        }
    }

    #[test]
    fn accounts_never_share_cursors() {
        let (_dir, store) = temp_store();
        store.append_page("a", AUDIT, "[1]", 1, "ca").unwrap();
        store.append_page("b", AUDIT, "[2]", 1, "cb").unwrap();
        assert_eq!(store.cursor("a", AUDIT).unwrap().as_deref(), Some("ca"));
        assert_eq!(store.cursor("b", AUDIT).unwrap().as_deref(), Some("cb"));
        assert_eq!(store.accounts().unwrap(), vec!["a", "b"]);
    }

    #[test]
    fn forgetting_an_account_deletes_only_its_state() {
        let (_dir, store) = temp_store();
        store.register_sinks(&["file"]).unwrap();
        store.append_page("old", AUDIT, "[1,2]", 2, "co1").unwrap();
        store
            .append_page("old", Stream::ItemUsages, "[3]", 1, "co2")
            .unwrap();
        store.ack("file", "old", AUDIT, 1).unwrap();
        store.append_page("old", AUDIT, "[4]", 1, "co3").unwrap();
        store.append_page("kept", AUDIT, "[5]", 1, "ck").unwrap();
        assert_eq!(
            store.forget_account("old").unwrap(),
            DroppedAccount {
                streams: vec!["auditevents".into(), "itemusages".into()],
                pending_pages: 2,
                pending_events: 2,
            }
        );
        assert_eq!(store.accounts().unwrap(), vec!["kept"]);
        assert_eq!(store.cursor("old", AUDIT).unwrap(), None);
        assert_eq!(store.pending_pages("old", AUDIT).unwrap(), 0);
        assert_eq!(store.offset("file", "old", AUDIT).unwrap(), 0);
        assert_eq!(store.cursor("kept", AUDIT).unwrap().as_deref(), Some("ck"));
        assert_eq!(store.pending_pages("kept", AUDIT).unwrap(), 1);
    }

    #[test]
    fn pages_are_deleted_once_every_sink_acked_them() {
        let (_dir, store) = temp_store();
        store.register_sinks(&["file", "syslog"]).unwrap();
        for n in 1..=3 {
            store
                .append_page(ACME, AUDIT, &format!("[{n}]"), 1, &format!("c{n}"))
                .unwrap();
        }
        let pages = store.pages_for("file", ACME, AUDIT, 10).unwrap();
        assert_eq!(pages.iter().map(|p| p.seq).collect::<Vec<_>>(), [1, 2, 3]);

        assert_eq!(store.ack("file", ACME, AUDIT, 3).unwrap(), 0);
        assert!(store.pages_for("file", ACME, AUDIT, 10).unwrap().is_empty());
        assert_eq!(store.pending_pages(ACME, AUDIT).unwrap(), 3);

        assert_eq!(store.ack("syslog", ACME, AUDIT, 2).unwrap(), 2);
        assert_eq!(store.pending_pages(ACME, AUDIT).unwrap(), 1);
        let left = store.pages_for("syslog", ACME, AUDIT, 10).unwrap();
        assert!(left[0].fetched_at > 1_700_000_000, "{left:?}");
        assert_eq!(
            left,
            [OutboxPage {
                seq: 3,
                events: "[3]".into(),
                event_ends: 2u32.to_le_bytes().to_vec(),
                n_events: 1,
                fetched_at: left[0].fetched_at,
            }]
        );

        // An older acknowledgement never moves an offset back.
        store.ack("file", ACME, AUDIT, 1).unwrap();
        assert_eq!(store.offset("file", ACME, AUDIT).unwrap(), 3);
    }

    #[test]
    fn sequence_numbers_keep_growing_after_the_outbox_empties() {
        let (_dir, store) = temp_store();
        store.register_sinks(&["file"]).unwrap();
        assert_eq!(
            store.append_page(ACME, AUDIT, "[1]", 1, "c1").unwrap(),
            Some(1)
        );
        store.ack("file", ACME, AUDIT, 1).unwrap();
        assert_eq!(store.pending_pages(ACME, AUDIT).unwrap(), 0);
        assert_eq!(
            store.append_page(ACME, AUDIT, "[2]", 1, "c2").unwrap(),
            Some(2)
        );
        assert_eq!(store.pages_for("file", ACME, AUDIT, 10).unwrap()[0].seq, 2);
    }

    #[test]
    fn removing_a_sink_releases_the_pages_it_held() {
        let (_dir, store) = temp_store();
        store.register_sinks(&["file", "gone"]).unwrap();
        store.append_page(ACME, AUDIT, "[1]", 1, "c1").unwrap();
        store.ack("file", ACME, AUDIT, 1).unwrap();
        store.ack("gone", ACME, AUDIT, 0).unwrap();
        assert_eq!(store.pending_pages(ACME, AUDIT).unwrap(), 1);
        assert_eq!(store.register_sinks(&["file"]).unwrap(), vec!["gone"]);
        assert_eq!(store.pending_pages(ACME, AUDIT).unwrap(), 0);
    }

    #[test]
    fn a_crash_between_append_and_ack_keeps_the_page_for_every_sink() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        {
            let store = Store::open(&path).unwrap();
            store.register_sinks(&["file"]).unwrap();
            store
                .append_page(ACME, AUDIT, r#"[{"uuid":"A"}]"#, 1, "c1")
                .unwrap();
            store.ack("file", ACME, AUDIT, 1).unwrap();
            store
                .append_page(ACME, AUDIT, r#"[{"uuid":"B"},{"uuid":"C"}]"#, 2, "c2")
                .unwrap();
            // The process dies here: the page is appended, no sink has acknowledged it.
            store.die();
        }
        let store = Store::open(&path).unwrap();
        store.register_sinks(&["file"]).unwrap();
        assert_eq!(store.cursor(ACME, AUDIT).unwrap().as_deref(), Some("c2"));
        assert_eq!(store.offset("file", ACME, AUDIT).unwrap(), 1);
        let pages = store.pages_for("file", ACME, AUDIT, 10).unwrap();
        assert_eq!(pages.len(), 1);
        assert_eq!(
            pages[0].events().unwrap(),
            [r#"{"uuid":"B"}"#, r#"{"uuid":"C"}"#]
        );
    }
}
