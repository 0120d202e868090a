//! The quick way through a page of the v1 and v2 endpoints: one serde_json pass over the
//! body that checks each event and reads its top level as it goes. The thorough way
//! ([`super::parse_page`] after this one declines) takes each event whole first and walks its
//! top level after, which read every event's bytes twice (the walk was 8 % of the daemon's
//! CPU samples, with its `memchr` calls 13 %). This way declines any page it is not sure of:
//! anything but a well-formed page of at most `max_items` events, each an object with one
//! string `uuid` and at most one `timestamp`. The thorough way then says what is wrong, so
//! errors keep their words; for every page this way takes, its result is the thorough way's
//! (tested against it below).
//!
//! serde_json still checks every byte: each top-level value of an event is taken as a raw
//! value, which serde_json validates as it skips it. Where an event starts and ends is found
//! from those values' places in the body: the first event, whose start nothing before it
//! tells, is taken whole and walked; each later one starts after the previous one's end, a
//! comma and whitespace, and ends at the `}` after its last value.

use std::fmt;

use serde::Deserializer as _;
use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;
use time::OffsetDateTime;

/// What the quick way read of a page: its envelope, and each event as a slice of the body.
#[derive(Debug)]
pub(super) struct QuickPage<'a> {
    pub cursor: String,
    pub has_more: bool,
    pub events: Vec<&'a str>,
    pub newest: Option<OffsetDateTime>,
}

/// Reads `body` if it is a well-formed page of at most `max_items` events; `None` for
/// anything else (see the module's doc).
pub(super) fn read(body: &str, max_items: u16) -> Option<QuickPage<'_>> {
    let mut de = serde_json::Deserializer::from_str(body);
    let page = de
        .deserialize_map(EnvelopeVisitor {
            body,
            max_items: usize::from(max_items),
        })
        .ok()?;
    de.end().ok()?;
    Some(page)
}

/// Any reason to decline; the thorough way finds the words.
fn decline<E: de::Error>() -> E {
    E::custom("")
}

struct EnvelopeVisitor<'a> {
    body: &'a str,
    max_items: usize,
}

impl<'de> Visitor<'de> for EnvelopeVisitor<'de> {
    type Value = QuickPage<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a page")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let (mut cursor, mut has_more, mut items) = (None, None, None);
        while let Some(key) = map.next_key::<Key>()? {
            match key.0 {
                Some("cursor") if cursor.is_none() => {
                    cursor = Some(map.next_value::<Option<String>>()?);
                }
                Some("has_more") if has_more.is_none() => {
                    has_more = Some(map.next_value::<Option<bool>>()?);
                }
                Some("items") if items.is_none() => {
                    items = Some(map.next_value_seed(ItemsSeed {
                        body: self.body,
                        max_items: self.max_items,
                    })?);
                }
                // The same key twice: the thorough way refuses it.
                Some("cursor" | "has_more" | "items") => return Err(decline()),
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        let (events, newest) = items.flatten().unwrap_or_default();
        Ok(QuickPage {
            cursor: cursor.flatten().ok_or_else(decline)?,
            has_more: has_more.flatten().ok_or_else(decline)?,
            events,
            newest,
        })
    }
}

/// A key of the envelope or of an event: one of the few read (`Some`), or another.
struct Key(Option<&'static str>);

impl<'de> serde::Deserialize<'de> for Key {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl Visitor<'_> for KeyVisitor {
            type Value = Key;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a key")
            }
            // Escaped keys come here unescaped, as the thorough way reads them.
            fn visit_str<E: de::Error>(self, key: &str) -> Result<Key, E> {
                Ok(Key(["cursor", "has_more", "items", "uuid", "timestamp"]
                    .into_iter()
                    .find(|known| *known == key)))
            }
        }
        deserializer.deserialize_identifier(KeyVisitor)
    }
}

type Items<'a> = (Vec<&'a str>, Option<OffsetDateTime>);

struct ItemsSeed<'a> {
    body: &'a str,
    max_items: usize,
}

impl<'de> DeserializeSeed<'de> for ItemsSeed<'de> {
    /// `None` for `"items": null`, which the thorough way takes as no events.
    type Value = Option<Items<'de>>;

    fn deserialize<D: serde::Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_option(self)
    }
}

impl<'de> Visitor<'de> for ItemsSeed<'de> {
    type Value = Option<Items<'de>>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an array of events")
    }

    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_some<D: serde::Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_seq(self)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let body = self.body;
        // serde_json gives no size hint: room for a full page, which pages mostly are.
        let mut events = Vec::with_capacity(self.max_items.min(1000));
        let mut newest = None;
        // The first event whole, walked as the thorough way walks every one.
        let Some(first) = seq.next_element::<&'de RawValue>()? else {
            return Ok(Some((events, newest)));
        };
        let first = first.get();
        if self.max_items == 0 || !first.starts_with('{') {
            return Err(decline());
        }
        let [uuid, timestamp] =
            crate::event::top_level(first, ["uuid", "timestamp"]).map_err(|_| decline())?;
        if !uuid.is_some_and(|uuid| uuid.starts_with('"')) {
            return Err(decline());
        }
        newest = newest.max(timestamp.and_then(super::timestamp_of));
        events.push(first);
        let mut end = place(body, first).ok_or_else(decline)? + first.len();
        while let Some(event) = seq.next_element_seed(EventSeed)? {
            if events.len() == self.max_items {
                return Err(decline());
            }
            // It starts after the previous one, a comma and whitespace between them...
            let start = skip_space(body, end);
            let start = skip_space(
                body,
                start + usize::from(body.as_bytes().get(start) == Some(&b',')),
            );
            // ...and ends at the `}` after its last value.
            let last = event.last.get();
            let close = skip_space(body, place(body, last).ok_or_else(decline)? + last.len());
            if body.as_bytes().get(start) != Some(&b'{')
                || body.as_bytes().get(close) != Some(&b'}')
            {
                return Err(decline());
            }
            end = close + 1;
            if !event.uuid.is_some_and(|uuid| uuid.get().starts_with('"')) {
                return Err(decline());
            }
            newest = newest.max(
                event
                    .timestamp
                    .map(RawValue::get)
                    .and_then(super::timestamp_of),
            );
            events.push(&body[start..end]);
        }
        Ok(Some((events, newest)))
    }
}

/// What the quick way reads of an event after the first: its `uuid`, its `timestamp`, and
/// its last value (where the event ends).
struct Event<'a> {
    uuid: Option<&'a RawValue>,
    timestamp: Option<&'a RawValue>,
    last: &'a RawValue,
}

struct EventSeed;

impl<'de> DeserializeSeed<'de> for EventSeed {
    type Value = Event<'de>;

    fn deserialize<D: serde::Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for EventSeed {
    type Value = Event<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an event")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let (mut uuid, mut timestamp, mut last) = (None, None, None);
        while let Some(key) = map.next_key::<Key>()? {
            let value: &'de RawValue = map.next_value()?;
            match key.0 {
                Some("uuid") if uuid.is_none() => uuid = Some(value),
                Some("timestamp") if timestamp.is_none() => timestamp = Some(value),
                // The same key twice: the thorough way names it.
                Some("uuid" | "timestamp") => return Err(decline()),
                _ => {}
            }
            last = Some(value);
        }
        Ok(Event {
            uuid,
            timestamp,
            last: last.ok_or_else(decline)?,
        })
    }
}

/// Where `part`, a slice of `body`, starts in it; `None` if it is not one.
fn place(body: &str, part: &str) -> Option<usize> {
    let at = (part.as_ptr() as usize).checked_sub(body.as_ptr() as usize)?;
    (at + part.len() <= body.len()).then_some(at)
}

/// The first byte at or after `at` that is not JSON whitespace.
fn skip_space(body: &str, mut at: usize) -> usize {
    while matches!(body.as_bytes().get(at), Some(b' ' | b'\t' | b'\n' | b'\r')) {
        at += 1;
    }
    at
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The thorough way's reading of `body`, for comparison.
    fn thorough(
        body: &str,
        max_items: u16,
    ) -> Result<(String, bool, Vec<String>, Option<OffsetDateTime>), String> {
        let page = super::super::parse_page_thoroughly(body.as_bytes(), max_items)?;
        Ok((
            page.cursor,
            page.has_more,
            page.items.iter().map(str::to_owned).collect(),
            page.newest,
        ))
    }

    /// Asserts that the quick way either declines `body` or reads it as the thorough way does.
    fn agrees(body: &str, max_items: u16) -> bool {
        let quick = read(body, max_items);
        let thorough = thorough(body, max_items);
        match (&quick, &thorough) {
            (None, _) => {}
            (Some(quick), Ok((cursor, has_more, events, newest))) => {
                assert_eq!(&quick.cursor, cursor, "{body}");
                assert_eq!(&quick.has_more, has_more, "{body}");
                assert_eq!(&quick.events, events, "{body}");
                assert_eq!(&quick.newest, newest, "{body}");
            }
            (Some(quick), Err(err)) => {
                panic!(
                    "the quick way took a page the thorough way refuses ({err}): {quick:?} from {body}"
                )
            }
        }
        quick.is_some()
    }

    fn page(items: &str) -> String {
        format!(r#"{{"cursor":"c","has_more":true,"items":{items}}}"#)
    }

    #[test]
    fn well_formed_pages_are_read_as_the_thorough_way_reads_them() {
        for body in [
            page("[]"),
            page("null"),
            r#"{"has_more":false,"cursor":"c2","items":[],"extra":{"a":[1,{"b":"}"}]}}"#.to_owned(),
            r#"{"cursor":"c","has_more":true}"#.to_owned(),
            page(r#"[{"uuid":"A"}]"#),
            page(r#"[{"uuid":"A"},{"uuid":"B","timestamp":"2026-11-21T12:00:00Z"}]"#),
            page(
                " [ {\"uuid\" : \"A\" , \"n\":[1, 2] } ,\n\t{\"x\":{\"uuid\":7},\"uuid\":\"B\\\"}\" }\r\n,{\"timestamp\":\"2026-11-21T10:00:00.5-03:00\",\"uuid\":\"C\",\"z\":null} ] ",
            ),
            // An escaped key is the key it spells.
            page(r#"[{"uuid":"A"},{"\u0075uid":"B","t\u0069mestamp":"2026-11-21T12:00:00Z"}]"#),
            page(
                r#"[{"uuid":"A","timestamp":7},{"uuid":"B","timestamp":"not a time","s":"\u00e9\ud83d\ude00"}]"#,
            ),
        ] {
            assert!(agrees(&body, 10), "declined: {body}");
        }
    }

    #[test]
    fn anything_else_is_left_to_the_thorough_way() {
        for body in [
            page(r#"[{"uuid":"A"},1]"#),
            page(r#"[{"uuid":"A"},{}]"#),
            page(r#"[{"uuid":"A"},{"id":"B"}]"#),
            page(r#"[{"uuid":"A"},{"uuid":7}]"#),
            page(r#"[{"uuid":"A"},{"uuid":"B","uuid":"C"}]"#),
            page(r#"[{"uuid":"A"},{"uuid":"B","timestamp":"x","timestamp":"y"}]"#),
            page(r#"[{"uuid":"A","uuid":"B"}]"#),
            page(r#"[{"uuid":"A"},{"uuid":"B"},{"uuid":"C"},{"uuid":"D"}]"#),
            page(r#"[{"uuid":"A"},{"uuid":"B"]"#),
            page(r#"[{"uuid":"A"},{"uuid":"B",}]"#),
            page(r#"[{"uuid":"A"},{"uuid":"B\x01"}]"#),
            page("[{\"uuid\":\"A\"},{\"uuid\":\"B\u{1}\"}]"),
            page(r#"[{"uuid":"A"},{"uuid":"B","n":01}]"#),
            page(r#"[{"uuid":"A"},{"uuid":"B","n":[1,]}]"#),
            page(r#"[{"uuid":"A"},{"uuid":"B","\u0075uid":"C"}]"#),
            page(r#"[{"uuid":"A"},{"uuid":"B","timestamp":"x","\u0074imestamp":"y"}]"#),
            page(r#"[{"uuid":"A"},{"uuid":"B","\ud800x":1}]"#),
            page(r#"[{"uuid":"A"},]"#),
            page("5"),
            page(r#""x""#),
            r#"{"cursor":"c","has_more":true,"items":null,"items":[]}"#.to_owned(),
            format!("\u{feff}{}", page("[]")),
            r#"["c",true,[{"uuid":"A"}]]"#.to_owned(),
            page(r#"{"uuid":"A"}"#),
            r#"{"cursor":"c","cursor":"d","has_more":true,"items":[]}"#.to_owned(),
            r#"{"cursor":"c","has_more":true,"items":[],"items":[]}"#.to_owned(),
            r#"{"cursor":null,"has_more":true,"items":[]}"#.to_owned(),
            r#"{"cursor":"c","items":[]}"#.to_owned(),
            r#"{"cursor":"c","has_more":"yes","items":[]}"#.to_owned(),
            format!("{} x", page("[]")),
        ] {
            assert!(!agrees(&body, 3), "taken: {body}");
        }
        assert!(!agrees(&page(r#"[{"uuid":"A"}]"#), 0), "more than none");
        assert!(agrees(
            &page(r#"[{"uuid":"A"},{"uuid":"B"},{"uuid":"C"}]"#),
            3
        ));
        assert!(agrees(&page(" [ \n {\"uuid\":\"A\"}]"), 3));
    }

    #[test]
    fn every_simulated_page_is_taken_and_read_as_the_thorough_way_reads_it() {
        let served = crate::bench::hot::hot_page(1000).unwrap();
        let served = String::from_utf8(served.body).unwrap();
        assert!(agrees(&served, 1000), "declined: {}", &served[..200]);
        let mut bodies = Vec::new();
        let events = crate::bench::hot::sample_events(60).unwrap();
        for stream in crate::stream::Stream::ALL {
            let of_stream: Vec<&str> = events
                .iter()
                .filter(|(s, _)| *s == stream)
                .map(|(_, event)| event.as_str())
                .collect();
            assert!(!of_stream.is_empty(), "{stream}");
            bodies.push(page(&format!("[{}]", of_stream.join(","))));
            bodies.push(page(&format!("[\n  {}\n]", of_stream.join(" ,\n  "))));
        }
        for body in &bodies {
            assert!(agrees(body, 1000), "declined: {}", &body[..200]);
            // Cut short anywhere, or with a byte changed, never taken unless the thorough
            // way takes it too.
            for at in (1..body.len()).step_by(body.len() / 40) {
                if body.is_char_boundary(at) {
                    agrees(&body[..at], 1000);
                    for byte in ["\"", "}", ",", "]", "\\", "x"] {
                        let mut changed = body.clone();
                        if changed.is_char_boundary(at + 1) {
                            changed.replace_range(at..at + 1, byte);
                            agrees(&changed, 1000);
                        }
                    }
                }
            }
        }
    }
}
