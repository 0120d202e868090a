//! What the network clients share: the TLS client configs of the Events API client and the
//! syslog sink, what they read of a certificate, and what a refused handshake means.

pub mod tls;
mod x509;
