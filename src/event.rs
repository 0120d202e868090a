//! The few fields sinks read from an event's raw bytes (its uuid, its time, a sign-in's
//! category), in one place, and the array a page's events are kept in. Events are never
//! parsed into structs otherwise: their bytes are forwarded as the API sent them.

use std::borrow::Cow;

use serde::Deserialize;
use time::format_description::well_known::Rfc3339;
use time::{OffsetDateTime, UtcOffset};

/// A page's events as they travel from the API client to the outbox and on to the sinks: one
/// JSON array `[e1,e2,...]` whose elements are byte for byte what the API sent (the array's
/// own whitespace is not kept), and where each element ends, so the events are read back as
/// slices of the text, without a JSON parse per delivery.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct EventArray {
    text: String,
    /// The byte offset just past each event: a `,` or, for the last, the closing `]`.
    ends: Vec<u32>,
}

impl EventArray {
    /// The array of `events`, each a complete JSON value (the caller has parsed them).
    pub fn new<'a>(events: impl ExactSizeIterator<Item = &'a str> + Clone) -> EventArray {
        let bytes = events.clone().map(|event| event.len() + 1).sum::<usize>() + 1;
        let mut text = String::with_capacity(bytes.max(2));
        let mut ends = Vec::with_capacity(events.len());
        text.push('[');
        for (idx, event) in events.enumerate() {
            if idx > 0 {
                text.push(',');
            }
            text.push_str(event);
            ends.push(u32::try_from(text.len()).unwrap_or(u32::MAX));
        }
        text.push(']');
        if text.len() > u32::MAX as usize {
            // Offsets would not fit the stored form: the array is read by parsing it.
            ends.clear();
        }
        EventArray { text, ends }
    }

    /// Reads a JSON array of events (a page kept by an older version, a test's page).
    pub fn parse(text: &str) -> Result<EventArray, serde_json::Error> {
        let events: Vec<&serde_json::value::RawValue> = serde_json::from_str(text)?;
        Ok(EventArray::new(events.iter().map(|event| event.get())))
    }

    /// The array as JSON text.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Its events, each as the API sent it.
    pub fn iter(&self) -> impl Iterator<Item = &str> {
        let starts = std::iter::once(1).chain(self.ends.iter().map(|end| *end as usize + 1));
        starts
            .zip(self.ends.iter())
            .map(|(start, end)| &self.text[start..*end as usize])
    }

    /// How many events it holds.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// The offsets in their stored form (little-endian `u32`s), empty when the array is read
    /// by parsing it.
    pub fn ends_blob(&self) -> Vec<u8> {
        self.ends.iter().flat_map(|end| end.to_le_bytes()).collect()
    }
}

/// The events of an array `text` kept with its `ends` blob (see [`EventArray::ends_blob`]), or
/// `None` when the blob does not describe the text exactly (it is empty, or the text is not of
/// the form [`EventArray`] writes): the caller then parses the text.
pub fn split_array<'a>(text: &'a str, ends: &[u8]) -> Option<Vec<&'a str>> {
    if ends.is_empty() {
        return (text == "[]").then(Vec::new);
    }
    if !text.starts_with('[') || !ends.len().is_multiple_of(4) {
        return None;
    }
    let bytes = text.as_bytes();
    let count = ends.len() / 4;
    let mut events = Vec::with_capacity(count);
    let mut start = 1;
    for (idx, end) in ends.chunks_exact(4).enumerate() {
        let end = u32::from_le_bytes(end.try_into().ok()?) as usize;
        let closing = if idx + 1 == count { b']' } else { b',' };
        // Each end is an ASCII byte, so both slice bounds fall on character boundaries.
        if end <= start || bytes.get(end) != Some(&closing) {
            return None;
        }
        events.push(&text[start..end]);
        start = end + 1;
    }
    (start == text.len()).then_some(events)
}

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

    #[test]
    fn an_event_array_is_read_back_from_its_offsets_byte_for_byte() {
        let events = [
            r#"{"uuid":"A","n":[1,2]}"#,
            "{ \"uuid\" : \"B,]\" }",
            r#"{"é":"ü"}"#,
        ];
        let array = EventArray::new(events.iter().copied());
        assert_eq!(array.len(), 3);
        assert_eq!(
            array.text(),
            r#"[{"uuid":"A","n":[1,2]},{ "uuid" : "B,]" },{"é":"ü"}]"#
        );
        assert_eq!(
            split_array(array.text(), &array.ends_blob()).unwrap(),
            events
        );
        assert_eq!(array.iter().collect::<Vec<_>>(), events);
        assert_eq!(
            EventArray::parse(" [ {\"a\":1} ,\n{} ] ").unwrap().text(),
            r#"[{"a":1},{}]"#
        );
        let empty = EventArray::new(std::iter::empty());
        assert_eq!((empty.text(), empty.ends_blob()), ("[]", vec![]));
        assert_eq!(split_array("[]", &[]), Some(vec![]));
    }

    #[test]
    fn offsets_that_do_not_fit_the_text_are_refused() {
        let array = EventArray::new([r#"{"a":1}"#, r#"{"b":2}"#].into_iter());
        let blob = array.ends_blob();
        // No offsets for a non-empty array, another text, an end not on a separator, a torn
        // blob, text left after the last event: each is read by parsing instead.
        assert_eq!(split_array(array.text(), &[]), None);
        assert_eq!(split_array(r#"[{"a":1},{"b":22}]"#, &blob), None);
        assert_eq!(split_array(r#"[{"a":1}]"#, &blob), None);
        assert_eq!(split_array(array.text(), &blob[..6]), None);
        let mut moved = blob.clone();
        moved[0] -= 1;
        assert_eq!(split_array(array.text(), &moved), None);
        assert_eq!(split_array(&format!("{} ", array.text()), &blob), None);
        assert_eq!(split_array(&array.text()[1..], &blob), None);
    }
}
