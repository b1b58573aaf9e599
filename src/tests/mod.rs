//! Tests that run inside PostgreSQL (`cargo pgrx test`).

mod jsonb_reader;
mod price_sql;
