//! The SQL face of the invoice arithmetic of `domain::invoicing`, which the billing run
//! (sql/invoicing.sql) calls for base fees and minimums.

use crate::domain::invoicing::{period_share, shortfall};
use crate::pg::numeric::{from_decimal, to_decimal};
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::prelude::*;
use pgrx::AnyNumeric;

/// `amount` × `days` / `period_days`, exact (rounded later, on the fee).
#[pg_extern(immutable, strict, parallel_safe)]
pub fn _period_share(amount: AnyNumeric, days: i32, period_days: i32) -> Result<AnyNumeric, ErrorReport> {
    Ok(from_decimal(period_share(to_decimal(&amount, "amount")?, days, period_days)?))
}

/// What `billed` lacks to reach `minimum`, or 0.
#[pg_extern(immutable, strict, parallel_safe)]
pub fn _shortfall(minimum: AnyNumeric, billed: AnyNumeric) -> Result<AnyNumeric, ErrorReport> {
    Ok(from_decimal(shortfall(to_decimal(&minimum, "minimum")?, to_decimal(&billed, "billed")?)))
}
