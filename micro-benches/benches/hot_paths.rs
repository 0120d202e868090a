//! Criterion micro-benchmarks of the hot paths, each over one page of 1,000 audit events
//! from the simulator's generator: throughput is reported per event.
//!
//! Run: `cargo bench --manifest-path micro-benches/Cargo.toml` (BENCHMARKS.md).

use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use op_events_forwarder::bench::hot::{self, HttpFormat};
use op_events_forwarder::sink::syslog::config::SyslogFormat;

const EVENTS: usize = 1000;

fn ingest(c: &mut Criterion) {
    let page = hot::hot_page(EVENTS).expect("the simulator makes a page");
    let mut group = c.benchmark_group("ingest");
    group.throughput(Throughput::Elements(EVENTS as u64));
    group.bench_function("gunzip", |b| {
        b.iter(|| hot::gunzip(&page.body_gzip).expect("gzip"));
    });
    group.bench_function("parse_page", |b| {
        b.iter(|| hot::parse_page(&page.body).expect("a page"));
    });
    group.finish();
}

fn encode(c: &mut Criterion) {
    let page = hot::hot_page(EVENTS).expect("the simulator makes a page");
    let events = page.event_slices();
    let mut group = c.benchmark_group("encode");
    group.throughput(Throughput::Elements(EVENTS as u64));
    group.bench_function("file", |b| {
        b.iter(|| hot::file_lines(&page.outbox).expect("lines"));
    });
    let mut out = Vec::with_capacity(4 * page.body.len());
    for (name, format) in [
        ("syslog_rfc5424", SyslogFormat::Rfc5424),
        ("syslog_rfc3164", SyslogFormat::Rfc3164),
    ] {
        group.bench_function(name, |b| {
            b.iter(|| {
                out.clear();
                hot::syslog_messages(&mut out, &events, format);
                out.len()
            });
        });
    }
    for format in HttpFormat::ALL {
        group.bench_function(format.name(), |b| {
            b.iter(|| {
                out.clear();
                hot::http_body(&mut out, &events, format);
                out.len()
            });
        });
    }
    group.finish();
}

/// Times one part of a page's turn through the outbox (append, read or ack), running the
/// whole turn each iteration so the outbox stays one page deep.
fn outbox_part(
    store: &op_events_forwarder::store::Store,
    page: &hot::HotPage,
    part: usize,
    iters: u64,
) -> Duration {
    let mut spent = Duration::ZERO;
    for _ in 0..iters {
        let start = Instant::now();
        let seq = hot::outbox_append(store, &page.events).expect("append");
        let appended = start.elapsed();
        let start = Instant::now();
        assert_eq!(hot::outbox_read(store).expect("read"), EVENTS);
        let read = start.elapsed();
        let start = Instant::now();
        hot::outbox_ack(store, seq).expect("ack");
        let acked = start.elapsed();
        spent += [appended, read, acked][part];
    }
    spent
}

fn outbox(c: &mut Criterion) {
    let page = hot::hot_page(EVENTS).expect("the simulator makes a page");
    let dir = std::env::temp_dir().join(format!("opef-micro-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let store = hot::outbox(&dir.join("state.db")).expect("a state");
    let mut group = c.benchmark_group("outbox");
    group.throughput(Throughput::Elements(EVENTS as u64));
    group.sample_size(20);
    for (part, name) in ["append", "read", "ack"].into_iter().enumerate() {
        group.bench_function(name, |b| {
            b.iter_custom(|iters| outbox_part(&store, &page, part, iters));
        });
    }
    group.finish();
    drop(store);
    let _ = std::fs::remove_dir_all(&dir);
}

criterion_group!(benches, ingest, encode, outbox);
criterion_main!(benches);
