//! The pricing engine (the rules the README documents) in plain Rust: no PostgreSQL here, so every rule is
//! testable with ordinary `#[test]`s and properties.

pub mod currency;
pub mod fields;
pub mod models;
pub mod price;
pub mod ranges;

pub use currency::{minor_units, round_money};
pub use price::{Price, Usage};

#[cfg(test)]
mod tests;
