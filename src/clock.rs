//! The wall clock, read in one place: deployment records, events and plan
//! options store unix seconds. Times shown to people are rendered here, in
//! the local time zone (`TZ`, else the system's) with its offset, or `Z`
//! where that zone is UTC, and relative to now. JSON keeps RFC 3339 UTC.

use std::sync::OnceLock;

use jiff::tz::{Offset, TimeZone};
use jiff::Timestamp;

/// Seconds since the unix epoch (0 if the clock is before it).
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Unix seconds as RFC 3339 UTC, to the second: `2026-11-18T11:06:40Z`.
pub fn rfc3339(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// The zone times are shown in: `TZ` (an IANA name such as
/// `Europe/Berlin`, or a POSIX rule such as `IST-5:30`), else the
/// system's (`/etc/localtime`), else UTC.
fn zone() -> &'static (TimeZone, bool) {
    static ZONE: OnceLock<(TimeZone, bool)> = OnceLock::new();
    ZONE.get_or_init(|| {
        let tz = TimeZone::system();
        let utc = is_utc(&tz);
        (tz, utc)
    })
}

/// Whether `tz` is UTC all year: then times end in `Z`, as before, and a
/// zone with summer time never switches between `Z` and an offset.
fn is_utc(tz: &TimeZone) -> bool {
    // Mid-January and mid-July 2026: one of them is summer anywhere.
    [1_768_478_400, 1_784_116_800]
        .into_iter()
        .filter_map(|s| Timestamp::from_second(s).ok())
        .all(|t| tz.to_offset(t) == Offset::UTC)
}

/// Unix seconds as people read them: local time with its offset,
/// `2026-11-18T12:06:40+01:00`, or RFC 3339 UTC where the zone is UTC.
pub fn local(secs: i64) -> String {
    let (tz, utc) = zone();
    in_zone(secs, tz, *utc)
}

fn in_zone(secs: i64, tz: &TimeZone, utc: bool) -> String {
    match Timestamp::from_second(secs) {
        Ok(t) if !utc => t
            .to_zoned(tz.clone())
            .strftime("%Y-%m-%dT%H:%M:%S%:z")
            .to_string(),
        _ => rfc3339(secs),
    }
}

/// An age in seconds, in the largest whole unit: `12 s ago`, `4 min ago`,
/// `3 h ago`, `2 d ago`. A negative age is a time to come: `in 5 s`.
pub fn age(secs: i64) -> String {
    let span = span(secs.unsigned_abs());
    if secs < 0 {
        format!("in {span}")
    } else {
        format!("{span} ago")
    }
}

/// A length of time in the largest whole unit: `12 s`, `4 min`, `3 h`,
/// `2 d`.
pub fn span(secs: u64) -> String {
    let (n, unit) = match secs {
        0..=59 => (secs, "s"),
        60..=3_599 => (secs / 60, "min"),
        3_600..=86_399 => (secs / 3_600, "h"),
        _ => (secs / 86_400, "d"),
    };
    format!("{n} {unit}")
}

/// Unix seconds relative to `now` (also unix seconds), as [`age`] words it.
pub fn relative(secs: i64, now: i64) -> String {
    age(now.saturating_sub(secs))
}

/// Unix seconds for text output: [`local`] time and the time relative to
/// `now`, `2026-11-18T11:06:40Z (3 min ago)`.
pub fn readable(secs: i64, now: i64) -> String {
    format!("{} ({})", local(secs), relative(secs, now))
}

/// Width [`readable`] is padded to in columns: wide enough for an age up to
/// `59 min ago`, which keeps recent rows aligned (an offset is five
/// characters longer than `Z`).
pub fn readable_width() -> usize {
    if zone().1 {
        33
    } else {
        38
    }
}

/// A `--since` argument as unix seconds: a duration before `now` (`90s`,
/// `10m`, `2h`, `1d`, or units combined as in `1h30m`), an RFC 3339 time
/// (`2026-12-05T15:00:00Z`, an offset such as `+02:00`, fractions of a
/// second ignored), or unix seconds.
pub fn parse_since(text: &str, now: i64) -> Result<i64, String> {
    let t = text.trim();
    let bad = || {
        format!(
            "`{text}` is neither a duration (`90s`, `10m`, `2h`, `1d`, `1h30m`) nor a time \
             (`2026-12-05T15:00:00Z`, or unix seconds)"
        )
    };
    if t.is_empty() {
        return Err(bad());
    }
    if t.bytes().all(|b| b.is_ascii_digit()) {
        return t.parse().map_err(|_| bad());
    }
    if t.contains('T') || t.contains('t') {
        return parse_rfc3339(t).ok_or_else(bad);
    }
    let mut total: i64 = 0;
    let mut digits = String::new();
    for c in t.chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3_600,
            'd' => 86_400,
            _ => return Err(bad()),
        };
        let n: i64 = digits.parse().map_err(|_| bad())?;
        digits.clear();
        total = n
            .checked_mul(unit)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(bad)?;
    }
    if !digits.is_empty() {
        return Err(bad());
    }
    Ok(now.saturating_sub(total))
}

/// `YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)` as unix seconds.
fn parse_rfc3339(t: &str) -> Option<i64> {
    let b = t.as_bytes();
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let s = t.get(r)?;
        s.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| s.parse().ok())?
    };
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, s) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || s > 60 {
        return None;
    }
    let mut rest = &t[19..];
    if let Some(frac) = rest.strip_prefix('.') {
        let n = frac.bytes().take_while(u8::is_ascii_digit).count();
        if n == 0 {
            return None;
        }
        rest = &frac[n..];
    }
    let offset = match rest {
        "Z" | "z" => 0,
        _ => {
            let rb = rest.as_bytes();
            if rb.len() != 6 || rb[3] != b':' {
                return None;
            }
            let sign = match rb[0] {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            let oh: i64 = rest[1..3].parse().ok()?;
            let om: i64 = rest[4..6].parse().ok()?;
            sign * (oh * 3_600 + om * 60)
        }
    };
    // Days since 1970-01-01 from the civil date (inverse of `rfc3339`).
    let yy = if mo <= 2 { y - 1 } else { y };
    let era = yy.div_euclid(400);
    let yoe = yy - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + h * 3_600 + mi * 60 + s - offset)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_time_carries_its_offset_and_utc_stays_z() {
        let kolkata = TimeZone::posix("IST-5:30").unwrap();
        assert!(!is_utc(&kolkata));
        assert_eq!(
            in_zone(1_795_000_000, &kolkata, false),
            "2026-11-18T16:36:40+05:30"
        );
        // A zone with summer time is never taken for UTC, even in winter
        // when its offset is zero.
        let london = TimeZone::posix("GMT0BST,M3.5.0/1,M10.5.0").unwrap();
        assert!(!is_utc(&london));
        assert_eq!(
            in_zone(1_795_000_000, &london, false),
            "2026-11-18T11:06:40+00:00"
        );
        assert_eq!(
            in_zone(1_784_116_800, &london, false),
            "2026-07-15T13:00:00+01:00"
        );
        assert!(is_utc(&TimeZone::UTC));
        assert_eq!(
            in_zone(1_795_000_000, &TimeZone::UTC, true),
            "2026-11-18T11:06:40Z"
        );
    }

    #[test]
    fn rfc3339_is_utc_civil_time() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_795_000_000), "2026-11-18T11:06:40Z");
        assert_eq!(rfc3339(-1), "1969-12-31T23:59:59Z");
    }

    #[test]
    fn ages_use_the_largest_whole_unit() {
        assert_eq!(age(0), "0 s ago");
        assert_eq!(age(12), "12 s ago");
        assert_eq!(age(59), "59 s ago");
        assert_eq!(age(60), "1 min ago");
        assert_eq!(age(4 * 60 + 59), "4 min ago");
        assert_eq!(age(3 * 3_600 + 1), "3 h ago");
        assert_eq!(age(2 * 86_400 + 3_600), "2 d ago");
        assert_eq!(age(-5), "in 5 s");
        assert_eq!(age(-120), "in 2 min");
        assert_eq!(
            age(i64::MIN),
            format!("in {} d", i64::MIN.unsigned_abs() / 86_400)
        );
    }

    #[test]
    fn relative_and_readable_take_now_as_given() {
        let now = 1_795_000_000;
        assert_eq!(relative(now - 12, now), "12 s ago");
        assert_eq!(relative(now + 5, now), "in 5 s");
        assert_eq!(relative(i64::MIN, i64::MAX), age(i64::MAX));
        // In whatever zone the tests run.
        assert_eq!(
            readable(now - 180, now),
            format!("{} (3 min ago)", local(now - 180))
        );
        assert_eq!(
            readable(now - 59 * 60, now).len(),
            readable_width(),
            "the widest recent time fills the column"
        );
    }
    #[test]
    fn since_is_a_duration_a_time_or_unix_seconds() {
        let now = 1_000_000;
        assert_eq!(parse_since("90s", now), Ok(now - 90));
        assert_eq!(parse_since("10m", now), Ok(now - 600));
        assert_eq!(parse_since("1h30m", now), Ok(now - 5_400));
        assert_eq!(parse_since("2d", now), Ok(now - 172_800));
        assert_eq!(parse_since("1700000000", now), Ok(1_700_000_000));
        assert_eq!(parse_since("2000-02-29T00:00:00Z", now), Ok(951_782_400));
        assert_eq!(
            parse_since("2026-11-18T13:06:40.250+02:00", now).map(rfc3339),
            Ok("2026-11-18T11:06:40Z".into())
        );
        for bad in [
            "",
            "x",
            "10x",
            "m",
            "1h30",
            "2026-13-01T00:00:00Z",
            "2026-01-01T00:00:00",
        ] {
            let e = parse_since(bad, now).unwrap_err();
            assert!(e.contains("neither a duration"), "{bad}: {e}");
        }
        assert!(parse_since("99999999999999999999d", now).is_err());
    }

    #[test]
    fn rfc3339_parses_back_what_it_prints() {
        for secs in [0, 951_782_400, 1_764_944_000, 4_102_444_799] {
            assert_eq!(parse_since(&rfc3339(secs), 0), Ok(secs));
        }
    }
}
