//! Syslog messages, pure: RFC 5424 and RFC 3164 formatting, and RFC 6587 framing.
//!
//! MSG is always the event JSON exactly as received. Only the event's `uuid`, `timestamp`
//! and (for sign-in attempts) `category` are read from it, with borrowed fields; nothing is
//! re-serialized.
//!
//! Header fields are sanitised as RFC 5424 §6 requires: HOSTNAME, APP-NAME, PROCID and MSGID
//! are printable US-ASCII (33 to 126) of at most 255, 48, 128 and 32 characters. Any other
//! character becomes `_`, longer values are cut at the limit, and an empty value is the
//! NILVALUE `-`. RFC 3164 (legacy) carries no year, no time zone (we send UTC) and no
//! fractions of a second; its TAG is at most 32 characters from `A-Za-z0-9_.-`.

use std::borrow::Cow;
use std::io::Write as _;

use time::{OffsetDateTime, UtcOffset};

use super::config::{SyslogFormat, SyslogFraming, SyslogSinkConfig};
pub use crate::event::{EventFields, parse_timestamp};
use crate::stream::Stream;

/// The UTF-8 byte order mark RFC 5424 §6.4 allows before MSG.
const BOM: &[u8] = b"\xEF\xBB\xBF";

/// How messages are built; everything that does not change from one event to the next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageSettings {
    pub format: SyslogFormat,
    pub facility: u8,
    pub severity: u8,
    pub stream_severity: Vec<(Stream, u8)>,
    pub failed_signin_severity: Option<u8>,
    /// Already sanitised for the format.
    pub hostname: String,
    /// Already sanitised: APP-NAME for RFC 5424, TAG for RFC 3164.
    pub app_name: String,
    /// Already sanitised.
    pub procid: String,
    pub sd_id: Option<String>,
    pub bom: bool,
}

impl MessageSettings {
    /// The settings of a sink; `machine_hostname` and `pid` fill in what the config leaves out.
    pub fn new(config: &SyslogSinkConfig, machine_hostname: &str, pid: u32) -> MessageSettings {
        let hostname = config.hostname.as_deref().unwrap_or(machine_hostname);
        let procid = config.procid.clone().unwrap_or_else(|| pid.to_string());
        let (hostname, app_name) = match config.format {
            SyslogFormat::Rfc5424 => (
                header_field(hostname, 255).into_owned(),
                header_field(&config.app_name, 48).into_owned(),
            ),
            SyslogFormat::Rfc3164 => (
                header_field(hostname, 255).into_owned(),
                tag_3164(&config.app_name),
            ),
        };
        MessageSettings {
            format: config.format,
            facility: config.facility,
            severity: config.severity,
            stream_severity: config.stream_severity.clone(),
            failed_signin_severity: config.failed_signin_severity,
            hostname,
            app_name,
            procid: header_field(&procid, 128).into_owned(),
            sd_id: config.sd_id.clone(),
            bom: config.bom,
        }
    }

    /// The severity of one event: a failed sign-in's, the stream's, or the sink's.
    pub fn severity_for(&self, stream: Stream, fields: &EventFields<'_>) -> u8 {
        if stream == Stream::SignInAttempts
            && let Some(failed) = self.failed_signin_severity
            && fields.category.as_deref().is_some_and(|c| c != "success")
        {
            return failed;
        }
        self.stream_severity
            .iter()
            .find(|(s, _)| *s == stream)
            .map_or(self.severity, |(_, severity)| *severity)
    }

    /// Appends one message (without framing) to `out`. `received` is the time the page was
    /// fetched, used when the event has no usable `timestamp`.
    pub fn write_message(
        &self,
        out: &mut Vec<u8>,
        account: &str,
        stream: Stream,
        event: &str,
        received: OffsetDateTime,
    ) {
        let fields = EventFields::parse(event);
        let pri = u16::from(self.facility) * 8 + u16::from(self.severity_for(stream, &fields));
        let time = fields
            .timestamp
            .as_deref()
            .and_then(parse_timestamp)
            .unwrap_or(received);
        match self.format {
            SyslogFormat::Rfc5424 => {
                let _ = write!(out, "<{pri}>1 ");
                write_timestamp_5424(out, time);
                out.push(b' ');
                for field in [&self.hostname, &self.app_name, &self.procid] {
                    out.extend_from_slice(field.as_bytes());
                    out.push(b' ');
                }
                out.extend_from_slice(header_field(stream.as_str(), 32).as_bytes());
                out.push(b' ');
                match &self.sd_id {
                    Some(sd_id) => {
                        let _ = write!(out, "[{sd_id} account=\"");
                        escape_param_value(out, account);
                        out.extend_from_slice(b"\" stream=\"");
                        escape_param_value(out, stream.as_str());
                        out.push(b'"');
                        if let Some(uuid) = &fields.uuid {
                            out.extend_from_slice(b" uuid=\"");
                            escape_param_value(out, uuid);
                            out.push(b'"');
                        }
                        out.push(b']');
                    }
                    None => out.push(b'-'),
                }
                out.push(b' ');
                if self.bom {
                    out.extend_from_slice(BOM);
                }
            }
            SyslogFormat::Rfc3164 => {
                let _ = write!(out, "<{pri}>");
                write_timestamp_3164(out, time);
                out.push(b' ');
                out.extend_from_slice(self.hostname.as_bytes());
                out.push(b' ');
                out.extend_from_slice(self.app_name.as_bytes());
                if self.procid != "-" {
                    let _ = write!(out, "[{}]", self.procid);
                }
                out.extend_from_slice(b": ");
            }
        }
        out.extend_from_slice(event.as_bytes());
    }
}

/// `YYYY-MM-DDThh:mm:ss[.ffffff]Z`: UTC, the fraction truncated (never rounded) to
/// microseconds, trailing zeros dropped (RFC 5424 TIME-SECFRAC allows at most 6 digits).
pub fn write_timestamp_5424(out: &mut Vec<u8>, time: OffsetDateTime) {
    let utc = time.to_offset(UtcOffset::UTC);
    let _ = write!(
        out,
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
        utc.year(),
        u8::from(utc.month()),
        utc.day(),
        utc.hour(),
        utc.minute(),
        utc.second()
    );
    let mut micros = utc.microsecond();
    if micros > 0 {
        let mut digits = 6;
        while micros.is_multiple_of(10) {
            micros /= 10;
            digits -= 1;
        }
        let _ = write!(out, ".{micros:0digits$}");
    }
    out.push(b'Z');
}

/// `Mmm dd hh:mm:ss` in UTC, the day padded with a space (RFC 3164 §4.1.2).
pub fn write_timestamp_3164(out: &mut Vec<u8>, time: OffsetDateTime) {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let utc = time.to_offset(UtcOffset::UTC);
    let _ = write!(
        out,
        "{} {:>2} {:02}:{:02}:{:02}",
        MONTHS[usize::from(u8::from(utc.month())) - 1],
        utc.day(),
        utc.hour(),
        utc.minute(),
        utc.second()
    );
}

/// A header field per RFC 5424: characters outside printable US-ASCII become `_`, at most
/// `max` characters, `-` when empty.
pub fn header_field(value: &str, max: usize) -> Cow<'_, str> {
    let clean =
        value.len() <= max && !value.is_empty() && value.bytes().all(|b| (33..=126).contains(&b));
    if clean {
        return value.into();
    }
    let sanitised: String = value
        .chars()
        .map(|c| if ('!'..='~').contains(&c) { c } else { '_' })
        .take(max)
        .collect();
    if sanitised.is_empty() {
        "-".into()
    } else {
        sanitised.into()
    }
}

/// An RFC 3164 TAG: at most 32 characters from `A-Za-z0-9_.-`, others become `_`.
pub fn tag_3164(value: &str) -> String {
    let tag: String = value
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') {
                c
            } else {
                '_'
            }
        })
        .take(32)
        .collect();
    if tag.is_empty() { "-".to_owned() } else { tag }
}

/// Escapes a PARAM-VALUE per RFC 5424 §6.3.3: `"`, `\` and `]` get a backslash.
pub fn escape_param_value(out: &mut Vec<u8>, value: &str) {
    for byte in value.bytes() {
        if matches!(byte, b'"' | b'\\' | b']') {
            out.push(b'\\');
        }
        out.push(byte);
    }
}

/// Appends `message` to `out` framed for a stream transport (RFC 6587): `LEN SP MSG` for
/// octet counting, `MSG LF` for LF framing. For LF framing the caller passes the event
/// through [`crate::sink::one_line`] first (a header never holds a line break).
pub fn write_framed(out: &mut Vec<u8>, framing: SyslogFraming, message: &[u8]) {
    match framing {
        SyslogFraming::OctetCounting => {
            let _ = write!(out, "{} ", message.len());
            out.extend_from_slice(message);
        }
        SyslogFraming::Lf => {
            out.extend_from_slice(message);
            out.push(b'\n');
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use time::macros::datetime;

    use super::*;
    use crate::sink::syslog::config::{SyslogTlsConfig, SyslogTransport};

    fn config(format: SyslogFormat) -> SyslogSinkConfig {
        SyslogSinkConfig {
            address: "127.0.0.1:514".into(),
            host: "127.0.0.1".into(),
            port: 514,
            transport: SyslogTransport::Tcp,
            format,
            framing: SyslogFraming::OctetCounting,
            facility: 10,
            severity: 6,
            stream_severity: Vec::new(),
            failed_signin_severity: None,
            hostname: None,
            app_name: "op-events-forwarder".into(),
            procid: None,
            sd_id: None,
            bom: false,
            max_message_bytes: None,
            timeout: Duration::from_secs(30),
            tls: SyslogTlsConfig::default(),
        }
    }

    const RECEIVED: OffsetDateTime = datetime!(2026-11-21 23:59:59.5 UTC);

    fn message(settings: &MessageSettings, stream: Stream, event: &str) -> String {
        let mut out = Vec::new();
        settings.write_message(&mut out, "acme", stream, event, RECEIVED);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn rfc5424_defaults() {
        let settings = MessageSettings::new(&config(SyslogFormat::Rfc5424), "loghost", 4242);
        let event =
            r#"{"uuid":"56YE2TYN","timestamp":"2026-11-20T10:11:12.123456789Z","x":"é \"q\"\n"}"#;
        // authpriv (10) * 8 + info (6) = 86.
        assert_eq!(
            message(&settings, Stream::AuditEvents, event),
            format!(
                "<86>1 2026-11-20T10:11:12.123456Z loghost op-events-forwarder 4242 auditevents - {event}"
            )
        );
    }

    #[test]
    fn fractions_are_truncated_never_rounded() {
        let check = |timestamp: &str, want: &str| {
            let time = parse_timestamp(timestamp).unwrap();
            let mut out = Vec::new();
            write_timestamp_5424(&mut out, time);
            assert_eq!(String::from_utf8(out).unwrap(), want, "{timestamp}");
        };
        check(
            "2026-12-31T23:59:59.999999999Z",
            "2026-12-31T23:59:59.999999Z",
        );
        check(
            "2026-12-31T23:59:59.9999999Z",
            "2026-12-31T23:59:59.999999Z",
        );
        check("2026-01-02T03:04:05.1Z", "2026-01-02T03:04:05.1Z");
        check("2026-01-02T03:04:05.120Z", "2026-01-02T03:04:05.12Z");
        check("2026-01-02T03:04:05.000000900Z", "2026-01-02T03:04:05Z");
        check("2026-01-02T03:04:05Z", "2026-01-02T03:04:05Z");
        check("2026-01-02T03:04:05.000001Z", "2026-01-02T03:04:05.000001Z");
        // Offsets are converted to UTC, across a day and a year.
        check("2027-01-01T01:30:00.5+02:00", "2026-12-31T23:30:00.5Z");
        check("2026-06-11T16:32:50-03:00", "2026-06-11T19:32:50Z");
    }

    #[test]
    fn a_missing_or_unparsable_timestamp_falls_back_to_the_receive_time() {
        let settings = MessageSettings::new(&config(SyslogFormat::Rfc5424), "h", 1);
        for event in [
            r#"{"uuid":"A"}"#,
            r#"{"uuid":"A","timestamp":"yesterday"}"#,
            r#"{"uuid":"A","timestamp":1700000000}"#,
            r#"{"uuid":"A","timestamp":null}"#,
            r#"[1,2]"#,
        ] {
            assert_eq!(
                message(&settings, Stream::ItemUsages, event),
                format!(
                    "<86>1 2026-11-21T23:59:59.5Z h op-events-forwarder 1 itemusages - {event}"
                ),
            );
        }
    }

    #[test]
    fn structured_data_is_escaped() {
        let mut config = config(SyslogFormat::Rfc5424);
        config.sd_id = Some("op-events@32473".into());
        config.bom = true;
        let settings = MessageSettings::new(&config, "h", 1);
        let event = r#"{"uuid":"a\"b]c\\d","timestamp":"2026-01-02T03:04:05Z"}"#;
        let mut out = Vec::new();
        settings.write_message(&mut out, "ac]me", Stream::SignInAttempts, event, RECEIVED);
        let mut want = br#"<86>1 2026-01-02T03:04:05Z h op-events-forwarder 1 signinattempts [op-events@32473 account="ac\]me" stream="signinattempts" uuid="a\"b\]c\\d"] "#.to_vec();
        want.extend_from_slice(BOM);
        want.extend_from_slice(event.as_bytes());
        assert_eq!(
            String::from_utf8(out).unwrap(),
            String::from_utf8(want).unwrap()
        );

        // Without a uuid the element still names account and stream.
        let event = r#"{"timestamp":"2026-01-02T03:04:05Z"}"#;
        let mut out = Vec::new();
        settings.write_message(&mut out, "acme", Stream::AuditEvents, event, RECEIVED);
        assert!(
            String::from_utf8(out)
                .unwrap()
                .contains(r#" [op-events@32473 account="acme" stream="auditevents"] "#)
        );
    }

    #[test]
    fn header_fields_are_sanitised_and_truncated() {
        assert_eq!(header_field("loghost.example", 255), "loghost.example");
        assert_eq!(header_field("my host", 255), "my_host");
        assert_eq!(header_field("hôte", 255), "h_te");
        assert_eq!(header_field("", 48), "-");
        assert_eq!(header_field(&"a".repeat(300), 255), "a".repeat(255));
        assert_eq!(header_field("signinattempts", 32), "signinattempts");
        let mut config = config(SyslogFormat::Rfc5424);
        config.app_name = "x".repeat(60);
        config.procid = Some("p".repeat(200));
        let settings = MessageSettings::new(&config, "bad\thost", 1);
        assert_eq!(settings.hostname, "bad_host");
        assert_eq!(settings.app_name, "x".repeat(48));
        assert_eq!(settings.procid, "p".repeat(128));
        assert_eq!(tag_3164("op-events forwarder:1"), "op-events_forwarder_1");
        assert_eq!(tag_3164(&"t".repeat(40)), "t".repeat(32));
    }

    #[test]
    fn severities() {
        let mut config = config(SyslogFormat::Rfc5424);
        config.facility = 13;
        config.severity = 5;
        config.stream_severity = vec![(Stream::ItemUsages, 7)];
        config.failed_signin_severity = Some(4);
        let settings = MessageSettings::new(&config, "h", 1);
        let pri = |stream: Stream, event: &str| {
            message(&settings, stream, event)
                .split('>')
                .next()
                .unwrap()
                .to_owned()
        };
        assert_eq!(pri(Stream::AuditEvents, "{}"), "<109");
        assert_eq!(pri(Stream::ItemUsages, "{}"), "<111");
        assert_eq!(
            pri(Stream::SignInAttempts, r#"{"category":"success"}"#),
            "<109"
        );
        assert_eq!(
            pri(
                Stream::SignInAttempts,
                r#"{"category":"credentials_failed"}"#
            ),
            "<108"
        );
        assert_eq!(
            pri(Stream::SignInAttempts, r#"{"category":"firewall_failed"}"#),
            "<108"
        );
        // Only sign-in attempts are sign-ins.
        assert_eq!(
            pri(Stream::AuditEvents, r#"{"category":"credentials_failed"}"#),
            "<109"
        );
    }

    #[test]
    fn rfc3164() {
        let mut config = config(SyslogFormat::Rfc3164);
        config.hostname = Some("loghost".into());
        let settings = MessageSettings::new(&config, "ignored", 77);
        let event = r#"{"uuid":"A","timestamp":"2026-11-01T04:05:06.999999999+00:00"}"#;
        assert_eq!(
            message(&settings, Stream::AuditEvents, event),
            format!("<86>Nov  1 04:05:06 loghost op-events-forwarder[77]: {event}")
        );
        config.procid = Some("-".into());
        let settings = MessageSettings::new(&config, "ignored", 77);
        let event = r#"{"timestamp":"2026-12-31T23:59:59.999999999Z"}"#;
        assert_eq!(
            message(&settings, Stream::AuditEvents, event),
            format!("<86>Dec 31 23:59:59 loghost op-events-forwarder: {event}")
        );
    }

    #[test]
    fn framing() {
        let mut out = Vec::new();
        write_framed(
            &mut out,
            SyslogFraming::OctetCounting,
            "<86>1 - é".as_bytes(),
        );
        write_framed(&mut out, SyslogFraming::OctetCounting, b"x\ny");
        assert_eq!(out, "10 <86>1 - é3 x\ny".as_bytes());

        let mut out = Vec::new();
        write_framed(&mut out, SyslogFraming::Lf, b"<86>1 - {\"a\":\"b\\nc\"}");
        write_framed(&mut out, SyslogFraming::Lf, b"<86>1 - {}");
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "<86>1 - {\"a\":\"b\\nc\"}\n<86>1 - {}\n"
        );
    }
}
