//! The syslog sink: RFC 5424 or RFC 3164 messages over UDP, TCP, TLS (RFC 5425) or RELP.
//!
//! Each (account, stream) has its own channel to the receiver, so streams deliver in
//! parallel and each keeps its order. On TCP and TLS the connection is persistent: a batch is
//! framed into one buffer (RFC 6587 octet counting or LF), written, flushed, and only then
//! acknowledged. Any error drops the connection; the worker retries the batch with backoff on
//! a new one.
//!
//! Plain syslog over TCP has no acknowledgement: bytes a receiver had taken into its socket
//! buffer but not yet read when it died are lost to it, though our write succeeded. So each
//! channel keeps the last batches it wrote (at least one, up to [`REPLAY_WINDOW_BYTES`]) and,
//! after finding its connection broken (closed by the receiver, reset, or a failed write),
//! sends them again on the new connection before the next batch. That turns the loss window
//! into a bounded number of duplicates. Before each batch the connection is probed without
//! blocking, so a receiver that closed it is noticed before a batch is written into the void.
//!
//! RELP needs none of that: the receiver answers every message, and a batch is acknowledged
//! only when every message in it has been answered `200 OK`.
//!
//! A message larger than `max_message_bytes` (default 8192 on UDP, unlimited on TCP and TLS)
//! is never cut: it is not sent but returned as refused for good, so the worker keeps it in
//! the dead letters (an ERROR names its uuid and size). The rest of the batch is delivered,
//! so one such event cannot block its stream; `dead-letters replay` sends it again, after
//! `max_message_bytes` is raised.

pub mod config;
pub mod format;
pub mod relp;
mod tls;

use std::collections::{HashMap, VecDeque};
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use time::OffsetDateTime;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpStream, UdpSocket};

use self::config::{SyslogFraming, SyslogSinkConfig, SyslogTransport};
use self::format::{EventFields, MessageSettings, write_framed};
use super::{DeadLetter, Delivered, SinkError, one_line};
use crate::net::tls::{Checked, explain_io};
use crate::store::OutboxPage;
use crate::stream::Stream;

/// How much of what a channel wrote last is kept to send again after a broken connection.
/// The last batch is always kept, whatever its size.
pub const REPLAY_WINDOW_BYTES: usize = 1024 * 1024;

/// How long a new TLS 1.3 connection waits for the receiver's verdict before writing. In TLS
/// 1.3 the server checks the client's certificate after the client considers the handshake
/// done: a refusal (no certificate, or one it does not trust) arrives as an alert or a close
/// just after, an acceptance as a session ticket (OpenSSL and rustls servers send them). The
/// wait ends at whichever comes first; only a server that sends no tickets waits this long.
const TLS_VERDICT_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

pub struct SyslogSink {
    inner: Arc<Inner>,
}

struct Inner {
    name: String,
    config: SyslogSinkConfig,
    settings: MessageSettings,
    /// The TLS client config (with TLS), built at start from the configured files.
    tls: Option<Arc<rustls::ClientConfig>>,
    /// One channel per (account, stream); each is used by one worker at a time.
    channels: Mutex<HashMap<(String, Stream), SharedChannel>>,
}

/// A channel, locked by the worker delivering on it.
type SharedChannel = Arc<tokio::sync::Mutex<Channel>>;

/// The connection of one (account, stream) and what it last wrote.
#[derive(Default)]
struct Channel {
    conn: Option<Conn>,
    /// The last batches written on stream transports, oldest first.
    replay: VecDeque<Bytes>,
    replay_bytes: usize,
    /// The connection broke after `replay` was written: send it again first.
    replay_pending: bool,
}

enum Conn {
    Udp(UdpSocket),
    Tcp(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
    Relp(Box<relp::RelpSession>),
}

impl SyslogSink {
    /// # Errors
    ///
    /// With TLS, the certificates and key are read now: an error names the key and the file.
    pub fn new(name: &str, config: &SyslogSinkConfig) -> Result<SyslogSink, SinkError> {
        if config.tls.insecure_skip_verify {
            tracing::warn!(
                sink = %name, address = %config.address,
                "tls_insecure_skip_verify is set: the receiver's certificate is NOT verified, \
                 so anyone on the network path can read and alter these events"
            );
        }
        let settings = MessageSettings::new(config, &machine_hostname(), std::process::id());
        let tls = match config.transport {
            SyslogTransport::Tls => Some(Arc::new(tls::client_config(&config.tls).map_err(
                |detail| SinkError::Syslog {
                    sink: name.to_owned(),
                    address: config.address.clone(),
                    detail,
                },
            )?)),
            _ => None,
        };
        Ok(SyslogSink {
            inner: Arc::new(Inner {
                name: name.to_owned(),
                config: config.clone(),
                settings,
                tls,
                channels: Mutex::new(HashMap::new()),
            }),
        })
    }

    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// See [`Inner::probe`].
    pub async fn probe(&self) -> Result<String, String> {
        self.inner.probe().await
    }

    /// Formats and sends the events of `pages`; returns once they are written and flushed
    /// (TCP, TLS), acknowledged by the receiver (RELP) or sent (UDP). Messages over
    /// `max_message_bytes` are not sent: they are returned in [`Delivered::rejected`], for
    /// the dead letters.
    pub async fn deliver(
        &self,
        account: &str,
        stream: Stream,
        pages: &[OutboxPage],
    ) -> Result<Delivered, SinkError> {
        let inner = &self.inner;
        let batch = inner.build_batch(account, stream, pages)?;
        if batch.bytes.is_empty() {
            return Ok(Delivered {
                rejected: batch.rejected,
            });
        }
        let channel = inner.channel(account, stream);
        let mut channel = channel.lock().await;
        let res = match inner.config.transport {
            SyslogTransport::Udp => inner.send_datagrams(&mut channel, &batch).await,
            SyslogTransport::Relp => inner.send_relp(&mut channel, &batch).await,
            SyslogTransport::Tcp | SyslogTransport::Tls => {
                inner.write_stream(&mut channel, batch.bytes.clone()).await
            }
        };
        res.map_err(|detail| SinkError::Syslog {
            sink: inner.name.clone(),
            address: inner.config.address.clone(),
            detail,
        })?;
        Ok(Delivered {
            rejected: batch.rejected,
        })
    }

    /// Opens the stream's connection (TCP, TLS with its handshake) or session (RELP, with
    /// its `open` command) if it has none, sending no event; the delivery that follows uses
    /// it. UDP has nothing to open.
    pub async fn ready(&self, account: &str, stream: Stream) -> Result<(), SinkError> {
        let inner = &self.inner;
        if inner.config.transport == SyslogTransport::Udp {
            return Ok(());
        }
        let channel = inner.channel(account, stream);
        let mut channel = channel.lock().await;
        inner
            .connected(&mut channel)
            .await
            .map_err(|detail| SinkError::Syslog {
                sink: inner.name.clone(),
                address: inner.config.address.clone(),
                detail,
            })
    }

    /// Closes the connection of one stream: TLS sends its close_notify, TCP its FIN, so the
    /// receiver sees an orderly end rather than a truncated stream.
    pub async fn close(&self, account: &str, stream: Stream) {
        let channel = {
            let mut channels = self
                .inner
                .channels
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            channels.remove(&(account.to_owned(), stream))
        };
        let Some(channel) = channel else {
            return;
        };
        let Some(mut conn) = channel.lock().await.conn.take() else {
            return;
        };
        let closed = tokio::time::timeout(CLOSE_TIMEOUT, conn.shutdown()).await;
        if !matches!(closed, Ok(Ok(()))) {
            tracing::debug!(sink = %self.inner.name, "the connection did not close cleanly");
        }
    }
}

/// How long closing a connection at shutdown may take.
const CLOSE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// A batch ready to send: the framed bytes (TCP, TLS) or the messages back to back with their
/// ends (UDP, RELP).
struct Batch {
    bytes: Bytes,
    ends: Vec<usize>,
    /// Events whose message is over `max_message_bytes`: not sent, for the dead letters.
    rejected: Vec<DeadLetter>,
}

impl Inner {
    fn channel(&self, account: &str, stream: Stream) -> SharedChannel {
        let mut channels = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        Arc::clone(channels.entry((account.to_owned(), stream)).or_default())
    }

    fn build_batch(
        &self,
        account: &str,
        stream: Stream,
        pages: &[OutboxPage],
    ) -> Result<Batch, SinkError> {
        // UDP and RELP send messages one by one; TCP and TLS send a framed stream.
        let one_by_one = matches!(
            self.config.transport,
            SyslogTransport::Udp | SyslogTransport::Relp
        );
        let framing = self.config.framing;
        let mut out = Vec::new();
        let mut ends = Vec::new();
        let mut message = Vec::new();
        let mut rejected = Vec::new();
        for page in pages {
            let events = page.events().map_err(|err| SinkError::Syslog {
                sink: self.name.clone(),
                address: self.config.address.clone(),
                detail: format!(
                    "outbox page {} of {account}/{stream} is corrupt: {err}",
                    page.seq
                ),
            })?;
            let received = OffsetDateTime::from_unix_timestamp(page.fetched_at)
                .unwrap_or_else(|_| OffsetDateTime::now_utc());
            for event in events {
                let text = match (one_by_one, framing) {
                    (false, SyslogFraming::Lf) => one_line(event),
                    _ => event.into(),
                };
                message.clear();
                self.settings
                    .write_message(&mut message, account, stream, &text, received);
                if let Some(max) = self.config.max_message_bytes
                    && message.len() > max
                {
                    let fields = EventFields::parse(event);
                    rejected.push(DeadLetter {
                        event: event.to_owned(),
                        uuid: fields.uuid.map(|uuid| uuid.into_owned()),
                        reason: format!(
                            "a syslog message of {} bytes, over max_message_bytes {max} (never cut)",
                            message.len()
                        ),
                    });
                    continue;
                }
                if one_by_one {
                    out.extend_from_slice(&message);
                    ends.push(out.len());
                } else {
                    write_framed(&mut out, framing, &message);
                }
            }
        }
        Ok(Batch {
            bytes: out.into(),
            ends,
            rejected,
        })
    }

    async fn send_datagrams(&self, channel: &mut Channel, batch: &Batch) -> Result<(), String> {
        if !matches!(channel.conn, Some(Conn::Udp(_))) {
            channel.conn = Some(Conn::Udp(self.connect_udp().await?));
        }
        let Some(Conn::Udp(socket)) = &channel.conn else {
            unreachable!("connected above");
        };
        let mut start = 0;
        for &end in &batch.ends {
            if let Err(err) = socket.send(&batch.bytes[start..end]).await {
                channel.conn = None;
                return Err(format!("cannot send a datagram: {err}"));
            }
            start = end;
        }
        Ok(())
    }

    async fn send_relp(&self, channel: &mut Channel, batch: &Batch) -> Result<(), String> {
        self.connected(channel).await?;
        let Some(Conn::Relp(session)) = &mut channel.conn else {
            unreachable!("a RELP sink holds RELP sessions");
        };
        let mut messages = Vec::with_capacity(batch.ends.len());
        let mut start = 0;
        for &end in &batch.ends {
            messages.push(&batch.bytes[start..end]);
            start = end;
        }
        let sent = tokio::time::timeout(self.config.timeout, session.send(&messages)).await;
        let failure = match sent {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(err)) => err,
            Err(_) => format!(
                "the RELP server did not answer within {}s (timeout_secs)",
                self.config.timeout.as_secs()
            ),
        };
        channel.conn = None;
        Err(failure)
    }

    async fn write_stream(&self, channel: &mut Channel, batch: Bytes) -> Result<(), String> {
        self.connected(channel).await?;
        let conn = channel.conn.as_mut().expect("connected above");
        let replay: Vec<Bytes> = if channel.replay_pending {
            channel.replay.iter().cloned().collect()
        } else {
            Vec::new()
        };
        let written = tokio::time::timeout(self.config.timeout, async {
            for part in replay.iter().chain(std::iter::once(&batch)) {
                conn.write_all(part).await?;
            }
            conn.flush().await
        })
        .await;
        let failure = match written {
            Ok(Ok(())) => None,
            Ok(Err(err)) => Some(format!("write failed: {err}")),
            Err(_) => Some(format!(
                "write not done within {}s (timeout_secs)",
                self.config.timeout.as_secs()
            )),
        };
        if let Some(failure) = failure {
            channel.conn = None;
            channel.replay_pending = true;
            return Err(failure);
        }
        if !replay.is_empty() {
            tracing::info!(
                sink = %self.name, address = %self.config.address, bytes = channel.replay_bytes,
                "sent the batches written before the connection broke again (duplicates are possible)"
            );
        }
        channel.replay_pending = false;
        channel.replay_bytes += batch.len();
        channel.replay.push_back(batch);
        while channel.replay.len() > 1 && channel.replay_bytes > REPLAY_WINDOW_BYTES {
            let dropped = channel.replay.pop_front().expect("more than one batch");
            channel.replay_bytes -= dropped.len();
        }
        Ok(())
    }

    /// Makes sure `channel` holds a live connection (TCP, TLS) or session (RELP), opening one
    /// if it has none or the receiver ended it. After a connection the receiver closed, the
    /// batches written last are sent again first (stream transports).
    async fn connected(&self, channel: &mut Channel) -> Result<(), String> {
        let relp = self.config.transport == SyslogTransport::Relp;
        if let Some(conn) = &mut channel.conn
            && let Some(reason) = conn.peer_closed()
        {
            if relp {
                tracing::warn!(
                    sink = %self.name, address = %self.config.address, reason = %reason,
                    "the RELP server ended the session; reconnecting"
                );
            } else {
                tracing::warn!(
                    sink = %self.name, address = %self.config.address, reason = %reason,
                    "the receiver closed the connection; reconnecting and sending the last batch again"
                );
                channel.replay_pending = true;
            }
            channel.conn = None;
        }
        if channel.conn.is_some() {
            return Ok(());
        }
        let conn = if relp {
            let session = tokio::time::timeout(self.config.timeout, async {
                let tcp = self.connect_tcp().await?;
                relp::RelpSession::open(tcp).await
            })
            .await
            .map_err(|_| {
                format!(
                    "no RELP session within {}s (timeout_secs)",
                    self.config.timeout.as_secs()
                )
            })??;
            Conn::Relp(Box::new(session))
        } else {
            tokio::time::timeout(self.config.timeout, self.connect_stream())
                .await
                .map_err(|_| {
                    format!(
                        "no connection within {}s (timeout_secs)",
                        self.config.timeout.as_secs()
                    )
                })??
        };
        channel.conn = Some(conn);
        Ok(())
    }

    async fn connect_udp(&self) -> Result<UdpSocket, String> {
        let addrs = self.resolve().await?;
        let mut last_err = None;
        for addr in addrs {
            let local: std::net::SocketAddr = if addr.is_ipv4() {
                (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
            } else {
                (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
            };
            let socket = match UdpSocket::bind(local).await {
                Ok(socket) => socket,
                Err(err) => {
                    last_err = Some(format!("cannot open a UDP socket: {err}"));
                    continue;
                }
            };
            match socket.connect(addr).await {
                Ok(()) => return Ok(socket),
                Err(err) => last_err = Some(format!("cannot address {addr}: {err}")),
            }
        }
        Err(last_err.unwrap_or_else(|| "the address resolved to nothing".to_owned()))
    }

    async fn connect_tcp(&self) -> Result<TcpStream, String> {
        let addrs = self.resolve().await?;
        let mut tcp = None;
        let mut errors = Vec::new();
        for addr in addrs {
            match TcpStream::connect(addr).await {
                Ok(stream) => {
                    tcp = Some(stream);
                    break;
                }
                Err(err) => errors.push(format!("{addr}: {err}")),
            }
        }
        let Some(tcp) = tcp else {
            return Err(format!("cannot connect: {}", errors.join("; ")));
        };
        let _ = tcp.set_nodelay(true);
        Ok(tcp)
    }

    async fn connect_stream(&self) -> Result<Conn, String> {
        let tcp = self.connect_tcp().await?;
        if self.config.transport == SyslogTransport::Tcp {
            return Ok(Conn::Tcp(tcp));
        }
        let base = self.tls.as_ref().expect("a TLS sink has a TLS config");
        let (config, ticket_watch) = tls::for_one_connection(base);
        let server_name = tls::server_name(&self.config)?;
        let shown_name = server_name.to_str().into_owned();
        let checked = tls::checked(&self.config, &shown_name);
        let mut stream = tokio_rustls::TlsConnector::from(config)
            .connect(server_name, tcp)
            .await
            .map_err(|err| {
                format!(
                    "TLS handshake failed (verifying the server as \"{shown_name}\"): {}",
                    explain_io(&err, &checked)
                )
            })?;
        if stream.get_ref().1.protocol_version() == Some(rustls::ProtocolVersion::TLSv1_3) {
            // Wait for the server's verdict: a session ticket (accepted), or an alert or a close
            // (refused); a server that sends no tickets gets TLS_VERDICT_WAIT.
            let mut buf = [0u8; 256];
            let verdict = tokio::time::timeout(TLS_VERDICT_WAIT, async {
                tokio::select! {
                    () = ticket_watch.ticket.notified() => Ok(()),
                    read = stream.read(&mut buf) => match read {
                        Ok(0) => Err(refused(&checked, None)),
                        Ok(_) => Ok(()),
                        Err(err) => Err(refused(&checked, Some(&err))),
                    },
                }
            })
            .await;
            if let Ok(Err(refusal)) = verdict {
                return Err(refusal);
            }
        }
        Ok(Conn::Tls(Box::new(stream)))
    }

    /// Opens what a delivery would (a socket, a TCP connection, a TLS session with the
    /// server's verdict, a RELP session) and closes it again; what worked, or what did not.
    pub async fn probe(&self) -> Result<String, String> {
        let timeout = self.config.timeout;
        let probing = async {
            match self.config.transport {
                SyslogTransport::Udp => {
                    self.connect_udp().await?;
                    Ok("UDP socket ready (UDP cannot tell whether anyone listens)".to_owned())
                }
                SyslogTransport::Tcp | SyslogTransport::Tls => {
                    let mut conn = self.connect_stream().await?;
                    let _ = conn.shutdown().await;
                    Ok(match self.config.transport {
                        SyslogTransport::Tls => "TLS session accepted".to_owned(),
                        _ => "TCP connection accepted".to_owned(),
                    })
                }
                SyslogTransport::Relp => {
                    let tcp = self.connect_tcp().await?;
                    let session = relp::RelpSession::open(tcp).await?;
                    drop(session);
                    Ok("RELP session open".to_owned())
                }
            }
        };
        tokio::time::timeout(timeout, probing)
            .await
            .unwrap_or_else(|_| Err(format!("no answer within {}s", timeout.as_secs())))
    }

    async fn resolve(&self) -> Result<Vec<std::net::SocketAddr>, String> {
        let host = self.config.host.as_str();
        let addrs: Vec<_> = tokio::net::lookup_host((host, self.config.port))
            .await
            .map_err(|err| format!("cannot resolve {host}: {err}"))?
            .collect();
        if addrs.is_empty() {
            return Err(format!("cannot resolve {host}: no address"));
        }
        Ok(addrs)
    }
}

/// The error for a TLS 1.3 receiver that ended the session right after the handshake: the
/// alert it sent, explained, or a guess at why it closed the connection.
fn refused(checked: &Checked<'_>, error: Option<&io::Error>) -> String {
    let what = match error {
        Some(err) if crate::net::tls::rustls_error_of(err).is_some() => {
            return format!(
                "the receiver refused the TLS session after the handshake: {}",
                explain_io(err, checked)
            );
        }
        Some(err) => err.to_string(),
        None => "it closed the connection".to_owned(),
    };
    let hint = if checked.client_cert.is_some() {
        "did it reject our client certificate (client_cert)?"
    } else {
        "does it require a client certificate (set client_cert and client_key)?"
    };
    format!("the receiver refused the TLS session after the handshake: {what}; {hint}")
}

impl Conn {
    /// Whether the receiver has closed or broken the connection, without waiting. A syslog
    /// receiver sends nothing, so readable data other than TLS records means the end.
    fn peer_closed(&mut self) -> Option<String> {
        match self {
            Conn::Udp(_) => None,
            Conn::Tcp(stream) => poll_closed(stream),
            Conn::Tls(stream) => poll_closed(&mut **stream),
            Conn::Relp(session) => session.peer_closed(),
        }
    }

    async fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        match self {
            Conn::Udp(_) | Conn::Relp(_) => unreachable!("messages are sent one by one"),
            Conn::Tcp(stream) => stream.write_all(bytes).await,
            Conn::Tls(stream) => stream.write_all(bytes).await,
        }
    }

    async fn shutdown(&mut self) -> io::Result<()> {
        match self {
            Conn::Udp(_) => Ok(()),
            Conn::Tcp(stream) => stream.shutdown().await,
            Conn::Tls(stream) => stream.shutdown().await,
            Conn::Relp(session) => session.close().await.map_err(io::Error::other),
        }
    }

    async fn flush(&mut self) -> io::Result<()> {
        match self {
            Conn::Udp(_) | Conn::Relp(_) => Ok(()),
            Conn::Tcp(stream) => stream.flush().await,
            Conn::Tls(stream) => stream.flush().await,
        }
    }
}

/// What one read that does not wait finds on a connection the receiver should not be
/// writing to.
pub(super) enum Peek {
    /// Nothing to read: the connection is open.
    Nothing,
    /// The end of the stream, or an error: the connection is done, and why.
    Closed(String),
    /// Bytes the receiver sent.
    Data(Vec<u8>),
}

/// Polls a read once with a waker that does nothing: the one probe of a receiver that has
/// closed or broken the connection, for the syslog connections and RELP alike.
pub(super) fn peek<S: AsyncRead + Unpin>(stream: &mut S) -> Peek {
    let mut cx = Context::from_waker(std::task::Waker::noop());
    let mut buf = [0u8; 512];
    let mut read = ReadBuf::new(&mut buf);
    match Pin::new(stream).poll_read(&mut cx, &mut read) {
        Poll::Pending => Peek::Nothing,
        Poll::Ready(Ok(())) if read.filled().is_empty() => Peek::Closed("end of stream".to_owned()),
        Poll::Ready(Ok(())) => Peek::Data(read.filled().to_vec()),
        Poll::Ready(Err(err)) => Peek::Closed(err.to_string()),
    }
}

/// `None` while the connection is open, otherwise why it is done. A syslog receiver sends
/// nothing, so bytes it does send are read past.
fn poll_closed<S: AsyncRead + Unpin>(stream: &mut S) -> Option<String> {
    loop {
        match peek(stream) {
            Peek::Nothing => return None,
            Peek::Closed(why) => return Some(why),
            Peek::Data(_) => {}
        }
    }
}

/// The machine's name for HOSTNAME (Linux), or the NILVALUE when it cannot be read.
fn machine_hostname() -> String {
    ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .find_map(|path| {
            let name = std::fs::read_to_string(path).ok()?;
            let name = name.trim();
            (!name.is_empty()).then(|| name.to_owned())
        })
        .unwrap_or_else(|| "-".to_owned())
}
