//! The Events API streams: the shared vocabulary of config, client, store, poller and simulator.

use std::fmt;
use std::str::FromStr;

/// One kind of activity the Events API serves, each behind its own endpoint and token feature.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Stream {
    AuditEvents,
    ItemUsages,
    SignInAttempts,
}

impl Stream {
    /// Every stream, in the order the daemon reports them.
    pub const ALL: [Stream; 3] = [
        Stream::AuditEvents,
        Stream::ItemUsages,
        Stream::SignInAttempts,
    ];

    /// The name used in config, paths, store keys and logs; also the token feature and the
    /// last segment of the endpoint path (`/api/v2/<name>`).
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::AuditEvents => "auditevents",
            Stream::ItemUsages => "itemusages",
            Stream::SignInAttempts => "signinattempts",
        }
    }
}

impl fmt::Display for Stream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The error for a stream name that is not one of [`Stream::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown stream \"{0}\" (expected one of auditevents, itemusages, signinattempts)")]
pub struct UnknownStream(pub String);

impl FromStr for Stream {
    type Err = UnknownStream;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Stream::ALL
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
        for stream in Stream::ALL {
            assert_eq!(stream.as_str().parse::<Stream>(), Ok(stream));
        }
        assert_eq!(
            "audit".parse::<Stream>().unwrap_err().to_string(),
            "unknown stream \"audit\" (expected one of auditevents, itemusages, signinattempts)"
        );
    }
}
