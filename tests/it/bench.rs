//! `bench pipeline` through the real binary: a tiny run into the file sink, and the figures
//! its report prints (present and sane, not how fast).

use std::process::Command;

use crate::support::BIN;

/// The number after `label` on the report line that starts with it.
fn figure(report: &str, label: &str) -> f64 {
    let line = report
        .lines()
        .find_map(|line| line.strip_prefix(label))
        .unwrap_or_else(|| panic!("no line starting {label:?} in:\n{report}"));
    let number = line.split_whitespace().next().unwrap_or_default();
    number
        .parse()
        .unwrap_or_else(|_| panic!("{label:?} is followed by {line:?}, not a number"))
}

/// Runs `op-events-forwarder bench pipeline <args>`, which must succeed; its report.
fn pipeline(args: &[&str]) -> String {
    let out = Command::new(BIN)
        .args(["bench", "pipeline"])
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("the binary runs");
    let report = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{}\n{report}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    report
}

#[test]
fn a_tiny_pipeline_delivers_every_event_and_reports_cpu_and_rss() {
    let report = pipeline(&["--events", "3000", "--sink", "file"]);
    assert!(
        report.contains("events delivered: 3000 of 3000\n"),
        "{report}"
    );
    assert!(
        report.contains("output check: every generated uuid exactly once"),
        "{report}"
    );
    assert!(figure(&report, "seconds: ") > 0.0, "{report}");
    assert!(figure(&report, "events/s: ") > 0.0, "{report}");
    assert!(figure(&report, "daemon CPU µs/event: ") > 0.0, "{report}");
    assert!(figure(&report, "daemon peak RSS: ") > 0.0, "{report}");
    assert!(
        figure(&report, "bench process CPU µs/event: ") > 0.0,
        "{report}"
    );
}

#[test]
fn a_tiny_run_into_a_sink_that_is_down_fetches_everything_then_holds_it_after_a_restart() {
    let report = pipeline(&["--events", "3000", "--sink", "down", "--hold-secs", "1"]);
    assert!(
        report.contains("events fetched: 3000 of 3000\n"),
        "{report}"
    );
    // 1,000 events a stream in pages of 1,000: three pages, none delivered.
    assert_eq!(figure(&report, "held outbox: "), 3.0, "{report}");
    assert!(figure(&report, "held daemon peak RSS: ") > 0.0, "{report}");
    assert!(
        figure(&report, "held daemon CPU % of one core: ") >= 0.0,
        "{report}"
    );
}

#[test]
fn with_no_backlog_a_sink_that_is_down_has_nothing_to_hold() {
    let report = pipeline(&["--events", "0", "--sink", "down"]);
    assert!(report.contains("events fetched: 0 of 0\n"), "{report}");
    assert!(!report.contains("held"), "{report}");
}
