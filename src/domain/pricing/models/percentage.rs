//! percentage: a percent of the units, a fixed amount per event, free units (per events
//! or per total) and optional per-transaction minimum and maximum.

use super::Priced;
use crate::base::decimal::{add, mul, percent_of, sub, sum};
use crate::base::error::{BillingError, Result};
use crate::domain::pricing::fields::{money_json, number_json, Fields};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Percentage {
    pub rate: Decimal,
    pub fixed_amount: Option<Decimal>,
    pub free_units_per_events: Option<u64>,
    pub free_units_per_total_aggregation: Option<Decimal>,
    pub per_transaction_min_amount: Option<Decimal>,
    pub per_transaction_max_amount: Option<Decimal>,
}

const KEYS: [&str; 6] = [
    "rate",
    "fixed_amount",
    "free_units_per_events",
    "free_units_per_total_aggregation",
    "per_transaction_min_amount",
    "per_transaction_max_amount",
];

impl Percentage {
    pub fn parse(props: &Fields) -> Result<Self> {
        props.deny_unknown(&KEYS, "charge model percentage")?;
        let price = Percentage {
            rate: props.required_money("rate")?,
            fixed_amount: props.optional_money("fixed_amount")?,
            free_units_per_events: props.optional_count("free_units_per_events")?,
            free_units_per_total_aggregation: props.optional_money("free_units_per_total_aggregation")?,
            per_transaction_min_amount: props.optional_money("per_transaction_min_amount")?,
            per_transaction_max_amount: props.optional_money("per_transaction_max_amount")?,
        };
        if let (Some(min), Some(max)) = (price.per_transaction_min_amount, price.per_transaction_max_amount) {
            if min > max {
                return Err(BillingError::invalid(format!(
                    "{} must not exceed per_transaction_max_amount",
                    props.name("per_transaction_min_amount")
                ))
                .detail(format!("got min {min} and max {max}"))
                .hint("swap the two values or raise the maximum"));
            }
        }
        Ok(price)
    }

    pub fn to_json(&self) -> Map<String, Value> {
        let mut map = Map::from_iter([("rate".to_string(), money_json(self.rate))]);
        let optional = [
            ("fixed_amount", self.fixed_amount.map(money_json)),
            ("free_units_per_events", self.free_units_per_events.map(Value::from)),
            ("free_units_per_total_aggregation", self.free_units_per_total_aggregation.map(money_json)),
            ("per_transaction_min_amount", self.per_transaction_min_amount.map(money_json)),
            ("per_transaction_max_amount", self.per_transaction_max_amount.map(money_json)),
        ];
        map.extend(optional.into_iter().filter_map(|(k, v)| Some((k.to_string(), v?))));
        map
    }

    fn free_events_allowance(&self) -> usize {
        self.free_units_per_events.map_or(0, |n| usize::try_from(n).unwrap_or(usize::MAX))
    }

    fn free_total_allowance(&self) -> Decimal {
        self.free_units_per_total_aggregation.unwrap_or(Decimal::ZERO)
    }

    /// Cumulative sums that the free allowance is read from: those of the first N events,
    /// or, without N, up to and including the first that exceeds T.
    fn running_totals(&self, events: &[Decimal]) -> Result<Vec<Decimal>> {
        let n = self.free_events_allowance();
        let t = self.free_total_allowance();
        let mut totals = Vec::new();
        let mut total = Decimal::ZERO;
        if n == 0 && t.is_zero() {
            return Ok(totals);
        }
        for &value in events.iter().take(if n > 0 { n } else { usize::MAX }) {
            total = add(total, value)?;
            totals.push(total);
            if n == 0 && total > t {
                break;
            }
        }
        Ok(totals)
    }

    fn free_units(&self, running: &[Decimal]) -> Decimal {
        let n = self.free_events_allowance();
        let t = self.free_total_allowance();
        match running.last() {
            None => Decimal::ZERO,
            Some(last) if last.is_zero() => Decimal::ZERO,
            Some(_) if n > 0 && n < running.len() => running[n - 1],
            Some(&last) if t.is_zero() || last <= t => last,
            Some(_) => t,
        }
    }

    /// Events that carry no fixed fee: the smaller of the non-zero values among N and the
    /// number of running totals below T.
    fn free_events(&self, running: &[Decimal]) -> usize {
        let t = self.free_total_allowance();
        let below_total = running.iter().filter(|&&r| r < t).count();
        [self.free_events_allowance(), below_total].into_iter().filter(|&c| c > 0).min().unwrap_or(0)
    }

    fn has_transaction_bounds(&self) -> bool {
        self.per_transaction_min_amount.is_some() || self.per_transaction_max_amount.is_some()
    }

    /// Prices each event on its own, spending the free events and free amount in order,
    /// and clamps every charged event to the per-transaction bounds.
    fn price_per_transaction(&self, events: &[Decimal]) -> Result<Decimal> {
        let mut free_events_left = self.free_events_allowance();
        let mut free_amount_left = self.free_total_allowance();
        let mut total = Decimal::ZERO;
        for &event in events {
            let mut value = event;
            if free_events_left > 0 || free_amount_left > Decimal::ZERO {
                free_events_left = free_events_left.saturating_sub(1);
                if free_amount_left <= Decimal::ZERO {
                    continue;
                }
                if free_amount_left > value {
                    free_amount_left = sub(free_amount_left, value)?;
                    continue;
                }
                value = sub(value, free_amount_left)?;
                free_amount_left = Decimal::ZERO;
                free_events_left = 0;
            }
            let mut cost = add(percent_of(value, self.rate)?, self.fixed_amount.unwrap_or(Decimal::ZERO))?;
            if let Some(min) = self.per_transaction_min_amount {
                cost = cost.max(min);
            }
            if let Some(max) = self.per_transaction_max_amount {
                cost = cost.min(max);
            }
            total = add(total, cost)?;
        }
        Ok(total)
    }

    /// `events` are the period's event values in timestamp order.
    pub fn price(&self, events: &[Decimal]) -> Result<Priced<'_>> {
        let units = sum(events.iter().copied())?;
        let count = events.len();
        let running = self.running_totals(events)?;
        let free_units = self.free_units(&running);
        let free_events = self.free_events(&running);
        let paid_units = sub(units, free_units)?.max(Decimal::ZERO);
        let rate_amount = percent_of(paid_units, self.rate)?;
        let fixed_total = match self.fixed_amount {
            Some(fixed) if !units.is_zero() && free_events < count => mul(Decimal::from(count - free_events), fixed)?,
            _ => Decimal::ZERO,
        };
        let plain = add(rate_amount, fixed_total)?;
        let amount = if self.has_transaction_bounds() { self.price_per_transaction(events)? } else { plain };
        let free_events_shown = free_events.min(count);
        let paid_events = count - free_events_shown;
        let min_max_adjustment = sub(amount, plain)?;
        Ok(Priced::new(amount, move || {
            Map::from_iter([
                ("events".to_string(), Value::from(count)),
                ("free_units".to_string(), number_json(free_units)),
                ("paid_units".to_string(), number_json(paid_units)),
                ("free_events".to_string(), Value::from(free_events_shown)),
                ("paid_events".to_string(), Value::from(paid_events)),
                ("rate".to_string(), money_json(self.rate)),
                ("per_unit_total_amount".to_string(), number_json(rate_amount)),
                (
                    "fixed_fee_unit_amount".to_string(),
                    number_json(if paid_events > 0 {
                        self.fixed_amount.unwrap_or(Decimal::ZERO)
                    } else {
                        Decimal::ZERO
                    }),
                ),
                ("fixed_fee_total_amount".to_string(), number_json(fixed_total)),
                ("min_max_adjustment_total_amount".to_string(), number_json(min_max_adjustment)),
            ])
        }))
    }
}
