//! Benchmarks that print numbers: `bench governor` and `bench pipeline`.
//!
//! # Layout
//!
//! - `governor.rs`: `bench governor`, the daemon in-process against the simulator's strict
//!   rate limits; requests admitted as a fraction of the ceiling.
//! - `pipeline.rs`: `bench pipeline`, the release binary as a separate process against the
//!   simulator over HTTPS; events per second, the daemon's CPU per event and its peak RSS,
//!   and the same at a steady live rate.
//! - `hot.rs`: the hot paths of a page (gunzip, parse, each sink's encoding, the outbox's
//!   append, read and ack), one call each, for the criterion micro-benchmarks in
//!   `micro-benches/`.
//! - `procfs.rs`: a process's CPU time and peak RSS, from `/proc` and `getrusage`.
//! - `receiver.rs`: the in-process HTTP collector of `bench pipeline --sink http`.
//! - `sink_only.rs`: an outbox filled in advance and one sink worker over it, what the
//!   sink-only benchmarks (`examples/bench_http.rs`, `examples/bench_syslog.rs`) drive.

mod governor;
pub mod hot;
mod pipeline;
mod procfs;
mod receiver;
mod sink_only;

pub use self::governor::{GovernorBenchOptions, GovernorBenchReport, governor};
pub use self::pipeline::{
    HOLD_WINDOW_DEFAULT, HeldReport, LiveLoad, POLL_EVERY_DEFAULT, PipelineBenchOptions,
    PipelineBenchReport, PipelineSink, SteadyReport, pipeline,
};
pub use self::procfs::{CpuTime, ProcError, own_cpu_time, thread_cpu_time};
pub use self::sink_only::{PreparedSink, audit_pages, prepared_sink};
