-- billing.preview_invoice: the invoice a subscription would get at the end of its period,
-- from the usage so far, worked out by hand in the comments; equal to the invoice the run
-- creates later; under another plan (what-if); writing nothing.
SET client_min_messages = warning;
DROP EXTENSION pg_billing CASCADE;
CREATE EXTENSION pg_billing;
SET TIME ZONE 'UTC';
SET datestyle = 'ISO, YMD';
\set SHOW_CONTEXT never

SELECT code FROM billing.create_billable_metric('calls', 'API calls', 'count');
SELECT code FROM billing.create_tax('vat', 'VAT', 20);
SELECT billing.set_taxes('billing_entity', 'default', '{vat}');
-- starter: 20.00 a month, calls in graduated tiers (100 free, then 0.05); pro: 50.00 a
-- month, calls at 0.01.
SELECT version FROM billing.create_plan('starter', 'Starter', 'monthly', 20, 'EUR', '[{"billable_metric_code": "calls",
  "charge_model": "graduated", "properties": {"graduated_ranges": [
    {"from_value": 0, "to_value": 100, "per_unit_amount": "0", "flat_amount": "0"},
    {"from_value": 101, "to_value": null, "per_unit_amount": "0.05", "flat_amount": "0"}]}}]');
SELECT version FROM billing.create_plan('pro', 'Pro', 'monthly', 50, 'EUR',
  '[{"billable_metric_code": "calls", "charge_model": "standard", "properties": {"amount": "0.01"}}]');
SELECT version FROM billing.create_plan('pro-usd', 'Pro USD', 'monthly', 50, 'USD');
SELECT external_id FROM billing.create_customer('acme', 'Acme', 'EUR', 'UTC');
SELECT status FROM billing.create_subscription('acme-main', 'acme', 'starter', '2026-03-01 00:00+00');
SELECT code FROM billing.create_coupon('five', '5 off', 'fixed_amount', amount => 5, currency => 'EUR');
SELECT status FROM billing.apply_coupon('acme', 'five');
SELECT count(*) FROM billing.ingest_events((SELECT jsonb_agg(jsonb_build_object('external_subscription_id', 'acme-main', 'code', 'calls',
  'transaction_id', 'c-' || n, 'timestamp', '2026-03-10T10:00:00Z')) FROM generate_series(1, 300) n));

-- What the database holds before the previews.
CREATE TEMP TABLE held AS
SELECT (SELECT count(*) FROM billing.invoices) AS invoices, (SELECT count(*) FROM billing.fees) AS fees,
       (SELECT count(*) FROM billing.fee_taxes) AS fee_taxes, (SELECT count(*) FROM billing.outbox) AS outbox,
       (SELECT count(*) FROM billing.invoice_sequences) AS sequences,
       (SELECT string_agg(a.status || ' ' || coalesce(a.amount_remaining::text, ''), ',') FROM billing.applied_coupons a) AS coupons,
       (SELECT string_agg(s.plan_version_id::text, ',') FROM billing.subscriptions s) AS plans;

-- 1. March on starter, as of March 20: base 20.00; 300 calls: tier 2 has 300 − 101 + 1 =
--    200 units × 0.05 = 10.00. Fees 30.00; coupon 5.00; VAT 20% of 25.00 = 5.00; total 30.00.
SELECT billing.preview_invoice('acme-main', '2026-03-20 12:00+00') #>> '{subscription,plan_code}' AS plan,
       billing.preview_invoice('acme-main', '2026-03-20 12:00+00') -> 'totals' AS totals;
SELECT l ->> 'description' AS line, l ->> 'amount' AS amount
FROM jsonb_array_elements(billing.preview_invoice('acme-main', '2026-03-20 12:00+00') -> 'lines') l;

-- 2. What if acme were on pro: base 50.00; 300 calls × 0.01 = 3.00. Fees 53.00; coupon
--    5.00; VAT 20% of 48.00 = 9.60; total 57.60. Usage is re-rated, the subscription stays.
SELECT billing.preview_invoice('acme-main', '2026-03-20 12:00+00', plan => 'pro') -> 'totals' AS what_if_pro;

-- Nothing was written: no invoice, fee, tax, outbox event or number; the coupon is unused,
-- the subscription on its plan.
SELECT (SELECT count(*) FROM billing.invoices) AS invoices, (SELECT count(*) FROM billing.fees) AS fees,
       (SELECT count(*) FROM billing.fee_taxes) AS fee_taxes, (SELECT count(*) FROM billing.outbox) AS outbox,
       (SELECT count(*) FROM billing.invoice_sequences) AS sequences,
       (SELECT string_agg(a.status || ' ' || coalesce(a.amount_remaining::text, ''), ',') FROM billing.applied_coupons a) AS coupons,
       (SELECT string_agg(s.plan_version_id::text, ',') FROM billing.subscriptions s) AS plans
EXCEPT SELECT * FROM held;

-- 3. The preview equals the invoice the run creates at the period's end, but for what only a
--    real invoice has (id, number, status, payment status, finalization time).
CREATE TEMP TABLE previewed AS SELECT billing.preview_invoice('acme-main', '2026-03-31 23:00+00') AS document;
SELECT status, number, fees_amount, coupons_amount, taxes_amount, total_amount FROM billing.bill_subscription('acme-main', '2026-04-01 00:05+00');
SELECT (billing.invoice_document(i.id) - ARRAY['id', 'number', 'status', 'payment_status', 'finalized_at'])
       = (p.document - 'status') AS preview_equals_invoice
FROM billing.invoices i, previewed p;

-- 4. billing.verify_invoice recomputes that invoice from the raw events: one usage line
--    checked, none drifting, totals consistent; billing_bi.invoices_to_verify lists it until
--    then. Then a superuser moves one March call into April behind the rollups' back: the
--    raw events now count 299 calls (9.95) where 300 (10.00) were billed.
SELECT invoice_id, verification FROM billing_bi.invoices_to_verify;
SELECT r -> 'lines_checked' AS lines_checked, r -> 'drifting_lines' AS drifting_lines, r -> 'totals_consistent' AS totals_consistent
FROM billing.invoices i, billing.verify_invoice(i.id) r;
SELECT count(*) AS to_verify FROM billing_bi.invoices_to_verify;
UPDATE billing.events SET "timestamp" = '2026-04-02 10:00+00', local_day = '2026-04-02' WHERE transaction_id = 'c-1';
SELECT jsonb_pretty(r -> 'drifting_lines') AS drifting_lines, r -> 'totals_consistent' AS totals_consistent
FROM billing.invoices i, billing.verify_invoice(i.id) r;
SELECT invoice_id, verification, drifting_lines, totals_consistent FROM billing_bi.invoices_to_verify;
UPDATE billing.events SET "timestamp" = '2026-03-10 10:00+00', local_day = '2026-03-10' WHERE transaction_id = 'c-1';
-- An unknown invoice.
SELECT billing.verify_invoice(-1);

-- 5. A draft due before is finalized first in a preview, as the run would: it takes the
--    coupon. Entity grace keeps drafts 3 days; beta (starter, 20.00 a month, no calls) has
--    five (5.00 once). March is a draft (20.00 + VAT 4.00 = 24.00, no coupon yet); the
--    preview of April shows no coupon (March takes it): 24.00.
SELECT code FROM billing.create_billing_entity('grace', 'Grace Ltd', 'EUR', 'UTC', 'GR', grace_period_days => 3);
SELECT billing.set_taxes('billing_entity', 'grace', '{vat}');
SELECT external_id FROM billing.create_customer('beta', 'Beta', 'EUR', 'UTC', billing_entity => 'grace');
SELECT status FROM billing.create_subscription('beta-main', 'beta', 'starter', '2026-03-01 00:00+00');
SELECT status FROM billing.apply_coupon('beta', 'five');
SELECT status, coupons_amount, total_amount FROM billing.bill_subscription('beta-main', '2026-04-01 00:05+00');
SELECT billing.preview_invoice('beta-main', '2026-04-10 00:00+00') #> '{totals,coupons_amount}' AS april_coupons,
       billing.preview_invoice('beta-main', '2026-04-10 00:00+00') #> '{totals,total_amount}' AS april_total;
-- A terminated subscription with late usage previews the invoice the run will make of it.
SELECT status FROM billing.terminate_subscription('beta-main', '2026-04-15 00:00+00');
SELECT billing.ingest_event('beta-main', 'calls', 'late-1', '2026-04-02 10:00+00');
SELECT billing.preview_invoice('beta-main', '2026-04-20 00:00+00') #> '{totals,fees_amount}' AS late_usage_fees,
       billing.preview_invoice('beta-main', '2026-04-20 00:00+00') #>> '{lines,0,fee_type}' AS line;
-- The run bills it: the March draft first, then the late usage on an invoice of its own.
SELECT count(*) FROM (SELECT billing.finalize_invoice(i.id) FROM billing.invoices i WHERE i.status = 'draft') f;
SELECT billing_at, fees_amount FROM billing.bill_subscription('beta-main', '2026-04-20 00:00+00');
SELECT f.fee_type, f.events_count, f.amount FROM billing.fees f JOIN billing.invoices i ON i.customer_id = f.customer_id AND i.id = f.invoice_id
WHERE i.billing_at = '2026-04-20 00:00+00';

-- 6. Nothing left to invoice: a subscription terminated and billed previews NULL; errors.
SELECT status FROM billing.terminate_subscription('acme-main', '2026-04-10 00:00+00');
SELECT count(*) FROM billing.bill_subscription('acme-main', '2026-04-10 00:05+00');
SELECT billing.preview_invoice('acme-main', '2026-04-20 00:00+00') IS NULL AS nothing_to_invoice;
SELECT billing.preview_invoice('nope');
SELECT billing.preview_invoice('acme-main', plan => 'nope');
SELECT billing.preview_invoice('acme-main', plan => 'pro-usd');
SELECT billing.preview_invoice('acme-main', 'infinity');

-- The invariant of every finalized invoice (tests/pg_regress/invariant.sql).
\i tests/pg_regress/invariant.sql
