//! The file sink under logrotate (the Debian package itself) and `rm`, against the built
//! binary: with `postrotate` sending SIGHUP and without it, nothing acknowledged is lost in
//! a rotated or deleted file.

use std::collections::HashMap;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use op_events_forwarder::stream::Stream;

use crate::support::{Env, PATIENCE, spawn_daemon, terminate, uuid_of};

fn logrotate() -> &'static str {
    ["/usr/sbin/logrotate", "/sbin/logrotate"]
        .into_iter()
        .find(|path| Path::new(path).exists())
        .expect("logrotate is installed (scripts/test installs it)")
}

/// Every event line in the output directory: current files, rotated ones, compressed ones.
/// With `settled`, nothing writes there any more and every byte must read as lines of
/// events; without, the daemon and logrotate may be writing as it is read, so a last line
/// without its line break, a split character or a half-written `.gz` are not counted yet (a
/// regression: a torn last line failed the round's progress check).
fn all_lines(out: &Path, settled: bool) -> Vec<String> {
    let mut lines = Vec::new();
    let Ok(entries) = std::fs::read_dir(out) else {
        return lines;
    };
    for entry in entries {
        let path = entry.unwrap().path();
        let Ok(bytes) = std::fs::read(&path) else {
            // Renamed or deleted since the listing; only while something writes.
            assert!(!settled, "{} vanished", path.display());
            continue;
        };
        let bytes = if path.extension().is_some_and(|ext| ext == "gz") {
            let mut text = Vec::new();
            match flate2::read::MultiGzDecoder::new(&bytes[..]).read_to_end(&mut text) {
                Ok(_) => text,
                Err(err) => {
                    assert!(!settled, "{}: {err}", path.display());
                    continue;
                }
            }
        } else {
            bytes
        };
        if settled {
            let text = String::from_utf8(bytes).expect("the output is UTF-8");
            lines.extend(text.lines().map(str::to_owned));
        } else {
            let text = String::from_utf8_lossy(&bytes);
            lines.extend(
                text.split_inclusive('\n')
                    .filter_map(|line| line.strip_suffix('\n'))
                    .filter(|line| serde_json::from_str::<serde_json::Value>(line).is_ok())
                    .map(str::to_owned),
            );
        }
    }
    lines
}

fn count(lines: &[String]) -> HashMap<String, usize> {
    let mut seen = HashMap::new();
    for line in lines {
        *seen.entry(uuid_of(line)).or_default() += 1;
    }
    seen
}

/// What a run under rotation left: every event the simulator served (by uuid, with its
/// stream) and how often each uuid is in the output now.
struct Outcome {
    served: Vec<(Stream, String)>,
    seen: HashMap<String, usize>,
}

impl Outcome {
    /// Asserts that every event served is in the output, except those in `gone`; returns
    /// the events served and the duplicates.
    fn check(&self, gone: &HashMap<String, usize>) -> (usize, usize) {
        for (stream, uuid) in &self.served {
            assert!(
                self.seen.contains_key(uuid) || gone.contains_key(uuid),
                "{stream}: {uuid} lost"
            );
        }
        let duplicates = self.seen.values().map(|n| n - 1).sum::<usize>()
            + gone
                .iter()
                .map(|(uuid, n)| n + self.seen.get(uuid).copied().unwrap_or(0) - 1)
                .sum::<usize>();
        (self.served.len(), duplicates)
    }
}

/// Runs the daemon with a file sink while events arrive in rounds, rotating (or deleting)
/// the output during each round with `rotate`; stops it once every event is in the output
/// (or in what `rotate` took away, which it counts in `gone`).
async fn under_rotation(
    seed: u64,
    gone: &std::sync::Mutex<HashMap<String, usize>>,
    rotate: impl Fn(&Env, &Child),
) -> Outcome {
    let env = Env::with_sim(300, seed, |cfg| cfg.empty_page_every = 0).await;
    let config = env.path("config.toml");
    std::fs::write(
        &config,
        env.config_toml("page_size = 50\npoll_interval_secs = 1"),
    )
    .unwrap();
    let stderr = env.path("stderr");
    let mut child = spawn_daemon(&config, &stderr, "info");
    let out = env.path("out");
    let delivered = |gone: &HashMap<String, usize>| {
        let seen = count(&all_lines(&out, false));
        seen.len() + gone.keys().filter(|uuid| !seen.contains_key(*uuid)).count()
    };
    for _round in 0..4 {
        let want: usize = Stream::ALL.iter().map(|s| env.sim.generated(*s)).sum();
        // Rotate while the daemon is busy writing: after a third of the round only.
        let deadline = Instant::now() + PATIENCE;
        while delivered(&gone.lock().unwrap()) * 3 < want {
            assert!(Instant::now() < deadline, "timed out waiting for a round");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        rotate(&env, &child);
        for stream in Stream::ALL {
            env.sim.insert(stream, 200);
        }
    }
    let want: usize = Stream::ALL.iter().map(|s| env.sim.generated(*s)).sum();
    let deadline = Instant::now() + PATIENCE;
    while delivered(&gone.lock().unwrap()) < want {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for every event"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let status = terminate(&mut child);
    let logs = std::fs::read_to_string(&stderr).unwrap();
    assert!(status.success(), "exit {status:?}:\n{logs}");
    Outcome {
        served: env.served(),
        seen: count(&all_lines(&out, true)),
    }
}

fn logrotate_config(env: &Env, postrotate_hup: Option<u32>) -> PathBuf {
    let postrotate = postrotate_hup
        .map(|pid| format!("    postrotate\n        kill -HUP {pid}\n    endscript\n"))
        .unwrap_or_default();
    let conf = env.path("logrotate.conf");
    std::fs::write(
        &conf,
        format!(
            "{}/out/*.ndjson {{\n    rotate 5\n    compress\n    nocreate\n    missingok\n{postrotate}}}\n",
            env.dir.path().display()
        ),
    )
    .unwrap();
    conf
}

fn run_logrotate(env: &Env, conf: &Path) {
    let out = Command::new(logrotate())
        .arg("-f")
        .arg("-s")
        .arg(env.path("logrotate.state"))
        .arg(conf)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "logrotate: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logrotate_with_a_sighup_loses_nothing() {
    let nothing = Default::default();
    let outcome = under_rotation(81, &nothing, |env, child| {
        run_logrotate(env, &logrotate_config(env, Some(child.id())));
    })
    .await;
    let (events, duplicates) = outcome.check(&HashMap::new());
    println!("logrotate + SIGHUP: {events} events, {duplicates} duplicates");
    assert!(duplicates <= 4 * 3 * 50, "{duplicates} duplicates");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logrotate_without_a_sighup_loses_nothing() {
    let nothing = Default::default();
    let outcome = under_rotation(82, &nothing, |env, _| {
        run_logrotate(env, &logrotate_config(env, None));
    })
    .await;
    let (events, duplicates) = outcome.check(&HashMap::new());
    println!("logrotate, no signal: {events} events, {duplicates} duplicates");
    assert!(duplicates <= 4 * 3 * 50, "{duplicates} duplicates");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_output_files_are_written_anew() {
    // `rm` of an output file takes what it held (the operator's choice); every event
    // delivered after it must be in a new file, none in the deleted one. The file is renamed
    // away, read and deleted, so the test knows exactly what the deletion took.
    let gone = std::sync::Mutex::new(HashMap::<String, usize>::new());
    let outcome = under_rotation(83, &gone, |env, _| {
        for stream in Stream::ALL {
            let path = env.output(stream);
            let aside = path.with_extension("deleted");
            if std::fs::rename(&path, &aside).is_err() {
                continue;
            }
            let text = std::fs::read_to_string(&aside).unwrap();
            std::fs::remove_file(&aside).unwrap();
            let mut gone = gone.lock().unwrap();
            // A last line without its line break is a batch the daemon was still writing when
            // the file moved: it writes that batch again into the new file.
            for line in text.split_inclusive('\n').filter(|l| l.ends_with('\n')) {
                *gone.entry(uuid_of(line.trim_end())).or_default() += 1;
            }
        }
    })
    .await;
    let gone = gone.into_inner().unwrap();
    assert!(!gone.is_empty(), "files were deleted");
    let (events, duplicates) = outcome.check(&gone);
    println!(
        "rm: {events} events, {} deleted with their files, {duplicates} duplicates",
        gone.len()
    );
}
