//! `billing._period_dates`: the SQL face of the calendar's billing periods.

use crate::domain::calendar::{period_containing, BillingTime, Interval};
use crate::pg::date::to_date;
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::prelude::*;

/// The first and last day of the period containing `on`, counted from `anchor`.
#[pg_extern(immutable, strict, parallel_safe)]
pub fn _period_dates(
    interval: &str,
    billing_time: &str,
    anchor: Date,
    on: Date,
) -> Result<TableIterator<'static, (name!(from_date, Date), name!(to_date, Date))>, ErrorReport> {
    let (from, to) = period_containing(
        Interval::parse(interval)?,
        BillingTime::parse(billing_time)?,
        anchor.to_pg_epoch_days(),
        on.to_pg_epoch_days(),
    );
    Ok(TableIterator::once((to_date(from), to_date(to))))
}
