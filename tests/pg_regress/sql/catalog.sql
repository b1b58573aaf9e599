-- The catalog: entities, customers, metrics, versioned plans, subscriptions, periods.
SET client_min_messages = warning;
-- A fresh install, so this file does not depend on the others.
DROP EXTENSION pg_billing CASCADE;
CREATE EXTENSION pg_billing;
SET TIME ZONE 'UTC';
\set SHOW_CONTEXT never

SELECT code, name, default_currency, timezone, invoice_prefix, numbering FROM billing.billing_entities ORDER BY id;
SELECT code, invoice_prefix, grace_period_days FROM billing.create_billing_entity('eu', 'Acme Europe SAS', 'EUR', 'Europe/Paris', 'ACME-EU', grace_period_days => 3);
SELECT external_id, currency, timezone, (SELECT code FROM billing.billing_entities e WHERE e.id = billing_entity_id) AS entity
FROM billing.create_customer('paris-ai', 'Paris AI', billing_entity => 'eu');
-- Billed in EUR like the plan it subscribes to below (a plan must be in the customer's currency).
SELECT external_id, currency, timezone FROM billing.create_customer('tokyo-ai', 'Tokyo AI', 'EUR', 'Asia/Tokyo');

-- Validation errors, each with its SQLSTATE.
SELECT billing.create_customer('x', currency => 'EURO');
\echo :LAST_ERROR_SQLSTATE
SELECT billing.create_customer('x', timezone => 'Mars/Olympus');
\echo :LAST_ERROR_SQLSTATE
SELECT billing.create_customer('x', billing_entity => 'nowhere');
\echo :LAST_ERROR_SQLSTATE
SELECT billing.create_customer('paris-ai');
\echo :LAST_ERROR_SQLSTATE
SELECT billing.create_billing_entity('bad', 'Bad', numbering => 'random');
\echo :LAST_ERROR_SQLSTATE

SELECT code, aggregation, field_name, recurring FROM billing.create_billable_metric('tokens', 'Tokens', 'sum', 'tokens', filters => '{"model": ["small", "large"]}');
SELECT code, aggregation, recurring FROM billing.create_billable_metric('seats', 'Seats', 'unique_count', 'user_id', recurring => true);
SELECT billing.create_billable_metric('m1', 'M', 'median', 'x');
\echo :LAST_ERROR_SQLSTATE
SELECT billing.create_billable_metric('m2', 'M', 'sum');
\echo :LAST_ERROR_SQLSTATE
SELECT billing.create_billable_metric('m3', 'M', 'max', 'x', recurring => true);
\echo :LAST_ERROR_SQLSTATE
SELECT billing.create_billable_metric('m4', 'M', 'sum', 'x', rounding_function => 'truncate');
\echo :LAST_ERROR_SQLSTATE
SELECT billing.create_billable_metric('m5', 'M', 'sum', 'x', filters => '{"model": "small"}');
\echo :LAST_ERROR_SQLSTATE
SELECT billing.create_billable_metric('tokens', 'Again', 'count');
\echo :LAST_ERROR_SQLSTATE

-- Plans are versioned: the second call creates version 2 and leaves version 1 as it was.
SELECT version, interval, amount, currency FROM billing.create_plan('pro', 'Pro', 'monthly', 99, 'EUR', '[
  {"billable_metric_code": "tokens", "charge_model": "standard", "properties": {"amount": "0.002"},
   "filters": [{"values": {"model": ["large"]}, "properties": {"amount": "0.01"}}], "pricing_group_keys": ["project"]},
  {"billable_metric_code": "seats", "charge_model": "standard", "properties": {"amount": "10"}, "prorated": true}]');
SELECT version, amount FROM billing.create_plan('pro', 'Pro', 'monthly', 129, 'EUR', '[]');
SELECT p.code, v.version, v.amount, count(c.id) AS charges
FROM billing.plans p JOIN billing.plan_versions v ON v.plan_id = p.id LEFT JOIN billing.charges c ON c.plan_version_id = v.id
GROUP BY p.code, v.version, v.amount ORDER BY v.version;
SELECT c.position, m.code, c.price, c.prorated, c.pricing_group_keys, f."values" AS filter, f.price AS filter_price
FROM billing.charges c JOIN billing.billable_metrics m ON m.id = c.billable_metric_id
LEFT JOIN billing.charge_filters f ON f.charge_id = c.id ORDER BY c.position;

-- Prices are stored as plain JSON, readable without pg_billing's functions; a write of an
-- invalid price, or of a valid one not in canonical form, is refused by the table itself.
SELECT c.price ->> 'charge_model' AS model, c.price #>> '{properties,amount}' AS amount, jsonb_typeof(c.price) AS stored_as
FROM billing.charges c ORDER BY c.position;
UPDATE billing.charges SET price = '{"charge_model": "standard", "properties": {"amount": "-1"}}' WHERE position = 0;
\echo :LAST_ERROR_SQLSTATE
UPDATE billing.charges SET price = '{"charge_model": "standard", "properties": {"amount": "0.0020"}}' WHERE position = 0;
\echo :LAST_ERROR_SQLSTATE
SELECT billing.price('{"charge_model": "standard", "properties": {"amount": "0.0020"}}')::jsonb AS canonical;
-- The enumerations are types: a word outside them is refused by the table too.
UPDATE billing.subscriptions SET status = 'paused';
\echo :LAST_ERROR_SQLSTATE
SELECT enum_range(NULL::billing.billing_interval) AS intervals, enum_range(NULL::billing.aggregation) AS aggregations;

SELECT billing.create_plan('bad', 'Bad', 'daily');
\echo :LAST_ERROR_SQLSTATE
SELECT billing.create_plan('bad', 'Bad', 'monthly', -1);
\echo :LAST_ERROR_SQLSTATE
SELECT billing.create_plan('bad', 'Bad', 'monthly', charges => '[{"billable_metric_code": "nope", "charge_model": "standard", "properties": {"amount": "1"}}]');
\echo :LAST_ERROR_SQLSTATE
SELECT billing.create_plan('bad', 'Bad', 'monthly', charges => '[{"billable_metric_code": "tokens", "charge_model": "standard", "properties": {"amount": "-1"}}]');
\echo :LAST_ERROR_SQLSTATE
SELECT billing.create_plan('bad', 'Bad', 'monthly', charges => '[{"billable_metric_code": "tokens", "charge_model": "standard", "properties": {"amount": "1"}, "filters": [{"values": {"model": ["huge"]}, "properties": {"amount": "2"}}]}]');
\echo :LAST_ERROR_SQLSTATE
-- Nothing of the failed plans was written.
SELECT count(*) AS bad_plans FROM billing.plans WHERE code = 'bad';

-- Subscriptions keep the version they were created on.
SELECT s.external_id, s.status, v.version, s.billing_time
FROM billing.create_subscription('sub-v1', 'paris-ai', 'pro', '2026-01-15 10:00+01', plan_version => 1) s
JOIN billing.plan_versions v ON v.id = s.plan_version_id;
SELECT s.external_id, s.status, v.version
FROM billing.create_subscription('sub-latest', 'tokyo-ai', 'pro', '2026-02-01 00:00+09', 'anniversary') s
JOIN billing.plan_versions v ON v.id = s.plan_version_id;
SELECT external_id, status FROM billing.create_subscription('sub-future', 'tokyo-ai', 'pro', now() + interval '30 days');
-- Pending subscriptions become active when their start comes.
SELECT billing.activate_subscriptions(now() + interval '29 days') AS activated_too_early;
SELECT billing.activate_subscriptions(now() + interval '31 days') AS activated;
SELECT external_id, status, started_at = subscription_at AS started FROM billing.subscriptions WHERE external_id = 'sub-future';
SELECT billing.create_subscription('sub-x', 'nobody', 'pro');
\echo :LAST_ERROR_SQLSTATE
SELECT billing.create_subscription('sub-x', 'paris-ai', 'pro', plan_version => 9);
\echo :LAST_ERROR_SQLSTATE
SELECT billing.create_subscription('sub-x', 'paris-ai', 'pro', billing_time => 'fortnightly');
\echo :LAST_ERROR_SQLSTATE
SELECT external_id, status, terminated_at FROM billing.terminate_subscription('sub-latest', '2026-06-30 12:00+09');
SELECT billing.terminate_subscription('sub-latest');
\echo :LAST_ERROR_SQLSTATE

-- Billing periods: month ends, leap years, anniversaries on the 31st, and DST.
SELECT label, p.from_date, p.to_date, p.days, p.from_datetime, p.to_datetime
FROM (VALUES
  ('calendar month, March in Paris (DST on the 29th)', 'monthly', 'calendar', '2026-01-15'::date, '2026-03-20 12:00+00'::timestamptz, 'Europe/Paris'),
  ('calendar month, October in Paris (DST ends)', 'monthly', 'calendar', '2026-01-15', '2026-10-31 22:30+00', 'Europe/Paris'),
  ('leap February', 'monthly', 'calendar', '2024-01-10', '2024-02-29 12:00+00', 'UTC'),
  ('anniversary 31st in February', 'monthly', 'anniversary', '2024-01-31', '2024-02-15 12:00+00', 'UTC'),
  ('anniversary 31st after leap day', 'monthly', 'anniversary', '2024-01-31', '2024-02-29 12:00+00', 'UTC'),
  ('anniversary 31st in April', 'monthly', 'anniversary', '2024-01-31', '2024-04-15 12:00+00', 'UTC'),
  ('calendar week from Monday', 'weekly', 'calendar', '2026-11-01', '2026-11-27 12:00+00', 'UTC'),
  ('anniversary week', 'weekly', 'anniversary', '2026-11-25', '2026-11-27 12:00+00', 'UTC'),
  ('calendar quarter', 'quarterly', 'calendar', '2026-01-05', '2026-05-31 12:00+00', 'UTC'),
  ('calendar half-year', 'semiannual', 'calendar', '2026-01-05', '2026-12-31 12:00+00', 'UTC'),
  ('anniversary year from a leap day', 'yearly', 'anniversary', '2024-02-29', '2025-03-01 12:00+00', 'UTC'),
  ('Tokyo evening is the next day', 'monthly', 'calendar', '2026-01-01', '2026-03-31 16:00+00', 'Asia/Tokyo')
) v(label, interval, billing_time, anchor, as_of, tz),
LATERAL billing.period_bounds(v.interval, v.billing_time, v.anchor, v.as_of, v.tz) p
ORDER BY label;
SELECT * FROM billing.period_bounds('daily', 'calendar', '2026-01-01', now());
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM billing.period_bounds('monthly', 'calendar', '2026-01-01', now(), 'Nowhere/City');
\echo :LAST_ERROR_SQLSTATE

-- Scale-out needs Citus in the database: without it billing.distribute() refuses.
SELECT * FROM billing.distribute();
\echo :LAST_ERROR_SQLSTATE

-- Scheduling needs pg_cron in the database: without it billing.schedule() refuses.
SELECT * FROM billing.schedule();
\echo :LAST_ERROR_SQLSTATE
SELECT billing.unschedule();
\echo :LAST_ERROR_SQLSTATE
