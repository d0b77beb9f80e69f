//! Amazon EventBridge schedule expressions, the syntax ECS scheduled tasks
//! use: `rate(5 minutes)` and `cron(0 18 ? * MON-FRI *)`.
//!
//! [`parse`] turns the text into a [`Schedule`] or a [`ScheduleError`] that
//! carries the byte offset of the offending part, so callers can point at a
//! file position. [`Schedule::next_after`] gives the next fire time and
//! [`Schedule`]'s `Display` the canonical expression. Everything is UTC.
//!
//! Semantics follow the EventBridge documentation; where it is silent the
//! Quartz scheduler's behaviour (which EventBridge's cron derives from) is
//! used:
//! - a rate fires one period after its anchor (when it was created), then
//!   every period;
//! - `L` alone in day-of-week is Saturday (the last day of the week), `nL`
//!   is the last weekday `n` of the month, and `n` may be a name (`FRIL`);
//! - `nW` is the Monday-Friday day nearest the `n`th without leaving the
//!   month, and never fires in a month that has no `n`th day;
//! - `L`, `LW`, `nW`, `nL` and `n#k` must be the whole field;
//! - an increment `a/s` runs from `a` to the field maximum, and the
//!   increment is at most the number of values in the field.

use std::fmt;
use std::str::FromStr;

const MIN_YEAR: i64 = 1970;
const MAX_YEAR: i64 = 2199;
/// Largest rate value: keeps `value * unit` and anchor arithmetic far from
/// overflow while allowing any period anyone would write (2700+ years).
const MAX_RATE: u64 = 1_000_000;

/// A parsed schedule expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Schedule {
    /// `rate(VALUE UNIT)`: fires every `every_seconds` after its anchor.
    /// [`parse`] gives a positive multiple of 60; a rate built by hand
    /// with a period `<= 0` never fires.
    Rate { every_seconds: i64 },
    /// `cron(...)`: fires at second 0 of every matching UTC minute.
    Cron(Cron),
}

/// The six fields of a cron expression, as sets of allowed values.
///
/// Two expressions that match the same times compare equal, whatever
/// spelling they used (`0/15` and `0,15,30,45`, `SAT` and `7`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cron {
    minutes: Bits,
    hours: Bits,
    days: Days,
    months: Bits,
    /// Indexed by year - 1970.
    years: Bits,
}

/// Which days of a month match: exactly one of the day fields is used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Days {
    /// Day-of-week is `?` (or `*`, which means the same).
    Month(MonthDays),
    /// Day-of-month is `?`.
    Week(WeekDays),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MonthDays {
    Set(Bits),
    Last,
    LastWeekday,
    NearestWeekday(u32),
}

/// Weekdays are 1 = Sunday ... 7 = Saturday.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WeekDays {
    Set(Bits),
    Last(u32),
    Nth(u32, u32),
}

/// Why an expression was refused, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduleError {
    pub message: String,
    /// Byte offset in the text given to [`parse`].
    pub offset: usize,
}

impl fmt::Display for ScheduleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (at byte {})", self.message, self.offset)
    }
}

impl std::error::Error for ScheduleError {}

fn error(offset: usize, message: impl Into<String>) -> ScheduleError {
    ScheduleError {
        message: message.into(),
        offset,
    }
}

/// A 256-bit set; big enough for every field including the 230 years.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Bits([u64; 4]);

impl Bits {
    fn insert(&mut self, i: u32) {
        if let Some(w) = self.0.get_mut((i / 64) as usize) {
            *w |= 1 << (i % 64);
        }
    }

    fn has(&self, i: u32) -> bool {
        self.0
            .get((i / 64) as usize)
            .is_some_and(|w| w & (1 << (i % 64)) != 0)
    }

    /// The smallest member `>= from`.
    fn next_from(&self, from: u32) -> Option<u32> {
        let mut word = (from / 64) as usize;
        let mut mask = u64::MAX << (from % 64);
        while let Some(w) = self.0.get(word) {
            let hit = w & mask;
            if hit != 0 {
                return Some(word as u32 * 64 + hit.trailing_zeros());
            }
            word += 1;
            mask = u64::MAX;
        }
        None
    }

    fn range(lo: u32, hi: u32) -> Bits {
        let mut b = Bits::default();
        for i in lo..=hi {
            b.insert(i);
        }
        b
    }

    fn members(&self) -> impl Iterator<Item = u32> + '_ {
        let mut next = self.next_from(0);
        std::iter::from_fn(move || {
            let cur = next?;
            next = cur.checked_add(1).and_then(|n| self.next_from(n));
            Some(cur)
        })
    }
}

/// How one cron field is written and what it allows.
struct Field {
    name: &'static str,
    min: u32,
    max: u32,
    /// Names for `min`, `min + 1`, ...
    names: &'static [&'static str],
    /// Subtracted from a value to get its bit (years start at 1970).
    bias: u32,
}

const MONTH_NAMES: [&str; 12] = [
    "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
];
const DAY_NAMES: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];
const WEEKDAY_WORDS: [&str; 7] = [
    "Sunday",
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
];

const MINUTES: Field = Field {
    name: "minutes",
    min: 0,
    max: 59,
    names: &[],
    bias: 0,
};
const HOURS: Field = Field {
    name: "hours",
    min: 0,
    max: 23,
    names: &[],
    bias: 0,
};
const DAY_OF_MONTH: Field = Field {
    name: "day-of-month",
    min: 1,
    max: 31,
    names: &[],
    bias: 0,
};
const MONTH: Field = Field {
    name: "month",
    min: 1,
    max: 12,
    names: &MONTH_NAMES,
    bias: 0,
};
const DAY_OF_WEEK: Field = Field {
    name: "day-of-week",
    min: 1,
    max: 7,
    names: &DAY_NAMES,
    bias: 0,
};
const YEAR: Field = Field {
    name: "year",
    min: MIN_YEAR as u32,
    max: MAX_YEAR as u32,
    names: &[],
    bias: MIN_YEAR as u32,
};

impl Field {
    fn all(&self) -> Bits {
        Bits::range(self.min - self.bias, self.max - self.bias)
    }

    fn range_text(&self) -> String {
        match (self.names.first(), self.names.last()) {
            (Some(a), Some(b)) => format!("{}-{} ({a}-{b})", self.min, self.max),
            _ => format!("{}-{}", self.min, self.max),
        }
    }

    /// One value: a number or (for month and day-of-week) a name.
    fn value(&self, text: &str, offset: usize) -> Result<u32, ScheduleError> {
        if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
            return match text.parse::<u32>() {
                Ok(v) if (self.min..=self.max).contains(&v) => Ok(v),
                _ => Err(error(
                    offset,
                    format!(
                        "{}: `{text}` is out of range {}",
                        self.name,
                        self.range_text()
                    ),
                )),
            };
        }
        if let Some(i) = self.names.iter().position(|n| n.eq_ignore_ascii_case(text)) {
            return Ok(self.min + i as u32);
        }
        let what = if self.names.is_empty() {
            "a number"
        } else {
            "a number or name"
        };
        let extra = if text.contains(['L', 'W', '#', 'l', 'w']) && self.names.is_empty() {
            " (`L`, `W` and `#` are only for the day fields)"
        } else {
            ""
        };
        Err(error(
            offset,
            format!(
                "{}: `{text}` is not {what} in {}{extra}",
                self.name,
                self.range_text()
            ),
        ))
    }

    /// A field made of `*`, values, ranges, increments and lists of them.
    fn set(&self, text: &str, offset: usize) -> Result<Bits, ScheduleError> {
        if let Some(i) = text.find('?') {
            return Err(error(
                offset + i,
                format!(
                    "{}: `?` is only allowed as the whole day-of-month or day-of-week field",
                    self.name
                ),
            ));
        }
        let mut bits = Bits::default();
        let mut item_offset = offset;
        for item in text.split(',') {
            self.item(item, item_offset, &mut bits)?;
            item_offset += item.len() + 1;
        }
        Ok(bits)
    }

    fn item(&self, item: &str, offset: usize, bits: &mut Bits) -> Result<(), ScheduleError> {
        if item.is_empty() {
            return Err(error(offset, format!("{}: empty list item", self.name)));
        }
        let (range, step) = match item.split_once('/') {
            Some((r, s)) => (r, Some(self.step(s, offset + r.len() + 1)?)),
            None => (item, None),
        };
        let (lo, hi) = if range == "*" {
            (self.min, self.max)
        } else if let Some((a, b)) = range.split_once('-') {
            let lo = self.value(a, offset)?;
            let hi = self.value(b, offset + a.len() + 1)?;
            if lo > hi {
                return Err(error(
                    offset,
                    format!(
                        "{}: range `{range}` runs backwards; write it from the smaller value",
                        self.name
                    ),
                ));
            }
            (lo, hi)
        } else {
            let v = self.value(range, offset)?;
            (v, if step.is_some() { self.max } else { v })
        };
        let step = step.unwrap_or(1);
        let mut v = lo;
        while v <= hi {
            bits.insert(v - self.bias);
            v += step;
        }
        Ok(())
    }

    fn step(&self, text: &str, offset: usize) -> Result<u32, ScheduleError> {
        let span = self.max - self.min + 1;
        match text.parse::<u32>() {
            Ok(s) if text.bytes().all(|b| b.is_ascii_digit()) && (1..=span).contains(&s) => Ok(s),
            _ => Err(error(
                offset,
                format!(
                    "{}: increment `{text}` must be a whole number in 1-{span}",
                    self.name
                ),
            )),
        }
    }

    /// Canonical text of a set: `*`, an increment, or a list of ranges.
    fn render(&self, bits: &Bits) -> String {
        if *bits == self.all() {
            return "*".to_string();
        }
        let values: Vec<u32> = bits.members().map(|b| b + self.bias).collect();
        let name = |v: u32| -> String {
            self.names
                .get((v - self.min) as usize)
                .map_or_else(|| v.to_string(), |n| n.to_string())
        };
        if let [a, b, c, ..] = values[..] {
            let step = b - a;
            if step > 1 && c - b == step && values.windows(2).all(|w| w[1] - w[0] == step) {
                let last = values[values.len() - 1];
                return if last + step > self.max {
                    format!("{a}/{step}")
                } else {
                    format!("{a}-{last}/{step}")
                };
            }
        }
        let mut parts = Vec::new();
        let mut i = 0;
        while i < values.len() {
            let mut j = i;
            while j + 1 < values.len() && values[j + 1] == values[j] + 1 {
                j += 1;
            }
            match j - i {
                0 => parts.push(name(values[i])),
                1 => {
                    parts.push(name(values[i]));
                    parts.push(name(values[j]));
                }
                _ => parts.push(format!("{}-{}", name(values[i]), name(values[j]))),
            }
            i = j + 1;
        }
        parts.join(",")
    }
}

/// Splits on ASCII whitespace, keeping each word's byte offset.
fn words(text: &str, base: usize) -> Vec<(usize, &str)> {
    let mut out = Vec::new();
    let mut start = None;
    for (i, c) in text.char_indices() {
        match (c.is_ascii_whitespace(), start) {
            (true, Some(s)) => {
                out.push((base + s, &text[s..i]));
                start = None;
            }
            (false, None) => start = Some(i),
            _ => {}
        }
    }
    if let Some(s) = start {
        out.push((base + s, &text[s..]));
    }
    out
}

/// Parses a schedule expression; whitespace around it is ignored.
pub fn parse(text: &str) -> Result<Schedule, ScheduleError> {
    let start = text.len() - text.trim_start().len();
    let body = text.trim();
    let end = start + body.len();
    let (kind, inner) = if let Some(rest) = body.strip_prefix("rate(") {
        ("rate", rest)
    } else if let Some(rest) = body.strip_prefix("cron(") {
        ("cron", rest)
    } else {
        return Err(error(
            start,
            "expected `rate(VALUE UNIT)` or `cron(MINUTES HOURS DAY-OF-MONTH MONTH DAY-OF-WEEK YEAR)`",
        ));
    };
    let Some(inner) = inner.strip_suffix(')') else {
        return Err(error(end, format!("{kind}: expected `)` at the end")));
    };
    let close = end - 1;
    let fields = words(inner, start + 5);
    if kind == "rate" {
        parse_rate(&fields, close)
    } else {
        parse_cron(&fields, close).map(Schedule::Cron)
    }
}

impl FromStr for Schedule {
    type Err = ScheduleError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse(s)
    }
}

fn parse_rate(fields: &[(usize, &str)], close: usize) -> Result<Schedule, ScheduleError> {
    let [(value_at, value), (unit_at, unit)] = fields[..] else {
        let at = fields.get(2).map_or(close, |f| f.0);
        return Err(error(
            at,
            "rate: expected a value and a unit, e.g. `rate(5 minutes)`",
        ));
    };
    let n = match value.parse::<u64>() {
        Ok(n) if value.bytes().all(|b| b.is_ascii_digit()) && (1..=MAX_RATE).contains(&n) => n,
        _ => {
            return Err(error(
                value_at,
                format!("rate: value `{value}` must be a whole number in 1-{MAX_RATE}"),
            ))
        }
    };
    let (singular, seconds) = match unit {
        "minute" | "minutes" => ("minute", 60),
        "hour" | "hours" => ("hour", 3_600),
        "day" | "days" => ("day", 86_400),
        _ => {
            return Err(error(
                unit_at,
                format!("rate: unknown unit `{unit}`; use minute(s), hour(s) or day(s)"),
            ))
        }
    };
    let plural = unit != singular;
    if n == 1 && plural {
        return Err(error(
            unit_at,
            format!("rate: a value of 1 takes the singular unit; write `rate(1 {singular})`"),
        ));
    }
    if n > 1 && !plural {
        return Err(error(
            unit_at,
            format!("rate: a value above 1 takes the plural unit; write `rate({n} {singular}s)`"),
        ));
    }
    Ok(Schedule::Rate {
        every_seconds: n as i64 * seconds,
    })
}

fn parse_cron(fields: &[(usize, &str)], close: usize) -> Result<Cron, ScheduleError> {
    let [minutes, hours, dom, month, dow, year] = fields[..] else {
        let at = fields.get(6).map_or(close, |f| f.0);
        return Err(error(
            at,
            format!(
                "cron: expected 6 fields (minutes hours day-of-month month day-of-week year), found {}",
                fields.len()
            ),
        ));
    };
    let minutes = MINUTES.set(minutes.1, minutes.0)?;
    let hours = HOURS.set(hours.1, hours.0)?;
    let month_days = parse_day_of_month(dom.1, dom.0)?;
    let months = MONTH.set(month.1, month.0)?;
    let week_days = parse_day_of_week(dow.1, dow.0)?;
    let years = YEAR.set(year.1, year.0)?;
    let days = match (month_days, week_days) {
        (Some(m), None) => Days::Month(m),
        (None, Some(WeekDays::Set(b))) if b == DAY_OF_WEEK.all() => {
            Days::Month(MonthDays::Set(DAY_OF_MONTH.all()))
        }
        (None, Some(w)) => Days::Week(w),
        (None, None) => return Err(error(
            dow.0,
            "day-of-week: day-of-month and day-of-week can't both be `?`; use `*` in one of them",
        )),
        (Some(_), Some(_)) => return Err(error(
            dow.0,
            "day-of-week: day-of-month and day-of-week can't both be given; use `?` in one of them",
        )),
    };
    Ok(Cron {
        minutes,
        hours,
        days,
        months,
        years,
    })
}

fn alone(field: &str, text: &str, offset: usize, forms: &str) -> ScheduleError {
    error(
        offset,
        format!("{field}: `{text}` mixes a special form with other values; {forms} must be the whole field"),
    )
}

/// `None` is `?`.
fn parse_day_of_month(text: &str, offset: usize) -> Result<Option<MonthDays>, ScheduleError> {
    let up = text.to_ascii_uppercase();
    match up.as_str() {
        "?" => return Ok(None),
        "L" => return Ok(Some(MonthDays::Last)),
        "LW" => return Ok(Some(MonthDays::LastWeekday)),
        _ => {}
    }
    if let Some(day) = up.strip_suffix('W') {
        if !day.is_empty() && day.bytes().all(|b| b.is_ascii_digit()) {
            return Ok(Some(MonthDays::NearestWeekday(
                DAY_OF_MONTH.value(day, offset)?,
            )));
        }
    }
    if let Some(i) = up.find('#') {
        return Err(error(
            offset + i,
            "day-of-month: `#` is only allowed in day-of-week (e.g. `3#2`)",
        ));
    }
    if up.contains(['L', 'W']) {
        return Err(alone(
            "day-of-month",
            text,
            offset,
            "`L`, `LW` and `nW` (e.g. `15W`)",
        ));
    }
    DAY_OF_MONTH
        .set(text, offset)
        .map(|b| Some(MonthDays::Set(b)))
}

/// `None` is `?`.
fn parse_day_of_week(text: &str, offset: usize) -> Result<Option<WeekDays>, ScheduleError> {
    let up = text.to_ascii_uppercase();
    match up.as_str() {
        "?" => return Ok(None),
        "L" => return Ok(Some(WeekDays::Set(Bits::range(7, 7)))),
        _ => {}
    }
    let special = up.contains('#') || up.ends_with('L');
    if special && up.contains([',', '-', '/', '*']) {
        return Err(alone(
            "day-of-week",
            text,
            offset,
            "`L`, `nL` (e.g. `6L`) and `n#k` (e.g. `3#2`)",
        ));
    }
    if let Some((day, nth)) = up.split_once('#') {
        let day = DAY_OF_WEEK.value(&text[..day.len()], offset)?;
        let at = offset + text.len() - nth.len();
        return match nth.parse::<u32>() {
            Ok(k) if nth.bytes().all(|b| b.is_ascii_digit()) && (1..=5).contains(&k) => {
                Ok(Some(WeekDays::Nth(day, k)))
            }
            _ => Err(error(
                at,
                format!("day-of-week: occurrence `{nth}` after `#` must be 1-5"),
            )),
        };
    }
    if let Some(day) = up.strip_suffix('L') {
        let day = DAY_OF_WEEK.value(&text[..day.len()], offset)?;
        return Ok(Some(WeekDays::Last(day)));
    }
    DAY_OF_WEEK
        .set(text, offset)
        .map(|b| Some(WeekDays::Set(b)))
}

// Civil calendar arithmetic, only needed for 1970-2200.

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        2 if is_leap(y) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Leap years in `[1, y]`.
fn leaps_through(y: i64) -> i64 {
    y / 4 - y / 100 + y / 400
}

/// Days since 1970-01-01 of the first of month `m` in year `y >= 1970`.
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let mut days = 365 * (y - MIN_YEAR) + leaps_through(y - 1) - leaps_through(MIN_YEAR - 1);
    for month in 1..m {
        days += i64::from(days_in_month(y, month));
    }
    days + i64::from(d) - 1
}

/// Inverse of [`days_from_civil`] for `days >= 0`.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let mut y = MIN_YEAR + days / 366;
    while days_from_civil(y + 1, 1, 1) <= days {
        y += 1;
    }
    let mut rest = days - days_from_civil(y, 1, 1);
    let mut m = 1;
    while rest >= i64::from(days_in_month(y, m)) {
        rest -= i64::from(days_in_month(y, m));
        m += 1;
    }
    (y, m, rest as u32 + 1)
}

/// 1 = Sunday ... 7 = Saturday; 1970-01-01 was a Thursday.
fn weekday(days: i64) -> u32 {
    (days + 4).rem_euclid(7) as u32 + 1
}

impl Days {
    /// The matching days (bits 1..=31) of month `m` of year `y`.
    fn in_month(&self, y: i64, m: u32) -> Bits {
        let dim = days_in_month(y, m);
        let first = weekday(days_from_civil(y, m, 1));
        // Weekday of day `d` of this month.
        let wd = |d: u32| (first - 1 + d - 1) % 7 + 1;
        let one = |d: u32| Bits::range(d, d);
        match *self {
            Days::Month(MonthDays::Set(b)) => {
                let mut out = b;
                for d in dim + 1..=31 {
                    out.0[0] &= !(1 << d);
                }
                out
            }
            Days::Month(MonthDays::Last) => one(dim),
            Days::Month(MonthDays::LastWeekday) => match wd(dim) {
                7 => one(dim - 1),
                1 => one(dim - 2),
                _ => one(dim),
            },
            Days::Month(MonthDays::NearestWeekday(n)) if n > dim => Bits::default(),
            Days::Month(MonthDays::NearestWeekday(n)) => match wd(n) {
                7 if n == 1 => one(3),
                7 => one(n - 1),
                1 if n == dim => one(n - 2),
                1 => one(n + 1),
                _ => one(n),
            },
            Days::Week(WeekDays::Set(b)) => {
                let mut out = Bits::default();
                for d in 1..=dim {
                    if b.has(wd(d)) {
                        out.insert(d);
                    }
                }
                out
            }
            Days::Week(WeekDays::Last(w)) => one(dim - (wd(dim) + 7 - w) % 7),
            Days::Week(WeekDays::Nth(w, k)) => {
                let d = 1 + (w + 7 - first) % 7 + 7 * (k - 1);
                if d <= dim {
                    one(d)
                } else {
                    Bits::default()
                }
            }
        }
    }
}

impl Cron {
    /// The first matching minute at or after `minute_of_day` on a matching
    /// day, as (hour, minute).
    fn time_from(&self, minute_of_day: u32) -> Option<(u32, u32)> {
        let (h, m) = (minute_of_day / 60, minute_of_day % 60);
        if self.hours.has(h) {
            if let Some(m) = self.minutes.next_from(m) {
                return Some((h, m));
            }
        }
        let h = self.hours.next_from(h + 1)?;
        Some((h, self.minutes.next_from(0)?))
    }

    /// Walks forward by year, month and day, so every call does at most a
    /// few steps per month up to 2199 even when nothing ever matches.
    fn next_after(&self, after: i64) -> Option<i64> {
        let end = days_from_civil(MAX_YEAR + 1, 1, 1);
        let minute = after.div_euclid(60) + 1;
        let (day, mut minute_of_day) = (minute.div_euclid(1440), minute.rem_euclid(1440) as u32);
        if day >= end {
            return None;
        }
        let (mut y, mut m, mut d) = if day < 0 {
            minute_of_day = 0;
            (MIN_YEAR, 1, 1)
        } else {
            civil_from_days(day)
        };
        while y <= MAX_YEAR {
            if !self.years.has((y - MIN_YEAR) as u32) {
                let next = self.years.next_from((y - MIN_YEAR) as u32)?;
                (y, m, d, minute_of_day) = (MIN_YEAR + i64::from(next), 1, 1, 0);
                continue;
            }
            if !self.months.has(m) {
                match self.months.next_from(m) {
                    Some(next) => (m, d, minute_of_day) = (next, 1, 0),
                    None => (y, m, d, minute_of_day) = (y + 1, 1, 1, 0),
                }
                continue;
            }
            match self.days.in_month(y, m).next_from(d) {
                Some(next) if next != d => (d, minute_of_day) = (next, 0),
                Some(_) => {}
                None => {
                    (y, m, d, minute_of_day) = if m == 12 {
                        (y + 1, 1, 1, 0)
                    } else {
                        (y, m + 1, 1, 0)
                    };
                    continue;
                }
            }
            if let Some((h, min)) = self.time_from(minute_of_day) {
                let days = days_from_civil(y, m, d);
                return Some(days * 86_400 + i64::from(h) * 3_600 + i64::from(min) * 60);
            }
            (d, minute_of_day) = (d + 1, 0);
        }
        None
    }

    fn describe(&self) -> String {
        let list = |b: &Bits| -> String {
            b.members()
                .map(|v| v.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let one = |b: &Bits| -> Option<u32> {
            let mut it = b.members();
            let first = it.next()?;
            it.next().is_none().then_some(first)
        };
        let time = match (one(&self.hours), one(&self.minutes)) {
            (Some(h), Some(m)) => format!("at {h:02}:{m:02} UTC"),
            _ if self.hours == HOURS.all() && self.minutes == MINUTES.all() => {
                "every minute (UTC)".to_string()
            }
            _ if self.hours == HOURS.all() => {
                format!("at minute {} of every hour (UTC)", list(&self.minutes))
            }
            _ => format!(
                "at minute {} of hour {} (UTC)",
                list(&self.minutes),
                list(&self.hours)
            ),
        };
        let ordinal = ["first", "second", "third", "fourth", "fifth"];
        let day_word = |w: u32| WEEKDAY_WORDS[(w as usize - 1) % 7];
        let days = match self.days {
            Days::Month(MonthDays::Set(b)) if b == DAY_OF_MONTH.all() => "every day".to_string(),
            Days::Month(MonthDays::Set(b)) => format!("on day {} of the month", list(&b)),
            Days::Month(MonthDays::Last) => "on the last day of the month".to_string(),
            Days::Month(MonthDays::LastWeekday) => "on the last weekday of the month".to_string(),
            Days::Month(MonthDays::NearestWeekday(n)) => {
                format!("on the weekday nearest day {n} of the month")
            }
            Days::Week(WeekDays::Set(b)) => format!(
                "on {}",
                b.members().map(day_word).collect::<Vec<_>>().join(", ")
            ),
            Days::Week(WeekDays::Last(w)) => format!("on the last {} of the month", day_word(w)),
            Days::Week(WeekDays::Nth(w, k)) => format!(
                "on the {} {} of the month",
                ordinal[(k as usize - 1) % 5],
                day_word(w)
            ),
        };
        let mut text = format!("{time} {days}");
        if self.months != MONTH.all() {
            text += &format!(" in {}", MONTH.render(&self.months));
        }
        if self.years != YEAR.all() {
            text += &format!(" in year {}", YEAR.render(&self.years));
        }
        text + &format!(" ({self})")
    }
}

impl fmt::Display for Cron {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (dom, dow) = match self.days {
            Days::Month(MonthDays::Set(b)) => (DAY_OF_MONTH.render(&b), "?".to_string()),
            Days::Month(MonthDays::Last) => ("L".to_string(), "?".to_string()),
            Days::Month(MonthDays::LastWeekday) => ("LW".to_string(), "?".to_string()),
            Days::Month(MonthDays::NearestWeekday(n)) => (format!("{n}W"), "?".to_string()),
            Days::Week(WeekDays::Set(b)) => ("?".to_string(), DAY_OF_WEEK.render(&b)),
            Days::Week(WeekDays::Last(w)) => ("?".to_string(), format!("{w}L")),
            Days::Week(WeekDays::Nth(w, k)) => ("?".to_string(), format!("{w}#{k}")),
        };
        write!(
            f,
            "cron({} {} {dom} {} {dow} {})",
            MINUTES.render(&self.minutes),
            HOURS.render(&self.hours),
            MONTH.render(&self.months),
            YEAR.render(&self.years)
        )
    }
}

impl Schedule {
    /// The first fire time strictly after `after` (unix seconds, UTC).
    ///
    /// A rate fires at `anchor + k * period` for k >= 1: EventBridge fires
    /// one period after the rule is created, never at creation itself. A
    /// cron ignores `anchor`. `None` when it never fires again (its years
    /// are past, or no matching day exists up to 2199).
    pub fn next_after(&self, after: i64, anchor: i64) -> Option<i64> {
        match self {
            Schedule::Rate { every_seconds } => {
                let period = i128::from(*every_seconds);
                if period <= 0 {
                    return None;
                }
                let (after, anchor) = (i128::from(after), i128::from(anchor));
                let k = if after < anchor {
                    1
                } else {
                    (after - anchor) / period + 1
                };
                i64::try_from(anchor + k * period).ok()
            }
            Schedule::Cron(cron) => cron.next_after(after),
        }
    }

    /// A short English description that ends with the canonical expression.
    pub fn describe(&self) -> String {
        match self {
            Schedule::Rate { .. } => {
                let (n, unit) = self.rate_parts();
                if n == 1 {
                    format!("every {unit} ({self})")
                } else {
                    format!("every {n} {unit}s ({self})")
                }
            }
            Schedule::Cron(cron) => cron.describe(),
        }
    }

    /// The largest unit that divides the period exactly.
    fn rate_parts(&self) -> (i64, &'static str) {
        let Schedule::Rate { every_seconds: s } = *self else {
            return (0, "minute");
        };
        if s % 86_400 == 0 {
            (s / 86_400, "day")
        } else if s % 3_600 == 0 {
            (s / 3_600, "hour")
        } else if s % 60 == 0 {
            (s / 60, "minute")
        } else {
            // Only a hand-built value gets here; say it as it is rather
            // than round it into a different schedule.
            (s, "second")
        }
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Schedule::Rate { .. } => {
                let (n, unit) = self.rate_parts();
                let s = if n == 1 { "" } else { "s" };
                write!(f, "rate({n} {unit}{s})")
            }
            Schedule::Cron(cron) => cron.fmt(f),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Unix seconds of a UTC civil time.
    fn at(y: i64, m: u32, d: u32, h: i64, min: i64) -> i64 {
        days_from_civil(y, m, d) * 86_400 + h * 3_600 + min * 60
    }

    fn next(expr: &str, after: i64) -> Option<i64> {
        parse(expr).unwrap().next_after(after, 0)
    }

    fn err(expr: &str) -> ScheduleError {
        parse(expr).unwrap_err()
    }

    #[test]
    fn civil_arithmetic_matches_known_dates() {
        // Values checked against the system `date -u -d DATE +%s`.
        assert_eq!(at(2026, 8, 1, 0, 0), 1_785_542_400);
        assert_eq!(at(2024, 2, 29, 0, 0), 1_709_164_800);
        assert_eq!(at(2026, 3, 1, 0, 0), 1_772_323_200);
        assert_eq!(weekday(days_from_civil(2026, 8, 1)), 7);
        assert_eq!(weekday(days_from_civil(2026, 3, 1)), 1);
        assert_eq!(weekday(days_from_civil(2024, 2, 29)), 5);
        for days in [0, 59, 365, 10_000, 20_000, 83_000] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
    }

    #[test]
    fn documentation_examples() {
        // 2026-01-01 is a Thursday.
        let t = at(2026, 1, 1, 0, 0);
        assert_eq!(next("cron(0 10 * * ? *)", t), Some(at(2026, 1, 1, 10, 0)));
        assert_eq!(
            next("cron(0 10 * * ? *)", at(2026, 1, 1, 10, 0)),
            Some(at(2026, 1, 2, 10, 0))
        );
        assert_eq!(next("cron(15 12 * * ? *)", t), Some(at(2026, 1, 1, 12, 15)));
        assert_eq!(
            next("cron(0 18 ? * MON-FRI *)", at(2026, 1, 2, 18, 0)),
            Some(at(2026, 1, 5, 18, 0))
        );
        assert_eq!(
            next("cron(0 8 1 * ? *)", at(2026, 1, 1, 8, 0)),
            Some(at(2026, 2, 1, 8, 0))
        );
        assert_eq!(
            next("cron(0/15 * * * ? *)", at(2026, 1, 1, 0, 50)),
            Some(at(2026, 1, 1, 1, 0))
        );
        assert_eq!(
            next("cron(0/10 * ? * MON-FRI *)", at(2026, 1, 2, 23, 55)),
            Some(at(2026, 1, 5, 0, 0))
        );
        let work = "cron(0/5 8-17 ? * MON-FRI *)";
        assert_eq!(
            next(work, at(2026, 1, 1, 17, 55)),
            Some(at(2026, 1, 2, 8, 0))
        );
        assert_eq!(next(work, at(2026, 1, 1, 9, 1)), Some(at(2026, 1, 1, 9, 5)));
        // First Monday of the month: 2026-01-05, 2026-02-02.
        let monday = "cron(0 9 ? * 2#1 *)";
        assert_eq!(next(monday, t), Some(at(2026, 1, 5, 9, 0)));
        assert_eq!(
            next(monday, at(2026, 1, 5, 9, 0)),
            Some(at(2026, 2, 2, 9, 0))
        );
    }

    #[test]
    fn last_days_and_weekdays() {
        assert_eq!(
            next("cron(0 0 L * ? *)", at(2026, 2, 1, 0, 0)),
            Some(at(2026, 2, 28, 0, 0))
        );
        assert_eq!(
            next("cron(0 0 L * ? *)", at(2024, 2, 1, 0, 0)),
            Some(at(2024, 2, 29, 0, 0))
        );
        // 2026-08-01 is a Saturday: nearest weekday in August is Monday 3rd.
        assert_eq!(
            next("cron(0 0 1W * ? *)", at(2026, 7, 31, 0, 0)),
            Some(at(2026, 8, 3, 0, 0))
        );
        // 2026-02-28 is a Saturday: 28W is Friday 27th, LW too.
        assert_eq!(
            next("cron(0 0 28W 2 ? *)", at(2026, 1, 1, 0, 0)),
            Some(at(2026, 2, 27, 0, 0))
        );
        assert_eq!(
            next("cron(0 0 LW * ? *)", at(2026, 2, 1, 0, 0)),
            Some(at(2026, 2, 27, 0, 0))
        );
        // 2025-11-30 is a Sunday: 30W and LW are Friday 28th, not December.
        assert_eq!(
            next("cron(0 0 30W 11 ? 2025)", at(2025, 1, 1, 0, 0)),
            Some(at(2025, 11, 28, 0, 0))
        );
        assert_eq!(
            next("cron(0 0 LW 11 ? 2025)", at(2025, 1, 1, 0, 0)),
            Some(at(2025, 11, 28, 0, 0))
        );
        // 2026-03-01 is a Sunday: 1W is Monday 2nd.
        assert_eq!(
            next("cron(0 0 1W 3 ? 2026)", at(2026, 1, 1, 0, 0)),
            Some(at(2026, 3, 2, 0, 0))
        );
        // 31W skips months without a 31st.
        assert_eq!(
            next("cron(0 0 31W * ? 2026)", at(2026, 4, 1, 0, 0)),
            Some(at(2026, 5, 29, 0, 0))
        );
        // Last Friday of February 2026 is the 27th; bare L is every Saturday.
        assert_eq!(
            next("cron(0 0 ? 2 6L 2026)", at(2026, 1, 1, 0, 0)),
            Some(at(2026, 2, 27, 0, 0))
        );
        assert_eq!(
            parse("cron(0 0 ? 2 FRIL 2026)"),
            parse("cron(0 0 ? 2 6L 2026)")
        );
        assert_eq!(
            next("cron(0 0 ? * L *)", at(2026, 1, 1, 0, 0)),
            Some(at(2026, 1, 3, 0, 0))
        );
        // Second Tuesday of August 2026 is the 11th.
        assert_eq!(
            next("cron(30 6 ? 8 3#2 *)", at(2026, 1, 1, 0, 0)),
            Some(at(2026, 8, 11, 6, 30))
        );
        // No fifth Monday in February 2026; March 2026 has one, the 30th.
        assert_eq!(
            next("cron(0 0 ? 2-3 MON#5 2026)", at(2026, 1, 1, 0, 0)),
            Some(at(2026, 3, 30, 0, 0))
        );
    }

    #[test]
    fn never_firing_expressions_give_none() {
        assert_eq!(next("cron(30 * 31 2 ? *)", 0), None);
        assert_eq!(next("cron(0 0 30 FEB ? *)", 0), None);
        assert_eq!(next("cron(0 0 * * ? 1999)", at(2000, 1, 1, 0, 0)), None);
        assert_eq!(next("cron(0 0 ? 2 2#5 2026)", 0), None);
        assert_eq!(next("cron(0 0 * * ? *)", at(2199, 12, 31, 0, 0)), None);
        assert_eq!(next("cron(0 0 * * ? *)", i64::MAX), None);
        assert_eq!(next("cron(0 0 1 1 ? *)", i64::MIN), Some(0));
        assert_eq!(next("cron(0 0 1 1 ? *)", -1), Some(0));
        assert_eq!(next("cron(0 0 1 1 ? *)", 0), Some(at(1971, 1, 1, 0, 0)));
    }

    #[test]
    fn rates_fire_one_period_after_the_anchor() {
        let s = parse("rate(5 minutes)").unwrap();
        assert_eq!(s, Schedule::Rate { every_seconds: 300 });
        assert_eq!(s.next_after(1_000, 1_000), Some(1_300));
        assert_eq!(s.next_after(0, 1_000), Some(1_300));
        assert_eq!(s.next_after(1_299, 1_000), Some(1_300));
        assert_eq!(s.next_after(1_300, 1_000), Some(1_600));
        assert_eq!(s.next_after(i64::MAX, 0), None);
        assert_eq!(s.next_after(i64::MIN, i64::MAX), None);
        assert_eq!(
            parse(" rate(1 day) ").unwrap(),
            Schedule::Rate {
                every_seconds: 86_400
            }
        );
        assert_eq!(
            parse("rate(60 minutes)").unwrap().to_string(),
            "rate(1 hour)"
        );
        assert_eq!(
            parse("rate(1 minute)").unwrap().describe(),
            "every minute (rate(1 minute))"
        );
        assert_eq!(
            parse("rate(36 hours)").unwrap().to_string(),
            "rate(36 hours)"
        );
        assert!(parse("rate(1000000 days)").is_ok());
        let odd = Schedule::Rate { every_seconds: 90 };
        assert_eq!(odd.to_string(), "rate(90 seconds)");
        assert!(parse(&odd.to_string()).is_err());
        assert_eq!(Schedule::Rate { every_seconds: 0 }.next_after(0, 0), None);
    }

    #[test]
    fn canonical_text_and_descriptions() {
        let cases = [
            ("cron(0/15 * * * ? *)", "cron(0/15 * * * ? *)"),
            ("cron(0,15,30,45 * * * ? *)", "cron(0/15 * * * ? *)"),
            (
                "cron(5-40/10 1,2,3 ? jan-mar,DEC 2-6 2030)",
                "cron(5-35/10 1-3 ? JAN-MAR,DEC MON-FRI 2030)",
            ),
            ("cron(0 0 ? * * *)", "cron(0 0 * * ? *)"),
            ("cron(0 0 ? * l *)", "cron(0 0 ? * SAT *)"),
            ("cron(0 0 15w * ? *)", "cron(0 0 15W * ? *)"),
            (
                "cron(0 0 ? * fri#3 2026-2199)",
                "cron(0 0 ? * 6#3 2026-2199)",
            ),
            ("cron(1,2 0 ? * 1,7 *)", "cron(1,2 0 ? * SUN,SAT *)"),
        ];
        for (input, canonical) in cases {
            let s = parse(input).unwrap();
            assert_eq!(s.to_string(), canonical, "{input}");
            assert_eq!(parse(canonical).unwrap(), s, "{input}");
        }
        assert_eq!(
            parse("cron(0 3 * * ? *)").unwrap().describe(),
            "at 03:00 UTC every day (cron(0 3 * * ? *))"
        );
        assert_eq!(
            parse("cron(0 9 ? * 2#1 *)").unwrap().describe(),
            "at 09:00 UTC on the first Monday of the month (cron(0 9 ? * 2#1 *))"
        );
    }

    #[test]
    fn errors_name_the_field_and_point_at_it() {
        let e = err("cron(0 0 ? * 8 *)");
        assert_eq!(e.message, "day-of-week: `8` is out of range 1-7 (SUN-SAT)");
        assert_eq!(e.offset, 13);
        let e = err("  cron(0 0 * * MON *)");
        assert!(e.message.contains("can't both be given"), "{e}");
        assert_eq!(e.offset, 15);
        let e = err("cron(0 0 ? * ? *)");
        assert!(e.message.contains("can't both be `?`"), "{e}");
        let e = err("cron(0 24 * * ? *)");
        assert_eq!(e.message, "hours: `24` is out of range 0-23");
        assert_eq!(e.offset, 7);
        let e = err("cron(0 1,5-3 * * ? *)");
        assert!(
            e.message.starts_with("hours: range `5-3` runs backwards"),
            "{e}"
        );
        assert_eq!(e.offset, 9);
        let e = err("cron(0 0 * FOO ? *)");
        assert!(
            e.message
                .starts_with("month: `FOO` is not a number or name"),
            "{e}"
        );
        assert_eq!(e.offset, 11);
        let e = err("cron(0 0 * * ? 2200)");
        assert_eq!(e.message, "year: `2200` is out of range 1970-2199");
        let e = err("cron(0 0 * * ?)");
        assert!(e.message.contains("expected 6 fields"), "{e}");
        assert_eq!(e.offset, 14);
        let e = err("cron(0 0 * * ? * *)");
        assert_eq!(e.offset, 17);
        let e = err("cron(? 0 * * ? *)");
        assert!(e.message.starts_with("minutes: `?`"), "{e}");
        let e = err("cron(0 0 ? * 2#6 *)");
        assert!(e.message.contains("must be 1-5"), "{e}");
        assert_eq!(e.offset, 15);
        let e = err("cron(0 0 ? * 2#1,3 *)");
        assert!(e.message.contains("must be the whole field"), "{e}");
        let e = err("cron(0 0 L,3 * ? *)");
        assert!(e.message.contains("must be the whole field"), "{e}");
        let e = err("cron(0 0 32W * ? *)");
        assert!(e.message.contains("out of range 1-31"), "{e}");
        let e = err("cron(0/0 0 * * ? *)");
        assert!(e.message.contains("increment `0`"), "{e}");
        assert_eq!(e.offset, 7);
        let e = err("cron(0,,1 0 * * ? *)");
        assert_eq!(e.offset, 7);
        let e = err("rate(1 minutes)");
        assert_eq!(
            e.message,
            "rate: a value of 1 takes the singular unit; write `rate(1 minute)`"
        );
        assert_eq!(e.offset, 7);
        let e = err("rate(5 minute)");
        assert!(e.message.contains("write `rate(5 minutes)`"), "{e}");
        let e = err("rate(0 minutes)");
        assert_eq!(e.offset, 5);
        let e = err("rate(1000001 days)");
        assert!(e.message.contains("1-1000000"), "{e}");
        let e = err("rate(5 weeks)");
        assert!(e.message.contains("unknown unit"), "{e}");
        let e = err("rate(5 minutes");
        assert_eq!(e.offset, 14);
        let e = err(" every 5 minutes");
        assert_eq!(e.offset, 1);
        assert!(parse("").is_err());
        assert!(parse("cron()").is_err());
        assert!(parse("rate(-5 minutes)").is_err());
        assert!(parse("cron(0 0 * * ? é)").is_err());
    }
}
