//! The few fields sinks read from an event's raw bytes (its uuid, its time, a sign-in's
//! category), in one place. Events are never parsed into structs otherwise: their bytes are
//! forwarded as the API sent them.

use std::borrow::Cow;

use serde::Deserialize;
use time::format_description::well_known::Rfc3339;
use time::{OffsetDateTime, UtcOffset};

/// The fields of an event that sinks read, borrowed from the raw JSON where possible.
#[derive(Debug, Default, Deserialize)]
pub struct EventFields<'a> {
    #[serde(borrow, default)]
    pub uuid: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub timestamp: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub category: Option<Cow<'a, str>>,
}

impl<'a> EventFields<'a> {
    /// Reads the fields; an event that is not a JSON object, or whose fields are not strings,
    /// has none (its message then uses the receive time and carries no uuid).
    pub fn parse(event: &'a str) -> EventFields<'a> {
        #[derive(Deserialize)]
        struct Loose<'a> {
            #[serde(borrow, default, deserialize_with = "string_or_none")]
            uuid: Option<Cow<'a, str>>,
            #[serde(borrow, default, deserialize_with = "string_or_none")]
            timestamp: Option<Cow<'a, str>>,
            #[serde(borrow, default, deserialize_with = "string_or_none")]
            category: Option<Cow<'a, str>>,
        }
        match serde_json::from_str::<Loose<'a>>(event) {
            Ok(loose) => EventFields {
                uuid: loose.uuid,
                timestamp: loose.timestamp,
                category: loose.category,
            },
            Err(_) => EventFields::default(),
        }
    }
}

/// A string field, or `None` for any other JSON value.
fn string_or_none<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Cow<'de, str>>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Maybe<'a> {
        Text(#[serde(borrow)] Cow<'a, str>),
        Other(serde::de::IgnoredAny),
    }
    Ok(match Maybe::deserialize(deserializer)? {
        Maybe::Text(text) => Some(text),
        Maybe::Other(_) => None,
    })
}

/// An RFC 3339 time (any offset, any number of fractional digits) in UTC; `None` if it does
/// not parse or lies outside the years 0 to 9999.
pub fn parse_timestamp(text: &str) -> Option<OffsetDateTime> {
    let time = OffsetDateTime::parse(text, &Rfc3339).ok()?;
    let utc = time.checked_to_offset(UtcOffset::UTC)?;
    (0..=9999).contains(&utc.year()).then_some(utc)
}

/// The uuid of a raw event, if it has a string one.
pub fn uuid(event: &str) -> Option<String> {
    EventFields::parse(event).uuid.map(Cow::into_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_read_loosely() {
        let fields = EventFields::parse(
            r#"{"uuid":"A","timestamp":"2026-11-30T10:00:00.5-03:00","category":"success","x":[1]}"#,
        );
        assert_eq!(fields.uuid.as_deref(), Some("A"));
        assert_eq!(fields.category.as_deref(), Some("success"));
        assert_eq!(
            fields.timestamp.as_deref().and_then(parse_timestamp),
            Some(time::macros::datetime!(2026-11-30 13:00:00.5 UTC))
        );
        let odd = EventFields::parse(r#"{"uuid":7,"timestamp":null}"#);
        assert!(odd.uuid.is_none() && odd.timestamp.is_none());
        assert!(EventFields::parse("[1]").uuid.is_none());
        assert_eq!(uuid(r#"{"uuid":"B\u0041"}"#).as_deref(), Some("BA"));
    }
}
