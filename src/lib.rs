//! pg_billing: usage-based billing inside PostgreSQL.

::pgrx::pg_module_magic!();

pub mod error;
pub mod numeric;
pub mod price;
pub mod pricing;

pgrx::extension_sql_file!("../sql/comments.sql", name = "comments", finalize);

#[cfg(any(test, feature = "pg_test"))]
mod tests;

/// Required by `cargo pgrx test`.
#[cfg(test)]
pub mod pg_test {
    pub fn setup(_options: Vec<&str>) {}

    pub fn postgresql_conf_options() -> Vec<&'static str> {
        vec![]
    }
}
