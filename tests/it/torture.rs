//! Crash torture: the built binary killed with SIGKILL at random moments, many times, while
//! events keep arriving, with a file sink and a RELP sink into a real rsyslog. Every event
//! must reach both sinks, duplicated at most one batch per kill per sink.
//!
//! `OPEF_TORTURE_KILLS` sets the number of kills (default 50, about a minute);
//! `OPEF_TORTURE_SEED` repeats a run.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use op_events_forwarder::stream::Stream;

use crate::support::rsyslog::{Input, Rsyslog};
use crate::support::{Env, PATIENCE, spawn_daemon, terminate, uuid_of};

const PAGE_SIZE: usize = 100;
/// Pages a sink worker delivers at once (`sink::BATCH_PAGES`).
const BATCH_PAGES: usize = 8;

fn count(uuids: impl Iterator<Item = String>) -> HashMap<String, usize> {
    let mut seen = HashMap::new();
    for uuid in uuids {
        *seen.entry(uuid).or_default() += 1;
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_random_moments_under_load_loses_nothing_in_any_sink() {
    let kills: usize = std::env::var("OPEF_TORTURE_KILLS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(50);
    let seed: u64 = std::env::var("OPEF_TORTURE_SEED")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| fastrand::u64(..));
    println!("torture: {kills} kills, OPEF_TORTURE_SEED={seed}");
    let mut rng = fastrand::Rng::with_seed(seed);

    let env = Env::with_sim(1_000, 71, |cfg| cfg.empty_page_every = 0).await;
    let rsyslog = Rsyslog::start(&env.path("rsyslog"), 0, None);
    let config = env.path("config.toml");
    std::fs::write(
        &config,
        format!(
            "{}\n[[sinks]]\nname = \"relp\"\ntype = \"syslog\"\naddress = \"{}\"\ntransport = \"relp\"\n",
            env.config_toml(&format!("page_size = {PAGE_SIZE}\npoll_interval_secs = 1")),
            rsyslog.address(Input::Relp)
        ),
    )
    .unwrap();
    let stderr = env.path("stderr");

    let started = Instant::now();
    for kill in 0..kills {
        // Live load: events keep arriving between (and during) the runs.
        for stream in Stream::ALL {
            env.sim.insert(stream, rng.usize(0..300));
        }
        let mut child = spawn_daemon(&config, &stderr, "warn");
        // Random moments: during start-up, mid-batch, while idle.
        let alive = match kill % 4 {
            0 => rng.u64(0..50),
            _ => rng.u64(50..1_200),
        };
        tokio::time::sleep(Duration::from_millis(alive)).await;
        child.kill().unwrap();
        child.wait().unwrap();
    }
    let tortured = started.elapsed();

    // A last run delivers the rest; then it is stopped the way systemd does.
    let mut child = spawn_daemon(&config, &stderr, "warn");
    let served: Vec<(Stream, String)> = env.served();
    let total = served.len();
    let deadline = Instant::now() + PATIENCE;
    loop {
        let in_files: usize = Stream::ALL
            .iter()
            .map(|stream| {
                env.lines(*stream)
                    .iter()
                    .map(|line| uuid_of(line))
                    .collect::<std::collections::HashSet<_>>()
                    .len()
            })
            .sum();
        let in_rsyslog = rsyslog
            .records(Input::Relp)
            .iter()
            .map(|record| uuid_of(&record.msg))
            .collect::<std::collections::HashSet<_>>()
            .len();
        if in_files >= total && in_rsyslog >= total {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "timed out: {in_files} of {total} events in the files, {in_rsyslog} in rsyslog"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        terminate(&mut child).success(),
        "SIGTERM ends the run with 0"
    );

    let files = count(
        Stream::ALL
            .into_iter()
            .flat_map(|stream| env.lines(stream).into_iter().map(|line| uuid_of(&line))),
    );
    let relp = count(
        rsyslog
            .records(Input::Relp)
            .into_iter()
            .map(|record| uuid_of(&record.msg)),
    );
    let batch = PAGE_SIZE * BATCH_PAGES;
    for (sink, seen) in [("file", &files), ("relp", &relp)] {
        assert_eq!(seen.len(), total, "{sink}: only events the API served");
        let mut all_duplicates = 0;
        for stream in Stream::ALL {
            let mut duplicates = 0;
            for (_, uuid) in served.iter().filter(|(s, _)| *s == stream) {
                let n = seen.get(uuid).copied().unwrap_or(0);
                assert!(n > 0, "{sink} {stream}: {uuid} lost");
                duplicates += n - 1;
            }
            // A kill interrupts at most the one batch in hand of each (sink, stream) worker.
            assert!(
                duplicates <= kills * batch,
                "{sink} {stream}: {duplicates} duplicates after {kills} kills"
            );
            all_duplicates += duplicates;
        }
        println!(
            "torture {sink}: {total} events, none lost, {all_duplicates} duplicates after {kills} \
             kills in {tortured:.1?} (bound: one batch of {batch} per kill per stream)"
        );
    }
    let logs = std::fs::read_to_string(&stderr).unwrap();
    assert!(!logs.contains("panicked"), "{logs}");
}
