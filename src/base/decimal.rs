//! Exact decimal parsing and overflow-checked arithmetic shared by every charge model.

use crate::base::error::{BillingError, Result};
use rust_decimal::Decimal;

/// Why a text is not an acceptable decimal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecimalTextError {
    /// Not of the form `-?digits(.digits)?` (this includes NaN, Infinity and exponents).
    NotPlain,
    /// Well-formed but beyond the 28 significant digits pg_billing computes with exactly.
    OutOfRange,
}

/// Parses a plain decimal `-?digits(.digits)?` exactly; anything else is refused rather
/// than approximated. Trailing fractional zeros are dropped first, so `1.500…0` with many
/// zeros is still exact.
pub fn parse_plain(text: &str) -> std::result::Result<Decimal, DecimalTextError> {
    let unsigned = text.strip_prefix('-').unwrap_or(text);
    let (int_part, frac_part) = match unsigned.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (unsigned, None),
    };
    let all_digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !all_digits(int_part) || frac_part.is_some_and(|f| !all_digits(f)) {
        return Err(DecimalTextError::NotPlain);
    }
    let trimmed = match frac_part {
        Some(f) if f.ends_with('0') => {
            let kept = f.trim_end_matches('0');
            let cut = text.len() - (f.len() - kept.len()) - usize::from(kept.is_empty());
            &text[..cut]
        }
        _ => text,
    };
    let int_digits = int_part.trim_start_matches('0');
    if int_digits.len() > 28 {
        return Err(DecimalTextError::OutOfRange);
    }
    Decimal::from_str_exact(trimmed).map_err(|_| DecimalTextError::OutOfRange)
}

/// Parses a caller's value exactly: `not_plain` builds the error for text that is not a
/// plain decimal (its wording and SQLSTATE depend on the caller); values beyond 28
/// significant digits are always 22003, named by `what`.
pub fn parse_exact(text: &str, what: &str, not_plain: impl FnOnce() -> BillingError) -> Result<Decimal> {
    parse_plain(text).map_err(|e| match e {
        DecimalTextError::NotPlain => not_plain(),
        DecimalTextError::OutOfRange => BillingError::out_of_range(format!("{what} is out of the supported range"))
            .detail(format!("got {text}"))
            .hint("values may have at most 28 significant digits"),
    })
}

fn overflow() -> BillingError {
    BillingError::out_of_range("amount is out of the supported range")
        .detail("pg_billing computes with 28 significant decimal digits")
        .hint("use smaller units or prices")
}

pub fn add(a: Decimal, b: Decimal) -> Result<Decimal> {
    a.checked_add(b).ok_or_else(overflow)
}

pub fn sub(a: Decimal, b: Decimal) -> Result<Decimal> {
    a.checked_sub(b).ok_or_else(overflow)
}

pub fn mul(a: Decimal, b: Decimal) -> Result<Decimal> {
    a.checked_mul(b).ok_or_else(overflow)
}

pub fn div(a: Decimal, b: Decimal) -> Result<Decimal> {
    a.checked_div(b).ok_or_else(overflow)
}

/// `value × rate / 100`, for rates given in percent.
pub fn percent_of(value: Decimal, rate: Decimal) -> Result<Decimal> {
    div(mul(value, rate)?, Decimal::ONE_HUNDRED)
}

pub fn sum(values: impl IntoIterator<Item = Decimal>) -> Result<Decimal> {
    values.into_iter().try_fold(Decimal::ZERO, add)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    fn d(s: &str) -> Decimal {
        Decimal::from_str(s).unwrap()
    }

    #[test]
    fn parses_plain_decimals_exactly() {
        assert_eq!(parse_plain("0.002"), Ok(d("0.002")));
        assert_eq!(parse_plain("-12"), Ok(d("-12")));
        assert_eq!(parse_plain("007.50"), Ok(d("7.5")));
        assert_eq!(parse_plain("1.000000000000000000000000000000000"), Ok(d("1")));
        assert_eq!(parse_plain("0.0"), Ok(Decimal::ZERO));
    }

    #[test]
    fn refuses_everything_that_is_not_plain() {
        for text in ["", "-", "1.", ".5", "1e3", "NaN", "Infinity", "-Infinity", "1,5", " 1", "+1", "0x10"] {
            assert_eq!(parse_plain(text), Err(DecimalTextError::NotPlain), "{text:?}");
        }
    }

    #[test]
    fn refuses_values_beyond_exact_range() {
        assert_eq!(parse_plain("123456789012345678901234567890"), Err(DecimalTextError::OutOfRange));
        assert_eq!(parse_plain("0.12345678901234567890123456789"), Err(DecimalTextError::OutOfRange));
    }

    #[test]
    fn checked_arithmetic_reports_overflow_as_out_of_range() {
        let err = mul(Decimal::MAX, d("2")).unwrap_err();
        assert_eq!(err.kind, crate::base::error::ErrorKind::NumericOutOfRange);
        assert_eq!(percent_of(d("800"), d("1.3")).unwrap(), d("10.4"));
    }
}
