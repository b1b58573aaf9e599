//! Tiered ranges shared by graduated, volume and graduated_percentage: parsing with the
//! continuity rules of each model, and the progressive walk over tiers.

use super::fields::{money_json, number_json, optional_json, Fields};
use crate::base::decimal::{add, mul, sub};
use crate::base::error::{BillingError, Result};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

/// One tier. `price` is the per-unit amount, or the percent rate for graduated_percentage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Range {
    pub from: Decimal,
    pub to: Option<Decimal>,
    pub price: Decimal,
    pub flat: Decimal,
}

/// Which `from_value`s may follow a range ending at `to_value`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Continuity {
    /// graduated: `to_value` (adjacent style) or `to_value + 1` (integer style).
    SameOrNext,
    /// volume: `to_value + 1` or `to_value + 2`, never equal to it.
    NextOrSecond,
}

/// How a family of ranges is spelt in JSON and chained.
pub struct RangeSpec {
    pub key: &'static str,
    pub price_key: &'static str,
    pub continuity: Continuity,
}

impl RangeSpec {
    pub fn parse(&self, props: &Fields) -> Result<Vec<Range>> {
        let items = props.objects(self.key)?;
        let last = items.len() - 1;
        let mut ranges: Vec<Range> = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            item.deny_unknown(&["from_value", "to_value", self.price_key, "flat_amount"], self.key)?;
            let from = item.required_non_negative("from_value")?;
            let to = item.optional_non_negative("to_value")?;
            let range = Range {
                from,
                to,
                price: item.required_money(self.price_key)?,
                flat: item.required_money("flat_amount")?,
            };
            let allowed_from = match ranges.last().and_then(|prev| prev.to) {
                None => [Decimal::ZERO, Decimal::ONE],
                Some(prev_to) => match self.continuity {
                    Continuity::SameOrNext => [prev_to, add(prev_to, Decimal::ONE)?],
                    Continuity::NextOrSecond => [add(prev_to, Decimal::ONE)?, add(prev_to, Decimal::TWO)?],
                },
            };
            if !allowed_from.contains(&from) {
                return Err(BillingError::invalid(format!(
                    "{} must be {} or {}",
                    item.name("from_value"),
                    allowed_from[0],
                    allowed_from[1]
                ))
                .detail(format!("got {from}"))
                .hint(self.continuity_hint()));
            }
            match to {
                Some(to) if to <= from => {
                    return Err(BillingError::invalid(format!(
                        "{} must be greater than from_value {from}",
                        item.name("to_value")
                    ))
                    .detail(format!("got {to}")))
                }
                Some(to) if i == last => {
                    return Err(BillingError::invalid(format!("{} must be null", item.name("to_value")))
                        .detail(format!("got {to}"))
                        .hint("the last range is open-ended"))
                }
                None if i != last => {
                    return Err(BillingError::invalid(format!("{} is required", item.name("to_value")))
                        .hint("only the last range is open-ended (to_value null)"))
                }
                _ => {}
            }
            ranges.push(range);
        }
        Ok(ranges)
    }

    fn continuity_hint(&self) -> &'static str {
        match self.continuity {
            Continuity::SameOrNext => {
                "the first range starts at 0 or 1; each next range starts at the previous to_value or right after it"
            }
            Continuity::NextOrSecond => {
                "the first range starts at 0 or 1; each next range starts at the previous to_value + 1 (or + 2)"
            }
        }
    }

    pub fn to_json(&self, ranges: &[Range]) -> Value {
        let items = ranges
            .iter()
            .map(|r| {
                let mut m = Map::new();
                m.insert("from_value".into(), number_json(r.from));
                m.insert("to_value".into(), optional_json(r.to, number_json));
                m.insert(self.price_key.into(), money_json(r.price));
                m.insert("flat_amount".into(), money_json(r.flat));
                Value::Object(m)
            })
            .collect();
        json!({ self.key: Value::Array(items) })
    }
}

/// How the units inside one tier are counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TierStyle {
    /// Ranges like 0–10, 11–20: a tier starting at `from` > 0 holds `top − from + 1` units.
    Integer,
    /// Ranges like 0–0.1, 0.1–1: a tier holds `top − from` units.
    Adjacent,
}

impl TierStyle {
    /// Adjacent when every range starts exactly where the previous one ended.
    pub fn of(ranges: &[Range]) -> TierStyle {
        if ranges.len() > 1 && ranges.windows(2).all(|w| w[0].to == Some(w[1].from)) {
            TierStyle::Adjacent
        } else {
            TierStyle::Integer
        }
    }
}

/// The units and money of one tier reached by a progressive walk.
#[derive(Debug, Clone, PartialEq)]
pub struct TierLine {
    pub range: Range,
    pub units: Decimal,
    pub units_total: Decimal,
    pub total: Decimal,
}

/// Walks the tiers progressively: each reached tier prices its own units with
/// `unit_total(units, price)` and adds its flat fee; the walk stops at the first tier whose
/// `to_value` is open or holds the total (the first tier's flat fee is charged at 0 units).
pub fn walk(
    ranges: &[Range],
    units: Decimal,
    style: TierStyle,
    unit_total: impl Fn(Decimal, Decimal) -> Result<Decimal>,
) -> Result<Vec<TierLine>> {
    let mut lines = Vec::new();
    for range in ranges {
        let top = range.to.map_or(units, |to| units.min(to));
        let tier_units = if range.from.is_zero() {
            top
        } else {
            match style {
                TierStyle::Integer => add(sub(top, range.from)?, Decimal::ONE)?,
                TierStyle::Adjacent => sub(top, range.from)?,
            }
        };
        let units_total = unit_total(tier_units, range.price)?;
        lines.push(TierLine {
            range: range.clone(),
            units: tier_units,
            units_total,
            total: add(units_total, range.flat)?,
        });
        if range.to.is_none_or(|to| to >= units) {
            break;
        }
    }
    Ok(lines)
}

/// Per-unit pricing of a tier: `units × per_unit_amount`.
pub fn per_unit(units: Decimal, price: Decimal) -> Result<Decimal> {
    mul(units, price)
}

/// The tier that holds `units` for volume pricing: the first whose `to_value` is open or
/// at least `units`. For ranges that chain as validated this is exactly the tier with
/// `from_value ≤ ceil(units) ≤ …` (fractional units between 100 and 101 land in 101–200),
/// and 0 units land in the first tier.
pub fn containing(ranges: &[Range], units: Decimal) -> &Range {
    ranges.iter().find(|r| r.to.is_none_or(|to| units <= to)).expect("validated ranges end with an open range")
}
