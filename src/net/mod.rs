//! What the network clients share: the TLS client configs of the Events API client and the
//! syslog sink, and what they read of a certificate.

pub mod tls;
mod x509;
