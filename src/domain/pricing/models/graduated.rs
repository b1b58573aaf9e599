//! graduated: progressive tiers, each at its own per-unit price plus its flat fee.

use super::Priced;
use crate::base::decimal::sum;
use crate::base::error::Result;
use crate::domain::pricing::fields::{money_json, number_json, optional_json, Fields};
use crate::domain::pricing::ranges::{per_unit, walk, Continuity, Range, RangeSpec, TierLine, TierStyle};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

pub const SPEC: RangeSpec =
    RangeSpec { key: "graduated_ranges", price_key: "per_unit_amount", continuity: Continuity::SameOrNext };

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Graduated {
    pub ranges: Vec<Range>,
}

impl Graduated {
    pub fn parse(props: &Fields) -> Result<Self> {
        props.deny_unknown(&[SPEC.key], "charge model graduated")?;
        Ok(Graduated { ranges: SPEC.parse(props)? })
    }

    pub fn to_json(&self) -> Map<String, Value> {
        into_map(SPEC.to_json(&self.ranges))
    }

    pub fn price(&self, units: Decimal) -> Result<Priced<'_>> {
        let lines = walk(&self.ranges, units, TierStyle::of(&self.ranges), per_unit)?;
        priced_tiers(SPEC.key, SPEC.price_key, lines)
    }
}

/// Sums the walked tiers and lists them under `key`, as graduated and
/// graduated_percentage both report them.
pub fn priced_tiers(key: &'static str, price_key: &'static str, lines: Vec<TierLine>) -> Result<Priced<'static>> {
    let amount = sum(lines.iter().map(|l| l.total))?;
    Ok(Priced::new(amount, move || {
        let tiers = lines
            .iter()
            .map(|l| {
                Value::Object(Map::from_iter([
                    ("from_value".to_string(), number_json(l.range.from)),
                    ("to_value".to_string(), optional_json(l.range.to, number_json)),
                    ("units".to_string(), number_json(l.units)),
                    (price_key.to_string(), money_json(l.range.price)),
                    ("per_unit_total_amount".to_string(), number_json(l.units_total)),
                    ("flat_unit_amount".to_string(), number_json(l.range.flat)),
                    ("total_with_flat_amount".to_string(), number_json(l.total)),
                ]))
            })
            .collect();
        Map::from_iter([(key.to_string(), Value::Array(tiers))])
    }))
}

pub fn into_map(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        _ => unreachable!("range specs serialise to an object"),
    }
}
