-- Taxes on whole invoices, each worked out by hand from pricing.md (Invoice arithmetic, step
-- 4) in the comment above it: precedence (charge, else plan, else customer, else billing
-- entity), several taxes on one fee, one rounding per tax and invoice, a rate change that
-- reaches a draft on refresh and never a finalized invoice, the errors of the functions.
SET client_min_messages = warning;
DROP EXTENSION pg_billing CASCADE;
CREATE EXTENSION pg_billing;
SET TIME ZONE 'UTC';
SET datestyle = 'ISO, YMD';
\set SHOW_CONTEXT never

SELECT code FROM billing.create_billable_metric('calls', 'API calls', 'count');
SELECT code, name, rate FROM billing.create_tax('ent', 'Entity default', 10);
SELECT code, rate FROM billing.create_tax('cust', 'Customer tax', 7);
SELECT code, rate FROM billing.create_tax('plan', 'Plan tax', 5);
SELECT code, rate FROM billing.create_tax('chg', 'Charge tax', 2, 'on API calls');
SELECT code, rate FROM billing.create_tax('chg2', 'Second charge tax', 1.5);
SELECT code FROM billing.create_billing_entity('acme', 'Acme SAS', 'EUR', 'UTC', 'ACME');
SELECT billing.set_taxes('billing_entity', 'acme', '{ent}');

-- Plan flat: 10.00 a month in arrears, calls at 0.35 each.
SELECT version FROM billing.create_plan('flat', 'Flat', 'monthly', 10, 'EUR',
  '[{"billable_metric_code": "calls", "charge_model": "standard", "properties": {"amount": "0.35"}}]');

-- The taxes of each invoiced fee and the invoice's totals, per subscription.
CREATE TEMP VIEW taxed AS
SELECT s.external_id AS sub, f.fee_type, f.amount, string_agg(ft.tax_code || ' ' || ft.tax_rate || '% ' || ft.precise_amount, ', ' ORDER BY ft.tax_code) AS taxes
FROM billing.fees f
JOIN billing.subscriptions s ON s.customer_id = f.customer_id AND s.id = f.subscription_id
LEFT JOIN billing.fee_taxes ft ON ft.customer_id = f.customer_id AND ft.fee_id = f.id
WHERE f.invoiceable
GROUP BY s.external_id, f.id, f.fee_type, f.amount
ORDER BY s.external_id, f.fee_type, f.id;
CREATE TEMP VIEW totals AS
SELECT s.external_id AS sub, i.status, i.fees_amount, i.sub_total_excluding_taxes, i.taxes_amount, i.sub_total_including_taxes, i.total_amount
FROM billing.invoices i JOIN billing.subscriptions s ON s.customer_id = i.customer_id AND s.id = i.subscription_id
ORDER BY s.external_id, i.billing_at;

CREATE FUNCTION pg_temp.send(sub text, n integer, ts timestamptz) RETURNS bigint LANGUAGE sql AS $$
  SELECT count(*) FILTER (WHERE r.status = 'accepted') FROM billing.ingest_events((
    SELECT jsonb_agg(jsonb_build_object('external_subscription_id', sub, 'code', 'calls',
                                        'transaction_id', format('%s-%s-%s', sub, ts, i), 'timestamp', ts))
    FROM generate_series(1, n) i)) r
$$;

-- 1. The billing entity's default: customer e1 and plan flat have no taxes.
--    March 2026: base 10.00; 7 calls × 0.35 = 2.45. Fees 12.45.
--    ent 10%: 10.00 × 0.10 = 1.000 and 2.45 × 0.10 = 0.245 → 1.245 → 1.25 once.
--    Total 12.45 + 1.25 = 13.70.
SELECT external_id FROM billing.create_customer('e1', 'Entity Co', 'EUR', 'UTC', billing_entity => 'acme');
SELECT status FROM billing.create_subscription('se1', 'e1', 'flat', '2026-03-01 00:00+00');
SELECT pg_temp.send('se1', 7, '2026-03-10 10:00+00');
SELECT status, fees_amount, taxes_amount, total_amount FROM billing.bill_subscription('se1', '2026-04-01 00:05+00');

-- 2. The customer's taxes come before the entity's: cust 7%.
--    Same invoice: 10.00 × 0.07 = 0.70; 2.45 × 0.07 = 0.1715 → 0.8715 → 0.87. Total 13.32.
SELECT external_id FROM billing.create_customer('c2', 'Customer Co', 'EUR', 'UTC', billing_entity => 'acme');
SELECT billing.set_taxes('customer', 'c2', '{cust}');
SELECT status FROM billing.create_subscription('sc2', 'c2', 'flat', '2026-03-01 00:00+00');
SELECT pg_temp.send('sc2', 7, '2026-03-10 10:00+00');
SELECT status, fees_amount, taxes_amount, total_amount FROM billing.bill_subscription('sc2', '2026-04-01 00:05+00');

-- 3. The plan's taxes before the customer's, the charge's before the plan's; two taxes on one
--    fee add up. Plan taxed: 20.00 a month, calls at 0.35 with taxes chg 2% and chg2 1.5%.
--    March: base 20.00 (plan 5%: 1.00); 7 calls 2.45 (chg 0.049, chg2 0.03675).
--    Taxes: plan 1.00 + chg round(0.049) 0.05 + chg2 round(0.03675) 0.04 = 1.09.
--    Fees 22.45, total 23.54.
SELECT version FROM billing.create_plan('taxed', 'Taxed', 'monthly', 20, 'EUR',
  '[{"billable_metric_code": "calls", "charge_model": "standard", "properties": {"amount": "0.35"}}]');
SELECT billing.set_taxes('plan', 'taxed', '{plan}');
SELECT billing.set_taxes('charge', c.id::text, '{chg2,chg,chg}')
FROM billing.charges c JOIN billing.plan_versions v ON v.id = c.plan_version_id JOIN billing.plans p ON p.id = v.plan_id
WHERE p.code = 'taxed';
SELECT external_id FROM billing.create_customer('p3', 'Plan Co', 'EUR', 'UTC', billing_entity => 'acme');
SELECT billing.set_taxes('customer', 'p3', '{cust}');
SELECT status FROM billing.create_subscription('sp3', 'p3', 'taxed', '2026-03-01 00:00+00');
SELECT pg_temp.send('sp3', 7, '2026-03-10 10:00+00');
SELECT status, fees_amount, taxes_amount, total_amount FROM billing.bill_subscription('sp3', '2026-04-01 00:05+00');

-- 4. One rounding per tax and invoice, not per fee: calls grouped by project at 0.10, one
--    call in each of three projects, no base fee, tax 5%: each fee 0.10 × 0.05 = 0.005;
--    per invoice 0.015 → 0.02 (rounding each fee would give 0.03). Total 0.30 + 0.02 = 0.32.
SELECT code, rate FROM billing.create_tax('small', 'Small', 5);
SELECT version FROM billing.create_plan('grouped', 'Grouped', 'monthly', 0, 'EUR',
  '[{"billable_metric_code": "calls", "charge_model": "standard", "pricing_group_keys": ["project"], "properties": {"amount": "0.10"}}]');
SELECT billing.set_taxes('plan', 'grouped', '{small}');
SELECT external_id FROM billing.create_customer('g4', 'Grouped Co', 'EUR', 'UTC', billing_entity => 'acme');
SELECT status FROM billing.create_subscription('sg4', 'g4', 'grouped', '2026-03-01 00:00+00');
SELECT count(*) FROM billing.ingest_events('[
  {"external_subscription_id": "sg4", "code": "calls", "transaction_id": "g-1", "timestamp": "2026-03-02T10:00:00Z", "properties": {"project": "a"}},
  {"external_subscription_id": "sg4", "code": "calls", "transaction_id": "g-2", "timestamp": "2026-03-02T10:00:00Z", "properties": {"project": "b"}},
  {"external_subscription_id": "sg4", "code": "calls", "transaction_id": "g-3", "timestamp": "2026-03-02T10:00:00Z", "properties": {"project": "c"}}]');
SELECT status, fees_amount, taxes_amount, total_amount FROM billing.bill_subscription('sg4', '2026-04-01 00:05+00');

SELECT * FROM taxed;
SELECT * FROM totals;

-- The document lists each tax with its base and amount, and each line's taxes.
SELECT jsonb_pretty(billing.invoice_document(i.id) -> 'taxes')
FROM billing.invoices i JOIN billing.subscriptions s ON s.customer_id = i.customer_id AND s.id = i.subscription_id WHERE s.external_id = 'sp3';
SELECT l ->> 'fee_type' AS fee_type, l -> 'taxes' AS taxes
FROM billing.invoices i JOIN billing.subscriptions s ON s.customer_id = i.customer_id AND s.id = i.subscription_id,
     jsonb_array_elements(billing.invoice_document(i.id) -> 'lines') l
WHERE s.external_id = 'sp3';

-- 5. A rate change reaches a draft when it is refreshed, never a finalized invoice.
--    Entity "grace" keeps drafts 5 days; customer d5 (entity grace, taxes cust 7%), plan flat
--    in March with no calls: 10.00, tax 0.70. cust goes to 8%: the finalized invoice of e.g.
--    sc2 keeps 0.87; the draft refreshed gets 0.80, total 10.80.
SELECT code FROM billing.create_billing_entity('grace', 'Grace Ltd', 'EUR', 'UTC', 'GRC', grace_period_days => 5);
SELECT external_id FROM billing.create_customer('d5', 'Draft Co', 'EUR', 'UTC', billing_entity => 'grace');
SELECT billing.set_taxes('customer', 'd5', '{cust}');
SELECT status FROM billing.create_subscription('sd5', 'd5', 'flat', '2026-03-01 00:00+00');
SELECT status, taxes_amount, total_amount FROM billing.bill_subscription('sd5', '2026-04-01 00:05+00');
SELECT code, rate FROM billing.update_tax('cust', rate => 8);
SELECT status, taxes_amount, total_amount FROM billing.refresh_invoice(
  (SELECT i.id FROM billing.invoices i JOIN billing.subscriptions s ON s.customer_id = i.customer_id AND s.id = i.subscription_id WHERE s.external_id = 'sd5'));
SELECT sub, status, taxes_amount, total_amount FROM totals WHERE sub IN ('sc2', 'sd5');
-- A finalized invoice's taxes cannot be changed.
UPDATE billing.fee_taxes ft SET precise_amount = 0
FROM billing.subscriptions s WHERE s.customer_id = ft.customer_id AND s.external_id = 'sc2';
DELETE FROM billing.fee_taxes ft USING billing.subscriptions s WHERE s.customer_id = ft.customer_id AND s.external_id = 'sc2';

-- Removing a target's taxes, and the errors.
SELECT billing.set_taxes('customer', 'c2', '{}');
SELECT count(*) FROM billing.customer_taxes x JOIN billing.customers c ON c.id = x.customer_id WHERE c.external_id = 'c2';
SELECT billing.create_tax('ent', 'Again', 1);
SELECT billing.create_tax('neg', 'Negative', -1);
SELECT billing.create_tax('big', 'Too big', 100.5);
SELECT billing.create_tax('', 'No code', 1);
SELECT billing.update_tax('nope', rate => 1);
SELECT billing.update_tax('ent', rate => 101);
SELECT billing.set_taxes('invoice', 'x', '{ent}');
SELECT billing.set_taxes('plan', 'nope', '{ent}');
SELECT billing.set_taxes('plan', 'flat', '{nope}');
SELECT billing.set_taxes('charge', 'not-a-number', '{ent}');
SELECT billing.set_taxes('customer', 'e1', NULL);
-- Nothing was written by the failed calls.
SELECT code, rate FROM billing.taxes ORDER BY code;
SELECT count(*) AS plan_taxes FROM billing.plan_taxes;

-- The invariant of every finalized invoice (tests/pg_regress/invariant.sql).
\i tests/pg_regress/invariant.sql
