//! Reading an account's bearer token from its file or environment variable.
//!
//! Read at start and again before each retry after a 401, so an operator who replaces a
//! revoked token (rewrites the file) resumes the account without a restart.

use secrecy::SecretString;

use crate::account::config::TokenSource;

/// Why a token could not be read. Never holds the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("account \"{account}\": cannot read token_file {path}: {detail}")]
    File {
        account: String,
        path: String,
        detail: String,
    },
    #[error("account \"{account}\": token_env {var}: the variable is not set or not UTF-8")]
    Env { account: String, var: String },
    #[error("account \"{account}\": {origin} is empty")]
    Empty { account: String, origin: String },
    #[error(
        "account \"{account}\": {origin} holds characters a bearer token cannot have (spaces or non-ASCII)"
    )]
    Invalid { account: String, origin: String },
}

/// Reads the token of `account` from `source`, trimming surrounding whitespace.
///
/// # Errors
///
/// Fails if the file or variable cannot be read, is empty, or holds characters a bearer token
/// cannot have.
pub fn read(account: &str, source: &TokenSource) -> Result<SecretString, TokenError> {
    let (raw, origin) = match source {
        TokenSource::File(path) => (
            std::fs::read_to_string(path).map_err(|err| TokenError::File {
                account: account.to_owned(),
                path: path.display().to_string(),
                detail: err.to_string(),
            })?,
            format!("token_file {}", path.display()),
        ),
        TokenSource::Env(var) => (
            std::env::var(var).map_err(|_| TokenError::Env {
                account: account.to_owned(),
                var: var.clone(),
            })?,
            format!("token_env {var}"),
        ),
    };
    let token = raw.trim();
    if token.is_empty() {
        return Err(TokenError::Empty {
            account: account.to_owned(),
            origin,
        });
    }
    if !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(TokenError::Invalid {
            account: account.to_owned(),
            origin,
        });
    }
    Ok(SecretString::from(token.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    #[test]
    fn tokens_are_trimmed_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        let source = TokenSource::File(path.clone());
        std::fs::write(&path, "  abc.def-123\n").unwrap();
        assert_eq!(
            read("acme", &source).unwrap().expose_secret(),
            "abc.def-123"
        );
        std::fs::write(&path, "\n").unwrap();
        assert_eq!(
            read("acme", &source).unwrap_err().to_string(),
            format!("account \"acme\": token_file {} is empty", path.display())
        );
        std::fs::write(&path, "two words").unwrap();
        assert_eq!(
            read("acme", &source).unwrap_err().to_string(),
            format!(
                "account \"acme\": token_file {} holds characters a bearer token cannot have (spaces or non-ASCII)",
                path.display()
            )
        );
        std::fs::remove_file(&path).unwrap();
        assert!(
            read("acme", &source)
                .unwrap_err()
                .to_string()
                .starts_with(&format!(
                    "account \"acme\": cannot read token_file {}: ",
                    path.display()
                ))
        );
    }
}
