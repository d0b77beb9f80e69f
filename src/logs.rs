//! The pure parts of `reconcile logs`: what `--since` means, how a task's
//! lines are prefixed when several streams interleave, the cap on a line's
//! length, and the masking of secret values. No I/O: the Docker side lives
//! in `runtime::docker::logs`, the printing in `cli::logs`.

/// Longest line kept, in bytes; the rest is cut (on a char boundary) and
/// marked, so one endless line cannot hold unbounded memory.
pub const MAX_LINE: usize = 16 * 1024;

/// What a line cut at [`MAX_LINE`] ends with.
pub const CUT_MARK: &str = " [line cut]";

/// Secret values shorter than this are not masked: masking `a` or `on`
/// would blank out every line without hiding anything worth hiding.
pub const MIN_MASKED: usize = 4;

/// What replaces a secret value in a line.
pub const MASK: &str = "***";

/// `--since`: a duration back from `now` (`90s`, `5m`, `1h30m`, `2d`) or
/// an RFC 3339 time (`2026-01-02T03:04:05Z`, offsets and fractions
/// allowed), as Unix seconds.
pub fn parse_since(text: &str, now: i64) -> Result<i64, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("--since: empty value; give a duration like `10m` or an RFC 3339 time".into());
    }
    if text.contains('T') || text.contains('t') || text.contains('-') {
        return parse_rfc3339(text).ok_or_else(|| {
            format!("--since `{text}`: not an RFC 3339 time like `2026-01-02T03:04:05Z`")
        });
    }
    let secs = parse_duration(text).ok_or_else(|| {
        format!("--since `{text}`: not a duration (`30s`, `5m`, `1h30m`, `2d`) or an RFC 3339 time")
    })?;
    Ok(now.saturating_sub(secs))
}

/// `1h30m` as seconds: numbers each followed by a unit of s, m, h or d.
fn parse_duration(text: &str) -> Option<i64> {
    let mut total: i64 = 0;
    let mut number = String::new();
    for c in text.chars() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86400,
            _ => return None,
        };
        let n: i64 = number.parse().ok()?;
        number.clear();
        total = total.checked_add(n.checked_mul(unit)?)?;
    }
    number.is_empty().then_some(total)
}

/// `YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)` as Unix seconds.
fn parse_rfc3339(text: &str) -> Option<i64> {
    let b = text.as_bytes();
    if b.len() < 20 || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let s = text.get(r)?;
        s.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| s.parse().ok())?
    };
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if b[4] != b'-' || b[7] != b'-' || b[13] != b':' || b[16] != b':' {
        return None;
    }
    let mut rest = &text[19..];
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        rest = &frac[digits..];
    }
    let offset = match rest {
        "Z" | "z" => 0,
        _ => {
            let sign = match rest.as_bytes().first()? {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            let o = rest.get(1..)?;
            if o.len() != 5 || o.as_bytes()[2] != b':' {
                return None;
            }
            let (h, m): (i64, i64) = (o[..2].parse().ok()?, o[3..].parse().ok()?);
            if h > 23 || m > 59 {
                return None;
            }
            sign * (h * 3600 + m * 60)
        }
    };
    let month = time::Month::try_from(u8::try_from(month).ok()?).ok()?;
    let date = time::Date::from_calendar_date(i32::try_from(year).ok()?, month, day as u8).ok()?;
    let clock = time::Time::from_hms(hour as u8, minute as u8, second as u8).ok()?;
    let utc = time::PrimitiveDateTime::new(date, clock).assume_utc();
    Some(utc.unix_timestamp() - offset)
}

/// Cut a line to [`MAX_LINE`] bytes on a char boundary, marking the cut.
pub fn cap(line: &str) -> std::borrow::Cow<'_, str> {
    if line.len() <= MAX_LINE {
        return line.into();
    }
    let mut end = MAX_LINE;
    while !line.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{CUT_MARK}", &line[..end]).into()
}

/// The secret values a task's lines are masked with: those long enough to
/// be worth masking, longest first so a value containing another is
/// masked whole. Lines are masked one at a time, whole: a value never
/// spans two lines of output.
#[derive(Debug, Clone, Default)]
pub struct Masker {
    values: Vec<String>,
}

impl Masker {
    pub fn new<I: IntoIterator<Item = String>>(values: I) -> Masker {
        let mut values: Vec<String> = values
            .into_iter()
            .filter(|v| v.len() >= MIN_MASKED)
            .collect();
        values.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        values.dedup();
        Masker { values }
    }

    /// `line` with every occurrence of every value replaced by [`MASK`].
    pub fn mask<'a>(&self, line: &'a str) -> std::borrow::Cow<'a, str> {
        let mut out: std::borrow::Cow<'a, str> = line.into();
        for v in &self.values {
            if out.contains(v.as_str()) {
                out = out.replace(v.as_str(), MASK).into();
            }
        }
        out
    }
}

/// The name a task's stream is shown under: `web.1a2b3c4d/app` (service,
/// the first 8 characters of the task id, container); a task without a
/// service by its family.
pub fn stream_name(service_or_family: &str, task_id: &str, container: &str) -> String {
    let short = task_id.get(..8).unwrap_or(task_id);
    format!("{service_or_family}.{short}/{container}")
}

/// A line's prefix: the stream name padded to `width` and a bar, like
/// `docker compose logs`.
pub fn prefix(name: &str, width: usize) -> String {
    format!("{name:<width$} | ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_takes_durations_and_times() {
        let now = 1_000_000;
        assert_eq!(parse_since("90s", now), Ok(now - 90));
        assert_eq!(parse_since("5m", now), Ok(now - 300));
        assert_eq!(parse_since("1h30m", now), Ok(now - 5400));
        assert_eq!(parse_since("2d", now), Ok(now - 172_800));
        assert_eq!(parse_since("1970-01-01T00:00:10Z", now), Ok(10));
        assert_eq!(
            parse_since("2026-01-02T03:04:05.123Z", now),
            Ok(1_767_323_045)
        );
        assert_eq!(
            parse_since("2026-01-02T05:04:05+02:00", now),
            Ok(1_767_323_045)
        );
        assert_eq!(
            parse_since("2026-01-01T22:04:05-05:00", now),
            Ok(1_767_323_045)
        );
        for bad in [
            "",
            "5",
            "5x",
            "m",
            "yesterday",
            "2026-13-01T00:00:00Z",
            "2026-01-01T00:00:00",
        ] {
            let e = parse_since(bad, now).unwrap_err();
            assert!(e.starts_with("--since"), "{bad}: {e}");
        }
    }

    #[test]
    fn prefixes_align() {
        let a = stream_name("web", "1a2b3c4d5e6f", "app");
        let b = stream_name("worker", "99887766aabb", "sidecar");
        assert_eq!(a, "web.1a2b3c4d/app");
        let width = a.len().max(b.len());
        assert_eq!(prefix(&b, width), "worker.99887766/sidecar | ");
        assert_eq!(
            prefix(&a, width),
            format!("web.1a2b3c4d/app{} | ", " ".repeat(7))
        );
        assert_eq!(stream_name("web", "abc", "x"), "web.abc/x");
    }

    #[test]
    fn masks_whole_values_in_each_line() {
        let m = Masker::new(["hunter22".to_string(), "abc".into(), "hunter2-long".into()]);
        assert_eq!(m.mask("pw=hunter22 and hunter22"), "pw=*** and ***");
        // The longer value containing the shorter one goes whole.
        assert_eq!(m.mask("x hunter2-long y"), "x *** y");
        // Too short to mask: left alone.
        assert_eq!(m.mask("abc"), "abc");
        // Lines are masked whole: a value split over two lines is two
        // lines, neither containing it, so neither is masked.
        assert_eq!(m.mask("hunt"), "hunt");
        assert_eq!(m.mask("er22"), "er22");
        assert_eq!(Masker::default().mask("hunter22"), "hunter22");
    }

    #[test]
    fn long_lines_are_cut_on_a_char_boundary() {
        let short = "x".repeat(MAX_LINE);
        assert_eq!(cap(&short), short);
        let long = format!("{}é{}", "x".repeat(MAX_LINE - 1), "y".repeat(10));
        let cut = cap(&long);
        assert!(cut.ends_with(CUT_MARK));
        assert_eq!(cut.len(), MAX_LINE - 1 + CUT_MARK.len());
    }
}
