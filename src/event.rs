//! The few fields sinks read from an event's raw bytes (its uuid, its time, a sign-in's
//! category), in one place, read by one walk over the top level of the JSON
//! ([`top_level`], which the API client's check of each event uses too), and the array a
//! page's events are kept in. Events are never
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
        let Ok([uuid, timestamp, category]) = top_level(event, ["uuid", "timestamp", "category"])
        else {
            return EventFields::default();
        };
        EventFields {
            uuid: uuid.and_then(string_value),
            timestamp: timestamp.and_then(string_value),
            category: category.and_then(string_value),
        }
    }
}

/// A raw JSON value as the string it holds (borrowed unless it has escapes), or `None` for
/// any other JSON value.
fn string_value(raw: &str) -> Option<Cow<'_, str>> {
    let inner = raw.strip_prefix('"')?.strip_suffix('"')?;
    if inner.contains('\\') {
        serde_json::from_str::<String>(raw).ok().map(Cow::Owned)
    } else {
        Some(Cow::Borrowed(inner))
    }
}

/// The raw JSON values of `keys` at the top level of `event`, an object serde has already
/// read whole (so valid JSON; anything else is refused, never misread as far as a walk can
/// tell): a walk over its structure that jumps over strings with memchr, about half what a
/// serde pass over every value costs. Refuses an object that names one of `keys` twice, as
/// serde's derive does.
pub fn top_level<'a, const N: usize>(
    event: &'a str,
    keys: [&str; N],
) -> Result<[Option<&'a str>; N], String> {
    let bytes = event.as_bytes();
    let broken = || "not JSON as read before".to_owned();
    let mut found = [None; N];
    if bytes.first() != Some(&b'{') {
        return Err(broken());
    }
    let mut at = skip_space(bytes, 1);
    if bytes.get(at) == Some(&b'}') {
        return Ok(found);
    }
    loop {
        if bytes.get(at) != Some(&b'"') {
            return Err(broken());
        }
        let key_end = string_end(bytes, at).ok_or_else(broken)?;
        let key = &event[at..key_end];
        at = skip_space(bytes, key_end);
        if bytes.get(at) != Some(&b':') {
            return Err(broken());
        }
        let start = skip_space(bytes, at + 1);
        let end = value_end(bytes, start).ok_or_else(broken)?;
        let name: Cow<'_, str> = if key.contains('\\') {
            serde_json::from_str(key).map_err(|err| err.to_string())?
        } else {
            key[1..key.len() - 1].into()
        };
        if let Some(slot) = keys.iter().position(|k| *k == name) {
            if found[slot].is_some() {
                return Err(format!("it has \"{name}\" twice"));
            }
            found[slot] = Some(&event[start..end]);
        }
        at = skip_space(bytes, end);
        match bytes.get(at) {
            Some(b',') => at = skip_space(bytes, at + 1),
            Some(b'}') => return Ok(found),
            _ => return Err(broken()),
        }
    }
}

/// The first byte at or after `at` that is not JSON whitespace.
fn skip_space(bytes: &[u8], mut at: usize) -> usize {
    while matches!(bytes.get(at), Some(b' ' | b'\t' | b'\n' | b'\r')) {
        at += 1;
    }
    at
}

/// Just past the string that opens at `at` (its `"`).
fn string_end(bytes: &[u8], at: usize) -> Option<usize> {
    let mut from = at + 1;
    loop {
        let found = from + memchr::memchr2(b'"', b'\\', bytes.get(from..)?)?;
        if bytes[found] == b'"' {
            return Some(found + 1);
        }
        from = found + 2;
    }
}

/// Just past the value that starts at `at`.
fn value_end(bytes: &[u8], at: usize) -> Option<usize> {
    match bytes.get(at)? {
        b'"' => string_end(bytes, at),
        b'{' | b'[' => {
            let (mut depth, mut from) = (0usize, at);
            loop {
                match bytes.get(from)? {
                    b'"' => {
                        from = string_end(bytes, from)?;
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return Some(from + 1);
                        }
                    }
                    _ => {}
                }
                from += 1;
            }
        }
        _ => {
            let len = bytes[at..]
                .iter()
                .position(|b| matches!(b, b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r'))?;
            Some(at + len)
        }
    }
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
    fn the_walk_reads_top_level_keys_only_and_jumps_over_strings() {
        fn read(event: &str) -> (Option<&str>, Option<&str>) {
            let [uuid, timestamp] = top_level(event, ["uuid", "timestamp"]).unwrap();
            (uuid, timestamp)
        }
        let t = r#""2026-11-21T10:00:00Z""#;
        assert_eq!(
            read(&format!(r#"{{"uuid":"A","timestamp":{t},"n":1}}"#)),
            (Some(r#""A""#), Some(t))
        );
        // Nested uuids are not the event's; strings full of structure are jumped over.
        assert_eq!(
            read(r#"{"user":{"uuid":"inner","x":[{"uuid":1}]},"uuid":"outer"}"#).0,
            Some(r#""outer""#)
        );
        assert_eq!(
            read(r#"{"s":"a \"uuid\": \"fake\" }]{[","uuid":"U"}"#).0,
            Some(r#""U""#)
        );
        assert_eq!(read(r#"{"s":"back\\","uuid":"B"}"#).0, Some(r#""B""#));
        assert_eq!(
            read(r#"{"n":[1,[2,{"uuid":3}]],"t":true,"f":-1.5e3,"z":null,"uuid":"C"}"#).0,
            Some(r#""C""#)
        );
        // Whitespace anywhere JSON allows it, and a key written with escapes.
        assert_eq!(
            read(&format!("{{ \"uuid\" :\n\"D\" ,\t\"timestamp\" : {t} }}")),
            (Some(r#""D""#), Some(t))
        );
        assert_eq!(read(r#"{"u\u0075id":"E"}"#).0, Some(r#""E""#));
        assert_eq!(read("{}"), (None, None));
        assert_eq!(
            read(r#"{"uuid":7,"timestamp":null}"#),
            (Some("7"), Some("null"))
        );
        // A key twice is refused, as serde refused it.
        assert_eq!(
            top_level(r#"{"uuid":"A","x":1,"uuid":"B"}"#, ["uuid", "timestamp"]).unwrap_err(),
            "it has \"uuid\" twice"
        );
        assert_eq!(
            top_level(
                &format!(r#"{{"timestamp":{t},"uuid":"A","timestamp":{t}}}"#),
                ["uuid", "timestamp"]
            )
            .unwrap_err(),
            "it has \"timestamp\" twice"
        );
    }

    #[test]
    fn the_walk_agrees_with_serde_on_events_of_every_stream() {
        use serde_json::value::RawValue;
        #[derive(Deserialize)]
        struct Serde<'a> {
            #[serde(borrow)]
            uuid: Option<&'a RawValue>,
            #[serde(borrow)]
            timestamp: Option<&'a RawValue>,
        }
        let events = crate::bench::hot::sample_events(300).unwrap();
        assert_eq!(events.len(), 900);
        for (_, event) in &events {
            let [uuid, timestamp] = top_level(event, ["uuid", "timestamp"]).unwrap();
            let theirs: Serde<'_> = serde_json::from_str(event).unwrap();
            assert_eq!(uuid, theirs.uuid.map(RawValue::get), "{event}");
            assert_eq!(timestamp, theirs.timestamp.map(RawValue::get), "{event}");
        }
    }

    #[test]
    fn event_fields_agree_with_serde_on_events_of_every_stream() {
        #[derive(serde::Deserialize)]
        struct Strings {
            uuid: Option<serde_json::Value>,
            timestamp: Option<serde_json::Value>,
            category: Option<serde_json::Value>,
        }
        let text = |value: Option<serde_json::Value>| match value {
            Some(serde_json::Value::String(text)) => Some(text),
            _ => None,
        };
        let events = crate::bench::hot::sample_events(300).unwrap();
        let mut categories = 0;
        for (_, event) in &events {
            let ours = EventFields::parse(event);
            let theirs: Strings = serde_json::from_str(event).unwrap();
            assert_eq!(ours.uuid.map(Cow::into_owned), text(theirs.uuid), "{event}");
            assert_eq!(
                ours.timestamp.map(Cow::into_owned),
                text(theirs.timestamp),
                "{event}"
            );
            let category = text(theirs.category);
            categories += usize::from(category.is_some());
            assert_eq!(ours.category.map(Cow::into_owned), category, "{event}");
        }
        assert!(categories >= 300, "the sign-in attempts carry a category");
        // A field named twice, or a body that is not an object: no fields, as before.
        assert!(
            EventFields::parse(r#"{"uuid":"A","uuid":"B"}"#)
                .uuid
                .is_none()
        );
        assert!(EventFields::parse(r#""uuid""#).uuid.is_none());
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
