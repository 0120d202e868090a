//! The OpenSearch emulator `osmem-server` (PyPI 0.1.6, a static binary that answers the
//! OpenSearch 3.8 REST API): a real `_bulk` peer nobody here wrote. One per test, on a port
//! the kernel chooses; it prints its URL when ready and exits when its stdin closes.
//!
//! `scripts/test` installs it into `target/osmem-venv` and exports `OPEF_OSMEM_SERVER`;
//! without that variable the venv's binary is looked up the same way.

use std::io::BufRead as _;
use std::process::{Child, Command, Stdio};

pub struct OpenSearch {
    child: Child,
    pub url: String,
}

/// The emulator's binary: `OPEF_OSMEM_SERVER`, or the one in `target/osmem-venv`.
fn binary() -> String {
    if let Ok(path) = std::env::var("OPEF_OSMEM_SERVER") {
        return path;
    }
    let python = concat!(env!("CARGO_MANIFEST_DIR"), "/target/osmem-venv/bin/python");
    let out = Command::new(python)
        .args([
            "-c",
            "import osmem_server; print(osmem_server.resolve_binary())",
        ])
        .output()
        .unwrap_or_else(|err| {
            panic!("{python}: {err} (scripts/test installs osmem-server into target/osmem-venv)")
        });
    assert!(
        out.status.success(),
        "osmem-server is not installed in target/osmem-venv (scripts/test installs it): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

impl OpenSearch {
    /// Starts the emulator and returns once it has said where it listens.
    pub fn start() -> OpenSearch {
        let mut child = Command::new(binary())
            .args(["-addr", "127.0.0.1:0", "-no-ja"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("osmem-server starts");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let ready: serde_json::Value = serde_json::from_str(&line)
            .unwrap_or_else(|err| panic!("osmem-server said {line:?}: {err}"));
        let url = ready["url"].as_str().expect("a url").to_owned();
        OpenSearch { child, url }
    }
}

impl Drop for OpenSearch {
    fn drop(&mut self) {
        // Closing stdin ends it; kill in case it does not.
        drop(self.child.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A small HTTP/1.1 request to a local server: method, URL, content type, body; returns the
/// status and the body.
pub async fn request(method: &str, url: &str, content_type: &str, body: Vec<u8>) -> (u16, Vec<u8>) {
    use http_body_util::{BodyExt as _, Full};
    let uri: http::Uri = url.parse().unwrap();
    let authority = uri.authority().unwrap().to_string();
    let stream = tokio::net::TcpStream::connect(&authority).await.unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(connection);
    let request = http::Request::builder()
        .method(method)
        .uri(uri.path_and_query().map_or("/", |p| p.as_str()))
        .header(http::header::HOST, authority)
        .header(http::header::CONTENT_TYPE, content_type)
        .body(Full::new(bytes::Bytes::from(body)))
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    let status = response.status().as_u16();
    let body = response
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes()
        .to_vec();
    (status, body)
}
