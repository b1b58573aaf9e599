//! PostgreSQL glue that knows nothing of billing: errors as reports, numeric and jsonb
//! datums, dates, prepared SPI plans, direct table access, invalidation callbacks, and work
//! done as the extension's owner.
//! Imports `base`, pgrx and itself only.

pub mod date;
pub mod error_report;
pub mod invalidation;
pub mod jsonb;
pub mod numeric;
pub mod owner;
pub mod spi_plans;
pub mod table_access;
