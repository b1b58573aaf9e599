//! Dates as PostgreSQL stores them.

use pgrx::datum::Date;

/// A date from days since 2000-01-01.
pub fn to_date(day: i32) -> Date {
    // SAFETY: the days come from PostgreSQL dates or from billing periods within a few
    // years of them, far from the limits.
    unsafe { Date::from_pg_epoch_days(day) }
}
