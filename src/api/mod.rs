//! The SQL surface, one folder per area: the functions, types and aggregates SQL calls,
//! and the PostgreSQL side of each area's engine. May import every other layer; nothing
//! imports it but `lib.rs` and the tests.

pub mod invoicing;
pub mod metering;
pub mod price;
pub mod usage;
