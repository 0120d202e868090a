//! The simulator's own ES256 tokens: it mints JWTs shaped like Events API tokens (`aud`,
//! `1password.com/fts`, `exp`…) and accepts them by verifying its own signature, so clients
//! that read the claims (ours, and 1Password's, which derive `https://` + `aud[0]`) can be
//! pointed at it.
//!
//! The key is an ECDSA P-256 key in PKCS#8, generated with ring. `simulate --signing-key FILE`
//! keeps it in a file (created on first use), so a token minted by one run
//! (`simulate --mint-token`) is accepted by the next.

use std::io;
use std::path::Path;

use ring::rand::SystemRandom;
use ring::signature::{
    self, ECDSA_P256_SHA256_FIXED, ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _,
};
use serde_json::json;
use time::OffsetDateTime;

use super::generate::{self, Case, Rng};
use crate::api::jwt::{base64url_decode, base64url_encode, decode_claims};
use crate::stream::Stream;

/// The simulator's token signing key.
pub struct SigningKey {
    pair: EcdsaKeyPair,
    pkcs8: Vec<u8>,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningKey([REDACTED])")
    }
}

impl Clone for SigningKey {
    fn clone(&self) -> Self {
        SigningKey::from_pkcs8(&self.pkcs8).expect("a key that parsed once parses again")
    }
}

/// What a minted token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MintClaims {
    /// `aud[0]`: the host (and port) clients derive the base URL from.
    pub audience: String,
    /// `1password.com/fts`.
    pub features: Vec<Stream>,
    /// `iat`.
    pub issued_at: OffsetDateTime,
    /// `exp`; `None` for a token that never expires.
    pub expires_at: Option<OffsetDateTime>,
}

/// What a verified token grants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// The streams whose features the token carries.
    pub features: Vec<Stream>,
    pub issued_at: Option<OffsetDateTime>,
}

impl SigningKey {
    /// A fresh random key.
    pub fn generate() -> SigningKey {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .expect("the system random generator works");
        SigningKey::from_pkcs8(pkcs8.as_ref()).expect("a freshly generated key parses")
    }

    /// A key from its PKCS#8 DER bytes.
    ///
    /// # Errors
    ///
    /// When the bytes are not a P-256 PKCS#8 key.
    pub fn from_pkcs8(der: &[u8]) -> io::Result<SigningKey> {
        let pair =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, der, &SystemRandom::new())
                .map_err(|err| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("not an ECDSA P-256 PKCS#8 key: {err}"),
                )
            })?;
        Ok(SigningKey {
            pair,
            pkcs8: der.to_vec(),
        })
    }

    /// Reads the key at `path`, or creates it there (mode 0600) if the file does not exist.
    ///
    /// # Errors
    ///
    /// When the file cannot be read or written, or does not hold a key.
    pub fn load_or_create(path: &Path) -> io::Result<SigningKey> {
        match std::fs::read(path) {
            Ok(der) => SigningKey::from_pkcs8(&der)
                .map_err(|err| io::Error::new(err.kind(), format!("{}: {err}", path.display()))),
            Err(err) if err.kind() == io::ErrorKind::NotFound => {
                let key = SigningKey::generate();
                use std::io::Write as _;
                use std::os::unix::fs::OpenOptionsExt as _;
                let mut file = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(path)?;
                file.write_all(&key.pkcs8)?;
                file.sync_all()?;
                Ok(key)
            }
            Err(err) => Err(err),
        }
    }

    /// A signed token with these claims.
    pub fn mint(&self, claims: &MintClaims) -> String {
        let mut rng = Rng::new(generate::combine(
            claims.issued_at.unix_timestamp_nanos() as u64,
            generate::hash_str(&claims.audience),
        ));
        let mut body = json!({
            "aud": [claims.audience],
            "iss": "com.1password.simulator",
            "sub": generate::id(&mut rng, Case::Upper),
            "jti": generate::id(&mut rng, Case::Lower),
            "iat": claims.issued_at.unix_timestamp(),
            "1password.com/fts": claims.features.iter().map(|s| s.feature()).collect::<Vec<_>>(),
        });
        if let Some(exp) = claims.expires_at {
            body["exp"] = exp.unix_timestamp().into();
        }
        let header = json!({"alg": "ES256", "kid": "simulator", "typ": "JWT"});
        let signing_input = format!(
            "{}.{}",
            base64url_encode(header.to_string().as_bytes()),
            base64url_encode(body.to_string().as_bytes())
        );
        let signature = self
            .pair
            .sign(&SystemRandom::new(), signing_input.as_bytes())
            .expect("signing with a valid key works");
        format!("{signing_input}.{}", base64url_encode(signature.as_ref()))
    }

    /// Verifies a token this key signed and reads what it grants; `None` when the signature
    /// does not verify, the token has expired at `now`, or it is not a JWT.
    pub fn verify(&self, token: &str, now: OffsetDateTime) -> Option<Grant> {
        let (signing_input, signature) = token.rsplit_once('.')?;
        let signature = base64url_decode(signature)?;
        signature::UnparsedPublicKey::new(
            &ECDSA_P256_SHA256_FIXED,
            self.pair.public_key().as_ref(),
        )
        .verify(signing_input.as_bytes(), &signature)
        .ok()?;
        let claims = decode_claims(token).ok()?;
        if claims.expires_at.is_some_and(|exp| exp <= now) {
            return None;
        }
        let features = Stream::ALL
            .into_iter()
            .filter(|stream| claims.features.iter().any(|f| f == stream.feature()))
            .collect();
        Some(Grant {
            features,
            issued_at: claims.issued_at,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    const NOW: OffsetDateTime = datetime!(2026-11-21 12:00 UTC);

    fn claims(expires_at: Option<OffsetDateTime>) -> MintClaims {
        MintClaims {
            audience: "127.0.0.1:8722".into(),
            features: vec![Stream::ItemUsages, Stream::AuditEvents],
            issued_at: NOW,
            expires_at,
        }
    }

    #[test]
    fn minted_tokens_verify_and_carry_the_claims() {
        let key = SigningKey::generate();
        let token = key.mint(&claims(Some(NOW + time::Duration::days(30))));
        let grant = key.verify(&token, NOW).unwrap();
        assert_eq!(grant.features, [Stream::AuditEvents, Stream::ItemUsages]);
        assert_eq!(grant.issued_at, Some(NOW));
        // What a client reads from it.
        let read = decode_claims(&token).unwrap();
        assert_eq!(read.base_url().as_deref(), Some("https://127.0.0.1:8722"));
        assert_eq!(read.features, ["itemusages", "auditevents"]);
        assert_eq!(read.expires_at, Some(datetime!(2026-12-21 12:00 UTC)));
    }

    #[test]
    fn other_keys_edits_and_expiry_are_refused() {
        let key = SigningKey::generate();
        let token = key.mint(&claims(Some(NOW + time::Duration::hours(1))));
        assert_eq!(SigningKey::generate().verify(&token, NOW), None);
        assert_eq!(key.verify(&token, NOW + time::Duration::hours(1)), None);
        // The claims swapped for ones granting more, the signature kept.
        let parts: Vec<&str> = token.split('.').collect();
        let forged_claims = base64url_encode(
            br#"{"aud":["127.0.0.1:8722"],"1password.com/fts":["auditevents","itemusages","signinattempts"]}"#,
        );
        let forged = format!("{}.{forged_claims}.{}", parts[0], parts[2]);
        assert_eq!(key.verify(&forged, NOW), None);
        assert_eq!(key.verify("sim-token", NOW), None);
    }

    #[test]
    fn keys_persist_in_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key.p8");
        let first = SigningKey::load_or_create(&path).unwrap();
        let token = first.mint(&claims(None));
        let again = SigningKey::load_or_create(&path).unwrap();
        assert!(again.verify(&token, NOW).is_some());
        std::fs::write(&path, b"junk").unwrap();
        let err = SigningKey::load_or_create(&path).unwrap_err().to_string();
        assert!(err.contains("not an ECDSA P-256 PKCS#8 key"), "{err}");
    }
}
