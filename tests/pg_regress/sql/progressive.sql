-- Progressive billing, worked out by hand in the comments: a fixed and a recurring usage
-- threshold crossed by the lifetime usage amount, each level once, progressive-billing
-- invoices for the open period's usage less what earlier ones billed, and the period's
-- invoice deducting them before tax.
SET client_min_messages = warning;
DROP EXTENSION pg_billing CASCADE;
CREATE EXTENSION pg_billing;
SET TIME ZONE 'UTC';
SET datestyle = 'ISO, YMD';
\set SHOW_CONTEXT never

SELECT code FROM billing.create_billable_metric('calls', 'API calls', 'count');
SELECT code FROM billing.create_tax('vat', 'VAT', 20);
SELECT billing.set_taxes('billing_entity', 'default', '{vat}');
-- Plan prog: no base fee, calls at 1.00; thresholds 10.00 (fixed) and every 15.00 more
-- (recurring).
SELECT version FROM billing.create_plan('prog', 'Prog', 'monthly', 0, 'EUR',
  '[{"billable_metric_code": "calls", "charge_model": "standard", "properties": {"amount": "1"}}]');
SELECT billing.set_usage_thresholds('prog', '[{"amount": "10", "name": "first 10"}, {"amount": "15", "recurring": true}]');
SELECT external_id FROM billing.create_customer('p1', 'P1', 'EUR', 'UTC');
SELECT status FROM billing.create_subscription('s1', 'p1', 'prog', '2026-03-01 00:00+00');

CREATE FUNCTION pg_temp.calls(n integer, ts timestamptz) RETURNS bigint LANGUAGE sql AS $$
  SELECT count(*) FROM billing.ingest_events((SELECT jsonb_agg(jsonb_build_object('external_subscription_id', 's1', 'code', 'calls',
    'transaction_id', ts || '-' || i, 'timestamp', ts)) FROM generate_series(1, n) i))
$$;
CREATE TEMP VIEW invoiced AS
SELECT i.billing_at, i.invoice_type, i.fees_amount, i.progressive_billing_credit_amount AS progressive, i.taxes_amount, i.total_amount
FROM billing.invoices i ORDER BY i.billing_at, i.id;

-- March 5: 12 calls. Run on March 6: lifetime 12.00 crosses 10 (fixed): a progressive
-- invoice of 12.00, VAT 2.40, 14.40.
SELECT pg_temp.calls(12, '2026-03-05 10:00+00');
SELECT invoice_type, fees_amount, taxes_amount, total_amount FROM billing.bill_subscription('s1', '2026-03-06 00:00+00');
-- March 10: 20 more. Run on March 11: lifetime 32.00 crosses 10 + 15 = 25 (recurring): 32.00
-- less the 12.00 billed = 20.00, VAT 4.00, 24.00.
SELECT pg_temp.calls(20, '2026-03-10 10:00+00');
SELECT invoice_type, fees_amount, taxes_amount, total_amount FROM billing.bill_subscription('s1', '2026-03-11 00:00+00');
-- March 20: 3 more. Run on March 21: lifetime 35.00 crosses nothing new (next level 40).
SELECT pg_temp.calls(3, '2026-03-20 10:00+00');
SELECT count(*) AS invoices FROM billing.bill_subscription('s1', '2026-03-21 00:00+00');
-- April 1: March's invoice bills 35 calls, 35.00, less the 32.00 of the progressive invoices:
-- 3.00, VAT 0.60, 3.60. Altogether 14.40 + 24.00 + 3.60 = 42.00 = 35.00 + 20%.
SELECT invoice_type, fees_amount, progressive_billing_credit_amount, sub_total_excluding_taxes, taxes_amount, total_amount
FROM billing.bill_subscription('s1', '2026-04-01 00:05+00');
-- April 2: 10 calls. Run on April 3: lifetime = 35.00 invoiced + 10.00 = 45.00 crosses
-- 10 + 2 × 15 = 40: a progressive invoice of April's 10.00, VAT 2.00, 12.00. May 1: April's
-- invoice, 10.00 less 10.00: 0.00.
SELECT pg_temp.calls(10, '2026-04-02 10:00+00');
SELECT invoice_type, total_amount FROM billing.bill_subscription('s1', '2026-04-03 00:00+00');
SELECT invoice_type, fees_amount, progressive_billing_credit_amount, total_amount FROM billing.bill_subscription('s1', '2026-05-01 00:05+00');

SELECT * FROM invoiced;
SELECT recurring, level, lifetime_usage_amount FROM billing.applied_usage_thresholds ORDER BY level;
SELECT l ->> 'amount' AS amount, l ->> 'progressive_credit_amount' AS progressive_credit,
       billing.invoice_document(i.id) #>> '{totals,progressive_billing_credit_amount}' AS invoice_credit
FROM billing.invoices i, jsonb_array_elements(billing.invoice_document(i.id) -> 'lines') l
WHERE i.invoice_type = 'subscription' AND i.billing_at = '2026-04-01 00:00+00';

-- With a grace period: p2 (entity grace, 3 days) has a termination scheduled for June 30,
-- 2027: it bills until then. 12 calls on March 5: the run of March 6 issues a progressive
-- draft of 12.00 + 2.40. April 1 bills March: 12.00 less the 12.00 of the draft, 0.00.
-- Refreshed and finalized, the period's invoice first, the progressive one keeps its 12.00.
SELECT code FROM billing.create_billing_entity('grace', 'Grace Ltd', 'EUR', 'UTC', 'GR', grace_period_days => 3);
SELECT billing.set_taxes('billing_entity', 'grace', '{vat}');
SELECT external_id FROM billing.create_customer('p2', 'P2', 'EUR', 'UTC', billing_entity => 'grace');
SELECT status FROM billing.create_subscription('s2', 'p2', 'prog', '2026-03-01 00:00+00');
SELECT status FROM billing.terminate_subscription('s2', '2027-06-30 00:00+00');
SELECT count(*) FROM billing.ingest_events((SELECT jsonb_agg(jsonb_build_object('external_subscription_id', 's2', 'code', 'calls',
  'transaction_id', 's2-' || i, 'timestamp', '2026-03-05T10:00:00Z')) FROM generate_series(1, 12) i));
SELECT invoice_type, status, total_amount FROM billing.bill_subscription('s2', '2026-03-06 00:00+00');
SELECT invoice_type, status, fees_amount, progressive_billing_credit_amount, total_amount FROM billing.bill_subscription('s2', '2026-04-01 00:05+00');
SELECT invoice_type, status, fees_amount, progressive_billing_credit_amount, total_amount FROM billing.finalize_invoice(
  (SELECT i.id FROM billing.invoices i JOIN billing.customers c ON c.id = i.customer_id WHERE c.external_id = 'p2' AND i.invoice_type = 'subscription'));
SELECT invoice_type, status, fees_amount, total_amount FROM billing.finalize_invoice(
  (SELECT i.id FROM billing.invoices i JOIN billing.customers c ON c.id = i.customer_id WHERE c.external_id = 'p2' AND i.invoice_type = 'progressive_billing'));
-- A threshold crossed by usage already on the period's invoice bills nothing: no empty
-- invoice, the level is crossed all the same. p3: 22 calls on March 31, billed on April 1
-- (22.00); the run's check at April 1 00:05 finds lifetime 22.00 and nothing to bill.
SELECT external_id FROM billing.create_customer('p3', 'P3', 'EUR', 'UTC');
SELECT status FROM billing.create_subscription('s3', 'p3', 'prog', '2026-03-01 00:00+00');
SELECT count(*) FROM billing.ingest_events((SELECT jsonb_agg(jsonb_build_object('external_subscription_id', 's3', 'code', 'calls',
  'transaction_id', 's3-' || i, 'timestamp', '2026-03-31T10:00:00Z')) FROM generate_series(1, 22) i));
SELECT invoice_type, total_amount FROM billing.bill_subscription('s3', '2026-04-01 00:05+00');
SELECT recurring, level, invoice_id IS NULL AS without_invoice FROM billing.applied_usage_thresholds
WHERE subscription_id = (SELECT subscription_id FROM billing.subscription_directory WHERE external_id = 's3') ORDER BY level;

-- Errors: nothing is written.
SELECT billing.set_usage_thresholds('nope', '[]');
SELECT billing.set_usage_thresholds('prog', '{"amount": 10}');
SELECT billing.set_usage_thresholds('prog', '[{"amount": "-1"}]');
SELECT billing.set_usage_thresholds('prog', '[{"amount": "10.001"}]');
SELECT billing.set_usage_thresholds('prog', '[{"amount": "10", "recurring": "yes"}]');
SELECT billing.set_usage_thresholds('prog', '[{"amount": "10", "recurring": true}, {"amount": "20", "recurring": true}]');
SELECT count(*) AS thresholds FROM billing.usage_thresholds;
-- Replacing the thresholds keeps the levels crossed: 10 (fixed) is not crossed again.
SELECT billing.set_usage_thresholds('prog', '[{"amount": "10"}, {"amount": "100", "recurring": true}]');
SELECT count(*) AS invoices FROM billing.bill_subscription('s1', '2026-05-03 00:00+00');

-- The invariant of every finalized invoice (tests/pg_regress/invariant.sql).
\i tests/pg_regress/invariant.sql
