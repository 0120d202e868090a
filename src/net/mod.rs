//! What the network clients share: the TLS client configs of the Events API client and the
//! syslog sink.

pub mod tls;
