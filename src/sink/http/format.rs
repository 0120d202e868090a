//! Request bodies for HTTP collectors, pure: NDJSON, a JSON array, Splunk HEC events, and
//! Elasticsearch/OpenSearch `_bulk` requests. Events are embedded byte for byte as the API
//! sent them (an envelope may wrap one, never rewrite its fields); only line breaks between
//! JSON tokens are dropped where one event must be one line.

use std::fmt::Write as _;

use time::{OffsetDateTime, UtcOffset};

use crate::event::{EventFields, parse_timestamp};
use crate::sink::one_line;
use crate::stream::Stream;

/// The Splunk sourcetype of a stream, as 1Password's own Splunk app names them, so its field
/// extractions and dashboards apply unchanged.
pub fn default_sourcetype(stream: Stream) -> &'static str {
    match stream {
        Stream::AuditEvents => "1password:insights:audit_events",
        Stream::ItemUsages => "1password:insights:item_usages",
        Stream::SignInAttempts => "1password:insights:signin_attempts",
        Stream::AuditV3 => "1password:insights:audit_events_v3",
    }
}

/// The data stream of Elastic's own 1Password integration for a stream, in `namespace`:
/// `logs-1password.audit_events-default` and so on, so its ingest pipelines, ECS mapping and
/// dashboards apply unchanged.
pub fn integration_data_stream(stream: Stream, namespace: &str) -> String {
    let dataset = match stream {
        Stream::AuditEvents => "audit_events",
        Stream::ItemUsages => "item_usages",
        Stream::SignInAttempts => "signin_attempts",
        Stream::AuditV3 => "audit_events_v3",
    };
    format!("logs-1password.{dataset}-{namespace}")
}

/// One event per line (`application/x-ndjson`); with `envelope`, each line is
/// `{"account":..,"stream":..,"event":<the event>}`.
pub fn ndjson(out: &mut Vec<u8>, events: &[&str], account: &str, stream: Stream, envelope: bool) {
    for event in events {
        if envelope {
            out.extend_from_slice(b"{\"account\":");
            push_json_string(out, account);
            out.extend_from_slice(b",\"stream\":");
            push_json_string(out, stream.as_str());
            out.extend_from_slice(b",\"event\":");
            out.extend_from_slice(one_line(event).as_bytes());
            out.push(b'}');
        } else {
            out.extend_from_slice(one_line(event).as_bytes());
        }
        out.push(b'\n');
    }
}

/// The events as one JSON array, each as received.
pub fn json_array(out: &mut Vec<u8>, events: &[&str]) {
    out.push(b'[');
    for (idx, event) in events.iter().enumerate() {
        if idx > 0 {
            out.push(b',');
        }
        out.extend_from_slice(event.as_bytes());
    }
    out.push(b']');
}

/// What a HEC event envelope says besides the event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HecFields<'a> {
    pub host: Option<&'a str>,
    pub source: Option<&'a str>,
    pub sourcetype: &'a str,
    pub index: Option<&'a str>,
}

/// One HEC event (`/services/collector/event`): `{"time":..,"host":..,"source":..,
/// "sourcetype":..,"index":..,"event":<the event>}` and a line break. `time` is the event's
/// `timestamp` as epoch seconds with up to six fractional digits (cut, never rounded); left
/// out when the event has none, so HEC uses the time it receives it.
pub fn hec_event(out: &mut Vec<u8>, event: &str, fields: &HecFields<'_>) {
    out.push(b'{');
    if let Some(time) = EventFields::parse(event)
        .timestamp
        .as_deref()
        .and_then(parse_timestamp)
    {
        out.extend_from_slice(b"\"time\":");
        push_epoch(out, time);
        out.push(b',');
    }
    for (key, value) in [
        ("host", fields.host),
        ("source", fields.source),
        ("sourcetype", Some(fields.sourcetype)),
        ("index", fields.index),
    ] {
        if let Some(value) = value {
            push_json_string(out, key);
            out.push(b':');
            push_json_string(out, value);
            out.push(b',');
        }
    }
    out.extend_from_slice(b"\"event\":");
    out.extend_from_slice(event.as_bytes());
    out.extend_from_slice(b"}\n");
}

/// The shape of the documents a `_bulk` request creates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Document {
    /// What Elastic's 1Password integration ingests: `{"@timestamp":..,"message":"<the event
    /// as a JSON string>"}`.
    Integration,
    /// The event's own fields at the top level, `@timestamp` first.
    Event,
}

/// One `create` of a `_bulk` request: the action line (`_id` = the event's uuid, so that a
/// document delivered twice is refused with 409 instead of duplicated) and the document.
pub fn bulk_create(out: &mut Vec<u8>, event: &str, index: &str, document: Document) {
    let fields = EventFields::parse(event);
    out.extend_from_slice(b"{\"create\":{\"_index\":");
    push_json_string(out, index);
    if let Some(uuid) = fields.uuid.as_deref() {
        out.extend_from_slice(b",\"_id\":");
        push_json_string(out, uuid);
    }
    out.extend_from_slice(b"}}\n");
    let timestamp = fields
        .timestamp
        .as_deref()
        .and_then(parse_timestamp)
        .map(rfc3339_nanos);
    let event = one_line(event);
    match document {
        Document::Integration => {
            out.push(b'{');
            if let Some(at) = &timestamp {
                out.extend_from_slice(b"\"@timestamp\":");
                push_json_string(out, at);
                out.push(b',');
            }
            out.extend_from_slice(b"\"message\":");
            push_json_string(out, &event);
            out.push(b'}');
        }
        Document::Event => match (&timestamp, event.strip_prefix('{')) {
            (Some(at), Some(rest)) => {
                out.extend_from_slice(b"{\"@timestamp\":");
                push_json_string(out, at);
                if !rest.trim_start().starts_with('}') {
                    out.push(b',');
                }
                out.extend_from_slice(rest.as_bytes());
            }
            _ => out.extend_from_slice(event.as_bytes()),
        },
    }
    out.push(b'\n');
}

/// `text` as a JSON string, escaped as serde_json escapes.
fn push_json_string(out: &mut Vec<u8>, text: &str) {
    // Writing a &str into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, text);
}

/// Epoch seconds with up to six fractional digits, cut, trailing zeros dropped.
fn push_epoch(out: &mut Vec<u8>, time: OffsetDateTime) {
    let mut text = time.unix_timestamp().to_string();
    let micros = time.microsecond();
    if micros > 0 {
        let _ = write!(text, ".{micros:06}");
        while text.ends_with('0') {
            text.pop();
        }
    }
    out.extend_from_slice(text.as_bytes());
}

/// RFC 3339 in UTC with the event's own precision (up to nanoseconds).
fn rfc3339_nanos(time: OffsetDateTime) -> String {
    time.to_offset(UtcOffset::UTC)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = r#"{"uuid":"A","timestamp":"2026-11-30T10:11:12.987654321-03:00","n":1.50}"#;
    const B: &str = r#"{"uuid":"B"}"#;

    fn text(out: Vec<u8>) -> String {
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn ndjson_keeps_events_byte_for_byte_one_per_line() {
        let mut out = Vec::new();
        ndjson(
            &mut out,
            &[A, "{\n \"uuid\": \"P\"\n}"],
            "acme",
            Stream::AuditEvents,
            false,
        );
        assert_eq!(text(out), format!("{A}\n{{\"uuid\":\"P\"}}\n"));
        let mut out = Vec::new();
        ndjson(&mut out, &[B], "ac\"me", Stream::ItemUsages, true);
        assert_eq!(
            text(out),
            "{\"account\":\"ac\\\"me\",\"stream\":\"itemusages\",\"event\":{\"uuid\":\"B\"}}\n"
        );
    }

    #[test]
    fn a_json_array_of_events() {
        let mut out = Vec::new();
        json_array(&mut out, &[A, B]);
        assert_eq!(text(out), format!("[{A},{B}]"));
        let mut out = Vec::new();
        json_array(&mut out, &[]);
        assert_eq!(text(out), "[]");
    }

    #[test]
    fn hec_events_carry_the_events_time_and_the_apps_sourcetype() {
        let mut out = Vec::new();
        let fields = HecFields {
            host: Some("loghost"),
            source: Some("op-events-forwarder"),
            sourcetype: default_sourcetype(Stream::SignInAttempts),
            index: None,
        };
        hec_event(&mut out, A, &fields);
        hec_event(&mut out, B, &fields);
        // 10:11:12.987654321 at -03:00 is 13:11:12.987654 UTC: cut to microseconds.
        assert_eq!(
            text(out),
            format!(
                "{{\"time\":1796044272.987654,\"host\":\"loghost\",\"source\":\"op-events-forwarder\",\
                 \"sourcetype\":\"1password:insights:signin_attempts\",\"event\":{A}}}\n\
                 {{\"host\":\"loghost\",\"source\":\"op-events-forwarder\",\
                 \"sourcetype\":\"1password:insights:signin_attempts\",\"event\":{B}}}\n"
            )
        );
        let mut out = Vec::new();
        hec_event(
            &mut out,
            r#"{"timestamp":"2026-11-30T13:11:12Z"}"#,
            &HecFields {
                host: None,
                source: None,
                sourcetype: "st",
                index: Some("main"),
            },
        );
        assert_eq!(
            text(out),
            "{\"time\":1796044272,\"sourcetype\":\"st\",\"index\":\"main\",\"event\":{\"timestamp\":\"2026-11-30T13:11:12Z\"}}\n"
        );
    }

    #[test]
    fn bulk_creates_use_the_uuid_as_id_in_both_document_shapes() {
        let index = integration_data_stream(Stream::AuditEvents, "default");
        assert_eq!(index, "logs-1password.audit_events-default");
        let mut out = Vec::new();
        bulk_create(&mut out, A, &index, Document::Integration);
        let lines: Vec<&str> = std::str::from_utf8(&out).unwrap().lines().collect();
        assert_eq!(
            lines[0],
            r#"{"create":{"_index":"logs-1password.audit_events-default","_id":"A"}}"#
        );
        let doc: serde_json::Value = serde_json::from_str(lines[1]).unwrap();
        assert_eq!(doc["@timestamp"], "2026-11-30T13:11:12.987654321Z");
        assert_eq!(doc["message"], A, "the event as received, as a string");

        let mut out = Vec::new();
        bulk_create(&mut out, A, "onepassword", Document::Event);
        bulk_create(&mut out, B, "onepassword", Document::Event);
        assert_eq!(
            text(out),
            format!(
                "{{\"create\":{{\"_index\":\"onepassword\",\"_id\":\"A\"}}}}\n\
                 {{\"@timestamp\":\"2026-11-30T13:11:12.987654321Z\",{}\n\
                 {{\"create\":{{\"_index\":\"onepassword\",\"_id\":\"B\"}}}}\n{B}\n",
                &A[1..]
            )
        );
        let mut out = Vec::new();
        bulk_create(
            &mut out,
            r#"{ "timestamp" : "2026-11-30T13:11:12Z" }"#,
            "i",
            Document::Event,
        );
        let doc = text(out);
        let doc: serde_json::Value = serde_json::from_str(doc.lines().nth(1).unwrap()).unwrap();
        assert_eq!(doc["@timestamp"], "2026-11-30T13:11:12Z");
    }
}
