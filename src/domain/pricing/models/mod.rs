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

/// What a model computed: the unrounded amount and the model's own breakdown entries.
pub struct Priced {
    pub amount: Decimal,
    pub details: Map<String, Value>,
}
