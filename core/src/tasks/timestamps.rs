//! A task's timestamps in its JSON: chrono's own text (RFC 3339, UTC as `Z`, the seconds' fraction only as long as
//! needed), handed to the serializer as one string.
//!
//! chrono's `Serialize` writes the same text through `collect_str`, which serde_json escapes piece by piece, a
//! character at a time for the digits: with five timestamps per task that was 15% of the instructions of
//! `GET /api/tasks?limit=10` (bench/README.md). The text is written into a buffer on the stack: `to_rfc3339_opts`
//! would allocate a `String` for each, fifty per list request.

use chrono::{DateTime, Datelike, SecondsFormat, Timelike, Utc};
use serde::Serializer;

/// `YYYY-MM-DDTHH:MM:SS.fffffffffZ`: the longest text [`write_rfc3339`] writes.
const LONGEST: usize = 30;

/// For `#[serde(serialize_with = "…")]` on a `DateTime<Utc>`.
pub fn rfc3339<S: Serializer>(at: &DateTime<Utc>, serializer: S) -> Result<S::Ok, S::Error> {
    let mut buf = [0u8; LONGEST];
    match write_rfc3339(at, &mut buf) {
        Some(text) => serializer.serialize_str(text),
        None => serializer.serialize_str(&at.to_rfc3339_opts(SecondsFormat::AutoSi, true)),
    }
}

/// For `#[serde(serialize_with = "…")]` on an `Option<DateTime<Utc>>`: `null` when unset.
pub fn rfc3339_or_null<S: Serializer>(
    at: &Option<DateTime<Utc>>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match at {
        Some(at) => rfc3339(at, serializer),
        None => serializer.serialize_none(),
    }
}

/// The text `to_rfc3339_opts(AutoSi, true)` gives (a fraction of 0, 3, 6 or 9 digits, whichever shows every
/// non-zero digit), for years 0 to 9999 without a leap second; `None` for the rest, which chrono then writes.
fn write_rfc3339<'b>(at: &DateTime<Utc>, buf: &'b mut [u8; LONGEST]) -> Option<&'b str> {
    let year = u32::try_from(at.year()).ok().filter(|y| *y <= 9999)?;
    let nanos = at.nanosecond();
    if nanos >= 1_000_000_000 {
        return None; // a leap second
    }
    let fraction = match nanos {
        0 => None,
        n if n % 1_000_000 == 0 => Some((n / 1_000_000, 3)),
        n if n % 1_000 == 0 => Some((n / 1_000, 6)),
        n => Some((n, 9)),
    };
    let mut len = 0;
    for (value, width, after) in [
        (year, 4, b'-'),
        (at.month(), 2, b'-'),
        (at.day(), 2, b'T'),
        (at.hour(), 2, b':'),
        (at.minute(), 2, b':'),
        (at.second(), 2, b'.'),
    ] {
        put_digits(buf, &mut len, value, width);
        buf[len] = after;
        len += 1;
    }
    match fraction {
        Some((digits, width)) => put_digits(buf, &mut len, digits, width),
        None => len -= 1, // no fraction: no dot
    }
    buf[len] = b'Z';
    std::str::from_utf8(&buf[..=len]).ok()
}

/// `value` as `width` decimal digits, zero-padded, at `buf[*len..]`.
fn put_digits(buf: &mut [u8; LONGEST], len: &mut usize, value: u32, width: usize) {
    let mut v = value;
    for i in (0..width).rev() {
        buf[*len + i] = b'0' + (v % 10) as u8;
        v /= 10;
    }
    *len += width;
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use serde::Serialize;

    use super::*;

    #[derive(Serialize)]
    struct Ours {
        #[serde(serialize_with = "rfc3339")]
        at: DateTime<Utc>,
        #[serde(serialize_with = "rfc3339_or_null")]
        maybe: Option<DateTime<Utc>>,
    }

    #[derive(Serialize)]
    struct Chronos {
        at: DateTime<Utc>,
        maybe: Option<DateTime<Utc>>,
    }

    #[test]
    fn the_same_bytes_as_chronos_own_serialize() {
        let second = Utc.with_ymd_and_hms(2026, 12, 7, 23, 59, 59).unwrap();
        // Whole seconds, then a fraction of 3, 6 and 9 digits, a leap year's day and an early year.
        let times = [
            second,
            second + chrono::Duration::milliseconds(120),
            second + chrono::Duration::microseconds(123_456),
            second + chrono::Duration::nanoseconds(1),
            Utc.with_ymd_and_hms(2024, 2, 29, 0, 0, 0).unwrap(),
            Utc.with_ymd_and_hms(1, 1, 1, 0, 0, 0).unwrap(),
            Utc.with_ymd_and_hms(0, 1, 1, 0, 0, 0).unwrap(),
            Utc.with_ymd_and_hms(9999, 12, 31, 23, 59, 59).unwrap()
                + chrono::Duration::nanoseconds(999_999_999),
            // Written by chrono itself: outside 0..=9999, and a leap second.
            Utc.with_ymd_and_hms(10000, 1, 1, 0, 0, 0).unwrap(),
            Utc.with_ymd_and_hms(-1, 1, 1, 0, 0, 0).unwrap(),
            chrono::NaiveDate::from_ymd_opt(2016, 12, 31)
                .and_then(|d| d.and_hms_nano_opt(23, 59, 59, 1_500_000_000))
                .unwrap()
                .and_utc(),
        ];
        for at in times {
            for maybe in [None, Some(at)] {
                let ours = serde_json::to_string(&Ours { at, maybe }).unwrap();
                let chronos = serde_json::to_string(&Chronos { at, maybe }).unwrap();
                assert_eq!(ours, chronos);
            }
        }
    }
}
