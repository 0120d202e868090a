//! The TLS keys every sink that connects over TLS takes, read and checked once:
//! `ca_file`, `server_name`, `client_cert` with `client_key`, `tls_insecure_skip_verify`.
//! What they mean is [`crate::net::tls`]'s to say.

use std::net::Ipv6Addr;
use std::path::PathBuf;

use crate::config::{ConfigErrorKind, Problem, file_path, file_problem, join, pem_file, quote};
use crate::net::tls::TlsOptions;

/// A sink's TLS settings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SinkTlsConfig {
    /// `ca_file`: the CA certificates (PEM) to trust instead of the public roots
    /// ([`crate::net::tls`]).
    pub ca_file: Option<PathBuf>,
    /// `server_name`: the name to verify the certificate against instead of the host the
    /// sink connects to.
    pub server_name: Option<String>,
    /// `client_cert` and `client_key`: a certificate chain and key (PEM) for mutual TLS.
    pub client_auth: Option<(PathBuf, PathBuf)>,
    /// `tls_insecure_skip_verify`: accept any server certificate (logged loudly).
    pub insecure_skip_verify: bool,
}

/// The TLS keys of a sink's table, as written.
#[derive(Debug, Default)]
pub(crate) struct RawTls {
    pub ca_file: Option<String>,
    pub server_name: Option<String>,
    pub client_cert: Option<String>,
    pub client_key: Option<String>,
    pub insecure_skip_verify: bool,
}

impl RawTls {
    /// The first TLS key that is set, for a sink that does not use TLS to name.
    pub(crate) fn first_set(&self) -> Option<&'static str> {
        [
            ("ca_file", self.ca_file.is_some()),
            ("server_name", self.server_name.is_some()),
            ("client_cert", self.client_cert.is_some()),
            ("client_key", self.client_key.is_some()),
            ("tls_insecure_skip_verify", self.insecure_skip_verify),
        ]
        .into_iter()
        .find_map(|(name, set)| set.then_some(name))
    }
}

impl SinkTlsConfig {
    /// Checks the TLS keys of the sink table at `key`.
    pub(crate) fn from_raw(key: &str, raw: RawTls) -> Result<SinkTlsConfig, Problem> {
        let at = |name: &str| join(key, name);
        let ca_file = raw
            .ca_file
            .map(|path| file_path(&at("ca_file"), path))
            .transpose()?;
        let server_name = raw
            .server_name
            .map(|name| {
                if host_valid(&name) {
                    Ok(name)
                } else {
                    Err(Problem::invalid(
                        &at("server_name"),
                        "a DNS name or an IP address",
                        &quote(&name),
                    ))
                }
            })
            .transpose()?;
        let client_auth = match (raw.client_cert, raw.client_key) {
            (Some(cert), Some(key)) => Some((
                file_path(&at("client_cert"), cert)?,
                file_path(&at("client_key"), key)?,
            )),
            (Some(_), None) => {
                return Err(Problem::new(
                    Some(at("client_key")),
                    ConfigErrorKind::Missing {
                        note: Some("required with client_cert".to_owned()),
                    },
                ));
            }
            (None, Some(_)) => {
                return Err(Problem::new(
                    Some(at("client_cert")),
                    ConfigErrorKind::Missing {
                        note: Some("required with client_key".to_owned()),
                    },
                ));
            }
            (None, None) => None,
        };
        if raw.insecure_skip_verify && (ca_file.is_some() || server_name.is_some()) {
            return Err(Problem::invalid(
                &at("tls_insecure_skip_verify"),
                "false when ca_file or server_name is set (they configure the verification it turns off)",
                "true",
            ));
        }
        Ok(SinkTlsConfig {
            ca_file,
            server_name,
            client_auth,
            insecure_skip_verify: raw.insecure_skip_verify,
        })
    }

    /// Reads the files as the sink will at start: the CA file, and the client certificate and
    /// key, which must belong together (for `config::load` only).
    pub(crate) fn check_files(&self, key: &str) -> Result<(), Problem> {
        let at = |name: &str| join(key, name);
        if let Some(path) = &self.ca_file {
            pem_file(&at("ca_file"), path, crate::pem::read_roots)?;
        }
        if let Some((cert_path, key_path)) = &self.client_auth {
            let certs = pem_file(&at("client_cert"), cert_path, crate::pem::read_certs)?;
            let key = pem_file(&at("client_key"), key_path, crate::pem::read_private_key)?;
            crate::pem::check_key_pair(&certs, &key)
                .map_err(|error| file_problem(&at("client_key"), key_path, error.to_string()))?;
        }
        Ok(())
    }

    /// What the TLS module builds from these settings, offering `alpn_protocols`.
    pub fn options(&self, alpn_protocols: Vec<Vec<u8>>) -> TlsOptions {
        TlsOptions {
            ca_file: self.ca_file.clone(),
            client_auth: self.client_auth.clone(),
            insecure_skip_verify: self.insecure_skip_verify,
            alpn_protocols,
        }
    }
}

/// A host name (letters, digits, `-`, `.`), an IPv4 address or an IPv6 address.
pub(crate) fn host_valid(host: &str) -> bool {
    host.parse::<Ipv6Addr>().is_ok()
        || (!host.is_empty()
            && host.len() <= 253
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-'))
}
