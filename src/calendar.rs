//! Calendar arithmetic in plain Rust: billing periods on civil dates, and the timestamps
//! events carry. Dates are days since 2000-01-01 (PostgreSQL's epoch), so they cross into
//! SQL without conversion; time zones are applied in SQL, where PostgreSQL's tz database is.

use crate::error::{BillingError, Result};

/// A civil date as days since 2000-01-01.
pub type Day = i32;

const UNIX_TO_PG_EPOCH_DAYS: i64 = 10_957;
const MICROS_PER_DAY: i64 = 86_400_000_000;

/// Days since 2000-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
pub fn day_of(year: i32, month: u32, day: u32) -> Day {
    let y = i64::from(year) - i64::from(month <= 2);
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (i64::from(month) + 9) % 12;
    let doy = (153 * mp + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    (era * 146_097 + doe - 719_468 - UNIX_TO_PG_EPOCH_DAYS) as Day
}

/// The UTC date of an instant (microseconds since 2000-01-01 UTC): the day it falls in,
/// rounding down before the epoch too.
pub fn utc_day(micros: i64) -> Day {
    micros.div_euclid(MICROS_PER_DAY) as Day
}

/// (year, month, day) of days since 2000-01-01.
pub fn civil(day: Day) -> (i32, u32, u32) {
    let z = i64::from(day) + UNIX_TO_PG_EPOCH_DAYS + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    ((yoe + era * 400 + i64::from(m <= 2)) as i32, m, d)
}

pub fn days_in_month(year: i32, month: u32) -> u32 {
    match month {
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// 0 = Monday … 6 = Sunday (2000-01-01 was a Saturday).
fn weekday(day: Day) -> i32 {
    (day + 5).rem_euclid(7)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interval {
    Weekly,
    Monthly,
    Quarterly,
    Semiannual,
    Yearly,
}

impl Interval {
    pub fn parse(text: &str) -> Result<Interval> {
        Ok(match text {
            "weekly" => Interval::Weekly,
            "monthly" => Interval::Monthly,
            "quarterly" => Interval::Quarterly,
            "semiannual" => Interval::Semiannual,
            "yearly" => Interval::Yearly,
            other => {
                return Err(BillingError::invalid(format!("unknown interval \"{other}\""))
                    .hint("use weekly, monthly, quarterly, semiannual or yearly"))
            }
        })
    }

    fn months(self) -> i32 {
        match self {
            Interval::Weekly => 0,
            Interval::Monthly => 1,
            Interval::Quarterly => 3,
            Interval::Semiannual => 6,
            Interval::Yearly => 12,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BillingTime {
    /// Periods follow the calendar: weeks from Monday, months from the 1st, quarters from
    /// January, April, July and October, half-years from January and July, years from January.
    Calendar,
    /// Periods start on the subscription's own day (a 31st becomes the last day of shorter months).
    Anniversary,
}

impl BillingTime {
    pub fn parse(text: &str) -> Result<BillingTime> {
        match text {
            "calendar" => Ok(BillingTime::Calendar),
            "anniversary" => Ok(BillingTime::Anniversary),
            other => {
                Err(BillingError::invalid(format!("unknown billing_time \"{other}\""))
                    .hint("use calendar or anniversary"))
            }
        }
    }
}

/// The date `months` months after the anchor's year and month, on the anchor's day of
/// month or the last day of a shorter month.
fn months_after(anchor_year: i32, anchor_month: u32, anchor_day: u32, months: i32) -> Day {
    let index = anchor_year * 12 + anchor_month as i32 - 1 + months;
    let (year, month) = (index.div_euclid(12), index.rem_euclid(12) as u32 + 1);
    day_of(year, month, anchor_day.min(days_in_month(year, month)))
}

/// The billing period [first day, last day] that contains `on`. `anchor` is the
/// subscription's start date, which anniversary periods are counted from.
pub fn period_containing(interval: Interval, billing_time: BillingTime, anchor: Day, on: Day) -> (Day, Day) {
    if interval == Interval::Weekly {
        let offset = match billing_time {
            BillingTime::Calendar => weekday(on),
            BillingTime::Anniversary => (weekday(on) - weekday(anchor)).rem_euclid(7),
        };
        return (on - offset, on - offset + 6);
    }
    let months = interval.months();
    let (on_year, on_month, _) = civil(on);
    let (anchor_year, anchor_month, anchor_day) = match billing_time {
        BillingTime::Calendar => (2000, 1, 1),
        BillingTime::Anniversary => civil(anchor),
    };
    // Count whole periods from the anchor to `on`'s month, then step back if `on` falls
    // before that period's (possibly clamped) first day.
    let elapsed = (on_year * 12 + on_month as i32) - (anchor_year * 12 + anchor_month as i32);
    let mut k = elapsed.div_euclid(months);
    if months_after(anchor_year, anchor_month, anchor_day, k * months) > on {
        k -= 1;
    }
    let start = months_after(anchor_year, anchor_month, anchor_day, k * months);
    let next = months_after(anchor_year, anchor_month, anchor_day, (k + 1) * months);
    (start, next - 1)
}

/// Microseconds since 2000-01-01 00:00 UTC of an event timestamp: RFC 3339 text
/// (`2026-03-01T12:00:00Z`, `2026-03-01 12:00:00.5+02:00`) or Unix seconds as a plain
/// decimal (Lago's format). `None` when the text is neither.
pub fn parse_timestamp(text: &str) -> Option<i64> {
    if let Ok(seconds) = crate::pricing::decimal::parse_plain(text) {
        let micros = seconds.checked_mul(rust_decimal::Decimal::from(1_000_000))?.trunc();
        let micros = i64::try_from(micros).ok()?;
        return micros.checked_sub(UNIX_TO_PG_EPOCH_DAYS * MICROS_PER_DAY);
    }
    let b = text.as_bytes();
    let num = |range: std::ops::Range<usize>| -> Option<u32> {
        let s = text.get(range)?;
        s.bytes().all(|c| c.is_ascii_digit()).then(|| s.parse().ok())?
    };
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b'T' | b't' | b' ')
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let (year, month, day) = (num(0..4)? as i32, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&month)
        || day == 0
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 59
    {
        return None;
    }
    let mut rest = &text[19..];
    let mut micros_fraction = 0i64;
    if let Some(fraction) = rest.strip_prefix('.') {
        let digits = fraction.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 || digits > 6 {
            return None;
        }
        micros_fraction = fraction[..digits].parse::<i64>().ok()? * 10i64.pow(6 - digits as u32);
        rest = &fraction[digits..];
    }
    let offset_seconds = match rest {
        "Z" | "z" => 0,
        _ => {
            let sign = match rest.as_bytes().first()? {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            if rest.len() != 6 || rest.as_bytes()[3] != b':' {
                return None;
            }
            let (h, m) = (num(rest_range(text, rest, 1..3))?, num(rest_range(text, rest, 4..6))?);
            if h > 23 || m > 59 {
                return None;
            }
            sign * i64::from(h * 3600 + m * 60)
        }
    };
    let seconds =
        i64::from(day_of(year, month, day)) * 86_400 + i64::from(hour * 3600 + minute * 60 + second) - offset_seconds;
    Some(seconds * 1_000_000 + micros_fraction)
}

/// RFC 3339 text in UTC of microseconds since 2000-01-01 UTC (fraction only when present).
pub fn format_timestamp(micros: i64) -> String {
    let (day, in_day) = (micros.div_euclid(MICROS_PER_DAY), micros.rem_euclid(MICROS_PER_DAY));
    let (y, m, d) = civil(day as Day);
    let seconds = in_day / 1_000_000;
    let fraction = in_day % 1_000_000;
    let base = format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}", seconds / 3600, seconds / 60 % 60, seconds % 60);
    if fraction == 0 {
        format!("{base}Z")
    } else {
        format!("{base}.{fraction:06}Z")
    }
}

/// Maps a range inside the suffix `rest` of `text` to a range of `text`.
fn rest_range(text: &str, rest: &str, range: std::ops::Range<usize>) -> std::ops::Range<usize> {
    let start = text.len() - rest.len();
    start + range.start..start + range.end
}

#[cfg(test)]
mod tests {
    use super::*;

    fn date(s: &str) -> Day {
        let p: Vec<u32> = s.split('-').map(|x| x.parse().unwrap()).collect();
        day_of(p[0] as i32, p[1], p[2])
    }

    fn show(day: Day) -> String {
        let (y, m, d) = civil(day);
        format!("{y:04}-{m:02}-{d:02}")
    }

    #[test]
    fn an_instant_falls_in_its_utc_day_before_and_after_the_epoch() {
        let instant = |text: &str| parse_timestamp(text).unwrap();
        assert_eq!(show(utc_day(instant("2026-03-01T00:00:00Z"))), "2026-03-01");
        assert_eq!(show(utc_day(instant("2026-02-28T23:59:59.999999Z"))), "2026-02-28");
        assert_eq!(show(utc_day(instant("2026-03-01T01:30:00+02:00"))), "2026-02-28");
        assert_eq!(show(utc_day(instant("1999-12-31T23:59:59.999999Z"))), "1999-12-31");
        assert_eq!(show(utc_day(instant("1999-12-31T00:00:00Z"))), "1999-12-31");
        assert_eq!(show(utc_day(instant("2000-01-01T00:00:00Z"))), "2000-01-01");
    }

    fn period(interval: &str, billing_time: &str, anchor: &str, on: &str) -> (String, String) {
        let (a, b) = period_containing(
            Interval::parse(interval).unwrap(),
            BillingTime::parse(billing_time).unwrap(),
            date(anchor),
            date(on),
        );
        (show(a), show(b))
    }

    fn p(a: &str, b: &str) -> (String, String) {
        (a.to_string(), b.to_string())
    }

    #[test]
    fn civil_dates_round_trip() {
        assert_eq!(date("2000-01-01"), 0);
        assert_eq!(date("1970-01-01"), -10_957);
        assert_eq!(date("2024-03-01") - date("2024-02-28"), 2);
        for day in -800_000..800_000 {
            let (y, m, d) = civil(day);
            assert_eq!(day_of(y, m, d), day);
        }
    }

    #[test]
    fn calendar_periods() {
        assert_eq!(period("monthly", "calendar", "2022-03-15", "2022-03-15"), p("2022-03-01", "2022-03-31"));
        assert_eq!(period("monthly", "calendar", "2024-01-10", "2024-02-29"), p("2024-02-01", "2024-02-29"));
        assert_eq!(period("monthly", "calendar", "2023-01-10", "2023-02-15"), p("2023-02-01", "2023-02-28"));
        assert_eq!(period("weekly", "calendar", "2026-11-01", "2026-11-27"), p("2026-11-23", "2026-11-29"));
        assert_eq!(period("quarterly", "calendar", "2026-01-05", "2026-05-31"), p("2026-04-01", "2026-06-30"));
        assert_eq!(period("semiannual", "calendar", "2026-01-05", "2026-12-31"), p("2026-07-01", "2026-12-31"));
        assert_eq!(period("yearly", "calendar", "2023-06-01", "2024-02-29"), p("2024-01-01", "2024-12-31"));
    }

    #[test]
    fn anniversary_periods_clamp_to_short_months() {
        assert_eq!(period("monthly", "anniversary", "2024-01-31", "2024-02-15"), p("2024-01-31", "2024-02-28"));
        assert_eq!(period("monthly", "anniversary", "2024-01-31", "2024-02-29"), p("2024-02-29", "2024-03-30"));
        assert_eq!(period("monthly", "anniversary", "2023-01-31", "2023-03-01"), p("2023-02-28", "2023-03-30"));
        assert_eq!(period("monthly", "anniversary", "2024-01-31", "2024-03-31"), p("2024-03-31", "2024-04-29"));
        assert_eq!(period("monthly", "anniversary", "2022-03-15", "2022-04-14"), p("2022-03-15", "2022-04-14"));
        assert_eq!(period("monthly", "anniversary", "2022-03-15", "2022-04-15"), p("2022-04-15", "2022-05-14"));
        assert_eq!(period("weekly", "anniversary", "2026-11-25", "2026-11-27"), p("2026-11-25", "2026-12-01"));
        assert_eq!(period("quarterly", "anniversary", "2025-11-30", "2026-02-27"), p("2025-11-30", "2026-02-27"));
        assert_eq!(period("quarterly", "anniversary", "2025-11-30", "2026-02-28"), p("2026-02-28", "2026-05-29"));
        assert_eq!(period("yearly", "anniversary", "2024-02-29", "2025-03-01"), p("2025-02-28", "2026-02-27"));
        assert_eq!(period("yearly", "anniversary", "2024-02-29", "2028-02-29"), p("2028-02-29", "2029-02-27"));
    }

    #[test]
    fn every_day_belongs_to_exactly_one_period() {
        for interval in ["weekly", "monthly", "quarterly", "semiannual", "yearly"] {
            for billing_time in ["calendar", "anniversary"] {
                let anchor = date("2023-01-31");
                let i = Interval::parse(interval).unwrap();
                let b = BillingTime::parse(billing_time).unwrap();
                let mut previous = period_containing(i, b, anchor, anchor);
                for on in anchor + 1..anchor + 1500 {
                    let current = period_containing(i, b, anchor, on);
                    assert!(current.0 <= on && on <= current.1, "{interval} {billing_time} {}", show(on));
                    if current != previous {
                        assert_eq!(current.0, previous.1 + 1, "{interval} {billing_time} gap at {}", show(on));
                    }
                    previous = current;
                }
            }
        }
    }

    #[test]
    fn parses_event_timestamps() {
        assert_eq!(parse_timestamp("2000-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_timestamp("2000-01-01T01:00:00+01:00"), Some(0));
        assert_eq!(parse_timestamp("2000-01-01 00:00:01.5Z"), Some(1_500_000));
        assert_eq!(parse_timestamp("946684800"), Some(0));
        assert_eq!(parse_timestamp("946684800.25"), Some(250_000));
        for text in ["2026-03-01T10:00:00Z", "1999-12-31T23:59:59.500000Z", "2024-02-29T00:00:00.000001Z"] {
            assert_eq!(format_timestamp(parse_timestamp(text).unwrap()), text);
        }
        for bad in [
            "",
            "yesterday",
            "2026-02-30T00:00:00Z",
            "2026-01-01T24:00:00Z",
            "2026-01-01T00:00:00",
            "2026-01-01T00:00:00+0100",
            "1e9",
            "NaN",
        ] {
            assert_eq!(parse_timestamp(bad), None, "{bad}");
        }
    }
}
