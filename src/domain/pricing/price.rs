//! A validated price: `{"charge_model": ..., "properties": {...}}` in Lago's spelling.

use super::fields::{number_json, Fields};
use super::models::{
    dynamic, graduated::Graduated, graduated_percentage::GraduatedPercentage, package::Package, percentage::Percentage,
    standard::Standard, volume::Volume, Priced,
};
use crate::base::decimal::sum;
use crate::base::error::{BillingError, Result};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

pub const CHARGE_MODELS: [&str; 7] =
    ["standard", "graduated", "volume", "package", "percentage", "graduated_percentage", "dynamic"];

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Price {
    Standard(Standard),
    Graduated(Graduated),
    Volume(Volume),
    Package(Package),
    Percentage(Percentage),
    GraduatedPercentage(GraduatedPercentage),
    Dynamic,
}

/// What is priced: a total of units, or the period's event values in timestamp order
/// (units = their sum). Models that look at single events see a total as one event.
#[derive(Debug, Clone, Copy)]
pub enum Usage<'a> {
    Units(&'a Decimal),
    Events(&'a [Decimal]),
}

impl<'a> Usage<'a> {
    pub fn units(&self) -> Result<Decimal> {
        match self {
            Usage::Units(units) => Ok(**units),
            Usage::Events(values) => sum(values.iter().copied()),
        }
    }

    pub fn events(&self) -> &'a [Decimal] {
        match self {
            Usage::Units(units) => std::slice::from_ref(*units),
            Usage::Events(values) => values,
        }
    }
}

impl Price {
    /// Parses the JSON text of a price; malformed JSON is 22P02, bad properties 22023.
    pub fn from_json_text(text: &str) -> Result<Price> {
        let value: Value = serde_json::from_str(text).map_err(|e| {
            BillingError::malformed("invalid JSON for a price")
                .detail(e.to_string())
                .hint("a price looks like {\"charge_model\": \"standard\", \"properties\": {\"amount\": \"0.002\"}}")
        })?;
        Price::from_json(&value)
    }

    pub fn from_json(value: &Value) -> Result<Price> {
        if !value.is_object() {
            return Err(BillingError::invalid("a price must be a JSON object")
                .detail(format!("got {value}"))
                .hint("a price looks like {\"charge_model\": \"standard\", \"properties\": {\"amount\": \"0.002\"}}"));
        }
        let top = Fields::new(value, "")?;
        top.deny_unknown(&["charge_model", "properties"], "a price")?;
        let model = match top.get("charge_model") {
            Some(Value::String(model)) => model.as_str(),
            Some(other) => {
                return Err(BillingError::invalid("charge_model must be a string").detail(format!("got {other}")))
            }
            None => {
                return Err(BillingError::invalid("charge_model is required")
                    .hint(format!("use one of: {}", CHARGE_MODELS.join(", "))))
            }
        };
        let empty = Value::Object(Map::new());
        let props = Fields::new(top.get("properties").unwrap_or(&empty), "")?;
        Ok(match model {
            "standard" => Price::Standard(Standard::parse(&props)?),
            "graduated" => Price::Graduated(Graduated::parse(&props)?),
            "volume" => Price::Volume(Volume::parse(&props)?),
            "package" => Price::Package(Package::parse(&props)?),
            "percentage" => Price::Percentage(Percentage::parse(&props)?),
            "graduated_percentage" => Price::GraduatedPercentage(GraduatedPercentage::parse(&props)?),
            "dynamic" => {
                dynamic::parse(&props)?;
                Price::Dynamic
            }
            unknown => {
                return Err(BillingError::invalid(format!("unknown charge_model \"{unknown}\""))
                    .hint(format!("use one of: {}", CHARGE_MODELS.join(", "))))
            }
        })
    }

    pub fn charge_model(&self) -> &'static str {
        match self {
            Price::Standard(_) => "standard",
            Price::Graduated(_) => "graduated",
            Price::Volume(_) => "volume",
            Price::Package(_) => "package",
            Price::Percentage(_) => "percentage",
            Price::GraduatedPercentage(_) => "graduated_percentage",
            Price::Dynamic => "dynamic",
        }
    }

    /// The canonical JSON form: fixed key order, normalised decimals, absent optionals omitted.
    pub fn to_json(&self) -> Value {
        let properties = match self {
            Price::Standard(p) => p.to_json(),
            Price::Graduated(p) => p.to_json(),
            Price::Volume(p) => p.to_json(),
            Price::Package(p) => p.to_json(),
            Price::Percentage(p) => p.to_json(),
            Price::GraduatedPercentage(p) => p.to_json(),
            Price::Dynamic => Map::new(),
        };
        Value::Object(Map::from_iter([
            ("charge_model".to_string(), Value::from(self.charge_model())),
            ("properties".to_string(), Value::Object(properties)),
        ]))
    }

    /// The unrounded amount and its breakdown. `minor_units` is the currency's exponent,
    /// used only by dynamic prices (their event amounts are in minor units). A negative
    /// amount is clamped to 0: usage never produces a credit. The amount is exact and
    /// shown without trailing zeros (`200`, not `200.0`).
    pub fn evaluate<'a>(&'a self, usage: Usage<'a>, minor_units: u32) -> Result<Priced<'a>> {
        let units = usage.units()?;
        let mut priced = match self {
            Price::Standard(p) => p.price(units)?,
            Price::Graduated(p) => p.price(units)?,
            Price::Volume(p) => p.price(units)?,
            Price::Package(p) => p.price(units)?,
            Price::Percentage(p) => p.price(usage.events())?,
            Price::GraduatedPercentage(p) => p.price(units)?,
            Price::Dynamic => dynamic::price(usage.events(), minor_units)?,
        };
        priced.amount = priced.amount.max(Decimal::ZERO).normalize();
        Ok(priced)
    }

    pub fn amount(&self, usage: Usage, minor_units: u32) -> Result<Decimal> {
        Ok(self.evaluate(usage, minor_units)?.amount)
    }

    /// The breakdown as one JSON object: model, units, amount, then the model's own entries.
    pub fn details(&self, usage: Usage, minor_units: u32) -> Result<Value> {
        let priced = self.evaluate(usage, minor_units)?;
        let mut map = Map::from_iter([
            ("charge_model".to_string(), Value::from(self.charge_model())),
            ("units".to_string(), number_json(usage.units()?)),
            ("amount".to_string(), number_json(priced.amount)),
        ]);
        map.extend((priced.details)());
        Ok(Value::Object(map))
    }
}
