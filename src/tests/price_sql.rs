//! The SQL surface of the pricing engine, called through SPI inside PostgreSQL.

#[pgrx::pg_schema]
mod tests {
    use crate::tests::support::{outcome, text};
    use pgrx::prelude::*;

    const TIERS: &str = r#"'{"charge_model":"graduated","properties":{"graduated_ranges":[
        {"from_value":0,"to_value":10,"per_unit_amount":"10","flat_amount":"2"},
        {"from_value":11,"to_value":null,"per_unit_amount":"5","flat_amount":"3"}]}}'"#;

    #[pg_test]
    fn price_text_is_canonical_json() {
        assert_eq!(
            text(r#"SELECT '{"properties":{"amount":"0.0020"},"charge_model":"standard"}'::billing.price::text"#),
            r#"{"charge_model":"standard","properties":{"amount":"0.002"}}"#
        );
    }

    #[pg_test]
    fn price_casts_from_and_to_jsonb() {
        assert_eq!(
            text(
                r#"SELECT ('{"charge_model":"package","properties":{"amount":"5","package_size":100}}'::jsonb::billing.price)::jsonb::text"#
            ),
            r#"{"properties": {"amount": "5", "free_units": 0, "package_size": 100}, "charge_model": "package"}"#
        );
        // The assignment cast lets a jsonb value be stored in a billing.price column.
        Spi::run("CREATE TEMP TABLE prices (p billing.price)").unwrap();
        Spi::run(r#"INSERT INTO prices VALUES ('{"charge_model":"standard","properties":{"amount":"1"}}'::jsonb)"#)
            .unwrap();
        assert_eq!(text("SELECT billing.amount(p, 7)::text FROM prices"), "7");
    }

    #[pg_test]
    fn invalid_prices_raise_specific_sqlstates() {
        assert_eq!(outcome("SELECT '{'::billing.price"), "22P02: invalid JSON for a price");
        assert_eq!(
            outcome(r#"SELECT '{"charge_model":"standard","properties":{"amount":"-1"}}'::billing.price"#),
            "22023: amount must not be negative"
        );
        assert_eq!(
            outcome(
                r#"SELECT '{"charge_model":"graduated","properties":{"graduated_ranges":[
                {"from_value":0,"to_value":10,"per_unit_amount":"1","flat_amount":"0"},
                {"from_value":5,"to_value":null,"per_unit_amount":"1","flat_amount":"0"}]}}'::jsonb::billing.price"#
            ),
            "22023: graduated_ranges[1].from_value must be 10 or 11"
        );
        assert_eq!(
            outcome(r#"SELECT '{"charge_model":"standard","properties":{"amount":"1e40"}}'::billing.price"#),
            "22023: amount must be a decimal number"
        );
    }

    #[pg_test]
    fn amount_prices_units_exactly() {
        assert_eq!(text(&format!("SELECT billing.amount({TIERS}, 11)::text")), "110");
        assert_eq!(text(&format!("SELECT billing.amount({TIERS}, 0)::text")), "2");
        assert_eq!(
            text(
                r#"SELECT billing.amount('{"charge_model":"standard","properties":{"amount":"0.002"}}', 1234567)::text"#
            ),
            "2469.134"
        );
    }

    #[pg_test]
    fn amount_of_event_values() {
        assert_eq!(
            text(
                r#"SELECT billing.amount('{"charge_model":"percentage","properties":{"rate":"1.3","fixed_amount":"2"}}', ARRAY[100,200,300,200])::text"#
            ),
            "18.4"
        );
        assert_eq!(text("SELECT billing.amount('{\"charge_model\":\"dynamic\"}', ARRAY[150, 250])::text"), "4");
        assert_eq!(
            text("SELECT billing.amount('{\"charge_model\":\"dynamic\"}', ARRAY[150, 250], 'JPY')::text"),
            "400"
        );
        assert_eq!(text(&format!("SELECT billing.amount({TIERS}, ARRAY[5, 6])::text")), "110");
        // units = 11
    }

    #[pg_test]
    fn numeric_inputs_beyond_exact_range_are_refused() {
        let standard = r#"'{"charge_model":"standard","properties":{"amount":"1"}}'"#;
        assert_eq!(
            outcome(&format!("SELECT billing.amount({standard}, 'NaN'::numeric)")),
            "22023: units must be a finite number"
        );
        assert_eq!(
            outcome(&format!("SELECT billing.amount({standard}, 'Infinity'::numeric)")),
            "22023: units must be a finite number"
        );
        assert_eq!(
            outcome(&format!("SELECT billing.amount({standard}, 1e30)")),
            "22003: units is out of the supported range"
        );
        assert_eq!(
            outcome(&format!("SELECT billing.amount({standard}, ARRAY[1, NULL])")),
            "22023: event_values[2] is null"
        );
        assert_eq!(
            outcome(
                r#"SELECT billing.amount('{"charge_model":"standard","properties":{"amount":"99999999999999999999"}}', 1e10)"#
            ),
            "22003: amount is out of the supported range"
        );
    }

    #[pg_test]
    fn amount_details_breaks_down_tiers() {
        let details = text(&format!("SELECT billing.amount_details({TIERS}, 11)::text"));
        assert_eq!(
            details,
            r#"{"units": 11, "amount": 110, "charge_model": "graduated", "graduated_ranges": [{"units": 10, "to_value": 10, "from_value": 0, "per_unit_amount": "10", "flat_unit_amount": 2, "per_unit_total_amount": 100, "total_with_flat_amount": 102}, {"units": 1, "to_value": null, "from_value": 11, "per_unit_amount": "5", "flat_unit_amount": 3, "per_unit_total_amount": 5, "total_with_flat_amount": 8}]}"#
        );
        assert_eq!(
            text(
                r#"SELECT billing.amount_details('{"charge_model":"percentage","properties":{"rate":"2","free_units_per_events":2}}', ARRAY[100,50,30]) ->> 'paid_units'"#
            ),
            "30"
        );
    }

    #[pg_test]
    fn priced_sum_prices_each_group() {
        Spi::run(
            "CREATE TEMP TABLE usage AS SELECT * FROM (VALUES ('acme', 4), ('acme', 7), ('globex', 3), ('globex', NULL)) u(customer, qty)",
        )
        .unwrap();
        assert_eq!(
            text(&format!(
                "SELECT string_agg(customer || '=' || amount, ',' ORDER BY customer) FROM
                 (SELECT customer, billing.priced_sum(qty, {TIERS}) AS amount FROM usage GROUP BY customer) s"
            )),
            "acme=110,globex=32"
        );
        assert_eq!(
            Spi::get_one::<pgrx::AnyNumeric>(&format!(
                "SELECT billing.priced_sum(qty, {TIERS}) FROM usage WHERE false"
            ))
            .unwrap(),
            None
        );
    }

    #[pg_test]
    fn priced_sum_refuses_mixed_prices_in_a_group() {
        assert_eq!(
            outcome(&format!(
                r#"SELECT billing.priced_sum(q, p) FROM (VALUES (1, {TIERS}::billing.price),
                   (2, '{{"charge_model":"standard","properties":{{"amount":"1"}}}}'::billing.price)) v(q, p)"#
            )),
            "22023: priced_sum got different prices within one group"
        );
    }

    #[pg_test]
    fn round_money_rounds_half_up_to_minor_units() {
        assert_eq!(text("SELECT billing.round_money(54.838709677, 'EUR')::text"), "54.84");
        assert_eq!(text("SELECT billing.round_money(0.125, 'USD')::text"), "0.13");
        assert_eq!(text("SELECT billing.round_money(1234.5, 'JPY')::text"), "1235");
        assert_eq!(text("SELECT billing.round_money(1.2345, 'KWD')::text"), "1.235");
        assert_eq!(text("SELECT billing.currency_minor_units('BHD')::text"), "3");
        assert_eq!(outcome("SELECT billing.round_money(1, 'XYZ')"), "22023: unknown currency \"XYZ\"");
    }

    #[pg_test]
    fn pure_functions_are_immutable_strict_and_parallel_safe() {
        let offenders = text(
            "SELECT coalesce(string_agg(p.oid::regprocedure::text, ', '), 'none') FROM pg_proc p
             JOIN pg_namespace n ON n.oid = p.pronamespace
             WHERE n.nspname = 'billing' AND p.prokind = 'f'
               AND p.proname IN ('amount', 'amount_details', 'round_money', 'currency_minor_units', 'price', 'price_to_jsonb')
               AND NOT (p.provolatile = 'i' AND p.proisstrict AND p.proparallel = 's')",
        );
        assert_eq!(offenders, "none");
    }

    #[pg_test]
    fn every_public_object_has_a_comment() {
        let missing = text(
            "SELECT coalesce(string_agg(o, ', '), 'none') FROM (
               SELECT p.oid::regprocedure::text AS o FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
                WHERE n.nspname = 'billing' AND p.proname NOT LIKE '\\_%' AND obj_description(p.oid, 'pg_proc') IS NULL
               UNION ALL
               SELECT t.oid::regtype::text FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
                WHERE n.nspname = 'billing' AND t.typtype <> 'c' AND t.typelem = 0 AND obj_description(t.oid, 'pg_type') IS NULL
               UNION ALL
               SELECT c.oid::regclass::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                WHERE n.nspname = 'billing' AND c.relkind IN ('r', 'v') AND obj_description(c.oid, 'pg_class') IS NULL
             ) s",
        );
        assert_eq!(missing, "none");
    }
}
