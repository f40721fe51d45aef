//! PII detectors over string values. Hand-written scanners (no regex
//! engine in the component): each returns the byte ranges it matched.
//! The README documents each pattern and its false positives.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::ops::Range;

/// A kind of PII found by scanning values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Detector {
    /// `local@domain.tld`.
    Email,
    /// Dotted-quad IPv4.
    Ipv4,
    /// IPv6 (any form `std::net::Ipv6Addr` parses).
    Ipv6,
    /// 15-digit IMSI with a plausible MCC (2xx–7xx).
    Imsi,
    /// E.164 number: `+` and 8–15 digits, or a value that is only 10–15 digits.
    Msisdn,
    /// SIM serial: 19–20 digits starting `89`.
    Iccid,
    /// 15-digit IMEI with a valid Luhn check digit.
    Imei,
}

impl Detector {
    /// Parses a config name.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "email" => Detector::Email,
            "ipv4" => Detector::Ipv4,
            "ipv6" => Detector::Ipv6,
            "imsi" => Detector::Imsi,
            "msisdn" => Detector::Msisdn,
            "iccid" => Detector::Iccid,
            "imei" => Detector::Imei,
            _ => return None,
        })
    }

    /// Every detector name.
    pub const NAMES: &'static str = "email, ipv4, ipv6, imsi, msisdn, iccid, imei";
}

/// One match: where, and what it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// Byte range in the scanned string.
    pub range: Range<usize>,
    /// The detector.
    pub detector: Detector,
}

/// Scans `s` with the `enabled` detectors. Matches do not overlap; they are
/// returned in order.
pub fn scan(s: &str, enabled: &[Detector]) -> Vec<Found> {
    let on = |d| enabled.contains(&d);
    let mut found = Vec::new();
    if on(Detector::Email) {
        found.extend(emails(s).into_iter().map(|range| Found {
            range,
            detector: Detector::Email,
        }));
    }
    if on(Detector::Ipv6) {
        found.extend(ipv6s(s).into_iter().map(|range| Found {
            range,
            detector: Detector::Ipv6,
        }));
    }
    if on(Detector::Ipv4) {
        found.extend(ipv4s(s).into_iter().map(|range| Found {
            range,
            detector: Detector::Ipv4,
        }));
    }
    for (range, plus) in digit_runs(s) {
        let digits = &s[range.clone()];
        let whole = plus_start(range.start, plus) == 0 && range.end == s.len();
        let labelled = labelled_imsi(s, range.start, digits.len()) && on(Detector::Imsi);
        if let Some(detector) =
            classify_digits(digits, plus, whole, &on).or(labelled.then_some(Detector::Imsi))
        {
            let start = plus_start(range.start, plus);
            found.push(Found {
                range: start..range.end,
                detector,
            });
        }
    }
    found.sort_by_key(|f| (f.range.start, std::cmp::Reverse(f.range.end)));
    // Keep the first of overlapping matches (an email's digits are not
    // also an MSISDN; an IPv4-mapped IPv6 is one IPv6).
    let mut out: Vec<Found> = Vec::with_capacity(found.len());
    for f in found {
        if out
            .last()
            .is_none_or(|last| f.range.start >= last.range.end)
        {
            out.push(f);
        }
    }
    out
}

/// A run of 6 to 15 digits that text labels as an IMSI, right before it
/// (`IMSI='67282840195069'`, `imsi: …`): the label is a stronger signal
/// than the length, and networks with 2-digit MNCs issue 14-digit IMSIs.
fn labelled_imsi(s: &str, start: usize, len: usize) -> bool {
    if !(6..=15).contains(&len) {
        return false;
    }
    let before = s.as_bytes()[..start]
        .iter()
        .rev()
        .skip_while(|b| matches!(b, b'\'' | b'"' | b'=' | b':' | b' '))
        // The label, read backwards.
        .take(4)
        .map(u8::to_ascii_lowercase)
        .collect::<Vec<u8>>();
    before == b"ismi"
}

fn plus_start(start: usize, plus: bool) -> usize {
    if plus { start - 1 } else { start }
}

/// Which digit-run detector, if any, a run of digits is. Precedence:
/// ICCID (prefix 89, 19–20 digits), IMEI (15 digits, Luhn; or 16 digits,
/// the IMEISV form devices report, whose last two digits are a software
/// version and carry no check digit), IMSI (15 digits, MCC 2xx–7xx or the
/// international 901 that IoT SIMs such as emnify's use), MSISDN (`+` and
/// 8–15 digits, or a whole value of 10–15 digits).
pub fn classify_digits(
    digits: &str,
    plus: bool,
    whole: bool,
    on: &dyn Fn(Detector) -> bool,
) -> Option<Detector> {
    let n = digits.len();
    if !plus {
        if on(Detector::Iccid) && (n == 19 || n == 20) && digits.starts_with("89") {
            return Some(Detector::Iccid);
        }
        if n == 15 {
            if on(Detector::Imei) && luhn(digits) {
                return Some(Detector::Imei);
            }
            if on(Detector::Imsi)
                && (matches!(digits.as_bytes()[0], b'2'..=b'7') || digits.starts_with("901"))
            {
                return Some(Detector::Imsi);
            }
        }
        if n == 16 && on(Detector::Imei) {
            return Some(Detector::Imei);
        }
    }
    if on(Detector::Msisdn) && !digits.starts_with('0') {
        if plus && (8..=15).contains(&n) {
            return Some(Detector::Msisdn);
        }
        if !plus && whole && (10..=15).contains(&n) {
            return Some(Detector::Msisdn);
        }
    }
    None
}

/// The Luhn check (IMEI's 15th digit).
pub fn luhn(digits: &str) -> bool {
    let mut sum = 0;
    for (i, b) in digits.bytes().rev().enumerate() {
        let mut d = u32::from(b - b'0');
        if i % 2 == 1 {
            d *= 2;
            if d > 9 {
                d -= 9;
            }
        }
        sum += d;
    }
    sum % 10 == 0
}

/// Maximal runs of ASCII digits not touching a letter, `.` + digit, or
/// another digit; with whether a `+` directly precedes the run.
fn digit_runs(s: &str) -> Vec<(Range<usize>, bool)> {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if !b[i].is_ascii_digit() {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        let before = start.checked_sub(1).map(|j| b[j]);
        let after = b.get(i).copied();
        let glued = |c: Option<u8>| c.is_some_and(|c| c.is_ascii_alphabetic() || c == b'_');
        // Part of a decimal number or a dotted version: not an identifier.
        let dotted = before == Some(b'.')
            || (after == Some(b'.') && b.get(i + 1).is_some_and(u8::is_ascii_digit));
        if !glued(before) && !glued(after) && !dotted {
            out.push((start..i, before == Some(b'+')));
        }
    }
    out
}

fn is_email_local(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'%' | b'+' | b'-')
}

fn is_domain(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'.' | b'-')
}

/// `local@domain.tld`: local part of `[A-Za-z0-9._%+-]`, domain of labels
/// of `[A-Za-z0-9-]`, a TLD of at least two letters.
fn emails(s: &str) -> Vec<Range<usize>> {
    let b = s.as_bytes();
    let mut out = Vec::new();
    for (at, _) in s.match_indices('@') {
        let mut start = at;
        while start > 0 && is_email_local(b[start - 1]) {
            start -= 1;
        }
        while start < at && b[start] == b'.' {
            start += 1;
        }
        let mut end = at + 1;
        while end < b.len() && is_domain(b[end]) {
            end += 1;
        }
        while end > at + 1 && matches!(b[end - 1], b'.' | b'-') {
            end -= 1;
        }
        if start == at || end == at + 1 {
            continue;
        }
        let domain = &s[at + 1..end];
        let Some((_, tld)) = domain.rsplit_once('.') else {
            continue;
        };
        if tld.len() >= 2
            && tld.bytes().all(|c| c.is_ascii_alphabetic())
            && !domain.split('.').any(str::is_empty)
        {
            out.push(start..end);
        }
    }
    out
}

/// Dotted quads of 0–255, not part of a longer dotted or digit run.
fn ipv4s(s: &str) -> Vec<Range<usize>> {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if !b[i].is_ascii_digit()
            || (i > 0 && (b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'.'))
        {
            i += 1;
            continue;
        }
        let mut end = i;
        while end < b.len() && (b[end].is_ascii_digit() || b[end] == b'.') {
            end += 1;
        }
        let mut cand = &s[i..end];
        // A sentence may end right after an address.
        if cand.ends_with('.') {
            cand = &cand[..cand.len() - 1];
        }
        let alnum_after = b
            .get(i + cand.len())
            .is_some_and(|c| c.is_ascii_alphanumeric() || *c == b':');
        if !alnum_after && cand.parse::<Ipv4Addr>().is_ok() {
            out.push(i..i + cand.len());
        }
        i = end.max(i + 1);
    }
    out
}

/// Runs of hex digits, `:` and `.` with at least two `:` that parse as an
/// IPv6 address.
fn ipv6s(s: &str) -> Vec<Range<usize>> {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if !(c.is_ascii_hexdigit() || c == b':') || (i > 0 && b[i - 1].is_ascii_alphanumeric()) {
            i += 1;
            continue;
        }
        let mut end = i;
        while end < b.len() && (b[end].is_ascii_hexdigit() || matches!(b[end], b':' | b'.')) {
            end += 1;
        }
        let mut cand = &s[i..end];
        while cand.ends_with('.') {
            cand = &cand[..cand.len() - 1];
        }
        let alnum_after = b.get(i + cand.len()).is_some_and(u8::is_ascii_alphanumeric);
        if !alnum_after && cand.matches(':').count() >= 2 && cand.parse::<Ipv6Addr>().is_ok() {
            out.push(i..i + cand.len());
        }
        i = end.max(i + 1);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: &[Detector] = &[
        Detector::Email,
        Detector::Ipv4,
        Detector::Ipv6,
        Detector::Imsi,
        Detector::Msisdn,
        Detector::Iccid,
        Detector::Imei,
    ];

    fn kinds(s: &str) -> Vec<(&str, Detector)> {
        scan(s, ALL)
            .into_iter()
            .map(|f| (&s[f.range], f.detector))
            .collect()
    }

    #[test]
    fn emails() {
        assert_eq!(
            kinds("mail jane.doe+x@mail.example.com now"),
            [("jane.doe+x@mail.example.com", Detector::Email)]
        );
        assert_eq!(kinds("<a@b.co>."), [("a@b.co", Detector::Email)]);
        assert!(kinds("user@localhost and @handle and a@b.c1").is_empty());
    }

    #[test]
    fn ip_addresses() {
        assert_eq!(
            kinds("from 203.0.113.10."),
            [("203.0.113.10", Detector::Ipv4)]
        );
        assert!(kinds("version 1.2.3.4.5 and 256.1.1.1 and 10.0.0").is_empty());
        assert_eq!(
            kinds("src 2001:db8::1 ok"),
            [("2001:db8::1", Detector::Ipv6)]
        );
        assert_eq!(
            kinds("::ffff:192.0.2.1"),
            [("::ffff:192.0.2.1", Detector::Ipv6)]
        );
        assert!(
            kinds("12:30:45 and dead:beef").is_empty(),
            "times and words are not addresses"
        );
    }

    #[test]
    fn telecom_identifiers() {
        // IMEI with a valid Luhn digit (the GSMA example 49015420323751-8).
        assert_eq!(
            kinds("490154203237518"),
            [("490154203237518", Detector::Imei)]
        );
        assert_eq!(
            kinds("imsi 295050901064821"),
            [("295050901064821", Detector::Imsi)]
        );
        assert_eq!(
            kinds("89883030000080139311"),
            [("89883030000080139311", Detector::Iccid)]
        );
        assert_eq!(
            kinds("call +4915123456789 now"),
            [("+4915123456789", Detector::Msisdn)]
        );
        // 15 digits are ambiguous: this emnify MSISDN happens to pass the
        // Luhn check, so it reads as an IMEI (documented false positive).
        assert!(luhn("423663920123456"));
        assert_eq!(
            kinds("423663920123456"),
            [("423663920123456", Detector::Imei)]
        );
        assert_eq!(
            scan("423663920123456", &[Detector::Msisdn]).len(),
            1,
            "with only msisdn on, a whole 15-digit value is an MSISDN"
        );
        assert!(
            kinds("order 12345678901 shipped").is_empty(),
            "bare digits in text are not an MSISDN"
        );
        assert!(kinds("v1.2345678901234").is_empty());
        assert!(
            kinds("id_295050901064821").is_empty(),
            "glued to an identifier"
        );
    }

    #[test]
    fn imeisv_and_international_imsis_as_emnify_sends_them() {
        // emnify's usage example: `endpoint.imei` is the 16-digit IMEISV
        // (no check digit), and its IoT SIMs' IMSIs start with MCC 901.
        assert_eq!(
            kinds("8677300511111142"),
            [("8677300511111142", Detector::Imei)]
        );
        assert_eq!(
            kinds("for IMSI='901430111111111', now"),
            [("901430111111111", Detector::Imsi)]
        );
        assert!(
            kinds("ref 800000000000000 and 999999999999999 ok").is_empty(),
            "other 15-digit numbers starting 8 or 9 stay"
        );
        assert!(
            kinds("12345678901234567").is_empty(),
            "17 digits are nothing"
        );
        // emnify's docs: a 14-digit IMSI, found by its label.
        assert_eq!(
            kinds("purged for IMSI='67282840195069'."),
            [("67282840195069", Detector::Imsi)]
        );
        assert_eq!(kinds("imsi: 123456"), [("123456", Detector::Imsi)]);
        assert!(
            kinds("claims 67282840195069").is_empty(),
            "no label, no match"
        );
    }
}
