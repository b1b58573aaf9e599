-- Fixed charges, worked out by hand in the comments: an add-on's units without events,
-- priced standard (prorated, in arrears) and volume (in advance), with the subscription's own
-- units changing during a period; the errors, which write nothing.
SET client_min_messages = warning;
DROP EXTENSION pg_billing CASCADE;
CREATE EXTENSION pg_billing;
SET TIME ZONE 'UTC';
SET datestyle = 'ISO, YMD';
\set SHOW_CONTEXT never

SELECT code FROM billing.create_add_on('seat', 'Seats', 10, 'EUR');
SELECT code FROM billing.create_add_on('support', 'Support tier', 100, 'EUR');
SELECT code FROM billing.create_add_on('usd-seat', 'USD seats', 10, 'USD');
-- Plan team: 20.00 a month in arrears; seats at 10.00 each, 3 by default, prorated, in
-- arrears; support in volume tiers (1 at 100.00, 2 and more at 80.00 each), 1 by default,
-- in advance.
SELECT version FROM billing.create_plan('team', 'Team', 'monthly', 20, 'EUR');
SELECT units, pay_in_advance, prorated, price FROM billing.add_fixed_charge('team', 'seat', 'standard', '{"amount": "10"}', 3, prorated => true);
SELECT units, pay_in_advance, prorated FROM billing.add_fixed_charge('team', 'support', 'volume', '{"volume_ranges": [
  {"from_value": 0, "to_value": 1, "per_unit_amount": "100", "flat_amount": "0"},
  {"from_value": 2, "to_value": null, "per_unit_amount": "80", "flat_amount": "0"}]}', 1, pay_in_advance => true);
SELECT external_id FROM billing.create_customer('f1', 'F1', 'EUR', 'UTC');
SELECT status FROM billing.create_subscription('s1', 'f1', 'team', '2026-03-01 00:00+00');

CREATE TEMP VIEW lines AS
SELECT i.billing_at::date AS billed, f.fee_type, f.description, f.units, f.precise_amount, f.amount
FROM billing.fees f JOIN billing.invoices i ON i.customer_id = f.customer_id AND i.id = f.invoice_id
ORDER BY i.billing_at, f.fee_type, f.id;

-- March 1, in advance: support, 1 unit → 100.00.
SELECT total_amount FROM billing.bill_subscription('s1', '2026-03-01 00:05+00');
-- 5 seats from March 11.
SELECT billing.set_fixed_charge_units('s1', 'seat', 5, '2026-03-11 00:00+00');
-- April 1: March in arrears: base 20.00; seats 3 for March 1–10 and 5 for March 11–31:
-- (3 × 10 + 5 × 21) / 31 = 135 / 31 = 4.354838… → 4.35484 units (rounded up at 5 decimals)
-- × 10 = 43.5484 → 43.55; and April's support in advance, 100.00. Total 163.55.
SELECT total_amount FROM billing.bill_subscription('s1', '2026-04-01 00:05+00');
-- 3 support units from April 15 (in advance, not prorated: from May's invoice on). May 1:
-- April in arrears, base 20.00 and 5 seats all month, 50.00; May's support, 3 units in
-- the 2-and-more tier: 240.00. Total 310.00.
SELECT billing.set_fixed_charge_units('s1', 'support', 3, '2026-04-15 00:00+00');
SELECT total_amount FROM billing.bill_subscription('s1', '2026-05-01 00:05+00');
SELECT * FROM lines;
SELECT l ->> 'description' AS line, l ->> 'units' AS units, l -> 'details' ->> 'per_unit_amount' AS per_unit
FROM billing.invoices i, jsonb_array_elements(billing.invoice_document(i.id) -> 'lines') l
WHERE i.billing_at = '2026-05-01 00:00+00' AND l ->> 'fee_type' = 'fixed_charge';

-- An add-on's taxes reach its fixed charge fees even when nothing else is taxed: VAT 20%
-- on seats. June: base 20.00 (untaxed) + 5 seats 50.00 (VAT 10.00) + support in advance
-- for July, 3 units, 240.00 (untaxed): 310.00 + 10.00.
SELECT code FROM billing.create_tax('vat', 'VAT', 20);
SELECT billing.set_taxes('add_on', 'seat', '{vat}');
SELECT fees_amount, taxes_amount, total_amount FROM billing.bill_subscription('s1', '2026-06-01 00:05+00');

-- Errors: nothing is written.
SELECT billing.add_fixed_charge('nope', 'seat', 'standard', '{"amount": "1"}');
SELECT billing.add_fixed_charge('team', 'nope', 'standard', '{"amount": "1"}');
SELECT billing.add_fixed_charge('team', 'seat', 'package', '{"amount": "1", "package_size": 10}');
SELECT billing.add_fixed_charge('team', 'usd-seat', 'standard', '{"amount": "1"}');
SELECT billing.add_fixed_charge('team', 'seat', 'standard', '{"amount": "1"}');
SELECT billing.add_fixed_charge('team', 'seat', 'standard', '{"amount": "x"}');
SELECT billing.set_fixed_charge_units('s1', 'nope', 1);
SELECT billing.set_fixed_charge_units('s1', 'seat', -1, '2026-05-01 00:00+00');
SELECT count(*) AS fixed_charges, (SELECT count(*) FROM billing.subscription_fixed_charge_units) AS unit_changes FROM billing.fixed_charges;

-- The invariant of every finalized invoice (tests/pg_regress/invariant.sql).
\i tests/pg_regress/invariant.sql
