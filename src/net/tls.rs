//! Every rustls client config of the daemon (the Events API client's, the syslog sink's), and
//! what a refused handshake means to an operator.
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
//!
//! # Errors
//!
//! [`explain`] turns a rustls error into what is wrong and what to change; every caller whose
//! handshake fails uses it (the syslog sink, the API client through [`rustls_error_of`]).

#[cfg(test)]
mod tests;

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{AlertDescription, CertificateError, DigitallySignedStruct, SignatureScheme};
use time::format_description::well_known::Rfc3339;

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

/// What a failed handshake checked the server against, for [`explain`] to say what to change.
#[derive(Debug, Clone, Copy)]
pub struct Checked<'a> {
    /// The name the server's certificate was checked against.
    pub server_name: &'a str,
    /// The setting that chooses that name.
    pub name_from: NameFrom,
    /// `ca_file`, when set (its certificates are then the only ones trusted).
    pub ca_file: Option<&'a Path>,
    /// `client_cert`, when set.
    pub client_cert: Option<&'a Path>,
}

/// The setting that chooses the name a server's certificate is checked against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameFrom {
    /// A syslog sink: `server_name`, else the host of `address`.
    ServerName,
    /// The API client: the host of `base_url` (or of the token's audience).
    BaseUrl,
}

/// What is wrong and what to change, for a rustls error of a failed handshake. Errors this
/// does not know keep rustls's text.
pub fn explain(error: &rustls::Error, checked: &Checked<'_>) -> String {
    let explained = match error {
        rustls::Error::InvalidCertificate(cert) => explain_certificate(cert, checked),
        rustls::Error::AlertReceived(alert) => explain_alert(*alert, checked),
        _ => None,
    };
    explained.unwrap_or_else(|| error.to_string())
}

/// [`explain`] for the rustls error an `io::Error` wraps (as tokio-rustls reports them); its
/// own text when it wraps none.
pub fn explain_io(error: &std::io::Error, checked: &Checked<'_>) -> String {
    rustls_error_of(error).map_or_else(|| error.to_string(), |err| explain(err, checked))
}

/// The rustls error that `error` is, or that it wraps as an `io::Error`, however deep (as
/// tokio-rustls reports them, and hyper-rustls wraps that again).
pub fn rustls_error_of<'a>(
    error: &'a (dyn std::error::Error + 'static),
) -> Option<&'a rustls::Error> {
    let mut error = error;
    loop {
        if let Some(found) = error.downcast_ref::<rustls::Error>() {
            return Some(found);
        }
        // `io::Error::source` skips the error it wraps (it returns that error's source).
        error = error
            .downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::get_ref)?;
    }
}

fn explain_certificate(error: &CertificateError, checked: &Checked<'_>) -> Option<String> {
    let name = checked.server_name;
    let fix_name = match checked.name_from {
        NameFrom::ServerName => "set server_name to one of them",
        NameFrom::BaseUrl => "use one of them as the host of base_url",
    };
    let text = match error {
        CertificateError::UnknownIssuer => {
            let trusted = match checked.ca_file {
                Some(path) => format!(
                    "is not issued by a CA in ca_file {}, nor is it one of that file's certificates",
                    path.display()
                ),
                None => "is not issued by a CA of the public roots (no ca_file is set): it comes \
                         from a private CA or is self-signed"
                    .to_owned(),
            };
            format!(
                "the server's certificate {trusted}; set ca_file to the certificate of the CA \
                 that issued it (for a self-signed certificate, the certificate itself)"
            )
        }
        CertificateError::ExpiredContext { time, not_after } => format!(
            "the server's certificate expired at {} and it is {} by the local clock; the server \
             needs a renewed certificate, or the local clock is wrong",
            rfc3339(*not_after),
            rfc3339(*time)
        ),
        CertificateError::Expired => "the server's certificate is outside its validity period; \
                                      the server needs a renewed certificate, or the local clock \
                                      is wrong"
            .to_owned(),
        CertificateError::NotValidYetContext { time, not_before } => format!(
            "the server's certificate is valid only from {} and it is {} by the local clock; the \
             local clock is wrong, or the certificate was issued to start in the future",
            rfc3339(*not_before),
            rfc3339(*time)
        ),
        CertificateError::NotValidYet => "the server's certificate is not valid yet; the local \
                                          clock is wrong, or the certificate was issued to start \
                                          in the future"
            .to_owned(),
        CertificateError::NotValidForNameContext { presented, .. } if presented.is_empty() => {
            let kind = if name.parse::<IpAddr>().is_ok() {
                "IP"
            } else {
                "DNS"
            };
            format!(
                "the server's certificate is not valid for \"{name}\": it has no name in a \
                 subjectAltName (the subject's CN is not checked); have it reissued with \
                 subjectAltName {kind}:{name}"
            )
        }
        CertificateError::NotValidForNameContext { presented, .. } => format!(
            "the server's certificate is not valid for \"{name}\": it names {}; {fix_name}, or \
             have the certificate reissued with \"{name}\" among its subjectAltNames",
            presented
                .iter()
                .map(|general| presented_name(general))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        CertificateError::NotValidForName => format!(
            "the server's certificate is not valid for \"{name}\"; {} the certificate names, or \
             have it reissued with \"{name}\" among its subjectAltNames",
            fix_name.replace("one of them", "a name")
        ),
        CertificateError::Other(other)
            if matches!(
                other.0.downcast_ref::<webpki::Error>(),
                Some(webpki::Error::CaUsedAsEndEntity)
            ) =>
        {
            let missing = match checked.ca_file {
                Some(path) => format!(" (ca_file {} does not hold it)", path.display()),
                None => String::new(),
            };
            format!(
                "the server presents a CA certificate (basicConstraints CA:TRUE, as openssl req \
                 -x509 makes by default) as its own, which is accepted only when pinned; to \
                 trust exactly that certificate, put it in ca_file{missing}, or give the server \
                 a certificate issued by a CA"
            )
        }
        // Both a certificate's signature and the handshake's, made with the certificate's key.
        CertificateError::BadSignature => "a signature of the server does not verify: a \
                                           certificate of its chain is not signed by the key of \
                                           the CA certificate that has its issuer's name (a CA \
                                           made again under the same name?), or the server signed \
                                           the handshake with a key that is not its certificate's; \
                                           set ca_file to the current certificate of the CA that \
                                           issued it, or give the server its certificate's key"
            .to_owned(),
        CertificateError::Revoked => {
            "the server's certificate has been revoked; the server needs a new certificate"
                .to_owned()
        }
        CertificateError::InvalidPurpose | CertificateError::InvalidPurposeContext { .. } => {
            "the server's certificate is not for TLS servers (its extendedKeyUsage lacks \
             serverAuth); the server needs a certificate issued for serverAuth"
                .to_owned()
        }
        _ => return None,
    };
    Some(text)
}

/// An alert the server sent: about our client certificate, or its absence.
fn explain_alert(alert: AlertDescription, checked: &Checked<'_>) -> Option<String> {
    use AlertDescription as A;
    let text = match (checked.client_cert, alert) {
        (None, A::CertificateRequired | A::BadCertificate | A::CertificateUnknown) => format!(
            "the server requires a client certificate (it sent the alert {alert:?}); set \
             client_cert and client_key"
        ),
        (None, A::HandshakeFailure) => "the server ended the handshake (alert HandshakeFailure): \
                                        it may require a client certificate (set client_cert \
                                        and client_key), or share no TLS version or cipher suite \
                                        with us"
            .to_owned(),
        (
            Some(path),
            A::BadCertificate
            | A::UnsupportedCertificate
            | A::CertificateRevoked
            | A::CertificateExpired
            | A::CertificateUnknown
            | A::UnknownCA
            | A::AccessDenied
            | A::CertificateRequired,
        ) => {
            let why = match alert {
                A::UnknownCA => "it must be issued by a CA the server trusts for clients",
                A::CertificateExpired => {
                    "it has expired (or the server's clock is wrong); renew it"
                }
                A::CertificateRevoked => "it has been revoked; issue a new one",
                _ => {
                    "it must be issued by a CA the server trusts for clients, be valid now, and \
                     allow clientAuth (extendedKeyUsage)"
                }
            };
            format!(
                "the server refused our client certificate (client_cert {}) with the alert \
                 {alert:?}; {why}",
                path.display()
            )
        }
        _ => return None,
    };
    Some(text)
}

/// A name as webpki reports it (`DnsName("localhost")`, `IpAddress(127.0.0.1)`), as written
/// in a certificate.
fn presented_name(general: &str) -> &str {
    general
        .strip_prefix("DnsName(\"")
        .and_then(|rest| rest.strip_suffix("\")"))
        .or_else(|| {
            general
                .strip_prefix("IpAddress(")
                .and_then(|rest| rest.strip_suffix(')'))
        })
        .unwrap_or(general)
}

fn rfc3339(at: UnixTime) -> String {
    i64::try_from(at.as_secs())
        .ok()
        .and_then(|secs| time::OffsetDateTime::from_unix_timestamp(secs).ok())
        .and_then(|at| at.format(&Rfc3339).ok())
        .unwrap_or_else(|| format!("{} (UNIX time)", at.as_secs()))
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
/// The errors are webpki's, so [`explain`] words them the same way.
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
