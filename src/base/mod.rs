//! The vocabulary every layer shares: the error type and its SQLSTATEs, exact decimal
//! parsing and arithmetic, and read access to JSON values. Plain Rust; imports nothing
//! else of pg_billing.

pub mod decimal;
pub mod error;
pub mod json_view;
