//! In-process HTTP collectors for the HTTP sink: a server that answers each request with
//! what the test's `answer` says (or never answers), over plain TCP or TLS (optionally
//! requiring a client certificate), and remembers every request with its body decoded;
//! a Splunk HEC that follows Splunk's documented contract; a CONNECT proxy.

use std::collections::{HashMap, HashSet};
use std::convert::Infallible;
use std::io::Read as _;
use std::path::Path;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// One request as the collector saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    /// Path and query.
    pub path: String,
    pub headers: http::HeaderMap,
    /// The body, gunzipped if it came with `Content-Encoding: gzip`.
    pub body: Vec<u8>,
    /// The body's size on the wire.
    pub wire_bytes: usize,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn text(&self) -> &str {
        std::str::from_utf8(&self.body).expect("a UTF-8 body")
    }
}

/// What to send back.
pub enum Reply {
    Answer {
        status: u16,
        headers: Vec<(&'static str, String)>,
        body: Vec<u8>,
    },
    /// Never answer (the connection stays open).
    Hang,
    /// This answer, after this long.
    After(std::time::Duration, Box<Reply>),
    /// This answer, once the test sends `true`.
    When(tokio::sync::watch::Receiver<bool>, Box<Reply>),
}

impl Reply {
    pub fn json(status: u16, body: impl Into<String>) -> Reply {
        Reply::Answer {
            status,
            headers: vec![("content-type", "application/json".into())],
            body: body.into().into_bytes(),
        }
    }
}

type Answer = dyn Fn(&Seen) -> Reply + Send + Sync;

/// TLS for the collector: its certificate and key, and the CA its clients' certificates must
/// chain to, if it requires one.
pub struct ServerTls<'a> {
    pub cert: &'a Path,
    pub key: &'a Path,
    pub client_ca: Option<&'a Path>,
}

pub struct Collector {
    /// `http://127.0.0.1:PORT` or `https://localhost:PORT`.
    pub url: String,
    pub port: u16,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Collector {
    pub async fn start(answer: impl Fn(&Seen) -> Reply + Send + Sync + 'static) -> Collector {
        Collector::start_with(None, answer).await
    }

    pub async fn start_with(
        tls: Option<ServerTls<'_>>,
        answer: impl Fn(&Seen) -> Reply + Send + Sync + 'static,
    ) -> Collector {
        Collector::start_on(0, tls, answer).await
    }

    /// [`Collector::start_with`] on a given port of 127.0.0.1 (0: any free one).
    pub async fn start_on(
        port: u16,
        tls: Option<ServerTls<'_>>,
        answer: impl Fn(&Seen) -> Reply + Send + Sync + 'static,
    ) -> Collector {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .unwrap();
        let port = listener.local_addr().unwrap().port();
        let acceptor =
            tls.map(|tls| tokio_rustls::TlsAcceptor::from(Arc::new(server_config(&tls))));
        let url = match acceptor {
            Some(_) => format!("https://localhost:{port}"),
            None => format!("http://127.0.0.1:{port}"),
        };
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let answer: Arc<Answer> = Arc::new(answer);
        let log = Arc::clone(&seen);
        tokio::spawn(async move {
            loop {
                let Ok((socket, _)) = listener.accept().await else {
                    continue;
                };
                let (answer, log) = (Arc::clone(&answer), Arc::clone(&log));
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |request: hyper::Request<Incoming>| {
                        let (answer, log) = (Arc::clone(&answer), Arc::clone(&log));
                        async move {
                            let (parts, body) = request.into_parts();
                            let wire = body
                                .collect()
                                .await
                                .map(|b| b.to_bytes())
                                .unwrap_or_default();
                            let gzipped = parts
                                .headers
                                .get("content-encoding")
                                .is_some_and(|v| v == "gzip");
                            let body = if gzipped {
                                let mut out = Vec::new();
                                flate2::read::GzDecoder::new(&wire[..])
                                    .read_to_end(&mut out)
                                    .expect("a gzip body");
                                out
                            } else {
                                wire.to_vec()
                            };
                            let seen = {
                                let mut log = log.lock().unwrap();
                                let seen = Seen {
                                    method: parts.method.to_string(),
                                    path: parts
                                        .uri
                                        .path_and_query()
                                        .map(|p| p.to_string())
                                        .unwrap_or_default(),
                                    headers: parts.headers,
                                    body,
                                    wire_bytes: wire.len(),
                                };
                                log.push(seen.clone());
                                seen
                            };
                            let mut reply = answer(&seen);
                            let reply = loop {
                                reply = match reply {
                                    Reply::After(delay, then) => {
                                        tokio::time::sleep(delay).await;
                                        *then
                                    }
                                    Reply::When(mut release, then) => {
                                        // A dropped sender releases it too.
                                        let _ = release.wait_for(|released| *released).await;
                                        *then
                                    }
                                    other => break other,
                                };
                            };
                            match reply {
                                Reply::Hang | Reply::After(..) | Reply::When(..) => {
                                    std::future::pending().await
                                }
                                Reply::Answer {
                                    status,
                                    headers,
                                    body,
                                } => {
                                    let mut response = hyper::Response::builder().status(status);
                                    for (name, value) in headers {
                                        response = response.header(name, value);
                                    }
                                    Ok::<_, Infallible>(
                                        response.body(Full::new(Bytes::from(body))).unwrap(),
                                    )
                                }
                            }
                        }
                    });
                    let builder = hyper_util::server::conn::auto::Builder::new(
                        hyper_util::rt::TokioExecutor::new(),
                    );
                    match acceptor {
                        Some(acceptor) => {
                            if let Ok(stream) = acceptor.accept(socket).await {
                                let _ = builder
                                    .serve_connection(TokioIo::new(stream), service)
                                    .await;
                            }
                        }
                        None => {
                            let _ = builder
                                .serve_connection(TokioIo::new(socket), service)
                                .await;
                        }
                    }
                });
            }
        });
        Collector { url, port, seen }
    }

    /// Every request so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

fn server_config(tls: &ServerTls<'_>) -> rustls::ServerConfig {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(tls.cert)
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(tls.key).unwrap();
    let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .unwrap();
    let builder = match tls.client_ca {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_file_iter(ca).unwrap() {
                roots.add(cert.unwrap()).unwrap();
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .build()
            .unwrap();
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_single_cert(certs, key).unwrap();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    config
}

/// The uuid of each event in a body of JSON values one after the other (NDJSON, HEC's
/// concatenated objects), found with `uuid_of`.
pub fn values(body: &[u8]) -> Vec<serde_json::Value> {
    serde_json::Deserializer::from_slice(body)
        .into_iter::<serde_json::Value>()
        .map(|v| v.expect("JSON values"))
        .collect()
}

/// A Splunk HEC as Splunk documents it: `Authorization: Splunk <token>`; the body is JSON
/// objects one after another, each with `event`; `{"text":"Success","code":0}`; 401 code 2
/// without a token, 401 code 3 with another scheme, 403 code 4 for a wrong token; 400 code 6
/// with `invalid-event-number` for an event it refuses (nothing of that request is indexed);
/// 503 code 9 when busy. With indexer acknowledgement, `X-Splunk-Request-Channel` is required
/// (400 code 10 without), each answer carries an `ackId`, and `POST /services/collector/ack`
/// with `{"acks":[ids]}` answers `{"acks":{"id":true|false}}`. `/services/collector/health`
/// answers 200 code 17 "HEC is healthy" (403 code 4 for a wrong token).
pub struct Hec {
    pub token: String,
    pub ack: bool,
    state: Mutex<HecState>,
}

#[derive(Default)]
pub struct HecState {
    /// Every event indexed, in order (each HEC object as received).
    pub indexed: Vec<serde_json::Value>,
    /// Answer 503 code 9 to this many event requests first.
    pub busy: usize,
    /// Refuse any request holding an event with one of these uuids (code 6).
    pub refuse: HashSet<String>,
    /// Never acknowledge the first this-many requests' ackIds.
    pub lose_acks: usize,
    next_ack: u64,
    /// ackId → the events it carries, until it is asked for and acknowledged.
    pending: HashMap<u64, Vec<serde_json::Value>>,
    /// Channels seen on event requests.
    pub channels: HashSet<String>,
    pub requests: usize,
}

impl Hec {
    pub fn new(token: &str, ack: bool) -> Arc<Hec> {
        Arc::new(Hec {
            token: token.to_owned(),
            ack,
            state: Mutex::default(),
        })
    }

    pub fn state(&self) -> std::sync::MutexGuard<'_, HecState> {
        self.state.lock().unwrap()
    }

    pub fn answer(&self, seen: &Seen) -> Reply {
        let auth = seen.header("authorization").unwrap_or("");
        let Some(token) = auth.strip_prefix("Splunk ") else {
            return if auth.is_empty() {
                Reply::json(401, r#"{"text":"Token is required","code":2}"#)
            } else {
                Reply::json(401, r#"{"text":"Invalid authorization","code":3}"#)
            };
        };
        if token != self.token {
            return Reply::json(403, r#"{"text":"Invalid token","code":4}"#);
        }
        let path = seen.path.split('?').next().unwrap_or_default();
        if path == "/services/collector/health" {
            return Reply::json(200, r#"{"text":"HEC is healthy","code":17}"#);
        }
        let channel = seen.header("x-splunk-request-channel").map(str::to_owned);
        if self.ack && channel.is_none() {
            return Reply::json(400, r#"{"text":"Data channel is missing","code":10}"#);
        }
        let mut state = self.state();
        match path {
            "/services/collector/ack" => {
                let asked: serde_json::Value = serde_json::from_slice(&seen.body).unwrap();
                let mut acks = serde_json::Map::new();
                for id in asked["acks"].as_array().unwrap() {
                    let id = id.as_u64().unwrap();
                    let lost = id < state.lose_acks as u64;
                    let done = !lost && state.pending.contains_key(&id);
                    if done {
                        let events = state.pending.remove(&id).unwrap();
                        state.indexed.extend(events);
                    }
                    acks.insert(id.to_string(), serde_json::Value::Bool(done));
                }
                Reply::json(200, serde_json::json!({ "acks": acks }).to_string())
            }
            "/services/collector/event" => {
                state.requests += 1;
                if let Some(channel) = channel {
                    state.channels.insert(channel);
                }
                if state.busy > 0 {
                    state.busy -= 1;
                    return Reply::json(503, r#"{"text":"Server is busy","code":9}"#);
                }
                let events = values(&seen.body);
                for (n, event) in events.iter().enumerate() {
                    if event.get("event").is_none() {
                        return Reply::json(
                            400,
                            format!(
                                r#"{{"text":"Event field is required","code":12,"invalid-event-number":{n}}}"#
                            ),
                        );
                    }
                    let uuid = event["event"]["uuid"].as_str().unwrap_or_default();
                    if state.refuse.contains(uuid) {
                        return Reply::json(
                            400,
                            format!(
                                r#"{{"text":"Invalid data format","code":6,"invalid-event-number":{n}}}"#
                            ),
                        );
                    }
                }
                if self.ack {
                    let id = state.next_ack;
                    state.next_ack += 1;
                    state.pending.insert(id, events);
                    Reply::json(
                        200,
                        format!(r#"{{"text":"Success","code":0,"ackId":{id}}}"#),
                    )
                } else {
                    state.indexed.extend(events);
                    Reply::json(200, r#"{"text":"Success","code":0}"#)
                }
            }
            _ => Reply::json(
                404,
                r#"{"text":"The requested URL was not found on this server.","code":404}"#,
            ),
        }
    }
}

/// A CONNECT proxy: for each connection, reads `CONNECT host:port`, connects there, answers
/// 200 and copies bytes both ways. Remembers each CONNECT's target.
pub struct Proxy {
    pub url: String,
    pub connects: Arc<Mutex<Vec<String>>>,
}

impl Proxy {
    pub async fn start() -> Proxy {
        use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://127.0.0.1:{}", listener.local_addr().unwrap().port());
        let connects: Arc<Mutex<Vec<String>>> = Arc::default();
        let log = Arc::clone(&connects);
        tokio::spawn(async move {
            loop {
                let Ok((socket, _)) = listener.accept().await else {
                    continue;
                };
                let log = Arc::clone(&log);
                tokio::spawn(async move {
                    let mut reader = tokio::io::BufReader::new(socket);
                    let mut line = String::new();
                    reader.read_line(&mut line).await.unwrap();
                    let mut parts = line.split_whitespace();
                    let (Some("CONNECT"), Some(target)) = (parts.next(), parts.next()) else {
                        let _ = reader
                            .get_mut()
                            .write_all(
                                b"HTTP/1.1 405 Method Not Allowed\r\ncontent-length: 0\r\n\r\n",
                            )
                            .await;
                        return;
                    };
                    let target = target.to_owned();
                    loop {
                        let mut header = String::new();
                        reader.read_line(&mut header).await.unwrap();
                        if header == "\r\n" || header.is_empty() {
                            break;
                        }
                    }
                    log.lock().unwrap().push(target.clone());
                    let Ok(mut upstream) = tokio::net::TcpStream::connect(&target).await else {
                        let _ = reader
                            .get_mut()
                            .write_all(b"HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\n\r\n")
                            .await;
                        return;
                    };
                    reader
                        .get_mut()
                        .write_all(b"HTTP/1.1 200 Connection Established\r\n\r\n")
                        .await
                        .unwrap();
                    let mut socket = reader.into_inner();
                    let _ = tokio::io::copy_bidirectional(&mut socket, &mut upstream).await;
                });
            }
        });
        Proxy { url, connects }
    }
}
