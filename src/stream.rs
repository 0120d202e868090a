//! The Events API's vocabulary, shared by config, client, store, poller and simulator: the
//! streams, the cursor endpoints' versions, the regions' hosts and the v3 beta's parameter names.
//!
//! It sits below both `config` and `api`, so that neither imports the other: the config names
//! these values, the client takes them.

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

/// Which generation of the cursor endpoints an account reads: `POST /api/v1/<stream>` or
/// `POST /api/v2/<stream>`. Both take the same requests; the v2 events carry the MSP fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ApiVersion {
    V1,
    #[default]
    V2,
}

impl ApiVersion {
    /// The path segment and config value: `v1` or `v2`.
    pub fn as_str(self) -> &'static str {
        match self {
            ApiVersion::V1 => "v1",
            ApiVersion::V2 => "v2",
        }
    }
}

/// The four documented Events API hosts, by where the account lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Region {
    /// 1password.com (Business).
    Us,
    /// 1password.ca.
    Ca,
    /// 1password.eu.
    Eu,
    /// ent.1password.com (Enterprise).
    Ent,
}

impl Region {
    /// The config values, in the order error messages list them.
    pub const ALL: [Region; 4] = [Region::Us, Region::Ca, Region::Eu, Region::Ent];

    /// The config value: `us`, `ca`, `eu` or `ent`.
    pub fn as_str(self) -> &'static str {
        match self {
            Region::Us => "us",
            Region::Ca => "ca",
            Region::Eu => "eu",
            Region::Ent => "ent",
        }
    }

    /// The region's Events API base URL.
    pub fn base_url(self) -> &'static str {
        match self {
            Region::Us => "https://events.1password.com",
            Region::Ca => "https://events.1password.ca",
            Region::Eu => "https://events.1password.eu",
            Region::Ent => "https://events.ent.1password.com",
        }
    }
}

/// The names of the v3 beta endpoint's paging parameters. The defaults are the 3.0.0 revision
/// (`max_page_size`, `page_token`); the early beta used `page_size` and `next_page_token`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct V3Params {
    /// `v3_page_size_param`.
    pub page_size: String,
    /// `v3_page_token_param`.
    pub page_token: String,
}

impl Default for V3Params {
    fn default() -> Self {
        V3Params {
            page_size: "max_page_size".to_owned(),
            page_token: "page_token".to_owned(),
        }
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
