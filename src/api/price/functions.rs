//! Pure pricing functions: amounts, breakdowns and money rounding.

use super::price_type::Price;
use crate::base::error::{BillingError, Result};
use crate::domain::pricing::{minor_units, round_money as round_to_currency, Usage};
use crate::pg::numeric::{from_decimal, to_decimal};
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::prelude::*;
use pgrx::{AnyNumeric, JsonB};
use rust_decimal::Decimal;

/// The exponent dynamic prices use when no currency is named: amounts in cents.
const DEFAULT_CURRENCY: &str = "USD";

fn event_values(values: &Array<AnyNumeric>) -> Result<Vec<Decimal>> {
    values
        .iter()
        .enumerate()
        .map(|(i, value)| match value {
            Some(v) => to_decimal(&v, &format!("event_values[{}]", i + 1)),
            None => Err(BillingError::invalid(format!("event_values[{}] is null", i + 1))
                .hint("remove null values or replace them with 0")),
        })
        .collect()
}

#[pg_extern(immutable, strict, parallel_safe)]
pub fn amount(price: Price, units: AnyNumeric) -> std::result::Result<AnyNumeric, ErrorReport> {
    let units = to_decimal(&units, "units")?;
    let digits = minor_units(DEFAULT_CURRENCY)?;
    Ok(from_decimal(price.model.amount(Usage::Units(&units), digits)?))
}

#[pg_extern(immutable, strict, parallel_safe, name = "amount")]
pub fn amount_of_events(
    price: Price,
    event_values: Array<AnyNumeric>,
    currency: default!(&str, "'USD'"),
) -> std::result::Result<AnyNumeric, ErrorReport> {
    let values = self::event_values(&event_values)?;
    Ok(from_decimal(price.model.amount(Usage::Events(&values), minor_units(currency)?)?))
}

#[pg_extern(immutable, strict, parallel_safe)]
pub fn amount_details(price: Price, units: AnyNumeric) -> std::result::Result<JsonB, ErrorReport> {
    let units = to_decimal(&units, "units")?;
    Ok(JsonB(price.model.details(Usage::Units(&units), minor_units(DEFAULT_CURRENCY)?)?))
}

#[pg_extern(immutable, strict, parallel_safe, name = "amount_details")]
fn amount_details_of_events(
    price: Price,
    event_values: Array<AnyNumeric>,
    currency: default!(&str, "'USD'"),
) -> std::result::Result<JsonB, ErrorReport> {
    let values = self::event_values(&event_values)?;
    Ok(JsonB(price.model.details(Usage::Events(&values), minor_units(currency)?)?))
}

#[pg_extern(immutable, strict, parallel_safe)]
pub fn round_money(amount: AnyNumeric, currency: &str) -> std::result::Result<AnyNumeric, ErrorReport> {
    Ok(from_decimal(round_to_currency(to_decimal(&amount, "amount")?, currency)?))
}

#[pg_extern(immutable, strict, parallel_safe)]
pub fn currency_minor_units(currency: &str) -> std::result::Result<i32, ErrorReport> {
    Ok(minor_units(currency)? as i32)
}
