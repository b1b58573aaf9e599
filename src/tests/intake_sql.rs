//! The COPY intake's SQL surface: rows sent to billing.event_intake (by INSERT here, as COPY
//! would send them) are stored once, counted by billing.last_intake(), and a load refuses
//! to start without the intake's triggers.

#[pgrx::pg_schema]
mod tests {
    use crate::tests::support::{outcome, text};
    use pgrx::prelude::*;

    fn catalog() {
        Spi::run(
            "SELECT billing.create_customer('acme', 'Acme', 'USD', 'UTC');
             SELECT billing.create_billable_metric('tokens', 'Tokens', 'sum', 'tokens');
             SELECT billing.create_plan('api', 'API', 'monthly', 0, 'USD',
               '[{\"billable_metric_code\": \"tokens\", \"charge_model\": \"standard\", \"properties\": {\"amount\": \"1\"}}]');
             SELECT billing.create_subscription('sub', 'acme', 'api', '2026-01-01 00:00+00');",
        )
        .unwrap();
    }

    #[pg_test]
    fn intake_counts_each_outcome_and_stores_each_key_once() {
        catalog();
        assert_eq!(text("SELECT count(*)::text FROM billing.last_intake()"), "0");
        Spi::run(
            "INSERT INTO billing.event_intake (external_subscription_id, code, transaction_id, \"timestamp\", properties)
             VALUES ('sub', 'tokens', 'k-1', '2026-03-01T00:00:00Z', '{\"tokens\": 4}'),
                    ('sub', 'tokens', 'k-1', '2026-03-01T00:00:00Z', '{\"tokens\": 4.0}'),
                    ('sub', 'tokens', 'k-1', '2026-03-01T00:00:00Z', '{\"tokens\": 5}'),
                    ('nobody', 'tokens', 'k-2', '2026-03-01T00:00:00Z', '{\"tokens\": 1}')",
        )
        .unwrap();
        // k-1 accepted, its exact repeat a duplicate, its changed repeat a conflict, k-2 rejected.
        assert_eq!(
            text("SELECT format('%s %s %s %s', accepted, duplicates, conflicts, rejected) FROM billing.last_intake()"),
            "1 1 1 1"
        );
        assert_eq!(text("SELECT string_agg(transaction_id || '=' || value, ',') FROM billing.events"), "k-1=4");
        assert_eq!(text("SELECT string_agg(sqlstate, ',') FROM billing.rejected_events"), "23503");
        assert_eq!(text("SELECT sum(events_count)::text FROM billing.usage_rollups"), "1");
        assert_eq!(text("SELECT count(*)::text FROM billing.event_intake"), "0");
    }

    #[pg_test]
    fn a_load_without_the_intakes_triggers_is_refused() {
        catalog();
        Spi::run("DROP TRIGGER intake_end ON billing.event_intake").unwrap();
        let refused = outcome(
            "INSERT INTO billing.event_intake (external_subscription_id, code, transaction_id, properties)
             VALUES ('sub', 'tokens', 'k-3', '{\"tokens\": 1}')",
        );
        assert_eq!(refused, "55000: billing.event_intake's triggers are not all in place");
        assert_eq!(text("SELECT count(*)::text FROM billing.events"), "0");
    }
}
