//! Reading and validating the JSON properties of a price, with error messages that name
//! the exact field (`graduated_ranges[1].from_value`) and show the offending value.

use crate::base::decimal::parse_exact;
use crate::base::error::{BillingError, Result};
use rust_decimal::Decimal;
use serde_json::{Map, Value};
use std::str::FromStr;

/// One JSON object of a price (the properties, or one range) and where it sits.
pub struct Fields<'a> {
    map: &'a Map<String, Value>,
    path: String,
}

impl<'a> Fields<'a> {
    /// `path` is the prefix for messages: "" for the properties, "graduated_ranges[2]." for a range.
    pub fn new(value: &'a Value, path: impl Into<String>) -> Result<Self> {
        let path = path.into();
        match value {
            Value::Object(map) => Ok(Fields { map, path }),
            other => Err(BillingError::invalid(format!("{} must be a JSON object", path_name(&path)))
                .detail(format!("got {other}"))),
        }
    }

    /// Refuses keys the model does not know: a misspelt key must not be priced as absent.
    pub fn deny_unknown(&self, allowed: &[&str], owner: &str) -> Result<()> {
        match self.map.keys().find(|key| !allowed.contains(&key.as_str())) {
            None => Ok(()),
            Some(key) => Err(BillingError::invalid(format!("unknown property \"{}{key}\" for {owner}", self.path))
                .detail(match allowed {
                    [] => "it takes no properties".to_string(),
                    _ => format!("allowed: {}", allowed.join(", ")),
                })
                .hint("remove the property or fix its spelling")),
        }
    }

    pub fn name(&self, key: &str) -> String {
        format!("{}{key}", self.path)
    }

    /// The value of `key`, with an explicit JSON null treated as absent.
    pub fn get(&self, key: &str) -> Option<&'a Value> {
        self.map.get(key).filter(|v| !v.is_null())
    }

    /// A decimal given as a JSON number or a numeric string, exactly.
    pub fn decimal(&self, key: &str) -> Result<Option<Decimal>> {
        let Some(value) = self.get(key) else { return Ok(None) };
        let text = match value {
            Value::String(s) => s.as_str(),
            Value::Number(n) => n.as_str(),
            _ => return Err(self.not_decimal(key, value)),
        };
        parse_exact(text, &self.name(key), || self.not_decimal(key, value)).map(Some)
    }

    fn not_decimal(&self, key: &str, value: &Value) -> BillingError {
        BillingError::invalid(format!("{} must be a decimal number", self.name(key)))
            .detail(format!("got {value}"))
            .hint("write plain decimals such as \"0.002\" or 100 (no exponent, NaN or Infinity)")
    }

    /// A money value (an amount or a rate): a decimal string only, as Lago requires, so
    /// that a float from a client's JSON library never silently becomes a price.
    pub fn money(&self, key: &str) -> Result<Option<Decimal>> {
        match self.get(key) {
            Some(Value::Number(n)) => {
                Err(BillingError::invalid(format!("{} must be a decimal string", self.name(key)))
                    .detail(format!("got the JSON number {n}"))
                    .hint(format!("send money values as strings, e.g. \"{key}\": \"{n}\"")))
            }
            _ => self.decimal(key),
        }
    }

    /// A required money value that may not be negative.
    pub fn required_money(&self, key: &str) -> Result<Decimal> {
        let value = self.money(key)?.ok_or_else(|| self.missing(key))?;
        self.check_non_negative(key, value)
    }

    /// An optional money value that may not be negative.
    pub fn optional_money(&self, key: &str) -> Result<Option<Decimal>> {
        self.money(key)?.map(|v| self.check_non_negative(key, v)).transpose()
    }

    fn missing(&self, key: &str) -> BillingError {
        BillingError::invalid(format!("{} is required", self.name(key)))
            .hint(format!("add \"{key}\" to the properties"))
    }

    pub fn required(&self, key: &str) -> Result<Decimal> {
        self.decimal(key)?.ok_or_else(|| self.missing(key))
    }

    /// A required decimal that may not be negative (amounts, rates, sizes).
    pub fn required_non_negative(&self, key: &str) -> Result<Decimal> {
        let value = self.required(key)?;
        self.check_non_negative(key, value)
    }

    pub fn optional_non_negative(&self, key: &str) -> Result<Option<Decimal>> {
        self.decimal(key)?.map(|v| self.check_non_negative(key, v)).transpose()
    }

    fn check_non_negative(&self, key: &str, value: Decimal) -> Result<Decimal> {
        if value.is_sign_negative() && !value.is_zero() {
            return Err(BillingError::invalid(format!("{} must not be negative", self.name(key)))
                .detail(format!("got {value}")));
        }
        Ok(value)
    }

    /// A non-negative whole number (a count of events).
    pub fn optional_count(&self, key: &str) -> Result<Option<u64>> {
        let Some(value) = self.optional_non_negative(key)? else { return Ok(None) };
        if !value.fract().is_zero() {
            return Err(BillingError::invalid(format!("{} must be a whole number", self.name(key)))
                .detail(format!("got {value}")));
        }
        u64::try_from(value).map(Some).map_err(|_| {
            BillingError::out_of_range(format!("{} is too large", self.name(key))).detail(format!("got {value}"))
        })
    }

    /// A non-empty array of objects, each read with its own indexed path.
    pub fn objects(&self, key: &str) -> Result<Vec<Fields<'a>>> {
        let items = match self.get(key) {
            Some(Value::Array(items)) if !items.is_empty() => items,
            Some(Value::Array(_)) => {
                return Err(BillingError::invalid(format!("{} must not be empty", self.name(key)))
                    .hint("give at least one range"))
            }
            None => {
                return Err(BillingError::invalid(format!("{} is required", self.name(key)))
                    .hint(format!("add \"{key}\" to the properties")))
            }
            Some(other) => {
                return Err(BillingError::invalid(format!("{} must be an array", self.name(key)))
                    .detail(format!("got {other}")))
            }
        };
        items.iter().enumerate().map(|(i, item)| Fields::new(item, format!("{}{key}[{i}].", self.path))).collect()
    }
}

fn path_name(path: &str) -> &str {
    match path.strip_suffix('.') {
        Some(p) => p,
        None if path.is_empty() => "properties",
        None => path,
    }
}

/// JSON builders for the canonical form: money as strings, bounds and counts as numbers,
/// every decimal normalised ("5.00" → "5").
pub fn money_json(value: Decimal) -> Value {
    Value::String(value.normalize().to_string())
}

pub fn number_json(value: Decimal) -> Value {
    Value::Number(serde_json::Number::from_str(&value.normalize().to_string()).expect("a decimal is a JSON number"))
}

pub fn optional_json(value: Option<Decimal>, to_json: fn(Decimal) -> Value) -> Value {
    value.map_or(Value::Null, to_json)
}
