//! A RELP client (the Reliable Event Logging Protocol of rsyslog's librelp): each message is
//! acknowledged by the receiver, so "delivered" means "the receiver took it", not "written to
//! a socket".
//!
//! A frame is `TXNR SP COMMAND SP DATALEN [SP DATA] LF`. The session opens with an `open`
//! offer (`relp_version=0`, `commands=syslog`) that the server answers `200 OK`; each message
//! is a `syslog` command answered by `rsp` with the same transaction number and `200 OK`.
//! Messages are pipelined, at most [`WINDOW`] unanswered at a time, and a batch counts as
//! delivered only when every message in it has its `200 OK`.

use std::io::Write as _;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How many messages may await their answer at once (librelp's default window is 128).
pub const WINDOW: usize = 128;
/// The largest answer we accept from the receiver (answers are a status and an offer).
const MAX_ANSWER_BYTES: usize = 64 * 1024;
/// Transaction numbers run from 1 to this, then start again at 1.
const MAX_TXNR: u32 = 999_999_999;

/// One frame received from the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub txnr: u32,
    pub command: String,
    pub data: Vec<u8>,
}

/// An open RELP session over TCP.
pub struct RelpSession {
    stream: TcpStream,
    /// The transaction number of the next command.
    next_txnr: u32,
    /// Bytes read but not yet parsed into frames.
    read_buf: Vec<u8>,
}

impl RelpSession {
    /// Opens a session: sends the offer and checks the server's answer.
    pub async fn open(stream: TcpStream) -> Result<RelpSession, String> {
        let mut session = RelpSession {
            stream,
            next_txnr: 1,
            read_buf: Vec::new(),
        };
        let offer = concat!(
            "relp_version=0\nrelp_software=op-events-forwarder,",
            env!("CARGO_PKG_VERSION"),
            "\ncommands=syslog"
        );
        let txnr = session.take_txnr();
        let mut out = Vec::new();
        write_frame(&mut out, txnr, "open", offer.as_bytes());
        session.write(&out).await?;
        let answer = session.read_frame().await?;
        let data = check_answer(&answer, txnr)?;
        let offers_syslog = data.split(|b| *b == b'\n').any(|line| {
            line.starts_with(b"commands=")
                && line[9..].split(|b| *b == b',').any(|c| c == b"syslog")
        });
        if !offers_syslog {
            return Err(format!(
                "the RELP server does not offer the syslog command: {}",
                String::from_utf8_lossy(&data)
            ));
        }
        Ok(session)
    }

    /// Sends every message and returns once each has been answered `200 OK`.
    ///
    /// Writing and reading run side by side: messages go out while earlier answers come in,
    /// at most [`WINDOW`] unanswered. (Waiting for answers with nothing to send would stall on
    /// delayed acknowledgements between the receiver's small answers.)
    pub async fn send(&mut self, messages: &[&[u8]]) -> Result<(), String> {
        if messages.is_empty() {
            return Ok(());
        }
        let first_txnr = self.next_txnr;
        let mut txnrs = Vec::with_capacity(messages.len());
        for _ in messages {
            txnrs.push(self.take_txnr());
        }
        let window = tokio::sync::Semaphore::new(WINDOW);
        let (mut reader, mut writer) = self.stream.split();
        let read_buf = &mut self.read_buf;
        let write = async {
            let mut out = Vec::with_capacity(64 * 1024);
            for (message, txnr) in messages.iter().zip(&txnrs) {
                let permit = match window.try_acquire() {
                    Ok(permit) => permit,
                    Err(_) => {
                        // The window is full: send what is buffered, then wait for answers.
                        writer.write_all(&out).await.map_err(write_failed)?;
                        out.clear();
                        window
                            .acquire()
                            .await
                            .map_err(|_| "the RELP window closed".to_owned())?
                    }
                };
                permit.forget();
                write_frame(&mut out, *txnr, "syslog", message);
                if out.len() >= 64 * 1024 {
                    writer.write_all(&out).await.map_err(write_failed)?;
                    out.clear();
                }
            }
            writer.write_all(&out).await.map_err(write_failed)?;
            writer.flush().await.map_err(write_failed)
        };
        let read = async {
            let mut txnr = first_txnr;
            for _ in messages {
                let answer = read_frame(&mut reader, read_buf).await?;
                check_answer(&answer, txnr)?;
                window.add_permits(1);
                txnr = following_txnr(txnr);
            }
            Ok::<(), String>(())
        };
        tokio::try_join!(write, read).map(|_| ())
    }

    /// Ends the session politely: `close`, and its answer.
    pub async fn close(&mut self) -> Result<(), String> {
        let txnr = self.take_txnr();
        let mut out = Vec::new();
        write_frame(&mut out, txnr, "close", b"");
        self.write(&out).await?;
        let answer = self.read_frame().await?;
        if answer.command != "rsp" || answer.txnr != txnr {
            return Err(unexpected(&answer, txnr));
        }
        let _ = self.stream.shutdown().await;
        Ok(())
    }

    /// Whether the server has ended the session (a `serverclose`, anything else unasked for,
    /// an end of stream or an error), without waiting.
    pub fn peer_closed(&mut self) -> Option<String> {
        match super::peek(&mut self.stream) {
            super::Peek::Nothing => None,
            super::Peek::Closed(why) => Some(why),
            super::Peek::Data(bytes) => Some(format!(
                "the server sent {:?} unasked",
                String::from_utf8_lossy(&bytes)
            )),
        }
    }

    fn take_txnr(&mut self) -> u32 {
        let txnr = self.next_txnr;
        self.next_txnr = following_txnr(txnr);
        txnr
    }

    async fn write(&mut self, bytes: &[u8]) -> Result<(), String> {
        self.stream
            .write_all(bytes)
            .await
            .map_err(|err| format!("write failed: {err}"))
    }

    async fn read_frame(&mut self) -> Result<Frame, String> {
        read_frame(&mut self.stream, &mut self.read_buf).await
    }
}

fn write_failed(err: std::io::Error) -> String {
    format!("write failed: {err}")
}

/// Reads the next frame from `reader`, keeping what follows it in `read_buf`.
async fn read_frame<R: AsyncRead + Unpin>(
    reader: &mut R,
    read_buf: &mut Vec<u8>,
) -> Result<Frame, String> {
    loop {
        match parse_frame(read_buf)? {
            Some((frame, used)) => {
                read_buf.drain(..used);
                return Ok(frame);
            }
            None if read_buf.len() > MAX_ANSWER_BYTES => {
                return Err("the RELP server sent an answer too large to be one".to_owned());
            }
            None => {}
        }
        let mut buf = [0u8; 4096];
        let n = reader
            .read(&mut buf)
            .await
            .map_err(|err| format!("read failed: {err}"))?;
        if n == 0 {
            return Err("the RELP server closed the connection".to_owned());
        }
        read_buf.extend_from_slice(&buf[..n]);
    }
}

/// The transaction number after `txnr`: 1 to 999,999,999, then 1 again.
pub fn following_txnr(txnr: u32) -> u32 {
    if txnr >= MAX_TXNR { 1 } else { txnr + 1 }
}

/// Appends one frame to `out`.
pub fn write_frame(out: &mut Vec<u8>, txnr: u32, command: &str, data: &[u8]) {
    let _ = write!(out, "{txnr} {command} {}", data.len());
    if !data.is_empty() {
        out.push(b' ');
        out.extend_from_slice(data);
    }
    out.push(b'\n');
}

/// Parses the first frame of `buf`: `Ok(None)` if it is not complete yet, the frame and the
/// bytes it took otherwise.
pub fn parse_frame(buf: &[u8]) -> Result<Option<(Frame, usize)>, String> {
    let malformed = || {
        let end = buf.len().min(80);
        format!(
            "the RELP server sent a malformed frame: {:?}",
            String::from_utf8_lossy(&buf[..end])
        )
    };
    // TXNR SP COMMAND SP DATALEN: three space-separated tokens before the data.
    let mut fields = Vec::with_capacity(3);
    let mut start = 0;
    let mut pos = 0;
    while fields.len() < 3 {
        let Some(&byte) = buf.get(pos) else {
            return if pos > 64 { Err(malformed()) } else { Ok(None) };
        };
        if byte == b' ' || (fields.len() == 2 && byte == b'\n') {
            fields.push(&buf[start..pos]);
            start = pos + 1;
        } else if pos - start > 32 {
            return Err(malformed());
        }
        pos += 1;
    }
    let parse_num = |field: &[u8]| -> Option<usize> {
        (!field.is_empty() && field.iter().all(u8::is_ascii_digit))
            .then(|| std::str::from_utf8(field).ok()?.parse().ok())
            .flatten()
    };
    let txnr = parse_num(fields[0])
        .and_then(|n| u32::try_from(n).ok())
        .ok_or_else(malformed)?;
    let command = std::str::from_utf8(fields[1])
        .ok()
        .filter(|c| !c.is_empty() && c.bytes().all(|b| b.is_ascii_alphabetic()))
        .ok_or_else(malformed)?
        .to_owned();
    let len = parse_num(fields[2]).ok_or_else(malformed)?;
    // After DATALEN: LF (no data), or SP DATA LF.
    let after_len = buf[pos - 1];
    let (data, end) = if len == 0 {
        if after_len != b'\n' {
            return Err(malformed());
        }
        (Vec::new(), pos)
    } else {
        if after_len != b' ' {
            return Err(malformed());
        }
        if buf.len() < pos + len + 1 {
            return Ok(None);
        }
        if buf[pos + len] != b'\n' {
            return Err(malformed());
        }
        (buf[pos..pos + len].to_vec(), pos + len + 1)
    };
    Ok(Some((
        Frame {
            txnr,
            command,
            data,
        },
        end,
    )))
}

/// The data after `200 OK` of an answer to transaction `txnr`, or why it is not one.
fn check_answer(frame: &Frame, txnr: u32) -> Result<Vec<u8>, String> {
    if frame.command != "rsp" || frame.txnr != txnr {
        return Err(unexpected(frame, txnr));
    }
    match frame.data.strip_prefix(b"200 OK") {
        Some(rest) => Ok(rest.strip_prefix(b"\n").unwrap_or(rest).to_vec()),
        None => Err(format!(
            "the RELP server refused transaction {txnr}: {}",
            String::from_utf8_lossy(&frame.data)
        )),
    }
}

fn unexpected(frame: &Frame, txnr: u32) -> String {
    if frame.command == "serverclose" {
        return "the RELP server closed the session".to_owned();
    }
    format!(
        "expected the RELP answer to transaction {txnr}, got \"{} {}\"",
        frame.txnr, frame.command
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(txnr: u32, command: &str, data: &[u8]) -> Frame {
        Frame {
            txnr,
            command: command.to_owned(),
            data: data.to_vec(),
        }
    }

    #[test]
    fn frames_are_written_as_librelp_reads_them() {
        let mut out = Vec::new();
        write_frame(&mut out, 2, "syslog", "<86>1 - é".as_bytes());
        write_frame(&mut out, 3, "close", b"");
        assert_eq!(out, "2 syslog 10 <86>1 - é\n3 close 0\n".as_bytes());
    }

    #[test]
    fn answers_parse_whole_or_not_at_all() {
        let open = b"1 rsp 93 200 OK\nrelp_version=0\nrelp_software=librelp,1.11.0,http://librelp.adiscon.com\ncommands=syslog\n";
        let (parsed, used) = parse_frame(open).unwrap().unwrap();
        assert_eq!(used, open.len());
        assert_eq!(parsed.txnr, 1);
        assert_eq!(parsed.command, "rsp");
        assert!(parsed.data.ends_with(b"commands=syslog"));
        assert_eq!(
            check_answer(&parsed, 1).unwrap(),
            b"relp_version=0\nrelp_software=librelp,1.11.0,http://librelp.adiscon.com\ncommands=syslog"
        );
        for cut in 0..open.len() {
            assert_eq!(parse_frame(&open[..cut]).unwrap(), None, "{cut}");
        }

        let two = b"2 rsp 6 200 OK\n4 rsp 0\n0 serverclose 0\n";
        let (first, used) = parse_frame(two).unwrap().unwrap();
        assert_eq!(first, frame(2, "rsp", b"200 OK"));
        let (second, used2) = parse_frame(&two[used..]).unwrap().unwrap();
        assert_eq!(second, frame(4, "rsp", b""));
        let (third, _) = parse_frame(&two[used + used2..]).unwrap().unwrap();
        assert_eq!(third, frame(0, "serverclose", b""));
        assert_eq!(
            check_answer(&third, 5).unwrap_err(),
            "the RELP server closed the session"
        );
        assert_eq!(
            check_answer(&frame(7, "rsp", b"500 not accepting"), 7).unwrap_err(),
            "the RELP server refused transaction 7: 500 not accepting"
        );
        assert_eq!(
            check_answer(&frame(8, "rsp", b"200 OK"), 7).unwrap_err(),
            "expected the RELP answer to transaction 7, got \"8 rsp\""
        );
    }

    #[test]
    fn malformed_answers_are_errors() {
        for bad in [
            &b"x rsp 6 200 OK\n"[..],
            b"1 rsp 6x200 OK\n",
            b"1 rsp 3 200 OK\n",
            b"1 r$p 0\n",
            b"1 rsp 0 \n",
            b"1 rsp -1 \n",
        ] {
            assert!(
                parse_frame(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn transaction_numbers_wrap() {
        assert_eq!(following_txnr(1), 2);
        assert_eq!(following_txnr(MAX_TXNR - 1), MAX_TXNR);
        assert_eq!(following_txnr(MAX_TXNR), 1);
    }
}
