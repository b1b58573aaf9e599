//! The charge models, one module each.

pub mod dynamic;
pub mod graduated;
pub mod graduated_percentage;
pub mod package;
pub mod percentage;
pub mod standard;
pub mod volume;

use rust_decimal::Decimal;
use serde_json::{Map, Value};

/// What a model computed: the unrounded amount, and the model's own breakdown entries built
/// only when asked for. Most callers want the amount alone (a current-usage call prices
/// every pricing group), and building the breakdown's JSON cost more than the pricing.
pub struct Priced<'a> {
    pub amount: Decimal,
    pub details: Box<dyn FnOnce() -> Map<String, Value> + 'a>,
}

impl<'a> Priced<'a> {
    pub fn new(amount: Decimal, details: impl FnOnce() -> Map<String, Value> + 'a) -> Self {
        Priced { amount, details: Box::new(details) }
    }
}
