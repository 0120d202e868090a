//! An account as the daemon runs it: the config completed from the token's own claims, and the
//! hourly watch over the token (introspection, expiry warnings).
//!
//! The config cannot see the token (it holds only where to read it), so what the token says is
//! merged in at start by [`resolve`], a pure function: `aud[0]` gives the base URL when neither
//! `base_url` nor `region` is set, the `1password.com/fts` features give the streams when
//! `streams` is not set, and every configured stream must be among the features.

pub mod config;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

use self::config::AccountConfig;
use crate::api;
use crate::api::jwt::{LEGACY_AUDIENCE, TokenClaims, TokenError};
use crate::stream::Stream;

/// How often the token is introspected and its expiry checked.
pub const TOKEN_CHECK_INTERVAL: Duration = Duration::from_secs(3600);

/// What the daemon runs for one account once the token has been read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedAccount {
    /// The Events API base URL, without a trailing slash.
    pub base_url: String,
    /// Where the base URL came from, for the start-up log.
    pub base_url_from: &'static str,
    /// The streams to poll, in order.
    pub streams: Vec<Stream>,
    /// The token's claims, when it is a readable JWT.
    pub claims: Option<TokenClaims>,
    /// Something the operator should know that does not stop the account (logged as a warning).
    pub warning: Option<String>,
}

/// Why an account cannot start. Messages name the account and the token's origin (`token_file
/// PATH` or `token_env NAME`), never the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    #[error(
        "account \"{account}\": {origin}: cannot read the token's claims: {source}; without them {what} \
         cannot be known: set {keys} in the account's config"
    )]
    Unreadable {
        account: String,
        origin: String,
        source: TokenError,
        /// What the claims would have told.
        what: &'static str,
        /// The config keys that replace them.
        keys: &'static str,
    },
    #[error(
        "account \"{account}\": {origin}: the token's audience is the legacy \"{LEGACY_AUDIENCE}\", which names \
         no host: set base_url or region (us, ca, eu or ent) in the account's config"
    )]
    LegacyAudience { account: String, origin: String },
    #[error(
        "account \"{account}\": {origin}: the token's audience does not give a usable base URL ({detail}); set base_url or region"
    )]
    BadAudience {
        account: String,
        origin: String,
        detail: String,
    },
    #[error(
        "account \"{account}\": {origin}: the token names no features (its \"1password.com/fts\" claim is {found}), \
         so the streams to read are unknown: set streams in the account's config"
    )]
    NoFeatures {
        account: String,
        origin: String,
        found: &'static str,
    },
    #[error(
        "account \"{account}\": stream \"{stream}\" needs the token feature \"{feature}\", but the token \
         ({origin}) has only: {has}; issue a token with that feature or remove the stream from streams"
    )]
    MissingFeature {
        account: String,
        origin: String,
        stream: Stream,
        feature: &'static str,
        /// The token's features, comma-separated (or "none").
        has: String,
    },
    #[error("account \"{account}\": {origin}: the token expired at {at}; issue a new token")]
    Expired {
        account: String,
        origin: String,
        at: String,
    },
}

/// Completes an account's config from its token's claims (`claims` is the result of decoding
/// them); `origin` names where the token came from, `now` is the current time.
///
/// # Errors
///
/// A [`ResolveError`] when the token cannot tell what the config leaves open, lacks a feature a
/// configured stream needs, or has expired.
pub fn resolve(
    account: &AccountConfig,
    origin: &str,
    claims: Result<TokenClaims, TokenError>,
    now: OffsetDateTime,
) -> Result<ResolvedAccount, ResolveError> {
    let name = account.name.clone();
    let explicit_url = match (&account.base_url, account.region) {
        (Some(url), _) => Some((url.clone(), "base_url")),
        (None, Some(region)) => Some((region.base_url().to_owned(), "region")),
        (None, None) => None,
    };
    let claims = match claims {
        Ok(claims) => claims,
        Err(source) => {
            // Without claims, the config must say everything; then the API judges the token.
            return match (explicit_url, &account.streams) {
                (Some((base_url, base_url_from)), Some(streams)) => Ok(ResolvedAccount {
                    base_url,
                    base_url_from,
                    streams: streams.clone(),
                    claims: None,
                    warning: Some(format!(
                        "{origin}: cannot read the token's claims ({source}); its features and expiry are \
                         not checked, the API will judge it"
                    )),
                }),
                (None, Some(_)) => Err(ResolveError::Unreadable {
                    account: name,
                    origin: origin.to_owned(),
                    source,
                    what: "the API host",
                    keys: "base_url or region",
                }),
                (Some(_), None) => Err(ResolveError::Unreadable {
                    account: name,
                    origin: origin.to_owned(),
                    source,
                    what: "the streams",
                    keys: "streams",
                }),
                (None, None) => Err(ResolveError::Unreadable {
                    account: name,
                    origin: origin.to_owned(),
                    source,
                    what: "the API host and the streams",
                    keys: "base_url (or region) and streams",
                }),
            };
        }
    };

    if let Some(expires_at) = claims.expires_at
        && expires_at <= now
    {
        return Err(ResolveError::Expired {
            account: name,
            origin: origin.to_owned(),
            at: api::rfc3339(expires_at),
        });
    }

    let (base_url, base_url_from) = match explicit_url {
        Some(explicit) => explicit,
        None if claims.is_legacy() => {
            return Err(ResolveError::LegacyAudience {
                account: name,
                origin: origin.to_owned(),
            });
        }
        None => {
            let derived = claims.base_url().unwrap_or_default();
            let base_url = crate::config::normalize_base_url(&derived).map_err(|detail| {
                ResolveError::BadAudience {
                    account: name.clone(),
                    origin: origin.to_owned(),
                    detail,
                }
            })?;
            (base_url, "the token's aud claim")
        }
    };

    let has = if claims.features.is_empty() {
        "none".to_owned()
    } else {
        claims.features.join(", ")
    };
    let streams = match &account.streams {
        Some(streams) => {
            if !claims.features.is_empty() {
                for &stream in streams {
                    if !claims.features.iter().any(|f| f == stream.feature()) {
                        return Err(ResolveError::MissingFeature {
                            account: name,
                            origin: origin.to_owned(),
                            stream,
                            feature: stream.feature(),
                            has,
                        });
                    }
                }
            }
            streams.clone()
        }
        None => {
            let streams: Vec<Stream> = Stream::ALL
                .into_iter()
                .filter(|stream| claims.features.iter().any(|f| f == stream.feature()))
                .collect();
            if streams.is_empty() {
                return Err(ResolveError::NoFeatures {
                    account: name,
                    origin: origin.to_owned(),
                    found: if claims.features.is_empty() {
                        "absent or empty"
                    } else {
                        "without a known feature"
                    },
                });
            }
            streams
        }
    };
    let warning = (account.streams.is_some() && claims.features.is_empty()).then(|| {
        format!(
            "{origin}: the token names no features (no \"1password.com/fts\" claim); the configured streams \
             are not checked against it"
        )
    });
    Ok(ResolvedAccount {
        base_url,
        base_url_from,
        streams,
        claims: Some(claims),
        warning,
    })
}

/// How close a token is to its expiry, in the steps the daemon warns at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ExpiryNotice {
    /// Less than 14 days left.
    Within14Days,
    /// Less than 3 days left.
    Within3Days,
    /// Less than a day left.
    Within1Day,
    /// The expiry has passed.
    Expired,
}

impl ExpiryNotice {
    /// The most urgent notice due at `now` for a token expiring at `expires_at`, if any.
    pub fn due(expires_at: OffsetDateTime, now: OffsetDateTime) -> Option<ExpiryNotice> {
        let left = expires_at - now;
        if left <= time::Duration::ZERO {
            Some(ExpiryNotice::Expired)
        } else if left <= time::Duration::days(1) {
            Some(ExpiryNotice::Within1Day)
        } else if left <= time::Duration::days(3) {
            Some(ExpiryNotice::Within3Days)
        } else if left <= time::Duration::days(14) {
            Some(ExpiryNotice::Within14Days)
        } else {
            None
        }
    }

    /// The notice to give now, given the last one given: each step is announced once.
    pub fn next(
        expires_at: OffsetDateTime,
        now: OffsetDateTime,
        last: Option<ExpiryNotice>,
    ) -> Option<ExpiryNotice> {
        let due = ExpiryNotice::due(expires_at, now)?;
        (Some(due) > last).then_some(due)
    }
}

/// What the token watch reports; production logs it, tests collect it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenReport {
    /// The introspection endpoint answered.
    Introspected(api::Introspection),
    /// The introspection request failed (the error, already free of the token).
    IntrospectFailed(String),
    /// The token is close to (or past) its expiry.
    Expiry {
        notice: ExpiryNotice,
        expires_at: OffsetDateTime,
    },
}

/// Introspects the token (with `introspect`, normally [`api::Client::introspect`]) and checks its
/// expiry at start and every [`TOKEN_CHECK_INTERVAL`] until `shutdown`. `wall_clock` gives the
/// current time; `report` receives what was found.
pub async fn watch_token<F>(
    introspect: impl Fn() -> F,
    expires_at: Option<OffsetDateTime>,
    wall_clock: impl Fn() -> OffsetDateTime,
    report: impl Fn(TokenReport),
    shutdown: CancellationToken,
) where
    F: Future<Output = Result<api::Introspection, api::ApiError>>,
{
    let mut ticks = tokio::time::interval(TOKEN_CHECK_INTERVAL);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_notice = None;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticks.tick() => {}
        }
        if let Some(expires_at) = expires_at
            && let Some(notice) = ExpiryNotice::next(expires_at, wall_clock(), last_notice)
        {
            last_notice = Some(notice);
            report(TokenReport::Expiry { notice, expires_at });
        }
        let introspected = tokio::select! {
            _ = shutdown.cancelled() => return,
            introspected = introspect() => introspected,
        };
        report(match introspected {
            Ok(introspection) => TokenReport::Introspected(introspection),
            Err(err) => TokenReport::IntrospectFailed(err.to_string()),
        });
    }
}

/// Logs a [`TokenReport`] for an account.
pub fn log_token_report(account: &Arc<str>, report: TokenReport) {
    match report {
        TokenReport::Introspected(i) => tracing::info!(
            account = %account,
            uuid = i.uuid.as_deref().unwrap_or("-"),
            issued_at = i.issued_at.as_deref().unwrap_or("-"),
            features = %i.features.join(","),
            account_uuid = i.account_uuid.as_deref().unwrap_or("-"),
            "token introspected"
        ),
        TokenReport::IntrospectFailed(error) => {
            tracing::warn!(account = %account, %error, "cannot introspect the token")
        }
        TokenReport::Expiry {
            notice: ExpiryNotice::Expired,
            expires_at,
        } => tracing::error!(
            account = %account, expires_at = %api::rfc3339(expires_at),
            "the token has expired; issue a new token and restart"
        ),
        TokenReport::Expiry { notice, expires_at } => {
            let days = match notice {
                ExpiryNotice::Within14Days => 14,
                ExpiryNotice::Within3Days => 3,
                _ => 1,
            };
            tracing::warn!(
                account = %account, expires_at = %api::rfc3339(expires_at),
                "the token expires within {days} day{}; issue a new token before then",
                if days == 1 { "" } else { "s" }
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::config::TokenSource;
    use super::*;
    use crate::api::jwt::decode_claims;
    use crate::stream::{ApiVersion, Region, V3Params};
    use time::macros::datetime;

    const NOW: OffsetDateTime = datetime!(2026-11-21 12:00 UTC);
    const ORIGIN: &str = "token_file /run/token";

    fn account() -> AccountConfig {
        AccountConfig {
            name: "acme".to_owned(),
            token: TokenSource::File("/run/token".into()),
            base_url: None,
            region: None,
            ca_file: None,
            streams: None,
            api_version: ApiVersion::V2,
            start_time: None,
            end_time: None,
            v3_params: V3Params::default(),
            page_size: 1000,
            poll_interval: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            max_response_bytes: None,
            limits: crate::governor::Limits::DOCUMENTED,
            retry_max: Duration::from_secs(300),
            unauthorized_retry: Duration::from_secs(300),
            on_invalid_cursor: super::config::OnInvalidCursor::Stop,
        }
    }

    fn jwt(claims: &str) -> String {
        use crate::api::jwt::base64url_encode as b64;
        format!(
            "{}.{}.{}",
            b64(br#"{"alg":"ES256","typ":"JWT"}"#),
            b64(claims.as_bytes()),
            b64(b"sig")
        )
    }

    fn claims(claims: &str) -> Result<TokenClaims, TokenError> {
        decode_claims(&jwt(claims))
    }

    #[test]
    fn a_token_alone_gives_host_and_streams() {
        let resolved = resolve(
            &account(),
            ORIGIN,
            claims(r#"{"aud":["events.1password.eu"],"1password.com/fts":["signinattempts","auditevents","future"]}"#),
            NOW,
        )
        .unwrap();
        assert_eq!(resolved.base_url, "https://events.1password.eu");
        assert_eq!(resolved.base_url_from, "the token's aud claim");
        assert_eq!(
            resolved.streams,
            [Stream::AuditEvents, Stream::SignInAttempts]
        );
        assert_eq!(resolved.warning, None);
    }

    #[test]
    fn config_wins_over_the_token() {
        let mut account = account();
        account.region = Some(Region::Ca);
        account.streams = Some(vec![Stream::AuditV3]);
        let resolved = resolve(
            &account,
            ORIGIN,
            claims(r#"{"aud":["events.1password.com"],"1password.com/fts":["auditevents"]}"#),
            NOW,
        )
        .unwrap();
        assert_eq!(resolved.base_url, "https://events.1password.ca");
        assert_eq!(resolved.streams, [Stream::AuditV3]);
        account.region = None;
        account.base_url = Some("http://127.0.0.1:9".to_owned());
        let resolved = resolve(
            &account,
            ORIGIN,
            claims(r#"{"aud":["x.example"],"1password.com/fts":["auditevents"]}"#),
            NOW,
        )
        .unwrap();
        assert_eq!(resolved.base_url, "http://127.0.0.1:9");
    }

    #[test]
    fn legacy_audience_needs_a_base_url_or_region() {
        let legacy =
            r#"{"aud":["com.1password.streamingservice"],"1password.com/fts":["itemusages"]}"#;
        assert_eq!(
            resolve(&account(), ORIGIN, claims(legacy), NOW)
                .unwrap_err()
                .to_string(),
            "account \"acme\": token_file /run/token: the token's audience is the legacy \
             \"com.1password.streamingservice\", which names no host: set base_url or region (us, ca, eu or ent) \
             in the account's config"
        );
        let mut with_region = account();
        with_region.region = Some(Region::Us);
        let resolved = resolve(&with_region, ORIGIN, claims(legacy), NOW).unwrap();
        assert_eq!(resolved.base_url, "https://events.1password.com");
        assert_eq!(resolved.streams, [Stream::ItemUsages]);
    }

    #[test]
    fn a_configured_stream_the_token_lacks_is_an_error() {
        let mut account = account();
        account.streams = Some(vec![Stream::AuditEvents, Stream::ItemUsages]);
        let err = resolve(
            &account,
            ORIGIN,
            claims(r#"{"aud":["events.1password.com"],"1password.com/fts":["auditevents","signinattempts"]}"#),
            NOW,
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "account \"acme\": stream \"itemusages\" needs the token feature \"itemusages\", but the token \
             (token_file /run/token) has only: auditevents, signinattempts; issue a token with that feature or \
             remove the stream from streams"
        );
        account.streams = Some(vec![Stream::AuditV3]);
        let err = resolve(
            &account,
            ORIGIN,
            claims(r#"{"aud":["h.example"],"1password.com/fts":["itemusages"]}"#),
            NOW,
        )
        .unwrap_err();
        assert!(
            matches!(
                err,
                ResolveError::MissingFeature {
                    feature: "auditevents",
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn no_features_and_no_streams() {
        let err = resolve(&account(), ORIGIN, claims(r#"{"aud":["h.example"]}"#), NOW).unwrap_err();
        assert_eq!(
            err.to_string(),
            "account \"acme\": token_file /run/token: the token names no features (its \"1password.com/fts\" claim \
             is absent or empty), so the streams to read are unknown: set streams in the account's config"
        );
    }

    #[test]
    fn expired_tokens_do_not_start() {
        let err = resolve(
            &account(),
            ORIGIN,
            claims(r#"{"aud":["h.example"],"1password.com/fts":["auditevents"],"exp":1763726400}"#),
            NOW,
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "account \"acme\": token_file /run/token: the token expired at 2025-11-21T12:00:00Z; issue a new token"
        );
    }

    #[test]
    fn unreadable_tokens_need_everything_in_the_config() {
        let secret = "opaque-s3cret";
        let err = resolve(&account(), ORIGIN, decode_claims(secret), NOW).unwrap_err();
        let message = err.to_string();
        assert_eq!(
            message,
            "account \"acme\": token_file /run/token: cannot read the token's claims: the token is not a JWT: \
             expected three dot-separated parts, found 1; without them the API host and the streams cannot be \
             known: set base_url (or region) and streams in the account's config"
        );
        assert!(!message.contains(secret));
        let mut explicit = account();
        explicit.base_url = Some("http://127.0.0.1:9".to_owned());
        explicit.streams = Some(vec![Stream::ItemUsages]);
        let resolved = resolve(&explicit, ORIGIN, decode_claims(secret), NOW).unwrap();
        assert_eq!(resolved.streams, [Stream::ItemUsages]);
        assert!(resolved.warning.unwrap().contains("the API will judge it"));
    }

    #[tokio::test(start_paused = true)]
    async fn the_watch_introspects_hourly_and_warns_before_expiry() {
        use std::sync::Mutex;
        let start = datetime!(2026-12-15 12:00 UTC);
        let expires_at = datetime!(2026-12-30 00:00 UTC);
        let started = tokio::time::Instant::now();
        // The wall clock follows tokio's paused clock, so advancing it moves both.
        let wall_clock = move || start + (tokio::time::Instant::now() - started);
        let reports = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&reports);
        let shutdown = CancellationToken::new();
        let introspection = api::Introspection {
            uuid: Some("U".into()),
            issued_at: None,
            features: vec!["auditevents".into()],
            account_uuid: None,
            budget: None,
        };
        let answer = introspection.clone();
        let task = tokio::spawn(watch_token(
            move || std::future::ready(Ok(answer.clone())),
            Some(expires_at),
            wall_clock,
            move |report| sink.lock().unwrap().push((wall_clock(), report)),
            shutdown.clone(),
        ));
        // 14.5 days left at start: no warning yet. Run 15 days of hourly checks.
        tokio::time::sleep(Duration::from_secs(15 * 86_400 + 1800)).await;
        shutdown.cancel();
        task.await.unwrap();
        let reports = reports.lock().unwrap();
        let introspections = reports
            .iter()
            .filter(|(_, r)| *r == TokenReport::Introspected(introspection.clone()))
            .count();
        // One at start, then one an hour for 15 days.
        assert_eq!(introspections, 15 * 24 + 1);
        let notices: Vec<(OffsetDateTime, ExpiryNotice)> = reports
            .iter()
            .filter_map(|(at, r)| match r {
                TokenReport::Expiry { notice, .. } => Some((*at, *notice)),
                _ => None,
            })
            .collect();
        assert_eq!(
            notices,
            [
                (datetime!(2026-12-16 00:00 UTC), ExpiryNotice::Within14Days),
                (datetime!(2026-12-27 00:00 UTC), ExpiryNotice::Within3Days),
                (datetime!(2026-12-29 00:00 UTC), ExpiryNotice::Within1Day),
                (datetime!(2026-12-30 00:00 UTC), ExpiryNotice::Expired),
            ]
        );
    }

    #[test]
    fn expiry_notices_step_14_3_1_days() {
        let exp = datetime!(2026-12-31 00:00 UTC);
        let at =
            |days: i64, hours: i64| exp - time::Duration::days(days) - time::Duration::hours(hours);
        assert_eq!(ExpiryNotice::due(exp, at(15, 0)), None);
        assert_eq!(
            ExpiryNotice::due(exp, at(14, 0)),
            Some(ExpiryNotice::Within14Days)
        );
        assert_eq!(
            ExpiryNotice::due(exp, at(3, 1)),
            Some(ExpiryNotice::Within14Days)
        );
        assert_eq!(
            ExpiryNotice::due(exp, at(3, 0)),
            Some(ExpiryNotice::Within3Days)
        );
        assert_eq!(
            ExpiryNotice::due(exp, at(0, 23)),
            Some(ExpiryNotice::Within1Day)
        );
        assert_eq!(
            ExpiryNotice::due(exp, at(0, 0)),
            Some(ExpiryNotice::Expired)
        );
        // Each step once, and a late start announces only the most urgent one.
        let last = Some(ExpiryNotice::Within14Days);
        assert_eq!(ExpiryNotice::next(exp, at(10, 0), last), None);
        assert_eq!(
            ExpiryNotice::next(exp, at(2, 0), last),
            Some(ExpiryNotice::Within3Days)
        );
        assert_eq!(
            ExpiryNotice::next(exp, at(0, 5), None),
            Some(ExpiryNotice::Within1Day)
        );
    }
}
