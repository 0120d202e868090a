//! PEM files the config names: CA certificates, a client certificate chain and its key.
//!
//! The one loader of these files: read with rustls's PEM reader (`PemObject`), by the config
//! check and by the TLS setup ([`crate::net::tls`]) alike, so that `check-config` refuses the
//! files that `run` would.

use std::path::Path;

use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;

/// Why a PEM file cannot serve; displays without the path (the caller names it).
#[derive(Debug, thiserror::Error)]
pub enum PemError {
    /// The file cannot be opened or read (missing, a directory, no permission).
    #[error("cannot read the file: {0}")]
    Unreadable(std::io::Error),
    /// A section of the file is not valid PEM.
    #[error("invalid PEM: {0}")]
    Malformed(pem::Error),
    /// The file holds no `CERTIFICATE` section.
    #[error("no PEM certificate in the file")]
    NoCertificate,
    /// The file holds no private key section (PKCS#8, PKCS#1 or SEC1).
    #[error("no PEM private key in the file")]
    NoPrivateKey,
    /// A certificate that rustls cannot use as a trust anchor.
    #[error("unusable certificate: {0}")]
    UnusableCertificate(rustls::Error),
    /// A private key that rustls cannot sign with.
    #[error("unusable private key: {0}")]
    UnusableKey(rustls::Error),
    /// A private key that does not belong to the certificate it is paired with.
    #[error("the private key does not belong to the certificate (the first of client_cert)")]
    KeyMismatch,
}

impl From<pem::Error> for PemError {
    fn from(error: pem::Error) -> PemError {
        match error {
            pem::Error::Io(error) => PemError::Unreadable(error),
            other => PemError::Malformed(other),
        }
    }
}

/// Reads every certificate of a PEM file, in order.
///
/// # Errors
///
/// Returns a [`PemError`] when the file cannot be read, is not valid PEM, or holds no certificate.
pub fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, PemError> {
    let certs = CertificateDer::pem_file_iter(path)?.collect::<Result<Vec<_>, _>>()?;
    if certs.is_empty() {
        return Err(PemError::NoCertificate);
    }
    Ok(certs)
}

/// Reads the certificates of a PEM file into a root store, as the only roots to trust.
///
/// # Errors
///
/// Returns a [`PemError`] when [`read_certs`] fails or a certificate cannot be a trust anchor.
pub fn read_roots(path: &Path) -> Result<rustls::RootCertStore, PemError> {
    roots(&read_certs(path)?)
}

/// A root store of exactly `certs`.
///
/// # Errors
///
/// Returns [`PemError::UnusableCertificate`] for a certificate that cannot be a trust anchor.
pub fn roots(certs: &[CertificateDer<'static>]) -> Result<rustls::RootCertStore, PemError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in certs {
        roots
            .add(cert.clone())
            .map_err(PemError::UnusableCertificate)?;
    }
    Ok(roots)
}

/// Reads the first private key of a PEM file.
///
/// # Errors
///
/// Returns a [`PemError`] when the file cannot be read, is not valid PEM, or holds no key.
pub fn read_private_key(path: &Path) -> Result<PrivateKeyDer<'static>, PemError> {
    PrivateKeyDer::from_pem_file(path).map_err(|error| match error {
        pem::Error::NoItemsFound => PemError::NoPrivateKey,
        other => PemError::from(other),
    })
}

/// Checks that `key` can sign and belongs to the first of `certs`, as rustls does when a client
/// config takes them (`with_client_auth_cert`, ring provider).
///
/// # Errors
///
/// Returns [`PemError::UnusableKey`] for a key ring cannot load, [`PemError::KeyMismatch`] for a
/// key of another certificate.
pub fn check_key_pair(
    certs: &[CertificateDer<'static>],
    key: &PrivateKeyDer<'static>,
) -> Result<(), PemError> {
    let provider = rustls::crypto::ring::default_provider();
    match CertifiedKey::from_der(certs.to_vec(), key.clone_key(), &provider) {
        Ok(_) => Ok(()),
        Err(rustls::Error::InconsistentKeys(_)) => Err(PemError::KeyMismatch),
        Err(other) => Err(PemError::UnusableKey(other)),
    }
}
