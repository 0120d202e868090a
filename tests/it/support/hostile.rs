//! A server that lies: it answers every request to the Events API with whatever the test's
//! `answer` function says (wrong sizes, garbage, the same cursor forever, the token echoed
//! back), and remembers what it was asked.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::BodyExt as _;
use hyper::body::{Body, Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::sync::watch;

/// One request as the server saw it.
#[derive(Debug, Clone)]
pub struct Asked {
    /// From 0, in the order received.
    pub n: usize,
    pub path: String,
    pub authorization: String,
    pub body: String,
}

/// What to send back.
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: ReplyBody,
}

pub enum ReplyBody {
    Bytes(Vec<u8>),
    /// This many bytes of `{"cursor":"c","has_more":true,"items":[{"uuid":"…"},…` (never
    /// closed), produced as they are sent, so the server itself never holds them.
    Endless(u64),
}

impl Reply {
    pub fn json(status: u16, body: impl Into<String>) -> Reply {
        Reply {
            status,
            headers: vec![("content-type", "application/json".into())],
            body: ReplyBody::Bytes(body.into().into_bytes()),
        }
    }
}

type Answer = dyn Fn(&Asked) -> Reply + Send + Sync;

pub struct Hostile {
    pub addr: SocketAddr,
    asked: Arc<Mutex<Vec<Asked>>>,
    count: watch::Receiver<usize>,
}

impl Hostile {
    pub async fn start(answer: impl Fn(&Asked) -> Reply + Send + Sync + 'static) -> Hostile {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let asked: Arc<Mutex<Vec<Asked>>> = Arc::default();
        let (count_tx, count) = watch::channel(0);
        let count_tx = Arc::new(count_tx);
        let answer: Arc<Answer> = Arc::new(answer);
        let log = Arc::clone(&asked);
        tokio::spawn(async move {
            loop {
                let Ok((socket, _)) = listener.accept().await else {
                    continue;
                };
                let (answer, log, count_tx) =
                    (Arc::clone(&answer), Arc::clone(&log), Arc::clone(&count_tx));
                tokio::spawn(async move {
                    let service = service_fn(move |request: hyper::Request<Incoming>| {
                        let (answer, log, count_tx) =
                            (Arc::clone(&answer), Arc::clone(&log), Arc::clone(&count_tx));
                        async move {
                            let path = request.uri().to_string();
                            let authorization = request
                                .headers()
                                .get("authorization")
                                .and_then(|v| v.to_str().ok())
                                .unwrap_or("")
                                .to_owned();
                            let body = request.into_body().collect().await.unwrap().to_bytes();
                            let asked = {
                                let mut log = log.lock().unwrap();
                                let asked = Asked {
                                    n: log.len(),
                                    path,
                                    authorization,
                                    body: String::from_utf8_lossy(&body).into_owned(),
                                };
                                log.push(asked.clone());
                                asked
                            };
                            let reply = answer(&asked);
                            count_tx.send_replace(asked.n + 1);
                            let mut response = hyper::Response::builder().status(reply.status);
                            for (name, value) in reply.headers {
                                response = response.header(name, value);
                            }
                            let body = match reply.body {
                                ReplyBody::Bytes(bytes) => Generated::bytes(bytes),
                                ReplyBody::Endless(n) => Generated::endless(n),
                            };
                            Ok::<_, Infallible>(response.body(body).unwrap())
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(socket), service)
                        .await;
                });
            }
        });
        Hostile { addr, asked, count }
    }

    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every request so far.
    pub fn asked(&self) -> Vec<Asked> {
        self.asked.lock().unwrap().clone()
    }

    /// Waits until the server has answered at least `n` requests.
    pub async fn wait_for_requests(&self, n: usize) {
        let mut count = self.count.clone();
        tokio::time::timeout(super::PATIENCE, count.wait_for(|seen| *seen >= n))
            .await
            .unwrap_or_else(|_| panic!("timed out waiting for {n} requests"))
            .unwrap();
    }

    /// A config for the daemon against this server: one account reading `auditevents` with
    /// the token in `dir/token`, a file sink in `dir/out`; `account_extra` lines go into the
    /// account table.
    pub fn config_toml(&self, dir: &std::path::Path, account_extra: &str) -> String {
        let dir = dir.display();
        format!(
            r#"
[state]
path = "{dir}/state.db"

[[accounts]]
name = "{account}"
token_file = "{dir}/token"
base_url = "{base}"
streams = ["auditevents"]
{account_extra}

[[sinks]]
name = "{sink}"
type = "file"
path = "{dir}/out/{{stream}}.ndjson"
"#,
            account = super::ACCOUNT,
            sink = super::SINK,
            base = self.base_url()
        )
    }
}

/// A response body made as it is sent.
pub struct Generated {
    left: u64,
    first: Option<Bytes>,
    chunk: Bytes,
}

impl Generated {
    fn bytes(bytes: Vec<u8>) -> Generated {
        Generated {
            left: 0,
            first: Some(Bytes::from(bytes)),
            chunk: Bytes::new(),
        }
    }

    fn endless(n: u64) -> Generated {
        let event = br#"{"uuid":"00000000-0000-0000-0000-000000000000","timestamp":"2026-11-30T00:00:00Z"},"#;
        Generated {
            left: n,
            first: Some(Bytes::from_static(
                br#"{"cursor":"c","has_more":true,"items":["#,
            )),
            chunk: Bytes::from(event.repeat(64 * 1024 / event.len())),
        }
    }
}

impl Body for Generated {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if let Some(first) = self.first.take() {
            return Poll::Ready(Some(Ok(Frame::data(first))));
        }
        if self.left == 0 {
            return Poll::Ready(None);
        }
        let n = self.left.min(self.chunk.len() as u64) as usize;
        self.left -= n as u64;
        Poll::Ready(Some(Ok(Frame::data(self.chunk.slice(..n)))))
    }
}
