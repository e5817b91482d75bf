//! The timestamps credential endpoints answer with: RFC 3339 UTC (`2019-11-09T13:34:41Z`,
//! STS and the AWS metadata services) and Unix seconds (token endpoints).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Parses `YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM)`. Anything else is `None`.
pub(crate) fn parse_rfc3339(s: &str) -> Option<SystemTime> {
    let b = s.trim().as_bytes();
    if b.len() < 20 || b.len() > 40 {
        return None;
    }
    let num = |range: std::ops::Range<usize>| -> Option<u32> {
        let part = b.get(range)?;
        if !part.iter().all(u8::is_ascii_digit) {
            return None;
        }
        std::str::from_utf8(part).ok()?.parse().ok()
    };
    let sep = |i: usize, c: u8| b.get(i) == Some(&c);
    if !(sep(4, b'-') && sep(7, b'-') && (sep(10, b'T') || sep(10, b't') || sep(10, b' ')))
        || !(sep(13, b':') && sep(16, b':'))
    {
        return None;
    }
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&month) || day == 0 || day > days_in_month(year, month) {
        return None;
    }
    if hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let mut i = 19;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        if i == start {
            return None;
        }
    }
    let offset: i64 = match b.get(i..)? {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let digits = [*h1, *h2, *m1, *m2];
            if !digits.iter().all(u8::is_ascii_digit) {
                return None;
            }
            let d = |x: u8| i64::from(x - b'0');
            let secs =
                (d(digits[0]) * 10 + d(digits[1])) * 3600 + (d(digits[2]) * 10 + d(digits[3])) * 60;
            if *sign == b'+' {
                secs
            } else {
                -secs
            }
        }
        _ => return None,
    };
    let days = crate::util::days_from_civil(i64::from(year), month, day);
    let secs =
        days * 86_400 + i64::from(hour) * 3600 + i64::from(minute) * 60 + i64::from(second.min(59))
            - offset;
    let secs = u64::try_from(secs).ok()?;
    UNIX_EPOCH.checked_add(Duration::from_secs(secs))
}

/// `unix` seconds as a time (`None` before 1970 or past what the clock can hold).
pub(crate) fn from_unix(unix: i64) -> Option<SystemTime> {
    UNIX_EPOCH.checked_add(Duration::from_secs(u64::try_from(unix).ok()?))
}

/// Seconds since 1970 (0 for a clock before it).
pub(crate) fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn is_leap(year: u32) -> bool {
    (year.is_multiple_of(4) && !year.is_multiple_of(100)) || year.is_multiple_of(400)
}

fn days_in_month(year: u32, month: u32) -> u32 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: &str) -> Option<u64> {
        parse_rfc3339(s).map(unix)
    }

    #[test]
    fn parses_the_forms_endpoints_send() {
        assert_eq!(secs("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(secs("2015-08-30T12:36:00Z"), Some(1_440_938_160));
        assert_eq!(secs("2019-11-09T13:34:41Z"), Some(1_573_306_481));
        assert_eq!(secs("2019-11-09T13:34:41.123Z"), Some(1_573_306_481));
        assert_eq!(secs("2019-11-09T15:34:41+02:00"), Some(1_573_306_481));
        assert_eq!(secs("2019-11-09T11:34:41-02:00"), Some(1_573_306_481));
        assert_eq!(secs("2024-02-29T00:00:00Z"), Some(1_709_164_800));
    }

    #[test]
    fn refuses_what_is_not_a_timestamp() {
        for bad in [
            "",
            "2019-11-09",
            "2019-11-09T13:34:41",
            "2019-13-09T13:34:41Z",
            "2023-02-29T00:00:00Z",
            "2019-11-09T24:00:00Z",
            "2019-11-09T13:34:41.Z",
            "2019-11-09T13:34:41+2:00",
            "x019-11-09T13:34:41Z",
            "1969-12-31T23:59:59Z",
            "2019-11-09T13:34:41Zjunk",
            &"9".repeat(1000),
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
    }
}
