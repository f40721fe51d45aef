//! Elasticsearch's `iso8601` date format (D7, R4), output as
//! `yyyy-MM-dd'T'HH:mm:ss.SSS'Z'` in UTC, fraction truncated.
//!
//! Accepted: `YYYY[-MM[-DD[T[hh[:mm[:ss[(.|,)f{1,9}]]]][zone]]]]` with
//! zone `Z`, `±hh[[:]mm[[:]ss]]` (consistent separators, within ±18:00) or
//! the ids `UTC`, `GMT`, `UT`. Sluice's one deliberate difference: a JSON
//! integer is read as epoch milliseconds instead of failing.

use sluice_sdk::serde_json::Value;
use sluice_sdk::time::{Timestamp, days_in_month};

/// Normalises one date value.
///
/// # Errors
///
/// Elasticsearch-like text for the `date` processor's failure message.
pub fn normalise(v: &Value) -> Result<String, String> {
    match v {
        Value::String(s) => Ok(parse(s)?.to_rfc3339_millis()),
        Value::Number(n) if n.is_i64() || n.is_u64() => {
            let ms = n
                .as_i64()
                .ok_or_else(|| format!("unable to parse date [{n}]"))?;
            Ok(Timestamp::from_unix_millis(ms).to_rfc3339_millis())
        }
        other => Err(format!(
            "unable to parse date [{}]",
            crate::convert::java_string(other)
        )),
    }
}

struct Cursor<'a> {
    b: &'a [u8],
    i: usize,
}

impl Cursor<'_> {
    fn digits(&mut self, n: usize) -> Option<u32> {
        let s = self.b.get(self.i..self.i + n)?;
        if !s.iter().all(u8::is_ascii_digit) {
            return None;
        }
        self.i += n;
        Some(s.iter().fold(0, |a, d| a * 10 + u32::from(d - b'0')))
    }

    fn eat(&mut self, c: u8) -> bool {
        if self.b.get(self.i) == Some(&c) {
            self.i += 1;
            true
        } else {
            false
        }
    }

    fn done(&self) -> bool {
        self.i == self.b.len()
    }
}

/// Parses the `iso8601` grammar.
///
/// # Errors
///
/// `unable to parse date [<input>]`.
pub fn parse(s: &str) -> Result<Timestamp, String> {
    let fail = || format!("unable to parse date [{s}]");
    let mut c = Cursor {
        b: s.as_bytes(),
        i: 0,
    };
    let negative = c.eat(b'-');
    let year = i64::from(c.digits(4).ok_or_else(fail)?);
    let year = if negative { -year } else { year };
    let (mut month, mut day, mut hour, mut minute, mut second, mut nanos) = (1, 1, 0, 0, 0, 0);
    let mut offset_secs: i64 = 0;
    'parts: {
        if !c.eat(b'-') {
            break 'parts;
        }
        month = c.digits(2).ok_or_else(fail)?;
        if !c.eat(b'-') {
            break 'parts;
        }
        day = c.digits(2).ok_or_else(fail)?;
        if !c.eat(b'T') {
            break 'parts;
        }
        let Some(h) = c.digits(2) else { break 'parts };
        hour = h;
        if c.eat(b':') {
            minute = c.digits(2).ok_or_else(fail)?;
            if c.eat(b':') {
                second = c.digits(2).ok_or_else(fail)?;
                if c.eat(b'.') || c.eat(b',') {
                    let start = c.i;
                    while c.b.get(c.i).is_some_and(u8::is_ascii_digit) {
                        c.i += 1;
                    }
                    let frac = &s[start..c.i];
                    if frac.is_empty() || frac.len() > 9 {
                        return Err(fail());
                    }
                    nanos =
                        frac.parse::<u32>().map_err(|_| fail())? * 10u32.pow(9 - frac.len() as u32);
                }
            }
        }
        offset_secs = zone(&mut c).ok_or_else(fail)?;
    }
    if !c.done()
        || !(1..=12).contains(&month)
        || day < 1
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 59
    {
        return Err(fail());
    }
    let local = Timestamp::from_civil(year, month, day, hour, minute, second, nanos);
    Ok(Timestamp {
        unix_seconds: local.unix_seconds - offset_secs,
        nanos,
    })
}

/// An optional zone; returns its offset in seconds.
fn zone(c: &mut Cursor<'_>) -> Option<i64> {
    if c.done() {
        return Some(0);
    }
    if c.eat(b'Z') {
        return Some(0);
    }
    let rest = std::str::from_utf8(&c.b[c.i..]).ok()?;
    if matches!(rest, "UTC" | "GMT" | "UT") {
        c.i = c.b.len();
        return Some(0);
    }
    let sign = if c.eat(b'+') {
        1
    } else if c.eat(b'-') {
        -1
    } else {
        return None;
    };
    let h = i64::from(c.digits(2)?);
    let mut m = 0;
    let mut sec = 0;
    let colon = c.b.get(c.i) == Some(&b':');
    if !c.done() {
        if colon {
            c.eat(b':');
        }
        m = i64::from(c.digits(2)?);
        if !c.done() {
            if colon && !c.eat(b':') {
                return None;
            }
            sec = i64::from(c.digits(2)?);
        }
    }
    if m > 59 || sec > 59 {
        return None;
    }
    let total = h * 3600 + m * 60 + sec;
    if total > 18 * 3600 {
        return None;
    }
    Some(sign * total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_sdk::serde_json::json;

    #[test]
    fn the_reference_table() {
        for (input, want) in [
            ("2025-01-02T03:04:05Z", "2025-01-02T03:04:05.000Z"),
            ("2025-01-02T04:04:05.5+01:00", "2025-01-02T03:04:05.500Z"),
            ("2025-01-02T03:04:05.123999Z", "2025-01-02T03:04:05.123Z"),
            ("2025-01-02", "2025-01-02T00:00:00.000Z"),
            ("2025-01-02T03:04:05", "2025-01-02T03:04:05.000Z"),
            ("2025", "2025-01-01T00:00:00.000Z"),
            ("2025-03", "2025-03-01T00:00:00.000Z"),
            ("2025-01-02T03", "2025-01-02T03:00:00.000Z"),
            ("2025-01-02T03:04:05,25-0130", "2025-01-02T04:34:05.250Z"),
            ("2025-01-02T03:04:05UTC", "2025-01-02T03:04:05.000Z"),
            ("2024-02-29T00:00:00Z", "2024-02-29T00:00:00.000Z"),
        ] {
            assert_eq!(normalise(&json!(input)).as_deref(), Ok(want), "{input}");
        }
        for bad in [
            "02/01/2025",
            "2025-01-02 03:04:05",
            "2025-02-30",
            "2025-01-02T24:00:00Z",
            "2025-01-02T23:59:60Z",
            "2025-01-02T03:04:05.1234567891Z",
            "2025-01-02T03:04:05+19:00",
            "2025-01-02T03:04:05+01:3000",
            "2025-01-02Z",
            "25-01-02",
            "",
        ] {
            assert!(parse(bad).is_err(), "{bad} should fail");
        }
    }

    #[test]
    fn epoch_millis_numbers_are_sluices_difference() {
        assert_eq!(
            normalise(&json!(1748779200000u64)).unwrap(),
            "2025-06-01T12:00:00.000Z"
        );
        assert!(normalise(&json!(1.5)).is_err());
        assert!(
            normalise(&json!("1735787045000")).is_err(),
            "a digit string still fails, as in Elastic"
        );
    }
}
