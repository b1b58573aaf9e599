//! pg_billing: usage-based billing inside PostgreSQL.
//!
//! Four layers, each importing only those before it in this list (`tests/layers.sh`
//! checks it): `base` (shared vocabulary), then `domain` (billing rules in plain Rust) and
//! `pg` (PostgreSQL glue), which never import each other, then `api` (the SQL surface).

::pgrx::pg_module_magic!();

pub mod api;
pub mod base;
pub mod domain;
pub mod pg;

pgrx::extension_sql_file!(
    "../sql/catalog.sql",
    name = "catalog",
    requires = ["price_casts", api::price::functions::currency_minor_units]
);
pgrx::extension_sql_file!(
    "../sql/metering.sql",
    name = "metering",
    requires = [
        "catalog",
        api::metering::catalog_cache::_catalog_changed,
        api::metering::copy_paths::_intake_start,
        api::metering::copy_paths::_intake_row,
        api::metering::copy_paths::_intake_end
    ]
);
pgrx::extension_sql_file!(
    "../sql/usage.sql",
    name = "usage",
    requires =
        ["metering", api::usage::_period_dates, api::price::functions::amount, api::price::functions::amount_of_events]
);
pgrx::extension_sql_file!(
    "../sql/invoicing.sql",
    name = "invoicing",
    requires = [
        "usage",
        api::invoicing::_period_share,
        api::invoicing::_shortfall,
        api::price::functions::round_money,
        api::price::functions::amount_details
    ]
);
pgrx::extension_sql_file!("../sql/taxes.sql", name = "taxes", requires = ["invoicing"]);
pgrx::extension_sql_file!("../sql/coupons.sql", name = "coupons", requires = ["taxes"]);
pgrx::extension_sql_file!("../sql/one_off.sql", name = "one_off", requires = ["coupons"]);
pgrx::extension_sql_file!("../sql/fixed_charges.sql", name = "fixed_charges", requires = ["one_off"]);
pgrx::extension_sql_file!("../sql/credit_notes.sql", name = "credit_notes", requires = ["fixed_charges"]);
pgrx::extension_sql_file!("../sql/progressive.sql", name = "progressive", requires = ["credit_notes"]);
pgrx::extension_sql_file!("../sql/plan_changes.sql", name = "plan_changes", requires = ["progressive"]);
pgrx::extension_sql_file!("../sql/pay_in_advance.sql", name = "pay_in_advance", requires = ["plan_changes"]);
pgrx::extension_sql_file!("../sql/previews.sql", name = "previews", requires = ["pay_in_advance"]);
pgrx::extension_sql_file!("../sql/wallets.sql", name = "wallets", requires = ["previews"]);
pgrx::extension_sql_file!("../sql/distribute.sql", name = "distribute", requires = ["wallets"]);
pgrx::extension_sql_file!("../sql/schedule.sql", name = "schedule", requires = ["invoicing"]);
pgrx::extension_sql_file!(
    "../sql/bi.sql",
    name = "bi",
    requires = [
        "distribute",
        "schedule",
        "priced_sum_aggregate",
        api::metering::sql::ingest_event,
        api::metering::sql::ingest_events,
        api::metering::sql::direct_write_status,
        api::metering::copy_paths::ingest_staged,
        api::metering::copy_paths::last_intake
    ]
);
pgrx::extension_sql_file!("../sql/comments.sql", name = "comments", finalize);

#[pgrx::pg_guard]
pub extern "C-unwind" fn _PG_init() {
    // After pgrx's hook (registered when PostgreSQL loaded the library), which it replaces.
    pg::error_report::install_panic_hook();
    pgrx::GucRegistry::define_int_guc(
        c"pg_billing.event_future_margin_seconds",
        c"How far ahead of now() an event's timestamp may be.",
        c"Events further in the future are rejected at ingestion.",
        &api::metering::ingest::FUTURE_MARGIN_SECONDS,
        0,
        i32::MAX,
        pgrx::GucContext::Userset,
        pgrx::GucFlags::UNIT_S,
    );
    pgrx::GucRegistry::define_bool_guc(
        c"pg_billing.direct_writes",
        c"Whether ingestion may store batches below the statement level.",
        c"Batches of 16 events or more are stored the way COPY stores rows where the table has \
          exactly the shape pg_billing created; off: always through INSERT ... ON CONFLICT.",
        &pg::table_access::DIRECT_WRITES,
        pgrx::GucContext::Userset,
        pgrx::GucFlags::default(),
    );
    pgrx::GucRegistry::define_int_guc(
        c"pg_billing.writer_slot",
        c"The writer slot of this session's usage rollup rows (-1: chosen by backend pid).",
        c"For tests that make sessions fold into the same rollup row.",
        &api::metering::ingest::WRITER_SLOT,
        -1,
        7,
        pgrx::GucContext::Suset,
        pgrx::GucFlags::default(),
    );
    pg::invalidation::register();
}

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
