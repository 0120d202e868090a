//! The syslog sink against a real rsyslog: every format × transport combination through the
//! whole daemon, awkward events, a receiver restart mid-stream, and TLS refusals.

use std::collections::HashMap;

use op_events_forwarder::Daemon;
use op_events_forwarder::config::{self, Config};
use op_events_forwarder::sink::{Delivered, Sink};
use op_events_forwarder::stream::Stream;
use time::format_description::well_known::Rfc3339;
use time::{OffsetDateTime, UtcOffset};

use crate::support::rsyslog::{Input, Record, Rsyslog, certs};
use crate::support::{ACCOUNT, Env, generated, page, uuid_of, wait_for};

/// The test config of `env` with its file sink replaced by `sinks` (TOML `[[sinks]]` tables).
fn config_with_sinks(env: &Env, account_extra: &str, sinks: &str) -> Config {
    let toml = env.config_toml(account_extra);
    let head = toml.split("[[sinks]]").next().unwrap();
    config::from_toml_str("it.toml", &format!("{head}{sinks}"), &[]).expect("a valid test config")
}

/// A sink table for the rsyslog input `input`; TLS inputs get the test CA (and, for mutual
/// TLS, the client certificate).
fn sink_toml(name: &str, rsyslog: &Rsyslog, input: Input, extra: &str) -> String {
    let certs = certs();
    let transport = match input {
        Input::Udp | Input::Udp6 => "udp",
        Input::Tcp | Input::Tcp6 => "tcp",
        Input::Tls | Input::MutualTls => "tls",
        Input::Relp => "relp",
    };
    let mut toml = format!(
        "\n[[sinks]]\nname = \"{name}\"\ntype = \"syslog\"\naddress = \"{}\"\ntransport = \"{transport}\"\n{extra}\n",
        rsyslog.address(input)
    );
    if matches!(input, Input::Tls | Input::MutualTls) {
        toml.push_str(&format!("ca_file = \"{}\"\n", certs.ca.display()));
    }
    if input == Input::MutualTls {
        toml.push_str(&format!(
            "client_cert = \"{}\"\nclient_key = \"{}\"\n",
            certs.client_cert.display(),
            certs.client_key.display()
        ));
    }
    toml
}

/// One sink of the combination test and what rsyslog must make of its messages.
struct Combination {
    name: String,
    input: Input,
    rfc5424: bool,
    facility: u8,
    structured_data: bool,
    bom: bool,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_combination_arrives_parsed_right_and_byte_identical() {
    let env = Env::new(150, 21).await;
    let rsyslog = Rsyslog::start(&env.path("rsyslog"), 0, None);
    let mut combinations = Vec::new();
    for rfc5424 in [true, false] {
        let format = if rfc5424 { "rfc5424" } else { "rfc3164" };
        for (input, transport, framing) in [
            (Input::Udp, "udp", ""),
            (Input::Tcp, "tcp-octet", "framing = \"octet-counting\""),
            (Input::Tcp, "tcp-lf", "framing = \"lf\""),
            (Input::Tls, "tls", ""),
            (Input::MutualTls, "mtls", "framing = \"lf\""),
            (Input::Relp, "relp", ""),
        ] {
            let name = format!("{format}-{transport}");
            let facility = if input == Input::Udp { 20 } else { 10 };
            let structured_data = rfc5424 && matches!(input, Input::Tcp | Input::Tls);
            let bom = rfc5424 && input == Input::MutualTls;
            let mut extra = format!(
                "format = \"{format}\"\napp_name = \"{name}\"\nhostname = \"fwd-test\"\n{framing}\n\
                 stream_severity = {{ itemusages = \"notice\" }}\nfailed_signin_severity = 4\n"
            );
            if input == Input::Udp {
                extra.push_str("facility = \"local4\"\n");
            }
            if structured_data {
                extra.push_str("structured_data = true\n");
            }
            if bom {
                extra.push_str("bom = true\n");
            }
            combinations.push((
                sink_toml(&name, &rsyslog, input, &extra),
                Combination {
                    name,
                    input,
                    rfc5424,
                    facility,
                    structured_data,
                    bom,
                },
            ));
        }
    }
    let sinks: String = combinations.iter().map(|(toml, _)| toml.as_str()).collect();
    let config = config_with_sinks(&env, "page_size = 100", &sinks);
    let daemon = Daemon::start(&config).await.unwrap();
    let want = generated(&env.sim);
    wait_for(
        daemon.stats(),
        "every sink delivered every event",
        |stats| {
            combinations.iter().all(|(_, c)| {
                want.iter()
                    .all(|(stream, n)| stats.delivered(&c.name, ACCOUNT, *stream) >= *n as u64)
            })
        },
    )
    .await;
    daemon.stop().await;

    let served = env.served_by_uuid();
    let total: usize = want.values().sum();
    for (_, combination) in &combinations {
        let records: Vec<Record> = if combination.input == Input::Udp {
            // UDP promises nothing: what arrives must be right, not all of it.
            rsyslog.settled(combination.input, &combination.name).await
        } else {
            rsyslog
                .wait_for(combination.input, &combination.name, |records| {
                    records.iter().filter(|r| r.app == combination.name).count() >= total
                })
                .await
                .into_iter()
                .filter(|r| r.app == combination.name)
                .collect()
        };
        check_records(combination, &served, &records);
    }
    // rsyslog had nothing to complain about: in particular the daemon's stop closed every TLS
    // session with a close_notify (no "unexpected eof").
    assert_eq!(rsyslog.complaints(), Vec::<String>::new());
}

/// Checks that `records` hold every served event once, as rsyslog parsed them.
fn check_records(
    combination: &Combination,
    served: &HashMap<String, (Stream, String)>,
    records: &[Record],
) {
    let name = &combination.name;
    let mut seen: HashMap<String, usize> = HashMap::new();
    let pid = std::process::id().to_string();
    for record in records {
        let msg = if combination.rfc5424 {
            record
                .msg
                .strip_prefix('\u{feff}')
                .filter(|_| combination.bom)
                .unwrap_or(&record.msg)
        } else {
            // rsyslog keeps the space after an RFC 3164 TAG's colon.
            record.msg.strip_prefix(' ').unwrap_or(&record.msg)
        };
        if combination.bom {
            assert!(
                record.msg.starts_with('\u{feff}'),
                "{name}: no BOM: {record:?}"
            );
        }
        let uuid = uuid_of(msg);
        let (stream, json) = served
            .get(&uuid)
            .unwrap_or_else(|| panic!("{name}: an event never served: {msg}"));
        assert_eq!(msg, json, "{name}: MSG is not the event as served");
        *seen.entry(uuid.clone()).or_default() += 1;

        let event: serde_json::Value = serde_json::from_str(json).unwrap();
        let failed_signin = *stream == Stream::SignInAttempts && event["category"] != "success";
        let severity = match stream {
            Stream::ItemUsages => 5,
            _ if failed_signin => 4,
            _ => 6,
        };
        assert_eq!(
            record.facility,
            combination.facility.to_string(),
            "{name}: {record:?}"
        );
        assert_eq!(record.severity, severity.to_string(), "{name}: {record:?}");
        assert_eq!(
            record.pri,
            (u16::from(combination.facility) * 8 + severity).to_string(),
            "{name}"
        );
        assert_eq!(record.host, "fwd-test", "{name}");
        assert_eq!(record.app, *name);
        assert_eq!(record.procid, pid, "{name}");

        let event_time = OffsetDateTime::parse(event["timestamp"].as_str().unwrap(), &Rfc3339)
            .unwrap()
            .to_offset(UtcOffset::UTC);
        let received = OffsetDateTime::parse(&record.ts, &Rfc3339)
            .unwrap_or_else(|err| panic!("{name}: rsyslog's time {:?}: {err}", record.ts))
            .to_offset(UtcOffset::UTC);
        if combination.rfc5424 {
            assert_eq!(record.version, "1", "{name}");
            assert_eq!(record.msgid, stream.as_str(), "{name}");
            // At most 6 fractional digits, truncated: the same second, the same microsecond.
            let want = event_time
                .replace_nanosecond(event_time.nanosecond() / 1000 * 1000)
                .unwrap();
            assert_eq!(
                received, want,
                "{name}: {} became {}",
                event["timestamp"], record.ts
            );
            let sd = if combination.structured_data {
                format!(
                    "[op-events@32473 account=\"{ACCOUNT}\" stream=\"{stream}\" uuid=\"{uuid}\"]"
                )
            } else {
                "-".to_owned()
            };
            assert_eq!(record.sd, sd, "{name}");
        } else {
            // RFC 3164 has no year, zone or fraction: the rest must match (the receiver runs
            // in UTC).
            assert_eq!(
                (received.month(), received.day(), received.time().as_hms()),
                (
                    event_time.month(),
                    event_time.day(),
                    event_time.time().as_hms()
                ),
                "{name}: {} became {}",
                event["timestamp"],
                record.ts
            );
        }
    }
    if combination.input == Input::Udp {
        // Every datagram that arrived was an event as served; how many arrived is UDP's affair.
        assert!(!seen.is_empty(), "{name}: nothing arrived");
        return;
    }
    let duplicated: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(duplicated.is_empty(), "{name}: duplicates {duplicated:?}");
    assert_eq!(seen.len(), served.len(), "{name}: events missing");
}

/// Events that test the edges: non-ASCII, quotes and brackets, escaped line breaks, JSON
/// whitespace with raw line breaks, and 60 KiB.
fn awkward_events() -> Vec<String> {
    vec![
        r#"{"uuid":"NONASCII","timestamp":"2026-11-20T10:11:12.999999999Z","name":"Zoë 山田 🙂 ñ"}"#.to_owned(),
        r#"{"uuid":"QUOTES","timestamp":"2026-11-20T10:11:13Z","text":"say \"hi\" \\ [x] ] = '"}"#.to_owned(),
        r#"{"uuid":"NEWLINES","timestamp":"2026-11-20T10:11:14Z","text":"line 1\nline 2\r\n\ttab \u0000"}"#.to_owned(),
        "{\n  \"uuid\": \"PRETTY\",\n  \"timestamp\": \"2026-11-20T10:11:15Z\",\r\n  \"n\": [1, 2]\n}".to_owned(),
        format!(
            r#"{{"uuid":"BIG","timestamp":"2026-11-20T10:11:16Z","pad":"{}"}}"#,
            "é".repeat(30 * 1024)
        ),
    ]
}

/// A syslog sink built from a `[[sinks]]` table, as the daemon would build it.
fn build_sink(sink: &str) -> Sink {
    let env_toml = "[state]\npath = \"/nonexistent/state.db\"\n\n[[accounts]]\nname = \"it\"\ntoken_env = \"T\"\n\
                    base_url = \"https://events.1password.com\"\n";
    let config = config::from_toml_str("it.toml", &format!("{env_toml}{sink}"), &[]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = op_events_forwarder::store::Store::open(&dir.path().join("state.db")).unwrap();
    Sink::from_config(&config.sinks[0], Some(&store)).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn awkward_events_arrive_byte_identical_on_every_transport() {
    let dir = tempfile::tempdir().unwrap();
    let rsyslog = Rsyslog::start(dir.path(), 0, None);
    let events = awkward_events();
    assert!(events[4].len() >= 60 * 1024);
    let compact = |event: &str| op_events_forwarder::sink::one_line(event).into_owned();
    let cases = [
        ("octet", Input::Tcp, "framing = \"octet-counting\"", false),
        ("lf", Input::Tcp, "framing = \"lf\"", true),
        ("tls", Input::Tls, "", false),
        ("udp", Input::Udp, "max_message_bytes = 65000", false),
    ];
    for (app, input, extra, one_line) in cases {
        let sink = build_sink(&sink_toml(
            app,
            &rsyslog,
            input,
            &format!("app_name = \"{app}\"\n{extra}"),
        ));
        let delivered = sink
            .deliver(
                "it",
                Stream::AuditEvents,
                &[page(1, &events[..2]), page(2, &events[2..])],
            )
            .await
            .unwrap_or_else(|err| panic!("{app}: {err}"));
        assert_eq!(delivered, Delivered::default(), "{app}");
        let records = rsyslog
            .wait_for(input, app, |records| {
                records.iter().filter(|r| r.app == app).count() >= events.len()
            })
            .await;
        let msgs: Vec<&str> = records
            .iter()
            .filter(|r| r.app == app)
            .map(|r| r.msg.as_str())
            .collect();
        let want: Vec<String> = events
            .iter()
            .map(|event| {
                if one_line {
                    compact(event)
                } else {
                    event.clone()
                }
            })
            .collect();
        assert_eq!(msgs, want, "{app}");
        for record in records.iter().filter(|r| r.app == app) {
            assert!(
                record.raw.ends_with(&format!(" - {}", record.msg)),
                "{app}: {record:?}"
            );
        }
        // The fraction .999999999 stays in its second.
        let first = records.iter().find(|r| r.app == app).unwrap();
        assert_eq!(first.ts, "2026-11-20T10:11:12.999999Z", "{app}");
        // Without a configured hostname, HOSTNAME is the machine's name.
        let machine = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
        assert_eq!(first.host, machine.trim(), "{app}");
    }
    assert!(
        !rsyslog.stderr().contains("truncat"),
        "rsyslog truncated a message: {}",
        rsyslog.stderr()
    );

    // UDP with the default limit (8192 bytes): the 60 KiB event is refused whole, counted, and
    // does not hold back the others.
    let sink = build_sink(&sink_toml(
        "udpdefault",
        &rsyslog,
        Input::Udp,
        "app_name = \"udpdefault\"",
    ));
    let delivered = sink
        .deliver("it", Stream::AuditEvents, &[page(1, &events)])
        .await
        .unwrap();
    let [dead] = &delivered.rejected[..] else {
        panic!("one event refused: {delivered:?}");
    };
    assert_eq!(dead.uuid.as_deref(), Some("BIG"), "{dead:?}");
    assert!(
        dead.reason
            .ends_with("bytes, over max_message_bytes 8192 (never cut)"),
        "{}",
        dead.reason
    );
    assert!(events.contains(&dead.event), "kept byte for byte");
    // UDP promises nothing: what arrives is those under the limit, in order, the big one never.
    let records = rsyslog.settled(Input::Udp, "udpdefault").await;
    let uuids: Vec<String> = records.iter().map(|r| uuid_of(&r.msg)).collect();
    let under = ["NONASCII", "QUOTES", "NEWLINES", "PRETTY"];
    assert!(!uuids.is_empty(), "nothing arrived over UDP");
    let mut rest = under.iter();
    assert!(
        uuids.iter().all(|uuid| rest.any(|u| u == uuid)),
        "{uuids:?} is not a part of {under:?} in order"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_refuses_a_wrong_ca_a_wrong_name_and_reports_a_missing_client_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let rsyslog = Rsyslog::start(dir.path(), 0, None);
    let certs = certs();
    let events = vec![r#"{"uuid":"TLS1","timestamp":"2026-11-20T10:11:12Z"}"#.to_owned()];
    let deliver = |toml: String| {
        let events = events.clone();
        async move {
            build_sink(&toml)
                .deliver("it", Stream::AuditEvents, &[page(1, &events)])
                .await
        }
    };
    let tls = |extra: &str| {
        format!(
            "\n[[sinks]]\nname = \"siem\"\ntype = \"syslog\"\naddress = \"{}\"\ntransport = \"tls\"\n{extra}\n",
            rsyslog.address(Input::Tls)
        )
    };

    let address = rsyslog.address(Input::Tls);
    let refused = |name: &str, why: &str| {
        format!(
            "sink siem: {address}: TLS handshake failed (verifying the server as \"{name}\"): {why}"
        )
    };
    let err = deliver(tls(&format!("ca_file = \"{}\"", certs.other_ca.display())))
        .await
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        refused(
            "127.0.0.1",
            &format!(
                "the server's certificate is not issued by a CA in ca_file {}, nor is it one of \
                 that file's certificates; set ca_file to the certificate of the CA that issued it \
                 (for a self-signed certificate, the certificate itself)",
                certs.other_ca.display()
            )
        )
    );
    // The built-in roots do not know the test CA either.
    let err = deliver(tls("")).await.unwrap_err().to_string();
    assert_eq!(
        err,
        refused(
            "127.0.0.1",
            "the server's certificate is not issued by a CA of the public roots (no ca_file is \
             set): it comes from a private CA or is self-signed; set ca_file to the certificate of \
             the CA that issued it (for a self-signed certificate, the certificate itself)"
        )
    );

    let err = deliver(tls(&format!(
        "ca_file = \"{}\"\nserver_name = \"siem.example.net\"",
        certs.ca.display()
    )))
    .await
    .unwrap_err()
    .to_string();
    assert_eq!(
        err,
        refused(
            "siem.example.net",
            "the server's certificate is not valid for \"siem.example.net\": it names localhost, \
             127.0.0.1; set server_name to one of them, or have the certificate reissued with \
             \"siem.example.net\" among its subjectAltNames"
        )
    );

    // The right CA and name (localhost is in the certificate too) pass; so does skipping the
    // verification, which the config allows only explicitly.
    deliver(tls(&format!(
        "ca_file = \"{}\"\nserver_name = \"localhost\"",
        certs.ca.display()
    )))
    .await
    .unwrap();
    deliver(tls("tls_insecure_skip_verify = true"))
        .await
        .unwrap();
    rsyslog
        .wait_for(Input::Tls, "the two verified deliveries", |records| {
            records.len() >= 2
        })
        .await;

    // Mutual TLS without a client certificate: the handshake completes, then the receiver
    // drops the session. The sink notices before writing and reports it.
    let mtls = format!(
        "\n[[sinks]]\nname = \"siem\"\ntype = \"syslog\"\naddress = \"{}\"\ntransport = \"tls\"\nca_file = \"{}\"\n",
        rsyslog.address(Input::MutualTls),
        certs.ca.display()
    );
    let err = deliver(mtls).await.unwrap_err().to_string();
    assert_eq!(
        err,
        format!(
            "sink siem: {}: the receiver refused the TLS session after the handshake: the server \
             requires a client certificate (it sent the alert CertificateRequired); set \
             client_cert and client_key",
            rsyslog.address(Input::MutualTls)
        )
    );
    assert!(rsyslog.records(Input::MutualTls).is_empty());

    // With a client certificate, every stream's connection is accepted, the later ones too:
    // they must not try to resume the first one's session, which rsyslog's OpenSSL driver
    // refuses under mutual TLS ("session id context uninitialized").
    let mtls = build_sink(&format!(
        "\n[[sinks]]\nname = \"siem\"\ntype = \"syslog\"\naddress = \"{}\"\ntransport = \"tls\"\n\
         ca_file = \"{}\"\nclient_cert = \"{}\"\nclient_key = \"{}\"\n",
        rsyslog.address(Input::MutualTls),
        certs.ca.display(),
        certs.client_cert.display(),
        certs.client_key.display()
    ));
    for (seq, stream) in Stream::ALL.into_iter().enumerate() {
        let events = vec![format!(
            r#"{{"uuid":"MTLS-{stream}","timestamp":"2026-11-20T10:11:12Z"}}"#
        )];
        mtls.deliver("it", stream, &[page(seq as u64 + 1, &events)])
            .await
            .unwrap_or_else(|err| panic!("{stream}: {err}"));
    }
    let records = rsyslog
        .wait_for(Input::MutualTls, "a message per stream", |records| {
            records.len() >= 3
        })
        .await;
    assert_eq!(records.len(), 3);
    assert!(
        !rsyslog.stderr().contains("session id context"),
        "{}",
        rsyslog.stderr()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_pins_a_self_signed_ca_certificate_and_still_checks_its_name() {
    // rsyslog presents a certificate made by `openssl req -x509`: its own CA (CA:TRUE), which
    // webpki refuses as a server's certificate unless ca_file holds exactly it.
    let env = Env::new(40, 24).await;
    let rsyslog = Rsyslog::start_serving(&env.path("rsyslog"), &certs().self_signed_receiver);
    let certs = certs();
    let address = rsyslog.address(Input::Tls);
    let sink = |extra: &str| {
        format!(
            "\n[[sinks]]\nname = \"siem\"\ntype = \"syslog\"\naddress = \"{address}\"\n\
             transport = \"tls\"\n{extra}\n"
        )
    };
    let deliver = |toml: String| async move {
        let events = vec![r#"{"uuid":"PIN1","timestamp":"2026-11-20T10:11:12Z"}"#.to_owned()];
        build_sink(&toml)
            .deliver("it", Stream::AuditEvents, &[page(1, &events)])
            .await
            .map(|_| ())
            .map_err(|err| err.to_string())
    };
    let refused = |name: &str, why: &str| {
        Err(format!(
            "sink siem: {address}: TLS handshake failed (verifying the server as \"{name}\"): {why}"
        ))
    };

    // Not pinned: the CA of the other certificates is not its issuer, and nor are the public
    // roots; the message says how to pin it.
    assert_eq!(
        deliver(sink(&format!("ca_file = \"{}\"", certs.ca.display()))).await,
        refused(
            "127.0.0.1",
            &format!(
                "the server presents a CA certificate (basicConstraints CA:TRUE, as openssl req \
                 -x509 makes by default) as its own, which is accepted only when pinned; to trust \
                 exactly that certificate, put it in ca_file (ca_file {} does not hold it), or \
                 give the server a certificate issued by a CA",
                certs.ca.display()
            )
        )
    );
    assert_eq!(
        deliver(sink("")).await,
        refused(
            "127.0.0.1",
            "the server presents a CA certificate (basicConstraints CA:TRUE, as openssl req -x509 \
             makes by default) as its own, which is accepted only when pinned; to trust exactly \
             that certificate, put it in ca_file, or give the server a certificate issued by a CA"
        )
    );
    // Pinned, its name is still checked.
    let pinned = format!("ca_file = \"{}\"", certs.self_signed.display());
    assert_eq!(
        deliver(sink(&format!(
            "{pinned}\nserver_name = \"siem.example.net\""
        )))
        .await,
        refused(
            "siem.example.net",
            "the server's certificate is not valid for \"siem.example.net\": it names localhost, \
             127.0.0.1; set server_name to one of them, or have the certificate reissued with \
             \"siem.example.net\" among its subjectAltNames"
        )
    );
    assert!(rsyslog.records(Input::Tls).is_empty());

    // Pinned, with a name it has: the whole daemon delivers every event.
    let config = config_with_sinks(&env, "", &sink(&pinned));
    let daemon = Daemon::start(&config).await.unwrap();
    let want = generated(&env.sim);
    wait_for(
        daemon.stats(),
        "every event over TLS to a pinned certificate",
        |stats| {
            want.iter()
                .all(|(stream, n)| stats.delivered("siem", ACCOUNT, *stream) >= *n as u64)
        },
    )
    .await;
    daemon.stop().await;
    let total: usize = want.values().sum();
    let records = rsyslog
        .wait_for(Input::Tls, "every event", |records| records.len() >= total)
        .await;
    let mut received: Vec<String> = records.iter().map(|r| uuid_of(&r.msg)).collect();
    let mut served: Vec<String> = Stream::ALL
        .into_iter()
        .flat_map(|stream| env.sim.events(stream))
        .map(|event| event.uuid)
        .collect();
    received.sort();
    served.sort();
    assert_eq!(received, served);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_refuses_an_expired_certificate_saying_when_it_expired() {
    let dir = tempfile::tempdir().unwrap();
    let rsyslog = Rsyslog::start_serving(dir.path(), &certs().expired_receiver);
    let address = rsyslog.address(Input::Tls);
    let before = OffsetDateTime::now_utc().replace_nanosecond(0).unwrap();
    let events = vec![r#"{"uuid":"EXP1","timestamp":"2026-11-20T10:11:12Z"}"#.to_owned()];
    let err = build_sink(&format!(
        "\n[[sinks]]\nname = \"siem\"\ntype = \"syslog\"\naddress = \"{address}\"\n\
         transport = \"tls\"\nca_file = \"{}\"\n",
        certs().ca.display()
    ))
    .deliver("it", Stream::AuditEvents, &[page(1, &events)])
    .await
    .unwrap_err()
    .to_string();
    // The time of the check is the only part that varies.
    let (head, rest) = err.split_once(" and it is ").expect(&err);
    let (now, tail) = rest.split_once(' ').expect(&err);
    assert_eq!(
        head,
        format!(
            "sink siem: {address}: TLS handshake failed (verifying the server as \"127.0.0.1\"): \
             the server's certificate expired at 2021-01-01T00:00:00Z"
        )
    );
    let now = OffsetDateTime::parse(now, &Rfc3339).expect(&err);
    assert!(before <= now && now <= OffsetDateTime::now_utc(), "{err}");
    assert_eq!(
        tail,
        "by the local clock; the server needs a renewed certificate, or the local clock is wrong"
    );
    assert!(rsyslog.records(Input::Tls).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_restart_mid_stream_loses_nothing() {
    let env = Env::new(3_000, 22).await;
    let rsyslog_dir = env.path("rsyslog");
    let mut rsyslog = Rsyslog::start(&rsyslog_dir, 0, None);
    let tcp_port = rsyslog.tcp_port;
    // Plain TCP (octet counting) and RELP, side by side in one daemon.
    let sinks = format!(
        "{}{}",
        sink_toml("siem", &rsyslog, Input::Tcp, ""),
        sink_toml("relp", &rsyslog, Input::Relp, "")
    );
    let config = config_with_sinks(&env, "page_size = 100", &sinks);
    let want = generated(&env.sim);
    let total: usize = want.values().sum();
    type Stats = op_events_forwarder::stats::Stats;
    let delivered = |stats: &Stats, sink: &str| -> u64 {
        Stream::ALL
            .iter()
            .map(|s| stats.delivered(sink, ACCOUNT, *s))
            .sum()
    };
    let failed = |stats: &Stats, sink: &str| -> u64 {
        Stream::ALL
            .iter()
            .map(|s| stats.failed_deliveries(sink, ACCOUNT, *s))
            .sum()
    };

    let daemon = Daemon::start(&config).await.unwrap();
    wait_for(daemon.stats(), "a first delivery", |s| {
        delivered(s, "siem") > 0 && delivered(s, "relp") > 0
    })
    .await;
    rsyslog.stop();
    wait_for(
        daemon.stats(),
        "failed deliveries while rsyslog is down",
        |s| failed(s, "siem") > 0 && failed(s, "relp") > 0,
    )
    .await;
    for sink in ["siem", "relp"] {
        let before_restart = delivered(daemon.stats(), sink);
        assert!(
            before_restart < total as u64,
            "{sink}: the receiver went away mid-stream ({before_restart} of {total} delivered)"
        );
    }
    let rsyslog = Rsyslog::start(
        &rsyslog_dir,
        tcp_port,
        Some((rsyslog.udp_port, rsyslog.relp_port)),
    );
    wait_for(daemon.stats(), "every event delivered", |s| {
        delivered(s, "siem") >= total as u64 && delivered(s, "relp") >= total as u64
    })
    .await;
    daemon.stop().await;

    // Plain TCP: at most the replay window (1 MiB of messages, here under 1,000 events) and the
    // batch in flight (8 pages of 100). RELP: at most the batch in flight.
    for (input, max_duplicates) in [(Input::Tcp, 1_800), (Input::Relp, 800)] {
        let records = rsyslog
            .wait_for(input, "every event", |records| {
                let uuids: std::collections::HashSet<String> =
                    records.iter().map(|r| uuid_of(&r.msg)).collect();
                uuids.len() >= total
            })
            .await;
        let mut count: HashMap<String, usize> = HashMap::new();
        for record in &records {
            *count.entry(uuid_of(&record.msg)).or_default() += 1;
        }
        for stream in Stream::ALL {
            let events = env.sim.events(stream);
            let missing = events
                .iter()
                .filter(|e| !count.contains_key(&e.uuid))
                .count();
            assert_eq!(
                missing, 0,
                "{input:?} {stream}: events lost across the restart"
            );
            let duplicates: usize = events.iter().map(|e| count[&e.uuid] - 1).sum();
            eprintln!("{input:?} {stream}: {duplicates} duplicates across the restart");
            assert!(
                duplicates <= max_duplicates,
                "{input:?} {stream}: {duplicates} duplicates"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn addresses_by_ipv6_and_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let rsyslog = Rsyslog::start(dir.path(), 0, None);
    let event = vec![r#"{"uuid":"ADDR","timestamp":"2026-11-20T10:11:12Z"}"#.to_owned()];
    let by_name = rsyslog
        .address(Input::Tcp)
        .replace("127.0.0.1", "localhost");
    for (input, address) in [
        (Input::Tcp6, rsyslog.address(Input::Tcp6)),
        (Input::Udp6, rsyslog.address(Input::Udp6)),
        (Input::Tcp, by_name),
    ] {
        let transport = if input == Input::Udp6 { "udp" } else { "tcp" };
        let sink = build_sink(&format!(
            "\n[[sinks]]\nname = \"siem\"\ntype = \"syslog\"\naddress = \"{address}\"\ntransport = \"{transport}\"\n"
        ));
        sink.deliver("it", Stream::AuditEvents, &[page(1, &event)])
            .await
            .unwrap_or_else(|err| panic!("{address}: {err}"));
        let records = rsyslog
            .wait_for(input, &address, |records| !records.is_empty())
            .await;
        assert_eq!(records[0].msg, event[0], "{address}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unusable_certificate_files_stop_the_start_naming_them() {
    let env = Env::new(1, 23).await;
    let not_pem = env.path("not-a-cert.pem");
    std::fs::write(&not_pem, "hello").unwrap();
    let missing = env.path("missing.pem");
    let certs = certs();
    let start = |extra: String| {
        let sink = format!(
            "\n[[sinks]]\nname = \"siem\"\ntype = \"syslog\"\naddress = \"127.0.0.1:6514\"\ntransport = \"tls\"\n{extra}\n"
        );
        let config = config_with_sinks(&env, "", &sink);
        async move {
            match Daemon::start(&config).await {
                Ok(_) => panic!("the daemon started with {extra}"),
                Err(err) => format!("{err:#}"),
            }
        }
    };
    assert_eq!(
        start(format!("ca_file = \"{}\"", not_pem.display())).await,
        format!(
            "sink siem: 127.0.0.1:6514: ca_file {}: no PEM certificate in the file",
            not_pem.display()
        )
    );
    let err = start(format!("ca_file = \"{}\"", missing.display())).await;
    assert!(
        err.starts_with(&format!(
            "sink siem: 127.0.0.1:6514: ca_file {}: ",
            missing.display()
        )),
        "{err}"
    );
    let err = start(format!(
        "client_cert = \"{}\"\nclient_key = \"{}\"",
        certs.client_cert.display(),
        not_pem.display()
    ))
    .await;
    assert!(
        err.starts_with(&format!(
            "sink siem: 127.0.0.1:6514: client_key {}: ",
            not_pem.display()
        )),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_down_for_long_holds_back_nobody_and_is_caught_up_soon_after_it_returns() {
    // 300 pages a stream: three times what a count-bounded outbox would have held for the
    // dead sink before it stopped the file sink too.
    let env = Env::new(3_000, 24).await;
    let rsyslog_dir = env.path("rsyslog");
    let mut rsyslog = Rsyslog::start(&rsyslog_dir, 0, None);
    let (tcp_port, udp_port, relp_port) = (rsyslog.tcp_port, rsyslog.udp_port, rsyslog.relp_port);
    let siem = sink_toml("siem", &rsyslog, Input::Tcp, "");
    rsyslog.stop();
    let files = env.config_toml("");
    let files = &files[files.find("[[sinks]]").unwrap()..];
    let config = config_with_sinks(&env, "page_size = 10", &format!("{files}{siem}"));
    let want = generated(&env.sim);
    let daemon = Daemon::start(&config).await.unwrap();
    wait_for(daemon.stats(), "the file sink current, rsyslog down", |s| {
        crate::support::delivered_all(s, &want)
    })
    .await;
    // Down long enough for the sink's backoff to reach its cap (about a minute of retries).
    wait_for(daemon.stats(), "the syslog sink's retries", |s| {
        Stream::ALL
            .iter()
            .all(|stream| s.failed_deliveries("siem", ACCOUNT, *stream) >= 12)
    })
    .await;
    for stream in Stream::ALL {
        let stats = daemon.stats().sink("siem", ACCOUNT, stream);
        assert_eq!(stats.delivered, 0);
        // Each try ended at the refused connection, before a batch was read.
        assert_eq!(
            stats.failed.get("retry"),
            None,
            "{stream}: {:?}",
            stats.failed
        );
    }
    let returned = std::time::Instant::now();
    let rsyslog = Rsyslog::start(&rsyslog_dir, tcp_port, Some((udp_port, relp_port)));
    wait_for(daemon.stats(), "the syslog sink caught up", |s| {
        want.iter()
            .all(|(stream, n)| s.delivered("siem", ACCOUNT, *stream) >= *n as u64)
    })
    .await;
    let caught_up = returned.elapsed();
    daemon.stop().await;
    eprintln!("syslog sink caught up {caught_up:?} after its receiver returned");
    // The sink's backoff is capped at 30 s; a little more for 9,000 events to go through.
    assert!(
        caught_up <= op_events_forwarder::sink::MAX_BACKOFF + std::time::Duration::from_secs(10),
        "caught up only after {caught_up:?}"
    );
    let records = rsyslog
        .wait_for(Input::Tcp, "every event", |records| {
            records.len() >= want.values().sum::<usize>()
        })
        .await;
    let uuids: std::collections::HashSet<String> =
        records.iter().map(|r| uuid_of(&r.msg)).collect();
    for stream in Stream::ALL {
        for event in env.sim.events(stream) {
            assert!(uuids.contains(&event.uuid), "{stream}: {} lost", event.uuid);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_events_become_dead_letters_that_are_listed_and_replayed() {
    // RELP into rsyslog, with a limit some events exceed: those are refused for good, kept in
    // the dead letters, never block their stream; raised, they are replayed and arrive.
    let env = Env::new(300, 25).await;
    let rsyslog = Rsyslog::start(&env.path("rsyslog"), 0, None);
    let write_config = |limit: usize| {
        let toml = env.config_toml("page_size = 100");
        let head = toml.split("[[sinks]]").next().unwrap().to_owned();
        let files = &toml[toml.find("[[sinks]]").unwrap()..];
        let relp = sink_toml(
            "siem",
            &rsyslog,
            Input::Relp,
            &format!("max_message_bytes = {limit}"),
        );
        let path = env.path("config.toml");
        std::fs::write(&path, format!("{head}{files}{relp}")).unwrap();
        path
    };
    let dead_letters = |config: &std::path::Path, args: &[&str]| -> String {
        let out = std::process::Command::new(crate::support::BIN)
            .arg("dead-letters")
            .arg("--config")
            .arg(config)
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    // Find a limit that some events of each stream exceed.
    let sizes: Vec<usize> = Stream::ALL
        .iter()
        .flat_map(|s| env.sim.events(*s))
        .map(|e| e.json.len())
        .collect();
    let mut sorted = sizes.clone();
    sorted.sort_unstable();
    let limit = sorted[sorted.len() * 9 / 10] + 150;
    let config = write_config(limit);
    let want = generated(&env.sim);
    let daemon = Daemon::start(&config::load(&config).unwrap())
        .await
        .unwrap();
    wait_for(daemon.stats(), "every event delivered or refused", |s| {
        want.iter().all(|(stream, n)| {
            s.delivered("siem", ACCOUNT, *stream) + s.rejected("siem", ACCOUNT, *stream)
                >= *n as u64
                && s.delivered(crate::support::SINK, ACCOUNT, *stream) >= *n as u64
        })
    })
    .await;
    let refused: u64 = Stream::ALL
        .iter()
        .map(|s| daemon.stats().rejected("siem", ACCOUNT, *s))
        .sum();
    // Listed while the daemon runs.
    let listed = dead_letters(&config, &["list", "--sink", "siem"]);
    daemon.stop().await;
    assert!(refused > 0, "some events were over the limit");
    assert!(
        listed.ends_with(&format!("{refused} dead letters\n")),
        "{listed}"
    );
    let in_rsyslog: std::collections::HashSet<String> = rsyslog
        .wait_for(Input::Relp, "the events under the limit", |records| {
            records.len() as u64 >= want.values().sum::<usize>() as u64 - refused
        })
        .await
        .iter()
        .map(|r| uuid_of(&r.msg))
        .collect();
    for (stream, uuid) in env.served() {
        assert!(
            in_rsyslog.contains(&uuid) || listed.contains(&uuid),
            "{stream} {uuid}: neither delivered nor a dead letter"
        );
    }
    assert!(listed.contains("over max_message_bytes"), "{listed}");
    // The file sink took them all: the refusal was the syslog sink's alone.
    for stream in Stream::ALL {
        env.assert_exactly_once(stream);
    }

    // The limit raised, the dead letters replayed: they arrive, and leave the list.
    let config = write_config(64 * 1024);
    let replayed = dead_letters(&config, &["replay", "--sink", "siem"]);
    assert!(
        replayed.starts_with(&format!("{refused} dead letters of sink siem queued")),
        "{replayed}"
    );
    let daemon = Daemon::start(&config::load(&config).unwrap())
        .await
        .unwrap();
    let total = want.values().sum::<usize>();
    let records = rsyslog
        .wait_for(Input::Relp, "every event", |records| {
            records
                .iter()
                .map(|r| uuid_of(&r.msg))
                .collect::<std::collections::HashSet<_>>()
                .len()
                >= total
        })
        .await;
    wait_for(daemon.stats(), "the replay recorded", |_| {
        dead_letters(&config, &["list"]).ends_with("\n0 dead letters\n")
    })
    .await;
    daemon.stop().await;
    let uuids: HashMap<String, usize> = records.iter().fold(HashMap::new(), |mut m, r| {
        *m.entry(uuid_of(&r.msg)).or_default() += 1;
        m
    });
    for (stream, uuid) in env.served() {
        assert_eq!(uuids.get(&uuid), Some(&1), "{stream} {uuid}");
    }
}
