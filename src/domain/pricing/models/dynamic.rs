//! dynamic: each event carries its own price in the currency's minor units.

use super::Priced;
use crate::base::decimal::{div, sum};
use crate::base::error::Result;
use crate::domain::pricing::fields::{number_json, Fields};
use rust_decimal::Decimal;
use serde_json::{Map, Value};

pub fn parse(props: &Fields) -> Result<()> {
    props.deny_unknown(&[], "charge model dynamic")
}

/// `event_amounts` are `precise_total_amount_cents`, in units of 10^-`minor_units`.
pub fn price(event_amounts: &[Decimal], minor_units: u32) -> Result<Priced<'static>> {
    let total_minor = sum(event_amounts.iter().copied())?;
    let amount = div(total_minor, Decimal::from(10u64.pow(minor_units)))?;
    let events = event_amounts.len();
    Ok(Priced::new(amount, move || {
        Map::from_iter([
            ("events".to_string(), Value::from(events)),
            ("precise_total_amount_cents".to_string(), number_json(total_minor)),
        ])
    }))
}
