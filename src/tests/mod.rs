//! Tests that run inside PostgreSQL (`cargo pgrx test`).

mod price_sql;
