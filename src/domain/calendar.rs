//! Calendar arithmetic in plain Rust, on chrono: billing periods on civil dates, and the
//! timestamps events carry. Dates are days since 2000-01-01 (PostgreSQL's epoch), so they
//! cross into SQL without conversion. Time zones are not chrono's: they are applied with
//! PostgreSQL's tz database (in SQL, or through `timestamptz_zone`), so that pg_billing and
//! the server it runs in never disagree on a zone's rules.

use crate::base::error::{BillingError, Result};
use chrono::{DateTime, Datelike, Months, NaiveDate, Timelike};

/// A civil date as days since 2000-01-01.
pub type Day = i32;

const UNIX_TO_PG_EPOCH_DAYS: i64 = 10_957;
const MICROS_PER_DAY: i64 = 86_400_000_000;

fn pg_epoch() -> NaiveDate {
    NaiveDate::from_ymd_opt(2000, 1, 1).expect("a valid date")
}

/// The date of days since 2000-01-01 (PostgreSQL's dates, ±5.8 million years, are beyond
/// chrono's ±262,000 only where no billing period can be).
fn date(day: Day) -> NaiveDate {
    pg_epoch() + chrono::TimeDelta::days(i64::from(day))
}

/// Days since 2000-01-01 of a date.
fn day(date: NaiveDate) -> Day {
    (date - pg_epoch()).num_days() as Day
}

/// The UTC date of an instant (microseconds since 2000-01-01 UTC): the day it falls in,
/// rounding down before the epoch too.
pub fn utc_day(micros: i64) -> Day {
    micros.div_euclid(MICROS_PER_DAY) as Day
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
                    .detail(format!("got {other}"))
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
            other => Err(BillingError::invalid(format!("unknown billing_time \"{other}\""))
                .detail(format!("got {other}"))
                .hint("use calendar or anniversary")),
        }
    }
}

/// The date `months` months (negative: before) after `anchor`, on the anchor's day of
/// month or the last day of a shorter month (chrono's month arithmetic clamps).
fn months_after(anchor: NaiveDate, months: i32) -> Day {
    let shifted = match u32::try_from(months) {
        Ok(forward) => anchor.checked_add_months(Months::new(forward)),
        Err(_) => anchor.checked_sub_months(Months::new(months.unsigned_abs())),
    };
    day(shifted.expect("billing periods stay within chrono's range"))
}

/// The billing period [first day, last day] that contains `on`. `anchor` is the
/// subscription's start date, which anniversary periods are counted from.
pub fn period_containing(interval: Interval, billing_time: BillingTime, anchor: Day, on: Day) -> (Day, Day) {
    let weekday = |d: Day| date(d).weekday().num_days_from_monday() as i32;
    if interval == Interval::Weekly {
        let offset = match billing_time {
            BillingTime::Calendar => weekday(on),
            BillingTime::Anniversary => (weekday(on) - weekday(anchor)).rem_euclid(7),
        };
        return (on - offset, on - offset + 6);
    }
    let months = interval.months();
    let on_date = date(on);
    let anchor = match billing_time {
        BillingTime::Calendar => pg_epoch(),
        BillingTime::Anniversary => date(anchor),
    };
    // Count whole periods from the anchor to `on`'s month, then step back if `on` falls
    // before that period's (possibly clamped) first day.
    let month_index = |d: NaiveDate| d.year() * 12 + d.month0() as i32;
    let elapsed = month_index(on_date) - month_index(anchor);
    let mut k = elapsed.div_euclid(months);
    if months_after(anchor, k * months) > on {
        k -= 1;
    }
    let start = months_after(anchor, k * months);
    let next = months_after(anchor, (k + 1) * months);
    (start, next - 1)
}

/// Microseconds since 2000-01-01 00:00 UTC of an event timestamp: RFC 3339 text
/// (`2026-03-01T12:00:00Z`, `2026-03-01 12:00:00.5+02:00`), read by chrono, or Unix seconds
/// as a plain decimal (Lago's format). `None` when the text is neither, or names an instant
/// PostgreSQL's microseconds cannot hold exactly (a finer fraction, a leap second).
pub fn parse_timestamp(text: &str) -> Option<i64> {
    if let Ok(seconds) = crate::base::decimal::parse_plain(text) {
        let micros = seconds.checked_mul(rust_decimal::Decimal::from(1_000_000))?.trunc();
        let micros = i64::try_from(micros).ok()?;
        return micros.checked_sub(UNIX_TO_PG_EPOCH_DAYS * MICROS_PER_DAY);
    }
    let instant = DateTime::parse_from_rfc3339(text).ok()?;
    let nanos = instant.nanosecond();
    if nanos >= 1_000_000_000 || nanos % 1_000 != 0 {
        return None;
    }
    let unix_micros = instant.timestamp().checked_mul(1_000_000)?.checked_add(i64::from(nanos / 1_000))?;
    unix_micros.checked_sub(UNIX_TO_PG_EPOCH_DAYS * MICROS_PER_DAY)
}

/// RFC 3339 text in UTC of microseconds since 2000-01-01 UTC (fraction only when present),
/// for any timestamptz: PostgreSQL's infinities by name, and the instants past chrono's
/// years (PostgreSQL's reach 294276) by their count of microseconds.
pub fn format_timestamp(micros: i64) -> String {
    match micros {
        i64::MAX => return "infinity".into(),
        i64::MIN => return "-infinity".into(),
        _ => {}
    }
    let unix_micros = micros.checked_add(UNIX_TO_PG_EPOCH_DAYS * MICROS_PER_DAY);
    match unix_micros.and_then(DateTime::from_timestamp_micros) {
        Some(instant) if micros.rem_euclid(1_000_000) == 0 => instant.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
        Some(instant) => instant.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string(),
        None => format!("{micros} microseconds after 2000-01-01T00:00:00Z"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn date(s: &str) -> Day {
        day(NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap())
    }

    fn show(day: Day) -> String {
        super::date(day).format("%Y-%m-%d").to_string()
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
        for d in -800_000..800_000 {
            assert_eq!(day(super::date(d)), d);
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
        assert_eq!(parse_timestamp("2000-01-01t00:00:01.500000z"), Some(1_500_000));
        assert_eq!(parse_timestamp("1999-12-31T19:00:00.000001-05:00"), Some(1));
        assert_eq!(parse_timestamp("946684800"), Some(0));
        assert_eq!(parse_timestamp("946684800.25"), Some(250_000));
        for text in ["2026-03-01T10:00:00Z", "1999-12-31T23:59:59.500000Z", "2024-02-29T00:00:00.000001Z"] {
            assert_eq!(format_timestamp(parse_timestamp(text).unwrap()), text);
        }
        assert_eq!(format_timestamp(i64::MAX), "infinity");
        assert_eq!(format_timestamp(i64::MIN), "-infinity");
        // The last microsecond of 294276, PostgreSQL's last, is past chrono's years.
        let last_postgres_micros = 9_223_371_331_199_999_999;
        assert_eq!(
            format_timestamp(last_postgres_micros),
            "9223371331199999999 microseconds after 2000-01-01T00:00:00Z"
        );
        for bad in [
            "",
            "yesterday",
            "2026-02-30T00:00:00Z",
            "2026-01-01T24:00:00Z",
            "2026-01-01T00:00:00",
            "2026-01-01T00:00:00+0100",
            "2026-01-01T00:00:00.1234567Z",
            "2016-12-31T23:59:60Z",
            "1e9",
            "NaN",
        ] {
            assert_eq!(parse_timestamp(bad), None, "{bad}");
        }
    }
}
