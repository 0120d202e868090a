//! HTTP collectors: Splunk HEC, Elasticsearch/OpenSearch `_bulk`, NDJSON and JSON webhooks.
//!
//! `format.rs` builds request bodies and `classify.rs` reads answers, both pure; the sink
//! that sends them is built on these.

pub mod classify;
pub mod format;
