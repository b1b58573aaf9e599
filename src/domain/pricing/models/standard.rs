//! standard: every unit at one price.

use super::Priced;
use crate::base::decimal::mul;
use crate::base::error::Result;
use crate::domain::pricing::fields::{money_json, Fields};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Standard {
    pub amount: Decimal,
}

impl Standard {
    pub fn parse(props: &Fields) -> Result<Self> {
        props.deny_unknown(&["amount"], "charge model standard")?;
        Ok(Standard { amount: props.required_money("amount")? })
    }

    pub fn to_json(&self) -> Map<String, Value> {
        Map::from_iter([("amount".to_string(), money_json(self.amount))])
    }

    pub fn price(&self, units: Decimal) -> Result<Priced<'_>> {
        let amount = mul(units, self.amount)?;
        Ok(Priced::new(amount, || Map::from_iter([("per_unit_amount".to_string(), money_json(self.amount))])))
    }
}
