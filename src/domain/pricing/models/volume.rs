//! volume: every unit at the price of the tier the total reaches, plus that tier's flat fee.

use super::graduated::into_map;
use super::Priced;
use crate::base::decimal::{add, mul};
use crate::base::error::Result;
use crate::domain::pricing::fields::{money_json, number_json, optional_json, Fields};
use crate::domain::pricing::ranges::{containing, Continuity, Range, RangeSpec};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

pub const SPEC: RangeSpec =
    RangeSpec { key: "volume_ranges", price_key: "per_unit_amount", continuity: Continuity::NextOrSecond };

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Volume {
    pub ranges: Vec<Range>,
}

impl Volume {
    pub fn parse(props: &Fields) -> Result<Self> {
        props.deny_unknown(&[SPEC.key], "charge model volume")?;
        Ok(Volume { ranges: SPEC.parse(props)? })
    }

    pub fn to_json(&self) -> Map<String, Value> {
        into_map(SPEC.to_json(&self.ranges))
    }

    pub fn price(&self, units: Decimal) -> Result<Priced<'_>> {
        let tier = containing(&self.ranges, units);
        let units_total = mul(units, tier.price)?;
        let amount = add(units_total, tier.flat)?;
        Ok(Priced::new(amount, move || {
            Map::from_iter([
                ("from_value".to_string(), number_json(tier.from)),
                ("to_value".to_string(), optional_json(tier.to, number_json)),
                ("per_unit_amount".to_string(), money_json(tier.price)),
                ("per_unit_total_amount".to_string(), number_json(units_total)),
                ("flat_unit_amount".to_string(), number_json(tier.flat)),
            ])
        }))
    }
}
