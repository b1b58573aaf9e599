//! Billing as plain Rust: the rules, with no PostgreSQL in them, so every rule is testable
//! with ordinary `#[test]`s. Imports `base` and itself only.

pub mod calendar;
pub mod invoicing;
pub mod metering;
pub mod pricing;
