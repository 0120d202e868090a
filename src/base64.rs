//! Base64 in the two forms the project meets: the standard alphabet with padding (the
//! simulator's cursors, shaped like the API's own examples) and base64url without padding
//! (JWT segments). A few lines, so no crate.

/// Which 64 symbols encode the 6-bit groups.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alphabet {
    /// `+` and `/`, padded with `=`.
    Standard,
    /// `-` and `_`, unpadded.
    Url,
}

impl Alphabet {
    fn symbols(self) -> &'static [u8; 64] {
        match self {
            Alphabet::Standard => {
                b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
            }
            Alphabet::Url => b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_",
        }
    }

    fn pads(self) -> bool {
        self == Alphabet::Standard
    }
}

/// Encodes `bytes`; padded for [`Alphabet::Standard`], unpadded for [`Alphabet::Url`].
pub fn encode(bytes: &[u8], alphabet: Alphabet) -> String {
    let symbols = alphabet.symbols();
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for symbol_idx in 0..4 {
            if symbol_idx <= chunk.len() {
                out.push(char::from(
                    symbols[((n >> (18 - 6 * symbol_idx)) & 63) as usize],
                ));
            } else if alphabet.pads() {
                out.push('=');
            }
        }
    }
    out
}

/// Decodes text in `alphabet`, with or without padding; `None` for any other symbol or an
/// impossible length. Callers that need one spelling per value compare with [`encode`].
pub fn decode(text: &str, alphabet: Alphabet) -> Option<Vec<u8>> {
    let symbols = alphabet.symbols();
    let text = text.trim_end_matches('=').as_bytes();
    if text.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    for chunk in text.chunks(4) {
        let mut n = 0u32;
        for &c in chunk {
            let value = symbols.iter().position(|&symbol| symbol == c)?;
            n = (n << 6) | value as u32;
        }
        n <<= 6 * (4 - chunk.len()) as u32;
        let decoded = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        out.extend_from_slice(&decoded[..chunk.len() - 1]);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_official_cursor_example_round_trips() {
        let example = "aGVsbG8hIGlzIGl0IG1lIHlvdSBhcmUgbG9va2luZyBmb3IK";
        let decoded = decode(example, Alphabet::Standard).unwrap();
        assert_eq!(decoded, b"hello! is it me you are looking for\n");
        assert_eq!(encode(&decoded, Alphabet::Standard), example);
    }

    #[test]
    fn every_length_round_trips_in_both_alphabets() {
        for len in 0..12 {
            let bytes: Vec<u8> = (0..len).map(|b: u8| b.wrapping_mul(97) ^ 0xfb).collect();
            for alphabet in [Alphabet::Standard, Alphabet::Url] {
                let text = encode(&bytes, alphabet);
                assert_eq!(
                    decode(&text, alphabet),
                    Some(bytes.clone()),
                    "{alphabet:?} {len}"
                );
            }
        }
        assert_eq!(encode(b"hi", Alphabet::Standard), "aGk=");
        assert_eq!(encode(b"hi", Alphabet::Url), "aGk");
        assert_eq!(encode(&[0xfb, 0xff], Alphabet::Url), "-_8");
        assert_eq!(encode(&[0xfb, 0xff], Alphabet::Standard), "+/8=");
    }

    #[test]
    fn foreign_symbols_and_impossible_lengths_are_refused() {
        assert_eq!(decode("a", Alphabet::Url), None);
        assert_eq!(decode("a+b/", Alphabet::Url), None);
        assert_eq!(decode("a-b_", Alphabet::Standard), None);
        assert_eq!(decode("aGk=", Alphabet::Url), Some(b"hi".to_vec()));
    }
}
