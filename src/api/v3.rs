//! The beta `GET /api/v3/auditevents` (stream `audit_v3`): query parameters, both documented
//! response shapes, and the paging state the daemon keeps in place of a cursor.
//!
//! The endpoint pages with a continuation token inside a window of insertion times. When a
//! window is exhausted (no `next_page_token`), the next window starts at the last event's
//! `insert_time`, as the 3.0.0 reference describes. Two revisions are documented:
//!
//! | | early beta | 3.0.0 |
//! |---|---|---|
//! | page size | `page_size` | `max_page_size` |
//! | continuation (query) | `next_page_token` | `page_token` |
//! | in the response | `meta: {next_page_token, has_more}` | top-level `next_page_token` |
//!
//! Requests use the 3.0.0 names unless the config names others ([`crate::stream::V3Params`]);
//! responses in either shape are accepted. `start_time`/`end_time` are never sent with a page
//! token (the API answers 400). The early beta called `start_time` inclusive, 3.0.0 exclusive:
//! the state remembers the uuids of the events at the window's start, and drops them if a new
//! window serves them again, so both readings give each event once.
//!
//! Everything here is pure; the state is stored as a small JSON object through
//! `Store::append_page`, in the transaction that stores the page, like a cursor.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::event::EventArray;

use crate::stream::V3Params;

/// The request for one page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum V3Request {
    /// The first page of a window of insertion times.
    Window {
        page_size: u16,
        start_time: Option<String>,
        end_time: Option<String>,
    },
    /// The next page of the current window.
    Token { page_size: u16, token: String },
}

impl V3Request {
    /// The query string (without `?`), with the configured parameter names.
    pub fn query(&self, params: &V3Params) -> String {
        let mut pairs: Vec<(&str, String)> = Vec::new();
        match self {
            V3Request::Window {
                page_size,
                start_time,
                end_time,
            } => {
                pairs.push((&params.page_size, page_size.to_string()));
                if let Some(start) = start_time {
                    pairs.push(("start_time", start.clone()));
                }
                if let Some(end) = end_time {
                    pairs.push(("end_time", end.clone()));
                }
            }
            V3Request::Token { page_size, token } => {
                pairs.push((&params.page_size, page_size.to_string()));
                pairs.push((&params.page_token, token.clone()));
            }
        }
        pairs
            .iter()
            .map(|(key, value)| format!("{}={}", percent_encode(key), percent_encode(value)))
            .collect::<Vec<_>>()
            .join("&")
    }
}

/// One page of the v3 endpoint.
#[derive(Debug)]
pub struct V3Page {
    /// Each event exactly as received.
    pub events: Vec<Box<RawValue>>,
    /// `insert_time` and `uuid` of each event, when present, in order.
    pub keys: Vec<(Option<String>, Option<String>)>,
    /// The token of the next page of this window; `None` when the window is exhausted.
    pub next_page_token: Option<String>,
    /// What the response's `RateLimit-*` headers said of the account's budget.
    pub budget: Option<crate::governor::RateBudget>,
}

/// Parses a v3 response in either documented shape.
///
/// # Errors
///
/// A description of what is wrong when the body is not JSON, `audit_events` is not an array,
/// or the paging fields have the wrong types or contradict each other.
pub fn parse_v3_page(body: &[u8], max_items: u16) -> Result<V3Page, String> {
    #[derive(Deserialize)]
    struct Meta {
        next_page_token: Option<String>,
        has_more: Option<bool>,
    }
    #[derive(Deserialize)]
    struct Envelope<'a> {
        #[serde(borrow)]
        audit_events: Option<&'a RawValue>,
        next_page_token: Option<String>,
        meta: Option<Meta>,
    }
    #[derive(Deserialize)]
    struct Keys {
        insert_time: Option<String>,
        uuid: Option<String>,
    }
    let envelope: Envelope<'_> = serde_json::from_slice(body).map_err(|err| err.to_string())?;
    let events: Vec<Box<RawValue>> = match envelope.audit_events {
        Some(raw) if raw.get() != "null" => serde_json::from_str(raw.get())
            .map_err(|err| format!("\"audit_events\" is not an array: {err}"))?,
        _ => Vec::new(),
    };
    // The beta's event schema is not published: every event must be an object, its uuid
    // is read where there is one.
    let refs: Vec<&RawValue> = events.iter().map(|event| &**event).collect();
    super::check_items(&refs, max_items, "audit_events", false)?;
    let keys = events
        .iter()
        .map(|event| match serde_json::from_str::<Keys>(event.get()) {
            Ok(keys) => (keys.insert_time, keys.uuid),
            // An object whose insert_time or uuid is not a string: forwarded as is.
            Err(_) => (None, None),
        })
        .collect();
    let top = envelope.next_page_token.filter(|t| !t.is_empty());
    let next_page_token = match (top, envelope.meta) {
        (Some(token), _) => Some(token),
        (None, Some(meta)) => {
            let token = meta.next_page_token.filter(|t| !t.is_empty());
            if meta.has_more == Some(true) && token.is_none() {
                return Err("\"meta.has_more\" is true but there is no next_page_token".to_owned());
            }
            if meta.has_more == Some(false) {
                None
            } else {
                token
            }
        }
        (None, None) => None,
    };
    Ok(V3Page {
        events,
        keys,
        next_page_token,
        budget: None,
    })
}

/// Where the `audit_v3` stream is: the daemon's own small JSON state, stored like a cursor.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct V3State {
    /// The token of the next page of the current window, if the window is not exhausted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub page_token: Option<String>,
    /// The start of the current window (an `insert_time` as the API wrote it, or the
    /// configured start); `None` lets the API choose.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<String>,
    /// Uuids of the events already forwarded whose `insert_time` is `start_time`: dropped if
    /// the window serves them again (an inclusive start).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub seen: Vec<String>,
}

/// What one page changes: the events to keep, the next state, whether more is waiting now.
#[derive(Debug)]
pub struct V3Step {
    /// The events to forward, each as sent (repeats dropped).
    pub items: EventArray,
    pub n_events: u64,
    /// The state to save with the events.
    pub next: V3State,
    /// True when the window has more pages; false when caught up.
    pub has_more: bool,
}

impl V3State {
    /// The state of a stream that has never fetched: the window starts at `start_time`.
    pub fn initial(start_time: Option<String>) -> V3State {
        V3State {
            start_time,
            ..V3State::default()
        }
    }

    /// Reads a saved state.
    ///
    /// # Errors
    ///
    /// A description when the text is not a state this daemon saved.
    pub fn parse(text: &str) -> Result<V3State, String> {
        serde_json::from_str(text).map_err(|err| format!("not an audit_v3 position: {err}"))
    }

    /// The state as saved in the store.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a V3State always serializes")
    }

    /// The request for the next page. A page token goes alone: never with a window.
    pub fn request(&self, page_size: u16, end_time: Option<&str>) -> V3Request {
        match &self.page_token {
            Some(token) => V3Request::Token {
                page_size,
                token: token.clone(),
            },
            None => V3Request::Window {
                page_size,
                start_time: self.start_time.clone(),
                end_time: end_time.map(str::to_owned),
            },
        }
    }

    /// Applies a page fetched with [`V3State::request`].
    ///
    /// # Errors
    ///
    /// When a caught-up window's events carry no `insert_time`: the next window could only
    /// start where this one did and serve the same events again, so nothing is kept.
    pub fn advance(&self, page: &V3Page) -> Result<V3Step, String> {
        let first_of_window = self.page_token.is_none();
        let mut kept: Vec<&str> = Vec::with_capacity(page.events.len());
        for (event, (_, uuid)) in page.events.iter().zip(&page.keys) {
            let repeat = first_of_window
                && uuid
                    .as_ref()
                    .is_some_and(|uuid| self.seen.iter().any(|seen| seen == uuid));
            if !repeat {
                kept.push(event.get());
            }
        }
        let n_events = kept.len() as u64;
        let items = EventArray::new(kept.into_iter());

        // The window's start and the events at it, carried through the pages of the window.
        let last_insert = page.keys.iter().rev().find_map(|(at, _)| at.clone());
        if page.next_page_token.is_none() && !page.events.is_empty() && last_insert.is_none() {
            return Err(
                "the window is exhausted but its events carry no \"insert_time\" to start the next one \
                 from; the page is not stored, so nothing is forwarded twice"
                    .to_owned(),
            );
        }
        let (start_time, seen) = match &last_insert {
            Some(last) => {
                let mut seen: Vec<String> = if Some(last) == self.start_time.as_ref() {
                    self.seen.clone()
                } else {
                    Vec::new()
                };
                for (at, uuid) in &page.keys {
                    if at.as_ref() == Some(last)
                        && let Some(uuid) = uuid
                        && !seen.contains(uuid)
                    {
                        seen.push(uuid.clone());
                    }
                }
                (Some(last.clone()), seen)
            }
            None => (self.start_time.clone(), self.seen.clone()),
        };
        let next = V3State {
            page_token: page.next_page_token.clone(),
            start_time,
            seen,
        };
        Ok(V3Step {
            items,
            n_events,
            has_more: page.next_page_token.is_some(),
            next,
        })
    }
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(body: &str) -> V3Page {
        parse_v3_page(body.as_bytes(), 1000).unwrap()
    }

    #[test]
    fn requests_use_the_newer_names_and_never_mix_token_and_window() {
        let params = V3Params::default();
        let window = V3State::initial(Some("2026-05-29T18:00:00.5+02:00".into()))
            .request(50, Some("2026-05-29T18:59:59Z"));
        assert_eq!(
            window.query(&params),
            "max_page_size=50&start_time=2026-05-29T18%3A00%3A00.5%2B02%3A00&end_time=2026-05-29T18%3A59%3A59Z"
        );
        let state = V3State {
            page_token: Some("t o/k=".into()),
            start_time: Some("2026-05-29T18:00:00Z".into()),
            seen: vec![],
        };
        let token = state.request(50, Some("2026-05-29T18:59:59Z"));
        assert_eq!(
            token.query(&params),
            "max_page_size=50&page_token=t%20o%2Fk%3D"
        );
        let older = V3Params {
            page_size: "page_size".into(),
            page_token: "next_page_token".into(),
        };
        assert_eq!(
            token.query(&older),
            "page_size=50&next_page_token=t%20o%2Fk%3D"
        );
        assert_eq!(
            V3State::default().request(1000, None).query(&params),
            "max_page_size=1000"
        );
    }

    #[test]
    fn both_response_shapes() {
        let newer =
            page(r#"{"audit_events":[{"uuid":"A","insert_time":"t1"}],"next_page_token":"n1"}"#);
        assert_eq!(newer.next_page_token.as_deref(), Some("n1"));
        assert_eq!(newer.events.len(), 1);
        let early = page(
            r#"{"audit_events":[{"uuid":"A"}],"meta":{"has_more":true,"next_page_token":"n2"}}"#,
        );
        assert_eq!(early.next_page_token.as_deref(), Some("n2"));
        let early_done =
            page(r#"{"audit_events":[],"meta":{"has_more":false,"next_page_token":"stale"}}"#);
        assert_eq!(early_done.next_page_token, None);
        let done = page(r#"{"audit_events":[]}"#);
        assert_eq!((done.events.len(), done.next_page_token), (0, None));
        let empty_token = page(r#"{"audit_events":null,"next_page_token":""}"#);
        assert_eq!(empty_token.next_page_token, None);
        assert_eq!(
            parse_v3_page(br#"{"audit_events":[],"meta":{"has_more":true}}"#, 1000).unwrap_err(),
            "\"meta.has_more\" is true but there is no next_page_token"
        );
        assert!(
            parse_v3_page(br#"{"audit_events":{}}"#, 1000)
                .unwrap_err()
                .starts_with("\"audit_events\" is not an array")
        );
    }

    #[test]
    fn caught_up_windows_restart_at_the_last_insert_time() {
        let state = V3State::initial(Some("s0".into()));
        let first = state.advance(&page(
            r#"{"audit_events":[{"uuid":"A","insert_time":"t1"},{"uuid":"B","insert_time":"t2"}],"next_page_token":"n1"}"#,
        ))
        .unwrap();
        assert!(first.has_more);
        assert_eq!(first.n_events, 2);
        assert_eq!(first.next.page_token.as_deref(), Some("n1"));
        let second = first.next.advance(&page(
            r#"{"audit_events":[{"uuid":"C","insert_time":"t3"},{"uuid":"D", "insert_time":"t3"}]}"#,
        ))
        .unwrap();
        assert!(!second.has_more);
        assert_eq!(
            second.next,
            V3State {
                page_token: None,
                start_time: Some("t3".into()),
                seen: vec!["C".into(), "D".into()],
            }
        );
        // An inclusive start serves C and D again: they are dropped, bytes of E kept as sent.
        let third = second.next.advance(&page(
            r#"{"audit_events":[{"uuid":"C","insert_time":"t3"},{"uuid":"D","insert_time":"t3"},{"uuid":"E", "insert_time":"t4","x":1.50}]}"#,
        ))
        .unwrap();
        assert_eq!(
            third.items.text(),
            r#"[{"uuid":"E", "insert_time":"t4","x":1.50}]"#
        );
        assert_eq!(third.n_events, 1);
        assert_eq!(third.next.start_time.as_deref(), Some("t4"));
        assert_eq!(third.next.seen, ["E"]);
        // Nothing new: the window and its seen events stay.
        let idle = third.next.advance(&page(r#"{"audit_events":[]}"#)).unwrap();
        assert_eq!((idle.n_events, idle.next.clone()), (0, third.next.clone()));
        assert_eq!(V3State::parse(&idle.next.to_json()).unwrap(), idle.next);
    }

    #[test]
    fn a_caught_up_window_without_insert_times_is_refused() {
        let state = V3State::initial(Some("s0".into()));
        let err = state
            .advance(&page(r#"{"audit_events":[{"uuid":"A"}]}"#))
            .unwrap_err();
        assert!(err.contains("no \"insert_time\""), "{err}");
        // Mid-window the token carries on, insert times or not.
        let mid = state
            .advance(&page(
                r#"{"audit_events":[{"uuid":"A"}],"next_page_token":"n"}"#,
            ))
            .unwrap();
        assert_eq!(mid.next.start_time.as_deref(), Some("s0"));
    }

    #[test]
    fn saved_states_round_trip_and_garbage_is_refused() {
        let state = V3State {
            page_token: Some("tok\n".into()),
            start_time: None,
            seen: vec![],
        };
        assert_eq!(state.to_json(), r#"{"page_token":"tok\n"}"#);
        assert_eq!(V3State::parse(&state.to_json()).unwrap(), state);
        assert_eq!(V3State::parse("{}").unwrap(), V3State::default());
        assert!(V3State::parse("aGVsbG8=").is_err());
    }
}
