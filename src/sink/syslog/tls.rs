//! The TLS client config of a syslog sink (RFC 5425), built by [`crate::net::tls`], and what
//! is particular to syslog's long-lived connections: no session resumption, and a watch for
//! the server's session ticket (its verdict on our client certificate).
//!
//! `ca_file`, `client_cert`, `client_key` and `tls_insecure_skip_verify` mean what
//! [`crate::net::tls`] says; `server_name` replaces the address's host as the name checked.

use std::sync::Arc;

use rustls::pki_types::ServerName;

use super::config::{SyslogSinkConfig, SyslogTlsConfig};
use crate::net::tls::{self, Checked, NameFrom};

/// Builds the client config; errors name the key, the file and the problem.
pub fn client_config(config: &SyslogTlsConfig) -> Result<rustls::ClientConfig, String> {
    let options = config.options(Vec::new());
    let mut client = tls::client_config(&options).map_err(|err| err.to_string())?;
    // No session resumption: connections are long-lived, so it saves nothing, and rsyslog's
    // OpenSSL driver fails a resumed handshake under mutual TLS ("session id context
    // uninitialized"), which would refuse every connection after the first. Each connection
    // gets its own [`TicketWatch`] in place of a session store (see `for_one_connection`).
    client.resumption = rustls::client::Resumption::disabled();
    Ok(client)
}

/// What a handshake with the sink's receiver checks, for [`tls::explain`].
pub fn checked<'a>(config: &'a SyslogSinkConfig, server_name: &'a str) -> Checked<'a> {
    Checked {
        server_name,
        name_from: NameFrom::ServerName,
        ca_file: config.tls.ca_file.as_deref(),
        client_cert: config
            .tls
            .client_auth
            .as_ref()
            .map(|(cert, _)| cert.as_path()),
    }
}

/// The config for one connection, and what tells when its server sends a session ticket.
pub fn for_one_connection(
    config: &rustls::ClientConfig,
) -> (Arc<rustls::ClientConfig>, Arc<TicketWatch>) {
    let watch = Arc::new(TicketWatch::default());
    let mut config = config.clone();
    config.resumption = rustls::client::Resumption::store(Arc::clone(&watch) as _);
    (Arc::new(config), watch)
}

/// A session store that keeps nothing (so no session is ever resumed) but notes when the
/// server sends a TLS 1.3 session ticket. Servers send tickets once they have accepted the
/// handshake, the client's certificate included, so a ticket is the server's "yes".
#[derive(Debug, Default)]
pub struct TicketWatch {
    /// Notified for each ticket received.
    pub ticket: tokio::sync::Notify,
}

impl rustls::client::ClientSessionStore for TicketWatch {
    fn set_kx_hint(&self, _server_name: ServerName<'static>, _group: rustls::NamedGroup) {}

    fn kx_hint(&self, _server_name: &ServerName<'_>) -> Option<rustls::NamedGroup> {
        None
    }

    fn set_tls12_session(
        &self,
        _server_name: ServerName<'static>,
        _value: rustls::client::Tls12ClientSessionValue,
    ) {
    }

    fn tls12_session(
        &self,
        _server_name: &ServerName<'_>,
    ) -> Option<rustls::client::Tls12ClientSessionValue> {
        None
    }

    fn remove_tls12_session(&self, _server_name: &ServerName<'static>) {}

    fn insert_tls13_ticket(
        &self,
        _server_name: ServerName<'static>,
        _value: rustls::client::Tls13ClientSessionValue,
    ) {
        self.ticket.notify_one();
    }

    fn take_tls13_ticket(
        &self,
        _server_name: &ServerName<'static>,
    ) -> Option<rustls::client::Tls13ClientSessionValue> {
        None
    }
}

/// The name the server's certificate is checked against: `server_name`, else the host.
pub fn server_name(config: &SyslogSinkConfig) -> Result<ServerName<'static>, String> {
    let name = config.tls.server_name.as_deref().unwrap_or(&config.host);
    ServerName::try_from(name.to_owned())
        .map_err(|err| format!("\"{name}\" cannot be checked in a certificate: {err}"))
}
