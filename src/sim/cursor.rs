//! The simulator's opaque cursors: where a client is in one stream, and the window it asked for.
//!
//! A cursor is base64 of a small binary record (stream, position, limit, window, flags) followed by
//! a keyed 64-bit tag, so garbage, truncated or edited cursors are rejected rather than misread.
//! Cursors carry all their state, so any cursor can be reused any number of times.

use crate::base64::{self, Alphabet};
use time::OffsetDateTime;

use super::generate::combine;
use crate::stream::Stream;

/// The first byte of every cursor; bump it when the layout changes.
const VERSION: u8 = 1;
/// Flag bit: the cursor carries an end of window.
const FLAG_END: u8 = 1;
/// Flag bit: the cursor came with a deliberately empty page, so it must serve items next.
const FLAG_NO_EMPTY: u8 = 2;
/// Version, stream, flags, limit, position, start.
const FIXED_LEN: usize = 1 + 1 + 1 + 2 + 8 + 16;
/// The keyed tag at the end.
const TAG_LEN: usize = 8;

/// A decoded cursor: where to continue and the reset's parameters, which persist across pages.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Cursor {
    pub(crate) stream: Stream,
    /// Index (in insertion order) of the next item to serve.
    pub(crate) position: u64,
    /// Page size, 1..=1000, from the reset that started this chain.
    pub(crate) limit: u16,
    /// Items inserted before this instant are not served.
    pub(crate) start: OffsetDateTime,
    /// Items inserted after this instant are not served.
    pub(crate) end: Option<OffsetDateTime>,
    /// Set on the cursor of a deliberately empty page, so that the next page with it is never empty too.
    pub(crate) no_empty: bool,
}

/// Why a cursor string was rejected; each one is a 400 Bad Request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum CursorError {
    #[error("cursor is not base64")]
    Encoding,
    #[error("cursor has the wrong length")]
    Length,
    #[error("cursor has an unknown version")]
    Version,
    #[error("cursor was not issued by this simulator")]
    Tag,
    #[error("cursor has a field out of range")]
    Field,
    #[error("cursor belongs to stream {found}, not {expected}")]
    WrongStream { expected: Stream, found: Stream },
}

impl Cursor {
    /// The cursor as the opaque string handed to clients, tagged with `key`.
    pub(crate) fn encode(&self, key: u64) -> String {
        let mut bytes = Vec::with_capacity(FIXED_LEN + 16 + TAG_LEN);
        let mut flags = 0;
        if self.end.is_some() {
            flags |= FLAG_END;
        }
        if self.no_empty {
            flags |= FLAG_NO_EMPTY;
        }
        bytes.push(VERSION);
        bytes.push(stream_code(self.stream));
        bytes.push(flags);
        bytes.extend_from_slice(&self.limit.to_be_bytes());
        bytes.extend_from_slice(&self.position.to_be_bytes());
        bytes.extend_from_slice(&self.start.unix_timestamp_nanos().to_be_bytes());
        if let Some(end) = self.end {
            bytes.extend_from_slice(&end.unix_timestamp_nanos().to_be_bytes());
        }
        let tag = tag(key, &bytes);
        bytes.extend_from_slice(&tag.to_be_bytes());
        base64_encode(&bytes)
    }

    /// Parses a cursor string posted to `stream`'s endpoint.
    ///
    /// # Errors
    ///
    /// Fails when the string is not a cursor this simulator (with this `key`) issued, or was
    /// issued for another stream.
    pub(crate) fn decode(text: &str, key: u64, stream: Stream) -> Result<Cursor, CursorError> {
        let bytes = base64_decode(text).ok_or(CursorError::Encoding)?;
        if bytes.len() < FIXED_LEN + TAG_LEN {
            return Err(CursorError::Length);
        }
        let (body, tag_bytes) = bytes.split_at(bytes.len() - TAG_LEN);
        if body[0] != VERSION {
            return Err(CursorError::Version);
        }
        if tag_bytes != tag(key, body).to_be_bytes() {
            return Err(CursorError::Tag);
        }
        let flags = body[2];
        let expected_len = FIXED_LEN + if flags & FLAG_END != 0 { 16 } else { 0 };
        if body.len() != expected_len || flags & !(FLAG_END | FLAG_NO_EMPTY) != 0 {
            return Err(CursorError::Length);
        }
        let found = stream_from_code(body[1]).ok_or(CursorError::Field)?;
        if found != stream {
            return Err(CursorError::WrongStream {
                expected: stream,
                found,
            });
        }
        let mut reader = Reader(&body[3..]);
        let limit = u16::from_be_bytes(reader.take());
        let position = u64::from_be_bytes(reader.take());
        let start = instant(i128::from_be_bytes(reader.take()))?;
        let end = match flags & FLAG_END {
            0 => None,
            _ => Some(instant(i128::from_be_bytes(reader.take()))?),
        };
        if !(1..=1000).contains(&limit) {
            return Err(CursorError::Field);
        }
        Ok(Cursor {
            stream,
            position,
            limit,
            start,
            end,
            no_empty: flags & FLAG_NO_EMPTY != 0,
        })
    }
}

/// Reads fixed-size fields off the front of a slice whose length was checked beforehand.
struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> [u8; N] {
        let (head, rest) = self.0.split_at(N);
        self.0 = rest;
        let mut out = [0; N];
        out.copy_from_slice(head);
        out
    }
}

fn instant(nanos: i128) -> Result<OffsetDateTime, CursorError> {
    OffsetDateTime::from_unix_timestamp_nanos(nanos).map_err(|_| CursorError::Field)
}

fn stream_code(stream: Stream) -> u8 {
    match stream {
        Stream::AuditEvents => 0,
        Stream::ItemUsages => 1,
        Stream::SignInAttempts => 2,
        // The v3 endpoint pages with its own tokens; its code only keeps this match total.
        Stream::AuditV3 => 3,
    }
}

fn stream_from_code(code: u8) -> Option<Stream> {
    Stream::KNOWN
        .into_iter()
        .find(|stream| stream_code(*stream) == code)
}

/// A keyed 64-bit tag over `bytes`; it detects corruption and forgery by accident, not by an attacker.
fn tag(key: u64, bytes: &[u8]) -> u64 {
    bytes
        .chunks(8)
        .fold(combine(key, bytes.len() as u64), |h, chunk| {
            let mut word = [0; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            combine(h, u64::from_be_bytes(word))
        })
}

/// Standard base64 with padding, like the cursor in the official examples.
fn base64_encode(bytes: &[u8]) -> String {
    base64::encode(bytes, Alphabet::Standard)
}

/// Strict inverse of [`base64_encode`]: `None` for anything it could not have produced.
fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let bytes = base64::decode(text, Alphabet::Standard)?;
    // Reject non-canonical encodings (stray bits, missing or extra padding), so each cursor
    // has one spelling.
    (!text.is_empty() && base64_encode(&bytes) == text).then_some(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cursor(end: Option<OffsetDateTime>) -> Cursor {
        Cursor {
            stream: Stream::ItemUsages,
            position: 12_345,
            limit: 1000,
            start: time::macros::datetime!(2026-01-02 03:04:05.123456789 UTC),
            end,
            no_empty: true,
        }
    }

    #[test]
    fn round_trips() {
        for end in [None, Some(time::macros::datetime!(2026-02-01 00:00 -03:00))] {
            let original = cursor(end);
            let text = original.encode(7);
            assert_eq!(Cursor::decode(&text, 7, Stream::ItemUsages), Ok(original));
        }
    }

    #[test]
    fn rejects_garbage_foreign_and_edited_cursors() {
        let text = cursor(None).encode(7);
        assert_eq!(
            Cursor::decode(&text, 7, Stream::AuditEvents),
            Err(CursorError::WrongStream {
                expected: Stream::AuditEvents,
                found: Stream::ItemUsages
            })
        );
        assert_eq!(
            Cursor::decode(&text, 8, Stream::ItemUsages),
            Err(CursorError::Tag)
        );
        for garbage in [
            "",
            "x",
            "not a cursor",
            "aGVsbG8hIGlzIGl0IG1lIHlvdSBhcmUgbG9va2luZyBmb3IK",
            "====",
            "AA=A",
        ] {
            assert!(
                Cursor::decode(garbage, 7, Stream::ItemUsages).is_err(),
                "{garbage}"
            );
        }
        let mut edited = text.into_bytes();
        edited[10] = if edited[10] == b'A' { b'B' } else { b'A' };
        let edited = String::from_utf8(edited).unwrap();
        assert!(Cursor::decode(&edited, 7, Stream::ItemUsages).is_err());
    }

    #[test]
    fn base64_matches_the_official_example() {
        let example = "aGVsbG8hIGlzIGl0IG1lIHlvdSBhcmUgbG9va2luZyBmb3IK";
        let decoded = base64_decode(example).unwrap();
        assert_eq!(decoded, b"hello! is it me you are looking for\n");
        assert_eq!(base64_encode(&decoded), example);
        for len in 0..10 {
            let bytes: Vec<u8> = (0..len).map(|b: u8| b.wrapping_mul(37)).collect();
            let text = base64_encode(&bytes);
            assert_eq!(base64_decode(&text).unwrap_or_default(), bytes);
        }
    }
}
