//! The wall clock, read in one place: deployment records, events and plan
//! options store unix seconds. Times shown to people are rendered here,
//! always in UTC and saying so, or relative to now.

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

/// Unix seconds for text output: RFC 3339 UTC and the time relative to
/// `now`, `2026-11-18T11:06:40Z (3 min ago)`.
pub fn readable(secs: i64, now: i64) -> String {
    format!("{} ({})", rfc3339(secs), relative(secs, now))
}

/// Width [`readable`] is padded to in columns: wide enough for an age up to
/// `59 min ago`, which keeps recent rows aligned.
pub const READABLE_WIDTH: usize = 33;

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(readable(now - 180, now), "2026-11-18T11:03:40Z (3 min ago)");
        assert_eq!(
            readable(now - 59 * 60, now).len(),
            READABLE_WIDTH,
            "the widest recent time fills the column"
        );
    }
}
