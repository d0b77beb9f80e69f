//! Properties of schedule expressions (`reconcile::schedule`), for random
//! expression strings that use every cron feature:
//! - a cron's next fire time equals a brute-force day-by-day scan that checks
//!   each day against the generator's own description of the fields, with
//!   calendar facts from jiff rather than the module;
//! - a rate fires strictly after `after`, on the anchor's grid, never at or
//!   before the anchor, and at the first such time;
//! - the canonical text parses back to the same schedule;
//! - broken variants (both day fields set, out-of-range values, wrong rate
//!   unit number) are refused with an offset inside the broken field;
//! - no text near a valid expression makes parsing or evaluation panic.

use jiff::civil::Date;
use jiff::tz::Offset;
use jiff::Timestamp;
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;
use reconcile::schedule::{parse, Schedule};

const MONTHS: [&str; 12] = [
    "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
];
const DAYS: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];

/// One written cron field and the values it allows.
#[derive(Debug, Clone)]
struct Field {
    text: String,
    allowed: Vec<u32>,
}

/// How a value is written: a number, or a name in some letter case.
fn spell(v: u32, min: u32, names: &'static [&'static str], style: u8) -> String {
    match names.get((v - min) as usize) {
        Some(n) if style == 1 => n.to_string(),
        Some(n) if style == 2 => n.to_lowercase(),
        _ => v.to_string(),
    }
}

/// A list of 1-3 items (`*`, `*/s`, `a`, `a/s`, `a-b`, `a-b/s`) over
/// `min..=max`, with values drawn from `lo..=hi`.
fn field(
    min: u32,
    max: u32,
    lo: u32,
    hi: u32,
    names: &'static [&'static str],
) -> impl Strategy<Value = Field> {
    let span = max - min + 1;
    let item = (0u8..6, lo..=hi, lo..=hi, 1..=span, 0u8..3, 0u8..3).prop_map(
        move |(kind, a, b, step, sa, sb)| {
            let (a, b) = (a.min(b), a.max(b));
            let (text, from, to, step) = match kind {
                0 => ("*".to_string(), min, max, 1),
                1 => (format!("*/{step}"), min, max, step),
                2 => (spell(a, min, names, sa), a, a, 1),
                3 => (format!("{}/{step}", spell(a, min, names, sa)), a, max, step),
                4 => (
                    format!("{}-{}", spell(a, min, names, sa), spell(b, min, names, sb)),
                    a,
                    b,
                    1,
                ),
                _ => (
                    format!(
                        "{}-{}/{step}",
                        spell(a, min, names, sa),
                        spell(b, min, names, sb)
                    ),
                    a,
                    b,
                    step,
                ),
            };
            let allowed: Vec<u32> = (from..=to).filter(|v| (v - from) % step == 0).collect();
            Field { text, allowed }
        },
    );
    prop::collection::vec(item, 1..4).prop_map(|items| {
        let mut allowed: Vec<u32> = items.iter().flat_map(|i| i.allowed.clone()).collect();
        allowed.sort_unstable();
        allowed.dedup();
        let text = items
            .iter()
            .map(|i| i.text.as_str())
            .collect::<Vec<_>>()
            .join(",");
        Field { text, allowed }
    })
}

/// Which days match, in the generator's own terms (weekday 1 = Sunday).
#[derive(Debug, Clone)]
enum DayRule {
    Dom(Vec<u32>),
    Last,
    LastWeekday,
    Nearest(u32),
    Dow(Vec<u32>),
    LastOf(u32),
    Nth(u32, u32),
}

/// (day-of-month text, day-of-week text, rule).
fn days() -> impl Strategy<Value = (String, String, DayRule)> {
    let q = || "?".to_string();
    prop_oneof![
        3 => field(1, 31, 1, 31, &[]).prop_map(move |f| (f.text, q(), DayRule::Dom(f.allowed))),
        1 => Just(("L".to_string(), q(), DayRule::Last)),
        1 => Just(("LW".to_string(), q(), DayRule::LastWeekday)),
        // Month edges are where `W` must not cross into another month.
        2 => prop_oneof![1u32..=31, Just(1), 28u32..=31]
            .prop_map(move |n| (format!("{n}W"), q(), DayRule::Nearest(n))),
        3 => field(1, 7, 1, 7, &DAYS).prop_map(move |f| (q(), f.text, DayRule::Dow(f.allowed))),
        1 => Just((q(), "L".to_string(), DayRule::Dow(vec![7]))),
        1 => (1u32..=7, 0u8..3)
            .prop_map(move |(w, s)| (q(), format!("{}L", spell(w, 1, &DAYS, s)), DayRule::LastOf(w))),
        1 => (1u32..=7, 1u32..=5, 0u8..3)
            .prop_map(move |(w, k, s)| (q(), format!("{}#{k}", spell(w, 1, &DAYS, s)), DayRule::Nth(w, k))),
    ]
}

#[derive(Debug, Clone)]
struct Case {
    minutes: Field,
    hours: Field,
    dom: String,
    months: Field,
    dow: String,
    years: Field,
    rule: DayRule,
    after: i64,
}

impl Case {
    fn text(&self) -> String {
        format!(
            "cron({} {} {} {} {} {})",
            self.minutes.text,
            self.hours.text,
            self.dom,
            self.months.text,
            self.dow,
            self.years.text
        )
    }

    /// Byte spans of the six fields in `text()`.
    fn spans(&self) -> Vec<(usize, usize)> {
        let mut at = "cron(".len();
        [
            &self.minutes.text,
            &self.hours.text,
            &self.dom,
            &self.months.text,
            &self.dow,
            &self.years.text,
        ]
        .iter()
        .map(|t| {
            let span = (at, at + t.len());
            at += t.len() + 1;
            span
        })
        .collect()
    }
}

fn case() -> impl Strategy<Value = Case> {
    (1970u32..2100, 0i64..366 * 86_400).prop_flat_map(|(year, into)| {
        (
            field(0, 59, 0, 59, &[]),
            field(0, 23, 0, 23, &[]),
            days(),
            field(1, 12, 1, 12, &MONTHS),
            field(1970, 2199, year.saturating_sub(3).max(1970), year + 8, &[]),
            Just(year_start(year) + into),
        )
            .prop_map(
                |(minutes, hours, (dom, dow, rule), months, years, after)| Case {
                    minutes,
                    hours,
                    dom,
                    months,
                    dow,
                    years,
                    rule,
                    after,
                },
            )
    })
}

fn year_start(year: u32) -> i64 {
    let date = Date::new(year as i16, 1, 1).unwrap();
    Offset::UTC
        .to_timestamp(date.at(0, 0, 0, 0))
        .unwrap()
        .as_second()
}

fn is_weekday(d: Date) -> bool {
    (2..=6).contains(&d.weekday().to_sunday_one_offset())
}

fn day_of(d: Date, n: i8) -> Date {
    Date::new(d.year(), d.month(), n).unwrap()
}

/// Whether `d` matches the rule, checked straight from the definitions.
fn rule_matches(rule: &DayRule, d: Date) -> bool {
    let day = d.day() as u32;
    let dim = d.days_in_month() as u32;
    let wd = d.weekday().to_sunday_one_offset() as u32;
    let weekdays_in_month = || {
        (1..=d.days_in_month())
            .map(move |n| day_of(d, n))
            .filter(|&x| is_weekday(x))
    };
    match rule {
        DayRule::Dom(days) => days.contains(&day),
        DayRule::Last => day == dim,
        DayRule::LastWeekday => is_weekday(d) && weekdays_in_month().all(|x| x.day() <= d.day()),
        DayRule::Nearest(n) => {
            let dist = |x: u32| x.abs_diff(*n);
            *n <= dim
                && is_weekday(d)
                && weekdays_in_month().all(|x| dist(x.day() as u32) >= dist(day))
        }
        DayRule::Dow(days) => days.contains(&wd),
        DayRule::LastOf(w) => wd == *w && day + 7 > dim,
        DayRule::Nth(w, k) => wd == *w && (day - 1) / 7 + 1 == *k,
    }
}

fn day_matches(c: &Case, d: Date) -> bool {
    c.years.allowed.contains(&(d.year() as u32))
        && c.months.allowed.contains(&(d.month() as u32))
        && rule_matches(&c.rule, d)
}

/// Whether unix second `t` is a fire time of the case.
fn fires_at(c: &Case, t: i64) -> bool {
    let dt = Offset::UTC.to_datetime(Timestamp::from_second(t).unwrap());
    dt.second() == 0
        && c.minutes.allowed.contains(&(dt.minute() as u32))
        && c.hours.allowed.contains(&(dt.hour() as u32))
        && day_matches(c, dt.date())
}

const SCAN_DAYS: i64 = 30 * 366;

/// The first fire time after `c.after`, scanning day by day for at most
/// `SCAN_DAYS` days; `Err(end)` when none was found before `end`.
fn reference(c: &Case) -> Result<i64, i64> {
    let after = Offset::UTC.to_datetime(Timestamp::from_second(c.after).unwrap());
    let mut date = after.date();
    for _ in 0..SCAN_DAYS {
        if date.year() > 2199 {
            return Err(i64::MAX);
        }
        if day_matches(c, date) {
            for &h in &c.hours.allowed {
                for &m in &c.minutes.allowed {
                    let t = Offset::UTC
                        .to_timestamp(date.at(h as i8, m as i8, 0, 0))
                        .unwrap()
                        .as_second();
                    if t > c.after {
                        return Ok(t);
                    }
                }
            }
        }
        date = date.tomorrow().unwrap();
    }
    Err(Offset::UTC
        .to_timestamp(date.at(0, 0, 0, 0))
        .unwrap()
        .as_second())
}

fn rate() -> impl Strategy<Value = (String, i64)> {
    (
        prop_oneof![Just(1u64), 2u64..100, 100u64..=1_000_000],
        prop::sample::select(vec![("minute", 60i64), ("hour", 3_600), ("day", 86_400)]),
    )
        .prop_map(|(n, (unit, secs))| {
            let s = if n == 1 { "" } else { "s" };
            (format!("rate({n} {unit}{s})"), n as i64 * secs)
        })
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000)
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: cases(),
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/proptest-regressions/schedule_properties.txt"
        )))),
        ..ProptestConfig::default()
    })]

    #[test]
    fn cron_next_fire_matches_a_brute_force_scan(c in case()) {
        let text = c.text();
        let schedule = parse(&text).map_err(|e| TestCaseError::fail(format!("{text}: {e}")))?;
        let got = schedule.next_after(c.after, 0);
        match reference(&c) {
            Ok(want) => prop_assert_eq!(got, Some(want), "{} after {}", text, c.after),
            Err(end) => {
                // Nothing within the scan: the module may only find a later,
                // genuine fire time.
                if let Some(t) = got {
                    prop_assert!(t >= end, "{text}: {t} missed by the scan");
                    prop_assert!(fires_at(&c, t), "{text}: {t} does not match");
                }
            }
        }
        if let Some(t) = got {
            prop_assert!(t > c.after && t % 60 == 0);
            prop_assert!(fires_at(&c, t), "{text}: {t} does not match");
            // Asking again from just before gives the same answer.
            prop_assert_eq!(schedule.next_after(t - 1, 0), Some(t));
        }
    }

    #[test]
    fn canonical_text_parses_back(c in case(), pad in "[ \t\n]{0,2}") {
        let text = format!("{pad}{}{pad}", c.text());
        let schedule = parse(&text).map_err(|e| TestCaseError::fail(format!("{text}: {e}")))?;
        let canonical = schedule.to_string();
        prop_assert_eq!(parse(&canonical), Ok(schedule.clone()), "{} -> {}", text, canonical);
        prop_assert_eq!(parse(&canonical).unwrap().to_string(), canonical.clone());
        let tail = format!("({canonical})");
        prop_assert!(schedule.describe().ends_with(&tail));
    }

    #[test]
    fn both_day_fields_are_refused(c in case(), other in field(1, 7, 1, 7, &DAYS), dom in field(1, 31, 1, 31, &[])) {
        let mut c = c;
        if c.dom == "?" {
            c.dom = dom.text;
        } else {
            c.dow = other.text;
        }
        let text = c.text();
        let err = parse(&text).expect_err("both day fields set");
        let spans = c.spans();
        prop_assert!(err.offset >= spans[2].0 && err.offset < spans[4].1, "{text}: {err}");
        prop_assert!(err.message.contains("day-of-week"), "{}", err.message);
    }

    #[test]
    fn out_of_range_values_are_refused(c in case(), which in 0usize..6, extra in 1u32..50, alone in any::<bool>()) {
        let mut c = c;
        // Break a field that is not `?`, keeping the other day field `?`.
        let which = match which {
            2 if c.dom == "?" => 4,
            4 if c.dow == "?" => 2,
            w => w,
        };
        let bad = match which {
            0 => 59 + extra,
            1 => 23 + extra,
            2 => 31 + extra,
            3 => 12 + extra,
            4 => 7 + extra,
            _ if alone => 1970 - extra,
            _ => 2199 + extra,
        };
        let slot = match which {
            0 => &mut c.minutes.text,
            1 => &mut c.hours.text,
            2 => &mut c.dom,
            3 => &mut c.months.text,
            4 => &mut c.dow,
            _ => &mut c.years.text,
        };
        let special = slot.contains(['L', 'W', '#']);
        *slot = if alone || special { bad.to_string() } else { format!("{slot},{bad}") };
        let text = c.text();
        let err = parse(&text).expect_err("out-of-range value");
        let (from, to) = c.spans()[which];
        prop_assert!(err.offset >= from && err.offset < to, "{text}: {err}");
        prop_assert!(err.message.contains("out of range"), "{}", err.message);
    }

    #[test]
    fn rate_fires_on_the_anchor_grid((text, period) in rate(), after in -4_000_000_000i64..8_000_000_000, anchor in -4_000_000_000i64..8_000_000_000) {
        let schedule = parse(&text).unwrap();
        prop_assert_eq!(&schedule, &Schedule::Rate { every_seconds: period });
        prop_assert_eq!(parse(&schedule.to_string()), Ok(schedule.clone()));
        let t = schedule.next_after(after, anchor).unwrap();
        prop_assert!(t > after && t > anchor);
        prop_assert_eq!((t - anchor) % period, 0);
        // Minimal: one period earlier is the anchor itself or not after `after`.
        prop_assert!(t - period == anchor || t - period <= after);
    }

    #[test]
    fn nothing_panics_on_near_miss_text(
        body in "[0-9A-Za-z*?/,#\\- ]{0,30}",
        kind in prop::sample::select(vec!["cron(", "rate(", "", "cron( "]),
        close in prop::sample::select(vec![")", "", " )", ") x"]),
        after in any::<i64>(),
        anchor in any::<i64>(),
    ) {
        let text = format!("{kind}{body}{close}");
        match parse(&text) {
            Ok(s) => {
                if let Some(t) = s.next_after(after, anchor) {
                    prop_assert!(t > after);
                }
                prop_assert_eq!(parse(&s.to_string()), Ok(s.clone()));
            }
            Err(e) => prop_assert!(e.offset <= text.len(), "{text}: {e}"),
        }
    }

    #[test]
    fn edited_expressions_parse_or_point_inside(
        c in case(),
        at in any::<prop::sample::Index>(),
        ch in prop::sample::select(vec!['?', 'L', 'W', '#', '/', '-', ',', '*', ' ', '9', 'x', ')']),
        delete in any::<bool>(),
    ) {
        let mut text = c.text();
        let i = at.index(text.len());
        if delete {
            text.remove(i);
        } else {
            text.insert(i, ch);
        }
        match parse(&text) {
            Ok(s) => {
                prop_assert_eq!(parse(&s.to_string()), Ok(s.clone()));
                if let Some(t) = s.next_after(c.after, 0) {
                    prop_assert!(t > c.after);
                }
            }
            Err(e) => prop_assert!(e.offset <= text.len(), "{text}: {e}"),
        }
    }

    #[test]
    fn rate_unit_number_mismatch_is_refused(n in 1u64..10_000, unit in prop::sample::select(vec!["minute", "hour", "day"])) {
        let s = if n == 1 { "s" } else { "" };
        let text = format!("rate({n} {unit}{s})");
        let err = parse(&text).expect_err("unit number mismatch");
        prop_assert_eq!(err.offset, text.find(unit).unwrap());
        let fixed = if n == 1 { format!("rate(1 {unit})") } else { format!("rate({n} {unit}s)") };
        prop_assert!(err.message.contains(&fixed), "{}", err.message);
    }
}
