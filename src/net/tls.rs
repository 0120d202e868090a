//! Every rustls client config of the daemon: the Events API client's and the syslog sink's.
//!
//! # Trust
//!
//! - By default a server's certificate must chain to the public roots compiled in
//!   (webpki-roots) and be valid for the name checked (the host of the URL or address, or
//!   `server_name`).
//! - `ca_file` **replaces** the public roots, for the API client and the syslog sink alike:
//!   the certificates in it are the only CAs trusted (a private CA, a TLS-inspecting proxy's
//!   CA, the simulator's certificate). Trusting a private CA besides every public one would let
//!   any public CA vouch for a private server, which is not what naming a CA asks for.
//! - A certificate of `ca_file` that a server presents as its own is **pinned**: accepted
//!   because it is byte for byte that certificate, even when webpki refuses it as a server's
//!   (a self-signed CA certificate, basicConstraints CA:TRUE, which `openssl req -x509` makes by
//!   default). Its name and validity period are still checked; its chain and extensions are not,
//!   since the operator named the certificate itself.
//! - `insecure_skip_verify` accepts any certificate: the session is encrypted (handshake
//!   signatures are still checked) but not authenticated.
//!
//! Every config uses the ring provider, passed explicitly: never the process default, which
//! another crate enabling aws-lc-rs would make ambiguous (rustls then panics).

#[cfg(test)]
mod tests;

use std::path::PathBuf;
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, SignatureScheme};

use super::x509;
use crate::pem::PemError;

/// What a client config trusts and offers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsOptions {
    /// `ca_file`: the only CA certificates trusted, instead of the public roots; each is also
    /// a pinned server certificate.
    pub ca_file: Option<PathBuf>,
    /// `client_cert` and `client_key`: a certificate chain and its key (PEM), for mutual TLS.
    pub client_auth: Option<(PathBuf, PathBuf)>,
    /// `tls_insecure_skip_verify`: accept any server certificate.
    pub insecure_skip_verify: bool,
    /// The ALPN protocols offered, most preferred first; empty for none. The API client
    /// leaves it empty: hyper-rustls sets it from the HTTP versions it enables (and refuses a
    /// config that already has some).
    pub alpn_protocols: Vec<Vec<u8>>,
}

/// Why a client config cannot be built; the files are read now, so this names the key and
/// the file.
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    #[error("ca_file {}: {error}", path.display())]
    CaFile { path: PathBuf, error: PemError },
    #[error("client_cert {}: {error}", path.display())]
    ClientCert { path: PathBuf, error: PemError },
    #[error("client_key {}: {error}", path.display())]
    ClientKey { path: PathBuf, error: PemError },
    /// rustls refused the certificate chain and key together.
    #[error("client_cert {}: {error}", path.display())]
    ClientAuth { path: PathBuf, error: rustls::Error },
    #[error("TLS setup: {0}")]
    Rustls(rustls::Error),
    #[error("TLS setup: {0}")]
    Verifier(rustls::client::VerifierBuilderError),
}

/// The crypto provider of every config: ring.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Builds a client config, reading the files `options` names.
///
/// # Errors
///
/// Returns a [`TlsSetupError`] naming the key and the file that cannot serve.
pub fn client_config(options: &TlsOptions) -> Result<rustls::ClientConfig, TlsSetupError> {
    let provider = provider();
    let builder = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(TlsSetupError::Rustls)?;
    let builder = if options.insecure_skip_verify {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate(provider)))
    } else if let Some(path) = &options.ca_file {
        let ca_file = |error| TlsSetupError::CaFile {
            path: path.clone(),
            error,
        };
        let certs = crate::pem::read_certs(path).map_err(ca_file)?;
        let verifier = CaFileVerifier::new(certs, provider).map_err(|err| match err {
            CaFileError::Pem(error) => ca_file(error),
            CaFileError::Verifier(error) => TlsSetupError::Verifier(error),
        })?;
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
    } else {
        builder.with_root_certificates(public_roots())
    };
    let mut config = match &options.client_auth {
        None => builder.with_no_client_auth(),
        Some((cert_path, key_path)) => {
            let certs =
                crate::pem::read_certs(cert_path).map_err(|error| TlsSetupError::ClientCert {
                    path: cert_path.clone(),
                    error,
                })?;
            let key = crate::pem::read_private_key(key_path).map_err(|error| {
                TlsSetupError::ClientKey {
                    path: key_path.clone(),
                    error,
                }
            })?;
            builder.with_client_auth_cert(certs, key).map_err(|error| {
                TlsSetupError::ClientAuth {
                    path: cert_path.clone(),
                    error,
                }
            })?
        }
    };
    config.alpn_protocols = options.alpn_protocols.clone();
    Ok(config)
}

/// The public roots: Mozilla's, compiled in (webpki-roots), so no CA bundle is needed.
fn public_roots() -> rustls::RootCertStore {
    rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    }
}

/// The verifier of a `ca_file`: its certificates are the only CAs trusted, and each is also a
/// pinned server certificate.
#[derive(Debug)]
struct CaFileVerifier {
    webpki: Arc<WebPkiServerVerifier>,
    pinned: Vec<CertificateDer<'static>>,
    provider: Arc<CryptoProvider>,
}

/// Why a [`CaFileVerifier`] cannot be made of some certificates.
#[derive(Debug)]
enum CaFileError {
    Pem(PemError),
    Verifier(rustls::client::VerifierBuilderError),
}

impl CaFileVerifier {
    fn new(
        certs: Vec<CertificateDer<'static>>,
        provider: Arc<CryptoProvider>,
    ) -> Result<CaFileVerifier, CaFileError> {
        let roots = crate::pem::roots(&certs).map_err(CaFileError::Pem)?;
        let webpki =
            WebPkiServerVerifier::builder_with_provider(roots.into(), Arc::clone(&provider))
                .build()
                .map_err(CaFileError::Verifier)?;
        Ok(CaFileVerifier {
            webpki,
            pinned: certs,
            provider,
        })
    }
}

impl ServerCertVerifier for CaFileVerifier {
    /// webpki's verdict, unless it refused a certificate that is pinned: then the pinned
    /// checks decide.
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self.webpki.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        ) {
            Err(_)
                if self
                    .pinned
                    .iter()
                    .any(|pin| pin.as_ref() == end_entity.as_ref()) =>
            {
                verify_pinned(end_entity, server_name, now)
            }
            verdict => verdict,
        }
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
            &self.provider.signature_verification_algorithms,
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
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// The checks of a pinned certificate, in webpki's order: the validity period, then the name.
/// The errors are webpki's, so a refusal reads the same either way.
fn verify_pinned(
    end_entity: &CertificateDer<'_>,
    server_name: &ServerName<'_>,
    now: UnixTime,
) -> Result<ServerCertVerified, rustls::Error> {
    let validity = x509::validity(end_entity)
        .map_err(|_| rustls::Error::InvalidCertificate(CertificateError::BadEncoding))?;
    if now < validity.not_before {
        return Err(rustls::Error::InvalidCertificate(
            CertificateError::NotValidYetContext {
                time: now,
                not_before: validity.not_before,
            },
        ));
    }
    if now > validity.not_after {
        return Err(rustls::Error::InvalidCertificate(
            CertificateError::ExpiredContext {
                time: now,
                not_after: validity.not_after,
            },
        ));
    }
    let parsed = rustls::server::ParsedCertificate::try_from(end_entity)?;
    rustls::client::verify_server_name(&parsed, server_name)?;
    Ok(ServerCertVerified::assertion())
}

/// `tls_insecure_skip_verify`: any certificate, any name; the handshake's signatures are still
/// checked, so the session is encrypted.
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
