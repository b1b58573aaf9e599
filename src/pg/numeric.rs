//! The single boundary between PostgreSQL `numeric` and `rust_decimal::Decimal`.
//!
//! pgrx has no bridge between the two, so values cross as text, which is exact in both
//! directions. What Decimal cannot hold exactly (more than 28 significant digits) is a
//! 22003 error, never a silent rounding; NaN and ±Infinity are refused.

use crate::base::decimal::parse_exact;
use crate::base::error::{BillingError, Result};
use pgrx::AnyNumeric;
use rust_decimal::Decimal;

/// `what` names the value in the error message ("units", "event_values[3]").
pub fn to_decimal(value: &AnyNumeric, what: &str) -> Result<Decimal> {
    let text = value.to_string();
    parse_exact(&text, what, || {
        BillingError::invalid(format!("{what} must be a finite number"))
            .detail(format!("got {text}"))
            .hint("NaN and Infinity cannot be billed")
    })
}

/// An optional decimal as a numeric datum (`None` stays NULL), for rows written directly.
pub fn decimal_datum(value: Option<Decimal>) -> Option<pgrx::pg_sys::Datum> {
    value.and_then(|v| pgrx::IntoDatum::into_datum(from_decimal(v)))
}

pub fn from_decimal(value: Decimal) -> AnyNumeric {
    // Whole numbers of 64 bits, most usage values, skip the text: int8 -> numeric gives the
    // same value with the same (zero) scale.
    if value.scale() == 0 {
        if let Ok(whole) = i64::try_from(value.mantissa()) {
            return AnyNumeric::from(whole);
        }
    }
    AnyNumeric::try_from(value.to_string().as_str()).expect("a Decimal always prints as a valid numeric")
}
