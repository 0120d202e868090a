//! Tests of the TLS client configs: the pinned certificate check (alone and in handshakes),
//! what [`explain`] says for every refusal it knows, and finding rustls errors in error chains.

use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use rustls::pki_types::PrivateKeyDer;
use time::OffsetDateTime;
use time::macros::datetime;

use super::*;

/// The time of every check here.
const NOW: OffsetDateTime = datetime!(2026-06-01 12:00:00 UTC);

fn unix(at: OffsetDateTime) -> UnixTime {
    UnixTime::since_unix_epoch(std::time::Duration::from_secs(
        u64::try_from(at.unix_timestamp()).unwrap(),
    ))
}

/// A self-signed CA certificate (basicConstraints CA:TRUE) for `names`, as `openssl req -x509`
/// makes one, valid a year around [`NOW`] unless `params` says otherwise.
fn self_signed_ca(
    names: &[&str],
    params: impl FnOnce(&mut CertificateParams),
) -> (CertificateDer<'static>, KeyPair) {
    let key = KeyPair::generate().unwrap();
    (self_signed_ca_with_key(names, &key, params), key)
}

fn self_signed_ca_with_key(
    names: &[&str],
    key: &KeyPair,
    params: impl FnOnce(&mut CertificateParams),
) -> CertificateDer<'static> {
    let mut cert =
        CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>()).unwrap();
    cert.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    cert.distinguished_name.push(DnType::CommonName, names[0]);
    cert.not_before = NOW - time::Duration::days(180);
    cert.not_after = NOW + time::Duration::days(180);
    params(&mut cert);
    cert.self_signed(key).unwrap().der().clone()
}

/// The verifier of a `ca_file` holding `certs`.
fn ca_file_verifier(certs: &[CertificateDer<'static>]) -> CaFileVerifier {
    CaFileVerifier::new(certs.to_vec(), provider()).unwrap()
}

fn verify(
    verifier: &dyn ServerCertVerifier,
    cert: &CertificateDer<'_>,
    name: &str,
) -> Result<ServerCertVerified, rustls::Error> {
    let name = ServerName::try_from(name.to_owned()).unwrap();
    verifier.verify_server_cert(cert, &[], &name, &[], unix(NOW))
}

/// What a syslog sink with `ca_file = "/etc/siem-ca.pem"` checked.
fn syslog() -> Checked<'static> {
    Checked {
        server_name: "siem.example.net",
        name_from: NameFrom::ServerName,
        ca_file: Some(Path::new("/etc/siem-ca.pem")),
        client_cert: None,
    }
}

/// The "not pinned" refusal of a CA certificate, as webpki says it.
fn ca_used_as_end_entity() -> rustls::Error {
    rustls::Error::InvalidCertificate(CertificateError::Other(rustls::OtherError(Arc::new(
        webpki::Error::CaUsedAsEndEntity,
    ))))
}

#[test]
fn a_pinned_ca_certificate_is_accepted_for_each_of_its_names() {
    let (cert, _) = self_signed_ca(&["localhost", "127.0.0.1"], |_| {});
    let verifier = ca_file_verifier(std::slice::from_ref(&cert));
    verify(&verifier, &cert, "localhost").unwrap();
    verify(&verifier, &cert, "127.0.0.1").unwrap();
}

#[test]
fn a_ca_certificate_that_is_not_pinned_is_refused_as_webpki_refuses_it() {
    let (cert, _) = self_signed_ca(&["localhost"], |_| {});
    let (other, _) = self_signed_ca(&["other.example.net"], |_| {});
    let err = verify(&ca_file_verifier(&[other]), &cert, "localhost").unwrap_err();
    assert_eq!(err.to_string(), ca_used_as_end_entity().to_string());
    assert_eq!(
        explain(&err, &syslog()),
        "the server presents a CA certificate (basicConstraints CA:TRUE, as openssl req -x509 \
         makes by default) as its own, which is accepted only when pinned; to trust exactly that \
         certificate, put it in ca_file (ca_file /etc/siem-ca.pem does not hold it), or give the \
         server a certificate issued by a CA"
    );
    // With the public roots, the same.
    let public = WebPkiServerVerifier::builder_with_provider(public_roots().into(), provider())
        .build()
        .unwrap();
    let err = verify(public.as_ref(), &cert, "localhost").unwrap_err();
    assert_eq!(
        explain(
            &err,
            &Checked {
                ca_file: None,
                ..syslog()
            }
        ),
        "the server presents a CA certificate (basicConstraints CA:TRUE, as openssl req -x509 \
         makes by default) as its own, which is accepted only when pinned; to trust exactly that \
         certificate, put it in ca_file, or give the server a certificate issued by a CA"
    );
}

#[test]
fn only_the_very_certificate_is_pinned() {
    // The same key and names, but another certificate: not pinned.
    let key = KeyPair::generate().unwrap();
    let pinned = self_signed_ca_with_key(&["localhost"], &key, |_| {});
    let other = self_signed_ca_with_key(&["localhost"], &key, |_| {});
    assert_ne!(pinned, other);
    let err = verify(&ca_file_verifier(&[pinned]), &other, "localhost").unwrap_err();
    assert_eq!(err.to_string(), ca_used_as_end_entity().to_string());
}

#[test]
fn a_pinned_certificate_must_still_be_valid_for_the_name() {
    let (cert, _) = self_signed_ca(&["localhost", "127.0.0.1"], |_| {});
    let err = verify(
        &ca_file_verifier(std::slice::from_ref(&cert)),
        &cert,
        "siem.example.net",
    )
    .unwrap_err();
    assert_eq!(
        err,
        rustls::Error::InvalidCertificate(CertificateError::NotValidForNameContext {
            expected: ServerName::try_from("siem.example.net").unwrap(),
            presented: vec![
                "DnsName(\"localhost\")".to_owned(),
                "IpAddress(127.0.0.1)".to_owned()
            ],
        })
    );
    assert_eq!(
        explain(&err, &syslog()),
        "the server's certificate is not valid for \"siem.example.net\": it names localhost, \
         127.0.0.1; set server_name to one of them, or have the certificate reissued with \
         \"siem.example.net\" among its subjectAltNames"
    );
}

#[test]
fn a_pinned_certificate_must_still_be_within_its_validity_period() {
    let (expired, _) = self_signed_ca(&["localhost"], |cert| {
        cert.not_before = datetime!(2024-01-01 00:00:00 UTC);
        cert.not_after = datetime!(2025-01-01 00:00:00 UTC);
    });
    let err = verify(
        &ca_file_verifier(std::slice::from_ref(&expired)),
        &expired,
        "localhost",
    )
    .unwrap_err();
    assert_eq!(
        err,
        rustls::Error::InvalidCertificate(CertificateError::ExpiredContext {
            time: unix(NOW),
            not_after: unix(datetime!(2025-01-01 00:00:00 UTC)),
        })
    );

    let (early, _) = self_signed_ca(&["localhost"], |cert| {
        cert.not_before = datetime!(2026-06-01 12:00:01 UTC);
    });
    let err = verify(
        &ca_file_verifier(std::slice::from_ref(&early)),
        &early,
        "localhost",
    )
    .unwrap_err();
    assert_eq!(
        err,
        rustls::Error::InvalidCertificate(CertificateError::NotValidYetContext {
            time: unix(NOW),
            not_before: unix(datetime!(2026-06-01 12:00:01 UTC)),
        })
    );

    // Both ends are included, as webpki includes them.
    let (exact, _) = self_signed_ca(&["localhost"], |cert| {
        cert.not_before = NOW;
        cert.not_after = NOW;
    });
    verify(
        &ca_file_verifier(std::slice::from_ref(&exact)),
        &exact,
        "localhost",
    )
    .unwrap();
}

#[test]
fn certificates_issued_by_a_ca_of_the_file_pass_as_before() {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "test ca");
    let ca_cert = ca_params.self_signed(&ca_key).unwrap().der().clone();
    let issuer = rcgen::Issuer::new(ca_params, &ca_key);
    let server_key = KeyPair::generate().unwrap();
    let mut server = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    server
        .distinguished_name
        .push(DnType::CommonName, "localhost");
    let server = server
        .signed_by(&server_key, &issuer)
        .unwrap()
        .der()
        .clone();
    let verifier = ca_file_verifier(&[ca_cert]);
    verify(&verifier, &server, "localhost").unwrap();
    // Issued by the CA, not pinned: the name is webpki's to check.
    let err = verify(&verifier, &server, "siem.example.net").unwrap_err();
    assert!(
        matches!(
            err,
            rustls::Error::InvalidCertificate(CertificateError::NotValidForNameContext { .. })
        ),
        "{err}"
    );
    // A certificate the file neither holds nor issued.
    let (stranger, _) = self_signed_ca(&["localhost"], |cert| {
        cert.is_ca = IsCa::NoCa;
    });
    assert_eq!(
        verify(&verifier, &stranger, "localhost").unwrap_err(),
        rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer)
    );
}

/// A server config presenting `cert`, signing with `key` (whether or not it is the
/// certificate's).
fn server_config(cert: &CertificateDer<'static>, key: &KeyPair) -> rustls::ServerConfig {
    let provider = provider();
    let signing_key = provider
        .key_provider
        .load_private_key(PrivateKeyDer::Pkcs8(key.serialize_der().into()))
        .unwrap();
    let certified = rustls::sign::CertifiedKey::new(vec![cert.clone()], signing_key);
    let resolver = rustls::sign::SingleCertAndKey::from(certified);
    rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(resolver))
}

/// Runs a handshake in memory; the client's error if it refuses, else the server's.
fn handshake(
    client: rustls::ClientConfig,
    server: rustls::ServerConfig,
    name: &str,
) -> Result<(), rustls::Error> {
    let name = ServerName::try_from(name.to_owned()).unwrap();
    let mut client = rustls::ClientConnection::new(Arc::new(client), name)?;
    let mut server = rustls::ServerConnection::new(Arc::new(server))?;
    while client.is_handshaking() || server.is_handshaking() {
        let mut wire = Vec::new();
        while client.wants_write() {
            client.write_tls(&mut wire).unwrap();
        }
        let mut sent = wire.as_slice();
        while !sent.is_empty() {
            server.read_tls(&mut sent).unwrap();
        }
        server.process_new_packets()?;
        let mut wire = Vec::new();
        while server.wants_write() {
            server.write_tls(&mut wire).unwrap();
        }
        if wire.is_empty() && client.is_handshaking() && !client.wants_write() {
            panic!("the handshake stalled");
        }
        let mut sent = wire.as_slice();
        while !sent.is_empty() {
            client.read_tls(&mut sent).unwrap();
        }
        client.process_new_packets()?;
    }
    Ok(())
}

/// A client config trusting only `cert`, from a `ca_file` as the daemon reads it.
fn pinning_client(cert: &CertificateDer<'static>, dir: &Path) -> rustls::ClientConfig {
    let path = dir.join("pinned.pem");
    let base64 = crate::base64::encode(cert.as_ref(), crate::base64::Alphabet::Standard);
    let lines: Vec<&str> = base64
        .as_bytes()
        .chunks(64)
        .map(|line| std::str::from_utf8(line).unwrap())
        .collect();
    let pem = format!(
        "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
        lines.join("\n")
    );
    std::fs::write(&path, pem).unwrap();
    client_config(&TlsOptions {
        ca_file: Some(path),
        client_auth: None,
        insecure_skip_verify: false,
        alpn_protocols: Vec::new(),
    })
    .unwrap()
}

#[test]
fn a_handshake_with_a_pinned_certificate_completes_and_its_signature_is_still_checked() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = self_signed_ca(&["localhost"], |cert| {
        // The handshake runs on the real clock.
        cert.not_before = OffsetDateTime::now_utc() - time::Duration::days(1);
        cert.not_after = OffsetDateTime::now_utc() + time::Duration::days(1);
    });
    handshake(
        pinning_client(&cert, dir.path()),
        server_config(&cert, &key),
        "localhost",
    )
    .unwrap();
    // A server that presents the pinned certificate without its key cannot sign the handshake.
    let impostor = KeyPair::generate().unwrap();
    assert_eq!(
        handshake(
            pinning_client(&cert, dir.path()),
            server_config(&cert, &impostor),
            "localhost",
        ),
        Err(rustls::Error::InvalidCertificate(
            CertificateError::BadSignature
        ))
    );
}

#[test]
fn explain_says_what_is_wrong_and_what_to_change() {
    let certificate = rustls::Error::InvalidCertificate;
    let public_roots = Checked {
        ca_file: None,
        ..syslog()
    };
    let api = Checked {
        server_name: "events.1password.com",
        name_from: NameFrom::BaseUrl,
        ca_file: None,
        client_cert: None,
    };
    let mutual = Checked {
        client_cert: Some(Path::new("/etc/client.pem")),
        ..syslog()
    };
    let cases: Vec<(rustls::Error, Checked<'_>, &str)> = vec![
        (
            certificate(CertificateError::UnknownIssuer),
            syslog(),
            "the server's certificate is not issued by a CA in ca_file /etc/siem-ca.pem, nor is it \
             one of that file's certificates; set ca_file to the certificate of the CA that issued \
             it (for a self-signed certificate, the certificate itself)",
        ),
        (
            certificate(CertificateError::UnknownIssuer),
            public_roots,
            "the server's certificate is not issued by a CA of the public roots (no ca_file is \
             set): it comes from a private CA or is self-signed; set ca_file to the certificate of \
             the CA that issued it (for a self-signed certificate, the certificate itself)",
        ),
        (
            certificate(CertificateError::ExpiredContext {
                time: unix(NOW),
                not_after: unix(datetime!(2025-01-01 00:00:00 UTC)),
            }),
            syslog(),
            "the server's certificate expired at 2025-01-01T00:00:00Z and it is \
             2026-06-01T12:00:00Z by the local clock; the server needs a renewed certificate, or \
             the local clock is wrong",
        ),
        (
            certificate(CertificateError::Expired),
            syslog(),
            "the server's certificate is outside its validity period; the server needs a renewed \
             certificate, or the local clock is wrong",
        ),
        (
            certificate(CertificateError::NotValidYetContext {
                time: unix(NOW),
                not_before: unix(datetime!(2027-01-01 00:00:00 UTC)),
            }),
            syslog(),
            "the server's certificate is valid only from 2027-01-01T00:00:00Z and it is \
             2026-06-01T12:00:00Z by the local clock; the local clock is wrong, or the certificate \
             was issued to start in the future",
        ),
        (
            certificate(CertificateError::NotValidYet),
            syslog(),
            "the server's certificate is not valid yet; the local clock is wrong, or the \
             certificate was issued to start in the future",
        ),
        (
            certificate(CertificateError::NotValidForNameContext {
                expected: ServerName::try_from("events.1password.com").unwrap(),
                presented: vec!["DnsName(\"*.example.net\")".to_owned()],
            }),
            api,
            "the server's certificate is not valid for \"events.1password.com\": it names \
             *.example.net; use one of them as the host of base_url, or have the certificate \
             reissued with \"events.1password.com\" among its subjectAltNames",
        ),
        (
            certificate(CertificateError::NotValidForNameContext {
                expected: ServerName::try_from("siem.example.net").unwrap(),
                presented: Vec::new(),
            }),
            syslog(),
            "the server's certificate is not valid for \"siem.example.net\": it has no name in a \
             subjectAltName (the subject's CN is not checked); have it reissued with \
             subjectAltName DNS:siem.example.net",
        ),
        (
            certificate(CertificateError::NotValidForNameContext {
                expected: ServerName::try_from("10.1.2.3").unwrap(),
                presented: Vec::new(),
            }),
            Checked {
                server_name: "10.1.2.3",
                ..syslog()
            },
            "the server's certificate is not valid for \"10.1.2.3\": it has no name in a \
             subjectAltName (the subject's CN is not checked); have it reissued with \
             subjectAltName IP:10.1.2.3",
        ),
        (
            certificate(CertificateError::NotValidForName),
            syslog(),
            "the server's certificate is not valid for \"siem.example.net\"; set server_name to a \
             name the certificate names, or have it reissued with \"siem.example.net\" among its \
             subjectAltNames",
        ),
        (
            ca_used_as_end_entity(),
            syslog(),
            "the server presents a CA certificate (basicConstraints CA:TRUE, as openssl req -x509 \
             makes by default) as its own, which is accepted only when pinned; to trust exactly \
             that certificate, put it in ca_file (ca_file /etc/siem-ca.pem does not hold it), or \
             give the server a certificate issued by a CA",
        ),
        (
            certificate(CertificateError::BadSignature),
            syslog(),
            "a signature of the server does not verify: a certificate of its chain is not signed \
             by the key of the CA certificate that has its issuer's name (a CA made again under \
             the same name?), or the server signed the handshake with a key that is not its \
             certificate's; set ca_file to the current certificate of the CA that issued it, or \
             give the server its certificate's key",
        ),
        (
            certificate(CertificateError::Revoked),
            syslog(),
            "the server's certificate has been revoked; the server needs a new certificate",
        ),
        (
            certificate(CertificateError::InvalidPurpose),
            syslog(),
            "the server's certificate is not for TLS servers (its extendedKeyUsage lacks \
             serverAuth); the server needs a certificate issued for serverAuth",
        ),
        (
            rustls::Error::AlertReceived(AlertDescription::CertificateRequired),
            syslog(),
            "the server requires a client certificate (it sent the alert CertificateRequired); \
             set client_cert and client_key",
        ),
        (
            rustls::Error::AlertReceived(AlertDescription::HandshakeFailure),
            syslog(),
            "the server ended the handshake (alert HandshakeFailure): it may require a client \
             certificate (set client_cert and client_key), or share no TLS version or cipher \
             suite with us",
        ),
        (
            rustls::Error::AlertReceived(AlertDescription::UnknownCA),
            mutual,
            "the server refused our client certificate (client_cert /etc/client.pem) with the \
             alert UnknownCA; it must be issued by a CA the server trusts for clients",
        ),
        (
            rustls::Error::AlertReceived(AlertDescription::CertificateExpired),
            mutual,
            "the server refused our client certificate (client_cert /etc/client.pem) with the \
             alert CertificateExpired; it has expired (or the server's clock is wrong); renew it",
        ),
        (
            rustls::Error::AlertReceived(AlertDescription::CertificateRevoked),
            mutual,
            "the server refused our client certificate (client_cert /etc/client.pem) with the \
             alert CertificateRevoked; it has been revoked; issue a new one",
        ),
        (
            rustls::Error::AlertReceived(AlertDescription::BadCertificate),
            mutual,
            "the server refused our client certificate (client_cert /etc/client.pem) with the \
             alert BadCertificate; it must be issued by a CA the server trusts for clients, be \
             valid now, and allow clientAuth (extendedKeyUsage)",
        ),
        // What it does not know keeps rustls's text.
        (
            rustls::Error::AlertReceived(AlertDescription::HandshakeFailure),
            mutual,
            "received fatal alert: HandshakeFailure",
        ),
        (
            rustls::Error::AlertReceived(AlertDescription::ProtocolVersion),
            syslog(),
            "received fatal alert: ProtocolVersion",
        ),
        (
            certificate(CertificateError::UnhandledCriticalExtension),
            syslog(),
            "invalid peer certificate: UnhandledCriticalExtension",
        ),
        (
            certificate(CertificateError::Other(rustls::OtherError(Arc::new(
                webpki::Error::EndEntityUsedAsCa,
            )))),
            syslog(),
            "invalid peer certificate: Other(OtherError(EndEntityUsedAsCa))",
        ),
        (
            rustls::Error::NoCertificatesPresented,
            syslog(),
            "peer sent no certificates",
        ),
    ];
    for (error, checked, want) in cases {
        assert_eq!(explain(&error, &checked), want, "{error:?}");
    }
}

#[test]
fn rustls_errors_are_found_as_they_are_and_inside_io_errors() {
    let alert = rustls::Error::AlertReceived(AlertDescription::CertificateRequired);
    assert_eq!(rustls_error_of(&alert), Some(&alert));
    let io = std::io::Error::new(std::io::ErrorKind::InvalidData, alert.clone());
    assert_eq!(rustls_error_of(&io), Some(&alert));
    assert_eq!(
        explain_io(&io, &syslog()),
        "the server requires a client certificate (it sent the alert CertificateRequired); set \
         client_cert and client_key"
    );
    // hyper-rustls wraps tokio-rustls's io::Error in another.
    let wrapped = std::io::Error::other(io);
    assert_eq!(rustls_error_of(&wrapped), Some(&alert));
    let reset = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
    assert_eq!(rustls_error_of(&reset), None);
    assert_eq!(explain_io(&reset, &syslog()), "connection reset");
}
