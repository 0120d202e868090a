//! A syslog sink's config: the keys of its `[[sinks]]` table besides `type` and `name`, read
//! and validated (address, transport, format and framing, facility and severities, header
//! fields, structured data, sizes, timeouts, TLS).

use std::fmt;
use std::net::Ipv6Addr;
use std::time::Duration;

use serde::Deserialize;
use serde::de;

use crate::config::{ConfigErrorKind, Problem, deserialize, int_in, join, quote, unknown_value};
use crate::sink::tls::{RawTls, SinkTlsConfig, host_valid};
use crate::stream::Stream;

/// The settings of a syslog sink (`type = "syslog"`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyslogSinkConfig {
    /// The receiver as written (`host:port`, `[v6]:port`), for logs and errors.
    pub address: String,
    /// The host part of `address`: a name, an IPv4 or an IPv6 address (without brackets).
    pub host: String,
    /// The port part of `address`, 1 to 65535.
    pub port: u16,
    /// `transport`: how messages travel.
    pub transport: SyslogTransport,
    /// `format`: the message format.
    pub format: SyslogFormat,
    /// `framing`: how messages are delimited on TCP and TLS (RFC 6587); unused for UDP.
    pub framing: SyslogFraming,
    /// `facility`, 0 to 23 (default 10, authpriv).
    pub facility: u8,
    /// `severity`, 0 to 7 (default 6, info).
    pub severity: u8,
    /// `stream_severity`: a severity per stream, overriding `severity`.
    pub stream_severity: Vec<(Stream, u8)>,
    /// `failed_signin_severity`: the severity of sign-in attempts whose category is not
    /// `success` (overrides `severity` and `stream_severity` for those events).
    pub failed_signin_severity: Option<u8>,
    /// `hostname`: the HOSTNAME field; `None` means the machine's name.
    pub hostname: Option<String>,
    /// `app_name`: the APP-NAME field (the TAG of RFC 3164).
    pub app_name: String,
    /// `procid`: the PROCID field; `None` means the process id.
    pub procid: Option<String>,
    /// `structured_data = true`: the SD-ID of the element with account, stream and uuid.
    pub sd_id: Option<String>,
    /// `bom`: a UTF-8 byte order mark before MSG (RFC 5424 only).
    pub bom: bool,
    /// `max_message_bytes`: the largest message sent; larger ones are rejected, never cut.
    /// Default 8192 for UDP, no limit for TCP and TLS.
    pub max_message_bytes: Option<usize>,
    /// `timeout_secs`: the limit of one connect, handshake or batch write.
    pub timeout: Duration,
    /// TLS settings; used only with `transport = "tls"`.
    pub tls: SyslogTlsConfig,
}

/// The `transport` of a syslog sink.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyslogTransport {
    /// One message per datagram.
    Udp,
    /// A persistent TCP connection.
    Tcp,
    /// A persistent TLS connection (RFC 5425).
    Tls,
    /// A persistent RELP session: every message acknowledged by the receiver.
    Relp,
}

/// The `format` of a syslog sink.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyslogFormat {
    /// RFC 5424, the structured format.
    Rfc5424,
    /// RFC 3164, the legacy BSD format.
    Rfc3164,
}

/// The `framing` of a syslog sink on TCP and TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyslogFraming {
    /// RFC 6587 octet counting: `LEN SP MSG`.
    OctetCounting,
    /// One message per line (line breaks between JSON tokens are dropped).
    Lf,
}

/// The TLS settings of a syslog sink.
pub type SyslogTlsConfig = SinkTlsConfig;

/// The syslog facilities by name, in numeric order (RFC 5424 table 1, with the names rsyslog
/// and syslog(3) use).
pub const SYSLOG_FACILITIES: [&str; 24] = [
    "kern",
    "user",
    "mail",
    "daemon",
    "auth",
    "syslog",
    "lpr",
    "news",
    "uucp",
    "cron",
    "authpriv",
    "ftp",
    "ntp",
    "security",
    "console",
    "solaris-cron",
    "local0",
    "local1",
    "local2",
    "local3",
    "local4",
    "local5",
    "local6",
    "local7",
];

/// The syslog severities by name, in numeric order (RFC 5424 table 2).
pub const SYSLOG_SEVERITIES: [&str; 8] = [
    "emerg", "alert", "crit", "err", "warning", "notice", "info", "debug",
];

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSyslogSink {
    address: String,
    transport: String,
    #[serde(default = "default_syslog_format")]
    format: String,
    framing: Option<String>,
    #[serde(default = "default_syslog_facility")]
    facility: RawLevel,
    #[serde(default = "default_syslog_severity")]
    severity: RawLevel,
    #[serde(default)]
    stream_severity: std::collections::BTreeMap<String, RawLevel>,
    failed_signin_severity: Option<RawLevel>,
    hostname: Option<String>,
    app_name: Option<String>,
    procid: Option<String>,
    #[serde(default)]
    structured_data: bool,
    sd_id: Option<String>,
    #[serde(default)]
    bom: bool,
    max_message_bytes: Option<i64>,
    #[serde(default = "default_syslog_timeout_secs")]
    timeout_secs: i64,
    ca_file: Option<String>,
    server_name: Option<String>,
    client_cert: Option<String>,
    client_key: Option<String>,
    #[serde(default)]
    tls_insecure_skip_verify: bool,
}

/// A facility or severity: a name or a number (checked in phase two).
#[derive(Debug, Clone)]
enum RawLevel {
    Name(String),
    Number(i64),
}

impl<'de> Deserialize<'de> for RawLevel {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<RawLevel, D::Error> {
        struct LevelVisitor;
        impl de::Visitor<'_> for LevelVisitor {
            type Value = RawLevel;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a name or a number")
            }
            fn visit_str<E: de::Error>(self, text: &str) -> Result<RawLevel, E> {
                // Environment overrides arrive as strings, numbers included.
                Ok(match text.trim().parse::<i64>() {
                    Ok(number) => RawLevel::Number(number),
                    Err(_) => RawLevel::Name(text.to_owned()),
                })
            }
            fn visit_i64<E: de::Error>(self, number: i64) -> Result<RawLevel, E> {
                Ok(RawLevel::Number(number))
            }
            fn visit_u64<E: de::Error>(self, number: u64) -> Result<RawLevel, E> {
                Ok(RawLevel::Number(i64::try_from(number).unwrap_or(i64::MAX)))
            }
        }
        deserializer.deserialize_any(LevelVisitor)
    }
}

fn default_syslog_format() -> String {
    "rfc5424".to_owned()
}

fn default_syslog_facility() -> RawLevel {
    RawLevel::Name("authpriv".to_owned())
}

fn default_syslog_severity() -> RawLevel {
    RawLevel::Name("info".to_owned())
}

fn default_syslog_timeout_secs() -> i64 {
    30
}

/// The most a message may be: beyond what any receiver takes, and far beyond a UDP datagram.
const SYSLOG_MAX_MESSAGE_BYTES_MAX: i64 = 16 * 1024 * 1024;
/// The largest UDP payload over IPv4 (65,535 minus the IP and UDP headers).
const UDP_MAX_PAYLOAD: i64 = 65_507;
/// The default `max_message_bytes` for UDP (receivers' defaults vary: rsyslog 8k, syslog-ng 64k).
const UDP_DEFAULT_MAX_MESSAGE_BYTES: usize = 8192;
/// Ten minutes: a connect or a batch write that takes longer is stuck.
const SYSLOG_TIMEOUT_SECS_MAX: i64 = 600;

impl SyslogSinkConfig {
    /// Reads and validates the keys of a syslog sink's `[[sinks]]` table at `key`.
    pub(crate) fn parse(key: &str, table: toml::Table) -> Result<SyslogSinkConfig, Problem> {
        SyslogSinkConfig::from_raw(key, deserialize(key, &toml::Value::Table(table))?)
    }

    fn from_raw(key: &str, raw: RawSyslogSink) -> Result<SyslogSinkConfig, Problem> {
        let at = |name: &str| format!("{key}.{name}");
        let (host, port) = syslog_address(&raw.address).ok_or_else(|| {
            Problem::invalid(
                &at("address"),
                "host:port (a name, an IPv4 address or a bracketed IPv6 address, and a port from 1 to 65535)",
                &quote(&raw.address),
            )
        })?;
        let transport = match raw.transport.as_str() {
            "udp" => SyslogTransport::Udp,
            "tcp" => SyslogTransport::Tcp,
            "tls" => SyslogTransport::Tls,
            "relp" => SyslogTransport::Relp,
            other => {
                return Err(unknown_value(
                    &at("transport"),
                    "transport",
                    other,
                    &["udp", "tcp", "tls", "relp"],
                ));
            }
        };
        let format = match raw.format.as_str() {
            "rfc5424" => SyslogFormat::Rfc5424,
            "rfc3164" => SyslogFormat::Rfc3164,
            other => {
                return Err(unknown_value(
                    &at("format"),
                    "format",
                    other,
                    &["rfc5424", "rfc3164"],
                ));
            }
        };
        let framing = match raw.framing.as_deref() {
            None | Some("octet-counting") => SyslogFraming::OctetCounting,
            Some("lf") => SyslogFraming::Lf,
            Some(other) => {
                return Err(unknown_value(
                    &at("framing"),
                    "framing",
                    other,
                    &["octet-counting", "lf"],
                ));
            }
        };
        if let Some(framing) = &raw.framing {
            let why = match transport {
                SyslogTransport::Udp => {
                    Some("no framing with transport = \"udp\" (one message per datagram)")
                }
                SyslogTransport::Relp => {
                    Some("no framing with transport = \"relp\" (RELP frames each message itself)")
                }
                SyslogTransport::Tcp | SyslogTransport::Tls => None,
            };
            if let Some(why) = why {
                return Err(Problem::invalid(&at("framing"), why, &quote(framing)));
            }
        }
        let facility = level(&at("facility"), &raw.facility, &SYSLOG_FACILITIES)?;
        let severity = level(&at("severity"), &raw.severity, &SYSLOG_SEVERITIES)?;
        let mut stream_severity = Vec::with_capacity(raw.stream_severity.len());
        for (name, value) in &raw.stream_severity {
            let stream_key = join(&at("stream_severity"), name);
            let stream: Stream = name.parse().map_err(|_| {
                Problem::new(
                    Some(stream_key.clone()),
                    ConfigErrorKind::UnknownValue {
                        what: "stream".to_owned(),
                        value: name.clone(),
                        expected: Stream::KNOWN
                            .iter()
                            .map(|s| s.as_str().to_owned())
                            .collect(),
                    },
                )
            })?;
            stream_severity.push((stream, level(&stream_key, value, &SYSLOG_SEVERITIES)?));
        }
        let failed_signin_severity = raw
            .failed_signin_severity
            .as_ref()
            .map(|value| level(&at("failed_signin_severity"), value, &SYSLOG_SEVERITIES))
            .transpose()?;
        let hostname = raw
            .hostname
            .map(|value| header_field(&at("hostname"), value, 255))
            .transpose()?;
        let app_name = match raw.app_name {
            Some(value) => header_field(&at("app_name"), value, 48)?,
            None => "op-events-forwarder".to_owned(),
        };
        let procid = raw
            .procid
            .map(|value| header_field(&at("procid"), value, 128))
            .transpose()?;
        let sd_id = match (raw.structured_data, raw.sd_id) {
            (true, Some(sd_id)) => Some(sd_id_value(&at("sd_id"), sd_id)?),
            (true, None) => Some(DEFAULT_SD_ID.to_owned()),
            (false, Some(sd_id)) => {
                return Err(Problem::invalid(
                    &at("sd_id"),
                    "structured_data = true alongside it (the SD-ID names the structured data element)",
                    &quote(&sd_id),
                ));
            }
            (false, None) => None,
        };
        if raw.bom && format == SyslogFormat::Rfc3164 {
            return Err(Problem::invalid(
                &at("bom"),
                "false with format = \"rfc3164\" (the byte order mark is an RFC 5424 feature)",
                "true",
            ));
        }
        let max_message_bytes = match (raw.max_message_bytes, transport) {
            (Some(bytes), SyslogTransport::Udp) => Some(
                usize::try_from(int_in(
                    &at("max_message_bytes"),
                    bytes,
                    480,
                    UDP_MAX_PAYLOAD,
                )?)
                .unwrap_or(0),
            ),
            (Some(bytes), _) => Some(
                usize::try_from(int_in(
                    &at("max_message_bytes"),
                    bytes,
                    480,
                    SYSLOG_MAX_MESSAGE_BYTES_MAX,
                )?)
                .unwrap_or(0),
            ),
            (None, SyslogTransport::Udp) => Some(UDP_DEFAULT_MAX_MESSAGE_BYTES),
            (None, _) => None,
        };
        let timeout_secs = int_in(
            &at("timeout_secs"),
            raw.timeout_secs,
            1,
            SYSLOG_TIMEOUT_SECS_MAX,
        )?;

        let raw_tls = RawTls {
            ca_file: raw.ca_file,
            server_name: raw.server_name,
            client_cert: raw.client_cert,
            client_key: raw.client_key,
            insecure_skip_verify: raw.tls_insecure_skip_verify,
        };
        if transport != SyslogTransport::Tls
            && let Some(name) = raw_tls.first_set()
        {
            return Err(Problem::invalid(
                &at(name),
                "no TLS setting unless transport = \"tls\"",
                &format!("transport = {}", quote(&raw.transport)),
            ));
        }
        let tls = SinkTlsConfig::from_raw(key, raw_tls)?;
        Ok(SyslogSinkConfig {
            address: raw.address,
            host,
            port,
            transport,
            format,
            framing,
            facility,
            severity,
            stream_severity,
            failed_signin_severity,
            hostname,
            app_name,
            procid,
            sd_id,
            bom: raw.bom,
            max_message_bytes,
            timeout: Duration::from_secs(timeout_secs.unsigned_abs()),
            tls,
        })
    }
}

/// The SD-ID used when `structured_data = true` and no `sd_id` is given. 32473 is the private
/// enterprise number reserved for examples (RFC 5612); set your own with `sd_id`.
pub const DEFAULT_SD_ID: &str = "op-events@32473";

impl SyslogSinkConfig {
    /// Reads the TLS files the sink names as the sink will at start: the CA file, and the client
    /// certificate and key, which must belong together (for `config::load` only).
    pub(crate) fn check_files(&self, key: &str) -> Result<(), Problem> {
        self.tls.check_files(key)
    }
}

/// A facility or severity by name or number; `names` are the valid names in numeric order.
fn level(key: &str, value: &RawLevel, names: &[&str]) -> Result<u8, Problem> {
    let max = names.len() - 1;
    match value {
        RawLevel::Number(number) => {
            let number = int_in(key, *number, 0, max as i64)?;
            Ok(u8::try_from(number).unwrap_or(0))
        }
        RawLevel::Name(name) => names
            .iter()
            .position(|candidate| candidate == name)
            .map(|index| u8::try_from(index).unwrap_or(0))
            .ok_or_else(|| {
                let mut expected: Vec<&str> = names.to_vec();
                let numbers = format!("a number from 0 to {max}");
                expected.push(&numbers);
                unknown_value(key, "name", name, &expected)
            }),
    }
}

/// A configured RFC 5424 header field: 1 to `max` printable US-ASCII characters, no spaces.
fn header_field(key: &str, value: String, max: usize) -> Result<String, Problem> {
    let valid = (1..=max).contains(&value.len()) && value.bytes().all(|b| (33..=126).contains(&b));
    if valid {
        Ok(value)
    } else {
        Err(Problem::invalid(
            key,
            &format!("1 to {max} printable US-ASCII characters without spaces"),
            &quote(&value),
        ))
    }
}

/// An SD-ID of our own: `name@number` (RFC 5424 §7.2.2), at most 32 characters, without `=`,
/// space, `]` or `"`.
fn sd_id_value(key: &str, sd_id: String) -> Result<String, Problem> {
    let printable = (1..=32).contains(&sd_id.len())
        && sd_id
            .bytes()
            .all(|b| (33..=126).contains(&b) && !matches!(b, b'=' | b']' | b'"'));
    let enterprise = sd_id.split_once('@').is_some_and(|(name, number)| {
        !name.is_empty()
            && !number.is_empty()
            && !number.contains('@')
            && number
                .split('.')
                .all(|part| !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit()))
    });
    if printable && enterprise {
        Ok(sd_id)
    } else {
        Err(Problem::invalid(
            key,
            "an SD-ID of the form name@<private enterprise number>, at most 32 printable US-ASCII characters \
             without =, ], \" or spaces (like op-events@32473)",
            &quote(&sd_id),
        ))
    }
}

/// Splits `host:port` or `[v6]:port`; `None` when malformed.
fn syslog_address(address: &str) -> Option<(String, u16)> {
    let (host, port) = match address.strip_prefix('[') {
        Some(bracketed) => {
            let (v6, port) = bracketed.split_once("]:")?;
            v6.parse::<Ipv6Addr>().ok()?;
            (v6, port)
        }
        None => {
            let (host, port) = address.rsplit_once(':')?;
            if host.contains(':') || !host_valid(host) {
                return None;
            }
            (host, port)
        }
    };
    if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let port = port.parse::<u16>().ok().filter(|port| *port != 0)?;
    Some((host.to_owned(), port))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::config::SinkKind;
    use crate::config::testing::*;

    #[test]
    fn shipped_syslog_example_parses() {
        let config = shipped_example_with("# --- A syslog sink");
        let SinkKind::Syslog(syslog) = &config.sinks[0].kind else {
            panic!("a syslog sink")
        };
        assert_eq!(config.sinks[0].name, "siem");
        assert_eq!(syslog.address, "siem.example.net:6514");
        assert_eq!(syslog.transport, SyslogTransport::Tls);
        assert_eq!(syslog.failed_signin_severity, Some(4));
        assert_eq!(syslog.procid.as_deref(), Some("-"));
        assert_eq!(syslog.sd_id.as_deref(), Some(DEFAULT_SD_ID));
        assert!(syslog.tls.client_auth.is_some());
    }

    const SYSLOG_KEYS: &str = "type, name, address, transport, format, framing, facility, severity, \
        stream_severity, failed_signin_severity, hostname, app_name, procid, structured_data, sd_id, bom, \
        max_message_bytes, timeout_secs, ca_file, server_name, client_cert, client_key, tls_insecure_skip_verify";

    fn syslog(lines: &str) -> SyslogSinkConfig {
        let config = parse(&with_syslog(lines)).unwrap();
        let SinkKind::Syslog(syslog) = &config.sinks[0].kind else {
            panic!("a syslog sink")
        };
        (**syslog).clone()
    }

    #[test]
    fn syslog_defaults() {
        let config = syslog("address = \"siem.example.net:6514\"\ntransport = \"tls\"");
        assert_eq!(
            config,
            SyslogSinkConfig {
                address: "siem.example.net:6514".into(),
                host: "siem.example.net".into(),
                port: 6514,
                transport: SyslogTransport::Tls,
                format: SyslogFormat::Rfc5424,
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
        );
        let udp = syslog("address = \"[::1]:514\"\ntransport = \"udp\"");
        assert_eq!((udp.host.as_str(), udp.port), ("::1", 514));
        assert_eq!(udp.max_message_bytes, Some(8192));
        let ip = syslog("address = \"192.0.2.7:601\"\ntransport = \"tcp\"");
        assert_eq!((ip.host.as_str(), ip.port), ("192.0.2.7", 601));
        let relp = syslog("address = \"loghost:2514\"\ntransport = \"relp\"");
        assert_eq!(relp.transport, SyslogTransport::Relp);
        assert_eq!(relp.max_message_bytes, None);
    }

    #[test]
    fn syslog_every_key() {
        let config = syslog(
            r#"address = "localhost:6514"
transport = "tls"
format = "rfc3164"
framing = "lf"
facility = "local3"
severity = 5
stream_severity = { signinattempts = "notice", itemusages = 7 }
failed_signin_severity = "warning"
hostname = "forwarder-1"
app_name = "op"
procid = "-"
structured_data = true
sd_id = "opev@12345.1"
max_message_bytes = 65536
timeout_secs = 5
ca_file = "/etc/ca.pem"
server_name = "siem.internal"
client_cert = "/etc/client.pem"
client_key = "/etc/client.key"
"#,
        );
        assert_eq!(config.format, SyslogFormat::Rfc3164);
        assert_eq!(config.framing, SyslogFraming::Lf);
        assert_eq!((config.facility, config.severity), (19, 5));
        assert_eq!(
            config.stream_severity,
            [(Stream::ItemUsages, 7), (Stream::SignInAttempts, 5)]
        );
        assert_eq!(config.failed_signin_severity, Some(4));
        assert_eq!(config.hostname.as_deref(), Some("forwarder-1"));
        assert_eq!(config.app_name, "op");
        assert_eq!(config.procid.as_deref(), Some("-"));
        assert_eq!(config.sd_id.as_deref(), Some("opev@12345.1"));
        assert_eq!(config.max_message_bytes, Some(65536));
        assert_eq!(config.timeout, Duration::from_secs(5));
        assert_eq!(
            config.tls,
            SyslogTlsConfig {
                ca_file: Some("/etc/ca.pem".into()),
                server_name: Some("siem.internal".into()),
                client_auth: Some(("/etc/client.pem".into(), "/etc/client.key".into())),
                insecure_skip_verify: false,
            }
        );
        let config =
            syslog("address = \"h:1\"\ntransport = \"tcp\"\nstructured_data = true\nfacility = 0");
        assert_eq!(config.sd_id.as_deref(), Some(DEFAULT_SD_ID));
        assert_eq!(config.facility, 0);
        // Environment overrides carry numbers as strings.
        let config = parse_env(
            &with_syslog("address = \"h:1\"\ntransport = \"udp\""),
            &[
                ("OP_EVENTS_FORWARDER__SINKS__0__FACILITY", "17"),
                ("OP_EVENTS_FORWARDER__SINKS__0__SEVERITY", "err"),
                ("OP_EVENTS_FORWARDER__SINKS__0__MAX_MESSAGE_BYTES", "1200"),
                ("OP_EVENTS_FORWARDER__SINKS__0__STRUCTURED_DATA", "true"),
                // A key that takes a string keeps one, digits and all.
                ("OP_EVENTS_FORWARDER__SINKS__0__PROCID", "1234"),
            ],
        )
        .unwrap();
        let SinkKind::Syslog(config) = &config.sinks[0].kind else {
            panic!("a syslog sink")
        };
        assert_eq!((config.facility, config.severity), (17, 3));
        assert_eq!(config.max_message_bytes, Some(1200));
        assert_eq!(config.sd_id.as_deref(), Some(DEFAULT_SD_ID));
        assert_eq!(config.procid.as_deref(), Some("1234"));
        check_env_err(
            &with_syslog("address = \"h:1\"\ntransport = \"udp\""),
            &[("OP_EVENTS_FORWARDER__SINKS__0__BOM", "yes")],
            "test.toml: sinks[0].bom (from OP_EVENTS_FORWARDER__SINKS__0__BOM): expected true or false, got \"yes\"",
        );
    }

    #[test]
    fn syslog_errors() {
        let base = "address = \"h:514\"\ntransport = \"tcp\"";
        let check =
            |extra: &str, want: &str| check_err(&with_syslog(&format!("{base}\n{extra}")), want);
        check_err(
            &with_syslog("transport = \"tcp\""),
            "test.toml: sinks[0].address: missing (required for type \"syslog\")",
        );
        check_err(
            &with_syslog("address = \"h:514\""),
            "test.toml: sinks[0].transport: missing (required for type \"syslog\")",
        );
        let address = |address: &str| {
            check_err(
                &with_syslog(&format!("address = \"{address}\"\ntransport = \"tcp\"")),
                &format!(
                    "test.toml: sinks[0].address: expected host:port (a name, an IPv4 address or a bracketed IPv6 \
                     address, and a port from 1 to 65535), got \"{address}\""
                ),
            );
        };
        address("siem.example.net");
        address("siem.example.net:");
        address("siem.example.net:0");
        address("siem.example.net:65536");
        address("::1:514");
        address("[::1]");
        address("[nope]:514");
        address("tcp://siem:514");
        address(":514");
        check(
            "max_message_bytes = 100",
            "test.toml: sinks[0].max_message_bytes: expected an integer from 480 to 16777216, got 100",
        );
        check_err(
            &with_syslog("address = \"h:514\"\ntransport = \"udp\"\nmax_message_bytes = 70000"),
            "test.toml: sinks[0].max_message_bytes: expected an integer from 480 to 65507, got 70000",
        );
        check_err(
            &with_syslog("address = \"h:514\"\ntransport = \"quic\""),
            "test.toml: sinks[0].transport: unknown transport \"quic\" (expected one of udp, tcp, tls, relp)",
        );
        check(
            "format = \"json\"",
            "test.toml: sinks[0].format: unknown format \"json\" (expected one of rfc5424, rfc3164)",
        );
        check(
            "framing = \"octet\"",
            "test.toml: sinks[0].framing: unknown framing \"octet\" (expected one of octet-counting, lf)",
        );
        check_err(
            &with_syslog("address = \"h:514\"\ntransport = \"udp\"\nframing = \"lf\""),
            "test.toml: sinks[0].framing: expected no framing with transport = \"udp\" (one message per datagram), \
             got \"lf\"",
        );
        check_err(
            &with_syslog(
                "address = \"h:2514\"\ntransport = \"relp\"\nframing = \"octet-counting\"",
            ),
            "test.toml: sinks[0].framing: expected no framing with transport = \"relp\" (RELP frames each message \
             itself), got \"octet-counting\"",
        );
        check_err(
            &with_syslog("address = \"h:2514\"\ntransport = \"relp\"\nserver_name = \"h\""),
            "test.toml: sinks[0].server_name: expected no TLS setting unless transport = \"tls\", got transport = \
             \"relp\"",
        );
        check(
            "facility = \"authpriv2\"",
            "test.toml: sinks[0].facility: unknown name \"authpriv2\" (expected one of kern, user, mail, daemon, \
             auth, syslog, lpr, news, uucp, cron, authpriv, ftp, ntp, security, console, solaris-cron, local0, \
             local1, local2, local3, local4, local5, local6, local7, a number from 0 to 23)",
        );
        check(
            "facility = 24",
            "test.toml: sinks[0].facility: expected an integer from 0 to 23, got 24",
        );
        check(
            "severity = \"warn\"",
            "test.toml: sinks[0].severity: unknown name \"warn\" (expected one of emerg, alert, crit, err, \
             warning, notice, info, debug, a number from 0 to 7)",
        );
        check(
            "severity = true",
            "test.toml: sinks[0].severity: expected a name or a number, got true",
        );
        check(
            "stream_severity = { audit = \"info\" }",
            "test.toml: sinks[0].stream_severity.audit: unknown stream \"audit\" (expected one of auditevents, \
             itemusages, signinattempts, audit_v3)",
        );
        check(
            "stream_severity = { auditevents = 9 }",
            "test.toml: sinks[0].stream_severity.auditevents: expected an integer from 0 to 7, got 9",
        );
        check(
            "failed_signin_severity = -1",
            "test.toml: sinks[0].failed_signin_severity: expected an integer from 0 to 7, got -1",
        );
        check(
            "hostname = \"my host\"",
            "test.toml: sinks[0].hostname: expected 1 to 255 printable US-ASCII characters without spaces, got \
             \"my host\"",
        );
        check(
            &format!("app_name = \"{}\"", "a".repeat(49)),
            &format!(
                "test.toml: sinks[0].app_name: expected 1 to 48 printable US-ASCII characters without spaces, got \
                 \"{}\"",
                "a".repeat(49)
            ),
        );
        check(
            "procid = \"\"",
            "test.toml: sinks[0].procid: expected 1 to 128 printable US-ASCII characters without spaces, got \"\"",
        );
        check(
            "sd_id = \"op@1\"",
            "test.toml: sinks[0].sd_id: expected structured_data = true alongside it (the SD-ID names the \
             structured data element), got \"op@1\"",
        );
        for sd_id in [
            "opevents", "op ev@1", "op@", "@1", "op@x", "op=x@1", "a@1@2",
        ] {
            check(
                &format!("structured_data = true\nsd_id = \"{sd_id}\""),
                &format!(
                    "test.toml: sinks[0].sd_id: expected an SD-ID of the form name@<private enterprise number>, \
                     at most 32 printable US-ASCII characters without =, ], \" or spaces (like op-events@32473), \
                     got \"{sd_id}\""
                ),
            );
        }
        check(
            "format = \"rfc3164\"\nbom = true",
            "test.toml: sinks[0].bom: expected false with format = \"rfc3164\" (the byte order mark is an RFC 5424 \
             feature), got true",
        );
        check(
            "timeout_secs = 0",
            "test.toml: sinks[0].timeout_secs: expected an integer from 1 to 600, got 0",
        );
        check(
            "ca_file = \"/ca.pem\"",
            "test.toml: sinks[0].ca_file: expected no TLS setting unless transport = \"tls\", got transport = \"tcp\"",
        );
        check(
            "tls_insecure_skip_verify = true",
            "test.toml: sinks[0].tls_insecure_skip_verify: expected no TLS setting unless transport = \"tls\", got \
             transport = \"tcp\"",
        );
        let tls = |extra: &str, want: &str| {
            check_err(
                &with_syslog(&format!(
                    "address = \"h:6514\"\ntransport = \"tls\"\n{extra}"
                )),
                want,
            );
        };
        tls(
            "client_cert = \"/c.pem\"",
            "test.toml: sinks[0].client_key: missing (required with client_cert)",
        );
        tls(
            "client_key = \"/c.key\"",
            "test.toml: sinks[0].client_cert: missing (required with client_key)",
        );
        tls(
            "ca_file = \"\"",
            "test.toml: sinks[0].ca_file: expected a non-empty path, got \"\"",
        );
        tls(
            "server_name = \"a b\"",
            "test.toml: sinks[0].server_name: expected a DNS name or an IP address, got \"a b\"",
        );
        tls(
            "tls_insecure_skip_verify = true\nca_file = \"/ca.pem\"",
            "test.toml: sinks[0].tls_insecure_skip_verify: expected false when ca_file or server_name is set (they \
             configure the verification it turns off), got true",
        );
        check(
            "path = \"/x\"",
            &format!("test.toml: sinks[0].path: unknown key (expected one of {SYSLOG_KEYS})"),
        );
    }
}
