-- Coupons on whole invoices, each worked out by hand from pricing.md (Invoice arithmetic,
-- step 3) in the comment above it: percentage and fixed, once (with a carried remainder),
-- recurring and forever, the order metric-limited / plan-limited / the rest, the pro rata
-- spread that taxes then leave out, drafts without coupons until finalized, the errors.
-- Every customer is billed by entity acme, whose default tax is 10%.
SET client_min_messages = warning;
DROP EXTENSION pg_billing CASCADE;
CREATE EXTENSION pg_billing;
SET TIME ZONE 'UTC';
SET datestyle = 'ISO, YMD';
\set SHOW_CONTEXT never

SELECT code FROM billing.create_billable_metric('calls', 'API calls', 'count');
SELECT code FROM billing.create_billable_metric('gb', 'Storage', 'sum', 'gb');
SELECT code FROM billing.create_tax('ent', 'Entity tax', 10);
SELECT code FROM billing.create_billing_entity('acme', 'Acme SAS', 'EUR', 'UTC', 'ACME');
SELECT billing.set_taxes('billing_entity', 'acme', '{ent}');
-- Plan flat: 10.00 a month in arrears, calls at 0.35 each, storage at 1 per GB.
SELECT version FROM billing.create_plan('flat', 'Flat', 'monthly', 10, 'EUR',
  '[{"billable_metric_code": "calls", "charge_model": "standard", "properties": {"amount": "0.35"}},
    {"billable_metric_code": "gb", "charge_model": "standard", "properties": {"amount": "1"}}]');
SELECT version FROM billing.create_plan('other', 'Other', 'monthly', 10, 'EUR');

CREATE TEMP VIEW totals AS
SELECT c.external_id AS customer, i.billing_at::date AS billed, i.status, i.fees_amount, i.coupons_amount,
       i.sub_total_excluding_taxes, i.taxes_amount, i.total_amount
FROM billing.invoices i JOIN billing.customers c ON c.id = i.customer_id
ORDER BY c.external_id, i.billing_at;
CREATE TEMP VIEW shares AS
SELECT c.external_id AS customer, i.billing_at::date AS billed, f.fee_type, f.billable_metric_code AS metric, f.amount, f.precise_coupons_amount
FROM billing.fees f JOIN billing.invoices i ON i.customer_id = f.customer_id AND i.id = f.invoice_id
JOIN billing.customers c ON c.id = f.customer_id
WHERE f.invoiceable
ORDER BY c.external_id, i.billing_at, f.fee_type, f.billable_metric_code NULLS FIRST;
CREATE TEMP VIEW coupons_left AS
SELECT c.external_id AS customer, co.code, a.status, a.amount_remaining, a.frequency_duration_remaining
FROM billing.applied_coupons a JOIN billing.customers c ON c.id = a.customer_id JOIN billing.coupons co ON co.id = a.coupon_id
ORDER BY c.external_id, a.id;

-- A customer on plan flat from March 2026 with 7 calls in March.
CREATE FUNCTION pg_temp.customer_with_calls(name text, plan text DEFAULT 'flat', entity text DEFAULT 'acme') RETURNS text
LANGUAGE plpgsql AS $$
BEGIN
  PERFORM billing.create_customer(name, name, 'EUR', 'UTC', billing_entity => entity);
  PERFORM billing.create_subscription('sub-' || name, name, plan, '2026-03-01 00:00+00');
  PERFORM billing.ingest_events((SELECT jsonb_agg(jsonb_build_object('external_subscription_id', 'sub-' || name, 'code', 'calls',
                                  'transaction_id', name || '-' || i, 'timestamp', '2026-03-10T10:00:00Z')) FROM generate_series(1, 7) i));
  RETURN name;
END $$;

SELECT code, coupon_type, percentage_rate, frequency FROM billing.create_coupon('welcome', 'Welcome 10%', 'percentage', percentage_rate => 10);
SELECT code, amount, currency FROM billing.create_coupon('fifteen', '15 off', 'fixed_amount', amount => 15, currency => 'EUR');
SELECT code, frequency, frequency_duration FROM billing.create_coupon('five-twice', '5 off twice', 'fixed_amount', amount => 5, currency => 'EUR',
                                                                      frequency => 'recurring', frequency_duration => 2);
SELECT code FROM billing.create_coupon('all5', '5 off everything', 'fixed_amount', amount => 5, currency => 'EUR', frequency => 'forever');
SELECT code FROM billing.create_coupon('flat20', '20% on Flat', 'percentage', percentage_rate => 20, frequency => 'forever', plans => '{flat}');
SELECT code FROM billing.create_coupon('calls1', '1 off calls', 'fixed_amount', amount => 1, currency => 'EUR', frequency => 'forever',
                                       billable_metrics => '{calls}');
SELECT code FROM billing.create_coupon('other50', '50% on Other', 'percentage', percentage_rate => 50, plans => '{other}');

-- 1. Once, 10%. March: fees 10.00 + 7 × 0.35 = 12.45; coupon round(1.245) = 1.25, spread
--    10.00 × 1.25 / 12.45 = 1.004016 → 1.00402 and 2.45 × 1.25 / 12.45 = 0.245984 → 0.24598.
--    Tax 10% on 8.99598 + 2.20402 = 11.20 → 1.12. Total 11.20 + 1.12 = 12.32. Used up.
--    April: 10.00, tax 1.00, total 11.00.
SELECT pg_temp.customer_with_calls('p1');
SELECT code, status FROM billing.apply_coupon('p1', 'welcome') JOIN billing.coupons ON coupons.id = coupon_id;
SELECT status, coupons_amount, total_amount FROM billing.bill_subscription('sub-p1', '2026-05-01 00:05+00');

-- 2. Once, fixed 15.00 with a remainder. March: 12.45 taken whole (remainder 2.55), no tax,
--    total 0.00. April: 10.00 − 2.55 = 7.45, tax 0.745 → 0.75, total 8.20. Used up.
SELECT pg_temp.customer_with_calls('f2');
SELECT amount, amount_remaining FROM billing.apply_coupon('f2', 'fifteen');
SELECT status, coupons_amount, total_amount FROM billing.bill_subscription('sub-f2', '2026-05-01 00:05+00');

-- 3. Recurring, 5.00 for two invoices. March: 12.45 − 5 = 7.45, tax 0.75, total 8.20.
--    April: 10.00 − 5 = 5.00, tax 0.50, total 5.50. May: 10.00, tax 1.00, total 11.00.
SELECT pg_temp.customer_with_calls('r3');
SELECT frequency_duration_remaining FROM billing.apply_coupon('r3', 'five-twice');
SELECT status, coupons_amount, total_amount FROM billing.bill_subscription('sub-r3', '2026-06-01 00:05+00');

-- 4. Metric-limited first, then plan-limited, then the rest, whatever the order applied.
--    all5, flat20 and calls1 applied in that order; March fees: base 10.00, calls 2.45.
--    calls1: base 2.45 → 1.00, all on calls (left: base 10.00, calls 1.45).
--    flat20: base 11.45 → round(2.29) = 2.29: 10.00 × 2.29 / 11.45 = 2.00000, 1.45 × 2.29 /
--    11.45 = 0.29000 (left 8.00 and 1.16).
--    all5: base 9.16 → 5.00: 8.00 × 5 / 9.16 = 4.366812 → 4.36681, 1.16 × 5 / 9.16 =
--    0.633188 → 0.63319 (left 3.63319 and 0.52681).
--    Coupons 8.29; shares: base 6.36681, calls 1.92319. Sub-total 4.16, tax 0.416 → 0.42,
--    total 4.58. other50 (limited to plan other) covers nothing and stays active.
SELECT pg_temp.customer_with_calls('o4');
SELECT count(*) FROM (SELECT billing.apply_coupon('o4', c) FROM unnest(ARRAY['all5', 'flat20', 'calls1', 'other50']) c) applied;
SELECT status, coupons_amount, total_amount FROM billing.bill_subscription('sub-o4', '2026-04-01 00:05+00');
SELECT c ->> 'code' AS code, c ->> 'amount' AS amount
FROM billing.invoices i JOIN billing.customers cu ON cu.id = i.customer_id,
     jsonb_array_elements(billing.invoice_document(i.id) -> 'coupons') c
WHERE cu.external_id = 'o4';

-- 5. A draft shows no coupon until it is finalized. Entity grace keeps drafts 5 days;
--    d5 has welcome (10%). The draft: 12.45, tax 1.25, total 13.70; finalized: as case 1.
SELECT code FROM billing.create_billing_entity('grace', 'Grace Ltd', 'EUR', 'UTC', 'GRC', grace_period_days => 5);
SELECT billing.set_taxes('billing_entity', 'grace', '{ent}');
SELECT pg_temp.customer_with_calls('d5', entity => 'grace');
SELECT count(*) FROM billing.apply_coupon('d5', 'welcome');
SELECT status, coupons_amount, taxes_amount, total_amount FROM billing.bill_subscription('sub-d5', '2026-04-01 00:05+00');
SELECT status, coupons_amount, taxes_amount, total_amount FROM billing.finalize_invoice(
  (SELECT i.id FROM billing.invoices i JOIN billing.customers c ON c.id = i.customer_id WHERE c.external_id = 'd5'));

SELECT * FROM totals;
SELECT * FROM shares WHERE customer IN ('p1', 'o4');
SELECT * FROM coupons_left;
-- Every fee's share is at most the fee, and each invoice's shares add up to its coupons
-- within the 5-decimal spread.
SELECT bool_and(f.precise_coupons_amount BETWEEN 0 AND greatest(f.amount, 0)) AS shares_within_fees FROM billing.fees f;
SELECT i.id, i.coupons_amount, sum(f.precise_coupons_amount) AS spread
FROM billing.invoices i JOIN billing.fees f ON f.customer_id = i.customer_id AND f.invoice_id = i.id
GROUP BY i.id, i.coupons_amount HAVING abs(i.coupons_amount - sum(f.precise_coupons_amount)) > 0.0001;

-- 6. No coupon takes an invoice below zero, whatever its negative fees. n6: March 15 GB →
--    10.00 + 15.00, tax 2.50, 27.50. A late March event of −8 GB: April is 10.00 and an
--    adjustment of −8.00 = 2.00. A once coupon of 15.00 takes 2.00 (all on the base fee, the
--    only fee with something left), 13.00 stays; tax 10% of 8.00 − 8.00 = 0; total 0.00.
SELECT external_id FROM billing.create_customer('n6', 'n6', 'EUR', 'UTC', billing_entity => 'acme');
SELECT status FROM billing.create_subscription('sub-n6', 'n6', 'flat', '2026-03-01 00:00+00');
SELECT billing.ingest_event('sub-n6', 'gb', 'n6-1', '2026-03-05 10:00+00', '{"gb": 15}');
SELECT total_amount FROM billing.bill_subscription('sub-n6', '2026-04-01 00:05+00');
SELECT billing.ingest_event('sub-n6', 'gb', 'n6-2', '2026-03-20 10:00+00', '{"gb": -8}');
SELECT code FROM billing.create_coupon('big15', '15 off', 'fixed_amount', amount => 15, currency => 'EUR');
SELECT amount_remaining FROM billing.apply_coupon('n6', 'big15');
SELECT fees_amount, coupons_amount, taxes_amount, total_amount FROM billing.bill_subscription('sub-n6', '2026-05-01 00:05+00');
SELECT amount_remaining, status FROM billing.applied_coupons WHERE customer_id = (SELECT id FROM billing.customers WHERE external_id = 'n6');

-- 7. A recurring coupon counts billing periods: two subscriptions billed the same day use one.
--    t7 has two subscriptions of flat (10.00 each) and 5 off for 2 periods: March takes 5.00
--    off each invoice and one period; April the same and the second; May nothing (it ends).
SELECT external_id FROM billing.create_customer('t7', 't7', 'EUR', 'UTC', billing_entity => 'acme');
SELECT count(*) FROM (SELECT billing.create_subscription('sub-t7-' || n, 't7', 'flat', '2026-03-01 00:00+00') FROM generate_series(1, 2) n) s;
SELECT frequency_duration_remaining FROM billing.apply_coupon('t7', 'five-twice');
SELECT m.billed, count(*) AS invoices FROM unnest(ARRAY['2026-04-01 00:05+00', '2026-05-01 00:05+00', '2026-06-01 00:05+00']::timestamptz[]) m(billed),
     LATERAL (SELECT billing.bill_subscription('sub-t7-' || n, m.billed) FROM generate_series(1, 2) n) b
GROUP BY m.billed ORDER BY m.billed;
SELECT billed, count(*) AS invoices, sum(coupons_amount) AS coupons FROM totals WHERE customer = 't7' GROUP BY billed ORDER BY billed;
SELECT status, frequency_duration_remaining FROM billing.applied_coupons WHERE customer_id = (SELECT id FROM billing.customers WHERE external_id = 't7');

-- Terminating, and the errors (none of which writes anything).
SELECT status FROM billing.terminate_coupon('o4', 'other50');
SELECT billing.terminate_coupon('o4', 'other50');
SELECT billing.apply_coupon('o4', 'all5');
SELECT billing.apply_coupon('nobody', 'all5');
SELECT billing.apply_coupon('o4', 'nope');
SELECT billing.apply_coupon('o4', 'welcome', amount => 3);
SELECT code FROM billing.create_coupon('old', 'Expired', 'percentage', percentage_rate => 5, expires_at => '2020-01-01 00:00+00');
SELECT billing.apply_coupon('o4', 'old');
SELECT code FROM billing.create_coupon('usd5', '5 USD off', 'fixed_amount', amount => 5, currency => 'USD');
SELECT billing.apply_coupon('o4', 'usd5');
SELECT billing.create_coupon('x', 'X', 'gift');
SELECT billing.create_coupon('x', 'X', 'fixed_amount', amount => 5);
SELECT billing.create_coupon('x', 'X', 'fixed_amount', amount => 5.555, currency => 'EUR');
SELECT billing.apply_coupon('o4', 'usd5', amount => 0.5);
SELECT billing.create_coupon('x', 'X', 'percentage', percentage_rate => 120);
SELECT billing.create_coupon('x', 'X', 'percentage', percentage_rate => 5, amount => 1);
SELECT billing.create_coupon('x', 'X', 'percentage', percentage_rate => 5, frequency => 'recurring');
SELECT billing.create_coupon('x', 'X', 'percentage', percentage_rate => 5, frequency => 'weekly');
SELECT billing.create_coupon('x', 'X', 'percentage', percentage_rate => 5, plans => '{flat}', billable_metrics => '{calls}');
SELECT billing.create_coupon('x', 'X', 'percentage', percentage_rate => 5, plans => '{flat,nope}');
SELECT billing.create_coupon('x', 'X', 'percentage', percentage_rate => 5, plans => '{}');
SELECT billing.create_coupon('welcome', 'Again', 'percentage', percentage_rate => 5);
SELECT count(*) AS coupons, (SELECT count(*) FROM billing.coupon_plans) AS plan_limits FROM billing.coupons;
SELECT count(*) AS applied FROM billing.applied_coupons;

-- The invariant of every finalized invoice (tests/pg_regress/invariant.sql).
\i tests/pg_regress/invariant.sql
