//! RFC 3339 timestamps with 0 to 9 fractional digits, without a clock.
//!
//! Transforms have no clock and need no time-zone database: every timestamp
//! they handle is an instant with an explicit offset. This module parses
//! those and formats them the ways Elastic and emnify write them.

use std::fmt;

/// An instant: seconds and nanoseconds since the Unix epoch, UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp {
    /// Seconds since 1970-01-01T00:00:00Z (negative before).
    pub unix_seconds: i64,
    /// Nanoseconds within the second, `0..1_000_000_000`.
    pub nanos: u32,
}

/// Why a timestamp did not parse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimeError {
    /// The input (truncated to 64 bytes).
    pub input: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

impl fmt::Display for TimeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:?} is not an RFC 3339 timestamp: {}",
            self.input, self.reason
        )
    }
}

impl std::error::Error for TimeError {}

impl From<TimeError> for crate::RecordError {
    fn from(e: TimeError) -> Self {
        crate::RecordError::invalid_input(e.to_string())
    }
}

/// Parses `YYYY-MM-DDTHH:MM:SS[.f{1,9}](Z|±HH:MM)`. `t`, `z` and a space
/// for `T` are accepted (RFC 3339 section 5.6 allows them); a leap second
/// (`:60`) is read as the last nanosecond of second 59 so that ordering
/// holds. More than 9 fractional digits are rejected, not rounded.
///
/// # Errors
///
/// [`TimeError`] saying which part is wrong.
pub fn parse_rfc3339(s: &str) -> Result<Timestamp, TimeError> {
    let err = |reason| TimeError {
        input: s.chars().take(64).collect(),
        reason,
    };
    let b = s.as_bytes();
    if b.len() < 20 {
        return Err(err("too short"));
    }
    let num = |from: usize, len: usize| -> Result<u32, TimeError> {
        let part = &b[from..from + len];
        if !part.iter().all(u8::is_ascii_digit) {
            return Err(err("expected digits"));
        }
        Ok(part.iter().fold(0u32, |n, d| n * 10 + u32::from(d - b'0')))
    };
    if b[4] != b'-' || b[7] != b'-' || b[13] != b':' || b[16] != b':' {
        return Err(err("expected YYYY-MM-DDTHH:MM:SS"));
    }
    if !matches!(b[10], b'T' | b't' | b' ') {
        return Err(err("expected `T` between date and time"));
    }
    let (year, month, day) = (num(0, 4)?, num(5, 2)?, num(8, 2)?);
    let (hour, minute, mut second) = (num(11, 2)?, num(14, 2)?, num(17, 2)?);
    if !(1..=12).contains(&month) || day == 0 || day > days_in_month(i64::from(year), month) {
        return Err(err("date out of range"));
    }
    if hour > 23 || minute > 59 || second > 60 {
        return Err(err("time out of range"));
    }
    let mut i = 19;
    let mut nanos = 0u32;
    if b[i] == b'.' {
        i += 1;
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        let digits = i - start;
        if digits == 0 {
            return Err(err("expected digits after `.`"));
        }
        if digits > 9 {
            return Err(err("more than 9 fractional digits"));
        }
        nanos = num(start, digits)? * 10u32.pow(9 - digits as u32);
    }
    let offset_seconds: i64 = match &b[i..] {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), _, _, b':', _, _] => {
            let (h, m) = (num(i + 1, 2)?, num(i + 4, 2)?);
            if h > 23 || m > 59 {
                return Err(err("offset out of range"));
            }
            let off = i64::from(h * 3600 + m * 60);
            if *sign == b'-' { -off } else { off }
        }
        _ => return Err(err("expected `Z` or an offset like +02:00")),
    };
    if second == 60 {
        second = 59;
        nanos = 999_999_999;
    }
    let days = days_from_civil(i64::from(year), month, day);
    let unix_seconds =
        days * 86_400 + i64::from(hour * 3600 + minute * 60 + second) - offset_seconds;
    Ok(Timestamp {
        unix_seconds,
        nanos,
    })
}

impl Timestamp {
    /// The instant of a UTC calendar date and time (proleptic Gregorian;
    /// the fields are not range-checked: validate them first).
    pub fn from_civil(
        year: i64,
        month: u32,
        day: u32,
        hour: u32,
        minute: u32,
        second: u32,
        nanos: u32,
    ) -> Self {
        let days = days_from_civil(year, month, day);
        Timestamp {
            unix_seconds: days * 86_400
                + i64::from(hour) * 3600
                + i64::from(minute) * 60
                + i64::from(second),
            nanos,
        }
    }

    /// The instant `millis` milliseconds after the epoch.
    pub fn from_unix_millis(millis: i64) -> Self {
        Timestamp {
            unix_seconds: millis.div_euclid(1000),
            nanos: (millis.rem_euclid(1000) as u32) * 1_000_000,
        }
    }

    /// Milliseconds since the epoch (truncated).
    pub fn unix_millis(&self) -> i64 {
        self.unix_seconds * 1000 + i64::from(self.nanos / 1_000_000)
    }

    /// The UTC calendar fields `(year, month, day, hour, minute, second)`.
    pub fn civil(&self) -> (i64, u32, u32, u32, u32, u32) {
        let days = self.unix_seconds.div_euclid(86_400);
        let secs = self.unix_seconds.rem_euclid(86_400) as u32;
        let (y, m, d) = civil_from_days(days);
        (y, m, d, secs / 3600, secs / 60 % 60, secs % 60)
    }

    /// `YYYY-MM-DDTHH:MM:SS.mmmZ`: UTC, milliseconds, truncated (not
    /// rounded), the way Elastic's `date` processor writes `@timestamp`.
    pub fn to_rfc3339_millis(&self) -> String {
        let (y, mo, d, h, mi, s) = self.civil();
        let ms = self.nanos / 1_000_000;
        if !(0..=9999).contains(&y) {
            return format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{ms:03}Z");
        }
        // Written by hand: this runs once per event in the ECS transforms,
        // and `format!` costs several times more.
        let mut out = String::with_capacity(24);
        let mut push = |v: u32, width: u32, sep: char| {
            for p in (0..width).rev() {
                out.push(char::from(b'0' + ((v / 10u32.pow(p)) % 10) as u8));
            }
            out.push(sep);
        };
        push(y as u32, 4, '-');
        push(mo, 2, '-');
        push(d, 2, 'T');
        push(h, 2, ':');
        push(mi, 2, ':');
        push(s, 2, '.');
        push(ms, 3, 'Z');
        out
    }

    /// `YYYY-MM-DDTHH:MM:SS.nnnnnnnnnZ`: UTC with nanoseconds.
    pub fn to_rfc3339_nanos(&self) -> String {
        let (y, mo, d, h, mi, s) = self.civil();
        format!(
            "{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{:09}Z",
            self.nanos
        )
    }

    /// `YYYY-MM-DD HH:MM:SS` in UTC, fraction dropped: the form emnify
    /// writes in its S3 CSV files.
    pub fn to_sql_datetime(&self) -> String {
        let (y, mo, d, h, mi, s) = self.civil();
        format!("{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02}")
    }
}

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

/// Days in month `m` (1–12) of proleptic Gregorian year `y`, for checking
/// a parsed date.
pub fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        2 if is_leap(y) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 for a proleptic Gregorian date (H. Hinnant's
/// `days_from_civil`).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = i64::from((m + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The inverse of [`days_from_civil`].
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_fraction_length() {
        let base = parse_rfc3339("2025-06-18T01:40:48Z").unwrap();
        assert_eq!(base.unix_seconds, 1_750_210_848);
        assert_eq!(base.nanos, 0);
        let expected = [
            100_000_000,
            120_000_000,
            123_000_000,
            123_400_000,
            123_450_000,
            123_456_000,
            123_456_700,
            123_456_780,
            123_456_789,
        ];
        for (digits, want) in (1..=9).zip(expected) {
            let s = format!("2025-06-18T01:40:48.{}Z", &"123456789"[..digits]);
            let t = parse_rfc3339(&s).unwrap();
            assert_eq!((t.unix_seconds, t.nanos), (base.unix_seconds, want), "{s}");
        }
    }

    #[test]
    fn millis_truncate_like_elastic() {
        let t = parse_rfc3339("2025-06-18T01:40:48.953462371Z").unwrap();
        assert_eq!(t.to_rfc3339_millis(), "2025-06-18T01:40:48.953Z");
        let t = parse_rfc3339("2025-06-18T01:40:48.495Z").unwrap();
        assert_eq!(t.to_rfc3339_millis(), "2025-06-18T01:40:48.495Z");
        let t = parse_rfc3339("2025-06-18T01:40:48Z").unwrap();
        assert_eq!(t.to_rfc3339_millis(), "2025-06-18T01:40:48.000Z");
    }

    #[test]
    fn offsets_are_applied() {
        let z = parse_rfc3339("2021-01-01T00:00:00Z").unwrap();
        let plus = parse_rfc3339("2021-01-01T02:00:00+02:00").unwrap();
        let minus = parse_rfc3339("2020-12-31T19:30:00-04:30").unwrap();
        assert_eq!(z, plus);
        assert_eq!(z, minus);
        assert_eq!(parse_rfc3339("2021-01-01 00:00:00z").unwrap(), z);
    }

    #[test]
    fn rejects_bad_input_with_reason() {
        for (s, reason) in [
            ("2021-01-01", "too short"),
            ("2021-13-01T00:00:00Z", "date out of range"),
            ("2021-02-29T00:00:00Z", "date out of range"),
            ("2021-01-01T24:00:00Z", "time out of range"),
            ("2021-01-01T00:00:00.Z", "expected digits after `.`"),
            (
                "2021-01-01T00:00:00.1234567890Z",
                "more than 9 fractional digits",
            ),
            ("2021-01-01T00:00:00", "too short"),
            (
                "2021-01-01T00:00:00+0200",
                "expected `Z` or an offset like +02:00",
            ),
            ("2021-01-01X00:00:00Z", "expected `T` between date and time"),
            ("20a1-01-01T00:00:00Z", "expected digits"),
        ] {
            assert_eq!(parse_rfc3339(s).unwrap_err().reason, reason, "{s}");
        }
        assert!(parse_rfc3339("2024-02-29T00:00:00Z").is_ok(), "leap day");
    }

    #[test]
    fn civil_round_trip_and_formats() {
        for s in [
            "1970-01-01T00:00:00Z",
            "1969-12-31T23:59:59Z",
            "2000-02-29T12:34:56Z",
            "2399-12-31T23:59:59Z",
        ] {
            let t = parse_rfc3339(s).unwrap();
            assert_eq!(t.to_rfc3339_millis().replace(".000", ""), s);
        }
        let t = Timestamp::from_unix_millis(1_571_830_680_000);
        assert_eq!(t.to_sql_datetime(), "2019-10-23 11:38:00");
        assert_eq!(
            Timestamp::from_unix_millis(-1).to_rfc3339_nanos(),
            "1969-12-31T23:59:59.999000000Z"
        );
        assert_eq!(Timestamp::from_unix_millis(-1).unix_millis(), -1);
    }

    #[test]
    fn leap_second_sorts_before_next_minute() {
        let leap = parse_rfc3339("2016-12-31T23:59:60Z").unwrap();
        let next = parse_rfc3339("2017-01-01T00:00:00Z").unwrap();
        assert!(leap < next);
    }
}
