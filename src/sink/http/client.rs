//! The HTTP client every HTTP collector uses: hyper's pooled client over rustls (its config
//! from [`crate::net::tls`]), directly or through a proxy's CONNECT tunnel, with one timeout
//! over a whole request and a bound on the answer's size.
//!
//! The proxy is `proxy_url` when set, else what `HTTPS_PROXY`/`HTTP_PROXY`/`ALL_PROXY` say
//! for the collector's URL unless `NO_PROXY` names its host (curl's rules, as hyper-util
//! reads them). Through a proxy every request travels in a CONNECT tunnel, http:// ones too,
//! so the proxy never sees a request's body or credential in the clear over https.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::connect::proxy::Tunnel;
use hyper_util::client::proxy::matcher::Matcher;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls::pki_types::ServerName;
use tower_service::Service as _;

use super::config::HttpSinkConfig;
use crate::net::tls::{self, Checked, NameFrom};

/// The largest answer read; a bulk answer with an error for each of 100,000 items fits.
const MAX_ANSWER_BYTES: usize = 64 * 1024 * 1024;

/// How one request failed before an answer came.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// No answer within `timeout_secs`.
    Timeout(Duration),
    /// The connection failed or broke: retried.
    Network(String),
    /// The collector's certificate (or ours) was refused: an operator must act.
    Tls(String),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Timeout(after) => write!(f, "no answer within {}s", after.as_secs()),
            Failure::Network(detail) | Failure::Tls(detail) => f.write_str(detail),
        }
    }
}

/// An answer: status, headers and the whole body.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

/// The client of one sink. Cheap to clone.
#[derive(Clone)]
pub struct Client {
    http: HyperClient<hyper_rustls::HttpsConnector<Route>, Full<Bytes>>,
    timeout: Duration,
    /// What a refused handshake is explained against.
    server_name: Arc<str>,
    ca_file: Option<Arc<std::path::Path>>,
    client_cert: Option<Arc<std::path::Path>>,
    /// The proxy in use, without its credentials, for errors.
    proxy: Option<String>,
    /// How connections are made, and to where: for [`Client::reach`].
    route: Route,
    url: http::Uri,
}

impl Client {
    /// Builds the client for `config`'s URL; reads the TLS files it names.
    ///
    /// # Errors
    ///
    /// A TLS file that cannot serve (naming the key and file), or a proxy the environment
    /// names that is not an http:// URL.
    pub fn new(config: &HttpSinkConfig) -> Result<Client, String> {
        let url: http::Uri = config
            .url
            .parse()
            .map_err(|err| format!("url {}: {err}", config.url))?;
        let host = url.host().unwrap_or_default().trim_matches(['[', ']']);
        let tls = tls::client_config(&config.tls.options(Vec::new())).map_err(|e| e.to_string())?;
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(config.timeout));
        http.set_nodelay(true);
        let matcher = match &config.proxy_url {
            Some(proxy) => {
                let mut builder = Matcher::builder().http(proxy.clone()).https(proxy.clone());
                if let Some(no) = std::env::var("NO_PROXY")
                    .ok()
                    .or_else(|| std::env::var("no_proxy").ok())
                {
                    builder = builder.no(no);
                }
                builder.build()
            }
            None => Matcher::from_env(),
        };
        let (route, proxy) = match matcher.intercept(&url) {
            None => (Route::Direct(http), None),
            Some(intercept) => {
                let proxy_uri = intercept.uri().clone();
                if proxy_uri.scheme_str() != Some("http") {
                    return Err(format!(
                        "the proxy for {} is {}: only http:// proxies are supported",
                        config.url,
                        without_credentials(&proxy_uri)
                    ));
                }
                let shown = without_credentials(&proxy_uri);
                let mut tunnel = Tunnel::new(proxy_uri, http);
                if let Some(auth) = intercept.basic_auth() {
                    tunnel = tunnel.with_auth(auth.clone());
                }
                (Route::Tunnel(tunnel), Some(shown))
            }
        };
        if let Some(proxy) = &proxy {
            tracing::info!(url = %config.url, %proxy, "the sink connects through a proxy");
        }
        let builder = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http();
        let builder = match &config.tls.server_name {
            Some(name) => {
                let name = ServerName::try_from(name.clone())
                    .map_err(|err| format!("server_name {name}: {err}"))?;
                builder.with_server_name_resolver(hyper_rustls::FixedServerNameResolver::new(name))
            }
            None => builder,
        };
        let connector = builder
            .enable_http1()
            .enable_http2()
            .wrap_connector(route.clone());
        let http = HyperClient::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(50))
            .build(connector);
        Ok(Client {
            http,
            timeout: config.timeout,
            server_name: config.tls.server_name.as_deref().unwrap_or(host).into(),
            ca_file: config.tls.ca_file.as_deref().map(Arc::from),
            client_cert: config
                .tls
                .client_auth
                .as_ref()
                .map(|(cert, _)| Arc::from(cert.as_path())),
            proxy,
            route,
            url,
        })
    }

    /// Opens a connection to the collector (through the proxy's tunnel, if one is in use)
    /// and closes it again, within the timeout, sending nothing: whether the collector
    /// takes connections at all. TLS is not negotiated; a request does that.
    pub async fn reach(&self) -> Result<(), Failure> {
        let mut route = self.route.clone();
        let connecting = async {
            std::future::poll_fn(|cx| route.poll_ready(cx)).await?;
            route.call(self.url.clone()).await
        };
        match tokio::time::timeout(self.timeout, connecting).await {
            Ok(Ok(_connection)) => Ok(()),
            Ok(Err(err)) => Err(Failure::Network(format!(
                "cannot connect: {}",
                self.in_words(&*err)
            ))),
            Err(_) => Err(Failure::Network(format!(
                "no connection within {}s (timeout_secs)",
                self.timeout.as_secs()
            ))),
        }
    }

    /// Sends one request and reads its whole answer, all within the timeout.
    pub async fn send(&self, request: http::Request<Full<Bytes>>) -> Result<Answer, Failure> {
        let exchange = async {
            let response = self
                .http
                .request(request)
                .await
                .map_err(|err| self.failure(&err))?;
            let (parts, body) = response.into_parts();
            let body = Limited::new(body, MAX_ANSWER_BYTES)
                .collect()
                .await
                .map_err(|err| {
                    Failure::Network(format!(
                        "the answer (HTTP {}) broke off: {err}",
                        parts.status
                    ))
                })?
                .to_bytes();
            Ok(Answer {
                status: parts.status.as_u16(),
                headers: parts.headers,
                body,
            })
        };
        match tokio::time::timeout(self.timeout, exchange).await {
            Ok(answer) => answer,
            Err(_) => Err(Failure::Timeout(self.timeout)),
        }
    }

    /// What went wrong before an answer, in words: a refused handshake explained by the TLS
    /// module, anything else with its causes.
    fn failure(&self, err: &hyper_util::client::legacy::Error) -> Failure {
        let checked = Checked {
            server_name: &self.server_name,
            name_from: NameFrom::ServerName,
            ca_file: self.ca_file.as_deref(),
            client_cert: self.client_cert.as_deref(),
        };
        if let Some(tls_error) = tls::rustls_error_of(err) {
            return Failure::Tls(tls::explain(tls_error, &checked));
        }
        Failure::Network(self.in_words(err))
    }

    /// An error before an answer in words: its text, each cause's, and the proxy in use.
    fn in_words(&self, err: &(dyn std::error::Error + 'static)) -> String {
        let detail = with_causes(err.to_string(), err);
        match &self.proxy {
            Some(proxy) => format!("{detail} (through the proxy {proxy})"),
            None => detail,
        }
    }
}

/// `detail` followed by the text of each of `err`'s causes, innermost last.
fn with_causes(mut detail: String, err: &(dyn std::error::Error + 'static)) -> String {
    let mut source = err.source();
    while let Some(cause) = source {
        detail = format!("{detail}: {cause}");
        source = cause.source();
    }
    detail
}

/// A proxy's URI as shown: scheme, host and port, never its credentials.
fn without_credentials(uri: &http::Uri) -> String {
    format!(
        "{}://{}{}",
        uri.scheme_str().unwrap_or("http"),
        uri.host().unwrap_or_default(),
        uri.port_u16().map(|p| format!(":{p}")).unwrap_or_default()
    )
}

/// How connections are made: directly, or through a proxy's CONNECT tunnel.
#[derive(Clone)]
enum Route {
    Direct(HttpConnector),
    Tunnel(Tunnel<HttpConnector>),
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl tower_service::Service<http::Uri> for Route {
    type Response = TokioIo<tokio::net::TcpStream>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        match self {
            Route::Direct(http) => http.poll_ready(cx).map_err(Into::into),
            Route::Tunnel(tunnel) => tunnel
                .poll_ready(cx)
                .map_err(|err| tunnel_error(&err).into()),
        }
    }

    fn call(&mut self, dst: http::Uri) -> Self::Future {
        match self {
            Route::Direct(http) => {
                let connecting = http.call(dst);
                Box::pin(async move { connecting.await.map_err(Into::into) })
            }
            Route::Tunnel(tunnel) => {
                let connecting = tunnel.call(dst);
                Box::pin(async move { connecting.await.map_err(|err| tunnel_error(&err).into()) })
            }
        }
    }
}

/// A failed tunnel in words (hyper-util's own text is terse; its error type is not public).
fn tunnel_error(err: &(dyn std::error::Error + 'static)) -> String {
    let said = err.to_string();
    let detail = match said.as_str() {
        "proxy authorization required" => {
            "the proxy requires authentication (407): put user:password@ in proxy_url".to_owned()
        }
        "unsuccessful" => "the proxy refused the CONNECT tunnel".to_owned(),
        _ => format!("the proxy tunnel failed: {said}"),
    };
    with_causes(detail, err)
}
