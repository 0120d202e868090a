//! The TLS client config of a syslog sink (RFC 5425): rustls with the ring provider.
//!
//! By default the server's certificate must chain to the built-in roots and be valid for the
//! address's host. `ca_file` replaces the roots (a private CA), `server_name` replaces the
//! name checked, `client_cert` and `client_key` give a certificate for mutual TLS, and
//! `tls_insecure_skip_verify` accepts any certificate (handshake signatures are still checked,
//! so the session is encrypted, just not authenticated).

use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

use super::config::{SyslogSinkConfig, SyslogTlsConfig};

/// Builds the client config; errors name the file and the problem.
pub fn client_config(config: &SyslogTlsConfig) -> Result<rustls::ClientConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|err| format!("TLS setup: {err}"))?;
    let builder = if config.insecure_skip_verify {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate(provider)))
    } else {
        let roots = match &config.ca_file {
            Some(path) => crate::pem::read_roots(path)
                .map_err(|err| format!("ca_file {}: {err}", path.display()))?,
            None => {
                let mut roots = rustls::RootCertStore::empty();
                roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
                roots
            }
        };
        builder.with_root_certificates(roots)
    };
    let mut client = match &config.client_auth {
        None => builder.with_no_client_auth(),
        Some((cert_path, key_path)) => {
            let certs = read_certs("client_cert", cert_path)?;
            let key = crate::pem::read_private_key(key_path)
                .map_err(|err| format!("client_key {}: {err}", key_path.display()))?;
            builder
                .with_client_auth_cert(certs, key)
                .map_err(|err| format!("client_cert {}: {err}", cert_path.display()))?
        }
    };
    // No session resumption: connections are long-lived, so it saves nothing, and rsyslog's
    // OpenSSL driver fails a resumed handshake under mutual TLS ("session id context
    // uninitialized"), which would refuse every connection after the first. Each connection
    // gets its own [`TicketWatch`] in place of a session store (see `for_one_connection`).
    client.resumption = rustls::client::Resumption::disabled();
    Ok(client)
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

fn read_certs(key: &str, path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    crate::pem::read_certs(path).map_err(|err| format!("{key} {}: {err}", path.display()))
}

/// `tls_insecure_skip_verify`: any certificate, any name.
#[derive(Debug)]
struct AcceptAnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
