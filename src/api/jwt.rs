//! What an Events API bearer token says about itself: its claims, read without verifying the
//! signature (the API verifies it; we only want to know where to go and what to ask for).
//!
//! An Events API token is an ES256 JWT: `base64url(header).base64url(claims).base64url(sig)`.
//! The claims official clients read are `aud` (the first entry is the Events API host, except in
//! legacy tokens whose audience is `com.1password.streamingservice`) and `1password.com/fts`
//! (the features: `auditevents`, `itemusages`, `signinattempts`). `exp`, when present, is the
//! expiry in seconds since the epoch.
//!
//! Invariant: no error of this module contains the token or any part of it.

use crate::base64::{self, Alphabet};
use serde::Deserialize;
use time::OffsetDateTime;

/// The audience of tokens issued before the audience named the host.
pub const LEGACY_AUDIENCE: &str = "com.1password.streamingservice";

/// The claims of an Events API token that the daemon uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenClaims {
    /// `aud`, as a list (a single string audience becomes a list of one).
    pub audience: Vec<String>,
    /// `1password.com/fts`: the streams the token may read, as the API names them.
    pub features: Vec<String>,
    /// `exp`: when the token stops working; `None` for tokens that never expire.
    pub expires_at: Option<OffsetDateTime>,
    /// `iat`, when present.
    pub issued_at: Option<OffsetDateTime>,
}

/// Why a token is not a readable JWT. Never holds the token or a part of it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the token is not a JWT: expected three dot-separated parts, found {0}")]
    Parts(usize),
    #[error("the token is not a JWT: its {0} is not base64url")]
    Encoding(&'static str),
    #[error("the token is not a JWT: its {part} is not a JSON object ({detail})")]
    Json { part: &'static str, detail: String },
    #[error("the token's \"{claim}\" claim is {problem}")]
    Claim {
        claim: &'static str,
        problem: &'static str,
    },
}

impl TokenClaims {
    /// The Events API base URL the token names (`https://` + `aud[0]`), or `None` for a
    /// legacy token (or one without an audience), which needs `base_url` or `region`.
    pub fn base_url(&self) -> Option<String> {
        let host = self.audience.first()?.trim();
        if host.is_empty() || host == LEGACY_AUDIENCE {
            return None;
        }
        Some(format!("https://{}", host.trim_end_matches('/')))
    }

    /// Whether the token's audience is the legacy, host-less one.
    pub fn is_legacy(&self) -> bool {
        self.audience
            .first()
            .is_none_or(|aud| aud.trim() == LEGACY_AUDIENCE || aud.trim().is_empty())
    }
}

/// Reads a token's claims without verifying its signature.
///
/// # Errors
///
/// A [`TokenError`] when the token is not three base64url parts, the header or the claims are
/// not JSON objects, or a claim the daemon uses has the wrong type.
pub fn decode_claims(token: &str) -> Result<TokenClaims, TokenError> {
    let parts: Vec<&str> = token.trim().split('.').collect();
    if parts.len() != 3 {
        return Err(TokenError::Parts(parts.len()));
    }
    let header = base64url_decode(parts[0]).ok_or(TokenError::Encoding("header"))?;
    let payload = base64url_decode(parts[1]).ok_or(TokenError::Encoding("claims"))?;
    if base64url_decode(parts[2]).is_none() {
        return Err(TokenError::Encoding("signature"));
    }
    let json = |part: &'static str, bytes: &[u8]| {
        serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(bytes).map_err(|err| {
            TokenError::Json {
                part,
                // The position only: serde's message could quote a piece of the token.
                detail: format!("line {}, column {}", err.line(), err.column()),
            }
        })
    };
    json("header", &header)?;
    let claims = json("claims", &payload)?;

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    let audience = match claims.get("aud") {
        None | Some(serde_json::Value::Null) => Vec::new(),
        Some(value) => match OneOrMany::deserialize(value) {
            Ok(OneOrMany::One(aud)) => vec![aud],
            Ok(OneOrMany::Many(auds)) => auds,
            Err(_) => {
                return Err(TokenError::Claim {
                    claim: "aud",
                    problem: "neither a string nor an array of strings",
                });
            }
        },
    };
    let features = match claims.get("1password.com/fts") {
        None | Some(serde_json::Value::Null) => Vec::new(),
        Some(value) => Vec::<String>::deserialize(value).map_err(|_| TokenError::Claim {
            claim: "1password.com/fts",
            problem: "not an array of strings",
        })?,
    };
    let instant = |claim: &'static str| -> Result<Option<OffsetDateTime>, TokenError> {
        let bad = TokenError::Claim {
            claim,
            problem: "not a time in seconds since 1970",
        };
        match claims.get(claim) {
            None | Some(serde_json::Value::Null) => Ok(None),
            Some(serde_json::Value::Number(n)) => {
                // JWT NumericDate may carry a fraction; whole seconds are enough here.
                let secs = n
                    .as_i64()
                    .or_else(|| n.as_f64().filter(|f| f.is_finite()).map(|f| f as i64))
                    .ok_or(bad.clone())?;
                OffsetDateTime::from_unix_timestamp(secs)
                    .map(Some)
                    .map_err(|_| bad)
            }
            Some(_) => Err(bad),
        }
    };
    Ok(TokenClaims {
        audience,
        features,
        expires_at: instant("exp")?,
        issued_at: instant("iat")?,
    })
}

/// base64url without padding, as JWTs use it.
pub fn base64url_encode(bytes: &[u8]) -> String {
    base64::encode(bytes, Alphabet::Url)
}

/// Decodes base64url, with or without padding; `None` for anything else.
pub fn base64url_decode(text: &str) -> Option<Vec<u8>> {
    base64::decode(text, Alphabet::Url)
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    /// A token with these claims and a dummy signature.
    fn token(claims: &str) -> String {
        format!(
            "{}.{}.{}",
            base64url_encode(br#"{"alg":"ES256","kid":"k1","typ":"JWT"}"#),
            base64url_encode(claims.as_bytes()),
            base64url_encode(&[7; 64])
        )
    }

    #[test]
    fn base64url_round_trips() {
        for len in 0..40 {
            let bytes: Vec<u8> = (0..len).map(|b: u8| b.wrapping_mul(91) ^ 0xA5).collect();
            let text = base64url_encode(&bytes);
            assert!(!text.contains(['+', '/', '=']));
            assert_eq!(base64url_decode(&text), Some(bytes));
        }
        assert_eq!(base64url_decode("aGk="), Some(b"hi".to_vec()));
        assert_eq!(base64url_decode("a"), None);
        assert_eq!(base64url_decode("a+b/"), None);
    }

    #[test]
    fn claims_give_the_host_features_and_expiry() {
        let claims = decode_claims(&token(
            r#"{"aud":["events.1password.ca"],"1password.com/fts":["auditevents","signinattempts"],
                "exp":1798761600,"iat":1767225600,"sub":"X","1password.com/auuid":"ACC"}"#,
        ))
        .unwrap();
        assert_eq!(
            claims.base_url().as_deref(),
            Some("https://events.1password.ca")
        );
        assert!(!claims.is_legacy());
        assert_eq!(claims.features, ["auditevents", "signinattempts"]);
        assert_eq!(claims.expires_at, Some(datetime!(2027-01-01 00:00 UTC)));
        assert_eq!(claims.issued_at, Some(datetime!(2026-01-01 00:00 UTC)));
    }

    #[test]
    fn a_single_string_audience_and_missing_claims() {
        let claims = decode_claims(&token(r#"{"aud":"events.ent.1password.com"}"#)).unwrap();
        assert_eq!(
            claims.base_url().as_deref(),
            Some("https://events.ent.1password.com")
        );
        assert!(claims.features.is_empty());
        assert_eq!(claims.expires_at, None);
    }

    #[test]
    fn legacy_audience_has_no_base_url() {
        let claims = decode_claims(&token(
            r#"{"aud":["com.1password.streamingservice"],"1password.com/fts":["itemusages"]}"#,
        ))
        .unwrap();
        assert!(claims.is_legacy());
        assert_eq!(claims.base_url(), None);
        let no_aud = decode_claims(&token(r#"{}"#)).unwrap();
        assert!(no_aud.is_legacy());
        assert_eq!(no_aud.base_url(), None);
    }

    #[test]
    fn malformed_tokens_are_clear_errors_without_the_token() {
        let secret_claims = base64url_encode(br#"{"aud":"s3cr3t-host"#);
        let cases = [
            (
                "sim-token".to_owned(),
                "expected three dot-separated parts, found 1",
            ),
            (
                "a.b".to_owned(),
                "expected three dot-separated parts, found 2",
            ),
            (
                "a.b.c.d".to_owned(),
                "expected three dot-separated parts, found 4",
            ),
            ("!!.e30.e30".to_owned(), "its header is not base64url"),
            ("e30.%%.e30".to_owned(), "its claims is not base64url"),
            (
                format!("e30.{secret_claims}.e30"),
                "its claims is not a JSON object (line 1, column 19)",
            ),
            (
                token(r#"{"aud":5}"#),
                "the token's \"aud\" claim is neither a string nor an array of strings",
            ),
            (
                token(r#"{"1password.com/fts":"auditevents"}"#),
                "the token's \"1password.com/fts\" claim is not an array of strings",
            ),
            (
                token(r#"{"exp":"tomorrow"}"#),
                "the token's \"exp\" claim is not a time in seconds since 1970",
            ),
        ];
        for (token, expected) in cases {
            let message = decode_claims(&token).unwrap_err().to_string();
            assert!(message.ends_with(expected), "{message}");
            assert!(!message.contains(&token), "{message}");
            assert!(!message.contains("s3cr3t"), "{message}");
        }
    }
}
