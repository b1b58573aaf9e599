//! Tests that run inside PostgreSQL (`cargo pgrx test`).

mod jsonb_reader;
mod numeric_boundary;
mod price_sql;
