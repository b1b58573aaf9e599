//! Tests that run inside PostgreSQL (`cargo pgrx test`).

mod direct_writes_sql;
mod intake_sql;
mod jsonb_reader;
mod numeric_boundary;
mod price_sql;

/// Helpers the SQL-surface tests share.
mod support {
    use pgrx::prelude::*;

    /// Runs `query` and returns "ok" or "SQLSTATE: message", catching the error in a
    /// PL/pgSQL block (a subtransaction), so each error's code can be asserted.
    pub fn outcome(query: &str) -> String {
        Spi::run(
            "CREATE OR REPLACE FUNCTION pg_temp.outcome(q text) RETURNS text LANGUAGE plpgsql AS $$
             BEGIN EXECUTE q; RETURN 'ok';
             EXCEPTION WHEN OTHERS THEN RETURN SQLSTATE || ': ' || SQLERRM; END $$",
        )
        .unwrap();
        Spi::get_one_with_args::<String>("SELECT pg_temp.outcome($1)", &[query.into()]).unwrap().unwrap()
    }

    /// The text of a one-value query's non-null result.
    pub fn text(query: &str) -> String {
        Spi::get_one::<String>(query).unwrap().expect("a non-null result")
    }
}
