//! Invoice arithmetic that does not depend on usage: the share of a full-period amount for
//! the days billed, and the true-up that lifts what was billed to a minimum (pricing.md,
//! Periods, days and proration; Minimums and progressive billing).

use crate::base::error::{BillingError, Result};
use rust_decimal::Decimal;

/// `amount` × `days` / `period_days`, exact to rust_decimal's 28 significant digits (the
/// multiplication first, so that a whole period gives back `amount` itself). Rounding to the
/// currency happens on the fee, not here: 100.00 for 17 of 31 days is 54.838709677…, billed
/// as 54.84.
pub fn period_share(amount: Decimal, days: i32, period_days: i32) -> Result<Decimal> {
    if period_days <= 0 || days < 0 || days > period_days {
        return Err(BillingError::invalid(format!("cannot bill {days} days of a {period_days}-day period"))
            .detail(format!("days {days}, period_days {period_days}"))
            .hint("days must be between 0 and the period's days, and the period at least one day"));
    }
    if days == period_days {
        return Ok(amount);
    }
    let scaled = amount
        .checked_mul(Decimal::from(days))
        .ok_or_else(|| BillingError::invalid("amount is too large to prorate").detail(format!("got {amount}")))?;
    Ok(scaled / Decimal::from(period_days))
}

/// What is missing for `billed` to reach `minimum`: never negative, since a minimum never
/// refunds usage above it.
pub fn shortfall(minimum: Decimal, billed: Decimal) -> Decimal {
    (minimum - billed).max(Decimal::ZERO)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    fn d(s: &str) -> Decimal {
        Decimal::from_str(s).unwrap()
    }

    #[test]
    fn march_15_to_31_is_17_of_31_days() {
        let share = period_share(d("100.00"), 17, 31).unwrap();
        assert_eq!(share.round_dp(2), d("54.84"));
        // 1700 / 31 = 54.838709677419354838709677419... to 28 significant digits.
        assert_eq!(share.to_string(), "54.838709677419354838709677419");
    }

    #[test]
    fn a_whole_period_is_the_amount_itself() {
        assert_eq!(period_share(d("29.99"), 30, 30).unwrap(), d("29.99"));
        assert_eq!(period_share(d("10"), 0, 7).unwrap(), d("0"));
    }

    #[test]
    fn february_of_a_leap_year_has_29_days() {
        assert_eq!(period_share(d("29"), 1, 29).unwrap(), d("1"));
    }

    #[test]
    fn days_outside_the_period_are_refused() {
        assert!(period_share(d("1"), 32, 31).is_err());
        assert!(period_share(d("1"), -1, 31).is_err());
        assert!(period_share(d("1"), 0, 0).is_err());
    }

    #[test]
    fn shortfall_is_the_difference_or_nothing() {
        assert_eq!(shortfall(d("50"), d("32.25")), d("17.75"));
        assert_eq!(shortfall(d("50"), d("50")), d("0"));
        assert_eq!(shortfall(d("50"), d("80")), d("0"));
    }
}
