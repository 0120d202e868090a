//! Integration tests: the real daemon, in-process and as a binary, against the simulator
//! and real receivers (rsyslog).
//!
//! One test binary (faster to build and link than one per file); a module per area.

mod support;

mod accounts;
mod apiversions;
mod bench;
mod binary;
mod collectors;
mod daemon;
mod hostile;
mod http;
mod openapi;
mod operations;
mod resilience;
mod rotation;
mod syslog;
mod torture;
