//! The file sink: NDJSON, one event per line, bytes as received, fsynced before the ack.
//!
//! The path is a template with `{stream}` and `{account}`. Missing directories are created,
//! new files get mode 0640 (the events name people and addresses). A failed write is rolled
//! back to the file's previous length where possible, so a retried batch does not leave a
//! torn line behind.

pub mod config;

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use self::config::FileSinkConfig;
use super::{SinkError, one_line};
use crate::store::OutboxPage;
use crate::stream::Stream;

/// Mode of the files the sink creates.
const FILE_MODE: u32 = 0o640;

pub struct FileSink {
    inner: Arc<Inner>,
}

struct Inner {
    name: String,
    config: FileSinkConfig,
    /// Open files by path; shared by every worker of this sink, since streams (or accounts)
    /// may write to the same file when the template leaves them out.
    files: Mutex<HashMap<PathBuf, File>>,
}

impl FileSink {
    pub fn new(name: &str, config: &FileSinkConfig) -> FileSink {
        FileSink {
            inner: Arc::new(Inner {
                name: name.to_owned(),
                config: config.clone(),
                files: Mutex::new(HashMap::new()),
            }),
        }
    }

    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// Closes the open files (SIGHUP); each is opened again, by its path, at its next batch.
    pub fn reopen(&self) {
        for path in self.inner.reopen() {
            tracing::info!(sink = %self.inner.name, path = %path.display(), "reopening the file at its next batch");
        }
    }

    /// The file a stream of an account is written to.
    pub fn path_for(&self, account: &str, stream: Stream) -> PathBuf {
        self.inner.config.path_for(account, stream)
    }

    /// Writes the events of `pages`, one a line, and fsyncs the file. The lines are built
    /// here; only the file's work goes to a blocking thread, so the pages stay borrowed.
    pub async fn deliver(
        &self,
        account: &str,
        stream: Stream,
        pages: &[OutboxPage],
    ) -> Result<(), SinkError> {
        let path = self.inner.config.path_for(account, stream);
        let buf = lines(pages).map_err(|(seq, err)| {
            self.inner.io_err(
                &path,
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("outbox page {seq} of {account}/{stream} is corrupt: {err}"),
                ),
            )
        })?;
        let inner = Arc::clone(&self.inner);
        let done = tokio::task::spawn_blocking(move || inner.write(path, &buf)).await;
        match done {
            Ok(res) => res,
            Err(err) => std::panic::resume_unwind(err.into_panic()),
        }
    }
}

/// The events of `pages`, one a line; the seq of a page that does not parse, and why.
pub(crate) fn lines(pages: &[OutboxPage]) -> Result<Vec<u8>, (u64, serde_json::Error)> {
    let mut buf = Vec::with_capacity(pages.iter().map(|page| page.events.len()).sum());
    for page in pages {
        let events = page.events().map_err(|err| (page.seq, err))?;
        for event in events {
            buf.extend_from_slice(one_line(event).as_bytes());
            buf.push(b'\n');
        }
    }
    Ok(buf)
}

impl Inner {
    fn io_err(&self, path: &Path, source: std::io::Error) -> SinkError {
        SinkError::Io {
            sink: self.name.clone(),
            path: path.display().to_string(),
            source,
        }
    }

    fn write(&self, path: PathBuf, buf: &[u8]) -> Result<(), SinkError> {
        let io_err = |source| self.io_err(&path, source);
        let mut files = self.files.lock().unwrap_or_else(|p| p.into_inner());
        // A batch is acknowledged only if it is in the file the path names once it is
        // fsynced: a file renamed (rotated) or deleted in between has it written again into
        // a new one, so nothing acknowledged is ever only in a deleted inode.
        for _ in 0..MAX_REPLACED_WRITES {
            let file = match files.entry(path.clone()) {
                std::collections::hash_map::Entry::Occupied(entry) => {
                    if is_at(&path, entry.get()).map_err(io_err)? {
                        entry.into_mut()
                    } else {
                        tracing::info!(
                            sink = %self.name, path = %path.display(),
                            "the file was renamed or deleted (rotated?); writing to a new one"
                        );
                        let file = entry.into_mut();
                        *file = open(&path).map_err(io_err)?;
                        file
                    }
                }
                std::collections::hash_map::Entry::Vacant(entry) => {
                    entry.insert(open(&path).map_err(io_err)?)
                }
            };
            let before = file.metadata().map_err(io_err)?.len();
            let written = file.write_all(buf).and_then(|()| file.sync_data());
            if let Err(err) = written {
                // Take back a partial write so the retry starts on a clean line; drop the
                // handle so the next try opens the file afresh.
                let _ = file.set_len(before);
                files.remove(&path);
                return Err(io_err(err));
            }
            if is_at(&path, file).map_err(io_err)? {
                return Ok(());
            }
            tracing::warn!(
                sink = %self.name, path = %path.display(),
                "the file was renamed or deleted while a batch was written to it; writing the batch again to a new file"
            );
        }
        files.remove(&path);
        Err(io_err(std::io::Error::other(format!(
            "the file was replaced {MAX_REPLACED_WRITES} times in a row while a batch was written"
        ))))
    }

    /// Closes every open file, so the next batch opens its path afresh (after a rotation by
    /// logrotate, say). Returns the paths closed.
    fn reopen(&self) -> Vec<PathBuf> {
        let mut files = self.files.lock().unwrap_or_else(|p| p.into_inner());
        let mut paths: Vec<PathBuf> = files.drain().map(|(path, _)| path).collect();
        paths.sort();
        paths
    }
}

/// How many times in a row a batch is written again because its file was replaced meanwhile.
const MAX_REPLACED_WRITES: usize = 3;

/// Whether `path` still names the open `file` (same device and inode); false if it names
/// another file or none.
fn is_at(path: &Path, file: &File) -> std::io::Result<bool> {
    use std::os::unix::fs::MetadataExt as _;
    let open = file.metadata()?;
    match std::fs::metadata(path) {
        Ok(named) => Ok(named.dev() == open.dev() && named.ino() == open.ino()),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(err) => Err(err),
    }
}

/// Opens a file for appending, creating it and its directories if needed. A torn last line
/// (the process was killed in the middle of a write) is cut off: that batch was never
/// acknowledged, so it is delivered again whole.
fn open(path: &Path) -> std::io::Result<File> {
    if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let file = OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .mode(FILE_MODE)
        .open(path)?;
    let complete = complete_len(&file)?;
    let len = file.metadata()?.len();
    if complete < len {
        tracing::warn!(
            path = %path.display(), bytes = len - complete,
            "the file ends in a partial line from an interrupted write; removing it (its batch is written again)"
        );
        file.set_len(complete)?;
        file.sync_data()?;
    }
    Ok(file)
}

/// The length of the file up to and including its last line break.
fn complete_len(file: &File) -> std::io::Result<u64> {
    use std::os::unix::fs::FileExt;
    let len = file.metadata()?.len();
    let mut end = len;
    let mut buf = [0u8; 4096];
    while end > 0 {
        let start = end.saturating_sub(buf.len() as u64);
        let chunk = &mut buf[..(end - start) as usize];
        file.read_exact_at(chunk, start)?;
        if let Some(idx) = chunk.iter().rposition(|b| *b == b'\n') {
            return Ok(start + idx as u64 + 1);
        }
        end = start;
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn page(seq: u64, events: &[&str]) -> OutboxPage {
        let array = crate::event::EventArray::new(events.iter().copied());
        OutboxPage {
            seq,
            events: array.text().to_owned(),
            event_ends: array.ends_blob(),
            n_events: events.len() as u64,
            fetched_at: 1_700_000_000,
        }
    }

    #[tokio::test]
    async fn writes_one_event_per_line_into_new_directories() {
        let dir = tempfile::tempdir().unwrap();
        let template = format!("{}/out/{{account}}/{{stream}}.ndjson", dir.path().display());
        let sink = FileSink::new("archive", &FileSinkConfig { path: template });
        let a = r#"{"uuid":"A","name":"Zoë \"Z\"","n":1.50}"#;
        let b = r#"{"uuid":"B"}"#;
        sink.deliver("acme", Stream::ItemUsages, &[page(1, &[a]), page(2, &[b])])
            .await
            .unwrap();
        sink.deliver("acme", Stream::ItemUsages, &[page(3, &[b])])
            .await
            .unwrap();

        let path = dir.path().join("out/acme/itemusages.ndjson");
        assert_eq!(sink.path_for("acme", Stream::ItemUsages), path);
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            format!("{a}\n{b}\n{b}\n")
        );
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o640);
    }

    #[tokio::test]
    async fn a_torn_last_line_is_removed_before_the_batch_is_written_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("auditevents.ndjson");
        let long_line = format!("{{\"uuid\":\"A\",\"pad\":\"{}\"}}", "x".repeat(10_000));
        std::fs::write(&path, format!("{long_line}\n{{\"uuid\":\"B\",\"na")).unwrap();
        let sink = FileSink::new(
            "archive",
            &FileSinkConfig {
                path: format!("{}/{{stream}}.ndjson", dir.path().display()),
            },
        );
        let b = r#"{"uuid":"B","name":"b"}"#;
        sink.deliver("acme", Stream::AuditEvents, &[page(2, &[b])])
            .await
            .unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            format!("{long_line}\n{b}\n")
        );

        std::fs::write(&path, "no line break at all").unwrap();
        let sink = FileSink::new(
            "archive",
            &FileSinkConfig {
                path: format!("{}/{{stream}}.ndjson", dir.path().display()),
            },
        );
        sink.deliver("acme", Stream::AuditEvents, &[page(3, &[b])])
            .await
            .unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), format!("{b}\n"));
    }

    #[tokio::test]
    async fn a_renamed_or_deleted_file_is_replaced_before_the_next_batch() {
        let dir = tempfile::tempdir().unwrap();
        let template = format!("{}/{{stream}}.ndjson", dir.path().display());
        let sink = FileSink::new("archive", &FileSinkConfig { path: template });
        let path = dir.path().join("auditevents.ndjson");
        let rotated = dir.path().join("auditevents.ndjson.1");
        let (a, b, c) = (r#"{"uuid":"A"}"#, r#"{"uuid":"B"}"#, r#"{"uuid":"C"}"#);
        sink.deliver("acme", Stream::AuditEvents, &[page(1, &[a])])
            .await
            .unwrap();
        // logrotate without copytruncate: the file is renamed, nobody tells the sink.
        std::fs::rename(&path, &rotated).unwrap();
        sink.deliver("acme", Stream::AuditEvents, &[page(2, &[b])])
            .await
            .unwrap();
        assert_eq!(std::fs::read_to_string(&rotated).unwrap(), format!("{a}\n"));
        assert_eq!(std::fs::read_to_string(&path).unwrap(), format!("{b}\n"));
        // Deleted: the next batch goes into a new file, not into the deleted inode.
        std::fs::remove_file(&path).unwrap();
        sink.deliver("acme", Stream::AuditEvents, &[page(3, &[c])])
            .await
            .unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), format!("{c}\n"));
    }

    #[test]
    fn a_file_replaced_during_the_write_gets_the_batch_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.ndjson");
        let file = open(&path).unwrap();
        assert!(is_at(&path, &file).unwrap());
        std::fs::rename(&path, dir.path().join("x.ndjson.1")).unwrap();
        assert!(!is_at(&path, &file).unwrap());
        std::fs::write(&path, "").unwrap();
        assert!(!is_at(&path, &file).unwrap(), "another file at the path");
    }

    #[tokio::test]
    async fn reopen_closes_the_files_so_the_next_batch_opens_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let template = format!("{}/{{stream}}.ndjson", dir.path().display());
        let sink = FileSink::new("archive", &FileSinkConfig { path: template });
        sink.deliver(
            "acme",
            Stream::AuditEvents,
            &[page(1, &[r#"{"uuid":"A"}"#])],
        )
        .await
        .unwrap();
        assert_eq!(sink.inner.reopen(), [dir.path().join("auditevents.ndjson")]);
        assert!(sink.inner.reopen().is_empty());
    }

    #[tokio::test]
    async fn a_path_that_cannot_be_created_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let blocker = dir.path().join("blocker");
        std::fs::write(&blocker, "a file, not a directory").unwrap();
        let template = format!("{}/{{stream}}.ndjson", blocker.display());
        let sink = FileSink::new("archive", &FileSinkConfig { path: template });
        let err = sink
            .deliver("acme", Stream::AuditEvents, &[page(1, &["{}"])])
            .await
            .unwrap_err();
        assert!(
            err.to_string().starts_with(&format!(
                "sink archive: {}/auditevents.ndjson: ",
                blocker.display()
            )),
            "{err}"
        );
    }
}
