//! What can go wrong talking to the Events API, and what the caller should do about it.

use std::time::Duration;

/// An error from one Events API request. No variant ever holds the bearer token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    /// The client could not be built (for example an unreadable CA file). Fatal at start.
    #[error("{0}")]
    Setup(String),
    /// Connecting, sending or receiving failed below HTTP.
    #[error("{url}: connection failed: {detail}")]
    Transport { url: String, detail: String },
    /// No complete response within the request timeout.
    #[error("{url}: no response within {}s", after.as_secs())]
    Timeout { url: String, after: Duration },
    /// The API answered with a status other than 200.
    #[error("{url}: HTTP {status}{}: {body}", message.as_ref().map(|m| format!(" ({m})")).unwrap_or_default())]
    Status {
        url: String,
        status: u16,
        /// The error message from the body, in either documented shape.
        message: Option<String>,
        /// The start of the body, control characters escaped.
        body: String,
        /// `Retry-After`, when the response carried one.
        retry_after: Option<Duration>,
    },
    /// A 200 whose body is not the documented envelope.
    #[error("{url}: invalid response: {detail}; body starts: {body}")]
    InvalidResponse {
        url: String,
        detail: String,
        body: String,
    },
}

/// What the caller should do after an error; decided by [`ApiError::class`] alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// A transient failure: retry the same request after a backoff.
    Retry,
    /// Too many requests: pause the account, for `retry_after` when the API said.
    RateLimited { retry_after: Option<Duration> },
    /// The token is missing, invalid, expired, revoked or lacks the stream's feature: retry
    /// slowly, an operator has to act.
    Unauthorized,
    /// The API rejected the request itself (for example a cursor it no longer accepts).
    BadRequest,
    /// Retrying cannot help.
    Fatal,
}

impl ApiError {
    pub fn class(&self) -> ErrorClass {
        match self {
            ApiError::Setup(_) => ErrorClass::Fatal,
            ApiError::Transport { .. }
            | ApiError::Timeout { .. }
            | ApiError::InvalidResponse { .. } => ErrorClass::Retry,
            ApiError::Status {
                status,
                retry_after,
                ..
            } => classify_status(*status, *retry_after),
        }
    }

    /// The error with every occurrence of `secret` replaced in every text it carries: the one
    /// place where whatever a server sent back (a message, a body, a parser's complaint
    /// quoting it) is made safe for a log line, an error or a status page.
    pub fn redact(self, secret: &str) -> ApiError {
        let clean = |text: String| redact(&text, secret);
        match self {
            ApiError::Setup(text) => ApiError::Setup(clean(text)),
            ApiError::Transport { url, detail } => ApiError::Transport {
                url: clean(url),
                detail: clean(detail),
            },
            ApiError::Timeout { url, after } => ApiError::Timeout {
                url: clean(url),
                after,
            },
            ApiError::Status {
                url,
                status,
                message,
                body,
                retry_after,
            } => ApiError::Status {
                url: clean(url),
                status,
                message: message.map(clean),
                body: clean(body),
                retry_after,
            },
            ApiError::InvalidResponse { url, detail, body } => ApiError::InvalidResponse {
                url: clean(url),
                detail: clean(detail),
                body: clean(body),
            },
        }
    }

    /// The HTTP status, when the API answered with one.
    pub fn status(&self) -> Option<u16> {
        match self {
            ApiError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// The retry decision for an HTTP status other than 200.
pub fn classify_status(status: u16, retry_after: Option<Duration>) -> ErrorClass {
    match status {
        429 => ErrorClass::RateLimited { retry_after },
        401 | 403 => ErrorClass::Unauthorized,
        400 => ErrorClass::BadRequest,
        408 | 500..=599 => ErrorClass::Retry,
        // 404 and friends mean a wrong base URL or an endpoint the server does not have;
        // retrying slowly lets a fixed proxy or DNS entry recover without a restart.
        _ => ErrorClass::Retry,
    }
}

/// The error message of an Events API error body, in either documented shape:
/// `{"Error":{"Message":"..."}}` or `{"status":401,"message":"..."}`.
pub fn error_message(body: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Upper {
        #[serde(rename = "Error")]
        error: UpperInner,
    }
    #[derive(serde::Deserialize)]
    struct UpperInner {
        #[serde(rename = "Message")]
        message: String,
    }
    #[derive(serde::Deserialize)]
    struct Lower {
        message: String,
    }
    if let Ok(upper) = serde_json::from_slice::<Upper>(body) {
        return Some(upper.error.message);
    }
    serde_json::from_slice::<Lower>(body)
        .ok()
        .map(|lower| lower.message)
}

/// `text` with every occurrence of `secret` replaced by `[REDACTED]`.
pub fn redact(text: &str, secret: &str) -> String {
    if secret.is_empty() {
        text.to_owned()
    } else {
        text.replace(secret, "[REDACTED]")
    }
}

/// The first `max` characters of a body, with control characters escaped and any occurrence
/// of `secret` replaced, so it can go into a log line.
pub fn excerpt(body: &[u8], max: usize, secret: &str) -> String {
    let text = redact(&String::from_utf8_lossy(body), secret);
    let mut out = String::new();
    for (idx, ch) in text.chars().enumerate() {
        if idx == max {
            out.push('…');
            break;
        }
        if ch.is_control() {
            out.extend(ch.escape_default());
        } else {
            out.push(ch);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_classified() {
        let after = Some(Duration::from_secs(7));
        assert_eq!(
            classify_status(429, after),
            ErrorClass::RateLimited { retry_after: after }
        );
        assert_eq!(classify_status(401, None), ErrorClass::Unauthorized);
        assert_eq!(classify_status(400, None), ErrorClass::BadRequest);
        for status in [408, 500, 502, 503, 504] {
            assert_eq!(classify_status(status, None), ErrorClass::Retry, "{status}");
        }
    }

    #[test]
    fn both_error_body_shapes_are_read() {
        assert_eq!(
            error_message(br#"{"Error":{"Message":"Unauthorized"}}"#).as_deref(),
            Some("Unauthorized")
        );
        assert_eq!(
            error_message(br#"{"status":400,"message":"Bad Request"}"#).as_deref(),
            Some("Bad Request")
        );
        assert_eq!(error_message(b"<html>gateway</html>"), None);
    }

    #[test]
    fn excerpts_are_short_escaped_and_redacted() {
        assert_eq!(excerpt(b"line1\nline2", 100, ""), "line1\\nline2");
        assert_eq!(excerpt(b"abcdef", 3, ""), "abc…");
        assert_eq!(
            excerpt(b"token=s3cret!", 100, "s3cret"),
            "token=[REDACTED]!"
        );
    }

    #[test]
    fn every_text_of_every_error_is_redacted() {
        let secret = "eyJtoken.secret.part";
        let echo = format!("you sent Bearer {secret}");
        let errors = [
            ApiError::Setup(echo.clone()),
            ApiError::Transport {
                url: format!("https://x/{secret}"),
                detail: echo.clone(),
            },
            ApiError::Timeout {
                url: format!("https://x/{secret}"),
                after: Duration::from_secs(1),
            },
            ApiError::Status {
                url: "https://x".into(),
                status: 401,
                message: Some(echo.clone()),
                body: echo.clone(),
                retry_after: None,
            },
            ApiError::InvalidResponse {
                url: "https://x".into(),
                detail: format!("invalid type: string \"{secret}\", expected a boolean"),
                body: echo.clone(),
            },
        ];
        for err in errors {
            let text = format!("{} {:?}", err.clone().redact(secret), err.redact(secret));
            assert!(!text.contains(secret), "{text}");
            assert!(text.contains("[REDACTED]"), "{text}");
        }
    }

    #[test]
    fn status_errors_name_the_url_status_and_body() {
        let err = ApiError::Status {
            url: "https://events.1password.com/api/v2/auditevents".into(),
            status: 401,
            message: Some("Unauthorized".into()),
            body: r#"{"Error":{"Message":"Unauthorized"}}"#.into(),
            retry_after: None,
        };
        assert_eq!(
            err.to_string(),
            r#"https://events.1password.com/api/v2/auditevents: HTTP 401 (Unauthorized): {"Error":{"Message":"Unauthorized"}}"#
        );
        assert_eq!(err.class(), ErrorClass::Unauthorized);
    }
}
