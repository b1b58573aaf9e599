//! billing.direct_write_status() in PostgreSQL: the direct path for the table as created,
//! and each reason it steps aside for, in the order the check meets them.

#[pgrx::pg_schema]
mod tests {
    use crate::tests::support::text;
    use pgrx::prelude::*;

    fn status() -> String {
        text("SELECT format('%s %s', direct, coalesce(reason, '-')) FROM billing.direct_write_status()")
    }

    #[pg_test]
    fn the_table_as_created_is_written_directly() {
        assert_eq!(status(), "t -");
    }

    #[pg_test]
    fn the_setting_switches_the_path_off() {
        Spi::run("SET LOCAL pg_billing.direct_writes = off").unwrap();
        assert_eq!(status(), "f pg_billing.direct_writes is off");
        Spi::run("SET LOCAL pg_billing.direct_writes = on").unwrap();
        assert_eq!(status(), "t -");
    }

    #[pg_test]
    fn a_changed_column_or_key_switches_the_path_off() {
        Spi::run("ALTER TABLE billing.events ALTER COLUMN value TYPE numeric(20, 9)").unwrap();
        assert_eq!(status(), "f column value differs in its type modifier");
        Spi::run("ALTER TABLE billing.events ALTER COLUMN value TYPE numeric").unwrap();
        assert_eq!(status(), "t -");
        Spi::run(
            "CREATE UNIQUE INDEX events_by_id ON billing.events (id);
             SET LOCAL client_min_messages = warning;",
        )
        .unwrap();
        assert_eq!(status(), "f the table has more than one unique index");
    }
}
