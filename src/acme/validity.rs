//! When a certificate is valid: `notBefore` and `notAfter`, read straight from its DER, and when to renew it.
//!
//! Renewal needs these two dates and nothing else of the certificate, so a dozen lines of DER walking (RFC 5280
//! section 4.1: Certificate → TBSCertificate → version, serial, signature, issuer, validity) stand in for an X.509
//! parser crate. Anything unexpected answers `None`, and natter then treats the certificate as due.

/// Seconds since the Unix epoch, both ends inclusive as in RFC 5280.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Validity {
    pub not_before: i64,
    pub not_after: i64,
}

impl Validity {
    /// Reads the validity of a DER certificate.
    pub fn of(certificate: &[u8]) -> Option<Validity> {
        let (tag, certificate, _) = element(certificate)?;
        expect(tag, SEQUENCE)?;
        let (tag, mut fields, _) = element(certificate)?;
        expect(tag, SEQUENCE)?;
        let (mut tag, mut contents, mut rest) = element(fields)?;
        // The version is optional ([0] EXPLICIT); then serial, signature algorithm and issuer come before validity.
        if tag == VERSION {
            fields = rest;
            (tag, contents, rest) = element(fields)?;
        }
        for expected in [INTEGER, SEQUENCE, SEQUENCE] {
            expect(tag, expected)?;
            (tag, contents, rest) = element(rest)?;
        }
        expect(tag, SEQUENCE)?;
        let (first_tag, first, after) = element(contents)?;
        let (second_tag, second, _) = element(after)?;
        let validity = Validity {
            not_before: time(first_tag, first)?,
            not_after: time(second_tag, second)?,
        };
        (validity.not_after > validity.not_before).then_some(validity)
    }

    /// When to renew: two thirds into the lifetime (day 60 of Let's Encrypt's 90), made earlier by up to a
    /// twentieth of the lifetime by `jitter` (0 to 1), so that many servers set up at the same moment do not all
    /// come back to the CA at the same second.
    pub fn renewal_time(&self, jitter: f64) -> i64 {
        let lifetime = self.not_after - self.not_before;
        let spread = (lifetime as f64 / 20.0 * jitter.clamp(0.0, 1.0)) as i64;
        self.not_before + lifetime * 2 / 3 - spread
    }
}

const SEQUENCE: u8 = 0x30;
const INTEGER: u8 = 0x02;
const VERSION: u8 = 0xa0;
const UTC_TIME: u8 = 0x17;
const GENERALIZED_TIME: u8 = 0x18;

fn expect(tag: u8, expected: u8) -> Option<()> {
    (tag == expected).then_some(())
}

/// One DER element: its tag, its contents and what follows it.
fn element(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (length, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let count = usize::from(first & 0x7f);
        if count == 0 || count > 4 || rest.len() < count {
            return None;
        }
        let (bytes, rest) = rest.split_at(count);
        let length = bytes
            .iter()
            .fold(0usize, |length, &byte| (length << 8) | usize::from(byte));
        (length, rest)
    };
    (rest.len() >= length).then(|| (tag, &rest[..length], &rest[length..]))
}

/// `YYMMDDHHMMSSZ` (UTCTime, years 1950–2049) or `YYYYMMDDHHMMSSZ` (GeneralizedTime), as RFC 5280 requires them.
fn time(tag: u8, text: &[u8]) -> Option<i64> {
    let digits = text.strip_suffix(b"Z")?;
    if !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let number = |range: std::ops::Range<usize>| {
        digits[range]
            .iter()
            .fold(0i64, |value, digit| value * 10 + i64::from(digit - b'0'))
    };
    let (year, rest) = match (tag, digits.len()) {
        (UTC_TIME, 12) => {
            let year = number(0..2);
            (if year < 50 { 2000 + year } else { 1900 + year }, 2)
        }
        (GENERALIZED_TIME, 14) => (number(0..4), 4),
        _ => return None,
    };
    let field = |index: usize| number(rest + index * 2..rest + index * 2 + 2);
    let (month, day, hour, minute, second) = (field(0), field(1), field(2), field(3), field(4));
    if !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    Some(days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm, the inverse of the one in
/// `timestamp`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let day_of_year = (153 * (month + if month > 2 { -3 } else { 9 }) + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    fn certificate(not_before: (i32, u8, u8), not_after: (i32, u8, u8)) -> Vec<u8> {
        let mut params = rcgen::CertificateParams::new(vec!["chat.example.com".into()]).unwrap();
        params.not_before = rcgen::date_time_ymd(not_before.0, not_before.1, not_before.2);
        params.not_after = rcgen::date_time_ymd(not_after.0, not_after.1, not_after.2);
        let key = rcgen::KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn reads_utc_and_generalized_times() {
        // rcgen writes UTCTime up to 2049 and GeneralizedTime from 2050 on, as RFC 5280 asks.
        let validity = Validity::of(&certificate((2026, 3, 1), (2026, 5, 30))).unwrap();
        assert_eq!(validity.not_before, 1_772_323_200);
        assert_eq!(validity.not_after - validity.not_before, 90 * 86_400);
        let far = Validity::of(&certificate((2049, 12, 31), (2051, 1, 1))).unwrap();
        assert_eq!(far.not_after, 2_556_144_000);
    }

    #[test]
    fn renews_two_thirds_in_with_at_most_a_twentieth_of_jitter() {
        let validity = Validity {
            not_before: 0,
            not_after: 90 * 86_400,
        };
        assert_eq!(validity.renewal_time(0.0), 60 * 86_400);
        assert_eq!(
            validity.renewal_time(1.0),
            60 * 86_400 - 4 * 86_400 - 43_200
        );
    }

    #[test]
    fn refuses_what_is_not_a_certificate() {
        assert_eq!(Validity::of(b""), None);
        assert_eq!(Validity::of(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]), None);
        let mut truncated = certificate((2026, 3, 1), (2026, 5, 30));
        truncated.truncate(40);
        assert_eq!(Validity::of(&truncated), None);
    }
}
