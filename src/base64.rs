//! Base64 in the two forms the project meets: the standard alphabet with padding (the
//! simulator's cursors, shaped like the API's own examples) and base64url without padding
//! (JWT segments), both read with or without padding. The `base64` crate does the work (it
//! is in the tree already, through rustls's PEM reading); this module only names the two
//! forms, so callers never pick an engine's options themselves.

use base64::Engine as _;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};

/// Which 64 symbols encode the 6-bit groups.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alphabet {
    /// `+` and `/`, padded with `=`.
    Standard,
    /// `-` and `_`, unpadded.
    Url,
}

const STANDARD: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_encode_padding(true)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent),
);
const URL: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::URL_SAFE,
    GeneralPurposeConfig::new()
        .with_encode_padding(false)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

impl Alphabet {
    fn engine(self) -> &'static GeneralPurpose {
        match self {
            Alphabet::Standard => &STANDARD,
            Alphabet::Url => &URL,
        }
    }
}

/// Encodes `bytes`; padded for [`Alphabet::Standard`], unpadded for [`Alphabet::Url`].
pub fn encode(bytes: &[u8], alphabet: Alphabet) -> String {
    alphabet.engine().encode(bytes)
}

/// Decodes text in `alphabet`, with or without padding; `None` for any other symbol or an
/// impossible length. Callers that need one spelling per value compare with [`encode`].
pub fn decode(text: &str, alphabet: Alphabet) -> Option<Vec<u8>> {
    alphabet.engine().decode(text).ok()
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
