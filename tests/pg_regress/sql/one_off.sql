-- Add-ons and one-off invoices, worked out by hand in the comments: add-on defaults, item
-- taxes before add-on taxes before the billing entity's, one rounding per tax, finalized at
-- once without coupons; the errors, which write nothing.
SET client_min_messages = warning;
DROP EXTENSION pg_billing CASCADE;
CREATE EXTENSION pg_billing;
SET TIME ZONE 'UTC';
SET datestyle = 'ISO, YMD';
\set SHOW_CONTEXT never

SELECT code FROM billing.create_tax('vat', 'VAT', 20);
SELECT code FROM billing.create_tax('reduced', 'Reduced VAT', 5.5);
SELECT billing.set_taxes('billing_entity', 'default', '{vat}');
SELECT code, name, amount, currency FROM billing.create_add_on('setup', 'Setup fee', 500, 'EUR', 'One-time onboarding');
SELECT code, amount FROM billing.create_add_on('training', 'Training day', 150, 'EUR');
SELECT code, amount, currency FROM billing.create_add_on('usd-kit', 'Starter kit', 20, 'USD');
SELECT billing.set_taxes('add_on', 'setup', '{reduced}');
SELECT external_id FROM billing.create_customer('acme', 'Acme', 'EUR', 'UTC');
SELECT code FROM billing.create_coupon('ten', '10% off', 'percentage', percentage_rate => 10, frequency => 'forever');
SELECT status FROM billing.apply_coupon('acme', 'ten');

-- Setup fee 500.00 (its add-on's taxes: reduced 5.5% → 27.50); 3 training days × 150.00 =
-- 450.00 (no item or add-on taxes: the entity's VAT 20% → 90.00); a custom report 99.99
-- with its own taxes VAT and reduced (19.998 and 5.49945); a goodwill line at 0, untaxed.
-- VAT: 90.00 + 19.998 = 109.998 → 110.00; reduced: 27.50 + 5.49945 = 32.99945 → 33.00.
-- Fees 1,049.99; taxes 143.00; total 1,192.99; no coupon (subscription invoices only).
SELECT invoice_type, status, number, fees_amount, coupons_amount, taxes_amount, total_amount
FROM billing.create_one_off_invoice('acme', '[
  {"add_on_code": "setup"},
  {"add_on_code": "training", "units": 3},
  {"description": "Custom report", "unit_amount": "99.99", "tax_codes": ["vat", "reduced"]},
  {"description": "Goodwill", "unit_amount": "0", "tax_codes": []}]');
SELECT f.fee_type, f.description, f.units, f.precise_unit_amount, f.amount, a.code AS add_on,
       string_agg(ft.tax_code || ' ' || ft.precise_amount, ', ' ORDER BY ft.tax_code) AS taxes
FROM billing.fees f LEFT JOIN billing.add_ons a ON a.id = f.add_on_id
LEFT JOIN billing.fee_taxes ft ON ft.customer_id = f.customer_id AND ft.fee_id = f.id
GROUP BY f.id, f.fee_type, f.description, f.units, f.precise_unit_amount, f.amount, a.code ORDER BY f.id;
SELECT t ->> 'code' AS code, t ->> 'base_amount' AS base_amount, t ->> 'amount' AS amount
FROM billing.invoices i, jsonb_array_elements(billing.invoice_document(i.id) -> 'taxes') t;
SELECT type, payload ->> 'status' AS status, payload ->> 'total_amount' AS total FROM billing.outbox ORDER BY id;
SELECT invoice_type, plan_code, total_amount FROM billing_bi.invoices;

-- Errors: nothing is written by any of them.
SELECT billing.create_one_off_invoice('nobody', '[{"add_on_code": "setup"}]');
SELECT billing.create_one_off_invoice('acme', '{"add_on_code": "setup"}');
SELECT billing.create_one_off_invoice('acme', '[]');
SELECT billing.create_one_off_invoice('acme', '[1]');
SELECT billing.create_one_off_invoice('acme', '[{"add_on_code": "nope"}]');
SELECT billing.create_one_off_invoice('acme', '[{"add_on_code": "usd-kit"}]');
SELECT billing.create_one_off_invoice('acme', '[{"add_on_code": "setup", "units": 0}]');
SELECT billing.create_one_off_invoice('acme', '[{"add_on_code": "setup", "units": "NaN"}]');
SELECT billing.create_one_off_invoice('acme', '[{"description": "x", "unit_amount": "abc"}]');
SELECT billing.create_one_off_invoice('acme', '[{"unit_amount": "10"}]');
SELECT billing.create_one_off_invoice('acme', '[{"description": "x"}]');
SELECT billing.create_one_off_invoice('acme', '[{"add_on_code": "setup"}, {"description": "x", "unit_amount": "1", "tax_codes": ["nope"]}]');
SELECT billing.create_one_off_invoice('acme', '[{"description": "x", "unit_amount": "1", "tax_codes": "vat"}]');
SELECT billing.create_one_off_invoice('acme', '[{"add_on_code": null}]');
SELECT billing.create_one_off_invoice('acme', '[{"description": "x", "unit_amount": "1e400000"}]');
SELECT billing.create_add_on('bad', 'Bad', 1, NULL);
SELECT billing.create_add_on('bad', 'Bad', 1.234, 'EUR');
SELECT billing.create_add_on('', 'Bad', 1, 'EUR');
SELECT billing.set_taxes('add_on', 'nope', '{vat}');
SELECT count(*) AS invoices, (SELECT count(*) FROM billing.fees) AS fees, (SELECT count(*) FROM billing.add_ons) AS add_ons FROM billing.invoices;

-- The invariant of every finalized invoice (tests/pg_regress/invariant.sql).
\i tests/pg_regress/invariant.sql
