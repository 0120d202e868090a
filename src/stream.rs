//! The Events API streams: the shared vocabulary of config, client, store, poller and simulator.

use std::fmt;
use std::str::FromStr;

/// One kind of activity the Events API serves, each behind its own endpoint and token feature.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Stream {
    AuditEvents,
    ItemUsages,
    SignInAttempts,
    /// The beta `GET /api/v3/auditevents`: structured audit events, paged by token and by
    /// insertion time instead of a cursor. Opt-in; needs the `auditevents` feature.
    AuditV3,
}

impl Stream {
    /// The streams of the cursor endpoints (`POST /api/v1/…` and `/api/v2/…`), in the order the
    /// daemon reports them; the default when neither the config nor the token names streams.
    pub const ALL: [Stream; 3] = [
        Stream::AuditEvents,
        Stream::ItemUsages,
        Stream::SignInAttempts,
    ];

    /// Every stream a config may name, the beta one last.
    pub const KNOWN: [Stream; 4] = [
        Stream::AuditEvents,
        Stream::ItemUsages,
        Stream::SignInAttempts,
        Stream::AuditV3,
    ];

    /// The name used in config, paths, store keys and logs. For the cursor streams it is also
    /// the token feature and the last segment of the endpoint path (`/api/v2/<name>`).
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::AuditEvents => "auditevents",
            Stream::ItemUsages => "itemusages",
            Stream::SignInAttempts => "signinattempts",
            Stream::AuditV3 => "audit_v3",
        }
    }

    /// The token feature (`1password.com/fts` entry) the stream needs.
    pub fn feature(self) -> &'static str {
        match self {
            Stream::AuditEvents | Stream::AuditV3 => "auditevents",
            Stream::ItemUsages => "itemusages",
            Stream::SignInAttempts => "signinattempts",
        }
    }

    /// The stream whose feature is `feature`, among the cursor streams.
    pub fn from_feature(feature: &str) -> Option<Stream> {
        Stream::ALL.into_iter().find(|s| s.feature() == feature)
    }
}

impl fmt::Display for Stream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The error for a stream name that is not one of [`Stream::KNOWN`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown stream \"{0}\" (expected one of auditevents, itemusages, signinattempts, audit_v3)"
)]
pub struct UnknownStream(pub String);

impl FromStr for Stream {
    type Err = UnknownStream;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Stream::KNOWN
            .into_iter()
            .find(|stream| stream.as_str() == s)
            .ok_or_else(|| UnknownStream(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for stream in Stream::KNOWN {
            assert_eq!(stream.as_str().parse::<Stream>(), Ok(stream));
        }
        assert_eq!(
            "audit".parse::<Stream>().unwrap_err().to_string(),
            "unknown stream \"audit\" (expected one of auditevents, itemusages, signinattempts, audit_v3)"
        );
    }

    #[test]
    fn features() {
        assert_eq!(Stream::AuditV3.feature(), "auditevents");
        for stream in Stream::ALL {
            assert_eq!(Stream::from_feature(stream.feature()), Some(stream));
        }
        assert_eq!(Stream::from_feature("audit_v3"), None);
    }
}
