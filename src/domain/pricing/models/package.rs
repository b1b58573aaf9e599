//! package: units beyond the free ones are sold in whole packages; a started package is
//! billed in full.

use super::Priced;
use crate::base::decimal::{div, mul, sub};
use crate::base::error::{BillingError, Result};
use crate::domain::pricing::fields::{money_json, number_json, Fields};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Package {
    pub amount: Decimal,
    pub package_size: Decimal,
    pub free_units: Decimal,
}

impl Package {
    pub fn parse(props: &Fields) -> Result<Self> {
        props.deny_unknown(&["amount", "package_size", "free_units"], "charge model package")?;
        let package_size = props.required_non_negative("package_size")?;
        if package_size.is_zero() {
            return Err(BillingError::invalid(format!("{} must be greater than 0", props.name("package_size")))
                .detail("got 0")
                .hint("a package holds at least one unit"));
        }
        Ok(Package {
            amount: props.required_money("amount")?,
            package_size,
            free_units: props.optional_non_negative("free_units")?.unwrap_or(Decimal::ZERO),
        })
    }

    pub fn to_json(&self) -> Map<String, Value> {
        Map::from_iter([
            ("amount".to_string(), money_json(self.amount)),
            ("package_size".to_string(), number_json(self.package_size)),
            ("free_units".to_string(), number_json(self.free_units)),
        ])
    }

    pub fn price(&self, units: Decimal) -> Result<Priced<'_>> {
        let paid_units = sub(units, self.free_units)?.max(Decimal::ZERO);
        let packages = div(paid_units, self.package_size)?.ceil();
        let amount = mul(packages, self.amount)?;
        Ok(Priced::new(amount, move || {
            Map::from_iter([
                ("free_units".to_string(), number_json(units.min(self.free_units).max(Decimal::ZERO))),
                ("paid_units".to_string(), number_json(paid_units)),
                ("per_package_size".to_string(), number_json(self.package_size)),
                ("per_package_unit_amount".to_string(), money_json(self.amount)),
                ("packages".to_string(), number_json(packages)),
            ])
        }))
    }
}
