//! What an HTTP collector's answer means, pure: the status policy shared by every HTTP sink,
//! and the per-event answers of Splunk HEC and of `_bulk`.

use std::time::Duration;

use serde::Deserialize;

/// The verdict on one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// 2xx: taken.
    Delivered,
    /// Try the same request again: after `after` if the receiver said (`Retry-After`), else
    /// after the backoff. Network errors and timeouts are this too.
    Retry {
        after: Option<Duration>,
        why: String,
    },
    /// 401 or 403: a credential an operator must fix; retried slowly, never dropped.
    Blocked(String),
    /// 413: split the batch and send the halves; a single event still too large is refused.
    TooLarge(String),
    /// Any other 4xx: the collector will never take this batch as it is.
    Reject(String),
}

/// The one status policy: 2xx delivered; 408, 429 and 5xx (and the statuses of
/// `retry_on_status`) retried, honouring `Retry-After`; 401 and 403 blocked; 413 split; any
/// other status refused, with the status and an excerpt of the body as the reason.
pub fn classify(
    status: u16,
    headers: &http::HeaderMap,
    body: &[u8],
    retry_on_status: &[u16],
) -> Verdict {
    let said = || {
        let excerpt = crate::api::excerpt(body, 200, "");
        if excerpt.is_empty() {
            format!("HTTP {status}")
        } else {
            format!("HTTP {status}: {excerpt}")
        }
    };
    match status {
        200..=299 => Verdict::Delivered,
        408 | 429 | 500..=599 => Verdict::Retry {
            after: retry_after(headers),
            why: said(),
        },
        _ if retry_on_status.contains(&status) => Verdict::Retry {
            after: retry_after(headers),
            why: said(),
        },
        401 | 403 => Verdict::Blocked(said()),
        413 => Verdict::TooLarge(said()),
        _ => Verdict::Reject(said()),
    }
}

/// `Retry-After` in seconds or as an HTTP date.
fn retry_after(headers: &http::HeaderMap) -> Option<Duration> {
    let value = headers.get(http::header::RETRY_AFTER)?.to_str().ok()?;
    crate::api::parse_retry_after(value, time::OffsetDateTime::now_utc())
}

/// Splunk HEC's JSON answer: `{"text":"Success","code":0}`, with `ackId` under indexer
/// acknowledgement and `invalid-event-number` when one event of the batch is refused.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct HecAnswer {
    #[serde(default)]
    pub text: String,
    #[serde(default)]
    pub code: Option<i64>,
    #[serde(rename = "ackId", default)]
    pub ack_id: Option<u64>,
    #[serde(rename = "invalid-event-number", default)]
    pub invalid_event_number: Option<usize>,
}

impl HecAnswer {
    pub fn parse(body: &[u8]) -> Option<HecAnswer> {
        serde_json::from_slice(body).ok()
    }

    /// Code 6 (invalid data format) naming one event of the batch: that event is refused,
    /// the rest are sent again without it.
    pub fn invalid_event(&self) -> Option<usize> {
        (self.code == Some(6))
            .then_some(self.invalid_event_number)
            .flatten()
    }

    /// Code 10 (data channel is missing): the token has indexer acknowledgement on, and the
    /// sink was not told (`ack = true` sends the channel).
    pub fn channel_missing(&self) -> bool {
        self.code == Some(10)
    }
}

/// What one item of a `_bulk` answer says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ItemVerdict {
    /// 200 or 201, or 409 on `create` (the document is already there, from an earlier try).
    Delivered,
    /// 429 or 5xx: send this item again.
    Retry(String),
    /// Anything else: the document will never be taken as it is.
    Reject(String),
}

/// The items of a `_bulk` answer, in request order; `None` if the body is not a bulk answer.
/// `errors: false` answers every item delivered without reading them.
pub fn bulk_items(body: &[u8], n_items: usize) -> Option<Vec<ItemVerdict>> {
    #[derive(Deserialize)]
    struct Answer {
        errors: bool,
        #[serde(default)]
        items: Vec<std::collections::HashMap<String, Item>>,
    }
    #[derive(Deserialize)]
    struct Item {
        status: u16,
        #[serde(default)]
        error: Option<serde_json::Value>,
    }
    let answer: Answer = serde_json::from_slice(body).ok()?;
    if !answer.errors {
        return Some(vec![ItemVerdict::Delivered; n_items]);
    }
    if answer.items.len() != n_items {
        return None;
    }
    Some(
        answer
            .items
            .into_iter()
            .map(|item| {
                let Some((_, item)) = item.into_iter().next() else {
                    return ItemVerdict::Retry("an empty item in the bulk answer".to_owned());
                };
                let reason = || {
                    let error = item.error.as_ref();
                    let kind = error
                        .and_then(|e| e.get("type"))
                        .and_then(|t| t.as_str())
                        .unwrap_or("error");
                    let why = error
                        .and_then(|e| e.get("reason"))
                        .and_then(|r| r.as_str())
                        .unwrap_or("");
                    format!("HTTP {} {kind}: {why}", item.status)
                        .trim_end_matches([':', ' '])
                        .to_owned()
                };
                match item.status {
                    200 | 201 | 409 => ItemVerdict::Delivered,
                    429 | 500..=599 => ItemVerdict::Retry(reason()),
                    _ => ItemVerdict::Reject(reason()),
                }
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> http::HeaderMap {
        let mut map = http::HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, http::HeaderValue::from_static(value));
        }
        map
    }

    #[test]
    fn every_status_class() {
        let none = headers(&[]);
        for status in [200, 201, 204] {
            assert_eq!(classify(status, &none, b"", &[]), Verdict::Delivered);
        }
        for status in [408, 429, 500, 502, 503, 504] {
            assert!(
                matches!(
                    classify(status, &none, b"", &[]),
                    Verdict::Retry { after: None, .. }
                ),
                "{status}"
            );
        }
        assert_eq!(
            classify(503, &headers(&[("retry-after", "12")]), b"busy", &[]),
            Verdict::Retry {
                after: Some(Duration::from_secs(12)),
                why: "HTTP 503: busy".into()
            }
        );
        assert_eq!(
            classify(403, &none, br#"{"text":"Invalid token","code":4}"#, &[]),
            Verdict::Blocked(r#"HTTP 403: {"text":"Invalid token","code":4}"#.into())
        );
        assert!(matches!(
            classify(401, &none, b"", &[]),
            Verdict::Blocked(_)
        ));
        assert_eq!(
            classify(413, &none, b"", &[]),
            Verdict::TooLarge("HTTP 413".into())
        );
        assert_eq!(
            classify(400, &none, b"bad\nrequest", &[]),
            Verdict::Reject("HTTP 400: bad\\nrequest".into())
        );
        assert!(matches!(classify(404, &none, b"", &[]), Verdict::Reject(_)));
        // retry_on_status extends the retryable set.
        assert!(matches!(
            classify(404, &none, b"", &[404]),
            Verdict::Retry { .. }
        ));
        let long = vec![b'x'; 5000];
        let Verdict::Reject(reason) = classify(422, &none, &long, &[]) else {
            panic!()
        };
        assert!(reason.len() < 220, "the body is cut: {}", reason.len());
    }

    #[test]
    fn hec_answers() {
        let ok = HecAnswer::parse(br#"{"text":"Success","code":0,"ackId":7}"#).unwrap();
        assert_eq!((ok.code, ok.ack_id), (Some(0), Some(7)));
        let bad = HecAnswer::parse(
            br#"{"text":"Invalid data format","code":6,"invalid-event-number":3}"#,
        )
        .unwrap();
        assert_eq!(bad.invalid_event(), Some(3));
        let channel = HecAnswer::parse(br#"{"text":"Data channel is missing","code":10}"#).unwrap();
        assert!(channel.channel_missing());
        assert_eq!(channel.invalid_event(), None);
        assert_eq!(HecAnswer::parse(b"<html>"), None);
    }

    #[test]
    fn bulk_item_results() {
        assert_eq!(
            bulk_items(br#"{"took":3,"errors":false,"items":[]}"#, 2).unwrap(),
            [ItemVerdict::Delivered, ItemVerdict::Delivered]
        );
        let body = br#"{"took":3,"errors":true,"items":[
            {"create":{"_index":"i","_id":"A","status":201}},
            {"create":{"_index":"i","_id":"B","status":409,"error":{"type":"version_conflict_engine_exception","reason":"document already exists"}}},
            {"create":{"_index":"i","_id":"C","status":429,"error":{"type":"es_rejected_execution_exception","reason":"queue full"}}},
            {"create":{"_index":"i","_id":"D","status":400,"error":{"type":"mapper_parsing_exception","reason":"failed to parse field [n]"}}}
        ]}"#;
        assert_eq!(
            bulk_items(body, 4).unwrap(),
            [
                ItemVerdict::Delivered,
                ItemVerdict::Delivered,
                ItemVerdict::Retry("HTTP 429 es_rejected_execution_exception: queue full".into()),
                ItemVerdict::Reject(
                    "HTTP 400 mapper_parsing_exception: failed to parse field [n]".into()
                ),
            ]
        );
        assert_eq!(bulk_items(body, 3), None, "items must match the request");
        assert_eq!(bulk_items(b"not json", 1), None);
    }
}
