//! The validity period of an X.509 certificate, read from its DER.
//!
//! The pinned-certificate check ([`super::tls`]) must compare a certificate's `notBefore` and
//! `notAfter` with the time, and webpki, which parses them, does not expose them. This is a
//! walk of the DER down to `TBSCertificate.validity` (RFC 5280 §4.1), strict where DER is
//! strict (definite, minimal lengths; `UTCTime` and `GeneralizedTime` in their DER forms, in
//! UTC, with seconds), and nothing more: the rest of the certificate is webpki's to check.

use rustls::pki_types::UnixTime;

/// When a certificate may be used: from `not_before` to `not_after`, both included.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Validity {
    pub not_before: UnixTime,
    pub not_after: UnixTime,
}

/// Why a certificate's validity could not be read; the DER is not what RFC 5280 describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("cannot read the certificate's validity: {0}")]
pub struct ValidityError(&'static str);

const SEQUENCE: u8 = 0x30;
const INTEGER: u8 = 0x02;
/// `[0] EXPLICIT Version` of `TBSCertificate`.
const VERSION: u8 = 0xa0;
const UTC_TIME: u8 = 0x17;
const GENERALIZED_TIME: u8 = 0x18;

/// Reads `notBefore` and `notAfter` of a DER certificate. Times before 1970 (possible in
/// `notBefore`) read as the epoch: only whether now is past them matters, and it is.
///
/// # Errors
///
/// Returns a [`ValidityError`] naming the first thing that is not as RFC 5280 says.
pub fn validity(der: &[u8]) -> Result<Validity, ValidityError> {
    let (certificate, _) = expect(der, SEQUENCE, "the certificate is not a DER SEQUENCE")?;
    let (tbs, _) = expect(
        certificate,
        SEQUENCE,
        "the certificate holds no TBSCertificate",
    )?;
    let mut rest = tbs;
    if rest.first() == Some(&VERSION) {
        rest = element(rest)?.2;
    }
    let (_, rest) = expect(rest, INTEGER, "no serial number")?;
    let (_, rest) = expect(rest, SEQUENCE, "no signature algorithm")?;
    let (_, rest) = expect(rest, SEQUENCE, "no issuer")?;
    let (validity, _) = expect(rest, SEQUENCE, "no validity")?;
    let (not_before, rest) = time(validity)?;
    let (not_after, rest) = time(rest)?;
    if !rest.is_empty() {
        return Err(ValidityError("the validity holds more than two times"));
    }
    Ok(Validity {
        not_before,
        not_after,
    })
}

/// The contents of the element at the start of `input`, which must have tag `tag`, and what
/// follows it; `otherwise` when there is no such element.
fn expect<'a>(
    input: &'a [u8],
    tag: u8,
    otherwise: &'static str,
) -> Result<(&'a [u8], &'a [u8]), ValidityError> {
    if input.is_empty() {
        return Err(ValidityError(otherwise));
    }
    match element(input) {
        Ok((found, contents, rest)) if found == tag => Ok((contents, rest)),
        Ok(_) => Err(ValidityError(otherwise)),
        Err(err) => Err(err),
    }
}

/// The element at the start of `input`: its tag, its contents and what follows it. Lengths
/// must be definite and minimal (DER); four length bytes are plenty for a certificate.
fn element(input: &[u8]) -> Result<(u8, &[u8], &[u8]), ValidityError> {
    let truncated = ValidityError("the DER ends inside an element");
    let (&tag, rest) = input.split_first().ok_or(truncated)?;
    let (&first, rest) = rest.split_first().ok_or(truncated)?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 {
            return Err(ValidityError("a DER length is indefinite or too long"));
        }
        if rest.len() < n {
            return Err(truncated);
        }
        let (bytes, rest) = rest.split_at(n);
        let len = bytes
            .iter()
            .fold(0usize, |len, &byte| len << 8 | usize::from(byte));
        if bytes[0] == 0 || len < 0x80 {
            return Err(ValidityError("a DER length is not minimal"));
        }
        (len, rest)
    };
    if rest.len() < len {
        return Err(truncated);
    }
    let (contents, rest) = rest.split_at(len);
    Ok((tag, contents, rest))
}

/// The `Time` at the start of `input` and what follows it.
fn time(input: &[u8]) -> Result<(UnixTime, &[u8]), ValidityError> {
    let (tag, contents, rest) = element(input)?;
    let seconds = match tag {
        UTC_TIME => utc_time(contents)?,
        GENERALIZED_TIME => generalized_time(contents)?,
        _ => {
            return Err(ValidityError(
                "a validity time is neither UTCTime nor GeneralizedTime",
            ));
        }
    };
    let since_epoch = std::time::Duration::from_secs(u64::try_from(seconds).unwrap_or(0));
    Ok((UnixTime::since_unix_epoch(since_epoch), rest))
}

/// `YYMMDDHHMMSSZ`; YY below 50 is 20YY, else 19YY (RFC 5280 §4.1.2.5.1).
fn utc_time(text: &[u8]) -> Result<i64, ValidityError> {
    match text {
        [digits @ .., b'Z'] if digits.len() == 12 => {
            let yy = number(&digits[..2])?;
            let year = if yy < 50 { 2000 + yy } else { 1900 + yy };
            unix_seconds(year, &digits[2..])
        }
        _ => Err(ValidityError("a UTCTime is not YYMMDDHHMMSSZ")),
    }
}

/// `YYYYMMDDHHMMSSZ` (RFC 5280 §4.1.2.5.2: no fraction of a second).
fn generalized_time(text: &[u8]) -> Result<i64, ValidityError> {
    match text {
        [digits @ .., b'Z'] if digits.len() == 14 => {
            unix_seconds(number(&digits[..4])?, &digits[4..])
        }
        _ => Err(ValidityError("a GeneralizedTime is not YYYYMMDDHHMMSSZ")),
    }
}

/// Seconds since the epoch of `year` and `MMDDHHMMSS`.
fn unix_seconds(year: i32, rest: &[u8]) -> Result<i64, ValidityError> {
    let invalid = ValidityError("a validity time is not a date and time");
    // Two digits: always below 100.
    let part = |at: usize| number(&rest[at..at + 2]).map(|n| n.to_le_bytes()[0]);
    let [month, day, hour, minute, second] = [part(0)?, part(2)?, part(4)?, part(6)?, part(8)?];
    let month = time::Month::try_from(month).map_err(|_| invalid)?;
    let date = time::Date::from_calendar_date(year, month, day).map_err(|_| invalid)?;
    let at = time::Time::from_hms(hour, minute, second).map_err(|_| invalid)?;
    Ok(date.with_time(at).assume_utc().unix_timestamp())
}

/// The value of ASCII decimal digits.
fn number(digits: &[u8]) -> Result<i32, ValidityError> {
    digits.iter().try_fold(0i32, |n, &digit| match digit {
        b'0'..=b'9' => Ok(n * 10 + i32::from(digit - b'0')),
        _ => Err(ValidityError(
            "a validity time holds a character that is not a digit",
        )),
    })
}

#[cfg(test)]
mod tests {
    use rcgen::{CertificateParams, KeyPair};
    use time::macros::datetime;

    use super::*;

    fn at(unix: i64) -> UnixTime {
        UnixTime::since_unix_epoch(std::time::Duration::from_secs(u64::try_from(unix).unwrap()))
    }

    /// A certificate valid from `not_before` to `not_after`, as rcgen writes it.
    fn certificate(not_before: time::OffsetDateTime, not_after: time::OffsetDateTime) -> Vec<u8> {
        let mut params = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        params.not_before = not_before;
        params.not_after = not_after;
        let key = KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn reads_utc_times_and_generalized_times() {
        // rcgen writes UTCTime up to 2049 and GeneralizedTime from 2050, as RFC 5280 says.
        let der = certificate(
            datetime!(2026-03-04 05:06:07 UTC),
            datetime!(2060-12-31 23:59:59 UTC),
        );
        assert_eq!(
            validity(&der).unwrap(),
            Validity {
                not_before: at(datetime!(2026-03-04 05:06:07 UTC).unix_timestamp()),
                not_after: at(datetime!(2060-12-31 23:59:59 UTC).unix_timestamp()),
            }
        );
    }

    #[test]
    fn reads_the_years_of_utc_time_as_rfc_5280_says() {
        assert_eq!(
            utc_time(b"491231235959Z"),
            Ok(datetime!(2049-12-31 23:59:59 UTC).unix_timestamp())
        );
        assert_eq!(
            utc_time(b"500101000000Z"),
            Ok(datetime!(1950-01-01 00:00:00 UTC).unix_timestamp())
        );
        assert_eq!(
            generalized_time(b"99991231235959Z"),
            Ok(datetime!(9999-12-31 23:59:59 UTC).unix_timestamp())
        );
    }

    #[test]
    fn times_before_1970_read_as_the_epoch() {
        let der = certificate(
            datetime!(1960-01-01 00:00:00 UTC),
            datetime!(2030-01-01 00:00:00 UTC),
        );
        assert_eq!(validity(&der).unwrap().not_before, at(0));
    }

    #[test]
    fn refuses_what_rfc_5280_does_not_allow() {
        for (text, want) in [
            (&b"2601010000Z"[..], "a UTCTime is not YYMMDDHHMMSSZ"),
            (b"260101000000+0100", "a UTCTime is not YYMMDDHHMMSSZ"),
            (b"261301000000Z", "a validity time is not a date and time"),
            (b"260230000000Z", "a validity time is not a date and time"),
            (b"260101240000Z", "a validity time is not a date and time"),
            (
                b"2601010000a0Z",
                "a validity time holds a character that is not a digit",
            ),
        ] {
            assert_eq!(
                utc_time(text).unwrap_err().to_string(),
                format!("cannot read the certificate's validity: {want}"),
                "{}",
                String::from_utf8_lossy(text)
            );
        }
        assert_eq!(
            generalized_time(b"20260101000000.5Z").unwrap_err().0,
            "a GeneralizedTime is not YYYYMMDDHHMMSSZ"
        );
    }

    /// A DER element of short length.
    fn tlv(tag: u8, contents: &[u8]) -> Vec<u8> {
        let mut der = vec![tag, u8::try_from(contents.len()).unwrap()];
        der.extend_from_slice(contents);
        der
    }

    /// A certificate whose TBSCertificate holds `fields` after a serial number, a signature
    /// algorithm and an issuer.
    fn with_fields(fields: &[u8]) -> Vec<u8> {
        let mut tbs = tlv(INTEGER, &[1]);
        tbs.extend(tlv(SEQUENCE, &[]));
        tbs.extend(tlv(SEQUENCE, &[]));
        tbs.extend_from_slice(fields);
        tlv(SEQUENCE, &tlv(SEQUENCE, &tbs))
    }

    #[test]
    fn reads_a_minimal_tbs_certificate_without_a_version() {
        let times = [
            tlv(UTC_TIME, b"260101000000Z"),
            tlv(GENERALIZED_TIME, b"20270101000000Z"),
        ]
        .concat();
        assert_eq!(
            validity(&with_fields(&tlv(SEQUENCE, &times))).unwrap(),
            Validity {
                not_before: at(datetime!(2026-01-01 00:00:00 UTC).unix_timestamp()),
                not_after: at(datetime!(2027-01-01 00:00:00 UTC).unix_timestamp()),
            }
        );
    }

    #[test]
    fn refuses_broken_der() {
        let der = certificate(
            datetime!(2026-01-01 00:00:00 UTC),
            datetime!(2027-01-01 00:00:00 UTC),
        );
        let cut = der[..der.len() / 2].to_vec();
        let mut indefinite = der.clone();
        indefinite[1] = 0x80;
        let padded_length = [&[SEQUENCE, 0x81, 0x03][..], &tlv(SEQUENCE, &[0])].concat();
        let time = tlv(UTC_TIME, b"260101000000Z");
        let three_times = tlv(
            SEQUENCE,
            &[time.clone(), time.clone(), time.clone()].concat(),
        );
        let octets = tlv(SEQUENCE, &[time, tlv(0x04, b"260101000000Z")].concat());
        for (der, want) in [
            (cut, "the DER ends inside an element"),
            (indefinite, "a DER length is indefinite or too long"),
            (padded_length, "a DER length is not minimal"),
            (tlv(INTEGER, &[]), "the certificate is not a DER SEQUENCE"),
            (
                tlv(SEQUENCE, &tlv(INTEGER, &[])),
                "the certificate holds no TBSCertificate",
            ),
            (tlv(SEQUENCE, &tlv(SEQUENCE, &[])), "no serial number"),
            (with_fields(&tlv(INTEGER, &[])), "no validity"),
            (
                with_fields(&three_times),
                "the validity holds more than two times",
            ),
            (
                with_fields(&octets),
                "a validity time is neither UTCTime nor GeneralizedTime",
            ),
        ] {
            assert_eq!(validity(&der).unwrap_err().0, want, "{der:02x?}");
        }
    }
}
