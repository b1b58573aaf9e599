-- Plan changes, worked out by hand in the comments: an upgrade takes effect at once (the old
-- plan billed through the day before, the new one from the change day, on one invoice), an
-- in-advance fee's unused days credited, usage billed on the plan in force when it happened
-- (late events too), the original anniversary kept, a downgrade pending until the period's
-- end and cancellable; the errors, which write nothing.
SET client_min_messages = warning;
DROP EXTENSION pg_billing CASCADE;
CREATE EXTENSION pg_billing;
SET TIME ZONE 'UTC';
SET datestyle = 'ISO, YMD';
\set SHOW_CONTEXT never

SELECT code FROM billing.create_billable_metric('calls', 'API calls', 'count');
-- basic: 31.00 a month in arrears, calls at 0.10; pro: 62.00, calls at 0.05, priced per model.
SELECT version FROM billing.create_plan('basic', 'Basic', 'monthly', 31, 'EUR',
  '[{"billable_metric_code": "calls", "charge_model": "standard", "properties": {"amount": "0.10"}}]');
SELECT version FROM billing.create_plan('pro', 'Pro', 'monthly', 62, 'EUR',
  '[{"billable_metric_code": "calls", "charge_model": "standard", "properties": {"amount": "0.05"}, "pricing_group_keys": ["model"]}]');
-- starter: 31.00 a month in advance; growth: 93.00 a month in advance.
SELECT version FROM billing.create_plan('starter', 'Starter', 'monthly', 31, 'EUR', pay_in_advance => true);
SELECT version FROM billing.create_plan('growth', 'Growth', 'monthly', 93, 'EUR', pay_in_advance => true);
SELECT version FROM billing.create_plan('dollars', 'Dollars', 'monthly', 100, 'USD');
SELECT external_id FROM billing.create_customer('acme', 'Acme', 'EUR', 'UTC');
CREATE FUNCTION pg_temp.calls(sub text, n integer, at timestamptz, tag text) RETURNS bigint LANGUAGE sql AS $$
  SELECT count(*) FROM billing.ingest_events((SELECT jsonb_agg(jsonb_build_object('external_subscription_id', sub, 'code', 'calls',
    'transaction_id', tag || '-' || g, 'timestamp', at, 'properties', jsonb_build_object('model', 'gpt'))) FROM generate_series(1, n) g))
  WHERE status = 'accepted'
$$;
CREATE TEMP VIEW lines AS
SELECT s.external_id AS sub, i.billing_at, f.fee_type, f.description, f.units, f.amount, f.from_datetime, f.to_datetime
FROM billing.fees f JOIN billing.invoices i ON i.customer_id = f.customer_id AND i.id = f.invoice_id
JOIN billing.subscriptions s ON s.customer_id = f.customer_id AND s.id = f.subscription_id;

-- 1. Upgrade in arrears, March 2024 (31 days), on 11 March at 12:00.
SELECT status FROM billing.create_subscription('s-up', 'acme', 'basic', '2024-03-01 00:00+00');
SELECT pg_temp.calls('s-up', 10, '2024-03-05 10:00+00', 'a'), pg_temp.calls('s-up', 1, '2024-03-11 06:00+00', 'b');
-- The change is an upgrade (62 x 12 >= 31 x 12), effective at once and billed at once:
-- basic through 10 March, 10 days: 31.00 x 10 / 31 = 10.00; the 11 calls before 12:00 at
-- 0.10 = 1.10; total 11.10.
SELECT kind, effective_at FROM billing.change_plan('s-up', 'pro', '2024-03-11 12:00+00');
SELECT billing_at, number, fees_amount, total_amount FROM billing.invoices
WHERE subscription_id = (SELECT id FROM billing.subscriptions WHERE external_id = 's-up') ORDER BY billing_at;
SELECT p.code AS plan_now FROM billing.subscriptions s JOIN billing.plan_versions v ON v.id = s.plan_version_id
JOIN billing.plans p ON p.id = v.plan_id WHERE s.external_id = 's-up';
-- Events from the change on, split by the property pro groups by.
SELECT pg_temp.calls('s-up', 20, '2024-03-20 10:00+00', 'c'), pg_temp.calls('s-up', 1, '2024-03-11 18:00+00', 'd');
-- The period's close: pro from 11 March, 21 days: 62.00 x 21 / 31 = 42.00; the 21 calls from
-- 12:00 at 0.05 = 1.05 (grouped by model, which only pro splits by); total 43.05.
SELECT billing_at, fees_amount, total_amount FROM billing.bill_subscription('s-up', '2024-04-01 00:00+00');
SELECT fee_type, description, units, amount, from_datetime, to_datetime FROM lines
WHERE sub = 's-up' AND billing_at IN ('2024-03-11 12:00+00', '2024-04-01 00:00+00') ORDER BY billing_at, fee_type, from_datetime;
SELECT grouped_by FROM billing.fees WHERE fee_type = 'charge' AND grouped_by IS NOT NULL;
-- A late event of 5 March, sent after both invoices: billed on basic (0.10), the plan in
-- force when it happened, on the next invoice (April: pro 62.00, no April calls): 62.10.
SELECT pg_temp.calls('s-up', 1, '2024-03-05 11:00+00', 'late');
SELECT billing_at, fees_amount, total_amount FROM billing.bill_subscription('s-up', '2024-05-01 00:00+00');
SELECT fee_type, description, units, amount FROM lines WHERE sub = 's-up' AND billing_at = '2024-05-01 00:00+00' ORDER BY fee_type;

-- 2. Upgrade of a plan paid in advance: starter's 31.00 for March is billed on 1 March.
-- On 21 March at 09:00, growth: its fee for 21-31 March, 11 days: 93.00 x 11 / 31 = 33.00;
-- starter's unused days from the change day, 11: 31.00 x 11 / 31 = 11.00, credited and
-- consumed by the upgrade invoice: 33.00 - 11.00 = 22.00.
SELECT status FROM billing.create_subscription('s-adv', 'acme', 'starter', '2024-03-01 00:00+00');
SELECT billing_at, fees_amount, total_amount FROM billing.bill_subscription('s-adv', '2024-03-01 00:00+00');
SELECT kind FROM billing.change_plan('s-adv', 'growth', '2024-03-21 09:00+00');
SELECT reason, description, sub_total_excluding_taxes, total_amount, balance_amount, credit_status FROM billing.credit_notes;
SELECT billing_at, fees_amount, credit_notes_amount, total_amount FROM billing.invoices
WHERE subscription_id = (SELECT id FROM billing.subscriptions WHERE external_id = 's-adv') ORDER BY billing_at;
-- April: growth in full, 93.00.
SELECT billing_at, fees_amount, total_amount FROM billing.bill_subscription('s-adv', '2024-04-01 00:00+00');

-- 3. The original anniversary stays: anniversary billing from 15 January 2024; the period of
-- 15 February to 14 March has 29 days. Upgrade on 20 February: basic for 15-19 February,
-- 5 days: 31.00 x 5 / 29 = 5.3448... -> 5.34; pro for 20 February to 14 March, 24 days:
-- 62.00 x 24 / 29 = 51.3103... -> 51.31, billed on 15 March.
SELECT status FROM billing.create_subscription('s-anniv', 'acme', 'basic', '2024-01-15 00:00+00', 'anniversary');
SELECT billing_at, fees_amount FROM billing.bill_subscription('s-anniv', '2024-02-15 00:00+00');
SELECT kind FROM billing.change_plan('s-anniv', 'pro', '2024-02-20 00:00+00');
SELECT billing_at, fees_amount FROM billing.bill_subscription('s-anniv', '2024-03-15 00:00+00');
SELECT billing_at, fee_type, amount, from_datetime, to_datetime FROM lines
WHERE sub = 's-anniv' AND fee_type = 'subscription' ORDER BY billing_at;

-- 4. A downgrade waits for the period's end: pro from 1 March; on 15 March, basic is
-- scheduled for 1 April. March: pro 62.00 and 10 calls at 0.05 = 62.50; April: basic 31.00
-- and 10 calls at 0.10 = 32.00.
SELECT status FROM billing.create_subscription('s-down', 'acme', 'pro', '2024-03-01 00:00+00');
SELECT kind, effective_at FROM billing.change_plan('s-down', 'basic', '2024-03-15 00:00+00');
SELECT count(*) AS invoiced_at_once FROM billing.invoices
WHERE subscription_id = (SELECT id FROM billing.subscriptions WHERE external_id = 's-down');
SELECT pg_temp.calls('s-down', 10, '2024-03-20 10:00+00', 'dm'), pg_temp.calls('s-down', 10, '2024-04-10 10:00+00', 'da');
SELECT billing_at, fees_amount, total_amount FROM billing.bill_subscription('s-down', '2024-05-01 00:00+00') ORDER BY billing_at;
SELECT subscription_external_id, kind, from_plan_code, to_plan_code, effective_at, status FROM billing_bi.plan_changes ORDER BY 1;

-- A downgrade asked for now is pending until the current period ends, and can be canceled.
SELECT status FROM billing.create_subscription('s-now', 'acme', 'pro', date_trunc('month', now()));
SELECT kind, effective_at = date_trunc('month', now()) + interval '1 month' AS at_period_end
FROM billing.change_plan('s-now', 'basic');
SELECT status FROM billing_bi.plan_changes WHERE subscription_external_id = 's-now';
SELECT d.plan_version_ids = ARRAY(SELECT v.id FROM billing.plan_versions v JOIN billing.plans p ON p.id = v.plan_id
                                  WHERE p.code IN ('basic', 'pro') ORDER BY v.id) AS ingestion_splits_for_both
FROM billing.subscription_directory d WHERE d.external_id = 's-now';
SELECT kind, to_plan_version_id = (SELECT id FROM billing.plan_versions WHERE plan_id = (SELECT id FROM billing.plans WHERE code = 'basic')) AS to_basic
FROM billing.cancel_plan_change('s-now');
SELECT count(*) AS pending FROM billing_bi.plan_changes WHERE subscription_external_id = 's-now';
SELECT cardinality(plan_version_ids) AS plans_for_ingestion FROM billing.subscription_directory WHERE external_id = 's-now';

-- 5. An upgrade from a plan paid in advance whose period was not invoiced yet: the change
-- invoices 1 March (starter, 31.00) first, then credits its 11 unused days (11.00) on the
-- upgrade invoice: growth 33.00 - 11.00 = 22.00.
SELECT status FROM billing.create_subscription('s-unbilled', 'acme', 'starter', '2024-03-01 00:00+00');
SELECT kind FROM billing.change_plan('s-unbilled', 'growth', '2024-03-21 09:00+00');
SELECT billing_at, fees_amount, credit_notes_amount, total_amount FROM billing.invoices
WHERE subscription_id = (SELECT id FROM billing.subscriptions WHERE external_id = 's-unbilled') ORDER BY billing_at;

-- 6. Prorated fixed charges end the day before the change: one seat at 31.00 a month on both
-- plans; basic's 10 days: 10/31 = 0.32259 seats (rounded up) x 31 = 10.00029 -> 10.00, with
-- the base 10.00: 20.00; pro's 21 days: 0.67742 x 31 = 21.00002 -> 21.00, with 42.00: 63.00.
SELECT code FROM billing.create_add_on('seat', 'Seats', 31, 'EUR');
SELECT version FROM billing.create_plan('basic-seats', 'Basic with seats', 'monthly', 31, 'EUR');
SELECT version FROM billing.create_plan('pro-seats', 'Pro with seats', 'monthly', 62, 'EUR');
SELECT units FROM billing.add_fixed_charge('basic-seats', 'seat', 'standard', '{"amount": "31"}', 1, prorated => true);
SELECT units FROM billing.add_fixed_charge('pro-seats', 'seat', 'standard', '{"amount": "31"}', 1, prorated => true);
SELECT status FROM billing.create_subscription('s-seats', 'acme', 'basic-seats', '2024-03-01 00:00+00');
SELECT kind FROM billing.change_plan('s-seats', 'pro-seats', '2024-03-11 12:00+00');
SELECT billing_at, fees_amount FROM billing.bill_subscription('s-seats', '2024-04-01 00:00+00');
SELECT billing_at, fee_type, units, amount FROM lines WHERE sub = 's-seats' ORDER BY billing_at, fee_type;

-- 7. Progressive billing after an upgrade bills the new plan's usage only: pro-thresholds
-- (pro's terms, a 0.40 threshold) from 11 March; 30 calls on basic before (3.00, on the
-- upgrade invoice with basic's 10 days: 13.00), 10 calls after: the threshold invoice bills
-- 10 x 0.05 = 0.50, and the period's invoice deducts it: 42.00 + 0.50 - 0.50 = 42.00.
SELECT version FROM billing.create_plan('pro-thresholds', 'Pro with thresholds', 'monthly', 62, 'EUR',
  '[{"billable_metric_code": "calls", "charge_model": "standard", "properties": {"amount": "0.05"}}]',
  usage_thresholds => '[{"amount": "0.40"}]');
SELECT status FROM billing.create_subscription('s-prog', 'acme', 'basic', '2024-03-01 00:00+00');
SELECT pg_temp.calls('s-prog', 30, '2024-03-05 10:00+00', 'p1');
SELECT kind FROM billing.change_plan('s-prog', 'pro-thresholds', '2024-03-11 00:00+00');
SELECT pg_temp.calls('s-prog', 10, '2024-03-15 10:00+00', 'p2');
SELECT invoice_type, fees_amount, total_amount FROM billing.bill_subscription('s-prog', '2024-03-16 00:00+00');
SELECT invoice_type, fees_amount, progressive_billing_credit_amount, total_amount
FROM billing.bill_subscription('s-prog', '2024-04-01 00:00+00');

-- 8. A what-if preview after a change re-rates what is not invoiced yet: s-up on basic from
-- 1 May (after its last invoice): 31.00 for May, no calls.
SELECT p #>> '{totals,fees_amount}' AS fees FROM billing.preview_invoice('s-up', '2024-05-10 00:00+00', 'basic') p;

-- 9. A termination scheduled later leaves the plan free to change before it.
SELECT status FROM billing.create_subscription('s-ends', 'acme', 'basic', '2024-03-01 00:00+00');
SELECT status FROM billing.terminate_subscription('s-ends', now() + interval '60 days');
SELECT kind FROM billing.change_plan('s-ends', 'pro', '2024-03-11 00:00+00');

-- Errors, which write nothing.
SELECT billing.change_plan('s-now', 'pro');                                 -- already on it: 22023
SELECT billing.change_plan('s-now', 'dollars');                             -- another currency: 22023
SELECT billing.change_plan('s-now', 'nope');                                -- unknown plan: 23503
SELECT billing.change_plan('nope', 'pro');                                  -- unknown subscription: 23503
SELECT billing.change_plan('s-up', 'basic', '2024-03-20 00:00+00');         -- invoiced through 1 May: 55000
SELECT billing.change_plan('s-now', 'basic', '2000-01-01 00:00+00');        -- before the start: 22023
SELECT billing.cancel_plan_change('s-now');                                 -- nothing pending: 55000
SELECT billing.terminate_subscription('s-up', '2024-03-05 00:00+00');     -- before its upgrade: 55000
-- A pending change invoiced ahead of time (billing as of a later instant) stands.
SELECT status FROM billing.create_subscription('s-ahead', 'acme', 'basic', date_trunc('month', now()));
SELECT kind FROM billing.change_plan('s-ahead', 'pro', date_trunc('month', now()) + interval '1 month 5 days');
SELECT count(*) > 0 AS invoiced_ahead FROM billing.bill_subscription('s-ahead', date_trunc('month', now()) + interval '2 months');
\set VERBOSITY terse
SELECT billing.cancel_plan_change('s-ahead');                               -- invoiced: 55000
\set VERBOSITY default
SELECT status FROM billing.terminate_subscription('s-now');
\set VERBOSITY terse
SELECT billing.change_plan('s-now', 'basic');                               -- terminated: 55000
\set VERBOSITY default
SELECT count(*) AS plan_changes FROM billing.plan_changes;

\i tests/pg_regress/invariant.sql
