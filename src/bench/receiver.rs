//! The HTTP collector of `bench pipeline --sink http`: it answers every request 200 and counts
//! the NDJSON lines it got, in the bench process, on its tokio runtime.
//!
//! It reads each body whole but parses nothing: what the benchmark measures is the daemon,
//! and a receiver that costs little keeps the bench process out of the way.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio_util::sync::CancellationToken;

/// A running receiver; it stops when dropped.
pub struct Receiver {
    addr: SocketAddr,
    /// Lines received in bodies answered 200, shared with every connection's task.
    lines: Arc<AtomicU64>,
    /// Cancelled on drop; the accept loop and every connection select on it.
    shutdown: CancellationToken,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

impl Receiver {
    /// Binds a free loopback port and serves on the current tokio runtime.
    ///
    /// # Errors
    ///
    /// No loopback port can be bound.
    pub async fn start() -> std::io::Result<Receiver> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let lines = Arc::new(AtomicU64::new(0));
        let shutdown = CancellationToken::new();
        tokio::spawn(accept_loop(listener, Arc::clone(&lines), shutdown.clone()));
        Ok(Receiver {
            addr,
            lines,
            shutdown,
        })
    }

    /// The URL to give the sink.
    pub fn url(&self) -> String {
        format!("http://{}/events", self.addr)
    }

    /// Lines received so far.
    pub fn lines(&self) -> u64 {
        self.lines.load(Ordering::Relaxed)
    }
}

async fn accept_loop(
    listener: tokio::net::TcpListener,
    lines: Arc<AtomicU64>,
    shutdown: CancellationToken,
) {
    loop {
        let socket = tokio::select! {
            () = shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok((socket, _)) => socket,
                Err(err) => {
                    tracing::warn!(error = %err, "Bench receiver: accept failed.");
                    continue;
                }
            },
        };
        let _ = socket.set_nodelay(true);
        let lines = Arc::clone(&lines);
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request: hyper::Request<Incoming>| {
                let lines = Arc::clone(&lines);
                async move { Ok::<_, Infallible>(answer(&lines, request).await) }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(socket), service);
            tokio::select! {
                () = shutdown.cancelled() => {}
                // A connection the sink closes ends here; its error is of no interest.
                _ = connection => {}
            }
        });
    }
}

/// Reads the body whole and counts its lines; 200 if it could be read, 400 if not.
async fn answer(
    lines: &AtomicU64,
    request: hyper::Request<Incoming>,
) -> hyper::Response<Full<Bytes>> {
    let status = match request.into_body().collect().await {
        Ok(body) => {
            lines.fetch_add(count_lines(&body.to_bytes()), Ordering::Relaxed);
            200
        }
        Err(_) => 400,
    };
    let mut response = hyper::Response::new(Full::new(Bytes::new()));
    *response.status_mut() = hyper::StatusCode::from_u16(status).unwrap_or_default();
    response
}

/// Non-empty lines, the last one with or without its newline.
fn count_lines(body: &[u8]) -> u64 {
    body.split(|b| *b == b'\n')
        .filter(|line| !line.is_empty())
        .count() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_counted_with_or_without_the_last_newline() {
        for (body, expected) in [
            (&b""[..], 0),
            (b"{}\n", 1),
            (b"{}\n{}", 2),
            (b"{}\n{}\n", 2),
            (b"\n\n{}\n", 1),
        ] {
            assert_eq!(count_lines(body), expected, "{body:?}");
        }
    }
}
